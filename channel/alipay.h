/* channel/alipay.h: the Alipay channel: asynchronous notifications (form-encoded, RSA2
 * over the sorted decoded parameters), and the alipay.trade.query / alipay.trade.refund
 * clients (app-key-signed requests, Alipay-signed JSON responses). */
#ifndef PAYNOTIFY_CHANNEL_ALIPAY_H
#define PAYNOTIFY_CHANNEL_ALIPAY_H

#include <stddef.h>
#include <stdint.h>

#include "channel/channel.h"
#include "common/errbuf.h"

#define ALIPAY_DEFAULT_API_URL "https://openapi.alipay.com/gateway.do"
#define ALIPAY_MAX_PARAMS 128    /* form parameters in one notification */
#define ALIPAY_MIN_KEY_BITS 2048 /* RSA2 keys are 2048-bit */
#define ALIPAY_CONNECT_TIMEOUT_MS 5000L
#define ALIPAY_TOTAL_TIMEOUT_MS 15000L
#define ALIPAY_MAX_RESPONSE (256 * 1024)

/* Config keys of a "type": "alipay" channel (any other key is an error):
 *   app_id                                   required
 *   seller_id                                optional; notifications must carry it when set
 *   alipay_public_key_file | alipay_public_key   required: PEM ("BEGIN PUBLIC KEY" or
 *                                            "BEGIN RSA PUBLIC KEY"), or the bare base64
 *                                            key the Alipay console shows
 *   app_private_key_file | app_private_key   optional (query and refund need it): PKCS#8
 *                                            or PKCS#1 PEM, or bare base64 DER
 *   api_url                                  default ALIPAY_DEFAULT_API_URL */
extern const struct channel_ops alipay_channel_ops;

/* A validated channel config as returned by alipay_channel_ops.config_load (void *). */
struct alipay_conf;

/* Decoded form parameters, in arrival order. */
typedef struct alipay_form alipay_form;

/* Decodes an application/x-www-form-urlencoded body ('+' is a space, %XX escapes) the way
 * Alipay notifications need it: malformed escapes, NUL bytes, duplicate or empty keys, a
 * pair without '=', more than ALIPAY_MAX_PARAMS pairs, a "charset" other than utf-8 and
 * non-UTF-8 text are all rejected (PERMANENT, message says which). Empty segments ("&&")
 * are skipped. body borrowed (need not be NUL-terminated). Free with alipay_form_free(). */
alipay_form *alipay_form_parse(const char *body, size_t len, struct errbuf *e);
void alipay_form_free(alipay_form *f); /* NULL-safe */
/* The decoded value of key, borrowed from f (valid until alipay_form_free), or NULL. */
const char *alipay_form_get(const alipay_form *f, const char *key);

/* The text RSA2 signs: every parameter with a non-empty value except "sign" (and
 * "sign_type" too when notification is non-zero: notifications leave it out, requests
 * sign it), sorted by key in byte order, "key=value" joined by '&', decoded values.
 * Caller frees with free(). */
char *alipay_sign_content(const alipay_form *f, int notification);

/* Finds the top-level member `key` of the JSON object in doc[0..len) and returns its
 * value's exact text (borrowed from doc) without re-serialising: the bytes Alipay signs
 * in API responses. 0 found, 1 absent, -1 + *e if doc is not an object or has key twice. */
int alipay_json_member(const char *doc, size_t len, const char *key, const char **value,
                       size_t *value_len, struct errbuf *e);

/* Builds the form body of a gateway request: app_id, method, format=JSON, charset=utf-8,
 * sign_type=RSA2, timestamp (now as "yyyy-MM-dd HH:mm:ss" in Asia/Shanghai), version=1.0,
 * biz_content, and sign (RSA2 with the app private key over the other parameters, as
 * alipay_sign_content(.., 0) builds them). All borrowed; *body: caller frees with free().
 * -1 + *e when the channel has no app private key or signing failed. */
int alipay_request_build(const struct alipay_conf *conf, const char *method,
                         const char *biz_content, int64_t now, char **body, struct errbuf *e);

/* "12.50" from 1250 (fen to yuan, exact integer formatting). out needs 32 bytes; -1 if
 * fen < 0. */
int alipay_format_yuan(int64_t fen, char *out, size_t out_len);

#endif
