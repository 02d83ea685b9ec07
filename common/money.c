/* common/money.c: exact parsing of provider amounts into integer minor units. */
#include "common/money.h"

#include <ctype.h>
#include <string.h>

static int add_digit(int64_t *v, int d)
{
    if (*v > (INT64_MAX - d) / 10)
        return -1;
    *v = *v * 10 + d;
    return 0;
}

int money_parse_decimal(const char *s, int decimals, int64_t *out, struct errbuf *e)
{
    int64_t v = 0;
    const char *p = s;
    int ndig = 0, nfrac = 0;

    for (; *p >= '0' && *p <= '9'; p++, ndig++)
        if (add_digit(&v, *p - '0') != 0)
            goto bad;
    if (ndig == 0)
        goto bad;
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++, nfrac++)
            if (nfrac >= decimals || add_digit(&v, *p - '0') != 0)
                goto bad;
        if (nfrac == 0)
            goto bad;
    }
    if (*p != '\0')
        goto bad;
    for (; nfrac < decimals; nfrac++)
        if (add_digit(&v, 0) != 0)
            goto bad;
    *out = v;
    return 0;
bad:
    errbuf_set(e, ERRBUF_PERMANENT, "malformed amount \"%.40s\"", s);
    return -1;
}

int money_parse_minor(const char *s, int64_t *out, struct errbuf *e)
{
    int64_t v = 0;
    const char *p = s;

    if (*p == '\0')
        goto bad;
    for (; *p; p++)
        if (*p < '0' || *p > '9' || add_digit(&v, *p - '0') != 0)
            goto bad;
    *out = v;
    return 0;
bad:
    errbuf_set(e, ERRBUF_PERMANENT, "malformed amount \"%.40s\"", s);
    return -1;
}

int money_currency_norm(const char *in, char out[4])
{
    if (in == NULL || strlen(in) != 3)
        return -1;
    for (int i = 0; i < 3; i++) {
        if (!isalpha((unsigned char)in[i]))
            return -1;
        out[i] = (char)toupper((unsigned char)in[i]);
    }
    out[3] = '\0';
    return 0;
}
