/* bench/loadgen.c: bench-loadgen, the HTTP/1.1 load generator of scripts/bench (libuv +
 * http-parser). It replays pre-built raw requests (each used once, in file order) against one
 * address over keep-alive connections, one request in flight per connection, and prints one
 * JSON summary on stdout.
 *
 *   open loop   (--rate R): request i is due at start + i/R, whatever the responses do. A
 *               timerfd armed at the next due time (microsecond precision, no busy loop)
 *               hands due requests to idle connections; when none is idle they wait in a
 *               FIFO. Latency runs from the scheduled time, not the send time, so a stall
 *               shows up in the numbers instead of silently lowering the offered rate
 *               (no coordinated omission).
 *   closed loop (--concurrency C): C connections each send their next request as soon as
 *               the previous response arrived; latency runs from the send time.
 *
 * Requests file: records "<decimal length>\n<length raw bytes>" back to back.
 * --log FILE writes "index scheduled_ns sent_ns done_ns status" per request (CLOCK_MONOTONIC,
 * the clock bench-sink uses too, so end-to-end latency can be joined on the request index).
 * Requests scheduled before --warmup seconds are sent but left out of the summary. */
#include <errno.h>
#include <fcntl.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <unistd.h>
#include <uv.h>

#define LG_MAX_CONNS 4096
#define LG_RECONNECT_MS 50

struct lg_req {
    const char *data; /* into the loaded file */
    size_t len;
    uint64_t sched_ns; /* open loop: due time; closed loop: send time */
    uint64_t sent_ns;
    uint64_t done_ns;
    int status; /* HTTP status; 0 = transport error or never answered */
};

struct lg;

struct lg_conn {
    struct lg *lg;
    uv_tcp_t tcp;
    uv_connect_t connect;
    uv_write_t write;
    uv_timer_t retry;
    http_parser parser;
    int connected;
    int connecting;
    int closing;
    long cur; /* index of the request in flight, -1 if idle */
    char rbuf[16384];
};

struct lg {
    uv_loop_t *loop;
    struct sockaddr_in addr;
    char *file;
    struct lg_req *reqs;
    long n_reqs;  /* requests in the file */
    long n_sched; /* requests this run will issue */
    long next;    /* next request to issue (open loop: next not yet due) */
    long *fifo;   /* open loop: due requests waiting for a connection */
    long fifo_head, fifo_tail;
    long finished; /* answered or failed */
    double rate;
    int concurrency;
    int n_conns;
    struct lg_conn *conns;
    uint64_t start_ns;
    uint64_t warmup_ns;
    uint64_t duration_ns; /* closed loop: stop issuing after this */
    uint64_t timeout_ns;  /* give up on outstanding requests this long after the last send */
    int stopping_issue;   /* closed loop: duration reached */
    int tfd;
    uv_poll_t tpoll;
    uv_timer_t guard;
    http_parser_settings settings;
    long conn_errors;
    int done;
};

static uint64_t now_ns(void)
{
    return uv_hrtime();
}

static void die(const char *what)
{
    fprintf(stderr, "bench-loadgen: %s\n", what);
    exit(2);
}

static void load_file(struct lg *g, const char *path)
{
    int fd = open(path, O_RDONLY);
    struct stat st;
    size_t off = 0, cap = 1024;

    if (fd < 0 || fstat(fd, &st) != 0)
        die("cannot open the requests file");
    g->file = malloc((size_t)st.st_size + 1);
    g->reqs = malloc(cap * sizeof(*g->reqs));
    if (g->file == NULL || g->reqs == NULL)
        die("out of memory");
    while (off < (size_t)st.st_size) {
        ssize_t k = read(fd, g->file + off, (size_t)st.st_size - off);
        if (k <= 0)
            die("short read on the requests file");
        off += (size_t)k;
    }
    close(fd);
    g->file[off] = '\0';
    for (size_t p = 0; p < off;) {
        char *end;
        unsigned long len = strtoul(g->file + p, &end, 10);
        if (*end != '\n' || len == 0 || (size_t)(end + 1 - g->file) + len > off)
            die("malformed requests file (want \"<length>\\n<bytes>\" records)");
        if ((size_t)g->n_reqs == cap) {
            cap *= 2;
            g->reqs = realloc(g->reqs, cap * sizeof(*g->reqs));
            if (g->reqs == NULL)
                die("out of memory");
        }
        memset(&g->reqs[g->n_reqs], 0, sizeof(g->reqs[0]));
        g->reqs[g->n_reqs].data = end + 1;
        g->reqs[g->n_reqs].len = len;
        g->n_reqs++;
        p = (size_t)(end + 1 - g->file) + len;
    }
}

