/* common/crypto.c: hashing, encoding and comparison helpers on top of OpenSSL. */
#include "common/crypto.h"

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

void crypto_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                        unsigned char *out)
{
    unsigned int out_len = CRYPTO_SHA256_LEN;
    HMAC(EVP_sha256(), key, (int)key_len, msg, msg_len, out, &out_len);
}

void crypto_sha256(const void *msg, size_t len, unsigned char *out)
{
    unsigned int out_len = CRYPTO_SHA256_LEN;
    EVP_Digest(msg, len, out, &out_len, EVP_sha256(), NULL);
}

int crypto_equal(const void *a, size_t a_len, const void *b, size_t b_len)
{
    const unsigned char *pa = a, *pb = b;
    unsigned char diff = 0;
    size_t n = a_len < b_len ? a_len : b_len;

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned char)(pa[i] ^ pb[i]);
    return diff == 0 && a_len == b_len;
}

void crypto_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

size_t crypto_b64_len(size_t len)
{
    return 4 * ((len + 2) / 3);
}

void crypto_b64_encode(const unsigned char *in, size_t len, char *out)
{
    int n = EVP_EncodeBlock((unsigned char *)out, in, (int)len);
    out[n] = '\0';
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

int crypto_b64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len)
{
    unsigned char *buf;
    size_t o = 0;

    if (len % 4 != 0)
        return -1;
    buf = malloc(len / 4 * 3 + 1);
    if (buf == NULL)
        abort();
    for (size_t i = 0; i < len; i += 4) {
        int v[4];
        int pad = 0;
        for (int j = 0; j < 4; j++) {
            unsigned char c = (unsigned char)in[i + j];
            if (c == '=' && i + 4 == len && j >= 2) {
                v[j] = 0;
                pad++;
            } else if (pad > 0 || (v[j] = b64_value(c)) < 0) {
                free(buf);
                return -1;
            }
        }
        buf[o++] = (unsigned char)(v[0] << 2 | v[1] >> 4);
        if (pad < 2)
            buf[o++] = (unsigned char)((v[1] & 15) << 4 | v[2] >> 2);
        if (pad < 1)
            buf[o++] = (unsigned char)((v[2] & 3) << 6 | v[3]);
    }
    buf[o] = '\0';
    *out = buf;
    *out_len = o;
    return 0;
}

int crypto_random_id(const char *prefix, size_t nbytes, char *out)
{
    unsigned char raw[64];
    size_t plen = strlen(prefix);

    if (nbytes > sizeof(raw) || RAND_bytes(raw, (int)nbytes) != 1)
        return -1;
    memcpy(out, prefix, plen);
    crypto_hex(raw, nbytes, out + plen);
    return 0;
}
