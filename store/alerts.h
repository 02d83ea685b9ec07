/* store/alerts.h: the alerts outbox (table alerts, migration 0002). Alerts are queued in the
 * transaction of the event they report, deduplicated by dedup_key, and sent by the worker's
 * alerter (worker/alert.c), which decides with these calls which alerts go out one by one,
 * which are folded into a summary and which wait for the storm window to end.
 *
 * Row life: PENDING (attempts 0: "fresh", not yet judged by the storm policy) -> claimed
 * (attempts + 1, next_attempt_at pushed out as a lease) -> SENT once every configured
 * channel took it, or PENDING again with a backoff; or fresh -> SUMMARIZED (summary_id =
 * the summary alert that carried it). A summary is an ordinary alert row whose dedup_key
 * starts with ALERTS_SUMMARY_PREFIX and whose order_id is NULL.
 *
 * Every time comparison uses the server's NOW(3) (the session is UTC), so alerters on hosts
 * with skewed clocks agree on what is due. */
#ifndef PAYNOTIFY_STORE_ALERTS_H
#define PAYNOTIFY_STORE_ALERTS_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"
#include "store/db.h"

/* Reserved dedup_key prefix of summary rows; alerts_enqueue() rejects it. */
#define ALERTS_SUMMARY_PREFIX "summary:"
/* Column limits in characters (kind, dedup_key, business, order_id are rejected when longer;
 * subject and body are cut, body to TEXT's 65535 bytes). */
#define ALERTS_KIND_MAX 32
#define ALERTS_DEDUP_MAX 191
#define ALERTS_NAME_MAX 64
#define ALERTS_SUBJECT_MAX 256
#define ALERTS_ERROR_MAX 512

/* Queues an alert; usable inside the caller's open transaction (no begin/commit inside).
   0 = inserted, 1 = an alert with this dedup_key exists already (not sent again), -1 = error.
   All strings borrowed; business and order_id may be NULL (or "", stored as NULL). Bytes
   that are not UTF-8 become '?', so a provider's odd order id cannot make the caller's
   transaction fail. */
int alerts_enqueue(db_conn *db, const char *kind, const char *dedup_key, const char *business,
                   const char *order_id, const char *subject, const char *body, struct errbuf *e);

/* ---- the alerter's side ---- */

/* Serialises the claim step between alerters on one database (a named lock on the session,
 * GET_LOCK), so that storm counts are exact. 1 = held, 0 = another alerter holds it after
 * wait_s seconds, -1 = error. Release with alerts_unlock(), also after errors. */
int alerts_lock(db_conn *db, int wait_s, struct errbuf *e);
void alerts_unlock(db_conn *db);

/* One (kind, business) pair that has fresh due alerts. */
struct alerts_group {
    char kind[ALERTS_KIND_MAX * 4 + 1];
    char business[ALERTS_NAME_MAX * 4 + 1];
    int has_business; /* 0: business IS NULL */
};

/* The groups that have fresh (attempts 0, not summaries) PENDING alerts due now. Caller frees
 * *out with free(). 0 or -1. */
int alerts_fresh_groups(db_conn *db, struct alerts_group **out, size_t *n, struct errbuf *e);

/* The fresh due alerts of one group, locked FOR UPDATE SKIP LOCKED (call inside a
 * transaction), oldest first. Order ids of the first ALERTS_FRESH_ORDERS of them with one. */
#define ALERTS_FRESH_ORDERS 10
struct alerts_fresh {
    int64_t *ids; /* n of them; freed by alerts_fresh_free() */
    size_t n;
    char *orders[ALERTS_FRESH_ORDERS];
    size_t n_orders;
    char first_at[32], last_at[32]; /* created_at of the oldest and newest, "YYYY-MM-DD ..." */
    char *first_subject;            /* subject of the oldest */
};
int alerts_lock_fresh(db_conn *db, const struct alerts_group *g, struct alerts_fresh *out,
                      struct errbuf *e);
void alerts_fresh_free(struct alerts_fresh *f); /* NULL-safe; leaves *f zeroed */

/* What the group sent in the last window_ms (by created_at): alerts that went or are going
 * out one by one (attempted at least once), and the created_at of the newest summary
 * ("" if none). */
int alerts_group_history(db_conn *db, const struct alerts_group *g, int64_t window_ms,
                         int *individual, char last_summary_at[32], struct errbuf *e);

/* Inserts a due summary row for group g (dedup_key ALERTS_SUMMARY_PREFIX<first_id>) and marks
 * ids[0..n) SUMMARIZED pointing at it. Call inside the transaction that locked ids. Strings
 * borrowed. Returns the summary's id (> 0) or -1. */
int64_t alerts_summarize(db_conn *db, const struct alerts_group *g, const int64_t *ids, size_t n,
                         const char *subject, const char *body, struct errbuf *e);

/* Makes ids[0..n) due at (at + delay_ms), at being a DATETIME(3) string from this module. */
int alerts_defer(db_conn *db, const int64_t *ids, size_t n, const char *at, int64_t delay_ms,
                 struct errbuf *e);

/* One claimed alert. Strings are owned by the struct (freed by alerts_free()). */
struct alert {
    int64_t id;
    char *dedup_key;
    char *kind;
    char *business; /* NULL if none */
    char *order_id; /* NULL if none (always for summaries) */
    char *subject;
    char *body;
    char created_at[32]; /* "YYYY-MM-DD HH:MM:SS.mmm" UTC */
    int sms_done;        /* as stored: the alerter's bitmask of recipients reached */
    int mail_done;
    int attempts; /* including this claim */
    int is_summary;
};

/* Claims up to max due PENDING alerts, oldest first, FOR UPDATE SKIP LOCKED: those already
 * attempted, summaries, and the fresh ones whose ids are in approved[0..n_approved) (the
 * storm policy let them through). Each claimed row gets attempts + 1 and a lease: it is not
 * due again before NOW + (k + 1) * lease_step_ms + lease_extra_ms, k its position, because
 * the alerter sends them one after another. Call inside a transaction. *out: caller frees
 * with alerts_free(*out, *n). */
int alerts_claim(db_conn *db, const int64_t *approved, size_t n_approved, size_t max,
                 int64_t lease_step_ms, int64_t lease_extra_ms, struct alert **out, size_t *n,
                 struct errbuf *e);
void alerts_free(struct alert *a, size_t n); /* NULL-safe */

/* Records channel progress of a claimed alert (outside any transaction). */
int alerts_set_progress(db_conn *db, int64_t id, int sms_done, int mail_done, struct errbuf *e);
/* Ends an attempt: sent = 1 makes it SENT with sent_at; else it stays PENDING, due again in
 * retry_in_ms, with last_error = error (borrowed, cut to ALERTS_ERROR_MAX). */
int alerts_finish(db_conn *db, int64_t id, int sent, const char *error, int64_t retry_in_ms,
                  struct errbuf *e);
/* Gives back a claim that was never attempted (shutdown): attempts - 1, due now. */
int alerts_release(db_conn *db, int64_t id, struct errbuf *e);

/* Number of PENDING alerts (due or waiting), or -1. */
int64_t alerts_pending(db_conn *db, struct errbuf *e);

#endif
