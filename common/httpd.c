/* common/httpd.c: the libuv HTTP/1.1 server: listener, connections, timeouts,
 * keep-alive and pipelining, replies (immediate or deferred) and graceful stop.
 * Parsing is httpreq's job; this file only moves bytes and keeps lifetimes right.
 *
 * A connection moves through these states (conn_* function on each arrow):
 *
 *   accept ──> READING ──conn_dispatch──> HANDLING ──httpd_reply──> WRITING
 *                 ^  │                        │                      │   │
 *                 │  └─conn_fail (400/408/413/431)──────────────────>┘   │
 *                 └──────────────conn_resume (keep-alive)────────────────┤
 *                                                                        v
 *   any state ──conn_close──> CLOSING <──EOF/timer── LINGERING <──conn_linger
 *
 * Lifetimes (STYLE §4): a connection owns a uv_tcp_t and a uv_timer_t and is freed
 * in the second close callback. A request is detached from its connection when
 * the client goes away, so it stays valid until the handler's httpd_reply(). */
#include "common/httpd.h"

#include "common/errbuf.h"
#include "common/httpreq.h"
#include "common/xalloc.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define CONN_STATES(X)                                                               \
    X(READING)   /* waiting for or reading a request */                              \
    X(HANDLING)  /* the handler has the request; input is buffered, not parsed */    \
    X(WRITING)   /* a reply is being written */                                      \
    X(LINGERING) /* reply sent, FIN sent; draining input so no RST eats the reply */ \
    X(CLOSING)   /* uv_close() called, waiting for both close callbacks */

enum conn_state {
#define X(s) CONN_##s,
    CONN_STATES(X)
#undef X
};

enum timer_kind {
    TIMER_READ,   /* a request must be complete in time (408) */
    TIMER_IDLE,   /* keep-alive with no request: close quietly */
    TIMER_WRITE,  /* the client must take our reply in time */
    TIMER_LINGER, /* bounded wait for the client's FIN */
};

/* A lingering close waits this long at most for the client to hang up. */
#define LINGER_MS 2000
/* ...and reads (and drops) at most this much meanwhile. */
#define LINGER_MAX_BYTES (1024 * 1024)
/* Input buffered while a request is handled; reading pauses beyond it. */
#define PENDING_MAX (64 * 1024)
#define READ_CHUNK (64 * 1024)
#define PEER_MAX 64

struct conn {
    httpd *srv;
    uv_tcp_t tcp;
    uv_timer_t timer;
    uv_shutdown_t shutdown_req;
    uv_write_t continue_req;
    int open_handles; /* close callbacks still to come; freed at zero */
    enum conn_state state;
    enum timer_kind timer_kind;
    httpreq *parser; /* NULL while a request owns it */
    httpd_req *req;  /* the request being handled, if any */
    char *pending;   /* bytes read but not parsed yet (pipelining) */
    size_t pending_len;
    size_t pending_cap;
    size_t discarded; /* bytes dropped while lingering */
    int reading;
    int rejected;    /* over max_conns: only a 503 goes out */
    int close_after; /* close once the current reply is written */
    int sent_continue;
    char peer[PEER_MAX];
    struct conn *prev;
    struct conn *next;
};

struct httpd_req {
    struct conn *conn; /* NULL once the client is gone */
    httpreq *parser;   /* holds the parsed request; back to conn on reply */
    int keep_alive;
    int head; /* HEAD: Content-Length but no body bytes */
    char peer[PEER_MAX];
};

/* One reply on the wire; freed in its write callback. */
struct write_req {
    uv_write_t req;
    struct conn *conn;
    size_t len;
    char data[];
};

struct httpd {
    uv_loop_t *loop;
    uv_tcp_t listener;
    struct httpd_opts opts;
    httpd_handler handler;
    void *arg;
    int port;
    int nconns; /* accepted and not rejected */
    struct conn *conns;
    int stopping;
    int listener_closed;
    void (*done)(void *arg);
    void *done_arg;
    /* Shared by all connections: libuv calls read_cb right after alloc_cb on the
     * loop thread, and each read is parsed or copied before returning. */
    char *rbuf;
};

static void conn_close(struct conn *c);
static void conn_feed(struct conn *c, const char *data, size_t len);

/* ---- building replies ------------------------------------------------------ */

