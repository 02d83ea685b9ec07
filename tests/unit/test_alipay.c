/* tests/unit/test_alipay.c: the Alipay channel without a network: notifications signed
 * here with the test "Alipay" private key (OpenSSL, with the test's own form encoding and
 * signing string), every way one must be refused, amounts, trade_status mapping, config
 * forms and errors, the signing-string golden vector, JSON member extraction, and the
 * request builder (its signature checked with the app public key). The HTTP clients run
 * against tests/fakes/alipay_sim.py in tests/integration/test_alipay_api.c. */
#include "channel/alipay.h"

#include <openssl/bio.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "channel/channel.h"
#include "common/crypto.h"
#include "common/jsonx.h"
#include "tests/unit/check.h"

#define APP_ID "2021000000000001"
#define SELLER_ID "2088000000000002"
#define MAX_P 32

static char keys_dir[1024];

/* ------------------------------------------------------------------ test-side signing */

static EVP_PKEY *read_key(const char *name, int private)
{
    char path[1200];
    BIO *b;
    EVP_PKEY *k;

    snprintf(path, sizeof(path), "%s/%s", keys_dir, name);
    b = BIO_new_file(path, "r");
    CHECK(b != NULL);
    k = private ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL)
                : PEM_read_bio_PUBKEY(b, NULL, NULL, NULL);
    BIO_free(b);
    CHECK(k != NULL);
    return k;
}

static char *sign_b64(EVP_PKEY *k, const char *msg)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[1024];
    size_t len = sizeof(sig);
    char *out;

    CHECK(EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, k, NULL) == 1);
    CHECK(EVP_DigestSign(md, sig, &len, (const unsigned char *)msg, strlen(msg)) == 1);
    EVP_MD_CTX_free(md);
    out = malloc(crypto_b64_len(len) + 1);
    crypto_b64_encode(sig, len, out);
    return out;
}

static int verify_b64(EVP_PKEY *k, const char *msg, const char *b64)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig;
    size_t len;
    int ok;

    CHECK(crypto_b64_decode(b64, strlen(b64), &sig, &len) == 0);
    ok = EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, k, NULL) == 1 &&
         EVP_DigestVerify(md, sig, len, (const unsigned char *)msg, strlen(msg)) == 1;
    EVP_MD_CTX_free(md);
    free(sig);
    return ok;
}

struct kv {
    const char *k, *v;
};

struct params {
    size_t n;
    struct kv p[MAX_P];
};

static void pset(struct params *ps, const char *k, const char *v)
{
    for (size_t i = 0; i < ps->n; i++) {
        if (strcmp(ps->p[i].k, k) == 0) {
            ps->p[i].v = v;
            return;
        }
    }
    CHECK(ps->n < MAX_P);
    ps->p[ps->n].k = k;
    ps->p[ps->n].v = v;
    ps->n++;
}

static void pdel(struct params *ps, const char *k)
{
    for (size_t i = 0; i < ps->n; i++) {
        if (strcmp(ps->p[i].k, k) == 0) {
            ps->p[i] = ps->p[--ps->n];
            return;
        }
    }
}

static int kv_cmp(const void *a, const void *b)
{
    return strcmp(((const struct kv *)a)->k, ((const struct kv *)b)->k);
}

/* The test's own signing string: Alipay's rule written out again, independently. */
static char *test_sign_string(const struct params *ps)
{
    struct kv s[MAX_P];
    size_t n = 0;
    char *out = calloc(1, 16384);

    for (size_t i = 0; i < ps->n; i++)
        if (strcmp(ps->p[i].k, "sign") != 0 && strcmp(ps->p[i].k, "sign_type") != 0 &&
            ps->p[i].v[0] != '\0')
            s[n++] = ps->p[i];
    qsort(s, n, sizeof(s[0]), kv_cmp);
    for (size_t i = 0; i < n; i++) {
        if (i > 0)
            strcat(out, "&");
        strcat(out, s[i].k);
        strcat(out, "=");
        strcat(out, s[i].v);
    }
    return out;
}

static void enc(char *out, const char *s)
{
    char *o = out + strlen(out);

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
            strchr("-._*", c) != NULL)
            *o++ = (char)c;
        else if (c == ' ')
            *o++ = '+';
        else
            o += sprintf(o, "%%%02X", c);
    }
    *o = '\0';
}

/* Encodes ps as a form body (caller frees). */
static char *form_body(const struct params *ps)
{
    char *out = calloc(1, 65536);

    for (size_t i = 0; i < ps->n; i++) {
        if (i > 0)
            strcat(out, "&");
        enc(out, ps->p[i].k);
        strcat(out, "=");
        enc(out, ps->p[i].v);
    }
    return out;
}

/* Adds sign (over the test's signing string with key k) and returns the encoded body. */
static char *signed_body(struct params *ps, EVP_PKEY *k, char **sig_out)
{
    char *content = test_sign_string(ps), *sig = sign_b64(k, content), *body;

    pset(ps, "sign", sig);
    body = form_body(ps);
    free(content);
    *sig_out = sig;
    return body;
}

