/* receiver/intake.c: POST /v1/callbacks/{channel}. Verify the provider's signature on the
 * raw bytes, parse, wrap in an envelope, publish persistent with a publisher confirm, and
 * only then give the provider its success reply. Forged or malformed: the provider's
 * failure reply, never enqueued. Broker down or slow: 503, and the provider retries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/clock.h"
#include "common/crypto.h"
#include "common/httpd.h"
#include "common/log.h"
#include "queue/envelope.h"
#include "queue/publisher.h"
#include "queue/topology.h"
#include "receiver/app.h"

struct pending_callback {
    struct receiver_app *app;
    httpd_req *req;
    const struct channel_ops *ops;
    struct channel_stats *stats;
    char callback_id[40];
    char order_id[64];
    int64_t started_ms;
};

static const char *req_header(void *ctx, const char *name)
{
    return httpd_req_header(ctx, name);
}

static void reply(httpd_req *req, const struct channel_reply *r)
{
    httpd_reply(req, r->status, r->content_type, r->body, strlen(r->body), NULL);
}

static void on_confirm(void *arg, int status, const char *msg)
{
    struct pending_callback *pc = arg;

    if (status == 0) {
        metric_inc(pc->stats->accepted);
        metric_observe(pc->app->confirm_seconds,
                       (double)(clock_mono_ms() - pc->started_ms) / 1000.0);
        LOG_INFO("callback_accepted", "callback_id", pc->callback_id, "order_id",
                 pc->order_id[0] ? pc->order_id : NULL);
        reply(pc->req, &pc->ops->accept);
    } else {
        /* Not confirmed: the provider must retry. If the broker did store it after all, the
         * worker's dedup makes the retry harmless. */
        metric_inc(pc->stats->unavailable);
        LOG_WARN("callback_unavailable", "callback_id", pc->callback_id, "order_id",
                 pc->order_id[0] ? pc->order_id : NULL, "error", msg);
        httpd_reply_error(pc->req, 503, "unavailable", "broker unavailable, retry later");
    }
    free(pc);
}

void intake_callback(struct receiver_app *a, httpd_req *req, const char *channel)
{
    const struct channel *ch = channels_find(a->chans, channel);
    const struct channel_ops *ops = ch ? ch->ops : NULL;
    struct channel_stats *st;
    struct channel_request creq;
    struct envelope env;
    struct pay_event ev;
    struct errbuf e = {0};
    struct pending_callback *pc;
    char *msg;
    size_t len;

    if (ops == NULL) {
        httpd_reply_error(req, 404, "unknown_channel", "no such payment channel");
        return;
    }
    st = &a->chan[channels_index(a->chans, ch)];
    metric_inc(st->received);
    creq.body = httpd_req_body(req, &creq.body_len);
    creq.header = req_header;
    creq.ctx = req;
    if (ops->verify(ch->conf, &creq, clock_now_ms() / 1000, &e) != 0 ||
        ops->parse(ch->conf, creq.body, creq.body_len, &ev, &e) != 0) {
        metric_inc(st->rejected);
        LOG_WARN("callback_rejected", "provider", channel, "peer", httpd_req_peer(req), "reason",
                 e.msg);
        reply(req, &ops->reject);
        return;
    }
    if (a->stopping) {
        metric_inc(st->unavailable);
        httpd_reply_error(req, 503, "stopping", "shutting down, retry later");
        return;
    }
    pc = calloc(1, sizeof(*pc));
    if (pc == NULL)
        abort();
    pc->app = a;
    pc->req = req;
    pc->ops = ops;
    pc->stats = st;
    pc->started_ms = clock_mono_ms();
    snprintf(pc->order_id, sizeof(pc->order_id), "%s", ev.order_id);
    memset(&env, 0, sizeof(env));
    if (crypto_random_id("cb_", 12, pc->callback_id) != 0) {
        free(pc);
        httpd_reply_error(req, 503, "unavailable", "random source failed");
        return;
    }
    snprintf(env.callback_id, sizeof(env.callback_id), "%s", pc->callback_id);
    snprintf(env.channel, sizeof(env.channel), "%s", channel);
    env.received_at_ms = clock_now_ms();
    for (const char *const *h = ops->envelope_headers; *h != NULL; h++) {
        const char *v = httpd_req_header(req, *h);
        if (v != NULL)
            envelope_add_header(&env, *h, v);
    }
    envelope_set_body(&env, creq.body, creq.body_len);
    msg = envelope_encode(&env, &len);
    envelope_clear(&env);
    publisher_submit(a->pub, TOPOLOGY_CALLBACKS, msg, len, pc->callback_id, on_confirm, pc);
    free(msg);
}