static int line_is_safe(const char *s)
{
    return s != NULL && strpbrk(s, "\r\n") == NULL;
}

/* Appends to w->data; capacity was computed by the caller, so overflow is a bug. */
static void w_printf(struct write_req *w, size_t cap, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void w_printf(struct write_req *w, size_t cap, const char *fmt, ...)
{
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(w->data + w->len, cap - w->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= cap - w->len)
        abort();
    w->len += (size_t)n;
}

static struct write_req *build_reply(int status, const char *content_type, const void *body,
                                     size_t len, const char *const *extra, int keep_alive, int head)
{
    /* 1xx, 204 and 304 carry no body, and RFC 9110 forbids Content-Length on
     * 1xx/204; 304 would have to repeat the GET's length, which we never know. */
    int no_body = (status >= 100 && status < 200) || status == 204 || status == 304;
    size_t cap = 256; /* status line, Date, Content-Length, Connection, blank line */
    struct write_req *w;
    char date[64];
    struct tm tm;
    time_t now = time(NULL);

    if (line_is_safe(content_type))
        cap += strlen(content_type) + 16;
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        cap += strlen(extra[i]) + 2;
    w = xmalloc(sizeof(*w) + cap + (no_body || head ? 0 : len));
    w->len = 0;
    gmtime_r(&now, &tm);
    strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
    w_printf(w, cap, "HTTP/1.1 %d %s\r\nDate: %s\r\n", status, httpreq_reason(status), date);
    if (line_is_safe(content_type))
        w_printf(w, cap, "Content-Type: %s\r\n", content_type);
    if (!no_body)
        w_printf(w, cap, "Content-Length: %zu\r\n", len);
    w_printf(w, cap, "Connection: %s\r\n", keep_alive ? "keep-alive" : "close");
    for (size_t i = 0; extra != NULL && extra[i] != NULL; i++)
        if (line_is_safe(extra[i]) && strchr(extra[i], ':') != NULL)
            w_printf(w, cap, "%s\r\n", extra[i]);
    w_printf(w, cap, "\r\n");
    if (!no_body && !head && len > 0) {
        memcpy(w->data + w->len, body, len);
        w->len += len;
    }
    return w;
}

/* Appends s JSON-escaped to out (cap bytes, always NUL-terminated). */
static size_t json_escape(char *out, size_t cap, size_t off, const char *s)
{
    for (; *s != '\0' && off + 7 < cap; s++) {
        unsigned char ch = (unsigned char)*s;

        if (ch == '"' || ch == '\\') {
            out[off++] = '\\';
            out[off++] = (char)ch;
        } else if (ch < 0x20) {
            off += (size_t)snprintf(out + off, cap - off, "\\u%04x", ch);
        } else {
            out[off++] = (char)ch;
        }
    }
    out[off] = '\0';
    return off;
}

/* {"error":{"code":"...","message":"..."}} into out; returns its length. */
static size_t error_json(char *out, size_t cap, const char *code, const char *message)
{
    size_t off = 0;

    off += (size_t)snprintf(out, cap, "{\"error\":{\"code\":\"");
    off = json_escape(out, cap - 32, off, code ? code : "error");
    off += (size_t)snprintf(out + off, cap - off, "\",\"message\":\"");
    off = json_escape(out, cap - 8, off, message ? message : "");
    off += (size_t)snprintf(out + off, cap - off, "\"}}");
    return off;
}

/* ---- connection plumbing --------------------------------------------------- */

static void on_timer(uv_timer_t *t);

static void conn_timer(struct conn *c, enum timer_kind kind, int ms)
{
    c->timer_kind = kind;
    uv_timer_start(&c->timer, on_timer, (uint64_t)ms, 0);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    struct conn *c = h->data;

    (void)suggested;
    *buf = uv_buf_init(c->srv->rbuf, READ_CHUNK);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf);

static void conn_read_start(struct conn *c)
{
    if (c->reading || c->state == CONN_CLOSING)
        return;
    if (uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read) != 0) {
        conn_close(c);
        return;
    }
    c->reading = 1;
}

static void conn_read_stop(struct conn *c)
{
    if (!c->reading)
        return;
    uv_read_stop((uv_stream_t *)&c->tcp);
    c->reading = 0;
}

