/* tests/fuzz/channel_target.h: the body of every channel/ module's fuzz target. A new
 * provider's target is one file:
 *
 *     #include "tests/fuzz/channel_target.h"
 *     int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
 *     {
 *         return channel_target_run("alipay", "{\"type\":\"alipay\",...}", data, size);
 *     }
 *
 * plus seeds in tests/fuzz/corpus/<name>/. Relative key files in the config are
 * looked up under tests/data/keys/.
 *
 * Input: the notification as the receiver hands it over: header lines "Name: value\n",
 * an empty line, then the body (no empty line: all body, no headers). The module's
 * verify() and parse() both run on it at a fixed clock. parse() runs whatever verify()
 * said, since a module must survive any body; an accepted event must be well-formed. */
#ifndef PAYNOTIFY_TESTS_FUZZ_CHANNEL_TARGET_H
#define PAYNOTIFY_TESTS_FUZZ_CHANNEL_TARGET_H

#include <ctype.h>

#include "channel/channel.h"
#include "tests/fuzz/fuzz.h"

#ifndef PAYNOTIFY_FUZZ_SOURCE_DIR
#error "the build defines PAYNOTIFY_FUZZ_SOURCE_DIR (the repository root)"
#endif

#define CHANNEL_TARGET_MAX_HEADERS 16

struct channel_target_headers {
    size_t n;
    char *names[CHANNEL_TARGET_MAX_HEADERS];  /* lower-case, owned */
    char *values[CHANNEL_TARGET_MAX_HEADERS]; /* trimmed, owned */
};

/* The receiver's lookup: first header of that (lower-case) name, or NULL. */
static inline const char *channel_target_header(void *ctx, const char *name)
{
    const struct channel_target_headers *h = ctx;

    for (size_t i = 0; i < h->n; i++)
        if (strcmp(h->names[i], name) == 0)
            return h->values[i];
    return NULL;
}

/* Splits "Name: value" lines (CR optional) off the front of data into h. Returns where
 * the body starts; data without an empty line is all body. A line without ':' is
 * dropped, as httpreq would have refused the request. */
static inline size_t channel_target_split(const uint8_t *data, size_t size,
                                          struct channel_target_headers *h)
{
    size_t off = 0, blank = 0;

    while (blank + 1 < size && !(data[blank] == '\n' && data[blank + 1] == '\n'))
        blank++;
    if (blank + 1 >= size)
        return 0;
    /* Every line up to the blank one ends in '\n', so memchr() below always finds one. */
    while (off < size) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t len = (size_t)(nl - (data + off)), vstart, vend;
        const uint8_t *colon;

        if (len > 0 && data[off + len - 1] == '\r')
            len--;
        if (len == 0)
            return (size_t)(nl - data) + 1;
        colon = memchr(data + off, ':', len);
        if (colon != NULL && colon != data + off && h->n < CHANNEL_TARGET_MAX_HEADERS) {
            size_t nlen = (size_t)(colon - (data + off));
            char *name = fuzz_cstr(data + off, nlen);

            for (char *c = name; *c; c++)
                *c = (char)tolower((unsigned char)*c);
            vstart = nlen + 1;
            vend = len;
            while (vstart < vend && (data[off + vstart] == ' ' || data[off + vstart] == '\t'))
                vstart++;
            while (vend > vstart && (data[off + vend - 1] == ' ' || data[off + vend - 1] == '\t'))
                vend--;
            h->names[h->n] = name;
            h->values[h->n] = fuzz_cstr(data + off + vstart, vend - vstart);
            h->n++;
        }
        off = (size_t)(nl - data) + 1;
    }
    return size;
}

