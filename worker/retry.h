/* worker/retry.h: the webhook retry schedule (pure). After a failed attempt it decides
 * whether the notification waits in a delay queue (which one, for how long) or is dead.
 *
 * Delay queue k (1..N) has a queue TTL of RETRY_QUEUE_HEADROOM times delay k; each message
 * carries its own expiration (the shorter wins), so the jittered delay and a longer
 * Retry-After fit without declaring a queue per value. */
#ifndef PAYNOTIFY_WORKER_RETRY_H
#define PAYNOTIFY_WORKER_RETRY_H

#include <stddef.h>
#include <stdint.h>

#include "queue/topology.h"

/* Queue TTL = delay * 6/5: room for +15 % jitter. */
#define RETRY_QUEUE_TTL(delay_ms) TOPOLOGY_RETRY_TTL(delay_ms)
#define RETRY_JITTER_PCT 15

struct retry_decision {
    int dead;              /* 1: retries exhausted */
    int queue;             /* delay queue to publish to, 1..N */
    int64_t expiration_ms; /* per-message expiration */
};

/* attempts_done: attempts made so far, the failed one included (1 after the immediate
 * attempt failed). delays[0..n) is PAYNOTIFY_RETRY_DELAYS. http_status and retry_after (the
 * header value or "") come from the failed attempt; Retry-After counts on 429 and 503 only.
 * jitter is a number in [-1, 1] (random in production, fixed in tests). now_ms is used
 * for Retry-After given as an HTTP date. */
void retry_plan(const int64_t *delays, size_t n, int attempts_done, long http_status,
                const char *retry_after, double jitter, int64_t now_ms, struct retry_decision *out);

/* Parses a Retry-After value (delta seconds or IMF-fixdate) into milliseconds from now_ms;
 * -1 if absent or malformed. */
int64_t retry_after_ms(const char *value, int64_t now_ms);

#endif
