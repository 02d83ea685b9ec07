/* common/metrics.h: a registry of counters, gauges and histograms rendered as
 * Prometheus text (exposition format 0.0.4). Series are registered at start-up
 * under a lock; updates are lock-free atomics, safe from any thread. */
#ifndef PAYNOTIFY_COMMON_METRICS_H
#define PAYNOTIFY_COMMON_METRICS_H

#include <stddef.h>
#include <stdint.h>

typedef struct metrics metrics; /* the registry; fields live in metrics.c */
typedef struct metric metric;   /* one series: a counter, a gauge or a histogram */

/* Default latency buckets in seconds (5 ms .. 10 s), for metrics_histogram(). */
extern const double METRICS_LATENCY_BUCKETS[];
extern const size_t METRICS_LATENCY_BUCKETS_N;

/* Free with metrics_free(). */
metrics *metrics_new(void);
/* NULL-safe. Every metric * obtained from m becomes invalid. */
void metrics_free(metrics *m);

/* Registers (or finds) a series. name must match [a-zA-Z_:][a-zA-Z0-9_:]*, e.g.
 * "paynotify_callbacks_received_total"; labels is the text between the braces,
 * e.g. "channel=\"stripe\",outcome=\"ok\"", or NULL/"" for none. help is used by
 * the first registration of a name. All strings are copied. The same name and
 * labels return the same series. Returns NULL if name is invalid, labels contain
 * a newline or braces, or name is already registered as another type.
 * The series is owned by m: valid until metrics_free(m). */
metric *metrics_counter(metrics *m, const char *name, const char *help, const char *labels);
metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *labels);
/* bounds: n upper bounds in seconds, strictly increasing, finite (copied; "+Inf"
 * is implicit). A name keeps the bounds of its first series; later series of that
 * name must pass the same bounds, else NULL. */
metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *labels,
                          const double *bounds, size_t n);

/* Updates; each is one atomic operation (a histogram: two), no locks. All are
 * NULL-safe no-ops so a failed registration cannot crash a hot path. */
void metric_inc(metric *x);                     /* counter or gauge: +1 */
void metric_add(metric *x, int64_t delta);      /* counter or gauge (gauges may go down) */
void metric_set(metric *x, int64_t value);      /* gauge */
void metric_observe(metric *x, double seconds); /* histogram; kept to the microsecond */
int64_t metric_value(const metric *x);          /* counter/gauge value; histogram count */

/* Prometheus text for every series: "# HELP" and "# TYPE" once per name, series in
 * registration order; histograms as cumulative _bucket{le="..."}, _sum, _count.
 * Safe while other threads update. Caller frees with free(). */
char *metrics_render(metrics *m);

#endif
