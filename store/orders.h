/* store/orders.h: payment orders and the payment log in MySQL (the outbox: store/outbox.h).
 * MySQL is the truth: the unique key on payment_log and the compare-and-set on
 * orders.version make applying a provider event twice impossible. */
#ifndef PAYNOTIFY_STORE_ORDERS_H
#define PAYNOTIFY_STORE_ORDERS_H

#include <stddef.h>
#include <stdint.h>

#include "channel/channel.h"
#include "common/errbuf.h"
#include "store/db.h"
#include "store/orderstate.h"

struct order {
    char id[33];
    char business[65];
    char business_order_id[129];
    int64_t amount; /* minor units */
    char currency[4];
    char channel[65];
    char subject[257];
    char notify_url[2049];
    char expire_at[32]; /* RFC 3339 or "" */
    char cancel_url[2049];
    char status[16];
    char provider_txn_id[129];
    char paid_at[32]; /* RFC 3339 or "" */
    char notify_status[16];
    int notify_attempts;
    char notify_last_error[513];
    int version;
    char created_at[32];
    char updated_at[32];
};

/* The columns orders_read_row() reads, in its order, each name after prefix (a string
 * literal: "" or a table alias such as "o."). */
#define ORDERS_COLUMNS(p)                                                                       \
    p "id, " p "business, " p "business_order_id, " p "amount, " p "currency, " p "channel, " p \
      "subject, " p "notify_url, " p "expire_at, " p "cancel_url, " p "status, " p              \
      "provider_txn_id, " p "paid_at, " p "notify_status, " p "notify_attempts, " p             \
      "notify_last_error, " p "version, " p "created_at, " p "updated_at"
/* Fills *o from the current row of r, whose ORDERS_COLUMNS start at column first. */
void orders_read_row(db_rows *r, unsigned first, struct order *o);

/* A validated create request (all borrowed). expire_at_ms 0 = none; cancel_url may be NULL. */
struct order_new {
    const char *business;
    const char *business_order_id;
    int64_t amount;
    const char *currency; /* upper-case ISO 4217 */
    const char *channel;
    const char *subject;
    const char *notify_url;
    int64_t expire_at_ms;
    const char *cancel_url;
};

enum orders_create_result {
    ORDERS_CREATED = 0,
    ORDERS_EXISTS = 1,   /* same business_order_id, same content: *out is that order */
    ORDERS_CONFLICT = 2, /* same business_order_id, different content */
};

/* Returns an orders_create_result or -1. */
int orders_create(db_conn *db, const struct order_new *req, struct order *out, struct errbuf *e);
/* 0 found, 1 not found, -1 error. */
int orders_get(db_conn *db, const char *id, struct order *out, struct errbuf *e);
/* The order JSON of the API and of webhooks. Caller frees with free(). */
char *orders_to_json(const struct order *o);

/* What applying one callback did. */
struct apply_result {
    int duplicate_event; /* the payment_log already had this provider event */
    int unknown_order;   /* valid event, no such order */
    enum order_decision decision;
    int64_t notification_id; /* > 0 when an outbox row was written */
    char webhook_id[65];
    char refund_id[65]; /* set when a refund was queued (duplicate / after close) */
};

/* Applies a verified provider event in ONE transaction: payment_log row, order state
 * change by compare-and-set, outbox row; for a payment that must go back (duplicate
 * payment, payment after close) a refund row, and for every anomaly one alert. raw (borrowed) is
 * stored in the payment log. 0 on commit (including duplicates and non-paying outcomes); -1 with
 * TRANSIENT when it must be retried (deadlock, lost connection, lost CAS race), PERMANENT
 * otherwise. */
int orders_apply_event(db_conn *db, const char *channel, const struct pay_event *ev,
                       const char *callback_id, const char *raw, struct apply_result *res,
                       struct errbuf *e);

/* Ids of PENDING orders whose expire_at has passed (up to max); the count or -1. */
int orders_expired(db_conn *db, int max, char (*ids)[33], struct errbuf *e);
/* Closes one expired PENDING order by CAS and writes its order.closed outbox row, in one
 * transaction. 0 closed (*notification_id, webhook_id (>= 65 bytes) set), 1 no longer
 * closable (paid meanwhile), -1 error. */
int orders_close_expired(db_conn *db, const char *id, int64_t *notification_id, char *webhook_id,
                         struct errbuf *e);

#endif
