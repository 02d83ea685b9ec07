/* common/money.h: amounts as int64 minor units and currency codes. No floating point. */
#ifndef PAYNOTIFY_COMMON_MONEY_H
#define PAYNOTIFY_COMMON_MONEY_H

#include <stdint.h>

#include "common/errbuf.h"

/* Parses a decimal major-unit string ("12.50", "0.01", "100") into minor units with
 * `decimals` fraction digits (2 for CNY/USD). Rejects signs, exponents, spaces, more
 * fraction digits than allowed, empty parts and overflow. */
int money_parse_decimal(const char *s, int decimals, int64_t *out, struct errbuf *e);
/* Parses an integer minor-unit string ("1250"); rejects anything else. */
int money_parse_minor(const char *s, int64_t *out, struct errbuf *e);
/* Normalises an ISO 4217 code to upper case into out[4]; -1 unless 3 ASCII letters. */
int money_currency_norm(const char *in, char out[4]);

#endif
