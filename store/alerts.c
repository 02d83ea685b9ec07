/* store/alerts.c: the SQL of the alerts outbox. The storm policy that strings these calls
 * together lives in worker/alert.c; this file only knows the table. */
#include "store/alerts.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define IDS_PER_STATEMENT 500
#define BODY_MAX_BYTES 65535 /* TEXT */
#define NO_LIMIT ((size_t)-1 / 2)
/* Summaries are marked by their dedup_key; '%%' because these go through db_*f formats. */
#define IS_SUMMARY_SQL "dedup_key LIKE 'summary:%%'"
#define NOT_SUMMARY_SQL "dedup_key NOT LIKE 'summary:%%'"
#define FRESH_DUE_SQL \
    "status = 'PENDING' AND attempts = 0 AND next_attempt_at <= NOW(3) AND " NOT_SUMMARY_SQL

static char *dup_or_null(const char *s)
{
    char *p;

    if (s == NULL)
        return NULL;
    p = strdup(s);
    if (p == NULL)
        abort();
    return p;
}

/* Length of the valid UTF-8 sequence at s (RFC 3629: no overlongs, no surrogates, at most
 * U+10FFFF), or 0 if the bytes there are not one. */
static size_t utf8_seq(const unsigned char *s)
{
    if (s[0] < 0x80)
        return 1;
    if (s[0] >= 0xC2 && s[0] <= 0xDF)
        return (s[1] & 0xC0) == 0x80 ? 2 : 0;
    if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        unsigned char lo = s[0] == 0xE0 ? 0xA0 : 0x80, hi = s[0] == 0xED ? 0x9F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 ? 3 : 0;
    }
    if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        unsigned char lo = s[0] == 0xF0 ? 0x90 : 0x80, hi = s[0] == 0xF4 ? 0x8F : 0xBF;
        return s[1] >= lo && s[1] <= hi && (s[2] & 0xC0) == 0x80 && (s[3] & 0xC0) == 0x80 ? 4 : 0;
    }
    return 0;
}

/* A copy of s that is valid UTF-8 (any other byte becomes '?') and fits max_chars characters
 * and max_bytes bytes; a cut text ends in "...". *chars gets the length of the uncut text in
 * characters. Caller frees. */
static char *clean_text(const char *s, size_t max_chars, size_t max_bytes, size_t *chars)
{
    size_t len = strlen(s), o = 0, n = 0, keep_o = 0;
    char *out = malloc(len + 1);

    if (out == NULL)
        abort();
    for (size_t i = 0; i < len;) {
        size_t k = utf8_seq((const unsigned char *)s + i);
        if (k == 0) {
            out[o++] = '?';
            i++;
        } else {
            memcpy(out + o, s + i, k);
            o += k;
            i += k;
        }
        n++;
        /* Remember the last place where the text plus "..." still fits. */
        if (n + 3 <= max_chars && o + 3 <= max_bytes)
            keep_o = o;
    }
    out[o] = '\0';
    *chars = n;
    if (n > max_chars || o > max_bytes)
        memcpy(out + keep_o, "...", 4);
    return out;
}

/* A cleaned identifier (NULL stays NULL); -1 if it is empty or longer than max chars. */
static int clean_name(const char *what, const char *s, size_t max, int required, char **out,
                      struct errbuf *e)
{
    size_t n;

    *out = NULL;
    if (s == NULL || s[0] == '\0') {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: %s is empty", what);
        return -1;
    }
    *out = clean_text(s, NO_LIMIT, NO_LIMIT, &n);
    if (n > max) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: %s longer than %zu characters", what, max);
        free(*out);
        *out = NULL;
        return -1;
    }
    return 0;
}

