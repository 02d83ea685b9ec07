/* queue/publisher.c: the receiver's AMQP thread (see publisher.h).
 *
 * Three lists of items, each owned by one side at a time:
 *   submitted  loop -> thread, under mu: waiting for a slot in the confirm window
 *   inflight   thread only: published, waiting for basic.ack/nack, ordered by delivery tag
 *   done       thread -> loop, under mu: results; uv_async_send() wakes the loop, and since
 *              it coalesces, on_async() drains the whole list
 * The thread sleeps in mq_confirm_next(), which polls the AMQP socket and a wake pipe: a
 * submit into an empty list, or stop, writes one byte to it. No busy loop.
 *
 * Watchdog: rabbitmq-c 0.11 writes without a deadline, so a broker that hangs with its socket
 * buffers full would block the thread inside a publish forever, and with it every callback.
 * The thread announces how long its current call may take (stuck_at); a timer on the loop
 * shuts the socket down (shutdown(2) under fd_mu, never close(2)) when that moment passes,
 * which makes the blocked call fail and the thread fail everything and reconnect. */
#include "queue/publisher.h"

#include "common/errbuf.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "common/xalloc.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define PUBLISHER_CONFIRM_TIMEOUT_MS 5000
#define PUBLISHER_MAX_IN_FLIGHT 256
#define PUBLISHER_CONNECT_TIMEOUT_MS 2000
#define PUBLISHER_BACKOFF_MIN_MS 100
#define PUBLISHER_BACKOFF_MAX_MS 2000
/* The thread wakes at least this often even when idle, to notice stop and a dead broker. */
#define PUBLISHER_IDLE_WAIT_MS 1000
/* Longer than this inside one send (or beyond a wait's own timeout) means the broker hung. */
#define PUBLISHER_STUCK_MS 1000
#define PUBLISHER_WATCHDOG_MS 100

struct item {
    struct item *next;
    char *routing_key;
    char *message_id;
    void *body;
    size_t len;
    publisher_cb cb;
    void *arg;
    int64_t deadline_ms; /* monotonic; submit time + confirm timeout */
    uint64_t tag;        /* delivery tag once published */
    int returned;        /* reply code of a basic.return for it, 0 if none */
    int status;
    char msg[320];
};

struct list {
    struct item *head, *tail;
    size_t n;
};

struct publisher {
    uv_loop_t *loop;
    uv_async_t async;
    uv_timer_t watchdog;
    int open_handles; /* freed when the last handle's close callback ran */
    uv_thread_t thread;
    int thread_started;
    uv_mutex_t mu;
    int wake_rd, wake_wr; /* nonblocking pipe: loop writes, thread reads */
    atomic_int connected;
    atomic_int exited;        /* the thread left run() */
    _Atomic int64_t stuck_at; /* monotonic ms; 0 = not inside a watched call */
    uv_mutex_t fd_mu;         /* guards sock_fd against close while shut down */
    int sock_fd;              /* the connection's socket, -1 if none */

    /* Under mu. */
    struct list submitted;
    struct list done;
    int stopping;
    char last_error[256];

    /* Loop thread only. */
    int stopped;

    /* Copies of the options; read-only after start. */
    char *url;
    char *queue_type;
    int64_t delays[TOPOLOGY_MAX_RETRIES];
    size_t n_delays;
    int confirm_timeout_ms;
    size_t max_in_flight;

    /* AMQP thread only. */
    mq_conn *conn;
    struct list inflight;
    struct list finished; /* results not yet moved to done */
};

static int64_t now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

static void list_push(struct list *l, struct item *it)
{
    it->next = NULL;
    if (l->tail != NULL)
        l->tail->next = it;
    else
        l->head = it;
    l->tail = it;
    l->n++;
}

static struct item *list_pop(struct list *l)
{
    struct item *it = l->head;

