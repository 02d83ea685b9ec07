/* channel/alipay.c: the Alipay channel.
 *
 * Notifications: a form-encoded POST. Alipay signs (RSA2 = SHA256withRSA, PKCS#1 v1.5)
 * the string of every parameter except sign and sign_type that has a non-empty value,
 * sorted by key, "key=value" joined by '&', with the values form-decoded; sign is base64.
 * verify() checks that signature, app_id and (when configured) seller_id; parse() maps
 * trade_status and total_amount (yuan, "12.50") into a pay_event in fen.
 *
 * API calls (alipay.trade.query, alipay.trade.refund): a form POST to the gateway whose
 * parameters (all but sign, sign_type included) are signed with the app private key. The
 * answer is {"alipay_trade_<x>_response": {...}, "sign": "..."} and Alipay signs the
 * exact text of the *_response value, so that text is cut out of the body, verified, and
 * only then parsed. */
#include "channel/alipay.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "common/crypto.h"
#include "common/jsonx.h"
#include "common/money.h"
#include "common/xalloc.h"

#define SHANGHAI_UTC_OFFSET_S (8 * 3600) /* Asia/Shanghai: UTC+8, no DST since 1991 */
#define MAX_ID 64                        /* app_id, seller_id */

struct alipay_conf {
    char *app_id;
    char *seller_id;     /* NULL: not checked */
    EVP_PKEY *alipay_pk; /* verifies notifications and API responses */
    EVP_PKEY *app_key;   /* signs requests; NULL when the channel only receives */
    char *api_url;
};

/* ------------------------------------------------------------------ form */

struct param {
    char *key;
    char *value;
};

struct alipay_form {
    size_t n;
    struct param p[ALIPAY_MAX_PARAMS];
};

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Decodes s[0..len) ('+' and %XX) into a new string; NULL + *e naming `what`. */
static char *form_unescape(const char *s, size_t len, const char *what, struct errbuf *e)
{
    char *out = xmalloc(len + 1);
    size_t o = 0;

    for (size_t i = 0; i < len; i++) {
        int c = (unsigned char)s[i];

        if (c == '+') {
            c = ' ';
        } else if (c == '%') {
            if (len - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
                errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: malformed %%-escape in %s",
                           what);
                free(out);
                return NULL;
            }
            c = hexval(s[i + 1]) * 16 + hexval(s[i + 2]);
            i += 2;
        }
        if (c == 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: NUL byte in %s", what);
            free(out);
            return NULL;
        }
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return out;
}

/* 1 if s is well-formed UTF-8 (no overlong forms, surrogates or code points > U+10FFFF). */
static int utf8_valid(const char *str)
{
    const unsigned char *s = (const unsigned char *)str;

    while (*s) {
        unsigned c = *s;
        size_t n;
        unsigned cp, min;

        if (c < 0x80) {
            s++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) {
            n = 1, cp = c & 0x1F, min = 0x80;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2, cp = c & 0x0F, min = 0x800;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3, cp = c & 0x07, min = 0x10000;
        } else {
            return 0;
        }
        for (size_t i = 1; i <= n; i++) {
            if ((s[i] & 0xC0) != 0x80)
                return 0; /* also stops at the terminating NUL */
            cp = (cp << 6) | (s[i] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return 0;
        s += n + 1;
    }
    return 1;
}

void alipay_form_free(alipay_form *f)
{
    if (f == NULL)
        return;
    for (size_t i = 0; i < f->n; i++) {
        free(f->p[i].key);
        free(f->p[i].value);
    }
    free(f);
}

const char *alipay_form_get(const alipay_form *f, const char *key)
{
    for (size_t i = 0; i < f->n; i++)
        if (strcmp(f->p[i].key, key) == 0)
            return f->p[i].value;
    return NULL;
}

alipay_form *alipay_form_parse(const char *body, size_t len, struct errbuf *e)
{
    alipay_form *f = calloc(1, sizeof(*f));
    const char *charset;
    size_t i = 0;

    if (f == NULL)
        abort();
    while (i < len) {
        const char *seg = body + i, *amp = memchr(seg, '&', len - i), *eq;
        size_t seg_len = amp ? (size_t)(amp - seg) : len - i;
        struct param *p;

        i += seg_len + 1;
        if (seg_len == 0)
            continue;
        eq = memchr(seg, '=', seg_len);
        if (eq == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: parameter without '='");
            goto fail;
        }
        if (eq == seg) {
            errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: parameter with an empty name");
            goto fail;
        }
        if (f->n == ALIPAY_MAX_PARAMS) {
            errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: more than %d parameters",
                       ALIPAY_MAX_PARAMS);
            goto fail;
        }
        p = &f->p[f->n];
        if ((p->key = form_unescape(seg, (size_t)(eq - seg), "a parameter name", e)) == NULL)
            goto fail;
        f->n++;
        if ((p->value = form_unescape(eq + 1, seg_len - (size_t)(eq - seg) - 1, p->key, e)) == NULL)
            goto fail;
        for (size_t j = 0; j + 1 < f->n; j++) {
            if (strcmp(f->p[j].key, p->key) == 0) {
                errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: parameter %.64s given twice",
                           p->key);
                goto fail;
            }
        }
    }
    /* Checked before UTF-8 so that a GBK notification says why it is refused. */
    charset = alipay_form_get(f, "charset");
    if (charset != NULL && strcasecmp(charset, "utf-8") != 0) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "Alipay notification: charset \"%.32s\" is not supported (utf-8 only)", charset);
        goto fail;
    }
    for (size_t j = 0; j < f->n; j++) {
        if (!utf8_valid(f->p[j].key) || !utf8_valid(f->p[j].value)) {
            errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: parameter %s is not UTF-8",
                       utf8_valid(f->p[j].key) ? f->p[j].key : "name");
            goto fail;
        }
    }
    return f;
