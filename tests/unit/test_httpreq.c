/* tests/unit/test_httpreq.c: the request parser, fed whole, in pieces and byte by
 * byte: tokens split across feeds, pipelining, chunked bodies, every limit and
 * every rejection kind. */
#include "common/errbuf.h"
#include "common/httpreq.h"
#include "tests/unit/check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Feeds s in pieces of step bytes (0 = all at once) until the parser says done or
 * rejects. Returns the last httpreq_feed() result; *used = bytes consumed in all. */
static int feed_steps(httpreq *p, const char *s, size_t len, size_t step, size_t *used)
{
    struct errbuf e = {0};
    size_t off = 0;
    int rc = 0;

    while (off < len) {
        size_t n = step == 0 || len - off < step ? len - off : step;
        size_t c = 0;

        rc = httpreq_feed(p, s + off, n, &c, &e);
        CHECK(c <= n);
        off += c;
        if (rc != 0)
            break;
        CHECK_INT_EQ(c, n);
    }
    if (rc < 0) {
        CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
        CHECK(e.msg[0] != '\0');
    }
    *used = off;
    return rc;
}

static httpreq *parse_ok(const char *s, size_t step, const struct httpreq_limits *lim)
{
    httpreq *p = httpreq_new(lim);
    size_t used = 0;

    CHECK_INT_EQ(feed_steps(p, s, strlen(s), step, &used), 1);
    CHECK_INT_EQ(used, strlen(s));
    CHECK(httpreq_complete(p));
    return p;
}

static void expect_error(const char *s, size_t len, size_t step, const struct httpreq_limits *lim,
                         enum httpreq_error want, int status)
{
    httpreq *p = httpreq_new(lim);
    size_t used = 0;

    CHECK_INT_EQ(feed_steps(p, s, len, step, &used), -1);
    if (httpreq_error(p) != want)
        fprintf(stderr, "got %s, want %s\n", httpreq_error_name(httpreq_error(p)),
                httpreq_error_name(want));
    CHECK_INT_EQ(httpreq_error(p), want);
    CHECK_INT_EQ(httpreq_error_status(httpreq_error(p)), status);
    httpreq_free(p);
}

static void test_get_split_feeds(void)
{
    static const char req[] = "GET /v1/orders/42?x=1&y=%20 HTTP/1.1\r\n"
                              "Host: example.com\r\n"
                              "X-Mixed-Case:   padded value \t\r\n"
                              "Accept: */*\r\n"
                              "x-dup: first\r\n"
                              "X-DUP: second\r\n"
                              "\r\n";
    size_t steps[] = {0, 1, 2, 3, 7, 64};

    for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
        httpreq *p = parse_ok(req, steps[i], NULL);
        const char *name, *value;
        size_t len = 99;

        CHECK_STR_EQ(httpreq_method(p), "GET");
        CHECK_STR_EQ(httpreq_path(p), "/v1/orders/42");
        CHECK_STR_EQ(httpreq_query(p), "x=1&y=%20");
        CHECK_INT_EQ(httpreq_http_minor(p), 1);
        CHECK_STR_EQ(httpreq_header(p, "host"), "example.com");
        CHECK_STR_EQ(httpreq_header(p, "HOST"), "example.com");
        CHECK_STR_EQ(httpreq_header(p, "x-mixed-case"), "padded value");
        CHECK_STR_EQ(httpreq_header(p, "X-Dup"), "first");
        CHECK(httpreq_header(p, "content-length") == NULL);
        CHECK_INT_EQ(httpreq_header_count(p), 5);
        CHECK_INT_EQ(httpreq_header_at(p, 1, &name, &value), 0);
        CHECK_STR_EQ(name, "x-mixed-case");
        CHECK_STR_EQ(value, "padded value");
        CHECK_INT_EQ(httpreq_header_at(p, 4, &name, &value), 0);
        CHECK_STR_EQ(name, "x-dup");
        CHECK_STR_EQ(value, "second");
        CHECK_INT_EQ(httpreq_header_at(p, 5, &name, &value), -1);
        CHECK_STR_EQ(httpreq_body(p, &len), "");
        CHECK_INT_EQ(len, 0);
        CHECK_INT_EQ(httpreq_keep_alive(p), 1);
        httpreq_free(p);
    }
}

static void test_keep_alive_flags(void)
{
    struct {
        const char *req;
        int keep;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", 1},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 0},
        {"GET / HTTP/1.1\r\nConnection: Close\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\n\r\n", 0},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", 1},
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        httpreq *p = parse_ok(cases[i].req, 1, NULL);

        CHECK_INT_EQ(httpreq_keep_alive(p), cases[i].keep);
        CHECK_STR_EQ(httpreq_path(p), "/");
        CHECK_STR_EQ(httpreq_query(p), "");
        httpreq_free(p);
    }
}

