/* queue/mq.c: the only file that talks to rabbitmq-c. One blocking connection with channel 1,
 * publisher confirms, the topology declarations, consuming, and the sticky error state that
 * turns any socket, connection or channel failure into "close and reopen".
 *
 * Frames that are not the reply a caller waits for (broker channel.close / connection.close,
 * basic.cancel, returns, connection.blocked) all go through handle_async_method(), so every
 * path answers a broker close with close-ok and reports the broker's own words. */
#include "queue/mq.h"

#include "common/errbuf.h"
#include "queue/topology.h"

#include <amqp.h>
#include <amqp_tcp_socket.h>

#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define MQ_CHANNEL 1
#define MQ_FRAME_MAX 131072
#define MQ_HEARTBEAT_S 30
/* While waiting on a wake fd, hand control back to rabbitmq-c at least this often so it sends
 * heartbeats and notices a silent broker. */
#define MQ_POLL_SLICE_MS 1000
/* Twice the heartbeat: the broker would have given up on us by then, too. */
#define MQ_TCP_USER_TIMEOUT_MS (2 * MQ_HEARTBEAT_S * 1000)
/* Longest wait for the broker's connection.close-ok in mq_close(). */
#define MQ_CLOSE_TIMEOUT_MS 500

struct mq_conn {
    amqp_connection_state_t st;
    uint64_t next_tag; /* delivery tag the next publish gets (confirm mode counts from 1) */
    int failed;        /* sticky: every call fails with err */
    int dead;          /* the connection itself is gone: no polite close */
    struct errbuf err;
};

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timeval ms_to_tv(int64_t ms)
{
    struct timeval tv;

    if (ms < 0)
        ms = 0;
    tv.tv_sec = (time_t)(ms / 1000);
    tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
    return tv;
}

static void copy_err(struct errbuf *dst, const struct errbuf *src)
{
    if (dst != NULL)
        *dst = *src;
}

/* Enters the sticky failed state (the first failure's message wins) and reports it. */
__attribute__((format(printf, 5, 6))) static int fail(mq_conn *c, struct errbuf *e, int dead,
                                                      enum errbuf_kind kind, const char *fmt, ...)
{
    va_list ap;

    if (dead)
        c->dead = 1;
    if (!c->failed) {
        c->failed = 1;
        c->err.kind = kind;
        va_start(ap, fmt);
        vsnprintf(c->err.msg, sizeof(c->err.msg), fmt, ap);
        va_end(ap);
    }
    copy_err(e, &c->err);
    return -1;
}

/* Fails fast when an earlier call already failed. */
static int check_usable(mq_conn *c, struct errbuf *e)
{
    if (c == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "AMQP: no connection");
        return -1;
    }
    if (c->failed) {
        copy_err(e, &c->err);
        return -1;
    }
    return 0;
}

/* The broker closed the channel or the connection: answer with close-ok, as the protocol asks,
 * and fail with the broker's reply code and text. what names the call that saw it. */
static int fail_broker_close(mq_conn *c, const amqp_method_t *m, const char *what, struct errbuf *e)
{
    if (m->id == AMQP_CONNECTION_CLOSE_METHOD) {
        const amqp_connection_close_t *cc = m->decoded;
        amqp_connection_close_ok_t ok = {0};

        amqp_send_method(c->st, 0, AMQP_CONNECTION_CLOSE_OK_METHOD, &ok);
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: broker closed the connection: %u %.*s",
                    what, cc->reply_code, (int)cc->reply_text.len,
                    (const char *)cc->reply_text.bytes);
    } else {
        const amqp_channel_close_t *cc = m->decoded;
        amqp_channel_close_ok_t ok = {0};
        /* Access refused, not found, not allowed and inequivalent arguments do not heal by
         * retrying; anything else (e.g. 505 unexpected frame) might. */
        enum errbuf_kind kind = (cc->reply_code == 403 || cc->reply_code == 404 ||
                                 cc->reply_code == 405 || cc->reply_code == 406)
                                    ? ERRBUF_PERMANENT
                                    : ERRBUF_TRANSIENT;

        amqp_send_method(c->st, MQ_CHANNEL, AMQP_CHANNEL_CLOSE_OK_METHOD, &ok);
        return fail(c, e, 0, kind, "AMQP %s: broker closed the channel: %u %.*s", what,
                    cc->reply_code, (int)cc->reply_text.len, (const char *)cc->reply_text.bytes);
    }
}

