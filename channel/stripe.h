/* channel/stripe.h: Stripe webhooks: Stripe-Signature verification and event parsing. */
#ifndef PAYNOTIFY_CHANNEL_STRIPE_H
#define PAYNOTIFY_CHANNEL_STRIPE_H

#include <stddef.h>
#include <stdint.h>

#include "channel/channel.h"
#include "common/errbuf.h"

#define STRIPE_TOLERANCE_S 300

extern const struct channel_ops stripe_channel_ops;

/* Verifies header "t=...,v1=...[,v1=...][,v0=...]" over "t.body" with HMAC-SHA256 keyed
 * by the whole whsec_ secret. 0 if one v1 matches and |now - t| <= tolerance_s. */
int stripe_signature_verify(const char *secret, const char *header, const char *body,
                            size_t body_len, int64_t now, int64_t tolerance_s, struct errbuf *e);

/* Builds a valid header for tests and tools: "t=<t>,v1=<hex>" into out (>= 96 bytes). */
void stripe_signature_make(const char *secret, int64_t t, const char *body, size_t body_len,
                           char *out, size_t out_len);

#endif
