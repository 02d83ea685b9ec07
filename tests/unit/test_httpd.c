/* tests/unit/test_httpd.c: the HTTP server on a real loop (its own thread) and
 * real client sockets on 127.0.0.1 with a kernel-chosen port: keep-alive,
 * pipelining, deferred replies, limits (413/431/400/503), timeouts (408, idle),
 * clients that vanish, and a graceful stop after which uv_loop_close() is 0. */
#include "common/errbuf.h"
#include "common/httpd.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* ---- server fixture -------------------------------------------------------- */

struct fx {
    uv_loop_t loop;
    uv_async_t wake;
    httpd *srv;
    pthread_t thread;
    int port;
    atomic_int stop_requested;
    atomic_int done_called;
    atomic_int handled;
    atomic_int gone_seen;
    atomic_int replied_late;
};

struct later {
    uv_timer_t timer;
    httpd_req *req;
    struct fx *fx;
};

static void later_free(uv_handle_t *h)
{
    free(h->data);
}

static void on_later(uv_timer_t *t)
{
    struct later *l = t->data;

    if (httpd_req_is_gone(l->req))
        atomic_fetch_add(&l->fx->gone_seen, 1);
    httpd_reply(l->req, 200, "text/plain", "async-ok", 8, NULL);
    atomic_fetch_add(&l->fx->replied_late, 1);
    uv_close((uv_handle_t *)&l->timer, later_free);
}

static void handler(httpd_req *r, void *arg)
{
    struct fx *fx = arg;
    const char *path = httpd_req_path(r);

    atomic_fetch_add(&fx->handled, 1);
    if (strcmp(path, "/echo") == 0) {
        size_t len;
        const char *body = httpd_req_body(r, &len);
        const char *test = httpd_req_header(r, "x-test");
        char h1[64], h2[256], h3[256], h4[96];
        const char *extra[] = {h1, h2, h3, h4, "Bad: injected\r\nX-Evil: 1", NULL};

        snprintf(h1, sizeof(h1), "X-Method: %s", httpd_req_method(r));
        snprintf(h2, sizeof(h2), "X-Query: %s", httpd_req_query(r));
        snprintf(h3, sizeof(h3), "X-Test: %s", test ? test : "-");
        snprintf(h4, sizeof(h4), "X-Peer: %s", httpd_req_peer(r));
        CHECK(httpd_req_is_gone(r) == 0);
        httpd_reply(r, 200, "application/octet-stream", body, len, extra);
    } else if (strcmp(path, "/async") == 0) {
        struct later *l = calloc(1, sizeof(*l));
        int ms = atoi(httpd_req_query(r) + 3); /* "ms=N" */

        CHECK(l != NULL);
        l->req = r;
        l->fx = fx;
        uv_timer_init(&fx->loop, &l->timer);
        l->timer.data = l;
        uv_timer_start(&l->timer, on_later, (uint64_t)ms, 0);
    } else if (strcmp(path, "/nocontent") == 0) {
        httpd_reply(r, 204, NULL, "ignored", 7, NULL);
    } else {
        httpd_reply_error(r, 404, "not_found", "no \"such\" path");
    }
}

static void on_done(void *arg)
{
    struct fx *fx = arg;

    atomic_store(&fx->done_called, 1);
}

static void on_wake(uv_async_t *a)
{
    struct fx *fx = a->data;

    if (atomic_load(&fx->stop_requested)) {
        httpd_stop(fx->srv, on_done, fx);
        uv_close((uv_handle_t *)&fx->wake, NULL);
    }
}

static void *loop_thread(void *arg)
{
    struct fx *fx = arg;

    uv_run(&fx->loop, UV_RUN_DEFAULT);
    return NULL;
}

static struct fx *fx_start(const struct httpd_opts *o)
{
    struct fx *fx = calloc(1, sizeof(*fx));
    struct errbuf e = {0};

