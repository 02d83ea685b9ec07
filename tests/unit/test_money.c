/* tests/unit/test_money.c: exact amount parsing, URL and duration parsing. */
#include <string.h>

#include "check.h"
#include "common/money.h"
#include "common/url.h"

static void test_money(void)
{
    struct errbuf e = {0};
    int64_t v;
    struct {
        const char *in;
        int64_t want;
    } ok[] = {{"12.50", 1250},
              {"0.01", 1},
              {"100", 10000},
              {"0.1", 10},
              {"92233720368547758.07", INT64_MAX}};
    const char *bad[] = {
        "",     ".5",  "1.", "1.234", "-1", "+1", "1e3", " 1", "1 ", "1,00", "92233720368547758.08",
        "0x10", "1..2"};

    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        CHECK_INT_EQ(money_parse_decimal(ok[i].in, 2, &v, &e), 0);
        CHECK_INT_EQ(v, ok[i].want);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT_EQ(money_parse_decimal(bad[i], 2, &v, &e), -1);
    CHECK_INT_EQ(money_parse_minor("1250", &v, &e), 0);
    CHECK_INT_EQ(v, 1250);
    CHECK_INT_EQ(money_parse_minor("12.5", &v, &e), -1);
    CHECK_INT_EQ(money_parse_minor("", &v, &e), -1);
    CHECK_INT_EQ(money_parse_minor("99999999999999999999", &v, &e), -1);
    {
        char c[4];
        CHECK_INT_EQ(money_currency_norm("usd", c), 0);
        CHECK_STR_EQ(c, "USD");
        CHECK_INT_EQ(money_currency_norm("US", c), -1);
        CHECK_INT_EQ(money_currency_norm("U1D", c), -1);
    }
}

static void test_url(void)
{
    struct url u;
    struct errbuf e = {0};
    char host[256];
    int port;

    CHECK_INT_EQ(url_parse("mysql://pn:p%40ss@127.0.0.1:3307/paynotify", &u, &e), 0);
    CHECK_STR_EQ(u.scheme, "mysql");
    CHECK_STR_EQ(u.user, "pn");
    CHECK_STR_EQ(u.password, "p@ss");
    CHECK_STR_EQ(u.host, "127.0.0.1");
    CHECK_INT_EQ(u.port, 3307);
    CHECK_STR_EQ(u.path, "paynotify");
    CHECK_INT_EQ(url_parse("redis://localhost/0", &u, &e), 0);
    CHECK_INT_EQ(u.port, 0);
    CHECK_STR_EQ(u.path, "0");
    CHECK_INT_EQ(url_parse("nohost", &u, &e), -1);
    CHECK_INT_EQ(url_parse("redis://:99999/", &u, &e), -1);
    CHECK_INT_EQ(url_parse("redis://h:12x/", &u, &e), -1);
    CHECK_INT_EQ(url_parse("mysql://u:%4@h/x", &u, &e), -1);
    CHECK_INT_EQ(url_split_hostport("127.0.0.1:8080", host, &port, &e), 0);
    CHECK_STR_EQ(host, "127.0.0.1");
    CHECK_INT_EQ(port, 8080);
    CHECK_INT_EQ(url_split_hostport("8080", host, &port, &e), -1);
    CHECK_INT_EQ(url_split_hostport("h:", host, &port, &e), -1);
}

static void test_duration(void)
{
    struct errbuf e = {0};
    int64_t v;
    char buf[32];

    CHECK_INT_EQ(duration_parse_ms("15s", &v, &e), 0);
    CHECK_INT_EQ(v, 15000);
    CHECK_INT_EQ(duration_parse_ms("2h", &v, &e), 0);
    CHECK_INT_EQ(v, 7200000);
    CHECK_INT_EQ(duration_parse_ms("250ms", &v, &e), 0);
    CHECK_INT_EQ(v, 250);
    const char *bad[] = {"", "0s", "s", "15", "1.5s", "-1s", "15 s", "1d", "99999999999999999h"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK_INT_EQ(duration_parse_ms(bad[i], &v, &e), -1);
    duration_format(60000, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "1m");
    duration_format(1500, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "1500ms");
    duration_format(7200000, buf, sizeof(buf));
    CHECK_STR_EQ(buf, "2h");
}

int main(void)
{
    test_money();
    test_url();
    test_duration();
    TEST_PASS();
    return 0;
}