/* A typical TRADE_SUCCESS notification (without sign). */
static void base_params(struct params *ps)
{
    memset(ps, 0, sizeof(*ps));
    pset(ps, "gmt_create", "2026-11-24 13:20:01");
    pset(ps, "charset", "utf-8");
    pset(ps, "seller_email", "shop@example.com");
    pset(ps, "subject", "会员 月卡 (VIP)");
    pset(ps, "buyer_id", "2088102177846875");
    pset(ps, "invoice_amount", "12.50");
    pset(ps, "notify_id", "2026112400222132015000000001234567");
    pset(ps, "fund_bill_list", "[{\"amount\":\"12.50\",\"fundChannel\":\"ALIPAYACCOUNT\"}]");
    pset(ps, "notify_type", "trade_status_sync");
    pset(ps, "trade_status", "TRADE_SUCCESS");
    pset(ps, "receipt_amount", "12.50");
    pset(ps, "app_id", APP_ID);
    pset(ps, "buyer_pay_amount", "12.50");
    pset(ps, "sign_type", "RSA2");
    pset(ps, "seller_id", SELLER_ID);
    pset(ps, "gmt_payment", "2026-11-24 13:20:05");
    pset(ps, "notify_time", "2026-11-24 13:20:06");
    pset(ps, "passback_params", "a=1&b=2+3%");
    pset(ps, "version", "1.0");
    pset(ps, "out_trade_no", "ord_0123456789abcdef");
    pset(ps, "total_amount", "12.50");
    pset(ps, "trade_no", "2026112422001446870500001234");
    pset(ps, "auth_app_id", APP_ID);
    pset(ps, "buyer_logon_id", "158****1562");
    pset(ps, "point_amount", "0.00");
    pset(ps, "voucher_detail_list", "");
}

/* ------------------------------------------------------------------ channel plumbing */

static const char *no_header(void *ctx, const char *name)
{
    (void)ctx;
    (void)name;
    return NULL;
}

static void *load(const char *json, struct errbuf *e)
{
    return alipay_channel_ops.config_load(json, "channels.alipay", keys_dir, e);
}

static void *load_ok(const char *json)
{
    struct errbuf e = {0};
    void *c = load(json, &e);

    if (c == NULL)
        fprintf(stderr, "config_load: %s\n", e.msg);
    CHECK(c != NULL);
    return c;
}

static void expect_config_error(const char *json, const char *needle)
{
    struct errbuf e = {0};
    void *c = load(json, &e);

    if (c != NULL || strstr(e.msg, needle) == NULL)
        fprintf(stderr, "config %s: expected error with \"%s\", got \"%s\"\n", json, needle, e.msg);
    CHECK(c == NULL);
    CHECK(strstr(e.msg, needle) != NULL);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
}

static int verify_body(const void *conf, const char *body, struct errbuf *e)
{
    struct channel_request req = {body, strlen(body), no_header, NULL};

    *e = (struct errbuf){0};
    return alipay_channel_ops.verify(conf, &req, 1764000000, e);
}

static void expect_verify_ok(const void *conf, const char *body)
{
    struct errbuf e = {0};

    if (verify_body(conf, body, &e) != 0)
        fprintf(stderr, "verify: %s\nbody: %s\n", e.msg, body);
    CHECK_INT_EQ(verify_body(conf, body, &e), 0);
}

static void expect_verify_error(const void *conf, const char *body, const char *needle)
{
    struct errbuf e = {0};
    int rc = verify_body(conf, body, &e);

    if (rc == 0 || strstr(e.msg, needle) == NULL)
        fprintf(stderr, "verify: expected error with \"%s\", got rc %d \"%s\"\nbody: %s\n", needle,
                rc, e.msg, body);
    CHECK_INT_EQ(rc, -1);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    CHECK(strstr(e.msg, needle) != NULL);
}

static void expect_parse_error(const void *conf, const char *body, const char *needle)
{
    struct errbuf e = {0};
    struct pay_event ev;
    int rc = alipay_channel_ops.parse(conf, body, strlen(body), &ev, &e);

    if (rc == 0 || strstr(e.msg, needle) == NULL)
        fprintf(stderr, "parse: expected error with \"%s\", got rc %d \"%s\"\n", needle, rc, e.msg);
    CHECK_INT_EQ(rc, -1);
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    CHECK(strstr(e.msg, needle) != NULL);
}

static const char *conf_pem = "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                              "\"alipay_public_key_file\":\"alipay_public_key.pem\"}";
static const char *conf_seller = "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                                 "\"seller_id\":\"" SELLER_ID "\","
                                 "\"alipay_public_key_file\":\"alipay_public_key.pem\"}";

/* ------------------------------------------------------------------ tests */

static void test_ops_table(void)
{
    CHECK(channel_ops_for("alipay") == &alipay_channel_ops);
    CHECK(alipay_channel_ops.envelope_headers != NULL);
    CHECK(alipay_channel_ops.envelope_headers[0] == NULL);
    CHECK_INT_EQ(alipay_channel_ops.accept.status, 200);
    CHECK_STR_EQ(alipay_channel_ops.accept.content_type, "text/plain");
    CHECK_STR_EQ(alipay_channel_ops.accept.body, "success");
    CHECK_INT_EQ(alipay_channel_ops.reject.status, 400);
    CHECK_STR_EQ(alipay_channel_ops.reject.content_type, "text/plain");
    CHECK_STR_EQ(alipay_channel_ops.reject.body, "failure");
    CHECK(alipay_channel_ops.query != NULL && alipay_channel_ops.refund != NULL);
}

