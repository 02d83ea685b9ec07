/* tests/unit/test_stripe.c: Stripe-Signature verification and event parsing. */
#include <string.h>

#include "channel/stripe.h"
#include "check.h"
#include "common/cfg.h"

static const char secret[] = "whsec_test_secret_0123456789abcdef";
static const char body[] = "{\"id\":\"evt_1\",\"type\":\"payment_intent.succeeded\","
                           "\"data\":{\"object\":{\"id\":\"pi_1\",\"amount\":1250,"
                           "\"amount_received\":1250,\"currency\":\"usd\","
                           "\"metadata\":{\"order_id\":\"po_abc\"}}}}";

static int verify(const char *hdr, const char *b, int64_t now)
{
    struct errbuf e = {0};
    return stripe_signature_verify(secret, hdr, b, strlen(b), now, STRIPE_TOLERANCE_S, &e);
}

static void test_signatures(void)
{
    char hdr[256], two[512];
    int64_t t = 1700000000;

    stripe_signature_make(secret, t, body, strlen(body), hdr, sizeof(hdr));
    CHECK_INT_EQ(verify(hdr, body, t), 0);
    CHECK_INT_EQ(verify(hdr, body, t + 300), 0);
    CHECK_INT_EQ(verify(hdr, body, t - 300), 0);
    /* stale and from the future */
    CHECK_INT_EQ(verify(hdr, body, t + 301), -1);
    CHECK_INT_EQ(verify(hdr, body, t - 301), -1);
    /* tampered body */
    {
        char tampered[sizeof(body)];
        memcpy(tampered, body, sizeof(body));
        tampered[strlen(tampered) - 5] = '9';
        CHECK_INT_EQ(verify(hdr, tampered, t), -1);
    }
    /* wrong secret */
    {
        char other[256];
        struct errbuf e = {0};
        stripe_signature_make("whsec_other", t, body, strlen(body), other, sizeof(other));
        CHECK_INT_EQ(verify(other, body, t), -1);
        CHECK_INT_EQ(stripe_signature_verify("whsec_other", other, body, strlen(body), t, 300, &e),
                     0);
    }
    /* several v1 entries (secret rotation): any match is enough; v0 ignored */
    snprintf(two, sizeof(two), "t=%lld,v1=%064d,%s,v0=abc", (long long)t, 0, strchr(hdr, ',') + 1);
    CHECK_INT_EQ(verify(two, body, t), 0);
    /* malformed headers */
    CHECK_INT_EQ(verify(NULL, body, t), -1);
    CHECK_INT_EQ(verify("", body, t), -1);
    CHECK_INT_EQ(verify("garbage", body, t), -1);
    CHECK_INT_EQ(verify("t=abc,v1=00", body, t), -1);
    CHECK_INT_EQ(verify("v1=00", body, t), -1);
    snprintf(two, sizeof(two), "t=%lld", (long long)t);
    CHECK_INT_EQ(verify(two, body, t), -1);
    /* a second t= is ambiguous */
    snprintf(two, sizeof(two), "t=%lld,%s", (long long)t, hdr);
    CHECK_INT_EQ(verify(two, body, t), -1);
    /* truncated signature */
    memcpy(two, hdr, sizeof(hdr));
    two[strlen(two) - 1] = '\0';
    CHECK_INT_EQ(verify(two, body, t), -1);
}

static void test_parse(void)
{
    const struct channel_ops *ops = channel_ops_for("stripe");
    struct pay_event ev;
    struct errbuf e = {0};

    CHECK(ops != NULL);
    CHECK(channel_ops_for("nope") == NULL);
    CHECK_INT_EQ(ops->parse(NULL, body, strlen(body), &ev, &e), 0);
    CHECK_INT_EQ(ev.kind, PAY_EVENT_SUCCEEDED);
    CHECK_STR_EQ(ev.event_id, "evt_1");
    CHECK_STR_EQ(ev.order_id, "po_abc");
    CHECK_STR_EQ(ev.txn_id, "pi_1");
    CHECK_STR_EQ(ev.currency, "USD");
    CHECK_INT_EQ(ev.amount, 1250);

    {
        const char *failed = "{\"id\":\"evt_2\",\"type\":\"payment_intent.payment_failed\","
                             "\"data\":{\"object\":{\"id\":\"pi_1\",\"amount\":1250,"
                             "\"currency\":\"usd\",\"metadata\":{\"order_id\":\"po_abc\"}}}}";
        CHECK_INT_EQ(ops->parse(NULL, failed, strlen(failed), &ev, &e), 0);
        CHECK_INT_EQ(ev.kind, PAY_EVENT_FAILED);
    }
    {
        const char *other = "{\"id\":\"evt_3\",\"type\":\"customer.created\","
                            "\"data\":{\"object\":{\"id\":\"cus_1\"}}}";
        CHECK_INT_EQ(ops->parse(NULL, other, strlen(other), &ev, &e), 0);
        CHECK_INT_EQ(ev.kind, PAY_EVENT_OTHER);
    }
    /* amounts must be integers: 12.5 would be truncated by json-c */
    {
        const char *dbl = "{\"id\":\"evt_4\",\"type\":\"payment_intent.succeeded\","
                          "\"data\":{\"object\":{\"id\":\"pi_1\",\"amount_received\":12.5,"
                          "\"currency\":\"usd\"}}}";
        CHECK_INT_EQ(ops->parse(NULL, dbl, strlen(dbl), &ev, &e), -1);
    }
    {
        const char *neg = "{\"id\":\"evt_4\",\"type\":\"payment_intent.succeeded\","
                          "\"data\":{\"object\":{\"id\":\"pi_1\",\"amount_received\":-5,"
                          "\"currency\":\"usd\"}}}";
        CHECK_INT_EQ(ops->parse(NULL, neg, strlen(neg), &ev, &e), -1);
    }
    const char *bad[] = {"", "{", "[]", "{\"id\":\"evt\"}", "{\"id\":1,\"type\":\"x\"}",
                         "{\"id\":\"e\",\"type\":\"payment_intent.succeeded\",\"data\":{}}",
                         "{\"id\":\"e\",\"type\":\"x\",\"data\":{\"object\":{}}} trailing",
                         /* invalid UTF-8 and non-strict JSON */
                         "{\"id\":\"e\xff\",\"type\":\"x\",\"data\":{\"object\":{}}}",
                         "{'id':'e','type':'x','data':{'object':{}}}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT_EQ(ops->parse(NULL, bad[i], strlen(bad[i]), &ev, &e), -1);
}

int main(void)
{
    test_signatures();
    test_parse();
    TEST_PASS();
    return 0;
}