    if (it == NULL)
        return NULL;
    l->head = it->next;
    if (l->head == NULL)
        l->tail = NULL;
    l->n--;
    it->next = NULL;
    return it;
}

/* Moves all of src to the end of dst. */
static void list_splice(struct list *dst, struct list *src)
{
    if (src->head == NULL)
        return;
    if (dst->tail != NULL)
        dst->tail->next = src->head;
    else
        dst->head = src->head;
    dst->tail = src->tail;
    dst->n += src->n;
    src->head = src->tail = NULL;
    src->n = 0;
}

static void item_free(struct item *it)
{
    if (it == NULL)
        return;
    free(it->routing_key);
    free(it->message_id);
    free(it->body);
    free(it);
}

static void wake(publisher *p)
{
    ssize_t w;

    /* A full pipe already holds a wake-up, so EAGAIN is fine. */
    do
        w = write(p->wake_wr, "w", 1);
    while (w < 0 && errno == EINTR);
}

static void drain_wake(publisher *p)
{
    char buf[64];

    while (read(p->wake_rd, buf, sizeof(buf)) > 0)
        ;
}

/* ---- AMQP thread ---- */

static void finish(publisher *p, struct item *it, int status, const char *msg)
{
    it->status = status;
    snprintf(it->msg, sizeof(it->msg), "%s", msg);
    list_push(&p->finished, it);
}

static void fail_all(publisher *p, struct list *l, const char *msg)
{
    struct item *it;

    while ((it = list_pop(l)) != NULL)
        finish(p, it, -1, msg);
}

/* Hands results to the loop thread. */
static void flush_finished(publisher *p)
{
    if (p->finished.head == NULL)
        return;
    uv_mutex_lock(&p->mu);
    list_splice(&p->done, &p->finished);
    uv_mutex_unlock(&p->mu);
    uv_async_send(&p->async);
}

static void set_last_error(publisher *p, const char *msg)
{
    uv_mutex_lock(&p->mu);
    snprintf(p->last_error, sizeof(p->last_error), "%s", msg);
    uv_mutex_unlock(&p->mu);
}

static int stopping(publisher *p)
{
    int s;

    uv_mutex_lock(&p->mu);
    s = p->stopping;
    uv_mutex_unlock(&p->mu);
    return s;
}

/* Closes the connection; the watchdog must not touch its fd from here on. */
static void close_conn(publisher *p)
{
    uv_mutex_lock(&p->fd_mu);
    p->sock_fd = -1;
    uv_mutex_unlock(&p->fd_mu);
    mq_close(p->conn);
    p->conn = NULL;
}

/* The watchdog shuts the socket down if the call now starting is still running after
 * limit_ms. */
static void watch(publisher *p, int64_t limit_ms)
{
    atomic_store(&p->stuck_at, now_ms() + limit_ms);
}

static void unwatch(publisher *p)
{
    atomic_store(&p->stuck_at, 0);
}

/* Ends the connection: everything outstanding fails with why. */
static void drop_connection(publisher *p, const char *why)
{
    char msg[sizeof(((struct item *)0)->msg)];

    atomic_store(&p->connected, 0);
    set_last_error(p, why);
    snprintf(msg, sizeof(msg), "AMQP connection lost before the broker confirmed: %.256s", why);
    fail_all(p, &p->inflight, msg);
    /* Not yet published ones too: reconnecting may take seconds, and they must not wait. */
    snprintf(msg, sizeof(msg), "AMQP connection lost: %.256s", why);
    uv_mutex_lock(&p->mu);
    fail_all(p, &p->submitted, msg);
    uv_mutex_unlock(&p->mu);
    /* Answer the loop first: a polite close of a hung connection takes a while. */
    flush_finished(p);
    close_conn(p);
}

