/* common/cfg.c: one table of PAYNOTIFY_* environment keys with defaults and bounds, and
 * the JSON file of channels, businesses and alerts. Every rejection names its key. */
#include "common/cfg.h"

#include <json-c/json.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/jsonx.h"
#include "common/log.h"
#include "common/url.h"
#include "common/xalloc.h"

#ifndef PAYNOTIFY_DEFAULT_MIGRATIONS_DIR
#define PAYNOTIFY_DEFAULT_MIGRATIONS_DIR "/usr/share/paynotify/migrations"
#endif

static const char *env_or(const char *key, const char *def)
{
    const char *v = getenv(key);
    return (v != NULL && *v != '\0') ? v : def;
}

static int env_int(const char *key, int def, int lo, int hi, int *out, struct errbuf *e)
{
    const char *v = getenv(key);
    char *end;
    long n;

    if (v == NULL || *v == '\0') {
        *out = def;
        return 0;
    }
    n = strtol(v, &end, 10);
    if (*end != '\0' || end == v || n < lo || n > hi) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected an integer in %d..%d, got \"%.40s\"", key, lo,
                   hi, v);
        return -1;
    }
    *out = (int)n;
    return 0;
}

static int env_duration(const char *key, const char *def, int64_t *out, struct errbuf *e)
{
    struct errbuf sub;
    if (duration_parse_ms(env_or(key, def), out, &sub) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s", key, sub.msg);
        return -1;
    }
    return 0;
}

static int env_url(const char *key, const char *def, const char *scheme, char **out,
                   struct errbuf *e)
{
    const char *v = env_or(key, def);
    struct url u;
    struct errbuf sub;

    if (url_parse(v, &u, &sub) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s", key, sub.msg);
        return -1;
    }
    if (strcmp(u.scheme, scheme) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected a %s:// URL", key, scheme);
        return -1;
    }
    *out = xstrdup(v);
    return 0;
}