fail:
    alipay_form_free(f);
    return NULL;
}

static int param_cmp(const void *a, const void *b)
{
    const struct param *const *pa = a, *const *pb = b;
    return strcmp((*pa)->key, (*pb)->key);
}

char *alipay_sign_content(const alipay_form *f, int notification)
{
    const struct param *sorted[ALIPAY_MAX_PARAMS];
    size_t n = 0, total = 1, o = 0;
    char *out;

    for (size_t i = 0; i < f->n; i++) {
        const struct param *p = &f->p[i];

        if (p->value[0] == '\0' || strcmp(p->key, "sign") == 0 ||
            (notification && strcmp(p->key, "sign_type") == 0))
            continue;
        sorted[n++] = p;
        total += strlen(p->key) + strlen(p->value) + 2;
    }
    qsort(sorted, n, sizeof(sorted[0]), param_cmp);
    out = xmalloc(total);
    for (size_t i = 0; i < n; i++) {
        size_t kl = strlen(sorted[i]->key), vl = strlen(sorted[i]->value);

        if (i > 0)
            out[o++] = '&';
        memcpy(out + o, sorted[i]->key, kl);
        o += kl;
        out[o++] = '=';
        memcpy(out + o, sorted[i]->value, vl);
        o += vl;
    }
    out[o] = '\0';
    return out;
}

/* Appends key=value to a form being built for a request (values are ours, not untrusted). */
static void form_add(alipay_form *f, const char *key, const char *value)
{
    if (f->n == ALIPAY_MAX_PARAMS)
        abort(); /* requests have a fixed, small set of parameters */
    f->p[f->n].key = xstrdup(key);
    f->p[f->n].value = xstrdup(value);
    f->n++;
}

/* ------------------------------------------------------------------ RSA2 */

/* Loads an RSA key from PEM text or from bare base64 DER (what the Alipay console and its
 * key tool show). selection: EVP_PKEY_PUBLIC_KEY or EVP_PKEY_KEYPAIR. */
static EVP_PKEY *load_key(const char *text, int selection)
{
    EVP_PKEY *pk = NULL;
    OSSL_DECODER_CTX *dctx = NULL;
    unsigned char *der = NULL;
    const unsigned char *data;
    size_t data_len, der_len = 0;
    const char *input = "PEM";
    char *b64 = NULL;

    if (strstr(text, "-----BEGIN") != NULL) {
        data = (const unsigned char *)text;
        data_len = strlen(text);
    } else {
        size_t o = 0;

        /* The console wraps the key at will: drop all whitespace before decoding. */
        b64 = xmalloc(strlen(text) + 1);
        for (const char *s = text; *s; s++)
            if (*s != ' ' && *s != '\t' && *s != '\r' && *s != '\n')
                b64[o++] = *s;
        b64[o] = '\0';
        if (crypto_b64_decode(b64, o, &der, &der_len) != 0)
            goto out;
        data = der;
        data_len = der_len;
        input = "DER";
    }
    dctx = OSSL_DECODER_CTX_new_for_pkey(&pk, input, NULL, "RSA", selection, NULL, NULL);
    if (dctx == NULL || OSSL_DECODER_from_data(dctx, &data, &data_len) != 1) {
        EVP_PKEY_free(pk);
        pk = NULL;
    }
out:
    /* Decoder failures leave entries on this thread's OpenSSL error queue. */
    ERR_clear_error();
    OSSL_DECODER_CTX_free(dctx);
    if (der != NULL)
        OPENSSL_cleanse(der, der_len);
    free(der);
    free(b64);
    return pk;
}

static int rsa2_verify(EVP_PKEY *pk, const char *content, size_t len, const char *sign_b64,
                       struct errbuf *e)
{
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    EVP_MD_CTX *md = NULL;
    int rc = -1;

