/* tests/unit/test_webhook.c: the webhook engine against a real HTTP server on loopback.
 * The server lives in this file (a thread per connection), records the exact bytes of
 * every request and answers by path:
 *   /ok 200, /fail 500 + body, /slow never answers, /redirect 302, /ratelimit 429 +
 *   Retry-After, /late 200 after 200 ms, /big 200 + 1 MiB body.
 * It also counts the connections open at once (max_open), judged at each accept. */
#include "worker/webhook.h"

#include "common/errbuf.h"
#include "tests/unit/check.h"

#include <curl/curl.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- the test server ----------------------------------------------------------------- */

#define SRV_MAX_CONNS 1024
#define SRV_MAX_RECS 1024

struct rec {
    char path[64];
    char *raw; /* request line + headers + body, exactly as received */
    size_t len;
    size_t head_len; /* bytes up to and including the blank line */
};

struct srv {
    int lfd;
    int port;
    int stop_pipe[2];
    pthread_t accept_thr;
    pthread_mutex_t mu;
    pthread_cond_t cond;
    pthread_t conns[SRV_MAX_CONNS];
    int conn_fd[SRV_MAX_CONNS]; /* -1 once that connection's thread closed it */
    int nconns;                 /* connections ever accepted */
    int max_open;               /* most connections open at once */
    struct rec recs[SRV_MAX_RECS];
    int nrecs;
    int busy, max_busy; /* /late requests being answered at once */
};

