/* common/url.h: parsing of connection URLs (scheme://user:pass@host:port/path) and
 * durations ("15s", "1m", "250ms"). Pure. */
#ifndef PAYNOTIFY_COMMON_URL_H
#define PAYNOTIFY_COMMON_URL_H

#include <stddef.h>
#include <stdint.h>

#include "common/errbuf.h"

struct url {
    char scheme[16];
    char user[128];
    char password[128];
    char host[256];
    int port;       /* 0 when absent */
    char path[256]; /* without the leading '/' */
};

/* Percent-decoding is applied to user and password. */
int url_parse(const char *s, struct url *u, struct errbuf *e);
/* Splits "host:port" (port required, 0..65535). host must hold 256 bytes. */
int url_split_hostport(const char *s, char *host, int *port, struct errbuf *e);
/* "250ms", "15s", "1m", "2h" (one unit, positive integer) into milliseconds. */
int duration_parse_ms(const char *s, int64_t *out, struct errbuf *e);
/* Compact form of a duration: "15s", "1m", "2h", "1500ms". */
void duration_format(int64_t ms, char *buf, size_t len);

#endif