    if (sign_b64 == NULL || sign_b64[0] == '\0') {
        errbuf_set(e, ERRBUF_PERMANENT, "sign missing");
        return -1;
    }
    if (crypto_b64_decode(sign_b64, strlen(sign_b64), &sig, &sig_len) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "sign is not valid base64");
        return -1;
    }
    md = EVP_MD_CTX_new();
    if (md == NULL)
        abort();
    if (EVP_DigestVerifyInit_ex(md, NULL, "SHA256", NULL, NULL, pk, NULL) != 1 ||
        EVP_DigestVerify(md, sig, sig_len, (const unsigned char *)content, len) != 1) {
        errbuf_set(e, ERRBUF_PERMANENT, "RSA2 signature does not verify");
        goto out;
    }
    rc = 0;
out:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(sig);
    return rc;
}

/* base64 RSA2 signature of content with key; caller frees. NULL if signing failed. */
static char *rsa2_sign(EVP_PKEY *key, const char *content, size_t len)
{
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    unsigned char *sig = NULL;
    size_t sig_len = 0;
    char *b64 = NULL;

    if (md == NULL)
        abort();
    if (EVP_DigestSignInit_ex(md, NULL, "SHA256", NULL, NULL, key, NULL) != 1 ||
        EVP_DigestSign(md, NULL, &sig_len, (const unsigned char *)content, len) != 1)
        goto out;
    sig = xmalloc(sig_len);
    if (EVP_DigestSign(md, sig, &sig_len, (const unsigned char *)content, len) != 1)
        goto out;
    b64 = xmalloc(crypto_b64_len(sig_len) + 1);
    crypto_b64_encode(sig, sig_len, b64);
out:
    ERR_clear_error();
    EVP_MD_CTX_free(md);
    free(sig);
    return b64;
}

/* ------------------------------------------------------------------ config */

static void alipay_config_free(void *p)
{
    struct alipay_conf *c = p;

    if (c == NULL)
        return;
    free(c->app_id);
    free(c->seller_id);
    EVP_PKEY_free(c->alipay_pk);
    EVP_PKEY_free(c->app_key);
    free(c->api_url);
    free(c);
}

/* 0 if s is printable ASCII without spaces, at most MAX_ID bytes. */
static int check_id(const char *s, const char *where, const char *key, struct errbuf *e)
{
    size_t n = strlen(s);

    for (size_t i = 0; i < n; i++) {
        if (s[i] <= ' ' || s[i] > '~') {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: expected printable ASCII without spaces", where,
                       key);
            return -1;
        }
    }
    if (n > MAX_ID) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: longer than %d characters", where, key, MAX_ID);
        return -1;
    }
    return 0;
}

/* Loads a key given as `name` or `name_file`; *out NULL when absent and not required. */
static int config_key(json_object *o, const char *name, const char *where, const char *base_dir,
                      int required, int selection, EVP_PKEY **out, struct errbuf *e)
{
    char *text = NULL, fkey[64];
    const char *which = name;
    json_object *v;

    *out = NULL;
    if (jsonx_get_secret(o, name, where, base_dir, required, &text, e) != 0)
        return -1;
    if (text == NULL)
        return 0;
    snprintf(fkey, sizeof(fkey), "%s_file", name);
    if (json_object_object_get_ex(o, fkey, &v))
        which = fkey;
    *out = load_key(text, selection);
    OPENSSL_cleanse(text, strlen(text));
    free(text);
    if (*out == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: not an RSA %s key (PEM, or the bare base64 form)",
                   where, which, selection == EVP_PKEY_PUBLIC_KEY ? "public" : "private");
        return -1;
    }
    if (EVP_PKEY_get_bits(*out) < ALIPAY_MIN_KEY_BITS) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: %d-bit key; RSA2 needs at least %d bits", where,
                   which, EVP_PKEY_get_bits(*out), ALIPAY_MIN_KEY_BITS);
        return -1;
    }
    return 0;
}

static const char *const config_keys[] = {
    "type",
    "app_id",
    "seller_id",
    "alipay_public_key",
    "alipay_public_key_file",
    "app_private_key",
    "app_private_key_file",
    "api_url",
    NULL,
};

static void *alipay_config_load(const char *json, const char *where, const char *base_dir,
                                struct errbuf *e)
{
    struct alipay_conf *c = calloc(1, sizeof(*c));
    json_object *o = json_tokener_parse(json);

    if (c == NULL)
        abort();
    if (o == NULL || !json_object_is_type(o, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected a JSON object", where);
        goto fail;
    }
    /* A misspelt optional key (say "seler_id") would silently switch a check off. */
    json_object_object_foreach(o, k, val)
    {
        size_t i = 0;

        (void)val;
        while (config_keys[i] != NULL && strcmp(config_keys[i], k) != 0)
            i++;
        if (config_keys[i] == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.%.64s: unknown key for an alipay channel", where,
                       k);
            goto fail;
        }
    }
    if (jsonx_get_string(o, "app_id", where, 1, &c->app_id, e) != 0 ||
        check_id(c->app_id, where, "app_id", e) != 0 ||
        jsonx_get_string(o, "seller_id", where, 0, &c->seller_id, e) != 0 ||
        (c->seller_id != NULL && check_id(c->seller_id, where, "seller_id", e) != 0) ||
        config_key(o, "alipay_public_key", where, base_dir, 1, EVP_PKEY_PUBLIC_KEY, &c->alipay_pk,
                   e) != 0 ||
        config_key(o, "app_private_key", where, base_dir, 0, EVP_PKEY_KEYPAIR, &c->app_key, e) !=
            0 ||
        jsonx_get_string(o, "api_url", where, 0, &c->api_url, e) != 0)
        goto fail;
    if (c->api_url == NULL)
        c->api_url = xstrdup(ALIPAY_DEFAULT_API_URL);
    if (jsonx_check_http_url(c->api_url, where, "api_url", e) != 0)
        goto fail;
    json_object_put(o);
    return c;
fail:
    json_object_put(o);
    alipay_config_free(c);
    return NULL;
}

