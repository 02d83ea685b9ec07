/* worker/webhook.c: the webhook engine. It owns one thread, its uv loop, one curl multi
 * handle and every easy handle, socket poll and timer hanging off them.
 *
 * The loop drives curl through the multi socket interface: curl tells us which sockets
 * to watch (on_curl_socket) and when to wake it (on_curl_timer); we answer with
 * curl_multi_socket_action() and then collect finished transfers (check_done).
 *
 * A request moves: submit() -> inbound queue (mutex) -> on_wake() -> admit() -> its
 * endpoint's waiting FIFO (when the endpoint already holds max_per_host slots) ->
 * release_host() -> pending list -> start_pending() -> active list (in curl) ->
 * check_done() or abort_all() -> result queue (mutex) -> webhook_engine_poll().
 *
 * An endpoint (struct host: scheme://host:port) holds one slot for each of its requests
 * in pending or active, never more than max_per_host, so a slow endpoint fills at most
 * that many of the max_in_flight places and its backlog waits in its own FIFO. Invariant:
 * a host has waiters only while all its slots are taken, so every finish that frees a
 * slot hands it to the next waiter in order and nothing starves.
 *
 * Outbound safety: on_open_socket() sees every address curl is about to connect to,
 * after DNS, and refuses the ranges common/netcheck.h blocks unless the request allows
 * private networks. Such requests keep their connections in a curl share of their own
 * (CURL_LOCK_DATA_CONNECT), apart from the multi's cache, so a request that does not allow
 * them can never reuse one. */
#include "worker/webhook.h"

#include "common/errbuf.h"
#include "common/log.h"
#include "common/netcheck.h"

#include <curl/curl.h>
#include <uv.h>

#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define WEBHOOK_DEFAULT_MAX_IN_FLIGHT 256
#define WEBHOOK_DEFAULT_MAX_PER_HOST 16
#define WEBHOOK_HOST_BUCKETS 256 /* hosts live only while they have work */
#define WEBHOOK_DEFAULT_TIMEOUT_MS 10000L
#define WEBHOOK_CONNECT_TIMEOUT_MAX_MS 5000L
#define WEBHOOK_ABORTED "aborted: shutting down"
#define WEBHOOK_ERR_MAX 256 /* == sizeof(struct webhook_result.error) */

struct xfer {
    struct xfer *prev, *next; /* inbound, a host's waiting, pending or active list */
    webhook_engine *w;
    CURL *easy;
    char *url;
    char *host_key;    /* "scheme://host:port", or "" when the URL does not parse */
    struct host *host; /* set by admit(); holds one of its slots in pending/active */
    int allow_private;
    char *body;
    size_t body_len;
    struct curl_slist *headers;
    const char *bad; /* set at submit when the request cannot be sent */
    long timeout_ms;
    uint64_t start_ns; /* 0 until handed to curl */
    size_t head_len;
    struct webhook_result res;
    char curl_err[CURL_ERROR_SIZE];
    char blocked[WEBHOOK_ERR_MAX]; /* why on_open_socket() refused the first address */
};

struct xfer_list {
    struct xfer *head, *tail;
    int n;
};

/* One endpoint with work in the engine; freed as soon as it has none. */
struct host {
    struct host *next; /* hash chain */
    char *key;
    int slots;                /* its requests in pending + active */
    struct xfer_list waiting; /* FIFO, non-empty only while slots == max_per_host */
};

struct result_node {
    struct result_node *next;
    struct webhook_result res;
};

/* One watched socket. poll is first so the close callback can free the container. */
struct sock {
    uv_poll_t poll;
    curl_socket_t fd;
    webhook_engine *w;
};

struct webhook_engine {
    /* Engine thread only (and the owner thread before start / after join). */
    uv_loop_t loop;
    uv_async_t wake;
    uv_timer_t curl_timer;
    uv_timer_t deadline_timer;
    CURLM *multi;
    /* The connection cache of requests that allow private addresses, apart from the
     * multi's: their connections are reused among themselves only. */
    CURLSH *private_conns;
    struct xfer_list pending;
    struct xfer_list active;
    struct host *hosts[WEBHOOK_HOST_BUCKETS];
    int waiting_n; /* requests in every host's waiting FIFO */
    int max_in_flight;
    int max_per_host;
    char *user_agent;
    void (*on_done)(void *, void *);
    void *on_done_arg;
    int draining; /* the loop has seen the stop request */
    int closing;  /* every handle is being closed; the loop is about to end */

