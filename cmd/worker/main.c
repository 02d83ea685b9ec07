/* cmd/worker/main.c: paynotify-worker. Wires the callback pool, the notify stage and the
 * outbox sweeper; serves /healthz, /readyz and /metrics on PAYNOTIFY_METRICS_LISTEN; on
 * SIGTERM stops consuming, finishes the work in hand and exits 0. */
#include <curl/curl.h>
#include <stdatomic.h>
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
#include "store/db.h"
#include "worker/alert.h"
#include "worker/notify.h"
#include "worker/pool.h"
#include "worker/refunder.h"
#include "worker/stats.h"
#include "worker/sweeper.h"

struct app {
    const struct cfg *cfg;
    struct worker_stats stats;
    atomic_int stop;
    pool *pool;
    notifier *notifier;
    sweeper *sweeper;
    alerter *alerter;
    refunder *refunder;
    httpd *http;
    uv_signal_t sigterm, sigint;
};

static void on_request(httpd_req *req, void *arg)
{
    struct app *a = arg;
    const char *path = httpd_req_path(req);

    if (strcmp(httpd_req_method(req), "GET") != 0) {
        httpd_reply_error(req, 405, "method_not_allowed", "use GET");
    } else if (strcmp(path, "/healthz") == 0) {
        httpd_reply(req, 200, "application/json", "{\"status\":\"ok\"}", 15, NULL);
    } else if (strcmp(path, "/readyz") == 0) {
        char body[128];
        int threads = pool_ready(a->pool), notify = notifier_ready(a->notifier);
        int ok = threads > 0 && notify;
        int n = snprintf(body, sizeof(body),
                         "{\"status\":\"%s\",\"callback_threads_ready\":%d,\"notify_ready\":%s}",
                         ok ? "ok" : "unavailable", threads, notify ? "true" : "false");
        httpd_reply(req, ok ? 200 : 503, "application/json", body, (size_t)n, NULL);
    } else if (strcmp(path, "/metrics") == 0) {
        char *text = metrics_render(a->stats.reg);
        httpd_reply(req, 200, "text/plain; version=0.0.4", text, strlen(text), NULL);
        free(text);
    } else {
        httpd_reply_error(req, 404, "not_found", "no such route");
    }
}

static void on_signal(uv_signal_t *h, int signum)
{
    struct app *a = h->data;
    (void)signum;
    if (atomic_exchange(&a->stop, 1))
        return;
    LOG_INFO("worker_stopping");
    uv_signal_stop(&a->sigterm);
    uv_signal_stop(&a->sigint);
    uv_close((uv_handle_t *)&a->sigterm, NULL);
    uv_close((uv_handle_t *)&a->sigint, NULL);
    httpd_stop(a->http, NULL, NULL);
}

int main(void)
{
    struct errbuf e = {0};
    struct cfg *cfg;
    channels *chans;
    struct app a;
    uv_loop_t loop;
    int rc = 0;

    cfg = cfg_load(CFG_NEED_FILE, &e);
    if (cfg == NULL) {
        fprintf(stderr, "paynotify-worker: configuration error: %s\n", e.msg);
        return 2;
    }
    chans = channels_load(cfg, &e);
    if (chans == NULL) {
        fprintf(stderr, "paynotify-worker: configuration error: %s\n", e.msg);
        cfg_free(cfg);
        return 2;
    }
    log_init("worker", (enum log_level)cfg->log_level);
    {
        char *d = cfg_describe(cfg);
        LOG_INFO("worker_config", "config", d);
        free(d);
    }
    failpoint_init();
    /* A peer closing a socket must be an error return, not a process kill. */
    signal(SIGPIPE, SIG_IGN);
    /* Library globals before any thread starts. */
    curl_global_init(CURL_GLOBAL_DEFAULT);
    db_library_init();

    memset(&a, 0, sizeof(a));
    a.cfg = cfg;
    atomic_init(&a.stop, 0);
    worker_stats_init(&a.stats);
    uv_loop_init(&loop);
    a.http = httpd_start(&loop, cfg->metrics_listen, NULL, on_request, &a, &e);
    if (a.http == NULL) {
        LOG_ERROR("worker_listen_failed", "listen", cfg->metrics_listen, "error", e.msg);
        rc = 1;
        goto out;
    }
    a.pool = pool_start(cfg, chans, &a.stats, &a.stop);
    a.notifier = notifier_start(cfg, &a.stats, &a.stop);
    a.sweeper = sweeper_start(cfg, &a.stats, &a.stop);
    a.alerter = alerter_start(cfg, a.stats.reg, NULL, &a.stop);
    a.refunder = refunder_start(cfg, chans, &a.stats, &a.stop);
    if (a.pool == NULL || a.notifier == NULL || a.sweeper == NULL || a.alerter == NULL ||
        a.refunder == NULL) {
        LOG_ERROR("worker_thread_start_failed");
        atomic_store(&a.stop, 1);
        httpd_stop(a.http, NULL, NULL);
        rc = 1;
    } else {
        uv_signal_init(&loop, &a.sigterm);
        uv_signal_init(&loop, &a.sigint);
        a.sigterm.data = a.sigint.data = &a;
        uv_signal_start(&a.sigterm, on_signal, SIGTERM);
        uv_signal_start(&a.sigint, on_signal, SIGINT);
        {
            char threads[16], notify_threads[16];
            snprintf(threads, sizeof(threads), "%d", cfg->worker_threads);
            snprintf(notify_threads, sizeof(notify_threads), "%d", cfg->notify_threads);
            LOG_INFO("worker_started", "metrics_listen", cfg->metrics_listen, "threads", threads,
                     "notify_threads", notify_threads);
        }
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    /* The loop ends once the signal handles and the HTTP server are closed. */
    pool_join(a.pool);
    notifier_join(a.notifier);
    sweeper_join(a.sweeper);
    alerter_join(a.alerter);
    refunder_join(a.refunder);
out:
    if (uv_loop_close(&loop) != 0) {
        LOG_ERROR("worker_loop_not_closed");
        rc = 1;
    }
    worker_stats_free(&a.stats);
    LOG_INFO("worker_stopped");
    channels_free(chans);
    cfg_free(cfg);
    db_library_end();
    curl_global_cleanup();
    return rc;
}
