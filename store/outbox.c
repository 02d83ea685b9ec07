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

#define OUTBOX_NOTIFICATION_COLUMNS                                                     \
    "n.id, n.webhook_id, n.order_id, n.business, n.event_type, n.notify_url, n.status," \
    " n.attempts, n.created_at"
#define OUTBOX_FIRST_ORDER_COLUMN 9

static void row_to_notification(db_rows *r, struct notification *n)
{
    memset(n, 0, sizeof(*n));
    n->id = db_rows_int(r, 0);
    copy(n->webhook_id, sizeof(n->webhook_id), db_rows_get(r, 1));
    copy(n->order_id, sizeof(n->order_id), db_rows_get(r, 2));
    copy(n->business, sizeof(n->business), db_rows_get(r, 3));
    copy(n->event_type, sizeof(n->event_type), db_rows_get(r, 4));
    copy(n->notify_url, sizeof(n->notify_url), db_rows_get(r, 5));
    copy(n->status, sizeof(n->status), db_rows_get(r, 6));
    n->attempts = (int)db_rows_int(r, 7);
    clock_sql_to_rfc3339(db_rows_get(r, 8), n->created_at, sizeof(n->created_at));
}

int outbox_get(db_conn *db, int64_t id, struct notification *n, struct errbuf *e)
{
    db_rows *r = db_queryf(
        db, e, "SELECT " OUTBOX_NOTIFICATION_COLUMNS " FROM notifications n WHERE n.id = %lld",
        (long long)id);
    int rc = 1;

    if (r == NULL)
        return -1;
    if (db_rows_next(r)) {
        row_to_notification(r, n);
        rc = 0;
    }
    db_rows_free(r);
    return rc;
}

