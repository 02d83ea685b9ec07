/* common/crypto.h: HMAC-SHA256, SHA-256, base64, hex, constant-time compare and random
 * ids (OpenSSL). Pure functions: no I/O besides the kernel RNG. */
#ifndef PAYNOTIFY_COMMON_CRYPTO_H
#define PAYNOTIFY_COMMON_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define CRYPTO_SHA256_LEN 32

/* out must hold CRYPTO_SHA256_LEN bytes. */
void crypto_hmac_sha256(const void *key, size_t key_len, const void *msg, size_t msg_len,
                        unsigned char *out);
void crypto_sha256(const void *msg, size_t len, unsigned char *out);
/* Compares in time that depends only on the lengths. 1 if equal. */
int crypto_equal(const void *a, size_t a_len, const void *b, size_t b_len);
/* Lower-case hex; out must hold 2*len+1 bytes. */
void crypto_hex(const unsigned char *in, size_t len, char *out);
/* Standard base64 with padding; out must hold crypto_b64_len(len)+1 bytes. */
size_t crypto_b64_len(size_t len);
void crypto_b64_encode(const unsigned char *in, size_t len, char *out);
/* Decodes standard base64 (padding required, no whitespace). Caller frees *out with free().
 * -1 on malformed input. */
int crypto_b64_decode(const char *in, size_t len, unsigned char **out, size_t *out_len);
/* Random id: prefix + 2*nbytes hex chars. out must hold strlen(prefix)+2*nbytes+1. -1 if the
 * RNG failed. */
int crypto_random_id(const char *prefix, size_t nbytes, char *out);

#endif
