/* queue/topology.h: every RabbitMQ name paynotify uses (exchange, work queues, delay queues,
 * dead and parked queues) and the retry-delay list that decides the delay queues. Pure: no I/O.
 * queue/mq.c turns these names into declarations. */
#ifndef PAYNOTIFY_QUEUE_TOPOLOGY_H
#define PAYNOTIFY_QUEUE_TOPOLOGY_H

#include <stddef.h>
#include <stdint.h>

struct errbuf;

/* Direct, durable; every queue below is bound to it with routing key = queue name. */
#define TOPOLOGY_EXCHANGE "paynotify"
/* Provider callbacks from the receiver, consumed by the workers. */
#define TOPOLOGY_CALLBACKS "paynotify.callbacks"
/* Callbacks a worker gave up on (poison: unparsable, failing every time). */
#define TOPOLOGY_CALLBACKS_PARKED "paynotify.callbacks.parked"
/* Business notifications to deliver. */
#define TOPOLOGY_NOTIFY "paynotify.notify"
/* Notifications that failed after the last retry. */
#define TOPOLOGY_NOTIFY_DEAD "paynotify.notify.dead"
/* Prefix of the delay queues: "paynotify.notify.retry.<k>.<delay>". */
#define TOPOLOGY_RETRY_PREFIX "paynotify.notify.retry."

/* Most retries a schedule may have (delay queues 1..TOPOLOGY_MAX_RETRIES). */
#define TOPOLOGY_MAX_RETRIES 16
/* Longest delay: RabbitMQ's x-message-ttl is at most 2^32-1 ms (about 49 days). */
#define TOPOLOGY_MAX_DELAY_MS 4294967295LL
/* A buffer this big holds any name built here, NUL included. */
#define TOPOLOGY_NAME_MAX 64

/* Writes the name of delay queue k (1-based) for a delay, e.g. k=1, 15000 ms ->
 * "paynotify.notify.retry.1.15s". Encoding the delay in the name lets a changed schedule
 * declare fresh queues instead of failing with 406 on the old ones' x-message-ttl.
 * 0, or -1 if k < 1, the delay is out of range or buf (borrowed) is too small. */
int topology_retry_queue_name(int k, int64_t delay_ms, char *buf, size_t len);

/* The x-message-ttl of delay queue k: its delay plus 20 % headroom. Each message carries
 * its own, shorter expiration (the jittered delay, or a longer Retry-After), and the
 * shorter of the two wins; the queue TTL is the upper bound. */
/* Quorum queues only: a message redelivered this often (a worker crashing on it, again and
 * again) is dead-lettered: callbacks to paynotify.callbacks.parked, notifications to
 * paynotify.notify.dead. Workers republish instead of requeueing for ordinary retries, so
 * only crash loops count. */
#define TOPOLOGY_DELIVERY_LIMIT 20

#define TOPOLOGY_RETRY_TTL(delay_ms) ((delay_ms) + (delay_ms) / 5)

/* Compact form of a delay: the largest unit that divides it exactly, "2h", "1m", "90s",
 * "1500ms". 0, or -1 if ms <= 0 or buf (borrowed) is too small. */
int topology_format_delay(int64_t ms, char *buf, size_t len);

/* Parses a comma-separated delay list such as "15s,1m,5m,30m,2h" (units ms, s, m, h; blanks
 * around items allowed) into out_ms[0..*n). Every item needs a unit and must be a positive
 * whole number no larger than TOPOLOGY_MAX_DELAY_MS. s borrowed. 0, or -1 with a message
 * naming the bad item (kind PERMANENT) on garbage, zero, negative, overflow, an empty list
 * or more than max items. */
int topology_parse_delays(const char *s, int64_t *out_ms, size_t max, size_t *n, struct errbuf *e);

/* 0 if qt is "classic" or "quorum", else -1 (PERMANENT) naming it. */
int topology_check_queue_type(const char *qt, struct errbuf *e);

#endif
