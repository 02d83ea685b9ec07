/* tests/fuzz/fuzz.h: what every fuzz target shares: the libFuzzer entry point's
 * prototype, FUZZ_CHECK for the properties a target asserts, and copies of the input
 * with no slack behind them so ASan sees any read past the end.
 *
 * A target is tests/fuzz/fuzz_<name>.c defining LLVMFuzzerTestOneInput() plus seeds in
 * tests/fuzz/corpus/<name>/. It is built twice: against libFuzzer (PAYNOTIFY_FUZZ=ON,
 * clang) and against replay.c, which runs the corpus in every normal build (ctest
 * fuzz_replay.<name>, label unit). Targets keep no state between inputs (a channel's
 * config, read-only, is loaded once: channel_target.h): bad input must make the code
 * under test return an error, never abort, leak or touch memory it does not own.
 * FUZZ_CHECK aborts, which is how a target reports a broken property. */
#ifndef PAYNOTIFY_TESTS_FUZZ_FUZZ_H
#define PAYNOTIFY_TESTS_FUZZ_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The clock every target passes to code that takes "now" (2023-11-14T22:13:20Z), so an
 * input behaves the same on every run. */
#define FUZZ_NOW_S INT64_C(1700000000)

#define FUZZ_CHECK(cond)                                                                  \
    do {                                                                                  \
        if (!(cond)) {                                                                    \
            fprintf(stderr, "%s:%d: FUZZ_CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
            abort();                                                                      \
        }                                                                                 \
    } while (0)

/* The input as a C string: size bytes plus a NUL, nothing more (caller frees with
 * free()). An embedded NUL ends the string early, as it would for the real caller. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    char *s = malloc(size + 1);

    if (s == NULL)
        abort();
    if (size != 0)
        memcpy(s, data, size);
    s[size] = '\0';
    return s;
}

/* 1 if s, of cap bytes, holds a NUL: a fixed-size field a parser filled is a string. */
static inline int fuzz_terminated(const char *s, size_t cap)
{
    return memchr(s, '\0', cap) != NULL;
}

#endif
