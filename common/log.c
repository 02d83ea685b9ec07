/* common/log.c: JSON-lines log writer. Each line is built in a stack buffer and
 * written with a single write(2) so lines from several threads never interleave. */
#include "common/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

/* Written once in main() before any thread starts, read-only afterwards. */
static const char *log_component = "paynotify";
static enum log_level log_min = LOG_LEVEL_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_init(const char *component, enum log_level min)
{
    log_component = component;
    log_min = min;
}

int log_level_parse(const char *s)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(s, level_names[i]) == 0)
            return i;
    return -1;
}

int log_enabled(enum log_level lvl)
{
    return lvl >= log_min;
}

struct line {
    char buf[4096];
    size_t len;
};

static void put_raw(struct line *l, const char *s, size_t n)
{
    size_t room = sizeof(l->buf) - 2 - l->len; /* keep space for "}\n" */
    if (n > room)
        n = room;
    memcpy(l->buf + l->len, s, n);
    l->len += n;
}

static void put_str(struct line *l, const char *s)
{
    char esc[8];

    put_raw(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            put_raw(l, esc, 2);
        } else if (*p < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", *p);
            put_raw(l, esc, 6);
        } else {
            put_raw(l, (const char *)p, 1);
        }
    }
    put_raw(l, "\"", 1);
}

void log_write(enum log_level lvl, const char *event, ...)
{
    struct line l;
    struct timeval tv;
    struct tm tm;
    char ts[48];
    va_list ap;

    l.len = 0;
    gettimeofday(&tv, NULL);
    gmtime_r(&tv.tv_sec, &tm);
    snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
             tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(tv.tv_usec / 1000));
    put_raw(&l, "{\"ts\":", 6);
    put_str(&l, ts);
    put_raw(&l, ",\"level\":", 9);
    put_str(&l, level_names[lvl]);
    put_raw(&l, ",\"component\":", 13);
    put_str(&l, log_component);
    put_raw(&l, ",\"event\":", 9);
    put_str(&l, event);
    va_start(ap, event);
    for (;;) {
        const char *k = va_arg(ap, const char *);
        const char *v;
        if (k == NULL)
            break;
        v = va_arg(ap, const char *);
        put_raw(&l, ",", 1);
        put_str(&l, k);
        put_raw(&l, ":", 1);
        if (v == NULL)
            put_raw(&l, "null", 4);
        else
            put_str(&l, v);
    }
    va_end(ap);
    l.buf[l.len++] = '}';
    l.buf[l.len++] = '\n';
    /* A short write to stderr is not worth retrying: logging must never block work. */
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc;
}
