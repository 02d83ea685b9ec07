/* tests/unit/test_wechatpay.c: the WeChat Pay channel's config, notification verification
 * and decryption, and request signing. Notifications are built here with OpenSSL directly
 * (sign with the platform's private key, seal with AES-256-GCM), not with the module's own
 * code, so a mistake shared by builder and checker cannot hide. Keys: tests/data/keys. */
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/wechatpay.h"
#include "check.h"

#define MCHID "1900000109"
#define APPID "wxd678efh567hg6787"
#define SERIAL1 "5157F09EFDC096DE15EBE81A47057A7232F1B8E1"
#define SERIAL2 "PUB_KEY_ID_0114000000000000000000000000000002"
#define MERCHANT_SERIAL "3775B6A45ACD588826D15E583A95F5DD2E3E7A0F"
#define APIV3_KEY "wPaynotifyTestApiV3Key0123456789"
#define NOW 1700000000

static char keydir[4096];

static const char *const good_conf =
    "{\"type\":\"wechatpay\",\"mchid\":\"" MCHID "\",\"appid\":\"" APPID "\","
    "\"apiv3_key_file\":\"wechat_apiv3_key.txt\","
    "\"platform_certs\":[{\"serial\":\"" SERIAL1 "\",\"file\":\"wechat_platform1_cert.pem\"},"
    "{\"serial\":\"" SERIAL2 "\",\"file\":\"wechat_platform2_pub.pem\"}],"
    "\"merchant_serial\":\"" MERCHANT_SERIAL "\",\"merchant_key_file\":\"wechat_merchant_key.pem\","
    "\"api_url\":\"http://127.0.0.1:9/prefix/\"}";

/* ----------------------------------------------------------- test-side crypto */

static EVP_PKEY *load_private(const char *name)
{
    char path[4200];
    FILE *f;
    EVP_PKEY *k;

    snprintf(path, sizeof(path), "%s/%s", keydir, name);
    f = fopen(path, "r");
    CHECK(f != NULL);
    k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    CHECK(k != NULL);
    return k;
}

static EVP_PKEY *load_public(const char *name)
{
    char path[4200];
    FILE *f;
    EVP_PKEY *k;

    snprintf(path, sizeof(path), "%s/%s", keydir, name);
    f = fopen(path, "r");
    CHECK(f != NULL);
    k = PEM_read_PUBKEY(f, NULL, NULL, NULL);
    fclose(f);
    CHECK(k != NULL);
    return k;
}

static void b64(const unsigned char *in, size_t len, char *out)
{
    EVP_EncodeBlock((unsigned char *)out, in, (int)len);
}

/* base64(RSA-SHA256-PKCS1v15(msg)) into out (>= 400 bytes). */
static void rsa_sign(EVP_PKEY *k, const char *msg, char *out)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char sig[512];
    size_t n = sizeof(sig);

    CHECK(md != NULL);
    CHECK(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k) == 1);
    CHECK(EVP_DigestSign(md, sig, &n, (const unsigned char *)msg, strlen(msg)) == 1);
    EVP_MD_CTX_free(md);
    b64(sig, n, out);
}

/* base64(AES-256-GCM(pt) || tag) into out. */
static void gcm_seal(const char *key, const char *iv, const char *aad, const char *pt, char *out)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    unsigned char ct[4096];
    int len = 0, fin = 0;

    CHECK(x != NULL);
    CHECK(strlen(pt) + 16 < sizeof(ct));
    CHECK(EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1);
    CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, (int)strlen(iv), NULL) == 1);
    CHECK(EVP_EncryptInit_ex(x, NULL, NULL, (const unsigned char *)key,
                             (const unsigned char *)iv) == 1);
    CHECK(EVP_EncryptUpdate(x, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) == 1);
    CHECK(EVP_EncryptUpdate(x, ct, &len, (const unsigned char *)pt, (int)strlen(pt)) == 1);
    CHECK(EVP_EncryptFinal_ex(x, ct + len, &fin) == 1);
    CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, ct + len + fin) == 1);
    EVP_CIPHER_CTX_free(x);
    b64(ct, (size_t)(len + fin + 16), out);
}

/* ------------------------------------------------------------ notifications */

struct note {
    char body[8192];
    char ts[32];
    char nonce[64];
    char serial[128];
    char sig[512];
    int omit; /* 1..4: leave out timestamp, nonce, serial or signature */
};