/* Turns an RPC reply into 0, or -1 with the connection failed. */
static int check_reply(mq_conn *c, amqp_rpc_reply_t r, const char *what, struct errbuf *e)
{
    switch (r.reply_type) {
    case AMQP_RESPONSE_NORMAL:
        return 0;
    case AMQP_RESPONSE_NONE:
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: no reply from the broker", what);
    case AMQP_RESPONSE_LIBRARY_EXCEPTION:
        /* rabbitmq-c closes the socket on these (timeouts included). */
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: %s", what,
                    amqp_error_string2(r.library_error));
    case AMQP_RESPONSE_SERVER_EXCEPTION:
        if (r.reply.id == AMQP_CONNECTION_CLOSE_METHOD || r.reply.id == AMQP_CHANNEL_CLOSE_METHOD)
            return fail_broker_close(c, &r.reply, what, e);
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: unexpected method 0x%08x", what,
                    (unsigned)r.reply.id);
    }
    return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: unknown reply type %d", what,
                (int)r.reply_type);
}

static int check_rpc(mq_conn *c, const char *what, struct errbuf *e)
{
    int rc = check_reply(c, amqp_get_rpc_reply(c->st), what, e);

    if (!c->dead)
        amqp_maybe_release_buffers(c->st);
    return rc;
}

static void set_bool(amqp_table_entry_t *t, const char *key)
{
    t->key = amqp_cstring_bytes(key);
    t->value.kind = AMQP_FIELD_KIND_BOOLEAN;
    t->value.value.boolean = 1;
}

mq_conn *mq_open(const char *url, int timeout_ms, struct errbuf *e)
{
    struct amqp_connection_info ci;
    amqp_table_entry_t caps[2], props[2];
    amqp_table_t cap_table, prop_table;
    amqp_socket_t *sock;
    struct timeval tv = ms_to_tv(timeout_ms > 0 ? timeout_ms : 1);
    char *copy = NULL;
    const char *vhost;
    mq_conn *c = NULL;
    int rc;

    if (url == NULL || (copy = strdup(url)) == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "AMQP URL missing");
        return NULL;
    }
    amqp_default_connection_info(&ci);
    /* Never echo the URL: it carries the password. */
    if (amqp_parse_url(copy, &ci) != AMQP_STATUS_OK) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "AMQP URL is not of the form amqp://user:pass@host:port/vhost");
        goto err;
    }
    if (ci.ssl) {
        errbuf_set(e, ERRBUF_PERMANENT, "AMQP URL: amqps:// is not supported");
        goto err;
    }
    /* "amqp://host:5672/" means the default vhost, as in pika and the RabbitMQ docs' examples
     * (rabbitmq-c would read it as the empty vhost, which does not exist). */
    vhost = (ci.vhost == NULL || ci.vhost[0] == '\0') ? "/" : ci.vhost;

    c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    c->st = amqp_new_connection();
    if (c->st == NULL)
        abort();
    sock = amqp_tcp_socket_new(c->st);
    if (sock == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "AMQP: cannot create a socket");
        goto err;
    }
    rc = amqp_socket_open_noblock(sock, ci.host, ci.port, &tv);
    if (rc != AMQP_STATUS_OK) {
        errbuf_set(e, ERRBUF_TRANSIENT, "AMQP connect to %s:%d: %s", ci.host, ci.port,
                   amqp_error_string2(rc));
        goto err;
    }
    /* rabbitmq-c 0.11 sends without a deadline and checks heartbeats only while reading, so
     * a write into a hung broker's full buffers would block for good. With TCP_USER_TIMEOUT the
     * kernel drops a connection whose sent data stays unacknowledged (zero window included)
     * that long, and the blocked send fails. */
    {
        unsigned int ut = MQ_TCP_USER_TIMEOUT_MS;

        setsockopt(amqp_get_sockfd(c->st), IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
    }
    amqp_set_handshake_timeout(c->st, &tv);
    /* rabbitmq-c 0.11 does not ask for consumer cancel notifications by itself: without them
     * a consumer whose queue is deleted would wait forever instead of failing. Merged with the
     * library's own capabilities (authentication_failure_close). */
    set_bool(&caps[0], "consumer_cancel_notify");
    set_bool(&caps[1], "connection.blocked");
    cap_table.num_entries = 2;
    cap_table.entries = caps;
    props[0].key = amqp_cstring_bytes("capabilities");
    props[0].value.kind = AMQP_FIELD_KIND_TABLE;
    props[0].value.value.table = cap_table;
    props[1].key = amqp_cstring_bytes("connection_name");
    props[1].value.kind = AMQP_FIELD_KIND_UTF8;
    props[1].value.value.bytes = amqp_cstring_bytes("paynotify");
    prop_table.num_entries = 2;
    prop_table.entries = props;
    if (check_reply(c,
                    amqp_login_with_properties(c->st, vhost, 0, MQ_FRAME_MAX, MQ_HEARTBEAT_S,
                                               &prop_table, AMQP_SASL_METHOD_PLAIN, ci.user,
                                               ci.password),
                    "login", e) != 0)
        goto err;
    /* Every RPC from now on is bounded too; a timed-out RPC closes the socket (sticky). */
    amqp_set_rpc_timeout(c->st, &tv);
    amqp_channel_open(c->st, MQ_CHANNEL);
    if (check_rpc(c, "channel.open", e) != 0)
        goto err;
    amqp_confirm_select(c->st, MQ_CHANNEL);
    if (check_rpc(c, "confirm.select", e) != 0)
        goto err;
    c->next_tag = 1;
    free(copy);
    return c;
err:
    /* ci points into copy; both go, and a half-open connection is torn down. */
    free(copy);
    mq_close(c);
    return NULL;
}

