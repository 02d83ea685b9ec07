/* queue/envelope.h: the message the receiver publishes to paynotify.callbacks: the raw
 * provider callback plus what the worker needs to re-verify and trace it. JSON, schema
 * version 1, body base64 so any bytes survive. */
#ifndef PAYNOTIFY_QUEUE_ENVELOPE_H
#define PAYNOTIFY_QUEUE_ENVELOPE_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

#define ENVELOPE_VERSION 1
#define ENVELOPE_MAX_HEADERS 8

struct envelope {
    char callback_id[64];
    char channel[64];
    int64_t received_at_ms;
    size_t n_headers;
    char *header_names[ENVELOPE_MAX_HEADERS];  /* owned, lower-case */
    char *header_values[ENVELOPE_MAX_HEADERS]; /* owned */
    char *body;                                /* owned, NUL-terminated, may hold NULs */
    size_t body_len;
};

/* Adds a header (copied). -1 when full. */
int envelope_add_header(struct envelope *env, const char *name, const char *value);
/* Sets the body (copied). */
void envelope_set_body(struct envelope *env, const void *body, size_t len);
/* Caller frees the returned string with free(); *len gets its length. */
char *envelope_encode(const struct envelope *env, size_t *len);
/* Fills env from a message; on success caller releases with envelope_clear(). */
int envelope_decode(const void *msg, size_t len, struct envelope *env, struct errbuf *e);
/* Borrowed header value or NULL. */
const char *envelope_header(const struct envelope *env, const char *name);
void envelope_clear(struct envelope *env);

#endif