static int load_env(struct cfg *c, struct errbuf *e)
{
    char host[256];
    int port, lvl;
    const char *v;
    struct errbuf sub;

    if (env_url("PAYNOTIFY_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/", "amqp", &c->amqp_url,
                e) != 0 ||
        env_url("PAYNOTIFY_REDIS_URL", "redis://127.0.0.1:6379/0", "redis", &c->redis_url, e) !=
            0 ||
        env_url("PAYNOTIFY_MYSQL_URL", "mysql://paynotify:paynotify@127.0.0.1:3306/paynotify",
                "mysql", &c->mysql_url, e) != 0)
        return -1;
    v = env_or("PAYNOTIFY_LISTEN", "127.0.0.1:8080");
    if (url_split_hostport(v, host, &port, &sub) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_LISTEN: %s", sub.msg);
        return -1;
    }
    c->listen = xstrdup(v);
    v = env_or("PAYNOTIFY_METRICS_LISTEN", "127.0.0.1:9100");
    if (url_split_hostport(v, host, &port, &sub) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_METRICS_LISTEN: %s", sub.msg);
        return -1;
    }
    c->metrics_listen = xstrdup(v);
    v = env_or("PAYNOTIFY_QUEUE_TYPE", "quorum");
    if (strcmp(v, "quorum") != 0 && strcmp(v, "classic") != 0) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "PAYNOTIFY_QUEUE_TYPE: expected quorum or classic, got \"%.40s\"", v);
        return -1;
    }
    c->queue_type = xstrdup(v);
    if (env_int("PAYNOTIFY_WORKERS", 2, 1, 256, &c->workers, e) != 0 ||
        env_int("PAYNOTIFY_WORKER_THREADS", 4, 1, 64, &c->worker_threads, e) != 0 ||
        env_int("PAYNOTIFY_PREFETCH", 16, 1, 1000, &c->prefetch, e) != 0 ||
        /* At most 16: the per-endpoint limit of 16 connections is divided among them. */
        env_int("PAYNOTIFY_NOTIFY_THREADS", 2, 1, 16, &c->notify_threads, e) != 0 ||
        env_duration("PAYNOTIFY_NOTIFY_TIMEOUT", "10s", &c->notify_timeout_ms, e) != 0 ||
        env_duration("PAYNOTIFY_CONFIRM_TIMEOUT", "5s", &c->confirm_timeout_ms, e) != 0 ||
        env_duration("PAYNOTIFY_SWEEP_INTERVAL", "10s", &c->sweep_interval_ms, e) != 0)
        return -1;

    /* PAYNOTIFY_RETRY_DELAYS: its length is the number of retries. */
    {
        char *list = xstrdup(env_or("PAYNOTIFY_RETRY_DELAYS", "15s,1m,5m,30m,2h"));
        char *save = NULL;
        int rc = 0;
        c->n_retry_delays = 0;
        for (char *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
            if (c->n_retry_delays == CFG_MAX_DELAYS) {
                errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_RETRY_DELAYS: at most %d delays",
                           CFG_MAX_DELAYS);
                rc = -1;
                break;
            }
            if (duration_parse_ms(tok, &c->retry_delays_ms[c->n_retry_delays], &sub) != 0) {
                errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_RETRY_DELAYS: %s", sub.msg);
                rc = -1;
                break;
            }
            c->n_retry_delays++;
        }
        free(list);
        if (rc != 0)
            return -1;
        if (c->n_retry_delays == 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_RETRY_DELAYS: at least one delay needed");
            return -1;
        }
    }
    lvl = log_level_parse(env_or("PAYNOTIFY_LOG_LEVEL", "info"));
    if (lvl < 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_LOG_LEVEL: expected debug, info, warn or error");
        return -1;
    }
    c->log_level = lvl;
    c->migrations_dir =
        xstrdup(env_or("PAYNOTIFY_MIGRATIONS_DIR", PAYNOTIFY_DEFAULT_MIGRATIONS_DIR));
    v = getenv("PAYNOTIFY_CONFIG");
    c->config_path = (v != NULL && *v != '\0') ? xstrdup(v) : NULL;
    return 0;
}

/* ---- JSON file ---- */

static int parse_channel(struct cfg_channel *ch, const char *name, json_object *obj,
                         const char *base_dir, struct errbuf *e)
{
    char where[160];

    snprintf(where, sizeof(where), "channels.%s", name);
    ch->name = xstrdup(name);
    for (const char *p = name; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_' || *p == '-')) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s: channel names use a-z, 0-9, _ and - only", where);
            return -1;
        }
    if (!json_object_is_type(obj, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected an object", where);
        return -1;
    }
    if (jsonx_get_string(obj, "type", where, 1, &ch->type, e) != 0)
        return -1;
    /* The channel module (channel/) validates the rest when the binaries load channels. */
    ch->json = xstrdup(json_object_to_json_string_ext(obj, JSON_C_TO_STRING_PLAIN));
    ch->base_dir = xstrdup(base_dir);
    return 0;
}

static int parse_business(struct cfg_business *b, const char *name, json_object *obj,
                          const char *base_dir, struct errbuf *e)
{
    char where[160];
    json_object *v;

    snprintf(where, sizeof(where), "businesses.%s", name);
    b->name = xstrdup(name);
    if (!json_object_is_type(obj, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: expected an object", where);
        return -1;
    }
    if (jsonx_get_string_array(obj, "api_keys", where, 1, &b->api_keys, &b->n_api_keys, e) != 0 ||
        jsonx_get_secret(obj, "webhook_secret", where, base_dir, 1, &b->webhook_secret, e) != 0 ||
        jsonx_get_string_array(obj, "notify_url_prefixes", where, 1, &b->notify_url_prefixes,
                               &b->n_prefixes, e) != 0)
        return -1;
    for (size_t i = 0; i < b->n_api_keys; i++)
        if (strlen(b->api_keys[i]) < 16) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.api_keys[%zu]: at least 16 characters", where, i);
            return -1;
        }
    for (size_t i = 0; i < b->n_prefixes; i++)
        if (jsonx_check_http_url(b->notify_url_prefixes[i], where, "notify_url_prefixes", e) != 0)
            return -1;
    if (strncmp(b->webhook_secret, "whsec_", 6) != 0 ||
        crypto_b64_decode(b->webhook_secret + 6, strlen(b->webhook_secret + 6), &b->webhook_key,
                          &b->webhook_key_len) != 0 ||
        b->webhook_key_len < 24) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "%s.webhook_secret: expected whsec_<base64 of at least 24 bytes>", where);
        return -1;
    }
    if (json_object_object_get_ex(obj, "allow_private_network", &v)) {
        if (!json_object_is_type(v, json_type_boolean)) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.allow_private_network: expected true or false",
                       where);
            return -1;
        }
        b->allow_private_network = json_object_get_boolean(v);
    }
    return 0;
}