/* An accepted event must be something the order logic can use safely. */
static inline void channel_target_check_event(const struct pay_event *ev)
{
    FUZZ_CHECK((unsigned)ev->kind <= PAY_EVENT_OTHER);
    FUZZ_CHECK(strcmp(pay_event_kind_name(ev->kind), "?") != 0);
    FUZZ_CHECK(fuzz_terminated(ev->event_id, sizeof(ev->event_id)) && ev->event_id[0] != '\0');
    FUZZ_CHECK(fuzz_terminated(ev->event_type, sizeof(ev->event_type)));
    FUZZ_CHECK(fuzz_terminated(ev->order_id, sizeof(ev->order_id)));
    FUZZ_CHECK(fuzz_terminated(ev->txn_id, sizeof(ev->txn_id)));
    FUZZ_CHECK(fuzz_terminated(ev->currency, sizeof(ev->currency)));
    FUZZ_CHECK(ev->amount >= -1);
    /* json-c 0.16 saturates an integer too large for int64 to INT64_MAX (receiver/
     * orders_api.c refuses it for that reason): that value is never a real amount. */
    FUZZ_CHECK(ev->amount != INT64_MAX);
    if (ev->currency[0] != '\0') {
        FUZZ_CHECK(strlen(ev->currency) == 3);
        for (int i = 0; i < 3; i++)
            FUZZ_CHECK(ev->currency[i] >= 'A' && ev->currency[i] <= 'Z');
    }
    /* Money moved: the logic needs the order, the amount and the currency. */
    if (ev->kind == PAY_EVENT_SUCCEEDED)
        FUZZ_CHECK(ev->amount >= 0 && ev->currency[0] != '\0');
}

/* The module's config for conf_json, loaded on first use and kept for the process:
 * loading parses PEM keys and certificates, which would cost more than the input itself.
 * It is read-only afterwards (the modules take it const), so inputs stay independent. */
static inline const void *channel_target_conf(const struct channel_ops *ops, const char *conf_json)
{
    static void *conf;
    struct errbuf e = {0};

    if (conf != NULL)
        return conf;
    conf = ops->config_load(conf_json, "channels.fuzz",
                            PAYNOTIFY_FUZZ_SOURCE_DIR "/tests/data/keys", &e);
    /* The module and its config are fixed: failing here is a broken target, not input. */
    if (conf == NULL)
        fprintf(stderr, "channel %s: config_load: %s\n", ops->type, e.msg);
    FUZZ_CHECK(conf != NULL);
    return conf;
}

/* Runs one input (see above) through the module of this type configured by conf_json
 * (the same for every input of a target). Always returns 0 (libFuzzer's "keep going"). */
static inline int channel_target_run(const char *type, const char *conf_json, const uint8_t *data,
                                     size_t size)
{
    const struct channel_ops *ops = channel_ops_for(type);
    struct channel_target_headers h = {0};
    struct channel_request req;
    struct pay_event ev;
    struct errbuf e = {0};
    size_t body_off;
    const void *conf;
    char *body;
    int rc;

    FUZZ_CHECK(ops != NULL);
    conf = channel_target_conf(ops, conf_json);
    FUZZ_CHECK(ops->accept.status >= 200 && ops->accept.body != NULL);
    FUZZ_CHECK(ops->reject.status >= 200 && ops->reject.body != NULL);

    body_off = channel_target_split(data, size, &h);
    /* Like httpreq and envelope bodies: exactly len bytes plus a NUL. */
    body = fuzz_cstr(data + body_off, size - body_off);
    req.body = body;
    req.body_len = size - body_off;
    req.header = channel_target_header;
    req.ctx = &h;

    e = (struct errbuf){0};
    rc = ops->verify(conf, &req, FUZZ_NOW_S, &e);
    FUZZ_CHECK(rc == 0 || (rc == -1 && e.kind != ERRBUF_NONE && e.msg[0] != '\0'));

    e = (struct errbuf){0};
    rc = ops->parse(conf, req.body, req.body_len, &ev, &e);
    if (rc == 0)
        channel_target_check_event(&ev);
    else
        FUZZ_CHECK(rc == -1 && e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');

    free(body);
    for (size_t i = 0; i < h.n; i++) {
        free(h.names[i]);
        free(h.values[i]);
    }
    return 0;
}

#endif
