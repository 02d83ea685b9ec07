/* worker/refunder.c: claims due PENDING refunds with a lease, calls the channel's refund
 * API under the refund's fixed idempotency key, records SUCCEEDED / retry-later /
 * REJECTED (with an alert). A crash anywhere repeats the call after the lease, with the
 * same key, so the provider refunds once. */
#include "worker/refunder.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "store/db.h"
#include "store/refunds.h"
#include "worker/stats.h"

#define REFUND_POLL_MS 1000
#define REFUND_BATCH 10
#define REFUND_LEASE_MS 60000

struct refunder {
    const struct cfg *cfg;
    const struct channels *chans;
    struct worker_stats *stats;
    atomic_int *stop;
    pthread_t tid;
};

static void handle(struct refunder *rf, db_conn *db, const struct refund *r)
{
    const struct channel *ch = channels_find(rf->chans, r->channel);
    struct refund_request req;
    struct refund_result res;
    struct errbuf e = {0};
    enum channel_call_status st;
    char attempts[16];
    int rc;

    snprintf(attempts, sizeof(attempts), "%d", r->attempts);
    if (ch == NULL || ch->ops->refund == NULL) {
        /* Kept PENDING: the channel may come back in the configuration. */
        LOG_ERROR("refund_unsupported", "order_id", r->order_id, "refund_id", r->refund_id,
                  "provider", r->channel);
        refunds_retry_later(db, r, "channel not configured or without a refund API",
                            refunds_backoff_ms(r->attempts), &e);
        return;
    }
    memset(&req, 0, sizeof(req));
    req.order_id = r->order_id;
    req.txn_id = r->txn_id;
    req.refund_id = r->refund_id;
    req.amount = r->amount;
    req.total = r->total;
    req.currency = r->currency;
    req.reason = r->reason;
    st = ch->ops->refund(ch->conf, &req, &res);
    if (st == CHANNEL_CALL_OK) {
        metric_inc(rf->stats->refunds_succeeded);
        LOG_INFO("refund_succeeded", "order_id", r->order_id, "refund_id", r->refund_id, "provider",
                 r->channel, "provider_refund_id", res.provider_refund_id, "state", res.state,
                 "attempt", attempts);
        rc = refunds_succeeded(db, r, res.provider_refund_id, res.state, &e);
    } else if (st == CHANNEL_CALL_RETRY) {
        metric_inc(rf->stats->refunds_retried);
        LOG_WARN("refund_retry", "order_id", r->order_id, "refund_id", r->refund_id, "provider",
                 r->channel, "error", res.error, "attempt", attempts);
        rc = refunds_retry_later(db, r, res.error, refunds_backoff_ms(r->attempts), &e);
    } else {
        metric_inc(rf->stats->refunds_rejected);
        LOG_ERROR("refund_rejected", "order_id", r->order_id, "refund_id", r->refund_id, "provider",
                  r->channel, "error", res.error);
        rc = refunds_rejected(db, r, res.error, &e);
    }
    /* If recording failed the lease runs out and the call is repeated with the same key. */
    if (rc != 0)
        LOG_WARN("refund_record_failed", "refund_id", r->refund_id, "error", e.msg);
}

static void *thread_main(void *arg)
{
    struct refunder *rf = arg;
    db_conn *db = NULL;
    struct errbuf e = {0};
    int64_t next = 0;

    db_thread_init();
    while (!atomic_load(rf->stop)) {
        struct refund *list;
        size_t n;
        struct timespec ts = {0, 100 * 1000000L};

        nanosleep(&ts, NULL);
        if (clock_mono_ms() < next)
            continue;
        next = clock_mono_ms() + REFUND_POLL_MS;
        if (db == NULL && (db = db_open(rf->cfg->mysql_url, 5000, &e)) == NULL) {
            LOG_WARN("refunder_db_unavailable", "error", e.msg);
            continue;
        }
        if (refunds_claim(db, REFUND_BATCH, REFUND_LEASE_MS, &list, &n, &e) != 0) {
            LOG_WARN("refund_claim_failed", "error", e.msg);
            continue;
        }
        for (size_t i = 0; i < n && !atomic_load(rf->stop); i++)
            handle(rf, db, &list[i]);
        free(list);
    }
    db_close(db);
    db_thread_end();
    return NULL;
}

refunder *refunder_start(const struct cfg *cfg, const struct channels *chans,
                         struct worker_stats *stats, atomic_int *stop)
{
    refunder *rf = calloc(1, sizeof(*rf));

    if (rf == NULL)
        abort();
    rf->cfg = cfg;
    rf->chans = chans;
    rf->stats = stats;
    rf->stop = stop;
    if (pthread_create(&rf->tid, NULL, thread_main, rf) != 0) {
        free(rf);
        return NULL;
    }
    return rf;
}

void refunder_join(refunder *rf)
{
    if (rf == NULL)
        return;
    pthread_join(rf->tid, NULL);
    free(rf);
}
