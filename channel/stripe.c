/* channel/stripe.c: the Stripe channel. Stripe signs "t.body" with HMAC-SHA256 under the
 * endpoint's whsec_ secret and sends "Stripe-Signature: t=<unix>,v1=<hex>[,v1=...]". The
 * order is found in data.object.metadata.order_id. */
#include "channel/stripe.h"

#include <curl/curl.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/jsonx.h"
#include "common/money.h"
#include "common/xalloc.h"

#define MAX_V1 8

static void mac_hex(const char *secret, const char *t, size_t t_len, const char *body,
                    size_t body_len, char *hex)
{
    size_t n = t_len + 1 + body_len;
    char *msg = malloc(n);
    unsigned char mac[CRYPTO_SHA256_LEN];

    if (msg == NULL)
        abort();
    memcpy(msg, t, t_len);
    msg[t_len] = '.';
    memcpy(msg + t_len + 1, body, body_len);
    crypto_hmac_sha256(secret, strlen(secret), msg, n, mac);
    free(msg);
    crypto_hex(mac, sizeof(mac), hex);
}

int stripe_signature_verify(const char *secret, const char *header, const char *body,
                            size_t body_len, int64_t now, int64_t tolerance_s, struct errbuf *e)
{
    const char *t = NULL, *v1[MAX_V1];
    size_t t_len = 0, v1_len[MAX_V1], nv1 = 0;
    int64_t ts = 0;
    char expect[2 * CRYPTO_SHA256_LEN + 1];
    int match = 0;

    if (header == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "missing Stripe-Signature header");
        return -1;
    }
    if (strlen(header) > 2048) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe-Signature header too long");
        return -1;
    }
    for (const char *p = header; *p;) {
        const char *end = strchr(p, ',');
        const char *eq;
        size_t len = end ? (size_t)(end - p) : strlen(p);
        eq = memchr(p, '=', len);
        if (eq == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "malformed Stripe-Signature header");
            return -1;
        }
        if (eq - p == 1 && p[0] == 't') {
            if (t != NULL) {
                errbuf_set(e, ERRBUF_PERMANENT, "Stripe-Signature has two timestamps");
                return -1;
            }
            t = eq + 1;
            t_len = len - 2;
        } else if (eq - p == 2 && p[0] == 'v' && p[1] == '1' && nv1 < MAX_V1) {
            v1[nv1] = eq + 1;
            v1_len[nv1++] = len - 3;
        }
        p += len;
        if (*p == ',')
            p++;
    }
    if (t == NULL || t_len == 0 || t_len > 12) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe-Signature without a valid timestamp");
        return -1;
    }
    for (size_t i = 0; i < t_len; i++) {
        if (t[i] < '0' || t[i] > '9') {
            errbuf_set(e, ERRBUF_PERMANENT, "Stripe-Signature without a valid timestamp");
            return -1;
        }
        ts = ts * 10 + (t[i] - '0');
    }
    if (nv1 == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe-Signature without a v1 signature");
        return -1;
    }
    mac_hex(secret, t, t_len, body, body_len, expect);
    /* Every candidate is compared so the time does not depend on which one matched. */
    for (size_t i = 0; i < nv1; i++)
        match |= crypto_equal(expect, strlen(expect), v1[i], v1_len[i]);
    if (!match) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe signature does not match");
        return -1;
    }
    if (ts > now + tolerance_s || ts < now - tolerance_s) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe signature timestamp outside the %llds tolerance",
                   (long long)tolerance_s);
        return -1;
    }
    return 0;
}

void stripe_signature_make(const char *secret, int64_t t, const char *body, size_t body_len,
                           char *out, size_t out_len)
{
    char ts[24], hex[2 * CRYPTO_SHA256_LEN + 1];
    int n = snprintf(ts, sizeof(ts), "%lld", (long long)t);

    mac_hex(secret, ts, (size_t)n, body, body_len, hex);
    snprintf(out, out_len, "t=%s,v1=%s", ts, hex);
}

/* The channel's validated configuration. */
struct stripe_conf {
    char *webhook_secret; /* the whole "whsec_..." string is the HMAC key */
    char *api_key;        /* secret key for the refund API; may be NULL */
    char *api_url;
};

static void stripe_config_free(void *p)
{
    struct stripe_conf *c = p;
    if (c == NULL)
        return;
    free(c->webhook_secret);
    free(c->api_key);
    free(c->api_url);
    free(c);
}

static void *stripe_config_load(const char *json, const char *where, const char *base_dir,
                                struct errbuf *e)
{
    struct stripe_conf *c = calloc(1, sizeof(*c));
    json_object *o = json_tokener_parse(json);