void mq_close(mq_conn *c)
{
    if (c == NULL)
        return;
    if (c->st != NULL) {
        /* A polite close lets the broker requeue unacked deliveries at once and keeps its log
         * free of "client unexpectedly closed TCP connection". Bounded by the RPC timeout. */
        if (!c->dead && amqp_get_socket(c->st) != NULL && amqp_get_sockfd(c->st) >= 0) {
            /* A healthy broker answers at once; a hung one must not hold us long. */
            struct timeval tv = ms_to_tv(MQ_CLOSE_TIMEOUT_MS);

            amqp_set_rpc_timeout(c->st, &tv);
            amqp_connection_close(c->st, AMQP_REPLY_SUCCESS);
        }
        amqp_destroy_connection(c->st);
    }
    free(c);
}

int mq_failed(const mq_conn *c)
{
    return c == NULL || c->failed;
}

int mq_socket_fd(const mq_conn *c)
{
    if (c == NULL || c->st == NULL || amqp_get_socket(c->st) == NULL)
        return -1;
    return amqp_get_sockfd(c->st);
}

/* ---- topology ---- */

static int declare_queue(mq_conn *c, const char *name, amqp_table_t args, struct errbuf *e)
{
    char what[TOPOLOGY_NAME_MAX + 32];

    snprintf(what, sizeof(what), "queue.declare %s", name);
    amqp_queue_declare(c->st, MQ_CHANNEL, amqp_cstring_bytes(name), 0, 1, 0, 0, args);
    if (check_rpc(c, what, e) != 0)
        return -1;
    snprintf(what, sizeof(what), "queue.bind %s", name);
    amqp_queue_bind(c->st, MQ_CHANNEL, amqp_cstring_bytes(name),
                    amqp_cstring_bytes(TOPOLOGY_EXCHANGE), amqp_cstring_bytes(name),
                    amqp_empty_table);
    return check_rpc(c, what, e);
}

static void set_str(amqp_table_entry_t *t, const char *key, const char *val)
{
    t->key = amqp_cstring_bytes(key);
    t->value.kind = AMQP_FIELD_KIND_UTF8;
    t->value.value.bytes = amqp_cstring_bytes(val);
}

