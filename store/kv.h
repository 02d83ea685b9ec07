/* store/kv.h: Redis fast paths: "provider event already applied" markers and the
 * per-order INCR/DECR lock. Redis is an optimisation; MySQL unique keys and CAS are
 * the truth, so every caller must stay correct when these calls fail. One conn per thread. */
#ifndef PAYNOTIFY_STORE_KV_H
#define PAYNOTIFY_STORE_KV_H

#include "common/errbuf.h"

typedef struct kv_conn kv_conn;

/* url "redis://[:password@]host:port/db" (copied). Never NULL: a down server makes every
 * call fail with TRANSIENT until it is back (the connection is retried lazily). */
kv_conn *kv_open(const char *url, int timeout_ms, struct errbuf *e);
void kv_close(kv_conn *k); /* NULL-safe */
int kv_ping(kv_conn *k, struct errbuf *e);

/* Before applying a provider event, one round trip: 1 = the event was marked applied (a
 * duplicate; nothing taken); 2 = another job holds the order (nothing taken); 0 = not seen,
 * and the order's counter taken (INCR from 0 to 1) with an expiry of lock_ttl_ms, so a
 * crashed holder cannot keep it (order_id NULL or "" = no lock); -1 = error (nothing
 * taken). */
int kv_event_begin(kv_conn *k, const char *channel, const char *event_id, const char *order_id,
                   int lock_ttl_ms, struct errbuf *e);
/* After, one round trip: marks the event applied for seen_ttl_s seconds when mark (only after
 * the MySQL commit), and gives back (DECR) the order counter taken by kv_event_begin() == 0
 * (order_id NULL or "" = none taken). 0 or -1. */
int kv_event_end(kv_conn *k, const char *channel, const char *event_id, int mark, int seen_ttl_s,
                 const char *order_id, struct errbuf *e);

/* SCRIPT FLUSH on the server (tests: the next call must load the scripts again). */
int kv_script_flush_for_tests(kv_conn *k, struct errbuf *e);

#endif
