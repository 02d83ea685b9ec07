/* worker/notify.c: the notify stage. PAYNOTIFY_NOTIFY_THREADS threads per worker process
 * each consume paynotify.notify with their own AMQP connections, MySQL connection and
 * worker/webhook engine (whose event loop runs the HTTP requests, so that a slow business
 * endpoint never holds back the others). A message is acked only after its attempt is
 * recorded in MySQL. A notification already DELIVERED is dropped without a request.
 *
 * MySQL round trips are the stage's cost, so a thread works in batches: the messages the
 * broker has already sent (up to NOTIFY_READ_BATCH) are read with their orders in one query
 * (outbox_get_deliveries), and every result the engine has finished (up to
 * NOTIFY_RECORD_BATCH) is recorded in one transaction (outbox_record_attempts); when that
 * transaction fails, each result is recorded on its own, so one bad row cannot hold back
 * the others, and only what could not be recorded is requeued.
 *
 * Per-endpoint limits hold per process: the threads share the table of webhooks held per
 * endpoint (under a mutex), and each engine gets an equal share of the 16 connections one
 * endpoint may have and of the 256 requests in flight. */
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
#include "common/xalloc.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/alerts.h"
#include "store/db.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "worker/retry.h"
#include "worker/stats.h"
#include "worker/webhook.h"

#define NOTIFY_PREFETCH 64 /* per consumer thread */
/* Webhooks one endpoint may hold in this worker process (running + waiting for one of its
 * connection slots): half of the process's prefetch window, 32 per notify thread. Beyond
 * that, new messages for it go back to the first delay queue for NOTIFY_DEFER_MS instead of
 * sitting in the prefetch window, where they would keep other businesses' webhooks from
 * being consumed at all. No attempt is counted for a deferral. */
#define NOTIFY_HELD_PER_THREAD (NOTIFY_PREFETCH / 2)
#define NOTIFY_DEFER_MS 1000
#define NOTIFY_ENDPOINTS 64
/* Per process, divided among the threads' engines. */
#define NOTIFY_MAX_IN_FLIGHT 256
#define NOTIFY_MAX_PER_HOST 16
/* Messages read from MySQL in one query; results recorded in one transaction. */
#define NOTIFY_READ_BATCH 32
#define NOTIFY_RECORD_BATCH 64

struct notify_thread;

struct notifier {
    const struct cfg *cfg;
    struct worker_stats *stats;
    atomic_int *stop;
    int n_threads;
    struct notify_thread *threads;
    pthread_mutex_t mu; /* guards endpoints */
    struct {
        char key[160]; /* scheme://host:port of notify URLs */
        int held;      /* attempts submitted and not finished, all threads */
    } endpoints[NOTIFY_ENDPOINTS];
};

