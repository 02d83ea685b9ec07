/* tests/fuzz/fuzz_orders_api.c: POST /v1/orders bodies (receiver/orders_api.c
 * orders_api_parse_create), the business API's validation of JSON from outside.
 *
 * Every input is answered 0, 400 or 422 with a message; an accepted order always has a
 * positive amount, an upper-case ISO currency, a configured channel and a notify_url under
 * the business's prefix, and no string cut short. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "channel/channel.h"
#include "common/cfg.h"
#include "receiver/app.h"
#include "store/orders.h"
#include "tests/fuzz/fuzz.h"

static const char config[] =
    "{\"channels\":{\"stripe\":{\"type\":\"stripe\",\"webhook_secret\":\"whsec_fuzz\"}},"
    "\"businesses\":{\"shop\":{\"api_keys\":[\"0123456789abcdef-shop\"],"
    "\"webhook_secret\":\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\","
    "\"notify_url_prefixes\":[\"https://shop.example/\"]}}}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* Loaded once per process: the fuzzer calls this function millions of times. */
    static struct cfg *cfg;
    static channels *chans;
    struct order_new q;
    char *strings[ORDERS_API_STRINGS] = {0};
    char msg[256] = "";
    struct errbuf e = {0};
    int rc;

    if (cfg == NULL) {
        cfg = calloc(1, sizeof(*cfg));
        FUZZ_CHECK(cfg != NULL && cfg_parse_json(cfg, config, ".", &e) == 0);
        chans = channels_load(cfg, &e);
        FUZZ_CHECK(chans != NULL);
    }
    memset(&q, 0, sizeof(q));
    rc = orders_api_parse_create((const char *)data, size, &cfg->businesses[0], chans, &q, strings,
                                 msg, sizeof(msg));
    FUZZ_CHECK(rc == 0 || rc == 400 || rc == 422);
    if (rc != 0) {
        FUZZ_CHECK(msg[0] != '\0');
    } else {
        FUZZ_CHECK(q.amount > 0 && q.amount < INT64_MAX);
        FUZZ_CHECK(q.currency != NULL && strlen(q.currency) == 3);
        for (int i = 0; i < 3; i++)
            FUZZ_CHECK(isupper((unsigned char)q.currency[i]));
        FUZZ_CHECK(q.business_order_id != NULL && q.business_order_id[0] != '\0');
        FUZZ_CHECK(q.channel != NULL && channels_find(chans, q.channel) != NULL);
        FUZZ_CHECK(q.subject != NULL && q.subject[0] != '\0');
        FUZZ_CHECK(q.notify_url != NULL && strncmp(q.notify_url, "https://shop.example/", 21) == 0);
        FUZZ_CHECK(q.expire_at_ms >= 0);
    }
    for (int i = 0; i < ORDERS_API_STRINGS; i++)
        free(strings[i]);
    return 0;
}