static void test_golden_sign_string(void)
{
    /* Byte order puts "Zeta" before "a", "a_b" before "ab"; "+" and %XX are decoded; the
     * empty value, sign and sign_type are left out of a notification's string. */
    const char *body = "total_amount=12.50&sign=AAAA&subject=a+b%2Bc&app_id=2021000000000001&"
                       "ab=3&empty=&a_b=2&Zeta=1&body=%E4%BD%A0%E5%A5%BD&sign_type=RSA2&a=4&"
                       "&q=x%3Dy%26z";
    struct errbuf e = {0};
    alipay_form *f = alipay_form_parse(body, strlen(body), &e);
    char *s;

    CHECK(f != NULL);
    s = alipay_sign_content(f, 1);
    CHECK_STR_EQ(s, "Zeta=1&a=4&a_b=2&ab=3&app_id=2021000000000001&body=你好&q=x=y&z&"
                    "subject=a b+c&total_amount=12.50");
    free(s);
    /* Requests sign sign_type too. */
    s = alipay_sign_content(f, 0);
    CHECK_STR_EQ(s, "Zeta=1&a=4&a_b=2&ab=3&app_id=2021000000000001&body=你好&q=x=y&z&"
                    "sign_type=RSA2&subject=a b+c&total_amount=12.50");
    free(s);
    CHECK_STR_EQ(alipay_form_get(f, "empty"), "");
    CHECK_STR_EQ(alipay_form_get(f, "subject"), "a b+c");
    CHECK(alipay_form_get(f, "missing") == NULL);
    alipay_form_free(f);

    /* The test's independent signing string agrees on a real notification. */
    {
        struct params ps;
        char *mine, *theirs, *fb;

        base_params(&ps);
        mine = test_sign_string(&ps);
        fb = form_body(&ps);
        f = alipay_form_parse(fb, strlen(fb), &e);
        CHECK(f != NULL);
        theirs = alipay_sign_content(f, 1);
        CHECK_STR_EQ(theirs, mine);
        CHECK(strstr(mine, "voucher_detail_list") == NULL);
        CHECK(strstr(mine, "sign_type") == NULL);
        CHECK(strncmp(mine, "app_id=" APP_ID "&auth_app_id=",
                      strlen("app_id=" APP_ID "&auth_app_id=")) == 0);
        free(mine);
        free(theirs);
        free(fb);
        alipay_form_free(f);
    }
}

static void test_form_errors(void)
{
    static const struct {
        const char *body, *needle;
    } bad[] = {
        {"a=1&a=2", "given twice"},
        {"a=1&b=2&a=1", "given twice"},
        {"a%3D=1&a%3d=2", "given twice"},
        {"a=%zz", "malformed %-escape"},
        {"a=%4", "malformed %-escape"},
        {"a=1%", "malformed %-escape"},
        {"a%=1", "malformed %-escape"},
        {"a=%00", "NUL byte"},
        {"a=%FF", "not UTF-8"},
        {"a=%C0%AF", "not UTF-8"},    /* overlong '/' */
        {"a=%ED%A0%80", "not UTF-8"}, /* surrogate */
        {"a=%E4%BD", "not UTF-8"},    /* cut short */
        {"%FF=1", "not UTF-8"},
        {"a", "without '='"},
        {"=1", "empty name"},
        {"charset=gbk&a=1", "charset \"gbk\" is not supported"},
        {"charset=GBK&a=%C4%E3", "charset \"GBK\" is not supported"},
    };
    struct errbuf e;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        alipay_form *f;

        e = (struct errbuf){0};
        f = alipay_form_parse(bad[i].body, strlen(bad[i].body), &e);
        if (f != NULL || strstr(e.msg, bad[i].needle) == NULL)
            fprintf(stderr, "form %s: expected \"%s\", got \"%s\"\n", bad[i].body, bad[i].needle,
                    e.msg);
        CHECK(f == NULL);
        CHECK(strstr(e.msg, bad[i].needle) != NULL);
    }
    /* Too many parameters. */
    {
        char big[4096] = "";
        alipay_form *f;

        for (int i = 0; i <= ALIPAY_MAX_PARAMS; i++)
            sprintf(big + strlen(big), "%sk%d=v", i ? "&" : "", i);
        e = (struct errbuf){0};
        f = alipay_form_parse(big, strlen(big), &e);
        CHECK(f == NULL);
        CHECK(strstr(e.msg, "more than") != NULL);
    }
    /* Accepted edge cases: UTF-8 charset spellings, empty segments, 4-byte UTF-8. */
    {
        const char *ok = "charset=UTF-8&&a=%F0%9F%98%80&b=";
        alipay_form *f = alipay_form_parse(ok, strlen(ok), &e);

        CHECK(f != NULL);
        CHECK_STR_EQ(alipay_form_get(f, "a"), "\xF0\x9F\x98\x80");
        alipay_form_free(f);
        f = alipay_form_parse("charset=utf-8", 13, &e);
        CHECK(f != NULL);
        alipay_form_free(f);
        /* Only len bytes count: the tail after it is not read. */
        f = alipay_form_parse("a=1&a=2", 3, &e);
        CHECK(f != NULL);
        CHECK_STR_EQ(alipay_form_get(f, "a"), "1");
        alipay_form_free(f);
    }
}

