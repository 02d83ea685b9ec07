/* common/sig.h: Standard Webhooks signatures for outgoing business notifications. Pure. */
#ifndef PAYNOTIFY_COMMON_SIG_H
#define PAYNOTIFY_COMMON_SIG_H

#include <stddef.h>
#include <stdint.h>

/* Room for "v1," + base64 of 32 bytes + NUL. */
#define SIG_WEBHOOK_LEN 64

/* Writes "v1,<base64 HMAC-SHA256(key, id + "." + timestamp + "." + body)>" into out
 * (SIG_WEBHOOK_LEN bytes). key is the base64-decoded part of the business's whsec_ secret. */
void sig_webhook_sign(const unsigned char *key, size_t key_len, const char *webhook_id,
                      int64_t timestamp, const void *body, size_t body_len, char *out);

#endif
