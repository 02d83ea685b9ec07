/* bench/amqp_yardstick.c: bench-amqp-yardstick, the broker's own speed as scripts/bench's
 * yardstick. Through queue/mq (rabbitmq-c), on paynotify's own topology (exchange paynotify,
 * queue paynotify.callbacks of the given type), one thread publishes persistent messages of
 * --size bytes with up to --window confirms outstanding, while another consumes them with
 * --prefetch and a manual ack per message, as a worker does. Both run for --seconds; the
 * JSON summary on stdout gives confirmed publishes/s and acked consumes/s over that window.
 * Use a fresh vhost: the queue's leftovers are not cleaned up. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/errbuf.h"
#include "queue/mq.h"
#include "queue/topology.h"

struct yard {
    const char *url;
    const char *queue_type;
    size_t size;
    int window;
    int prefetch;
    _Atomic int64_t end_ms; /* both sides stop counting at this monotonic time */
    int64_t start_ms;       /* set once both connections are up */
    atomic_int started;
    atomic_int failed;
    int64_t published, confirmed, nacked;
    int64_t consumed;
    char err[300];
    pthread_mutex_t mu;
};

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(struct yard *y, const char *who, const struct errbuf *e)
{
    pthread_mutex_lock(&y->mu);
    if (!atomic_load(&y->failed))
        snprintf(y->err, sizeof(y->err), "%s: %s", who, e->msg);
    atomic_store(&y->failed, 1);
    pthread_mutex_unlock(&y->mu);
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Delivery tags 1, 2, ... and which of them the broker settled; low is the lowest unsettled. */
struct tags {
    unsigned char *done;
    uint64_t cap, low, high;
};

static void tags_add(struct tags *t, uint64_t tag)
{
    if (tag >= t->cap) {
        uint64_t cap = t->cap ? t->cap * 2 : 65536;
        while (cap <= tag)
            cap *= 2;
        t->done = realloc(t->done, cap);
        if (t->done == NULL)
            abort();
        memset(t->done + t->cap, 0, cap - t->cap);
        t->cap = cap;
    }
    if (t->low == 0)
        t->low = tag;
    t->high = tag;
}

/* Settles tag (and, with multiple, every lower one); returns how many were newly settled. */
static int64_t tags_settle(struct tags *t, uint64_t tag, int multiple)
{
    int64_t n = 0;
    if (tag > t->high)
        tag = t->high;
    for (uint64_t k = multiple ? t->low : tag; k <= tag && k != 0; k++) {
        if (!t->done[k]) {
            t->done[k] = 1;
            n++;
        }
    }
    while (t->low != 0 && t->low <= t->high && t->done[t->low])
        t->low++;
    return n;
}

static void *publisher(void *arg)
{
    struct yard *y = arg;
    struct errbuf e = {0};
    mq_conn *c = mq_open(y->url, 5000, &e);
    char *body = malloc(y->size);
    struct tags tg = {0};
    int64_t outstanding = 0;

    if (body == NULL)
        abort();
    /* JSON-ish filler of the envelope's size. */
    memset(body, 'x', y->size);
    body[0] = '{';
    body[y->size - 1] = '}';
    if (c == NULL) {
        fail(y, "publisher connect", &e);
        free(body);
        return NULL;
    }
    while (!atomic_load(&y->failed)) {
        struct mq_confirm cf;
        int64_t n;
        int rc;

        while (now_ms() < y->end_ms && outstanding < y->window) {
            uint64_t tag;
            if (mq_publish_nowait(c, TOPOLOGY_CALLBACKS, body, y->size, NULL, 0, &tag, &e) != 0) {
                fail(y, "publish", &e);
                goto out;
            }
            tags_add(&tg, tag);
            outstanding++;
            y->published++;
        }
        if (outstanding == 0)
            break;
        rc = mq_confirm_next(c, 1000, -1, &cf, &e);
        if (rc == 1) {
            if (now_ms() > y->end_ms + 10000) {
                errbuf_set(&e, ERRBUF_TRANSIENT, "confirms stopped arriving");
                fail(y, "confirm", &e);
                break;
            }
            continue;
        }
        if (rc < 0) {
            fail(y, "confirm", &e);
            break;
        }
        if (cf.kind == MQ_CONFIRM_RETURN)
            continue;
        n = tags_settle(&tg, cf.tag, cf.multiple);
        outstanding -= n;
        /* Only confirms that arrive inside the window count. */
        if (now_ms() <= y->end_ms) {
            if (cf.kind == MQ_CONFIRM_ACK)
                y->confirmed += n;
            else
                y->nacked += n;
        }
    }
out:
    mq_close(c);
    free(tg.done);
    free(body);
    return NULL;
}

static void *consumer(void *arg)
{
    struct yard *y = arg;
    struct errbuf e = {0};
    mq_conn *c = mq_open(y->url, 5000, &e);

    if (c == NULL) {
        fail(y, "consumer connect", &e);
        return NULL;
    }
    if (mq_consume_start(c, TOPOLOGY_CALLBACKS, (uint16_t)y->prefetch, &e) != 0) {
        fail(y, "consume", &e);
        mq_close(c);
        return NULL;
    }
    atomic_store(&y->started, 1);
    while (!atomic_load(&y->failed) && now_ms() < y->end_ms) {
        struct mq_msg m;
        int rc = mq_consume_next(c, 100, &m, &e);
        if (rc == 1)
            continue;
        if (rc < 0) {
            fail(y, "consume", &e);
            break;
        }
        if (mq_ack(c, m.delivery_tag, &e) != 0) {
            fail(y, "ack", &e);
            mq_msg_free(&m);
            break;
        }
        mq_msg_free(&m);
        if (now_ms() <= y->end_ms)
            y->consumed++;
    }
    mq_close(c);
    return NULL;
}

int main(int argc, char **argv)
{
    struct yard y;
    struct errbuf e = {0};
    double seconds = 10;
    pthread_t pt, ct;
    mq_conn *setup;
    int64_t delays[1] = {600000};
    double elapsed;

    memset(&y, 0, sizeof(y));
    y.queue_type = "quorum";
    y.size = 1024;
    y.window = 100;
    y.prefetch = 100;
    pthread_mutex_init(&y.mu, NULL);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0)
            y.url = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--size") == 0)
            y.size = (size_t)atol(argv[i + 1]);
        else if (strcmp(argv[i], "--window") == 0)
            y.window = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--prefetch") == 0)
            y.prefetch = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--queue-type") == 0)
            y.queue_type = argv[i + 1];
        else {
            fprintf(stderr, "bench-amqp-yardstick: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (y.url == NULL || y.size < 2 || y.window < 1 || y.prefetch < 1 || y.prefetch > 65535 ||
        seconds <= 0) {
        fprintf(stderr, "usage: bench-amqp-yardstick --url AMQP_URL [--seconds S] [--size B]"
                        " [--window W] [--prefetch P] [--queue-type quorum|classic]\n");
        return 2;
    }
    setup = mq_open(y.url, 5000, &e);
    if (setup == NULL || mq_declare_topology(setup, y.queue_type, delays, 1, &e) != 0) {
        fprintf(stderr, "bench-amqp-yardstick: setup: %s\n", e.msg);
        mq_close(setup);
        return 1;
    }
    mq_close(setup);
    y.end_ms = INT64_MAX;
    pthread_create(&ct, NULL, consumer, &y);
    /* The window opens once the consumer is registered. */
    while (!atomic_load(&y.started) && !atomic_load(&y.failed))
        sleep_ms(1);
    y.start_ms = now_ms();
    y.end_ms = y.start_ms + (int64_t)(seconds * 1000);
    pthread_create(&pt, NULL, publisher, &y);
    pthread_join(pt, NULL);
    pthread_join(ct, NULL);
    elapsed = (double)(y.end_ms - y.start_ms) / 1000.0;
    if (atomic_load(&y.failed)) {
        fprintf(stderr, "bench-amqp-yardstick: %s\n", y.err);
        return 1;
    }
    printf("{\"queue_type\":\"%s\",\"size\":%zu,\"window\":%d,\"prefetch\":%d,\"seconds\":%.3f,"
           "\"published\":%" PRId64 ",\"confirmed\":%" PRId64 ",\"nacked\":%" PRId64
           ",\"consumed\":%" PRId64 ",\"publish_per_s\":%.1f,\"consume_per_s\":%.1f}\n",
           y.queue_type, y.size, y.window, y.prefetch, elapsed, y.published, y.confirmed, y.nacked,
           y.consumed, (double)y.confirmed / elapsed, (double)y.consumed / elapsed);
    pthread_mutex_destroy(&y.mu);
    return 0;
}
