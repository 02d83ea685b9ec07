/* tests/integration/test_outbox.c: the notify stage's batched MySQL work in store/outbox
 * against a real MariaDB (PAYNOTIFY_MYSQL_URL; a database of its own, migrated for this run
 * and dropped afterwards): notifications read with their orders in one query, and finished
 * attempts recorded many per transaction with the same outcome as one by one. */
#include "common/clock.h"
#include "common/errbuf.h"
#include "store/db.h"
#include "store/migrate.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "tests/unit/check.h"
#include "tests/integration/testdb.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char db_url[512];
static char db_name[64];
static db_conn *db;

static void make_database(const char *base_url)
{
    db = testdb_create(base_url, "outbox", db_name, db_url, NULL);
}

/* A new order with its order.paid outbox row; *n is that row as the notify stage reads it. */
static void make_notification(const char *biz_order, struct order *o, struct notification *n)
{
    struct errbuf e = {0};
    struct order_new q = {.business = "shop",
                          .business_order_id = biz_order,
                          .amount = 1250,
                          .currency = "USD",
                          .channel = "stripe",
                          .subject = "a \"quoted\" subject",
                          .notify_url = "https://shop.example/hook"};
    char now[32], webhook_id[65];
    int64_t id = 0;

    CHECK_INT_EQ(orders_create(db, &q, o, &e), ORDERS_CREATED);
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    CHECK_INT_EQ(outbox_insert(db, o, "order.paid", now, &id, webhook_id, &e), 0);
    CHECK_INT_EQ(
        db_execf(db, &e, "UPDATE orders SET notify_status = 'PENDING' WHERE id = %s", o->id), 1);
    CHECK_INT_EQ(outbox_get(db, id, n, &e), 0);
}

static struct outbox_record attempt(const struct notification *n, int ok, long http,
                                    const char *error, const char *head)
{
    struct outbox_record r;

    memset(&r, 0, sizeof(r));
    r.n = n;
    r.a.ok = ok;
    r.a.http_status = http;
    r.a.error = ok ? "" : error;
    r.a.latency_ms = 7;
    snprintf(r.a.response_head, sizeof(r.a.response_head), "%s", head);
    return r;
}

/* The attempt rows of notification id as "attempt:status:error:head" joined by '|'. */
static void history(int64_t id, char *out, size_t len)
{
    struct errbuf e = {0};
    db_rows *r = db_queryf(db, &e,
                           "SELECT attempt, COALESCE(http_status, 0), COALESCE(error, '-'),"
                           " COALESCE(response_head, '-') FROM notification_attempts WHERE"
                           " notification_id = %lld ORDER BY id",
                           (long long)id);
    size_t used = 0;

    CHECK(r != NULL);
    out[0] = '\0';
    while (db_rows_next(r))
        used += (size_t)snprintf(out + used, len - used, "%s%s:%s:%s:%s", used ? "|" : "",
                                 db_rows_get(r, 0), db_rows_get(r, 1), db_rows_get(r, 2),
                                 db_rows_get(r, 3));
    db_rows_free(r);
}

/* "status attempts last_http last_error" of a notification, and of its order. */
static void state(const struct notification *n, char *nstate, char *ostate, size_t len)
{
    struct errbuf e = {0};
    db_rows *r = db_queryf(db, &e,
                           "SELECT n.status, n.attempts, COALESCE(n.last_http_status, 0),"
                           " COALESCE(n.last_error, '-'), o.notify_status, o.notify_attempts,"
                           " COALESCE(o.notify_last_error, '-') FROM notifications n JOIN orders o"
                           " ON o.id = n.order_id WHERE n.id = %lld",
                           (long long)n->id);

    CHECK(r != NULL && db_rows_next(r));
    snprintf(nstate, len, "%s %s %s %s", db_rows_get(r, 0), db_rows_get(r, 1), db_rows_get(r, 2),
             db_rows_get(r, 3));
    snprintf(ostate, len, "%s %s %s", db_rows_get(r, 4), db_rows_get(r, 5), db_rows_get(r, 6));
    db_rows_free(r);
}