static int connect_once(publisher *p)
{
    struct errbuf e = {0};

    p->conn = mq_open(p->url, PUBLISHER_CONNECT_TIMEOUT_MS, &e);
    if (p->conn == NULL)
        goto err;
    if (mq_declare_topology(p->conn, p->queue_type, p->delays, p->n_delays, &e) != 0)
        goto err;
    uv_mutex_lock(&p->fd_mu);
    p->sock_fd = mq_socket_fd(p->conn);
    uv_mutex_unlock(&p->fd_mu);
    set_last_error(p, "");
    atomic_store(&p->connected, 1);
    return 0;
err:
    /* A half-set-up connection is of no use: the next attempt starts from scratch. */
    mq_close(p->conn);
    p->conn = NULL;
    set_last_error(p, e.msg);
    return -1;
}

/* Sleeps up to ms, or until woken (stop). */
static void wait_wake(publisher *p, int ms)
{
    struct pollfd pf;

    pf.fd = p->wake_rd;
    pf.events = POLLIN;
    pf.revents = 0;
    poll(&pf, 1, ms);
    drain_wake(p);
}

/* Publishes submitted items while the window has room. -1 if the connection failed. */
static int publish_submitted(publisher *p)
{
    struct list batch = {0};
    struct errbuf e = {0};
    struct item *it;
    size_t room;
    int64_t now = now_ms();
    int rc;

    if (p->inflight.n >= p->max_in_flight)
        return 0;
    room = p->max_in_flight - p->inflight.n;
    uv_mutex_lock(&p->mu);
    while (room > 0 && (it = list_pop(&p->submitted)) != NULL) {
        list_push(&batch, it);
        room--;
    }
    uv_mutex_unlock(&p->mu);

    while ((it = list_pop(&batch)) != NULL) {
        char msg[sizeof(it->msg)];

        if (now >= it->deadline_ms) {
            snprintf(msg, sizeof(msg), "no broker confirm within %d ms (still queued)",
                     p->confirm_timeout_ms);
            finish(p, it, -1, msg);
            continue;
        }
        watch(p, PUBLISHER_STUCK_MS);
        rc = mq_publish_nowait(p->conn, it->routing_key, it->body, it->len, it->message_id, 0,
                               &it->tag, &e);
        unwatch(p);
        if (rc != 0) {
            snprintf(msg, sizeof(msg), "AMQP publish failed: %.256s", e.msg);
            finish(p, it, -1, msg);
            fail_all(p, &batch, msg);
            drop_connection(p, e.msg);
            return -1;
        }
        list_push(&p->inflight, it);
    }
    return 0;
}

/* Applies an ack or nack for tag (and every lower tag if multiple). */
static void apply_confirm(publisher *p, const struct mq_confirm *ev)
{
    struct item *it, *prev = NULL, *next;
    char msg[sizeof(it->msg)];

    for (it = p->inflight.head; it != NULL; it = next) {
        next = it->next;
        if (ev->multiple ? it->tag > ev->tag : it->tag != ev->tag) {
            /* Tags are in order: past the confirmed range nothing else can match. */
            if (it->tag > ev->tag)
                break;
            prev = it;
            continue;
        }
        if (prev != NULL)
            prev->next = next;
        else
            p->inflight.head = next;
        if (p->inflight.tail == it)
            p->inflight.tail = prev;
        p->inflight.n--;
        if (ev->kind == MQ_CONFIRM_NACK) {
            finish(p, it, -1, "the broker refused the message (nack)");
        } else if (it->returned) {
            snprintf(msg, sizeof(msg), "routing key %s reaches no queue (%d)", it->routing_key,
                     it->returned);
            finish(p, it, -1, msg);
        } else {
            finish(p, it, 0, "");
        }
        if (!ev->multiple)
            break;
    }
}

/* A return precedes the confirm of the same message: remember it on the oldest unconfirmed
 * item with that message id. */
static void apply_return(publisher *p, const struct mq_confirm *ev)
{
    for (struct item *it = p->inflight.head; it != NULL; it = it->next) {
        if (!it->returned && strcmp(it->message_id, ev->message_id) == 0) {
            it->returned = ev->reply_code != 0 ? ev->reply_code : 312;
            return;
        }
    }
}

