/* receiver/orders_api.c: the business API. POST /v1/orders and GET /v1/orders/{id},
 * authenticated by a per-business Bearer key. Validation happens on the loop thread;
 * MySQL runs in libuv's thread pool so the loop never blocks. */
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/httpd.h"
#include "common/log.h"
#include "common/money.h"
#include "receiver/app.h"
#include "store/orders.h"
#include "common/xalloc.h"

struct order_work {
    uv_work_t work;
    struct receiver_app *app;
    httpd_req *req;
    const struct cfg_business *biz;
    /* create */
    struct order_new q;
    char *strings[ORDERS_API_STRINGS]; /* owned copies behind q */
    /* get */
    char order_id[64];
    /* result */
    int rc;
    struct order order;
    struct errbuf e;
};

static const struct cfg_business *authenticate(struct receiver_app *a, httpd_req *req)
{
    const char *h = httpd_req_header(req, "authorization");
    const struct cfg_business *b = NULL;

    if (h != NULL && strncmp(h, "Bearer ", 7) == 0)
        b = cfg_business_by_api_key(a->cfg, h + 7);
    if (b == NULL) {
        metric_inc(a->unauthorized);
        httpd_reply_error(req, 401, "unauthorized", "missing or invalid API key");
    }
    return b;
}

static void reply_order(httpd_req *req, int status, const struct order *o)
{
    char *body = orders_to_json(o);
    httpd_reply(req, status, "application/json", body, strlen(body), NULL);
    free(body);
}

static void work_free(struct order_work *w)
{
    for (size_t i = 0; i < sizeof(w->strings) / sizeof(w->strings[0]); i++)
        free(w->strings[i]);
    free(w);
}

/* ---- POST /v1/orders ---- */

static void create_run(uv_work_t *uw)
{
    struct order_work *w = uw->data;
    db_conn *db = receiver_db_take(w->app, &w->e);

    w->rc = db ? orders_create(db, &w->q, &w->order, &w->e) : -1;
    receiver_db_give(w->app, db);
}

static void create_done(uv_work_t *uw, int status)
{
    struct order_work *w = uw->data;
    struct receiver_app *a = w->app;

    if (status != 0 || w->rc < 0) {
        LOG_ERROR("order_create_failed", "business", w->biz->name, "error", w->e.msg);
        httpd_reply_error(w->req, 503, "unavailable", "database unavailable, retry later");
    } else if (w->rc == ORDERS_CREATED) {
        metric_inc(a->orders_created);
        LOG_INFO("order_created", "order_id", w->order.id, "business", w->biz->name,
                 "business_order_id", w->order.business_order_id);
        reply_order(w->req, 201, &w->order);
    } else if (w->rc == ORDERS_EXISTS) {
        metric_inc(a->orders_existing);
        reply_order(w->req, 200, &w->order);
    } else {
        metric_inc(a->orders_conflict);
        httpd_reply_error(w->req, 409, "conflict",
                          "business_order_id already used for an order with other content");
    }
    work_free(w);
}

/* Copies a string member into w->strings[slot]. 0 ok; -1 with msg set. */
static int take_string(json_object *o, const char *key, int required, size_t max, char **strings,
                       int slot, const char **out, char *msg, size_t mlen)
{
    json_object *v;

    *out = NULL;
    if (!json_object_object_get_ex(o, key, &v) || json_object_is_type(v, json_type_null)) {
        if (required) {
            snprintf(msg, mlen, "%s is required", key);
            return -1;
        }
        return 0;
    }
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0 ||
        (size_t)json_object_get_string_len(v) > max) {
        snprintf(msg, mlen, "%s must be a string of 1..%zu characters", key, max);
        return -1;
    }
    if (strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
        snprintf(msg, mlen, "%s must not contain NUL", key);
        return -1;
    }
    strings[slot] = xstrdup(json_object_get_string(v));
    *out = strings[slot];
    return 0;
}

static int prefix_allowed(const struct cfg_business *b, const char *url)
{
    for (size_t i = 0; i < b->n_prefixes; i++)
        if (strncmp(url, b->notify_url_prefixes[i], strlen(b->notify_url_prefixes[i])) == 0)
            return 1;
    return 0;
}

