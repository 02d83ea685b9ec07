/* tests/fuzz/fuzz_envelope.c: envelope_decode() on a queue message (queue/envelope.c).
 * Anyone who can publish to paynotify.callbacks controls these bytes.
 *
 * A message that decodes must mean what its JSON says: every string the worker reads
 * as a C string must be the whole JSON string (a "\u0000" inside would make
 * "stripe\u0000x" read as channel "stripe"). It must also survive encode -> decode
 * unchanged: the worker re-publishes what it decoded. */
#include <json-c/json.h>

#include "queue/envelope.h"
#include "tests/fuzz/fuzz.h"

/* 1 if the JSON string member key of o (if it is one) holds a NUL. */
static int member_has_nul(json_object *o, const char *key)
{
    json_object *v;

    return json_object_object_get_ex(o, key, &v) && json_object_is_type(v, json_type_string) &&
           strlen(json_object_get_string(v)) != (size_t)json_object_get_string_len(v);
}

/* The decoded strings are the JSON's strings, not a prefix cut at a "\u0000". */
static void check_no_cut(const uint8_t *msg, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *o = json_tokener_parse_ex(tok, (const char *)msg, (int)len), *h;

    FUZZ_CHECK(o != NULL); /* envelope_decode() accepted these very bytes */
    if (member_has_nul(o, "callback_id") || member_has_nul(o, "channel")) {
        fprintf(stderr, "envelope: accepted a callback_id or channel holding \\u0000\n");
        FUZZ_CHECK(0);
    }
    if (json_object_object_get_ex(o, "headers", &h)) {
        json_object_object_foreach(h, key, val)
        {
            (void)val;
            if (member_has_nul(h, key)) {
                fprintf(stderr, "envelope: accepted header %s holding \\u0000\n", key);
                FUZZ_CHECK(0);
            }
        }
    }
    json_object_put(o);
    json_tokener_free(tok);
}

static void check_same(const struct envelope *a, const struct envelope *b)
{
    FUZZ_CHECK(strcmp(a->callback_id, b->callback_id) == 0);
    FUZZ_CHECK(strcmp(a->channel, b->channel) == 0);
    FUZZ_CHECK(a->received_at_ms == b->received_at_ms);
    FUZZ_CHECK(a->n_headers == b->n_headers);
    for (size_t i = 0; i < a->n_headers; i++) {
        const char *v = envelope_header(b, a->header_names[i]);

        FUZZ_CHECK(v != NULL && strcmp(v, a->header_values[i]) == 0);
    }
    FUZZ_CHECK(a->body_len == b->body_len);
    FUZZ_CHECK(a->body_len == 0 || memcmp(a->body, b->body, a->body_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct envelope env, again;
    struct errbuf e = {0};
    char *msg;
    size_t len;
    /* An exact-size copy with no NUL: AMQP bodies are not strings. */
    uint8_t *copy = malloc(size ? size : 1);

    if (copy == NULL)
        abort();
    if (size != 0)
        memcpy(copy, data, size);
    if (envelope_decode(copy, size, &env, &e) != 0) {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
        /* A failed decode leaves nothing to free. */
        FUZZ_CHECK(env.n_headers == 0 && env.body == NULL);
        free(copy);
        return 0;
    }
    FUZZ_CHECK(fuzz_terminated(env.callback_id, sizeof(env.callback_id)));
    FUZZ_CHECK(fuzz_terminated(env.channel, sizeof(env.channel)));
    FUZZ_CHECK(env.n_headers <= ENVELOPE_MAX_HEADERS);
    FUZZ_CHECK(env.body != NULL && env.body[env.body_len] == '\0');
    for (size_t i = 0; i < env.n_headers; i++)
        FUZZ_CHECK(env.header_names[i] != NULL && env.header_values[i] != NULL);
    check_no_cut(copy, size);

    msg = envelope_encode(&env, &len);
    FUZZ_CHECK(msg != NULL && len == strlen(msg));
    if (envelope_decode(msg, len, &again, &e) != 0) {
        fprintf(stderr, "envelope: re-decoding our own encoding failed: %s\n%s\n", e.msg, msg);
        FUZZ_CHECK(0);
    }
    check_same(&env, &again);
    envelope_clear(&again);
    free(msg);
    envelope_clear(&env);
    FUZZ_CHECK(env.body == NULL && env.n_headers == 0);
    free(copy);
    return 0;
}