int mq_declare_topology(mq_conn *c, const char *queue_type, const int64_t *retry_delays_ms,
                        size_t n, struct errbuf *e)
{
    static const char *const plain[] = {TOPOLOGY_CALLBACKS, TOPOLOGY_CALLBACKS_PARKED,
                                        TOPOLOGY_NOTIFY, TOPOLOGY_NOTIFY_DEAD};
    amqp_table_entry_t entries[8];
    amqp_table_t args;
    char name[TOPOLOGY_NAME_MAX];
    int quorum;

    if (check_usable(c, e) != 0)
        return -1;
    if (topology_check_queue_type(queue_type, e) != 0)
        return -1;
    if (n > TOPOLOGY_MAX_RETRIES) {
        errbuf_set(e, ERRBUF_PERMANENT, "at most %d retry delays", TOPOLOGY_MAX_RETRIES);
        return -1;
    }
    for (size_t k = 0; k < n; k++) {
        if (topology_retry_queue_name((int)k + 1, retry_delays_ms[k], name, sizeof(name)) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "retry delay %zu: %" PRId64 " ms is out of range",
                       k + 1, retry_delays_ms[k]);
            return -1;
        }
    }
    quorum = strcmp(queue_type, "quorum") == 0;

    amqp_exchange_declare(c->st, MQ_CHANNEL, amqp_cstring_bytes(TOPOLOGY_EXCHANGE),
                          amqp_cstring_bytes("direct"), 0, 1, 0, 0, amqp_empty_table);
    if (check_rpc(c, "exchange.declare " TOPOLOGY_EXCHANGE, e) != 0)
        return -1;

    /* Classic is the broker's default type: leaving x-queue-type out keeps queues declared
     * before this argument existed equivalent. */
    args.entries = entries;
    args.num_entries = 0;
    if (quorum)
        set_str(&entries[args.num_entries++], "x-queue-type", "quorum");
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++) {
        amqp_table_entry_t *t = &entries[args.num_entries];
        const char *poison = strcmp(plain[i], TOPOLOGY_CALLBACKS) == 0 ? TOPOLOGY_CALLBACKS_PARKED
                             : strcmp(plain[i], TOPOLOGY_NOTIFY) == 0  ? TOPOLOGY_NOTIFY_DEAD
                                                                       : NULL;
        if (quorum && poison != NULL) {
            /* A crash loop ends in the parking / dead queue instead of going on forever. */
            t->key = amqp_cstring_bytes("x-delivery-limit");
            t->value.kind = AMQP_FIELD_KIND_I64;
            t->value.value.i64 = TOPOLOGY_DELIVERY_LIMIT;
            t++;
            set_str(t++, "x-dead-letter-exchange", TOPOLOGY_EXCHANGE);
            set_str(t++, "x-dead-letter-routing-key", poison);
            set_str(t++, "x-dead-letter-strategy", "at-least-once");
            set_str(t++, "x-overflow", "reject-publish");
        }
        amqp_table_t qargs = {(int)(t - entries), entries};
        if (declare_queue(c, plain[i], qargs, e) != 0)
            return -1;
    }

    for (size_t k = 0; k < n; k++) {
        int base = args.num_entries; /* keeps x-queue-type */
        amqp_table_entry_t *t = &entries[base];

        topology_retry_queue_name((int)k + 1, retry_delays_ms[k], name, sizeof(name));
        t->key = amqp_cstring_bytes("x-message-ttl");
        t->value.kind = AMQP_FIELD_KIND_I64;
        t->value.value.i64 = TOPOLOGY_RETRY_TTL(retry_delays_ms[k]);
        t++;
        set_str(t++, "x-dead-letter-exchange", TOPOLOGY_EXCHANGE);
        set_str(t++, "x-dead-letter-routing-key", TOPOLOGY_NOTIFY);
        if (quorum) {
            /* At-least-once dead-lettering keeps a message the target cannot take yet; the
             * broker silently falls back to at-most-once without reject-publish. */
            set_str(t++, "x-dead-letter-strategy", "at-least-once");
            set_str(t++, "x-overflow", "reject-publish");
        }
        amqp_table_t retry_args = {(int)(t - entries), entries};
        if (declare_queue(c, name, retry_args, e) != 0)
            return -1;
    }
    return 0;
}

/* ---- frames ---- */

/* Waits for the next frame until deadline (monotonic ms). With wake_fd >= 0 the wait also
 * returns 2 as soon as wake_fd is readable. 0 = *f filled, 1 = timeout, -1 = error. */