/* ------------------------------------------------------------------ notifications */

static int alipay_verify(const void *conf, const struct channel_request *req, int64_t now,
                         struct errbuf *e)
{
    const struct alipay_conf *c = conf;
    alipay_form *f;
    const char *sign_type, *app_id, *seller_id;
    char *content = NULL;
    struct errbuf sub = {0};
    int rc = -1;

    (void)now; /* Alipay retries over ~25 h and signs no timestamp worth a window. */
    if ((f = alipay_form_parse(req->body, req->body_len, e)) == NULL)
        return -1;
    sign_type = alipay_form_get(f, "sign_type");
    if (sign_type == NULL || sign_type[0] == '\0') {
        errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: sign_type missing");
        goto out;
    }
    if (strcmp(sign_type, "RSA2") != 0) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "Alipay notification: sign_type \"%.16s\" is not supported (RSA2 only)",
                   sign_type);
        goto out;
    }
    content = alipay_sign_content(f, 1);
    if (rsa2_verify(c->alipay_pk, content, strlen(content), alipay_form_get(f, "sign"), &sub) !=
        0) {
        errbuf_set(e, ERRBUF_PERMANENT, "Alipay notification: %s", sub.msg);
        goto out;
    }
    app_id = alipay_form_get(f, "app_id");
    if (app_id == NULL || strcmp(app_id, c->app_id) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "Alipay notification: app_id \"%.64s\" is not this channel's app_id",
                   app_id ? app_id : "(missing)");
        goto out;
    }
    seller_id = alipay_form_get(f, "seller_id");
    if (c->seller_id != NULL && (seller_id == NULL || strcmp(seller_id, c->seller_id) != 0)) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "Alipay notification: seller_id \"%.64s\" is not this channel's seller_id",
                   seller_id ? seller_id : "(missing)");
        goto out;
    }
    rc = 0;
out:
    free(content);
    alipay_form_free(f);
    return rc;
}

static const char *nonempty(const char *s)
{
    return s != NULL && s[0] != '\0' ? s : NULL;
}

static enum pay_event_kind status_kind(const char *trade_status)
{
    if (strcmp(trade_status, "TRADE_SUCCESS") == 0 || strcmp(trade_status, "TRADE_FINISHED") == 0)
        return PAY_EVENT_SUCCEEDED;
    if (strcmp(trade_status, "WAIT_BUYER_PAY") == 0)
        return PAY_EVENT_PROCESSING;
    if (strcmp(trade_status, "TRADE_CLOSED") == 0)
        return PAY_EVENT_CANCELED;
    return PAY_EVENT_OTHER;
}

static int copy_field(char *dst, size_t cap, const char *src, const char *what, const char *name,
                      struct errbuf *e)
{
    if (src == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s missing", what, name);
        return -1;
    }
    if (strlen(src) >= cap) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s longer than %zu bytes", what, name, cap - 1);
        return -1;
    }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

/* The fields a notification and a query answer share, into ev. notify_id and pay_time may
 * be NULL; what names the source in messages. */
