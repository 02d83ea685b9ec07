/* bench/db_yardstick.c: bench-db-yardstick, MariaDB's own speed for the worker's transaction,
 * as scripts/bench's second yardstick. --threads threads (one connection each, like the
 * worker's callback threads) run for --seconds, each transaction paying one fresh PENDING
 * order of its own:
 *
 *   raw    (--mode raw): the statements of the apply transaction and nothing else --
 *          BEGIN; SELECT ... FOR UPDATE; INSERT payment_log; UPDATE orders (CAS on version);
 *          INSERT notifications; COMMIT
 *   apply  (--mode apply): store/orders' orders_apply_event(), the product's own transaction
 *          (which adds the order re-read and LAST_INSERT_ID round trips)
 *
 * The orders are inserted up front with one INSERT ... SELECT over MariaDB's sequence engine,
 * under an id prefix unique to the run. JSON summary on stdout: transactions/s and
 * per-transaction latency. */
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "channel/channel.h"
#include "common/clock.h"
#include "common/errbuf.h"
#include "store/db.h"
#include "store/orders.h"

#define DBY_MAX_THREADS 64

struct dby;

struct dby_thread {
    struct dby *y;
    pthread_t tid;
    int64_t tx;
    int64_t *lat_us; /* one per transaction, up to cap */
    int64_t cap;
};

struct dby {
    const char *url;
    const char *mode;
    char prefix[32];
    int threads;
    int64_t n_orders;
    atomic_llong next; /* next order number to take */
    _Atomic int64_t end_ms;
    atomic_int failed;
    char err[300];
    pthread_mutex_t mu;
};

static int64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void fail(struct dby *y, const struct errbuf *e)
{
    pthread_mutex_lock(&y->mu);
    if (!atomic_load(&y->failed))
        snprintf(y->err, sizeof(y->err), "%s", e->msg);
    atomic_store(&y->failed, 1);
    pthread_mutex_unlock(&y->mu);
}

/* A Stripe payment_intent.succeeded of the size scripts/bench posts (~700 bytes). */
static void fake_event(char *buf, size_t len, const char *order_id, const char *event_id,
                       const char *txn_id)
{
    snprintf(buf, len,
             "{\"id\":\"%s\",\"object\":\"event\",\"api_version\":\"2023-10-16\","
             "\"created\":1700000000,\"type\":\"payment_intent.succeeded\",\"livemode\":false,"
             "\"pending_webhooks\":1,\"request\":{\"id\":null,\"idempotency_key\":null},"
             "\"data\":{\"object\":{\"id\":\"%s\",\"object\":\"payment_intent\","
             "\"amount\":1250,\"amount_capturable\":0,\"amount_received\":1250,"
             "\"capture_method\":\"automatic\",\"confirmation_method\":\"automatic\","
             "\"created\":1700000000,\"currency\":\"usd\",\"customer\":null,"
             "\"description\":\"bench order\",\"latest_charge\":\"ch_bench\","
             "\"livemode\":false,\"metadata\":{\"order_id\":\"%s\"},"
             "\"payment_method\":\"pm_bench\",\"payment_method_types\":[\"card\"],"
             "\"status\":\"succeeded\"}}}",
             event_id, txn_id, order_id);
}

