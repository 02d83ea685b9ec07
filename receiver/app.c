/* receiver/app.c: routing, health, readiness, metrics and the connection pool. */
#include "receiver/app.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/cfg.h"
#include "common/httpd.h"
#include "queue/publisher.h"
#include "store/db.h"
#include "store/kv.h"

void receiver_app_init(struct receiver_app *a, const struct cfg *cfg, const struct channels *chans,
                       uv_loop_t *loop)
{
    memset(a, 0, sizeof(*a));
    a->cfg = cfg;
    a->chans = chans;
    a->loop = loop;
    pthread_mutex_init(&a->conns.lock, NULL);
    a->conns.cap = 64;
    a->conns.db = calloc((size_t)a->conns.cap, sizeof(db_conn *));
    a->conns.kv = calloc((size_t)a->conns.cap, sizeof(kv_conn *));
    a->reg = metrics_new();
    a->chan = calloc(cfg->n_channels, sizeof(*a->chan));
    if (a->conns.db == NULL || a->conns.kv == NULL || a->chan == NULL)
        abort();
    for (size_t i = 0; i < cfg->n_channels; i++) {
        char labels[160];
        const char *help = "Provider callbacks by channel and outcome.";
        const char *name = "paynotify_receiver_callbacks_total";
#define SERIES(field, outcome)                                                 \
    snprintf(labels, sizeof(labels), "channel=\"%s\",outcome=\"" outcome "\"", \
             cfg->channels[i].name);                                           \
    a->chan[i].field = metrics_counter(a->reg, name, help, labels)
        SERIES(received, "received");
        SERIES(accepted, "accepted");
        SERIES(rejected, "rejected");
        SERIES(unavailable, "unavailable");
#undef SERIES
    }
    a->confirm_seconds =
        metrics_histogram(a->reg, "paynotify_receiver_publish_confirm_seconds",
                          "From publish to the broker's confirm, for accepted callbacks.", NULL,
                          METRICS_LATENCY_BUCKETS, METRICS_LATENCY_BUCKETS_N);
    a->orders_created = metrics_counter(a->reg, "paynotify_receiver_orders_total",
                                        "POST /v1/orders by outcome.", "outcome=\"created\"");
    a->orders_existing =
        metrics_counter(a->reg, "paynotify_receiver_orders_total", NULL, "outcome=\"existing\"");
    a->orders_conflict =
        metrics_counter(a->reg, "paynotify_receiver_orders_total", NULL, "outcome=\"conflict\"");
    a->orders_invalid =
        metrics_counter(a->reg, "paynotify_receiver_orders_total", NULL, "outcome=\"invalid\"");
    a->unauthorized = metrics_counter(a->reg, "paynotify_receiver_unauthorized_total",
                                      "Business API requests without a valid API key.", NULL);
}

void receiver_app_free(struct receiver_app *a)
{
    for (int i = 0; i < a->conns.n_db; i++)
        db_close(a->conns.db[i]);
    for (int i = 0; i < a->conns.n_kv; i++)
        kv_close(a->conns.kv[i]);
    free(a->conns.db);
    free(a->conns.kv);
    pthread_mutex_destroy(&a->conns.lock);
    metrics_free(a->reg);
    free(a->chan);
}

db_conn *receiver_db_take(struct receiver_app *a, struct errbuf *e)
{
    db_conn *db = NULL;

    /* libuv's pool threads are not ours: make each one known to the client library. */
    db_thread_init();
    pthread_mutex_lock(&a->conns.lock);
    if (a->conns.n_db > 0)
        db = a->conns.db[--a->conns.n_db];
    pthread_mutex_unlock(&a->conns.lock);
    if (db == NULL)
        db = db_open(a->cfg->mysql_url, 3000, e);
    return db;
}

void receiver_db_give(struct receiver_app *a, db_conn *db)
{
    if (db == NULL)
        return;
    pthread_mutex_lock(&a->conns.lock);
    if (a->conns.n_db < a->conns.cap) {
        a->conns.db[a->conns.n_db++] = db;
        db = NULL;
    }
    pthread_mutex_unlock(&a->conns.lock);
    db_close(db);
}

kv_conn *receiver_kv_take(struct receiver_app *a, struct errbuf *e)
{
    kv_conn *kv = NULL;

    pthread_mutex_lock(&a->conns.lock);
    if (a->conns.n_kv > 0)
        kv = a->conns.kv[--a->conns.n_kv];
    pthread_mutex_unlock(&a->conns.lock);
    if (kv == NULL)
        kv = kv_open(a->cfg->redis_url, 1000, e);
    return kv;
}