static int parse_alerts(struct cfg_alerts *a, json_object *obj, struct errbuf *e)
{
    const char *where = "alerts";

    if (!json_object_is_type(obj, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts: expected an object");
        return -1;
    }
    if (jsonx_get_string(obj, "sms_url", where, 0, &a->sms_url, e) != 0 ||
        jsonx_get_string_array(obj, "sms_to", where, 0, &a->sms_to, &a->n_sms_to, e) != 0 ||
        jsonx_get_string(obj, "smtp_url", where, 0, &a->smtp_url, e) != 0 ||
        jsonx_get_string(obj, "mail_from", where, 0, &a->mail_from, e) != 0 ||
        jsonx_get_string_array(obj, "mail_to", where, 0, &a->mail_to, &a->n_mail_to, e) != 0)
        return -1;
    if (a->sms_url != NULL && jsonx_check_http_url(a->sms_url, where, "sms_url", e) != 0)
        return -1;
    if ((a->sms_url == NULL) != (a->n_sms_to == 0)) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts.sms_to: sms_url and sms_to go together");
        return -1;
    }
    if (a->smtp_url != NULL && strncmp(a->smtp_url, "smtp://", 7) != 0 &&
        strncmp(a->smtp_url, "smtps://", 8) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "alerts.smtp_url: expected smtp:// or smtps://");
        return -1;
    }
    if ((a->smtp_url == NULL) != (a->n_mail_to == 0) ||
        (a->smtp_url != NULL && a->mail_from == NULL)) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "alerts.mail_to: smtp_url, mail_from and mail_to go together");
        return -1;
    }
    return 0;
}