/* One query for notifications and their orders; repeated ids, a missing notification and
 * a notification whose order is gone. */
static void test_get_deliveries(void)
{
    struct errbuf e = {0};
    struct order o1, o2, got;
    struct notification n1, n2;
    struct outbox_delivery d[5];
    char *j1, *j2;
    int64_t orphan;

    make_notification("get-1", &o1, &n1);
    make_notification("get-2", &o2, &n2);
    CHECK(db_execf(db, &e,
                   "INSERT INTO notifications (webhook_id, order_id, business, event_type,"
                   " notify_url, payload, status, created_at, updated_at) VALUES ('msg_orphan',"
                   " 'po_gone', 'shop', 'order.paid', 'https://shop.example/hook', '{}',"
                   " 'PENDING', NOW(3), NOW(3))") == 1);
    {
        db_rows *r = db_queryf(db, &e, "SELECT LAST_INSERT_ID()");
        CHECK(r != NULL && db_rows_next(r));
        orphan = db_rows_int(r, 0);
        db_rows_free(r);
    }
    memset(d, 0, sizeof(d));
    d[0].id = n2.id;
    d[1].id = 987654321;
    d[2].id = n1.id;
    d[3].id = n2.id;
    d[4].id = orphan;
    CHECK_INT_EQ(outbox_get_deliveries(db, d, 5, &e), 0);
    CHECK_INT_EQ(d[0].found, 2);
    CHECK_INT_EQ(d[1].found, 0);
    CHECK_INT_EQ(d[2].found, 2);
    CHECK_INT_EQ(d[3].found, 2);
    CHECK_INT_EQ(d[4].found, 1);
    CHECK_STR_EQ(d[4].n.order_id, "po_gone");
    /* Exactly what outbox_get() and orders_get() read, field for field. */
    CHECK(memcmp(&d[2].n, &n1, sizeof(n1)) == 0);
    CHECK(memcmp(&d[0].n, &n2, sizeof(n2)) == 0);
    CHECK(memcmp(&d[3].n, &n2, sizeof(n2)) == 0);
    CHECK_INT_EQ(orders_get(db, o1.id, &got, &e), 0);
    j1 = orders_to_json(&got);
    j2 = orders_to_json(&d[2].o);
    CHECK_STR_EQ(j2, j1);
    free(j1);
    free(j2);
    CHECK(memcmp(&d[2].o, &got, sizeof(got)) == 0);
    CHECK_STR_EQ(d[3].o.id, o2.id);
    TEST_PASS();
}

/* Two copies of one notification finished together: attempts 0 and 1 in batch order, and
 * the row ends as if they had been recorded one after the other. */
