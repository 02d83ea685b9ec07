/* tests/unit/test_cfg.c: configuration validation: defaults, every bad key named. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "channel/channel.h"
#include "common/cfg.h"

static const char good[] =
    "{\"channels\":{\"stripe\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_abc\"}},"
    "\"businesses\":{\"shop\":{\"api_keys\":[\"0123456789abcdef-shop\"],"
    "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
    "\"notify_url_prefixes\":[\"https://shop.example/\"]}}}";

static void expect_json_error(const char *json, const char *needle)
{
    struct cfg c;
    struct errbuf e = {0};

    memset(&c, 0, sizeof(c));
    if (cfg_parse_json(&c, json, ".", &e) == 0) {
        fprintf(stderr, "accepted: %s\n", json);
        exit(1);
    }
    if (strstr(e.msg, needle) == NULL) {
        fprintf(stderr, "error \"%s\" does not name \"%s\"\n", e.msg, needle);
        exit(1);
    }
    /* free whatever was parsed before the error */
    struct cfg *heap = malloc(sizeof(*heap));
    *heap = c;
    cfg_free(heap);
}

/* A config whose only channel "x" is chan_json must load as a file but fail in its
 * channel module, with a message naming the key. */
static void expect_channel_error(const char *chan_json, const char *needle)
{
    char json[2048];
    struct cfg *c = calloc(1, sizeof(*c));
    struct errbuf e = {0};
    channels *set;

    snprintf(json, sizeof(json),
             "{\"channels\":{\"x\":%s},\"businesses\":{\"shop\":{\"api_keys\":"
             "[\"0123456789abcdef-shop\"],\"webhook_secret\":"
             "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\",\"notify_url_prefixes\":"
             "[\"https://shop.example/\"]}}}",
             chan_json);
    CHECK_INT_EQ(cfg_parse_json(c, json, ".", &e), 0);
    set = channels_load(c, &e);
    if (set != NULL || strstr(e.msg, needle) == NULL) {
        fprintf(stderr, "%s: got \"%s\", want it to name \"%s\"\n", chan_json,
                set ? "(accepted)" : e.msg, needle);
        exit(1);
    }
    cfg_free(c);
}

static void expect_env_error(const char *key, const char *value)
{
    struct errbuf e = {0};
    struct cfg *c;

    setenv(key, value, 1);
    c = cfg_load(CFG_NEED_ENV, &e);
    if (c != NULL || strncmp(e.msg, key, strlen(key)) != 0) {
        fprintf(stderr, "%s=%s: got \"%s\"\n", key, value, c ? "(accepted)" : e.msg);
        exit(1);
    }
    unsetenv(key);
}

static void test_env(void)
{
    struct errbuf e = {0};
    struct cfg *c = cfg_load(CFG_NEED_ENV, &e);

    CHECK(c != NULL);
    CHECK_STR_EQ(c->listen, "127.0.0.1:8080");
    CHECK_INT_EQ(c->n_retry_delays, 5);
    CHECK_INT_EQ(c->retry_delays_ms[0], 15000);
    CHECK_INT_EQ(c->retry_delays_ms[4], 7200000);
    CHECK_INT_EQ(c->notify_timeout_ms, 10000);
    CHECK_STR_EQ(c->queue_type, "quorum");
    CHECK_INT_EQ(c->notify_threads, 2);
    cfg_free(c);

    setenv("PAYNOTIFY_NOTIFY_THREADS", "16", 1);
    c = cfg_load(CFG_NEED_ENV, &e);
    CHECK(c != NULL);
    CHECK_INT_EQ(c->notify_threads, 16);
    {
        char *d = cfg_describe(c);
        CHECK(strstr(d, "\"notify_threads\":16") != NULL);
        free(d);
    }
    cfg_free(c);
    unsetenv("PAYNOTIFY_NOTIFY_THREADS");

    setenv("PAYNOTIFY_RETRY_DELAYS", "1s,2s", 1);
    c = cfg_load(CFG_NEED_ENV, &e);
    CHECK(c != NULL);
    CHECK_INT_EQ(c->n_retry_delays, 2);
    cfg_free(c);
    unsetenv("PAYNOTIFY_RETRY_DELAYS");

    expect_env_error("PAYNOTIFY_RETRY_DELAYS", "15s,soon");
    expect_env_error("PAYNOTIFY_RETRY_DELAYS", ",");
    expect_env_error("PAYNOTIFY_NOTIFY_TIMEOUT", "0s");
    expect_env_error("PAYNOTIFY_LISTEN", "8080");
    expect_env_error("PAYNOTIFY_AMQP_URL", "http://x/");
    expect_env_error("PAYNOTIFY_MYSQL_URL", "nonsense");
    expect_env_error("PAYNOTIFY_WORKER_THREADS", "0");
    expect_env_error("PAYNOTIFY_NOTIFY_THREADS", "0");
    expect_env_error("PAYNOTIFY_NOTIFY_THREADS", "17");
    expect_env_error("PAYNOTIFY_NOTIFY_THREADS", "two");
    expect_env_error("PAYNOTIFY_WORKERS", "many");
    expect_env_error("PAYNOTIFY_QUEUE_TYPE", "stream");
    expect_env_error("PAYNOTIFY_LOG_LEVEL", "loud");

    /* The file is required when asked for. */
    unsetenv("PAYNOTIFY_CONFIG");
    CHECK(cfg_load(CFG_NEED_FILE, &e) == NULL);
    CHECK(strstr(e.msg, "PAYNOTIFY_CONFIG") != NULL);
    setenv("PAYNOTIFY_CONFIG", "/nonexistent/paynotify.json", 1);
    CHECK(cfg_load(CFG_NEED_FILE, &e) == NULL);
    CHECK(strstr(e.msg, "PAYNOTIFY_CONFIG") != NULL);
    unsetenv("PAYNOTIFY_CONFIG");
}

