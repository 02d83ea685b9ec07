/* tests/fuzz/fuzz_stripe_signature.c: stripe_signature_verify() on a hostile
 * Stripe-Signature header.
 *
 * Input: the header value, a newline, then the body it claims to sign. The header is
 * checked against a fixed secret at a fixed clock. An attacker cannot compute the HMAC,
 * so beyond "no crash, no leak" the target checks the verdict itself: a header made by
 * stripe_signature_make() for this body is accepted, the same header is refused under
 * another secret, outside the tolerance or over a shorter body, and a fuzzed header that
 * passes must fail under another secret. */
#include "channel/stripe.h"
#include "tests/fuzz/fuzz.h"

#define SECRET "whsec_fuzz0123456789abcdefghijklmnopqrstuv"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t hlen = nl ? (size_t)(nl - data) : size;
    char *header = fuzz_cstr(data, hlen);
    size_t body_len = nl ? size - hlen - 1 : 0;
    char *body = fuzz_cstr(nl ? nl + 1 : data + size, body_len);
    char made[256];
    struct errbuf e = {0};
    int rc;

    rc =
        stripe_signature_verify(SECRET, header, body, body_len, FUZZ_NOW_S, STRIPE_TOLERANCE_S, &e);
    FUZZ_CHECK(rc == 0 || rc == -1);
    if (rc != 0) {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    } else {
        /* Accepted: the same header must not pass under another secret. */
        FUZZ_CHECK(stripe_signature_verify(SECRET "x", header, body, body_len, FUZZ_NOW_S,
                                           STRIPE_TOLERANCE_S, &e) == -1);
    }

    /* What Stripe would send for this body: accepted now, refused when stale. */
    stripe_signature_make(SECRET, FUZZ_NOW_S - 10, body, body_len, made, sizeof(made));
    FUZZ_CHECK(stripe_signature_verify(SECRET, made, body, body_len, FUZZ_NOW_S, STRIPE_TOLERANCE_S,
                                       &e) == 0);
    FUZZ_CHECK(stripe_signature_verify(SECRET, made, body, body_len,
                                       FUZZ_NOW_S + STRIPE_TOLERANCE_S + 11, STRIPE_TOLERANCE_S,
                                       &e) == -1);
    FUZZ_CHECK(stripe_signature_verify("whsec_other", made, body, body_len, FUZZ_NOW_S,
                                       STRIPE_TOLERANCE_S, &e) == -1);
    /* A body one byte longer is another message. */
    if (body_len > 0)
        FUZZ_CHECK(stripe_signature_verify(SECRET, made, body, body_len - 1, FUZZ_NOW_S,
                                           STRIPE_TOLERANCE_S, &e) == -1);
    free(header);
    free(body);
    return 0;
}