static int tx_raw(db_conn *db, const char *order_id, const char *event_id, const char *txn_id,
                  const char *raw, struct errbuf *e)
{
    char now[32], webhook_id[80], payload[1024];
    db_rows *r;
    int version, found, rc = -1;
    int64_t n;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (db_begin(db, e) != 0)
        return -1;
    r = db_queryf(db, e,
                  "SELECT id, business, business_order_id, amount, currency, channel, subject,"
                  " notify_url, expire_at, cancel_url, status, provider_txn_id, paid_at,"
                  " notify_status, notify_attempts, notify_last_error, version, created_at,"
                  " updated_at FROM orders WHERE id = %s FOR UPDATE",
                  order_id);
    if (r == NULL)
        goto out;
    found = db_rows_next(r);
    version = found ? (int)db_rows_int(r, 16) : 0;
    db_rows_free(r);
    if (!found) {
        errbuf_set(e, ERRBUF_PERMANENT, "order %s missing", order_id);
        goto out;
    }
    if (db_execf(db, e,
                 "INSERT INTO payment_log (channel, kind, provider_event_id, event_type, order_id,"
                 " provider_txn_id, amount, currency, outcome, detail, callback_id, raw,"
                 " created_at) VALUES ('stripe', 'callback', %s, 'payment_intent.succeeded', %s,"
                 " %s, 1250, 'USD', 'pay', NULL, %s, %s, %s)",
                 event_id, order_id, txn_id, event_id, raw, now) < 0)
        goto out;
    n = db_execf(db, e,
                 "UPDATE orders SET status = 'PAID', provider_txn_id = %s, paid_at = %s,"
                 " notify_status = 'PENDING', version = version + 1, updated_at = %s"
                 " WHERE id = %s AND version = %d AND status = 'PENDING'",
                 txn_id, now, now, order_id, version);
    if (n != 1) {
        if (n == 0)
            errbuf_set(e, ERRBUF_PERMANENT, "CAS lost on %s", order_id);
        goto out;
    }
    snprintf(webhook_id, sizeof(webhook_id), "msg_%s", event_id + 4);
    snprintf(payload, sizeof(payload),
             "{\"order_id\":\"%s\",\"business\":\"bench\",\"business_order_id\":\"%s\","
             "\"amount\":1250,\"currency\":\"USD\",\"channel\":\"stripe\",\"subject\":\"bench\","
             "\"status\":\"PAID\",\"provider_txn_id\":\"%s\",\"paid_at\":\"%s\","
             "\"notify_status\":\"PENDING\",\"notify_attempts\":0,\"created_at\":\"%s\","
             "\"updated_at\":\"%s\"}",
             order_id, order_id, txn_id, now, now, now);
    if (db_execf(db, e,
                 "INSERT INTO notifications (webhook_id, order_id, business, event_type,"
                 " notify_url, payload, status, attempts, created_at, updated_at) VALUES"
                 " (%s, %s, 'bench', 'order.paid', 'http://127.0.0.1:9/hook', %s, 'PENDING', 0,"
                 " %s, %s)",
                 webhook_id, order_id, payload, now, now) < 0)
        goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0)
        db_rollback(db);
    return rc;
}

static int tx_apply(db_conn *db, const char *order_id, const char *event_id, const char *txn_id,
                    const char *raw, struct errbuf *e)
{
    struct pay_event ev;
    struct apply_result res;

    memset(&ev, 0, sizeof(ev));
    ev.kind = PAY_EVENT_SUCCEEDED;
    snprintf(ev.event_id, sizeof(ev.event_id), "%s", event_id);
    snprintf(ev.event_type, sizeof(ev.event_type), "payment_intent.succeeded");
    snprintf(ev.order_id, sizeof(ev.order_id), "%s", order_id);
    snprintf(ev.txn_id, sizeof(ev.txn_id), "%s", txn_id);
    ev.amount = 1250;
    snprintf(ev.currency, sizeof(ev.currency), "USD");
    if (orders_apply_event(db, "stripe", &ev, event_id, raw, &res, e) != 0)
        return -1;
    if (res.decision != ORDER_DECIDE_PAY || res.notification_id <= 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "order %s was not paid (decision %s)", order_id,
                   orderstate_decision_name(res.decision));
        return -1;
    }
    return 0;
}

