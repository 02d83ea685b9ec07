/* channel/wechatpay.c: the WeChat Pay API v3 channel.
 *
 * Notifications: the platform signs "timestamp\nnonce\nbody\n" with RSA-SHA256 (PKCS#1
 * v1.5) and names its certificate in Wechatpay-Serial; the payment itself sits in
 * resource.ciphertext, AES-256-GCM under the merchant's 32-byte APIv3 key (IV = the
 * resource's 12-byte nonce, AAD = associated_data, 16-byte tag at the end). verify()
 * checks the signature and the clock; parse() decrypts, since it is handed only the body.
 *
 * API calls (query, refund): requests carry "Authorization: WECHATPAY2-SHA256-RSA2048 ..."
 * signed with the merchant key over "METHOD\npath\ntimestamp\nnonce\nbody\n"; a 2xx answer
 * is trusted only once its own Wechatpay-* signature verifies against a platform key. */
#include "channel/wechatpay.h"

#include <ctype.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/bio.h>
#include <openssl/bn.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/crypto.h"
#include "common/jsonx.h"
#include "common/money.h"
#include "common/xalloc.h"

#define DEFAULT_API_URL "https://api.mch.weixin.qq.com"
#define SIGNTEST_PREFIX "WECHATPAY/SIGNTEST/"
#define GCM_TAG_LEN 16
#define GCM_IV_LEN 12
#define CONNECT_TIMEOUT_MS 5000L
#define TOTAL_TIMEOUT_MS 15000L
#define MAX_RESPONSE (1024 * 1024)
#define MAX_SERIAL 127

struct platform_key {
    char serial[MAX_SERIAL + 1];
    EVP_PKEY *pkey; /* RSA public key, from a certificate or a bare PEM key */
};

struct wechatpay_conf {
    char *mchid;
    char *appid;
    unsigned char apiv3_key[WECHATPAY_APIV3_KEY_LEN];
    struct platform_key certs[WECHATPAY_MAX_CERTS];
    size_t n_certs;
    char *merchant_serial; /* NULL when the channel only receives notifications */
    EVP_PKEY *merchant_key;
    char *api_url;  /* without a trailing '/' */
    char *api_path; /* api_url's own path ("" or "/prefix"): part of what requests sign */
};

/* ------------------------------------------------------------------ config */

/* Secrets are wiped before their memory goes back to the allocator. */
static void free_secret(char *s)
{
    if (s != NULL) {
        OPENSSL_cleanse(s, strlen(s));
        free(s);
    }
}

static void wechatpay_config_free(void *p)
{
    struct wechatpay_conf *c = p;

    if (c == NULL)
        return;
    free(c->mchid);
    free(c->appid);
    OPENSSL_cleanse(c->apiv3_key, sizeof(c->apiv3_key));
    for (size_t i = 0; i < c->n_certs; i++)
        EVP_PKEY_free(c->certs[i].pkey);
    free(c->merchant_serial);
    EVP_PKEY_free(c->merchant_key);
    free(c->api_url);
    free(c->api_path);
    free(c);
}

/* Values that go into URLs and quoted Authorization fields: letters, digits, '_' and '-'. */
static int is_token(const char *s, size_t max)
{
    size_t n = strlen(s);

    if (n == 0 || n > max)
        return 0;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-')
            return 0;
    return 1;
}

static int rsa_key_ok(EVP_PKEY *k)
{
    return EVP_PKEY_is_a(k, "RSA") && EVP_PKEY_get_bits(k) >= 2048;
}

/* Upper-case hex serial without leading zeros, as WeChat Pay writes it. */
static void cert_serial_hex(X509 *x, char *out, size_t cap)
{
    BIGNUM *bn = ASN1_INTEGER_to_BN(X509_get0_serialNumber(x), NULL);
    char *hex = bn ? BN_bn2hex(bn) : NULL;

    snprintf(out, cap, "%s", hex ? hex : "?");
    OPENSSL_free(hex);
    BN_free(bn);
}

static const char *skip_zeros(const char *s)
{
    while (*s == '0' && s[1] != '\0')
        s++;
    return s;
}

/* Loads one platform_certs[i] entry: an X.509 certificate (whose serial must match the
 * configured one) or a bare public key. */
static int load_platform_key(json_object *item, const char *where, size_t i, const char *base_dir,
                             struct platform_key *pk, struct errbuf *e)
{
    char at[200], path[4096];
    char *serial = NULL, *file = NULL, *pem = NULL;
    struct errbuf sub = {0};
    BIO *bio = NULL;
    X509 *x = NULL;
    int rc = -1;

    snprintf(at, sizeof(at), "%s.platform_certs[%zu]", where, i);
    if (!json_object_is_type(item, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected {\"serial\": ..., \"file\": ...}", at);
        return -1;
    }
    if (jsonx_get_string(item, "serial", at, 1, &serial, e) != 0 ||
        jsonx_get_string(item, "file", at, 1, &file, e) != 0)
        goto out;
    if (strlen(serial) > MAX_SERIAL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.serial: longer than %d bytes", at, MAX_SERIAL);
        goto out;
    }
    snprintf(pk->serial, sizeof(pk->serial), "%s", serial);
    if (file[0] == '/')
        snprintf(path, sizeof(path), "%s", file);
    else
        snprintf(path, sizeof(path), "%s/%s", base_dir, file);
    if ((pem = jsonx_read_file(path, 65536, &sub)) == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.file: %s", at, sub.msg);
        goto out;
    }
    if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
        abort();
    if ((x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        char hex[MAX_SERIAL + 1];

        cert_serial_hex(x, hex, sizeof(hex));
        if (strcasecmp(skip_zeros(hex), skip_zeros(serial)) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT,
                       "%s.serial: \"%.64s\" is not the serial of %s (which is %.64s)", at, serial,
                       file, hex);
            goto out;
        }
        pk->pkey = X509_get_pubkey(x);
    } else {
        ERR_clear_error();
        BIO_free(bio);
        if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
            abort();
        pk->pkey = PEM_read_bio_PUBKEY(bio, NULL, NULL, NULL);
    }
    if (pk->pkey == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.file: %s is not a PEM certificate or public key", at,
                   file);
        goto out;
    }
    if (!rsa_key_ok(pk->pkey)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.file: %s is not an RSA key of at least 2048 bits", at,
                   file);
        goto out;
    }
    rc = 0;