static void conn_start(struct lg_conn *c);
static void issue_more(struct lg *g);

static void finish_req(struct lg *g, long i, int status)
{
    g->reqs[i].done_ns = now_ns();
    g->reqs[i].status = status;
    g->finished++;
}

static int all_done(const struct lg *g)
{
    if (g->finished < g->next)
        return 0;
    if (g->rate > 0)
        return g->next >= g->n_sched;
    return g->stopping_issue || g->next >= g->n_sched;
}

static void on_retry(uv_timer_t *t)
{
    conn_start(t->data);
}

static void on_closed(uv_handle_t *h)
{
    struct lg_conn *c = h->data;
    c->closing = 0;
    c->connected = 0;
    if (!c->lg->done)
        uv_timer_start(&c->retry, on_retry, LG_RECONNECT_MS, 0);
}

/* Drops the connection; the request in flight (if any) fails. */
static void conn_fail(struct lg_conn *c)
{
    struct lg *g = c->lg;
    if (c->cur >= 0) {
        finish_req(g, c->cur, 0);
        c->cur = -1;
    }
    g->conn_errors++;
    if (!c->closing && (c->connected || c->connecting)) {
        c->closing = 1;
        c->connecting = 0;
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

static void on_write(uv_write_t *w, int status)
{
    struct lg_conn *c = w->data;
    if (status != 0 && status != UV_ECANCELED)
        conn_fail(c);
}

static void conn_send(struct lg_conn *c, long i)
{
    struct lg *g = c->lg;
    uv_buf_t b = uv_buf_init((char *)g->reqs[i].data, (unsigned)g->reqs[i].len);

    c->cur = i;
    g->reqs[i].sent_ns = now_ns();
    if (g->rate <= 0)
        g->reqs[i].sched_ns = g->reqs[i].sent_ns;
    c->write.data = c;
    if (uv_write(&c->write, (uv_stream_t *)&c->tcp, &b, 1, on_write) != 0)
        conn_fail(c);
}

/* Gives an idle connection its next request, if there is one for it. */
static void conn_take_work(struct lg_conn *c)
{
    struct lg *g = c->lg;

    if (!c->connected || c->cur >= 0 || c->closing)
        return;
    if (g->rate > 0) {
        if (g->fifo_head < g->fifo_tail)
            conn_send(c, g->fifo[g->fifo_head++]);
    } else if (!g->stopping_issue && g->next < g->n_sched) {
        conn_send(c, g->next++);
    }
}

static int on_message_complete(http_parser *p)
{
    struct lg_conn *c = p->data;
    if (c->cur >= 0) {
        finish_req(c->lg, c->cur, (int)p->status_code);
        c->cur = -1;
    }
    return 0;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *b)
{
    struct lg_conn *c = h->data;
    (void)suggested;
    *b = uv_buf_init(c->rbuf, sizeof(c->rbuf));
}

static void stop_all(struct lg *g);

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *b)
{
    struct lg_conn *c = s->data;
    struct lg *g = c->lg;
    size_t used;

    if (n == 0)
        return;
    if (n < 0) {
        conn_fail(c);
        if (all_done(g))
            stop_all(g);
        return;
    }
    used = http_parser_execute(&c->parser, &g->settings, b->base, (size_t)n);
    if (HTTP_PARSER_ERRNO(&c->parser) != HPE_OK || used != (size_t)n) {
        conn_fail(c);
    } else if (c->cur < 0 && !http_should_keep_alive(&c->parser)) {
        /* The server closes after this response: reconnect for the next one. */
        c->closing = 1;
        uv_read_stop((uv_stream_t *)&c->tcp);
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    } else {
        conn_take_work(c);
    }
    if (all_done(g))
        stop_all(g);
}

static void on_connect(uv_connect_t *req, int status)
{
    struct lg_conn *c = req->data;
    c->connecting = 0;
    if (status != 0) {
        c->connected = 1; /* so conn_fail closes the handle */
        conn_fail(c);
        return;
    }
    c->connected = 1;
    http_parser_init(&c->parser, HTTP_RESPONSE);
    c->parser.data = c;
    uv_read_start((uv_stream_t *)&c->tcp, on_alloc, on_read);
    conn_take_work(c);
}

static void conn_start(struct lg_conn *c)
{
    struct lg *g = c->lg;
    if (g->done || c->connected || c->connecting || c->closing)
        return;
    uv_tcp_init(g->loop, &c->tcp);
    c->tcp.data = c;
    uv_tcp_nodelay(&c->tcp, 1);
    c->connect.data = c;
    c->connecting = 1;
    if (uv_tcp_connect(&c->connect, &c->tcp, (const struct sockaddr *)&g->addr, on_connect) != 0) {
        c->connecting = 0;
        c->closing = 1;
        uv_close((uv_handle_t *)&c->tcp, on_closed);
    }
}

/* Closed loop: hands requests to idle connections (after the duration: none). */
static void issue_more(struct lg *g)
{
    for (int k = 0; k < g->n_conns; k++)
        conn_take_work(&g->conns[k]);
}

/* Open loop: moves every request that is due into the FIFO, feeds idle connections and
 * re-arms the timerfd at the next due time. */
static void on_tick(uv_poll_t *h, int status, int events)
{
    struct lg *g = h->data;
    uint64_t exp, now = now_ns();
    struct itimerspec its;
    (void)status;
    (void)events;

    if (read(g->tfd, &exp, sizeof(exp)) < 0 && errno != EAGAIN)
        die("timerfd read failed");
    while (g->next < g->n_sched && g->reqs[g->next].sched_ns <= now) {
        g->fifo[g->fifo_tail++] = g->next;
        g->next++;
    }
    for (int k = 0; k < g->n_conns && g->fifo_head < g->fifo_tail; k++)
        conn_take_work(&g->conns[k]);
    if (g->next < g->n_sched) {
        uint64_t due = g->reqs[g->next].sched_ns;
        memset(&its, 0, sizeof(its));
        its.it_value.tv_sec = (time_t)(due / 1000000000ULL);
        its.it_value.tv_nsec = (long)(due % 1000000000ULL);
        timerfd_settime(g->tfd, TFD_TIMER_ABSTIME, &its, NULL);
    } else {
        uv_poll_stop(&g->tpoll);
        if (all_done(g))
            stop_all(g);
    }
}

/* Runs every 100 ms: the closed loop's duration, and the timeout for stragglers. */
static void on_guard(uv_timer_t *t)
{
    struct lg *g = t->data;
    uint64_t now = now_ns();
    int issuing_over = g->rate > 0 ? g->next >= g->n_sched : 1;

    if (g->rate <= 0 && !g->stopping_issue &&
        (now - g->start_ns >= g->duration_ns || g->next >= g->n_sched)) {
        g->stopping_issue = 1;
        g->duration_ns = now - g->start_ns;
    }
    if (g->rate <= 0)
        issuing_over = g->stopping_issue;
    if (issuing_over && now - g->start_ns > g->duration_ns + g->timeout_ns) {
        stop_all(g); /* the rest count as unanswered */
        return;
    }
    if (all_done(g))
        stop_all(g);
}

static void close_cb(uv_handle_t *h)
{
    (void)h;
}

static void stop_all(struct lg *g)
{
    if (g->done)
        return;
    g->done = 1;
    for (int k = 0; k < g->n_conns; k++) {
        struct lg_conn *c = &g->conns[k];
        uv_timer_stop(&c->retry);
        if (c->cur >= 0) {
            finish_req(g, c->cur, 0);
            c->cur = -1;
        }
        if ((c->connected || c->connecting) && !c->closing) {
            c->closing = 1;
            uv_close((uv_handle_t *)&c->tcp, close_cb);
        }
    }
    uv_stop(g->loop);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *v, long n, double p)
{
    long k;
    if (n == 0)
        return 0;
    k = (long)(p / 100.0 * (double)n);
    if (k >= n)
        k = n - 1;
    return (double)v[k] / 1e6;
}

static void report(struct lg *g, const char *log_path, uint64_t end_ns)
{
    uint64_t *lat = malloc(sizeof(uint64_t) * (size_t)(g->next + 1));
    long n = 0, ok = 0, errors = 0, unanswered = 0, counted = 0;
    long status_n[6] = {0};
    double sum = 0, window_s;
    uint64_t first_done = 0, last_done = 0;
    FILE *lf = NULL;

    if (lat == NULL)
        die("out of memory");
    if (log_path && (lf = fopen(log_path, "w")) == NULL)
        die("cannot write the log file");
    for (long i = 0; i < g->next; i++) {
        struct lg_req *r = &g->reqs[i];
        if (lf)
            fprintf(lf, "%ld %" PRIu64 " %" PRIu64 " %" PRIu64 " %d\n", i, r->sched_ns, r->sent_ns,
                    r->done_ns, r->status);
        if (r->sched_ns < g->start_ns + g->warmup_ns)
            continue;
        counted++;
        if (r->done_ns == 0) {
            unanswered++;
            continue;
        }
        if (r->status == 0) {
            errors++;
            continue;
        }
        status_n[r->status / 100 < 6 ? r->status / 100 : 0]++;
        if (r->status >= 200 && r->status < 300) {
            ok++;
            lat[n++] = r->done_ns - r->sched_ns;
            sum += (double)(r->done_ns - r->sched_ns);
            if (first_done == 0 || r->done_ns < first_done)
                first_done = r->done_ns;
            if (r->done_ns > last_done)
                last_done = r->done_ns;
        }
    }
    if (lf)
        fclose(lf);
    qsort(lat, (size_t)n, sizeof(uint64_t), cmp_u64);
    /* The measured window: from the end of the warm-up to the end of issuing (closed loop)
     * or the last scheduled request (open loop). */
    if (g->rate > 0)
        window_s = (double)g->n_sched / g->rate - (double)g->warmup_ns / 1e9;
    else if (g->next >= g->n_sched && last_done > 0)
        /* Ran out of requests before the duration: up to the last answer. */
        window_s = (double)(last_done - g->start_ns - g->warmup_ns) / 1e9;
    else
        window_s = (double)(g->duration_ns - g->warmup_ns) / 1e9;
    if (window_s <= 0)
        window_s = 1e-9;
    printf("{\"mode\":\"%s\",\"rate_offered\":%.1f,\"concurrency\":%d,\"connections\":%d,"
           "\"issued\":%ld,\"measured\":%ld,\"ok\":%ld,\"status_2xx\":%ld,\"status_3xx\":%ld,"
           "\"status_4xx\":%ld,\"status_5xx\":%ld,\"errors\":%ld,\"unanswered\":%ld,"
           "\"conn_errors\":%ld,\"exhausted\":%s,\"window_s\":%.3f,\"elapsed_s\":%.3f,\"rate_ok\":%"
           ".1f,"
           "\"latency_ms\":{\"mean\":%.3f,\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,"
           "\"p999\":%.3f,\"max\":%.3f}}\n",
           g->rate > 0 ? "open" : "closed", g->rate, g->concurrency, g->n_conns, g->next, counted,
           ok, status_n[2], status_n[3], status_n[4], status_n[5], errors, unanswered,
           g->conn_errors, g->next >= g->n_sched ? "true" : "false", window_s,
           (double)(end_ns - g->start_ns) / 1e9, (double)ok / window_s,
           n ? sum / (double)n / 1e6 : 0.0, pct(lat, n, 50), pct(lat, n, 90), pct(lat, n, 99),
           pct(lat, n, 99.9), n ? (double)lat[n - 1] / 1e6 : 0.0);
    free(lat);
}

static void usage(void)
{
    fprintf(stderr, "usage: bench-loadgen --target HOST:PORT --requests FILE\n"
                    "         (--rate R [--connections N] | --concurrency C --duration S)\n"
                    "         [--max-requests N] [--warmup S] [--timeout S] [--log FILE]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    struct lg g;
    const char *target = NULL, *reqfile = NULL, *log_path = NULL;
    char host[64];
    int port;
    double duration = 0, warmup = 0, timeout = 30;
    long max_reqs = -1;
    uint64_t end_ns;

    memset(&g, 0, sizeof(g));
    g.n_conns = 64;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (v == NULL)
            usage();
        if (strcmp(a, "--target") == 0)
            target = v;
        else if (strcmp(a, "--requests") == 0)
            reqfile = v;
        else if (strcmp(a, "--rate") == 0)
            g.rate = atof(v);
        else if (strcmp(a, "--concurrency") == 0)
            g.concurrency = atoi(v);
        else if (strcmp(a, "--connections") == 0)
            g.n_conns = atoi(v);
        else if (strcmp(a, "--duration") == 0)
            duration = atof(v);
        else if (strcmp(a, "--warmup") == 0)
            warmup = atof(v);
        else if (strcmp(a, "--timeout") == 0)
            timeout = atof(v);
        else if (strcmp(a, "--max-requests") == 0)
            max_reqs = atol(v);
        else if (strcmp(a, "--log") == 0)
            log_path = v;
        else
            usage();
        i++;
    }
    if (target == NULL || reqfile == NULL || (g.rate > 0) == (g.concurrency > 0))
        usage();
    if (sscanf(target, "%63[^:]:%d", host, &port) != 2 || uv_ip4_addr(host, port, &g.addr) != 0)
        die("bad --target (want IPv4:port)");
    if (g.concurrency > 0)
        g.n_conns = g.concurrency;
    if (g.n_conns < 1 || g.n_conns > LG_MAX_CONNS)
        die("connections out of range");
    load_file(&g, reqfile);
    g.n_sched = g.n_reqs;
    if (max_reqs >= 0 && max_reqs < g.n_sched)
        g.n_sched = max_reqs;
    if (g.rate > 0 && duration > 0 && (long)(g.rate * duration) < g.n_sched)
        g.n_sched = (long)(g.rate * duration);
    if (g.n_sched == 0)
        die("no requests to send");
    if (g.rate <= 0 && duration <= 0)
        die("--concurrency needs --duration");
    g.duration_ns =
        g.rate > 0 ? (uint64_t)((double)g.n_sched / g.rate * 1e9) : (uint64_t)(duration * 1e9);
    g.warmup_ns = (uint64_t)(warmup * 1e9);
    g.timeout_ns = (uint64_t)(timeout * 1e9);
    g.fifo = malloc(sizeof(long) * (size_t)g.n_sched);
    g.conns = calloc((size_t)g.n_conns, sizeof(*g.conns));
    if (g.fifo == NULL || g.conns == NULL)
        die("out of memory");
    g.settings.on_message_complete = on_message_complete;
    g.loop = uv_default_loop();

    /* Connect everything first, then start the clock. */
    for (int k = 0; k < g.n_conns; k++) {
        struct lg_conn *c = &g.conns[k];
        c->lg = &g;
        c->cur = -1;
        uv_timer_init(g.loop, &c->retry);
        c->retry.data = c;
        conn_start(c);
    }
    g.stopping_issue = 1; /* nothing is issued while connecting */
    {
        uint64_t t0 = now_ns();
        int up;
        do {
            uv_run(g.loop, UV_RUN_ONCE);
            up = 0;
            for (int k = 0; k < g.n_conns; k++)
                up += g.conns[k].connected && !g.conns[k].closing;
        } while (up < g.n_conns && now_ns() - t0 < 5000000000ULL);
        if (up < g.n_conns)
            die("could not open every connection within 5 s");
    }
    g.stopping_issue = 0;
    g.conn_errors = 0;
    g.start_ns = now_ns();
    if (g.rate > 0) {
        for (long i = 0; i < g.n_sched; i++)
            g.reqs[i].sched_ns = g.start_ns + (uint64_t)((double)i * 1e9 / g.rate);
        g.tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
        if (g.tfd < 0)
            die("timerfd_create failed");
        uv_poll_init(g.loop, &g.tpoll, g.tfd);
        g.tpoll.data = &g;
        uv_poll_start(&g.tpoll, UV_READABLE, on_tick);
        {
            struct itimerspec its;
            memset(&its, 0, sizeof(its));
            its.it_value.tv_nsec = 1; /* fire at once: request 0 is due now */
            timerfd_settime(g.tfd, 0, &its, NULL);
        }
    } else {
        issue_more(&g);
    }
    uv_timer_init(g.loop, &g.guard);
    g.guard.data = &g;
    uv_timer_start(&g.guard, on_guard, 100, 100);
    uv_run(g.loop, UV_RUN_DEFAULT);
    end_ns = now_ns();
    report(&g, log_path, end_ns);

    /* Close what is left so the loop can be closed cleanly. */
    uv_timer_stop(&g.guard);
    uv_close((uv_handle_t *)&g.guard, close_cb);
    if (g.rate > 0) {
        uv_poll_stop(&g.tpoll);
        uv_close((uv_handle_t *)&g.tpoll, close_cb);
    }
    for (int k = 0; k < g.n_conns; k++)
        uv_close((uv_handle_t *)&g.conns[k].retry, close_cb);
    uv_run(g.loop, UV_RUN_DEFAULT);
    uv_loop_close(g.loop);
    if (g.rate > 0)
        close(g.tfd);
    free(g.fifo);
    free(g.conns);
    free(g.reqs);
    free(g.file);
    return 0;
}
