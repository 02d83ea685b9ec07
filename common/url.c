/* common/url.c: connection URL and duration parsing. */
#include "common/url.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int copy_decoded(char *dst, size_t cap, const char *src, size_t n)
{
    size_t o = 0;

    for (size_t i = 0; i < n; i++) {
        char c = src[i];
        if (c == '%') {
            char hex[3];
            char *end;
            if (i + 2 >= n)
                return -1;
            hex[0] = src[i + 1];
            hex[1] = src[i + 2];
            hex[2] = '\0';
            c = (char)strtol(hex, &end, 16);
            if (*end != '\0')
                return -1;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        dst[o++] = c;
    }
    dst[o] = '\0';
    return 0;
}

static int parse_port(const char *s, size_t n, int *port)
{
    int v = 0;

    if (n == 0 || n > 5)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *port = v;
    return 0;
}

int url_parse(const char *s, struct url *u, struct errbuf *e)
{
    const char *p, *auth_end, *host_start, *host_end, *colon;

    memset(u, 0, sizeof(*u));
    p = strstr(s, "://");
    if (p == NULL || p == s || (size_t)(p - s) >= sizeof(u->scheme)) {
        errbuf_set(e, ERRBUF_PERMANENT, "expected scheme://host");
        return -1;
    }
    memcpy(u->scheme, s, (size_t)(p - s));
    p += 3;
    host_end = p + strcspn(p, "/?#");
    auth_end = NULL;
    for (const char *q = p; q < host_end; q++)
        if (*q == '@')
            auth_end = q;
    host_start = p;
    if (auth_end != NULL) {
        const char *pc = memchr(p, ':', (size_t)(auth_end - p));
        size_t ulen = pc ? (size_t)(pc - p) : (size_t)(auth_end - p);
        if (copy_decoded(u->user, sizeof(u->user), p, ulen) != 0 ||
            (pc && copy_decoded(u->password, sizeof(u->password), pc + 1,
                                (size_t)(auth_end - pc - 1)) != 0)) {
            errbuf_set(e, ERRBUF_PERMANENT, "malformed user:password");
            return -1;
        }
        host_start = auth_end + 1;
    }
    colon = NULL;
    for (const char *q = host_start; q < host_end; q++)
        if (*q == ':')
            colon = q;
    if (colon != NULL) {
        if (parse_port(colon + 1, (size_t)(host_end - colon - 1), &u->port) != 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "malformed port");
            return -1;
        }
    } else {
        colon = host_end;
    }
    if (colon == host_start || (size_t)(colon - host_start) >= sizeof(u->host)) {
        errbuf_set(e, ERRBUF_PERMANENT, "missing or too long host");
        return -1;
    }
    memcpy(u->host, host_start, (size_t)(colon - host_start));
    if (*host_end == '/') {
        size_t plen = strcspn(host_end + 1, "?#");
        if (plen >= sizeof(u->path)) {
            errbuf_set(e, ERRBUF_PERMANENT, "path too long");
            return -1;
        }
        memcpy(u->path, host_end + 1, plen);
    }
    return 0;
}

int url_split_hostport(const char *s, char *host, int *port, struct errbuf *e)
{
    const char *colon = strrchr(s, ':');

    if (colon == NULL || colon == s || (size_t)(colon - s) >= 256 ||
        parse_port(colon + 1, strlen(colon + 1), port) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "expected host:port, got \"%.64s\"", s);
        return -1;
    }
    memcpy(host, s, (size_t)(colon - s));
    host[colon - s] = '\0';
    return 0;
}

int duration_parse_ms(const char *s, int64_t *out, struct errbuf *e)
{
    int64_t v = 0, mult;
    const char *p = s;

    for (; *p >= '0' && *p <= '9'; p++) {
        if (v > INT64_MAX / 10 - 10)
            goto bad;
        v = v * 10 + (*p - '0');
    }
    if (p == s)
        goto bad;
    if (strcmp(p, "ms") == 0)
        mult = 1;
    else if (strcmp(p, "s") == 0)
        mult = 1000;
    else if (strcmp(p, "m") == 0)
        mult = 60000;
    else if (strcmp(p, "h") == 0)
        mult = 3600000;
    else
        goto bad;
    if (v <= 0 || v > INT64_MAX / mult / 1000)
        goto bad;
    *out = v * mult;
    return 0;
bad:
    errbuf_set(e, ERRBUF_PERMANENT,
               "expected a positive duration like 250ms, 15s, 1m or 2h, got \"%.40s\"", s);
    return -1;
}

void duration_format(int64_t ms, char *buf, size_t len)
{
    if (ms % 3600000 == 0)
        snprintf(buf, len, "%lldh", (long long)(ms / 3600000));
    else if (ms % 60000 == 0)
        snprintf(buf, len, "%lldm", (long long)(ms / 60000));
    else if (ms % 1000 == 0)
        snprintf(buf, len, "%llds", (long long)(ms / 1000));
    else
        snprintf(buf, len, "%lldms", (long long)ms);
}
