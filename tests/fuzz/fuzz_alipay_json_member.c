/* tests/fuzz/fuzz_alipay_json_member.c: the scanner that cuts the signed member out of
 * an Alipay API response (channel/alipay.c alipay_json_member). The response comes from
 * the network; the bytes it returns are what the RSA2 signature is checked over and
 * then what json-c parses, so a wrong cut is a wrong verdict.
 *
 * Input: one byte picking the member ("sign", "alipay_trade_query_response",
 * "alipay_trade_refund_response" or "error_response"), then the response. A member
 * found must lie inside the response, and when json-c (strict) accepts the whole
 * response, the cut text must be one complete JSON value by itself. */
#include <json-c/json.h>

#include "channel/alipay.h"
#include "tests/fuzz/fuzz.h"

/* 1 if s[0..len) is exactly one JSON value to json-c in strict mode. */
static int one_value(const char *s, size_t len)
{
    json_tokener *tok = json_tokener_new();
    json_object *o;
    int ok;

    if (tok == NULL)
        abort();
    json_tokener_set_flags(tok, JSON_TOKENER_STRICT);
    o = json_tokener_parse_ex(tok, s, (int)len);
    ok = json_tokener_get_error(tok) == json_tokener_success &&
         json_tokener_get_parse_end(tok) == len;
    /* A bare number at the very end needs the end of input to finish ("12" is a
     * prefix of "123"): feed "" to close it. */
    if (!ok && json_tokener_get_error(tok) == json_tokener_continue) {
        json_object_put(o);
        o = json_tokener_parse_ex(tok, "", 1);
        ok = json_tokener_get_error(tok) == json_tokener_success;
    }
    json_object_put(o);
    json_tokener_free(tok);
    return ok;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const keys[4] = {"sign", "alipay_trade_query_response",
                                        "alipay_trade_refund_response", "error_response"};
    const char *key, *value = NULL;
    size_t len, value_len = 0;
    struct errbuf e = {0};
    char *doc;
    int rc;

    if (size < 1)
        return 0;
    key = keys[data[0] & 3];
    len = size - 1;
    /* An exact-size copy with no NUL: the scanner takes a length. */
    doc = malloc(len ? len : 1);
    if (doc == NULL)
        abort();
    if (len != 0)
        memcpy(doc, data + 1, len);
    rc = alipay_json_member(doc, len, key, &value, &value_len, &e);
    if (rc == 0) {
        FUZZ_CHECK(value != NULL && value_len > 0);
        FUZZ_CHECK(value >= doc && value + value_len <= doc + len);
        if (one_value(doc, len) && !one_value(value, value_len)) {
            fprintf(stderr, "alipay_json_member: \"%s\" cut as \"%.*s\"\n", key, (int)value_len,
                    value);
            FUZZ_CHECK(0);
        }
    } else if (rc == 1) {
        FUZZ_CHECK(value == NULL && value_len == 0);
    } else {
        FUZZ_CHECK(rc == -1 && e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    }
    free(doc);
    return 0;
}
