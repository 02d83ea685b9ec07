/* tests/unit/test_metrics.c: the registry: exact Prometheus text for counters,
 * gauges and histograms, series identity, refusals, and lock-free updates from
 * several threads adding up exactly. */
#include "common/metrics.h"
#include "tests/unit/check.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

static void test_render_exact(void)
{
    metrics *m = metrics_new();
    static const double bounds[] = {0.01, 0.1, 1};
    metric *ok, *fail, *plain, *depth, *lat, *lat2;
    char *text;
    const char *want =
        "# HELP paynotify_callbacks_received_total Callbacks received, by channel and outcome.\n"
        "# TYPE paynotify_callbacks_received_total counter\n"
        "paynotify_callbacks_received_total{channel=\"stripe\",outcome=\"ok\"} 3\n"
        "paynotify_callbacks_received_total{channel=\"alipay\",outcome=\"bad_sign\"} 40\n"
        "# HELP paynotify_up Line one\\nback\\\\slash\n"
        "# TYPE paynotify_up gauge\n"
        "paynotify_up 1\n"
        "# HELP paynotify_queue_depth Messages waiting.\n"
        "# TYPE paynotify_queue_depth gauge\n"
        "paynotify_queue_depth{queue=\"notify\"} -2\n"
        "# HELP paynotify_publish_seconds Publish latency.\n"
        "# TYPE paynotify_publish_seconds histogram\n"
        "paynotify_publish_seconds_bucket{le=\"0.01\"} 2\n"
        "paynotify_publish_seconds_bucket{le=\"0.1\"} 3\n"
        "paynotify_publish_seconds_bucket{le=\"1\"} 4\n"
        "paynotify_publish_seconds_bucket{le=\"+Inf\"} 5\n"
        "paynotify_publish_seconds_sum 3.560001\n"
        "paynotify_publish_seconds_count 5\n"
        "paynotify_publish_seconds_bucket{channel=\"wechatpay\",le=\"0.01\"} 0\n"
        "paynotify_publish_seconds_bucket{channel=\"wechatpay\",le=\"0.1\"} 0\n"
        "paynotify_publish_seconds_bucket{channel=\"wechatpay\",le=\"1\"} 0\n"
        "paynotify_publish_seconds_bucket{channel=\"wechatpay\",le=\"+Inf\"} 0\n"
        "paynotify_publish_seconds_sum{channel=\"wechatpay\"} 0.000000\n"
        "paynotify_publish_seconds_count{channel=\"wechatpay\"} 0\n";

    ok = metrics_counter(m, "paynotify_callbacks_received_total",
                         "Callbacks received, by channel and outcome.",
                         "channel=\"stripe\",outcome=\"ok\"");
    fail = metrics_counter(m, "paynotify_callbacks_received_total", "ignored help",
                           "channel=\"alipay\",outcome=\"bad_sign\"");
    plain = metrics_gauge(m, "paynotify_up", "Line one\nback\\slash", NULL);
    depth = metrics_gauge(m, "paynotify_queue_depth", "Messages waiting.", "queue=\"notify\"");
    lat = metrics_histogram(m, "paynotify_publish_seconds", "Publish latency.", "", bounds, 3);
    lat2 =
        metrics_histogram(m, "paynotify_publish_seconds", "x", "channel=\"wechatpay\"", bounds, 3);
    CHECK(ok && fail && plain && depth && lat && lat2);

    metric_inc(ok);
    metric_add(ok, 2);
    metric_add(fail, 40);
    metric_set(plain, 7);
    metric_set(plain, 1);
    metric_add(depth, 3);
    metric_add(depth, -5);
    metric_observe(lat, 0.01);     /* on a bound: counts in that bucket (le) */
    metric_observe(lat, 0.000001); /* 1 us */
    metric_observe(lat, 0.05);
    metric_observe(lat, 1.0);
    metric_observe(lat, 2.5); /* above every bound: only +Inf */

    text = metrics_render(m);
    if (strcmp(text, want) != 0)
        fprintf(stderr, "--- got ---\n%s--- want ---\n%s", text, want);
    CHECK_STR_EQ(text, want);
    free(text);
    CHECK_INT_EQ(metric_value(ok), 3);
    CHECK_INT_EQ(metric_value(depth), -2);
    CHECK_INT_EQ(metric_value(lat), 5);
    metrics_free(m);
}