static void test_pipelined(void)
{
    static const char first[] = "POST /a HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello";
    static const char second[] = "GET /b?q HTTP/1.1\r\n\r\n";
    static const char third[] = "DELETE /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                "3\r\nabc\r\n0\r\n\r\n";
    char all[512];
    size_t total, off = 0, used;
    struct errbuf e = {0};
    httpreq *p = httpreq_new(NULL);
    size_t body_len;

    total = (size_t)snprintf(all, sizeof(all), "%s%s%s", first, second, third);

    /* All three arrive in one read: each feed stops exactly at its request's end. */
    CHECK_INT_EQ(httpreq_feed(p, all, total, &used, &e), 1);
    CHECK_INT_EQ(used, strlen(first));
    CHECK_STR_EQ(httpreq_method(p), "POST");
    CHECK_STR_EQ(httpreq_body(p, &body_len), "hello");
    CHECK_INT_EQ(body_len, 5);
    off += used;
    httpreq_reset(p);
    CHECK_INT_EQ(httpreq_started(p), 0);
    CHECK(httpreq_path(p) == NULL);

    CHECK_INT_EQ(httpreq_feed(p, all + off, total - off, &used, &e), 1);
    CHECK_INT_EQ(used, strlen(second));
    CHECK_STR_EQ(httpreq_method(p), "GET");
    CHECK_STR_EQ(httpreq_path(p), "/b");
    CHECK_STR_EQ(httpreq_query(p), "q");
    CHECK_STR_EQ(httpreq_body(p, &body_len), "");
    off += used;
    /* Feeding again without reset keeps the finished request and eats nothing. */
    CHECK_INT_EQ(httpreq_feed(p, all + off, total - off, &used, &e), 1);
    CHECK_INT_EQ(used, 0);
    httpreq_reset(p);

    CHECK_INT_EQ(httpreq_feed(p, all + off, total - off, &used, &e), 1);
    CHECK_INT_EQ(used, strlen(third));
    CHECK_STR_EQ(httpreq_method(p), "DELETE");
    CHECK_STR_EQ(httpreq_body(p, &body_len), "abc");
    httpreq_free(p);

    /* The same stream byte by byte: the request boundary still falls exactly. */
    p = httpreq_new(NULL);
    off = 0;
    for (int n = 0; n < 3; n++) {
        int rc = feed_steps(p, all + off, total - off, 1, &used);

        CHECK_INT_EQ(rc, 1);
        off += used;
        CHECK_INT_EQ(off, n == 0 ? strlen(first) : n == 1 ? strlen(first) + strlen(second) : total);
        httpreq_reset(p);
    }
    httpreq_free(p);
}

static void test_chunked_and_binary_body(void)
{
    static const char req[] = "POST /cb HTTP/1.1\r\n"
                              "Transfer-Encoding: chunked\r\n"
                              "\r\n"
                              "5\r\nhello\r\n"
                              "6;ext=1\r\n world\r\n"
                              "0\r\n"
                              "Trailer-X: y\r\n"
                              "\r\n";
    static const char bin[] = "PUT /bin HTTP/1.1\r\nContent-Length: 6\r\n\r\na\0b\0\0c";
    httpreq *p;
    size_t len, used;
    const char *body;

    for (size_t step = 0; step < 4; step++) {
        p = parse_ok(req, step, NULL);
        body = httpreq_body(p, &len);
        CHECK_INT_EQ(len, 11);
        CHECK_STR_EQ(body, "hello world");
        CHECK_STR_EQ(httpreq_header(p, "transfer-encoding"), "chunked");
        httpreq_free(p);
    }

    p = httpreq_new(NULL);
    CHECK_INT_EQ(feed_steps(p, bin, sizeof(bin) - 1, 1, &used), 1);
    CHECK_INT_EQ(used, sizeof(bin) - 1);
    body = httpreq_body(p, &len);
    CHECK_INT_EQ(len, 6);
    CHECK(memcmp(body, "a\0b\0\0c", 6) == 0);
    CHECK_STR_EQ(httpreq_method(p), "PUT");
    httpreq_free(p);
}

