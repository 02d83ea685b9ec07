/* tests/fuzz/fuzz_url.c: connection URLs, host:port and durations (common/url.c). The
 * text comes from the environment and config, and notify URLs from businesses.
 *
 * A parsed URL's fields must be strings within their arrays and a port in range; an
 * accepted duration must survive duration_format() -> duration_parse_ms(). */
#include "common/url.h"
#include "tests/fuzz/fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *s = fuzz_cstr(data, size);
    struct url u;
    struct errbuf e = {0};
    char host[256];
    int port = -1;
    int64_t ms = 0, again = 0;
    char text[32];

    if (url_parse(s, &u, &e) == 0) {
        FUZZ_CHECK(fuzz_terminated(u.scheme, sizeof(u.scheme)) && u.scheme[0] != '\0');
        FUZZ_CHECK(fuzz_terminated(u.user, sizeof(u.user)));
        FUZZ_CHECK(fuzz_terminated(u.password, sizeof(u.password)));
        FUZZ_CHECK(fuzz_terminated(u.host, sizeof(u.host)) && u.host[0] != '\0');
        FUZZ_CHECK(fuzz_terminated(u.path, sizeof(u.path)));
        FUZZ_CHECK(u.port >= 0 && u.port <= 65535);
    } else {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    }

    e = (struct errbuf){0};
    if (url_split_hostport(s, host, &port, &e) == 0) {
        FUZZ_CHECK(fuzz_terminated(host, sizeof(host)) && host[0] != '\0');
        FUZZ_CHECK(port >= 0 && port <= 65535);
    } else {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    }

    e = (struct errbuf){0};
    if (duration_parse_ms(s, &ms, &e) == 0) {
        FUZZ_CHECK(ms > 0);
        duration_format(ms, text, sizeof(text));
        FUZZ_CHECK(duration_parse_ms(text, &again, &e) == 0 && again == ms);
    } else {
        FUZZ_CHECK(e.kind == ERRBUF_PERMANENT && e.msg[0] != '\0');
    }
    free(s);
    return 0;
}