/* 0 valid; 400 malformed; 422 semantically wrong (msg says which field). */
int orders_api_parse_create(const char *body, size_t len, const struct cfg_business *biz,
                            const struct channels *chans, struct order_new *q,
                            char *strings[ORDERS_API_STRINGS], char *msg, size_t mlen)
{
    json_tokener *tok = json_tokener_new();
    json_object *o, *v;
    const char *cur = NULL, *expire = NULL;
    char norm[4];
    int rc = 422;

    /* Strict JSON, valid UTF-8 only: what we store and send on must be clean. */
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT | JSON_TOKENER_VALIDATE_UTF8);
    o = json_tokener_parse_ex(tok, body, (int)len);
    if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        tok->char_offset != (int)len || !json_object_is_type(o, json_type_object)) {
        snprintf(msg, mlen, "body must be one JSON object");
        rc = 400;
        goto out;
    }
    if (take_string(o, "business_order_id", 1, 128, strings, 0, &q->business_order_id, msg, mlen) ||
        take_string(o, "currency", 1, 3, strings, 1, &cur, msg, mlen) ||
        take_string(o, "channel", 1, 64, strings, 2, &q->channel, msg, mlen) ||
        take_string(o, "subject", 1, 256, strings, 3, &q->subject, msg, mlen) ||
        take_string(o, "notify_url", 1, 2048, strings, 4, &q->notify_url, msg, mlen) ||
        take_string(o, "cancel_url", 0, 2048, strings, 5, &q->cancel_url, msg, mlen))
        goto out;
    if (!json_object_object_get_ex(o, "amount", &v) || !json_object_is_type(v, json_type_int) ||
        json_object_get_int64(v) <= 0 || json_object_get_int64(v) == INT64_MAX) {
        snprintf(msg, mlen, "amount must be a positive integer in minor units");
        goto out;
    }
    q->amount = json_object_get_int64(v);
    if (money_currency_norm(cur, norm) != 0) {
        snprintf(msg, mlen, "currency must be an ISO 4217 code such as CNY or USD");
        goto out;
    }
    memcpy(strings[1], norm, 4);
    q->currency = strings[1];
    if (channels_find(chans, q->channel) == NULL) {
        snprintf(msg, mlen, "channel %.64s is not configured", q->channel);
        goto out;
    }
    if (!prefix_allowed(biz, q->notify_url)) {
        snprintf(msg, mlen, "notify_url must start with one of the business's notify_url_prefixes");
        goto out;
    }
    if (q->cancel_url != NULL && strncmp(q->cancel_url, "https://", 8) != 0 &&
        strncmp(q->cancel_url, "http://", 7) != 0) {
        snprintf(msg, mlen, "cancel_url must be an http(s) URL");
        goto out;
    }
    if (json_object_object_get_ex(o, "expire_at", &v) && !json_object_is_type(v, json_type_null)) {
        if (!json_object_is_type(v, json_type_string) ||
            clock_parse_rfc3339((expire = json_object_get_string(v)), &q->expire_at_ms) != 0) {
            snprintf(msg, mlen, "expire_at must be an RFC 3339 time");
            goto out;
        }
    }
    rc = 0;
out:
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

void orders_api_create(struct receiver_app *a, httpd_req *req)
{
    const struct cfg_business *b = authenticate(a, req);
    struct order_work *w;
    char msg[256];
    const char *body;
    size_t len;
    int rc;

    if (b == NULL)
        return;
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->app = a;
    w->req = req;
    w->biz = b;
    w->q.business = b->name;
    body = httpd_req_body(req, &len);
    rc = orders_api_parse_create(body, len, b, a->chans, &w->q, w->strings, msg, sizeof(msg));
    if (rc != 0) {
        metric_inc(a->orders_invalid);
        httpd_reply_error(req, rc, rc == 400 ? "bad_request" : "invalid_order", msg);
        work_free(w);
        return;
    }
    w->work.data = w;
    if (uv_queue_work(a->loop, &w->work, create_run, create_done) != 0) {
        httpd_reply_error(req, 503, "unavailable", "cannot schedule work");
        work_free(w);
    }
}

/* ---- GET /v1/orders/{id} ---- */

static void get_run(uv_work_t *uw)
{
    struct order_work *w = uw->data;
    db_conn *db = receiver_db_take(w->app, &w->e);

    w->rc = db ? orders_get(db, w->order_id, &w->order, &w->e) : -1;
    receiver_db_give(w->app, db);
}

static void get_done(uv_work_t *uw, int status)
{
    struct order_work *w = uw->data;

    if (status != 0 || w->rc < 0) {
        LOG_ERROR("order_get_failed", "order_id", w->order_id, "error", w->e.msg);
        httpd_reply_error(w->req, 503, "unavailable", "database unavailable, retry later");
    } else if (w->rc == 1 || strcmp(w->order.business, w->biz->name) != 0) {
        /* Another business's order looks exactly like a missing one. */
        httpd_reply_error(w->req, 404, "not_found", "no such order");
    } else {
        reply_order(w->req, 200, &w->order);
    }
    work_free(w);
}

void orders_api_get(struct receiver_app *a, httpd_req *req, const char *order_id)
{
    const struct cfg_business *b = authenticate(a, req);
    struct order_work *w;

    if (b == NULL)
        return;
    if (strlen(order_id) >= 33) {
        httpd_reply_error(req, 404, "not_found", "no such order");
        return;
    }
    w = calloc(1, sizeof(*w));
    if (w == NULL)
        abort();
    w->app = a;
    w->req = req;
    w->biz = b;
    snprintf(w->order_id, sizeof(w->order_id), "%s", order_id);
    w->work.data = w;
    if (uv_queue_work(a->loop, &w->work, get_run, get_done) != 0) {
        httpd_reply_error(req, 503, "unavailable", "cannot schedule work");
        work_free(w);
    }
}