static int event_fill(struct pay_event *ev, const char *notify_id, const char *out_trade_no,
                      const char *trade_no, const char *trade_status, const char *total_amount,
                      const char *pay_time, const char *what, struct errbuf *e)
{
    struct errbuf sub = {0};
    size_t n;

    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    ev->kind = PAY_EVENT_OTHER;
    if (trade_status == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: trade_status missing", what);
        return -1;
    }
    n = strlen(trade_status);
    if (n > sizeof(ev->event_type) - sizeof("alipay.")) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: trade_status too long", what);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        char ch = trade_status[i];

        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_')) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: trade_status is not a status word", what);
            return -1;
        }
    }
    ev->kind = status_kind(trade_status);
    memcpy(ev->event_type, "alipay.", 7);
    for (size_t i = 0; i <= n; i++)
        ev->event_type[7 + i] = (trade_status[i] >= 'A' && trade_status[i] <= 'Z')
                                    ? (char)(trade_status[i] + 32)
                                    : trade_status[i];
    if (copy_field(ev->order_id, sizeof(ev->order_id), out_trade_no, what, "out_trade_no", e) !=
            0 ||
        copy_field(ev->txn_id, sizeof(ev->txn_id), trade_no, what, "trade_no", e) != 0)
        return -1;
    if (notify_id != NULL) {
        if (copy_field(ev->event_id, sizeof(ev->event_id), notify_id, what, "notify_id", e) != 0)
            return -1;
    } else {
        /* Without a notify_id, one trade in one state at one payment time is one event. */
        int w = snprintf(ev->event_id, sizeof(ev->event_id), "%s:%s:%s", trade_no, trade_status,
                         pay_time ? pay_time : "");
        if (w < 0 || (size_t)w >= sizeof(ev->event_id)) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: trade_no too long for an event id", what);
            return -1;
        }
    }
    memcpy(ev->currency, "CNY", 4); /* domestic Alipay trades are in yuan */
    if (total_amount != NULL) {
        if (money_parse_decimal(total_amount, 2, &ev->amount, &sub) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: total_amount: %s", what, sub.msg);
            return -1;
        }
    } else if (ev->kind == PAY_EVENT_SUCCEEDED) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: total_amount missing", what);
        return -1;
    }
    return 0;
}

static int alipay_parse(const void *conf, const char *body, size_t len, struct pay_event *ev,
                        struct errbuf *e)
{
    alipay_form *f;
    int rc;

    (void)conf;
    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    ev->kind = PAY_EVENT_OTHER;
    if ((f = alipay_form_parse(body, len, e)) == NULL)
        return -1;
    rc = event_fill(
        ev, nonempty(alipay_form_get(f, "notify_id")), nonempty(alipay_form_get(f, "out_trade_no")),
        nonempty(alipay_form_get(f, "trade_no")), nonempty(alipay_form_get(f, "trade_status")),
        nonempty(alipay_form_get(f, "total_amount")), nonempty(alipay_form_get(f, "gmt_payment")),
        "Alipay notification", e);
    alipay_form_free(f);
    return rc;
}

/* ------------------------------------------------------------------ JSON member text */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' || s[i] == '\n'))
        i++;
    return i;
}

/* s[i] == '"': the index after the closing quote, or 0 if the string does not end. */
static size_t skip_string(const char *s, size_t i, size_t n)
{
    for (i++; i < n; i++) {
        if (s[i] == '\\')
            i++;
        else if (s[i] == '"')
            return i + 1;
        else if ((unsigned char)s[i] < 0x20)
            return 0;
    }
    return 0;
}

/* The index after the value starting at s[i], or 0 if it is cut short or empty. Scalars
 * are only delimited here; the value's own parse (json-c) checks them. */
static size_t skip_value(const char *s, size_t i, size_t n)
{
    size_t depth = 0;

    if (i >= n)
        return 0;
    if (s[i] == '"')
        return skip_string(s, i, n);
    if (s[i] != '{' && s[i] != '[') {
        size_t start = i;
        while (i < n && strchr(",}] \t\r\n", s[i]) == NULL)
            i++;
        return i > start ? i : 0;
    }
    while (i < n) {
        if (s[i] == '"') {
            if ((i = skip_string(s, i, n)) == 0)
                return 0;
            continue;
        }
        if (s[i] == '{' || s[i] == '[')
            depth++;
        else if ((s[i] == '}' || s[i] == ']') && --depth == 0)
            return i + 1;
        i++;
    }
    return 0;
}

int alipay_json_member(const char *doc, size_t len, const char *key, const char **value,
                       size_t *value_len, struct errbuf *e)
{
    size_t i = skip_ws(doc, 0, len), klen = strlen(key);
    int found = 0;

    *value = NULL;
    *value_len = 0;
    if (i >= len || doc[i] != '{')
        goto bad;
    i = skip_ws(doc, i + 1, len);
    if (i < len && doc[i] == '}')
        return 1;
    for (;;) {
        size_t kstart, kend, vend;

        if (i >= len || doc[i] != '"' || (kend = skip_string(doc, i, len)) == 0)
            goto bad;
        kstart = i + 1;
        i = skip_ws(doc, kend, len);
        if (i >= len || doc[i] != ':')
            goto bad;
        i = skip_ws(doc, i + 1, len);
        if ((vend = skip_value(doc, i, len)) == 0)
            goto bad;
        if (kend - 1 - kstart == klen && memcmp(doc + kstart, key, klen) == 0) {
            /* Two copies: which one the signature covers would be a guess. */
            if (found) {
                errbuf_set(e, ERRBUF_PERMANENT, "response has \"%.64s\" twice", key);
                return -1;
            }
            found = 1;
            *value = doc + i;
            *value_len = vend - i;
        }
        i = skip_ws(doc, vend, len);
        if (i < len && doc[i] == ',') {
            i = skip_ws(doc, i + 1, len);
            continue;
        }
        if (i < len && doc[i] == '}')
            break;
        goto bad;
    }
    if (skip_ws(doc, i + 1, len) != len)
        goto bad;
    return found ? 0 : 1;
bad:
    errbuf_set(e, ERRBUF_PERMANENT, "response is not a JSON object");
    return -1;
}

