/* store/outbox.c: the notification outbox rows and their attempts. */
#include "store/outbox.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "common/xalloc.h"

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

static void copy_time(char *dst, size_t cap, const char *sql)
{
    if (sql == NULL)
        dst[0] = '\0';
    else
        clock_sql_to_rfc3339(sql, dst, cap);
}

int outbox_insert_add(db_batch *b, const struct order *o, const char *event_type, const char *now,
                      char *webhook_id, struct errbuf *e)
{
    char *payload;

    if (crypto_random_id("msg_", 12, webhook_id) != 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "random id generation failed");
        return -1;
    }
    payload = orders_to_json(o);
    db_batch_addf(b,
                  "INSERT INTO notifications (webhook_id, order_id, business, event_type,"
                  " notify_url, payload, status, attempts, created_at, updated_at) VALUES"
                  " (%s, %s, %s, %s, %s, %s, 'PENDING', 0, %s, %s)",
                  webhook_id, o->id, o->business, event_type, o->notify_url, payload, now, now);
    free(payload);
    return db_batch_count(b) - 1;
}

int outbox_insert(db_conn *db, const struct order *o, const char *event_type, const char *now,
                  int64_t *id, char *webhook_id, struct errbuf *e)
{
    db_batch *b = db_batch_new(db, 0);
    int k = outbox_insert_add(b, o, event_type, now, webhook_id, e), rc = -1;

    if (k >= 0 && db_batch_run(b, e) == 0) {
        *id = db_batch_insert_id(b, k);
        rc = 0;
    }
    db_batch_free(b);
    return rc;
}

int outbox_get(db_conn *db, int64_t id, struct notification *n, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e,
                           "SELECT id, webhook_id, order_id, business, event_type, notify_url,"
                           " status, attempts, created_at FROM notifications WHERE id = %lld",
                           (long long)id);
    int rc = 1;

    if (r == NULL)
        return -1;
    if (db_rows_next(r)) {
        memset(n, 0, sizeof(*n));
        n->id = db_rows_int(r, 0);
        copy(n->webhook_id, sizeof(n->webhook_id), db_rows_get(r, 1));
        copy(n->order_id, sizeof(n->order_id), db_rows_get(r, 2));
        copy(n->business, sizeof(n->business), db_rows_get(r, 3));
        copy(n->event_type, sizeof(n->event_type), db_rows_get(r, 4));
        copy(n->notify_url, sizeof(n->notify_url), db_rows_get(r, 5));
        copy(n->status, sizeof(n->status), db_rows_get(r, 6));
        n->attempts = (int)db_rows_int(r, 7);
        copy_time(n->created_at, sizeof(n->created_at), db_rows_get(r, 8));
        rc = 0;
    }
    db_rows_free(r);
    return rc;
}

int outbox_mark_published(db_conn *db, int64_t id, struct errbuf *e)
{
    char now[32];
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    return db_execf(db, e,
                    "UPDATE notifications SET published_at = %s WHERE id = %lld AND"
                    " published_at IS NULL",
                    now, (long long)id) < 0
               ? -1
               : 0;
}

int outbox_mark_published_many(db_conn *db, const int64_t *ids, int n, struct errbuf *e)
{
    char now[32], *list, *p;
    int64_t rc;

    if (n <= 0)
        return 0;
    p = list = xmalloc((size_t)n * 24 + 1);
    for (int i = 0; i < n; i++)
        p += sprintf(p, "%s%lld", i ? "," : "", (long long)ids[i]);
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    rc = db_execf(db, e,
                  "UPDATE notifications SET published_at = %s WHERE id IN (%r) AND"
                  " published_at IS NULL",
                  now, list);
    free(list);
    return rc < 0 ? -1 : 0;
}

int outbox_record_attempt(db_conn *db, const struct notification *n, const struct outbox_attempt *a,
                          int *attempts_after, struct errbuf *e)
{
    char now[32], status_s[16];
    int rc = -1;
    db_rows *r;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    snprintf(status_s, sizeof(status_s), "%ld", a->http_status);
    if (db_begin(db, e) != 0)
        return -1;
    /* The row lock orders concurrent copies of one notification. */
    r = db_queryf(db, e, "SELECT attempts FROM notifications WHERE id = %lld FOR UPDATE",
                  (long long)n->id);
    if (r == NULL)
        goto out;
    *attempts_after = db_rows_next(r) ? (int)db_rows_int(r, 0) + 1 : 1;
    db_rows_free(r);
    if (db_execf(db, e,
                 "INSERT INTO notification_attempts (notification_id, attempt, attempted_at,"
                 " http_status, error, latency_ms, response_head) VALUES (%lld, %d, %s, %r, %s,"
                 " %d, %s)",
                 (long long)n->id, *attempts_after - 1, now, a->http_status > 0 ? status_s : "NULL",
                 a->ok ? NULL : a->error, (int)a->latency_ms,
                 a->response_head[0] ? a->response_head : NULL) < 0)
        goto out;
    /* A DELIVERED row never goes back (a late failure of a duplicate copy). */
    if (db_execf(db, e,
                 "UPDATE notifications SET attempts = attempts + 1, last_attempt_at = %s,"
                 " last_http_status = %r, last_error = %s,"
                 " status = IF(status = 'DELIVERED', status, %s), updated_at = %s WHERE id = %lld",
                 now, a->http_status > 0 ? status_s : "NULL", a->ok ? NULL : a->error,
                 a->ok ? "DELIVERED" : "PENDING", now, (long long)n->id) < 0)
        goto out;
    if (db_execf(db, e,
                 "UPDATE orders SET notify_attempts = notify_attempts + 1,"
                 " notify_last_error = IF(notify_status = 'DELIVERED', notify_last_error, %s),"
                 " notify_status = IF(notify_status = 'DELIVERED', notify_status, %s),"
                 " updated_at = %s WHERE id = %s",
                 a->ok ? NULL : a->error, a->ok ? "DELIVERED" : "PENDING", now, n->order_id) < 0)
        goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0)
        db_rollback(db);
    return rc;
}