static int wait_frame(mq_conn *c, int64_t deadline, int wake_fd, amqp_frame_t *f, struct errbuf *e)
{
    for (;;) {
        int64_t left = deadline - now_ms();
        struct timeval tv;
        int rc;

        if (left < 0)
            left = 0;
        if (wake_fd >= 0 && !amqp_frames_enqueued(c->st) && !amqp_data_in_buffer(c->st)) {
            struct pollfd p[2];
            int pr;

            p[0].fd = amqp_get_sockfd(c->st);
            p[0].events = POLLIN;
            p[1].fd = wake_fd;
            p[1].events = POLLIN;
            p[0].revents = p[1].revents = 0;
            pr = poll(p, 2, (int)(left < MQ_POLL_SLICE_MS ? left : MQ_POLL_SLICE_MS));
            if (pr < 0 && errno != EINTR)
                return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP poll: %s", strerror(errno));
            if (pr > 0 && (p[1].revents & (POLLIN | POLLHUP | POLLERR)) != 0)
                return 2;
            /* Socket readable, or the slice ended: let rabbitmq-c read and do its heartbeat
             * bookkeeping. 1 ms, not 0: with a zero timeout it never checks for a missed
             * broker heartbeat. */
            tv = ms_to_tv(1);
        } else {
            tv = ms_to_tv(left);
        }
        rc = amqp_simple_wait_frame_noblock(c->st, f, &tv);
        if (rc == AMQP_STATUS_OK)
            return 0;
        if (rc != AMQP_STATUS_TIMEOUT)
            return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP connection lost: %s",
                        amqp_error_string2(rc));
        if (now_ms() >= deadline)
            return 1;
    }
}

/* Reads the content (header + body frames) that follows a deliver or return method. */
static int read_content(mq_conn *c, amqp_message_t *msg, const char *what, struct errbuf *e)
{
    amqp_rpc_reply_t r = amqp_read_message(c->st, MQ_CHANNEL, msg, 0);

    return check_reply(c, r, what, e);
}

static void copy_message_id(const amqp_basic_properties_t *p, char *dst, size_t cap)
{
    size_t n = 0;

    if ((p->_flags & AMQP_BASIC_MESSAGE_ID_FLAG) != 0) {
        n = p->message_id.len < cap - 1 ? p->message_id.len : cap - 1;
        memcpy(dst, p->message_id.bytes, n);
    }
    dst[n] = '\0';
}

static int field_int(const amqp_field_value_t *v, int64_t *out)
{
    switch (v->kind) {
    case AMQP_FIELD_KIND_I8:
        *out = v->value.i8;
        return 0;
    case AMQP_FIELD_KIND_U8:
        *out = v->value.u8;
        return 0;
    case AMQP_FIELD_KIND_I16:
        *out = v->value.i16;
        return 0;
    case AMQP_FIELD_KIND_U16:
        *out = v->value.u16;
        return 0;
    case AMQP_FIELD_KIND_I32:
        *out = v->value.i32;
        return 0;
    case AMQP_FIELD_KIND_U32:
        *out = v->value.u32;
        return 0;
    case AMQP_FIELD_KIND_I64:
        *out = v->value.i64;
        return 0;
    case AMQP_FIELD_KIND_U64:
        *out = v->value.u64 > INT64_MAX ? INT64_MAX : (int64_t)v->value.u64;
        return 0;
    default:
        return -1;
    }
}

static int bytes_is(amqp_bytes_t b, const char *s)
{
    size_t n = strlen(s);

    return b.len == n && memcmp(b.bytes, s, n) == 0;
}

/* Sum of "count" over the x-death entries (one per queue and reason the message was
 * dead-lettered from): how many times it has been dead-lettered in all. */
static int64_t death_count(const amqp_basic_properties_t *p)
{
    int64_t sum = 0;

    if ((p->_flags & AMQP_BASIC_HEADERS_FLAG) == 0)
        return 0;
    for (int i = 0; i < p->headers.num_entries; i++) {
        const amqp_table_entry_t *h = &p->headers.entries[i];

        if (!bytes_is(h->key, "x-death") || h->value.kind != AMQP_FIELD_KIND_ARRAY)
            continue;
        for (int j = 0; j < h->value.value.array.num_entries; j++) {
            const amqp_field_value_t *d = &h->value.value.array.entries[j];

            if (d->kind != AMQP_FIELD_KIND_TABLE)
                continue;
            for (int k = 0; k < d->value.table.num_entries; k++) {
                const amqp_table_entry_t *f = &d->value.table.entries[k];
                int64_t v;

                if (bytes_is(f->key, "count") && field_int(&f->value, &v) == 0 && v > 0)
                    sum += v;
            }
        }
    }
    return sum;
}

