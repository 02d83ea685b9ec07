/* tests/fuzz/fuzz_cfg.c: the configuration file (common/cfg.c cfg_parse_json) and, when
 * it is valid, every channel module's config_load() through channels_load().
 *
 * Config is an operator's file, not an attacker's, but a typo must give a clear error
 * and never a crash. A document that parses must also describe itself (cfg_describe:
 * the JSON the binaries log at start) as valid JSON and answer lookups.
 *
 * Secrets and keys may come from files ("..._file", "file"). Relative names resolve in a folder
 * that does not exist, so that error path is covered; an input naming an absolute path or
 * ".." is skipped, so the fuzzer never reads /dev/stdin or the rest of the machine. */
#include <json-c/json.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "tests/fuzz/fuzz.h"

#define BASE_DIR "/nonexistent/paynotify-fuzz"

/* 1 if a "*_file" or "file" member (wechatpay's platform_certs) anywhere in o names a
 * path outside BASE_DIR. */
static int names_outside_file(json_object *o, int depth)
{
    if (depth > 64)
        return 1;
    if (json_object_is_type(o, json_type_array)) {
        for (size_t i = 0; i < json_object_array_length(o); i++)
            if (names_outside_file(json_object_array_get_idx(o, i), depth + 1))
                return 1;
        return 0;
    }
    if (!json_object_is_type(o, json_type_object))
        return 0;
    json_object_object_foreach(o, key, val)
    {
        size_t klen = strlen(key);

        if ((strcmp(key, "file") == 0 || (klen >= 5 && strcmp(key + klen - 5, "_file") == 0)) &&
            json_object_is_type(val, json_type_string)) {
            const char *path = json_object_get_string(val);

            if (path[0] == '/' || strstr(path, "..") != NULL)
                return 1;
        }
        if (names_outside_file(val, depth + 1))
            return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *json = fuzz_cstr(data, size);
    json_object *pre = json_tokener_parse(json);
    struct cfg *c;
    struct errbuf e = {0};
    channels *set;
    char *desc;
    json_object *d;
    int skip = pre != NULL && names_outside_file(pre, 0);

    json_object_put(pre);
    if (skip) {
        free(json);
        return 0;
    }
    c = calloc(1, sizeof(*c));
    if (c == NULL)
        abort();
    if (cfg_parse_json(c, json, BASE_DIR, &e) != 0) {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
        goto out; /* cfg_free() must release whatever was parsed before the error */
    }
    FUZZ_CHECK(c->n_channels > 0 && c->n_businesses > 0);
    for (size_t i = 0; i < c->n_channels; i++) {
        FUZZ_CHECK(c->channels[i].name && c->channels[i].type && c->channels[i].json);
        FUZZ_CHECK(cfg_channel_find(c, c->channels[i].name) != NULL);
    }
    for (size_t i = 0; i < c->n_businesses; i++) {
        const struct cfg_business *b = &c->businesses[i];

        FUZZ_CHECK(b->n_api_keys > 0 && b->webhook_key_len >= 24 && b->n_prefixes > 0);
        FUZZ_CHECK(cfg_business_find(c, b->name) != NULL);
        /* Keys are unique across businesses, so a key finds its own business. */
        for (size_t k = 0; k < b->n_api_keys; k++)
            FUZZ_CHECK(cfg_business_by_api_key(c, b->api_keys[k]) == b);
    }
    FUZZ_CHECK(cfg_business_by_api_key(c, "") == NULL);

    desc = cfg_describe(c);
    FUZZ_CHECK(desc != NULL);
    d = json_tokener_parse(desc);
    FUZZ_CHECK(d != NULL && json_object_is_type(d, json_type_object));
    json_object_put(d);
    free(desc);

    e = (struct errbuf){0};
    set = channels_load(c, &e);
    if (set == NULL) {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    } else {
        for (size_t i = 0; i < c->n_channels; i++) {
            const struct channel *ch = channels_find(set, c->channels[i].name);

            FUZZ_CHECK(ch != NULL && ch->ops != NULL && channels_index(set, ch) < c->n_channels);
        }
        channels_free(set);
    }
out:
    cfg_free(c);
    free(json);
    return 0;
}
