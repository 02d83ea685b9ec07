/* tests/unit/check.h: assertions for C tests. Unlike <assert.h> they survive NDEBUG
 * and print both sides. A failed check exits the test process with status 1. */
#ifndef PAYNOTIFY_TESTS_CHECK_H
#define PAYNOTIFY_TESTS_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK(cond)                                                                  \
    do {                                                                             \
        if (!(cond)) {                                                               \
            fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)

#define CHECK_INT_EQ(a, b)                                                                        \
    do {                                                                                          \
        long long va_ = (long long)(a), vb_ = (long long)(b);                                     \
        if (va_ != vb_) {                                                                         \
            fprintf(stderr, "%s:%d: %s == %s failed: %lld != %lld\n", __FILE__, __LINE__, #a, #b, \
                    va_, vb_);                                                                    \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

#define CHECK_STR_EQ(a, b)                                                                        \
    do {                                                                                          \
        const char *sa_ = (a), *sb_ = (b);                                                        \
        if (sa_ == NULL || sb_ == NULL || strcmp(sa_, sb_) != 0) {                                \
            fprintf(stderr, "%s:%d: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__, __LINE__, #a, \
                    #b, sa_ ? sa_ : "(null)", sb_ ? sb_ : "(null)");                              \
            exit(1);                                                                              \
        }                                                                                         \
    } while (0)

#define TEST_PASS() fprintf(stderr, "%s: ok\n", __FILE__)

#endif
