/* tests/integration/test_mq.c: queue/mq against a real RabbitMQ (PAYNOTIFY_AMQP_URL): topology
 * for classic and quorum queues, confirmed publish, consume, ack/nack, dead-lettering through a
 * delay queue, confirm windows, and the sticky errors of broker channel closes. It deletes the
 * paynotify queues it declares, before and after, so it leaves the broker as it found it
 * (apart from the exchange). */
#include "common/errbuf.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "tests/integration/vhost.h"
#include "tests/unit/check.h"

#include <fcntl.h>
#include <stdint.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define TIMEOUT_MS 5000

static const int64_t delays[] = {200, 400};
#define N_DELAYS (sizeof(delays) / sizeof(delays[0]))

static const char *amqp_url;

static int64_t now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void check_ok(int rc, const struct errbuf *e, const char *what)
{
    if (rc != 0) {
        fprintf(stderr, "%s failed (rc %d): %s\n", what, rc, e->msg);
        exit(1);
    }
}

static void check_msg(const struct errbuf *e, const char *want)
{
    if (strstr(e->msg, want) == NULL) {
        fprintf(stderr, "error message \"%s\" lacks \"%s\"\n", e->msg, want);
        exit(1);
    }
}

static mq_conn *open_conn(void)
{
    struct errbuf e = {0};
    mq_conn *c = mq_open(amqp_url, TIMEOUT_MS, &e);

    if (c == NULL) {
        fprintf(stderr, "mq_open: %s\n", e.msg);
        exit(1);
    }
    return c;
}

/* Every queue of the topology with our delays. */
static size_t topology_queues(char names[][TOPOLOGY_NAME_MAX])
{
    size_t n = 0;

    strcpy(names[n++], TOPOLOGY_CALLBACKS);
    strcpy(names[n++], TOPOLOGY_CALLBACKS_PARKED);
    strcpy(names[n++], TOPOLOGY_NOTIFY);
    strcpy(names[n++], TOPOLOGY_NOTIFY_DEAD);
    for (size_t k = 0; k < N_DELAYS; k++)
        CHECK_INT_EQ(
            topology_retry_queue_name((int)k + 1, delays[k], names[n++], TOPOLOGY_NAME_MAX), 0);
    return n;
}

static void delete_topology(void)
{
    char names[8][TOPOLOGY_NAME_MAX];
    size_t n = topology_queues(names);
    struct errbuf e = {0};
    mq_conn *c = open_conn();

    for (size_t i = 0; i < n; i++)
        check_ok(mq_queue_delete(c, names[i], &e), &e, names[i]);
    mq_close(c);
}

static void test_open_errors(void)
{
    struct errbuf e = {0};
    int64_t t0;
    char url[512];
    const char *slash;
    mq_conn *c;

    CHECK(mq_open("http://nope", 1000, &e) == NULL);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    check_msg(&e, "amqp://user:pass@host:port/vhost");

    /* Port 1 on loopback: refused at once, well inside the timeout. */
    t0 = now_ms();
    CHECK(mq_open("amqp://guest:guest@127.0.0.1:1/", 3000, &e) == NULL);
    CHECK_INT_EQ(e.kind, ERRBUF_TRANSIENT);
    check_msg(&e, "127.0.0.1:1");
    CHECK(now_ms() - t0 < 2000);

    /* Wrong password: the broker refuses the login. */
    slash = strchr(amqp_url + strlen("amqp://"), '@');
    CHECK(slash != NULL);
    snprintf(url, sizeof(url), "amqp://guest:wrong%s", slash);
    CHECK(mq_open(url, 3000, &e) == NULL);
    CHECK_INT_EQ(e.kind, ERRBUF_TRANSIENT);
    fprintf(stderr, "  bad password: %s\n", e.msg);

    /* "amqp://host:port/" (empty vhost) means the default vhost "/". */
    slash = strrchr(amqp_url, '/');
    CHECK(slash != NULL && slash > amqp_url + strlen("amqp://"));
    snprintf(url, sizeof(url), "%.*s/", (int)(slash - amqp_url), amqp_url);
    c = mq_open(url, 3000, &e);
    if (c == NULL) {
        fprintf(stderr, "mq_open(%s): %s\n", url, e.msg);
        exit(1);
    }
    CHECK_INT_EQ(mq_failed(c), 0);
    mq_close(c);
    mq_close(NULL);
}

