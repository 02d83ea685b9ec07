/* common/netcheck.c: the table of address ranges a webhook must not reach and the checks
 * that match an IPv4 or IPv6 socket address against it. IPv6 forms that carry an IPv4
 * address (mapped, compatible, NAT64, 6to4) are judged by the IPv4 address they carry,
 * because the kernel or a translator on the path delivers them there. */
#include "common/netcheck.h"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <stdint.h>
#include <stdio.h>
#include <string.h>

struct v4_range {
    uint32_t net; /* host byte order */
    int prefix;
    const char *name;
};

/* More specific entries come first: the first match names the range. */
static const struct v4_range v4_blocked[] = {
    {0xA9FEA9FEu, 32, "link-local, cloud metadata"}, /* 169.254.169.254 */
    {0xFFFFFFFFu, 32, "broadcast"},                  /* 255.255.255.255 */
    {0x00000000u, 8, "this-network 0.0.0.0/8"},
    {0x0A000000u, 8, "private 10.0.0.0/8"},
    {0x64400000u, 10, "CGNAT shared 100.64.0.0/10"},
    {0x7F000000u, 8, "loopback"},
    {0xA9FE0000u, 16, "link-local"},
    {0xAC100000u, 12, "private 172.16.0.0/12"},
    {0xC0000000u, 24, "IETF protocol 192.0.0.0/24"},
    {0xC0A80000u, 16, "private 192.168.0.0/16"},
    {0xC6120000u, 15, "benchmarking 198.18.0.0/15"},
    {0xE0000000u, 4, "multicast"},
    {0xF0000000u, 4, "reserved 240.0.0.0/4"},
};

struct v6_range {
    uint8_t net[16];
    int prefix;
    const char *name;
};

static const struct v6_range v6_blocked[] = {
    /* fd00:ec2::254, the AWS metadata service; inside fc00::/7, named for the logs. */
    {{0xfd, 0x00, 0x0e, 0xc2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x02, 0x54},
     128,
     "unique local, cloud metadata"},
    {{0}, 128, "unspecified"},
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1}, 128, "loopback"},
    {{0xfc}, 7, "unique local fc00::/7"},
    {{0xfe, 0x80}, 10, "link-local"},
    /* Deprecated (RFC 3879) but still routed inside some networks. */
    {{0xfe, 0xc0}, 10, "site-local fec0::/10"},
    {{0xff}, 8, "multicast"},
    /* RFC 8215 local-use NAT64: the IPv4 address sits at a prefix-dependent offset and
     * the translator is on the local network, so the whole prefix is treated as private. */
    {{0x00, 0x64, 0xff, 0x9b, 0x00, 0x01}, 48, "local-use NAT64 64:ff9b:1::/48"},
};

/* IPv6 prefixes whose low bits (at v4_off) carry an IPv4 address. */
struct v6_embed {
    uint8_t net[16];
    int prefix;
    int v4_off;
    const char *form;
};

