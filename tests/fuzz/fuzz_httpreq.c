/* tests/fuzz/fuzz_httpreq.c: common/httpreq (HTTP/1.x requests off the socket).
 *
 * Input: one control byte, then the bytes a client sends. The control byte picks the
 * limits (defaults or tiny ones, so every limit is reachable in a short input) and the
 * size of the pieces the stream is fed in. The stream is parsed twice: whole, and in
 * pieces. Each run records everything the parser reports for each pipelined request,
 * and whether it rejected the stream; both records must be equal, since where TCP
 * splits a request must not change its meaning. Every complete request must also respect the limits
 * it was parsed with. */
#include "common/errbuf.h"
#include "common/httpreq.h"
#include "tests/fuzz/fuzz.h"

#include <ctype.h>

/* At most this many pipelined requests per input: enough for every state, and keeps
 * one input's run short. */
#define MAX_REQUESTS 32

/* A growable record of what the parser said. */
struct record {
    char *data;
    size_t len;
    size_t cap;
};

static void rec_add(struct record *r, const void *p, size_t n)
{
    if (r->len + n + 1 > r->cap) {
        size_t cap = r->cap ? r->cap : 1024;

        while (cap < r->len + n + 1)
            cap *= 2;
        r->data = realloc(r->data, cap);
        if (r->data == NULL)
            abort();
        r->cap = cap;
    }
    if (n != 0)
        memcpy(r->data + r->len, p, n);
    r->len += n;
}

/* A string field, NUL included, so "ab"+"c" and "a"+"bc" differ. */
static void rec_str(struct record *r, const char *s)
{
    rec_add(r, s ? s : "(null)", (s ? strlen(s) : 6) + 1);
}

static void rec_int(struct record *r, long long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%lld;", v);

    rec_add(r, buf, (size_t)n);
}

/* Records a request whose header section is done, and checks what the API promises. */
static void inspect(const httpreq *p, const struct httpreq_limits *lim, struct record *r)
{
    size_t n = httpreq_header_count(p), body_len = 0;
    const char *body = httpreq_body(p, &body_len);
    const char *name, *value;

    FUZZ_CHECK(httpreq_method(p) != NULL && httpreq_path(p) != NULL && httpreq_query(p) != NULL);
    FUZZ_CHECK(body != NULL && body[body_len] == '\0');
    FUZZ_CHECK(body_len <= lim->max_body);
    FUZZ_CHECK(n <= lim->max_headers);
    rec_str(r, httpreq_method(p));
    rec_str(r, httpreq_path(p));
    rec_str(r, httpreq_query(p));
    rec_int(r, httpreq_http_minor(p));
    rec_int(r, (long long)n);
    for (size_t i = 0; i < n; i++) {
        FUZZ_CHECK(httpreq_header_at(p, i, &name, &value) == 0);
        for (const char *c = name; *c; c++)
            FUZZ_CHECK(!isupper((unsigned char)*c));
        /* Lookup is case-insensitive and returns the first field of that name. */
        FUZZ_CHECK(httpreq_header(p, name) != NULL);
        rec_str(r, name);
        rec_str(r, value);
    }
    FUZZ_CHECK(httpreq_header_at(p, n, &name, &value) == -1);
    rec_int(r, (long long)body_len);
    rec_add(r, body, body_len);
    rec_int(r, httpreq_complete(p));
    rec_int(r, httpreq_keep_alive(p));
}

/* Feeds stream in pieces of step bytes (0: all at once), through pipelined requests.
 * Returns the record; caller frees its data. */
static struct record run(const struct httpreq_limits *lim, const char *stream, size_t len,
                         size_t step)
{
    struct record r = {0};
    httpreq *p = httpreq_new(lim);
    size_t off = 0;
    int requests = 0, rejected = 0;

    while (off < len && requests < MAX_REQUESTS) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        size_t used = 0;
        struct errbuf e = {0};
        int rc = httpreq_feed(p, stream + off, n, &used, &e);

        FUZZ_CHECK(used <= n);
        off += used;
        if (rc < 0) {
            enum httpreq_error err = httpreq_error(p);
            int status = httpreq_error_status(err);

            FUZZ_CHECK(err != HTTPREQ_E_NONE && e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
            FUZZ_CHECK(status == 400 || status == 413 || status == 431 || status == 501);
            /* Sticky until reset. */
            FUZZ_CHECK(httpreq_feed(p, "x", 1, &used, &e) == -1 && httpreq_error(p) == err);
            /* Only the fact: when a request has two faults, which one is seen first
             * may depend on the pieces (http-parser hands a partial header name to
             * its callback at the end of a piece, not before an invalid byte). */
            rec_str(&r, "rejected");
            rejected = 1;
            break;
        }
        if (rc == 1) {
            FUZZ_CHECK(httpreq_complete(p) && httpreq_headers_done(p));
            inspect(p, lim, &r);
            requests++;
            httpreq_reset(p);
            FUZZ_CHECK(!httpreq_started(p) && httpreq_method(p) == NULL);
            continue;
        }
        FUZZ_CHECK(used == n);
    }
    /* The stream ended inside a request: record how far it got. (After a rejection
     * the body so far depends on where the pieces ended, and nobody reads it.) */
    if (!rejected && off == len && httpreq_headers_done(p) && !httpreq_complete(p)) {
        rec_str(&r, "partial");
        inspect(p, lim, &r);
    }
    httpreq_free(p);
    return r;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const size_t steps[8] = {1, 2, 3, 7, 16, 61, 512, 4096};
    struct httpreq_limits lim = {0};
    struct record whole, pieces;
    char *stream;
    size_t len;

    if (size < 1)
        return 0;
    if (data[0] & 1) {
        lim.max_header_bytes = 200;
        lim.max_headers = 4;
        lim.max_body = 40;
    } else {
        lim.max_header_bytes = HTTPREQ_DEFAULT_MAX_HEADER_BYTES;
        lim.max_headers = HTTPREQ_DEFAULT_MAX_HEADERS;
        lim.max_body = HTTPREQ_DEFAULT_MAX_BODY;
    }
    len = size - 1;
    /* An exact-size copy: the parser must stay inside the bytes it was handed. */
    stream = malloc(len ? len : 1);
    if (stream == NULL)
        abort();
    if (len != 0)
        memcpy(stream, data + 1, len);
    whole = run(&lim, stream, len, 0);
    pieces = run(&lim, stream, len, steps[(data[0] >> 1) & 7]);
    if (whole.len != pieces.len || (whole.len != 0 && memcmp(whole.data, pieces.data, whole.len))) {
        fprintf(stderr, "httpreq: fed whole and in pieces of %zu, the results differ\n",
                steps[(data[0] >> 1) & 7]);
        FUZZ_CHECK(0);
    }
    free(whole.data);
    free(pieces.data);
    free(stream);
    return 0;
}