static void test_topology(const char *type, const char *other)
{
    char names[8][TOPOLOGY_NAME_MAX];
    size_t n = topology_queues(names);
    struct errbuf e = {0};
    uint32_t msgs = 99, cons = 99;
    mq_conn *c;

    delete_topology();
    c = open_conn();
    /* Twice: declaring the same topology again is harmless. */
    check_ok(mq_declare_topology(c, type, delays, N_DELAYS, &e), &e, "declare");
    check_ok(mq_declare_topology(c, type, delays, N_DELAYS, &e), &e, "declare again");
    for (size_t i = 0; i < n; i++) {
        check_ok(mq_queue_counts(c, names[i], &msgs, &cons, &e), &e, names[i]);
        CHECK_INT_EQ(msgs, 0);
        CHECK_INT_EQ(cons, 0);
    }
    mq_close(c);

    /* A fresh connection declares it again too. */
    c = open_conn();
    check_ok(mq_declare_topology(c, type, delays, N_DELAYS, &e), &e, "declare on new conn");
    CHECK_INT_EQ(mq_declare_topology(c, "stream", delays, N_DELAYS, &e), -1);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    CHECK_INT_EQ(mq_failed(c), 0); /* refused before talking to the broker */

    /* The other queue type on existing queues: the broker's 406, sticky afterwards. */
    CHECK_INT_EQ(mq_declare_topology(c, other, delays, N_DELAYS, &e), -1);
    fprintf(stderr, "  %s over %s: %s\n", other, type, e.msg);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    check_msg(&e, "406");
    /* The broker names the first argument that differs (quorum queues carry more). */
    check_msg(&e, "inequivalent arg");
    check_msg(&e, TOPOLOGY_CALLBACKS);
    CHECK_INT_EQ(mq_failed(c), 1);
    e.msg[0] = '\0';
    CHECK_INT_EQ(mq_purge(c, TOPOLOGY_NOTIFY, &e), -1);
    check_msg(&e, "406"); /* fails fast with the first error */
    mq_close(c);
}

static void test_round_trip(void)
{
    struct errbuf e = {0};
    unsigned char body[300];
    struct mq_msg m;
    uint32_t msgs = 99;
    mq_conn *pub = open_conn(), *con = open_conn();

    for (size_t i = 0; i < sizeof(body); i++)
        body[i] = (unsigned char)(i * 7); /* includes NUL bytes and bytes >= 0x80 */
    check_ok(mq_purge(pub, TOPOLOGY_NOTIFY, &e), &e, "purge");
    check_ok(mq_publish_confirmed(pub, TOPOLOGY_NOTIFY, body, sizeof(body), "rt-1", TIMEOUT_MS, &e),
             &e, "publish rt-1");
    check_ok(mq_publish_confirmed(pub, TOPOLOGY_NOTIFY, "", 0, "rt-empty", TIMEOUT_MS, &e), &e,
             "publish empty");
    check_ok(mq_queue_counts(pub, TOPOLOGY_NOTIFY, &msgs, NULL, &e), &e, "counts");
    CHECK_INT_EQ(msgs, 2);

    check_ok(mq_consume_start(con, TOPOLOGY_NOTIFY, 10, &e), &e, "consume");
    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    CHECK_INT_EQ(m.len, sizeof(body));
    CHECK(memcmp(m.body, body, sizeof(body)) == 0);
    CHECK_STR_EQ(m.message_id, "rt-1");
    CHECK_INT_EQ(m.redelivered, 0);
    CHECK_INT_EQ(m.death_count, 0);
    check_ok(mq_ack(con, m.delivery_tag, &e), &e, "ack");
    mq_msg_free(&m);
    CHECK(m.body == NULL);

    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    CHECK_INT_EQ(m.len, 0);
    CHECK_STR_EQ((const char *)m.body, "");
    CHECK_STR_EQ(m.message_id, "rt-empty");
    check_ok(mq_ack(con, m.delivery_tag, &e), &e, "ack");
    mq_msg_free(&m);

    /* nack with requeue: the same message comes back, marked redelivered. */
    check_ok(mq_publish_confirmed(pub, TOPOLOGY_NOTIFY, "{\"n\":1}", 7, "nack-1", TIMEOUT_MS, &e),
             &e, "publish nack-1");
    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    CHECK_STR_EQ(m.message_id, "nack-1");
    CHECK_INT_EQ(m.redelivered, 0);
    check_ok(mq_nack(con, m.delivery_tag, 1, &e), &e, "nack");
    mq_msg_free(&m);
    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    CHECK_STR_EQ(m.message_id, "nack-1");
    CHECK_STR_EQ((const char *)m.body, "{\"n\":1}");
    CHECK_INT_EQ(m.redelivered, 1);
    check_ok(mq_ack(con, m.delivery_tag, &e), &e, "ack");
    mq_msg_free(&m);

    /* Nothing left: a timeout, after about the time asked for. */
    {
        int64_t t0 = now_ms(), dt;

        CHECK_INT_EQ(mq_consume_next(con, 300, &m, &e), 1);
        dt = now_ms() - t0;
        CHECK(dt >= 290 && dt < 2000);
        CHECK(m.body == NULL);
    }
    check_ok(mq_queue_counts(con, TOPOLOGY_NOTIFY, &msgs, NULL, &e), &e, "counts");
    CHECK_INT_EQ(msgs, 0);
    mq_close(con);
    mq_close(pub);
}

