/* worker/notify.c: one thread per worker process consumes paynotify.notify; the HTTP
 * requests run in worker/webhook's own event loop so that a slow business endpoint never
 * holds back the others. A message is acked only after its attempt is recorded in MySQL.
 * A notification already DELIVERED is dropped without a request. */
#include "worker/notify.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/sig.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/db.h"
#include "store/orders.h"
#include "worker/stats.h"
#include "worker/webhook.h"

#define NOTIFY_PREFETCH 64

struct notifier {
    const struct cfg *cfg;
    struct worker_stats *stats;
    atomic_int *stop;
    atomic_int ready;
    pthread_t tid;
};

/* One webhook attempt in flight; travels through the engine as the request's user. */
struct attempt {
    uint64_t delivery_tag;
    unsigned conn_gen; /* the consumer connection the tag belongs to */
    struct notification n;
};

static char *xstrdup(const char *s)
{
    char *d = strdup(s);
    if (d == NULL)
        abort();
    return d;
}

char *notify_build_body(const struct notification *n, const struct order *o, size_t *len)
{
    char *data = orders_to_json(o), *out;
    int k;

    /* event_type and created_at are our own strings: no escaping needed. */
    k = asprintf(&out, "{\"type\":\"%s\",\"timestamp\":\"%s\",\"data\":%s}", n->event_type,
                 n->created_at, data);
    free(data);
    if (k < 0)
        abort();
    *len = (size_t)k;
    return out;
}

char **notify_build_headers(const struct cfg_business *b, const char *webhook_id,
                            int64_t timestamp, const char *body, size_t len)
{
    char **h = calloc(6, sizeof(char *));
    char sig[SIG_WEBHOOK_LEN];

    if (h == NULL)
        abort();
    sig_webhook_sign(b->webhook_key, b->webhook_key_len, webhook_id, timestamp, body, len, sig);
    if (asprintf(&h[0], "Content-Type: application/json") < 0 ||
        asprintf(&h[1], "webhook-id: %s", webhook_id) < 0 ||
        asprintf(&h[2], "webhook-timestamp: %lld", (long long)timestamp) < 0 ||
        asprintf(&h[3], "webhook-signature: %s", sig) < 0 ||
        asprintf(&h[4], "User-Agent: paynotify") < 0)
        abort();
    return h;
}

static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* Reads the notification and the order now, so that the webhook carries the order's
 * current state. 0 = submitted, 1 = nothing to send (acked), -1 = transient (requeue). */
static int start_attempt(struct notifier *nt, db_conn *db, webhook_engine *eng,
                         const struct mq_msg *m, unsigned gen, struct errbuf *e)
{
    struct attempt *a;
    struct order *o;
    const struct cfg_business *b;
    struct webhook_request req;
    int64_t id;
    int rc;

    if (outbox_message_parse(m->body, m->len, &id) != 0) {
        LOG_ERROR("notify_message_malformed", "message_id", m->message_id);
        return 1;
    }
    a = calloc(1, sizeof(*a));
    o = malloc(sizeof(*o));
    if (a == NULL || o == NULL)
        abort();
    a->delivery_tag = m->delivery_tag;
    a->conn_gen = gen;
    rc = outbox_get(db, id, &a->n, e);
    if (rc == 0)
        rc = orders_get(db, a->n.order_id, o, e);
    if (rc != 0) {
        if (rc == 1)
            LOG_ERROR("notify_row_missing", "message_id", m->message_id);
        free(a);
        free(o);
        return rc == 1 ? 1 : -1;
    }
    if (strcmp(a->n.status, "DELIVERED") == 0) {
        /* A redelivered or replayed copy: the business has it already. */
        metric_inc(nt->stats->webhooks_skipped);
        LOG_INFO("webhook_already_delivered", "order_id", a->n.order_id, "webhook_id",
                 a->n.webhook_id);
        free(a);
        free(o);
        return 1;
    }
    b = cfg_business_find(nt->cfg, a->n.business);
    if (b == NULL) {
        LOG_ERROR("notify_business_unknown", "order_id", a->n.order_id, "business",
                  a->n.business);
        free(a);
        free(o);
        return -1;
    }
    memset(&req, 0, sizeof(req));
    req.body = notify_build_body(&a->n, o, &req.body_len);
    req.headers = notify_build_headers(b, a->n.webhook_id, clock_now_ms() / 1000, req.body,
                                       req.body_len);
    req.url = xstrdup(a->n.notify_url);
    req.timeout_ms = (long)nt->cfg->notify_timeout_ms;
    req.user = a;
    free(o);
    if (webhook_engine_submit(eng, &req) != 0) {
        free(a);
        return -1;
    }
    metric_add(nt->stats->webhooks_in_flight, 1);
    return 0;
}

