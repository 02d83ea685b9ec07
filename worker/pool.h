/* worker/pool.h: the callback-applying threads. Each owns its own AMQP (one consuming,
 * one publishing), Redis and MySQL connections, so none needs a lock. */
#ifndef PAYNOTIFY_WORKER_POOL_H
#define PAYNOTIFY_WORKER_POOL_H

#include <stdatomic.h>

struct cfg;
struct channels;
struct worker_stats;
typedef struct pool pool;

/* Starts cfg->worker_threads threads (cfg, stats and stop borrowed; they outlive the pool).
 * Threads reconnect on their own; they exit once *stop is set, after finishing the
 * message in hand. NULL if a thread could not be created. */
pool *pool_start(const struct cfg *cfg, const struct channels *chans, struct worker_stats *stats,
                 atomic_int *stop);
/* Threads consuming right now (connected to broker and database). */
int pool_ready(const pool *p);
/* Waits for every thread to exit and frees the pool. */
void pool_join(pool *p);

#endif
