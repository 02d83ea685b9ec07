/* common/httpreq.h: an incremental HTTP/1.x request parser (wraps http-parser 2.9.4).
 * Pure: it is handed bytes and never touches a socket. Every token is copied into
 * buffers bounded at creation, so a request can never grow memory past its limits.
 * One httpreq parses one request at a time; httpreq_reset() readies it for the next
 * request on the same connection. Not thread-safe (one per connection). */
#ifndef PAYNOTIFY_COMMON_HTTPREQ_H
#define PAYNOTIFY_COMMON_HTTPREQ_H

#include <stddef.h>

struct errbuf;

typedef struct httpreq httpreq; /* fields live in httpreq.c */

#define HTTPREQ_DEFAULT_MAX_HEADER_BYTES 16384
#define HTTPREQ_DEFAULT_MAX_HEADERS 100
#define HTTPREQ_DEFAULT_MAX_BODY 65536

/* A zero field takes its default. */
struct httpreq_limits {
    size_t max_header_bytes; /* request line + header lines + blank line */
    size_t max_headers;      /* number of header fields */
    size_t max_body;         /* decoded body bytes (Content-Length or chunked) */
};

/* Why a request was rejected: X(name, HTTP status, code for the JSON error body).
 * Each rejection has its own value so the server can answer the right status. */
#define HTTPREQ_ERRORS(X)                                                                         \
    X(NONE, 200, "none")                                                                          \
    X(SYNTAX, 400, "bad_request")             /* http-parser refused the bytes (NUL, ...) */      \
    X(DUP_CONTENT_LENGTH, 400, "bad_request") /* Content-Length twice, even if equal */           \
    X(LENGTH_AND_CHUNKED, 400, "bad_request") /* Content-Length with Transfer-Encoding */         \
    X(BAD_TRANSFER_ENCODING, 501, "unsupported_transfer_encoding") /* other than one "chunked" */ \
    X(HEADERS_TOO_LARGE, 431, "headers_too_large") /* header section over max_header_bytes */     \
    X(TOO_MANY_HEADERS, 431, "headers_too_large")  /* more than max_headers fields */             \
    X(BODY_TOO_LARGE, 413, "body_too_large")       /* declared or accumulated body too big */

enum httpreq_error {
#define X(name, status, code) HTTPREQ_E_##name,
    HTTPREQ_ERRORS(X)
#undef X
};

/* lim borrowed (copied), NULL = defaults. Free with httpreq_free(). */
httpreq *httpreq_new(const struct httpreq_limits *lim);
void httpreq_free(httpreq *p); /* NULL-safe */

/* Feeds bytes (borrowed; copied as needed). *consumed says how many were used.
 * Returns 0: need more bytes (all len consumed);
 *         1: one request is complete; bytes past *consumed belong to the next request
 *            (keep them, call httpreq_reset(), feed them again);
 *        -1: the request is rejected: *e filled, httpreq_error() says why. Sticky until
 *            httpreq_reset(), but a rejected connection should be closed anyway. */
int httpreq_feed(httpreq *p, const char *data, size_t len, size_t *consumed, struct errbuf *e);
/* Forgets the current request; limits and allocated buffers are kept. */
void httpreq_reset(httpreq *p);

enum httpreq_error httpreq_error(const httpreq *p);
int httpreq_error_status(enum httpreq_error err);       /* 400, 413, 431, 501 (200 for NONE) */
const char *httpreq_error_code(enum httpreq_error err); /* static string, e.g. "bad_request" */
const char *httpreq_error_name(enum httpreq_error err); /* static string, e.g. "SYNTAX" */
/* Reason phrase for a status code ("Not Found"); static string, "Unknown" if none. */
const char *httpreq_reason(int status);

/* 1 once any byte of the current request was consumed (leading blank lines count). */
int httpreq_started(const httpreq *p);
/* 1 once the header section is complete: the accessors below then work, even before
 * the body arrived (e.g. to answer "Expect: 100-continue"). */
int httpreq_headers_done(const httpreq *p);
/* 1 once the whole request (body included) was parsed. */
int httpreq_complete(const httpreq *p);

/* All strings below are borrowed from p: valid until httpreq_reset() or httpreq_free().
 * They are NULL before httpreq_headers_done(). */
const char *httpreq_method(const httpreq *p); /* "GET", "POST", ... */
const char *httpreq_path(const httpreq *p);   /* raw (not percent-decoded), before '?' */
const char *httpreq_query(const httpreq *p);  /* raw, after '?' ("" if none), no fragment */
int httpreq_http_minor(const httpreq *p);     /* 0 for HTTP/1.0, 1 for HTTP/1.1 */
/* Value of the first header named name (case-insensitive), trimmed; NULL if absent. */
const char *httpreq_header(const httpreq *p, const char *name);
size_t httpreq_header_count(const httpreq *p);
/* i < httpreq_header_count(); name is lower-cased. Returns -1 if i is out of range. */
int httpreq_header_at(const httpreq *p, size_t i, const char **name, const char **value);
/* Body bytes (binary-safe; also NUL-terminated for convenience); *len set. Never NULL
 * once the headers are done ("" with *len 0 when there is no body). */
const char *httpreq_body(const httpreq *p, size_t *len);
/* After a complete request: 1 if the connection may stay open (HTTP/1.1 without
 * "Connection: close", or HTTP/1.0 with "Connection: keep-alive"). */
int httpreq_keep_alive(const httpreq *p);

#endif