/* One consumer thread and everything it owns. */
struct notify_thread {
    notifier *nt;
    pthread_t tid;
    int started;
    atomic_int ready;
    unsigned seed;          /* jitter */
    int64_t pause_until_ms; /* MySQL failed: take no new work until then */
    webhook_engine *eng;
    db_conn *db;
    mq_conn *cons, *pub; /* consuming, publishing (confirmed) */
    unsigned gen;        /* bumped for each new consumer connection */
    /* Batch buffers, allocated once. */
    struct mq_msg msgs[NOTIFY_READ_BATCH];
    struct outbox_delivery *reads; /* NOTIFY_READ_BATCH */
    struct webhook_result results[NOTIFY_RECORD_BATCH];
    struct outbox_record recs[NOTIFY_RECORD_BATCH];
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

/* Takes a place for url's endpoint (scheme://authority): 0 with *slot set (-1 when the
 * table is full and the endpoint goes untracked), or 1 when the endpoint already holds
 * NOTIFY_HELD_PER_THREAD webhooks per notify thread in this process. */
static int endpoint_take(notifier *nt, const char *url, int *slot)
{
    const char *p = strstr(url, "://");
    size_t n = p ? (size_t)(p + 3 - url) + strcspn(p + 3, "/?#") : strlen(url);
    char key[160];
    int found = -1, free_slot = -1, rc = 0;

    snprintf(key, sizeof(key), "%.*s", (int)n, url);
    pthread_mutex_lock(&nt->mu);
    for (int i = 0; i < NOTIFY_ENDPOINTS && found < 0; i++) {
        if (strcmp(nt->endpoints[i].key, key) == 0)
            found = i;
        else if (free_slot < 0 && nt->endpoints[i].held == 0)
            free_slot = i;
    }
    if (found < 0 && free_slot >= 0) {
        found = free_slot;
        snprintf(nt->endpoints[found].key, sizeof(nt->endpoints[found].key), "%s", key);
    }
    if (found >= 0 && nt->endpoints[found].held >= NOTIFY_HELD_PER_THREAD * nt->n_threads)
        rc = 1;
    else if (found >= 0)
        nt->endpoints[found].held++;
    pthread_mutex_unlock(&nt->mu);
    *slot = found;
    return rc;
}

static void endpoint_release(notifier *nt, int slot)
{
    if (slot < 0)
        return;
    pthread_mutex_lock(&nt->mu);
    nt->endpoints[slot].held--;
    pthread_mutex_unlock(&nt->mu);
}

/* webhook_opts.on_done, on an engine thread: the endpoint's place is free as soon as the
 * request ended, not only once this thread has recorded it. */
static void on_request_done(void *arg, void *user)
{
    const struct attempt *a = user;
    endpoint_release(arg, a->endpoint);
}

/* Publishes a message confirmed on the thread's publishing connection, opening it when
 * needed. */
static int publish(struct notify_thread *t, const char *queue, const char *body,
                   const char *message_id, int64_t expiration_ms, struct errbuf *e)
{
    const struct cfg *cfg = t->nt->cfg;

    if (t->pub == NULL && (t->pub = mq_open(cfg->amqp_url, 5000, e)) == NULL)
        return -1;
    if (mq_publish_confirmed_exp(t->pub, queue, body, strlen(body), message_id, expiration_ms,
                                 (int)cfg->confirm_timeout_ms, e) == 0)
        return 0;
    if (mq_failed(t->pub)) {
        mq_close(t->pub);
        t->pub = NULL;
    }
    return -1;
}

/* Retries exhausted: the message goes to the dead queue, the notification and the order
 * become FAILED and one alert is queued, in that order, so that a crash at any point
 * repeats a step instead of skipping one. */
static int give_up(struct notify_thread *t, const struct notification *n, int attempts,
                   const char *last_error, struct errbuf *e)
{
    char body[1024], subject[256], text[4096], first[32] = "", dedup[128];
    json_object *o = json_object_new_object();
    db_conn *db = t->db;
    int rc = -1;

    json_object_object_add(o, "notification_id", json_object_new_int64(n->id));
    json_object_object_add(o, "order_id", json_object_new_string(n->order_id));
    json_object_object_add(o, "business", json_object_new_string(n->business));
    json_object_object_add(o, "webhook_id", json_object_new_string(n->webhook_id));
    json_object_object_add(o, "attempts", json_object_new_int(attempts));
    json_object_object_add(o, "last_error", json_object_new_string(last_error));
    snprintf(body, sizeof(body), "%s", json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    if (publish(t, TOPOLOGY_NOTIFY_DEAD, body, n->webhook_id, 0, e) != 0)
        return -1;
    outbox_first_attempt_at(db, n->id, first, sizeof(first), e);
    snprintf(subject, sizeof(subject), "paynotify: webhook for order %s failed after %d attempts",
             n->order_id, attempts);
    snprintf(text, sizeof(text),
             "A business webhook could not be delivered after all retries.\n\n"
             "order:         %s\nbusiness:      %s\nevent:         %s\nwebhook id:    %s\n"
             "notify URL:    %s\nattempts:      %d\nlast error:    %s\nfirst attempt: %s\n",
             n->order_id, n->business, n->event_type, n->webhook_id, n->notify_url, attempts,
             last_error, first[0] ? first : "unknown");
    snprintf(dedup, sizeof(dedup), "notify_failed:%s", n->webhook_id);
    if (db_begin(db, e) != 0)
        return -1;
    if (outbox_mark_failed(db, n, e) == 0 &&
        alerts_enqueue(db, "notify_failed", dedup, n->business, n->order_id, subject, text, e) >= 0)
        rc = db_commit(db, e);
    if (rc != 0)
        db_rollback(db);
    return rc;
}

/* Acks (done) or requeues a delivery of the current consumer connection; a tag from an
 * older connection is void (the broker already requeued that message). A failed ack closes
 * the connection: the broker then requeues whatever it still holds. */
static void settle(struct notify_thread *t, unsigned gen, uint64_t tag, int done)
{
    struct errbuf e = {0};
    int rc;

    if (t->cons == NULL || gen != t->gen)
        return;
    rc = done ? mq_ack(t->cons, tag, &e) : mq_nack(t->cons, tag, 1, &e);
    if (rc != 0) {
        LOG_WARN("broker_ack_failed", "error", e.msg);
        mq_close(t->cons);
        t->cons = NULL;
    }
}

/* Sends the webhook of one read message. 0 = submitted, 1 = nothing to send (ack),
 * 3 = deferred (endpoint saturated), -1 = transient (requeue). */
static int start_attempt(struct notify_thread *t, const struct mq_msg *m,
                         const struct outbox_delivery *d, struct errbuf *e)
{
    notifier *nt = t->nt;
    const struct cfg_business *b;
    struct webhook_request req;
    struct attempt *a;
    int slot;

    if (d->found < 2) {
        LOG_ERROR("notify_row_missing", "message_id", m->message_id, "order_id",
                  d->found ? d->n.order_id : NULL);
        return 1;
    }
    if (strcmp(d->n.status, "PENDING") != 0) {
        /* A redelivered or replayed copy of a DELIVERED (or given-up FAILED) notification:
         * the business has it already, or an operator must reset it first. */
        metric_inc(nt->stats->webhooks_skipped);
        LOG_INFO("webhook_already_delivered", "order_id", d->n.order_id, "webhook_id",
                 d->n.webhook_id);
        return 1;
    }
    b = cfg_business_find(nt->cfg, d->n.business);
    if (b == NULL) {
        /* Removed from the configuration: retrying cannot help. Dead, FAILED and an alert,
         * so that an operator can fix the configuration and replay it. */
        char why[160];
        snprintf(why, sizeof(why), "business %.64s is not configured", d->n.business);
        LOG_ERROR("notify_business_unknown", "order_id", d->n.order_id, "business", d->n.business);
        return give_up(t, &d->n, d->n.attempts, why, e) == 0 ? 1 : -1;
    }
    if (endpoint_take(nt, d->n.notify_url, &slot) != 0)
        return 3;
    a = xcalloc(1, sizeof(*a));
    a->delivery_tag = m->delivery_tag;
    a->conn_gen = t->gen;
    a->endpoint = slot;
    a->n = d->n;
    memset(&req, 0, sizeof(req));
    req.body = notify_build_body(&d->n, &d->o, &req.body_len);
    req.headers =
        notify_build_headers(b, d->n.webhook_id, clock_now_ms() / 1000, req.body, req.body_len);
    req.url = xstrdup(d->n.notify_url);
    req.timeout_ms = (long)nt->cfg->notify_timeout_ms;
    req.allow_private = b->allow_private_network;
    req.user = a;
    if (webhook_engine_submit(t->eng, &req) != 0) {
        endpoint_release(nt, slot);
        free(a);
        return -1;
    }
    metric_add(nt->stats->webhooks_in_flight, 1);
    return 0;
}

/* A message that is not {"notification_id": N}: kept in the dead queue with the reason,
 * out of the line. 1 = moved (ack), -1 = requeue. */
static int park_malformed(struct notify_thread *t, const struct mq_msg *m, struct errbuf *e)
{
    json_object *o = json_object_new_object();
    char *b64 = xmalloc(crypto_b64_len(m->len) + 1);
    int rc;

    LOG_ERROR("notify_message_malformed", "message_id", m->message_id);
    crypto_b64_encode(m->body, m->len, b64);
    json_object_object_add(o, "reason", json_object_new_string("malformed notify message"));
    json_object_object_add(o, "message_b64", json_object_new_string(b64));
    rc = publish(t, TOPOLOGY_NOTIFY_DEAD, json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN),
                 m->message_id, 0, e) == 0
             ? 1
             : -1;
    json_object_put(o);
    free(b64);
    return rc;
}

/* Saturated endpoint: back to the first delay queue for a moment (confirmed), then acked,
 * so the prefetch window stays open for other businesses. 1 = moved, -1 = requeue. */
static int defer(struct notify_thread *t, const struct mq_msg *m, struct errbuf *e)
{
    const struct cfg *cfg = t->nt->cfg;
    char queue[TOPOLOGY_NAME_MAX];
    int64_t wait = NOTIFY_DEFER_MS;

    if (wait > TOPOLOGY_RETRY_TTL(cfg->retry_delays_ms[0]))
        wait = TOPOLOGY_RETRY_TTL(cfg->retry_delays_ms[0]);
    topology_retry_queue_name(1, cfg->retry_delays_ms[0], queue, sizeof(queue));
    if (publish(t, queue, m->body, m->message_id, wait, e) != 0)
        return -1;
    metric_inc(t->nt->stats->webhooks_deferred);
    return 1;
}

/* Starts the webhooks of msgs[0..n) (consumed on the current connection): one MySQL read
 * for all of them, then each is submitted, acked, deferred or requeued. */
static void start_batch(struct notify_thread *t, int n)
{
    struct errbuf e = {0};
    int map[NOTIFY_READ_BATCH], k = 0, rc;
    unsigned gen = t->gen;

    for (int i = 0; i < n; i++) {
        if (outbox_message_parse(t->msgs[i].body, t->msgs[i].len, &t->reads[k].id) == 0) {
            map[k++] = i;
            continue;
        }
        rc = park_malformed(t, &t->msgs[i], &e);
        settle(t, gen, t->msgs[i].delivery_tag, rc == 1);
    }
    if (k == 0)
        return;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char count[16];
        snprintf(count, sizeof(count), "%d", k);
        LOG_DEBUG("notify_batch_read", "messages", count);
    }
    if (outbox_get_deliveries(t->db, t->reads, k, &e) != 0) {
        LOG_WARN("notify_read_failed", "error", e.msg);
        t->pause_until_ms = clock_mono_ms() + 1000;
        for (int j = 0; j < k; j++)
            settle(t, gen, t->msgs[map[j]].delivery_tag, 0);
        return;
    }
    for (int j = 0; j < k; j++) {
        const struct mq_msg *m = &t->msgs[map[j]];

        /* The consumer connection failed meanwhile: the broker requeues the rest. */
        if (t->cons == NULL || gen != t->gen)
            return;
        rc = start_attempt(t, m, &t->reads[j], &e);
        if (rc == 3)
            rc = defer(t, m, &e);
        if (rc != 0)
            settle(t, gen, m->delivery_tag, rc == 1);
    }
}