out:
    /* The PEM parsers leave errors on this thread's queue; nobody else should see them. */
    ERR_clear_error();
    X509_free(x);
    BIO_free(bio);
    free(pem);
    free(file);
    free(serial);
    return rc;
}

static int load_platform_keys(json_object *o, const char *where, const char *base_dir,
                              struct wechatpay_conf *c, struct errbuf *e)
{
    json_object *arr;
    size_t n;

    if (!json_object_object_get_ex(o, "platform_certs", &arr)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.platform_certs: missing", where);
        return -1;
    }
    if (!json_object_is_type(arr, json_type_array) || json_object_array_length(arr) == 0 ||
        json_object_array_length(arr) > WECHATPAY_MAX_CERTS) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.platform_certs: expected an array of 1..%d entries",
                   where, WECHATPAY_MAX_CERTS);
        return -1;
    }
    n = json_object_array_length(arr);
    for (size_t i = 0; i < n; i++) {
        struct platform_key *pk = &c->certs[c->n_certs];

        if (load_platform_key(json_object_array_get_idx(arr, i), where, i, base_dir, pk, e) != 0) {
            EVP_PKEY_free(pk->pkey);
            pk->pkey = NULL;
            return -1;
        }
        c->n_certs++;
        for (size_t j = 0; j < i; j++) {
            if (strcasecmp(c->certs[j].serial, pk->serial) == 0) {
                errbuf_set(e, ERRBUF_PERMANENT,
                           "%s.platform_certs[%zu].serial: same as platform_certs[%zu]", where, i,
                           j);
                return -1;
            }
        }
    }
    return 0;
}

static int load_apiv3_key(json_object *o, const char *where, const char *base_dir,
                          struct wechatpay_conf *c, struct errbuf *e)
{
    char *key = NULL;
    size_t n;
    const char *name =
        json_object_object_get_ex(o, "apiv3_key_file", NULL) ? "apiv3_key_file" : "apiv3_key";

    if (jsonx_get_secret(o, "apiv3_key", where, base_dir, 1, &key, e) != 0) {
        free_secret(key);
        return -1;
    }
    n = strlen(key);
    if (n != WECHATPAY_APIV3_KEY_LEN) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: expected exactly %d bytes, got %zu", where, name,
                   WECHATPAY_APIV3_KEY_LEN, n);
        free_secret(key);
        return -1;
    }
    memcpy(c->apiv3_key, key, WECHATPAY_APIV3_KEY_LEN);
    free_secret(key);
    return 0;
}

static int load_merchant(json_object *o, const char *where, const char *base_dir,
                         struct wechatpay_conf *c, struct errbuf *e)
{
    char *pem = NULL;
    BIO *bio = NULL;
    int rc = -1;

    if (jsonx_get_string(o, "merchant_serial", where, 0, &c->merchant_serial, e) != 0 ||
        jsonx_get_secret(o, "merchant_key", where, base_dir, 0, &pem, e) != 0)
        goto out;
    if (c->merchant_serial == NULL && pem == NULL) {
        rc = 0; /* notifications only: query and refund will say so */
        goto out;
    }
    if (c->merchant_serial == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.merchant_serial: missing (merchant_key_file is set)",
                   where);
        goto out;
    }
    if (pem == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.merchant_key_file: missing (merchant_serial is set)",
                   where);
        goto out;
    }
    if (!is_token(c->merchant_serial, MAX_SERIAL)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.merchant_serial: expected letters and digits", where);
        goto out;
    }
    if ((bio = BIO_new_mem_buf(pem, -1)) == NULL)
        abort();
    c->merchant_key = PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL);
    ERR_clear_error();
    if (c->merchant_key == NULL || !rsa_key_ok(c->merchant_key)) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "%s.merchant_key_file: not a PEM RSA private key of at least 2048 bits", where);
        goto out;
    }
    rc = 0;
out:
    BIO_free(bio);
    free_secret(pem);
    return rc;
}

static void *wechatpay_config_load(const char *json, const char *where, const char *base_dir,
                                   struct errbuf *e)
{
    struct wechatpay_conf *c = calloc(1, sizeof(*c));
    json_object *o = json_tokener_parse(json);
    const char *p;
    size_t n;

    if (c == NULL)
        abort();
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected a JSON object", where);
        goto fail;
    }
    if (jsonx_get_string(o, "mchid", where, 1, &c->mchid, e) != 0 ||
        jsonx_get_string(o, "appid", where, 1, &c->appid, e) != 0)
        goto fail;
    if (!is_token(c->mchid, 32)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.mchid: expected up to 32 letters and digits", where);
        goto fail;
    }
    if (!is_token(c->appid, 64)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.appid: expected up to 64 letters and digits", where);
        goto fail;
    }
    if (load_apiv3_key(o, where, base_dir, c, e) != 0 ||
        load_platform_keys(o, where, base_dir, c, e) != 0 ||
        load_merchant(o, where, base_dir, c, e) != 0 ||
        jsonx_get_string(o, "api_url", where, 0, &c->api_url, e) != 0)
        goto fail;
    if (c->api_url == NULL)
        c->api_url = xstrdup(DEFAULT_API_URL);
    if (jsonx_check_http_url(c->api_url, where, "api_url", e) != 0)
        goto fail;
    if (strpbrk(c->api_url, "?# \r\n") != NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.api_url: expected no query, fragment or spaces", where);
        goto fail;
    }
    n = strlen(c->api_url);
    while (n > 0 && c->api_url[n - 1] == '/')
        c->api_url[--n] = '\0';
    p = strstr(c->api_url, "://") + 3;
    p = strchr(p, '/');
    c->api_path = xstrdup(p ? p : "");
    json_object_put(o);
    return c;