/* Records a finished attempt, then acks (or requeues when MySQL could not record it). */
static void finish_attempt(struct notifier *nt, db_conn *db, mq_conn *cons, unsigned gen,
                           const struct webhook_result *r)
{
    struct attempt *a = r->user;
    struct errbuf e = {0};
    char status[16], latency[24];
    int rc;

    metric_add(nt->stats->webhooks_in_flight, -1);
    metric_observe(nt->stats->webhook_seconds, (double)r->latency_us / 1e6);
    metric_inc(r->ok ? nt->stats->webhooks_delivered : nt->stats->webhooks_failed);
    snprintf(status, sizeof(status), "%ld", r->http_status);
    snprintf(latency, sizeof(latency), "%lld", (long long)(r->latency_us / 1000));
    if (r->ok)
        LOG_INFO("webhook_delivered", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "http_status", status, "latency_ms", latency);
    else
        LOG_WARN("webhook_failed", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "url", a->n.notify_url, "http_status", status, "error", r->error,
                 "response", r->body_head);
    rc = outbox_record_attempt(db, &a->n, r->ok, r->http_status, r->error, &e);
    if (rc != 0)
        LOG_WARN("notify_record_failed", "order_id", a->n.order_id, "error", e.msg);
    /* A tag from an older connection is void: the broker already requeued that message. */
    if (cons != NULL && gen == a->conn_gen) {
        if (rc == 0)
            rc = mq_ack(cons, a->delivery_tag, &e);
        else
            rc = mq_nack(cons, a->delivery_tag, 1, &e);
        if (rc != 0)
            LOG_WARN("broker_ack_failed", "error", e.msg);
    }
    free(a);
}

static void *thread_main(void *arg)
{
    struct notifier *nt = arg;
    const struct cfg *cfg = nt->cfg;
    struct webhook_opts wo = {.max_in_flight = 256, .user_agent = "paynotify"};
    struct errbuf e = {0};
    webhook_engine *eng;
    db_conn *db = NULL;
    mq_conn *cons = NULL;
    unsigned gen = 0;
    int64_t drain_deadline = 0;

    db_thread_init();
    eng = webhook_engine_start(&wo, &e);
    if (eng == NULL) {
        LOG_ERROR("webhook_engine_failed", "error", e.msg);
        db_thread_end();
        return NULL;
    }
    for (;;) {
        struct webhook_result r;
        struct mq_msg m;
        int rc, stopping = atomic_load(nt->stop);

        if (stopping) {
            /* Stop taking work; give requests in flight the notify timeout to finish. */
            if (drain_deadline == 0)
                drain_deadline = clock_mono_ms() + cfg->notify_timeout_ms + 1000;
            if (webhook_engine_in_flight(eng) == 0 || clock_mono_ms() > drain_deadline)
                break;
        }
        while (webhook_engine_poll(eng, &r) == 1)
            finish_attempt(nt, db, cons, gen, &r);
        if (db == NULL && (db = db_open(cfg->mysql_url, 5000, &e)) == NULL) {
            atomic_store(&nt->ready, 0);
            LOG_WARN("mysql_unavailable", "error", e.msg);
            sleep_ms(1000);
            continue;
        }
        if (stopping) {
            webhook_engine_wait(eng, 100);
            continue;
        }
        if (cons == NULL) {
            cons = mq_open(cfg->amqp_url, 5000, &e);
            if (cons == NULL ||
                mq_declare_topology(cons, cfg->queue_type, cfg->retry_delays_ms,
                                    cfg->n_retry_delays, &e) != 0 ||
                mq_consume_start(cons, TOPOLOGY_NOTIFY, NOTIFY_PREFETCH, &e) != 0) {
                LOG_WARN("broker_unavailable", "error", e.msg);
                mq_close(cons);
                cons = NULL;
                atomic_store(&nt->ready, 0);
                sleep_ms(1000);
                continue;
            }
            gen++;
        }
        atomic_store(&nt->ready, 1);
        memset(&m, 0, sizeof(m));
        rc = mq_consume_next(cons, webhook_engine_in_flight(eng) > 0 ? 10 : 200, &m, &e);
        if (rc == 1)
            continue;
        if (rc < 0) {
            LOG_WARN("broker_consume_failed", "error", e.msg);
            mq_close(cons);
            cons = NULL;
            continue;
        }
        rc = start_attempt(nt, db, eng, &m, gen, &e);
        if (rc == 1)
            rc = mq_ack(cons, m.delivery_tag, &e);
        else if (rc < 0)
            rc = mq_nack(cons, m.delivery_tag, 1, &e);
        mq_msg_free(&m);
        if (rc < 0) {
            LOG_WARN("broker_ack_failed", "error", e.msg);
            mq_close(cons);
            cons = NULL;
        }
    }
    atomic_store(&nt->ready, 0);
    webhook_engine_stop(eng, 0);
    {
        struct webhook_result r;
        /* Aborted attempts: record them and let the broker requeue the messages. */
        while (webhook_engine_poll(eng, &r) == 1)
            finish_attempt(nt, db, NULL, gen, &r);
    }
    webhook_engine_free(eng);
    mq_close(cons);
    db_close(db);
    db_thread_end();
    return NULL;
}

notifier *notifier_start(const struct cfg *cfg, struct worker_stats *stats, atomic_int *stop)
{
    notifier *nt = calloc(1, sizeof(*nt));

    if (nt == NULL)
        abort();
    nt->cfg = cfg;
    nt->stats = stats;
    nt->stop = stop;
    if (pthread_create(&nt->tid, NULL, thread_main, nt) != 0) {
        free(nt);
        return NULL;
    }
    return nt;
}

int notifier_ready(const notifier *nt)
{
    return atomic_load(&nt->ready);
}

void notifier_join(notifier *nt)
{
    if (nt == NULL)
        return;
    pthread_join(nt->tid, NULL);
    free(nt);
}