/* ------------------------------------------------------------------ requests */

/* Form-encodes s onto out at *o (out sized 3*strlen(s) + rest by the caller). */
static void form_escape(const char *s, char *out, size_t *o)
{
    static const char hex[] = "0123456789ABCDEF";

    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;

        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            c == '-' || c == '.' || c == '_' || c == '~') {
            out[(*o)++] = (char)c;
        } else {
            out[(*o)++] = '%';
            out[(*o)++] = hex[c >> 4];
            out[(*o)++] = hex[c & 15];
        }
    }
}

int alipay_request_build(const struct alipay_conf *conf, const char *method,
                         const char *biz_content, int64_t now, char **body, struct errbuf *e)
{
    alipay_form *f;
    char ts[32], *content = NULL, *sign = NULL, *out;
    time_t t = (time_t)(now + SHANGHAI_UTC_OFFSET_S);
    struct tm tm;
    size_t total = 1, o = 0;

    *body = NULL;
    if (conf->app_key == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "channel has no app_private_key: cannot call %.64s",
                   method);
        return -1;
    }
    gmtime_r(&t, &tm);
    strftime(ts, sizeof(ts), "%Y-%m-%d %H:%M:%S", &tm);
    if ((f = calloc(1, sizeof(*f))) == NULL)
        abort();
    form_add(f, "app_id", conf->app_id);
    form_add(f, "method", method);
    form_add(f, "format", "JSON");
    form_add(f, "charset", "utf-8");
    form_add(f, "sign_type", "RSA2");
    form_add(f, "timestamp", ts);
    form_add(f, "version", "1.0");
    form_add(f, "biz_content", biz_content);
    content = alipay_sign_content(f, 0);
    sign = rsa2_sign(conf->app_key, content, strlen(content));
    if (sign == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "signing the %.64s request failed", method);
        free(content);
        alipay_form_free(f);
        return -1;
    }
    form_add(f, "sign", sign);
    for (size_t i = 0; i < f->n; i++)
        total += 3 * (strlen(f->p[i].key) + strlen(f->p[i].value)) + 2;
    out = xmalloc(total);
    for (size_t i = 0; i < f->n; i++) {
        if (i > 0)
            out[o++] = '&';
        form_escape(f->p[i].key, out, &o);
        out[o++] = '=';
        form_escape(f->p[i].value, out, &o);
    }
    out[o] = '\0';
    *body = out;
    free(sign);
    free(content);
    alipay_form_free(f);
    return 0;
}

int alipay_format_yuan(int64_t fen, char *out, size_t out_len)
{
    if (fen < 0)
        return -1;
    snprintf(out, out_len, "%lld.%02lld", (long long)(fen / 100), (long long)(fen % 100));
    return 0;
}

struct resp_buf {
    char *data;
    size_t len;
    int too_big;
};

static size_t collect(char *ptr, size_t size, size_t n, void *arg)
{
    struct resp_buf *b = arg;
    size_t take = size * n;
    char *grown;

    if (b->len + take > ALIPAY_MAX_RESPONSE) {
        b->too_big = 1;
        return 0; /* aborts the transfer */
    }
    if ((grown = realloc(b->data, b->len + take + 1)) == NULL)
        abort();
    b->data = grown;
    memcpy(b->data + b->len, ptr, take);
    b->len += take;
    b->data[b->len] = '\0';
    return take;
}

/* The string member key of o, or NULL. Borrowed from o. */
static const char *jstr(json_object *o, const char *key)
{
    json_object *v;

    if (o != NULL && json_object_object_get_ex(o, key, &v) &&
        json_object_is_type(v, json_type_string))
        return json_object_get_string(v);
    return NULL;
}

/* Parses exactly text[0..len) as one JSON value, or NULL. */
static json_object *parse_exact(const char *text, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *o;

    if (tok == NULL)
        abort();
    o = json_tokener_parse_ex(tok, text, (int)len);
    if (o != NULL && (json_tokener_get_error(tok) != json_tokener_success ||
                      (size_t)json_tokener_get_parse_end(tok) != len)) {
        json_object_put(o);
        o = NULL;
    }
    json_tokener_free(tok);
    return o;
}

/* One gateway call: build and sign, POST, cut out and verify the *_response member. On
 * CHANNEL_CALL_OK (code 10000) *resp is the parsed, verified response object (caller puts
 * it). Otherwise error says why. */