fail:
    json_object_put(o);
    wechatpay_config_free(c);
    return NULL;
}

/* ------------------------------------------------------------ signatures */

static const struct platform_key *find_platform_key(const struct wechatpay_conf *c,
                                                    const char *serial)
{
    for (size_t i = 0; i < c->n_certs; i++)
        if (strcasecmp(c->certs[i].serial, serial) == 0)
            return &c->certs[i];
    return NULL;
}

/* "a\nb\n...": every part followed by '\n'. Caller frees. */
static char *join_lines(const char *const *parts, const size_t *lens, size_t n, size_t *out_len)
{
    size_t total = 0, off = 0;
    char *msg;

    for (size_t i = 0; i < n; i++)
        total += lens[i] + 1;
    if ((msg = malloc(total + 1)) == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (lens[i] > 0)
            memcpy(msg + off, parts[i], lens[i]);
        off += lens[i];
        msg[off++] = '\n';
    }
    msg[off] = '\0';
    *out_len = total;
    return msg;
}

int wechatpay_verify_signature(const struct wechatpay_conf *c, const char *timestamp,
                               const char *nonce, const char *serial, const char *signature,
                               const char *body, size_t body_len, int64_t now, struct errbuf *e)
{
    const struct platform_key *pk;
    unsigned char *sig = NULL;
    size_t sig_len = 0, msg_len = 0, ts_len;
    char *msg = NULL;
    EVP_MD_CTX *md = NULL;
    int64_t ts = 0;
    int rc = -1;

    if (timestamp == NULL || nonce == NULL || serial == NULL || signature == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "missing %s header",
                   timestamp == NULL ? "Wechatpay-Timestamp"
                   : nonce == NULL   ? "Wechatpay-Nonce"
                   : serial == NULL  ? "Wechatpay-Serial"
                                     : "Wechatpay-Signature");
        return -1;
    }
    ts_len = strlen(timestamp);
    if (ts_len == 0 || ts_len > 12 || strspn(timestamp, "0123456789") != ts_len) {
        errbuf_set(e, ERRBUF_PERMANENT, "Wechatpay-Timestamp is not a unix time");
        return -1;
    }
    for (size_t i = 0; i < ts_len; i++)
        ts = ts * 10 + (timestamp[i] - '0');
    if (nonce[0] == '\0' || strlen(nonce) > 128 || strpbrk(nonce, "\n") != NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "Wechatpay-Nonce is empty, too long or multi-line");
        return -1;
    }
    if ((pk = find_platform_key(c, serial)) == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "unknown Wechatpay-Serial \"%.64s\"", serial);
        return -1;
    }
    if (strlen(signature) > 2048 ||
        crypto_b64_decode(signature, strlen(signature), &sig, &sig_len) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "Wechatpay-Signature is not base64");
        return -1;
    }
    {
        const char *parts[3] = {timestamp, nonce, body != NULL ? body : ""};
        size_t lens[3] = {ts_len, strlen(nonce), body != NULL ? body_len : 0};
        msg = join_lines(parts, lens, 3, &msg_len);
    }
    if ((md = EVP_MD_CTX_new()) == NULL)
        abort();
    /* RSA keys default to PKCS#1 v1.5 padding, which is what WeChat Pay uses. */
    if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pk->pkey, NULL) != 1 ||
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)msg, msg_len) != 1) {
        errbuf_set(e, ERRBUF_PERMANENT, "WeChat Pay signature does not match (serial %.64s)",
                   serial);
        goto out;
    }
    if (ts > now + WECHATPAY_TOLERANCE_S || ts < now - WECHATPAY_TOLERANCE_S) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "Wechatpay-Timestamp %lld is outside the %ds tolerance around %lld",
                   (long long)ts, WECHATPAY_TOLERANCE_S, (long long)now);
        goto out;
    }
    rc = 0;
out:
    /* A failed verify leaves an entry on this thread's OpenSSL error queue. */
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(msg);
    free(sig);
    return rc;
}

int wechatpay_authorization(const struct wechatpay_conf *c, const char *method,
                            const char *path_with_query, const char *body, size_t body_len,
                            int64_t timestamp, const char *nonce, char *out, size_t out_len,
                            struct errbuf *e)
{
    char ts[24];
    char *msg = NULL, *b64 = NULL;
    unsigned char sig[1024];
    size_t sig_len = sizeof(sig), msg_len = 0;
    EVP_MD_CTX *md = NULL;
    int rc = -1;

    if (c->merchant_key == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "no merchant_serial/merchant_key_file configured");
        return -1;
    }
    snprintf(ts, sizeof(ts), "%lld", (long long)timestamp);
    {
        const char *parts[5] = {method, path_with_query, ts, nonce, body != NULL ? body : ""};
        size_t lens[5] = {strlen(method), strlen(path_with_query), strlen(ts), strlen(nonce),
                          body != NULL ? body_len : 0};
        msg = join_lines(parts, lens, 5, &msg_len);
    }
    if ((md = EVP_MD_CTX_new()) == NULL)
        abort();
    if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, c->merchant_key, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)msg, msg_len) != 1 ||
        sig_len > sizeof(sig) ||
        EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)msg, msg_len) != 1) {
        errbuf_set(e, ERRBUF_PERMANENT, "signing the request with the merchant key failed");
        ERR_clear_error();
        goto out;
    }
    if ((b64 = malloc(crypto_b64_len(sig_len) + 1)) == NULL)
        abort();
    crypto_b64_encode(sig, sig_len, b64);
    if ((size_t)snprintf(out, out_len,
                         "WECHATPAY2-SHA256-RSA2048 mchid=\"%s\",nonce_str=\"%s\",signature=\"%s\","
                         "timestamp=\"%s\",serial_no=\"%s\"",
                         c->mchid, nonce, b64, ts, c->merchant_serial) >= out_len) {
        errbuf_set(e, ERRBUF_PERMANENT, "Authorization header does not fit");
        goto out;
    }
    rc = 0;
