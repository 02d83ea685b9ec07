/* worker/job.c: applying one provider callback exactly once.
 *
 *   RECEIVED --envelope_decode, ops->verify, ops->parse--> VERIFIED
 *   VERIFIED --kv_event_begin: seen? else lock the order (busy = requeue; Redis down =
 *              skip both)--> DEDUPED, LOCKED
 *   LOCKED   --orders_apply_event: payment_log + CAS + outbox, one transaction--> APPLIED
 *   APPLIED  --announce_send(paynotify.notify), confirm read later (none = sweeper)--> PUBLISHED
 *   PUBLISHED --kv_event_end: mark seen, unlock--> DONE, then the caller acks
 *
 * Redis only saves work: MySQL's unique key on payment_log and the CAS on orders.version
 * decide. The event is marked seen in Redis only after the commit, so a failed
 * transaction never makes its retry look like a duplicate. */
#include "worker/job.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/failpoint.h"
#include "common/log.h"
#include "queue/envelope.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/kv.h"
#include "worker/announce.h"
#include "store/orders.h"
#include "store/outbox.h"
#include "worker/stats.h"

/* Longer than any provider's retry window (Stripe: 3 days). */
#define JOB_SEEN_TTL_S (4 * 24 * 3600)
/* The lock covers one apply (milliseconds); a crashed holder frees it after this. */
#define JOB_LOCK_TTL_MS 10000

static const char *const job_state_names[] = {
#define X(s) #s,
    JOB_STATES(X)
#undef X
};

const char *job_state_name(enum job_state s)
{
    return job_state_names[s];
}

static const char *env_header(void *ctx, const char *name)
{
    return envelope_header(ctx, name);
}

static void redis_failed(struct job_ctx *c, const struct errbuf *e, const char *callback_id)
{
    metric_inc(c->stats->redis_fallbacks);
    if (!c->redis_down)
        LOG_WARN("redis_unavailable_mysql_fallback", "callback_id", callback_id, "error", e->msg);
    c->redis_down = 1;
}

static void redis_ok(struct job_ctx *c)
{
    if (c->redis_down)
        LOG_INFO("redis_available_again");
    c->redis_down = 0;
}

