/* worker/sweeper.h: republishes outbox rows that were committed but whose notify message
 * never reached the broker (crash or broker outage between commit and publish). */
#ifndef PAYNOTIFY_WORKER_SWEEPER_H
#define PAYNOTIFY_WORKER_SWEEPER_H

#include <stdatomic.h>

struct cfg;
struct worker_stats;
typedef struct sweeper sweeper;

/* Every cfg->sweep_interval_ms, publishes PENDING rows older than that interval that have
 * no published_at. Borrowed arguments outlive the sweeper. NULL if the thread failed. */
sweeper *sweeper_start(const struct cfg *cfg, struct worker_stats *stats, atomic_int *stop);
void sweeper_join(sweeper *s);

#endif