/* A method frame nobody asked for. 0 = handled (keep waiting), -1 = connection failed. */
static int handle_async_method(mq_conn *c, const amqp_frame_t *f, struct errbuf *e)
{
    amqp_message_t msg;

    if (f->frame_type != AMQP_FRAME_METHOD)
        return fail(c, e, 1, ERRBUF_TRANSIENT,
                    "AMQP protocol error: content frame (type %d) without a method",
                    (int)f->frame_type);
    switch (f->payload.method.id) {
    case AMQP_CONNECTION_CLOSE_METHOD:
    case AMQP_CHANNEL_CLOSE_METHOD:
        return fail_broker_close(c, &f->payload.method, "wait", e);
    case AMQP_BASIC_CANCEL_METHOD:
        return fail(c, e, 0, ERRBUF_TRANSIENT,
                    "AMQP: the broker cancelled the consumer (queue deleted?)");
    case AMQP_BASIC_DELIVER_METHOD:
    case AMQP_BASIC_RETURN_METHOD:
        /* Content follows and must be read to keep the frame stream in step. A delivery seen
         * here (a publishing connection that also consumes, against the rules) is dropped
         * unacked: the broker redelivers it when the connection closes. */
        if (read_content(c, &msg, "reading stray content", e) != 0)
            return -1;
        amqp_destroy_message(&msg);
        return 0;
    default:
        /* connection.blocked/unblocked, stray basic.ack on a consumer, ...: nothing to do. */
        return 0;
    }
}

/* ---- publish ---- */

static int publish(mq_conn *c, const char *routing_key, const void *body, size_t len,
                   const char *message_id, int64_t expiration_ms, uint64_t *tag, struct errbuf *e)
{
    amqp_basic_properties_t p;
    amqp_bytes_t b;
    char exp[24];
    int rc;

    if (check_usable(c, e) != 0)
        return -1;
    if (routing_key == NULL || expiration_ms < 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "AMQP publish: bad arguments");
        return -1;
    }
    memset(&p, 0, sizeof(p));
    p._flags = AMQP_BASIC_CONTENT_TYPE_FLAG | AMQP_BASIC_DELIVERY_MODE_FLAG;
    p.content_type = amqp_cstring_bytes("application/json");
    p.delivery_mode = 2; /* persistent */
    if (message_id != NULL) {
        p._flags |= AMQP_BASIC_MESSAGE_ID_FLAG;
        p.message_id = amqp_cstring_bytes(message_id);
    }
    if (expiration_ms > 0) {
        snprintf(exp, sizeof(exp), "%" PRId64, expiration_ms);
        p._flags |= AMQP_BASIC_EXPIRATION_FLAG;
        p.expiration = amqp_cstring_bytes(exp);
    }
    b.bytes = (void *)body;
    b.len = len;
    /* mandatory = 1: an unroutable message is returned, not confirmed and dropped. */
    rc = amqp_basic_publish(c->st, MQ_CHANNEL, amqp_cstring_bytes(TOPOLOGY_EXCHANGE),
                            amqp_cstring_bytes(routing_key), 1, 0, &p, b);
    if (rc != AMQP_STATUS_OK)
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP publish: %s", amqp_error_string2(rc));
    *tag = c->next_tag++;
    return 0;
}

int mq_publish_nowait(mq_conn *c, const char *routing_key, const void *body, size_t len,
                      const char *message_id, int64_t expiration_ms, uint64_t *tag,
                      struct errbuf *e)
{
    return publish(c, routing_key, body, len, message_id, expiration_ms, tag, e);
}

