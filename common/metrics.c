/* common/metrics.c: the metrics registry. Families (one per name) and their series
 * are linked lists that only grow, under the registry mutex; values are C11 atomics
 * updated without the lock. A histogram stores per-bucket counts (not cumulative)
 * and its sum as integer microseconds, so every update is a plain atomic add;
 * rendering accumulates the buckets. _count is the sum of the buckets, so a scrape
 * always shows _count equal to the +Inf bucket. */
#include "common/metrics.h"
#include "common/xalloc.h"

#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double METRICS_LATENCY_BUCKETS[] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
const size_t METRICS_LATENCY_BUCKETS_N =
    sizeof(METRICS_LATENCY_BUCKETS) / sizeof(METRICS_LATENCY_BUCKETS[0]);

enum metric_kind {
    KIND_COUNTER,
    KIND_GAUGE,
    KIND_HISTOGRAM,
};

struct family;

struct metric {
    struct family *family;
    char *labels; /* "" when none */
    _Atomic int64_t value;
    /* Histograms only: nbounds + 1 buckets, the last one for +Inf. */
    _Atomic uint64_t *buckets;
    _Atomic int64_t sum_us;
    struct metric *next;
};

struct family {
    char *name;
    char *help;
    enum metric_kind kind;
    double *bounds;
    size_t nbounds;
    struct metric *series;
    struct metric *last;
    struct family *next;
};

struct metrics {
    pthread_mutex_t mu;
    struct family *families;
    struct family *last;
};

metrics *metrics_new(void)
{
    metrics *m = xcalloc(1, sizeof(*m));

    pthread_mutex_init(&m->mu, NULL);
    return m;
}

void metrics_free(metrics *m)
{
    struct family *f, *fnext;
    struct metric *x, *xnext;

    if (m == NULL)
        return;
    for (f = m->families; f != NULL; f = fnext) {
        fnext = f->next;
        for (x = f->series; x != NULL; x = xnext) {
            xnext = x->next;
            free(x->labels);
            free(x->buckets);
            free(x);
        }
        free(f->name);
        free(f->help);
        free(f->bounds);
        free(f);
    }
    pthread_mutex_destroy(&m->mu);
    free(m);
}

static int valid_name(const char *s)
{
    if (s == NULL || *s == '\0')
        return 0;
    for (size_t i = 0; s[i] != '\0'; i++) {
        char ch = s[i];
        int ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_' || ch == ':' ||
                 (i > 0 && ch >= '0' && ch <= '9');

        if (!ok)
            return 0;
    }
    return 1;
}

static int valid_labels(const char *s)
{
    return strpbrk(s, "\n{}") == NULL;
}

static int same_bounds(const struct family *f, const double *bounds, size_t n)
{
    if (f->nbounds != n)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (f->bounds[i] != bounds[i])
            return 0;
    return 1;
}