out:
    EVP_MD_CTX_free(md);
    free(msg);
    free(b64);
    return rc;
}

/* ------------------------------------------------------------ notifications */

static int wechatpay_verify(const void *conf, const struct channel_request *req, int64_t now,
                            struct errbuf *e)
{
    const char *sig = req->header(req->ctx, "wechatpay-signature");

    /* WeChat Pay probes merchants with deliberately wrong signatures: answering those with
     * success would show we do not check. */
    if (sig != NULL && strncmp(sig, SIGNTEST_PREFIX, strlen(SIGNTEST_PREFIX)) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "WeChat Pay signature probe (WECHATPAY/SIGNTEST)");
        return -1;
    }
    return wechatpay_verify_signature(conf, req->header(req->ctx, "wechatpay-timestamp"),
                                      req->header(req->ctx, "wechatpay-nonce"),
                                      req->header(req->ctx, "wechatpay-serial"), sig, req->body,
                                      req->body_len, now, e);
}

/* The string member key of obj, or NULL when absent, null or not a string. */
static const char *get_str(json_object *obj, const char *key)
{
    json_object *v;

    if (!json_object_object_get_ex(obj, key, &v) || !json_object_is_type(v, json_type_string))
        return NULL;
    return json_object_get_string(v);
}

static int copy_field(json_object *obj, const char *what, const char *key, char *dst, size_t cap,
                      int required, struct errbuf *e)
{
    json_object *v;

    dst[0] = '\0';
    if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null)) {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "%s: missing %s", what, key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
        (size_t)json_object_get_string_len(v) >= cap) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s is not a string of 1..%zu bytes", what, key,
                   cap - 1);
        return -1;
    }
    memcpy(dst, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
    return 0;
}

/* One JSON object, and nothing after it. NULL + *e otherwise; caller puts. */
static json_object *parse_object(const char *what, const char *s, size_t len, struct errbuf *e)
{
    json_tokener *tok = json_tokener_new();
    json_object *o;

    if (tok == NULL)
        abort();
    if (len > 1024 * 1024) {
        json_tokener_free(tok);
        errbuf_set(e, ERRBUF_PERMANENT, "%s: larger than 1 MiB", what);
        return NULL;
    }
    o = json_tokener_parse_ex(tok, s, (int)len);
    if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        (size_t)json_tokener_get_parse_end(tok) != len ||
        !json_object_is_type(o, json_type_object)) {
        json_object_put(o);
        json_tokener_free(tok);
        errbuf_set(e, ERRBUF_PERMANENT, "%s: not one JSON object", what);
        return NULL;
    }
    json_tokener_free(tok);
    return o;
}

static const struct {
    const char *state;
    enum pay_event_kind kind;
} trade_states[] = {
    {"SUCCESS", PAY_EVENT_SUCCEEDED},     {"NOTPAY", PAY_EVENT_PROCESSING},
    {"USERPAYING", PAY_EVENT_PROCESSING}, {"CLOSED", PAY_EVENT_CANCELED},
    {"REVOKED", PAY_EVENT_CANCELED},      {"PAYERROR", PAY_EVENT_FAILED},
    {"REFUND", PAY_EVENT_OTHER},
};

static int check_ids(const struct wechatpay_conf *c, json_object *tx, const char *what,
                     int need_appid, struct errbuf *e)
{
    const char *mchid = get_str(tx, "mchid"), *appid = get_str(tx, "appid");

    if (mchid == NULL || strcmp(mchid, c->mchid) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: mchid \"%.32s\" is not this channel's", what,
                   mchid ? mchid : "(missing)");
        return -1;
    }
    if (need_appid && (appid == NULL || strcmp(appid, c->appid) != 0)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: appid \"%.64s\" is not this channel's", what,
                   appid ? appid : "(missing)");
        return -1;
    }
    return 0;
}

/* amount.total (integer fen) and amount.currency; required for a paid transaction. */
static int parse_amount(json_object *tx, const char *what, int required, struct pay_event *ev,
                        struct errbuf *e)
{
    json_object *amount, *total;
    const char *cur;

    if (!json_object_object_get_ex(tx, "amount", &amount) ||
        json_object_is_type(amount, json_type_null)) {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "%s: missing amount", what);
        return -1;
    }
    if (!json_object_is_type(amount, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: amount is not an object", what);
        return -1;
    }
    if (json_object_object_get_ex(amount, "total", &total)) {
        /* json-c would silently truncate a double: insist on an integer. It also saturates
         * an integer beyond int64 to INT64_MAX, which is never a real amount. */
        if (!json_object_is_type(total, json_type_int) || json_object_get_int64(total) < 0 ||
            json_object_get_int64(total) == INT64_MAX) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: amount.total is not a non-negative integer", what);
            return -1;
        }
        ev->amount = json_object_get_int64(total);
    } else if (required) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: missing amount.total", what);
        return -1;
    }
    cur = get_str(amount, "currency");
    if (cur != NULL) {
        if (money_currency_norm(cur, ev->currency) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: amount.currency is not an ISO 4217 code", what);
            return -1;
        }
    } else if (required) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: missing amount.currency", what);
        return -1;
    }
    return 0;
}

