/* tests/integration/test_store.c: store/db's statement batches, store/orders' apply and
 * store/kv's fast path against a real MariaDB (PAYNOTIFY_MYSQL_URL; a database of its own,
 * migrated for this run and dropped afterwards) and a real Redis (PAYNOTIFY_REDIS_URL). */
#include "common/clock.h"
#include "common/errbuf.h"
#include "store/db.h"
#include "store/kv.h"
#include "store/migrate.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "tests/unit/check.h"
#include "tests/integration/testdb.h"

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
    db = testdb_create(base_url, "store", db_name, db_url, NULL);
}

static int64_t count(const char *table_where)
{
    struct errbuf e = {0};
    db_rows *r = db_queryf(db, &e, "SELECT COUNT(*) FROM %r", table_where);
    int64_t n;

    CHECK(r != NULL && db_rows_next(r));
    n = db_rows_int(r, 0);
    db_rows_free(r);
    return n;
}

/* Several statements, one round trip: results, affected rows and insert ids per statement. */
static void test_batch_results(void)
{
    struct errbuf e = {0};
    db_batch *b;
    db_rows *r;

    CHECK(db_execf(db, &e,
                   "CREATE TABLE bt (id BIGINT AUTO_INCREMENT PRIMARY KEY,"
                   " k VARCHAR(64) UNIQUE, v INT)") >= 0);
    b = db_batch_new(db, 1);
    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "a'; DROP TABLE bt; --", 1);
    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "b", 2);
    db_batch_addf(b, "UPDATE bt SET v = v + 10 WHERE v >= %d", 1);
    db_batch_addf(b, "SELECT k, v FROM bt ORDER BY id");
    CHECK_INT_EQ(db_batch_count(b), 4);
    if (db_batch_run(b, &e) != 0) {
        fprintf(stderr, "batch: %s (statement %d)\n", e.msg, db_batch_failed_at(b));
        exit(1);
    }
    CHECK_INT_EQ(db_batch_affected(b, 0), 1);
    CHECK(db_batch_insert_id(b, 0) > 0);
    CHECK_INT_EQ(db_batch_insert_id(b, 1), db_batch_insert_id(b, 0) + 1);
    CHECK_INT_EQ(db_batch_affected(b, 2), 2);
    CHECK(db_batch_rows(b, 0) == NULL);
    r = db_batch_rows(b, 3);
    CHECK(r != NULL && db_rows_next(r));
    CHECK_STR_EQ(db_rows_get(r, 0), "a'; DROP TABLE bt; --");
    CHECK_INT_EQ(db_rows_int(r, 1), 11);
    CHECK(db_rows_next(r));
    CHECK_INT_EQ(db_rows_int(r, 1), 12);
    CHECK(!db_rows_next(r));
    db_batch_free(b);
    /* Inside a transaction until committed: another connection sees nothing yet. */
    {
        db_conn *other = db_open(db_url, 5000, &e);
        CHECK(other != NULL);
        r = db_queryf(other, &e, "SELECT COUNT(*) FROM bt");
        CHECK(r != NULL && db_rows_next(r));
        CHECK_INT_EQ(db_rows_int(r, 0), 0);
        db_rows_free(r);
        CHECK_INT_EQ(db_commit(db, &e), 0);
        r = db_queryf(other, &e, "SELECT COUNT(*) FROM bt");
        CHECK(r != NULL && db_rows_next(r));
        CHECK_INT_EQ(db_rows_int(r, 0), 2);
        db_rows_free(r);
        db_close(other);
    }
    TEST_PASS();
}

/* The first failing statement stops the batch; it is named, a duplicate key is told apart,
 * and a rollback undoes the statements before it. */
static void test_batch_failure(void)
{
    struct errbuf e = {0};
    db_batch *b = db_batch_new(db, 1);

    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "c", 3);
    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "b", 4); /* duplicate k */
    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "d", 5);
    CHECK_INT_EQ(db_batch_run(b, &e), DB_DUPLICATE);
    CHECK_INT_EQ(db_batch_failed_at(b), 1);
    CHECK(strstr(e.msg, "duplicate") != NULL);
    db_batch_free(b);
    db_rollback(db);
    CHECK_INT_EQ(count("bt"), 2);

    /* A syntax error: -1, PERMANENT, and the connection stays usable. */
    memset(&e, 0, sizeof(e));
    b = db_batch_new(db, 0);
    db_batch_addf(b, "UPDATE bt SET v = 0 WHERE k = %s", "zz");
    db_batch_addf(b, "SELEC nonsense");
    CHECK_INT_EQ(db_batch_run(b, &e), -1);
    CHECK_INT_EQ(db_batch_failed_at(b), 1);
    CHECK(e.kind == ERRBUF_PERMANENT);
    db_batch_free(b);
    CHECK_INT_EQ(count("bt"), 2);

    /* A first statement that fails (no START TRANSACTION). */
    b = db_batch_new(db, 0);
    db_batch_addf(b, "INSERT INTO bt (k, v) VALUES (%s, %d)", "a'; DROP TABLE bt; --", 9);
    CHECK_INT_EQ(db_batch_run(b, &e), DB_DUPLICATE);
    CHECK_INT_EQ(db_batch_failed_at(b), 0);
    db_batch_free(b);
    CHECK(db_execf(db, &e, "DROP TABLE bt") >= 0);
    TEST_PASS();
}

