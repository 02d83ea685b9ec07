/* tests/integration/testdb.h: a MariaDB database of the test's own on the shared test
 * server (PAYNOTIFY_MYSQL_URL), created and migrated for this run, so that its rows touch
 * nobody else's. The test drops it at the end (DROP DATABASE on the connection). */
#ifndef PAYNOTIFY_TESTS_INTEGRATION_TESTDB_H
#define PAYNOTIFY_TESTS_INTEGRATION_TESTDB_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/errbuf.h"
#include "store/db.h"
#include "store/migrate.h"
#include "tests/unit/check.h"

/* Creates paynotify_<tag>_<pid>_<time> next to base_url's database, migrates it and
 * returns a connection to it (close with db_close()); its name goes to name (>= 64 bytes)
 * and its URL to url (>= 512 bytes), and *applied (may be NULL) gets the number of
 * migrations run. Exits the test with a message when anything fails. */
static inline db_conn *testdb_create(const char *base_url, const char *tag, char *name, char *url,
                                     int *applied)
{
    struct errbuf e = {0};
    const char *slash = strrchr(base_url, '/');
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR"), *mdir = getenv("PAYNOTIFY_MIGRATIONS_DIR");
    char migrations[1024];
    int n = 0;
    db_conn *root, *db;

    CHECK(slash != NULL && slash > base_url + 8);
    snprintf(name, 64, "paynotify_%s_%d_%lld", tag, (int)getpid(), (long long)time(NULL));
    snprintf(url, 512, "%.*s/%s", (int)(slash - base_url), base_url, name);
    root = db_open(base_url, 5000, &e);
    if (root == NULL) {
        fprintf(stderr, "db_open(%s): %s\n", base_url, e.msg);
        exit(1);
    }
    CHECK(db_execf(root, &e, "CREATE DATABASE `%r`", name) >= 0);
    db_close(root);
    db = db_open(url, 5000, &e);
    CHECK(db != NULL);
    if (mdir != NULL && mdir[0] != '\0')
        snprintf(migrations, sizeof(migrations), "%s", mdir);
    else
        snprintf(migrations, sizeof(migrations), "%s/migrations", src ? src : ".");
    if (migrate_run(db, migrations, &n, NULL, NULL, &e) != 0) {
        fprintf(stderr, "migrate %s: %s\n", migrations, e.msg);
        exit(1);
    }
    if (applied != NULL)
        *applied = n;
    return db;
}

#endif