/* A transaction object (decrypted notification resource or query answer) into ev's kind,
 * order, transaction and amount. state receives trade_state. */
static int parse_transaction(const struct wechatpay_conf *c, json_object *tx, const char *what,
                             struct pay_event *ev, char *state, size_t state_cap, struct errbuf *e)
{
    int paid;

    if (check_ids(c, tx, what, 1, e) != 0 ||
        copy_field(tx, what, "out_trade_no", ev->order_id, sizeof(ev->order_id), 1, e) != 0 ||
        copy_field(tx, what, "trade_state", state, state_cap, 1, e) != 0)
        return -1;
    ev->kind = PAY_EVENT_OTHER;
    for (size_t i = 0; i < sizeof(trade_states) / sizeof(trade_states[0]); i++)
        if (strcmp(state, trade_states[i].state) == 0)
            ev->kind = trade_states[i].kind;
    /* Money moved: the transaction and the amount must be there. */
    paid = strcmp(state, "SUCCESS") == 0 || strcmp(state, "REFUND") == 0;
    if (copy_field(tx, what, "transaction_id", ev->txn_id, sizeof(ev->txn_id), paid, e) != 0 ||
        parse_amount(tx, what, paid, ev, e) != 0)
        return -1;
    return 0;
}

/* Refund notifications (REFUND.*) carry mchid but no appid and no trade_state: recorded,
 * not acted on. */
static int parse_refund_notice(const struct wechatpay_conf *c, json_object *rf,
                               struct pay_event *ev, struct errbuf *e)
{
    const char *what = "WeChat Pay refund notification";

    ev->kind = PAY_EVENT_OTHER;
    if (check_ids(c, rf, what, 0, e) != 0 ||
        copy_field(rf, what, "out_trade_no", ev->order_id, sizeof(ev->order_id), 1, e) != 0 ||
        copy_field(rf, what, "transaction_id", ev->txn_id, sizeof(ev->txn_id), 0, e) != 0)
        return -1;
    return 0;
}

/* AES-256-GCM open of ct (tag in its last 16 bytes). Caller frees *out (NUL-terminated). */
static int gcm_open(const unsigned char *key, const char *iv, const char *aad, size_t aad_len,
                    const unsigned char *ct, size_t ct_len, unsigned char **out, size_t *out_len)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    unsigned char *pt;
    size_t n = ct_len - GCM_TAG_LEN;
    int len = 0, fin = 0, rc = -1;

    if (x == NULL || (pt = malloc(n + 1)) == NULL)
        abort();
    if (EVP_DecryptInit_ex2(x, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, GCM_IV_LEN, NULL) != 1 ||
        EVP_DecryptInit_ex2(x, NULL, key, (const unsigned char *)iv, NULL) != 1 ||
        (aad_len > 0 &&
         EVP_DecryptUpdate(x, NULL, &len, (const unsigned char *)aad, (int)aad_len) != 1) ||
        EVP_DecryptUpdate(x, pt, &len, ct, (int)n) != 1 ||
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_TAG, GCM_TAG_LEN, (void *)(ct + n)) != 1 ||
        EVP_DecryptFinal_ex(x, pt + len, &fin) != 1)
        goto out;
    pt[len + fin] = '\0';
    *out = pt;
    *out_len = (size_t)(len + fin);
    pt = NULL;
    rc = 0;
out:
    ERR_clear_error();
    if (pt != NULL) {
        /* Unauthenticated plaintext must not leak into anything. */
        OPENSSL_cleanse(pt, n + 1);
        free(pt);
    }
    EVP_CIPHER_CTX_free(x);
    return rc;
}

static int wechatpay_parse(const void *conf, const char *body, size_t len, struct pay_event *ev,
                           struct errbuf *e)
{
    const struct wechatpay_conf *c = conf;
    const char *what = "WeChat Pay notification";
    json_object *root = NULL, *res, *tx = NULL;
    const char *alg, *ct64, *iv, *aad, *rtype;
    unsigned char *ct = NULL, *pt = NULL;
    size_t ct_len = 0, pt_len = 0;
    char etype[64], state[32];
    int rc = -1;

    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    ev->kind = PAY_EVENT_OTHER;
    if ((root = parse_object(what, body, len, e)) == NULL)
        goto out;
    if (copy_field(root, what, "id", ev->event_id, sizeof(ev->event_id), 1, e) != 0 ||
        copy_field(root, what, "event_type", etype, sizeof(etype) - strlen("wechatpay."), 1, e) !=
            0)
        goto out;
    snprintf(ev->event_type, sizeof(ev->event_type), "wechatpay.%.53s", etype);
    for (char *p = ev->event_type; *p; p++)
        *p = (char)tolower((unsigned char)*p);
    rtype = get_str(root, "resource_type");
    if (rtype != NULL && strcmp(rtype, "encrypt-resource") != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: resource_type \"%.32s\" is not encrypt-resource", what,
                   rtype);
        goto out;
    }
    if (!json_object_object_get_ex(root, "resource", &res) ||
        !json_object_is_type(res, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: missing resource", what);
        goto out;
    }
    alg = get_str(res, "algorithm");
    ct64 = get_str(res, "ciphertext");
    iv = get_str(res, "nonce");
    aad = get_str(res, "associated_data");
    if (alg == NULL || strcmp(alg, "AEAD_AES_256_GCM") != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: resource.algorithm is not AEAD_AES_256_GCM", what);
        goto out;
    }
    if (iv == NULL || strlen(iv) != GCM_IV_LEN) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: resource.nonce is not %d bytes", what, GCM_IV_LEN);
        goto out;
    }
    if (ct64 == NULL || crypto_b64_decode(ct64, strlen(ct64), &ct, &ct_len) != 0 ||
        ct_len <= GCM_TAG_LEN) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: resource.ciphertext is not base64 of data + tag",
                   what);
        goto out;
    }
    if (gcm_open(c->apiv3_key, iv, aad ? aad : "", aad ? strlen(aad) : 0, ct, ct_len, &pt,
                 &pt_len) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "%s: resource does not decrypt (tag mismatch: wrong APIv3 key, nonce, "
                   "associated_data or ciphertext)",
                   what);
        goto out;
    }
    if ((tx = parse_object("WeChat Pay resource", (const char *)pt, pt_len, e)) == NULL)
        goto out;
    if (strncmp(etype, "REFUND.", 7) == 0)
        rc = parse_refund_notice(c, tx, ev, e);
    else
        rc = parse_transaction(c, tx, "WeChat Pay resource", ev, state, sizeof(state), e);