enum job_verdict job_handle(struct job_ctx *c, const void *msg, size_t len, char *reason,
                            size_t reason_len)
{
    struct envelope env;
    struct errbuf e = {0};
    struct pay_event ev;
    struct apply_result res;
    const struct channel *ch;
    const struct channel_ops *ops;
    struct channel_request req;
    enum job_verdict v = JOB_PARK;
    enum job_state state = JOB_RECEIVED;
    int locked = 0, mark = 0, rc;
    int64_t t0;

    reason[0] = '\0';
    if (envelope_decode(msg, len, &env, &e) != 0) {
        snprintf(reason, reason_len, "%s", e.msg);
        return JOB_PARK;
    }
    ch = channels_find(c->chans, env.channel);
    ops = ch ? ch->ops : NULL;
    if (ops == NULL) {
        snprintf(reason, reason_len, "channel %s is not configured", env.channel);
        goto out;
    }
    /* Re-verify against the time the receiver accepted it: a message forged by anyone who
     * can publish to the broker is refused, and a long queue delay is not "stale". */
    req.body = env.body;
    req.body_len = env.body_len;
    req.header = env_header;
    req.ctx = &env;
    if (ops->verify(ch->conf, &req, env.received_at_ms / 1000, &e) != 0 ||
        ops->parse(ch->conf, env.body, env.body_len, &ev, &e) != 0) {
        snprintf(reason, reason_len, "%s", e.msg);
        goto out;
    }
    state = JOB_VERIFIED;

    /* One round trip: "applied already?" and, if not, the order's lock. Redis down: both
     * skipped, MySQL decides alone. */
    rc = kv_event_begin(c->kv, env.channel, ev.event_id, ev.order_id, JOB_LOCK_TTL_MS, &e);
    if (rc == 1) {
        redis_ok(c);
        metric_inc(c->stats->duplicates_redis);
        LOG_DEBUG("callback_duplicate", "callback_id", env.callback_id, "order_id", ev.order_id,
                  "event_id", ev.event_id, "layer", "redis");
        v = JOB_ACK;
        goto out;
    }
    if (rc == 2) {
        redis_ok(c);
        snprintf(reason, reason_len, "order %s is busy", ev.order_id);
        v = JOB_RETRY;
        goto out;
    }
    if (rc < 0) {
        redis_failed(c, &e, env.callback_id);
    } else {
        redis_ok(c);
        locked = ev.order_id[0] != '\0';
    }
    state = JOB_LOCKED; /* (through JOB_DEDUPED in the same round trip) */

    t0 = clock_mono_ms();
    if (orders_apply_event(c->db, env.channel, &ev, env.callback_id, env.body, &res, &e) != 0) {
        snprintf(reason, reason_len, "%s", e.msg);
        v = e.kind == ERRBUF_PERMANENT ? JOB_PARK : JOB_RETRY;
        goto out;
    }
    metric_observe(c->stats->apply_seconds, (double)(clock_mono_ms() - t0) / 1000.0);
    state = JOB_APPLIED;
    failpoint_hit("after_commit");

    if (res.duplicate_event) {
        metric_inc(c->stats->duplicates_mysql);
        LOG_INFO("callback_duplicate", "callback_id", env.callback_id, "order_id", ev.order_id,
                 "event_id", ev.event_id, "layer", "mysql");
    } else if (res.unknown_order || res.decision == ORDER_DECIDE_AMOUNT_MISMATCH ||
               res.decision == ORDER_DECIDE_DUPLICATE_PAYMENT ||
               res.decision == ORDER_DECIDE_PAID_AFTER_CLOSE) {
        metric_inc(c->stats->anomalies);
        metric_inc(c->stats->callbacks_recorded);
        LOG_ERROR("payment_anomaly", "callback_id", env.callback_id, "order_id", ev.order_id,
                  "event_id", ev.event_id, "provider", env.channel, "outcome",
                  res.unknown_order ? "unknown_order" : orderstate_decision_name(res.decision),
                  "txn_id", ev.txn_id);
    } else if (res.decision == ORDER_DECIDE_PAY) {
        metric_inc(c->stats->callbacks_applied);
        LOG_INFO("order_paid", "callback_id", env.callback_id, "order_id", ev.order_id, "event_id",
                 ev.event_id, "provider", env.channel, "txn_id", ev.txn_id, "webhook_id",
                 res.webhook_id);
    } else {
        metric_inc(c->stats->callbacks_recorded);
        LOG_INFO("callback_recorded", "callback_id", env.callback_id, "order_id", ev.order_id,
                 "event_id", ev.event_id, "event_type", ev.event_type, "outcome",
                 orderstate_decision_name(res.decision));
    }

    if (res.notification_id > 0) {
        /* The outbox row is committed. The message goes out now and its confirm is read
         * later (worker/announce); if it never comes, the sweeper sends the row again. */
        if (c->pub != NULL && announce_send(c->ann, c->pub, res.notification_id, res.webhook_id,
                                            (int)c->cfg->confirm_timeout_ms, &e) == 0) {
            metric_inc(c->stats->notify_published);
        } else {
            metric_inc(c->stats->notify_publish_failed);
            LOG_WARN("notify_publish_failed", "order_id", ev.order_id, "webhook_id", res.webhook_id,
                     "error", c->pub ? e.msg : "no broker connection");
            if (c->pub != NULL)
                c->pub_failed = 1;
        }
    }
    state = JOB_PUBLISHED;
    mark = !c->redis_down;
    state = JOB_DONE;
    v = JOB_ACK;
out:
    /* One round trip: the "applied" marker (only after the commit, so a failed transaction
     * never makes its retry look like a duplicate) and the order's lock back. */
    if ((mark || locked) && kv_event_end(c->kv, env.channel, ev.event_id, mark, JOB_SEEN_TTL_S,
                                         locked ? ev.order_id : NULL, &e) != 0)
        redis_failed(c, &e, env.callback_id);
    if (v != JOB_ACK)
        LOG_WARN(v == JOB_PARK ? "callback_parked" : "callback_retry", "callback_id",
                 env.callback_id[0] ? env.callback_id : NULL, "state", job_state_name(state),
                 "reason", reason);
    envelope_clear(&env);
    return v;
}