static const struct v6_embed v6_embeds[] = {
    {{0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, 96, 12, "IPv4-mapped"},
    {{0x00, 0x64, 0xff, 0x9b}, 96, 12, "NAT64"},
    {{0x20, 0x02}, 16, 2, "6to4"},
    /* Last: ::/96 also holds :: and ::1, which the table above names first. */
    {{0}, 96, 12, "IPv4-compatible"},
};

static const char *v4_match(uint32_t a)
{
    for (size_t i = 0; i < sizeof(v4_blocked) / sizeof(v4_blocked[0]); i++) {
        const struct v4_range *r = &v4_blocked[i];
        uint32_t mask = r->prefix == 0 ? 0 : 0xFFFFFFFFu << (32 - r->prefix);
        if ((a & mask) == r->net)
            return r->name;
    }
    return NULL;
}

static int v6_prefix_eq(const uint8_t *a, const uint8_t *net, int prefix)
{
    int full = prefix / 8, rest = prefix % 8;

    if (memcmp(a, net, (size_t)full) != 0)
        return 0;
    if (rest == 0)
        return 1;
    uint8_t mask = (uint8_t)(0xFFu << (8 - rest));
    return (a[full] & mask) == (net[full] & mask);
}

/* Copies s into an optional caller buffer, truncating. */
static void put(char *buf, size_t len, const char *s)
{
    if (buf && len > 0)
        snprintf(buf, len, "%s", s);
}

static int classify_v4(uint32_t a, char *range, size_t range_len)
{
    const char *name = v4_match(a);

    if (name == NULL)
        return 0;
    put(range, range_len, name);
    return 1;
}

static int classify_v6(const uint8_t *a, char *range, size_t range_len)
{
    for (size_t i = 0; i < sizeof(v6_blocked) / sizeof(v6_blocked[0]); i++) {
        if (v6_prefix_eq(a, v6_blocked[i].net, v6_blocked[i].prefix)) {
            put(range, range_len, v6_blocked[i].name);
            return 1;
        }
    }
    for (size_t i = 0; i < sizeof(v6_embeds) / sizeof(v6_embeds[0]); i++) {
        const struct v6_embed *m = &v6_embeds[i];
        const uint8_t *p = a + m->v4_off;
        uint32_t v4;
        const char *name;
        char text[INET_ADDRSTRLEN];

        if (!v6_prefix_eq(a, m->net, m->prefix))
            continue;
        v4 = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
        name = v4_match(v4);
        if (name == NULL)
            return 0;
        snprintf(text, sizeof(text), "%u.%u.%u.%u", p[0], p[1], p[2], p[3]);
        if (range && range_len > 0)
            snprintf(range, range_len, "%s %s, %s", m->form, text, name);
        return 1;
    }
    return 0;
}

int netcheck_classify(const struct sockaddr *sa, socklen_t len, char *addr, size_t addr_len,
                      char *range, size_t range_len)
{
    sa_family_t family;
    char text[NETCHECK_ADDR_MAX];
    int blocked;

    if (addr && addr_len > 0)
        addr[0] = '\0';
    if (range && range_len > 0)
        range[0] = '\0';
    if (sa == NULL || len < (socklen_t)(offsetof(struct sockaddr, sa_family) + sizeof(family))) {
        put(addr, addr_len, "no address");
        put(range, range_len, "incomplete address");
        return 1;
    }
    /* Copied out: the caller's bytes need not be aligned for the wider structs. */
    memcpy(&family, (const char *)sa + offsetof(struct sockaddr, sa_family), sizeof(family));
    if (family == AF_INET && len >= (socklen_t)sizeof(struct sockaddr_in)) {
        struct sockaddr_in in;
        memcpy(&in, sa, sizeof(in));
        inet_ntop(AF_INET, &in.sin_addr, text, sizeof(text));
        blocked = classify_v4(ntohl(in.sin_addr.s_addr), range, range_len);
    } else if (family == AF_INET6 && len >= (socklen_t)sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, sa, sizeof(in6));
        inet_ntop(AF_INET6, &in6.sin6_addr, text, sizeof(text));
        blocked = classify_v6(in6.sin6_addr.s6_addr, range, range_len);
    } else {
        snprintf(text, sizeof(text), "address family %d", (int)family);
        blocked = 1;
        put(range, range_len,
            family == AF_INET || family == AF_INET6 ? "incomplete address" : "not IPv4 or IPv6");
    }
    put(addr, addr_len, text);
    return blocked;
}

int netcheck_blocked(const struct sockaddr *sa, socklen_t len, char *why, size_t why_len)
{
    char addr[NETCHECK_ADDR_MAX], range[NETCHECK_RANGE_MAX];
    int blocked = netcheck_classify(sa, len, addr, sizeof(addr), range, sizeof(range));

    if (why && why_len > 0) {
        if (blocked)
            snprintf(why, why_len, "%s is %s", addr, range);
        else
            why[0] = '\0';
    }
    return blocked;
}