int alerts_enqueue(db_conn *db, const char *kind, const char *dedup_key, const char *business,
                   const char *order_id, const char *subject, const char *body, struct errbuf *e)
{
    char *k = NULL, *d = NULL, *b = NULL, *o = NULL, *s = NULL, *t = NULL;
    size_t n;
    int64_t r;
    int rc = -1;

    if (clean_name("kind", kind, ALERTS_KIND_MAX, 1, &k, e) != 0 ||
        clean_name("dedup_key", dedup_key, ALERTS_DEDUP_MAX, 1, &d, e) != 0 ||
        clean_name("business", business, ALERTS_NAME_MAX, 0, &b, e) != 0 ||
        clean_name("order_id", order_id, ALERTS_NAME_MAX, 0, &o, e) != 0)
        goto out;
    if (strncmp(d, ALERTS_SUMMARY_PREFIX, strlen(ALERTS_SUMMARY_PREFIX)) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: dedup_key prefix %s is reserved",
                   ALERTS_SUMMARY_PREFIX);
        goto out;
    }
    s = clean_text(subject ? subject : "", ALERTS_SUBJECT_MAX, NO_LIMIT, &n);
    t = clean_text(body ? body : "", NO_LIMIT, BODY_MAX_BYTES, &n);
    r = db_execf(db, e,
                 "INSERT INTO alerts (dedup_key, kind, business, order_id, subject, body, status, "
                 "next_attempt_at, created_at) VALUES (%s, %s, %s, %s, %s, %s, 'PENDING', NOW(3), "
                 "NOW(3))",
                 d, k, b, o, s, t);
    if (r == DB_DUPLICATE) {
        errbuf_clear(e);
        rc = 1;
    } else if (r == 1) {
        rc = 0;
    } else if (r >= 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "alerts: insert affected %lld rows", (long long)r);
    }
out:
    free(k);
    free(d);
    free(b);
    free(o);
    free(s);
    free(t);
    return rc;
}

/* The lock is per database, so test databases on one server do not block each other. Names
 * are at most 64 characters: 17 + 40. */
#define LOCK_NAME_SQL "CONCAT('paynotify.alerts:', SHA1(IFNULL(DATABASE(), '')))"

int alerts_lock(db_conn *db, int wait_s, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e, "SELECT GET_LOCK(" LOCK_NAME_SQL ", %d)", wait_s);
    int rc;

    if (r == NULL)
        return -1;
    if (!db_rows_next(r) || db_rows_get(r, 0) == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "alerts: GET_LOCK returned NULL");
        rc = -1;
    } else {
        rc = db_rows_int(r, 0) == 1 ? 1 : 0;
    }
    db_rows_free(r);
    return rc;
}

void alerts_unlock(db_conn *db)
{
    struct errbuf e = {0};
    /* A failure means the session is gone, and the server dropped the lock with it. */
    db_rows_free(db_queryf(db, &e, "SELECT RELEASE_LOCK(" LOCK_NAME_SQL ")"));
}

static const char *group_business(const struct alerts_group *g)
{
    return g->has_business ? g->business : NULL;
}

int alerts_fresh_groups(db_conn *db, struct alerts_group **out, size_t *n, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e,
                           "SELECT kind, business FROM alerts WHERE " FRESH_DUE_SQL
                           " GROUP BY kind, business ORDER BY MIN(id)");
    size_t i = 0;

    *out = NULL;
    *n = 0;
    if (r == NULL)
        return -1;
    *out = calloc(db_rows_count(r) + 1, sizeof(**out));
    if (*out == NULL)
        abort();
    while (db_rows_next(r)) {
        struct alerts_group *g = &(*out)[i++];
        const char *b = db_rows_get(r, 1);
        snprintf(g->kind, sizeof(g->kind), "%s", db_rows_get(r, 0));
        g->has_business = b != NULL;
        snprintf(g->business, sizeof(g->business), "%s", b ? b : "");
    }
    *n = i;
    db_rows_free(r);
    return 0;
}

void alerts_fresh_free(struct alerts_fresh *f)
{
    if (f == NULL)
        return;
    free(f->ids);
    for (size_t i = 0; i < f->n_orders; i++)
        free(f->orders[i]);
    free(f->first_subject);
    memset(f, 0, sizeof(*f));
}

