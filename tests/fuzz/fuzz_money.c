/* tests/fuzz/fuzz_money.c: provider amounts and currency codes (common/money.c).
 *
 * Input: one byte picking the number of fraction digits (0..3), then the text. An
 * accepted amount must be exactly what the digits say: the target rebuilds the text
 * from the integer and compares, so a silent overflow or a dropped digit is caught. */
#include <ctype.h>

#include "common/money.h"
#include "tests/fuzz/fuzz.h"

/* s without leading zeros ("" for all zeros). */
static const char *skip_zeros(const char *s, const char *end)
{
    while (s < end && *s == '0')
        s++;
    return s;
}

/* Checks v against "I[.F]" with decimals fraction digits. */
static void check_decimal(const char *s, int decimals, int64_t v)
{
    const char *dot = strchr(s, '.');
    const char *int_end = dot ? dot : s + strlen(s);
    const char *frac = dot ? dot + 1 : int_end;
    size_t nfrac = strlen(frac);
    char *want = malloc(strlen(s) + 8), got[32];
    const char *digits;

    if (want == NULL)
        abort();
    FUZZ_CHECK(v >= 0 && (int)nfrac <= decimals);
    /* The integer and fraction digits side by side, padded to decimals. */
    snprintf(want, strlen(s) + 8, "%.*s%s%.*s", (int)(int_end - s), s, frac, decimals - (int)nfrac,
             "000");
    digits = skip_zeros(want, want + strlen(want));
    snprintf(got, sizeof(got), "%lld", (long long)v);
    if (strcmp(*digits ? digits : "0", got) != 0) {
        fprintf(stderr, "money: \"%s\" with %d decimals gave %s\n", s, decimals, got);
        FUZZ_CHECK(0);
    }
    free(want);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct errbuf e = {0};
    char *s;
    int decimals;
    int64_t v = -7;
    char cur[4];

    if (size < 1)
        return 0;
    decimals = data[0] & 3;
    s = fuzz_cstr(data + 1, size - 1);

    if (money_parse_decimal(s, decimals, &v, &e) == 0)
        check_decimal(s, decimals, v);
    else
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');

    e = (struct errbuf){0};
    if (money_parse_minor(s, &v, &e) == 0) {
        char got[32];

        snprintf(got, sizeof(got), "%lld", (long long)v);
        FUZZ_CHECK(
            v >= 0 &&
            strcmp(*skip_zeros(s, s + strlen(s)) ? skip_zeros(s, s + strlen(s)) : "0", got) == 0);
    } else {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    }

    if (money_currency_norm(s, cur) == 0) {
        FUZZ_CHECK(strlen(cur) == 3);
        for (int i = 0; i < 3; i++)
            FUZZ_CHECK(cur[i] >= 'A' && cur[i] <= 'Z' && toupper((unsigned char)s[i]) == cur[i]);
    }
    free(s);
    return 0;
}
