/* common/errbuf.c: filling struct errbuf. */
#include "common/errbuf.h"

#include <stdarg.h>
#include <stdio.h>

void errbuf_set(struct errbuf *e, enum errbuf_kind kind, const char *fmt, ...)
{
    va_list ap;

    if (e == NULL)
        return;
    e->kind = kind;
    va_start(ap, fmt);
    vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
    va_end(ap);
}

void errbuf_clear(struct errbuf *e)
{
    if (e == NULL)
        return;
    e->kind = ERRBUF_NONE;
    e->msg[0] = '\0';
}
