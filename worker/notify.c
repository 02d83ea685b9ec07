/* worker/notify.c: one thread per worker process consumes paynotify.notify; the HTTP
 * requests run in worker/webhook's own event loop so that a slow business endpoint never
 * holds back the others. A message is acked only after its attempt is recorded in MySQL.
 * A notification already DELIVERED is dropped without a request. */
#include "worker/notify.h"

#include <json-c/json.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/cfg.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "common/sig.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/alerts.h"
#include "store/db.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "worker/retry.h"
#include "worker/stats.h"
#include "worker/webhook.h"
#include "common/xalloc.h"

#define NOTIFY_PREFETCH 64
/* Webhooks one endpoint may hold in this worker (running + waiting for one of its 16
 * connection slots). Beyond that, new messages for it go back to the first delay queue for
 * NOTIFY_DEFER_MS instead of sitting in the prefetch window, where they would keep other
 * businesses' webhooks from being consumed at all. No attempt is counted for a deferral. */
#define NOTIFY_HELD_PER_ENDPOINT 32
#define NOTIFY_DEFER_MS 1000
#define NOTIFY_ENDPOINTS 64

struct notifier {
    const struct cfg *cfg;
    struct worker_stats *stats;
    atomic_int *stop;
    atomic_int ready;
    pthread_t tid;
    unsigned seed;          /* jitter; used by the notify thread only */
    int64_t pause_until_ms; /* MySQL failed: take no new work until then (notify thread only) */
    struct {
        char key[160];             /* scheme://host:port of notify URLs */
        int held;                  /* attempts submitted and not finished */
    } endpoints[NOTIFY_ENDPOINTS]; /* notify thread only */
};

/* One webhook attempt in flight; travels through the engine as the request's user. */
struct attempt {
    uint64_t delivery_tag;
    unsigned conn_gen; /* the consumer connection the tag belongs to */
    int endpoint;      /* index in notifier.endpoints, -1 when not tracked */
    struct notification n;
};

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

char **notify_build_headers(const struct cfg_business *b, const char *webhook_id, int64_t timestamp,
                            const char *body, size_t len)
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

static int give_up(struct notifier *nt, db_conn *db, mq_conn **pub, const struct attempt *a,
                   int attempts, const char *last_error, struct errbuf *e);

/* The slot of url's endpoint (scheme://authority), or -1 when the table is full. */
static int endpoint_slot(struct notifier *nt, const char *url)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
    char key[160];
    int free_slot = -1;

    snprintf(key, sizeof(key), "%.*s", (int)n, url);
    for (int i = 0; i < NOTIFY_ENDPOINTS; i++) {
        if (strcmp(nt->endpoints[i].key, key) == 0)
            return i;
        if (free_slot < 0 && nt->endpoints[i].held == 0)
            free_slot = i;
    }
    if (free_slot >= 0)
        snprintf(nt->endpoints[free_slot].key, sizeof(nt->endpoints[free_slot].key), "%s", key);
    return free_slot;
}

/* Reads the notification and the order now, so that the webhook carries the order's
 * current state. 0 = submitted, 1 = nothing to send (acked), -1 = transient (requeue). */
static int start_attempt(struct notifier *nt, db_conn *db, mq_conn **pub, webhook_engine *eng,
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
        return 2;
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
    if (rc < 0)
        nt->pause_until_ms = clock_mono_ms() + 1000;
    if (rc != 0) {
        if (rc == 1)
            LOG_ERROR("notify_row_missing", "message_id", m->message_id);
        free(a);
        free(o);
        return rc == 1 ? 1 : -1;
    }
    if (strcmp(a->n.status, "PENDING") != 0) {
        /* A redelivered or replayed copy of a DELIVERED (or given-up FAILED) notification:
         * the business has it already, or an operator must reset it first. */
        metric_inc(nt->stats->webhooks_skipped);
        LOG_INFO("webhook_already_delivered", "order_id", a->n.order_id, "webhook_id",
                 a->n.webhook_id);
        free(a);
        free(o);
        return 1;
    }
    b = cfg_business_find(nt->cfg, a->n.business);
    if (b == NULL) {
        /* Removed from the configuration: retrying cannot help. Dead, FAILED and an alert,
         * so that an operator can fix the configuration and replay it. */
        char why[160];
        snprintf(why, sizeof(why), "business %.64s is not configured", a->n.business);
        LOG_ERROR("notify_business_unknown", "order_id", a->n.order_id, "business", a->n.business);
        rc = give_up(nt, db, pub, a, a->n.attempts, why, e) == 0 ? 1 : -1;
        free(a);
        free(o);
        return rc;
    }
    a->endpoint = endpoint_slot(nt, a->n.notify_url);
    if (a->endpoint >= 0 && nt->endpoints[a->endpoint].held >= NOTIFY_HELD_PER_ENDPOINT) {
        free(a);
        free(o);
        return 3; /* deferred: the endpoint is saturated */
    }
    memset(&req, 0, sizeof(req));
    req.body = notify_build_body(&a->n, o, &req.body_len);
    req.headers =
        notify_build_headers(b, a->n.webhook_id, clock_now_ms() / 1000, req.body, req.body_len);
    req.url = xstrdup(a->n.notify_url);
    req.timeout_ms = (long)nt->cfg->notify_timeout_ms;
    req.allow_private = b->allow_private_network;
    req.user = a;
    free(o);
    if (webhook_engine_submit(eng, &req) != 0) {
        free(a);
        return -1;
    }
    if (a->endpoint >= 0)
        nt->endpoints[a->endpoint].held++;
    metric_add(nt->stats->webhooks_in_flight, 1);
    return 0;
}