int alerts_lock_fresh(db_conn *db, const struct alerts_group *g, struct alerts_fresh *out,
                      struct errbuf *e)
{
    db_rows *r;

    memset(out, 0, sizeof(*out));
    r = db_queryf(db, e,
                  "SELECT id, order_id, created_at, subject FROM alerts WHERE " FRESH_DUE_SQL
                  " AND kind = %s AND business <=> %s ORDER BY id FOR UPDATE SKIP LOCKED",
                  g->kind, group_business(g));
    if (r == NULL)
        return -1;
    out->ids = calloc(db_rows_count(r) + 1, sizeof(*out->ids));
    if (out->ids == NULL)
        abort();
    while (db_rows_next(r)) {
        const char *order = db_rows_get(r, 1), *at = db_rows_get(r, 2);
        if (out->n == 0) {
            out->first_subject = dup_or_null(db_rows_get(r, 3));
            snprintf(out->first_at, sizeof(out->first_at), "%s", at ? at : "");
        }
        snprintf(out->last_at, sizeof(out->last_at), "%s", at ? at : "");
        out->ids[out->n++] = db_rows_int(r, 0);
        if (order != NULL && out->n_orders < ALERTS_FRESH_ORDERS)
            out->orders[out->n_orders++] = dup_or_null(order);
    }
    db_rows_free(r);
    return 0;
}

int alerts_group_history(db_conn *db, const struct alerts_group *g, int64_t window_ms,
                         int *individual, char last_summary_at[32], struct errbuf *e)
{
    db_rows *r = db_queryf(
        db, e,
        "SELECT COALESCE(SUM(attempts > 0 AND " NOT_SUMMARY_SQL "), 0), "
        "MAX(CASE WHEN " IS_SUMMARY_SQL " THEN created_at END) FROM alerts "
        "WHERE kind = %s AND business <=> %s AND created_at >= NOW(3) - INTERVAL %lld MICROSECOND",
        g->kind, group_business(g), (long long)window_ms * 1000);
    const char *at;

    if (r == NULL)
        return -1;
    if (!db_rows_next(r)) {
        db_rows_free(r);
        errbuf_set(e, ERRBUF_TRANSIENT, "alerts: history query returned no row");
        return -1;
    }
    *individual = (int)db_rows_int(r, 0);
    at = db_rows_get(r, 1);
    snprintf(last_summary_at, 32, "%s", at ? at : "");
    db_rows_free(r);
    return 0;
}

/* Runs "<head> WHERE id IN (<ids>)" over ids[0..n) in statements of IDS_PER_STATEMENT. head
 * is trusted SQL from this file. */
static int exec_ids(db_conn *db, const char *head, const int64_t *ids, size_t n, struct errbuf *e)
{
    char *list = malloc(IDS_PER_STATEMENT * 21 + 1);

    if (list == NULL)
        abort();
    for (size_t i = 0; i < n; i += IDS_PER_STATEMENT) {
        size_t len = 0;
        for (size_t j = i; j < n && j < i + IDS_PER_STATEMENT; j++)
            len += (size_t)snprintf(list + len, 22, "%s%lld", j > i ? "," : "", (long long)ids[j]);
        if (db_execf(db, e, "%r WHERE id IN (%r)", head, list) < 0) {
            free(list);
            return -1;
        }
    }
    free(list);
    return 0;
}