static void pending_keep(struct conn *c, const char *data, size_t len)
{
    if (len == 0) {
        c->pending_len = 0;
        return;
    }
    if (c->pending != NULL && data >= c->pending && data < c->pending + c->pending_cap) {
        memmove(c->pending, data, len);
        c->pending_len = len;
        return;
    }
    if (c->pending_len + len > c->pending_cap) {
        size_t cap = c->pending_cap ? c->pending_cap : 4096;

        while (cap < c->pending_len + len)
            cap *= 2;
        c->pending = realloc(c->pending, cap);
        if (c->pending == NULL)
            abort();
        c->pending_cap = cap;
    }
    memcpy(c->pending + c->pending_len, data, len);
    c->pending_len += len;
}

static void srv_maybe_done(httpd *s)
{
    void (*done)(void *);
    void *arg;

    if (!s->stopping || !s->listener_closed || s->conns != NULL)
        return;
    done = s->done;
    arg = s->done_arg;
    free(s->rbuf);
    free(s);
    if (done != NULL)
        done(arg);
}

static void on_conn_close(uv_handle_t *h)
{
    struct conn *c = h->data;
    httpd *s = c->srv;

    if (--c->open_handles > 0)
        return;
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        s->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (!c->rejected)
        s->nconns--;
    httpreq_free(c->parser);
    free(c->pending);
    free(c);
    srv_maybe_done(s);
}

/* Idempotent. Pending writes and the shutdown get UV_ECANCELED before the close
 * callbacks run, so they may still look at c. */
static void conn_close(struct conn *c)
{
    if (c->state == CONN_CLOSING)
        return;
    c->state = CONN_CLOSING;
    if (c->req != NULL) {
        c->req->conn = NULL; /* the request now lives on its own */
        c->req = NULL;
    }
    c->reading = 0;
    uv_close((uv_handle_t *)&c->tcp, on_conn_close);
    uv_close((uv_handle_t *)&c->timer, on_conn_close);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    struct conn *c = req->data;

    if (status < 0)
        conn_close(c);
}

/* Sends our FIN, then reads and drops input until the client's FIN (or a timer):
 * closing with unread input would send an RST that can destroy the reply in the
 * client's receive buffer before it read it (nginx's lingering_close). */
static void conn_linger(struct conn *c)
{
    int ms = c->srv->opts.read_timeout_ms < LINGER_MS ? c->srv->opts.read_timeout_ms : LINGER_MS;

    c->state = CONN_LINGERING;
    conn_timer(c, TIMER_LINGER, ms);
    c->shutdown_req.data = c;
    if (uv_shutdown(&c->shutdown_req, (uv_stream_t *)&c->tcp, on_shutdown) != 0) {
        conn_close(c);
        return;
    }
    conn_read_start(c);
}

static void on_write(uv_write_t *req, int status)
{
    struct write_req *w = req->data;
    struct conn *c = w->conn;

    free(w);
    if (status < 0) {
        conn_close(c);
        return;
    }
    if (c->state != CONN_WRITING)
        return;
    if (c->close_after || c->srv->stopping) {
        conn_linger(c);
        return;
    }
    /* Keep-alive: back to reading, starting with bytes that came in meanwhile. */
    c->state = CONN_READING;
    c->sent_continue = 0;
    conn_timer(c, TIMER_IDLE, c->srv->opts.idle_timeout_ms);
    if (c->pending_len > 0)
        conn_feed(c, c->pending, c->pending_len);
    if (c->state == CONN_READING)
        conn_read_start(c);
}