struct conn_arg {
    struct srv *s;
    int fd;
    int idx;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Waits for fd to be readable or the server to stop: 1 readable, 0 stop/timeout. */
static int srv_wait_readable(struct srv *s, int fd, int timeout_ms)
{
    struct pollfd p[2] = {{.fd = fd, .events = POLLIN}, {.fd = s->stop_pipe[0], .events = POLLIN}};
    int n = poll(p, 2, timeout_ms);
    if (n <= 0 || (p[1].revents & POLLIN))
        return 0;
    return 1;
}

static int send_all(int fd, const char *b, size_t n)
{
    while (n > 0) {
        ssize_t w = send(fd, b, n, MSG_NOSIGNAL);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return -1;
        b += w;
        n -= (size_t)w;
    }
    return 0;
}

static size_t content_length(const char *head, size_t head_len)
{
    const char *p = head;
    const char *end = head + head_len;
    while (p < end) {
        const char *eol = memchr(p, '\n', (size_t)(end - p));
        if (eol == NULL)
            break;
        if ((size_t)(eol - p) > 15 && strncasecmp(p, "Content-Length:", 15) == 0)
            return (size_t)strtoul(p + 15, NULL, 10);
        p = eol + 1;
    }
    return 0;
}

static void record(struct srv *s, const char *path, const char *raw, size_t len, size_t head_len)
{
    pthread_mutex_lock(&s->mu);
    CHECK(s->nrecs < SRV_MAX_RECS);
    struct rec *r = &s->recs[s->nrecs++];
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->raw = malloc(len + 1);
    CHECK(r->raw != NULL);
    memcpy(r->raw, raw, len);
    r->raw[len] = '\0';
    r->len = len;
    r->head_len = head_len;
    pthread_cond_broadcast(&s->cond);
    pthread_mutex_unlock(&s->mu);
}

static int answer(struct srv *s, int fd, const char *path)
{
    char hdr[256];

    if (strcmp(path, "/ok") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        return send_all(fd, r, sizeof(r) - 1);
    }
    if (strcmp(path, "/fail") == 0) {
        char body[2048];
        memcpy(body,
               "internal\x01"
               "error\n",
               15);
        memset(body + 15, 'x', sizeof(body) - 15);
        int n = snprintf(hdr, sizeof(hdr),
                         "HTTP/1.1 500 Internal Server Error\r\nContent-Type: text/plain\r\n"
                         "Content-Length: %zu\r\n\r\n",
                         sizeof(body));
        return send_all(fd, hdr, (size_t)n) || send_all(fd, body, sizeof(body));
    }
    if (strcmp(path, "/redirect") == 0) {
        static const char r[] = "HTTP/1.1 302 Found\r\nLocation: /ok\r\nContent-Length: 0\r\n\r\n";
        return send_all(fd, r, sizeof(r) - 1);
    }
    if (strcmp(path, "/ratelimit") == 0) {
        static const char r[] = "HTTP/1.1 429 Too Many Requests\r\nretry-after:  120 \r\n"
                                "Content-Length: 4\r\n\r\nslow";
        return send_all(fd, r, sizeof(r) - 1);
    }
    if (strcmp(path, "/late") == 0) {
        static const char r[] = "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlate";
        struct pollfd p = {.fd = s->stop_pipe[0], .events = POLLIN};
        pthread_mutex_lock(&s->mu);
        if (++s->busy > s->max_busy)
            s->max_busy = s->busy;
        pthread_mutex_unlock(&s->mu);
        poll(&p, 1, 200);
        pthread_mutex_lock(&s->mu);
        s->busy--;
        pthread_mutex_unlock(&s->mu);
        return send_all(fd, r, sizeof(r) - 1);
    }
    if (strcmp(path, "/big") == 0) {
        size_t total = 1u << 20;
        char chunk[8192];
        int n = snprintf(hdr, sizeof(hdr), "HTTP/1.1 200 OK\r\nContent-Length: %zu\r\n\r\n", total);
        memset(chunk, 'b', sizeof(chunk));
        if (send_all(fd, hdr, (size_t)n))
            return -1;
        for (size_t sent = 0; sent < total; sent += sizeof(chunk))
            if (send_all(fd, chunk, sizeof(chunk)))
                return -1;
        return 0;
    }
    if (strcmp(path, "/slow") == 0) {
        /* Hold the socket without answering until the client gives up or we stop. */
        char b[64];
        while (srv_wait_readable(s, fd, -1))
            if (recv(fd, b, sizeof(b), 0) <= 0)
                break;
        return -1;
    }
    static const char r[] = "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
    return send_all(fd, r, sizeof(r) - 1);
}

/* Serves requests on one keep-alive connection until the peer closes or we stop. */
static void *conn_main(void *arg)
{
    struct conn_arg *ca = arg;
    struct srv *s = ca->s;
    int fd = ca->fd;
    int ca_idx = ca->idx;
    size_t cap = 1u << 21, len = 0;
    char *buf = malloc(cap);

    free(ca);
    CHECK(buf != NULL);
    for (;;) {
        char *eoh;
        size_t head_len, total;
        char path[64] = "";

        /* Read until a whole request (headers + Content-Length body) is buffered. */
        for (;;) {
            eoh = len >= 4 ? memmem(buf, len, "\r\n\r\n", 4) : NULL;
            if (eoh) {
                head_len = (size_t)(eoh - buf) + 4;
                total = head_len + content_length(buf, head_len);
                CHECK(total <= cap);
                if (len >= total)
                    break;
            }
            if (!srv_wait_readable(s, fd, -1))
                goto out;
            ssize_t n = recv(fd, buf + len, cap - len, 0);
            if (n <= 0)
                goto out;
            len += (size_t)n;
        }
        sscanf(buf, "POST %63s ", path);
        record(s, path, buf, total, head_len);
        if (answer(s, fd, path) != 0)
            goto out;
        memmove(buf, buf + total, len - total);
        len -= total;
    }
out:
    free(buf);
    /* Under the lock: accept_main() polls the fds it believes open. */
    pthread_mutex_lock(&s->mu);
    s->conn_fd[ca_idx] = -1;
    close(fd);
    pthread_mutex_unlock(&s->mu);
    return NULL;
}

static void *accept_main(void *arg)
{
    struct srv *s = arg;

    while (srv_wait_readable(s, s->lfd, -1)) {
        int fd = accept(s->lfd, NULL, NULL);
        if (fd < 0)
            continue;
        struct conn_arg *ca = malloc(sizeof(*ca));
        CHECK(ca != NULL);
        ca->s = s;
        ca->fd = fd;
        pthread_mutex_lock(&s->mu);
        CHECK(s->nconns < SRV_MAX_CONNS);
        /* Open = not yet closed by its thread and no FIN from the client. The client
         * closed an old connection before connecting this one, and the handshake has
         * completed since, so a connection the client is done with shows RDHUP here. */
        int open = 1;
        for (int i = 0; i < s->nconns; i++) {
            struct pollfd p = {.fd = s->conn_fd[i], .events = POLLRDHUP};
            if (s->conn_fd[i] >= 0 && poll(&p, 1, 0) == 0)
                open++;
        }
        if (open > s->max_open)
            s->max_open = open;
        ca->idx = s->nconns;
        s->conn_fd[s->nconns] = fd;
        CHECK(pthread_create(&s->conns[s->nconns++], NULL, conn_main, ca) == 0);
        pthread_mutex_unlock(&s->mu);
    }
    return NULL;
}

static int listen_any(int *port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    socklen_t alen = sizeof(a);
    int one = 1;
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

    CHECK(fd >= 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    CHECK(bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
    CHECK(getsockname(fd, (struct sockaddr *)&a, &alen) == 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static struct srv *srv_start(void)
{
    struct srv *s = calloc(1, sizeof(*s));

    CHECK(s != NULL);
    pthread_mutex_init(&s->mu, NULL);
    pthread_cond_init(&s->cond, NULL);
    CHECK(pipe(s->stop_pipe) == 0);
    s->lfd = listen_any(&s->port);
    CHECK(listen(s->lfd, 256) == 0);
    CHECK(pthread_create(&s->accept_thr, NULL, accept_main, s) == 0);
    return s;
}

static void srv_stop(struct srv *s)
{
    CHECK(write(s->stop_pipe[1], "x", 1) == 1);
    pthread_join(s->accept_thr, NULL);
    /* accept_main has returned, so conns[] no longer grows. */
    for (int i = 0; i < s->nconns; i++)
        pthread_join(s->conns[i], NULL);
    for (int i = 0; i < s->nrecs; i++)
        free(s->recs[i].raw);
    close(s->lfd);
    close(s->stop_pipe[0]);
    close(s->stop_pipe[1]);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
    free(s);
}

static int srv_count(struct srv *s, const char *path)
{
    int n = 0;
    pthread_mutex_lock(&s->mu);
    for (int i = 0; i < s->nrecs; i++)
        n += strcmp(s->recs[i].path, path) == 0;
    pthread_mutex_unlock(&s->mu);
    return n;
}

/* Blocks until the server has recorded `want` requests to path. */
static void srv_wait_count(struct srv *s, const char *path, int want)
{
    uint64_t deadline = now_ms() + 10000;
    while (srv_count(s, path) < want) {
        CHECK(now_ms() < deadline);
        usleep(2000);
    }
}

/* ---- helpers ---------------------------------------------------------------------------- */

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    CHECK(d != NULL);
    return d;
}

static char *fmt(const char *f, ...) __attribute__((format(printf, 1, 2)));
static char *fmt(const char *f, ...)
{
    char tmp[512];
    va_list ap;
    va_start(ap, f);
    vsnprintf(tmp, sizeof(tmp), f, ap);
    va_end(ap);
    return xstrdup(tmp);
}

/* Submits a JSON POST to url (taken); every string is heap-owned as the engine
 * requires. */
static int submit_url(webhook_engine *w, char *url, long timeout_ms, intptr_t id, int allow_private)
{
    struct webhook_request r = {0};
    r.url = url;
    r.allow_private = allow_private;
    r.body = xstrdup("{\"id\":1}");
    r.body_len = 8;
    r.headers = calloc(2, sizeof(char *));
    CHECK(r.headers != NULL);
    r.headers[0] = xstrdup("Content-Type: application/json");
    r.timeout_ms = timeout_ms;
    r.user = (void *)id;
    return webhook_engine_submit(w, &r);
}

/* A POST to the test server on 127.0.0.1, which the business allows. */
static int submit(webhook_engine *w, int port, const char *path, long timeout_ms, intptr_t id)
{
    return submit_url(w, fmt("http://127.0.0.1:%d%s", port, path), timeout_ms, id, 1);
}

static void next_result(webhook_engine *w, struct webhook_result *out)
{
    uint64_t deadline = now_ms() + 15000;
    while (!webhook_engine_poll(w, out)) {
        CHECK(now_ms() < deadline);
        webhook_engine_wait(w, 1000);
    }
}

static webhook_engine *start_engine_opts(int max_in_flight, int max_per_host)
{
    struct webhook_opts o = {.max_in_flight = max_in_flight,
                             .max_per_host = max_per_host,
                             .user_agent = "paynotify-test/1"};
    struct errbuf e = {0};
    webhook_engine *w = webhook_engine_start(&o, &e);
    if (w == NULL)
        fprintf(stderr, "webhook_engine_start: %s\n", e.msg);
    CHECK(w != NULL);
    return w;
}

static webhook_engine *start_engine(int max_in_flight)
{
    return start_engine_opts(max_in_flight, 0);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* ---- tests ------------------------------------------------------------------------------- */

static void test_status_is_success(void)
{
    CHECK_INT_EQ(webhook_status_is_success(0), 0);
    CHECK_INT_EQ(webhook_status_is_success(199), 0);
    CHECK_INT_EQ(webhook_status_is_success(200), 1);
    CHECK_INT_EQ(webhook_status_is_success(204), 1);
    CHECK_INT_EQ(webhook_status_is_success(299), 1);
    CHECK_INT_EQ(webhook_status_is_success(300), 0);
    CHECK_INT_EQ(webhook_status_is_success(302), 0);
    CHECK_INT_EQ(webhook_status_is_success(500), 0);
}

/* Headers and a binary body (NULs, high bytes, > 64 KiB) arrive byte for byte. */
static void test_exact_bytes(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    const size_t body_len = 70000;
    struct webhook_request r = {0};
    struct webhook_result res, extra;
    char *body = malloc(body_len);
    char *copy = malloc(body_len);
    struct pollfd p = {.fd = webhook_engine_fd(w), .events = POLLIN};

    CHECK(body != NULL && copy != NULL);
    for (size_t i = 0; i < body_len; i++)
        body[i] = (char)(i * 7 + 3);
    body[10] = '\0';
    memcpy(copy, body, body_len);
    r.url = fmt("http://127.0.0.1:%d/ok", s->port);
    r.body = body;
    r.body_len = body_len;
    r.headers = calloc(4, sizeof(char *));
    CHECK(r.headers != NULL);
    r.headers[0] = xstrdup("Content-Type: application/json");
    r.headers[1] = xstrdup("X-Paynotify-Event: evt_123");
    r.headers[2] = xstrdup("webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=");
    r.timeout_ms = 5000;
    r.user = (void *)(intptr_t)42;
    r.allow_private = 1;
    CHECK_INT_EQ(poll(&p, 1, 0), 0);
    CHECK_INT_EQ(webhook_engine_submit(w, &r), 0);
    CHECK(r.url == NULL && r.body == NULL && r.headers == NULL);

    /* The fd turns readable once the result is waiting, and not before popping it. */
    CHECK_INT_EQ(poll(&p, 1, 10000), 1);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 1);
    CHECK_INT_EQ(poll(&p, 1, 0), 0);
    CHECK_INT_EQ(webhook_engine_poll(w, &extra), 0);
    CHECK_INT_EQ((intptr_t)res.user, 42);
    CHECK_INT_EQ(res.http_status, 200);
    CHECK_INT_EQ(res.ok, 1);
    CHECK_STR_EQ(res.error, "");
    CHECK_STR_EQ(res.body_head, "ok");
    CHECK_STR_EQ(res.retry_after, "");
    CHECK(res.latency_us > 0);

    pthread_mutex_lock(&s->mu);
    struct rec *rec = &s->recs[s->nrecs - 1];
    CHECK_STR_EQ(rec->path, "/ok");
    CHECK_INT_EQ(rec->len - rec->head_len, body_len);
    CHECK(memcmp(rec->raw + rec->head_len, copy, body_len) == 0);

    /* Request line, then exactly this set of header lines (order is curl's business). */
    char *head = strndup(rec->raw, rec->head_len - 4);
    pthread_mutex_unlock(&s->mu);
    CHECK(head != NULL);
    char *lines[32];
    int n = 0;
    for (char *save = NULL, *t = strtok_r(head, "\r\n", &save); t;
         t = strtok_r(NULL, "\r\n", &save)) {
        CHECK(n < 32);
        lines[n++] = t;
    }
    CHECK_STR_EQ(lines[0], "POST /ok HTTP/1.1");
    char host[64];
    snprintf(host, sizeof(host), "Host: 127.0.0.1:%d", s->port);
    const char *want[] = {
        host,
        "User-Agent: paynotify-test/1",
        "Accept: */*",
        "Content-Type: application/json",
        "X-Paynotify-Event: evt_123",
        "webhook-signature: v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4=",
        "Content-Length: 70000",
    };
    const int nwant = (int)(sizeof(want) / sizeof(want[0]));
    CHECK_INT_EQ(n - 1, nwant);
    qsort(lines + 1, (size_t)(n - 1), sizeof(char *), cmp_str);
    const char *sorted[16];
    memcpy(sorted, want, sizeof(want));
    qsort(sorted, (size_t)nwant, sizeof(char *), cmp_str);
    for (int i = 0; i < nwant; i++)
        CHECK_STR_EQ(lines[i + 1], sorted[i]);
    free(head);
    free(copy);

    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

static void test_fail_500(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    char want[256];

    CHECK_INT_EQ(submit(w, s->port, "/fail", 5000, 7), 0);
    next_result(w, &res);
    CHECK_INT_EQ((intptr_t)res.user, 7);
    CHECK_INT_EQ(res.http_status, 500);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_STR_EQ(res.error, "HTTP 500");
    /* 255 bytes of the 2048-byte body, control bytes replaced. */
    memcpy(want, "internal.error.", 15);
    memset(want + 15, 'x', 255 - 15);
    want[255] = '\0';
    CHECK_STR_EQ(res.body_head, want);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

static void test_big_response(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    char want[256];

    CHECK_INT_EQ(submit(w, s->port, "/big", 10000, 8), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.http_status, 200);
    CHECK_INT_EQ(res.ok, 1);
    memset(want, 'b', 255);
    want[255] = '\0';
    CHECK_STR_EQ(res.body_head, want);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

/* One endpoint that never answers must not hold back 50 submitted after it. */
static void test_isolation(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    int ok_seen = 0;

    int slow_before = srv_count(s, "/slow");

    CHECK_INT_EQ(submit(w, s->port, "/slow", 300, 1000), 0);
    srv_wait_count(s, "/slow", slow_before + 1);
    for (int i = 0; i < 50; i++)
        CHECK_INT_EQ(submit(w, s->port, "/ok", 5000, i), 0);
    for (int i = 0; i < 51; i++) {
        next_result(w, &res);
        if ((intptr_t)res.user == 1000) {
            CHECK_INT_EQ(ok_seen, 50); /* every /ok finished first */
            CHECK_STR_EQ(res.error, "timeout after 300 ms");
            CHECK_INT_EQ(res.ok, 0);
            CHECK_INT_EQ(res.http_status, 0);
            CHECK(res.latency_us >= 250000);
        } else {
            CHECK_INT_EQ(res.ok, 1);
            CHECK_INT_EQ(res.http_status, 200);
            ok_seen++;
        }
    }
    CHECK_INT_EQ(ok_seen, 50);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

static void test_redirect_not_followed(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    int ok_before = srv_count(s, "/ok");

    CHECK_INT_EQ(submit(w, s->port, "/redirect", 5000, 3), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.http_status, 302);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_STR_EQ(res.error, "HTTP 302");
    CHECK_INT_EQ(srv_count(s, "/ok"), ok_before);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

static void test_connection_refused(void)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    int port;
    int fd = listen_any(&port);

    close(fd); /* bound, never listening, now closed: nothing accepts on port */
    CHECK_INT_EQ(submit(w, port, "/ok", 5000, 4), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.http_status, 0);
    CHECK_INT_EQ(res.ok, 0);
    CHECK(res.error[0] != '\0');
    CHECK(strstr(res.error, "onnect") != NULL);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

/* A peer that never completes the TCP handshake (its accept queue is full, so the
 * kernel drops our SYNs) hits the 5 s connect limit before the 8 s total limit. */
static void test_connect_timeout(void)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    int port, fillers[4];
    int lfd = listen_any(&port);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};

    CHECK(listen(lfd, 0) == 0);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    for (int i = 0; i < 4; i++) {
        fillers[i] = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        CHECK(fillers[i] >= 0);
        connect(fillers[i], (struct sockaddr *)&a, sizeof(a)); /* EINPROGRESS is fine */
    }
    usleep(100000);
    CHECK_INT_EQ(submit(w, port, "/ok", 8000, 6), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.http_status, 0);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_STR_EQ(res.error, "timeout after 5000 ms connecting");
    CHECK(res.latency_us >= 4900000 && res.latency_us < 7900000);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
    for (int i = 0; i < 4; i++)
        close(fillers[i]);
    close(lfd);
}

static void test_retry_after(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;

    CHECK_INT_EQ(submit(w, s->port, "/ratelimit", 5000, 5), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.http_status, 429);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_STR_EQ(res.error, "HTTP 429");
    CHECK_STR_EQ(res.retry_after, "120");
    CHECK_STR_EQ(res.body_head, "slow");
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

static void test_rejects_bad_requests(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    struct webhook_request r = {0};

    /* Only http and https: curl must not even try another scheme. */
    r.url = xstrdup("ftp://127.0.0.1:1/x");
    r.user = (void *)(intptr_t)1;
    CHECK_INT_EQ(webhook_engine_submit(w, &r), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_INT_EQ(res.http_status, 0);
    CHECK(strstr(res.error, "ftp") != NULL);

    /* A header with CR LF could smuggle a second request: never sent. */
    pthread_mutex_lock(&s->mu);
    int before = s->nrecs;
    pthread_mutex_unlock(&s->mu);
    r.url = fmt("http://127.0.0.1:%d/ok", s->port);
    r.headers = calloc(2, sizeof(char *));
    CHECK(r.headers != NULL);
    r.headers[0] = xstrdup("X-A: 1\r\n\r\nPOST /ok HTTP/1.1");
    CHECK_INT_EQ(webhook_engine_submit(w, &r), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_STR_EQ(res.error, "header contains CR or LF");
    pthread_mutex_lock(&s->mu);
    CHECK_INT_EQ(s->nrecs, before);
    pthread_mutex_unlock(&s->mu);

    r.url = NULL;
    CHECK_INT_EQ(webhook_engine_submit(w, &r), 0);
    next_result(w, &res);
    CHECK_STR_EQ(res.error, "no url");
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

/* With max_in_flight 2, six 200 ms requests never run more than two at a time. */
static void test_max_in_flight(struct srv *s)
{
    webhook_engine *w = start_engine(2);
    struct webhook_result res;

    pthread_mutex_lock(&s->mu);
    s->max_busy = 0;
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < 6; i++)
        CHECK_INT_EQ(submit(w, s->port, "/late", 5000, i), 0);
    CHECK(webhook_engine_in_flight(w) > 0);
    for (int i = 0; i < 6; i++) {
        next_result(w, &res);
        CHECK_INT_EQ(res.ok, 1);
        CHECK_STR_EQ(res.body_head, "late");
    }
    pthread_mutex_lock(&s->mu);
    CHECK_INT_EQ(s->max_busy, 2);
    pthread_mutex_unlock(&s->mu);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

/* Stop with a transfer stuck in flight: it is aborted at the deadline, not waited for. */
static void test_stop_aborts(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    uint64_t t0;

    int slow_before = srv_count(s, "/slow");

    CHECK_INT_EQ(submit(w, s->port, "/slow", 30000, 9), 0);
    srv_wait_count(s, "/slow", slow_before + 1);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 1);
    t0 = now_ms();
    webhook_engine_stop(w, 200);
    CHECK(now_ms() - t0 >= 150);
    CHECK(now_ms() - t0 < 5000);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 1);
    CHECK_INT_EQ((intptr_t)res.user, 9);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_INT_EQ(res.http_status, 0);
    CHECK_STR_EQ(res.error, "aborted: shutting down");
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 0);

    /* After stop nothing is accepted and the request is still freed (LSan checks). */
    CHECK_INT_EQ(submit(w, s->port, "/ok", 5000, 10), -1);
    webhook_engine_stop(w, 0); /* second call is a no-op */
    webhook_engine_free(w);
}

/* Stop while a transfer is running that finishes within the deadline: it completes. */
static void test_stop_drains(struct srv *s)
{
    webhook_engine *w = start_engine(1);
    struct webhook_result res;
    uint64_t t0;

    int late_before = srv_count(s, "/late");

    CHECK_INT_EQ(submit(w, s->port, "/late", 5000, 11), 0);
    CHECK_INT_EQ(submit(w, s->port, "/late", 5000, 12), 0); /* queued behind it */
    srv_wait_count(s, "/late", late_before + 1);
    t0 = now_ms();
    webhook_engine_stop(w, 5000);
    CHECK(now_ms() - t0 < 4000);
    for (int i = 0; i < 2; i++) {
        CHECK_INT_EQ(webhook_engine_poll(w, &res), 1);
        CHECK_INT_EQ((intptr_t)res.user, 11 + i);
        CHECK_INT_EQ(res.ok, 1);
        CHECK_STR_EQ(res.error, "");
    }
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 0);
    webhook_engine_free(w);
}

/* Freeing a running engine with unpolled results and queued work leaks nothing. */
static void test_free_running(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    uint64_t t0;

    CHECK_INT_EQ(submit(w, s->port, "/ok", 5000, 1), 0);
    CHECK_INT_EQ(submit(w, s->port, "/slow", 5000, 2), 0);
    CHECK(webhook_engine_wait(w, 10000) == 1);
    t0 = now_ms();
    webhook_engine_free(w); /* deadline 0: the /slow transfer is aborted at once */
    CHECK(now_ms() - t0 < 2000);
}

static int srv_accepted(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    int n = s->nconns;
    pthread_mutex_unlock(&s->mu);
    return n;
}

static void srv_reset_peaks(struct srv *s)
{
    pthread_mutex_lock(&s->mu);
    s->max_open = 0;
    s->max_busy = 0;
    pthread_mutex_unlock(&s->mu);
}

#define NOT_ALLOWED ": private networks not allowed for this business"

/* One request that must be refused before any connection: the error names the address
 * and range, and the server accepts nothing. */
static void expect_blocked(struct srv *s, webhook_engine *w, char *url, const char *want_error)
{
    struct webhook_result res;
    int accepted = srv_accepted(s);
    int recs = srv_count(s, "/ok");

    CHECK_INT_EQ(submit_url(w, url, 5000, 77, 0), 0);
    next_result(w, &res);
    CHECK_INT_EQ((intptr_t)res.user, 77);
    CHECK_INT_EQ(res.ok, 0);
    CHECK_INT_EQ(res.http_status, 0);
    if (strcmp(want_error, "localhost") == 0) {
        /* curl tries ::1 and 127.0.0.1; either may be the first refused. */
        if (strcmp(res.error, "blocked address ::1 (loopback)" NOT_ALLOWED) != 0)
            CHECK_STR_EQ(res.error, "blocked address 127.0.0.1 (loopback)" NOT_ALLOWED);
    } else {
        CHECK_STR_EQ(res.error, want_error);
    }
    CHECK_STR_EQ(res.body_head, "");
    usleep(50000); /* a connection that slipped through would have been accepted by now */
    CHECK_INT_EQ(srv_accepted(s), accepted);
    CHECK_INT_EQ(srv_count(s, "/ok"), recs);
}

/* Private networks are refused on the address actually connected to, whatever the URL
 * spells: a literal, a name resolving to loopback, an IPv4-mapped IPv6 literal or a
 * numeric form. allow_private=1 lets the same request through. A server of its own, so
 * a late accept left over from an earlier test cannot be mistaken for a leak. */
static void test_blocks_private(void)
{
    struct srv *s = srv_start();
    webhook_engine *w = start_engine(0);
    struct webhook_result res;
    int accepted;

    expect_blocked(s, w, fmt("http://127.0.0.1:%d/ok", s->port),
                   "blocked address 127.0.0.1 (loopback)" NOT_ALLOWED);
    expect_blocked(s, w, fmt("http://localhost:%d/ok", s->port), "localhost");
    expect_blocked(
        s, w, fmt("http://[::ffff:127.0.0.1]:%d/ok", s->port),
        "blocked address ::ffff:127.0.0.1 (IPv4-mapped 127.0.0.1, loopback)" NOT_ALLOWED);
    expect_blocked(s, w, fmt("http://2130706433:%d/ok", s->port),
                   "blocked address 127.0.0.1 (loopback)" NOT_ALLOWED);
    expect_blocked(s, w, fmt("http://127.1.2.3:%d/ok", s->port),
                   "blocked address 127.1.2.3 (loopback)" NOT_ALLOWED);
    expect_blocked(s, w, fmt("https://127.0.0.1:%d/ok", s->port),
                   "blocked address 127.0.0.1 (loopback)" NOT_ALLOWED);

    /* Allowed: delivered, through both spellings. */
    accepted = srv_accepted(s);
    CHECK_INT_EQ(submit_url(w, fmt("http://127.0.0.1:%d/ok", s->port), 5000, 1, 1), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.ok, 1);
    CHECK_INT_EQ(res.http_status, 200);
    CHECK_STR_EQ(res.error, "");
    CHECK_INT_EQ(submit_url(w, fmt("http://localhost:%d/ok", s->port), 5000, 2, 1), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.ok, 1);
    CHECK(srv_accepted(s) > accepted);

    /* The connection just used is not left in curl's cache for a request that does
     * not allow private networks: it has to connect, and is refused. */
    expect_blocked(s, w, fmt("http://127.0.0.1:%d/ok", s->port),
                   "blocked address 127.0.0.1 (loopback)" NOT_ALLOWED);
    expect_blocked(s, w, fmt("http://localhost:%d/ok", s->port), "localhost");

    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
    srv_stop(s);
}

/* An http_proxy in the environment would connect on our behalf, past the address
 * check: it is ignored, the request goes straight to its host. */
static void test_ignores_env_proxy(struct srv *s)
{
    struct srv *proxy = srv_start();
    char *proxy_url = fmt("http://127.0.0.1:%d", proxy->port);
    static const char *vars[] = {"http_proxy",  "HTTP_PROXY", "https_proxy",
                                 "HTTPS_PROXY", "all_proxy",  "ALL_PROXY"};
    webhook_engine *w;
    struct webhook_result res;
    int ok_before = srv_count(s, "/ok");

    /* Set before the engine thread exists: curl reads the environment on that thread. */
    unsetenv("no_proxy");
    unsetenv("NO_PROXY");
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        CHECK_INT_EQ(setenv(vars[i], proxy_url, 1), 0);
    w = start_engine(0);
    CHECK_INT_EQ(submit(w, s->port, "/ok", 5000, 1), 0);
    next_result(w, &res);
    CHECK_INT_EQ(res.ok, 1);
    CHECK_INT_EQ(srv_count(s, "/ok"), ok_before + 1);
    CHECK_INT_EQ(srv_accepted(proxy), 0);
    /* Through the proxy this would have been a 404 from it; blocked, it is refused. */
    CHECK_INT_EQ(submit_url(w, fmt("http://10.255.255.1:%d/ok", s->port), 5000, 2, 0), 0);
    next_result(w, &res);
    CHECK_STR_EQ(res.error, "blocked address 10.255.255.1 (private 10.0.0.0/8)" NOT_ALLOWED);
    CHECK_INT_EQ(srv_accepted(proxy), 0);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
    for (size_t i = 0; i < sizeof(vars) / sizeof(vars[0]); i++)
        unsetenv(vars[i]);
    free(proxy_url);
    srv_stop(proxy);
}

/* max_per_host=2: ten requests stuck on endpoint A never hold back twenty to endpoint
 * B, A never sees more than two connections, and A's backlog runs in FIFO waves. */
static void test_per_host_limit(void)
{
    struct srv *a = srv_start(), *b = srv_start(); /* fresh: counts start at zero */
    webhook_engine *w = start_engine_opts(0, 2);
    struct webhook_result res;
    int slow_before = srv_count(a, "/slow");
    int b_done = 0, a_done = 0;
    uint64_t t0, b_last = 0;

    srv_reset_peaks(a);
    t0 = now_ms();
    for (int i = 0; i < 10; i++)
        CHECK_INT_EQ(submit(w, a->port, "/slow", 1500, 100 + i), 0);
    for (int i = 0; i < 20; i++)
        CHECK_INT_EQ(submit(w, b->port, "/ok", 5000, i), 0);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 30);
    for (int n = 0; n < 30; n++) {
        next_result(w, &res);
        intptr_t id = (intptr_t)res.user;
        if (id < 100) {
            CHECK_INT_EQ(a_done, 0); /* every B result came before any A result */
            CHECK_INT_EQ(res.ok, 1);
            CHECK_INT_EQ(res.http_status, 200);
            b_done++;
            b_last = now_ms();
            continue;
        }
        CHECK_INT_EQ(b_done, 20);
        CHECK_STR_EQ(res.error, "timeout after 1500 ms");
        CHECK_INT_EQ(res.http_status, 0);
        /* Waves of two, in submission order: results 0-1 are ids 100-101, ... */
        CHECK_INT_EQ((id - 100) / 2, a_done / 2);
        a_done++;
        /* Only two were ever let through, so wave k ends after (k + 1) timeouts. */
        CHECK(now_ms() - t0 >= (uint64_t)(1500 * ((a_done + 1) / 2) - 100));
    }
    fprintf(stderr, "per-host: 20 B requests done after %llu ms, A took %llu ms\n",
            (unsigned long long)(b_last - t0), (unsigned long long)(now_ms() - t0));
    CHECK(b_last - t0 < 1000);
    CHECK_INT_EQ(srv_count(a, "/slow"), slow_before + 10);
    pthread_mutex_lock(&a->mu);
    CHECK_INT_EQ(a->max_open, 2);
    pthread_mutex_unlock(&a->mu);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
    srv_stop(b);
    srv_stop(a);
}

/* The default limit is 16, and scheme+host+port is the key: "localhost" is a second
 * endpoint on the same server. */
static void test_per_host_default(struct srv *s)
{
    webhook_engine *w = start_engine(0);
    struct webhook_result res;

    srv_reset_peaks(s);
    for (int i = 0; i < 40; i++)
        CHECK_INT_EQ(submit(w, s->port, "/late", 5000, i), 0);
    for (int i = 0; i < 40; i++) {
        next_result(w, &res);
        CHECK_INT_EQ(res.ok, 1);
    }
    pthread_mutex_lock(&s->mu);
    CHECK_INT_EQ(s->max_busy, 16);
    s->max_busy = 0;
    pthread_mutex_unlock(&s->mu);

    for (int i = 0; i < 40; i++)
        CHECK_INT_EQ(submit_url(w,
                                fmt(i % 2 ? "http://127.0.0.1:%d/late" : "http://LocalHost:%d/late",
                                    s->port),
                                5000, i, 1),
                     0);
    for (int i = 0; i < 40; i++) {
        next_result(w, &res);
        CHECK_INT_EQ(res.ok, 1);
    }
    pthread_mutex_lock(&s->mu);
    CHECK_INT_EQ(s->max_busy, 32);
    pthread_mutex_unlock(&s->mu);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
}

/* max_per_host=1 serializes one endpoint in submission order (no starvation, no
 * overtaking) while another endpoint runs beside it; the global limit still holds. */
static void test_per_host_fifo(void)
{
    struct srv *a = srv_start(), *b = srv_start();
    webhook_engine *w = start_engine_opts(3, 1);
    struct webhook_result res;
    int next_a = 0, next_b = 100;

    srv_reset_peaks(a);
    srv_reset_peaks(b);
    for (int i = 0; i < 8; i++) {
        CHECK_INT_EQ(submit(w, a->port, "/late", 5000, i), 0);
        CHECK_INT_EQ(submit(w, b->port, "/late", 5000, 100 + i), 0);
    }
    for (int n = 0; n < 16; n++) {
        next_result(w, &res);
        CHECK_INT_EQ(res.ok, 1);
        if ((intptr_t)res.user < 100)
            CHECK_INT_EQ((intptr_t)res.user, next_a++);
        else
            CHECK_INT_EQ((intptr_t)res.user, next_b++);
    }
    CHECK_INT_EQ(next_a, 8);
    CHECK_INT_EQ(next_b, 108);
    pthread_mutex_lock(&a->mu);
    CHECK_INT_EQ(a->max_busy, 1);
    CHECK_INT_EQ(a->max_open, 1);
    pthread_mutex_unlock(&a->mu);
    pthread_mutex_lock(&b->mu);
    CHECK_INT_EQ(b->max_busy, 1);
    pthread_mutex_unlock(&b->mu);
    webhook_engine_stop(w, 1000);
    webhook_engine_free(w);
    srv_stop(b);
    srv_stop(a);
}

/* Stop drains requests waiting behind their endpoint's limit, and aborts them at the
 * deadline like the rest. */
static void test_stop_with_waiters(struct srv *s)
{
    webhook_engine *w = start_engine_opts(0, 1);
    struct webhook_result res;
    int slow_before = srv_count(s, "/slow");

    /* Drain: three 200 ms requests in one endpoint's FIFO all finish, in order. */
    for (int i = 0; i < 3; i++)
        CHECK_INT_EQ(submit(w, s->port, "/late", 5000, i), 0);
    webhook_engine_stop(w, 5000);
    for (int i = 0; i < 3; i++) {
        CHECK_INT_EQ(webhook_engine_poll(w, &res), 1);
        CHECK_INT_EQ((intptr_t)res.user, i);
        CHECK_INT_EQ(res.ok, 1);
    }
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 0);
    webhook_engine_free(w);

    /* Abort: one stuck request holds the only slot; the three behind it are aborted. */
    w = start_engine_opts(0, 1);
    CHECK_INT_EQ(submit(w, s->port, "/slow", 30000, 10), 0);
    for (int i = 0; i < 3; i++)
        CHECK_INT_EQ(submit(w, s->port, "/ok", 5000, 11 + i), 0);
    srv_wait_count(s, "/slow", slow_before + 1);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 4);
    webhook_engine_stop(w, 200);
    CHECK_INT_EQ(webhook_engine_in_flight(w), 0);
    for (int i = 0; i < 4; i++) {
        CHECK_INT_EQ(webhook_engine_poll(w, &res), 1);
        CHECK_INT_EQ((intptr_t)res.user, 10 + i);
        CHECK_STR_EQ(res.error, "aborted: shutting down");
    }
    CHECK_INT_EQ(webhook_engine_poll(w, &res), 0);
    webhook_engine_free(w);
}

int main(void)
{
    struct srv *s;

    CHECK_INT_EQ(curl_global_init(CURL_GLOBAL_DEFAULT), CURLE_OK);
    s = srv_start();
    test_status_is_success();
    test_exact_bytes(s);
    test_fail_500(s);
    test_big_response(s);
    test_isolation(s);
    test_redirect_not_followed(s);
    test_connection_refused();
    test_connect_timeout();
    test_retry_after(s);
    test_rejects_bad_requests(s);
    test_max_in_flight(s);
    test_stop_aborts(s);
    test_stop_drains(s);
    test_free_running(s);
    test_blocks_private();
    test_ignores_env_proxy(s);
    test_per_host_limit();
    test_per_host_default(s);
    test_per_host_fifo();
    test_stop_with_waiters(s);
    srv_stop(s);
    curl_global_cleanup();
    TEST_PASS();
    return 0;
}
