/* common/clock.h: wall-clock time and RFC 3339 / MySQL DATETIME conversions (UTC). */
#ifndef PAYNOTIFY_COMMON_CLOCK_H
#define PAYNOTIFY_COMMON_CLOCK_H

#include <stddef.h>
#include <stdint.h>

int64_t clock_now_ms(void);
/* Monotonic milliseconds, for durations. */
int64_t clock_mono_ms(void);
/* Parses "2026-11-24T13:27:09Z", "...09.123+08:00", etc. into unix milliseconds; -1 if
 * malformed. */
int clock_parse_rfc3339(const char *s, int64_t *out_ms);
/* "2026-11-24T13:27:09.123Z"; out needs 32 bytes. */
void clock_format_rfc3339(int64_t ms, char *out, size_t len);
/* "2026-11-24 13:27:09.123" for DATETIME(3) columns; out needs 32 bytes. */
void clock_format_sql(int64_t ms, char *out, size_t len);
/* Turns a DATETIME(3) string from MySQL ("2026-11-24 13:27:09.123") into RFC 3339 UTC; a
 * NULL sql (SQL NULL) gives "". */
void clock_sql_to_rfc3339(const char *sql, char *out, size_t len);

#endif
