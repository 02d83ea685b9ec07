/* store/orders.c: order rows and the one-transaction apply of a provider event (which
 * writes its outbox row through store/outbox). SQL stays portable to MySQL 8. */
#include "store/orders.h"

#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "store/alerts.h"
#include "store/outbox.h"
#include "store/refunds.h"
#include "common/xalloc.h"

#define ORDER_COLUMNS ORDERS_COLUMNS("")

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

void orders_read_row(db_rows *r, unsigned c, struct order *o)
{
    memset(o, 0, sizeof(*o));
    copy(o->id, sizeof(o->id), db_rows_get(r, c + 0));
    copy(o->business, sizeof(o->business), db_rows_get(r, c + 1));
    copy(o->business_order_id, sizeof(o->business_order_id), db_rows_get(r, c + 2));
    o->amount = db_rows_int(r, c + 3);
    copy(o->currency, sizeof(o->currency), db_rows_get(r, c + 4));
    copy(o->channel, sizeof(o->channel), db_rows_get(r, c + 5));
    copy(o->subject, sizeof(o->subject), db_rows_get(r, c + 6));
    copy(o->notify_url, sizeof(o->notify_url), db_rows_get(r, c + 7));
    clock_sql_to_rfc3339(db_rows_get(r, c + 8), o->expire_at, sizeof(o->expire_at));
    copy(o->cancel_url, sizeof(o->cancel_url), db_rows_get(r, c + 9));
    copy(o->status, sizeof(o->status), db_rows_get(r, c + 10));
    copy(o->provider_txn_id, sizeof(o->provider_txn_id), db_rows_get(r, c + 11));
    clock_sql_to_rfc3339(db_rows_get(r, c + 12), o->paid_at, sizeof(o->paid_at));
    copy(o->notify_status, sizeof(o->notify_status), db_rows_get(r, c + 13));
    o->notify_attempts = (int)db_rows_int(r, c + 14);
    copy(o->notify_last_error, sizeof(o->notify_last_error), db_rows_get(r, c + 15));
    o->version = (int)db_rows_int(r, c + 16);
    clock_sql_to_rfc3339(db_rows_get(r, c + 17), o->created_at, sizeof(o->created_at));
    clock_sql_to_rfc3339(db_rows_get(r, c + 18), o->updated_at, sizeof(o->updated_at));
}

int orders_get(db_conn *db, const char *id, struct order *out, struct errbuf *e)
{
    db_rows *r = db_queryf(db, e, "SELECT " ORDER_COLUMNS " FROM orders WHERE id = %s", id);
    int rc = 1;

    if (r == NULL)
        return -1;
    if (db_rows_next(r)) {
        orders_read_row(r, 0, out);
        rc = 0;
    }
    db_rows_free(r);
    return rc;
}

static void request_hash(const struct order_new *q, char *hex)
{
    char *buf;
    size_t n;
    unsigned char h[CRYPTO_SHA256_LEN];
    FILE *f = open_memstream(&buf, &n);

    if (f == NULL)
        abort();
    /* Length-prefixed fields so that no two different requests hash alike. */
    fprintf(f, "%zu:%s|%zu:%s|%lld|%s|%zu:%s|%zu:%s|%zu:%s|%lld|%zu:%s", strlen(q->business),
            q->business, strlen(q->business_order_id), q->business_order_id, (long long)q->amount,
            q->currency, strlen(q->channel), q->channel, strlen(q->subject), q->subject,
            strlen(q->notify_url), q->notify_url, (long long)q->expire_at_ms,
            q->cancel_url ? strlen(q->cancel_url) : 0, q->cancel_url ? q->cancel_url : "");
    fclose(f);
    crypto_sha256(buf, n, h);
    free(buf);
    crypto_hex(h, sizeof(h), hex);
}