/* A message published to delay queue 1 expires after 200 ms and is dead-lettered back to
 * paynotify.notify with x-death count 1. */
static void test_delay_queue(void)
{
    struct errbuf e = {0};
    char retry1[TOPOLOGY_NAME_MAX];
    struct mq_msg m;
    int64_t t0;
    mq_conn *pub = open_conn(), *con = open_conn();

    CHECK_INT_EQ(topology_retry_queue_name(1, delays[0], retry1, sizeof(retry1)), 0);
    check_ok(mq_purge(pub, TOPOLOGY_NOTIFY, &e), &e, "purge");
    check_ok(mq_consume_start(con, TOPOLOGY_NOTIFY, 10, &e), &e, "consume");
    t0 = now_ms();
    check_ok(mq_publish_confirmed(pub, retry1, "{\"retry\":1}", 11, "delay-1", TIMEOUT_MS, &e), &e,
             "publish to retry queue");
    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    fprintf(stderr, "  back from %s after %lld ms\n", retry1, (long long)(now_ms() - t0));
    CHECK(now_ms() - t0 >= 190);
    CHECK_STR_EQ(m.message_id, "delay-1");
    CHECK_STR_EQ((const char *)m.body, "{\"retry\":1}");
    CHECK_INT_EQ(m.death_count, 1);
    CHECK_INT_EQ(m.redelivered, 0);
    check_ok(mq_ack(con, m.delivery_tag, &e), &e, "ack");
    mq_msg_free(&m);

    /* A per-message expiration shorter than the queue's: the message leaves after ~50 ms. */
    t0 = now_ms();
    check_ok(mq_publish_confirmed_exp(pub, retry1, "{}", 2, "delay-exp", 50, TIMEOUT_MS, &e), &e,
             "publish with expiration");
    CHECK_INT_EQ(mq_consume_next(con, TIMEOUT_MS, &m, &e), 0);
    CHECK_STR_EQ(m.message_id, "delay-exp");
    CHECK_INT_EQ(m.death_count, 1);
    check_ok(mq_ack(con, m.delivery_tag, &e), &e, "ack");
    mq_msg_free(&m);
    mq_close(con);
    mq_close(pub);
}

/* Many publishes outstanding, confirms read through mq_confirm_next(). */
static void test_confirm_window(void)
{
    enum { N = 1000 };
    static unsigned char acked[N + 1];
    struct errbuf e = {0};
    struct mq_confirm ev;
    uint64_t tag, done = 0;
    uint32_t msgs = 0;
    char id[32];
    int fds[2], rc;
    int64_t t0;
    mq_conn *c = open_conn();

    check_ok(mq_purge(c, TOPOLOGY_NOTIFY_DEAD, &e), &e, "purge");
    memset(acked, 0, sizeof(acked));
    for (int i = 1; i <= N; i++) {
        snprintf(id, sizeof(id), "win-%d", i);
        check_ok(mq_publish_nowait(c, TOPOLOGY_NOTIFY_DEAD, id, strlen(id), id, 0, &tag, &e), &e,
                 "publish_nowait");
        CHECK_INT_EQ(tag, i);
    }
    while (done < N) {
        rc = mq_confirm_next(c, TIMEOUT_MS, -1, &ev, &e);
        check_ok(rc, &e, "confirm_next");
        CHECK_INT_EQ(ev.kind, MQ_CONFIRM_ACK);
        for (uint64_t t = ev.multiple ? 1 : ev.tag; t <= ev.tag; t++) {
            if (!acked[t]) {
                acked[t] = 1;
                done++;
            }
        }
    }
    check_ok(mq_queue_counts(c, TOPOLOGY_NOTIFY_DEAD, &msgs, NULL, &e), &e, "counts");
    CHECK_INT_EQ(msgs, N);
    check_ok(mq_purge(c, TOPOLOGY_NOTIFY_DEAD, &e), &e, "purge");

    /* Idle: a timeout; a readable wake fd ends the wait at once. */
    CHECK_INT_EQ(mq_confirm_next(c, 100, -1, &ev, &e), 1);
    CHECK_INT_EQ(pipe(fds), 0);
    CHECK_INT_EQ(write(fds[1], "x", 1), 1);
    t0 = now_ms();
    CHECK_INT_EQ(mq_confirm_next(c, 3000, fds[0], &ev, &e), 2);
    CHECK(now_ms() - t0 < 500);
    {
        char b;
        CHECK_INT_EQ(read(fds[0], &b, 1), 1);
    }
    t0 = now_ms();
    CHECK_INT_EQ(mq_confirm_next(c, 1500, fds[0], &ev, &e), 1); /* spans two poll slices */
    CHECK(now_ms() - t0 >= 1490);

    /* An unroutable routing key comes back as a failure, not a silent confirm ... */
    CHECK_INT_EQ(
        mq_publish_confirmed(c, "paynotify.no-such-queue", "{}", 2, "lost-1", TIMEOUT_MS, &e), -1);
    CHECK_INT_EQ(e.kind, ERRBUF_TRANSIENT);
    check_msg(&e, "reaches no queue");
    /* ... and the connection stays usable. */
    CHECK_INT_EQ(mq_failed(c), 0);
    check_ok(mq_publish_confirmed(c, TOPOLOGY_NOTIFY_DEAD, "{}", 2, "ok-1", TIMEOUT_MS, &e), &e,
             "publish after return");
    check_ok(mq_purge(c, TOPOLOGY_NOTIFY_DEAD, &e), &e, "purge");
    close(fds[0]);
    close(fds[1]);
    mq_close(c);
}