int mq_confirm_next(mq_conn *c, int timeout_ms, int wake_fd, struct mq_confirm *out,
                    struct errbuf *e)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    amqp_frame_t f;
    amqp_message_t msg;
    int rc;

    if (check_usable(c, e) != 0)
        return -1;
    memset(out, 0, sizeof(*out));
    for (;;) {
        rc = wait_frame(c, deadline, wake_fd, &f, e);
        if (rc != 0)
            return rc;
        if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_ACK_METHOD) {
            const amqp_basic_ack_t *a = f.payload.method.decoded;

            out->kind = MQ_CONFIRM_ACK;
            out->tag = a->delivery_tag;
            out->multiple = a->multiple != 0;
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.payload.method.id == AMQP_BASIC_NACK_METHOD) {
            const amqp_basic_nack_t *n = f.payload.method.decoded;

            out->kind = MQ_CONFIRM_NACK;
            out->tag = n->delivery_tag;
            out->multiple = n->multiple != 0;
        } else if (f.frame_type == AMQP_FRAME_METHOD &&
                   f.payload.method.id == AMQP_BASIC_RETURN_METHOD) {
            const amqp_basic_return_t *r = f.payload.method.decoded;

            out->kind = MQ_CONFIRM_RETURN;
            out->reply_code = r->reply_code;
            if (read_content(c, &msg, "reading a returned message", e) != 0)
                return -1;
            copy_message_id(&msg.properties, out->message_id, sizeof(out->message_id));
            amqp_destroy_message(&msg);
        } else {
            if (handle_async_method(c, &f, e) != 0)
                return -1;
            amqp_maybe_release_buffers(c->st);
            continue;
        }
        amqp_maybe_release_buffers(c->st);
        return 0;
    }
}

static int confirm_covers(const struct mq_confirm *ev, uint64_t tag)
{
    return ev->tag == tag || (ev->multiple && ev->tag >= tag);
}

int mq_publish_confirmed_exp(mq_conn *c, const char *routing_key, const void *body, size_t len,
                             const char *message_id, int64_t expiration_ms, int timeout_ms,
                             struct errbuf *e)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    struct mq_confirm ev;
    uint64_t tag;
    int returned = 0;

    if (publish(c, routing_key, body, len, message_id, expiration_ms, &tag, e) != 0)
        return -1;
    for (;;) {
        int64_t left = deadline - now_ms();
        int rc = mq_confirm_next(c, (int)(left > 0 ? left : 0), -1, &ev, e);

        if (rc == -1)
            return -1;
        if (rc == 1) {
            /* Not sticky: a late confirm for this tag is recognised as old and skipped. */
            errbuf_set(e, ERRBUF_TRANSIENT, "AMQP publish to %s: no broker confirm within %d ms",
                       routing_key, timeout_ms);
            return -1;
        }
        if (ev.kind == MQ_CONFIRM_RETURN) {
            if (strcmp(ev.message_id, message_id != NULL ? message_id : "") == 0)
                returned = ev.reply_code;
            continue;
        }
        if (!confirm_covers(&ev, tag))
            continue; /* a confirm for an earlier, timed-out publish */
        if (ev.kind == MQ_CONFIRM_NACK) {
            errbuf_set(e, ERRBUF_TRANSIENT, "AMQP publish to %s: the broker refused it (nack)",
                       routing_key);
            return -1;
        }
        if (returned) {
            errbuf_set(e, ERRBUF_TRANSIENT,
                       "AMQP publish: routing key %s reaches no queue (%d); topology not declared?",
                       routing_key, returned);
            return -1;
        }
        return 0;
    }
}

int mq_publish_confirmed(mq_conn *c, const char *routing_key, const void *body, size_t len,
                         const char *message_id, int timeout_ms, struct errbuf *e)
{
    return mq_publish_confirmed_exp(c, routing_key, body, len, message_id, 0, timeout_ms, e);
}

/* ---- consume ---- */

int mq_consume_start(mq_conn *c, const char *queue, uint16_t prefetch, struct errbuf *e)
{
    char what[TOPOLOGY_NAME_MAX + 32];

    if (check_usable(c, e) != 0)
        return -1;
    amqp_basic_qos(c->st, MQ_CHANNEL, 0, prefetch, 0);
    if (check_rpc(c, "basic.qos", e) != 0)
        return -1;
    snprintf(what, sizeof(what), "basic.consume %.64s", queue);
    amqp_basic_consume(c->st, MQ_CHANNEL, amqp_cstring_bytes(queue), amqp_empty_bytes, 0, 0, 0,
                       amqp_empty_table);
    return check_rpc(c, what, e);
}

