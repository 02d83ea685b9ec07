/* cmd/receiver/main.c: paynotify-receiver. The thin HTTP intake: business API, provider
 * callbacks (answered after the broker's confirm), health, readiness and metrics. On
 * SIGTERM: stop accepting, answer the requests in hand, close the broker link, exit 0. */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/failpoint.h"
#include "common/httpd.h"
#include "common/log.h"
#include "queue/publisher.h"
#include "receiver/app.h"
#include "store/db.h"

struct main_ctx {
    struct receiver_app app;
    httpd *http;
    uv_signal_t sigterm, sigint;
};

static void on_http_closed(void *arg)
{
    struct main_ctx *m = arg;
    /* Every request has its reply: now the broker link can go. */
    publisher_stop(m->app.pub);
    m->app.pub = NULL;
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct main_ctx *m = h->data;
    (void)signum;
    if (m->app.stopping)
        return;
    m->app.stopping = 1;
    LOG_INFO("receiver_stopping");
    uv_close((uv_handle_t *)&m->sigterm, NULL);
    uv_close((uv_handle_t *)&m->sigint, NULL);
    httpd_stop(m->http, on_http_closed, m);
}

int main(void)
{
    struct errbuf e = {0};
    struct cfg *cfg;
    channels *chans;
    struct main_ctx m;
    struct publisher_opts po;
    struct httpd_opts ho = {
        .max_body = 65536, .max_conns = 4096, .read_timeout_ms = 10000, .idle_timeout_ms = 60000};
    uv_loop_t loop;
    int rc = 0;

    cfg = cfg_load(CFG_NEED_FILE, &e);
    if (cfg == NULL) {
        fprintf(stderr, "paynotify-receiver: configuration error: %s\n", e.msg);
        return 2;
    }
    chans = channels_load(cfg, &e);
    if (chans == NULL) {
        fprintf(stderr, "paynotify-receiver: configuration error: %s\n", e.msg);
        cfg_free(cfg);
        return 2;
    }
    log_init("receiver", (enum log_level)cfg->log_level);
    {
        char *d = cfg_describe(cfg);
        LOG_INFO("receiver_config", "config", d);
        free(d);
    }
    failpoint_init();
    /* A peer closing a socket must be an error return, not a process kill. */
    signal(SIGPIPE, SIG_IGN);
    db_library_init();
    uv_loop_init(&loop);
    memset(&m, 0, sizeof(m));
    receiver_app_init(&m.app, cfg, chans, &loop);

    memset(&po, 0, sizeof(po));
    po.amqp_url = cfg->amqp_url;
    po.confirm_timeout_ms = (int)cfg->confirm_timeout_ms;
    po.max_in_flight = 1024;
    po.queue_type = cfg->queue_type;
    po.retry_delays_ms = cfg->retry_delays_ms;
    po.n_delays = cfg->n_retry_delays;
    m.app.pub = publisher_start(&loop, &po, &e);
    if (m.app.pub == NULL) {
        LOG_ERROR("receiver_publisher_failed", "error", e.msg);
        rc = 1;
        goto out;
    }
    m.http = httpd_start(&loop, cfg->listen, &ho, receiver_route, &m.app, &e);
    if (m.http == NULL) {
        LOG_ERROR("receiver_listen_failed", "listen", cfg->listen, "error", e.msg);
        publisher_stop(m.app.pub);
        uv_run(&loop, UV_RUN_DEFAULT);
        rc = 1;
        goto out;
    }
    uv_signal_init(&loop, &m.sigterm);
    uv_signal_init(&loop, &m.sigint);
    m.sigterm.data = m.sigint.data = &m;
    uv_signal_start(&m.sigterm, on_signal, SIGTERM);
    uv_signal_start(&m.sigint, on_signal, SIGINT);
    LOG_INFO("receiver_started", "listen", cfg->listen);
    uv_run(&loop, UV_RUN_DEFAULT);
out:
    if (uv_loop_close(&loop) != 0) {
        LOG_ERROR("receiver_loop_not_closed");
        rc = 1;
    }
    receiver_app_free(&m.app);
    LOG_INFO("receiver_stopped");
    channels_free(chans);
    cfg_free(cfg);
    db_library_end();
    return rc;
}
