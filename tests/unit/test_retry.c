/* tests/unit/test_retry.c: the retry schedule. */
#include "check.h"
#include "worker/retry.h"

int main(void)
{
    const int64_t d[] = {15000, 60000, 300000, 1800000, 7200000};
    struct retry_decision r;
    int64_t now = 1700000000000LL;

    /* attempt 0 failed -> retry 1 after 15 s; no jitter */
    retry_plan(d, 5, 1, 500, "", 0, now, &r);
    CHECK_INT_EQ(r.dead, 0);
    CHECK_INT_EQ(r.queue, 1);
    CHECK_INT_EQ(r.expiration_ms, 15000);
    /* jitter stays within +-15 % and inside the queue TTL */
    retry_plan(d, 5, 1, 500, "", 1, now, &r);
    CHECK_INT_EQ(r.queue, 1);
    CHECK_INT_EQ(r.expiration_ms, 17250);
    CHECK(r.expiration_ms <= RETRY_QUEUE_TTL(15000));
    retry_plan(d, 5, 1, 500, "", -1, now, &r);
    CHECK_INT_EQ(r.expiration_ms, 12750);
    /* the k-th failure goes to queue k */
    retry_plan(d, 5, 3, 0, "", 0, now, &r);
    CHECK_INT_EQ(r.queue, 3);
    CHECK_INT_EQ(r.expiration_ms, 300000);
    retry_plan(d, 5, 5, 0, "", 0, now, &r);
    CHECK_INT_EQ(r.queue, 5);
    /* after retry N failed: dead */
    retry_plan(d, 5, 6, 500, "", 0, now, &r);
    CHECK_INT_EQ(r.dead, 1);
    /* Retry-After longer than the next delay is honoured (429/503 only) */
    retry_plan(d, 5, 1, 429, "120", 0, now, &r);
    CHECK_INT_EQ(r.queue, 3); /* 1m*1.2 < 120 s <= 5m*1.2 */
    CHECK_INT_EQ(r.expiration_ms, 120000);
    retry_plan(d, 5, 1, 500, "120", 0, now, &r);
    CHECK_INT_EQ(r.expiration_ms, 15000);
    /* shorter Retry-After does not shorten the schedule */
    retry_plan(d, 5, 2, 503, "1", 0, now, &r);
    CHECK_INT_EQ(r.expiration_ms, 60000);
    /* capped at the largest queue's TTL */
    retry_plan(d, 5, 1, 503, "999999", 0, now, &r);
    CHECK_INT_EQ(r.queue, 5);
    CHECK_INT_EQ(r.expiration_ms, RETRY_QUEUE_TTL(7200000));
    /* HTTP-date form */
    CHECK_INT_EQ(retry_after_ms("Tue, 14 Nov 2023 22:15:20 GMT", 1700000000000LL), 120000);
    CHECK_INT_EQ(retry_after_ms("soon", now), -1);
    CHECK_INT_EQ(retry_after_ms("", now), -1);
    CHECK_INT_EQ(retry_after_ms("12a", now), -1);
    /* short test schedules work the same */
    {
        const int64_t s[] = {1000, 1000, 2000};
        retry_plan(s, 3, 3, 500, "", 0, now, &r);
        CHECK_INT_EQ(r.queue, 3);
        CHECK_INT_EQ(r.expiration_ms, 2000);
        retry_plan(s, 3, 4, 500, "", 0, now, &r);
        CHECK_INT_EQ(r.dead, 1);
    }
    TEST_PASS();
    return 0;
}
