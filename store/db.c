/* store/db.c: MariaDB Connector/C wrapper. The only file that includes <mysql.h>. */
#include "store/db.h"

#include <mysql.h>
#include <mysqld_error.h>
#include <errmsg.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/url.h"

struct db_conn {
    MYSQL *my;
    struct url url;
    int timeout_s;
    int broken; /* the connection was lost; reconnect before the next statement */
    int in_tx;
};

struct db_rows {
    MYSQL_RES *res;
    MYSQL_ROW row;
    unsigned long *lens;
};

void db_library_init(void)
{
    mysql_library_init(0, NULL, NULL);
}

void db_library_end(void)
{
    mysql_library_end();
}

void db_thread_init(void)
{
    mysql_thread_init();
}

void db_thread_end(void)
{
    mysql_thread_end();
}

static void set_error(db_conn *c, struct errbuf *e, const char *what)
{
    unsigned no = mysql_errno(c->my);
    /* Server gone / lost / cannot connect: transient, and the handle must be rebuilt. */
    int lost = no == CR_SERVER_GONE_ERROR || no == CR_SERVER_LOST || no == CR_CONNECTION_ERROR ||
               no == CR_CONN_HOST_ERROR || no == 0;
    if (lost)
        c->broken = 1;
    errbuf_set(e,
               (lost || no == ER_LOCK_DEADLOCK || no == ER_LOCK_WAIT_TIMEOUT) ? ERRBUF_TRANSIENT
                                                                              : ERRBUF_PERMANENT,
               "mysql %s: %u %s", what, no, mysql_error(c->my));
}

static int connect_handle(db_conn *c, struct errbuf *e)
{
    unsigned int t = (unsigned)c->timeout_s;
    unsigned int rw = (unsigned)(c->timeout_s * 6);

    if (c->my != NULL)
        mysql_close(c->my);
    c->my = mysql_init(NULL);
    if (c->my == NULL)
        abort();
    mysql_options(c->my, MYSQL_OPT_CONNECT_TIMEOUT, &t);
    mysql_options(c->my, MYSQL_OPT_READ_TIMEOUT, &rw);
    mysql_options(c->my, MYSQL_OPT_WRITE_TIMEOUT, &rw);
    mysql_options(c->my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
    if (mysql_real_connect(c->my, c->url.host, c->url.user, c->url.password, c->url.path,
                           (unsigned)(c->url.port ? c->url.port : 3306), NULL,
                           CLIENT_MULTI_STATEMENTS) == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "mysql connect %s:%d: %s", c->url.host, c->url.port,
                   mysql_error(c->my));
        c->broken = 1;
        return -1;
    }
    /* UTC everywhere; READ COMMITTED keeps CAS updates from taking gap locks. */
    if (mysql_query(c->my, "SET SESSION time_zone = '+00:00'") != 0 ||
        mysql_query(c->my, "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED") != 0) {
        set_error(c, e, "session setup");
        c->broken = 1;
        return -1;
    }
    c->broken = 0;
    c->in_tx = 0;
    return 0;
}

db_conn *db_open(const char *url, int timeout_ms, struct errbuf *e)
{
    db_conn *c = calloc(1, sizeof(*c));

    if (c == NULL)
        abort();
    if (url_parse(url, &c->url, e) != 0) {
        free(c);
        return NULL;
    }
    c->timeout_s = timeout_ms < 1000 ? 1 : timeout_ms / 1000;
    if (connect_handle(c, e) != 0) {
        db_close(c);
        return NULL;
    }
    return c;
}

void db_close(db_conn *c)
{
    if (c == NULL)
        return;
    if (c->my != NULL)
        mysql_close(c->my);
    free(c);
}

/* Reconnects a broken handle, but never in the middle of a transaction: that transaction
 * is gone and the caller must start over. */
static int ensure(db_conn *c, struct errbuf *e)
{
    if (!c->broken)
        return 0;
    if (c->in_tx) {
        errbuf_set(e, ERRBUF_TRANSIENT, "mysql: connection lost inside a transaction");
        return -1;
    }
    return connect_handle(c, e);
}

int db_ping(db_conn *c, struct errbuf *e)
{
    if (ensure(c, e) != 0)
        return -1;
    if (mysql_ping(c->my) != 0) {
        set_error(c, e, "ping");
        c->broken = 1;
        return -1;
    }
    return 0;
}

struct sbuf {
    char *p;
    size_t len, cap;
};

static void sb_reserve(struct sbuf *b, size_t more)
{
    if (b->len + more + 1 <= b->cap)
        return;
    while (b->len + more + 1 > b->cap)
        b->cap = b->cap ? b->cap * 2 : 256;
    b->p = realloc(b->p, b->cap);
    if (b->p == NULL)
        abort();
}

