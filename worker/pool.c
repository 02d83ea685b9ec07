/* worker/pool.c: N threads consuming paynotify.callbacks with manual acks. A message is
 * acked only after job_handle() committed its effect; anything else requeues or parks. */
#include "worker/pool.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <json-c/json.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/log.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/db.h"
#include "store/kv.h"
#include "worker/announce.h"
#include "worker/job.h"
#include "worker/stats.h"

struct pool_thread {
    struct pool *pool;
    pthread_t tid;
    int index;
    atomic_int ready;
};

struct pool {
    const struct cfg *cfg;
    const struct channels *chans;
    struct worker_stats *stats;
    atomic_int *stop;
    int n;
    struct pool_thread *threads;
};

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Opens what is missing. 0 when everything needed to consume is up. */
static int connect_all(struct pool_thread *t, db_conn **db, kv_conn **kv, mq_conn **cons,
                       mq_conn **pub)
{
    const struct cfg *cfg = t->pool->cfg;
    struct errbuf e = {0};

    if (*kv == NULL)
        *kv = kv_open(cfg->redis_url, 1000, &e); /* never NULL for a valid URL */
    if (*db == NULL && (*db = db_open(cfg->mysql_url, 5000, &e)) == NULL) {
        LOG_WARN("mysql_unavailable", "error", e.msg);
        return -1;
    }
    if (*cons == NULL) {
        *cons = mq_open(cfg->amqp_url, 5000, &e);
        if (*cons == NULL ||
            mq_declare_topology(*cons, cfg->queue_type, cfg->retry_delays_ms, cfg->n_retry_delays,
                                &e) != 0 ||
            mq_consume_start(*cons, TOPOLOGY_CALLBACKS, (uint16_t)cfg->prefetch, &e) != 0) {
            LOG_WARN("broker_unavailable", "error", e.msg);
            mq_close(*cons);
            *cons = NULL;
            return -1;
        }
    }
    if (*pub == NULL && (*pub = mq_open(cfg->amqp_url, 5000, &e)) == NULL) {
        LOG_WARN("broker_unavailable", "error", e.msg);
        return -1;
    }
    return 0;
}

/* Moves a poison message to the parking queue (confirmed) so it is kept, with its reason,
 * and no longer blocks or loops. */
static int park(mq_conn *pub, const struct cfg *cfg, const struct mq_msg *m, const char *reason,
                struct errbuf *e)
{
    json_object *o = json_object_new_object();
    char *b64 = malloc(crypto_b64_len(m->len) + 1);
    const char *body;
    int rc;

    if (b64 == NULL)
        abort();
    crypto_b64_encode(m->body, m->len, b64);
    json_object_object_add(o, "reason", json_object_new_string(reason));
    json_object_object_add(o, "parked_at_ms", json_object_new_int64(clock_now_ms()));
    json_object_object_add(o, "message_b64", json_object_new_string(b64));
    body = json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN);
    rc = pub == NULL ? -1
                     : mq_publish_confirmed(pub, TOPOLOGY_CALLBACKS_PARKED, body, strlen(body),
                                            m->message_id, (int)cfg->confirm_timeout_ms, e);
    if (pub == NULL)
        errbuf_set(e, ERRBUF_TRANSIENT, "no broker connection");
    json_object_put(o);
    free(b64);
    return rc;
}

/* The publishing connection failed: close it; its unconfirmed notify messages are the
 * sweeper's now. */
static void drop_pub(mq_conn **pub, announcer *ann, const struct errbuf *e)
{
    if (*pub != NULL)
        LOG_WARN("broker_publish_failed", "error", e->msg);
    mq_close(*pub);
    *pub = NULL;
    announce_forget(ann);
}