int outbox_get_deliveries(db_conn *db, struct outbox_delivery *d, int count, struct errbuf *e)
{
    char *list, *p;
    db_rows *r;

    if (count <= 0)
        return 0;
    p = list = xmalloc((size_t)count * 24 + 1);
    for (int i = 0; i < count; i++) {
        d[i].found = 0;
        p += sprintf(p, "%s%lld", i ? "," : "", (long long)d[i].id);
    }
    r = db_queryf(db, e,
                  "SELECT " OUTBOX_NOTIFICATION_COLUMNS ", " ORDERS_COLUMNS(
                      "o.") " FROM notifications n LEFT JOIN orders o ON o.id = n.order_id"
                            " WHERE n.id IN (%r)",
                  list);
    free(list);
    if (r == NULL)
        return -1;
    while (db_rows_next(r)) {
        int64_t id = db_rows_int(r, 0);
        int first = -1;

        for (int i = 0; i < count; i++) {
            if (d[i].id != id)
                continue;
            if (first >= 0) { /* a second copy of one message: the same row */
                d[i].n = d[first].n;
                d[i].o = d[first].o;
                d[i].found = d[first].found;
                continue;
            }
            first = i;
            row_to_notification(r, &d[i].n);
            d[i].found = 1;
            if (db_rows_get(r, OUTBOX_FIRST_ORDER_COLUMN) != NULL) {
                orders_read_row(r, OUTBOX_FIRST_ORDER_COLUMN, &d[i].o);
                d[i].found = 2;
            }
        }
    }
    db_rows_free(r);
    return 0;
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

/* Orders k[0..count) by (key, position): a stable insertion sort, batches are small. */
static void sort_by(int *k, int count,
                    int (*cmp)(const struct outbox_record *, const struct outbox_record *),
                    const struct outbox_record *r)
{
    for (int i = 1; i < count; i++) {
        int v = k[i], j = i;
        while (j > 0 && cmp(&r[k[j - 1]], &r[v]) > 0) {
            k[j] = k[j - 1];
            j--;
        }
        k[j] = v;
    }
}

static int by_notification(const struct outbox_record *a, const struct outbox_record *b)
{
    return a->n->id < b->n->id ? -1 : a->n->id > b->n->id;
}

static int by_order(const struct outbox_record *a, const struct outbox_record *b)
{
    return strcmp(a->n->order_id, b->n->order_id);
}

static void json_add_str(json_object *o, const char *key, const char *v)
{
    if (v != NULL) /* absent: JSON_TABLE reads NULL */
        json_object_object_add(o, key, json_object_new_string(v));
}

static void json_add_int(json_object *o, const char *key, int64_t v)
{
    json_object_object_add(o, key, json_object_new_int64(v));
}

static const char *attempt_error(const struct outbox_attempt *a)
{
    return a->ok ? NULL : a->error;
}

/* The batch as three JSON arrays that JSON_TABLE turns into rows, so that each statement
 * below handles every attempt at once and db.c escapes one string:
 *   rows  one per notification (id order): attempts made, the last one's status and
 *         error, whether any was delivered;
 *   atts  one per attempt (id order, then batch order): back = how many attempts on its
 *         row, itself included, came at or after it in this batch;
 *   ords  one per order (id order): attempts made, whether any was delivered, the last
 *         one's error. */
static void batch_json(const struct outbox_record *r, int *k, int count, json_object *rows,
                       json_object *atts, json_object *ords)
{
    sort_by(k, count, by_notification, r);
    for (int i = 0; i < count;) {
        const struct outbox_record *last;
        json_object *row = json_object_new_object();
        int j = i, ok = 0;

        while (j < count && r[k[j]].n->id == r[k[i]].n->id)
            ok |= r[k[j++]].a.ok;
        last = &r[k[j - 1]];
        json_add_int(row, "id", last->n->id);
        json_add_int(row, "cnt", j - i);
        if (last->a.http_status > 0)
            json_add_int(row, "http", last->a.http_status);
        json_add_str(row, "err", attempt_error(&last->a));
        json_add_int(row, "ok", ok);
        json_object_array_add(rows, row);
        for (int c = i; c < j; c++) {
            const struct outbox_attempt *a = &r[k[c]].a;
            json_object *att = json_object_new_object();
            json_add_int(att, "id", r[k[c]].n->id);
            json_add_int(att, "back", j - c);
            if (a->http_status > 0)
                json_add_int(att, "http", a->http_status);
            json_add_str(att, "err", attempt_error(a));
            json_add_int(att, "lat", a->latency_ms);
            json_add_str(att, "head", a->response_head[0] ? a->response_head : NULL);
            json_object_array_add(atts, att);
        }
        i = j;
    }
    sort_by(k, count, by_order, r);
    for (int i = 0; i < count;) {
        json_object *ord = json_object_new_object();
        int j = i, ok = 0;

        while (j < count && strcmp(r[k[j]].n->order_id, r[k[i]].n->order_id) == 0)
            ok |= r[k[j++]].a.ok;
        json_add_str(ord, "id", r[k[i]].n->order_id);
        json_add_int(ord, "cnt", j - i);
        json_add_int(ord, "ok", ok);
        /* Applied one by one, a delivery clears the error and later failures keep it. */
        json_add_str(ord, "err", ok ? NULL : attempt_error(&r[k[j - 1]].a));
        json_object_array_add(ords, ord);
        i = j;
    }
}

/* The statements of outbox_record_attempts(); each %s before a JSON_TABLE is that batch's
 * JSON array (see batch_json()), the others the time. */
static const char record_rows_sql[] =
    "UPDATE notifications n JOIN JSON_TABLE(%s, '$[*]' COLUMNS("
    "  id BIGINT PATH '$.id', cnt INT PATH '$.cnt', http INT PATH '$.http',"
    "  err VARCHAR(512) PATH '$.err', ok INT PATH '$.ok')) j ON n.id = j.id"
    " SET n.attempts = n.attempts + j.cnt, n.last_attempt_at = %s,"
    "  n.last_http_status = j.http, n.last_error = j.err,"
    "  n.status = IF(n.status = 'DELIVERED' OR j.ok = 1, 'DELIVERED', 'PENDING'),"
    "  n.updated_at = %s";
static const char record_attempts_sql[] =
    "INSERT INTO notification_attempts (notification_id, attempt, attempted_at, http_status,"
    "  error, latency_ms, response_head)"
    " SELECT n.id, n.attempts - j.back, %s, j.http, j.err, j.lat, j.head"
    " FROM JSON_TABLE(%s, '$[*]' COLUMNS("
    "  seq FOR ORDINALITY, id BIGINT PATH '$.id', back INT PATH '$.back',"
    "  http INT PATH '$.http', err VARCHAR(512) PATH '$.err', lat INT PATH '$.lat',"
    "  head VARCHAR(256) PATH '$.head')) j"
    " JOIN notifications n ON n.id = j.id ORDER BY j.seq";
static const char record_order_error_sql[] =
    "UPDATE orders o JOIN JSON_TABLE(%s, '$[*]' COLUMNS("
    "  id VARCHAR(32) COLLATE utf8mb4_bin PATH '$.id', cnt INT PATH '$.cnt',"
    "  err VARCHAR(512) PATH '$.err')) j ON o.id = j.id"
    " SET o.notify_attempts = o.notify_attempts + j.cnt,"
    "  o.notify_last_error = IF(o.notify_status = 'DELIVERED', o.notify_last_error, j.err),"
    "  o.updated_at = %s";
static const char record_order_status_sql[] =
    "UPDATE orders o JOIN JSON_TABLE(%s, '$[*]' COLUMNS("
    "  id VARCHAR(32) COLLATE utf8mb4_bin PATH '$.id', ok INT PATH '$.ok')) j ON o.id = j.id"
    " SET o.notify_status = IF(o.notify_status = 'DELIVERED' OR j.ok = 1, 'DELIVERED',"
    "  'PENDING')";

int outbox_record_attempts(db_conn *db, struct outbox_record *r, int count, struct errbuf *e)
{
    json_object *rows = json_object_new_array(), *atts = json_object_new_array(),
                *ords = json_object_new_array();
    db_batch *b = NULL;
    char now[32], *list, *p;
    int *k, rc = -1, sel;
    db_rows *res;

    if (count <= 0) {
        rc = 0;
        goto out;
    }
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    k = xmalloc((size_t)count * sizeof(*k));
    p = list = xmalloc((size_t)count * 24 + 1);
    for (int i = 0; i < count; i++) {
        k[i] = i;
        p += sprintf(p, "%s%lld", i ? "," : "", (long long)r[i].n->id);
        r[i].attempts_after = 0;
        r[i].status[0] = '\0';
    }
    batch_json(r, k, count, rows, atts, ords);
    free(k);
    b = db_batch_new(db, 1);
    /* The UPDATE locks the notification rows (in id order, the order of the JSON rows), so
     * the INSERT after it reads the attempt counts of this transaction alone. A DELIVERED
     * row never goes back. Each assignment reads only its own column: MySQL does not
     * promise an order for a multiple-table UPDATE's assignments. */
    db_batch_addf(b, record_rows_sql, json_object_to_json_string_ext(rows, JSON_C_TO_STRING_PLAIN),
                  now, now);
    db_batch_addf(b, record_attempts_sql, now,
                  json_object_to_json_string_ext(atts, JSON_C_TO_STRING_PLAIN));
    /* The order's error first, from its status before this batch; then the status. */
    db_batch_addf(b, record_order_error_sql,
                  json_object_to_json_string_ext(ords, JSON_C_TO_STRING_PLAIN), now);
    db_batch_addf(b, record_order_status_sql,
                  json_object_to_json_string_ext(ords, JSON_C_TO_STRING_PLAIN));
    db_batch_addf(b, "SELECT id, attempts, status FROM notifications WHERE id IN (%r)", list);
    sel = db_batch_count(b) - 1;
    free(list);
    if (db_batch_run(b, e) != 0)
        goto out;
    res = db_batch_rows(b, sel);
    while (res != NULL && db_rows_next(res)) {
        int64_t id = db_rows_int(res, 0);
        int attempts = (int)db_rows_int(res, 1), later = 0;
        /* Copies of one row counted their attempts in batch order: the last one has the
         * row's final count, each earlier one one less than the copy after it. */
        for (int i = count - 1; i >= 0; i--)
            if (r[i].n->id == id) {
                r[i].attempts_after = attempts - later++;
                copy(r[i].status, sizeof(r[i].status), db_rows_get(res, 2));
            }
    }
    rc = db_commit(db, e);
out:
    /* Never leave a transaction open: the next batch reuses this connection. */
    if (rc != 0) {
        db_rollback(db);
        for (int i = 0; i < count; i++) {
            r[i].attempts_after = 0;
            r[i].status[0] = '\0';
        }
    }
    db_batch_free(b);
    json_object_put(rows);
    json_object_put(atts);
    json_object_put(ords);
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