static void sb_add(struct sbuf *b, const char *s, size_t n)
{
    sb_reserve(b, n);
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static char *build(db_conn *c, const char *fmt, va_list ap, size_t *out_len)
{
    struct sbuf b = {0};
    char num[32];

    sb_reserve(&b, strlen(fmt));
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            sb_add(&b, f, 1);
            continue;
        }
        f++;
        if (*f == 's') {
            const char *s = va_arg(ap, const char *);
            if (s == NULL) {
                sb_add(&b, "NULL", 4);
            } else {
                size_t n = strlen(s);
                sb_reserve(&b, 2 * n + 2);
                b.p[b.len++] = '\'';
                b.len += mysql_real_escape_string(c->my, b.p + b.len, s, (unsigned long)n);
                b.p[b.len++] = '\'';
                b.p[b.len] = '\0';
            }
        } else if (*f == 'r') {
            const char *s = va_arg(ap, const char *);
            sb_add(&b, s, strlen(s));
        } else if (*f == 'd') {
            int n = snprintf(num, sizeof(num), "%d", va_arg(ap, int));
            sb_add(&b, num, (size_t)n);
        } else if (f[0] == 'l' && f[1] == 'l' && f[2] == 'd') {
            int n = snprintf(num, sizeof(num), "%lld", va_arg(ap, long long));
            sb_add(&b, num, (size_t)n);
            f += 2;
        } else if (*f == '%') {
            sb_add(&b, "%", 1);
        } else {
            abort(); /* a format bug in our own code */
        }
    }
    *out_len = b.len;
    return b.p;
}

static int run(db_conn *c, struct errbuf *e, const char *fmt, va_list ap)
{
    size_t len;
    char *sql;
    int rc;

    if (ensure(c, e) != 0)
        return -1;
    sql = build(c, fmt, ap, &len);
    rc = mysql_real_query(c->my, sql, (unsigned long)len);
    free(sql);
    if (rc != 0) {
        if (mysql_errno(c->my) == ER_DUP_ENTRY) {
            errbuf_set(e, ERRBUF_PERMANENT, "mysql: duplicate key: %s", mysql_error(c->my));
            return DB_DUPLICATE;
        }
        set_error(c, e, "query");
        return -1;
    }
    return 0;
}

int64_t db_execf(db_conn *c, struct errbuf *e, const char *fmt, ...)
{
    va_list ap;
    int rc;

    va_start(ap, fmt);
    rc = run(c, e, fmt, ap);
    va_end(ap);
    if (rc != 0)
        return rc;
    return (int64_t)mysql_affected_rows(c->my);
}

db_rows *db_queryf(db_conn *c, struct errbuf *e, const char *fmt, ...)
{
    va_list ap;
    int rc;
    db_rows *r;
    MYSQL_RES *res;

    va_start(ap, fmt);
    rc = run(c, e, fmt, ap);
    va_end(ap);
    if (rc != 0)
        return NULL;
    res = mysql_store_result(c->my);
    if (res == NULL) {
        set_error(c, e, "store result");
        return NULL;
    }
    r = calloc(1, sizeof(*r));
    if (r == NULL)
        abort();
    r->res = res;
    return r;
}

int db_rows_next(db_rows *r)
{
    r->row = mysql_fetch_row(r->res);
    if (r->row == NULL)
        return 0;
    r->lens = mysql_fetch_lengths(r->res);
    return 1;
}

const char *db_rows_get(db_rows *r, unsigned col)
{
    if (r->row == NULL || col >= mysql_num_fields(r->res))
        return NULL;
    return r->row[col];
}

int64_t db_rows_int(db_rows *r, unsigned col)
{
    const char *s = db_rows_get(r, col);
    return s ? strtoll(s, NULL, 10) : 0;
}

uint64_t db_rows_count(db_rows *r)
{
    return mysql_num_rows(r->res);
}

void db_rows_free(db_rows *r)
{
    if (r == NULL)
        return;
    mysql_free_result(r->res);
    free(r);
}

int db_begin(db_conn *c, struct errbuf *e)
{
    if (ensure(c, e) != 0)
        return -1;
    if (mysql_query(c->my, "START TRANSACTION") != 0) {
        set_error(c, e, "begin");
        return -1;
    }
    c->in_tx = 1;
    return 0;
}

int db_commit(db_conn *c, struct errbuf *e)
{
    int rc = mysql_commit(c->my);
    if (rc != 0) {
        set_error(c, e, "commit");
        return -1;
    }
    c->in_tx = 0;
    return 0;
}

void db_rollback(db_conn *c)
{
    if (c->in_tx && !c->broken && mysql_rollback(c->my) != 0)
        c->broken = 1;
    c->in_tx = 0;
}

