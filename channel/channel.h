/* channel/channel.h: the interface every payment provider module implements, and the
 * normalised payment event they produce. Modules are pure: bytes + config + clock in,
 * verdict out; no I/O. Adding a provider = one module + one row in channel.c. */
#ifndef PAYNOTIFY_CHANNEL_CHANNEL_H
#define PAYNOTIFY_CHANNEL_CHANNEL_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

struct cfg;

#define PAY_EVENT_KINDS(X)                                     \
    X(SUCCEEDED) /* money received */                          \
    X(FAILED)    /* attempt failed; the order stays payable */ \
    X(CANCELED)  /* payment object canceled at the provider */ \
    X(PROCESSING)                                              \
    X(OTHER) /* an event type we record but do not act on */

enum pay_event_kind {
#define X(k) PAY_EVENT_##k,
    PAY_EVENT_KINDS(X)
#undef X
};

const char *pay_event_kind_name(enum pay_event_kind k);

/* A provider notification reduced to what the order logic needs. */
struct pay_event {
    enum pay_event_kind kind;
    char event_id[128];  /* provider's id of this notification; the dedup key */
    char event_type[64]; /* provider's own type string */
    char order_id[64];   /* our order id (out_trade_no / metadata.order_id); "" if absent */
    char txn_id[128];    /* provider transaction id (Stripe payment_intent) */
    int64_t amount;      /* minor units; -1 when the event carries none */
    char currency[4];    /* upper-case ISO 4217; "" when absent */
};

/* The parts of an incoming HTTP request a channel looks at (all borrowed). */
struct channel_request {
    const char *body;
    size_t body_len;
    /* Returns the header value or NULL; name is lower-case. */
    const char *(*header)(void *ctx, const char *name);
    void *ctx;
};

/* The provider's exact reply for accept/reject. */
struct channel_reply {
    int status;
    const char *content_type;
    const char *body;
};

/* Provider API calls (query, refund): blocking HTTPS through libcurl easy handles with
 * timeouts, run on worker threads only, against the channel's configurable api_url. */
enum channel_call_status {
    CHANNEL_CALL_OK = 0,
    CHANNEL_CALL_RETRY,    /* transport error, timeout, 5xx, rate limit: try again later */
    CHANNEL_CALL_REJECTED, /* the provider refused for good (bad request, not refundable) */
};

struct refund_request {
    const char *order_id;  /* our out_trade_no / metadata.order_id */
    const char *txn_id;    /* provider transaction: payment_intent / trade_no / transaction_id */
    const char *refund_id; /* our idempotency key: Idempotency-Key / out_request_no /
                            * out_refund_no; the same key never refunds twice */
    int64_t amount;        /* minor units to refund */
    int64_t total;         /* the payment's total in minor units (WeChat Pay needs it) */
    const char *currency;  /* upper-case ISO 4217 */
    const char *reason;    /* short text for the provider; may be NULL */
};

struct refund_result {
    char provider_refund_id[128];
    char state[32];  /* the provider's refund state, e.g. "succeeded", "PROCESSING" */
    char error[256]; /* why, when not CHANNEL_CALL_OK */
};

struct channel_ops {
    const char *type;
    /* Headers the envelope must carry so the worker can re-verify (NULL-terminated). */
    const char *const *envelope_headers;
    /* Validates the channel's JSON config (json: its object; where: "channels.<name>" for
     * messages; base_dir: where relative files start) into the module's own state. NULL +
     * *e naming the key on error; release with config_free(). */
    void *(*config_load)(const char *json, const char *where, const char *base_dir,
                         struct errbuf *e);
    void (*config_free)(void *conf);
    /* 0 if the request is authentic and fresh at `now` (unix seconds). conf borrowed. */
    int (*verify)(const void *conf, const struct channel_request *req, int64_t now,
                  struct errbuf *e);
    /* Parses an authentic body into ev. -1 if malformed (PERMANENT). */
    int (*parse)(const void *conf, const char *body, size_t len, struct pay_event *ev,
                 struct errbuf *e);
    /* Asks the provider for the order's payment state (NULL if the module has no query).
     * On CHANNEL_CALL_OK, ev describes the payment as a notification would. */
    enum channel_call_status (*query)(const void *conf, const char *order_id, struct pay_event *ev,
                                      char *error, size_t error_len);
    /* Requests a refund, idempotently under r->refund_id (NULL if unsupported). */
    enum channel_call_status (*refund)(const void *conf, const struct refund_request *r,
                                       struct refund_result *out);
    struct channel_reply accept;
    struct channel_reply reject;
};

/* One configured channel: its name, its module and the module's validated config. */
struct channel {
    const char *name; /* borrowed from the cfg */
    const struct channel_ops *ops;
    void *conf;
};

typedef struct channels channels;

/* Loads every channel of cfg (borrowed; must outlive the set) through its module. NULL +
 * *e naming the key ("channels.x.type: unsupported ...") on error; free with
 * channels_free(). */
channels *channels_load(const struct cfg *cfg, struct errbuf *e);
void channels_free(channels *set); /* NULL-safe */
/* Borrowed from set, or NULL. */
const struct channel *channels_find(const channels *set, const char *name);
/* Index of the channel in cfg->channels order (for per-channel metrics). */
size_t channels_index(const channels *set, const struct channel *ch);

/* The module for a channel type, or NULL. Borrowed, static. */
const struct channel_ops *channel_ops_for(const char *type);

#endif