int orders_create(db_conn *db, const struct order_new *q, struct order *out, struct errbuf *e)
{
    char id[40], hash[2 * CRYPTO_SHA256_LEN + 1], now[32], expire[32];
    int64_t rc;
    db_rows *r;
    int same;

    if (crypto_random_id("po_", 12, id) != 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "random id generation failed");
        return -1;
    }
    request_hash(q, hash);
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (q->expire_at_ms > 0)
        clock_format_sql(q->expire_at_ms, expire, sizeof(expire));
    rc = db_execf(db, e,
                  "INSERT INTO orders (id, business, business_order_id, amount, currency, channel,"
                  " subject, notify_url, expire_at, cancel_url, request_hash, status,"
                  " notify_status, version, created_at, updated_at) VALUES (%s, %s, %s, %lld, %s,"
                  " %s, %s, %s, %s, %s, %s, 'PENDING', 'NONE', 0, %s, %s)",
                  id, q->business, q->business_order_id, (long long)q->amount, q->currency,
                  q->channel, q->subject, q->notify_url, q->expire_at_ms > 0 ? expire : NULL,
                  q->cancel_url, hash, now, now);
    if (rc >= 0)
        return orders_get(db, id, out, e) == 0 ? ORDERS_CREATED : -1;
    if (rc != DB_DUPLICATE)
        return -1;
    /* The business retried its create: same content is the same order; other content is a
     * conflict the business must resolve. */
    r = db_queryf(db, e,
                  "SELECT id, request_hash FROM orders WHERE business = %s AND"
                  " business_order_id = %s",
                  q->business, q->business_order_id);
    if (r == NULL)
        return -1;
    if (!db_rows_next(r)) {
        db_rows_free(r);
        errbuf_set(e, ERRBUF_TRANSIENT, "order vanished after a duplicate key");
        return -1;
    }
    same = strcmp(db_rows_get(r, 1), hash) == 0;
    snprintf(id, sizeof(id), "%s", db_rows_get(r, 0));
    db_rows_free(r);
    if (orders_get(db, id, out, e) != 0)
        return -1;
    return same ? ORDERS_EXISTS : ORDERS_CONFLICT;
}

static json_object *jstr_or_null(const char *s)
{
    return (s && *s) ? json_object_new_string(s) : NULL;
}

char *orders_to_json(const struct order *o)
{
    json_object *j = json_object_new_object();
    char *out;

    json_object_object_add(j, "order_id", json_object_new_string(o->id));
    json_object_object_add(j, "business", json_object_new_string(o->business));
    json_object_object_add(j, "business_order_id", json_object_new_string(o->business_order_id));
    json_object_object_add(j, "amount", json_object_new_int64(o->amount));
    json_object_object_add(j, "currency", json_object_new_string(o->currency));
    json_object_object_add(j, "channel", json_object_new_string(o->channel));
    json_object_object_add(j, "subject", json_object_new_string(o->subject));
    json_object_object_add(j, "status", json_object_new_string(o->status));
    json_object_object_add(j, "provider_txn_id", jstr_or_null(o->provider_txn_id));
    json_object_object_add(j, "paid_at", jstr_or_null(o->paid_at));
    json_object_object_add(j, "expire_at", jstr_or_null(o->expire_at));
    json_object_object_add(j, "notify_status", json_object_new_string(o->notify_status));
    json_object_object_add(j, "notify_attempts", json_object_new_int(o->notify_attempts));
    json_object_object_add(j, "notify_last_error", jstr_or_null(o->notify_last_error));
    json_object_object_add(j, "created_at", json_object_new_string(o->created_at));
    json_object_object_add(j, "updated_at", json_object_new_string(o->updated_at));
    out = xstrdup(json_object_to_json_string_ext(j, JSON_C_TO_STRING_PLAIN));
    json_object_put(j);
    return out;
}

static const char *event_type_for(enum order_decision d)
{
    return d == ORDER_DECIDE_PAY ? "order.paid" : NULL;
}

