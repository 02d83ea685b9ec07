/* tests/integration/test_publisher.c: queue/publisher against a real RabbitMQ.
 *
 * Needs PAYNOTIFY_AMQP_URL (the broker), STACK_DIR (the scripts/lib/stack.sh folder that runs
 * it; the test stops and restarts that broker) and PAYNOTIFY_STACK_SH or PAYNOTIFY_SOURCE_DIR
 * (to find stack.sh).
 * Covers: 2000 submits in flight all confirmed with every callback on the loop thread; an
 * unroutable key failing; the real broker stopped (submits fail within the timeout, never
 * hang; fail fast while it is down) and started again (submits succeed); and, through a TCP
 * proxy the test runs in front of the broker, a broker that hangs (no confirm: failure at
 * the deadline) and connections reset under the publisher. */
#include "common/errbuf.h"
#include "queue/mq.h"
#include "queue/publisher.h"
#include "queue/topology.h"
#include "tests/integration/vhost.h"
#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <uv.h>

#define QUEUE TOPOLOGY_NOTIFY_DEAD /* nothing consumes it */

static const int64_t delays[] = {200, 400};
#define N_DELAYS (sizeof(delays) / sizeof(delays[0]))

static const char *amqp_url;
static const char *stack_dir;
static char stack_sh[1024];
static uv_loop_t loop;
static uv_thread_t loop_thread;
static int in_submit;
static int broker_stopped;

struct result {
    int64_t submit_ms;
    int64_t cb_ms;
    int status;
    int calls;
    char msg[320];
};

static void check_ok(int rc, const struct errbuf *e, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s failed (rc %d): %s\n", what, rc, e->msg);
        exit(1);
    }
}

static int64_t now_ms(void)
{
    return (int64_t)(uv_hrtime() / 1000000);
}

static void on_result(void *arg, int status, const char *msg)
{
    struct result *r = arg;
    uv_thread_t self = uv_thread_self();

    CHECK(uv_thread_equal(&self, &loop_thread));
    CHECK(!in_submit);
    r->calls++;
    r->status = status;
    r->cb_ms = now_ms();
    snprintf(r->msg, sizeof(r->msg), "%s", msg);
}

static void submit(publisher *p, const char *key, int i, struct result *r)
{
    char body[64], id[32];

    snprintf(id, sizeof(id), "pub-%d", i);
    snprintf(body, sizeof(body), "{\"i\":%d}", i);
    memset(r, 0, sizeof(*r));
    r->submit_ms = now_ms();
    in_submit = 1;
    publisher_submit(p, key, body, strlen(body), id, on_result, r);
    in_submit = 0;
}

/* A JSON body of exactly size bytes. */
static void submit_sized(publisher *p, const char *key, int i, struct result *r, size_t size)
{
    static char body[65536];
    char id[32];

    CHECK(size >= 16 && size <= sizeof(body));
    memset(body, 'x', size);
    memcpy(body, "{\"pad\":\"", 8);
    memcpy(body + size - 2, "\"}", 2);
    snprintf(id, sizeof(id), "big-%d", i);
    memset(r, 0, sizeof(*r));
    r->submit_ms = now_ms();
    in_submit = 1;
    publisher_submit(p, key, body, size, id, on_result, r);
    in_submit = 0;
}

static void on_tick(uv_timer_t *t)
{
    (void)t;
}

/* Runs the loop until pred(arg) holds or timeout_ms passes; returns pred's last value. A
 * ticking timer keeps uv_run() from blocking when nothing else happens. */
static int run_until(int (*pred)(void *), void *arg, int timeout_ms)
{
    uv_timer_t tick;
    int64_t deadline = now_ms() + timeout_ms;
    int ok;

    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 5, 5);
    while (!(ok = pred(arg)) && now_ms() < deadline)
        uv_run(&loop, UV_RUN_ONCE);
    uv_close((uv_handle_t *)&tick, NULL);
    uv_run(&loop, UV_RUN_NOWAIT);
    return ok;
}