/* After its attempt is recorded (or could not be): acks a delivery, moves a failure to its
 * delay queue (or to the dead queue when retries are exhausted) before acking it, or
 * requeues the message when any of that could not be done. Nothing is acked that was
 * neither delivered nor moved on. live = 0 during shutdown: only the broker's requeue. */
static void conclude(struct notify_thread *t, const struct webhook_result *r,
                     const struct outbox_record *rec, int recorded, int live)
{
    notifier *nt = t->nt;
    struct attempt *a = r->user;
    struct errbuf e = {0};
    struct retry_decision plan;
    char status[16], latency[24], attempt_s[16];
    int done = 0;

    snprintf(status, sizeof(status), "%ld", r->http_status);
    snprintf(latency, sizeof(latency), "%lld", (long long)(r->latency_us / 1000));
    snprintf(attempt_s, sizeof(attempt_s), "%d", rec->attempts_after - 1);
    if (r->ok)
        LOG_INFO("webhook_delivered", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "attempt", attempt_s, "http_status", status, "latency_ms", latency);
    else
        LOG_WARN("webhook_failed", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id,
                 "attempt", attempt_s, "url", a->n.notify_url, "http_status", status, "error",
                 r->error, "response", r->body_head);
    if (!recorded) {
        /* Requeued below; pausing keeps a database outage from turning into a burst of
         * requests against the business endpoint. */
        t->pause_until_ms = clock_mono_ms() + 1000;
    } else if (rec->attempts_after == 0) {
        /* The row is gone: there is nothing to record or to retry. */
        LOG_ERROR("notify_row_missing", "order_id", a->n.order_id, "webhook_id", a->n.webhook_id);
        done = 1;
    } else if (r->ok) {
        done = 1;
    } else if (strcmp(rec->status, "PENDING") != 0) {
        /* Another copy delivered it (or gave up) meanwhile: nothing left to retry. */
        metric_inc(nt->stats->webhooks_skipped);
        LOG_INFO("webhook_already_delivered", "order_id", a->n.order_id, "webhook_id",
                 a->n.webhook_id);
        done = 1;
    } else if (live && t->cons != NULL && a->conn_gen == t->gen) {
        /* Only the consumer that holds the delivery can ack it; otherwise the broker
         * requeues it and nothing may be published for it. */
        retry_plan(nt->cfg->retry_delays_ms, nt->cfg->n_retry_delays, rec->attempts_after,
                   r->http_status, r->retry_after, (double)rand_r(&t->seed) / RAND_MAX * 2.0 - 1.0,
                   clock_now_ms(), &plan);
        if (plan.dead) {
            done = give_up(t, &a->n, rec->attempts_after, r->error, &e) == 0;
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
            done = publish(t, queue, body, a->n.webhook_id, plan.expiration_ms, &e) == 0;
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
    if (live)
        settle(t, a->conn_gen, a->delivery_tag, done);
}

/* Records the finished attempts rs[0..n) in one transaction, or each on its own when that
 * fails, then concludes each. */
static void record_batch(struct notify_thread *t, int n, int live)
{
    notifier *nt = t->nt;
    struct webhook_result *rs = t->results;
    struct outbox_record *recs = t->recs;
    struct errbuf e = {0};
    int all, ok[NOTIFY_RECORD_BATCH];
    int64_t t0;

    for (int i = 0; i < n; i++) {
        const struct webhook_result *r = &rs[i];
        struct attempt *a = r->user;
        struct outbox_record *x = &recs[i];

        metric_add(nt->stats->webhooks_in_flight, -1);
        metric_observe(nt->stats->webhook_seconds, (double)r->latency_us / 1e6);
        metric_inc(r->ok ? nt->stats->webhooks_delivered : nt->stats->webhooks_failed);
        memset(x, 0, sizeof(*x));
        x->n = &a->n;
        x->a.ok = r->ok;
        x->a.http_status = r->http_status;
        x->a.error = r->error;
        x->a.latency_ms = r->latency_us / 1000;
        snprintf(x->a.response_head, sizeof(x->a.response_head), "%s", r->body_head);
    }
    t0 = clock_mono_ms();
    all = t->db != NULL && outbox_record_attempts(t->db, recs, n, &e) == 0;
    if (log_enabled(LOG_LEVEL_DEBUG)) {
        char count[16], ms[24];
        snprintf(count, sizeof(count), "%d", n);
        snprintf(ms, sizeof(ms), "%lld", (long long)(clock_mono_ms() - t0));
        LOG_DEBUG("notify_batch_recorded", "attempts", count, "ms", ms);
    }
    if (!all)
        LOG_WARN("notify_record_failed", "attempts", n > 1 ? "batch" : "one", "error",
                 t->db ? e.msg : "no MySQL connection");
    for (int i = 0; i < n; i++) {
        ok[i] = all;
        if (!all && n > 1 && t->db != NULL) {
            ok[i] = outbox_record_attempts(t->db, &recs[i], 1, &e) == 0;
            if (!ok[i])
                LOG_WARN("notify_record_failed", "attempts", "one", "order_id", recs[i].n->order_id,
                         "error", e.msg);
        }
    }
    for (int i = 0; i < n; i++) {
        conclude(t, &rs[i], &recs[i], ok[i], live);
        free(rs[i].user);
    }
}

/* Records and concludes every result the engine has finished. */
static void finish_results(struct notify_thread *t, int live)
{
    int n;

    do {
        n = 0;
        while (n < NOTIFY_RECORD_BATCH && webhook_engine_poll(t->eng, &t->results[n]) == 1)
            n++;
        if (n > 0)
            record_batch(t, n, live);
    } while (n == NOTIFY_RECORD_BATCH);
}

/* Takes the messages the broker has sent, waiting up to timeout_ms for the first.
 * The count (0 on timeout), or -1 when the connection failed (nothing taken). */
static int consume_batch(struct notify_thread *t, int timeout_ms)
{
    struct errbuf e = {0};
    int n = 0, rc = 0;

    while (n < NOTIFY_READ_BATCH) {
        memset(&t->msgs[n], 0, sizeof(t->msgs[n]));
        rc = mq_consume_next(t->cons, n == 0 ? timeout_ms : 0, &t->msgs[n], &e);
        if (rc != 0)
            break;
        metric_inc(t->nt->stats->notify_consumed);
        n++;
    }
    if (rc < 0) {
        /* The broker requeues what this connection held, these messages included. */
        LOG_WARN("broker_consume_failed", "error", e.msg);
        for (int i = 0; i < n; i++)
            mq_msg_free(&t->msgs[i]);
        mq_close(t->cons);
        t->cons = NULL;
        return -1;
    }
    return n;
}

static void *thread_main(void *arg)
{
    struct notify_thread *t = arg;
    notifier *nt = t->nt;
    const struct cfg *cfg = nt->cfg;
    struct webhook_opts wo = {.max_in_flight = NOTIFY_MAX_IN_FLIGHT / nt->n_threads,
                              .max_per_host = NOTIFY_MAX_PER_HOST / nt->n_threads,
                              .user_agent = "paynotify",
                              .on_done = on_request_done,
                              .on_done_arg = nt};
    struct errbuf e = {0};
    int64_t drain_deadline = 0;

    db_thread_init();
    t->eng = webhook_engine_start(&wo, &e);
    if (t->eng == NULL) {
        LOG_ERROR("webhook_engine_failed", "error", e.msg);
        db_thread_end();
        return NULL;
    }
    for (;;) {
        int n, stopping = atomic_load(nt->stop);

        if (stopping) {
            /* Stop taking work; give requests in flight the notify timeout to finish. */
            if (drain_deadline == 0)
                drain_deadline = clock_mono_ms() + cfg->notify_timeout_ms + 1000;
            if (webhook_engine_in_flight(t->eng) == 0 || clock_mono_ms() > drain_deadline)
                break;
        }
        finish_results(t, 1);
        if (t->db == NULL && (t->db = db_open(cfg->mysql_url, 5000, &e)) == NULL) {
            atomic_store(&t->ready, 0);
            LOG_WARN("mysql_unavailable", "error", e.msg);
            sleep_ms(1000);
            continue;
        }
        if (stopping || clock_mono_ms() < t->pause_until_ms) {
            webhook_engine_wait(t->eng, 100);
            continue;
        }
        if (t->cons == NULL) {
            t->cons = mq_open(cfg->amqp_url, 5000, &e);
            if (t->cons == NULL ||
                mq_declare_topology(t->cons, cfg->queue_type, cfg->retry_delays_ms,
                                    cfg->n_retry_delays, &e) != 0 ||
                mq_consume_start(t->cons, TOPOLOGY_NOTIFY, NOTIFY_PREFETCH, &e) != 0) {
                LOG_WARN("broker_unavailable", "error", e.msg);
                mq_close(t->cons);
                t->cons = NULL;
                atomic_store(&t->ready, 0);
                sleep_ms(1000);
                continue;
            }
            t->gen++;
        }
        atomic_store(&t->ready, 1);
        /* A short wait while requests run, so their results are recorded soon. */
        n = consume_batch(t, webhook_engine_in_flight(t->eng) > 0 ? 5 : 200);
        if (n <= 0)
            continue;
        start_batch(t, n);
        for (int i = 0; i < n; i++)
            mq_msg_free(&t->msgs[i]);
    }
    atomic_store(&t->ready, 0);
    webhook_engine_stop(t->eng, 0);
    /* Aborted attempts: record them and let the broker requeue the messages. */
    finish_results(t, 0);
    webhook_engine_free(t->eng);
    mq_close(t->cons);
    mq_close(t->pub);
    db_close(t->db);
    db_thread_end();
    return NULL;
}

notifier *notifier_start(const struct cfg *cfg, struct worker_stats *stats, atomic_int *stop)
{
    notifier *nt = xcalloc(1, sizeof(*nt));
    int started = 0;

    nt->cfg = cfg;
    nt->stats = stats;
    nt->stop = stop;
    nt->n_threads = cfg->notify_threads > 0 ? cfg->notify_threads : 1;
    if (nt->n_threads > NOTIFY_MAX_PER_HOST)
        nt->n_threads = NOTIFY_MAX_PER_HOST;
    pthread_mutex_init(&nt->mu, NULL);
    nt->threads = xcalloc((size_t)nt->n_threads, sizeof(*nt->threads));
    for (int i = 0; i < nt->n_threads; i++) {
        struct notify_thread *t = &nt->threads[i];
        t->nt = nt;
        t->seed = (unsigned)clock_now_ms() ^ (unsigned)getpid() ^ ((unsigned)i << 16);
        t->reads = xcalloc(NOTIFY_READ_BATCH, sizeof(*t->reads));
        atomic_init(&t->ready, 0);
        if (pthread_create(&t->tid, NULL, thread_main, t) != 0)
            break;
        t->started = 1;
        started++;
    }
    if (started < nt->n_threads) {
        /* The caller sets *stop when this fails; the threads that run then end. */
        LOG_ERROR("notify_thread_start_failed");
        atomic_store(stop, 1);
        notifier_join(nt);
        return NULL;
    }
    return nt;
}

int notifier_ready(const notifier *nt)
{
    for (int i = 0; i < nt->n_threads; i++)
        if (!atomic_load(&nt->threads[i].ready))
            return 0;
    return 1;
}

void notifier_join(notifier *nt)
{
    if (nt == NULL)
        return;
    for (int i = 0; i < nt->n_threads; i++) {
        if (nt->threads[i].started)
            pthread_join(nt->threads[i].tid, NULL);
        free(nt->threads[i].reads);
    }
    free(nt->threads);
    pthread_mutex_destroy(&nt->mu);
    free(nt);
}