static void make_order(const char *biz_order, int64_t amount, struct order *o)
{
    struct errbuf e = {0};
    struct order_new q = {.business = "shop",
                          .business_order_id = biz_order,
                          .amount = amount,
                          .currency = "CNY",
                          .channel = "stripe",
                          .subject = "a \"quoted\" subject",
                          .notify_url = "https://shop.example/hook"};

    CHECK_INT_EQ(orders_create(db, &q, o, &e), ORDERS_CREATED);
}

static void event_for(const struct order *o, const char *event_id, int64_t amount,
                      struct pay_event *ev)
{
    memset(ev, 0, sizeof(*ev));
    ev->kind = PAY_EVENT_SUCCEEDED;
    snprintf(ev->event_id, sizeof(ev->event_id), "%s", event_id);
    snprintf(ev->event_type, sizeof(ev->event_type), "payment_intent.succeeded");
    snprintf(ev->order_id, sizeof(ev->order_id), "%s", o->id);
    snprintf(ev->txn_id, sizeof(ev->txn_id), "pi_%s", event_id);
    ev->amount = amount;
    snprintf(ev->currency, sizeof(ev->currency), "CNY");
}

/* The apply transaction writes the outbox row from the order it read under the row lock
 * and updated in memory: that copy must equal the row as MySQL now has it. */
static void test_apply_pay(void)
{
    struct errbuf e = {0};
    struct order o, after;
    struct pay_event ev;
    struct apply_result res;
    struct notification n;
    char *json;
    db_rows *r;

    make_order("apply-1", 1999, &o);
    event_for(&o, "evt_apply_1", 1999, &ev);
    CHECK_INT_EQ(orders_apply_event(db, "stripe", &ev, "cb_1", "{}", &res, &e), 0);
    CHECK_INT_EQ(res.duplicate_event, 0);
    CHECK_INT_EQ(res.decision, ORDER_DECIDE_PAY);
    CHECK(res.notification_id > 0);
    CHECK_INT_EQ(outbox_get(db, res.notification_id, &n, &e), 0);
    CHECK_STR_EQ(n.webhook_id, res.webhook_id);
    CHECK_STR_EQ(n.order_id, o.id);
    CHECK_STR_EQ(n.event_type, "order.paid");
    CHECK_INT_EQ(orders_get(db, o.id, &after, &e), 0);
    CHECK_STR_EQ(after.status, "PAID");
    CHECK_INT_EQ(after.version, o.version + 1);
    json = orders_to_json(&after);
    r = db_queryf(db, &e, "SELECT payload FROM notifications WHERE id = %lld",
                  (long long)res.notification_id);
    CHECK(r != NULL && db_rows_next(r));
    CHECK_STR_EQ(db_rows_get(r, 0), json);
    db_rows_free(r);
    free(json);

    /* The same provider event again: a duplicate, nothing written. */
    CHECK_INT_EQ(orders_apply_event(db, "stripe", &ev, "cb_2", "{}", &res, &e), 0);
    CHECK_INT_EQ(res.duplicate_event, 1);
    CHECK_INT_EQ(res.notification_id, 0);
    CHECK_INT_EQ(count("payment_log WHERE provider_event_id = 'evt_apply_1'"), 1);
    CHECK_INT_EQ(count("notifications"), 1);
    TEST_PASS();
}

/* A wrong amount: logged, alerted, never PAID, no webhook; a second payment of a paid order:
 * a refund row and no second notification. */
static void test_apply_anomalies(void)
{
    struct errbuf e = {0};
    struct order o, after;
    struct pay_event ev;
    struct apply_result res;

    make_order("apply-2", 500, &o);
    event_for(&o, "evt_apply_2", 499, &ev);
    CHECK_INT_EQ(orders_apply_event(db, "stripe", &ev, "cb_3", "{}", &res, &e), 0);
    CHECK_INT_EQ(res.decision, ORDER_DECIDE_AMOUNT_MISMATCH);
    CHECK_INT_EQ(res.notification_id, 0);
    CHECK_INT_EQ(orders_get(db, o.id, &after, &e), 0);
    CHECK_STR_EQ(after.status, "PENDING");
    CHECK_INT_EQ(count("alerts WHERE kind = 'amount_mismatch'"), 1);

    event_for(&o, "evt_apply_3", 500, &ev);
    CHECK_INT_EQ(orders_apply_event(db, "stripe", &ev, "cb_4", "{}", &res, &e), 0);
    CHECK_INT_EQ(res.decision, ORDER_DECIDE_PAY);
    event_for(&o, "evt_apply_4", 500, &ev);
    CHECK_INT_EQ(orders_apply_event(db, "stripe", &ev, "cb_5", "{}", &res, &e), 0);
    CHECK_INT_EQ(res.decision, ORDER_DECIDE_DUPLICATE_PAYMENT);
    CHECK_INT_EQ(res.notification_id, 0);
    CHECK(res.refund_id[0] != '\0');
    CHECK_INT_EQ(count("refunds"), 1);
    CHECK_INT_EQ(count("notifications"), 2);
    TEST_PASS();
}