static void *thread_main(void *arg)
{
    struct pool_thread *t = arg;
    struct pool *p = t->pool;
    db_conn *db = NULL;
    kv_conn *kv = NULL;
    mq_conn *cons = NULL, *pub = NULL;
    struct job_ctx ctx;
    struct errbuf e = {0};
    char reason[256];

    db_thread_init();
    memset(&ctx, 0, sizeof(ctx));
    ctx.cfg = p->cfg;
    ctx.chans = p->chans;
    ctx.stats = p->stats;
    ctx.ann = announce_new();
    while (!atomic_load(p->stop)) {
        struct mq_msg m;
        enum job_verdict v;
        int rc;

        /* Confirms of notify messages sent so far; the rows they cover are marked published
         * in batches, and at once when the broker is away: that needs MySQL only, and a row
         * left unmarked would be published again by the sweeper. */
        if (pub != NULL && announce_collect(ctx.ann, pub, 0, &e) != 0)
            drop_pub(&pub, ctx.ann, &e);
        if (db != NULL && announce_flush(ctx.ann, db, cons == NULL || pub == NULL, &e) != 0)
            LOG_WARN("outbox_mark_failed", "error", e.msg);
        if (connect_all(t, &db, &kv, &cons, &pub) != 0) {
            atomic_store(&t->ready, 0);
            sleep_ms(1000);
            continue;
        }
        atomic_store(&t->ready, 1);
        memset(&m, 0, sizeof(m));
        rc = mq_consume_next(
            cons, announce_outstanding(ctx.ann) + announce_unmarked(ctx.ann) > 0 ? 20 : 250, &m,
            &e);
        if (rc == 1)
            continue;
        if (rc < 0) {
            LOG_WARN("broker_consume_failed", "error", e.msg);
            mq_close(cons);
            cons = NULL;
            continue;
        }
        metric_inc(p->stats->callbacks_consumed);
        ctx.db = db;
        ctx.kv = kv;
        ctx.pub = pub;
        ctx.pub_failed = 0;
        v = job_handle(&ctx, m.body, m.len, reason, sizeof(reason));
        if (ctx.pub_failed)
            drop_pub(&pub, ctx.ann, &e);
        /* A confirmed publish below would skip the confirms of earlier notify messages. */
        if (v != JOB_ACK && pub != NULL &&
            announce_drain(ctx.ann, pub, (int)p->cfg->confirm_timeout_ms, &e) != 0)
            drop_pub(&pub, ctx.ann, &e);
        if (v == JOB_PARK && park(pub, p->cfg, &m, reason, &e) != 0) {
            LOG_WARN("park_failed", "error", e.msg);
            v = JOB_RETRY;
        }
        if (v == JOB_PARK)
            metric_inc(p->stats->callbacks_parked);
        if (v == JOB_RETRY) {
            metric_inc(p->stats->callbacks_retried);
            /* Delayed, not dropped: after a short pause a confirmed copy goes to the back of
             * the queue and only then is this delivery acked, so a busy order or a database
             * outage never counts against the queue's delivery limit (kept for crash loops).
             * If the copy cannot be published, the broker requeues the original. */
            sleep_ms(100);
            if (pub != NULL &&
                mq_publish_confirmed(pub, TOPOLOGY_CALLBACKS, m.body, m.len, m.message_id,
                                     (int)p->cfg->confirm_timeout_ms, &e) == 0)
                rc = mq_ack(cons, m.delivery_tag, &e);
            else
                rc = mq_nack(cons, m.delivery_tag, 1, &e);
        } else {
            rc = mq_ack(cons, m.delivery_tag, &e);
        }
        mq_msg_free(&m);
        if (rc != 0) {
            /* Unacked messages go back to the queue when the channel closes. */
            LOG_WARN("broker_ack_failed", "error", e.msg);
            mq_close(cons);
            cons = NULL;
        }
        if (pub != NULL && mq_failed(pub))
            drop_pub(&pub, ctx.ann, &e);
    }
    atomic_store(&t->ready, 0);
    /* Let the last notify messages be confirmed and marked, so the sweeper need not. */
    if (pub != NULL && db != NULL &&
        announce_drain(ctx.ann, pub, (int)p->cfg->confirm_timeout_ms, &e) == 0 &&
        announce_flush(ctx.ann, db, 1, &e) != 0)
        LOG_WARN("outbox_mark_failed", "error", e.msg);
    announce_free(ctx.ann);
    /* Closing the consumer hands prefetched, unacked messages back to the broker. */
    mq_close(cons);
    mq_close(pub);
    kv_close(kv);
    db_close(db);
    db_thread_end();
    return NULL;
}

pool *pool_start(const struct cfg *cfg, const struct channels *chans, struct worker_stats *stats,
                 atomic_int *stop)
{
    pool *p = calloc(1, sizeof(*p));

    if (p == NULL)
        abort();
    p->cfg = cfg;
    p->chans = chans;
    p->stats = stats;
    p->stop = stop;
    p->threads = calloc((size_t)cfg->worker_threads, sizeof(*p->threads));
    if (p->threads == NULL)
        abort();
    for (int i = 0; i < cfg->worker_threads; i++) {
        p->threads[i].pool = p;
        p->threads[i].index = i;
        if (pthread_create(&p->threads[i].tid, NULL, thread_main, &p->threads[i]) != 0) {
            atomic_store(stop, 1);
            p->n = i;
            pool_join(p);
            return NULL;
        }
        p->n = i + 1;
    }
    return p;
}

int pool_ready(const pool *p)
{
    int n = 0;
    for (int i = 0; i < p->n; i++)
        n += atomic_load(&p->threads[i].ready);
    return n;
}

void pool_join(pool *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < p->n; i++)
        pthread_join(p->threads[i].tid, NULL);
    free(p->threads);
    free(p);
}