int orders_expired(db_conn *db, int max, char (*ids)[33], struct errbuf *e)
{
    char now[32];
    db_rows *r;
    int n = 0;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    r = db_queryf(db, e,
                  "SELECT id FROM orders WHERE status = 'PENDING' AND expire_at IS NOT NULL AND"
                  " expire_at <= %s ORDER BY expire_at LIMIT %d",
                  now, max);
    if (r == NULL)
        return -1;
    while (n < max && db_rows_next(r))
        copy(ids[n++], 33, db_rows_get(r, 0));
    db_rows_free(r);
    return n;
}

int orders_close_expired(db_conn *db, const char *id, int64_t *notification_id, char *webhook_id,
                         struct errbuf *e)
{
    char now[32];
    struct order o;
    db_rows *r;
    int rc = -1, closable;
    int64_t n;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (db_begin(db, e) != 0)
        return -1;
    /* The same row lock as a payment: a payment and the expiry never both win. */
    r = db_queryf(db, e,
                  "SELECT " ORDER_COLUMNS " FROM orders WHERE id = %s AND status = 'PENDING' AND"
                  " expire_at <= %s FOR UPDATE",
                  id, now);
    if (r == NULL)
        goto out;
    closable = db_rows_next(r);
    if (closable)
        orders_read_row(r, 0, &o);
    db_rows_free(r);
    if (!closable) {
        db_rollback(db);
        return 1;
    }
    n = db_execf(db, e,
                 "UPDATE orders SET status = 'CLOSED', notify_status = 'PENDING',"
                 " version = version + 1, updated_at = %s WHERE id = %s AND version = %d AND"
                 " status = 'PENDING'",
                 now, o.id, o.version);
    if (n != 1) {
        if (n == 0)
            errbuf_set(e, ERRBUF_TRANSIENT, "order %s changed under us (CAS lost)", o.id);
        goto out;
    }
    if (orders_get(db, o.id, &o, e) != 0 ||
        outbox_insert(db, &o, "order.closed", now, notification_id, webhook_id, e) != 0)
        goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0)
        db_rollback(db);
    return rc;
}

/* Money in an inconsistent state: a refund where money must go back, and one alert per
 * case, in the apply transaction, so that neither is lost nor doubled by a crash. */