static int key_exists(kv_conn *probe, const char *order)
{
    /* The counter is internal: look at it through a begin that takes nothing back. */
    struct errbuf e = {0};
    int rc = kv_event_begin(probe, "stripe", "evt_probe_never_marked", order, 10000, &e);
    if (rc == 0)
        CHECK_INT_EQ(kv_event_end(probe, "stripe", "evt_probe_never_marked", 0, 60, order, &e), 0);
    return rc == 2;
}

/* Redis fast path: one round trip before (seen? else lock) and one after (mark, unlock). */
static void test_kv_begin_end(const char *redis_url)
{
    struct errbuf e = {0};
    kv_conn *k = kv_open(redis_url, 1000, &e), *other = kv_open(redis_url, 1000, &e);
    char evt[64], order[64], noorder[64], other_evt[64], ttl_evt[64];

    CHECK(k != NULL && other != NULL);
    snprintf(evt, sizeof(evt), "evt_kv_%d", (int)getpid());
    snprintf(order, sizeof(order), "po_kv_%d", (int)getpid());
    snprintf(noorder, sizeof(noorder), "evt_kv_noorder_%d", (int)getpid());
    snprintf(other_evt, sizeof(other_evt), "evt_kv_other_%d", (int)getpid());
    snprintf(ttl_evt, sizeof(ttl_evt), "evt_kv_ttl_%d", (int)getpid());
    CHECK_INT_EQ(kv_event_begin(k, "stripe", evt, order, 10000, &e), 0);
    /* Other jobs for the same order are told it is busy, and take nothing: */
    CHECK_INT_EQ(kv_event_begin(other, "stripe", other_evt, order, 10000, &e), 2);
    CHECK_INT_EQ(kv_event_begin(other, "stripe", other_evt, order, 10000, &e), 2);
    /* one give-back by the holder frees the order. */
    CHECK_INT_EQ(kv_event_end(k, "stripe", evt, 1, 60, order, &e), 0);
    CHECK(!key_exists(other, order));
    CHECK_INT_EQ(kv_event_begin(other, "stripe", evt, order, 10000, &e), 1); /* marked */
    CHECK_INT_EQ(kv_event_begin(other, "stripe", other_evt, order, 10000, &e), 0);
    CHECK_INT_EQ(kv_event_end(other, "stripe", other_evt, 0, 60, order, &e), 0);
    CHECK_INT_EQ(kv_event_begin(k, "stripe", other_evt, order, 10000, &e), 0); /* not marked */
    CHECK_INT_EQ(kv_event_end(k, "stripe", other_evt, 0, 60, order, &e), 0);
    /* No order id: only the "seen" check, no lock. */
    CHECK_INT_EQ(kv_event_begin(k, "stripe", noorder, "", 10000, &e), 0);
    CHECK_INT_EQ(kv_event_begin(k, "stripe", noorder, NULL, 10000, &e), 0);
    CHECK_INT_EQ(kv_event_end(k, "stripe", noorder, 1, 60, NULL, &e), 0);
    CHECK_INT_EQ(kv_event_begin(k, "stripe", noorder, NULL, 10000, &e), 1);
    /* A crashed holder's lock expires by itself. */
    CHECK_INT_EQ(kv_event_begin(k, "stripe", ttl_evt, order, 200, &e), 0);
    CHECK_INT_EQ(kv_event_begin(other, "stripe", ttl_evt, order, 10000, &e), 2);
    usleep(400 * 1000);
    CHECK_INT_EQ(kv_event_begin(other, "stripe", ttl_evt, order, 10000, &e), 0);
    /* The server forgot its scripts: they are loaded again transparently. */
    CHECK_INT_EQ(kv_script_flush_for_tests(k, &e), 0);
    CHECK_INT_EQ(kv_event_end(other, "stripe", ttl_evt, 0, 60, order, &e), 0);
    CHECK(!key_exists(k, order));
    kv_close(k);
    kv_close(other);
    TEST_PASS();
}

int main(void)
{
    const char *url = getenv("PAYNOTIFY_MYSQL_URL");
    struct errbuf e = {0};

    if (url == NULL || url[0] == '\0') {
        fprintf(stderr, "test_store: PAYNOTIFY_MYSQL_URL is not set; run it through scripts/test "
                        "(or source a stack.env from scripts/lib/stack.sh)\n");
        return 1;
    }
    db_library_init();
    make_database(url);

    test_batch_results();
    test_batch_failure();
    test_apply_pay();
    test_apply_anomalies();
    if (getenv("PAYNOTIFY_REDIS_URL") == NULL) {
        fprintf(stderr, "test_store: PAYNOTIFY_REDIS_URL is not set\n");
        return 1;
    }
    test_kv_begin_end(getenv("PAYNOTIFY_REDIS_URL"));

    CHECK(db_execf(db, &e, "DROP DATABASE `%r`", db_name) >= 0);
    db_close(db);
    db_library_end();
    return 0;
}
