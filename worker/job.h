/* worker/job.h: one provider callback from paynotify.callbacks, taken from envelope to
 * committed effect. The caller acks, requeues or parks according to the verdict. */
#ifndef PAYNOTIFY_WORKER_JOB_H
#define PAYNOTIFY_WORKER_JOB_H

#include <stddef.h>

struct cfg;
struct channels;
struct worker_stats;
typedef struct db_conn db_conn;
typedef struct kv_conn kv_conn;
typedef struct mq_conn mq_conn;
typedef struct announcer announcer;

#define JOB_STATES(X) X(RECEIVED) X(VERIFIED) X(DEDUPED) X(LOCKED) X(APPLIED) X(PUBLISHED) X(DONE)

enum job_state {
#define X(s) JOB_##s,
    JOB_STATES(X)
#undef X
};

enum job_verdict {
    JOB_ACK,   /* effect committed (or nothing to do): ack */
    JOB_RETRY, /* transient: order busy, database down: requeue */
    JOB_PARK,  /* poison: can never be processed; parked with the reason, then ack */
};

/* Connections belong to the calling thread (borrowed). pub is a publishing connection;
 * it may be NULL or failed, then notify messages are left to the sweeper. */
struct job_ctx {
    const struct cfg *cfg;
    const struct channels *chans;
    struct worker_stats *stats;
    db_conn *db;
    kv_conn *kv;
    mq_conn *pub;
    announcer *ann; /* notify messages sent on pub, awaiting their confirms */
    int pub_failed; /* set by job_handle() when pub broke: the caller closes it */
    int redis_down; /* the last Redis call failed: say so once, not per message */
};

const char *job_state_name(enum job_state s);
/* reason (>= 256 bytes) gets why for JOB_PARK and JOB_RETRY. */
enum job_verdict job_handle(struct job_ctx *c, const void *msg, size_t len, char *reason,
                            size_t reason_len);

#endif
