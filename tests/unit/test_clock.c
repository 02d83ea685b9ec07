/* tests/unit/test_clock.c: the SQL DATETIME → RFC 3339 conversion the store's row readers
 * use, including SQL NULL. */
#include "common/clock.h"
#include "tests/unit/check.h"

int main(void)
{
    char out[32];

    clock_sql_to_rfc3339("2026-11-24 13:27:09.123", out, sizeof(out));
    CHECK_STR_EQ(out, "2026-11-24T13:27:09.123Z");
    clock_sql_to_rfc3339("2026-11-24", out, sizeof(out));
    CHECK_STR_EQ(out, "2026-11-24T00:00:00Z");
    snprintf(out, sizeof(out), "stale");
    clock_sql_to_rfc3339(NULL, out, sizeof(out));
    CHECK_STR_EQ(out, "");
    TEST_PASS();
    return 0;
}
