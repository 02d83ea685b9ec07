/* worker/refunder.h: sends the refunds paynotify queued itself (duplicate payment, payment
 * after close) to the provider, retrying until it answers. One thread per worker process;
 * several processes share the work through SKIP LOCKED claims. */
#ifndef PAYNOTIFY_WORKER_REFUNDER_H
#define PAYNOTIFY_WORKER_REFUNDER_H

#include <stdatomic.h>

struct cfg;
struct channels;
struct worker_stats;
typedef struct refunder refunder;

/* All borrowed; they outlive the refunder. NULL if the thread could not start. */
refunder *refunder_start(const struct cfg *cfg, const struct channels *chans,
                         struct worker_stats *stats, atomic_int *stop);
void refunder_join(refunder *r);

#endif