    /* Guarded by mu. */
    uv_mutex_t mu;
    uv_cond_t cond;
    struct xfer_list inbound;
    struct result_node *out_head, *out_tail;
    int stopping;
    int deadline_ms;

    atomic_int in_flight;
    int efd; /* eventfd: nonzero while results are waiting */

    /* Owner thread only. */
    uv_thread_t thread;
    int have_mu, have_cond, have_loop;
    int stopped;
};

static void *must_calloc(size_t n, size_t size)
{
    void *p = calloc(n, size);
    /* Out of memory is not an error we can report through a result: abort. */
    if (p == NULL)
        abort();
    return p;
}

static struct curl_slist *must_slist_append(struct curl_slist *l, const char *s)
{
    struct curl_slist *r = curl_slist_append(l, s);
    if (r == NULL)
        abort();
    return r;
}

int webhook_status_is_success(long status)
{
    return status >= 200 && status <= 299;
}

/* ---- lists ---------------------------------------------------------------------- */

static void list_push(struct xfer_list *l, struct xfer *x)
{
    x->next = NULL;
    x->prev = l->tail;
    if (l->tail)
        l->tail->next = x;
    else
        l->head = x;
    l->tail = x;
    l->n++;
}

static void list_remove(struct xfer_list *l, struct xfer *x)
{
    if (x->prev)
        x->prev->next = x->next;
    else
        l->head = x->next;
    if (x->next)
        x->next->prev = x->prev;
    else
        l->tail = x->prev;
    x->prev = x->next = NULL;
    l->n--;
}

static struct xfer *list_pop(struct xfer_list *l)
{
    struct xfer *x = l->head;
    if (x)
        list_remove(l, x);
    return x;
}

static void xfer_free(struct xfer *x)
{
    if (x == NULL)
        return;
    if (x->easy)
        curl_easy_cleanup(x->easy);
    curl_slist_free_all(x->headers);
    free(x->url);
    free(x->host_key);
    free(x->body);
    free(x);
}

/* ---- endpoints (engine thread) ------------------------------------------------------ */

static struct host **host_bucket(webhook_engine *w, const char *key)
{
    uint32_t h = 2166136261u; /* FNV-1a */

    for (const unsigned char *p = (const unsigned char *)key; *p; p++)
        h = (h ^ *p) * 16777619u;
    return &w->hosts[h % WEBHOOK_HOST_BUCKETS];
}

static struct host *host_get(webhook_engine *w, const char *key)
{
    struct host **b = host_bucket(w, key);
    struct host *h;

    for (h = *b; h; h = h->next)
        if (strcmp(h->key, key) == 0)
            return h;
    h = must_calloc(1, sizeof(*h));
    h->key = strdup(key);
    if (h->key == NULL)
        abort();
    h->next = *b;
    *b = h;
    return h;
}

static void host_drop_if_idle(webhook_engine *w, struct host *h)
{
    struct host **pp;

    if (h->slots > 0 || h->waiting.n > 0)
        return;
    for (pp = host_bucket(w, h->key); *pp != h; pp = &(*pp)->next)
        ;
    *pp = h->next;
    free(h->key);
    free(h);
}

/* A new request takes a slot of its endpoint and joins pending, or waits in the
 * endpoint's FIFO when every slot is taken. */
static void admit(webhook_engine *w, struct xfer *x)
{
    struct host *h = host_get(w, x->host_key);

    x->host = h;
    if (h->slots < w->max_per_host) {
        h->slots++;
        list_push(&w->pending, x);
    } else {
        list_push(&h->waiting, x);
        w->waiting_n++;
    }
}

