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
#include "store/alerts.h"
#include "store/db.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "worker/stats.h"

#define SWEEP_BATCH 100

struct sweeper {
    const struct cfg *cfg;
    struct worker_stats *stats;
    atomic_int *stop;
    pthread_t tid;
    uint32_t parked_seen; /* messages in the parking queue at the last look */
};

/* Publishes the notify messages of outbox rows ids[0..n) (confirmed) and marks them. */
static void republish(struct sweeper *s, db_conn *db, mq_conn **pub, const int64_t *ids, int n,
                      const char *why)
{
    struct errbuf e = {0};

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
        LOG_INFO("sweep_published", "notification_id", id, "why", why);
        if (outbox_mark_published(db, ids[i], &e) != 0)
            LOG_WARN("outbox_mark_failed", "notification_id", id, "error", e.msg);
    }
}

/* Longest time a live notification can go without an attempt: the longest delay queue's
 * TTL, one attempt, and a margin. */
static int64_t stuck_after_ms(const struct cfg *cfg)
{
    int64_t longest = 0;
    for (size_t i = 0; i < cfg->n_retry_delays; i++)
        if (cfg->retry_delays_ms[i] > longest)
            longest = cfg->retry_delays_ms[i];
    return TOPOLOGY_RETRY_TTL(longest) + cfg->notify_timeout_ms + 300000;
}

static void sweep_once(struct sweeper *s, db_conn *db, mq_conn **pub)
{
    int64_t ids[SWEEP_BATCH];
    struct errbuf e = {0};
    int n = outbox_unpublished(db, s->cfg->sweep_interval_ms, ids, SWEEP_BATCH, &e);

    if (n < 0) {
        LOG_WARN("sweep_failed", "error", e.msg);
        return;
    }
    republish(s, db, pub, ids, n, "never_published");
    n = outbox_stuck(db, stuck_after_ms(s->cfg), ids, SWEEP_BATCH, &e);
    if (n < 0) {
        LOG_WARN("sweep_failed", "error", e.msg);
        return;
    }
    republish(s, db, pub, ids, n, "stuck");
}

/* Poison messages land in paynotify.callbacks.parked (worker or broker delivery limit);
 * growth there means a callback nobody can process: on-call hears of it. */
static void watch_parked(struct sweeper *s, db_conn *db, mq_conn **pub)
{
    struct errbuf e = {0};
    uint32_t msgs = 0, consumers = 0;
    char key[64], subject[160], body[512];

    if (*pub == NULL && (*pub = mq_open(s->cfg->amqp_url, 5000, &e)) == NULL)
        return;
    if (mq_queue_counts(*pub, TOPOLOGY_CALLBACKS_PARKED, &msgs, &consumers, &e) != 0) {
        mq_close(*pub);
        *pub = NULL;
        return;
    }
    if (msgs <= s->parked_seen) {
        s->parked_seen = msgs;
        return;
    }
    s->parked_seen = msgs;
    snprintf(key, sizeof(key), "callback_parked:%u:%lld", msgs,
             (long long)(clock_now_ms() / 60000));
    snprintf(subject, sizeof(subject), "paynotify: %u callback(s) parked", msgs);
    snprintf(body, sizeof(body),
             "%u provider callback(s) could not be processed and were parked in %s (each with "
             "its reason; the worker logs callback_parked). They were acknowledged to the "
             "provider: inspect them, fix the cause and republish them to %s.\n",
             msgs, TOPOLOGY_CALLBACKS_PARKED, TOPOLOGY_CALLBACKS);
    if (alerts_enqueue(db, "callback_parked", key, NULL, NULL, subject, body, &e) < 0)
        LOG_WARN("parked_alert_failed", "error", e.msg);
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
        LOG_INFO("order_closed", "order_id", ids[i], "reason", "expired", "webhook_id", webhook_id);
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
    int rc;

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
        /* One sweeper at a time across all workers keeps the work small. */
        rc = outbox_sweep_lock(db, &e);
        if (rc != 0) {
            if (rc < 0)
                LOG_WARN("sweep_failed", "error", e.msg);
            continue;
        }
        close_expired(s, db, &pub);
        sweep_once(s, db, &pub);
        watch_parked(s, db, &pub);
        outbox_sweep_unlock(db);
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