static metric *registry_get(metrics *m, enum metric_kind kind, const char *name, const char *help,
                            const char *labels, const double *bounds, size_t n)
{
    struct family *f;
    struct metric *x = NULL;

    if (m == NULL || !valid_name(name))
        return NULL;
    if (labels == NULL)
        labels = "";
    if (!valid_labels(labels))
        return NULL;
    if (kind == KIND_HISTOGRAM) {
        if (bounds == NULL && n > 0)
            return NULL;
        for (size_t i = 0; i < n; i++)
            if (!isfinite(bounds[i]) || (i > 0 && bounds[i] <= bounds[i - 1]))
                return NULL;
    }
    pthread_mutex_lock(&m->mu);
    for (f = m->families; f != NULL; f = f->next)
        if (strcmp(f->name, name) == 0)
            break;
    if (f != NULL) {
        if (f->kind != kind || (kind == KIND_HISTOGRAM && !same_bounds(f, bounds, n)))
            goto out; /* NULL: a name has one type (and one bucket layout) */
        for (x = f->series; x != NULL; x = x->next)
            if (strcmp(x->labels, labels) == 0)
                goto out;
    } else {
        f = xcalloc(1, sizeof(*f));
        f->name = xstrdup(name);
        f->help = xstrdup(help ? help : "");
        f->kind = kind;
        if (kind == KIND_HISTOGRAM) {
            f->nbounds = n;
            f->bounds = xcalloc(n ? n : 1, sizeof(double));
            if (n > 0)
                memcpy(f->bounds, bounds, n * sizeof(double));
        }
        if (m->last != NULL)
            m->last->next = f;
        else
            m->families = f;
        m->last = f;
    }
    x = xcalloc(1, sizeof(*x));
    x->family = f;
    x->labels = xstrdup(labels);
    atomic_init(&x->value, 0);
    atomic_init(&x->sum_us, 0);
    if (kind == KIND_HISTOGRAM) {
        x->buckets = xcalloc(f->nbounds + 1, sizeof(*x->buckets));
        for (size_t i = 0; i <= f->nbounds; i++)
            atomic_init(&x->buckets[i], 0);
    }
    if (f->last != NULL)
        f->last->next = x;
    else
        f->series = x;
    f->last = x;
out:
    pthread_mutex_unlock(&m->mu);
    return x;
}

metric *metrics_counter(metrics *m, const char *name, const char *help, const char *labels)
{
    return registry_get(m, KIND_COUNTER, name, help, labels, NULL, 0);
}

metric *metrics_gauge(metrics *m, const char *name, const char *help, const char *labels)
{
    return registry_get(m, KIND_GAUGE, name, help, labels, NULL, 0);
}

metric *metrics_histogram(metrics *m, const char *name, const char *help, const char *labels,
                          const double *bounds, size_t n)
{
    return registry_get(m, KIND_HISTOGRAM, name, help, labels, bounds, n);
}

void metric_inc(metric *x)
{
    if (x != NULL)
        atomic_fetch_add_explicit(&x->value, 1, memory_order_relaxed);
}

void metric_add(metric *x, int64_t delta)
{
    if (x != NULL)
        atomic_fetch_add_explicit(&x->value, delta, memory_order_relaxed);
}

void metric_set(metric *x, int64_t value)
{
    if (x != NULL)
        atomic_store_explicit(&x->value, value, memory_order_relaxed);
}

void metric_observe(metric *x, double seconds)
{
    const struct family *f;
    size_t i;
    double us;

    if (x == NULL || x->buckets == NULL || isnan(seconds))
        return;
    f = x->family;
    for (i = 0; i < f->nbounds; i++)
        if (seconds <= f->bounds[i])
            break;
    atomic_fetch_add_explicit(&x->buckets[i], 1, memory_order_relaxed);
    us = seconds * 1e6;
    /* Clamp absurd values instead of converting out of range (undefined). */
    if (us > 9e18)
        us = 9e18;
    if (us < -9e18)
        us = -9e18;
    atomic_fetch_add_explicit(&x->sum_us, (int64_t)llround(us), memory_order_relaxed);
}

int64_t metric_value(const metric *x)
{
    int64_t total = 0;

    if (x == NULL)
        return 0;
    if (x->buckets == NULL)
        return atomic_load_explicit(&x->value, memory_order_relaxed);
    for (size_t i = 0; i <= x->family->nbounds; i++)
        total += (int64_t)atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
    return total;
}

/* ---- rendering ------------------------------------------------------------- */

struct out {
    char *data;
    size_t len;
    size_t cap;
};