/* x is done with its slot: the endpoint's oldest waiter takes it over. */
static void release_host(webhook_engine *w, struct xfer *x)
{
    struct host *h = x->host;
    struct xfer *next;

    if (h == NULL)
        return;
    x->host = NULL;
    h->slots--;
    next = list_pop(&h->waiting);
    if (next) {
        w->waiting_n--;
        h->slots++;
        list_push(&w->pending, next);
    }
    host_drop_if_idle(w, h);
}

/* "scheme://host:port" (lower case, default port filled in) for the per-endpoint limit.
 * A URL curl cannot parse gets "": it fails when curl tries it, so sharing one key
 * costs nothing. Caller frees. */
static char *endpoint_key(const char *url)
{
    CURLU *u = curl_url();
    char *scheme = NULL, *host = NULL, *port = NULL;
    char *key;
    size_t len;

    if (u == NULL)
        abort();
    if (url && curl_url_set(u, CURLUPART_URL, url, CURLU_NON_SUPPORT_SCHEME) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_HOST, &host, 0) == CURLUE_OK &&
        curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) == CURLUE_OK) {
        len = strlen(scheme) + strlen(host) + strlen(port) + 5;
        key = malloc(len);
        if (key == NULL)
            abort();
        snprintf(key, len, "%s://%s:%s", scheme, host, port);
        for (char *p = key; *p; p++)
            if (*p >= 'A' && *p <= 'Z')
                *p = (char)(*p - 'A' + 'a');
    } else {
        key = strdup("");
        if (key == NULL)
            abort();
    }
    curl_free(scheme);
    curl_free(host);
    curl_free(port);
    curl_url_cleanup(u);
    return key;
}

/* ---- results -------------------------------------------------------------------- */

static void push_result(webhook_engine *w, const struct webhook_result *r)
{
    struct result_node *node = must_calloc(1, sizeof(*node));
    uint64_t one = 1;
    ssize_t n;

    node->res = *r;
    uv_mutex_lock(&w->mu);
    if (w->out_tail)
        w->out_tail->next = node;
    else
        w->out_head = node;
    w->out_tail = node;
    /* Decremented under the lock with the result already queued: a consumer that sees
     * in_flight()==0, or the fd readable, finds the result with poll(). */
    atomic_fetch_sub(&w->in_flight, 1);
    /* The counter only signals readability; poll() resets it when the queue empties.
     * EAGAIN (counter saturated) still leaves it readable, so it is ignored. */
    n = write(w->efd, &one, sizeof(one));
    (void)n;
    uv_cond_broadcast(&w->cond);
    uv_mutex_unlock(&w->mu);
}

/* Turns a finished (or abandoned) transfer into its result and frees it. abort_msg
 * overrides curl's outcome; code is ignored when it is set. */
static void finish_xfer(struct xfer *x, CURLcode code, const char *abort_msg)
{
    struct webhook_result *r = &x->res;
    long status = 0;
    curl_off_t connect_us = 0;

    if (x->easy && x->start_ns) {
        curl_easy_getinfo(x->easy, CURLINFO_RESPONSE_CODE, &status);
        curl_easy_getinfo(x->easy, CURLINFO_CONNECT_TIME_T, &connect_us);
        r->latency_us = (int64_t)((uv_hrtime() - x->start_ns) / 1000);
    }
    r->http_status = status;
    r->ok = 0;
    if (abort_msg) {
        snprintf(r->error, sizeof(r->error), "%s", abort_msg);
    } else if (code == CURLE_COULDNT_CONNECT && x->blocked[0]) {
        /* Every address was refused (or the allowed ones failed): name the refusal,
         * which is what the operator has to act on. */
        snprintf(r->error, sizeof(r->error), "%s", x->blocked);
    } else if (code == CURLE_OPERATION_TIMEDOUT && connect_us == 0 &&
               x->timeout_ms > WEBHOOK_CONNECT_TIMEOUT_MAX_MS) {
        snprintf(r->error, sizeof(r->error), "timeout after %ld ms connecting",
                 WEBHOOK_CONNECT_TIMEOUT_MAX_MS);
    } else if (code == CURLE_OPERATION_TIMEDOUT) {
        snprintf(r->error, sizeof(r->error), "timeout after %ld ms", x->timeout_ms);
    } else if (code != CURLE_OK) {
        snprintf(r->error, sizeof(r->error), "%s",
                 x->curl_err[0] ? x->curl_err : curl_easy_strerror(code));
    } else if (!webhook_status_is_success(status)) {
        snprintf(r->error, sizeof(r->error), "HTTP %ld", status);
    } else {
        r->error[0] = '\0';
        r->ok = 1;
    }
    release_host(x->w, x);
    if (x->w->on_done)
        x->w->on_done(x->w->on_done_arg, r->user);
    push_result(x->w, r);
    xfer_free(x);
}