static void test_json(void)
{
    struct cfg *c = calloc(1, sizeof(*c));
    struct errbuf e = {0};

    CHECK_INT_EQ(cfg_parse_json(c, good, ".", &e), 0);
    CHECK_INT_EQ(c->n_channels, 1);
    CHECK_STR_EQ(cfg_channel_find(c, "stripe")->type, "stripe");
    {
        channels *set = channels_load(c, &e);
        CHECK(set != NULL);
        CHECK(channels_find(set, "stripe") != NULL);
        CHECK(channels_find(set, "alipay") == NULL);
        CHECK_STR_EQ(channels_find(set, "stripe")->ops->type, "stripe");
        channels_free(set);
    }
    CHECK(cfg_business_by_api_key(c, "0123456789abcdef-shop") == cfg_business_find(c, "shop"));
    CHECK(cfg_business_by_api_key(c, "0123456789abcdef-sho") == NULL);
    CHECK(cfg_business_by_api_key(c, "") == NULL);
    CHECK_INT_EQ(cfg_business_find(c, "shop")->webhook_key_len, 24);
    {
        char *d = cfg_describe(c);
        CHECK(strstr(d, "whsec_") == NULL); /* secrets never described */
        CHECK(strstr(d, "0123456789abcdef-shop") == NULL);
        free(d);
    }
    cfg_free(c);

    expect_json_error("{", "invalid JSON");
    expect_json_error("{\"businesses\":{}}", "channels");
    expect_json_error("{\"channels\":{\"x\":{}}}", "channels.x.type");
    expect_json_error("{\"channels\":{\"x\":[]}}", "channels.x");
    expect_channel_error("{\"type\":\"paypal\"}", "channels.x.type");
    expect_channel_error("{\"type\":\"stripe\"}", "channels.x");
    expect_channel_error("{\"type\":\"stripe\",\"webhook_secret\":\"abc\"}",
                         "channels.x.webhook_secret");
    expect_channel_error("{\"type\":\"stripe\",\"webhook_secret_file\":\"/nonexistent\"}",
                         "channels.x.webhook_secret_file");
    expect_channel_error(
        "{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\",\"api_url\":\"ftp://x\"}",
        "channels.x.api_url");
    expect_json_error("{\"channels\":{\"Bad Name\":{\"type\":\"stripe\"}}}", "channels.Bad Name");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"short\"],\"webhook_secret\":"
                      "\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\",\"notify_url_prefixes\":"
                      "[\"https://x/\"]}}}",
                      "businesses.b.api_keys[0]");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_c2hvcnQ=\",\"notify_url_prefixes\":"
                      "[\"https://x/\"]}}}",
                      "businesses.b.webhook_secret");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
                      "\"notify_url_prefixes\":[\"ftp://x/\"]}}}",
                      "businesses.b.notify_url_prefixes");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
                      "\"notify_url_prefixes\":[\"https://x/\"],\"allow_private_network\":1}}}",
                      "businesses.b.allow_private_network");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
                      "\"notify_url_prefixes\":[\"https://x/\"]},"
                      "\"c\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
                      "\"notify_url_prefixes\":[\"https://x/\"]}}}",
                      "api_keys");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"businesses\":{\"b\":{\"api_keys\":[\"0123456789abcdef\"],"
                      "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
                      "\"notify_url_prefixes\":[\"https://x/\"]}},"
                      "\"alerts\":{\"sms_url\":\"http://x/\"}}",
                      "alerts.sms_to");
    expect_json_error("{\"channels\":{\"s\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_a\"}},"
                      "\"extra\":1}",
                      "extra");
}

static void test_dev_config(void)
{
    /* The development config in the repo must always load. */
    char path[4096];
    struct errbuf e = {0};
    struct cfg *c;
    const char *src = getenv("PAYNOTIFY_SOURCE_DIR");

    CHECK(src != NULL);
    snprintf(path, sizeof(path), "%s/config/dev.json", src);
    setenv("PAYNOTIFY_CONFIG", path, 1);
    c = cfg_load(CFG_NEED_FILE, &e);
    if (c == NULL)
        fprintf(stderr, "%s\n", e.msg);
    CHECK(c != NULL);
    {
        channels *set = channels_load(c, &e);
        if (set == NULL)
            fprintf(stderr, "%s\n", e.msg);
        CHECK(set != NULL);
        channels_free(set);
    }
    cfg_free(c);
    unsetenv("PAYNOTIFY_CONFIG");
}

int main(void)
{
    /* Start from a clean environment so the caller's PAYNOTIFY_* do not leak in. */
    const char *keys[] = {
        "PAYNOTIFY_AMQP_URL",   "PAYNOTIFY_REDIS_URL",     "PAYNOTIFY_MYSQL_URL",
        "PAYNOTIFY_LISTEN",     "PAYNOTIFY_RETRY_DELAYS",  "PAYNOTIFY_NOTIFY_TIMEOUT",
        "PAYNOTIFY_QUEUE_TYPE", "PAYNOTIFY_WORKERS",       "PAYNOTIFY_WORKER_THREADS",
        "PAYNOTIFY_LOG_LEVEL",  "PAYNOTIFY_NOTIFY_THREADS"};
    for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
        unsetenv(keys[i]);
    test_env();
    test_json();
    test_dev_config();
    TEST_PASS();
    return 0;
}