/* Fails inflight items past their deadline. 1 if any did: a healthy broker confirms within
 * milliseconds, so the connection is suspect. */
static int expire_inflight(publisher *p)
{
    int64_t now = now_ms();
    int expired = 0;
    char msg[sizeof(((struct item *)0)->msg)];

    snprintf(msg, sizeof(msg), "no broker confirm within %d ms", p->confirm_timeout_ms);
    /* Deadlines grow with the tags (both follow submit order), so expired items are a
     * prefix. */
    while (p->inflight.head != NULL && p->inflight.head->deadline_ms <= now) {
        finish(p, list_pop(&p->inflight), -1, msg);
        expired = 1;
    }
    return expired;
}

static int wait_timeout(publisher *p)
{
    int64_t t = PUBLISHER_IDLE_WAIT_MS;

    if (p->inflight.head != NULL) {
        t = p->inflight.head->deadline_ms - now_ms();
        if (t < 0)
            t = 0;
        if (t > PUBLISHER_IDLE_WAIT_MS)
            t = PUBLISHER_IDLE_WAIT_MS;
    }
    return (int)t;
}

static void run(void *arg)
{
    publisher *p = arg;
    int backoff = PUBLISHER_BACKOFF_MIN_MS;
    struct mq_confirm ev;
    struct errbuf e = {0};
    char msg[320];
    int rc, timeout;

    while (!stopping(p)) {
        if (p->conn == NULL) {
            if (connect_once(p) != 0) {
                /* Submits that slipped in while we still looked connected fail now. */
                uv_mutex_lock(&p->mu);
                snprintf(msg, sizeof(msg), "AMQP broker unavailable: %.256s", p->last_error);
                fail_all(p, &p->submitted, msg);
                uv_mutex_unlock(&p->mu);
                flush_finished(p);
                wait_wake(p, backoff);
                backoff =
                    backoff * 2 > PUBLISHER_BACKOFF_MAX_MS ? PUBLISHER_BACKOFF_MAX_MS : backoff * 2;
                continue;
            }
        }
        /* Drain before taking the list: a submit after this point wakes us again. */
        drain_wake(p);
        if (publish_submitted(p) != 0) {
            flush_finished(p);
            continue;
        }
        if (expire_inflight(p)) {
            snprintf(msg, sizeof(msg), "no broker confirm within %d ms; reconnecting",
                     p->confirm_timeout_ms);
            drop_connection(p, msg);
            flush_finished(p);
            continue;
        }
        flush_finished(p);
        timeout = wait_timeout(p);
        watch(p, timeout + PUBLISHER_STUCK_MS);
        rc = mq_confirm_next(p->conn, timeout, p->wake_rd, &ev, &e);
        unwatch(p);
        if (rc == 0) {
            if (ev.kind == MQ_CONFIRM_RETURN) {
                apply_return(p, &ev);
            } else {
                apply_confirm(p, &ev);
                backoff = PUBLISHER_BACKOFF_MIN_MS;
            }
        } else if (rc == -1) {
            drop_connection(p, e.msg);
            flush_finished(p);
            /* Do not hammer a broker that drops us right after connecting. */
            wait_wake(p, backoff);
            backoff =
                backoff * 2 > PUBLISHER_BACKOFF_MAX_MS ? PUBLISHER_BACKOFF_MAX_MS : backoff * 2;
        }
    }
    fail_all(p, &p->inflight, "publisher stopped before the broker confirmed");
    atomic_store(&p->connected, 0);
    flush_finished(p);
    close_conn(p);
    atomic_store(&p->exited, 1);
}

/* ---- loop thread ---- */