/* ---- curl easy callbacks (engine thread) ------------------------------------------- */

static size_t on_body(char *buf, size_t size, size_t nitems, void *userdata)
{
    struct xfer *x = userdata;
    size_t len = size * nitems;
    size_t room = sizeof(x->res.body_head) - 1 - x->head_len;
    size_t take = len < room ? len : room;

    /* Keep the head for the logs and drop the rest: a huge or endless body costs
     * nothing but time, which CURLOPT_TIMEOUT_MS bounds. */
    for (size_t i = 0; i < take; i++) {
        unsigned char c = (unsigned char)buf[i];
        x->res.body_head[x->head_len++] = (c >= 0x20 && c < 0x7f) ? (char)c : '.';
    }
    x->res.body_head[x->head_len] = '\0';
    return len;
}

static size_t on_header(char *buf, size_t size, size_t nitems, void *userdata)
{
    static const char name[] = "Retry-After:";
    struct xfer *x = userdata;
    size_t len = size * nitems;
    const char *v, *end;
    size_t vlen;

    if (len >= 5 && memcmp(buf, "HTTP/", 5) == 0) {
        /* A new response (after a 1xx) starts with a clean slate. */
        x->res.retry_after[0] = '\0';
        return len;
    }
    if (len < sizeof(name) - 1 || strncasecmp(buf, name, sizeof(name) - 1) != 0)
        return len;
    v = buf + sizeof(name) - 1;
    end = buf + len;
    while (v < end && (*v == ' ' || *v == '\t'))
        v++;
    while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' ' || end[-1] == '\t'))
        end--;
    vlen = (size_t)(end - v);
    if (vlen > sizeof(x->res.retry_after) - 1)
        vlen = sizeof(x->res.retry_after) - 1;
    for (size_t i = 0; i < vlen; i++) {
        unsigned char c = (unsigned char)v[i];
        x->res.retry_after[i] = (c >= 0x20 && c < 0x7f) ? (char)c : '.';
    }
    x->res.retry_after[vlen] = '\0';
    return len;
}

/* CURLOPT_OPENSOCKETFUNCTION: runs for every address curl tries, after resolution and
 * before connect(), so the verdict is about the peer we would really talk to. */
static curl_socket_t on_open_socket(void *clientp, curlsocktype purpose, struct curl_sockaddr *a)
{
    struct xfer *x = clientp;
    char addr[NETCHECK_ADDR_MAX], range[NETCHECK_RANGE_MAX];
    int fd;

    (void)purpose;
    if (!x->allow_private && netcheck_classify(&a->addr, (socklen_t)a->addrlen, addr, sizeof(addr),
                                               range, sizeof(range))) {
        if (x->blocked[0] == '\0')
            snprintf(x->blocked, sizeof(x->blocked),
                     "blocked address %s (%s): private networks not allowed for this business",
                     addr, range);
        return CURL_SOCKET_BAD;
    }
    fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
    return fd < 0 ? CURL_SOCKET_BAD : fd;
}