static const char *note_header(void *ctx, const char *name)
{
    struct note *n = ctx;

    if (strcmp(name, "wechatpay-timestamp") == 0)
        return n->omit == 1 ? NULL : n->ts;
    if (strcmp(name, "wechatpay-nonce") == 0)
        return n->omit == 2 ? NULL : n->nonce;
    if (strcmp(name, "wechatpay-serial") == 0)
        return n->omit == 3 ? NULL : n->serial;
    if (strcmp(name, "wechatpay-signature") == 0)
        return n->omit == 4 ? NULL : n->sig;
    return NULL;
}

static void note_sign(struct note *n, EVP_PKEY *k, const char *serial, long long ts)
{
    char msg[9000];

    snprintf(n->ts, sizeof(n->ts), "%lld", ts);
    snprintf(n->nonce, sizeof(n->nonce), "fdasflkja484w");
    snprintf(n->serial, sizeof(n->serial), "%s", serial);
    snprintf(msg, sizeof(msg), "%s\n%s\n%s\n", n->ts, n->nonce, n->body);
    rsa_sign(k, msg, n->sig);
}

/* A TRANSACTION.SUCCESS-style notification around plaintext pt. */
static void note_build(struct note *n, const char *event_type, const char *pt, const char *key,
                       const char *aad_sealed, const char *aad_sent)
{
    char ct[6000];

    memset(n, 0, sizeof(*n));
    gcm_seal(key, "8dG3hXyZ1k2Q", aad_sealed, pt, ct);
    snprintf(n->body, sizeof(n->body),
             "{\"id\":\"EV-2018022511223320873\",\"create_time\":\"2015-05-20T13:29:35+08:00\","
             "\"resource_type\":\"encrypt-resource\",\"event_type\":\"%s\","
             "\"summary\":\"\\u652f\\u4ed8\\u6210\\u529f\",\"resource\":{\"original_type\":"
             "\"transaction\",\"algorithm\":\"AEAD_AES_256_GCM\",\"ciphertext\":\"%s\","
             "\"associated_data\":\"%s\",\"nonce\":\"8dG3hXyZ1k2Q\"}}",
             event_type, ct, aad_sent);
}

static void tx_plain(char *out, size_t cap, const char *mchid, const char *appid, const char *state,
                     const char *total)
{
    snprintf(
        out, cap,
        "{\"mchid\":\"%s\",\"appid\":\"%s\",\"out_trade_no\":\"po_1217752501201407033233368018\","
        "\"transaction_id\":\"1217752501201407033233368018\",\"trade_type\":\"JSAPI\","
        "\"trade_state\":\"%s\",\"trade_state_desc\":\"ok\",\"bank_type\":\"CMC\","
        "\"success_time\":\"2018-06-08T10:34:56+08:00\",\"payer\":{\"openid\":\"oUpF8u\"},"
        "\"amount\":{\"total\":%s,\"payer_total\":%s,\"currency\":\"CNY\","
        "\"payer_currency\":\"CNY\"}}",
        mchid, appid, state, total, total);
}

static void *load_conf(const char *json, struct errbuf *e)
{
    return wechatpay_channel_ops.config_load(json, "channels.wx", keydir, e);
}

/* verify, then parse; returns the first failure and its message in e. */
static int check_note(void *conf, struct note *n, int64_t now, struct pay_event *ev,
                      struct errbuf *e)
{
    struct channel_request req = {n->body, strlen(n->body), note_header, n};

    errbuf_clear(e);
    if (wechatpay_channel_ops.verify(conf, &req, now, e) != 0)
        return -1;
    return wechatpay_channel_ops.parse(conf, n->body, strlen(n->body), ev, e);
}

#define CHECK_REJECTED(conf, n, now, needle)                                                    \
    do {                                                                                        \
        struct pay_event ev_;                                                                   \
        struct errbuf e_ = {0};                                                                 \
        CHECK_INT_EQ(check_note((conf), (n), (now), &ev_, &e_), -1);                            \
        if (strstr(e_.msg, (needle)) == NULL) {                                                 \
            fprintf(stderr, "%s:%d: message \"%s\" lacks \"%s\"\n", __FILE__, __LINE__, e_.msg, \
                    (needle));                                                                  \
            exit(1);                                                                            \
        }                                                                                       \
        CHECK_INT_EQ(e_.kind, ERRBUF_PERMANENT);                                                \
    } while (0)