static void conn_write(struct conn *c, struct write_req *w, int close_after)
{
    uv_buf_t b = uv_buf_init(w->data, (unsigned int)w->len);

    c->state = CONN_WRITING;
    c->close_after = close_after;
    conn_timer(c, TIMER_WRITE, c->srv->opts.read_timeout_ms);
    w->conn = c;
    w->req.data = w;
    if (uv_write(&w->req, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0) {
        free(w);
        conn_close(c);
    }
}

/* Answers a request httpd refuses by itself, then closes. */
static void conn_fail(struct conn *c, int status, const char *code, const char *message)
{
    char body[512];
    size_t len = error_json(body, sizeof(body), code, message);

    conn_write(c, build_reply(status, "application/json", body, len, NULL, 0, 0), 1);
}

static void on_continue_write(uv_write_t *req, int status)
{
    struct conn *c = req->data;

    if (status < 0)
        conn_close(c);
}

/* curl and others wait (1 s by default) for this before sending a large body. */
static void conn_maybe_continue(struct conn *c)
{
    static const char line[] = "HTTP/1.1 100 Continue\r\n\r\n";
    const char *expect;
    uv_buf_t b;

    if (c->sent_continue || !httpreq_headers_done(c->parser) || httpreq_complete(c->parser))
        return;
    expect = httpreq_header(c->parser, "expect");
    if (expect == NULL || strcasecmp(expect, "100-continue") != 0 ||
        httpreq_http_minor(c->parser) < 1)
        return;
    c->sent_continue = 1;
    c->continue_req.data = c;
    b = uv_buf_init((char *)line, sizeof(line) - 1);
    if (uv_write(&c->continue_req, (uv_stream_t *)&c->tcp, &b, 1, on_continue_write) != 0)
        conn_close(c);
}

static void conn_dispatch(struct conn *c)
{
    httpd_req *r = xcalloc(1, sizeof(*r));
    const char *method;

    r->conn = c;
    r->parser = c->parser;
    c->parser = NULL;
    c->req = r;
    r->keep_alive = httpreq_keep_alive(r->parser) && !c->srv->stopping;
    method = httpreq_method(r->parser);
    r->head = method != NULL && strcmp(method, "HEAD") == 0;
    memcpy(r->peer, c->peer, sizeof(r->peer));
    c->state = CONN_HANDLING;
    uv_timer_stop(&c->timer);
    /* Keep reading, to notice a client that hangs up, unless too much is queued. */
    if (c->pending_len >= PENDING_MAX)
        conn_read_stop(c);
    c->srv->handler(r, c->srv->arg);
}

/* Parses data (from the socket or from c->pending) while in READING. */
static void conn_feed(struct conn *c, const char *data, size_t len)
{
    struct errbuf e = {0};
    int was_started = httpreq_started(c->parser);
    size_t used = 0;
    int rc = httpreq_feed(c->parser, data, len, &used, &e);

    if (!was_started && httpreq_started(c->parser) && c->timer_kind == TIMER_IDLE)
        conn_timer(c, TIMER_READ, c->srv->opts.read_timeout_ms);
    if (rc < 0) {
        enum httpreq_error err = httpreq_error(c->parser);

        c->pending_len = 0;
        conn_fail(c, httpreq_error_status(err), httpreq_error_code(err), e.msg);
        return;
    }
    if (rc == 1) {
        pending_keep(c, data + used, len - used);
        conn_dispatch(c);
        return;
    }
    c->pending_len = 0; /* all consumed */
    conn_maybe_continue(c);
}

static void on_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    struct conn *c = stream->data;

    if (nread == 0)
        return;
    if (nread < 0) {
        /* EOF or error. While HANDLING this makes the request "gone". */
        conn_close(c);
        return;
    }
    switch (c->state) {
    case CONN_READING:
        conn_feed(c, buf->base, (size_t)nread);
        break;
    case CONN_HANDLING:
    case CONN_WRITING:
        if (c->close_after)
            break; /* the connection ends after this reply: drop */
        pending_keep(c, buf->base, (size_t)nread);
        if (c->pending_len >= PENDING_MAX)
            conn_read_stop(c);
        break;
    case CONN_LINGERING:
        c->discarded += (size_t)nread;
        if (c->discarded > LINGER_MAX_BYTES)
            conn_close(c);
        break;
    case CONN_CLOSING:
        break;
    }
}

static void on_timer(uv_timer_t *t)
{
    struct conn *c = t->data;

    if (c->timer_kind == TIMER_READ && c->state == CONN_READING && httpreq_started(c->parser)) {
        conn_fail(c, 408, "request_timeout", "request not received in time");
        return;
    }
    /* Idle keep-alive, a fresh connection that sent nothing, a client not reading
     * our reply, or the end of a linger: just close. */
    conn_close(c);
}

