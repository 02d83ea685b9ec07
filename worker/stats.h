/* worker/stats.h: the worker process's Prometheus series, registered once at start and
 * updated lock-free from every thread. */
#ifndef PAYNOTIFY_WORKER_STATS_H
#define PAYNOTIFY_WORKER_STATS_H

#include "common/metrics.h"

struct worker_stats {
    metrics *reg;
    metric *callbacks_consumed;
    metric *callbacks_applied;  /* order state changed */
    metric *callbacks_recorded; /* logged without a state change */
    metric *duplicates_redis;   /* dropped by the Redis fast path */
    metric *duplicates_mysql;   /* dropped by the payment_log unique key */
    metric *callbacks_retried;  /* requeued: order busy or transient error */
    metric *callbacks_parked;   /* poison: moved to paynotify.callbacks.parked */
    metric *anomalies;          /* amount mismatch, duplicate payment, unknown order... */
    metric *redis_fallbacks;    /* Redis unreachable: MySQL alone decided */
    metric *apply_seconds;      /* histogram: one-transaction apply */
    metric *notify_published;
    metric *notify_consumed;       /* messages the notify stage took from paynotify.notify */
    metric *notify_publish_failed; /* left to the sweeper */
    metric *swept;                 /* outbox rows republished by the sweeper */
    metric *webhooks_delivered;
    metric *webhooks_failed;
    metric *webhooks_skipped;         /* already DELIVERED: not sent (or retried) again */
    metric *webhooks_deferred;        /* endpoint saturated: back to a delay queue, no attempt */
    metric *webhooks_retry_scheduled; /* moved to a delay queue */
    metric *webhooks_dead;            /* retries exhausted: dead queue, FAILED, alert */
    metric *webhook_seconds;          /* histogram: webhook latency */
    metric *webhooks_in_flight;       /* gauge, all notify threads */
    metric *refunds_succeeded;
    metric *refunds_retried;
    metric *refunds_rejected;
    metric *orders_closed; /* expired PENDING orders closed by the sweeper */
};

/* Registers every series in a new registry; free with worker_stats_free(). */
void worker_stats_init(struct worker_stats *s);
void worker_stats_free(struct worker_stats *s);

#endif
