/* store/migrate.c: forward-only schema migrations. MySQL DDL commits implicitly, so a
 * named lock (GET_LOCK) rather than a transaction keeps two migrators from interleaving;
 * each file is recorded right after it ran. */
#include "store/migrate.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct mfile {
    int version;
    char name[256];
};

static int cmp_mfile(const void *a, const void *b)
{
    return ((const struct mfile *)a)->version - ((const struct mfile *)b)->version;
}

static char *slurp(const char *path, struct errbuf *e)
{
    FILE *f = fopen(path, "rb");
    long n;
    char *buf;

    if (f == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "cannot read %s", path);
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t)n + 1);
    if (buf == NULL)
        abort();
    if (fread(buf, 1, (size_t)n, f) != (size_t)n) {
        fclose(f);
        free(buf);
        errbuf_set(e, ERRBUF_PERMANENT, "cannot read %s", path);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    return buf;
}

static int list_files(const char *dir, struct mfile **out, size_t *n, struct errbuf *e)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    size_t cap = 0;

    *out = NULL;
    *n = 0;
    if (d == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "cannot open migrations directory %s", dir);
        return -1;
    }
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        int v = 0, i = 0;
        if (len < 9 || strcmp(de->d_name + len - 4, ".sql") != 0)
            continue;
        for (; i < 4 && de->d_name[i] >= '0' && de->d_name[i] <= '9'; i++)
            v = v * 10 + (de->d_name[i] - '0');
        if (i != 4 || de->d_name[4] != '_' || len >= sizeof((*out)->name))
            continue;
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            *out = realloc(*out, cap * sizeof(**out));
            if (*out == NULL)
                abort();
        }
        (*out)[*n].version = v;
        snprintf((*out)[*n].name, sizeof((*out)[*n].name), "%s", de->d_name);
        (*n)++;
    }
    closedir(d);
    qsort(*out, *n, sizeof(**out), cmp_mfile);
    for (size_t i = 1; i < *n; i++)
        if ((*out)[i].version == (*out)[i - 1].version) {
            errbuf_set(e, ERRBUF_PERMANENT, "two migrations with version %04d", (*out)[i].version);
            return -1;
        }
    return 0;
}

static int ensure_table(db_conn *db, struct errbuf *e)
{
    return db_execf(db, e,
                    "CREATE TABLE IF NOT EXISTS schema_migrations ("
                    " version INT NOT NULL PRIMARY KEY,"
                    " name VARCHAR(255) NOT NULL,"
                    " applied_at DATETIME(3) NOT NULL)"
                    " ENGINE=InnoDB DEFAULT CHARSET=utf8mb4") < 0
               ? -1
               : 0;
}

int migrate_current(db_conn *db, struct errbuf *e)
{
    db_rows *r;
    int v = 0;

    if (ensure_table(db, e) != 0)
        return -1;
    r = db_queryf(db, e, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations");
    if (r == NULL)
        return -1;
    if (db_rows_next(r))
        v = (int)db_rows_int(r, 0);
    db_rows_free(r);
    return v;
}

int migrate_run(db_conn *db, const char *dir, int *applied,
                void (*report)(void *arg, int version, const char *name), void *arg,
                struct errbuf *e)
{
    struct mfile *files = NULL;
    size_t n = 0;
    int rc = -1, locked = 0;
    db_rows *r;

    *applied = 0;
    if (list_files(dir, &files, &n, e) != 0)
        goto out;
    r = db_queryf(db, e, "SELECT GET_LOCK('paynotify_migrate', 120)");
    if (r == NULL)
        goto out;
    locked = db_rows_next(r) && db_rows_int(r, 0) == 1;
    db_rows_free(r);
    if (!locked) {
        errbuf_set(e, ERRBUF_TRANSIENT, "another migration holds the lock for over 120 s");
        goto out;
    }
    if (ensure_table(db, e) != 0)
        goto out;
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        char *sql;
        int64_t done;

        r = db_queryf(db, e, "SELECT COUNT(*) FROM schema_migrations WHERE version = %d",
                      files[i].version);
        if (r == NULL)
            goto out;
        done = db_rows_next(r) ? db_rows_int(r, 0) : 0;
        db_rows_free(r);
        if (done)
            continue;
        snprintf(path, sizeof(path), "%s/%s", dir, files[i].name);
        sql = slurp(path, e);
        if (sql == NULL)
            goto out;
        if (db_exec_script(db, sql, e) != 0) {
            char msg[sizeof(e->msg)];
            snprintf(msg, sizeof(msg), "%s", e->msg);
            errbuf_set(e, ERRBUF_PERMANENT, "%s: %s", files[i].name, msg);
            free(sql);
            goto out;
        }
        free(sql);
        if (db_execf(db, e,
                     "INSERT INTO schema_migrations (version, name, applied_at)"
                     " VALUES (%d, %s, UTC_TIMESTAMP(3))",
                     files[i].version, files[i].name) < 0)
            goto out;
        (*applied)++;
        if (report != NULL)
            report(arg, files[i].version, files[i].name);
    }
    rc = 0;
out:
    if (locked) {
        r = db_queryf(db, NULL, "SELECT RELEASE_LOCK('paynotify_migrate')");
        db_rows_free(r);
    }
    free(files);
    return rc;
}
