/* cmd/admin/main.c: paynotify-admin, the operator CLI.
 *   migrate        apply pending migrations (safe to run twice or concurrently)
 *   check-config   validate the environment and PAYNOTIFY_CONFIG, print it masked
 *   queues         declare the topology if needed and print each queue's message and
 *                  consumer counts as one JSON object
 *   replay KEY     send FAILED notifications again (KEY: webhook id or order id) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "common/log.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/db.h"
#include "store/migrate.h"
#include "store/orders.h"
#include "store/outbox.h"

static void usage(void)
{
    fprintf(stderr, "usage: paynotify-admin migrate | check-config | queues | replay KEY\n");
}

static int cmd_replay(const struct cfg *cfg, const char *key)
{
    struct errbuf e = {0};
    db_conn *db = db_open(cfg->mysql_url, 10000, &e);
    int n;
    char count[16];

    if (db == NULL) {
        LOG_ERROR("replay_failed", "error", e.msg);
        return 1;
    }
    n = outbox_replay(db, key, &e);
    db_close(db);
    if (n < 0) {
        LOG_ERROR("replay_failed", "key", key, "error", e.msg);
        return 1;
    }
    snprintf(count, sizeof(count), "%d", n);
    LOG_INFO("replay_queued", "key", key, "notifications", count);
    printf("%d notification(s) queued again; the sweeper publishes them within "
           "PAYNOTIFY_SWEEP_INTERVAL\n",
           n);
    return n > 0 ? 0 : 3;
}

static int cmd_queues(const struct cfg *cfg)
{
    struct errbuf e = {0};
    mq_conn *c = mq_open(cfg->amqp_url, 5000, &e);
    const char *fixed[] = {TOPOLOGY_CALLBACKS, TOPOLOGY_CALLBACKS_PARKED, TOPOLOGY_NOTIFY,
                           TOPOLOGY_NOTIFY_DEAD};
    char names[4 + CFG_MAX_DELAYS][TOPOLOGY_NAME_MAX];
    size_t n = 0;

    if (c == NULL || mq_declare_topology(c, cfg->queue_type, cfg->retry_delays_ms,
                                         cfg->n_retry_delays, &e) != 0) {
        LOG_ERROR("queues_failed", "error", e.msg);
        mq_close(c);
        return 1;
    }
    for (size_t i = 0; i < 4; i++)
        snprintf(names[n++], TOPOLOGY_NAME_MAX, "%s", fixed[i]);
    for (size_t k = 0; k < cfg->n_retry_delays; k++)
        topology_retry_queue_name((int)k + 1, cfg->retry_delays_ms[k], names[n++],
                                  TOPOLOGY_NAME_MAX);
    printf("{");
    for (size_t i = 0; i < n; i++) {
        uint32_t msgs = 0, consumers = 0;
        if (mq_queue_counts(c, names[i], &msgs, &consumers, &e) != 0) {
            printf("}\n");
            LOG_ERROR("queues_failed", "queue", names[i], "error", e.msg);
            mq_close(c);
            return 1;
        }
        printf("%s\"%s\":{\"messages\":%u,\"consumers\":%u}", i ? "," : "", names[i], msgs,
               consumers);
    }
    printf("}\n");
    mq_close(c);
    return 0;
}

static void report_applied(void *arg, int version, const char *name)
{
    char v[16];
    (void)arg;
    snprintf(v, sizeof(v), "%d", version);
    LOG_INFO("migration_applied", "version", v, "file", name);
}

static int cmd_migrate(const struct cfg *cfg)
{
    struct errbuf e = {0};
    db_conn *db;
    int applied = 0, rc;
    char n[16], cur[16];

    db = db_open(cfg->mysql_url, 10000, &e);
    if (db == NULL) {
        LOG_ERROR("migrate_failed", "error", e.msg);
        return 1;
    }
    rc = migrate_run(db, cfg->migrations_dir, &applied, report_applied, NULL, &e);
    if (rc != 0) {
        LOG_ERROR("migrate_failed", "error", e.msg, "dir", cfg->migrations_dir);
        db_close(db);
        return 1;
    }
    snprintf(n, sizeof(n), "%d", applied);
    snprintf(cur, sizeof(cur), "%d", migrate_current(db, &e));
    LOG_INFO("migrate_done", "applied", n, "schema_version", cur);
    db_close(db);
    return 0;
}

int main(int argc, char **argv)
{
    struct errbuf e = {0};
    struct cfg *cfg;
    int rc;

    if (argc < 2) {
        usage();
        return 2;
    }
    cfg = cfg_load(strcmp(argv[1], "check-config") == 0 ? CFG_NEED_FILE : CFG_NEED_ENV, &e);
    if (cfg == NULL) {
        fprintf(stderr, "paynotify-admin: configuration error: %s\n", e.msg);
        return 2;
    }
    log_init("admin", (enum log_level)cfg->log_level);
    db_library_init();
    if (strcmp(argv[1], "migrate") == 0) {
        rc = cmd_migrate(cfg);
    } else if (strcmp(argv[1], "replay") == 0 && argc == 3) {
        rc = cmd_replay(cfg, argv[2]);
    } else if (strcmp(argv[1], "queues") == 0) {
        rc = cmd_queues(cfg);
    } else if (strcmp(argv[1], "check-config") == 0) {
        channels *chans = channels_load(cfg, &e);
        if (chans == NULL) {
            fprintf(stderr, "paynotify-admin: configuration error: %s\n", e.msg);
            rc = 2;
        } else {
            char *d = cfg_describe(cfg);
            printf("%s\n", d);
            free(d);
            channels_free(chans);
            rc = 0;
        }
    } else {
        usage();
        rc = 2;
    }
    cfg_free(cfg);
    db_library_end();
    return rc;
}
