/* queue/mq.h: one blocking AMQP 0-9-1 connection with one channel (rabbitmq-c 0.11 inside):
 * connect, declare the topology, publish with publisher confirms, consume, ack/nack.
 *
 * Threads: an mq_conn belongs to one thread at a time; never share it (rabbitmq-c's rule).
 * Use: a connection is used EITHER for publishing OR for consuming, never both. A publishing
 * connection then never has to buffer deliveries while it waits for confirms, and a consuming
 * connection never sees confirms. (RPC-style calls -- declare, counts, purge -- are fine on
 * either kind.)
 *
 * Errors are sticky (like hiredis): once the socket, the connection or the channel failed --
 * including a broker channel.close such as 404 or 406 -- every later call fails fast with the
 * same message. The caller mq_close()s and mq_open()s again. A confirm timeout or a nack is
 * not sticky: the connection stays usable. */
#ifndef PAYNOTIFY_QUEUE_MQ_H
#define PAYNOTIFY_QUEUE_MQ_H

#include <stddef.h>
#include <stdint.h>

struct errbuf;

typedef struct mq_conn mq_conn; /* fields live in mq.c */

/* url "amqp://user:pass@host:port/vhost" (borrowed; vhost defaults to "/", escaped as %2f).
 * timeout_ms bounds the TCP connect, the login handshake and, afterwards, every RPC (declare,
 * purge, counts, close) so a hung broker cannot hang the caller. Heartbeat 30 s. Publisher
 * confirms are on (confirm.select). NULL + *e (TRANSIENT; PERMANENT for a bad URL) on
 * failure; free with mq_close(). */
mq_conn *mq_open(const char *url, int timeout_ms, struct errbuf *e);
/* Closes politely when the connection is still healthy; NULL-safe. */
void mq_close(mq_conn *c);
/* 1 once the connection has failed (the sticky state), else 0. */
int mq_failed(const mq_conn *c);
/* The connection's socket, for a watchdog on another thread. rabbitmq-c 0.11 writes without a
 * deadline: a publish into a hung broker's full socket buffers blocks until the kernel gives
 * up (TCP_USER_TIMEOUT, set to 60 s here). shutdown(2) of this fd (never close(2): c owns it)
 * makes such a call fail at once. -1 if none. */
int mq_socket_fd(const mq_conn *c);

/* Declares exchange, queues and bindings of queue/topology.h. queue_type "classic" or
 * "quorum"; retry_delays_ms[0..n) (borrowed) gives the delay queues
 * paynotify.notify.retry.<k>.<delay>. Idempotent for the same arguments. A queue that
 * exists with other arguments (e.g. another type) fails with the broker's 406 text, kind
 * PERMANENT, and leaves the connection failed. */
int mq_declare_topology(mq_conn *c, const char *queue_type, const int64_t *retry_delays_ms,
                        size_t n, struct errbuf *e);

/* Publishing. Every message goes to the paynotify exchange with the given routing key (a queue
 * name), persistent (delivery_mode 2), content_type application/json, message_id, and
 * mandatory: a routing key that reaches no queue comes back as a "return" and counts as a
 * failure instead of being confirmed and silently dropped. All pointers borrowed for the
 * call. */

/* Publishes and waits up to timeout_ms for the broker's confirm. 0 = acked; -1 = nack,
 * returned (unroutable), timeout or connection error, all kind TRANSIENT. message_id may be
 * NULL (no id). After a timeout the message may still arrive in the queue (at-least-once). */
int mq_publish_confirmed(mq_conn *c, const char *routing_key, const void *body, size_t len,
                         const char *message_id, int timeout_ms, struct errbuf *e);
/* As mq_publish_confirmed() with a per-message expiration (> 0 ms; 0 = none). */
int mq_publish_confirmed_exp(mq_conn *c, const char *routing_key, const void *body, size_t len,
                             const char *message_id, int64_t expiration_ms, int timeout_ms,
                             struct errbuf *e);

/* Low-level pieces for a confirm window (queue/publisher). mq_publish_nowait() sends one
 * message and stores its delivery tag (1, 2, ... per connection) in *tag without waiting;
 * confirms then arrive through mq_confirm_next(). */
int mq_publish_nowait(mq_conn *c, const char *routing_key, const void *body, size_t len,
                      const char *message_id, int64_t expiration_ms, uint64_t *tag,
                      struct errbuf *e);

enum mq_confirm_kind {
    MQ_CONFIRM_ACK,    /* tag (and all below it if multiple) is safely with the broker */
    MQ_CONFIRM_NACK,   /* tag (and all below it if multiple) was refused */
    MQ_CONFIRM_RETURN, /* a mandatory message reached no queue; its confirm follows */
};
struct mq_confirm {
    enum mq_confirm_kind kind;
    uint64_t tag;         /* ACK/NACK */
    int multiple;         /* ACK/NACK: covers every outstanding tag <= tag */
    int reply_code;       /* RETURN: e.g. 312 NO_ROUTE */
    char message_id[128]; /* RETURN: the returned message's id ("" if none) */
};
/* Waits up to timeout_ms for the next confirm event. wake_fd (-1 = none) is polled too, so
 * another thread can interrupt the wait by making it readable; the caller drains it.
 * 0 = *out filled; 1 = timeout; 2 = wake_fd readable; -1 = error (connection gone). */
int mq_confirm_next(mq_conn *c, int timeout_ms, int wake_fd, struct mq_confirm *out,
                    struct errbuf *e);

/* Consuming. basic.qos(prefetch) then basic.consume with manual ack on queue (borrowed). */
int mq_consume_start(mq_conn *c, const char *queue, uint16_t prefetch, struct errbuf *e);

struct mq_msg {
    void *body; /* owned; NUL-terminated one byte past len for convenience */
    size_t len;
    uint64_t delivery_tag;
    int redelivered;
    char message_id[128]; /* "" if the message had none; longer ids are cut */
    int64_t death_count;  /* sum of x-death counts (times dead-lettered), 0 if none */
};
/* Waits up to timeout_ms for a delivery. 0 = *m filled (free with mq_msg_free()); 1 = timeout;
 * -1 = error (connection or channel gone, or the broker cancelled the consumer). */
int mq_consume_next(mq_conn *c, int timeout_ms, struct mq_msg *m, struct errbuf *e);
void mq_msg_free(struct mq_msg *m); /* NULL-safe; frees body, keeps the struct */
int mq_ack(mq_conn *c, uint64_t tag, struct errbuf *e);
/* requeue 1: back to the queue (redelivered=1); 0: dead-letter or drop per queue args. */
int mq_nack(mq_conn *c, uint64_t tag, int requeue, struct errbuf *e);

/* Passive declare: message and consumer counts (readiness, tests). A missing queue fails with
 * the broker's 404 text (PERMANENT) and leaves the connection failed. */
int mq_queue_counts(mq_conn *c, const char *queue, uint32_t *messages, uint32_t *consumers,
                    struct errbuf *e);
int mq_purge(mq_conn *c, const char *queue, struct errbuf *e);        /* tests, operators */
int mq_queue_delete(mq_conn *c, const char *queue, struct errbuf *e); /* tests */

#endif
