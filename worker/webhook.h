/* worker/webhook.h: the outbound HTTP engine for business webhooks. One thread runs its
 * own libuv loop driving one curl multi handle, so many POSTs are in flight at once and a
 * slow endpoint never holds back the others. Requests go in and results come out through
 * mutex-guarded queues; every call below is safe from any thread except
 * webhook_engine_stop() and webhook_engine_free(), which belong to the owner thread. The process
 * must call curl_global_init() before webhook_engine_start(). */
#ifndef PAYNOTIFY_WORKER_WEBHOOK_H
#define PAYNOTIFY_WORKER_WEBHOOK_H

#include <stddef.h>
#include <stdint.h>

struct errbuf;
typedef struct webhook_engine webhook_engine; /* fields live in webhook.c */

/* The struct itself is borrowed for the duration of webhook_engine_submit(); its
 * pointer fields are taken (the engine frees them, even on failure) and are set to NULL
 * on return, so a caller may keep the struct on its stack. */
struct webhook_request {
    char *url;  /* takes; http:// or https:// only */
    char *body; /* takes; may be NULL when body_len is 0; sent as-is (NULs allowed) */
    size_t body_len;
    char **headers;    /* takes: NULL-terminated array of "Name: value", each freed + the
                        * array; may be NULL. The caller supplies Content-Type. */
    long timeout_ms;   /* total time limit for the attempt; <= 0 means 10000 */
    void *user;        /* opaque, never touched, returned in the result */
    int allow_private; /* 0 (the default): refuse every address common/netcheck.h blocks
                        * (loopback, private, link-local and cloud metadata, CGNAT, ...).
                        * Checked on each address curl is about to connect to, after DNS,
                        * so a name that resolves (or rebinds) there is refused too.
                        * 1: the business may reach private networks. */
};

struct webhook_result {
    void *user;
    long http_status;     /* 0 when no HTTP response arrived */
    int ok;               /* 1 when the transfer completed with a 2xx status */
    char error[256];      /* "" when ok; else "HTTP 500", "timeout after 300 ms",
                           * "aborted: shutting down", "blocked address 127.0.0.1
                           * (loopback): private networks not allowed for this
                           * business" or curl's error text */
    char body_head[256];  /* first bytes of the response body, NUL-terminated; bytes
                           * outside printable ASCII are replaced with '.' */
    char retry_after[64]; /* the Retry-After header value, trimmed; "" if absent */
    int64_t latency_us;   /* from the transfer's start to its end; 0 if never started */
};

struct webhook_opts {
    int max_in_flight;      /* transfers running at once; <= 0 means 256. More submits
                             * wait in the engine's queue. */
    int max_per_host;       /* transfers running at once to one endpoint (scheme, host and
                             * port of the URL); <= 0 means 16. More wait in that
                             * endpoint's own FIFO while other endpoints proceed. */
    const char *user_agent; /* borrowed during start (copied); NULL: curl sends none */
    /* Optional: called on the engine thread with a request's user pointer as soon as its
     * transfer has ended (its result is queued right after), e.g. to free a place the
     * caller counts per endpoint without waiting for webhook_engine_poll(). It must not
     * block nor call into the engine; on_done_arg is passed through. */
    void (*on_done)(void *on_done_arg, void *user);
    void *on_done_arg;
};

/* 1 for any 2xx status. */
int webhook_status_is_success(long status);

/* Starts the engine thread; o borrowed (NULL = defaults). NULL + *e on failure.
 * Stop with webhook_engine_stop(), then free with webhook_engine_free(). */
webhook_engine *webhook_engine_start(const struct webhook_opts *o, struct errbuf *e);

/* Queues one POST. 0 when accepted: exactly one result will follow (a request that
 * cannot be sent, e.g. no url or a header containing CR/LF, fails in its result). -1 when
 * the engine is stopping: no result follows and the request's fields were freed. */
int webhook_engine_submit(webhook_engine *w, struct webhook_request *req);

/* Pops one completed result into *out: 1 = got one, 0 = none waiting. */
int webhook_engine_poll(webhook_engine *w, struct webhook_result *out);

/* Blocks until a result is waiting or timeout_ms passes (< 0: no limit).
 * 1 if a result is waiting, 0 on timeout. */
int webhook_engine_wait(webhook_engine *w, int timeout_ms);

/* A descriptor (borrowed, valid until webhook_engine_free()) that polls readable while
 * results are waiting, for consumers that multiplex with poll(2). Never read it:
 * webhook_engine_poll() resets it when the last result is popped. */
int webhook_engine_fd(const webhook_engine *w);

/* Accepted requests whose result has not been produced yet (queued + running). */
int webhook_engine_in_flight(const webhook_engine *w);

/* Stops accepting, lets queued and running transfers finish for up to deadline_ms, then
 * aborts the rest (their results say "aborted: shutting down"), joins the thread and
 * closes every libuv handle. Results stay pollable until webhook_engine_free().
 * Call from the owner thread; a second call does nothing. */
void webhook_engine_stop(webhook_engine *w, int deadline_ms);

/* Stops with deadline 0 if still running, then frees unpolled results. NULL-safe. */
void webhook_engine_free(webhook_engine *w);

#endif