/* 0, or -1 with why (room for WEBHOOK_ERR_MAX bytes) filled. */
static int setup_easy(webhook_engine *w, struct xfer *x, char *why)
{
    long connect_ms = x->timeout_ms < WEBHOOK_CONNECT_TIMEOUT_MAX_MS
                          ? x->timeout_ms
                          : WEBHOOK_CONNECT_TIMEOUT_MAX_MS;
    CURLcode c;
    CURL *h;

    if (x->bad) {
        snprintf(why, WEBHOOK_ERR_MAX, "%s", x->bad);
        return -1;
    }
    h = curl_easy_init();
    if (h == NULL) {
        snprintf(why, WEBHOOK_ERR_MAX, "curl_easy_init failed");
        return -1;
    }
    x->easy = h;
    if ((c = curl_easy_setopt(h, CURLOPT_PRIVATE, (char *)x)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_ERRORBUFFER, x->curl_err)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https")) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_URL, x->url)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_POST, 1L)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)x->body_len)) !=
            CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_POSTFIELDS, x->body ? x->body : "")) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_HTTPHEADER, x->headers)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, x->timeout_ms)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, connect_ms)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_WRITEDATA, x)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_HEADERDATA, x)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket)) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, x)) != CURLE_OK ||
        /* A proxy from the environment would connect for us, past on_open_socket(). */
        (c = curl_easy_setopt(h, CURLOPT_PROXY, "")) != CURLE_OK ||
        (c = curl_easy_setopt(h, CURLOPT_NOPROXY, "*")) != CURLE_OK ||
        /* A connection opened to a private address must never serve a later request
         * that does not allow one: such requests keep their connections in a cache of
         * their own, and HTTP/1.1 keeps another transfer from multiplexing onto one
         * (HTTP/2) while it runs. */
        (x->allow_private &&
         ((c = curl_easy_setopt(h, CURLOPT_SHARE, w->private_conns)) != CURLE_OK ||
          (c = curl_easy_setopt(h, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_1_1)) !=
              CURLE_OK)) ||
        (w->user_agent &&
         (c = curl_easy_setopt(h, CURLOPT_USERAGENT, w->user_agent)) != CURLE_OK)) {
        snprintf(why, WEBHOOK_ERR_MAX, "%s", x->curl_err[0] ? x->curl_err : curl_easy_strerror(c));
        return -1;
    }
    return 0;
}

/* ---- the loop ------------------------------------------------------------------------ */

static void sock_close_cb(uv_handle_t *h)
{
    free(h->data);
}

static void close_walk(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (uv_is_closing(h))
        return;
    uv_close(h, h->type == UV_POLL ? sock_close_cb : NULL);
}

static void maybe_finish(webhook_engine *w);

static void start_pending(webhook_engine *w)
{
    struct xfer *x;
    CURLMcode mc;
    char why[WEBHOOK_ERR_MAX];

    while (w->active.n < w->max_in_flight && (x = list_pop(&w->pending)) != NULL) {
        if (setup_easy(w, x, why) != 0) {
            finish_xfer(x, CURLE_OK, why);
            continue;
        }
        x->start_ns = uv_hrtime();
        /* curl answers by asking for a 0 ms timer; the transfer begins on that tick. */
        mc = curl_multi_add_handle(w->multi, x->easy);
        if (mc != CURLM_OK) {
            snprintf(why, sizeof(why), "curl_multi_add_handle: %s", curl_multi_strerror(mc));
            finish_xfer(x, CURLE_OK, why);
            continue;
        }
        list_push(&w->active, x);
    }
}

static void check_done(webhook_engine *w)
{
    CURLMsg *m;
    int left;

    while ((m = curl_multi_info_read(w->multi, &left)) != NULL) {
        CURL *easy = m->easy_handle;
        CURLcode code = m->data.result;
        char *priv = NULL;
        struct xfer *x;

        if (m->msg != CURLMSG_DONE)
            continue;
        /* m is invalid once the handle is removed; everything needed was copied. */
        curl_easy_getinfo(easy, CURLINFO_PRIVATE, &priv);
        x = (struct xfer *)(void *)priv;
        curl_multi_remove_handle(w->multi, easy);
        list_remove(&w->active, x);
        finish_xfer(x, code, NULL);
    }
    start_pending(w);
    maybe_finish(w);
}

/* Releasing a slot moves the host's next waiter into pending, so the second loop
 * also empties every waiting FIFO. */
static void abort_all(webhook_engine *w)
{
    struct xfer *x;

    while ((x = list_pop(&w->active)) != NULL) {
        curl_multi_remove_handle(w->multi, x->easy);
        finish_xfer(x, CURLE_OK, WEBHOOK_ABORTED);
    }
    while ((x = list_pop(&w->pending)) != NULL)
        finish_xfer(x, CURLE_OK, WEBHOOK_ABORTED);
}