static void test_notification(void)
{
    EVP_PKEY *ali = read_key("alipay_private_key.pem", 1);
    EVP_PKEY *other = read_key("alipay_other_key.pem", 1);
    void *conf = load_ok(conf_pem), *conf_s = load_ok(conf_seller);
    struct params ps;
    struct pay_event ev;
    struct errbuf e = {0};
    char *sig, *body, *good, *good_sig;

    /* The genuine notification verifies and parses, with and without seller_id config. */
    base_params(&ps);
    good = signed_body(&ps, ali, &good_sig); /* ps keeps pointing at good_sig */
    expect_verify_ok(conf, good);
    expect_verify_ok(conf_s, good);
    CHECK_INT_EQ(alipay_channel_ops.parse(conf, good, strlen(good), &ev, &e), 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.event_id, "2026112400222132015000000001234567");
    CHECK_STR_EQ(ev.event_type, "alipay.trade_success");
    CHECK_STR_EQ(ev.order_id, "ord_0123456789abcdef");
    CHECK_STR_EQ(ev.txn_id, "2026112422001446870500001234");
    CHECK_INT_EQ(ev.amount, 1250);
    CHECK_STR_EQ(ev.currency, "CNY");

    /* Tampered value: sign kept, amount changed. */
    {
        struct params t = ps;
        pset(&t, "total_amount", "1250.00");
        body = form_body(&t);
        expect_verify_error(conf, body, "signature does not verify");
        free(body);
    }
    /* A value tampered into the empty string drops out of the string: still a mismatch. */
    {
        struct params t = ps;
        pset(&t, "out_trade_no", "");
        body = form_body(&t);
        expect_verify_error(conf, body, "signature does not verify");
        free(body);
    }
    /* Removed parameter. */
    {
        struct params t = ps;
        pdel(&t, "gmt_payment");
        body = form_body(&t);
        expect_verify_error(conf, body, "signature does not verify");
        free(body);
    }
    /* Added parameter (non-empty). An added empty one is outside the signed string by
     * Alipay's rule, so it changes nothing. */
    {
        struct params t = ps;
        pset(&t, "refund_fee", "12.50");
        body = form_body(&t);
        expect_verify_error(conf, body, "signature does not verify");
        free(body);
        t = ps;
        pset(&t, "refund_fee", "");
        body = form_body(&t);
        expect_verify_ok(conf, body);
        free(body);
    }
    /* sign_type is outside the string, but must say RSA2. */
    {
        struct params t = ps;
        pset(&t, "sign_type", "RSA");
        body = form_body(&t);
        expect_verify_error(conf, body, "sign_type \"RSA\" is not supported (RSA2 only)");
        free(body);
        pset(&t, "sign_type", "");
        body = form_body(&t);
        expect_verify_error(conf, body, "sign_type missing");
        free(body);
        pdel(&t, "sign_type");
        body = form_body(&t);
        expect_verify_error(conf, body, "sign_type missing");
        free(body);
    }
    /* Bad base64, missing sign, a signature from a key Alipay does not hold. */
    {
        struct params t = ps;
        pset(&t, "sign", "not*base64!");
        body = form_body(&t);
        expect_verify_error(conf, body, "not valid base64");
        free(body);
        pset(&t, "sign", "QUJD"); /* valid base64, not a signature */
        body = form_body(&t);
        expect_verify_error(conf, body, "signature does not verify");
        free(body);
        pdel(&t, "sign");
        body = form_body(&t);
        expect_verify_error(conf, body, "sign missing");
        free(body);
        t = ps;
        pdel(&t, "sign");
        body = signed_body(&t, other, &sig);
        expect_verify_error(conf, body, "signature does not verify");
        free(sig);
        free(body);
        /* A raw '+' in the base64 (not %2B) decodes to a space: refused, not accepted. */
        t = ps;
        pdel(&t, "sign");
        body = form_body(&t);
        strcat(body, "&sign=QU+D");
        expect_verify_error(conf, body, "not valid base64");
        free(body);
    }
    /* Wrong app_id / seller_id: correctly signed, but for someone else. */
    {
        struct params t = ps;
        pdel(&t, "sign");
        pset(&t, "app_id", "2021000000000999");
        body = signed_body(&t, ali, &sig);
        expect_verify_error(conf, body, "app_id \"2021000000000999\" is not this channel's");
        free(sig);
        free(body);
        t = ps;
        pdel(&t, "sign");
        pdel(&t, "app_id");
        body = signed_body(&t, ali, &sig);
        expect_verify_error(conf, body, "app_id \"(missing)\"");
        free(sig);
        free(body);
        t = ps;
        pdel(&t, "sign");
        pset(&t, "seller_id", "2088999999999999");
        body = signed_body(&t, ali, &sig);
        expect_verify_ok(conf, body); /* seller_id not configured: not checked */
        expect_verify_error(conf_s, body, "seller_id \"2088999999999999\" is not this channel's");
        free(sig);
        free(body);
        t = ps;
        pdel(&t, "sign");
        pdel(&t, "seller_id");
        body = signed_body(&t, ali, &sig);
        expect_verify_error(conf_s, body, "seller_id \"(missing)\"");
        free(sig);
        free(body);
    }
    /* charset gbk, correctly signed: refused with the reason. */
    {
        struct params t = ps;
        pdel(&t, "sign");
        pset(&t, "charset", "gbk");
        pset(&t, "subject", "VIP");
        body = signed_body(&t, ali, &sig);
        expect_verify_error(conf, body, "charset \"gbk\" is not supported");
        expect_parse_error(conf, body, "charset");
        free(sig);
        free(body);
    }
    /* Duplicate keys and bad escapes around an otherwise genuine body. */
    {
        size_t n = strlen(good);
        char *dup = malloc(n + 64), *esc = malloc(n + 64);

        snprintf(dup, n + 64, "%s&total_amount=0.01", good);
        expect_verify_error(conf, dup, "total_amount given twice");
        expect_parse_error(conf, dup, "given twice");
        snprintf(dup, n + 64, "trade_status=TRADE_SUCCESS&%s", good);
        expect_verify_error(conf, dup, "trade_status given twice");
        snprintf(esc, n + 64, "%s&x=%%G1", good);
        expect_verify_error(conf, esc, "malformed %-escape");
        expect_parse_error(conf, esc, "malformed %-escape");
        snprintf(esc, n + 64, "%s&x=%%00", good);
        expect_verify_error(conf, esc, "NUL byte");
        snprintf(esc, n + 64, "%s&x=%%C3%%28", good);
        expect_verify_error(conf, esc, "not UTF-8");
        free(dup);
        free(esc);
    }
    /* Malformed amounts, correctly signed: verify passes, parse refuses. */
    {
        static const char *const amounts[] = {"12.5.0", "-1",     "1e3",  "12.345",
                                              "",       " 12.50", "12.",  ".5",
                                              "+1",     "12,50",  "0x10", "99999999999999999999"};
        for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
            struct params t = ps;

            pdel(&t, "sign");
            pset(&t, "total_amount", amounts[i]);
            body = signed_body(&t, ali, &sig);
            expect_verify_ok(conf, body);
            expect_parse_error(conf, body, "total_amount");
            free(sig);
            free(body);
        }
    }
    /* Exact amounts. */
    {
        static const struct {
            const char *s;
            int64_t fen;
        } amounts[] = {{"0.01", 1},      {"12.50", 1250},       {"100", 10000},
                       {"12.5", 1250},   {"0.00", 0},           {"99999.99", 9999999},
                       {"100.0", 10000}, {"1000000", 100000000}};
        for (size_t i = 0; i < sizeof(amounts) / sizeof(amounts[0]); i++) {
            struct params t = ps;

            pdel(&t, "sign");
            pset(&t, "total_amount", amounts[i].s);
            body = signed_body(&t, ali, &sig);
            expect_verify_ok(conf, body);
            CHECK_INT_EQ(alipay_channel_ops.parse(conf, body, strlen(body), &ev, &e), 0);
            CHECK_INT_EQ(ev.amount, amounts[i].fen);
            free(sig);
            free(body);
        }
    }
    free(good);
    free(good_sig);
    alipay_channel_ops.config_free(conf);
    alipay_channel_ops.config_free(conf_s);
    EVP_PKEY_free(ali);
    EVP_PKEY_free(other);
}

