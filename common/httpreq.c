/* common/httpreq.c: the request parser. http-parser hands its callbacks borrowed
 * pointers into the fed buffer, and a token (URL, header name, header value, body)
 * may be split over several feeds. Each piece is appended to a bounded buffer
 * (bbuf) whose limit comes from struct httpreq_limits, so an oversized request
 * fails with its own error instead of growing memory.
 *
 * Header tokens live in one arena, each NUL-terminated: the URL first, then
 * name, value, name, value... Offsets (not pointers) are kept because the arena
 * may move when it grows. */
#include "common/httpreq.h"

#include "common/errbuf.h"

#include <ctype.h>
#include <http_parser.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* A growable byte buffer that refuses to grow past max (like curl's dynbuf). */
struct bbuf {
    char *data;
    size_t len;
    size_t cap;
    size_t max;
};

struct header {
    size_t name_off;
    size_t value_off;
};

enum token {
    TOK_NONE = 0,
    TOK_URL,
    TOK_FIELD,
    TOK_VALUE,
};

struct httpreq {
    http_parser parser;
    struct httpreq_limits lim;
    struct bbuf arena; /* URL and header tokens */
    struct bbuf body;
    struct header *headers; /* lim.max_headers entries */
    size_t nheaders;
    enum token tok;
    size_t header_bytes; /* bytes fed while the header section was incomplete */
    size_t path_off;
    size_t query_off;
    int cl_count; /* Content-Length fields seen */
    int te_count; /* Transfer-Encoding fields seen */
    int started;
    int headers_done;
    int complete;
    int keep_alive;
    enum httpreq_error err;
    char errmsg[128]; /* detail for err when set from a callback */
};

/* Keeps a long-lived keep-alive connection from holding a large body buffer. */
#define BODY_KEEP_CAP 8192

static void *xrealloc(void *p, size_t n)
{
    void *q = realloc(p, n);

    if (q == NULL && n != 0)
        abort(); /* out of memory: nothing sensible left to do (STYLE §3) */
    return q;
}

/* Room for len more bytes plus a NUL; -1 (unchanged) if that would pass max. */
static int bbuf_reserve(struct bbuf *b, size_t len)
{
    size_t need, cap;

    if (len > b->max || b->len > b->max - len)
        return -1;
    need = b->len + len + 1;
    if (need <= b->cap)
        return 0;
    cap = b->cap ? b->cap : 256;
    while (cap < need)
        cap *= 2;
    if (cap > b->max + 1)
        cap = b->max + 1;
    b->data = xrealloc(b->data, cap);
    b->cap = cap;
    return 0;
}

static int bbuf_append(struct bbuf *b, const char *s, size_t len)
{
    if (bbuf_reserve(b, len) != 0)
        return -1;
    if (len != 0)
        memcpy(b->data + b->len, s, len);
    b->len += len;
    b->data[b->len] = '\0';
    return 0;
}

static void bbuf_free(struct bbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

static int fail(httpreq *p, enum httpreq_error err, const char *msg)
{
    p->err = err;
    snprintf(p->errmsg, sizeof(p->errmsg), "%s", msg);
    return -1;
}

/* Closes the open token with its NUL. A header value loses trailing blanks
 * (http-parser already skipped the leading ones; we trim again to be sure). */
static int finish_token(httpreq *p)
{
    struct bbuf *a = &p->arena;

    switch (p->tok) {
    case TOK_NONE:
    case TOK_URL:
        break;
    case TOK_FIELD:
        /* A name without a value callback: give it an empty value. */
        if (bbuf_append(a, "", 1) != 0)
            return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
        p->headers[p->nheaders - 1].value_off = a->len;
        break;
    case TOK_VALUE: {
        size_t start = p->headers[p->nheaders - 1].value_off;
        size_t end = a->len;

        while (end > start && (a->data[end - 1] == ' ' || a->data[end - 1] == '\t'))
            end--;
        size_t lead = start;
        while (lead < end && (a->data[lead] == ' ' || a->data[lead] == '\t'))
            lead++;
        if (lead > start)
            memmove(a->data + start, a->data + lead, end - lead);
        a->len = start + (end - lead);
        a->data[a->len] = '\0';
        break;
    }
    }
    /* Every token ends with its own NUL inside len, so offsets stay distinct. */
    if (p->tok != TOK_NONE && bbuf_append(a, "", 1) != 0)
        return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
    if (p->tok == TOK_VALUE || p->tok == TOK_FIELD) {
        const char *name = a->data + p->headers[p->nheaders - 1].name_off;

        if (strcmp(name, "content-length") == 0)
            p->cl_count++;
        else if (strcmp(name, "transfer-encoding") == 0)
            p->te_count++;
    }
    p->tok = TOK_NONE;
    return 0;
}

static httpreq *from_parser(http_parser *hp)
{
    return hp->data;
}

static int on_message_begin(http_parser *hp)
{
    from_parser(hp)->started = 1;
    return 0;
}

static int on_url(http_parser *hp, const char *at, size_t len)
{
    httpreq *p = from_parser(hp);

    p->tok = TOK_URL;
    if (bbuf_append(&p->arena, at, len) != 0)
        return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "request line too long");
    return 0;
}

