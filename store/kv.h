/* store/kv.h: Redis fast paths: "provider event already applied" markers and the
 * per-order INCR/DECR lock. Redis is an optimisation; MySQL unique keys and CAS are the
 * truth, so every caller must stay correct when these calls fail. One conn per thread. */
#ifndef PAYNOTIFY_STORE_KV_H
#define PAYNOTIFY_STORE_KV_H

#include "common/errbuf.h"

typedef struct kv_conn kv_conn;

/* url "redis://[:password@]host:port/db" (copied). Never NULL: a down server makes every
 * call fail with TRANSIENT until it is back (the connection is retried lazily). */
kv_conn *kv_open(const char *url, int timeout_ms, struct errbuf *e);
void kv_close(kv_conn *k); /* NULL-safe */
int kv_ping(kv_conn *k, struct errbuf *e);

/* 1 if the provider event was marked applied, 0 if not, -1 on error. */
int kv_event_seen(kv_conn *k, const char *channel, const char *event_id, struct errbuf *e);
/* Marks the event applied for ttl_s seconds (set after the MySQL commit only). */
int kv_event_mark(kv_conn *k, const char *channel, const char *event_id, int ttl_s,
                  struct errbuf *e);
/* INCR the order's counter (with an expiry so a crashed holder cannot keep it):
 * 0 = acquired, 1 = busy (counter already taken back), -1 = error. */
int kv_order_lock(kv_conn *k, const char *order_id, int ttl_ms, struct errbuf *e);
/* DECR the counter taken by kv_order_lock() == 0. */
int kv_order_unlock(kv_conn *k, const char *order_id, struct errbuf *e);

#endif
