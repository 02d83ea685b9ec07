/* tests/unit/test_sig.c: Standard Webhooks signing against the specification's published
 * vector, and the crypto helpers under it. */
#include <stdlib.h>
#include <string.h>

#include "check.h"
#include "common/crypto.h"
#include "common/sig.h"

static void test_vector(void)
{
    /* From the Standard Webhooks specification's test vectors. */
    const char *secret_b64 = "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const char *body = "{\"test\": 2432232314}";
    unsigned char *key;
    size_t key_len;
    char sig[SIG_WEBHOOK_LEN];

    CHECK_INT_EQ(crypto_b64_decode(secret_b64, strlen(secret_b64), &key, &key_len), 0);
    sig_webhook_sign(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body, strlen(body),
                     sig);
    CHECK_STR_EQ(sig, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    /* any change to id, timestamp or body changes the signature */
    {
        char other[SIG_WEBHOOK_LEN];
        sig_webhook_sign(key, key_len, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265331, body,
                         strlen(body), other);
        CHECK(strcmp(sig, other) != 0);
    }
    free(key);
}

static void test_b64(void)
{
    const char *cases[][2] = {{"", ""},        {"f", "Zg=="},        {"fo", "Zm8="},
                              {"foo", "Zm9v"}, {"foob", "Zm9vYg=="}, {"fooba", "Zm9vYmE="}};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char enc[32];
        unsigned char *dec;
        size_t n;
        crypto_b64_encode((const unsigned char *)cases[i][0], strlen(cases[i][0]), enc);
        CHECK_STR_EQ(enc, cases[i][1]);
        CHECK_INT_EQ(crypto_b64_decode(enc, strlen(enc), &dec, &n), 0);
        CHECK_INT_EQ(n, strlen(cases[i][0]));
        CHECK(memcmp(dec, cases[i][0], n) == 0);
        free(dec);
    }
    const char *bad[] = {"Zg=", "Z===", "Zm9v!A==", "=Zg=", "Zg==Zg==", "Zm 9"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned char *dec = NULL;
        size_t n;
        CHECK_INT_EQ(crypto_b64_decode(bad[i], strlen(bad[i]), &dec, &n), -1);
    }
}

static void test_equal_and_ids(void)
{
    char a[64], b[64];
    CHECK(crypto_equal("abc", 3, "abc", 3));
    CHECK(!crypto_equal("abc", 3, "abd", 3));
    CHECK(!crypto_equal("abc", 3, "ab", 2));
    CHECK(!crypto_equal("", 0, "a", 1));
    CHECK_INT_EQ(crypto_random_id("po_", 12, a), 0);
    CHECK_INT_EQ(crypto_random_id("po_", 12, b), 0);
    CHECK_INT_EQ(strlen(a), 27);
    CHECK(strncmp(a, "po_", 3) == 0);
    CHECK(strcmp(a, b) != 0);
}

int main(void)
{
    test_vector();
    test_b64();
    test_equal_and_ids();
    TEST_PASS();
    return 0;
}
