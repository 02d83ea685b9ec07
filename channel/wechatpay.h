/* channel/wechatpay.h: the WeChat Pay API v3 channel: notification verification
 * (RSA-SHA256 platform signature, AES-256-GCM resource), and the query and refund clients
 * (merchant-signed requests, platform-signed responses). */
#ifndef PAYNOTIFY_CHANNEL_WECHATPAY_H
#define PAYNOTIFY_CHANNEL_WECHATPAY_H

#include <stddef.h>
#include <stdint.h>

#include "channel/channel.h"
#include "common/errbuf.h"

#define WECHATPAY_TOLERANCE_S 300  /* notification and response timestamps, each way */
#define WECHATPAY_APIV3_KEY_LEN 32 /* the APIv3 key is used raw as the AES-256 key */
#define WECHATPAY_MAX_CERTS 8      /* platform_certs entries (rotation keeps two or three) */

/* Config keys of a "type": "wechatpay" channel (see wechatpay.c for the checks):
 *   mchid, appid                       required strings
 *   apiv3_key_file | apiv3_key         required, exactly 32 bytes
 *   platform_certs                     required, [{"serial", "file"}, ...]: X.509 PEM
 *                                      certificates or RSA public keys (PEM)
 *   merchant_serial, merchant_key_file optional pair (query and refund need them);
 *                                      merchant_key may also be given inline
 *   api_url                            default https://api.mch.weixin.qq.com */
extern const struct channel_ops wechatpay_channel_ops;

/* A validated channel config as returned by wechatpay_channel_ops.config_load (void *). */
struct wechatpay_conf;

/* Builds the request's Authorization header value ("WECHATPAY2-SHA256-RSA2048 mchid=...")
 * over "METHOD\npath_with_query\ntimestamp\nnonce\nbody\n" with the merchant key, into out
 * (1024 bytes suffice). conf, method, path, nonce and body borrowed; body may be NULL when
 * body_len is 0. -1 + *e when the channel has no merchant key or signing failed. */
int wechatpay_authorization(const struct wechatpay_conf *conf, const char *method,
                            const char *path_with_query, const char *body, size_t body_len,
                            int64_t timestamp, const char *nonce, char *out, size_t out_len,
                            struct errbuf *e);

/* Verifies a platform signature (notification or API response) over
 * "timestamp\nnonce\nbody\n" with the platform key named by serial, and |now - timestamp|
 * <= WECHATPAY_TOLERANCE_S. Any NULL header is an error naming it. All borrowed. */
int wechatpay_verify_signature(const struct wechatpay_conf *conf, const char *timestamp,
                               const char *nonce, const char *serial, const char *signature,
                               const char *body, size_t body_len, int64_t now, struct errbuf *e);

#endif
