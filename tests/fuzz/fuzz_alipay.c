/* tests/fuzz/fuzz_alipay.c: the Alipay channel module (channel/alipay.c) through its
 * channel_ops: verify() (form decoding, RSA2 over the sorted parameters, app_id) and
 * parse() on the form-encoded notification. Input format and checks:
 * tests/fuzz/channel_target.h; the seeds are signed with tests/data/keys' test key. */
#include "tests/fuzz/channel_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return channel_target_run("alipay",
                              "{\"type\":\"alipay\",\"app_id\":\"2021000000000001\","
                              "\"seller_id\":\"2088000000000001\","
                              "\"alipay_public_key_file\":\"alipay_public_key.pem\"}",
                              data, size);
}
