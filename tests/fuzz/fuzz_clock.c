/* tests/fuzz/fuzz_clock.c: RFC 3339 times (common/clock.c clock_parse_rfc3339), as in a
 * business's expire_at and provider timestamps, and the DATETIME -> RFC 3339 rewrite.
 *
 * An accepted time from the epoch to the end of year 9999 UTC must survive
 * clock_format_rfc3339() -> clock_parse_rfc3339() unchanged. Beyond those bounds the
 * parser accepts what the formatter cannot write back (e.g. "9999-12-31T23:59:59-23:59"
 * is year 10000 in UTC, and 1970-01-01T00:00:00+01:00 is before the epoch): reported to
 * the clock owner, not checked here. */
#include "common/clock.h"
#include "tests/fuzz/fuzz.h"

/* 10000-01-01T00:00:00Z: the first instant RFC 3339 (four-digit years) cannot write. */
#define YEAR_10000_MS INT64_C(253402300800000)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    int64_t ms = -1, again = -1;
    char text[32], out[32];
    int rc = clock_parse_rfc3339(s, &ms);

    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc == 0 && ms >= 0 && ms < YEAR_10000_MS) {
        clock_format_rfc3339(ms, text, sizeof(text));
        if (clock_parse_rfc3339(text, &again) != 0 || again != ms) {
            fprintf(stderr, "clock: \"%s\" -> %lld -> \"%s\" -> %lld\n", s, (long long)ms, text,
                    (long long)again);
            FUZZ_CHECK(0);
        }
    }
    clock_sql_to_rfc3339(s, out, sizeof(out));
    FUZZ_CHECK(fuzz_terminated(out, sizeof(out)));
    free(s);
    return 0;
}