    if (c == NULL)
        abort();
    if (o == NULL ||
        jsonx_get_secret(o, "webhook_secret", where, base_dir, 1, &c->webhook_secret, e) != 0 ||
        jsonx_get_secret(o, "api_key", where, base_dir, 0, &c->api_key, e) != 0 ||
        jsonx_get_string(o, "api_url", where, 0, &c->api_url, e) != 0)
        goto fail;
    if (strncmp(c->webhook_secret, "whsec_", 6) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.webhook_secret: expected a whsec_... secret", where);
        goto fail;
    }
    if (c->api_url == NULL)
        c->api_url = xstrdup("https://api.stripe.com");
    if (jsonx_check_http_url(c->api_url, where, "api_url", e) != 0)
        goto fail;
    json_object_put(o);
    return c;
fail:
    json_object_put(o);
    stripe_config_free(c);
    return NULL;
}

static int stripe_verify(const void *conf, const struct channel_request *req, int64_t now,
                         struct errbuf *e)
{
    const struct stripe_conf *c = conf;
    return stripe_signature_verify(c->webhook_secret, req->header(req->ctx, "stripe-signature"),
                                   req->body, req->body_len, now, STRIPE_TOLERANCE_S, e);
}

static int copy_str(json_object *obj, const char *key, char *dst, size_t cap, int required,
                    struct errbuf *e)
{
    json_object *v;

    dst[0] = '\0';
    if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null)) {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: missing %s", key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
        (size_t)json_object_get_string_len(v) >= cap ||
        strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: %s is not a string of 1..%zu bytes", key,
                   cap - 1);
        return -1;
    }
    memcpy(dst, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
    return 0;
}

static const struct {
    const char *type;
    enum pay_event_kind kind;
} stripe_types[] = {
    {"payment_intent.succeeded", PAY_EVENT_SUCCEEDED},
    {"payment_intent.payment_failed", PAY_EVENT_FAILED},
    {"payment_intent.canceled", PAY_EVENT_CANCELED},
    {"payment_intent.processing", PAY_EVENT_PROCESSING},
};

static int stripe_parse(const void *conf, const char *body, size_t len, struct pay_event *ev,
                        struct errbuf *e)
{
    json_tokener *tok = json_tokener_new();
    json_object *root = NULL, *data, *obj, *meta, *v;
    int rc = -1;
    char cur[8];

    (void)conf;
    memset(ev, 0, sizeof(*ev));
    ev->amount = -1;
    ev->kind = PAY_EVENT_OTHER;
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    root = json_tokener_parse_ex(tok, body, (int)len);
    if (root == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        tok->char_offset != (int)len) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: body is not one JSON document");
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: not a JSON object");
        goto out;
    }
    if (copy_str(root, "id", ev->event_id, sizeof(ev->event_id), 1, e) != 0 ||
        copy_str(root, "type", ev->event_type, sizeof(ev->event_type), 1, e) != 0)
        goto out;
    if (!json_object_object_get_ex(root, "data", &data) ||
        !json_object_object_get_ex(data, "object", &obj) ||
        !json_object_is_type(obj, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: missing data.object");
        goto out;
    }
    for (size_t i = 0; i < sizeof(stripe_types) / sizeof(stripe_types[0]); i++)
        if (strcmp(ev->event_type, stripe_types[i].type) == 0)
            ev->kind = stripe_types[i].kind;
    if (json_object_object_get_ex(obj, "metadata", &meta) &&
        json_object_is_type(meta, json_type_object) &&
        copy_str(meta, "order_id", ev->order_id, sizeof(ev->order_id), 0, e) != 0)
        goto out;
    if (ev->kind == PAY_EVENT_OTHER) {
        rc = 0;
        goto out;
    }
    if (copy_str(obj, "id", ev->txn_id, sizeof(ev->txn_id), 1, e) != 0 ||
        copy_str(obj, "currency", cur, sizeof(cur), 1, e) != 0)
        goto out;
    if (money_currency_norm(cur, ev->currency) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: bad currency");
        goto out;
    }
    /* amount_received is what was actually captured; amount is what was asked. */
    if (!(ev->kind == PAY_EVENT_SUCCEEDED &&
          json_object_object_get_ex(obj, "amount_received", &v)) &&
        !json_object_object_get_ex(obj, "amount", &v)) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: missing amount");
        goto out;
    }
    /* json-c would silently truncate a double: insist on an integer. */
    /* json-c clamps integers beyond int64 to INT64_MAX: no real amount is that. */
    if (!json_object_is_type(v, json_type_int) || json_object_get_int64(v) < 0 ||
        json_object_get_int64(v) == INT64_MAX) {
        errbuf_set(e, ERRBUF_PERMANENT, "Stripe event: amount is not a non-negative integer");
        goto out;
    }
    ev->amount = json_object_get_int64(v);
    rc = 0;
out:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

/* ---- refund client: POST {api_url}/v1/refunds ---- */

struct body_buf {
    char data[8192];
    size_t len;
};

static size_t collect(char *ptr, size_t size, size_t n, void *arg)
{
    struct body_buf *b = arg;
    size_t take = size * n;

    /* Keep what fits: Stripe's answers are small and only the head is needed. */
    if (take > sizeof(b->data) - 1 - b->len)
        take = sizeof(b->data) - 1 - b->len;
    memcpy(b->data + b->len, ptr, take);
    b->len += take;
    b->data[b->len] = '\0';
    return size * n;
}