static int is_connected(void *p)
{
    return publisher_is_connected(p);
}

static int is_disconnected(void *p)
{
    return !publisher_is_connected(p);
}

struct batch {
    struct result *r;
    int n;
};

static int all_called(void *arg)
{
    struct batch *b = arg;

    for (int i = 0; i < b->n; i++)
        if (b->r[i].calls == 0)
            return 0;
    return 1;
}

static int never_true(void *arg)
{
    (void)arg;
    return 0;
}

static void wait_ms(int ms)
{
    run_until(never_true, NULL, ms);
}

static publisher *start(const char *url, int confirm_timeout_ms)
{
    struct publisher_opts o = {0};
    struct errbuf e = {0};
    publisher *p;

    o.amqp_url = url;
    o.confirm_timeout_ms = confirm_timeout_ms;
    o.max_in_flight = 256;
    o.queue_type = "quorum";
    o.retry_delays_ms = delays;
    o.n_delays = N_DELAYS;
    p = publisher_start(&loop, &o, &e);
    if (p == NULL) {
        fprintf(stderr, "publisher_start: %s\n", e.msg);
        exit(1);
    }
    return p;
}

static void stop(publisher *p)
{
    publisher_stop(p);
    uv_run(&loop, UV_RUN_NOWAIT); /* runs the close callback that frees it */
}

static uint32_t queue_count(void)
{
    struct errbuf e = {0};
    uint32_t n = 0;
    mq_conn *c = mq_open(amqp_url, 5000, &e);

    if (c == NULL || mq_queue_counts(c, QUEUE, &n, NULL, &e) != 0) {
        fprintf(stderr, "queue_count: %s\n", e.msg);
        exit(1);
    }
    mq_close(c);
    return n;
}

static void purge(void)
{
    struct errbuf e = {0};
    mq_conn *c = mq_open(amqp_url, 5000, &e);

    if (c == NULL || mq_purge(c, QUEUE, &e) != 0) {
        fprintf(stderr, "purge: %s\n", e.msg);
        exit(1);
    }
    mq_close(c);
}

/* The publisher declares the topology itself; start and end without one, so the queue type
 * is ours and the broker is left as found. */
static void delete_topology(void)
{
    static const char *const plain[] = {TOPOLOGY_CALLBACKS, TOPOLOGY_CALLBACKS_PARKED,
                                        TOPOLOGY_NOTIFY, TOPOLOGY_NOTIFY_DEAD};
    struct errbuf e = {0};
    char name[TOPOLOGY_NAME_MAX];
    mq_conn *c = mq_open(amqp_url, 5000, &e);

    if (c == NULL) {
        fprintf(stderr, "delete_topology: %s\n", e.msg);
        exit(1);
    }
    for (size_t i = 0; i < sizeof(plain) / sizeof(plain[0]); i++)
        check_ok(mq_queue_delete(c, plain[i], &e), &e, plain[i]);
    for (size_t k = 0; k < N_DELAYS; k++) {
        CHECK_INT_EQ(topology_retry_queue_name((int)k + 1, delays[k], name, sizeof(name)), 0);
        check_ok(mq_queue_delete(c, name, &e), &e, name);
    }
    mq_close(c);
}

/* ---- a TCP proxy in front of the broker, for hangs and resets ---- */

enum proxy_mode { PROXY_FORWARD, PROXY_HANG, PROXY_RESET };

#define PROXY_MAX 16

struct proxy {
    int listen_fd;
    int port;
    struct sockaddr_in upstream;
    atomic_int mode;
    atomic_int quit;
    uv_thread_t thread;
    int client[PROXY_MAX]; /* -1 = free slot */
    int server[PROXY_MAX];
};