static void on_connection(uv_stream_t *server, int status)
{
    httpd *s = server->data;
    struct conn *c;
    struct sockaddr_storage ss;
    int sslen = sizeof(ss);

    if (status < 0 || s->stopping)
        return;
    c = xcalloc(1, sizeof(*c));
    c->srv = s;
    if (uv_tcp_init(s->loop, &c->tcp) != 0) {
        free(c);
        return;
    }
    uv_timer_init(s->loop, &c->timer);
    c->tcp.data = c;
    c->timer.data = c;
    c->open_handles = 2;
    c->state = CONN_READING;
    c->rejected = 1; /* not counted in nconns until accepted below */
    c->next = s->conns;
    if (s->conns != NULL)
        s->conns->prev = c;
    s->conns = c;
    if (uv_accept(server, (uv_stream_t *)&c->tcp) != 0) {
        conn_close(c);
        return;
    }
    uv_tcp_nodelay(&c->tcp, 1);
    if (uv_tcp_getpeername(&c->tcp, (struct sockaddr *)&ss, &sslen) == 0) {
        if (ss.ss_family == AF_INET6)
            uv_ip6_name((struct sockaddr_in6 *)&ss, c->peer, sizeof(c->peer));
        else
            uv_ip4_name((struct sockaddr_in *)&ss, c->peer, sizeof(c->peer));
    }
    if (s->nconns >= s->opts.max_conns) {
        char body[256];
        size_t len = error_json(body, sizeof(body), "overloaded", "too many connections");

        conn_write(c, build_reply(503, "application/json", body, len, NULL, 0, 0), 1);
        return;
    }
    c->rejected = 0;
    s->nconns++;
    {
        struct httpreq_limits lim = {.max_body = s->opts.max_body};

        c->parser = httpreq_new(&lim);
    }
    /* A fresh connection gets read_timeout for its first request, bytes or not. */
    conn_timer(c, TIMER_READ, s->opts.read_timeout_ms);
    conn_read_start(c);
}

/* ---- server ---------------------------------------------------------------- */

/* "host:port" or "[v6]:port" into a socket address. */
static int parse_listen(const char *address, struct sockaddr_storage *ss, struct errbuf *e)
{
    char host[128];
    const char *colon, *port_s;
    char *end;
    long port;
    size_t hl;

    if (address == NULL || *address == '\0') {
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: empty listen address");
        return -1;
    }
    if (address[0] == '[') {
        const char *rb = strchr(address, ']');

        if (rb == NULL || rb[1] != ':') {
            errbuf_set(e, ERRBUF_PERMANENT, "httpd: bad listen address \"%s\"", address);
            return -1;
        }
        hl = (size_t)(rb - address - 1);
        if (hl >= sizeof(host))
            goto bad;
        memcpy(host, address + 1, hl);
        port_s = rb + 2;
    } else {
        colon = strrchr(address, ':');
        if (colon == NULL)
            goto bad;
        hl = (size_t)(colon - address);
        if (hl >= sizeof(host))
            goto bad;
        memcpy(host, address, hl);
        port_s = colon + 1;
    }
    host[hl] = '\0';
    if (hl == 0)
        snprintf(host, sizeof(host), "0.0.0.0");
    errno = 0;
    port = strtol(port_s, &end, 10);
    if (*port_s == '\0' || *end != '\0' || errno != 0 || port < 0 || port > 65535)
        goto bad;
    memset(ss, 0, sizeof(*ss));
    if (uv_ip4_addr(host, (int)port, (struct sockaddr_in *)ss) == 0)
        return 0;
    if (uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)ss) == 0)
        return 0;
bad:
    errbuf_set(e, ERRBUF_PERMANENT, "httpd: bad listen address \"%s\" (want host:port)", address);
    return -1;
}

static void on_listener_close(uv_handle_t *h)
{
    httpd *s = h->data;

    s->listener_closed = 1;
    srv_maybe_done(s);
}

