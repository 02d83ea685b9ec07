/* common/cfg.h: the validated configuration table (environment + JSON file), loaded once
 * at start and read-only afterwards. Callers receive const struct cfg *. */
#ifndef PAYNOTIFY_COMMON_CFG_H
#define PAYNOTIFY_COMMON_CFG_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

#define CFG_MAX_DELAYS 16

struct cfg_channel {
    char *name;     /* the key in "channels" and in /v1/callbacks/{name} */
    char *type;     /* selects the module in channel/ ("stripe", ...) */
    char *json;     /* the channel's whole JSON object, validated by its module at load */
    char *base_dir; /* where the channel's relative file paths start */
};

struct cfg_business {
    char *name;
    char **api_keys;
    size_t n_api_keys;
    char *webhook_secret;       /* "whsec_<base64>" */
    unsigned char *webhook_key; /* base64-decoded part after whsec_ */
    size_t webhook_key_len;
    char **notify_url_prefixes;
    size_t n_prefixes;
    int allow_private_network;
};

struct cfg_alerts {
    char *sms_url;
    char **sms_to;
    size_t n_sms_to;
    char *smtp_url;
    char *mail_from;
    char **mail_to;
    size_t n_mail_to;
};

struct cfg {
    /* environment */
    char *amqp_url;
    char *redis_url;
    char *mysql_url;
    char *listen;
    char *metrics_listen;
    char *queue_type; /* "quorum" or "classic" */
    char *config_path;
    char *migrations_dir;
    int workers;
    int worker_threads;
    int prefetch;
    int notify_threads; /* notify consumers per worker process */
    int64_t retry_delays_ms[CFG_MAX_DELAYS];
    size_t n_retry_delays;
    int64_t notify_timeout_ms;
    int64_t confirm_timeout_ms;
    int64_t sweep_interval_ms;
    int log_level;
    /* JSON file */
    struct cfg_channel *channels;
    size_t n_channels;
    struct cfg_business *businesses;
    size_t n_businesses;
    struct cfg_alerts alerts;
};

enum cfg_need {
    CFG_NEED_ENV = 0,  /* environment only (paynotify-admin migrate) */
    CFG_NEED_FILE = 1, /* PAYNOTIFY_CONFIG must be set and valid */
};

/* Reads the PAYNOTIFY_* environment and, with CFG_NEED_FILE, the JSON file. On error the
 * message names the offending key ("PAYNOTIFY_RETRY_DELAYS: ..." or
 * "channels.stripe.webhook_secret_file: ..."). Caller frees with cfg_free(). */
struct cfg *cfg_load(enum cfg_need need, struct errbuf *e);
/* Parses a JSON config document into c (used by cfg_load; exposed for tests). base_dir is
 * where relative file paths start. */
int cfg_parse_json(struct cfg *c, const char *json, const char *base_dir, struct errbuf *e);
void cfg_free(struct cfg *c);

/* Borrowed pointers into c, or NULL. */
const struct cfg_channel *cfg_channel_find(const struct cfg *c, const char *name);
const struct cfg_business *cfg_business_find(const struct cfg *c, const char *name);
/* Finds the business whose API key equals token. Compares against every key of every
 * business in constant time per key, so timing does not reveal which prefix matched. */
const struct cfg_business *cfg_business_by_api_key(const struct cfg *c, const char *token);

/* Writes the effective configuration as one JSON object with secrets masked. Caller
 * frees with free(). */
char *cfg_describe(const struct cfg *c);

#endif