static void hard_close(int fd)
{
    struct linger l = {1, 0}; /* RST instead of FIN, like a killed peer's kernel */

    if (fd < 0)
        return;
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

static void proxy_drop(struct proxy *px, int i)
{
    hard_close(px->client[i]);
    hard_close(px->server[i]);
    px->client[i] = px->server[i] = -1;
}

static void proxy_accept(struct proxy *px, int mode)
{
    int fd = accept(px->listen_fd, NULL, NULL), up, i;

    if (fd < 0)
        return;
    if (mode == PROXY_RESET) {
        hard_close(fd);
        return;
    }
    for (i = 0; i < PROXY_MAX && px->client[i] >= 0; i++)
        ;
    if (i == PROXY_MAX) {
        hard_close(fd);
        return;
    }
    up = -1;
    if (mode == PROXY_FORWARD) {
        up = socket(AF_INET, SOCK_STREAM, 0);
        if (connect(up, (struct sockaddr *)&px->upstream, sizeof(px->upstream)) != 0) {
            hard_close(up);
            hard_close(fd);
            return;
        }
    }
    px->client[i] = fd;
    px->server[i] = up; /* -1 in HANG: the client talks to a wall */
}

/* Copies what is readable on from to to; -1 when the pair is done. */
static int pump(int from, int to)
{
    char buf[65536];
    ssize_t n = read(from, buf, sizeof(buf)), off = 0;

    if (n <= 0)
        return -1;
    while (off < n) {
        ssize_t w = send(to, buf + off, (size_t)(n - off), MSG_NOSIGNAL);

        if (w <= 0)
            return -1;
        off += w;
    }
    return 0;
}

static void proxy_run(void *arg)
{
    struct proxy *px = arg;

    while (!atomic_load(&px->quit)) {
        struct pollfd pf[1 + 2 * PROXY_MAX];
        int idx[1 + 2 * PROXY_MAX], n = 0, mode = atomic_load(&px->mode);

        if (mode == PROXY_RESET)
            for (int i = 0; i < PROXY_MAX; i++)
                if (px->client[i] >= 0)
                    proxy_drop(px, i);
        pf[n].fd = px->listen_fd;
        pf[n].events = POLLIN;
        idx[n++] = -1;
        if (mode == PROXY_FORWARD) {
            for (int i = 0; i < PROXY_MAX; i++) {
                if (px->client[i] < 0 || px->server[i] < 0)
                    continue;
                pf[n].fd = px->client[i];
                pf[n].events = POLLIN;
                idx[n++] = i;
                pf[n].fd = px->server[i];
                pf[n].events = POLLIN;
                idx[n++] = PROXY_MAX + i;
            }
        }
        if (poll(pf, (nfds_t)n, 20) <= 0)
            continue;
        if (pf[0].revents & POLLIN)
            proxy_accept(px, mode);
        for (int k = 1; k < n; k++) {
            int i = idx[k] % PROXY_MAX, to_server = idx[k] < PROXY_MAX;

            if (pf[k].revents == 0 || px->client[i] < 0)
                continue;
            if (pump(to_server ? px->client[i] : px->server[i],
                     to_server ? px->server[i] : px->client[i]) != 0)
                proxy_drop(px, i);
        }
    }
    for (int i = 0; i < PROXY_MAX; i++)
        if (px->client[i] >= 0)
            proxy_drop(px, i);
    close(px->listen_fd);
}

/* Parses host:port out of amqp://user:pass@host:port/vhost (host must be an IPv4 literal). */
static void upstream_of(const char *url, struct sockaddr_in *sa, const char **rest,
                        const char **hostport)
{
    const char *hp = strchr(url + strlen("amqp://"), '@');
    const char *colon, *slash;
    char host[64];

    hp = hp != NULL ? hp + 1 : url + strlen("amqp://");
    colon = strchr(hp, ':');
    slash = strchr(hp, '/');
    CHECK(colon != NULL && (slash == NULL || colon < slash));
    CHECK((size_t)(colon - hp) < sizeof(host));
    memcpy(host, hp, (size_t)(colon - hp));
    host[colon - hp] = '\0';
    memset(sa, 0, sizeof(*sa));
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)atoi(colon + 1));
    CHECK_INT_EQ(inet_pton(AF_INET, host, &sa->sin_addr), 1);
    *hostport = hp;
    *rest = slash != NULL ? slash : "";
}

