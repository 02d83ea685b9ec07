/* common/xalloc.h: allocation that cannot fail. Running out of memory aborts (as redis'
 * zmalloc does): a payment service that cannot allocate must not limp on. */
#ifndef PAYNOTIFY_COMMON_XALLOC_H
#define PAYNOTIFY_COMMON_XALLOC_H

#include <stddef.h>

/* Caller frees with free(). xmalloc(0) and xcalloc(0, ...) return a unique pointer. */
void *xmalloc(size_t n);
void *xcalloc(size_t n, size_t size);
/* A copy of s; NULL is copied as "". */
char *xstrdup(const char *s);

#endif
