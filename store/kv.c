/* store/kv.c: hiredis 0.14 wrapper. The only file that includes <hiredis/hiredis.h>. */
#include "store/kv.h"

#include <hiredis/hiredis.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/url.h"

struct kv_conn {
    redisContext *rc;
    struct url url;
    int db;
    int timeout_ms;
};

/* INCR, and set the expiry only when this call created the counter, atomically. */
static const char lock_script[] = "local n = redis.call('INCR', KEYS[1]) "
                                  "if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end "
                                  "return n";
/* DECR, deleting the key when it reaches zero so no counter lingers. */
static const char unlock_script[] = "local n = redis.call('DECR', KEYS[1]) "
                                    "if n <= 0 then redis.call('DEL', KEYS[1]) end "
                                    "return n";

static void drop(kv_conn *k)
{
    if (k->rc != NULL)
        redisFree(k->rc);
    k->rc = NULL;
}

static int ensure(kv_conn *k, struct errbuf *e)
{
    struct timeval tv = {k->timeout_ms / 1000, (k->timeout_ms % 1000) * 1000};
    redisReply *r;

    if (k->rc != NULL)
        return 0;
    k->rc = redisConnectWithTimeout(k->url.host, k->url.port ? k->url.port : 6379, tv);
    if (k->rc == NULL || k->rc->err) {
        errbuf_set(e, ERRBUF_TRANSIENT, "redis connect %s:%d: %s", k->url.host, k->url.port,
                   k->rc ? k->rc->errstr : "out of memory");
        drop(k);
        return -1;
    }
    redisSetTimeout(k->rc, tv);
    if (k->url.password[0] != '\0') {
        r = redisCommand(k->rc, "AUTH %s", k->url.password);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            errbuf_set(e, ERRBUF_TRANSIENT, "redis AUTH failed");
            if (r)
                freeReplyObject(r);
            drop(k);
            return -1;
        }
        freeReplyObject(r);
    }
    if (k->db != 0) {
        r = redisCommand(k->rc, "SELECT %d", k->db);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            errbuf_set(e, ERRBUF_TRANSIENT, "redis SELECT %d failed", k->db);
            if (r)
                freeReplyObject(r);
            drop(k);
            return -1;
        }
        freeReplyObject(r);
    }
    return 0;
}

kv_conn *kv_open(const char *url, int timeout_ms, struct errbuf *e)
{
    kv_conn *k = calloc(1, sizeof(*k));

    if (k == NULL)
        abort();
    if (url_parse(url, &k->url, e) != 0) {
        free(k);
        return NULL;
    }
    k->db = atoi(k->url.path);
    k->timeout_ms = timeout_ms;
    (void)ensure(k, NULL); /* a failure here is retried on first use */
    return k;
}

void kv_close(kv_conn *k)
{
    if (k == NULL)
        return;
    drop(k);
    free(k);
}

/* Runs a command; on any transport error the context is dropped (sticky until reconnect).
 * Caller frees the reply. */
static redisReply *command(kv_conn *k, struct errbuf *e, const char *fmt, ...)
{
    va_list ap;
    redisReply *r;

    if (ensure(k, e) != 0)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(k->rc, fmt, ap);
    va_end(ap);
    if (r == NULL) {
        errbuf_set(e, ERRBUF_TRANSIENT, "redis: %s", k->rc->errstr);
        drop(k);
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        errbuf_set(e, ERRBUF_TRANSIENT, "redis: %.200s", r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

int kv_ping(kv_conn *k, struct errbuf *e)
{
    redisReply *r = command(k, e, "PING");
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int kv_event_seen(kv_conn *k, const char *channel, const char *event_id, struct errbuf *e)
{
    redisReply *r = command(k, e, "EXISTS pn:evt:%s:%s", channel, event_id);
    int seen;

    if (r == NULL)
        return -1;
    seen = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    return seen;
}

int kv_event_mark(kv_conn *k, const char *channel, const char *event_id, int ttl_s,
                  struct errbuf *e)
{
    redisReply *r = command(k, e, "SET pn:evt:%s:%s 1 EX %d", channel, event_id, ttl_s);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int kv_order_lock(kv_conn *k, const char *order_id, int ttl_ms, struct errbuf *e)
{
    redisReply *r = command(k, e, "EVAL %s 1 pn:lock:%s %d", lock_script, order_id, ttl_ms);
    long long n;

    if (r == NULL)
        return -1;
    n = r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    if (n == 1)
        return 0;
    /* Somebody holds it: give our increment back so the holder's DECR frees it. */
    r = command(k, e, "EVAL %s 1 pn:lock:%s", unlock_script, order_id);
    if (r != NULL)
        freeReplyObject(r);
    return 1;
}

int kv_order_unlock(kv_conn *k, const char *order_id, struct errbuf *e)
{
    redisReply *r = command(k, e, "EVAL %s 1 pn:lock:%s", unlock_script, order_id);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}
