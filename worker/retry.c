/* worker/retry.c: the retry schedule: attempt 0 immediate, retry k after delay k (with
 * jitter, so a recovered endpoint is not hit by every waiting webhook at once), a longer
 * Retry-After honoured up to the largest queue's TTL, dead after retry N. */
#include "worker/retry.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

int64_t retry_after_ms(const char *value, int64_t now_ms)
{
    struct tm tm;
    const char *end;
    int64_t secs = 0;

    if (value == NULL || *value == '\0')
        return -1;
    if (value[0] >= '0' && value[0] <= '9') {
        for (const char *p = value; *p; p++) {
            if (*p < '0' || *p > '9' || secs > 100000000)
                return -1;
            secs = secs * 10 + (*p - '0');
        }
        return secs * 1000;
    }
    memset(&tm, 0, sizeof(tm));
    end = strptime(value, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (end == NULL || *end != '\0')
        return -1;
    secs = (int64_t)timegm(&tm) * 1000 - now_ms;
    return secs > 0 ? secs : 0;
}

void retry_plan(const int64_t *delays, size_t n, int attempts_done, long http_status,
                const char *retry_after, double jitter, int64_t now_ms, struct retry_decision *out)
{
    int64_t want, ra;
    size_t k;

    memset(out, 0, sizeof(*out));
    if (attempts_done < 1)
        attempts_done = 1;
    if ((size_t)attempts_done > n) {
        out->dead = 1;
        return;
    }
    if (jitter > 1)
        jitter = 1;
    if (jitter < -1)
        jitter = -1;
    k = (size_t)attempts_done - 1; /* retry k+1 follows failure number attempts_done */
    want = delays[k] + (int64_t)((double)delays[k] * RETRY_JITTER_PCT / 100.0 * jitter);
    if (want < 1)
        want = 1;
    ra = (http_status == 429 || http_status == 503) ? retry_after_ms(retry_after, now_ms) : -1;
    if (ra > want)
        want = ra;
    /* The first queue, from k on, whose TTL can hold the wait; beyond the largest, cap. */
    for (; k < n; k++)
        if (RETRY_QUEUE_TTL(delays[k]) >= want)
            break;
    if (k == n) {
        k = n - 1;
        for (size_t i = 0; i < n; i++)
            if (delays[i] > delays[k])
                k = i;
        want = RETRY_QUEUE_TTL(delays[k]);
    }
    out->queue = (int)k + 1;
    out->expiration_ms = want;
}