static void *thread_main(void *arg)
{
    struct dby_thread *t = arg;
    struct dby *y = t->y;
    struct errbuf e = {0};
    db_conn *db;
    int apply = strcmp(y->mode, "apply") == 0;

    db_thread_init();
    db = db_open(y->url, 5000, &e);
    if (db == NULL) {
        fail(y, &e);
        db_thread_end();
        return NULL;
    }
    while (!atomic_load(&y->failed)) {
        char order_id[64], event_id[72], txn_id[72], raw[2048];
        long long k = atomic_fetch_add(&y->next, 1);
        int64_t t0;

        if (k >= y->n_orders || clock_mono_ms() >= atomic_load(&y->end_ms))
            break;
        snprintf(order_id, sizeof(order_id), "%s%lld", y->prefix, k);
        snprintf(event_id, sizeof(event_id), "evt_%s%lld", y->prefix, k);
        snprintf(txn_id, sizeof(txn_id), "pi_%s%lld", y->prefix, k);
        fake_event(raw, sizeof(raw), order_id, event_id, txn_id);
        t0 = now_us();
        if ((apply ? tx_apply(db, order_id, event_id, txn_id, raw, &e)
                   : tx_raw(db, order_id, event_id, txn_id, raw, &e)) != 0) {
            fail(y, &e);
            break;
        }
        if (t->tx < t->cap)
            t->lat_us[t->tx] = now_us() - t0;
        t->tx++;
    }
    db_close(db);
    db_thread_end();
    return NULL;
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    struct dby y;
    struct dby_thread th[DBY_MAX_THREADS];
    struct errbuf e = {0};
    double seconds = 10, elapsed;
    db_conn *db;
    int64_t t0, t1, total = 0, *all, n_all = 0;

    memset(&y, 0, sizeof(y));
    y.mode = "raw";
    y.threads = 4;
    y.n_orders = 100000;
    pthread_mutex_init(&y.mu, NULL);
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--url") == 0)
            y.url = argv[i + 1];
        else if (strcmp(argv[i], "--seconds") == 0)
            seconds = atof(argv[i + 1]);
        else if (strcmp(argv[i], "--threads") == 0)
            y.threads = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--orders") == 0)
            y.n_orders = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--mode") == 0)
            y.mode = argv[i + 1];
        else {
            fprintf(stderr, "bench-db-yardstick: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (y.url == NULL || y.threads < 1 || y.threads > DBY_MAX_THREADS || y.n_orders < 1 ||
        seconds <= 0 || (strcmp(y.mode, "raw") != 0 && strcmp(y.mode, "apply") != 0)) {
        fprintf(stderr, "usage: bench-db-yardstick --url MYSQL_URL [--mode raw|apply]"
                        " [--threads T] [--seconds S] [--orders N]\n");
        return 2;
    }
    snprintf(y.prefix, sizeof(y.prefix), "yb%c%lx_", y.mode[0],
             (unsigned long)(clock_now_ms() % 0xffffff) ^ (unsigned long)getpid());
    db_library_init();
    db = db_open(y.url, 5000, &e);
    if (db == NULL) {
        fprintf(stderr, "bench-db-yardstick: %s\n", e.msg);
        return 1;
    }
    {
        char now[32];
        clock_format_sql(clock_now_ms(), now, sizeof(now));
        /* Same shape as an order created through the API; seq_0_to_N is MariaDB's sequence
         * engine. */
        if (db_execf(db, &e,
                     "INSERT INTO orders (id, business, business_order_id, amount, currency,"
                     " channel, subject, notify_url, request_hash, status, notify_status, version,"
                     " created_at, updated_at) SELECT CONCAT(%s, seq), 'bench', CONCAT(%s, seq),"
                     " 1250, 'USD', 'stripe', 'bench order', 'http://127.0.0.1:9/hook',"
                     " SHA2(seq, 256), 'PENDING', 'NONE', 0, %s, %s FROM seq_0_to_%lld",
                     y.prefix, y.prefix, now, now, (long long)(y.n_orders - 1)) < 0) {
            fprintf(stderr, "bench-db-yardstick: creating orders: %s\n", e.msg);
            db_close(db);
            return 1;
        }
    }
    /* The driver measures the server's CPU from here on, without the order insert. */
    fprintf(stderr, "orders ready\n");
    fflush(stderr);
    atomic_store(&y.end_ms, INT64_MAX);
    t0 = now_us();
    atomic_store(&y.end_ms, clock_mono_ms() + (int64_t)(seconds * 1000));
    for (int i = 0; i < y.threads; i++) {
        th[i].y = &y;
        th[i].tx = 0;
        th[i].cap = 1000000;
        th[i].lat_us = malloc(sizeof(int64_t) * (size_t)th[i].cap);
        if (th[i].lat_us == NULL)
            abort();
        pthread_create(&th[i].tid, NULL, thread_main, &th[i]);
    }
    for (int i = 0; i < y.threads; i++) {
        pthread_join(th[i].tid, NULL);
        total += th[i].tx;
    }
    t1 = now_us();
    elapsed = (double)(t1 - t0) / 1e6;
    if (atomic_load(&y.failed)) {
        fprintf(stderr, "bench-db-yardstick: %s\n", y.err);
        db_close(db);
        return 1;
    }
    all = malloc(sizeof(int64_t) * (size_t)(total + 1));
    if (all == NULL)
        abort();
    for (int i = 0; i < y.threads; i++) {
        int64_t k = th[i].tx < th[i].cap ? th[i].tx : th[i].cap;
        memcpy(all + n_all, th[i].lat_us, sizeof(int64_t) * (size_t)k);
        n_all += k;
        free(th[i].lat_us);
    }
    qsort(all, (size_t)n_all, sizeof(int64_t), cmp_i64);
    printf("{\"mode\":\"%s\",\"threads\":%d,\"transactions\":%" PRId64 ",\"seconds\":%.3f,"
           "\"tx_per_s\":%.1f,\"ran_out_of_orders\":%s,\"latency_ms\":{\"p50\":%.3f,"
           "\"p99\":%.3f,\"max\":%.3f}}\n",
           y.mode, y.threads, total, elapsed, (double)total / elapsed,
           total >= y.n_orders ? "true" : "false", n_all ? (double)all[n_all / 2] / 1000.0 : 0.0,
           n_all ? (double)all[(int64_t)((double)n_all * 0.99)] / 1000.0 : 0.0,
           n_all ? (double)all[n_all - 1] / 1000.0 : 0.0);
    free(all);
    db_close(db);
    db_library_end();
    pthread_mutex_destroy(&y.mu);
    return 0;
}