httpd *httpd_start(uv_loop_t *loop, const char *address, const struct httpd_opts *o,
                   httpd_handler handler, void *arg, struct errbuf *e)
{
    struct sockaddr_storage ss;
    struct sockaddr_storage bound;
    socklen_t blen = sizeof(bound);
    int fd = -1, one = 1, rc;
    httpd *s = NULL;

    if (parse_listen(address, &ss, e) != 0)
        return NULL;
    /* Bind with plain calls first, so every failure is reported before a libuv
     * handle exists (a handle could only be released asynchronously). */
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: socket: %s", strerror(errno));
        goto out;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss,
             ss.ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in)) !=
        0) {
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: bind %s: %s", address, strerror(errno));
        goto out;
    }
    if (listen(fd, 511) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: listen %s: %s", address, strerror(errno));
        goto out;
    }
    if (getsockname(fd, (struct sockaddr *)&bound, &blen) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: getsockname: %s", strerror(errno));
        goto out;
    }
    s = xcalloc(1, sizeof(*s));
    s->loop = loop;
    s->handler = handler;
    s->arg = arg;
    if (o != NULL)
        s->opts = *o;
    if (s->opts.max_body == 0)
        s->opts.max_body = HTTPD_DEFAULT_MAX_BODY;
    if (s->opts.max_conns <= 0)
        s->opts.max_conns = HTTPD_DEFAULT_MAX_CONNS;
    if (s->opts.read_timeout_ms <= 0)
        s->opts.read_timeout_ms = HTTPD_DEFAULT_READ_TIMEOUT_MS;
    if (s->opts.idle_timeout_ms <= 0)
        s->opts.idle_timeout_ms = HTTPD_DEFAULT_IDLE_TIMEOUT_MS;
    s->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    s->rbuf = xmalloc(READ_CHUNK);
    uv_tcp_init(loop, &s->listener);
    s->listener.data = s;
    rc = uv_tcp_open(&s->listener, fd);
    if (rc != 0)
        close(fd); /* not adopted by the handle */
    else
        rc = uv_listen((uv_stream_t *)&s->listener, 511, on_connection);
    if (rc != 0) {
        /* The handle exists now: release it through the loop. */
        errbuf_set(e, ERRBUF_PERMANENT, "httpd: listen %s: %s", address, uv_strerror(rc));
        s->stopping = 1;
        uv_close((uv_handle_t *)&s->listener, on_listener_close);
        return NULL;
    }
    return s;
out:
    if (fd >= 0)
        close(fd);
    return NULL;
}

int httpd_port(const httpd *s)
{
    return s->port;
}

void httpd_stop(httpd *s, void (*done)(void *arg), void *arg)
{
    struct conn *c, *next;

    s->stopping = 1;
    s->done = done;
    s->done_arg = arg;
    uv_close((uv_handle_t *)&s->listener, on_listener_close);
    /* Connections between requests go now; the others finish their reply first
     * (on_write sees stopping and closes after it). */
    for (c = s->conns; c != NULL; c = next) {
        next = c->next;
        if (c->state == CONN_READING)
            conn_close(c);
    }
}

/* ---- requests -------------------------------------------------------------- */

const char *httpd_req_method(const httpd_req *r)
{
    return httpreq_method(r->parser);
}

const char *httpd_req_path(const httpd_req *r)
{
    return httpreq_path(r->parser);
}

const char *httpd_req_query(const httpd_req *r)
{
    return httpreq_query(r->parser);
}

const char *httpd_req_header(const httpd_req *r, const char *name)
{
    return httpreq_header(r->parser, name);
}

const char *httpd_req_body(const httpd_req *r, size_t *len)
{
    return httpreq_body(r->parser, len);
}

const char *httpd_req_peer(const httpd_req *r)
{
    return r->peer;
}

int httpd_req_is_gone(const httpd_req *r)
{
    return r->conn == NULL;
}

void httpd_reply(httpd_req *r, int status, const char *content_type, const void *body, size_t len,
                 const char *const *extra_headers)
{
    struct conn *c = r->conn;
    struct write_req *w;
    int keep;

    if (c == NULL) {
        /* The client left while we worked: nobody to answer. */
        httpreq_free(r->parser);
        free(r);
        return;
    }
    keep = r->keep_alive && !c->srv->stopping;
    w = build_reply(status, content_type, body, len, extra_headers, keep, r->head);
    /* The connection takes its parser back for the next request. */
    c->parser = r->parser;
    httpreq_reset(c->parser);
    c->req = NULL;
    free(r);
    conn_write(c, w, !keep);
}

void httpd_reply_error(httpd_req *r, int status, const char *code, const char *message)
{
    char body[1024];
    size_t len = error_json(body, sizeof(body), code, message);

    httpd_reply(r, status, "application/json", body, len, NULL);
}