static int on_header_field(http_parser *hp, const char *at, size_t len)
{
    httpreq *p = from_parser(hp);
    struct bbuf *a = &p->arena;

    if (p->tok != TOK_FIELD) {
        if (finish_token(p) != 0)
            return -1;
        if (p->nheaders == p->lim.max_headers)
            return fail(p, HTTPREQ_E_TOO_MANY_HEADERS, "too many header fields");
        p->headers[p->nheaders].name_off = a->len;
        p->headers[p->nheaders].value_off = a->len;
        p->nheaders++;
        p->tok = TOK_FIELD;
    }
    if (bbuf_reserve(a, len) != 0)
        return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
    for (size_t i = 0; i < len; i++)
        a->data[a->len + i] = (char)tolower((unsigned char)at[i]);
    a->len += len;
    a->data[a->len] = '\0';
    return 0;
}

static int on_header_value(http_parser *hp, const char *at, size_t len)
{
    httpreq *p = from_parser(hp);
    struct bbuf *a = &p->arena;

    if (p->tok != TOK_VALUE) {
        if (p->tok != TOK_FIELD)
            return fail(p, HTTPREQ_E_SYNTAX, "header value without a name");
        /* RFC 9112 5.1: whitespace between name and colon must be refused (it lets
         * "Content-Length :" mean different things to different parsers). */
        if (a->len > 0 && (a->data[a->len - 1] == ' ' || a->data[a->len - 1] == '\t'))
            return fail(p, HTTPREQ_E_SYNTAX, "whitespace before colon in header field");
        if (bbuf_append(a, "", 1) != 0) /* NUL after the name */
            return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
        p->headers[p->nheaders - 1].value_off = a->len;
        p->tok = TOK_VALUE;
    }
    if (bbuf_append(a, at, len) != 0)
        return fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
    return 0;
}

/* Splits the URL into path and query in place (the arena keeps the URL first). */
static void split_url(httpreq *p)
{
    char *url = p->arena.data;
    char *path = url;
    char *q, *frag;

    /* Absolute form ("http://host/x"): keep only the path part. */
    if (strncasecmp(url, "http://", 7) == 0 || strncasecmp(url, "https://", 8) == 0) {
        char *slash = strchr(strstr(url, "//") + 2, '/');

        if (slash != NULL) {
            path = slash;
        } else {
            /* No path at all; point at a NUL and let "/" be implied by the caller. */
            path = url + strlen(url);
        }
    }
    frag = strchr(path, '#');
    if (frag != NULL)
        *frag = '\0';
    q = strchr(path, '?');
    if (q != NULL) {
        *q = '\0';
        p->query_off = (size_t)(q + 1 - url);
    } else {
        p->query_off = strlen(url); /* the URL's own NUL: "" */
    }
    p->path_off = (size_t)(path - url);
}

/* First value of a header (name lower-case); "" if absent. */
static const char *find_header(const httpreq *p, const char *name)
{
    for (size_t i = 0; i < p->nheaders; i++)
        if (strcmp(p->arena.data + p->headers[i].name_off, name) == 0)
            return p->arena.data + p->headers[i].value_off;
    return "";
}

static int on_headers_complete(http_parser *hp)
{
    httpreq *p = from_parser(hp);

    if (finish_token(p) != 0)
        return -1;
    /* http-parser 2.9.4 already refuses a second Content-Length; checked again so
     * the rule does not hang on the library version. */
    if (p->cl_count > 1)
        return fail(p, HTTPREQ_E_DUP_CONTENT_LENGTH, "Content-Length given more than once");
    if (p->cl_count > 0 && p->te_count > 0)
        return fail(p, HTTPREQ_E_LENGTH_AND_CHUNKED,
                    "Content-Length together with Transfer-Encoding");
    /* Only a single plain "chunked" is understood: any other coding (gzip, ...)
     * would reach the handler undecoded. */
    if (p->te_count > 1)
        return fail(p, HTTPREQ_E_BAD_TRANSFER_ENCODING, "Transfer-Encoding given more than once");
    if (p->te_count == 1 && strcasecmp(find_header(p, "transfer-encoding"), "chunked") != 0)
        return fail(p, HTTPREQ_E_BAD_TRANSFER_ENCODING, "only Transfer-Encoding: chunked");
    if ((hp->flags & F_CONTENTLENGTH) && hp->content_length > p->lim.max_body)
        return fail(p, HTTPREQ_E_BODY_TOO_LARGE, "declared body too large");
    split_url(p);
    /* Body bytes go through bbuf too; make sure "" is available even without one. */
    if (bbuf_append(&p->body, "", 0) != 0)
        return fail(p, HTTPREQ_E_BODY_TOO_LARGE, "body too large");
    p->headers_done = 1;
    return 0;
}

