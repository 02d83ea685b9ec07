/* tests/unit/test_netcheck.c: every blocked range, probed just inside and just outside each
 * edge, for IPv4 and IPv6 and the IPv6 forms that carry an IPv4 address. */
#include "common/netcheck.h"

#include "tests/unit/check.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

struct probe {
    const char *addr;
    const char *range; /* NULL: allowed */
};

static const struct probe probes[] = {
    /* 0.0.0.0/8 */
    {"0.0.0.0", "this-network 0.0.0.0/8"},
    {"0.255.255.255", "this-network 0.0.0.0/8"},
    {"1.0.0.0", NULL},
    /* 10/8 */
    {"9.255.255.255", NULL},
    {"10.0.0.0", "private 10.0.0.0/8"},
    {"10.255.255.255", "private 10.0.0.0/8"},
    {"11.0.0.0", NULL},
    /* 100.64/10 */
    {"100.63.255.255", NULL},
    {"100.64.0.0", "CGNAT shared 100.64.0.0/10"},
    {"100.127.255.255", "CGNAT shared 100.64.0.0/10"},
    {"100.128.0.0", NULL},
    /* 127/8 */
    {"126.255.255.255", NULL},
    {"127.0.0.0", "loopback"},
    {"127.0.0.1", "loopback"},
    {"127.255.255.255", "loopback"},
    {"128.0.0.0", NULL},
    /* 169.254/16 and the metadata address inside it */
    {"169.253.255.255", NULL},
    {"169.254.0.0", "link-local"},
    {"169.254.169.253", "link-local"},
    {"169.254.169.254", "link-local, cloud metadata"},
    {"169.254.169.255", "link-local"},
    {"169.254.255.255", "link-local"},
    {"169.255.0.0", NULL},
    /* 172.16/12 */
    {"172.15.255.255", NULL},
    {"172.16.0.0", "private 172.16.0.0/12"},
    {"172.31.255.255", "private 172.16.0.0/12"},
    {"172.32.0.0", NULL},
    /* 192.0.0/24 */
    {"191.255.255.255", NULL},
    {"192.0.0.0", "IETF protocol 192.0.0.0/24"},
    {"192.0.0.255", "IETF protocol 192.0.0.0/24"},
    {"192.0.1.0", NULL},
    /* 192.168/16 */
    {"192.167.255.255", NULL},
    {"192.168.0.0", "private 192.168.0.0/16"},
    {"192.168.255.255", "private 192.168.0.0/16"},
    {"192.169.0.0", NULL},
    /* 198.18/15 */
    {"198.17.255.255", NULL},
    {"198.18.0.0", "benchmarking 198.18.0.0/15"},
    {"198.19.255.255", "benchmarking 198.18.0.0/15"},
    {"198.20.0.0", NULL},
    /* 224/4, 240/4, broadcast */
    {"223.255.255.255", NULL},
    {"224.0.0.0", "multicast"},
    {"239.255.255.255", "multicast"},
    {"240.0.0.0", "reserved 240.0.0.0/4"},
    {"255.255.255.254", "reserved 240.0.0.0/4"},
    {"255.255.255.255", "broadcast"},
    /* Ordinary public addresses. */
    {"8.8.8.8", NULL},
    {"1.1.1.1", NULL},
    {"93.184.216.34", NULL},
    {"172.217.0.1", NULL},

    /* IPv6 singletons */
    {"::", "unspecified"},
    {"::1", "loopback"},
    /* fc00::/7 and the AWS metadata address inside it */
    {"fbff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
    {"fc00::", "unique local fc00::/7"},
    {"fd00:ec2::253", "unique local fc00::/7"},
    {"fd00:ec2::254", "unique local, cloud metadata"},
    {"fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "unique local fc00::/7"},
    {"fe00::", NULL},
    /* fe80::/10, then site-local fec0::/10 right after it */
    {"fe7f:ffff:ffff:ffff:ffff:ffff:ffff:ffff", NULL},
    {"fe80::", "link-local"},
    {"fe80::1", "link-local"},
    {"febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "link-local"},
    {"fec0::", "site-local fec0::/10"},
    {"feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "site-local fec0::/10"},
    /* ff00::/8 */
    {"ff00::", "multicast"},
    {"ff02::1", "multicast"},
    {"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "multicast"},
    /* Public IPv6 */
    {"2001:4860:4860::8888", NULL},
    {"2606:4700:4700::1111", NULL},
    {"2a00:1450:4001:800::200e", NULL},
    /* IPv4-mapped ::ffff:0:0/96 */
    {"::ffff:127.0.0.1", "IPv4-mapped 127.0.0.1, loopback"},
    {"::ffff:169.254.169.254", "IPv4-mapped 169.254.169.254, link-local, cloud metadata"},
    {"::ffff:10.0.0.1", "IPv4-mapped 10.0.0.1, private 10.0.0.0/8"},
    {"::ffff:0.0.0.0", "IPv4-mapped 0.0.0.0, this-network 0.0.0.0/8"},
    {"::ffff:255.255.255.255", "IPv4-mapped 255.255.255.255, broadcast"},
    {"::ffff:100.127.255.255", "IPv4-mapped 100.127.255.255, CGNAT shared 100.64.0.0/10"},
    {"::ffff:100.128.0.0", NULL},
    {"::ffff:8.8.8.8", NULL},
    {"::ffff:11.0.0.0", NULL},
    /* One bit off the mapped prefix: an ordinary (public-looking) IPv6 address. */
    {"::1:ffff:7f00:1", NULL},
    /* IPv4-compatible ::/96 (deprecated) */
    {"::2", "IPv4-compatible 0.0.0.2, this-network 0.0.0.0/8"},
    {"::127.0.0.1", "IPv4-compatible 127.0.0.1, loopback"},
    {"::192.168.1.1", "IPv4-compatible 192.168.1.1, private 192.168.0.0/16"},
    {"::8.8.8.8", NULL},
    /* NAT64 well-known prefix 64:ff9b::/96 */
    {"64:ff9b::7f00:1", "NAT64 127.0.0.1, loopback"},
    {"64:ff9b::169.254.169.254", "NAT64 169.254.169.254, link-local, cloud metadata"},
    {"64:ff9b::172.16.0.1", "NAT64 172.16.0.1, private 172.16.0.0/12"},
    {"64:ff9b::8.8.8.8", NULL},
    {"64:ff9b::1:7f00:1", NULL}, /* outside the /96 */
    {"64:ff9a:ffff:ffff:ffff:ffff:7f00:1", NULL},
    /* RFC 8215 local-use NAT64 64:ff9b:1::/48 */
    {"64:ff9b:1::", "local-use NAT64 64:ff9b:1::/48"},
    {"64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "local-use NAT64 64:ff9b:1::/48"},
    {"64:ff9b:2::", NULL},
    /* 6to4 2002::/16 */
    {"2002:7f00:1::", "6to4 127.0.0.1, loopback"},
    {"2002:a9fe:a9fe::1", "6to4 169.254.169.254, link-local, cloud metadata"},
    {"2002:808:808::1", NULL},
    {"2003:7f00:1::", NULL},
};

/* Builds a sockaddr for text (":" means IPv6) with port 443. */
static socklen_t make_addr(const char *text, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (strchr(text, ':')) {
        struct sockaddr_in6 *a = (struct sockaddr_in6 *)ss;
        a->sin6_family = AF_INET6;
        a->sin6_port = htons(443);
        CHECK_INT_EQ(inet_pton(AF_INET6, text, &a->sin6_addr), 1);
        return sizeof(*a);
    }
    struct sockaddr_in *a = (struct sockaddr_in *)ss;
    a->sin_family = AF_INET;
    a->sin_port = htons(443);
    CHECK_INT_EQ(inet_pton(AF_INET, text, &a->sin_addr), 1);
    return sizeof(*a);
}

static void test_table(void)
{
    for (size_t i = 0; i < sizeof(probes) / sizeof(probes[0]); i++) {
        const struct probe *p = &probes[i];
        struct sockaddr_storage ss;
        char addr[NETCHECK_ADDR_MAX], range[NETCHECK_RANGE_MAX], why[128], want_why[160];
        char canon[INET6_ADDRSTRLEN];
        socklen_t len;
        int blocked;

        len = make_addr(p->addr, &ss);
        blocked = netcheck_classify((struct sockaddr *)&ss, len, addr, sizeof(addr), range,
                                    sizeof(range));
        if (blocked != (p->range != NULL))
            fprintf(stderr, "probe %s: blocked=%d range=\"%s\"\n", p->addr, blocked, range);
        CHECK_INT_EQ(blocked, p->range != NULL);
        CHECK_STR_EQ(range, p->range ? p->range : "");
        /* addr is the canonical text of the address. */
        inet_ntop(ss.ss_family,
                  ss.ss_family == AF_INET ? (void *)&((struct sockaddr_in *)&ss)->sin_addr
                                          : (void *)&((struct sockaddr_in6 *)&ss)->sin6_addr,
                  canon, sizeof(canon));
        CHECK_STR_EQ(addr, canon);

        CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, sizeof(why)), blocked);
        if (blocked)
            snprintf(want_why, sizeof(want_why), "%s is %s", canon, p->range);
        else
            want_why[0] = '\0';
        CHECK_STR_EQ(why, want_why);
    }
}

static void test_messages(void)
{
    struct sockaddr_storage ss;
    socklen_t len;
    char why[128];

    len = make_addr("127.0.0.1", &ss);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "127.0.0.1 is loopback");

    len = make_addr("169.254.169.254", &ss);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "169.254.169.254 is link-local, cloud metadata");

    len = make_addr("::ffff:10.1.2.3", &ss);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "::ffff:10.1.2.3 is IPv4-mapped 10.1.2.3, private 10.0.0.0/8");

    /* Truncated but terminated; NULL buffers are fine. */
    len = make_addr("127.0.0.1", &ss);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, 8), 1);
    CHECK_STR_EQ(why, "127.0.0");
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, NULL, 0), 1);
    CHECK_INT_EQ(netcheck_classify((struct sockaddr *)&ss, len, NULL, 0, NULL, 0), 1);

    /* An allowed address clears why. */
    strcpy(why, "stale");
    len = make_addr("8.8.4.4", &ss);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, why, sizeof(why)), 0);
    CHECK_STR_EQ(why, "");
}