static void test_notification(void *conf, EVP_PKEY *p1, EVP_PKEY *p2, EVP_PKEY *other)
{
    struct note n;
    struct pay_event ev;
    struct errbuf e = {0};
    char pt[2048];

    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "1250");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.event_id, "EV-2018022511223320873");
    CHECK_STR_EQ(ev.event_type, "wechatpay.transaction.success");
    CHECK_STR_EQ(ev.order_id, "po_1217752501201407033233368018");
    CHECK_STR_EQ(ev.txn_id, "1217752501201407033233368018");
    CHECK_INT_EQ(ev.amount, 1250);
    CHECK_STR_EQ(ev.currency, "CNY");
    /* the window is +-300 s inclusive */
    CHECK_INT_EQ(check_note(conf, &n, NOW + 300, &ev, &e), 0);
    CHECK_INT_EQ(check_note(conf, &n, NOW - 300, &ev, &e), 0);
    CHECK_REJECTED(conf, &n, NOW + 301, "tolerance");
    CHECK_REJECTED(conf, &n, NOW - 301, "tolerance");

    /* rotation: the second platform key (a bare public key) verifies under its serial */
    note_sign(&n, p2, SERIAL2, NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    CHECK_INT_EQ(ev.amount, 1250);
    /* serials are hex: case does not matter */
    note_sign(&n, p1, "5157f09efdc096de15ebe81a47057a7232f1b8e1", NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    /* ...but each key only under its own serial */
    note_sign(&n, p1, SERIAL2, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not match");
    note_sign(&n, p1, "7E5A7C46D1D6D9FE5B1F3C0C8A5E8F9B1C2D3E4F", NOW);
    CHECK_REJECTED(conf, &n, NOW, "unknown Wechatpay-Serial");
    /* signed by a key nobody trusts */
    note_sign(&n, other, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not match");

    /* tampered body after signing */
    note_sign(&n, p1, SERIAL1, NOW);
    n.body[strlen(n.body) - 3] ^= 1;
    CHECK_REJECTED(conf, &n, NOW, "does not match");
    /* tampered timestamp or nonce */
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    snprintf(n.ts, sizeof(n.ts), "%d", NOW + 1);
    CHECK_REJECTED(conf, &n, NOW, "does not match");
    note_sign(&n, p1, SERIAL1, NOW);
    n.nonce[0] ^= 1;
    CHECK_REJECTED(conf, &n, NOW, "does not match");
    /* malformed timestamp and signature */
    note_sign(&n, p1, SERIAL1, NOW);
    snprintf(n.ts, sizeof(n.ts), "17e8");
    CHECK_REJECTED(conf, &n, NOW, "Wechatpay-Timestamp");
    note_sign(&n, p1, SERIAL1, NOW);
    snprintf(n.sig, sizeof(n.sig), "not base64!");
    CHECK_REJECTED(conf, &n, NOW, "not base64");

    /* WeChat Pay's signature probe: refused, whatever else the request holds */
    note_sign(&n, p1, SERIAL1, NOW);
    snprintf(n.sig, sizeof(n.sig), "WECHATPAY/SIGNTEST/%s", "abcdef==");
    CHECK_REJECTED(conf, &n, NOW, "probe");

    /* each missing header is named */
    note_sign(&n, p1, SERIAL1, NOW);
    n.omit = 1;
    CHECK_REJECTED(conf, &n, NOW, "missing Wechatpay-Timestamp");
    n.omit = 2;
    CHECK_REJECTED(conf, &n, NOW, "missing Wechatpay-Nonce");
    n.omit = 3;
    CHECK_REJECTED(conf, &n, NOW, "missing Wechatpay-Serial");
    n.omit = 4;
    CHECK_REJECTED(conf, &n, NOW, "missing Wechatpay-Signature");
}

/* Validly signed bodies whose resource is wrong: parse() must catch them. */
static void test_resource(void *conf, EVP_PKEY *p1)
{
    struct note n;
    char pt[2048], *p;

    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "1250");
    /* a flipped ciphertext byte */
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    p = strstr(n.body, "\"ciphertext\":\"") + 14;
    p[5] = p[5] == 'A' ? 'B' : 'A';
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not decrypt");
    /* a flipped tag byte: the tag is the last 16 bytes, so the last full base64 quad */
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    p = strstr(n.body, "\",\"associated_data\"") - 5;
    *p = *p == 'A' ? 'B' : 'A';
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not decrypt");
    /* associated_data other than the sealed one */
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transactioN");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not decrypt");
    /* sealed under another APIv3 key */
    note_build(&n, "TRANSACTION.SUCCESS", pt, "0123456789abcdef0123456789abcdef", "transaction",
               "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "does not decrypt");
    /* truncated ciphertext (shorter than a tag) */
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    p = strstr(n.body, "\"ciphertext\":\"") + 14;
    memmove(p, "AAAA", 4);
    memmove(p + 4, strstr(p, "\""), strlen(strstr(p, "\"")) + 1);
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "ciphertext");
    /* another merchant's or another app's payment */
    tx_plain(pt, sizeof(pt), "1900000110", APPID, "SUCCESS", "1250");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "mchid");
    tx_plain(pt, sizeof(pt), MCHID, "wx0000000000000000", "SUCCESS", "1250");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "appid");
    /* amounts are integer fen: 12.5 or 1250.0 would be truncated by json-c */
    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "1250.0");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "amount.total is not a non-negative integer");
    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "\"1250\"");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "amount.total");
    /* beyond int64: json-c saturates it to INT64_MAX */
    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "99999999999999999999");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "amount.total");
    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "-1");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "amount.total");
    /* a paid transaction without its transaction_id */
    snprintf(pt, sizeof(pt),
             "{\"mchid\":\"" MCHID "\",\"appid\":\"" APPID "\",\"out_trade_no\":\"po_1\","
             "\"trade_state\":\"SUCCESS\",\"amount\":{\"total\":1,\"currency\":\"CNY\"}}");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "missing transaction_id");
    /* decrypted bytes that are not JSON */
    note_build(&n, "TRANSACTION.SUCCESS", "{\"mchid\":", APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "not one JSON object");
    /* a body that is not JSON, or JSON followed by more */
    memset(&n, 0, sizeof(n));
    snprintf(n.body, sizeof(n.body), "{\"id\":\"EV-1\",\"event_type\":");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "not one JSON object");
    snprintf(n.body, sizeof(n.body), "{\"id\":\"EV-1\"}{}");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "not one JSON object");
    snprintf(n.body, sizeof(n.body), "{\"id\":\"EV-1\",\"event_type\":\"TRANSACTION.SUCCESS\"}");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "missing resource");
    snprintf(
        n.body, sizeof(n.body),
        "{\"id\":\"EV-1\",\"event_type\":\"TRANSACTION.SUCCESS\",\"resource\":"
        "{\"algorithm\":\"AEAD_AES_128_GCM\",\"ciphertext\":\"AAAA\",\"nonce\":\"123456789012\"}}");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "algorithm");
    snprintf(n.body, sizeof(n.body),
             "{\"id\":\"EV-1\",\"event_type\":\"TRANSACTION.SUCCESS\",\"resource\":"
             "{\"algorithm\":\"AEAD_AES_256_GCM\",\"ciphertext\":\"AAAA\",\"nonce\":\"short\"}}");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_REJECTED(conf, &n, NOW, "nonce");
}