int db_exec_script(db_conn *c, const char *sql, struct errbuf *e)
{
    int status;

    if (ensure(c, e) != 0)
        return -1;
    if (mysql_real_query(c->my, sql, (unsigned long)strlen(sql)) != 0) {
        set_error(c, e, "script");
        return -1;
    }
    do {
        MYSQL_RES *res = mysql_store_result(c->my);
        if (res != NULL)
            mysql_free_result(res);
        status = mysql_next_result(c->my);
        if (status > 0) {
            set_error(c, e, "script");
            return -1;
        }
    } while (status == 0);
    return 0;
}

struct db_batch {
    db_conn *c;
    int begin;
    int n, failed_at;
    struct sbuf sql;
    struct {
        int64_t affected, insert_id;
        db_rows *rows;
    } st[DB_BATCH_MAX];
};

db_batch *db_batch_new(db_conn *c, int begin)
{
    db_batch *b = calloc(1, sizeof(*b));

    if (b == NULL)
        abort();
    b->c = c;
    b->begin = begin;
    b->failed_at = -1;
    if (begin)
        sb_add(&b->sql, "START TRANSACTION", 17);
    return b;
}

void db_batch_addf(db_batch *b, const char *fmt, ...)
{
    va_list ap;
    size_t len;
    char *one;

    if (b->n >= DB_BATCH_MAX)
        abort(); /* a bug in our own code */
    /* Escaping needs a live handle; a broken one is rebuilt by db_batch_run() first, and
     * mysql_real_escape_string() only reads the character set from it. */
    va_start(ap, fmt);
    one = build(b->c, fmt, ap, &len);
    va_end(ap);
    if (b->sql.len > 0)
        sb_add(&b->sql, ";", 1);
    sb_add(&b->sql, one, len);
    free(one);
    b->n++;
}

int db_batch_count(const db_batch *b)
{
    return b->n;
}

/* Keeps statement k's result (k = -1 for the START TRANSACTION). */
static int batch_collect(db_batch *b, int k, struct errbuf *e)
{
    MYSQL *my = b->c->my;
    MYSQL_RES *res = mysql_store_result(my);

    if (res == NULL && mysql_field_count(my) != 0) {
        set_error(b->c, e, "store result");
        return -1;
    }
    if (k < 0) {
        if (res != NULL)
            mysql_free_result(res);
        b->c->in_tx = 1;
        return 0;
    }
    b->st[k].affected = res ? 0 : (int64_t)mysql_affected_rows(my);
    b->st[k].insert_id = (int64_t)mysql_insert_id(my);
    if (res != NULL) {
        b->st[k].rows = calloc(1, sizeof(db_rows));
        if (b->st[k].rows == NULL)
            abort();
        b->st[k].rows->res = res;
    }
    return 0;
}

int db_batch_run(db_batch *b, struct errbuf *e)
{
    db_conn *c = b->c;
    int k = b->begin ? -1 : 0, last = b->n - 1, status;

    if (ensure(c, e) != 0) {
        b->failed_at = 0;
        return -1;
    }
    if (mysql_real_query(c->my, b->sql.p, (unsigned long)b->sql.len) == 0) {
        for (;;) {
            if (batch_collect(b, k, e) != 0) {
                b->failed_at = k < 0 ? 0 : k;
                return -1;
            }
            status = mysql_next_result(c->my);
            if (status < 0) { /* no more results */
                if (k == last)
                    return 0;
                errbuf_set(e, ERRBUF_PERMANENT, "mysql batch: %d results for %d statements", k + 1,
                           b->n);
                b->failed_at = k + 1;
                return -1;
            }
            k++;
            if (status > 0)
                break; /* statement k failed */
        }
    }
    b->failed_at = k < 0 ? 0 : k;
    if (mysql_errno(c->my) == ER_DUP_ENTRY) {
        errbuf_set(e, ERRBUF_PERMANENT, "mysql: duplicate key: %s", mysql_error(c->my));
        return DB_DUPLICATE;
    }
    set_error(c, e, "batch");
    return -1;
}

int db_batch_failed_at(const db_batch *b)
{
    return b->failed_at;
}

int64_t db_batch_affected(const db_batch *b, int i)
{
    return i >= 0 && i < b->n ? b->st[i].affected : -1;
}

int64_t db_batch_insert_id(const db_batch *b, int i)
{
    return i >= 0 && i < b->n ? b->st[i].insert_id : 0;
}

db_rows *db_batch_rows(db_batch *b, int i)
{
    return i >= 0 && i < b->n ? b->st[i].rows : NULL;
}

void db_batch_free(db_batch *b)
{
    if (b == NULL)
        return;
    for (int i = 0; i < b->n; i++)
        db_rows_free(b->st[i].rows);
    free(b->sql.p);
    free(b);
}