static int on_body(http_parser *hp, const char *at, size_t len)
{
    httpreq *p = from_parser(hp);

    if (bbuf_append(&p->body, at, len) != 0)
        return fail(p, HTTPREQ_E_BODY_TOO_LARGE, "body too large");
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    httpreq *p = from_parser(hp);

    p->complete = 1;
    p->keep_alive = http_should_keep_alive(hp);
    /* Stop right after this request: the bytes behind it are the next request's
     * and must not be parsed into this one (pipelining). */
    http_parser_pause(hp, 1);
    return 0;
}

static const http_parser_settings settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

httpreq *httpreq_new(const struct httpreq_limits *lim)
{
    httpreq *p = calloc(1, sizeof(*p));

    if (p == NULL)
        abort();
    if (lim != NULL)
        p->lim = *lim;
    if (p->lim.max_header_bytes == 0)
        p->lim.max_header_bytes = HTTPREQ_DEFAULT_MAX_HEADER_BYTES;
    if (p->lim.max_headers == 0)
        p->lim.max_headers = HTTPREQ_DEFAULT_MAX_HEADERS;
    if (p->lim.max_body == 0)
        p->lim.max_body = HTTPREQ_DEFAULT_MAX_BODY;
    /* Every arena byte comes from the header section except the NULs we add:
     * one after the URL and after each name and value. */
    p->arena.max = p->lim.max_header_bytes + 2 * p->lim.max_headers + 2;
    p->body.max = p->lim.max_body;
    p->headers = calloc(p->lim.max_headers, sizeof(*p->headers));
    if (p->headers == NULL)
        abort();
    httpreq_reset(p);
    return p;
}

void httpreq_free(httpreq *p)
{
    if (p == NULL)
        return;
    bbuf_free(&p->arena);
    bbuf_free(&p->body);
    free(p->headers);
    free(p);
}

void httpreq_reset(httpreq *p)
{
    http_parser_init(&p->parser, HTTP_REQUEST);
    p->parser.data = p;
    p->arena.len = 0;
    p->body.len = 0;
    if (p->body.cap > BODY_KEEP_CAP)
        bbuf_free(&p->body);
    p->nheaders = 0;
    p->tok = TOK_NONE;
    p->header_bytes = 0;
    p->path_off = p->query_off = 0;
    p->cl_count = p->te_count = 0;
    p->started = p->headers_done = p->complete = p->keep_alive = 0;
    p->err = HTTPREQ_E_NONE;
    p->errmsg[0] = '\0';
}

/* Maps an http-parser failure that no callback explained. */
static void classify_parser_error(httpreq *p)
{
    enum http_errno he = HTTP_PARSER_ERRNO(&p->parser);

    /* http-parser refuses a second Content-Length as its value starts, and
     * Content-Length with Transfer-Encoding once the section ends; in both cases
     * a header token is still open, so close it to count every field. */
    if (p->tok == TOK_FIELD || p->tok == TOK_VALUE)
        (void)finish_token(p);
    if (p->err != HTTPREQ_E_NONE)
        return;
    if (he == HPE_HEADER_OVERFLOW) {
        fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
    } else if (he == HPE_UNEXPECTED_CONTENT_LENGTH && p->cl_count > 1) {
        fail(p, HTTPREQ_E_DUP_CONTENT_LENGTH, "Content-Length given more than once");
    } else if (he == HPE_INVALID_TRANSFER_ENCODING) {
        fail(p, HTTPREQ_E_BAD_TRANSFER_ENCODING, "only Transfer-Encoding: chunked");
    } else if (he == HPE_UNEXPECTED_CONTENT_LENGTH && p->te_count > 0) {
        fail(p, HTTPREQ_E_LENGTH_AND_CHUNKED, "Content-Length together with Transfer-Encoding");
    } else {
        fail(p, HTTPREQ_E_SYNTAX, http_errno_description(he));
    }
}

