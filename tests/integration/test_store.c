/* tests/integration/test_store.c: store/db's statement batches and store/orders' apply
 * against a real MariaDB (PAYNOTIFY_MYSQL_URL), in a database of its own made for this run
 * (migrated) and dropped afterwards. */
#include "common/clock.h"
#include "common/errbuf.h"
#include "store/db.h"
#include "store/migrate.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "tests/unit/check.h"

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
    struct errbuf e = {0};
    const char *slash = strrchr(base_url, '/');
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR"), *mdir = getenv("PAYNOTIFY_MIGRATIONS_DIR");
    char migrations[1024];
    int applied = 0;
    db_conn *root;

    CHECK(slash != NULL && slash > base_url + 8);
    snprintf(db_name, sizeof(db_name), "paynotify_store_%d_%lld", (int)getpid(),
             (long long)time(NULL));
    snprintf(db_url, sizeof(db_url), "%.*s/%s", (int)(slash - base_url), base_url, db_name);
    root = db_open(base_url, 5000, &e);
    if (root == NULL) {
        fprintf(stderr, "db_open(%s): %s\n", base_url, e.msg);
        exit(1);
    }
    CHECK(db_execf(root, &e, "CREATE DATABASE `%r`", db_name) >= 0);
    db_close(root);
    db = db_open(db_url, 5000, &e);
    CHECK(db != NULL);
    if (mdir != NULL && mdir[0] != '\0')
        snprintf(migrations, sizeof(migrations), "%s", mdir);
    else
        snprintf(migrations, sizeof(migrations), "%s/migrations", src ? src : ".");
    if (migrate_run(db, migrations, &applied, NULL, NULL, &e) != 0) {
        fprintf(stderr, "migrate %s: %s\n", migrations, e.msg);
        exit(1);
    }
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

    CHECK(db_execf(db, &e, "DROP DATABASE `%r`", db_name) >= 0);
    db_close(db);
    db_library_end();
    return 0;
}