static enum channel_call_status gateway_call(const struct alipay_conf *c, const char *method,
                                             const char *biz, json_object **resp, char *error,
                                             size_t error_len)
{
    CURL *h = NULL;
    struct curl_slist *hdr = NULL;
    struct resp_buf rb = {0};
    struct errbuf e = {0};
    char *form = NULL, rkey[96];
    const char *raw = NULL, *sraw = NULL, *code, *sub_code, *sub_msg, *msg;
    size_t raw_len = 0, sraw_len = 0;
    json_object *obj = NULL, *sign_obj = NULL;
    long status = 0;
    CURLcode cc;
    int m, signed_ok = 0;
    enum channel_call_status rc = CHANNEL_CALL_RETRY;

    *resp = NULL;
    if (alipay_request_build(c, method, biz, (int64_t)time(NULL), &form, &e) != 0) {
        snprintf(error, error_len, "%s", e.msg);
        return CHANNEL_CALL_REJECTED;
    }
    if ((h = curl_easy_init()) == NULL) {
        snprintf(error, error_len, "%s: curl_easy_init failed", method);
        goto out;
    }
    hdr = curl_slist_append(hdr, "Content-Type: application/x-www-form-urlencoded;charset=utf-8");
    curl_easy_setopt(h, CURLOPT_URL, c->api_url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, ALIPAY_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, ALIPAY_TOTAL_TIMEOUT_MS);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &rb);
    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(error, error_len, "%s: %s", method,
                 rb.too_big ? "response too large" : curl_easy_strerror(cc));
        goto out;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    if (status != 200) {
        snprintf(error, error_len, "%s: HTTP %ld", method, status);
        rc = (status >= 500 || status == 429) ? CHANNEL_CALL_RETRY : CHANNEL_CALL_REJECTED;
        goto out;
    }
    /* "alipay.trade.query" answers in "alipay_trade_query_response". */
    m = snprintf(rkey, sizeof(rkey), "%s_response", method);
    for (int i = 0; i < m; i++)
        if (rkey[i] == '.')
            rkey[i] = '_';
    if (rb.data == NULL || alipay_json_member(rb.data, rb.len, rkey, &raw, &raw_len, &e) < 0 ||
        (raw == NULL &&
         alipay_json_member(rb.data, rb.len, "error_response", &raw, &raw_len, &e) < 0) ||
        alipay_json_member(rb.data, rb.len, "sign", &sraw, &sraw_len, &e) < 0) {
        snprintf(error, error_len, "%s: %s", method, rb.data ? e.msg : "empty response");
        goto out;
    }
    if (raw == NULL || (obj = parse_exact(raw, raw_len)) == NULL ||
        !json_object_is_type(obj, json_type_object)) {
        snprintf(error, error_len, "%s: response without a %s object", method, rkey);
        goto out;
    }
    if (sraw != NULL) {
        /* The signature decides; a bad one is retried (transit damage, a key being rotated):
         * a refund rejected on a forged answer could hide money that did move. */
        if ((sign_obj = parse_exact(sraw, sraw_len)) == NULL ||
            !json_object_is_type(sign_obj, json_type_string) ||
            rsa2_verify(c->alipay_pk, raw, raw_len, json_object_get_string(sign_obj), &e) != 0) {
            snprintf(error, error_len, "%s: response signature: %s", method,
                     sign_obj != NULL && json_object_is_type(sign_obj, json_type_string)
                         ? e.msg
                         : "sign is not a string");
            goto out;
        }
        signed_ok = 1;
    }
    code = jstr(obj, "code");
    msg = jstr(obj, "msg");
    sub_code = jstr(obj, "sub_code");
    sub_msg = jstr(obj, "sub_msg");
    if (code != NULL && strcmp(code, "10000") == 0) {
        if (!signed_ok) {
            snprintf(error, error_len, "%s: unsigned success response", method);
            goto out;
        }
        *resp = obj;
        obj = NULL;
        rc = CHANNEL_CALL_OK;
        goto out;
    }
    /* Errors are taken as they come, signed or not (as Alipay's SDKs do): an error moves no
     * money, and the gateway does not sign every one (e.g. an app it cannot identify). */
    snprintf(error, error_len, "%s: code %s %s%s%s%s%s", method, code ? code : "(none)",
             msg ? msg : "", sub_code ? " " : "", sub_code ? sub_code : "", sub_msg ? ": " : "",
             sub_msg ? sub_msg : "");
    if (code == NULL || strcmp(code, "20000") == 0 ||
        (sub_code != NULL && strstr(sub_code, "SYSTEM_ERROR") != NULL))
        rc = CHANNEL_CALL_RETRY;
    else
        rc = CHANNEL_CALL_REJECTED;
out:
    json_object_put(obj);
    json_object_put(sign_obj);
    curl_slist_free_all(hdr);
    if (h != NULL)
        curl_easy_cleanup(h);
    free(rb.data);
    free(form);
    return rc;
}