/* Once stopping and idle, tear down: curl first (it may still ask to unwatch cached
 * connections' sockets), then every handle; uv_run() returns after the closes. */
static void maybe_finish(webhook_engine *w)
{
    if (!w->draining || w->closing || w->active.n > 0 || w->pending.n > 0 || w->waiting_n > 0)
        return;
    w->closing = 1;
    curl_multi_cleanup(w->multi);
    w->multi = NULL;
    uv_walk(&w->loop, close_walk, NULL);
}

static void on_poll(uv_poll_t *h, int status, int events)
{
    struct sock *sk = h->data;
    webhook_engine *w = sk->w;
    int flags = 0;
    int running;

    if (status < 0) {
        flags = CURL_CSELECT_ERR;
    } else {
        if (events & UV_READABLE)
            flags |= CURL_CSELECT_IN;
        if (events & UV_WRITABLE)
            flags |= CURL_CSELECT_OUT;
    }
    curl_multi_socket_action(w->multi, sk->fd, flags, &running);
    check_done(w);
}

static void on_curl_timeout(uv_timer_t *t)
{
    webhook_engine *w = t->data;
    int running;

    curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(w);
}

/* CURLMOPT_TIMERFUNCTION: never calls back into curl (curl forbids it here). */
static int on_curl_timer(CURLM *m, long timeout_ms, void *userp)
{
    webhook_engine *w = userp;

    (void)m;
    if (w->closing)
        return 0;
    if (timeout_ms < 0)
        uv_timer_stop(&w->curl_timer);
    else
        uv_timer_start(&w->curl_timer, on_curl_timeout, (uint64_t)timeout_ms, 0);
    return 0;
}

/* CURLMOPT_SOCKETFUNCTION. curl calls REMOVE before it closes a socket, so a later
 * socket with the same fd number gets a fresh poll handle. */
static int on_curl_socket(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
    webhook_engine *w = userp;
    struct sock *sk = socketp;
    int events = 0;

    (void)easy;
    if (what == CURL_POLL_REMOVE) {
        if (sk) {
            uv_close((uv_handle_t *)&sk->poll, sock_close_cb);
            if (w->multi)
                curl_multi_assign(w->multi, s, NULL);
        }
        return 0;
    }
    if (w->closing)
        return 0;
    if (sk == NULL) {
        sk = must_calloc(1, sizeof(*sk));
        sk->fd = s;
        sk->w = w;
        if (uv_poll_init_socket(&w->loop, &sk->poll, s) != 0) {
            free(sk);
            return -1;
        }
        sk->poll.data = sk;
        curl_multi_assign(w->multi, s, sk);
    }
    if (what & CURL_POLL_IN)
        events |= UV_READABLE;
    if (what & CURL_POLL_OUT)
        events |= UV_WRITABLE;
    uv_poll_start(&sk->poll, events, on_poll);
    return 0;
}

static void on_deadline(uv_timer_t *t)
{
    webhook_engine *w = t->data;

    abort_all(w);
    maybe_finish(w);
}

/* uv_async_send() coalesces, so each wake-up drains the whole inbound queue. */
static void on_wake(uv_async_t *a)
{
    webhook_engine *w = a->data;
    struct xfer_list in;
    struct xfer *x;
    int stopping, deadline_ms;

    uv_mutex_lock(&w->mu);
    in = w->inbound;
    w->inbound.head = w->inbound.tail = NULL;
    w->inbound.n = 0;
    stopping = w->stopping;
    deadline_ms = w->deadline_ms;
    uv_mutex_unlock(&w->mu);

    while ((x = list_pop(&in)) != NULL)
        admit(w, x);
    if (w->closing)
        return;
    if (stopping && !w->draining) {
        w->draining = 1;
        if (deadline_ms <= 0)
            abort_all(w);
        else
            uv_timer_start(&w->deadline_timer, on_deadline, (uint64_t)deadline_ms, 0);
    }
    start_pending(w);
    maybe_finish(w);
}

static void engine_main(void *arg)
{
    webhook_engine *w = arg;
    sigset_t set;

    /* A peer closing mid-write must give EPIPE here, never kill the process. */
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
}

