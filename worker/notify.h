/* worker/notify.h: the notify stage: consumes paynotify.notify and POSTs signed Standard
 * Webhooks to business notify URLs, many at once, through worker/webhook. */
#ifndef PAYNOTIFY_WORKER_NOTIFY_H
#define PAYNOTIFY_WORKER_NOTIFY_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

struct cfg;
struct cfg_business;
struct order;
struct notification;
struct worker_stats;
typedef struct notifier notifier;

/* Starts cfg->notify_threads consumer threads. cfg, stats and stop borrowed (until
 * notifier_join()). NULL if a thread could not start (*stop is then set). */
notifier *notifier_start(const struct cfg *cfg, struct worker_stats *stats, atomic_int *stop);
/* 1 when every notify thread has its broker consumer and MySQL connection. */
int notifier_ready(const notifier *n);
/* After *stop is set: stops consuming, lets requests in flight finish (up to the notify
 * timeout), records them, then joins and frees. */
void notifier_join(notifier *n);

/* The webhook body for a notification and the order's current state. Caller frees. */
char *notify_build_body(const struct notification *n, const struct order *o, size_t *len);
/* The NULL-terminated "Name: value" header array for one attempt (caller frees each entry
 * and the array; webhook_engine_submit() takes it). */
char **notify_build_headers(const struct cfg_business *b, const char *webhook_id, int64_t timestamp,
                            const char *body, size_t len);

#endif