static void test_identity_and_refusals(void)
{
    metrics *m = metrics_new();
    static const double b1[] = {0.1, 1};
    static const double b2[] = {0.2, 1};
    static const double unsorted[] = {1, 0.5};
    metric *a, *b, *h;
    char *text;

    a = metrics_counter(m, "x_total", "X.", "k=\"v\"");
    b = metrics_counter(m, "x_total", "X.", "k=\"v\"");
    CHECK(a != NULL && a == b);
    CHECK(metrics_counter(m, "x_total", "X.", NULL) != a);
    CHECK(metrics_counter(m, "x_total", "X.", "") == metrics_counter(m, "x_total", "X.", NULL));
    /* One name, one type. */
    CHECK(metrics_gauge(m, "x_total", "X.", "k=\"v\"") == NULL);
    CHECK(metrics_histogram(m, "x_total", "X.", NULL, b1, 2) == NULL);
    /* Bad names and labels. */
    CHECK(metrics_counter(m, "1bad", "X.", NULL) == NULL);
    CHECK(metrics_counter(m, "bad-name", "X.", NULL) == NULL);
    CHECK(metrics_counter(m, "", "X.", NULL) == NULL);
    CHECK(metrics_counter(m, NULL, "X.", NULL) == NULL);
    CHECK(metrics_counter(m, "ok_name", "X.", "a=\"1\"}\nevil 1") == NULL);
    /* Histogram bounds: strictly increasing, and the same for every series. */
    CHECK(metrics_histogram(m, "h_seconds", "H.", NULL, unsorted, 2) == NULL);
    h = metrics_histogram(m, "h_seconds", "H.", NULL, b1, 2);
    CHECK(h != NULL);
    CHECK(metrics_histogram(m, "h_seconds", "H.", "a=\"1\"", b2, 2) == NULL);
    CHECK(metrics_histogram(m, "h_seconds", "H.", NULL, b1, 2) == h);
    /* NULL series are ignored by updates. */
    metric_inc(NULL);
    metric_add(NULL, 1);
    metric_set(NULL, 1);
    metric_observe(NULL, 1.0);
    CHECK_INT_EQ(metric_value(NULL), 0);
    /* The default latency buckets render as short decimals. */
    h = metrics_histogram(m, "lat_seconds", "L.", NULL, METRICS_LATENCY_BUCKETS,
                          METRICS_LATENCY_BUCKETS_N);
    CHECK(h != NULL);
    CHECK_INT_EQ(METRICS_LATENCY_BUCKETS_N, 11);
    metric_observe(h, 0.003);
    metric_observe(h, 12.5);
    text = metrics_render(m);
    CHECK(strstr(text, "lat_seconds_bucket{le=\"0.005\"} 1\n") != NULL);
    CHECK(strstr(text, "lat_seconds_bucket{le=\"0.025\"} 1\n") != NULL);
    CHECK(strstr(text, "lat_seconds_bucket{le=\"2.5\"} 1\n") != NULL);
    CHECK(strstr(text, "lat_seconds_bucket{le=\"10\"} 1\n") != NULL);
    CHECK(strstr(text, "lat_seconds_bucket{le=\"+Inf\"} 2\n") != NULL);
    CHECK(strstr(text, "lat_seconds_sum 12.503000\n") != NULL);
    CHECK(strstr(text, "lat_seconds_count 2\n") != NULL);
    /* HELP/TYPE once per name even with several series. */
    {
        const char *first = strstr(text, "# TYPE x_total counter\n");

        CHECK(first != NULL);
        CHECK(strstr(first + 1, "# TYPE x_total") == NULL);
    }
    free(text);
    metrics_free(m);
    metrics_free(NULL);
}

#define THREADS 4
#define PER_THREAD 250000

struct worker_arg {
    metric *counter;
    metric *gauge;
    metric *hist;
};

static void *worker(void *p)
{
    struct worker_arg *a = p;

    for (int i = 0; i < PER_THREAD; i++) {
        metric_inc(a->counter);
        metric_add(a->gauge, (i % 2) ? 3 : -1);
        metric_observe(a->hist, (i % 4) * 0.001); /* 0, 1, 2, 3 ms */
    }
    return NULL;
}

static void test_concurrent(void)
{
    metrics *m = metrics_new();
    static const double bounds[] = {0.0015};
    pthread_t th[THREADS];
    struct worker_arg a;
    char *text, want[128];

    a.counter = metrics_counter(m, "c_total", "C.", NULL);
    a.gauge = metrics_gauge(m, "g", "G.", NULL);
    a.hist = metrics_histogram(m, "h_seconds", "H.", NULL, bounds, 1);
    for (int i = 0; i < THREADS; i++)
        CHECK_INT_EQ(pthread_create(&th[i], NULL, worker, &a), 0);
    /* Rendering while writers run must be safe (TSan/ASan would complain). */
    for (int i = 0; i < 20; i++)
        free(metrics_render(m));
    for (int i = 0; i < THREADS; i++)
        CHECK_INT_EQ(pthread_join(th[i], NULL), 0);

    CHECK_INT_EQ(metric_value(a.counter), (long long)THREADS * PER_THREAD);
    CHECK_INT_EQ(metric_value(a.gauge), (long long)THREADS * (PER_THREAD / 2) * 2);
    CHECK_INT_EQ(metric_value(a.hist), (long long)THREADS * PER_THREAD);
    text = metrics_render(m);
    snprintf(want, sizeof(want), "c_total %lld\n", (long long)THREADS * PER_THREAD);
    CHECK(strstr(text, want) != NULL);
    /* Half the observations (0 and 1 ms) are <= 1.5 ms. */
    snprintf(want, sizeof(want), "h_seconds_bucket{le=\"0.0015\"} %lld\n",
             (long long)THREADS * PER_THREAD / 2);
    CHECK(strstr(text, want) != NULL);
    /* Sum: each thread adds (0+1+2+3) ms per 4 observations = 1.5 ms per 4. */
    snprintf(want, sizeof(want), "h_seconds_sum %lld.%06lld\n",
             (long long)THREADS * PER_THREAD / 4 * 6000 / 1000000,
             (long long)THREADS * PER_THREAD / 4 * 6000 % 1000000);
    CHECK(strstr(text, want) != NULL);
    free(text);
    metrics_free(m);
}

int main(void)
{
    test_render_exact();
    test_identity_and_refusals();
    test_concurrent();
    TEST_PASS();
    return 0;
}