    CHECK(fx != NULL);
    CHECK_INT_EQ(uv_loop_init(&fx->loop), 0);
    fx->srv = httpd_start(&fx->loop, "127.0.0.1:0", o, handler, fx, &e);
    if (fx->srv == NULL)
        fprintf(stderr, "httpd_start: %s\n", e.msg);
    CHECK(fx->srv != NULL);
    fx->port = httpd_port(fx->srv);
    CHECK(fx->port > 0);
    CHECK_INT_EQ(uv_async_init(&fx->loop, &fx->wake, on_wake), 0);
    fx->wake.data = fx;
    CHECK_INT_EQ(pthread_create(&fx->thread, NULL, loop_thread, fx), 0);
    return fx;
}

static void fx_request_stop(struct fx *fx)
{
    atomic_store(&fx->stop_requested, 1);
    CHECK_INT_EQ(uv_async_send(&fx->wake), 0);
}

/* Stops the server, waits for the loop to run dry and checks that it closes. */
static void fx_stop(struct fx *fx)
{
    if (!atomic_load(&fx->stop_requested))
        fx_request_stop(fx);
    CHECK_INT_EQ(pthread_join(fx->thread, NULL), 0);
    CHECK_INT_EQ(atomic_load(&fx->done_called), 1);
    CHECK_INT_EQ(uv_loop_close(&fx->loop), 0);
    free(fx);
}

/* ---- client ---------------------------------------------------------------- */

struct client {
    int fd;
    size_t len;
    char buf[256 * 1024];
};

struct resp {
    int status;
    char head[8192]; /* status line and headers, NUL-terminated */
    char body[128 * 1024];
    size_t body_len;
};

static double now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1000.0 + (double)ts.tv_nsec / 1e6;
}

static struct client *client_open(int port)
{
    struct client *c = calloc(1, sizeof(*c));
    struct sockaddr_in sa = {0};
    struct timeval tv = {.tv_sec = 5};
    int one = 1;

    CHECK(c != NULL);
    c->fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(c->fd >= 0);
    setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    sa.sin_family = AF_INET;
    sa.sin_port = htons((uint16_t)port);
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK_INT_EQ(connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return c;
}

static void client_close(struct client *c)
{
    close(c->fd);
    free(c);
}

static void client_send(struct client *c, const void *data, size_t len)
{
    const char *p = data;

    while (len > 0) {
        ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);

        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            fprintf(stderr, "send: %s\n", strerror(errno));
        CHECK(n > 0);
        p += n;
        len -= (size_t)n;
    }
}

static void client_sends(struct client *c, const char *s)
{
    client_send(c, s, strlen(s));
}

