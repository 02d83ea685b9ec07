/* worker/sweeper.c: the outbox sweeper. Publishing twice is harmless (the notify stage
 * drops a copy whose row is already DELIVERED); never publishing would lose a webhook. */
#include "worker/sweeper.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/db.h"
#include "store/orders.h"
#include "worker/stats.h"

#define SWEEP_BATCH 100

struct sweeper {
    const struct cfg *cfg;
    struct worker_stats *stats;
    atomic_int *stop;
    pthread_t tid;
};

static void sweep_once(struct sweeper *s, db_conn *db, mq_conn **pub)
{
    int64_t ids[SWEEP_BATCH];
    struct errbuf e = {0};
    int n = outbox_unpublished(db, s->cfg->sweep_interval_ms, ids, SWEEP_BATCH, &e);

    if (n < 0) {
        LOG_WARN("sweep_failed", "error", e.msg);
        return;
    }
    for (int i = 0; i < n && !atomic_load(s->stop); i++) {
        char body[64], id[24];
        if (*pub == NULL && (*pub = mq_open(s->cfg->amqp_url, 5000, &e)) == NULL) {
            LOG_WARN("sweep_failed", "error", e.msg);
            return;
        }
        outbox_message(ids[i], body, sizeof(body));
        snprintf(id, sizeof(id), "%lld", (long long)ids[i]);
        if (mq_publish_confirmed(*pub, TOPOLOGY_NOTIFY, body, strlen(body), id,
                                 (int)s->cfg->confirm_timeout_ms, &e) != 0) {
            LOG_WARN("sweep_publish_failed", "notification_id", id, "error", e.msg);
            mq_close(*pub);
            *pub = NULL;
            return;
        }
        metric_inc(s->stats->swept);
        LOG_INFO("sweep_published", "notification_id", id);
        if (outbox_mark_published(db, ids[i], &e) != 0)
            LOG_WARN("outbox_mark_failed", "notification_id", id, "error", e.msg);
    }
}

/* Closes PENDING orders whose expire_at passed (the seeds' timed cancel) and publishes
 * their order.closed notification; a publish that fails is left to the outbox sweep. */
static void close_expired(struct sweeper *s, db_conn *db, mq_conn **pub)
{
    char ids[SWEEP_BATCH][33];
    struct errbuf e = {0};
    int n = orders_expired(db, SWEEP_BATCH, ids, &e);

    if (n < 0) {
        LOG_WARN("close_expired_failed", "error", e.msg);
        return;
    }
    for (int i = 0; i < n && !atomic_load(s->stop); i++) {
        int64_t nid = 0;
        char webhook_id[65], body[64];
        int rc = orders_close_expired(db, ids[i], &nid, webhook_id, &e);

        if (rc < 0) {
            LOG_WARN("close_expired_failed", "order_id", ids[i], "error", e.msg);
            continue;
        }
        if (rc == 1)
            continue;
        metric_inc(s->stats->orders_closed);
        LOG_INFO("order_closed", "order_id", ids[i], "reason", "expired", "webhook_id",
                 webhook_id);
        if (*pub == NULL && (*pub = mq_open(s->cfg->amqp_url, 5000, &e)) == NULL)
            continue;
        outbox_message(nid, body, sizeof(body));
        if (mq_publish_confirmed(*pub, TOPOLOGY_NOTIFY, body, strlen(body), webhook_id,
                                 (int)s->cfg->confirm_timeout_ms, &e) == 0) {
            if (outbox_mark_published(db, nid, &e) != 0)
                LOG_WARN("outbox_mark_failed", "order_id", ids[i], "error", e.msg);
        } else if (mq_failed(*pub)) {
            mq_close(*pub);
            *pub = NULL;
        }
    }
}

static void *thread_main(void *arg)
{
    struct sweeper *s = arg;
    db_conn *db = NULL;
    mq_conn *pub = NULL;
    struct errbuf e = {0};
    int64_t next = clock_mono_ms() + s->cfg->sweep_interval_ms;

    db_thread_init();
    while (!atomic_load(s->stop)) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        if (clock_mono_ms() < next)
            continue;
        next = clock_mono_ms() + s->cfg->sweep_interval_ms;
        if (db == NULL && (db = db_open(s->cfg->mysql_url, 5000, &e)) == NULL) {
            LOG_WARN("sweep_failed", "error", e.msg);
            continue;
        }
        close_expired(s, db, &pub);
        sweep_once(s, db, &pub);
    }
    mq_close(pub);
    db_close(db);
    db_thread_end();
    return NULL;
}

sweeper *sweeper_start(const struct cfg *cfg, struct worker_stats *stats, atomic_int *stop)
{
    sweeper *s = calloc(1, sizeof(*s));

    if (s == NULL)
        abort();
    s->cfg = cfg;
    s->stats = stats;
    s->stop = stop;
    if (pthread_create(&s->tid, NULL, thread_main, s) != 0) {
        free(s);
        return NULL;
    }
    return s;
}

void sweeper_join(sweeper *s)
{
    if (s == NULL)
        return;
    pthread_join(s->tid, NULL);
    free(s);
}