int64_t alerts_summarize(db_conn *db, const struct alerts_group *g, const int64_t *ids, size_t n,
                         const char *subject, const char *body, struct errbuf *e)
{
    char key[64], head[128];
    char *s, *t;
    size_t chars;
    int64_t id = -1, r;
    db_rows *rows;

    if (n == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: nothing to summarise");
        return -1;
    }
    snprintf(key, sizeof(key), "%s%lld", ALERTS_SUMMARY_PREFIX, (long long)ids[0]);
    s = clean_text(subject, ALERTS_SUBJECT_MAX, NO_LIMIT, &chars);
    t = clean_text(body, NO_LIMIT, BODY_MAX_BYTES, &chars);
    r = db_execf(db, e,
                 "INSERT INTO alerts (dedup_key, kind, business, order_id, subject, body, status, "
                 "next_attempt_at, created_at) VALUES (%s, %s, %s, NULL, %s, %s, 'PENDING', "
                 "NOW(3), NOW(3))",
                 key, g->kind, group_business(g), s, t);
    free(s);
    free(t);
    if (r != 1) {
        if (r >= 0)
            errbuf_set(e, ERRBUF_TRANSIENT, "alerts: summary insert affected %lld rows",
                       (long long)r);
        return -1;
    }
    rows = db_queryf(db, e, "SELECT LAST_INSERT_ID()");
    if (rows == NULL)
        return -1;
    if (db_rows_next(rows))
        id = db_rows_int(rows, 0);
    db_rows_free(rows);
    if (id <= 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "alerts: no id for the summary");
        return -1;
    }
    snprintf(head, sizeof(head), "UPDATE alerts SET status = 'SUMMARIZED', summary_id = %lld",
             (long long)id);
    if (exec_ids(db, head, ids, n, e) != 0)
        return -1;
    return id;
}

int alerts_defer(db_conn *db, const int64_t *ids, size_t n, const char *at, int64_t delay_ms,
                 struct errbuf *e)
{
    char head[160];
    int y, mo, d, h, mi, s, ms = 0;

    /* at is embedded into trusted SQL, so it must be exactly a DATETIME(3) from MySQL. */
    if (sscanf(at, "%4d-%2d-%2d %2d:%2d:%2d.%3d", &y, &mo, &d, &h, &mi, &s, &ms) < 6 ||
        strlen(at) > 23) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: bad time %.32s", at);
        return -1;
    }
    snprintf(head, sizeof(head),
             "UPDATE alerts SET next_attempt_at = '%04d-%02d-%02d %02d:%02d:%02d.%03d' + "
             "INTERVAL %lld MICROSECOND",
             y, mo, d, h, mi, s, ms, (long long)delay_ms * 1000);
    return exec_ids(db, head, ids, n, e);
}

void alerts_free(struct alert *a, size_t n)
{
    if (a == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(a[i].dedup_key);
        free(a[i].kind);
        free(a[i].business);
        free(a[i].order_id);
        free(a[i].subject);
        free(a[i].body);
    }
    free(a);
}

int alerts_claim(db_conn *db, const int64_t *approved, size_t n_approved, size_t max,
                 int64_t lease_step_ms, int64_t lease_extra_ms, struct alert **out, size_t *n,
                 struct errbuf *e)
{
    char *list = NULL;
    size_t len = 0, i = 0;
    db_rows *r;
    int rc = -1;

