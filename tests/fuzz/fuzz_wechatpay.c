/* tests/fuzz/fuzz_wechatpay.c: the WeChat Pay channel module (channel/wechatpay.c)
 * through its channel_ops: verify() on the Wechatpay-* headers (platform RSA signature,
 * timestamp window) and parse() on the notification JSON, up to the AES-256-GCM open of
 * its resource. Input format and checks: tests/fuzz/channel_target.h; the seeds are
 * signed and encrypted with tests/data/keys' test keys. What lies behind the GCM tag is
 * fuzzed by fuzz_wechatpay_resource.c. */
#include "tests/fuzz/channel_target.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return channel_target_run(
        "wechatpay",
        "{\"type\":\"wechatpay\",\"mchid\":\"1900000001\",\"appid\":\"wx0000000000000001\","
        "\"apiv3_key_file\":\"wechat_apiv3_key.txt\",\"platform_certs\":["
        "{\"serial\":\"5157F09EFDC096DE15EBE81A47057A7232F1B8E1\","
        "\"file\":\"wechat_platform1_cert.pem\"},"
        "{\"serial\":\"PUB_KEY_ID_0114000000000000000000000000000002\","
        "\"file\":\"wechat_platform2_pub.pem\"}]}",
        data, size);
}