static void test_two_copies_one_batch(void)
{
    struct errbuf e = {0};
    struct order o;
    struct notification n;
    struct outbox_record r[2];
    char h[1024], ns[256], os[256];

    make_notification("copies-1", &o, &n);
    r[0] = attempt(&n, 0, 500, "HTTP 500", "endpoint failure");
    r[1] = attempt(&n, 1, 200, "", "ok");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 2, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 1);
    CHECK_INT_EQ(r[1].attempts_after, 2);
    CHECK_STR_EQ(r[0].status, "DELIVERED");
    CHECK_STR_EQ(r[1].status, "DELIVERED");
    history(n.id, h, sizeof(h));
    CHECK_STR_EQ(h, "0:500:HTTP 500:endpoint failure|1:200:-:ok");
    state(&n, ns, os, sizeof(ns));
    CHECK_STR_EQ(ns, "DELIVERED 2 200 -");
    CHECK_STR_EQ(os, "DELIVERED 2 -");

    /* A late failure of another copy: counted, but DELIVERED never goes back. */
    r[0] = attempt(&n, 0, 0, "timeout after 2000 ms", "");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 1, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 3);
    CHECK_STR_EQ(r[0].status, "DELIVERED");
    history(n.id, h, sizeof(h));
    CHECK_STR_EQ(h, "0:500:HTTP 500:endpoint failure|1:200:-:ok|2:0:timeout after 2000 ms:-");
    state(&n, ns, os, sizeof(ns));
    CHECK_STR_EQ(ns, "DELIVERED 3 0 timeout after 2000 ms");
    CHECK_STR_EQ(os, "DELIVERED 3 -");

    /* Delivered first, failed second, in one batch: still DELIVERED. */
    make_notification("copies-2", &o, &n);
    r[0] = attempt(&n, 1, 204, "", "");
    r[1] = attempt(&n, 0, 503, "HTTP 503", "busy");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 2, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 1);
    CHECK_INT_EQ(r[1].attempts_after, 2);
    state(&n, ns, os, sizeof(ns));
    CHECK_STR_EQ(ns, "DELIVERED 2 503 HTTP 503");
    CHECK_STR_EQ(os, "DELIVERED 2 -");
    TEST_PASS();
}

/* Several notifications, failures only, over two batches: each keeps counting, the order
 * carries the last error, and strings that need escaping arrive intact. */
static void test_failures_and_escaping(void)
{
    struct errbuf e = {0};
    struct order oa, ob;
    struct notification a, b;
    struct outbox_record r[3];
    const char *nasty = "it's \"bad\" \\ 100% ünïcødé; DROP TABLE orders; --";
    char h[2048], want[1024], ns[256], os[256];

    make_notification("fail-a", &oa, &a);
    make_notification("fail-b", &ob, &b);
    r[0] = attempt(&b, 0, 500, "HTTP 500", nasty);
    r[1] = attempt(&a, 0, 0, nasty, "");
    r[2] = attempt(&b, 0, 502, "HTTP 502", "");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 3, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 1);
    CHECK_INT_EQ(r[1].attempts_after, 1);
    CHECK_INT_EQ(r[2].attempts_after, 2);
    CHECK_STR_EQ(r[0].status, "PENDING");
    history(a.id, h, sizeof(h));
    snprintf(want, sizeof(want), "0:0:%s:-", nasty);
    CHECK_STR_EQ(h, want);
    history(b.id, h, sizeof(h));
    snprintf(want, sizeof(want), "0:500:HTTP 500:%s|1:502:HTTP 502:-", nasty);
    CHECK_STR_EQ(h, want);
    state(&a, ns, os, sizeof(ns));
    snprintf(want, sizeof(want), "PENDING 1 0 %s", nasty);
    CHECK_STR_EQ(ns, want);
    snprintf(want, sizeof(want), "PENDING 1 %s", nasty);
    CHECK_STR_EQ(os, want);
    state(&b, ns, os, sizeof(ns));
    CHECK_STR_EQ(ns, "PENDING 2 502 HTTP 502");
    CHECK_STR_EQ(os, "PENDING 2 HTTP 502");

    r[0] = attempt(&b, 1, 200, "", "");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 1, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 3);
    state(&b, ns, os, sizeof(ns));
    CHECK_STR_EQ(ns, "DELIVERED 3 200 -");
    CHECK_STR_EQ(os, "DELIVERED 3 -");
    TEST_PASS();
}