static void proxy_start(struct proxy *px, char *proxy_url, size_t cap)
{
    struct sockaddr_in sa;
    socklen_t len = sizeof(sa);
    const char *rest, *hostport;
    int one = 1;

    memset(px, 0, sizeof(*px));
    for (int i = 0; i < PROXY_MAX; i++)
        px->client[i] = px->server[i] = -1;
    upstream_of(amqp_url, &px->upstream, &rest, &hostport);
    px->listen_fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(px->listen_fd >= 0);
    setsockopt(px->listen_fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    memset(&sa, 0, sizeof(sa));
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0; /* the kernel picks a free port */
    CHECK_INT_EQ(bind(px->listen_fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    CHECK_INT_EQ(listen(px->listen_fd, 16), 0);
    CHECK_INT_EQ(getsockname(px->listen_fd, (struct sockaddr *)&sa, &len), 0);
    px->port = ntohs(sa.sin_port);
    atomic_init(&px->mode, PROXY_FORWARD);
    atomic_init(&px->quit, 0);
    /* Same credentials and vhost, our port. */
    snprintf(proxy_url, cap, "%.*s127.0.0.1:%d%s", (int)(hostport - amqp_url), amqp_url, px->port,
             rest);
    CHECK_INT_EQ(uv_thread_create(&px->thread, proxy_run, px), 0);
}

static void proxy_stop(struct proxy *px)
{
    atomic_store(&px->quit, 1);
    uv_thread_join(&px->thread);
}

/* ---- real broker stop/start through scripts/lib/stack.sh ---- */

struct shell_job {
    char cmd[2600];
    atomic_int done;
    int rc;
    uv_thread_t thread;
};

static void shell_run(void *arg)
{
    struct shell_job *j = arg;

    j->rc = system(j->cmd);
    atomic_store(&j->done, 1);
}

static void stack_async(struct shell_job *j, const char *verb)
{
    snprintf(j->cmd, sizeof(j->cmd), "'%.1000s' %s '%.1000s' rabbitmq", stack_sh, verb, stack_dir);
    atomic_init(&j->done, 0);
    CHECK_INT_EQ(uv_thread_create(&j->thread, shell_run, j), 0);
}

static int job_done(void *arg)
{
    return atomic_load(&((struct shell_job *)arg)->done);
}

/* If a check fails while the broker is down, bring it back for the tests that follow. */
static void restart_broker_at_exit(void)
{
    char cmd[2600];

    if (!broker_stopped)
        return;
    fprintf(stderr, "test_publisher: restarting the broker we stopped\n");
    snprintf(cmd, sizeof(cmd), "'%.1000s' start-one '%.1000s' rabbitmq", stack_sh, stack_dir);
    if (system(cmd) != 0)
        fprintf(stderr, "test_publisher: could not restart the broker\n");
}

/* ---- tests ---- */

static void test_window(void)
{
    enum { N = 2000 };
    static struct result r[N];
    struct batch b = {r, N};
    struct result bad;
    int64_t t0;
    publisher *p = start(amqp_url, 5000);

    CHECK(run_until(is_connected, p, 10000));
    purge();
    t0 = now_ms();
    for (int i = 0; i < N; i++)
        submit(p, QUEUE, i, &r[i]);
    CHECK(run_until(all_called, &b, 30000));
    fprintf(stderr, "  %d submits confirmed in %lld ms\n", N, (long long)(now_ms() - t0));
    for (int i = 0; i < N; i++) {
        if (r[i].status != 0) {
            fprintf(stderr, "submit %d failed: %s\n", i, r[i].msg);
            exit(1);
        }
        CHECK_INT_EQ(r[i].calls, 1);
        CHECK_STR_EQ(r[i].msg, "");
    }
    CHECK_INT_EQ(queue_count(), N);
    purge();

    /* An unroutable key is a failure, not a silent confirm. */
    submit(p, "paynotify.no-such-queue", 0, &bad);
    {
        struct batch one = {&bad, 1};

        CHECK(run_until(all_called, &one, 10000));
    }
    CHECK_INT_EQ(bad.status, -1);
    CHECK(strstr(bad.msg, "reaches no queue") != NULL);
    CHECK(publisher_is_connected(p));

    /* Stop with submits pending: each gets exactly one callback, during the stop or before. */
    for (int i = 0; i < 300; i++)
        submit(p, QUEUE, i, &r[i]);
    stop(p);
    for (int i = 0; i < 300; i++) {
        CHECK_INT_EQ(r[i].calls, 1);
        CHECK(r[i].status == 0 || strstr(r[i].msg, "stopped") != NULL);
    }
    purge();
}

/* The broker goes away while messages flow: every submit is answered within the confirm
 * timeout (plus scheduling slack), submits fail fast while it is down, and succeed again once
 * it is back. */
static void test_broker_restart(void)
{
    enum { N = 4000, TIMEOUT = 2000 };
    static struct result r[N];
    struct shell_job job;
    struct batch b;
    int n = 0, failed = 0, ok_before = 0;
    int64_t t0;
    publisher *p = start(amqp_url, TIMEOUT);

    CHECK(run_until(is_connected, p, 10000));
    stack_async(&job, "stop-one");
    broker_stopped = 1;
    /* Keep submitting every ~5 ms while the broker shuts down. */
    while (!job_done(&job) && n < N) {
        submit(p, QUEUE, n, &r[n]);
        n++;
        wait_ms(5);
    }
    uv_thread_join(&job.thread);
    CHECK_INT_EQ(job.rc, 0);
    CHECK(run_until(is_disconnected, p, 5000));
    b.r = r;
    b.n = n;
    CHECK(run_until(all_called, &b, TIMEOUT + 2000));
    for (int i = 0; i < n; i++) {
        int64_t dt = r[i].cb_ms - r[i].submit_ms;

        CHECK_INT_EQ(r[i].calls, 1);
        if (dt > TIMEOUT + 1000) {
            fprintf(stderr, "submit %d answered after %lld ms: %s\n", i, (long long)dt, r[i].msg);
            exit(1);
        }
        if (r[i].status != 0) {
            if (failed == 0 || strcmp(r[i].msg, r[i - 1].msg) != 0)
                fprintf(stderr, "  submit %d failed after %lld ms: %s\n", i, (long long)dt,
                        r[i].msg);
            failed++;
        } else {
            ok_before++;
        }
    }
    fprintf(stderr, "  during stop: %d submits, %d confirmed, %d failed; e.g. \"%s\"\n", n,
            ok_before, failed, r[n - 1].msg);
    CHECK(failed > 0);
    CHECK(ok_before > 0);

    /* While it is down: fail fast, not after the timeout. */
    for (int i = 0; i < 20; i++) {
        submit(p, QUEUE, i, &r[i]);
        b.r = &r[i];
        b.n = 1;
        CHECK(run_until(all_called, &b, TIMEOUT));
        CHECK_INT_EQ(r[i].status, -1);
        CHECK(r[i].cb_ms - r[i].submit_ms < 500); /* not the 2 s timeout */
        wait_ms(20);
    }
    fprintf(stderr, "  while down: \"%s\"\n", r[19].msg);
    CHECK(!publisher_is_connected(p));

    /* Back up: the publisher reconnects by itself and submits succeed again. */
    t0 = now_ms();
    stack_async(&job, "start-one");
    CHECK(run_until(job_done, &job, 120000));
    uv_thread_join(&job.thread);
    CHECK_INT_EQ(job.rc, 0);
    broker_stopped = 0;
    CHECK(run_until(is_connected, p, 10000));
    fprintf(stderr, "  reconnected %lld ms after the restart began\n", (long long)(now_ms() - t0));
    for (int i = 0; i < 100; i++)
        submit(p, QUEUE, i, &r[i]);
    b.r = r;
    b.n = 100;
    CHECK(run_until(all_called, &b, 10000));
    for (int i = 0; i < 100; i++) {
        if (r[i].status != 0) {
            fprintf(stderr, "after restart, submit %d failed: %s\n", i, r[i].msg);
            exit(1);
        }
    }
    stop(p);
    purge();
}

static void test_proxy_faults(void)
{
    enum { N = 200, TIMEOUT = 1000 };
    static struct result r[N];
    struct batch b = {r, N};
    struct proxy px;
    char url[512];
    int64_t t0;
    publisher *p;

    proxy_start(&px, url, sizeof(url));
    p = start(url, TIMEOUT);
    CHECK(run_until(is_connected, p, 10000));
    for (int i = 0; i < N; i++)
        submit(p, QUEUE, i, &r[i]);
    CHECK(run_until(all_called, &b, 10000));
    for (int i = 0; i < N; i++)
        CHECK_INT_EQ(r[i].status, 0);

    /* The broker hangs: nothing comes back. Every submit fails at its deadline, not later. */
    atomic_store(&px.mode, PROXY_HANG);
    wait_ms(50);
    t0 = now_ms();
    for (int i = 0; i < N; i++)
        submit(p, QUEUE, i, &r[i]);
    CHECK(run_until(all_called, &b, TIMEOUT + 3000));
    for (int i = 0; i < N; i++) {
        int64_t dt = r[i].cb_ms - r[i].submit_ms;

        CHECK_INT_EQ(r[i].status, -1);
        if (dt < TIMEOUT - 50 || dt > TIMEOUT + 1000) {
            fprintf(stderr, "hung broker: submit %d answered after %lld ms: %s\n", i, (long long)dt,
                    r[i].msg);
            exit(1);
        }
    }
    fprintf(stderr, "  hung broker: all %d failed after %lld ms: \"%s\"\n", N,
            (long long)(now_ms() - t0), r[0].msg);
    CHECK(strstr(r[0].msg, "no broker confirm within 1000 ms") != NULL);
    /* It gives up on the silent connection; a new one cannot log in through the wall. */
    CHECK(run_until(is_disconnected, p, 3000));

    /* Hung with big messages: once the socket buffers are full a publish cannot even be
     * written, and still every submit is answered by its deadline. */
    atomic_store(&px.mode, PROXY_FORWARD);
    CHECK(run_until(is_connected, p, 10000));
    atomic_store(&px.mode, PROXY_HANG);
    wait_ms(50);
    t0 = now_ms();
    for (int i = 0; i < N; i++)
        submit_sized(p, QUEUE, i, &r[i], 60000);
    CHECK(run_until(all_called, &b, TIMEOUT + 3000));
    for (int i = 0; i < N; i++) {
        int64_t dt = r[i].cb_ms - r[i].submit_ms;

        CHECK_INT_EQ(r[i].status, -1);
        if (dt > TIMEOUT + 1000) {
            fprintf(stderr, "hung broker, big: submit %d answered after %lld ms: %s\n", i,
                    (long long)dt, r[i].msg);
            exit(1);
        }
    }
    fprintf(stderr, "  hung broker, %d x 60 kB: all failed after %lld ms: \"%s\"\n", N,
            (long long)(now_ms() - t0), r[N - 1].msg);
    CHECK(run_until(is_disconnected, p, 3000));

    /* Back to normal; then messages are in flight (published, unconfirmed) when every
     * connection is reset, as when the broker's process dies: they fail at once with the
     * connection, long before their deadline. */
    atomic_store(&px.mode, PROXY_FORWARD);
    CHECK(run_until(is_connected, p, 10000));
    atomic_store(&px.mode, PROXY_HANG);
    wait_ms(50);
    for (int i = 0; i < N; i++)
        submit(p, QUEUE, i, &r[i]);
    wait_ms(200);
    CHECK(!all_called(&b));
    atomic_store(&px.mode, PROXY_RESET);
    CHECK(run_until(all_called, &b, TIMEOUT));
    for (int i = 0; i < N; i++) {
        CHECK_INT_EQ(r[i].calls, 1);
        CHECK_INT_EQ(r[i].status, -1);
        CHECK(r[i].cb_ms - r[i].submit_ms < TIMEOUT - 200);
        CHECK(strstr(r[i].msg, "connection lost") != NULL);
    }
    fprintf(stderr, "  reset with %d in flight: \"%s\"\n", N, r[0].msg);
    CHECK(run_until(is_disconnected, p, 3000));
    submit(p, QUEUE, 0, &r[0]);
    b.n = 1;
    CHECK(run_until(all_called, &b, 500));
    CHECK_INT_EQ(r[0].status, -1);
    fprintf(stderr, "  while reset: \"%s\"\n", r[0].msg);

    /* The broker is reachable again: reconnects within the backoff (max ~2 s). */
    atomic_store(&px.mode, PROXY_FORWARD);
    t0 = now_ms();
    CHECK(run_until(is_connected, p, 5000));
    fprintf(stderr, "  reconnected after %lld ms\n", (long long)(now_ms() - t0));
    submit(p, QUEUE, 0, &r[0]);
    CHECK(run_until(all_called, &b, 5000));
    CHECK_INT_EQ(r[0].status, 0);
    stop(p);
    proxy_stop(&px);
    purge();
}

int main(void)
{
    const char *sh = getenv("PAYNOTIFY_STACK_SH"), *src = getenv("PAYNOTIFY_SOURCE_DIR");

    amqp_url = getenv("PAYNOTIFY_AMQP_URL");
    stack_dir = getenv("STACK_DIR");
    if (sh != NULL && sh[0] != '\0')
        snprintf(stack_sh, sizeof(stack_sh), "%s", sh);
    else if (src != NULL && src[0] != '\0')
        snprintf(stack_sh, sizeof(stack_sh), "%s/scripts/lib/stack.sh", src);
    if (amqp_url == NULL || amqp_url[0] == '\0' || stack_dir == NULL || stack_dir[0] == '\0' ||
        stack_sh[0] == '\0') {
        fprintf(stderr, "test_publisher: needs PAYNOTIFY_AMQP_URL and STACK_DIR (exported by the "
                        "stack.env of scripts/lib/stack.sh, which scripts/test sources) and "
                        "PAYNOTIFY_STACK_SH or PAYNOTIFY_SOURCE_DIR (set by scripts/test and "
                        "ctest) to stop and restart that RabbitMQ\n");
        return 1;
    }
    amqp_url = test_vhost_url(amqp_url, "test_publisher");
    atexit(restart_broker_at_exit);
    CHECK_INT_EQ(uv_loop_init(&loop), 0);
    loop_thread = uv_thread_self();
    delete_topology();
    fprintf(stderr, "confirm window\n");
    test_window();
    fprintf(stderr, "hung and reset connections (proxy)\n");
    test_proxy_faults();
    fprintf(stderr, "broker stopped and started\n");
    test_broker_restart();
    /* The vhost is the test's own: its queues stay. Deleting at-least-once quorum queues
     * right after the broker restart can crash RabbitMQ 3.10's dead-letter supervisor. */
    CHECK_INT_EQ(uv_loop_close(&loop), 0);
    TEST_PASS();
    return 0;
}