static int queue_anomaly(db_conn *db, const char *channel, const struct pay_event *ev,
                         const struct order *o, struct apply_result *res, struct errbuf *e)
{
    char key[512], subject[512], body[8192];
    const char *kind;

    if (res->unknown_order) {
        kind = "unknown_order";
        snprintf(key, sizeof(key), "unknown_order:%.64s:%.128s", channel, ev->event_id);
        snprintf(subject, sizeof(subject), "paynotify: payment for unknown order %.64s",
                 ev->order_id);
        snprintf(body, sizeof(body),
                 "A correctly signed %.200s notification names an order that does not exist.\n\n"
                 "order id:     %.200s\nchannel:      %.200s\nevent:        %.200s (%.200s)\n"
                 "transaction:  %.200s\namount:       %lld %.200s\n",
                 channel, ev->order_id, channel, ev->event_id, ev->event_type, ev->txn_id,
                 (long long)ev->amount, ev->currency);
    } else if (o == NULL) {
        return 0;
    } else if (res->decision == ORDER_DECIDE_AMOUNT_MISMATCH) {
        kind = "amount_mismatch";
        snprintf(key, sizeof(key), "amount_mismatch:%.64s:%.128s", channel, ev->event_id);
        snprintf(subject, sizeof(subject), "paynotify: amount mismatch on order %.40s", o->id);
        snprintf(body, sizeof(body),
                 "A payment does not match its order; the order was NOT marked paid.\n\n"
                 "order:        %.200s\nbusiness:     %.200s\nexpected:     %lld %.200s\n"
                 "received:     %lld %.200s\nchannel:      %.200s\ntransaction:  %.200s\nevent:    "
                 "    %.200s\n",
                 o->id, o->business, (long long)o->amount, o->currency, (long long)ev->amount,
                 ev->currency, channel, ev->txn_id, ev->event_id);
    } else if (res->decision == ORDER_DECIDE_DUPLICATE_PAYMENT ||
               res->decision == ORDER_DECIDE_PAID_AFTER_CLOSE) {
        int dup = res->decision == ORDER_DECIDE_DUPLICATE_PAYMENT;
        int rc;
        kind = dup ? "duplicate_payment" : "paid_after_close";
        rc = refunds_create(db, o->id, channel, ev->txn_id, ev->amount, ev->currency, kind,
                            res->refund_id, e);
        if (rc < 0)
            return -1;
        if (rc == 1)
            return 0; /* this payment was handled under another event id */
        snprintf(key, sizeof(key), "%s:%.64s:%.128s", kind, channel, ev->txn_id);
        snprintf(subject, sizeof(subject), "paynotify: %s on order %.40s, refund %.64s", kind,
                 o->id, res->refund_id);
        snprintf(
            body, sizeof(body),
            "%.200s\n\norder:            %.200s (%.200s)\nbusiness:         %.200s\n"
            "paid by:          %.200s\nnew transaction:  %.200s\namount:           %lld %.200s\n"
            "channel:          %.200s\nautomatic refund: %.200s (requested from the provider)\n",
            dup ? "The customer paid an order that was already paid."
                : "A payment arrived for an order that was already closed.",
            o->id, o->status, o->business, o->provider_txn_id[0] ? o->provider_txn_id : "-",
            ev->txn_id, (long long)ev->amount, ev->currency, channel, res->refund_id);
    } else {
        return 0;
    }
    return alerts_enqueue(db, kind, key, o ? o->business : NULL, ev->order_id, subject, body, e) < 0
               ? -1
               : 0;
}

/* What the PAY update below does to the row, done to the copy read under the row lock, so
 * that the outbox payload needs no second read. */
static void mark_paid(struct order *o, const char *txn_id, const char *now)
{
    copy(o->status, sizeof(o->status), "PAID");
    copy(o->provider_txn_id, sizeof(o->provider_txn_id), txn_id);
    clock_sql_to_rfc3339(now, o->paid_at, sizeof(o->paid_at));
    copy(o->notify_status, sizeof(o->notify_status), "PENDING");
    o->version++;
    clock_sql_to_rfc3339(now, o->updated_at, sizeof(o->updated_at));
}

int orders_apply_event(db_conn *db, const char *channel, const struct pay_event *ev,
                       const char *callback_id, const char *raw, struct apply_result *res,
                       struct errbuf *e)
{
    char now[32], amount_s[24], detail[256];
    db_batch *b;
    db_rows *r;
    struct order o;
    enum order_status status = ORDER_PENDING;
    int found, rc = -1, pay, outbox_k = -1;

