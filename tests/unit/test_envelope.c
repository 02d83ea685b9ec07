/* tests/unit/test_envelope.c: envelope round trip (binary-safe) and strict decoding. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "queue/envelope.h"

int main(void)
{
    struct envelope a = {0}, b;
    struct errbuf e = {0};
    const char body[] = "{\"x\":1}\0tail\xff";
    size_t len;
    char *msg;

    strcpy(a.callback_id, "cb_123");
    strcpy(a.channel, "stripe");
    a.received_at_ms = 1700000000123;
    CHECK_INT_EQ(envelope_add_header(&a, "stripe-signature", "t=1,v1=ab"), 0);
    envelope_set_body(&a, body, sizeof(body) - 1);
    msg = envelope_encode(&a, &len);
    CHECK_INT_EQ(envelope_decode(msg, len, &b, &e), 0);
    CHECK_STR_EQ(b.callback_id, "cb_123");
    CHECK_STR_EQ(b.channel, "stripe");
    CHECK_INT_EQ(b.received_at_ms, 1700000000123);
    CHECK_STR_EQ(envelope_header(&b, "stripe-signature"), "t=1,v1=ab");
    CHECK(envelope_header(&b, "other") == NULL);
    CHECK_INT_EQ(b.body_len, sizeof(body) - 1);
    CHECK(memcmp(b.body, body, b.body_len) == 0);
    envelope_clear(&b);
    free(msg);
    envelope_clear(&a);

    const char *bad[] = {
        "",
        "[]",
        "{\"v\":2,\"callback_id\":\"c\",\"channel\":\"s\",\"received_at_ms\":1,\"headers\":{},"
        "\"body_b64\":\"\"}",
        "{\"v\":1,\"channel\":\"s\",\"received_at_ms\":1,\"headers\":{},\"body_b64\":\"\"}",
        "{\"v\":1,\"callback_id\":\"c\",\"channel\":\"s\",\"received_at_ms\":1,\"headers\":{},"
        "\"body_b64\":\"!!\"}",
        "{\"v\":1,\"callback_id\":\"c\",\"channel\":\"s\",\"received_at_ms\":\"1\",\"headers\":{},"
        "\"body_b64\":\"\"}",
        "{\"v\":1,\"callback_id\":\"c\",\"channel\":\"s\",\"received_at_ms\":1,\"headers\":{\"a\":"
        "1},"
        "\"body_b64\":\"\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT_EQ(envelope_decode(bad[i], strlen(bad[i]), &b, &e), -1);
    TEST_PASS();
    return 0;
}