/* Publishes a message confirmed on the notify thread's publishing connection, opening it
 * when needed. */
static int publish(struct notifier *nt, mq_conn **pub, const char *queue, const char *body,
                   const char *message_id, int64_t expiration_ms, struct errbuf *e)
{
    if (*pub == NULL && (*pub = mq_open(nt->cfg->amqp_url, 5000, e)) == NULL)
        return -1;
    if (mq_publish_confirmed_exp(*pub, queue, body, strlen(body), message_id, expiration_ms,
                                 (int)nt->cfg->confirm_timeout_ms, e) == 0)
        return 0;
    if (mq_failed(*pub)) {
        mq_close(*pub);
        *pub = NULL;
    }
    return -1;
}

/* Retries exhausted: the message goes to the dead queue, the notification and the order
 * become FAILED and one alert is queued, in that order, so that a crash at any point
 * repeats a step instead of skipping one. */
static int give_up(struct notifier *nt, db_conn *db, mq_conn **pub, const struct attempt *a,
                   int attempts, const char *last_error, struct errbuf *e)
{
    char body[1024], subject[256], text[4096], first[32] = "", dedup[128];
    json_object *o = json_object_new_object();
    int rc = -1;

    json_object_object_add(o, "notification_id", json_object_new_int64(a->n.id));
    json_object_object_add(o, "order_id", json_object_new_string(a->n.order_id));
    json_object_object_add(o, "business", json_object_new_string(a->n.business));
    json_object_object_add(o, "webhook_id", json_object_new_string(a->n.webhook_id));
    json_object_object_add(o, "attempts", json_object_new_int(attempts));
    json_object_object_add(o, "last_error", json_object_new_string(last_error));
    snprintf(body, sizeof(body), "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    if (publish(nt, pub, TOPOLOGY_NOTIFY_DEAD, body, a->n.webhook_id, 0, e) != 0)
        return -1;
    outbox_first_attempt_at(db, a->n.id, first, sizeof(first), e);
    snprintf(subject, sizeof(subject), "paynotify: webhook for order %s failed after %d attempts",
             a->n.order_id, attempts);
    snprintf(text, sizeof(text),
             "A business webhook could not be delivered after all retries.\n\n"
             "order:         %s\nbusiness:      %s\nevent:         %s\nwebhook id:    %s\n"
             "notify URL:    %s\nattempts:      %d\nlast error:    %s\nfirst attempt: %s\n",
             a->n.order_id, a->n.business, a->n.event_type, a->n.webhook_id, a->n.notify_url,
             attempts, last_error, first[0] ? first : "unknown");
    snprintf(dedup, sizeof(dedup), "notify_failed:%s", a->n.webhook_id);
    if (db_begin(db, e) != 0)
        return -1;
    if (outbox_mark_failed(db, &a->n, e) == 0 &&
        alerts_enqueue(db, "notify_failed", dedup, a->n.business, a->n.order_id, subject, text,
                       e) >= 0)
        rc = db_commit(db, e);
    if (rc != 0)
        db_rollback(db);
    return rc;
}

/* Records a finished attempt; then acks a delivery, moves a failure to its delay queue (or
 * to the dead queue when retries are exhausted) before acking it, or requeues the message
 * when any of that could not be done. Nothing is acked that was neither delivered nor
 * moved on. */
static void finish_attempt(struct notifier *nt, db_conn *db, mq_conn *cons, mq_conn **pub,
                           unsigned gen, const struct webhook_result *r)
{
    struct attempt *a = r->user;
    struct errbuf e = {0};
    struct outbox_attempt rec;
    struct retry_decision plan;
    char status[16], latency[24], attempt_s[16];
    int rc, attempts = 0, done = 0;

    metric_add(nt->stats->webhooks_in_flight, -1);
    if (a->endpoint >= 0)
        nt->endpoints[a->endpoint].held--;
    metric_observe(nt->stats->webhook_seconds, (double)r->latency_us / 1e6);
    metric_inc(r->ok ? nt->stats->webhooks_delivered : nt->stats->webhooks_failed);
    memset(&rec, 0, sizeof(rec));
    rec.ok = r->ok;
    rec.http_status = r->http_status;
    rec.error = r->error;
    rec.latency_ms = r->latency_us / 1000;
    snprintf(rec.response_head, sizeof(rec.response_head), "%s", r->body_head);
    rc = outbox_record_attempt(db, &a->n, &rec, &attempts, &e);
    snprintf(status, sizeof(status), "%ld", r->http_status);
    snprintf(latency, sizeof(latency), "%lld", (long long)rec.latency_ms);
    snprintf(attempt_s, sizeof(attempt_s), "%d", attempts - 1);
    if (r->ok)
        LOG_INFO("webhook_delivered", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "attempt", attempt_s, "http_status", status, "latency_ms", latency);
    else
        LOG_WARN("webhook_failed", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "attempt", attempt_s, "url", a->n.notify_url, "http_status", status, "error",
                 r->error, "response", r->body_head);
    if (rc != 0) {
        /* The message is requeued below; pausing keeps a database outage from turning
         * into a burst of requests against the business endpoint. */
        LOG_WARN("notify_record_failed", "order_id", a->n.order_id, "error", e.msg);
        nt->pause_until_ms = clock_mono_ms() + 1000;
    } else if (r->ok) {
        done = 1;
    } else if (cons != NULL) {
        /* Only a live consumer can ack; during shutdown the broker requeues instead. */
        retry_plan(nt->cfg->retry_delays_ms, nt->cfg->n_retry_delays, attempts, r->http_status,
                   r->retry_after, (double)rand_r(&nt->seed) / RAND_MAX * 2.0 - 1.0, clock_now_ms(),
                   &plan);
        if (plan.dead) {
            done = give_up(nt, db, pub, a, attempts, r->error, &e) == 0;
            if (done) {
                metric_inc(nt->stats->webhooks_dead);
                LOG_ERROR("webhook_dead", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                          "business", a->n.business, "attempts", attempt_s, "error", r->error);
            }
        } else {
            char queue[TOPOLOGY_NAME_MAX], body[64], delay[24];
            int k = plan.queue;
            topology_retry_queue_name(k, nt->cfg->retry_delays_ms[k - 1], queue, sizeof(queue));
            outbox_message(a->n.id, body, sizeof(body));
            done = publish(nt, pub, queue, body, a->n.webhook_id, plan.expiration_ms, &e) == 0;
            snprintf(delay, sizeof(delay), "%lld", (long long)plan.expiration_ms);
            if (done) {
                failpoint_hit("after_retry_publish");
                metric_inc(nt->stats->webhooks_retry_scheduled);
                LOG_INFO("webhook_retry_scheduled", "order_id", a->n.order_id, "webhook_id",
                         a->n.webhook_id, "queue", queue, "delay_ms", delay);
            }
        }
        if (!done)
            LOG_WARN("notify_move_failed", "order_id", a->n.order_id, "error", e.msg);
    }
    /* A tag from an older connection is void: the broker already requeued that message. */
    if (cons != NULL && gen == a->conn_gen) {
        rc = done ? mq_ack(cons, a->delivery_tag, &e) : mq_nack(cons, a->delivery_tag, 1, &e);
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
    mq_conn *cons = NULL, *pub = NULL;
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
            finish_attempt(nt, db, cons, &pub, gen, &r);
        if (db == NULL && (db = db_open(cfg->mysql_url, 5000, &e)) == NULL) {
            atomic_store(&nt->ready, 0);
            LOG_WARN("mysql_unavailable", "error", e.msg);
            sleep_ms(1000);
            continue;
        }
        if (stopping || clock_mono_ms() < nt->pause_until_ms) {
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
        rc = start_attempt(nt, db, &pub, eng, &m, gen, &e);
        if (rc == 2) {
            /* Poison: kept in the dead queue with the reason, out of the line. */
            json_object *o = json_object_new_object();
            char *b64 = malloc(crypto_b64_len(m.len) + 1);
            if (b64 == NULL)
                abort();
            crypto_b64_encode(m.body, m.len, b64);
            json_object_object_add(o, "reason", json_object_new_string("malformed notify message"));
            json_object_object_add(o, "message_b64", json_object_new_string(b64));
            rc = publish(nt, &pub, TOPOLOGY_NOTIFY_DEAD,
                         json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN), m.message_id, 0,
                         &e) == 0
                     ? 1
                     : -1;
            json_object_put(o);
            free(b64);
        }
        if (rc == 3) {
            /* Saturated endpoint: back to the first delay queue for a moment (confirmed),
             * then acked, so the prefetch window stays open for other businesses. */
            char queue[TOPOLOGY_NAME_MAX];
            int64_t wait = NOTIFY_DEFER_MS;
            if (wait > TOPOLOGY_RETRY_TTL(cfg->retry_delays_ms[0]))
                wait = TOPOLOGY_RETRY_TTL(cfg->retry_delays_ms[0]);
            topology_retry_queue_name(1, cfg->retry_delays_ms[0], queue, sizeof(queue));
            rc = publish(nt, &pub, queue, m.body, m.message_id, wait, &e) == 0 ? 1 : -1;
            if (rc == 1)
                metric_inc(nt->stats->webhooks_deferred);
        }
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
            finish_attempt(nt, db, NULL, &pub, gen, &r);
    }
    webhook_engine_free(eng);
    mq_close(cons);
    mq_close(pub);
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
    nt->seed = (unsigned)clock_now_ms() ^ (unsigned)getpid();
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