int outbox_mark_failed(db_conn *db, const struct notification *n, struct errbuf *e)
{
    char now[32];

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (db_execf(db, e,
                 "UPDATE notifications SET status = 'FAILED', updated_at = %s WHERE id = %lld"
                 " AND status = 'PENDING'",
                 now, (long long)n->id) < 0)
        return -1;
    return db_execf(db, e,
                    "UPDATE orders SET notify_status = 'FAILED', updated_at = %s WHERE id = %s"
                    " AND notify_status = 'PENDING'",
                    now, n->order_id) < 0
               ? -1
               : 0;
}

int outbox_first_attempt_at(db_conn *db, int64_t id, char *out, size_t len, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e,
                           "SELECT MIN(attempted_at) FROM notification_attempts WHERE"
                           " notification_id = %lld",
                           (long long)id);
    int rc = 1;

    out[0] = '\0';
    if (r == NULL)
        return -1;
    if (db_rows_next(r) && db_rows_get(r, 0) != NULL) {
        clock_sql_to_rfc3339(db_rows_get(r, 0), out, len);
        rc = 0;
    }
    db_rows_free(r);
    return rc;
}

int outbox_unpublished(db_conn *db, int64_t older_than_ms, int64_t *ids, int max, struct errbuf *e)
{
    char cutoff[32];
    db_rows *r;
    int n = 0;

    clock_format_sql(clock_now_ms() - older_than_ms, cutoff, sizeof(cutoff));
    r = db_queryf(db, e,
                  "SELECT id FROM notifications WHERE status = 'PENDING' AND published_at IS NULL"
                  " AND created_at < %s ORDER BY id LIMIT %d",
                  cutoff, max);
    if (r == NULL)
        return -1;
    while (n < max && db_rows_next(r))
        ids[n++] = db_rows_int(r, 0);
    db_rows_free(r);
    return n;
}

int outbox_stuck(db_conn *db, int64_t older_than_ms, int64_t *ids, int max, struct errbuf *e)
{
    char cutoff[32], now[32];
    db_rows *r;
    int n = 0;

    clock_format_sql(clock_now_ms() - older_than_ms, cutoff, sizeof(cutoff));
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    r = db_queryf(db, e,
                  "SELECT id FROM notifications WHERE status = 'PENDING' AND published_at IS NOT"
                  " NULL AND published_at < %s AND COALESCE(last_attempt_at, published_at) < %s"
                  " ORDER BY id LIMIT %d",
                  cutoff, cutoff, max);
    if (r == NULL)
        return -1;
    while (n < max && db_rows_next(r))
        ids[n++] = db_rows_int(r, 0);
    db_rows_free(r);
    /* Republished now: the clock restarts, so a row is not republished on every sweep. */
    for (int i = 0; i < n; i++)
        if (db_execf(db, e, "UPDATE notifications SET published_at = %s WHERE id = %lld", now,
                     (long long)ids[i]) < 0)
            return -1;
    return n;
}

int outbox_replay(db_conn *db, const char *key, struct errbuf *e)
{
    char now[32];
    int64_t n;
    int rc = -1;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (db_begin(db, e) != 0)
        return -1;
    /* Only FAILED rows: a PENDING one is still on its way, a DELIVERED one arrived. */
    n = db_execf(db, e,
                 "UPDATE notifications SET status = 'PENDING', attempts = 0, published_at = NULL,"
                 " updated_at = %s WHERE status = 'FAILED' AND (webhook_id = %s OR order_id = %s)",
                 now, key, key);
    if (n < 0)
        goto out;
    if (n > 0 && db_execf(db, e,
                          "UPDATE orders SET notify_status = 'PENDING', updated_at = %s WHERE"
                          " notify_status = 'FAILED' AND id IN (SELECT order_id FROM notifications"
                          " WHERE webhook_id = %s OR order_id = %s)",
                          now, key, key) < 0)
        goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0) {
        db_rollback(db);
        return -1;
    }
    return (int)n;
}

int outbox_sweep_lock(db_conn *db, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e, "SELECT GET_LOCK('paynotify_sweeper', 0)");
    int got;

    if (r == NULL)
        return -1;
    got = db_rows_next(r) && db_rows_int(r, 0) == 1;
    db_rows_free(r);
    return got ? 0 : 1;
}

void outbox_sweep_unlock(db_conn *db)
{
    db_rows_free(db_queryf(db, NULL, "SELECT RELEASE_LOCK('paynotify_sweeper')"));
}

void outbox_message(int64_t id, char *buf, size_t len)
{
    snprintf(buf, len, "{\"notification_id\":%lld}", (long long)id);
}

int outbox_message_parse(const void *body, size_t len, int64_t *id)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, body, (int)len), *v;
    int rc = -1;

    if (o != NULL && json_object_is_type(o, json_type_object) &&
        json_object_object_get_ex(o, "notification_id", &v) &&
        json_object_is_type(v, json_type_int) && json_object_get_int64(v) > 0) {
        *id = json_object_get_int64(v);
        rc = 0;
    }
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}