static void drain_done(publisher *p)
{
    struct list l;
    struct item *it;

    uv_mutex_lock(&p->mu);
    l = p->done;
    p->done.head = p->done.tail = NULL;
    p->done.n = 0;
    uv_mutex_unlock(&p->mu);
    while ((it = list_pop(&l)) != NULL) {
        it->cb(it->arg, it->status, it->msg);
        item_free(it);
    }
}

static void on_async(uv_async_t *a)
{
    drain_done(a->data);
}

/* Shuts the connection's socket down: a call blocked on it fails at once. */
static void shut_socket(publisher *p)
{
    uv_mutex_lock(&p->fd_mu);
    if (p->sock_fd >= 0)
        shutdown(p->sock_fd, SHUT_RDWR);
    uv_mutex_unlock(&p->fd_mu);
}

static void on_watchdog(uv_timer_t *t)
{
    publisher *p = t->data;
    int64_t at = atomic_load(&p->stuck_at);

    if (at != 0 && now_ms() > at)
        shut_socket(p);
}

static void free_publisher(publisher *p)
{
    if (p->wake_rd >= 0)
        close(p->wake_rd);
    if (p->wake_wr >= 0)
        close(p->wake_wr);
    uv_mutex_destroy(&p->mu);
    uv_mutex_destroy(&p->fd_mu);
    free(p->url);
    free(p->queue_type);
    free(p);
}

static void on_close(uv_handle_t *h)
{
    publisher *p = h->data;

    if (--p->open_handles == 0)
        free_publisher(p);
}

publisher *publisher_start(uv_loop_t *loop, const struct publisher_opts *o, struct errbuf *e)
{
    publisher *p;
    char name[TOPOLOGY_NAME_MAX];
    int fds[2];

    if (o == NULL || o->amqp_url == NULL || o->amqp_url[0] == '\0') {
        errbuf_set(e, ERRBUF_PERMANENT, "publisher: AMQP URL missing");
        return NULL;
    }
    if (topology_check_queue_type(o->queue_type, e) != 0)
        return NULL;
    if (o->n_delays > TOPOLOGY_MAX_RETRIES) {
        errbuf_set(e, ERRBUF_PERMANENT, "publisher: at most %d retry delays", TOPOLOGY_MAX_RETRIES);
        return NULL;
    }
    for (size_t k = 0; k < o->n_delays; k++) {
        if (topology_retry_queue_name((int)k + 1, o->retry_delays_ms[k], name, sizeof(name)) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "publisher: retry delay %zu is out of range", k + 1);
            return NULL;
        }
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "publisher: pipe: %s", strerror(errno));
        return NULL;
    }

    p = calloc(1, sizeof(*p));
    if (p == NULL)
        abort();
    p->loop = loop;
    p->wake_rd = fds[0];
    p->wake_wr = fds[1];
    atomic_init(&p->connected, 0);
    atomic_init(&p->exited, 0);
    atomic_init(&p->stuck_at, 0);
    p->sock_fd = -1;
    p->url = xstrdup(o->amqp_url);
    p->queue_type = xstrdup(o->queue_type);
    p->n_delays = o->n_delays;
    if (o->n_delays > 0)
        memcpy(p->delays, o->retry_delays_ms, o->n_delays * sizeof(p->delays[0]));
    p->confirm_timeout_ms =
        o->confirm_timeout_ms > 0 ? o->confirm_timeout_ms : PUBLISHER_CONFIRM_TIMEOUT_MS;
    p->max_in_flight = o->max_in_flight > 0 ? (size_t)o->max_in_flight : PUBLISHER_MAX_IN_FLIGHT;
    snprintf(p->last_error, sizeof(p->last_error), "not connected yet");
    if (uv_mutex_init(&p->mu) != 0 || uv_mutex_init(&p->fd_mu) != 0)
        abort();
    if (uv_async_init(loop, &p->async, on_async) != 0)
        abort();
    p->async.data = p;
    p->open_handles++;
    if (uv_timer_init(loop, &p->watchdog) != 0)
        abort();
    p->watchdog.data = p;
    p->open_handles++;
    uv_timer_start(&p->watchdog, on_watchdog, PUBLISHER_WATCHDOG_MS, PUBLISHER_WATCHDOG_MS);
    /* Neither handle keeps the loop alive on its own. */
    uv_unref((uv_handle_t *)&p->watchdog);
    if (uv_thread_create(&p->thread, run, p) != 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "publisher: cannot start its thread");
        /* The handles are registered with the loop: free only after both closes ran. */
        uv_close((uv_handle_t *)&p->watchdog, on_close);
        uv_close((uv_handle_t *)&p->async, on_close);
        return NULL;
    }
    p->thread_started = 1;
    return p;
}