void receiver_kv_give(struct receiver_app *a, kv_conn *kv)
{
    if (kv == NULL)
        return;
    pthread_mutex_lock(&a->conns.lock);
    if (a->conns.n_kv < a->conns.cap) {
        a->conns.kv[a->conns.n_kv++] = kv;
        kv = NULL;
    }
    pthread_mutex_unlock(&a->conns.lock);
    kv_close(kv);
}

/* ---- readiness: broker (publisher connected), MySQL and Redis pinged off the loop ---- */

struct ready_work {
    uv_work_t work;
    struct receiver_app *app;
    httpd_req *req;
    int db_ok, kv_ok;
    char db_err[256], kv_err[256];
};

static void ready_run(uv_work_t *w)
{
    struct ready_work *r = w->data;
    struct errbuf e = {0};
    db_conn *db = receiver_db_take(r->app, &e);
    kv_conn *kv;

    r->db_ok = db != NULL && db_ping(db, &e) == 0;
    if (!r->db_ok)
        snprintf(r->db_err, sizeof(r->db_err), "%s", e.msg);
    receiver_db_give(r->app, db);
    kv = receiver_kv_take(r->app, &e);
    r->kv_ok = kv != NULL && kv_ping(kv, &e) == 0;
    if (!r->kv_ok)
        snprintf(r->kv_err, sizeof(r->kv_err), "%s", e.msg);
    receiver_kv_give(r->app, kv);
}

static void ready_done(uv_work_t *w, int status)
{
    struct ready_work *r = w->data;
    int broker = publisher_is_connected(r->app->pub);
    int ok = status == 0 && broker && r->db_ok && r->kv_ok;
    char body[256];
    int n =
        snprintf(body, sizeof(body), "{\"status\":\"%s\",\"broker\":%s,\"mysql\":%s,\"redis\":%s}",
                 ok ? "ok" : "unavailable", broker ? "true" : "false", r->db_ok ? "true" : "false",
                 r->kv_ok ? "true" : "false");
    httpd_reply(r->req, ok ? 200 : 503, "application/json", body, (size_t)n, NULL);
    free(r);
}

static void readyz(struct receiver_app *a, httpd_req *req)
{
    struct ready_work *r = calloc(1, sizeof(*r));

    if (r == NULL)
        abort();
    r->app = a;
    r->req = req;
    r->work.data = r;
    if (uv_queue_work(a->loop, &r->work, ready_run, ready_done) != 0) {
        free(r);
        httpd_reply_error(req, 503, "unavailable", "cannot schedule readiness check");
    }
}

void receiver_route(httpd_req *req, void *arg)
{
    struct receiver_app *a = arg;
    const char *m = httpd_req_method(req), *p = httpd_req_path(req);
    int get = strcmp(m, "GET") == 0, post = strcmp(m, "POST") == 0;

    if (strcmp(p, "/healthz") == 0 && get) {
        httpd_reply(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (strcmp(p, "/readyz") == 0 && get) {
        if (a->stopping)
            httpd_reply_error(req, 503, "stopping", "shutting down");
        else
            readyz(a, req);
    } else if (strcmp(p, "/metrics") == 0 && get) {
        char *text = metrics_render(a->reg);
        httpd_reply(req, 200, "text/plain; version=0.0.4", text, strlen(text), NULL);
        free(text);
    } else if (strncmp(p, "/v1/callbacks/", 14) == 0 && p[14] != '\0' &&
               strchr(p + 14, '/') == NULL) {
        if (post)
            intake_callback(a, req, p + 14);
        else
            httpd_reply_error(req, 405, "method_not_allowed", "use POST");
    } else if (strcmp(p, "/v1/orders") == 0) {
        if (post)
            orders_api_create(a, req);
        else
            httpd_reply_error(req, 405, "method_not_allowed", "use POST");
    } else if (strncmp(p, "/v1/orders/", 11) == 0 && p[11] != '\0' && strchr(p + 11, '/') == NULL) {
        if (get)
            orders_api_get(a, req, p + 11);
        else
            httpd_reply_error(req, 405, "method_not_allowed", "use GET");
    } else {
        httpd_reply_error(req, 404, "not_found", "no such route");
    }
}