int cfg_parse_json(struct cfg *c, const char *json, const char *base_dir, struct errbuf *e)
{
    json_tokener *tok = json_tokener_new();
    json_object *root, *v;
    int rc = -1;
    size_t i;

    root = json_tokener_parse_ex(tok, json, (int)strlen(json));
    if (root == NULL || json_tokener_get_error(tok) != json_tokener_success) {
        errbuf_set(e, ERRBUF_PERMANENT, "config: invalid JSON: %s",
                   json_tokener_error_desc(json_tokener_get_error(tok)));
        goto out;
    }
    if (!json_object_is_type(root, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "config: expected a JSON object");
        goto out;
    }
    json_object_object_foreach(root, key, val)
    {
        (void)val;
        if (strcmp(key, "channels") != 0 && strcmp(key, "businesses") != 0 &&
            strcmp(key, "alerts") != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "%.64s: unknown top-level key", key);
            goto out;
        }
    }
    if (!json_object_object_get_ex(root, "channels", &v) ||
        !json_object_is_type(v, json_type_object) || json_object_object_length(v) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "channels: expected a non-empty object");
        goto out;
    }
    c->channels = xcalloc((size_t)json_object_object_length(v), sizeof(*c->channels));
    i = 0;
    json_object_object_foreach(v, cname, cobj)
    {
        c->n_channels = ++i;
        if (parse_channel(&c->channels[i - 1], cname, cobj, base_dir, e) != 0)
            goto out;
    }
    if (!json_object_object_get_ex(root, "businesses", &v) ||
        !json_object_is_type(v, json_type_object) || json_object_object_length(v) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "businesses: expected a non-empty object");
        goto out;
    }
    c->businesses = xcalloc((size_t)json_object_object_length(v), sizeof(*c->businesses));
    i = 0;
    json_object_object_foreach(v, bname, bobj)
    {
        c->n_businesses = ++i;
        if (parse_business(&c->businesses[i - 1], bname, bobj, base_dir, e) != 0)
            goto out;
    }
    /* An API key shared by two businesses would make authentication ambiguous. */
    for (size_t a = 0; a < c->n_businesses; a++)
        for (size_t k = 0; k < c->businesses[a].n_api_keys; k++)
            for (size_t b = a + 1; b < c->n_businesses; b++)
                for (size_t l = 0; l < c->businesses[b].n_api_keys; l++)
                    if (strcmp(c->businesses[a].api_keys[k], c->businesses[b].api_keys[l]) == 0) {
                        errbuf_set(e, ERRBUF_PERMANENT,
                                   "businesses.%s.api_keys: key also used by business %s",
                                   c->businesses[b].name, c->businesses[a].name);
                        goto out;
                    }
    if (json_object_object_get_ex(root, "alerts", &v) && parse_alerts(&c->alerts, v, e) != 0)
        goto out;
    rc = 0;
out:
    json_object_put(root);
    json_tokener_free(tok);
    return rc;
}

struct cfg *cfg_load(enum cfg_need need, struct errbuf *e)
{
    struct cfg *c = xcalloc(1, sizeof(*c));
    char *json = NULL, *dir_copy = NULL;
    struct errbuf sub;

    if (load_env(c, e) != 0)
        goto fail;
    if (need == CFG_NEED_FILE) {
        if (c->config_path == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT,
                       "PAYNOTIFY_CONFIG: not set (path of the JSON configuration file)");
            goto fail;
        }
        json = jsonx_read_file(c->config_path, 1 << 20, &sub);
        if (json == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "PAYNOTIFY_CONFIG: %s", sub.msg);
            goto fail;
        }
        dir_copy = xstrdup(c->config_path);
        if (cfg_parse_json(c, json, dirname(dir_copy), e) != 0)
            goto fail;
    }
    free(json);
    free(dir_copy);
    return c;
fail:
    free(json);
    free(dir_copy);
    cfg_free(c);
    return NULL;
}

static void free_strv(char **v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(v[i]);
    free(v);
}

void cfg_free(struct cfg *c)
{
    if (c == NULL)
        return;
    free(c->amqp_url);
    free(c->redis_url);
    free(c->mysql_url);
    free(c->listen);
    free(c->metrics_listen);
    free(c->queue_type);
    free(c->config_path);
    free(c->migrations_dir);
    for (size_t i = 0; i < c->n_channels; i++) {
        free(c->channels[i].name);
        free(c->channels[i].type);
        free(c->channels[i].json);
        free(c->channels[i].base_dir);
    }
    free(c->channels);
    for (size_t i = 0; i < c->n_businesses; i++) {
        struct cfg_business *b = &c->businesses[i];
        free(b->name);
        free_strv(b->api_keys, b->n_api_keys);
        free(b->webhook_secret);
        free(b->webhook_key);
        free_strv(b->notify_url_prefixes, b->n_prefixes);
    }
    free(c->businesses);
    free(c->alerts.sms_url);
    free_strv(c->alerts.sms_to, c->alerts.n_sms_to);
    free(c->alerts.smtp_url);
    free(c->alerts.mail_from);
    free_strv(c->alerts.mail_to, c->alerts.n_mail_to);
    free(c);
}

