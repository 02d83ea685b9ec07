/* worker/announce.h: publishing committed outbox rows to paynotify.notify without waiting
 * for each broker confirm. A callback thread sends the message right after its commit and
 * moves on; confirms are read as they arrive, and the rows they cover are marked published
 * in MySQL a batch at a time. A row whose message was not confirmed (nack, return, lost
 * connection, crash) stays unpublished and the sweeper publishes it again: a notify message
 * is never lost, at worst sent twice (same webhook-id; the notify stage skips a DELIVERED
 * notification). One announcer per thread, used with that thread's publishing connection. */
#ifndef PAYNOTIFY_WORKER_ANNOUNCE_H
#define PAYNOTIFY_WORKER_ANNOUNCE_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

typedef struct mq_conn mq_conn;
typedef struct db_conn db_conn;
typedef struct announcer announcer;

/* Sends beyond this many unconfirmed messages first wait for confirms. */
#define ANNOUNCE_MAX_OUTSTANDING 1024
/* Confirmed rows are marked published once this many have gathered, or after
 * ANNOUNCE_FLUSH_MS, whichever comes first. */
#define ANNOUNCE_FLUSH_ROWS 64
#define ANNOUNCE_FLUSH_MS 200
/* After a failed flush (MySQL away), the next try waits this long. */
#define ANNOUNCE_RETRY_MS 1000

announcer *announce_new(void);    /* free with announce_free() */
void announce_free(announcer *a); /* NULL-safe */

/* Publishes notification id (webhook_id as the message id, borrowed) on pub without waiting
 * for its confirm. 0 sent; -1 (*e) when pub failed: the caller closes it and calls
 * announce_forget(). */
int announce_send(announcer *a, mq_conn *pub, int64_t id, const char *webhook_id,
                  int confirm_timeout_ms, struct errbuf *e);
/* Reads the confirms that have arrived, waiting up to wait_ms for the first one when some
 * are outstanding. 0, or -1 (*e) when pub failed (close it, announce_forget()). */
int announce_collect(announcer *a, mq_conn *pub, int wait_ms, struct errbuf *e);
/* Waits until every message sent is confirmed or refused (up to timeout_ms in all); needed
 * before a confirmed publish on the same connection, which would skip their confirms.
 * 0, or -1 (*e): timeout or pub failed (close it, announce_forget()). */
int announce_drain(announcer *a, mq_conn *pub, int timeout_ms, struct errbuf *e);
/* Marks the confirmed rows published (one UPDATE) when enough have gathered, when the oldest
 * has waited ANNOUNCE_FLUSH_MS, or always when force; never sooner than ANNOUNCE_RETRY_MS
 * after a failure. 0, or -1 (*e; they are kept for the next try). */
int announce_flush(announcer *a, db_conn *db, int force, struct errbuf *e);
/* The publishing connection is gone: its unconfirmed messages are left to the sweeper. */
void announce_forget(announcer *a);
size_t announce_outstanding(const announcer *a);
size_t announce_unmarked(const announcer *a); /* confirmed, not yet marked */

#endif
