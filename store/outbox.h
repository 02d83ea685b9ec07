/* store/outbox.h: the notification outbox. A row is written in the same transaction as
 * the order change it announces; the worker publishes its id to paynotify.notify and the
 * notify stage records every attempt against it. */
#ifndef PAYNOTIFY_STORE_OUTBOX_H
#define PAYNOTIFY_STORE_OUTBOX_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"
#include "store/db.h"
#include "store/orders.h"

struct notification {
    int64_t id;
    char webhook_id[65];
    char order_id[33];
    char business[65];
    char event_type[65];
    char notify_url[2049];
    char status[16];
    int attempts;
    char created_at[32]; /* RFC 3339 */
};

/* 0 found, 1 not found, -1 error. */
int outbox_get(db_conn *db, int64_t id, struct notification *n, struct errbuf *e);
/* What one delivery attempt needs: the notification and its order as they are now. */
struct outbox_delivery {
    int64_t id; /* in: the notification id */
    int found;  /* out: 0 no such notification, 1 notification without its order, 2 both */
    struct notification n;
    struct order o;
};
/* Reads the notifications d[0..count).id together with their orders in ONE query (ids may
 * repeat). 0 (each d[i].found set) or -1. */
int outbox_get_deliveries(db_conn *db, struct outbox_delivery *d, int count, struct errbuf *e);
int outbox_mark_published(db_conn *db, int64_t id, struct errbuf *e);
/* The same for n rows in one statement (autocommit). */
int outbox_mark_published_many(db_conn *db, const int64_t *ids, int n, struct errbuf *e);
/* One finished webhook attempt. */
struct outbox_attempt {
    int ok;
    long http_status;  /* 0 when no HTTP response */
    const char *error; /* borrowed; "" when ok */
    int64_t latency_ms;
    char response_head[256];
};

/* One finished attempt to record with outbox_record_attempts(). */
struct outbox_record {
    const struct notification *n; /* in, borrowed: needs id and order_id */
    struct outbox_attempt a;      /* in */
    int attempts_after; /* out: attempts made so far, this one included; 0 = no such row */
    char status[16];    /* out: the row's status after this batch ("" = no such row) */
};
/* Records the delivery attempts r[0..count): for each a notification_attempts row, the
 * outbox row and the order (DELIVERED on ok; a DELIVERED row never goes back), all in ONE
 * transaction of two round trips whatever count is (five statements over every attempt at
 * once, then COMMIT). Notification rows are locked in id order, then the orders, so two
 * batches do not deadlock each other; copies of one notification in the batch get
 * consecutive attempt numbers in their order in r, the same as recording them one after
 * another. A row that does not exist records nothing (attempts_after 0). 0, or -1 when the
 * transaction failed: nothing recorded. */
int outbox_record_attempts(db_conn *db, struct outbox_record *r, int count, struct errbuf *e);
/* Retries exhausted: notification and order notify_status FAILED. No transaction of its
 * own, so the caller can queue the alert in the same one. */
int outbox_mark_failed(db_conn *db, const struct notification *n, struct errbuf *e);
/* RFC 3339 time of the first recorded attempt into out; 1 if none, -1 on error. */
int outbox_first_attempt_at(db_conn *db, int64_t id, char *out, size_t len, struct errbuf *e);
/* Ids of PENDING rows committed more than older_than_ms ago and never published.
 * Fills ids (up to max); returns the count or -1. */
int outbox_unpublished(db_conn *db, int64_t older_than_ms, int64_t *ids, int max, struct errbuf *e);
/* Ids of PENDING rows published more than older_than_ms ago with no attempt since: their
 * message was lost somewhere (e.g. a classic queue's at-most-once dead-lettering). Marks
 * them published now. Returns the count or -1. */
int outbox_stuck(db_conn *db, int64_t older_than_ms, int64_t *ids, int max, struct errbuf *e);
/* Operator replay of FAILED notifications (key: a webhook id or an order id): back to
 * PENDING with a fresh retry budget and unpublished, so the sweeper sends them again (same
 * webhook-id). Returns how many rows were reset, or -1. */
int outbox_replay(db_conn *db, const char *key, struct errbuf *e);
/* The sweeper's named lock, so that one worker sweeps at a time: 0 taken, 1 busy, -1. */
int outbox_sweep_lock(db_conn *db, struct errbuf *e);
void outbox_sweep_unlock(db_conn *db);
/* The notify message body for a notification id ({"notification_id":N}); buf >= 64. */
void outbox_message(int64_t id, char *buf, size_t len);
/* Parses that message; -1 if malformed. */
int outbox_message_parse(const void *body, size_t len, int64_t *id);

/* Writes the outbox row of one order event (inside the caller's transaction) with the
 * order as it is now. webhook_id (>= 65 bytes) and *id are filled. */
int outbox_insert(db_conn *db, const struct order *o, const char *event_type, const char *now,
                  int64_t *id, char *webhook_id, struct errbuf *e);
/* The same INSERT added to the caller's batch b (to run with the rest of its transaction):
 * returns its statement index, whose db_batch_insert_id() is the row's id, or -1. */
int outbox_insert_add(db_batch *b, const struct order *o, const char *event_type, const char *now,
                      char *webhook_id, struct errbuf *e);

#endif