const struct cfg_channel *cfg_channel_find(const struct cfg *c, const char *name)
{
    for (size_t i = 0; i < c->n_channels; i++)
        if (strcmp(c->channels[i].name, name) == 0)
            return &c->channels[i];
    return NULL;
}

const struct cfg_business *cfg_business_find(const struct cfg *c, const char *name)
{
    for (size_t i = 0; i < c->n_businesses; i++)
        if (strcmp(c->businesses[i].name, name) == 0)
            return &c->businesses[i];
    return NULL;
}

const struct cfg_business *cfg_business_by_api_key(const struct cfg *c, const char *token)
{
    const struct cfg_business *found = NULL;
    size_t tlen = strlen(token);

    /* No early exit: every key is compared, whatever matched. */
    for (size_t i = 0; i < c->n_businesses; i++)
        for (size_t k = 0; k < c->businesses[i].n_api_keys; k++) {
            const char *key = c->businesses[i].api_keys[k];
            if (crypto_equal(key, strlen(key), token, tlen))
                found = &c->businesses[i];
        }
    return found;
}

static json_object *jstr(const char *s)
{
    return s ? json_object_new_string(s) : NULL;
}

static json_object *strv_json(char **v, size_t n)
{
    json_object *a = json_object_new_array();
    for (size_t i = 0; i < n; i++)
        json_object_array_add(a, json_object_new_string(v[i]));
    return a;
}

/* Strips user:password from a URL for logging. */
static json_object *masked_url(const char *u)
{
    const char *at, *scheme;
    char buf[512];

    if (u == NULL)
        return NULL;
    at = strrchr(u, '@');
    scheme = strstr(u, "://");
    if (at == NULL || scheme == NULL || at < scheme)
        return json_object_new_string(u);
    snprintf(buf, sizeof(buf), "%.*s://***@%s", (int)(scheme - u), u, at + 1);
    return json_object_new_string(buf);
}

char *cfg_describe(const struct cfg *c)
{
    json_object *o = json_object_new_object(), *chans, *biz, *delays;
    char *out;

    json_object_object_add(o, "amqp_url", masked_url(c->amqp_url));
    json_object_object_add(o, "redis_url", masked_url(c->redis_url));
    json_object_object_add(o, "mysql_url", masked_url(c->mysql_url));
    json_object_object_add(o, "listen", jstr(c->listen));
    json_object_object_add(o, "metrics_listen", jstr(c->metrics_listen));
    json_object_object_add(o, "queue_type", jstr(c->queue_type));
    json_object_object_add(o, "worker_threads", json_object_new_int(c->worker_threads));
    json_object_object_add(o, "prefetch", json_object_new_int(c->prefetch));
    json_object_object_add(o, "notify_threads", json_object_new_int(c->notify_threads));
    delays = json_object_new_array();
    for (size_t i = 0; i < c->n_retry_delays; i++)
        json_object_array_add(delays, json_object_new_int64(c->retry_delays_ms[i]));
    json_object_object_add(o, "retry_delays_ms", delays);
    json_object_object_add(o, "notify_timeout_ms", json_object_new_int64(c->notify_timeout_ms));
    json_object_object_add(o, "config", jstr(c->config_path));
    chans = json_object_new_object();
    for (size_t i = 0; i < c->n_channels; i++)
        json_object_object_add(chans, c->channels[i].name,
                               json_object_new_string(c->channels[i].type));
    json_object_object_add(o, "channels", chans);
    biz = json_object_new_object();
    for (size_t i = 0; i < c->n_businesses; i++)
        json_object_object_add(
            biz, c->businesses[i].name,
            strv_json(c->businesses[i].notify_url_prefixes, c->businesses[i].n_prefixes));
    json_object_object_add(o, "businesses", biz);
    out = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    json_object_put(o);
    return out;
}
