/* worker/stats.c: registration of the worker's metrics. */
#include "worker/stats.h"

#include <string.h>

void worker_stats_init(struct worker_stats *s)
{
    metrics *r = metrics_new();

    memset(s, 0, sizeof(*s));
    s->reg = r;
    s->callbacks_consumed = metrics_counter(r, "paynotify_worker_callbacks_total",
                                            "Callbacks taken from paynotify.callbacks, by outcome.",
                                            "outcome=\"consumed\"");
    s->callbacks_applied =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"applied\"");
    s->callbacks_recorded =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"recorded\"");
    s->duplicates_redis =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"duplicate_redis\"");
    s->duplicates_mysql =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"duplicate_mysql\"");
    s->callbacks_retried =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"retried\"");
    s->callbacks_parked =
        metrics_counter(r, "paynotify_worker_callbacks_total", NULL, "outcome=\"parked\"");
    s->anomalies = metrics_counter(r, "paynotify_worker_payment_anomalies_total",
                                   "Amount mismatches, duplicate payments, unknown orders, "
                                   "payments after close.",
                                   NULL);
    s->redis_fallbacks =
        metrics_counter(r, "paynotify_worker_redis_fallbacks_total",
                        "Callbacks decided by MySQL alone because Redis failed.", NULL);
    s->apply_seconds = metrics_histogram(r, "paynotify_worker_apply_seconds",
                                         "Time of the one-transaction apply of a callback.", NULL,
                                         METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    s->notify_published = metrics_counter(
        r, "paynotify_worker_notify_published_total",
        "Notify messages published: after the commit (apply; the confirm is read in the"
        " background) or by the sweeper (confirmed).",
        "via=\"apply\"");
    s->notify_consumed =
        metrics_counter(r, "paynotify_worker_notify_messages_total",
                        "Messages the notify stage took from paynotify.notify.", NULL);
    s->swept =
        metrics_counter(r, "paynotify_worker_notify_published_total", NULL, "via=\"sweeper\"");
    s->notify_publish_failed = metrics_counter(
        r, "paynotify_worker_notify_publish_failures_total",
        "Notify publishes that failed after commit (the sweeper republishes them).", NULL);
    s->webhooks_delivered =
        metrics_counter(r, "paynotify_worker_webhooks_total", "Business webhooks sent, by outcome.",
                        "outcome=\"delivered\"");
    s->webhooks_failed =
        metrics_counter(r, "paynotify_worker_webhooks_total", NULL, "outcome=\"failed\"");
    s->webhooks_skipped = metrics_counter(r, "paynotify_worker_webhooks_total", NULL,
                                          "outcome=\"skipped_delivered\"");
    s->webhooks_retry_scheduled =
        metrics_counter(r, "paynotify_worker_webhooks_total", NULL, "outcome=\"retry_scheduled\"");
    s->webhooks_dead =
        metrics_counter(r, "paynotify_worker_webhooks_total", NULL, "outcome=\"dead\"");
    s->webhooks_deferred = metrics_counter(r, "paynotify_worker_webhooks_total", NULL,
                                           "outcome=\"deferred_endpoint_busy\"");
    s->webhook_seconds = metrics_histogram(r, "paynotify_worker_webhook_seconds",
                                           "Latency of business webhook requests.", NULL,
                                           METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    s->refunds_succeeded =
        metrics_counter(r, "paynotify_worker_refunds_total", "Automatic refunds by outcome.",
                        "outcome=\"succeeded\"");
    s->refunds_retried =
        metrics_counter(r, "paynotify_worker_refunds_total", NULL, "outcome=\"retry\"");
    s->refunds_rejected =
        metrics_counter(r, "paynotify_worker_refunds_total", NULL, "outcome=\"rejected\"");
    s->orders_closed = metrics_counter(r, "paynotify_worker_orders_closed_total",
                                       "PENDING orders closed at their expire_at.", NULL);
    s->webhooks_in_flight = metrics_gauge(r, "paynotify_worker_webhooks_in_flight",
                                          "Webhook requests running now.", NULL);
}

void worker_stats_free(struct worker_stats *s)
{
    metrics_free(s->reg);
    s->reg = NULL;
}