out:
    json_object_put(tx);
    json_object_put(root);
    if (pt != NULL) {
        OPENSSL_cleanse(pt, pt_len);
        free(pt);
    }
    free(ct);
    return rc;
}

/* ------------------------------------------------------------ API client */

struct api_response {
    long status;
    char *body;
    size_t len;
    int too_big;
    char timestamp[32];
    char nonce[160];
    char serial[160];
    char signature[2100];
    char request_id[128];
};

static size_t on_body(char *p, size_t size, size_t n, void *ud)
{
    struct api_response *r = ud;
    size_t add = size * n;
    char *grown;

    if (r->len + add > MAX_RESPONSE) {
        r->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if ((grown = realloc(r->body, r->len + add + 1)) == NULL)
        abort();
    r->body = grown;
    memcpy(r->body + r->len, p, add);
    r->len += add;
    r->body[r->len] = '\0';
    return add;
}

/* Copies the value of "Name: value\r\n" into dst when name matches (case-insensitive). */
static void take_header(const char *line, size_t len, const char *name, char *dst, size_t cap)
{
    size_t nlen = strlen(name), vlen;
    const char *v;

    if (len <= nlen || line[nlen] != ':' || strncasecmp(line, name, nlen) != 0)
        return;
    v = line + nlen + 1;
    vlen = len - nlen - 1;
    while (vlen > 0 && (*v == ' ' || *v == '\t'))
        v++, vlen--;
    while (vlen > 0 && (v[vlen - 1] == '\r' || v[vlen - 1] == '\n' || v[vlen - 1] == ' '))
        vlen--;
    if (vlen >= cap)
        vlen = 0; /* too long to be genuine: treat as absent */
    memcpy(dst, v, vlen);
    dst[vlen] = '\0';
}

static size_t on_header(char *p, size_t size, size_t n, void *ud)
{
    struct api_response *r = ud;
    size_t len = size * n;

    /* A new status line (after a 100 Continue): forget the earlier response's headers. */
    if (len >= 5 && strncmp(p, "HTTP/", 5) == 0) {
        r->timestamp[0] = r->nonce[0] = r->serial[0] = r->signature[0] = '\0';
        r->request_id[0] = '\0';
    }
    take_header(p, len, "Wechatpay-Timestamp", r->timestamp, sizeof(r->timestamp));
    take_header(p, len, "Wechatpay-Nonce", r->nonce, sizeof(r->nonce));
    take_header(p, len, "Wechatpay-Serial", r->serial, sizeof(r->serial));
    take_header(p, len, "Wechatpay-Signature", r->signature, sizeof(r->signature));
    take_header(p, len, "Request-ID", r->request_id, sizeof(r->request_id));
    return len;
}

static const char *or_null(const char *s)
{
    return s[0] != '\0' ? s : NULL;
}

/* One signed request. RETRY on transport failure; otherwise OK with r->status set (the
 * caller classifies). */
static enum channel_call_status api_send(const struct wechatpay_conf *c, const char *method,
                                         const char *path_q, const char *body,
                                         struct api_response *r, char *error, size_t error_len)
{
    char url[2048], signed_path[2048], nonce[40], auth[2048], auth_hdr[2100];
    char curl_err[CURL_ERROR_SIZE] = "";
    struct curl_slist *hdrs = NULL, *h;
    struct errbuf e = {0};
    enum channel_call_status st = CHANNEL_CALL_RETRY;
    size_t body_len = body ? strlen(body) : 0;
    CURL *curl = NULL;
    CURLcode cc;

    if ((size_t)snprintf(url, sizeof(url), "%s%s", c->api_url, path_q) >= sizeof(url) ||
        (size_t)snprintf(signed_path, sizeof(signed_path), "%s%s", c->api_path, path_q) >=
            sizeof(signed_path)) {
        snprintf(error, error_len, "request URL too long");
        return CHANNEL_CALL_REJECTED;
    }
    if (crypto_random_id("", 16, nonce) != 0) {
        snprintf(error, error_len, "random source failed");
        return CHANNEL_CALL_RETRY;
    }
    if (wechatpay_authorization(c, method, signed_path, body, body_len, (int64_t)time(NULL), nonce,
                                auth, sizeof(auth), &e) != 0) {
        snprintf(error, error_len, "%s", e.msg);
        return CHANNEL_CALL_REJECTED;
    }
    snprintf(auth_hdr, sizeof(auth_hdr), "Authorization: %s", auth);
    /* WeChat Pay requires Accept and a User-Agent; "Expect:" keeps curl from waiting for a
     * 100 Continue the server may never send. */
    {
        const char *lines[] = {auth_hdr, "Accept: application/json", "User-Agent: paynotify/1",
                               "Expect:", body ? "Content-Type: application/json" : NULL};
        for (size_t i = 0; i < sizeof(lines) / sizeof(lines[0]) && lines[i] != NULL; i++) {
            if ((h = curl_slist_append(hdrs, lines[i])) == NULL)
                abort();
            hdrs = h;
        }
    }
    if ((curl = curl_easy_init()) == NULL) {
        snprintf(error, error_len, "curl_easy_init failed");
        goto out;
    }
    if ((cc = curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_PROTOCOLS_STR, "http,https")) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_URL, url)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_FOLLOWLOCATION, 0L)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, CONNECT_TIMEOUT_MS)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, TOTAL_TIMEOUT_MS)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_HTTPHEADER, hdrs)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, curl_err)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, on_body)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_WRITEDATA, r)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_HEADERFUNCTION, on_header)) != CURLE_OK ||
        (cc = curl_easy_setopt(curl, CURLOPT_HEADERDATA, r)) != CURLE_OK) {
        snprintf(error, error_len, "curl setup: %s", curl_easy_strerror(cc));
        goto out;
    }
    if (body != NULL) {
        if ((cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)body_len)) !=
                CURLE_OK ||
            (cc = curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body)) != CURLE_OK) {
            snprintf(error, error_len, "curl setup: %s", curl_easy_strerror(cc));
            goto out;
        }
    }
    cc = curl_easy_perform(curl);
    if (cc != CURLE_OK) {
        snprintf(error, error_len, "%s %s: %s", method, path_q,
                 r->too_big    ? "response larger than 1 MiB"
                 : curl_err[0] ? curl_err
                               : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r->status);
    st = CHANNEL_CALL_OK;
out:
    curl_easy_cleanup(curl);
    curl_slist_free_all(hdrs);
    return st;
}