void publisher_submit(publisher *p, const char *routing_key, const void *body, size_t len,
                      const char *message_id, publisher_cb cb, void *arg)
{
    struct item *it = calloc(1, sizeof(*it));
    int was_empty = 0, failed = 0;

    if (it == NULL)
        abort();
    it->routing_key = xstrdup(routing_key);
    it->message_id = xstrdup(message_id);
    it->body = malloc(len > 0 ? len : 1);
    if (it->body == NULL)
        abort();
    if (len > 0)
        memcpy(it->body, body, len);
    it->len = len;
    it->cb = cb;
    it->arg = arg;
    it->deadline_ms = now_ms() + p->confirm_timeout_ms;

    uv_mutex_lock(&p->mu);
    if (p->stopped || p->stopping) {
        it->status = -1;
        snprintf(it->msg, sizeof(it->msg), "publisher stopped");
        list_push(&p->done, it);
        failed = 1;
    } else if (!atomic_load(&p->connected)) {
        /* Fail fast: the provider gets a 503 now and retries, rather than waiting here. */
        it->status = -1;
        snprintf(it->msg, sizeof(it->msg), "AMQP broker not connected: %.256s", p->last_error);
        list_push(&p->done, it);
        failed = 1;
    } else {
        was_empty = p->submitted.head == NULL;
        list_push(&p->submitted, it);
    }
    uv_mutex_unlock(&p->mu);
    if (failed) {
        /* Never call cb from inside submit; during stop the drain loop picks it up. */
        if (!p->stopped)
            uv_async_send(&p->async);
    } else if (was_empty) {
        wake(p);
    }
}

int publisher_is_connected(const publisher *p)
{
    return p != NULL && atomic_load(&p->connected) != 0;
}

void publisher_stop(publisher *p)
{
    if (p == NULL)
        return;
    uv_mutex_lock(&p->mu);
    p->stopping = 1;
    uv_mutex_unlock(&p->mu);
    wake(p);
    if (p->thread_started) {
        /* A thread stuck in a send cannot see the stop: after a grace period that lets a
         * healthy connection close politely, shut its socket down. */
        int64_t grace = now_ms() + PUBLISHER_STUCK_MS;

        while (!atomic_load(&p->exited) && now_ms() < grace)
            uv_sleep(5);
        if (!atomic_load(&p->exited))
            shut_socket(p);
        uv_thread_join(&p->thread);
    }
    p->thread_started = 0;

    uv_mutex_lock(&p->mu);
    p->stopped = 1;
    fail_all(p, &p->submitted, "publisher stopped");
    list_splice(&p->done, &p->finished);
    uv_mutex_unlock(&p->mu);
    /* Callbacks may submit again (they then fail into done): drain until quiet. */
    while (1) {
        int empty;

        uv_mutex_lock(&p->mu);
        empty = p->done.head == NULL;
        uv_mutex_unlock(&p->mu);
        if (empty)
            break;
        drain_done(p);
    }
    uv_timer_stop(&p->watchdog);
    uv_close((uv_handle_t *)&p->watchdog, on_close);
    uv_close((uv_handle_t *)&p->async, on_close);
}