static void json_copy(json_object *o, const char *key, char *dst, size_t cap)
{
    json_object *v;
    if (o != NULL && json_object_object_get_ex(o, key, &v) &&
        json_object_is_type(v, json_type_string))
        snprintf(dst, cap, "%s", json_object_get_string(v));
}

static enum channel_call_status stripe_refund(const void *conf, const struct refund_request *r,
                                              struct refund_result *out)
{
    const struct stripe_conf *c = conf;
    CURL *h;
    struct curl_slist *hdr = NULL;
    struct body_buf resp = {.len = 0};
    char url[512], *form = NULL, *txn = NULL, *oid = NULL, auth[512], idem[160];
    long status = 0;
    CURLcode cc;
    enum channel_call_status rc = CHANNEL_CALL_RETRY;
    json_object *j = NULL, *err;

    memset(out, 0, sizeof(*out));
    resp.data[0] = '\0';
    if (c->api_key == NULL) {
        snprintf(out->error, sizeof(out->error), "channel has no api_key: cannot refund");
        return CHANNEL_CALL_REJECTED;
    }
    h = curl_easy_init();
    if (h == NULL) {
        snprintf(out->error, sizeof(out->error), "curl_easy_init failed");
        return CHANNEL_CALL_RETRY;
    }
    txn = curl_easy_escape(h, r->txn_id, 0);
    oid = curl_easy_escape(h, r->order_id, 0);
    if (txn == NULL || oid == NULL ||
        asprintf(&form, "payment_intent=%s&amount=%lld&reason=duplicate&metadata[order_id]=%s", txn,
                 (long long)r->amount, oid) < 0) {
        form = NULL;
        snprintf(out->error, sizeof(out->error), "out of memory");
        goto done;
    }
    snprintf(url, sizeof(url), "%s/v1/refunds", c->api_url);
    snprintf(auth, sizeof(auth), "Authorization: Bearer %s", c->api_key);
    /* Stripe keeps the answer to an Idempotency-Key for 24 h: a retry returns the same
     * refund instead of making a second one. */
    snprintf(idem, sizeof(idem), "Idempotency-Key: %s", r->refund_id);
    hdr = curl_slist_append(hdr, auth);
    hdr = curl_slist_append(hdr, idem);
    hdr = curl_slist_append(hdr, "Content-Type: application/x-www-form-urlencoded");
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdr);
    curl_easy_setopt(h, CURLOPT_POSTFIELDS, form);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
    curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, 15000L);
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, collect);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &resp);
    cc = curl_easy_perform(h);
    if (cc != CURLE_OK) {
        snprintf(out->error, sizeof(out->error), "stripe refund: %s", curl_easy_strerror(cc));
        goto done;
    }
    curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
    j = json_tokener_parse(resp.data);
    if (status >= 200 && status < 300) {
        json_copy(j, "id", out->provider_refund_id, sizeof(out->provider_refund_id));
        json_copy(j, "status", out->state, sizeof(out->state));
        if (out->provider_refund_id[0] == '\0') {
            snprintf(out->error, sizeof(out->error), "stripe refund: HTTP %ld without an id",
                     status);
            goto done;
        }
        /* "failed"/"canceled" refunds are final refusals; pending ones complete later. */
        if (strcmp(out->state, "failed") == 0 || strcmp(out->state, "canceled") == 0) {
            snprintf(out->error, sizeof(out->error), "stripe refund %s is %s",
                     out->provider_refund_id, out->state);
            rc = CHANNEL_CALL_REJECTED;
        } else {
            rc = CHANNEL_CALL_OK;
        }
        goto done;
    }
    if (j != NULL && json_object_object_get_ex(j, "error", &err))
        json_copy(err, "message", out->error, sizeof(out->error));
    if (out->error[0] == '\0')
        snprintf(out->error, sizeof(out->error), "stripe refund: HTTP %ld", status);
    /* 409 is an idempotency-key clash in flight; 429 and 5xx are worth another try. */
    rc = (status == 409 || status == 429 || status >= 500) ? CHANNEL_CALL_RETRY
                                                           : CHANNEL_CALL_REJECTED;
done:
    json_object_put(j);
    curl_slist_free_all(hdr);
    curl_free(txn);
    curl_free(oid);
    free(form);
    curl_easy_cleanup(h);
    return rc;
}

static const char *const stripe_headers[] = {"stripe-signature", NULL};

const struct channel_ops stripe_channel_ops = {
    .type = "stripe",
    .envelope_headers = stripe_headers,
    .config_load = stripe_config_load,
    .config_free = stripe_config_free,
    .verify = stripe_verify,
    .parse = stripe_parse,
    .refund = stripe_refund,
    .accept = {200, "application/json", "{\"received\":true}"},
    .reject = {400, "application/json",
               "{\"error\":{\"code\":\"bad_signature\",\"message\":\"rejected\"}}"},
};
