/* tests/fuzz/fuzz_wechatpay_resource.c: what a WeChat Pay notification carries behind
 * its AES-256-GCM tag (channel/wechatpay.c parse: the transaction or refund JSON).
 *
 * A fuzzer cannot forge a GCM tag, so fuzz_wechatpay.c never gets past it. Here the
 * target holds the test APIv3 key (tests/data/keys/wechat_apiv3_key.txt) and seals the
 * input itself: one control byte (the event_type: TRANSACTION.SUCCESS or REFUND.SUCCESS,
 * and whether associated_data is present), then the plaintext. The notification built
 * around it goes to the module's parse(); checks as in tests/fuzz/channel_target.h. */
#include <openssl/evp.h>

#include "common/crypto.h"
#include "tests/fuzz/channel_target.h"

#define CONF                                                                             \
    "{\"type\":\"wechatpay\",\"mchid\":\"1900000001\",\"appid\":\"wx0000000000000001\"," \
    "\"apiv3_key_file\":\"wechat_apiv3_key.txt\",\"platform_certs\":["                   \
    "{\"serial\":\"PUB_KEY_ID_0114000000000000000000000000000002\","                     \
    "\"file\":\"wechat_platform2_pub.pem\"}]}"
#define APIV3_KEY "wPaynotifyTestApiV3Key0123456789" /* tests/data/keys/wechat_apiv3_key.txt */
#define NONCE "fuzznonce012"                         /* 12 bytes, as GCM_IV_LEN */

/* AES-256-GCM seal of pt under APIV3_KEY: ciphertext then the 16-byte tag, into out
 * (pt_len + 16 bytes). */
static void seal(const char *aad, const uint8_t *pt, size_t pt_len, unsigned char *out)
{
    EVP_CIPHER_CTX *x = EVP_CIPHER_CTX_new();
    int len = 0;

    FUZZ_CHECK(x != NULL);
    FUZZ_CHECK(EVP_EncryptInit_ex(x, EVP_aes_256_gcm(), NULL, NULL, NULL) == 1);
    FUZZ_CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_SET_IVLEN, 12, NULL) == 1);
    FUZZ_CHECK(EVP_EncryptInit_ex(x, NULL, NULL, (const unsigned char *)APIV3_KEY,
                                  (const unsigned char *)NONCE) == 1);
    if (aad[0] != '\0')
        FUZZ_CHECK(EVP_EncryptUpdate(x, NULL, &len, (const unsigned char *)aad, (int)strlen(aad)) ==
                   1);
    FUZZ_CHECK(EVP_EncryptUpdate(x, out, &len, pt, (int)pt_len) == 1);
    FUZZ_CHECK(EVP_EncryptFinal_ex(x, out + len, &len) == 1);
    FUZZ_CHECK(EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_GCM_GET_TAG, 16, out + pt_len) == 1);
    EVP_CIPHER_CTX_free(x);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const char *const types[4] = {"TRANSACTION.SUCCESS", "REFUND.SUCCESS",
                                         "TRANSACTION.SUCCESS", "REFUND.ABNORMAL"};
    const struct channel_ops *ops = channel_ops_for("wechatpay");
    const char *aad, *type;
    unsigned char *ct;
    char *b64, *body;
    size_t ct_len, body_cap;
    struct pay_event ev;
    struct errbuf e = {0};
    const void *conf;
    int n;

    if (size < 1)
        return 0;
    FUZZ_CHECK(ops != NULL);
    conf = channel_target_conf(ops, CONF);
    type = types[data[0] & 3];
    aad = (data[0] & 4) ? "" : (data[0] & 1) ? "refund" : "transaction";

    ct_len = size - 1 + 16;
    ct = malloc(ct_len);
    b64 = malloc(crypto_b64_len(ct_len) + 1);
    body_cap = crypto_b64_len(ct_len) + 512;
    body = malloc(body_cap);
    if (ct == NULL || b64 == NULL || body == NULL)
        abort();
    seal(aad, data + 1, size - 1, ct);
    crypto_b64_encode(ct, ct_len, b64);
    n = snprintf(body, body_cap,
                 "{\"id\":\"EV-fuzz-1\",\"create_time\":\"2023-11-15T06:13:20+08:00\","
                 "\"resource_type\":\"encrypt-resource\",\"event_type\":\"%s\","
                 "\"summary\":\"x\",\"resource\":{\"original_type\":\"transaction\","
                 "\"algorithm\":\"AEAD_AES_256_GCM\",\"ciphertext\":\"%s\",%s%s%s"
                 "\"nonce\":\"" NONCE "\"}}",
                 type, b64, aad[0] ? "\"associated_data\":\"" : "", aad, aad[0] ? "\"," : "");
    FUZZ_CHECK(n > 0 && (size_t)n < body_cap);

    e = (struct errbuf){0};
    if (ops->parse(conf, body, (size_t)n, &ev, &e) == 0)
        channel_target_check_event(&ev);
    else
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');

    free(body);
    free(b64);
    free(ct);
    return 0;
}