static void test_parse_mapping(void)
{
    static const struct {
        const char *status;
        enum pay_event_kind kind;
        const char *type;
    } map[] = {
        {"TRADE_SUCCESS", PAY_EVENT_SUCCEEDED, "alipay.trade_success"},
        {"TRADE_FINISHED", PAY_EVENT_SUCCEEDED, "alipay.trade_finished"},
        {"WAIT_BUYER_PAY", PAY_EVENT_PROCESSING, "alipay.wait_buyer_pay"},
        {"TRADE_CLOSED", PAY_EVENT_CANCELED, "alipay.trade_closed"},
        {"TRADE_PENDING", PAY_EVENT_OTHER, "alipay.trade_pending"},
    };
    struct pay_event ev;
    struct errbuf e = {0};
    char body[512];

    for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++) {
        snprintf(body, sizeof(body),
                 "notify_id=n%zu&out_trade_no=o1&trade_no=t1&trade_status=%s&total_amount=1.00", i,
                 map[i].status);
        CHECK_INT_EQ(alipay_channel_ops.parse(NULL, body, strlen(body), &ev, &e), 0);
        CHECK_INT_EQ(ev.kind, map[i].kind);
        CHECK_STR_EQ(ev.event_type, map[i].type);
        CHECK_INT_EQ(ev.amount, 100);
    }
    /* Without notify_id: trade_no, trade_status and gmt_payment make the event id. */
    strcpy(body, "out_trade_no=o1&trade_no=T9&trade_status=TRADE_SUCCESS&total_amount=1.00&"
                 "gmt_payment=2026-11-24+13%3A20%3A05");
    CHECK_INT_EQ(alipay_channel_ops.parse(NULL, body, strlen(body), &ev, &e), 0);
    CHECK_STR_EQ(ev.event_id, "T9:TRADE_SUCCESS:2026-11-24 13:20:05");
    strcpy(body, "notify_id=&out_trade_no=o1&trade_no=T9&trade_status=WAIT_BUYER_PAY");
    CHECK_INT_EQ(alipay_channel_ops.parse(NULL, body, strlen(body), &ev, &e), 0);
    CHECK_STR_EQ(ev.event_id, "T9:WAIT_BUYER_PAY:");
    CHECK_INT_EQ(ev.amount, -1); /* no amount given, none needed */
    CHECK_INT_EQ(ev.kind, PAY_EVENT_PROCESSING);

    expect_parse_error(NULL, "out_trade_no=o1&trade_no=t&total_amount=1", "trade_status missing");
    expect_parse_error(NULL, "trade_status=TRADE_SUCCESS&trade_no=t&total_amount=1",
                       "out_trade_no missing");
    expect_parse_error(NULL, "trade_status=TRADE_SUCCESS&out_trade_no=o&total_amount=1",
                       "trade_no missing");
    expect_parse_error(NULL, "trade_status=TRADE_SUCCESS&out_trade_no=o&trade_no=t",
                       "total_amount missing");
    expect_parse_error(NULL, "trade_status=TRADE%20SUCCESS&out_trade_no=o&trade_no=t",
                       "not a status word");
    {
        char big[400];
        memset(big, 'x', 100);
        big[100] = '\0';
        snprintf(body, sizeof(body), "trade_status=TRADE_CLOSED&out_trade_no=%s&trade_no=t", big);
        expect_parse_error(NULL, body, "out_trade_no longer than 63 bytes");
    }
}