static void test_states(void *conf, EVP_PKEY *p1)
{
    static const struct {
        const char *state;
        enum pay_event_kind kind;
    } cases[] = {
        {"SUCCESS", PAY_EVENT_SUCCEEDED},     {"NOTPAY", PAY_EVENT_PROCESSING},
        {"USERPAYING", PAY_EVENT_PROCESSING}, {"CLOSED", PAY_EVENT_CANCELED},
        {"REVOKED", PAY_EVENT_CANCELED},      {"PAYERROR", PAY_EVENT_FAILED},
        {"REFUND", PAY_EVENT_OTHER},          {"SOMETHING_NEW", PAY_EVENT_OTHER},
    };
    struct note n;
    struct pay_event ev;
    struct errbuf e = {0};
    char pt[2048];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        tx_plain(pt, sizeof(pt), MCHID, APPID, cases[i].state, "99");
        note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
        note_sign(&n, p1, SERIAL1, NOW);
        CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
        CHECK_INT_EQ(ev.kind, cases[i].kind);
        CHECK_INT_EQ(ev.amount, 99);
    }
    /* not yet paid: no transaction_id or amount needed */
    snprintf(pt, sizeof(pt),
             "{\"mchid\":\"" MCHID "\",\"appid\":\"" APPID "\",\"out_trade_no\":\"po_2\","
             "\"trade_state\":\"NOTPAY\"}");
    note_build(&n, "TRANSACTION.NOTPAY", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_PROCESSING);
    CHECK_INT_EQ(ev.amount, -1);
    CHECK_STR_EQ(ev.txn_id, "");
    CHECK_STR_EQ(ev.event_type, "wechatpay.transaction.notpay");
    /* a refund notification: no appid, no trade_state; recorded as OTHER */
    snprintf(pt, sizeof(pt),
             "{\"mchid\":\"" MCHID "\",\"out_trade_no\":\"po_3\",\"transaction_id\":\"42000\","
             "\"out_refund_no\":\"rf_1\",\"refund_id\":\"50000\",\"refund_status\":\"SUCCESS\","
             "\"amount\":{\"total\":100,\"refund\":100,\"payer_total\":100,\"payer_refund\":100}}");
    note_build(&n, "REFUND.SUCCESS", pt, APIV3_KEY, "refund", "refund");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_OTHER);
    CHECK_STR_EQ(ev.event_type, "wechatpay.refund.success");
    CHECK_STR_EQ(ev.order_id, "po_3");
    CHECK_STR_EQ(ev.txn_id, "42000");
}