/* biz_content as compact JSON; caller frees. */
static char *biz_json(json_object *o)
{
    char *s = xstrdup(
        json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
    json_object_put(o);
    return s;
}

/* The answer must be about the trade we asked for. */
static int same_order(json_object *resp, const char *order_id, const char *method, char *error,
                      size_t error_len)
{
    const char *got = jstr(resp, "out_trade_no");

    if (got != NULL && strcmp(got, order_id) != 0) {
        snprintf(error, error_len, "%s: answer is for out_trade_no %.64s, not %.64s", method, got,
                 order_id);
        return -1;
    }
    return 0;
}

static enum channel_call_status alipay_query(const void *conf, const char *order_id,
                                             struct pay_event *ev, char *error, size_t error_len)
{
    const struct alipay_conf *c = conf;
    const char *method = "alipay.trade.query";
    json_object *biz = json_object_new_object(), *resp = NULL;
    struct errbuf e = {0};
    enum channel_call_status rc;
    char *bizs;

    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    error[0] = '\0';
    if (order_id == NULL || order_id[0] == '\0') {
        snprintf(error, error_len, "%s: order_id is required", method);
        json_object_put(biz);
        return CHANNEL_CALL_REJECTED;
    }
    json_object_object_add(biz, "out_trade_no", json_object_new_string(order_id));
    bizs = biz_json(biz);
    rc = gateway_call(c, method, bizs, &resp, error, error_len);
    free(bizs);
    if (rc != CHANNEL_CALL_OK)
        return rc;
    if (same_order(resp, order_id, method, error, error_len) != 0) {
        rc = CHANNEL_CALL_RETRY;
    } else if (event_fill(ev, NULL, order_id, nonempty(jstr(resp, "trade_no")),
                          nonempty(jstr(resp, "trade_status")),
                          nonempty(jstr(resp, "total_amount")),
                          nonempty(jstr(resp, "send_pay_date")), method, &e) != 0) {
        /* A signed answer we cannot read will not improve by asking again soon. */
        snprintf(error, error_len, "%s", e.msg);
        rc = CHANNEL_CALL_REJECTED;
    }
    json_object_put(resp);
    return rc;
}

static enum channel_call_status alipay_refund(const void *conf, const struct refund_request *r,
                                              struct refund_result *out)
{
    const struct alipay_conf *c = conf;
    const char *method = "alipay.trade.refund";
    json_object *biz, *resp = NULL;
    enum channel_call_status rc;
    const char *trade_no;
    char yuan[32], *bizs;

    memset(out, 0, sizeof(*out));
    if (r->order_id == NULL || r->order_id[0] == '\0' || r->refund_id == NULL ||
        r->refund_id[0] == '\0') {
        snprintf(out->error, sizeof(out->error), "%s: order_id and refund_id are required", method);
        return CHANNEL_CALL_REJECTED;
    }
    if (r->amount <= 0 || alipay_format_yuan(r->amount, yuan, sizeof(yuan)) != 0) {
        snprintf(out->error, sizeof(out->error), "%s: refund amount %lld is not positive", method,
                 (long long)r->amount);
        return CHANNEL_CALL_REJECTED;
    }
    if (r->currency != NULL && r->currency[0] != '\0' && strcmp(r->currency, "CNY") != 0) {
        snprintf(out->error, sizeof(out->error), "%s: Alipay refunds are in CNY, not %.8s", method,
                 r->currency);
        return CHANNEL_CALL_REJECTED;
    }
    biz = json_object_new_object();
    json_object_object_add(biz, "out_trade_no", json_object_new_string(r->order_id));
    if (r->txn_id != NULL && r->txn_id[0] != '\0')
        json_object_object_add(biz, "trade_no", json_object_new_string(r->txn_id));
    json_object_object_add(biz, "refund_amount", json_object_new_string(yuan));
    /* out_request_no makes the call idempotent: Alipay refunds it at most once. */
    json_object_object_add(biz, "out_request_no", json_object_new_string(r->refund_id));
    if (r->reason != NULL && r->reason[0] != '\0')
        json_object_object_add(biz, "refund_reason", json_object_new_string(r->reason));
    bizs = biz_json(biz);
    rc = gateway_call(c, method, bizs, &resp, out->error, sizeof(out->error));
    free(bizs);
    if (rc != CHANNEL_CALL_OK)
        return rc;
    if (same_order(resp, r->order_id, method, out->error, sizeof(out->error)) != 0) {
        json_object_put(resp);
        return CHANNEL_CALL_RETRY;
    }
    /* fund_change "N" on a repeated out_request_no means the money moved the first time. */
    trade_no = jstr(resp, "trade_no");
    snprintf(out->provider_refund_id, sizeof(out->provider_refund_id), "%.60s:%.64s",
             trade_no ? trade_no : (r->txn_id ? r->txn_id : ""), r->refund_id);
    snprintf(out->state, sizeof(out->state), "REFUNDED");
    json_object_put(resp);
    return CHANNEL_CALL_OK;
}

static const char *const alipay_headers[] = {NULL};

const struct channel_ops alipay_channel_ops = {
    .type = "alipay",
    .envelope_headers = alipay_headers,
    .config_load = alipay_config_load,
    .config_free = alipay_config_free,
    .verify = alipay_verify,
    .parse = alipay_parse,
    .query = alipay_query,
    .refund = alipay_refund,
    .accept = {200, "text/plain", "success"},
    .reject = {400, "text/plain", "failure"},
};