/* Decides what a response means. OK only for a 2xx whose platform signature verifies (the
 * caller then reads r->body). Errors are never trusted as success, so their signature only
 * changes the message. */
static enum channel_call_status api_classify(const struct wechatpay_conf *c,
                                             const struct api_response *r, char *error,
                                             size_t error_len)
{
    struct errbuf e = {0};
    int verified =
        wechatpay_verify_signature(c, or_null(r->timestamp), or_null(r->nonce), or_null(r->serial),
                                   or_null(r->signature), r->body ? r->body : "", r->len,
                                   (int64_t)time(NULL), &e) == 0;
    struct errbuf pe = {0};
    json_object *o;
    const char *code = NULL, *message = NULL;
    enum channel_call_status st;

    if (r->status >= 200 && r->status < 300) {
        if (verified)
            return CHANNEL_CALL_OK;
        /* Maybe forged, maybe a platform key we do not have yet: the calls are idempotent,
         * so asking again is safe, and trusting it is not. */
        snprintf(error, error_len, "HTTP %ld with an unverifiable response: %s", r->status, e.msg);
        return CHANNEL_CALL_RETRY;
    }
    o = r->body ? parse_object("error", r->body, r->len, &pe) : NULL;
    if (o != NULL) {
        code = get_str(o, "code");
        message = get_str(o, "message");
    }
    if (r->status >= 500 || r->status == 429 || (code && strcmp(code, "SYSTEM_ERROR") == 0) ||
        (code && strcmp(code, "FREQUENCY_LIMITED") == 0))
        st = CHANNEL_CALL_RETRY;
    else
        st = CHANNEL_CALL_REJECTED;
    snprintf(error, error_len, "HTTP %ld %s: %.120s%s%s%s", r->status, code ? code : "-",
             message ? message : "(no message)", verified ? "" : " (unsigned response)",
             r->request_id[0] ? " request-id " : "", r->request_id);
    json_object_put(o);
    return st;
}

/* Percent-encodes s (everything but RFC 3986 unreserved) into out. -1 if it does not fit. */
static int url_escape(const char *s, char *out, size_t cap)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t o = 0;

    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (o + 4 > cap)
            return -1;
        if (isalnum(ch) || ch == '-' || ch == '_' || ch == '.' || ch == '~') {
            out[o++] = (char)ch;
        } else {
            out[o++] = '%';
            out[o++] = hex[ch >> 4];
            out[o++] = hex[ch & 15];
        }
    }
    out[o] = '\0';
    return 0;
}

static enum channel_call_status wechatpay_query(const void *conf, const char *order_id,
                                                struct pay_event *ev, char *error, size_t error_len)
{
    const struct wechatpay_conf *c = conf;
    struct api_response r;
    char esc[200], path[512], state[32];
    struct errbuf e = {0};
    json_object *tx = NULL;
    enum channel_call_status st;

    memset(&r, 0, sizeof(r));
    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    ev->kind = PAY_EVENT_OTHER;
    if (error_len > 0)
        error[0] = '\0';
    if (order_id == NULL || order_id[0] == '\0' || strlen(order_id) >= sizeof(ev->order_id) ||
        url_escape(order_id, esc, sizeof(esc)) != 0) {
        snprintf(error, error_len, "query: bad order id");
        return CHANNEL_CALL_REJECTED;
    }
    snprintf(path, sizeof(path), "/v3/pay/transactions/out-trade-no/%s?mchid=%s", esc, c->mchid);
    st = api_send(c, "GET", path, NULL, &r, error, error_len);
    if (st != CHANNEL_CALL_OK)
        goto out;
    if ((st = api_classify(c, &r, error, error_len)) != CHANNEL_CALL_OK)
        goto out;
    /* An authentic answer we cannot use will not improve by asking again. */
    st = CHANNEL_CALL_REJECTED;
    if ((tx = parse_object("WeChat Pay query response", r.body ? r.body : "", r.len, &e)) == NULL ||
        parse_transaction(c, tx, "WeChat Pay query response", ev, state, sizeof(state), &e) != 0) {
        snprintf(error, error_len, "%s", e.msg);
        goto out;
    }
    if (strcmp(ev->order_id, order_id) != 0) {
        snprintf(error, error_len, "query response is for out_trade_no \"%.64s\"", ev->order_id);
        goto out;
    }
    /* No notification id exists for a query; this one is stable for the same answer. */
    snprintf(ev->event_id, sizeof(ev->event_id), "query:%.64s:%.31s",
             ev->txn_id[0] ? ev->txn_id : ev->order_id, state);
    snprintf(ev->event_type, sizeof(ev->event_type), "wechatpay.query");
    st = CHANNEL_CALL_OK;
out:
    json_object_put(tx);
    free(r.body);
    return st;
}