/* Two WeChat channels (two merchants) side by side: each accepts only its own. */
static void test_two_channels(void *conf, EVP_PKEY *p1)
{
    char json[2048], pt[2048];
    struct errbuf e = {0};
    struct pay_event ev;
    struct note n;
    void *other;

    snprintf(json, sizeof(json),
             "{\"type\":\"wechatpay\",\"mchid\":\"1900000110\",\"appid\":\"wx2\","
             "\"apiv3_key\":\"%s\",\"platform_certs\":[{\"serial\":\"" SERIAL1
             "\",\"file\":\"wechat_platform1_cert.pem\"}]}",
             APIV3_KEY);
    other = load_conf(json, &e);
    CHECK(other != NULL);
    tx_plain(pt, sizeof(pt), MCHID, APPID, "SUCCESS", "1");
    note_build(&n, "TRANSACTION.SUCCESS", pt, APIV3_KEY, "transaction", "transaction");
    note_sign(&n, p1, SERIAL1, NOW);
    CHECK_INT_EQ(check_note(conf, &n, NOW, &ev, &e), 0);
    CHECK_REJECTED(other, &n, NOW, "mchid");
    /* a channel without merchant key refuses API calls without touching the network */
    {
        struct refund_request rq = {"po_1", NULL, "rf_1", 1, 1, "CNY", NULL};
        struct refund_result rr;
        char err[256];

        CHECK_INT_EQ(wechatpay_channel_ops.query(other, "po_1", &ev, err, sizeof(err)),
                     CHANNEL_CALL_REJECTED);
        CHECK(strstr(err, "merchant") != NULL);
        CHECK_INT_EQ(wechatpay_channel_ops.refund(other, &rq, &rr), CHANNEL_CALL_REJECTED);
        CHECK(strstr(rr.error, "merchant") != NULL);
    }
    wechatpay_channel_ops.config_free(other);
}

/* ------------------------------------------------------------ request signing */

/* Pulls key="value" out of an Authorization header. */
static void auth_field(const char *auth, const char *key, char *out, size_t cap)
{
    char pat[64];
    const char *p, *end;

    snprintf(pat, sizeof(pat), "%s=\"", key);
    p = strstr(auth, pat);
    CHECK(p != NULL);
    p += strlen(pat);
    end = strchr(p, '"');
    CHECK(end != NULL && (size_t)(end - p) < cap);
    memcpy(out, p, (size_t)(end - p));
    out[end - p] = '\0';
}

