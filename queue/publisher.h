/* queue/publisher.h: the receiver's AMQP thread. A libuv loop must never block, and rabbitmq-c
 * 0.11 only blocks, so the publisher owns one mq connection on a thread of its own. The loop
 * submits messages; the thread publishes them with a confirm window (many outstanding),
 * matches basic.ack/basic.nack delivery tags (including "multiple") and hands each result back
 * to the loop through a uv_async, which runs every callback on the loop thread.
 *
 * Failure is fast and explicit: while the broker is unreachable a submit fails at once (the
 * receiver answers 503 and the provider retries); every submit that has no confirm within
 * confirm_timeout_ms of being submitted fails; a lost connection fails everything outstanding.
 * The thread reconnects by itself (backoff up to ~2 s) and declares the topology on every
 * connect. */
#ifndef PAYNOTIFY_QUEUE_PUBLISHER_H
#define PAYNOTIFY_QUEUE_PUBLISHER_H

#include <stddef.h>
#include <stdint.h>

#include <uv.h>

struct errbuf;

typedef struct publisher publisher; /* fields live in publisher.c */

/* status 0 = the broker confirmed the message (it is durable in the queue); -1 = failed (not
 * connected, nack, unroutable, no confirm in time, connection lost, stopped). msg (borrowed,
 * valid during the call) says why; "" on success. Runs on the loop thread, exactly once per
 * publisher_submit(), never from inside publisher_submit() itself. */
typedef void (*publisher_cb)(void *arg, int status, const char *msg);

struct publisher_opts {
    const char *amqp_url;           /* borrowed; copied by publisher_start() */
    int confirm_timeout_ms;         /* <= 0: 5000. Counted from publisher_submit(). */
    int max_in_flight;              /* <= 0: 256. Published but unconfirmed at most. */
    const char *queue_type;         /* "classic" or "quorum"; copied */
    const int64_t *retry_delays_ms; /* [n_delays], copied */
    size_t n_delays;
};

/* Loop thread. Starts the AMQP thread; it connects in the background, so a broker that is down
 * is not an error here (publisher_is_connected() says when it is up). NULL + *e only for bad
 * options or when the thread cannot start. loop borrowed; it must outlive the publisher. */
publisher *publisher_start(uv_loop_t *loop, const struct publisher_opts *o, struct errbuf *e);

/* Loop thread. Queues one message for the "paynotify" exchange; routing_key, body and
 * message_id (borrowed) are copied. cb(arg, ...) runs later on the loop thread. */
void publisher_submit(publisher *p, const char *routing_key, const void *body, size_t len,
                      const char *message_id, publisher_cb cb, void *arg);

/* Any thread: 1 while connected with the topology declared (for /readyz), else 0. */
int publisher_is_connected(const publisher *p);

/* Loop thread. Stops and joins the AMQP thread (a healthy connection is closed politely; one
 * stuck on a hung broker is shut down after ~1 s; a connect in progress may hold the loop up to
 * its 2 s timeout), then runs cb(-1, "publisher stopped") for every submit still pending, and
 * closes the publisher's two uv handles (an async and an unref'd watchdog timer). p must not
 * be used after this call; its memory is freed by the last handle close callback, so run the
 * loop (uv_run) once more before uv_loop_close(). NULL-safe. */
void publisher_stop(publisher *p);

#endif