static enum channel_call_status wechatpay_refund(const void *conf, const struct refund_request *rq,
                                                 struct refund_result *out)
{
    const struct wechatpay_conf *c = conf;
    struct api_response r;
    struct errbuf e = {0};
    json_object *req = NULL, *amount, *resp = NULL;
    const char *body, *status, *out_refund_no;
    char cur[4];
    enum channel_call_status st = CHANNEL_CALL_REJECTED;

    memset(&r, 0, sizeof(r));
    memset(out, 0, sizeof(*out));
    if (rq->refund_id == NULL || rq->refund_id[0] == '\0' || strlen(rq->refund_id) > 64) {
        snprintf(out->error, sizeof(out->error), "refund: out_refund_no must be 1..64 bytes");
        return CHANNEL_CALL_REJECTED;
    }
    if ((rq->txn_id == NULL || rq->txn_id[0] == '\0') &&
        (rq->order_id == NULL || rq->order_id[0] == '\0')) {
        snprintf(out->error, sizeof(out->error), "refund: needs transaction_id or out_trade_no");
        return CHANNEL_CALL_REJECTED;
    }
    if (rq->amount <= 0 || rq->total < rq->amount) {
        snprintf(out->error, sizeof(out->error), "refund: amount %lld not in 1..total %lld",
                 (long long)rq->amount, (long long)rq->total);
        return CHANNEL_CALL_REJECTED;
    }
    if (money_currency_norm(rq->currency ? rq->currency : "CNY", cur) != 0) {
        snprintf(out->error, sizeof(out->error), "refund: bad currency");
        return CHANNEL_CALL_REJECTED;
    }
    if ((req = json_object_new_object()) == NULL || (amount = json_object_new_object()) == NULL)
        abort();
    if (rq->txn_id != NULL && rq->txn_id[0] != '\0')
        json_object_object_add(req, "transaction_id", json_object_new_string(rq->txn_id));
    else
        json_object_object_add(req, "out_trade_no", json_object_new_string(rq->order_id));
    json_object_object_add(req, "out_refund_no", json_object_new_string(rq->refund_id));
    if (rq->reason != NULL && rq->reason[0] != '\0')
        json_object_object_add(req, "reason", json_object_new_string(rq->reason));
    json_object_object_add(amount, "refund", json_object_new_int64(rq->amount));
    json_object_object_add(amount, "total", json_object_new_int64(rq->total));
    json_object_object_add(amount, "currency", json_object_new_string(cur));
    json_object_object_add(req, "amount", amount);
    body = json_object_to_json_string_ext(req,
                                          JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE);
    st = api_send(c, "POST", "/v3/refund/domestic/refunds", body, &r, out->error,
                  sizeof(out->error));
    if (st != CHANNEL_CALL_OK)
        goto out;
    if ((st = api_classify(c, &r, out->error, sizeof(out->error))) != CHANNEL_CALL_OK)
        goto out;
    /* An authentic 2xx we cannot read may still mean the refund exists: ask again under the
     * same out_refund_no, which never refunds twice. */
    st = CHANNEL_CALL_RETRY;
    if ((resp = parse_object("WeChat Pay refund response", r.body ? r.body : "", r.len, &e)) ==
        NULL) {
        snprintf(out->error, sizeof(out->error), "%s", e.msg);
        goto out;
    }
    status = get_str(resp, "status");
    out_refund_no = get_str(resp, "out_refund_no");
    if (copy_field(resp, "WeChat Pay refund response", "refund_id", out->provider_refund_id,
                   sizeof(out->provider_refund_id), 1, &e) != 0 ||
        status == NULL || strlen(status) >= sizeof(out->state)) {
        snprintf(out->error, sizeof(out->error), "%s",
                 e.msg[0] ? e.msg : "WeChat Pay refund response: missing status");
        goto out;
    }
    snprintf(out->state, sizeof(out->state), "%s", status);
    if (out_refund_no == NULL || strcmp(out_refund_no, rq->refund_id) != 0) {
        snprintf(out->error, sizeof(out->error),
                 "refund response names out_refund_no \"%.64s\", not ours",
                 out_refund_no ? out_refund_no : "(missing)");
        st = CHANNEL_CALL_REJECTED;
        goto out;
    }
    if (strcmp(status, "SUCCESS") == 0 || strcmp(status, "PROCESSING") == 0) {
        st = CHANNEL_CALL_OK;
    } else {
        snprintf(out->error, sizeof(out->error), "refund status %s", status);
        st = CHANNEL_CALL_REJECTED;
    }
out:
    json_object_put(resp);
    json_object_put(req);
    free(r.body);
    return st;
}

static const char *const wechatpay_headers[] = {"wechatpay-timestamp", "wechatpay-nonce",
                                                "wechatpay-serial", "wechatpay-signature", NULL};

const struct channel_ops wechatpay_channel_ops = {
    .type = "wechatpay",
    .envelope_headers = wechatpay_headers,
    .config_load = wechatpay_config_load,
    .config_free = wechatpay_config_free,
    .verify = wechatpay_verify,
    .parse = wechatpay_parse,
    .query = wechatpay_query,
    .refund = wechatpay_refund,
    /* 204 carries no body (httpd sends neither body nor Content-Length for it). */
    .accept = {204, "application/json", ""},
    .reject = {400, "application/json", "{\"code\":\"FAIL\",\"message\":\"rejected\"}"},
};