int httpreq_feed(httpreq *p, const char *data, size_t len, size_t *consumed, struct errbuf *e)
{
    size_t off = 0;

    *consumed = 0;
    if (p->err != HTTPREQ_E_NONE)
        goto rejected;
    if (p->complete)
        return 1;
    while (off < len) {
        size_t n = len - off;
        size_t got;
        enum http_errno he;

        /* Until the header section ends, hand the parser no more than the limit:
         * if the section is still open after that many bytes, it is too large. */
        if (!p->headers_done) {
            size_t room = p->lim.max_header_bytes - p->header_bytes;

            if (n > room)
                n = room;
        }
        got = http_parser_execute(&p->parser, &settings, data + off, n);
        if (got > 0)
            p->started = 1;
        if (!p->headers_done)
            p->header_bytes += got;
        off += got;
        he = HTTP_PARSER_ERRNO(&p->parser);
        if (p->complete) {
            *consumed = off;
            return 1;
        }
        if (he != HPE_OK) {
            if (p->err == HTTPREQ_E_NONE)
                classify_parser_error(p);
            *consumed = off;
            goto rejected;
        }
        if (!p->headers_done && p->header_bytes >= p->lim.max_header_bytes) {
            fail(p, HTTPREQ_E_HEADERS_TOO_LARGE, "header section too large");
            *consumed = off;
            goto rejected;
        }
        if (got < n) {
            /* http-parser stops early only on error or pause; never spin. */
            fail(p, HTTPREQ_E_SYNTAX, "parser stopped early");
            *consumed = off;
            goto rejected;
        }
    }
    *consumed = off;
    return 0;
rejected:
    errbuf_set(e, ERRBUF_PERMANENT, "%s (%d): %s", httpreq_error_name(p->err),
               httpreq_error_status(p->err), p->errmsg);
    return -1;
}

enum httpreq_error httpreq_error(const httpreq *p)
{
    return p->err;
}

int httpreq_error_status(enum httpreq_error err)
{
    switch (err) {
#define X(name, status, code) \
    case HTTPREQ_E_##name:    \
        return status;
        HTTPREQ_ERRORS(X)
#undef X
    }
    return 400;
}

const char *httpreq_error_code(enum httpreq_error err)
{
    switch (err) {
#define X(name, status, code) \
    case HTTPREQ_E_##name:    \
        return code;
        HTTPREQ_ERRORS(X)
#undef X
    }
    return "bad_request";
}

const char *httpreq_error_name(enum httpreq_error err)
{
    switch (err) {
#define X(name, status, code) \
    case HTTPREQ_E_##name:    \
        return #name;
        HTTPREQ_ERRORS(X)
#undef X
    }
    return "UNKNOWN";
}

const char *httpreq_reason(int status)
{
    const char *s;

    if (status < 100 || status > 999)
        return "Unknown";
    s = http_status_str((enum http_status)status);
    return strcmp(s, "<unknown>") == 0 ? "Unknown" : s;
}

int httpreq_started(const httpreq *p)
{
    return p->started;
}

int httpreq_headers_done(const httpreq *p)
{
    return p->headers_done;
}

int httpreq_complete(const httpreq *p)
{
    return p->complete;
}

const char *httpreq_method(const httpreq *p)
{
    if (!p->headers_done)
        return NULL;
    return http_method_str((enum http_method)p->parser.method);
}

const char *httpreq_path(const httpreq *p)
{
    if (!p->headers_done)
        return NULL;
    return p->arena.data + p->path_off;
}

const char *httpreq_query(const httpreq *p)
{
    if (!p->headers_done)
        return NULL;
    return p->arena.data + p->query_off;
}

int httpreq_http_minor(const httpreq *p)
{
    return p->parser.http_minor;
}

const char *httpreq_header(const httpreq *p, const char *name)
{
    if (!p->headers_done)
        return NULL;
    for (size_t i = 0; i < p->nheaders; i++) {
        if (strcasecmp(p->arena.data + p->headers[i].name_off, name) == 0)
            return p->arena.data + p->headers[i].value_off;
    }
    return NULL;
}

size_t httpreq_header_count(const httpreq *p)
{
    return p->headers_done ? p->nheaders : 0;
}

int httpreq_header_at(const httpreq *p, size_t i, const char **name, const char **value)
{
    if (!p->headers_done || i >= p->nheaders)
        return -1;
    *name = p->arena.data + p->headers[i].name_off;
    *value = p->arena.data + p->headers[i].value_off;
    return 0;
}

const char *httpreq_body(const httpreq *p, size_t *len)
{
    if (!p->headers_done) {
        *len = 0;
        return NULL;
    }
    *len = p->body.len;
    return p->body.data;
}

int httpreq_keep_alive(const httpreq *p)
{
    return p->complete && p->keep_alive;
}