static int read_delivery(mq_conn *c, const amqp_frame_t *f, struct mq_msg *m, struct errbuf *e)
{
    const amqp_basic_deliver_t *d = f->payload.method.decoded;
    amqp_message_t msg;

    m->delivery_tag = d->delivery_tag;
    m->redelivered = d->redelivered != 0;
    if (read_content(c, &msg, "reading a delivery", e) != 0)
        return -1;
    m->len = msg.body.len;
    m->body = malloc(m->len + 1);
    if (m->body == NULL)
        abort();
    if (m->len > 0)
        memcpy(m->body, msg.body.bytes, m->len);
    ((char *)m->body)[m->len] = '\0';
    copy_message_id(&msg.properties, m->message_id, sizeof(m->message_id));
    m->death_count = death_count(&msg.properties);
    amqp_destroy_message(&msg);
    amqp_maybe_release_buffers(c->st);
    return 0;
}

int mq_consume_next(mq_conn *c, int timeout_ms, struct mq_msg *m, struct errbuf *e)
{
    int64_t deadline = now_ms() + (timeout_ms > 0 ? timeout_ms : 0);
    amqp_frame_t f;
    int rc;

    memset(m, 0, sizeof(*m));
    if (check_usable(c, e) != 0)
        return -1;
    for (;;) {
        rc = wait_frame(c, deadline, -1, &f, e);
        if (rc != 0)
            return rc;
        if (f.frame_type == AMQP_FRAME_METHOD && f.payload.method.id == AMQP_BASIC_DELIVER_METHOD)
            return read_delivery(c, &f, m, e);
        if (handle_async_method(c, &f, e) != 0)
            return -1;
        amqp_maybe_release_buffers(c->st);
    }
}

void mq_msg_free(struct mq_msg *m)
{
    if (m == NULL)
        return;
    free(m->body);
    m->body = NULL;
    m->len = 0;
}

int mq_ack(mq_conn *c, uint64_t tag, struct errbuf *e)
{
    int rc;

    if (check_usable(c, e) != 0)
        return -1;
    rc = amqp_basic_ack(c->st, MQ_CHANNEL, tag, 0);
    if (rc != AMQP_STATUS_OK)
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP ack: %s", amqp_error_string2(rc));
    return 0;
}

int mq_nack(mq_conn *c, uint64_t tag, int requeue, struct errbuf *e)
{
    int rc;

    if (check_usable(c, e) != 0)
        return -1;
    rc = amqp_basic_nack(c->st, MQ_CHANNEL, tag, 0, requeue != 0);
    if (rc != AMQP_STATUS_OK)
        return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP nack: %s", amqp_error_string2(rc));
    return 0;
}

/* ---- queue inspection ---- */

int mq_queue_counts(mq_conn *c, const char *queue, uint32_t *messages, uint32_t *consumers,
                    struct errbuf *e)
{
    char what[TOPOLOGY_NAME_MAX + 32];
    amqp_queue_declare_ok_t *ok;
    uint32_t msgs, cons;

    if (check_usable(c, e) != 0)
        return -1;
    snprintf(what, sizeof(what), "queue.declare (passive) %.64s", queue);
    ok = amqp_queue_declare(c->st, MQ_CHANNEL, amqp_cstring_bytes(queue), 1, 0, 0, 0,
                            amqp_empty_table);
    if (ok == NULL) {
        if (check_rpc(c, what, e) == 0)
            return fail(c, e, 1, ERRBUF_TRANSIENT, "AMQP %s: no reply", what);
        return -1;
    }
    msgs = ok->message_count;
    cons = ok->consumer_count;
    if (check_rpc(c, what, e) != 0)
        return -1;
    if (messages != NULL)
        *messages = msgs;
    if (consumers != NULL)
        *consumers = cons;
    return 0;
}

int mq_purge(mq_conn *c, const char *queue, struct errbuf *e)
{
    char what[TOPOLOGY_NAME_MAX + 32];

    if (check_usable(c, e) != 0)
        return -1;
    snprintf(what, sizeof(what), "queue.purge %.64s", queue);
    amqp_queue_purge(c->st, MQ_CHANNEL, amqp_cstring_bytes(queue));
    return check_rpc(c, what, e);
}

int mq_queue_delete(mq_conn *c, const char *queue, struct errbuf *e)
{
    char what[TOPOLOGY_NAME_MAX + 32];

    if (check_usable(c, e) != 0)
        return -1;
    snprintf(what, sizeof(what), "queue.delete %.64s", queue);
    amqp_queue_delete(c->st, MQ_CHANNEL, amqp_cstring_bytes(queue), 0, 0);
    return check_rpc(c, what, e);
}