    memset(res, 0, sizeof(*res));
    res->decision = ORDER_DECIDE_RECORD;
    detail[0] = '\0';
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    /* Round trip 1: begin, and lock the order row; it serialises every event of this order,
     * whatever Redis said. */
    b = db_batch_new(db, 1);
    db_batch_addf(b, "SELECT " ORDER_COLUMNS " FROM orders WHERE id = %s FOR UPDATE", ev->order_id);
    if (db_batch_run(b, e) != 0)
        goto out;
    r = db_batch_rows(b, 0);
    found = r != NULL && db_rows_next(r);
    if (found)
        orders_read_row(r, 0, &o);
    db_batch_free(b);
    b = NULL;
    if (!found && ev->order_id[0] == '\0') {
        snprintf(detail, sizeof(detail), "event carries no order id");
    } else if (!found) {
        res->unknown_order = 1;
        snprintf(detail, sizeof(detail), "no order %.64s", ev->order_id);
    } else {
        int amount_ok = ev->amount == o.amount && strcmp(ev->currency, o.currency) == 0;
        int same_txn = o.provider_txn_id[0] != '\0' && strcmp(o.provider_txn_id, ev->txn_id) == 0;
        if (orderstate_parse(o.status, &status) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "order %s has unknown status %s", o.id, o.status);
            goto out;
        }
        res->decision = orderstate_decide(status, ev->kind, amount_ok, same_txn);
        if (res->decision == ORDER_DECIDE_AMOUNT_MISMATCH)
            snprintf(detail, sizeof(detail), "order %lld %s, event %lld %s", (long long)o.amount,
                     o.currency, (long long)ev->amount, ev->currency);
        else if (res->decision == ORDER_DECIDE_DUPLICATE_PAYMENT)
            snprintf(detail, sizeof(detail), "order paid by %.100s, new transaction %.100s",
                     o.provider_txn_id, ev->txn_id);
    }
    pay = res->decision == ORDER_DECIDE_PAY && found;
    snprintf(amount_s, sizeof(amount_s), "%lld", (long long)ev->amount);
    /* Round trip 2: the payment log row (its unique key turns a replay into a duplicate),
     * and for a payment the CAS update and the outbox row. */
    b = db_batch_new(db, 0);
    db_batch_addf(b,
                  "INSERT INTO payment_log (channel, kind, provider_event_id, event_type, order_id,"
                  " provider_txn_id, amount, currency, outcome, detail, callback_id, raw,"
                  " created_at) VALUES (%s, 'callback', %s, %s, %s, %s, %r, %s, %s, %s, %s, %s,"
                  " %s)",
                  channel, ev->event_id, ev->event_type, ev->order_id[0] ? ev->order_id : NULL,
                  ev->txn_id[0] ? ev->txn_id : NULL, ev->amount >= 0 ? amount_s : "NULL",
                  ev->currency[0] ? ev->currency : NULL,
                  res->unknown_order ? "unknown_order" : orderstate_decision_name(res->decision),
                  detail[0] ? detail : NULL, callback_id, raw, now);
    if (pay) {
        db_batch_addf(b,
                      "UPDATE orders SET status = 'PAID', provider_txn_id = %s, paid_at = %s,"
                      " notify_status = 'PENDING', version = version + 1, updated_at = %s"
                      " WHERE id = %s AND version = %d AND status = 'PENDING'",
                      ev->txn_id, now, now, o.id, o.version);
        mark_paid(&o, ev->txn_id, now);
        outbox_k = outbox_insert_add(b, &o, event_type_for(res->decision), now, res->webhook_id, e);
        if (outbox_k < 0)
            goto out;
    }
    rc = db_batch_run(b, e);
    if (rc == DB_DUPLICATE && db_batch_failed_at(b) == 0) {
        /* Already applied by an earlier delivery: nothing more to do. */
        res->duplicate_event = 1;
        db_batch_free(b);
        db_rollback(db);
        return 0;
    }
    if (rc != 0) {
        if (rc == DB_DUPLICATE) /* a webhook id collision: another id next time */
            e->kind = ERRBUF_TRANSIENT;
        rc = -1;
        goto out;
    }
    rc = -1;
    if (pay && db_batch_affected(b, 1) != 1) {
        errbuf_set(e, ERRBUF_TRANSIENT, "order %s changed under us (CAS lost)", o.id);
        goto out;
    }
    if (pay)
        res->notification_id = db_batch_insert_id(b, outbox_k);
    if (queue_anomaly(db, channel, ev, found ? &o : NULL, res, e) != 0)
        goto out;
    /* Round trip 3. */
    rc = db_commit(db, e);
out:
    db_batch_free(b);
    /* Never leave a transaction open: the next job reuses this connection. */
    if (rc != 0)
        db_rollback(db);
    return rc;
}