    *out = NULL;
    *n = 0;
    /* "OR id IN (...)" admits the fresh alerts the storm policy let through; the ids are
     * integers we read from this table, so they go in as raw SQL. */
    list = malloc(n_approved * 21 + 32);
    if (list == NULL)
        abort();
    list[0] = '\0';
    if (n_approved > 0) {
        len = (size_t)sprintf(list, " OR id IN (");
        for (size_t j = 0; j < n_approved; j++)
            len += (size_t)sprintf(list + len, "%s%lld", j ? "," : "", (long long)approved[j]);
        sprintf(list + len, ")");
    }
    r = db_queryf(db, e,
                  "SELECT id, dedup_key, kind, business, order_id, subject, body, created_at, "
                  "sms_done, mail_done, attempts FROM alerts WHERE status = 'PENDING' AND "
                  "next_attempt_at <= NOW(3) AND (attempts > 0 OR " IS_SUMMARY_SQL "%r) "
                  "ORDER BY next_attempt_at, id LIMIT %lld FOR UPDATE SKIP LOCKED",
                  list, (long long)max);
    free(list);
    if (r == NULL)
        return -1;
    *out = calloc(db_rows_count(r) + 1, sizeof(**out));
    if (*out == NULL)
        abort();
    while (db_rows_next(r)) {
        struct alert *a = &(*out)[i++];
        a->id = db_rows_int(r, 0);
        a->dedup_key = dup_or_null(db_rows_get(r, 1));
        a->kind = dup_or_null(db_rows_get(r, 2));
        a->business = dup_or_null(db_rows_get(r, 3));
        a->order_id = dup_or_null(db_rows_get(r, 4));
        a->subject = dup_or_null(db_rows_get(r, 5));
        a->body = dup_or_null(db_rows_get(r, 6));
        snprintf(a->created_at, sizeof(a->created_at), "%s",
                 db_rows_get(r, 7) ? db_rows_get(r, 7) : "");
        a->sms_done = (int)db_rows_int(r, 8);
        a->mail_done = (int)db_rows_int(r, 9);
        a->attempts = (int)db_rows_int(r, 10) + 1;
        a->is_summary =
            strncmp(a->dedup_key, ALERTS_SUMMARY_PREFIX, strlen(ALERTS_SUMMARY_PREFIX)) == 0;
    }
    db_rows_free(r);
    *n = i;
    for (i = 0; i < *n; i++) {
        int64_t lease = (int64_t)(i + 1) * lease_step_ms + lease_extra_ms;
        if (db_execf(db, e,
                     "UPDATE alerts SET attempts = attempts + 1, next_attempt_at = NOW(3) + "
                     "INTERVAL %lld MICROSECOND WHERE id = %lld",
                     (long long)lease * 1000, (long long)(*out)[i].id) != 1)
            goto out;
    }
    rc = 0;
out:
    if (rc != 0) {
        if (e->kind == ERRBUF_NONE)
            errbuf_set(e, ERRBUF_TRANSIENT, "alerts: claimed row vanished");
        alerts_free(*out, *n);
        *out = NULL;
        *n = 0;
    }
    return rc;
}

int alerts_set_progress(db_conn *db, int64_t id, int sms_done, int mail_done, struct errbuf *e)
{
    return db_execf(db, e, "UPDATE alerts SET sms_done = %d, mail_done = %d WHERE id = %lld",
                    sms_done, mail_done, (long long)id) < 0
               ? -1
               : 0;
}

int alerts_finish(db_conn *db, int64_t id, int sent, const char *error, int64_t retry_in_ms,
                  struct errbuf *e)
{
    char *msg;
    size_t chars;
    int64_t r;

    if (sent)
        return db_execf(db, e,
                        "UPDATE alerts SET status = 'SENT', sent_at = NOW(3) WHERE id = %lld",
                        (long long)id) < 0
                   ? -1
                   : 0;
    msg = clean_text(error ? error : "unknown error", ALERTS_ERROR_MAX, NO_LIMIT, &chars);
    r = db_execf(db, e,
                 "UPDATE alerts SET last_error = %s, next_attempt_at = NOW(3) + INTERVAL %lld "
                 "MICROSECOND WHERE id = %lld",
                 msg, (long long)retry_in_ms * 1000, (long long)id);
    free(msg);
    return r < 0 ? -1 : 0;
}

int alerts_release(db_conn *db, int64_t id, struct errbuf *e)
{
    return db_execf(db, e,
                    "UPDATE alerts SET attempts = GREATEST(attempts - 1, 0), next_attempt_at = "
                    "NOW(3) WHERE id = %lld AND status = 'PENDING'",
                    (long long)id) < 0
               ? -1
               : 0;
}

int64_t alerts_pending(db_conn *db, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e, "SELECT COUNT(*) FROM alerts WHERE status = 'PENDING'");
    int64_t n = -1;

    if (r == NULL)
        return -1;
    if (db_rows_next(r))
        n = db_rows_int(r, 0);
    db_rows_free(r);
    return n;
}