static void test_config(void)
{
    EVP_PKEY *ali = read_key("alipay_private_key.pem", 1);
    struct params ps;
    char *sig, *body, *b64, json[8192];
    struct errbuf e = {0};
    void *c;

    base_params(&ps);
    body = signed_body(&ps, ali, &sig);

    /* The bare base64 form (as the Alipay console shows it), from a file and inline. */
    c = load_ok("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                "\"alipay_public_key_file\":\"alipay_public_key.txt\"}");
    expect_verify_ok(c, body);
    alipay_channel_ops.config_free(c);
    snprintf(json, sizeof(json), "%s/alipay_public_key.txt", keys_dir);
    b64 = jsonx_read_file(json, 8192, &e);
    CHECK(b64 != NULL);
    b64[strcspn(b64, "\n")] = '\0';
    snprintf(json, sizeof(json),
             "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\",\"alipay_public_key\":\"%s\"}", b64);
    c = load_ok(json);
    expect_verify_ok(c, body);
    alipay_channel_ops.config_free(c);
    /* Wrapped base64 (whitespace inside) too. */
    {
        char wrapped[2048];
        size_t o = 0;
        for (size_t i = 0; b64[i]; i++) {
            wrapped[o++] = b64[i];
            if (i % 64 == 63) {
                wrapped[o++] = '\\';
                wrapped[o++] = 'n';
            }
        }
        wrapped[o] = '\0';
        snprintf(json, sizeof(json),
                 "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\",\"alipay_public_key\":\"%s\"}",
                 wrapped);
        c = load_ok(json);
        expect_verify_ok(c, body);
        alipay_channel_ops.config_free(c);
    }
    free(b64);
    /* An absolute path works as well as a relative one. */
    snprintf(json, sizeof(json),
             "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
             "\"alipay_public_key_file\":\"%s/alipay_public_key.pem\"}",
             keys_dir);
    c = load_ok(json);
    expect_verify_ok(c, body);
    alipay_channel_ops.config_free(c);
    /* Another channel's key: the same body does not verify. */
    c = load_ok("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                "\"alipay_public_key_file\":\"alipay_app_public_key.pem\"}");
    expect_verify_error(c, body, "signature does not verify");
    alipay_channel_ops.config_free(c);
    /* App keys: PKCS#8 and PKCS#1 PEM. */
    c = load_ok("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                "\"app_private_key_file\":\"alipay_app_private_key.pem\","
                "\"api_url\":\"http://127.0.0.1:1/gateway.do\"}");
    alipay_channel_ops.config_free(c);
    c = load_ok("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                "\"app_private_key_file\":\"alipay_app_private_key_pkcs1.pem\"}");
    alipay_channel_ops.config_free(c);

    expect_config_error(
        "{\"type\":\"alipay\",\"alipay_public_key_file\":\"alipay_public_key.pem\"}",
        "channels.alipay.app_id: missing");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"\","
                        "\"alipay_public_key_file\":\"alipay_public_key.pem\"}",
                        "channels.alipay.app_id");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"20 21\","
                        "\"alipay_public_key_file\":\"alipay_public_key.pem\"}",
                        "channels.alipay.app_id: expected printable ASCII");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\"}",
                        "channels.alipay: alipay_public_key or alipay_public_key_file missing");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"nope.pem\"}",
                        "channels.alipay.alipay_public_key_file: cannot open");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"alipay_README.txt\"}",
                        "channels.alipay.alipay_public_key_file: not an RSA public key");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key\":\"QUJDRA==\"}",
                        "channels.alipay.alipay_public_key: not an RSA public key");
    /* A private key is not accepted where Alipay's public key belongs... */
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"alipay_app_private_key.pem\"}",
                        "channels.alipay.alipay_public_key_file: not an RSA public key");
    /* ...nor a public key where the app's private key belongs. */
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                        "\"app_private_key_file\":\"alipay_app_public_key.pem\"}",
                        "channels.alipay.app_private_key_file: not an RSA private key");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                        "\"api_url\":\"ftp://x\"}",
                        "channels.alipay.api_url");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                        "\"seler_id\":\"2088\"}",
                        "channels.alipay.seler_id: unknown key");
    expect_config_error("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                        "\"seller_id\":42,\"alipay_public_key_file\":\"alipay_public_key.pem\"}",
                        "channels.alipay.seller_id");
    expect_config_error("[]", "channels.alipay: expected a JSON object");
    /* A 1024-bit key is too weak for RSA2. */
    {
        EVP_PKEY *weak = EVP_RSA_gen(1024);
        char path[1200];
        BIO *b;

        snprintf(path, sizeof(path), "/tmp/alipay_weak_%d.pem", (int)getpid());
        b = BIO_new_file(path, "w");
        CHECK(b != NULL && PEM_write_bio_PUBKEY(b, weak) == 1);
        BIO_free(b);
        snprintf(json, sizeof(json),
                 "{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                 "\"alipay_public_key_file\":\"%s\"}",
                 path);
        expect_config_error(json, "1024-bit key; RSA2 needs at least 2048 bits");
        unlink(path);
        EVP_PKEY_free(weak);
    }
    free(sig);
    free(body);
    EVP_PKEY_free(ali);
}