/* A row that does not exist records nothing and holds back nobody. */
static void test_missing_row(void)
{
    struct errbuf e = {0};
    struct order o;
    struct notification n, ghost;
    struct outbox_record r[2];
    char h[512];

    make_notification("missing-1", &o, &n);
    ghost = n;
    ghost.id = 987654321;
    snprintf(ghost.order_id, sizeof(ghost.order_id), "po_ghost");
    r[0] = attempt(&ghost, 1, 200, "", "");
    r[1] = attempt(&n, 1, 200, "", "");
    CHECK_INT_EQ(outbox_record_attempts(db, r, 2, &e), 0);
    CHECK_INT_EQ(r[0].attempts_after, 0);
    CHECK_STR_EQ(r[0].status, "");
    CHECK_INT_EQ(r[1].attempts_after, 1);
    CHECK_STR_EQ(r[1].status, "DELIVERED");
    history(ghost.id, h, sizeof(h));
    CHECK_STR_EQ(h, "");
    history(n.id, h, sizeof(h));
    CHECK_STR_EQ(h, "0:200:-:-");
    TEST_PASS();
}

/* Two connections record copies of the same notifications at the same time, in opposite
 * orders: no attempt number is taken twice and none is skipped. */
struct racer {
    const struct notification *n;
    int reverse;
    int failed;
};

#define RACE_ROUNDS 40

static void *race(void *arg)
{
    struct racer *rc = arg;
    struct errbuf e = {0};
    db_conn *c;

    db_thread_init();
    c = db_open(db_url, 5000, &e);
    if (c == NULL) {
        rc->failed = 1;
        db_thread_end();
        return NULL;
    }
    for (int i = 0, retries = 0; i < RACE_ROUNDS && retries < 100; i++) {
        struct outbox_record r[3];
        for (int k = 0; k < 3; k++)
            r[k] = attempt(&rc->n[rc->reverse ? 2 - k : k], 0, 500, "HTTP 500", "");
        if (outbox_record_attempts(c, r, 3, &e) != 0) {
            /* A deadlock victim tries again, as the notify stage's fallback would. */
            fprintf(stderr, "test_outbox: batch failed, again: %s\n", e.msg);
            retries++;
            i--;
        }
    }
    db_close(c);
    db_thread_end();
    return NULL;
}

static void test_concurrent_batches(void)
{
    struct errbuf e = {0};
    struct order o[3];
    struct notification n[3];
    struct racer a = {.n = n}, b = {.n = n, .reverse = 1};
    pthread_t ta, tb;

    make_notification("race-1", &o[0], &n[0]);
    make_notification("race-2", &o[1], &n[1]);
    make_notification("race-3", &o[2], &n[2]);
    CHECK(pthread_create(&ta, NULL, race, &a) == 0);
    CHECK(pthread_create(&tb, NULL, race, &b) == 0);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    CHECK(!a.failed && !b.failed);
    for (int k = 0; k < 3; k++) {
        db_rows *r = db_queryf(db, &e,
                               "SELECT COUNT(*), COUNT(DISTINCT attempt), MIN(attempt),"
                               " MAX(attempt) FROM notification_attempts WHERE notification_id"
                               " = %lld",
                               (long long)n[k].id);
        CHECK(r != NULL && db_rows_next(r));
        CHECK_INT_EQ(db_rows_int(r, 0), 2 * RACE_ROUNDS);
        CHECK_INT_EQ(db_rows_int(r, 1), 2 * RACE_ROUNDS);
        CHECK_INT_EQ(db_rows_int(r, 2), 0);
        CHECK_INT_EQ(db_rows_int(r, 3), 2 * RACE_ROUNDS - 1);
        db_rows_free(r);
    }
    TEST_PASS();
}

int main(void)
{
    const char *url = getenv("PAYNOTIFY_MYSQL_URL");
    struct errbuf e = {0};

    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "test_outbox: PAYNOTIFY_MYSQL_URL is not set; run it through scripts/test "
                        "(or source a stack.env from scripts/lib/stack.sh)\n");
        return 1;
    }
    db_library_init();
    make_database(url);

    test_get_deliveries();
    test_two_copies_one_batch();
    test_failures_and_escaping();
    test_missing_row();
    test_concurrent_batches();

    CHECK(db_execf(db, &e, "DROP DATABASE `%r`", db_name) >= 0);
    db_close(db);
    db_library_end();
    return 0;
}
