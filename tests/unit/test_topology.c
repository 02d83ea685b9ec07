/* tests/unit/test_topology.c: queue names and the retry-delay list parser/formatter. */
#include "common/errbuf.h"
#include "queue/topology.h"
#include "tests/unit/check.h"

#include <string.h>

static void check_format(int64_t ms, const char *want)
{
    char buf[TOPOLOGY_NAME_MAX];

    CHECK_INT_EQ(topology_format_delay(ms, buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, want);
}

/* The list must be rejected and the message must contain want. */
static void check_bad(const char *list, const char *want)
{
    int64_t ms[8];
    size_t n = 99;
    struct errbuf e = {0};

    if (topology_parse_delays(list, ms, 8, &n, &e) != -1) {
        fprintf(stderr, "accepted bad delay list \"%s\"\n", list);
        exit(1);
    }
    CHECK_INT_EQ(e.kind, ERRBUF_PERMANENT);
    CHECK_INT_EQ(n, 0);
    if (strstr(e.msg, want) == NULL) {
        fprintf(stderr, "list \"%s\": message \"%s\" lacks \"%s\"\n", list, e.msg, want);
        exit(1);
    }
}

static void test_format(void)
{
    char small[4];

    check_format(15000, "15s");
    check_format(60000, "1m");
    check_format(300000, "5m");
    check_format(1800000, "30m");
    check_format(7200000, "2h");
    check_format(90000, "90s");
    check_format(5400000, "90m");
    check_format(1500, "1500ms");
    check_format(200, "200ms");
    check_format(1, "1ms");
    CHECK_INT_EQ(topology_format_delay(0, small, sizeof(small)), -1);
    CHECK_INT_EQ(topology_format_delay(-1000, small, sizeof(small)), -1);
    /* "1500ms" does not fit in 4 bytes: refused, not truncated. */
    CHECK_INT_EQ(topology_format_delay(1500, small, sizeof(small)), -1);
    CHECK_INT_EQ(topology_format_delay(2000, small, sizeof(small)), 0);
    CHECK_STR_EQ(small, "2s");
}

static void test_names(void)
{
    char buf[TOPOLOGY_NAME_MAX];
    char tiny[10];

    CHECK_INT_EQ(topology_retry_queue_name(1, 15000, buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "paynotify.notify.retry.1.15s");
    CHECK_INT_EQ(topology_retry_queue_name(5, 7200000, buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "paynotify.notify.retry.5.2h");
    CHECK_INT_EQ(topology_retry_queue_name(2, 200, buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "paynotify.notify.retry.2.200ms");
    CHECK_INT_EQ(topology_retry_queue_name(16, TOPOLOGY_MAX_DELAY_MS, buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "paynotify.notify.retry.16.4294967295ms");
    CHECK_INT_EQ(topology_retry_queue_name(0, 15000, buf, sizeof(buf)), -1);
    CHECK_INT_EQ(topology_retry_queue_name(17, 15000, buf, sizeof(buf)), -1);
    CHECK_INT_EQ(topology_retry_queue_name(1, 0, buf, sizeof(buf)), -1);
    CHECK_INT_EQ(topology_retry_queue_name(1, TOPOLOGY_MAX_DELAY_MS + 1, buf, sizeof(buf)), -1);
    CHECK_INT_EQ(topology_retry_queue_name(1, 15000, tiny, sizeof(tiny)), -1);
    CHECK_STR_EQ(TOPOLOGY_EXCHANGE, "paynotify");
    CHECK_STR_EQ(TOPOLOGY_CALLBACKS, "paynotify.callbacks");
    CHECK_STR_EQ(TOPOLOGY_CALLBACKS_PARKED, "paynotify.callbacks.parked");
    CHECK_STR_EQ(TOPOLOGY_NOTIFY, "paynotify.notify");
    CHECK_STR_EQ(TOPOLOGY_NOTIFY_DEAD, "paynotify.notify.dead");
}

static void test_parse_good(void)
{
    int64_t ms[8];
    size_t n = 0;
    struct errbuf e = {0};
    char buf[TOPOLOGY_NAME_MAX];

    CHECK_INT_EQ(topology_parse_delays("15s,1m,5m,30m,2h", ms, 8, &n, &e), 0);
    CHECK_INT_EQ(n, 5);
    CHECK_INT_EQ(ms[0], 15000);
    CHECK_INT_EQ(ms[1], 60000);
    CHECK_INT_EQ(ms[2], 300000);
    CHECK_INT_EQ(ms[3], 1800000);
    CHECK_INT_EQ(ms[4], 7200000);

    CHECK_INT_EQ(topology_parse_delays(" 200ms , 1s,\t90s ", ms, 8, &n, &e), 0);
    CHECK_INT_EQ(n, 3);
    CHECK_INT_EQ(ms[0], 200);
    CHECK_INT_EQ(ms[1], 1000);
    CHECK_INT_EQ(ms[2], 90000);

    CHECK_INT_EQ(topology_parse_delays("1193h", ms, 8, &n, &e), 0);
    CHECK_INT_EQ(n, 1);
    CHECK_INT_EQ(ms[0], 1193LL * 3600000);
    CHECK_INT_EQ(topology_parse_delays("4294967295ms", ms, 8, &n, &e), 0);
    CHECK_INT_EQ(ms[0], TOPOLOGY_MAX_DELAY_MS);

    /* Exactly max items is fine. */
    CHECK_INT_EQ(topology_parse_delays("1s,2s", ms, 2, &n, &e), 0);
    CHECK_INT_EQ(n, 2);

    /* format(parse(x)) round-trips the compact form. */
    CHECK_INT_EQ(topology_parse_delays("15s,1m,5m,30m,2h,1500ms", ms, 8, &n, &e), 0);
    CHECK_INT_EQ(n, 6);
    CHECK_INT_EQ(topology_format_delay(ms[5], buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "1500ms");
    CHECK_INT_EQ(topology_format_delay(ms[4], buf, sizeof(buf)), 0);
    CHECK_STR_EQ(buf, "2h");
}

static void test_parse_bad(void)
{
    int64_t ms[2];
    size_t n = 7;
    struct errbuf e = {0};

    check_bad("", "empty");
    check_bad("   ", "empty");
    check_bad("15s,,1m", "empty item");
    check_bad("15s,", "empty item");
    check_bad(",15s", "empty item");
    check_bad("15", "needs a unit");
    check_bad("15x", "needs a unit");
    check_bad("15 s", "needs a unit");
    check_bad("15S", "needs a unit");
    check_bad("1.5s", "needs a unit");
    check_bad("s", "not a whole number");
    check_bad("abc", "not a whole number");
    check_bad("+5s", "not a whole number");
    check_bad("0s", "zero");
    check_bad("0ms", "zero");
    check_bad("-5s", "negative");
    check_bad("1m,-1m", "\"-1m\" is negative");
    check_bad("4294967296ms", "too large");
    check_bad("1194h", "too large");
    check_bad("99999999999999999999999999s", "too large");
    check_bad("15s,1m,banana", "\"banana\"");

    CHECK_INT_EQ(topology_parse_delays("1s,2s,3s", ms, 2, &n, &e), -1);
    CHECK(strstr(e.msg, "too many delays (at most 2)") != NULL);
    CHECK_INT_EQ(n, 0);
    CHECK_INT_EQ(topology_parse_delays(NULL, ms, 2, &n, &e), -1);
}

static void test_queue_type(void)
{
    struct errbuf e = {0};

    CHECK_INT_EQ(topology_check_queue_type("classic", &e), 0);
    CHECK_INT_EQ(topology_check_queue_type("quorum", &e), 0);
    CHECK_INT_EQ(topology_check_queue_type("stream", &e), -1);
    CHECK(strstr(e.msg, "\"stream\"") != NULL);
    CHECK_INT_EQ(topology_check_queue_type("", &e), -1);
    CHECK_INT_EQ(topology_check_queue_type(NULL, &e), -1);
}

int main(void)
{
    test_format();
    test_names();
    test_parse_good();
    test_parse_bad();
    test_queue_type();
    TEST_PASS();
    return 0;
}
