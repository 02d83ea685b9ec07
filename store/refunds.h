/* store/refunds.h: refunds paynotify requests on its own (duplicate payment, payment after
 * close). A row is created in the transaction that found the problem; the refunder claims
 * due rows with a lease, calls the provider under the row's idempotency key, and records
 * the answer. The key never changes, so a crash before or after the provider call can
 * repeat the call but never refund twice. */
#ifndef PAYNOTIFY_STORE_REFUNDS_H
#define PAYNOTIFY_STORE_REFUNDS_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"
#include "store/db.h"

struct refund {
    int64_t id;
    char refund_id[65];
    char order_id[65];
    char channel[65];
    char txn_id[129];
    int64_t amount;
    int64_t total;
    char currency[4];
    char reason[33];
    int attempts;
};

/* Inside the caller's transaction. 0 created (refund_id filled, >= 65 bytes), 1 this
 * payment already has a refund, -1 error. */
int refunds_create(db_conn *db, const char *order_id, const char *channel, const char *txn_id,
                   int64_t amount, const char *currency, const char *reason, char *refund_id,
                   struct errbuf *e);
/* Claims up to max due PENDING refunds (FOR UPDATE SKIP LOCKED), adds an attempt and
 * leases them for lease_ms, in one transaction. *out (caller frees with free()) gets *n. */
int refunds_claim(db_conn *db, int max, int64_t lease_ms, struct refund **out, size_t *n,
                  struct errbuf *e);
/* The provider refunded (or accepted the refund): SUCCEEDED, plus a payment_log row of
 * kind "refund". */
int refunds_succeeded(db_conn *db, const struct refund *r, const char *provider_refund_id,
                      const char *state, struct errbuf *e);
/* Try again in retry_ms. */
int refunds_retry_later(db_conn *db, const struct refund *r, const char *error, int64_t retry_ms,
                        struct errbuf *e);
/* The provider refused for good: REJECTED, an alert queued (one transaction). */
int refunds_rejected(db_conn *db, const struct refund *r, const char *error, struct errbuf *e);
/* Backoff after `attempts` failed calls: 5 s, 30 s, 2 min, 10 min, then 30 min. */
int64_t refunds_backoff_ms(int attempts);

#endif