static void test_broker_closes(void)
{
    struct errbuf e = {0};
    struct mq_msg m;
    uint32_t msgs;
    mq_conn *c = open_conn(), *other;

    /* 404 on a passive declare of a missing queue: clear message, sticky. */
    CHECK_INT_EQ(mq_queue_counts(c, "paynotify.no-such-queue", &msgs, NULL, &e), -1);
    fprintf(stderr, "  missing queue: %s\n", e.msg);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    check_msg(&e, "404");
    check_msg(&e, "paynotify.no-such-queue");
    CHECK_INT_EQ(mq_failed(c), 1);
    e.msg[0] = '\0';
    CHECK_INT_EQ(mq_publish_confirmed(c, TOPOLOGY_NOTIFY, "{}", 2, "x", TIMEOUT_MS, &e), -1);
    check_msg(&e, "404");
    CHECK_INT_EQ(mq_consume_next(c, 10, &m, &e), -1);
    CHECK_INT_EQ(mq_ack(c, 1, &e), -1);
    mq_close(c); /* the connection is still up: a polite close */

    /* Acking a tag the broker never delivered: it closes the channel (406), seen on the next
     * read. */
    c = open_conn();
    check_ok(mq_consume_start(c, TOPOLOGY_CALLBACKS_PARKED, 1, &e), &e, "consume");
    check_ok(mq_ack(c, 12345, &e), &e, "ack of unknown tag is sent");
    CHECK_INT_EQ(mq_consume_next(c, TIMEOUT_MS, &m, &e), -1);
    fprintf(stderr, "  unknown tag: %s\n", e.msg);
    check_msg(&e, "406");
    mq_close(c);

    /* The queue a consumer reads is deleted: the broker cancels the consumer. */
    c = open_conn();
    other = open_conn();
    check_ok(mq_consume_start(c, TOPOLOGY_CALLBACKS_PARKED, 1, &e), &e, "consume");
    check_ok(mq_queue_delete(other, TOPOLOGY_CALLBACKS_PARKED, &e), &e, "delete");
    CHECK_INT_EQ(mq_consume_next(c, TIMEOUT_MS, &m, &e), -1);
    fprintf(stderr, "  queue deleted: %s\n", e.msg);
    check_msg(&e, "cancelled");
    CHECK_INT_EQ(mq_failed(c), 1);
    mq_close(c);
    mq_close(other);
}

static void run_suite(const char *type, const char *other)
{
    fprintf(stderr, "queue type %s\n", type);
    test_topology(type, other);
    /* test_topology() left the connection failed: declare on a fresh one. */
    {
        struct errbuf e = {0};
        mq_conn *c = open_conn();

        check_ok(mq_declare_topology(c, type, delays, N_DELAYS, &e), &e, "declare");
        mq_close(c);
    }
    test_round_trip();
    test_delay_queue();
    test_confirm_window();
    test_broker_closes();
    delete_topology();
}

int main(void)
{
    amqp_url = getenv("PAYNOTIFY_AMQP_URL");
    if (amqp_url == NULL || amqp_url[0] == '\0') {
        fprintf(stderr, "test_mq: PAYNOTIFY_AMQP_URL is not set; run it through scripts/test "
                        "(or source a stack.env from scripts/lib/stack.sh)\n");
        return 1;
    }
    amqp_url = test_vhost_url(amqp_url, "test_mq");
    test_open_errors();
    run_suite("classic", "quorum");
    run_suite("quorum", "classic");
    TEST_PASS();
    return 0;
}