static void test_headers_done_before_body(void)
{
    static const char head[] =
        "POST /x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 3\r\n\r\n";
    struct errbuf e = {0};
    httpreq *p = httpreq_new(NULL);
    size_t used, len;

    CHECK(httpreq_method(p) == NULL);
    CHECK_INT_EQ(httpreq_feed(p, head, 10, &used, &e), 0);
    CHECK_INT_EQ(httpreq_started(p), 1);
    CHECK_INT_EQ(httpreq_headers_done(p), 0);
    CHECK_INT_EQ(httpreq_feed(p, head + 10, strlen(head) - 10, &used, &e), 0);
    CHECK_INT_EQ(httpreq_headers_done(p), 1);
    CHECK_INT_EQ(httpreq_complete(p), 0);
    CHECK_STR_EQ(httpreq_header(p, "expect"), "100-continue");
    CHECK_INT_EQ(httpreq_feed(p, "abc", 3, &used, &e), 1);
    CHECK_STR_EQ(httpreq_body(p, &len), "abc");
    httpreq_free(p);
}

static void test_empty_value_and_urls(void)
{
    httpreq *p = parse_ok("GET http://example.com:8080/p/q?a=b#frag HTTP/1.1\r\n"
                          "X-Empty:\r\n"
                          "X-Next: v\r\n"
                          "X-Blank:    \r\n"
                          "\r\n",
                          1, NULL);

    CHECK_STR_EQ(httpreq_path(p), "/p/q");
    CHECK_STR_EQ(httpreq_query(p), "a=b");
    CHECK_STR_EQ(httpreq_header(p, "x-empty"), "");
    CHECK_STR_EQ(httpreq_header(p, "x-next"), "v");
    CHECK_STR_EQ(httpreq_header(p, "x-blank"), "");
    CHECK_INT_EQ(httpreq_header_count(p), 3);
    httpreq_free(p);

    p = parse_ok("PATCH /only#frag HTTP/1.1\r\n\r\n", 0, NULL);
    CHECK_STR_EQ(httpreq_method(p), "PATCH");
    CHECK_STR_EQ(httpreq_path(p), "/only");
    CHECK_STR_EQ(httpreq_query(p), "");
    httpreq_free(p);
}