static void out_printf(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void out_printf(struct out *o, const char *fmt, ...)
{
    va_list ap;
    int n;

    for (;;) {
        va_start(ap, fmt);
        n = vsnprintf(o->data + o->len, o->cap - o->len, fmt, ap);
        va_end(ap);
        if (n < 0)
            abort();
        if ((size_t)n < o->cap - o->len) {
            o->len += (size_t)n;
            return;
        }
        o->cap = o->cap * 2 + (size_t)n;
        o->data = realloc(o->data, o->cap);
        if (o->data == NULL)
            abort();
    }
}

/* HELP text escapes backslash and newline (exposition format). */
static void out_help(struct out *o, const char *s)
{
    for (; *s != '\0'; s++) {
        if (*s == '\\')
            out_printf(o, "\\\\");
        else if (*s == '\n')
            out_printf(o, "\\n");
        else
            out_printf(o, "%c", *s);
    }
}

/* The shortest decimal that reads back as the same double: "0.005", "10", "2.5"
 * (plain notation where %g would switch to an exponent for round numbers). */
static void fmt_double(char *buf, size_t cap, double v)
{
    int prec;

    for (prec = 1; prec < 17; prec++) {
        snprintf(buf, cap, "%.*g", prec, v);
        if (strtod(buf, NULL) == v)
            break;
    }
    if (strchr(buf, 'e') != NULL && fabs(v) >= 1e-4 && fabs(v) < 1e15) {
        int decimals = prec - 1 - (int)floor(log10(fabs(v)));

        snprintf(buf, cap, "%.*f", decimals > 0 ? decimals : 0, v);
    }
}

static const char *kind_name(enum metric_kind k)
{
    switch (k) {
    case KIND_COUNTER:
        return "counter";
    case KIND_GAUGE:
        return "gauge";
    case KIND_HISTOGRAM:
        return "histogram";
    }
    return "untyped";
}

/* name{labels} or name when there are none. */
static void out_series(struct out *o, const char *name, const char *suffix, const char *labels)
{
    if (labels[0] != '\0')
        out_printf(o, "%s%s{%s}", name, suffix, labels);
    else
        out_printf(o, "%s%s", name, suffix);
}

static void render_histogram(struct out *o, const struct family *f, const struct metric *x)
{
    uint64_t cum = 0;
    int64_t sum_us = atomic_load_explicit(&x->sum_us, memory_order_relaxed);
    const char *sep = x->labels[0] != '\0' ? "," : "";
    char le[64];
    uint64_t total;

    for (size_t i = 0; i <= f->nbounds; i++) {
        cum += atomic_load_explicit(&x->buckets[i], memory_order_relaxed);
        if (i < f->nbounds)
            fmt_double(le, sizeof(le), f->bounds[i]);
        else
            snprintf(le, sizeof(le), "+Inf");
        out_printf(o, "%s_bucket{%s%sle=\"%s\"} %llu\n", f->name, x->labels, sep, le,
                   (unsigned long long)cum);
    }
    total = cum;
    out_series(o, f->name, "_sum", x->labels);
    /* Microseconds as exact decimal seconds, no float rounding. */
    out_printf(o, " %s%lld.%06lld\n", sum_us < 0 ? "-" : "",
               (long long)(sum_us < 0 ? -(sum_us / 1000000) : sum_us / 1000000),
               (long long)(sum_us < 0 ? -(sum_us % 1000000) : sum_us % 1000000));
    out_series(o, f->name, "_count", x->labels);
    out_printf(o, " %llu\n", (unsigned long long)total);
}

char *metrics_render(metrics *m)
{
    struct out o = {0};

    o.cap = 1024;
    o.data = malloc(o.cap);
    if (o.data == NULL)
        abort();
    o.data[0] = '\0';
    pthread_mutex_lock(&m->mu);
    for (const struct family *f = m->families; f != NULL; f = f->next) {
        out_printf(&o, "# HELP %s ", f->name);
        out_help(&o, f->help);
        out_printf(&o, "\n# TYPE %s %s\n", f->name, kind_name(f->kind));
        for (const struct metric *x = f->series; x != NULL; x = x->next) {
            if (f->kind == KIND_HISTOGRAM) {
                render_histogram(&o, f, x);
                continue;
            }
            out_series(&o, f->name, "", x->labels);
            out_printf(&o, " %lld\n",
                       (long long)atomic_load_explicit(&x->value, memory_order_relaxed));
        }
    }
    pthread_mutex_unlock(&m->mu);
    return o.data;
}
