/* common/sig.c: Standard Webhooks signing (https://www.standardwebhooks.com/). */
#include "common/sig.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/crypto.h"

void sig_webhook_sign(const unsigned char *key, size_t key_len, const char *webhook_id,
                      int64_t timestamp, const void *body, size_t body_len, char *out)
{
    char prefix[160];
    int plen = snprintf(prefix, sizeof(prefix), "%s.%lld.", webhook_id, (long long)timestamp);
    size_t n = (size_t)plen + body_len;
    unsigned char *msg = malloc(n ? n : 1);
    unsigned char mac[CRYPTO_SHA256_LEN];

    if (msg == NULL)
        abort();
    memcpy(msg, prefix, (size_t)plen);
    memcpy(msg + plen, body, body_len);
    crypto_hmac_sha256(key, key_len, msg, n, mac);
    free(msg);
    memcpy(out, "v1,", 3);
    crypto_b64_encode(mac, sizeof(mac), out + 3);
}