/* The port and an IPv6 scope id play no part in the verdict. */
static void test_port_and_scope(void)
{
    struct sockaddr_storage ss;
    socklen_t len;

    len = make_addr("fe80::1", &ss);
    ((struct sockaddr_in6 *)&ss)->sin6_scope_id = 2;
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, NULL, 0), 1);
    len = make_addr("2001:4860:4860::8844", &ss);
    ((struct sockaddr_in6 *)&ss)->sin6_port = htons(1);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, NULL, 0), 0);
    len = make_addr("10.0.0.1", &ss);
    ((struct sockaddr_in *)&ss)->sin_port = htons(65535);
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, len, NULL, 0), 1);
}

/* Anything that is not a whole IPv4/IPv6 address is refused. */
static void test_malformed(void)
{
    struct sockaddr_storage ss;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    char why[128];

    CHECK_INT_EQ(netcheck_blocked(NULL, 0, why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "no address is incomplete address");

    make_addr("8.8.8.8", &ss);
    CHECK_INT_EQ(
        netcheck_blocked((struct sockaddr *)&ss, sizeof(struct sockaddr_in) - 1, why, sizeof(why)),
        1);
    CHECK_STR_EQ(why, "address family 2 is incomplete address");
    make_addr("2001:4860:4860::8888", &ss);
    CHECK_INT_EQ(
        netcheck_blocked((struct sockaddr *)&ss, sizeof(struct sockaddr_in), why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "address family 10 is incomplete address");
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&ss, 1, why, sizeof(why)), 1);

    strcpy(un.sun_path, "/tmp/x.sock");
    CHECK_INT_EQ(netcheck_blocked((struct sockaddr *)&un, sizeof(un), why, sizeof(why)), 1);
    CHECK_STR_EQ(why, "address family 1 is not IPv4 or IPv6");
}

/* The caller's bytes may sit at any alignment (curl's struct curl_sockaddr does). */
static void test_unaligned(void)
{
    struct sockaddr_storage ss;
    unsigned char raw[sizeof(struct sockaddr_in6) + 1];
    socklen_t len;

    len = make_addr("::ffff:127.0.0.1", &ss);
    memcpy(raw + 1, &ss, len);
    CHECK_INT_EQ(netcheck_blocked((const struct sockaddr *)(const void *)(raw + 1), len, NULL, 0),
                 1);
    len = make_addr("8.8.8.8", &ss);
    memcpy(raw + 1, &ss, len);
    CHECK_INT_EQ(netcheck_blocked((const struct sockaddr *)(const void *)(raw + 1), len, NULL, 0),
                 0);
}

int main(void)
{
    test_table();
    test_messages();
    test_port_and_scope();
    test_malformed();
    test_unaligned();
    TEST_PASS();
    return 0;
}
