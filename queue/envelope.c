/* queue/envelope.c: envelope codec (json-c). Decoding is strict: a message that does not
 * decode is poison and is parked, never retried forever. */
#include "queue/envelope.h"

#include <json-c/json.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"
#include "common/xalloc.h"

int envelope_add_header(struct envelope *env, const char *name, const char *value)
{
    if (env->n_headers == ENVELOPE_MAX_HEADERS)
        return -1;
    env->header_names[env->n_headers] = xstrdup(name);
    env->header_values[env->n_headers] = xstrdup(value);
    env->n_headers++;
    return 0;
}

void envelope_set_body(struct envelope *env, const void *body, size_t len)
{
    free(env->body);
    env->body = malloc(len + 1);
    if (env->body == NULL)
        abort();
    memcpy(env->body, body, len);
    env->body[len] = '\0';
    env->body_len = len;
}

char *envelope_encode(const struct envelope *env, size_t *len)
{
    json_object *o = json_object_new_object(), *h = json_object_new_object();
    char *b64 = malloc(crypto_b64_len(env->body_len) + 1);
    char *out;

    if (b64 == NULL)
        abort();
    crypto_b64_encode((const unsigned char *)env->body, env->body_len, b64);
    json_object_object_add(o, "v", json_object_new_int(ENVELOPE_VERSION));
    json_object_object_add(o, "callback_id", json_object_new_string(env->callback_id));
    json_object_object_add(o, "channel", json_object_new_string(env->channel));
    json_object_object_add(o, "received_at_ms", json_object_new_int64(env->received_at_ms));
    for (size_t i = 0; i < env->n_headers; i++)
        json_object_object_add(h, env->header_names[i],
                               json_object_new_string(env->header_values[i]));
    json_object_object_add(o, "headers", h);
    json_object_object_add(o, "body_b64", json_object_new_string(b64));
    free(b64);
    out = xstrdup(json_object_to_json_string_ext(o, JSON_C_TO_STRING_PLAIN));
    *len = strlen(out);
    json_object_put(o);
    return out;
}

static int get_str(json_object *o, const char *key, char *dst, size_t cap, struct errbuf *e)
{
    json_object *v;

    /* A "\u0000" inside would cut the C string short: refuse it. */
    if (!json_object_object_get_ex(o, key, &v) || !json_object_is_type(v, json_type_string) ||
        json_object_get_string_len(v) == 0 || (size_t)json_object_get_string_len(v) >= cap ||
        strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v)) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: bad or missing %s", key);
        return -1;
    }
    memcpy(dst, json_object_get_string(v), (size_t)json_object_get_string_len(v) + 1);
    return 0;
}

int envelope_decode(const void *msg, size_t len, struct envelope *env, struct errbuf *e)
{
    json_tokener *tok = json_tokener_new();
    json_object *o, *v, *h;
    unsigned char *body = NULL;
    size_t body_len = 0;
    int rc = -1;

    memset(env, 0, sizeof(*env));
    o = json_tokener_parse_ex(tok, msg, (int)len);
    if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
        !json_object_is_type(o, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: not a JSON object");
        goto out;
    }
    if (!json_object_object_get_ex(o, "v", &v) || !json_object_is_type(v, json_type_int) ||
        json_object_get_int(v) != ENVELOPE_VERSION) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: unsupported version");
        goto out;
    }
    if (get_str(o, "callback_id", env->callback_id, sizeof(env->callback_id), e) != 0 ||
        get_str(o, "channel", env->channel, sizeof(env->channel), e) != 0)
        goto out;
    if (!json_object_object_get_ex(o, "received_at_ms", &v) ||
        !json_object_is_type(v, json_type_int)) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: bad or missing received_at_ms");
        goto out;
    }
    env->received_at_ms = json_object_get_int64(v);
    if (!json_object_object_get_ex(o, "headers", &h) || !json_object_is_type(h, json_type_object)) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: bad or missing headers");
        goto out;
    }
    json_object_object_foreach(h, hk, hv)
    {
        if (!json_object_is_type(hv, json_type_string) ||
            strlen(json_object_get_string(hv)) != (size_t)json_object_get_string_len(hv) ||
            envelope_add_header(env, hk, json_object_get_string(hv)) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "envelope: bad header %.32s", hk);
            goto out;
        }
    }
    if (!json_object_object_get_ex(o, "body_b64", &v) ||
        !json_object_is_type(v, json_type_string) ||
        crypto_b64_decode(json_object_get_string(v), (size_t)json_object_get_string_len(v), &body,
                          &body_len) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "envelope: bad or missing body_b64");
        goto out;
    }
    env->body = (char *)body;
    env->body_len = body_len;
    rc = 0;
out:
    if (rc != 0)
        envelope_clear(env);
    json_object_put(o);
    json_tokener_free(tok);
    return rc;
}

const char *envelope_header(const struct envelope *env, const char *name)
{
    for (size_t i = 0; i < env->n_headers; i++)
        if (strcmp(env->header_names[i], name) == 0)
            return env->header_values[i];
    return NULL;
}

void envelope_clear(struct envelope *env)
{
    for (size_t i = 0; i < env->n_headers; i++) {
        free(env->header_names[i]);
        free(env->header_values[i]);
    }
    free(env->body);
    memset(env, 0, sizeof(*env));
}