/* ---- public API ------------------------------------------------------------------------ */

/* Closes whatever handles exist and the loop; for start's failure path. */
static void teardown_loop(webhook_engine *w)
{
    if (!w->have_loop)
        return;
    uv_walk(&w->loop, close_walk, NULL);
    uv_run(&w->loop, UV_RUN_DEFAULT);
    uv_loop_close(&w->loop);
    w->have_loop = 0;
}

static void engine_free(webhook_engine *w)
{
    struct result_node *r, *next;

    for (r = w->out_head; r; r = next) {
        next = r->next;
        free(r);
    }
    /* Defensive: a host is dropped with its last request's result, and stop produces
     * every result, so the table is already empty here. */
    for (size_t i = 0; i < WEBHOOK_HOST_BUCKETS; i++) {
        struct host *h, *hn;
        for (h = w->hosts[i]; h; h = hn) {
            hn = h->next;
            free(h->key);
            free(h);
        }
    }
    if (w->multi)
        curl_multi_cleanup(w->multi);
    if (w->private_conns)
        curl_share_cleanup(w->private_conns); /* every easy handle is gone by now */
    teardown_loop(w);
    if (w->efd >= 0)
        close(w->efd);
    if (w->have_cond)
        uv_cond_destroy(&w->cond);
    if (w->have_mu)
        uv_mutex_destroy(&w->mu);
    free(w->user_agent);
    free(w);
}

webhook_engine *webhook_engine_start(const struct webhook_opts *o, struct errbuf *e)
{
    webhook_engine *w = must_calloc(1, sizeof(*w));
    int rc;

    w->efd = -1;
    w->max_in_flight =
        (o && o->max_in_flight > 0) ? o->max_in_flight : WEBHOOK_DEFAULT_MAX_IN_FLIGHT;
    w->max_per_host = (o && o->max_per_host > 0) ? o->max_per_host : WEBHOOK_DEFAULT_MAX_PER_HOST;
    if (o) {
        w->on_done = o->on_done;
        w->on_done_arg = o->on_done_arg;
    }
    if (o && o->user_agent) {
        w->user_agent = strdup(o->user_agent);
        if (w->user_agent == NULL)
            abort();
    }
    atomic_init(&w->in_flight, 0);

    if ((rc = uv_mutex_init(&w->mu)) != 0)
        goto uv_fail;
    w->have_mu = 1;
    if ((rc = uv_cond_init(&w->cond)) != 0)
        goto uv_fail;
    w->have_cond = 1;
    w->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (w->efd < 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "webhook: eventfd: %s", strerror(errno));
        goto out;
    }
    if ((rc = uv_loop_init(&w->loop)) != 0)
        goto uv_fail;
    w->have_loop = 1;
    if ((rc = uv_async_init(&w->loop, &w->wake, on_wake)) != 0)
        goto uv_fail;
    w->wake.data = w;
    uv_timer_init(&w->loop, &w->curl_timer);
    w->curl_timer.data = w;
    uv_timer_init(&w->loop, &w->deadline_timer);
    w->deadline_timer.data = w;

    w->multi = curl_multi_init();
    if (w->multi == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "webhook: curl_multi_init failed");
        goto out;
    }
    w->private_conns = curl_share_init();
    if (w->private_conns == NULL || curl_share_setopt(w->private_conns, CURLSHOPT_SHARE,
                                                      CURL_LOCK_DATA_CONNECT) != CURLSHE_OK) {
        errbuf_set(e, ERRBUF_TRANSIENT, "webhook: curl_share_init failed");
        goto out;
    }
    if (curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, on_curl_socket) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, on_curl_timer) != CURLM_OK ||
        curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w) != CURLM_OK) {
        errbuf_set(e, ERRBUF_TRANSIENT, "webhook: curl_multi_setopt failed");
        goto out;
    }
    if ((rc = uv_thread_create(&w->thread, engine_main, w)) != 0)
        goto uv_fail;
    return w;

uv_fail:
    errbuf_set(e, ERRBUF_TRANSIENT, "webhook: %s", uv_strerror(rc));
