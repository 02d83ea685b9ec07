/* receiver/app.h: the receiver's shared state, owned by cmd/receiver/main.c and used by
 * the route handlers on the loop thread (and, for database work, the libuv thread pool). */
#ifndef PAYNOTIFY_RECEIVER_APP_H
#define PAYNOTIFY_RECEIVER_APP_H

#include <pthread.h>
#include <uv.h>

#include "common/metrics.h"

struct cfg;
struct channels;
struct errbuf;
typedef struct httpd_req httpd_req;
typedef struct publisher publisher;
typedef struct db_conn db_conn;
typedef struct kv_conn kv_conn;

struct channel_stats {
    metric *received, *accepted, *rejected, *unavailable;
};

/* MySQL and Redis connections for thread-pool work: taken and given back under a lock,
 * so each is used by one thread at a time. */
struct conn_pool {
    pthread_mutex_t lock;
    db_conn **db;
    kv_conn **kv;
    int n_db, n_kv, cap;
};

struct receiver_app {
    const struct cfg *cfg;
    const struct channels *chans; /* loaded from cfg at start */
    uv_loop_t *loop;
    publisher *pub;
    struct conn_pool conns;
    metrics *reg;
    struct channel_stats *chan; /* parallel to cfg->channels */
    metric *confirm_seconds;
    metric *orders_created, *orders_existing, *orders_conflict, *orders_invalid;
    metric *unauthorized;
    int stopping;
};

void receiver_app_init(struct receiver_app *a, const struct cfg *cfg, const struct channels *chans,
                       uv_loop_t *loop);
void receiver_app_free(struct receiver_app *a);
/* The httpd handler: dispatches every route. arg is the app. */
void receiver_route(httpd_req *req, void *arg);

/* Connection pool (any thread). NULL + *e when a new connection cannot be opened. */
db_conn *receiver_db_take(struct receiver_app *a, struct errbuf *e);
void receiver_db_give(struct receiver_app *a, db_conn *db);
kv_conn *receiver_kv_take(struct receiver_app *a, struct errbuf *e);
void receiver_kv_give(struct receiver_app *a, kv_conn *kv);

struct cfg_business;
struct order_new;

/* Pure validation of a POST /v1/orders body for business biz (borrowed): 0 valid, with q
 * filled and its strings owned by strings[] (caller frees each, also on error); 400 not one
 * strict UTF-8 JSON object; 422 a field is wrong. msg names the field. */
#define ORDERS_API_STRINGS 6
int orders_api_parse_create(const char *body, size_t len, const struct cfg_business *biz,
                            const struct channels *chans, struct order_new *q,
                            char *strings[ORDERS_API_STRINGS], char *msg, size_t mlen);

/* Route handlers (loop thread). */
void intake_callback(struct receiver_app *a, httpd_req *req, const char *channel);
void orders_api_create(struct receiver_app *a, httpd_req *req);
void orders_api_get(struct receiver_app *a, httpd_req *req, const char *order_id);

#endif