/* Reads more bytes; 0 on EOF, -1 on timeout or error. */
static int client_fill(struct client *c)
{
    ssize_t n;

    CHECK(c->len < sizeof(c->buf));
    do {
        n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    c->len += (size_t)n;
    return n > 0 ? 1 : 0;
}

/* Value of header name in r->head (copied into out), or NULL. */
static const char *resp_header(const struct resp *r, const char *name, char *out, size_t cap)
{
    const char *line = strstr(r->head, "\r\n");
    size_t nl = strlen(name);

    while (line != NULL && line[2] != '\0') {
        const char *start = line + 2;
        const char *end = strstr(start, "\r\n");

        if (end == NULL)
            break;
        if ((size_t)(end - start) > nl && strncasecmp(start, name, nl) == 0 && start[nl] == ':') {
            const char *v = start + nl + 1;
            size_t vl;

            while (*v == ' ')
                v++;
            vl = (size_t)(end - v);
            if (vl >= cap)
                vl = cap - 1;
            memcpy(out, v, vl);
            out[vl] = '\0';
            return out;
        }
        line = end;
    }
    return NULL;
}

/* Reads one final response (skipping 100 Continue). 0 or -1 (EOF/timeout first). */
static int client_read(struct client *c, struct resp *r)
{
    for (;;) {
        char *end;
        size_t head_len, need;
        char cl[32];

        while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
            if (client_fill(c) <= 0)
                return -1;
        head_len = (size_t)(end - c->buf) + 4;
        CHECK(head_len < sizeof(r->head));
        memcpy(r->head, c->buf, head_len);
        r->head[head_len] = '\0';
        CHECK(strncmp(r->head, "HTTP/1.1 ", 9) == 0);
        r->status = atoi(r->head + 9);
        r->body_len = 0;
        if (resp_header(r, "content-length", cl, sizeof(cl)) != NULL)
            r->body_len = (size_t)strtoul(cl, NULL, 10);
        CHECK(r->body_len < sizeof(r->body));
        need = head_len + r->body_len;
        while (c->len < need)
            if (client_fill(c) <= 0)
                return -1;
        memcpy(r->body, c->buf + head_len, r->body_len);
        r->body[r->body_len] = '\0';
        memmove(c->buf, c->buf + need, c->len - need);
        c->len -= need;
        if (r->status != 100)
            return 0;
    }
}

/* 1 if the server closes the connection (EOF or reset) with no further bytes. */
static int client_sees_close(struct client *c)
{
    size_t before = c->len;
    int rc = client_fill(c);

    if (rc == 0)
        return c->len == before;
    return rc < 0 && (errno == ECONNRESET) && c->len == before;
}

static void check_header(const struct resp *r, const char *name, const char *want)
{
    char v[512];
    const char *got = resp_header(r, name, v, sizeof(v));

    if (got == NULL || strcmp(got, want) != 0)
        fprintf(stderr, "header %s: got \"%s\" want \"%s\"\nin:\n%s\n", name, got ? got : "(none)",
                want, r->head);
    CHECK_STR_EQ(got, want);
}

static struct resp *resp_new(void)
{
    struct resp *r = calloc(1, sizeof(*r));

    CHECK(r != NULL);
    return r;
}

/* ---- tests ------------------------------------------------------------------ */

static void test_keep_alive_get_post(void)
{
    struct fx *fx = fx_start(NULL);
    struct client *c = client_open(fx->port);
    struct resp *r = resp_new();
    static const char bin[] = "ab\0cd\0\0\xff";
    char req[256];
    char v[64];
    int n;

    client_sends(c, "GET /echo?a=1&b=%20 HTTP/1.1\r\nHost: t\r\nX-Test:  hi there \r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 200);
    CHECK(strncmp(r->head, "HTTP/1.1 200 OK\r\n", 17) == 0);
    check_header(r, "X-Method", "GET");
    check_header(r, "X-Query", "a=1&b=%20");
    check_header(r, "X-Test", "hi there");
    check_header(r, "X-Peer", "127.0.0.1");
    check_header(r, "Content-Length", "0");
    check_header(r, "Content-Type", "application/octet-stream");
    check_header(r, "Connection", "keep-alive");
    CHECK(resp_header(r, "Date", v, sizeof(v)) != NULL);
    /* A header value with CR/LF is not sent at all. */
    CHECK(resp_header(r, "X-Evil", v, sizeof(v)) == NULL);
    CHECK(resp_header(r, "Bad", v, sizeof(v)) == NULL);

    /* Second request on the same connection: binary body comes back intact. */
    n = snprintf(req, sizeof(req), "POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: %zu\r\n\r\n",
                 sizeof(bin) - 1);
    client_send(c, req, (size_t)n);
    client_send(c, bin, sizeof(bin) - 1);
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 200);
    check_header(r, "X-Method", "POST");
    CHECK_INT_EQ(r->body_len, sizeof(bin) - 1);
    CHECK(memcmp(r->body, bin, sizeof(bin) - 1) == 0);
    check_header(r, "Connection", "keep-alive");

    /* 204: no Content-Length and no body, and framing still holds after it. */
    client_sends(c, "GET /nocontent HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 204);
    CHECK(resp_header(r, "Content-Length", v, sizeof(v)) == NULL);
    CHECK(resp_header(r, "Content-Type", v, sizeof(v)) == NULL);

    /* 404 from the handler's JSON error helper, with escaping. */
    client_sends(c, "GET /missing HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 404);
    CHECK_STR_EQ(r->body,
                 "{\"error\":{\"code\":\"not_found\",\"message\":\"no \\\"such\\\" path\"}}");
    check_header(r, "Content-Type", "application/json");

    /* Connection: close is honoured, and the server then hangs up. */
    client_sends(c, "GET /echo HTTP/1.1\r\nConnection: close\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    check_header(r, "Connection", "close");
    CHECK(client_sees_close(c));
    client_close(c);
    CHECK_INT_EQ(atomic_load(&fx->handled), 5);

    /* HTTP/1.0 closes by default; with keep-alive it stays open. */
    c = client_open(fx->port);
    client_sends(c, "GET /echo HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    check_header(r, "Connection", "keep-alive");
    client_sends(c, "GET /echo HTTP/1.0\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    check_header(r, "Connection", "close");
    CHECK(client_sees_close(c));
    client_close(c);

    free(r);
    fx_stop(fx);
}

static void test_head_and_http10(void)
{
    struct fx *fx = fx_start(NULL);
    struct client *c = client_open(fx->port);
    struct resp *r = resp_new();

    /* HEAD: Content-Length of the body that GET would get, but no body bytes. */
    client_sends(c, "HEAD /echo HTTP/1.0\r\nContent-Length: 3\r\n\r\nabc");
    {
        char *end;

        while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
            CHECK(client_fill(c) > 0);
        memcpy(r->head, c->buf, (size_t)(end - c->buf) + 4);
        r->head[(size_t)(end - c->buf) + 4] = '\0';
        check_header(r, "Content-Length", "3");
        check_header(r, "Connection", "close");
        /* Nothing follows the head: the server closes right after it. */
        CHECK_INT_EQ(c->len, (size_t)(end - c->buf) + 4);
    }
    c->len = 0;
    CHECK(client_sees_close(c));
    client_close(c);
    free(r);
    fx_stop(fx);
}

static void test_pipelined_and_async(void)
{
    struct fx *fx = fx_start(NULL);
    struct client *c = client_open(fx->port);
    struct resp *r = resp_new();
    double t0;

    /* A deferred reply (50 ms timer) ... */
    t0 = now_ms();
    client_sends(c, "GET /async?ms=50 HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK(now_ms() - t0 >= 45.0);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "async-ok");
    check_header(r, "Content-Type", "text/plain");
    check_header(r, "Connection", "keep-alive");

    /* ... then three requests in one write: answers come back in order even though
     * the first is answered later than the others could have been. */
    client_sends(c, "GET /async?ms=50 HTTP/1.1\r\n\r\n"
                    "POST /echo?second HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"
                    "GET /echo?third HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_STR_EQ(r->body, "async-ok");
    CHECK_INT_EQ(client_read(c, r), 0);
    check_header(r, "X-Query", "second");
    CHECK_STR_EQ(r->body, "hello");
    CHECK_INT_EQ(client_read(c, r), 0);
    check_header(r, "X-Query", "third");
    CHECK_INT_EQ(atomic_load(&fx->handled), 4);

    /* Request split into tiny writes. */
    {
        static const char req[] = "POST /echo?split HTTP/1.1\r\nContent-Length: 4\r\n\r\nabcd";

        for (size_t i = 0; i < sizeof(req) - 1; i += 7) {
            size_t n = sizeof(req) - 1 - i < 7 ? sizeof(req) - 1 - i : 7;

            client_send(c, req + i, n);
            usleep(1000);
        }
        CHECK_INT_EQ(client_read(c, r), 0);
        check_header(r, "X-Query", "split");
        CHECK_STR_EQ(r->body, "abcd");
    }

    /* Expect: 100-continue gets an interim 100 before we send the body. */
    client_sends(c,
                 "POST /echo?cont HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n");
    {
        char *end;

        while ((end = memmem(c->buf, c->len, "\r\n\r\n", 4)) == NULL)
            CHECK(client_fill(c) > 0);
        CHECK(strncmp(c->buf, "HTTP/1.1 100 Continue\r\n\r\n", 25) == 0);
        memmove(c->buf, c->buf + 25, c->len - 25);
        c->len -= 25;
    }
    client_sends(c, "xyz");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "xyz");

    client_close(c);
    free(r);
    fx_stop(fx);
}

/* Sends req (len bytes) on a fresh connection; expects status, error code in the
 * JSON body, Connection: close, then the server's hang-up. */
static void expect_refusal(int port, const char *req, size_t len, int status, const char *code)
{
    struct client *c = client_open(port);
    struct resp *r = resp_new();
    char want[128];

    client_send(c, req, len);
    CHECK_INT_EQ(client_read(c, r), 0);
    if (r->status != status)
        fprintf(stderr, "%s\n%s\n", r->head, r->body);
    CHECK_INT_EQ(r->status, status);
    check_header(r, "Connection", "close");
    check_header(r, "Content-Type", "application/json");
    snprintf(want, sizeof(want), "{\"error\":{\"code\":\"%s\",\"message\":\"", code);
    CHECK(strncmp(r->body, want, strlen(want)) == 0);
    CHECK(client_sees_close(c));
    client_close(c);
    free(r);
}

static void test_refusals(void)
{
    struct fx *fx = fx_start(NULL);
    size_t big = 70 * 1024;
    char *req = malloc(big + 256);
    int n;

    CHECK(req != NULL);
    /* 413 from the declared length, sent with the whole 70 KiB body: the server
     * answers early, and its lingering close lets the client read the 413. */
    n = snprintf(req, 256, "POST /echo HTTP/1.1\r\nContent-Length: %zu\r\n\r\n", big);
    memset(req + n, 'b', big);
    expect_refusal(fx->port, req, (size_t)n + big, 413, "body_too_large");
    /* The same, but the body only follows once the server has answered (a slow
     * uploader): the server must keep draining instead of resetting the
     * connection, or these sends fail with EPIPE/ECONNRESET. */
    {
        struct client *c = client_open(fx->port);
        struct resp *r = resp_new();

        client_send(c, req, (size_t)n);
        usleep(100000);
        for (size_t off = 0; off < big; off += 8192) {
            client_send(c, req + n + off, big - off < 8192 ? big - off : 8192);
            usleep(5000);
        }
        CHECK_INT_EQ(client_read(c, r), 0);
        CHECK_INT_EQ(r->status, 413);
        CHECK(client_sees_close(c));
        client_close(c);
        free(r);
    }

    /* 413 from chunks adding up past 64 KiB. */
    {
        size_t off = (size_t)snprintf(req, 256,
                                      "POST /echo HTTP/1.1\r\n"
                                      "Transfer-Encoding: chunked\r\n\r\n");

        for (int i = 0; i < 7; i++) {
            off += (size_t)sprintf(req + off, "2800\r\n"); /* 10 KiB */
            memset(req + off, 'c', 10240);
            off += 10240;
            off += (size_t)sprintf(req + off, "\r\n");
        }
        off += (size_t)sprintf(req + off, "0\r\n\r\n");
        expect_refusal(fx->port, req, off, 413, "body_too_large");
    }

    /* 431: a 17 KiB header. */
    n = snprintf(req, 256, "GET /echo HTTP/1.1\r\nX-Big: ");
    memset(req + n, 'h', 17 * 1024);
    memcpy(req + n + 17 * 1024, "\r\n\r\n", 4);
    expect_refusal(fx->port, req, (size_t)n + 17 * 1024 + 4, 431, "headers_too_large");

    /* 400s. */
    expect_refusal(fx->port, "GARBAGE\r\n\r\n", 11, 400, "bad_request");
    {
        static const char nul[] = "GET /echo HTTP/1.1\r\nX-A: a\0b\r\n\r\n";

        expect_refusal(fx->port, nul, sizeof(nul) - 1, 400, "bad_request");
    }
    expect_refusal(fx->port,
                   "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\na", 60,
                   400, "bad_request");
    expect_refusal(fx->port,
                   "POST /echo HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n"
                   "1\r\na\r\n0\r\n\r\n",
                   82, 400, "bad_request");
    /* A good request followed by garbage on the same connection: answer, then 400. */
    {
        struct client *c = client_open(fx->port);
        struct resp *r = resp_new();

        client_sends(c, "GET /echo HTTP/1.1\r\n\r\nBAD REQUEST LINE\r\n\r\n");
        CHECK_INT_EQ(client_read(c, r), 0);
        CHECK_INT_EQ(r->status, 200);
        CHECK_INT_EQ(client_read(c, r), 0);
        CHECK_INT_EQ(r->status, 400);
        CHECK(client_sees_close(c));
        client_close(c);
        free(r);
    }
    /* Handler never saw any of the refused requests. */
    CHECK_INT_EQ(atomic_load(&fx->handled), 1);
    free(req);
    fx_stop(fx);
}

static void test_max_conns(void)
{
    struct httpd_opts o = {.max_conns = 2};
    struct fx *fx = fx_start(&o);
    struct client *a = client_open(fx->port);
    struct client *b = client_open(fx->port);
    struct client *c;
    struct resp *r = resp_new();
    int ok = 0;

    client_sends(a, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(a, r), 0);
    client_sends(b, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(b, r), 0);

    c = client_open(fx->port);
    client_sends(c, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 503);
    check_header(r, "Connection", "close");
    CHECK(strstr(r->body, "\"overloaded\"") != NULL);
    CHECK(client_sees_close(c));
    client_close(c);

    /* The kept-alive ones still work. */
    client_sends(a, "GET /echo?again HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(a, r), 0);
    CHECK_INT_EQ(r->status, 200);

    /* A slot frees once a client leaves (the server learns it asynchronously). */
    client_close(b);
    for (int i = 0; i < 50 && !ok; i++) {
        usleep(20000);
        c = client_open(fx->port);
        client_sends(c, "GET /echo HTTP/1.1\r\n\r\n");
        CHECK_INT_EQ(client_read(c, r), 0);
        ok = r->status == 200;
        client_close(c);
    }
    CHECK(ok);
    client_close(a);
    free(r);
    fx_stop(fx);
}

static void test_timeouts(void)
{
    struct httpd_opts o = {.read_timeout_ms = 300, .idle_timeout_ms = 400};
    struct fx *fx = fx_start(&o);
    struct client *c;
    struct resp *r = resp_new();
    double t0, dt;

    /* Slow client: half a request, then nothing. */
    c = client_open(fx->port);
    t0 = now_ms();
    client_sends(c, "GET /echo HTTP/1.1\r\nHost: slow\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    dt = now_ms() - t0;
    CHECK(dt >= 250.0 && dt < 3000.0);
    CHECK_INT_EQ(r->status, 408);
    check_header(r, "Connection", "close");
    CHECK(strstr(r->body, "\"request_timeout\"") != NULL);
    CHECK(client_sees_close(c));
    client_close(c);

    /* Slow body. */
    c = client_open(fx->port);
    client_sends(c, "POST /echo HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 408);
    client_close(c);

    /* A connection that never sends anything is closed without a reply. */
    c = client_open(fx->port);
    t0 = now_ms();
    CHECK(client_sees_close(c));
    CHECK(now_ms() - t0 >= 250.0);
    client_close(c);

    /* Idle keep-alive: closed after idle_timeout without a reply. */
    c = client_open(fx->port);
    client_sends(c, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 200);
    t0 = now_ms();
    CHECK(client_sees_close(c));
    dt = now_ms() - t0;
    CHECK(dt >= 350.0 && dt < 3000.0);
    client_close(c);

    /* A request that starts after an idle spell gets the full read timeout, and a
     * handler taking longer than read_timeout is not cut off (no 408 then). */
    c = client_open(fx->port);
    client_sends(c, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    usleep(200000);
    client_sends(c, "GET /async?ms=500 HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(c, r), 0);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "async-ok");
    client_close(c);

    free(r);
    fx_stop(fx);
}

static void test_client_gone(void)
{
    struct fx *fx = fx_start(NULL);
    struct client *c;

    /* The client hangs up while its request is handled: the late reply is
     * dropped, the request is freed by httpd_reply (ASan checks the rest). */
    c = client_open(fx->port);
    client_sends(c, "GET /async?ms=200 HTTP/1.1\r\n\r\n");
    usleep(50000);
    client_close(c);
    for (int i = 0; i < 300 && atomic_load(&fx->replied_late) < 1; i++)
        usleep(10000);
    CHECK_INT_EQ(atomic_load(&fx->replied_late), 1);
    CHECK_INT_EQ(atomic_load(&fx->gone_seen), 1);

    /* Half a request, then gone. */
    c = client_open(fx->port);
    client_sends(c, "POST /echo HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
    client_close(c);

    /* Gone while the reply is still pending, with pipelined requests queued. */
    c = client_open(fx->port);
    client_sends(c, "GET /async?ms=100 HTTP/1.1\r\n\r\nGET /echo HTTP/1.1\r\n\r\n");
    usleep(20000);
    client_close(c);
    for (int i = 0; i < 300 && atomic_load(&fx->replied_late) < 2; i++)
        usleep(10000);
    CHECK_INT_EQ(atomic_load(&fx->gone_seen), 2);

    /* The server is still fine. */
    {
        struct resp *r = resp_new();

        c = client_open(fx->port);
        client_sends(c, "GET /echo HTTP/1.1\r\n\r\n");
        CHECK_INT_EQ(client_read(c, r), 0);
        CHECK_INT_EQ(r->status, 200);
        client_close(c);
        free(r);
    }
    fx_stop(fx);
}

static void test_stop_with_inflight(void)
{
    struct fx *fx = fx_start(NULL);
    struct client *busy = client_open(fx->port);
    struct client *idle = client_open(fx->port);
    struct resp *r = resp_new();

    client_sends(idle, "GET /echo HTTP/1.1\r\n\r\n");
    CHECK_INT_EQ(client_read(idle, r), 0);
    client_sends(busy, "GET /async?ms=300 HTTP/1.1\r\n\r\n");
    usleep(50000);
    fx_request_stop(fx);
    /* The idle keep-alive connection is closed at once... */
    CHECK(client_sees_close(idle));
    /* ...the in-flight request still gets its answer, with Connection: close. */
    CHECK_INT_EQ(client_read(busy, r), 0);
    CHECK_INT_EQ(r->status, 200);
    CHECK_STR_EQ(r->body, "async-ok");
    check_header(r, "Connection", "close");
    CHECK(client_sees_close(busy));
    client_close(busy);
    client_close(idle);
    free(r);
    fx_stop(fx); /* joins, checks done() ran and uv_loop_close() == 0 */
}

static void test_start_errors(void)
{
    uv_loop_t loop;
    struct errbuf e = {0};
    httpd *s, *dup;
    char addr[64];

    CHECK_INT_EQ(uv_loop_init(&loop), 0);
    CHECK(httpd_start(&loop, "nonsense", NULL, handler, NULL, &e) == NULL);
    CHECK(strstr(e.msg, "nonsense") != NULL);
    CHECK(httpd_start(&loop, "127.0.0.1:99999", NULL, handler, NULL, &e) == NULL);
    CHECK(httpd_start(&loop, "127.0.0.1:", NULL, handler, NULL, &e) == NULL);
    CHECK(httpd_start(&loop, "no.such.host:80", NULL, handler, NULL, &e) == NULL);
    CHECK(httpd_start(&loop, NULL, NULL, handler, NULL, &e) == NULL);

    s = httpd_start(&loop, "127.0.0.1:0", NULL, handler, NULL, &e);
    CHECK(s != NULL);
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", httpd_port(s));
    errbuf_clear(&e);
    dup = httpd_start(&loop, addr, NULL, handler, NULL, &e);
    CHECK(dup == NULL);
    CHECK(strstr(e.msg, "bind") != NULL);
    /* IPv6 literal form parses (bind may fail if the host has no ::1). */
    dup = httpd_start(&loop, "[::1]:0", NULL, handler, NULL, &e);
    if (dup != NULL) {
        CHECK(httpd_port(dup) > 0);
        httpd_stop(dup, NULL, NULL);
    }
    /* Stop before the loop ever ran: done still comes, nothing leaks. */
    httpd_stop(s, NULL, NULL);
    CHECK_INT_EQ(uv_run(&loop, UV_RUN_DEFAULT), 0);
    CHECK_INT_EQ(uv_loop_close(&loop), 0);
}

int main(void)
{
    test_start_errors();
    test_keep_alive_get_post();
    test_head_and_http10();
    test_pipelined_and_async();
    test_refusals();
    test_max_conns();
    test_timeouts();
    test_client_gone();
    test_stop_with_inflight();
    TEST_PASS();
    return 0;
}