out:
    /* No thread runs yet, so the loop and curl can be torn down from here. */
    engine_free(w);
    return NULL;
}

int webhook_engine_submit(webhook_engine *w, struct webhook_request *req)
{
    struct xfer *x = must_calloc(1, sizeof(*x));

    x->w = w;
    x->url = req->url;
    x->body = req->body;
    x->body_len = req->body ? req->body_len : 0;
    x->timeout_ms = req->timeout_ms > 0 ? req->timeout_ms : WEBHOOK_DEFAULT_TIMEOUT_MS;
    x->res.user = req->user;
    x->allow_private = req->allow_private != 0;
    x->host_key = endpoint_key(x->url);
    if (x->url == NULL)
        x->bad = "no url";
    /* Webhook receivers rarely answer "100 Continue": never make curl wait for one. */
    x->headers = must_slist_append(NULL, "Expect:");
    if (req->headers) {
        for (char **h = req->headers; *h; h++) {
            /* A CR or LF would let a header value smuggle extra headers or a request. */
            if (strpbrk(*h, "\r\n"))
                x->bad = "header contains CR or LF";
            else
                x->headers = must_slist_append(x->headers, *h);
            free(*h);
        }
        free(req->headers);
    }
    req->url = NULL;
    req->body = NULL;
    req->headers = NULL;

    uv_mutex_lock(&w->mu);
    if (w->stopping) {
        uv_mutex_unlock(&w->mu);
        xfer_free(x);
        return -1;
    }
    list_push(&w->inbound, x);
    atomic_fetch_add(&w->in_flight, 1);
    /* Sent under the lock: the loop closes this handle only after it has seen
     * stopping under the same lock, so the handle is still open here. */
    uv_async_send(&w->wake);
    uv_mutex_unlock(&w->mu);
    return 0;
}

int webhook_engine_poll(webhook_engine *w, struct webhook_result *out)
{
    struct result_node *node;
    uint64_t v;
    ssize_t n;

    uv_mutex_lock(&w->mu);
    node = w->out_head;
    if (node) {
        w->out_head = node->next;
        if (w->out_head == NULL) {
            w->out_tail = NULL;
            /* Reset readability; writes happen under the same lock, so none is lost. */
            n = read(w->efd, &v, sizeof(v));
            (void)n;
        }
    }
    uv_mutex_unlock(&w->mu);
    if (node == NULL)
        return 0;
    *out = node->res;
    free(node);
    return 1;
}

int webhook_engine_wait(webhook_engine *w, int timeout_ms)
{
    uint64_t deadline = uv_hrtime() + (uint64_t)(timeout_ms < 0 ? 0 : timeout_ms) * 1000000u;
    int ready;

    uv_mutex_lock(&w->mu);
    while (w->out_head == NULL) {
        if (timeout_ms < 0) {
            uv_cond_wait(&w->cond, &w->mu);
            continue;
        }
        uint64_t now = uv_hrtime();
        if (now >= deadline)
            break;
        uv_cond_timedwait(&w->cond, &w->mu, deadline - now);
    }
    ready = w->out_head != NULL;
    uv_mutex_unlock(&w->mu);
    return ready;
}

int webhook_engine_fd(const webhook_engine *w)
{
    return w->efd;
}

int webhook_engine_in_flight(const webhook_engine *w)
{
    return atomic_load(&w->in_flight);
}

void webhook_engine_stop(webhook_engine *w, int deadline_ms)
{
    if (w == NULL || w->stopped)
        return;
    w->stopped = 1;
    uv_mutex_lock(&w->mu);
    w->stopping = 1;
    w->deadline_ms = deadline_ms;
    uv_async_send(&w->wake);
    uv_mutex_unlock(&w->mu);
    uv_thread_join(&w->thread);
    /* The thread returned from uv_run() only after every handle closed. */
    if (uv_loop_close(&w->loop) != 0) {
        LOG_ERROR("webhook_loop_not_closed");
        abort();
    }
    w->have_loop = 0;
}

void webhook_engine_free(webhook_engine *w)
{
    if (w == NULL)
        return;
    webhook_engine_stop(w, 0);
    engine_free(w);
}
