/* queue/topology.c: RabbitMQ names and the retry-delay list (parse, format). No I/O. */
#include "queue/topology.h"

#include "common/errbuf.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *suffix;
    int64_t ms;
} units[] = {
    /* Largest first: topology_format_delay() picks the first that divides exactly. */
    {"h", 3600000},
    {"m", 60000},
    {"s", 1000},
    {"ms", 1},
};

int topology_format_delay(int64_t ms, char *buf, size_t len)
{
    int w;

    if (ms <= 0 || buf == NULL || len == 0)
        return -1;
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ms % units[i].ms != 0)
            continue;
        w = snprintf(buf, len, "%" PRId64 "%s", ms / units[i].ms, units[i].suffix);
        return (w < 0 || (size_t)w >= len) ? -1 : 0;
    }
    return -1; /* unreachable: "ms" divides everything */
}

int topology_retry_queue_name(int k, int64_t delay_ms, char *buf, size_t len)
{
    char delay[32];
    int w;

    if (k < 1 || k > TOPOLOGY_MAX_RETRIES || delay_ms <= 0 || delay_ms > TOPOLOGY_MAX_DELAY_MS)
        return -1;
    if (topology_format_delay(delay_ms, delay, sizeof(delay)) != 0)
        return -1;
    w = snprintf(buf, len, TOPOLOGY_RETRY_PREFIX "%d.%s", k, delay);
    return (w < 0 || (size_t)w >= len) ? -1 : 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t';
}

/* Parses one item [p, end) (blanks already trimmed) into *ms. */
static int parse_item(const char *p, const char *end, int64_t *ms, struct errbuf *e)
{
    const char *q = p;
    int64_t v = 0;
    size_t ulen;

    if (p == end) {
        errbuf_set(e, ERRBUF_PERMANENT, "empty item in delay list");
        return -1;
    }
    if (*q == '-') {
        errbuf_set(e, ERRBUF_PERMANENT, "delay \"%.*s\" is negative", (int)(end - p), p);
        return -1;
    }
    while (q < end && *q >= '0' && *q <= '9') {
        /* Stop before v * 10 + digit can overflow; anything this big is out of range. */
        if (v > TOPOLOGY_MAX_DELAY_MS) {
            errbuf_set(e, ERRBUF_PERMANENT, "delay \"%.*s\" is too large (at most %lld ms)",
                       (int)(end - p), p, TOPOLOGY_MAX_DELAY_MS);
            return -1;
        }
        v = v * 10 + (*q - '0');
        q++;
    }
    if (q == p) {
        errbuf_set(e, ERRBUF_PERMANENT,
                   "delay \"%.*s\" is not a whole number with a unit (ms, s, m, h), e.g. 15s",
                   (int)(end - p), p);
        return -1;
    }
    ulen = (size_t)(end - q);
    for (size_t i = 0; i < sizeof(units) / sizeof(units[0]); i++) {
        if (ulen != strlen(units[i].suffix) || memcmp(q, units[i].suffix, ulen) != 0)
            continue;
        if (v == 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "delay \"%.*s\" is zero", (int)(end - p), p);
            return -1;
        }
        if (v > TOPOLOGY_MAX_DELAY_MS / units[i].ms) {
            errbuf_set(e, ERRBUF_PERMANENT, "delay \"%.*s\" is too large (at most %lld ms)",
                       (int)(end - p), p, TOPOLOGY_MAX_DELAY_MS);
            return -1;
        }
        *ms = v * units[i].ms;
        return 0;
    }
    errbuf_set(e, ERRBUF_PERMANENT, "delay \"%.*s\" needs a unit: ms, s, m or h (e.g. 15s)",
               (int)(end - p), p);
    return -1;
}

int topology_parse_delays(const char *s, int64_t *out_ms, size_t max, size_t *n, struct errbuf *e)
{
    const char *p = s, *end, *a, *b;
    size_t count = 0;

    *n = 0;
    if (s == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "delay list is missing");
        return -1;
    }
    for (;;) {
        end = strchr(p, ',');
        if (end == NULL)
            end = p + strlen(p);
        a = p;
        b = end;
        while (a < b && is_blank(*a))
            a++;
        while (b > a && is_blank(b[-1]))
            b--;
        if (a == b && *end == '\0' && count == 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "delay list is empty (expected e.g. 15s,1m,5m)");
            return -1;
        }
        if (count == max) {
            errbuf_set(e, ERRBUF_PERMANENT, "too many delays (at most %zu)", max);
            return -1;
        }
        if (parse_item(a, b, &out_ms[count], e) != 0)
            return -1;
        count++;
        if (*end == '\0')
            break;
        p = end + 1;
    }
    *n = count;
    return 0;
}

int topology_check_queue_type(const char *qt, struct errbuf *e)
{
    if (qt != NULL && (strcmp(qt, "classic") == 0 || strcmp(qt, "quorum") == 0))
        return 0;
    errbuf_set(e, ERRBUF_PERMANENT, "queue type must be \"classic\" or \"quorum\", got \"%.40s\"",
               qt != NULL ? qt : "(null)");
    return -1;
}