static void test_authorization(void *conf)
{
    const char *body = "{\"out_refund_no\":\"rf_1\"}";
    char auth[1024], f[512], msg[1024];
    unsigned char sig[512];
    struct errbuf e = {0};
    EVP_PKEY *pub = load_public("wechat_merchant_pub.pem");
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    int n;

    CHECK_INT_EQ(wechatpay_authorization(conf, "POST", "/v3/refund/domestic/refunds", body,
                                         strlen(body), NOW, "593BEC0C930BF1AFEB40B4A08C8FB242",
                                         auth, sizeof(auth), &e),
                 0);
    CHECK(strncmp(auth, "WECHATPAY2-SHA256-RSA2048 mchid=\"" MCHID "\",nonce_str=\"", 48) == 0);
    auth_field(auth, "mchid", f, sizeof(f));
    CHECK_STR_EQ(f, MCHID);
    auth_field(auth, "nonce_str", f, sizeof(f));
    CHECK_STR_EQ(f, "593BEC0C930BF1AFEB40B4A08C8FB242");
    auth_field(auth, "timestamp", f, sizeof(f));
    CHECK_STR_EQ(f, "1700000000");
    auth_field(auth, "serial_no", f, sizeof(f));
    CHECK_STR_EQ(f, MERCHANT_SERIAL);
    auth_field(auth, "signature", f, sizeof(f));
    n = EVP_DecodeBlock(sig, (const unsigned char *)f, (int)strlen(f));
    CHECK_INT_EQ(n, 256 + 2); /* EVP_DecodeBlock counts the padding of a 256-byte value */
    snprintf(
        msg, sizeof(msg),
        "POST\n/v3/refund/domestic/refunds\n1700000000\n593BEC0C930BF1AFEB40B4A08C8FB242\n%s\n",
        body);
    CHECK(md != NULL);
    CHECK(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1);
    CHECK_INT_EQ(EVP_DigestVerify(md, sig, 256, (const unsigned char *)msg, strlen(msg)), 1);
    /* the same signature does not cover another path */
    snprintf(
        msg, sizeof(msg),
        "POST\n/v3/refund/domestic/refundz\n1700000000\n593BEC0C930BF1AFEB40B4A08C8FB242\n%s\n",
        body);
    CHECK(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1);
    CHECK(EVP_DigestVerify(md, sig, 256, (const unsigned char *)msg, strlen(msg)) != 1);
    /* a GET signs an empty body line */
    CHECK_INT_EQ(wechatpay_authorization(conf, "GET", "/v3/x?mchid=" MCHID, NULL, 0, NOW, "n1",
                                         auth, sizeof(auth), &e),
                 0);
    auth_field(auth, "signature", f, sizeof(f));
    EVP_DecodeBlock(sig, (const unsigned char *)f, (int)strlen(f));
    snprintf(msg, sizeof(msg), "GET\n/v3/x?mchid=" MCHID "\n1700000000\nn1\n\n");
    CHECK(EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, pub) == 1);
    CHECK_INT_EQ(EVP_DigestVerify(md, sig, 256, (const unsigned char *)msg, strlen(msg)), 1);
    EVP_MD_CTX_free(md);
    EVP_PKEY_free(pub);
}

/* ------------------------------------------------------------ config */

static void expect_conf_error(const char *json, const char *needle)
{
    struct errbuf e = {0};
    void *c = load_conf(json, &e);

    if (c != NULL) {
        fprintf(stderr, "config accepted, expected \"%s\": %s\n", needle, json);
        exit(1);
    }
    if (strstr(e.msg, needle) == NULL) {
        fprintf(stderr, "config error \"%s\" lacks \"%s\"\n", e.msg, needle);
        exit(1);
    }
}

#define BASE "\"type\":\"wechatpay\",\"mchid\":\"" MCHID "\",\"appid\":\"" APPID "\""
#define KEYF "\"apiv3_key_file\":\"wechat_apiv3_key.txt\""
#define CERT1 "{\"serial\":\"" SERIAL1 "\",\"file\":\"wechat_platform1_cert.pem\"}"

