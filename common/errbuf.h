/* common/errbuf.h: the error record every fallible call fills (kind + message).
 * Functions return 0 on success, -1 on error with *e filled; positive values are
 * non-error outcomes documented per function. */
#ifndef PAYNOTIFY_COMMON_ERRBUF_H
#define PAYNOTIFY_COMMON_ERRBUF_H

enum errbuf_kind {
    ERRBUF_NONE = 0,
    ERRBUF_TRANSIENT, /* peer down, timeout: retry later */
    ERRBUF_PERMANENT, /* forged, malformed, mismatch: never retry */
};

struct errbuf {
    enum errbuf_kind kind;
    char msg[256];
};

/* e may be NULL (the error is then dropped). */
void errbuf_set(struct errbuf *e, enum errbuf_kind kind, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void errbuf_clear(struct errbuf *e);

#endif
