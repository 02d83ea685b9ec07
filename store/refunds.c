/* store/refunds.c: the refunds table. */
#include "store/refunds.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/crypto.h"
#include "store/alerts.h"

static void copy(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

int refunds_create(db_conn *db, const char *order_id, const char *channel, const char *txn_id,
                   int64_t amount, const char *currency, const char *reason, char *refund_id,
                   struct errbuf *e)
{
    char now[32];
    int64_t n;

    if (crypto_random_id("rf_", 12, refund_id) != 0) {
        errbuf_set(e, ERRBUF_TRANSIENT, "random id generation failed");
        return -1;
    }
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    n = db_execf(
        db, e,
        "INSERT INTO refunds (refund_id, order_id, channel, provider_txn_id, amount, total,"
        " currency, reason, status, attempts, next_attempt_at, created_at, updated_at)"
        " VALUES (%s, %s, %s, %s, %lld, %lld, %s, %s, 'PENDING', 0, %s, %s, %s)",
        refund_id, order_id, channel, txn_id, (long long)amount, (long long)amount, currency,
        reason, now, now, now);
    if (n == DB_DUPLICATE)
        return 1;
    return n < 0 ? -1 : 0;
}

int refunds_claim(db_conn *db, int max, int64_t lease_ms, struct refund **out, size_t *n,
                  struct errbuf *e)
{
    char now[32], lease[32];
    db_rows *r;
    struct refund *list;
    int rc = -1;

    *out = NULL;
    *n = 0;
    clock_format_sql(clock_now_ms(), now, sizeof(now));
    clock_format_sql(clock_now_ms() + lease_ms, lease, sizeof(lease));
    list = calloc((size_t)max, sizeof(*list));
    if (list == NULL)
        abort();
    if (db_begin(db, e) != 0) {
        free(list);
        return -1;
    }
    /* SKIP LOCKED: workers polling at once take different rows instead of waiting. */
    r = db_queryf(db, e,
                  "SELECT id, refund_id, order_id, channel, provider_txn_id, amount, total,"
                  " currency, reason, attempts FROM refunds WHERE status = 'PENDING' AND"
                  " next_attempt_at <= %s ORDER BY next_attempt_at LIMIT %d FOR UPDATE SKIP LOCKED",
                  now, max);
    if (r == NULL)
        goto out;
    while (*n < (size_t)max && db_rows_next(r)) {
        struct refund *f = &list[*n];
        f->id = db_rows_int(r, 0);
        copy(f->refund_id, sizeof(f->refund_id), db_rows_get(r, 1));
        copy(f->order_id, sizeof(f->order_id), db_rows_get(r, 2));
        copy(f->channel, sizeof(f->channel), db_rows_get(r, 3));
        copy(f->txn_id, sizeof(f->txn_id), db_rows_get(r, 4));
        f->amount = db_rows_int(r, 5);
        f->total = db_rows_int(r, 6);
        copy(f->currency, sizeof(f->currency), db_rows_get(r, 7));
        copy(f->reason, sizeof(f->reason), db_rows_get(r, 8));
        f->attempts = (int)db_rows_int(r, 9) + 1;
        (*n)++;
    }
    db_rows_free(r);
    /* The lease: a crash mid-call makes the row due again after lease_ms, and the retry
     * carries the same idempotency key. */
    for (size_t i = 0; i < *n; i++)
        if (db_execf(db, e,
                     "UPDATE refunds SET attempts = attempts + 1, next_attempt_at = %s,"
                     " updated_at = %s WHERE id = %lld",
                     lease, now, (long long)list[i].id) < 0)
            goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0) {
        db_rollback(db);
        free(list);
        *n = 0;
        return -1;
    }
    *out = list;
    return 0;
}

int refunds_succeeded(db_conn *db, const struct refund *r, const char *provider_refund_id,
                      const char *state, struct errbuf *e)
{
    char now[32];
    int rc = -1;
    int64_t n;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    if (db_begin(db, e) != 0)
        return -1;
    if (db_execf(db, e,
                 "UPDATE refunds SET status = 'SUCCEEDED', provider_refund_id = %s,"
                 " provider_state = %s, last_error = NULL, updated_at = %s WHERE id = %lld",
                 provider_refund_id, state, now, (long long)r->id) < 0)
        goto out;
    /* One payment-log row per provider interaction; the refund id keeps it unique. */
    n = db_execf(db, e,
                 "INSERT INTO payment_log (channel, kind, provider_event_id, event_type, order_id,"
                 " provider_txn_id, amount, currency, outcome, detail, created_at) VALUES (%s,"
                 " 'refund', %s, %s, %s, %s, %lld, %s, 'refunded', %s, %s)",
                 r->channel, r->refund_id, r->reason, r->order_id, r->txn_id, (long long)r->amount,
                 r->currency, provider_refund_id, now);
    if (n < 0 && n != DB_DUPLICATE)
        goto out;
    rc = db_commit(db, e);
out:
    if (rc != 0)
        db_rollback(db);
    return rc;
}

int refunds_retry_later(db_conn *db, const struct refund *r, const char *error, int64_t retry_ms,
                        struct errbuf *e)
{
    char now[32], next[32];

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    clock_format_sql(clock_now_ms() + retry_ms, next, sizeof(next));
    return db_execf(db, e,
                    "UPDATE refunds SET next_attempt_at = %s, last_error = %s, updated_at = %s"
                    " WHERE id = %lld AND status = 'PENDING'",
                    next, error, now, (long long)r->id) < 0
               ? -1
               : 0;
}

int refunds_rejected(db_conn *db, const struct refund *r, const char *error, struct errbuf *e)
{
    char now[32], key[128], subject[256], body[1024];
    int rc = -1;

    clock_format_sql(clock_now_ms(), now, sizeof(now));
    snprintf(key, sizeof(key), "refund_rejected:%s", r->refund_id);
    snprintf(subject, sizeof(subject), "paynotify: refund %s for order %s was refused",
             r->refund_id, r->order_id);
    snprintf(body, sizeof(body),
             "The provider refused an automatic refund; refund it by hand.\n\n"
             "order:        %s\nchannel:      %s\ntransaction:  %s\namount:       %lld %s\n"
             "reason:       %s\nrefund id:    %s\nerror:        %s\n",
             r->order_id, r->channel, r->txn_id, (long long)r->amount, r->currency, r->reason,
             r->refund_id, error);
    if (db_begin(db, e) != 0)
        return -1;
    if (db_execf(db, e,
                 "UPDATE refunds SET status = 'REJECTED', last_error = %s, updated_at = %s"
                 " WHERE id = %lld",
                 error, now, (long long)r->id) >= 0 &&
        alerts_enqueue(db, "refund_rejected", key, NULL, r->order_id, subject, body, e) >= 0)
        rc = db_commit(db, e);
    if (rc != 0)
        db_rollback(db);
    return rc;
}

int64_t refunds_backoff_ms(int attempts)
{
    static const int64_t steps[] = {5000, 30000, 120000, 600000};
    if (attempts < 1)
        return steps[0];
    if ((size_t)attempts > sizeof(steps) / sizeof(steps[0]))
        return 1800000;
    return steps[attempts - 1];
}