static void test_body_limits(void)
{
    struct httpreq_limits small = {.max_body = 10};
    static const char chunked_big[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                      "6\r\nabcdef\r\n6\r\nghijkl\r\n0\r\n\r\n";
    static const char chunked_ok[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"
                                     "6\r\nabcdef\r\n4\r\nghij\r\n0\r\n\r\n";
    const char *big = "POST / HTTP/1.1\r\nContent-Length: 65537\r\n\r\n";
    httpreq *p;
    size_t used, len;

    /* Declared too large: refused at the end of the headers, before any body byte. */
    for (size_t step = 0; step < 2; step++) {
        p = httpreq_new(NULL);
        CHECK_INT_EQ(feed_steps(p, big, strlen(big), step, &used), -1);
        CHECK_INT_EQ(httpreq_error(p), HTTPREQ_E_BODY_TOO_LARGE);
        CHECK_INT_EQ(httpreq_error_status(httpreq_error(p)), 413);
        CHECK_STR_EQ(httpreq_error_code(httpreq_error(p)), "body_too_large");
        CHECK(used <= strlen(big));
        httpreq_free(p);
    }
    /* Exactly the default limit is fine. */
    {
        size_t hl = strlen("POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n");
        char *req = malloc(hl + 65536);

        memcpy(req, "POST / HTTP/1.1\r\nContent-Length: 65536\r\n\r\n", hl);
        memset(req + hl, 'z', 65536);
        p = httpreq_new(NULL);
        CHECK_INT_EQ(feed_steps(p, req, hl + 65536, 1000, &used), 1);
        httpreq_body(p, &len);
        CHECK_INT_EQ(len, 65536);
        httpreq_free(p);
        free(req);
    }
    expect_error("POST / HTTP/1.1\r\nContent-Length: 11\r\n\r\n", 39, 0, &small,
                 HTTPREQ_E_BODY_TOO_LARGE, 413);
    p = parse_ok("POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\n0123456789", 3, &small);
    CHECK_STR_EQ(httpreq_body(p, &len), "0123456789");
    httpreq_free(p);
    /* Chunked: no length up front, so the sum of the chunks is what counts. */
    expect_error(chunked_big, strlen(chunked_big), 0, &small, HTTPREQ_E_BODY_TOO_LARGE, 413);
    expect_error(chunked_big, strlen(chunked_big), 1, &small, HTTPREQ_E_BODY_TOO_LARGE, 413);
    p = parse_ok(chunked_ok, 1, &small);
    CHECK_STR_EQ(httpreq_body(p, &len), "abcdefghij");
    httpreq_free(p);
}

/* A request whose header section (request line to blank line) is exactly n bytes. */
static char *request_of_header_size(size_t n)
{
    static const char pre[] = "GET / HTTP/1.1\r\nX-Fill: ";
    size_t fixed = strlen(pre) + 4; /* "\r\n\r\n" */
    char *s = malloc(n + 1);

    CHECK(n > fixed);
    memcpy(s, pre, strlen(pre));
    memset(s + strlen(pre), 'f', n - fixed);
    memcpy(s + n - 4, "\r\n\r\n", 4);
    s[n] = '\0';
    return s;
}

static void test_header_limits(void)
{
    char *s;
    httpreq *p;
    char many[8192];
    size_t off;

    s = request_of_header_size(16384);
    p = parse_ok(s, 0, NULL);
    CHECK_INT_EQ(strlen(httpreq_header(p, "x-fill")), 16384 - 28);
    httpreq_free(p);
    free(s);
    p = NULL;
    s = request_of_header_size(16384);
    p = parse_ok(s, 1, NULL);
    httpreq_free(p);
    free(s);

    s = request_of_header_size(16385);
    expect_error(s, strlen(s), 0, NULL, HTTPREQ_E_HEADERS_TOO_LARGE, 431);
    expect_error(s, strlen(s), 1, NULL, HTTPREQ_E_HEADERS_TOO_LARGE, 431);
    expect_error(s, strlen(s), 4096, NULL, HTTPREQ_E_HEADERS_TOO_LARGE, 431);
    free(s);
    /* A long request line counts too. */
    s = malloc(20000);
    memcpy(s, "GET /", 5);
    memset(s + 5, 'u', 19000);
    strcpy(s + 19005, " HTTP/1.1\r\n\r\n");
    expect_error(s, strlen(s), 0, NULL, HTTPREQ_E_HEADERS_TOO_LARGE, 431);
    free(s);

    /* 100 header fields pass, 101 do not. */
    off = (size_t)snprintf(many, sizeof(many), "GET / HTTP/1.1\r\n");
    for (int i = 0; i < 100; i++)
        off += (size_t)snprintf(many + off, sizeof(many) - off, "H%d: %d\r\n", i, i);
    snprintf(many + off, sizeof(many) - off, "\r\n");
    p = parse_ok(many, 0, NULL);
    CHECK_INT_EQ(httpreq_header_count(p), 100);
    CHECK_STR_EQ(httpreq_header(p, "h99"), "99");
    httpreq_free(p);
    off += (size_t)snprintf(many + off, sizeof(many) - off, "H100: x\r\n\r\n");
    expect_error(many, off, 0, NULL, HTTPREQ_E_TOO_MANY_HEADERS, 431);
    expect_error(many, off, 1, NULL, HTTPREQ_E_TOO_MANY_HEADERS, 431);

    /* Custom limits. */
    {
        struct httpreq_limits lim = {.max_headers = 2, .max_header_bytes = 64};
        const char *three = "GET / HTTP/1.1\r\nA: 1\r\nB: 2\r\nC: 3\r\n\r\n";

        expect_error(three, strlen(three), 0, &lim, HTTPREQ_E_TOO_MANY_HEADERS, 431);
        s = request_of_header_size(65);
        expect_error(s, strlen(s), 0, &lim, HTTPREQ_E_HEADERS_TOO_LARGE, 431);
        free(s);
    }
}

static void test_framing_rejections(void)
{
    static const char dup_same[] =
        "POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc";
    static const char dup_diff[] =
        "POST / HTTP/1.1\r\nContent-Length: 3\r\ncontent-length: 4\r\n\r\nabcd";
    static const char cl_te[] = "POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: "
                                "chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char te_cl[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: "
                                "3\r\n\r\n3\r\nabc\r\n0\r\n\r\n";
    static const char nul_value[] = "GET / HTTP/1.1\r\nX-A: a\0b\r\n\r\n";
    static const char nul_name[] = "GET / HTTP/1.1\r\nX\0A: ab\r\n\r\n";
    static const char nul_url[] = "GET /a\0b HTTP/1.1\r\n\r\n";
    static const char ws_colon[] = "GET / HTTP/1.1\r\nHost : x\r\n\r\n";
    static const char ws_colon_cl[] = "POST / HTTP/1.1\r\nContent-Length\t: 3\r\n\r\nabc";
    static const char te_gzip[] = "POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
    static const char te_gzip_chunked[] =
        "POST / HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n";
    static const char te_twice[] = "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n"
                                   "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    for (size_t step = 0; step < 2; step++) {
        expect_error(dup_same, strlen(dup_same), step, NULL, HTTPREQ_E_DUP_CONTENT_LENGTH, 400);
        expect_error(dup_diff, strlen(dup_diff), step, NULL, HTTPREQ_E_DUP_CONTENT_LENGTH, 400);
        expect_error(cl_te, strlen(cl_te), step, NULL, HTTPREQ_E_LENGTH_AND_CHUNKED, 400);
        expect_error(te_cl, strlen(te_cl), step, NULL, HTTPREQ_E_LENGTH_AND_CHUNKED, 400);
        expect_error(nul_value, sizeof(nul_value) - 1, step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error(nul_name, sizeof(nul_name) - 1, step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error(nul_url, sizeof(nul_url) - 1, step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error("GARBAGE\r\n\r\n", 11, step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error(ws_colon, strlen(ws_colon), step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error(ws_colon_cl, strlen(ws_colon_cl), step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error(te_gzip, strlen(te_gzip), step, NULL, HTTPREQ_E_BAD_TRANSFER_ENCODING, 501);
        expect_error(te_gzip_chunked, strlen(te_gzip_chunked), step, NULL,
                     HTTPREQ_E_BAD_TRANSFER_ENCODING, 501);
        expect_error(te_twice, strlen(te_twice), step, NULL, HTTPREQ_E_BAD_TRANSFER_ENCODING, 501);
        expect_error("GET / HTTP/9.x\r\n\r\n", 18, step, NULL, HTTPREQ_E_SYNTAX, 400);
        expect_error("POST / HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", 39, step, NULL,
                     HTTPREQ_E_SYNTAX, 400);
        expect_error("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 50, step, NULL,
                     HTTPREQ_E_SYNTAX, 400);
    }
    CHECK_STR_EQ(httpreq_error_code(HTTPREQ_E_SYNTAX), "bad_request");
    CHECK_STR_EQ(httpreq_error_code(HTTPREQ_E_TOO_MANY_HEADERS), "headers_too_large");
    CHECK_STR_EQ(httpreq_error_code(HTTPREQ_E_BAD_TRANSFER_ENCODING),
                 "unsupported_transfer_encoding");
    /* "Chunked" in any case is fine. */
    {
        httpreq *p = parse_ok("POST / HTTP/1.1\r\nTransfer-Encoding: Chunked\r\n\r\n"
                              "1\r\nx\r\n0\r\n\r\n",
                              1, NULL);
        size_t len;

        CHECK_STR_EQ(httpreq_body(p, &len), "x");
        httpreq_free(p);
    }
}

static void test_sticky_error_and_reset(void)
{
    struct errbuf e = {0};
    httpreq *p = httpreq_new(NULL);
    size_t used;
    static const char ok[] = "GET /after HTTP/1.1\r\n\r\n";

    CHECK_INT_EQ(httpreq_feed(p, "BAD\r\n\r\n", 7, &used, &e), -1);
    CHECK_INT_EQ(httpreq_feed(p, ok, strlen(ok), &used, &e), -1);
    CHECK_INT_EQ(used, 0);
    httpreq_reset(p);
    CHECK_INT_EQ(httpreq_error(p), HTTPREQ_E_NONE);
    CHECK_INT_EQ(httpreq_feed(p, ok, strlen(ok), &used, &e), 1);
    CHECK_STR_EQ(httpreq_path(p), "/after");
    /* Zero bytes is harmless. */
    httpreq_reset(p);
    CHECK_INT_EQ(httpreq_feed(p, ok, 0, &used, &e), 0);
    CHECK_INT_EQ(used, 0);
    CHECK_INT_EQ(httpreq_started(p), 0);
    httpreq_free(p);
    httpreq_free(NULL);
}

static void test_reason(void)
{
    CHECK_STR_EQ(httpreq_reason(200), "OK");
    CHECK_STR_EQ(httpreq_reason(413), "Payload Too Large");
    CHECK_STR_EQ(httpreq_reason(431), "Request Header Fields Too Large");
    CHECK_STR_EQ(httpreq_reason(299), "Unknown");
    CHECK_STR_EQ(httpreq_reason(-1), "Unknown");
}

int main(void)
{
    test_get_split_feeds();
    test_keep_alive_flags();
    test_pipelined();
    test_chunked_and_binary_body();
    test_headers_done_before_body();
    test_empty_value_and_urls();
    test_body_limits();
    test_header_limits();
    test_framing_rejections();
    test_sticky_error_and_reset();
    test_reason();
    TEST_PASS();
    return 0;
}