static void test_json_member(void)
{
    const char *doc = " {\"alipay_trade_query_response\" : {\"code\":\"10000\",\"msg\":\"Success\","
                      "\"s\":\"a\\\"}{[\",\"n\":[1,{\"x\":null}],\"t\":true},"
                      "\"sign\":\"QUJD\", \"n\": -1.5e3 , \"e\":{}}\n";
    const char *v;
    size_t n;
    struct errbuf e = {0};

    CHECK_INT_EQ(alipay_json_member(doc, strlen(doc), "alipay_trade_query_response", &v, &n, &e),
                 0);
    CHECK_INT_EQ(n, strlen("{\"code\":\"10000\",\"msg\":\"Success\",\"s\":\"a\\\"}{[\","
                           "\"n\":[1,{\"x\":null}],\"t\":true}"));
    CHECK(strncmp(v, "{\"code\":\"10000\",\"msg\":\"Success\",\"s\":\"a\\\"}{[\",", 40) == 0);
    CHECK_INT_EQ(alipay_json_member(doc, strlen(doc), "sign", &v, &n, &e), 0);
    CHECK_INT_EQ(n, 6);
    CHECK(strncmp(v, "\"QUJD\"", 6) == 0);
    CHECK_INT_EQ(alipay_json_member(doc, strlen(doc), "n", &v, &n, &e), 0);
    CHECK_INT_EQ(n, 6);
    CHECK_INT_EQ(alipay_json_member(doc, strlen(doc), "e", &v, &n, &e), 0);
    CHECK_INT_EQ(n, 2);
    CHECK_INT_EQ(alipay_json_member(doc, strlen(doc), "code", &v, &n, &e), 1); /* not top-level */
    CHECK_INT_EQ(alipay_json_member("{}", 2, "sign", &v, &n, &e), 1);
    CHECK_INT_EQ(alipay_json_member("{\"sign\":\"a\",\"sign\":\"b\"}", 25, "sign", &v, &n, &e), -1);
    CHECK(strstr(e.msg, "twice") != NULL);
    CHECK_INT_EQ(alipay_json_member("[1]", 3, "sign", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\":1} x", 9, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\":{\"b\":1}", 12, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\":\"x", 7, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\" 1}", 7, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\":}", 6, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("{\"a\":1,}", 8, "a", &v, &n, &e), -1);
    CHECK_INT_EQ(alipay_json_member("", 0, "a", &v, &n, &e), -1);
    /* Only len bytes are read. */
    CHECK_INT_EQ(alipay_json_member("{\"a\":1}garbage", 7, "a", &v, &n, &e), 0);
}

static void test_request_build(void)
{
    EVP_PKEY *app_pub = read_key("alipay_app_public_key.pem", 0);
    void *conf = load_ok("{\"type\":\"alipay\",\"app_id\":\"" APP_ID "\","
                         "\"alipay_public_key_file\":\"alipay_public_key.pem\","
                         "\"app_private_key_file\":\"alipay_app_private_key_pkcs1.pem\"}");
    void *noapp = load_ok(conf_pem);
    const char *biz = "{\"out_trade_no\":\"ord 1/&=+\",\"refund_reason\":\"重复支付\"}";
    struct errbuf e = {0};
    alipay_form *f;
    char *body = NULL, expect[1024];

    /* 1764000000 = 2025-11-24 16:00:00 UTC = 2025-11-25 00:00:00 in Shanghai. */
    CHECK_INT_EQ(alipay_request_build(conf, "alipay.trade.refund", biz, 1764000000, &body, &e), 0);
    CHECK(strchr(body, ' ') == NULL && strchr(body, '+') == NULL);
    f = alipay_form_parse(body, strlen(body), &e);
    CHECK(f != NULL);
    CHECK_STR_EQ(alipay_form_get(f, "app_id"), APP_ID);
    CHECK_STR_EQ(alipay_form_get(f, "method"), "alipay.trade.refund");
    CHECK_STR_EQ(alipay_form_get(f, "format"), "JSON");
    CHECK_STR_EQ(alipay_form_get(f, "charset"), "utf-8");
    CHECK_STR_EQ(alipay_form_get(f, "sign_type"), "RSA2");
    CHECK_STR_EQ(alipay_form_get(f, "timestamp"), "2025-11-25 00:00:00");
    CHECK_STR_EQ(alipay_form_get(f, "version"), "1.0");
    CHECK_STR_EQ(alipay_form_get(f, "biz_content"), biz);
    /* The app's signature covers every parameter but sign, sign_type included, sorted. */
    snprintf(expect, sizeof(expect),
             "app_id=%s&biz_content=%s&charset=utf-8&format=JSON&method=alipay.trade.refund&"
             "sign_type=RSA2&timestamp=2025-11-25 00:00:00&version=1.0",
             APP_ID, biz);
    CHECK(verify_b64(app_pub, expect, alipay_form_get(f, "sign")));
    /* ...and not the notification-style string without sign_type. */
    {
        char *nosigntype = alipay_sign_content(f, 1);
        CHECK(!verify_b64(app_pub, nosigntype, alipay_form_get(f, "sign")));
        free(nosigntype);
    }
    alipay_form_free(f);
    free(body);

    CHECK_INT_EQ(alipay_request_build(noapp, "alipay.trade.query", "{}", 0, &body, &e), -1);
    CHECK(body == NULL);
    CHECK(strstr(e.msg, "no app_private_key") != NULL);

    /* Calls that are refused before any network I/O. */
    {
        struct pay_event ev;
        struct refund_result rr;
        struct refund_request r = {"ord_1", "T1", "rf_1", 100, 100, "CNY", NULL};
        char err[256];

        CHECK_INT_EQ(alipay_channel_ops.query(noapp, "ord_1", &ev, err, sizeof(err)),
                     CHANNEL_CALL_REJECTED);
        CHECK(strstr(err, "no app_private_key") != NULL);
        CHECK_INT_EQ(alipay_channel_ops.refund(noapp, &r, &rr), CHANNEL_CALL_REJECTED);
        CHECK(strstr(rr.error, "no app_private_key") != NULL);
        r.amount = 0;
        CHECK_INT_EQ(alipay_channel_ops.refund(conf, &r, &rr), CHANNEL_CALL_REJECTED);
        CHECK(strstr(rr.error, "not positive") != NULL);
        r.amount = 100;
        r.currency = "USD";
        CHECK_INT_EQ(alipay_channel_ops.refund(conf, &r, &rr), CHANNEL_CALL_REJECTED);
        CHECK(strstr(rr.error, "CNY") != NULL);
        r.currency = "CNY";
        r.refund_id = "";
        CHECK_INT_EQ(alipay_channel_ops.refund(conf, &r, &rr), CHANNEL_CALL_REJECTED);
        CHECK(strstr(rr.error, "refund_id") != NULL);
    }
    alipay_channel_ops.config_free(conf);
    alipay_channel_ops.config_free(noapp);
    EVP_PKEY_free(app_pub);
}

static void test_format_yuan(void)
{
    char s[32];

    CHECK_INT_EQ(alipay_format_yuan(0, s, sizeof(s)), 0);
    CHECK_STR_EQ(s, "0.00");
    alipay_format_yuan(1, s, sizeof(s));
    CHECK_STR_EQ(s, "0.01");
    alipay_format_yuan(10, s, sizeof(s));
    CHECK_STR_EQ(s, "0.10");
    alipay_format_yuan(1250, s, sizeof(s));
    CHECK_STR_EQ(s, "12.50");
    alipay_format_yuan(10000, s, sizeof(s));
    CHECK_STR_EQ(s, "100.00");
    alipay_format_yuan(INT64_MAX, s, sizeof(s));
    CHECK_STR_EQ(s, "92233720368547758.07");
    CHECK_INT_EQ(alipay_format_yuan(-1, s, sizeof(s)), -1);
}

int main(void)
{
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR");

    snprintf(keys_dir, sizeof(keys_dir), "%s/tests/data/keys", src ? src : ".");
    test_ops_table();
    test_golden_sign_string();
    test_form_errors();
    test_notification();
    test_parse_mapping();
    test_config();
    test_json_member();
    test_request_build();
    test_format_yuan();
    TEST_PASS();
    return 0;
}
