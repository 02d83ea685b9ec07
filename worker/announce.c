/* worker/announce.c: notify messages sent without waiting, confirmed in the background,
 * marked published in batches (see announce.h). */
#include "worker/announce.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/xalloc.h"
#include "queue/mq.h"
#include "queue/topology.h"
#include "store/db.h"
#include "store/outbox.h"

struct sent {
    uint64_t tag;        /* the publish's delivery tag on this connection */
    int64_t id;          /* notification id */
    char webhook_id[65]; /* the message id, to match a return */
    int returned;        /* came back unroutable: its ack does not mean queued */
};

struct announcer {
    struct sent *out; /* unconfirmed, ascending tags */
    size_t n_out, cap_out;
    int64_t *done; /* confirmed, not yet marked published */
    size_t n_done, cap_done;
    int64_t first_done_ms;
    int64_t retry_at_ms; /* after a failed flush, none before this */
};

announcer *announce_new(void)
{
    return xcalloc(1, sizeof(announcer));
}

void announce_free(announcer *a)
{
    if (a == NULL)
        return;
    free(a->out);
    free(a->done);
    free(a);
}

size_t announce_outstanding(const announcer *a)
{
    return a->n_out;
}

size_t announce_unmarked(const announcer *a)
{
    return a->n_done;
}

void announce_forget(announcer *a)
{
    char n[24];

    snprintf(n, sizeof(n), "%zu", a->n_out);
    if (a->n_out > 0)
        LOG_WARN("notify_confirms_lost", "count", n, "detail",
                 "publishing connection closed; the sweeper republishes unconfirmed rows");
    a->n_out = 0;
}

static void add_done(announcer *a, int64_t id)
{
    if (a->n_done == a->cap_done) {
        a->cap_done = a->cap_done ? a->cap_done * 2 : 128;
        a->done = realloc(a->done, a->cap_done * sizeof(*a->done));
        if (a->done == NULL)
            abort();
    }
    if (a->n_done == 0)
        a->first_done_ms = clock_mono_ms();
    a->done[a->n_done++] = id;
}

/* Settles every outstanding message the confirm covers. */
static void settle(announcer *a, const struct mq_confirm *c)
{
    size_t keep = 0;

    for (size_t i = 0; i < a->n_out; i++) {
        struct sent *s = &a->out[i];
        int covered = c->multiple ? s->tag <= c->tag : s->tag == c->tag;
        if (!covered) {
            a->out[keep++] = *s;
            continue;
        }
        if (c->kind == MQ_CONFIRM_ACK && !s->returned)
            add_done(a, s->id);
        else
            LOG_WARN("notify_publish_refused", "webhook_id", s->webhook_id, "detail",
                     s->returned ? "returned unroutable" : "nacked by the broker");
    }
    a->n_out = keep;
}

int announce_collect(announcer *a, mq_conn *pub, int wait_ms, struct errbuf *e)
{
    int first = 1;

    while (a->n_out > 0) {
        struct mq_confirm c;
        int rc = mq_confirm_next(pub, first ? wait_ms : 0, -1, &c, e);

        first = 0;
        if (rc == 1)
            return 0;
        if (rc != 0)
            return -1;
        if (c.kind == MQ_CONFIRM_RETURN) {
            for (size_t i = 0; i < a->n_out; i++)
                if (strcmp(a->out[i].webhook_id, c.message_id) == 0)
                    a->out[i].returned = 1;
            continue;
        }
        settle(a, &c);
    }
    return 0;
}

int announce_drain(announcer *a, mq_conn *pub, int timeout_ms, struct errbuf *e)
{
    int64_t deadline = clock_mono_ms() + timeout_ms;

    while (a->n_out > 0) {
        int64_t left = deadline - clock_mono_ms();
        if (left <= 0) {
            errbuf_set(e, ERRBUF_TRANSIENT,
                       "no broker confirm for %zu notify messages within %d ms", a->n_out,
                       timeout_ms);
            return -1;
        }
        if (announce_collect(a, pub, (int)left, e) != 0)
            return -1;
    }
    return 0;
}

int announce_send(announcer *a, mq_conn *pub, int64_t id, const char *webhook_id,
                  int confirm_timeout_ms, struct errbuf *e)
{
    char body[64];
    uint64_t tag;
    struct sent *s;

    if (a->n_out >= ANNOUNCE_MAX_OUTSTANDING) {
        int64_t deadline = clock_mono_ms() + confirm_timeout_ms;
        while (a->n_out >= ANNOUNCE_MAX_OUTSTANDING) {
            int64_t left = deadline - clock_mono_ms();
            if (left <= 0) {
                errbuf_set(e, ERRBUF_TRANSIENT, "%zu notify messages unconfirmed after %d ms",
                           a->n_out, confirm_timeout_ms);
                return -1;
            }
            if (announce_collect(a, pub, (int)left, e) != 0)
                return -1;
        }
    }
    outbox_message(id, body, sizeof(body));
    if (mq_publish_nowait(pub, TOPOLOGY_NOTIFY, body, strlen(body), webhook_id, 0, &tag, e) != 0)
        return -1;
    if (a->n_out == a->cap_out) {
        a->cap_out = a->cap_out ? a->cap_out * 2 : 64;
        a->out = realloc(a->out, a->cap_out * sizeof(*a->out));
        if (a->out == NULL)
            abort();
    }
    s = &a->out[a->n_out++];
    s->tag = tag;
    s->id = id;
    s->returned = 0;
    snprintf(s->webhook_id, sizeof(s->webhook_id), "%s", webhook_id);
    return 0;
}

int announce_flush(announcer *a, db_conn *db, int force, struct errbuf *e)
{
    int64_t now = clock_mono_ms();

    if (a->n_done == 0 || now < a->retry_at_ms)
        return 0;
    if (!force && a->n_done < ANNOUNCE_FLUSH_ROWS && now - a->first_done_ms < ANNOUNCE_FLUSH_MS)
        return 0;
    /* One statement per chunk keeps the IN list bounded. */
    while (a->n_done > 0) {
        size_t n = a->n_done < 512 ? a->n_done : 512;
        if (outbox_mark_published_many(db, a->done + a->n_done - n, (int)n, e) != 0) {
            a->retry_at_ms = now + ANNOUNCE_RETRY_MS;
            return -1;
        }
        a->n_done -= n;
    }
    return 0;
}
