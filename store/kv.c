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
    char begin_sha[41], end_sha[41]; /* the scripts as loaded on this connection */
    struct url url;
    int db;
    int timeout_ms;
};

/* Before applying, in one round trip: 1 = the event was applied already; 2 = another job
 * holds the order (our increment given back at once, so nothing is taken); 0 = not seen,
 * and the order's counter (KEYS[2], when given) incremented from 0 to 1 with an expiry of
 * ARGV[1] ms, so a crashed holder cannot keep it. */
static const char begin_script[] =
    "if redis.call('EXISTS', KEYS[1]) == 1 then return 1 end "
    "if KEYS[2] then "
    "  local n = redis.call('INCR', KEYS[2]) "
    "  if n == 1 then redis.call('PEXPIRE', KEYS[2], ARGV[1]) return 0 end "
    "  if redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end "
    "  return 2 "
    "end "
    "return 0";
/* After: marks the event applied for ARGV[2] s when ARGV[1] is 1, and gives the order's
 * counter (KEYS[2], when given) back, deleting it at zero so none lingers. */
static const char end_script[] =
    "if ARGV[1] == '1' then redis.call('SET', KEYS[1], '1', 'EX', ARGV[2]) end "
    "if KEYS[2] and redis.call('DECR', KEYS[2]) <= 0 then redis.call('DEL', KEYS[2]) end "
    "return 0";

static void drop(kv_conn *k)
{
    if (k->rc != NULL)
        redisFree(k->rc);
    k->rc = NULL;
}

/* SCRIPT LOAD, so that calls send the script's SHA1 instead of its text. */
static int load_script(kv_conn *k, const char *script, char *sha, struct errbuf *e)
{
    redisReply *r = redisCommand(k->rc, "SCRIPT LOAD %s", script);
    int ok = r != NULL && r->type == REDIS_REPLY_STRING && r->len == 40;

    if (ok)
        memcpy(sha, r->str, 41);
    else
        errbuf_set(e, ERRBUF_TRANSIENT, "redis SCRIPT LOAD failed: %s",
                   r == NULL                      ? k->rc->errstr
                   : r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "bad reply");
    if (r != NULL)
        freeReplyObject(r);
    return ok ? 0 : -1;
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
    if (load_script(k, begin_script, k->begin_sha, e) != 0 ||
        load_script(k, end_script, k->end_sha, e) != 0) {
        drop(k);
        return -1;
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

/* Runs a loaded script with argv (keys first). A server that lost its scripts (SCRIPT FLUSH)
 * answers NOSCRIPT: they are loaded again and the call repeated once. */
static redisReply *run_script(kv_conn *k, int which_end, int argc, const char **argv,
                              struct errbuf *e)
{
    for (int attempt = 0; attempt < 2; attempt++) {
        redisReply *r;
        if (ensure(k, e) != 0)
            return NULL;
        argv[0] = "EVALSHA";
        argv[1] = which_end ? k->end_sha : k->begin_sha;
        r = redisCommandArgv(k->rc, argc, argv, NULL);
        if (r == NULL) {
            errbuf_set(e, ERRBUF_TRANSIENT, "redis: %s", k->rc->errstr);
            drop(k);
            return NULL;
        }
        if (r->type != REDIS_REPLY_ERROR)
            return r;
        errbuf_set(e, ERRBUF_TRANSIENT, "redis: %.200s", r->str);
        if (attempt == 0 && strncmp(r->str, "NOSCRIPT", 8) == 0 &&
            load_script(k, begin_script, k->begin_sha, e) == 0 &&
            load_script(k, end_script, k->end_sha, e) == 0) {
            freeReplyObject(r);
            continue;
        }
        freeReplyObject(r);
        return NULL;
    }
    return NULL;
}

int kv_event_begin(kv_conn *k, const char *channel, const char *event_id, const char *order_id,
                   int lock_ttl_ms, struct errbuf *e)
{
    char seen[320], lock[128], ttl[24];
    const char *argv[6] = {NULL, NULL, NULL, seen, lock, ttl};
    int lockit = order_id != NULL && order_id[0] != '\0';
    redisReply *r;
    int rc;

    snprintf(seen, sizeof(seen), "pn:evt:%s:%s", channel, event_id);
    snprintf(lock, sizeof(lock), "pn:lock:%s", order_id ? order_id : "");
    snprintf(ttl, sizeof(ttl), "%d", lock_ttl_ms);
    argv[2] = lockit ? "2" : "1";
    if (!lockit)
        argv[4] = ttl;
    r = run_script(k, 0, lockit ? 6 : 5, argv, e);
    if (r == NULL)
        return -1;
    rc = r->type == REDIS_REPLY_INTEGER ? (int)r->integer : -1;
    freeReplyObject(r);
    if (rc < 0 || rc > 2)
        errbuf_set(e, ERRBUF_TRANSIENT, "redis: unexpected reply to the begin script");
    return rc >= 0 && rc <= 2 ? rc : -1;
}

int kv_event_end(kv_conn *k, const char *channel, const char *event_id, int mark, int seen_ttl_s,
                 const char *order_id, struct errbuf *e)
{
    char seen[320], lock[128], ttl[24];
    const char *argv[7] = {NULL, NULL, NULL, seen, lock, mark ? "1" : "0", ttl};
    int unlock = order_id != NULL && order_id[0] != '\0';
    redisReply *r;

    snprintf(seen, sizeof(seen), "pn:evt:%s:%s", channel, event_id);
    snprintf(lock, sizeof(lock), "pn:lock:%s", order_id ? order_id : "");
    snprintf(ttl, sizeof(ttl), "%d", seen_ttl_s);
    argv[2] = unlock ? "2" : "1";
    if (!unlock) {
        argv[4] = argv[5];
        argv[5] = argv[6];
    }
    r = run_script(k, 1, unlock ? 7 : 6, argv, e);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

int kv_script_flush_for_tests(kv_conn *k, struct errbuf *e)
{
    redisReply *r = command(k, e, "SCRIPT FLUSH");
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}
