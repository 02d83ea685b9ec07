/* tests/fuzz/fuzz_alipay_form.c: Alipay's form decoder (channel/alipay.c
 * alipay_form_parse) and the text RSA2 signs (alipay_sign_content).
 *
 * The target decodes the form itself too, in the simplest way ('&' splits, the first '='
 * separates, '+' is a space, %XX a byte): whenever the module accepts a body, every
 * parameter must read back as that reference decoding says, and the signed text must be
 * what the reference pairs give: sorted by key, empty values, "sign" (and "sign_type"
 * for notifications) left out. */
#include "channel/alipay.h"
#include "tests/fuzz/fuzz.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* The reference decoding of s[0..n) into a new string; NULL if an escape is malformed. */
static char *ref_unescape(const char *s, size_t n)
{
    char *out = malloc(n + 1);
    size_t o = 0;

    if (out == NULL)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '+') {
            out[o++] = ' ';
        } else if (s[i] == '%') {
            if (i + 2 >= n) {
                free(out);
                return NULL;
            }
            if (hexval((unsigned char)s[i + 1]) < 0 || hexval((unsigned char)s[i + 2]) < 0) {
                free(out);
                return NULL;
            }
            out[o++] =
                (char)(hexval((unsigned char)s[i + 1]) * 16 + hexval((unsigned char)s[i + 2]));
            i += 2;
        } else {
            out[o++] = s[i];
        }
    }
    out[o] = '\0';
    return out;
}

struct pair {
    char *key;
    char *value;
};

static int pair_cmp(const void *a, const void *b)
{
    return strcmp(((const struct pair *)a)->key, ((const struct pair *)b)->key);
}

/* The reference decoding of the body's pairs into p (up to ALIPAY_MAX_PARAMS, which the
 * module enforces); returns how many. Every pair must read back from f the same way. */
static size_t check_pairs(const alipay_form *f, const char *body, size_t len, struct pair *p)
{
    size_t i = 0, n = 0;

    while (i < len) {
        const char *seg = body + i, *amp = memchr(seg, '&', len - i), *eq;
        size_t seg_len = amp ? (size_t)(amp - seg) : len - i;
        const char *got;

        i += seg_len + 1;
        if (seg_len == 0)
            continue;
        eq = memchr(seg, '=', seg_len);
        FUZZ_CHECK(eq != NULL && eq != seg); /* the module refuses those */
        FUZZ_CHECK(n < ALIPAY_MAX_PARAMS);
        p[n].key = ref_unescape(seg, (size_t)(eq - seg));
        p[n].value = ref_unescape(eq + 1, seg_len - (size_t)(eq - seg) - 1);
        FUZZ_CHECK(p[n].key != NULL && p[n].value != NULL); /* bad escapes are refused */
        got = alipay_form_get(f, p[n].key);
        if (got == NULL || strcmp(got, p[n].value) != 0) {
            fprintf(stderr, "alipay_form: %s: got \"%s\", want \"%s\"\n", p[n].key,
                    got ? got : "(null)", p[n].value);
            FUZZ_CHECK(0);
        }
        n++;
    }
    return n;
}

/* The signed text, rebuilt from the reference pairs: "k=v" joined by '&', keys in byte
 * order, empty values left out, no sign (nor sign_type for a notification). */
static void check_sign_content(const alipay_form *f, const struct pair *p, size_t n,
                               int notification)
{
    struct pair sorted[ALIPAY_MAX_PARAMS];
    size_t m = 0, cap = 1, o = 0;
    char *content = alipay_sign_content(f, notification), *want;

    FUZZ_CHECK(content != NULL);
    for (size_t i = 0; i < n; i++) {
        if (p[i].value[0] == '\0' || strcmp(p[i].key, "sign") == 0 ||
            (notification && strcmp(p[i].key, "sign_type") == 0))
            continue;
        sorted[m++] = p[i];
        cap += strlen(p[i].key) + strlen(p[i].value) + 2;
    }
    qsort(sorted, m, sizeof(sorted[0]), pair_cmp);
    want = malloc(cap);
    if (want == NULL)
        abort();
    want[0] = '\0';
    for (size_t i = 0; i < m; i++)
        o += (size_t)snprintf(want + o, cap - o, "%s%s=%s", i ? "&" : "", sorted[i].key,
                              sorted[i].value);
    if (strcmp(content, want) != 0) {
        fprintf(stderr, "alipay_form: signed text\n  got  \"%s\"\n  want \"%s\"\n", content, want);
        FUZZ_CHECK(0);
    }
    free(want);
    free(content);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* An exact-size copy with no NUL: the header says the body need not end in one. */
    char *body = malloc(size ? size : 1);
    struct errbuf e = {0};
    alipay_form *f;

    if (body == NULL)
        abort();
    if (size != 0)
        memcpy(body, data, size);
    f = alipay_form_parse(body, size, &e);
    if (f == NULL) {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    } else {
        struct pair *p = calloc(ALIPAY_MAX_PARAMS, sizeof(*p));
        size_t n;

        if (p == NULL)
            abort();
        n = check_pairs(f, body, size, p);
        check_sign_content(f, p, n, 1);
        check_sign_content(f, p, n, 0);
        FUZZ_CHECK(alipay_form_get(f, "") == NULL);
        for (size_t i = 0; i < n; i++) {
            free(p[i].key);
            free(p[i].value);
        }
        free(p);
        alipay_form_free(f);
    }
    free(body);
    return 0;
}
