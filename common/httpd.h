/* common/httpd.h: a small HTTP/1.1 server on a caller's libuv loop. It owns the
 * listening socket, its connections, keep-alive, timeouts, limits and the replies
 * to malformed requests; a handler sees only complete requests and may answer them
 * at once or later (e.g. after a broker confirm). Everything here runs on the loop's
 * thread: no function may be called from another thread. */
#ifndef PAYNOTIFY_COMMON_HTTPD_H
#define PAYNOTIFY_COMMON_HTTPD_H

#include <stddef.h>
#include <uv.h>

struct errbuf;

typedef struct httpd httpd;         /* fields live in httpd.c */
typedef struct httpd_req httpd_req; /* one request; valid until httpd_reply() */

/* Called on the loop thread for every complete request. req is owned by httpd and
 * valid until the handler (now or later) calls httpd_reply() on it exactly once. */
typedef void (*httpd_handler)(httpd_req *req, void *arg);

#define HTTPD_DEFAULT_MAX_BODY 65536
#define HTTPD_DEFAULT_MAX_CONNS 1024
#define HTTPD_DEFAULT_READ_TIMEOUT_MS 10000
#define HTTPD_DEFAULT_IDLE_TIMEOUT_MS 60000

/* A zero field takes its default. */
struct httpd_opts {
    size_t max_body;     /* bigger bodies are answered 413 */
    int max_conns;       /* open connections beyond this are answered 503 */
    int read_timeout_ms; /* a started request must be complete by then, else 408 */
    int idle_timeout_ms; /* a keep-alive connection with no request is closed after it */
};

/* Binds address ("127.0.0.1:8080", "[::1]:0"; port 0 picks a free port) on loop
 * (borrowed: must outlive the server). o borrowed (copied), NULL = defaults.
 * handler and arg are kept until the server is stopped. NULL + *e on failure.
 * The server is released by httpd_stop(); there is no other free. */
httpd *httpd_start(uv_loop_t *loop, const char *address, const struct httpd_opts *o,
                   httpd_handler handler, void *arg, struct errbuf *e);
int httpd_port(const httpd *s); /* the bound port */

/* Stops accepting and closes connections that have no request in progress.
 * Requests already handed to the handler still get their replies (sent with
 * "Connection: close"). Once every handle of the server is closed, s is freed and
 * then done(arg) runs (done may be NULL). Call once, on the loop thread. */
void httpd_stop(httpd *s, void (*done)(void *arg), void *arg);

/* Request accessors. Strings are borrowed from req: valid until httpd_reply(). */
const char *httpd_req_method(const httpd_req *r); /* "GET", "POST", ... */
const char *httpd_req_path(const httpd_req *r);   /* raw, without the query */
const char *httpd_req_query(const httpd_req *r);  /* raw, "" if none */
/* First header with that name (case-insensitive), trimmed; NULL if absent. */
const char *httpd_req_header(const httpd_req *r, const char *name);
/* Body bytes (binary-safe, also NUL-terminated); never NULL; *len set. */
const char *httpd_req_body(const httpd_req *r, size_t *len);
const char *httpd_req_peer(const httpd_req *r); /* client IP, e.g. "127.0.0.1" */
/* 1 once the client closed its connection (or it failed) while the request was
 * being handled: a reply would be dropped, so expensive work may be skipped. */
int httpd_req_is_gone(const httpd_req *r);

/* Answers r and frees it: exactly one call per request, on the loop thread, either
 * inside the handler or later. content_type NULL = no Content-Type header. body
 * (len bytes, binary-safe) is copied. extra_headers: NULL or a NULL-terminated
 * array of "Name: value" strings (copied; lines with CR or LF are skipped). The
 * reply always carries Content-Length (except 1xx/204/304, which have no body) and
 * "Connection: keep-alive|close". If the client is gone, the reply is dropped. */
void httpd_reply(httpd_req *r, int status, const char *content_type, const void *body, size_t len,
                 const char *const *extra_headers);
/* The same with a JSON error body {"error":{"code":code,"message":message}};
 * code and message are JSON-escaped. */
void httpd_reply_error(httpd_req *r, int status, const char *code, const char *message);

#endif