static void test_config(void)
{
    struct errbuf e = {0};
    void *c;

    expect_conf_error("{" KEYF ",\"appid\":\"x\",\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.mchid: missing");
    expect_conf_error("{\"mchid\":\"1\"," KEYF ",\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.appid: missing");
    expect_conf_error("{" BASE ",\"platform_certs\":[" CERT1 "]}", "apiv3_key");
    expect_conf_error("{" BASE ",\"apiv3_key\":\"short\",\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.apiv3_key: expected exactly 32 bytes, got 5");
    expect_conf_error("{" BASE ",\"apiv3_key_file\":\"wechat_platform1_cert.pem\","
                      "\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.apiv3_key_file: expected exactly 32 bytes");
    expect_conf_error("{" BASE ",\"apiv3_key_file\":\"nope.txt\",\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.apiv3_key_file: cannot open");
    expect_conf_error("{" BASE "," KEYF "}", "channels.wx.platform_certs: missing");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[]}",
                      "channels.wx.platform_certs: expected an array");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1
                      ",{\"serial\":\"AB\",\"file\":\"missing.pem\"}]}",
                      "channels.wx.platform_certs[1].file: cannot open");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 ",{\"serial\":\"AB\"}]}",
                      "channels.wx.platform_certs[1].file: missing");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1
                      ",{\"serial\":\"AB\",\"file\":\"wechat_apiv3_key.txt\"}]}",
                      "channels.wx.platform_certs[1].file: wechat_apiv3_key.txt is not a PEM");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "," CERT1 "]}",
                      "channels.wx.platform_certs[1].serial: same as platform_certs[0]");
    /* a certificate's own serial must be the one configured for it */
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[{\"serial\":\"ABCDEF\","
                      "\"file\":\"wechat_platform1_cert.pem\"}]}",
                      "channels.wx.platform_certs[0].serial: \"ABCDEF\" is not the serial");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "],"
                      "\"merchant_serial\":\"" MERCHANT_SERIAL "\"}",
                      "channels.wx.merchant_key_file: missing");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "],"
                      "\"merchant_key_file\":\"wechat_merchant_key.pem\"}",
                      "channels.wx.merchant_serial: missing");
    expect_conf_error(
        "{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "],"
        "\"merchant_serial\":\"X\",\"merchant_key_file\":\"wechat_merchant_pub.pem\"}",
        "channels.wx.merchant_key_file: not a PEM RSA private key");
    expect_conf_error("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "],\"api_url\":\"ftp://x\"}",
                      "channels.wx.api_url");
    expect_conf_error("{\"type\":\"wechatpay\",\"mchid\":\"19\\\"00\",\"appid\":\"a\"," KEYF
                      ",\"platform_certs\":[" CERT1 "]}",
                      "channels.wx.mchid");
    expect_conf_error("[1]", "channels.wx: expected a JSON object");
    /* the minimum: no merchant key, default api_url */
    c = load_conf("{" BASE "," KEYF ",\"platform_certs\":[" CERT1 "]}", &e);
    CHECK(c != NULL);
    wechatpay_channel_ops.config_free(c);
    wechatpay_channel_ops.config_free(NULL);
}

static void test_table(void)
{
    CHECK(channel_ops_for("wechatpay") == &wechatpay_channel_ops);
    CHECK_INT_EQ(wechatpay_channel_ops.accept.status, 204);
    CHECK_STR_EQ(wechatpay_channel_ops.accept.body, "");
    CHECK_INT_EQ(wechatpay_channel_ops.reject.status, 400);
    CHECK_STR_EQ(wechatpay_channel_ops.reject.content_type, "application/json");
    CHECK(strstr(wechatpay_channel_ops.reject.body, "\"code\":\"FAIL\"") != NULL);
    CHECK_STR_EQ(wechatpay_channel_ops.envelope_headers[0], "wechatpay-timestamp");
    CHECK_STR_EQ(wechatpay_channel_ops.envelope_headers[3], "wechatpay-signature");
    CHECK(wechatpay_channel_ops.envelope_headers[4] == NULL);
}

int main(void)
{
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR");
    struct errbuf e = {0};
    EVP_PKEY *p1, *p2, *other;
    void *conf;

    snprintf(keydir, sizeof(keydir), "%s/tests/data/keys", src ? src : ".");
    conf = load_conf(good_conf, &e);
    if (conf == NULL) {
        fprintf(stderr, "config: %s\n", e.msg);
        return 1;
    }
    p1 = load_private("wechat_platform1_key.pem");
    p2 = load_private("wechat_platform2_key.pem");
    other = load_private("wechat_other_key.pem");
    test_table();
    test_config();
    test_notification(conf, p1, p2, other);
    test_resource(conf, p1);
    test_states(conf, p1);
    test_two_channels(conf, p1);
    test_authorization(conf);
    EVP_PKEY_free(p1);
    EVP_PKEY_free(p2);
    EVP_PKEY_free(other);
    wechatpay_channel_ops.config_free(conf);
    TEST_PASS();
    return 0;
}
