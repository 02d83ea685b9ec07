/* tests/fuzz/fuzz_retry_after.c: a business webhook's Retry-After header
 * (worker/retry.c retry_after_ms) and the retry plan it feeds.
 *
 * Input: one byte for the HTTP status the webhook answered (429, 503 or 500), then the
 * header value. The wait must never be negative, and the plan must pick an existing
 * delay queue with a positive expiration that the queue's TTL can hold. */
#include "tests/fuzz/fuzz.h"
#include "worker/retry.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const long statuses[4] = {429, 503, 500, 429};
    static const int64_t delays[5] = {10000, 60000, 300000, 1800000, 7200000};
    const int64_t now_ms = FUZZ_NOW_S * 1000;
    struct retry_decision d;
    char *value;
    int64_t ra;

    if (size < 1)
        return 0;
    value = fuzz_cstr(data + 1, size - 1);
    ra = retry_after_ms(value, now_ms);
    FUZZ_CHECK(ra >= -1);
    for (int attempts = 1; attempts <= 6; attempts++) {
        retry_plan(delays, 5, attempts, statuses[data[0] & 3], value, (data[0] >> 2) / 31.5 - 1,
                   now_ms, &d);
        if (attempts > 5) {
            FUZZ_CHECK(d.dead);
            continue;
        }
        FUZZ_CHECK(!d.dead && d.queue >= 1 && d.queue <= 5);
        FUZZ_CHECK(d.expiration_ms >= 1 && d.expiration_ms <= RETRY_QUEUE_TTL(delays[d.queue - 1]));
    }
    free(value);
    return 0;
}
