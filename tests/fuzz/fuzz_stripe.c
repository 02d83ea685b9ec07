/* tests/fuzz/fuzz_stripe.c: the Stripe channel module (channel/stripe.c) through its
 * channel_ops: verify() on the Stripe-Signature header and parse() on the event JSON.
 * Input format and checks: tests/fuzz/channel_target.h. */
#include "tests/fuzz/channel_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return channel_target_run("stripe",
                              "{\"type\":\"stripe\","
                              "\"webhook_secret\":\"whsec_fuzz0123456789abcdefghijklmnopqrstuv\"}",
                              data, size);
}
