/* common/log.h: JSON-lines logging to stderr, one write() per line.
 * Only cmd/, receiver/ and worker/ log; common/, queue/ and store/ return errbufs. */
#ifndef PAYNOTIFY_COMMON_LOG_H
#define PAYNOTIFY_COMMON_LOG_H

enum log_level {
    LOG_LEVEL_DEBUG = 0,
    LOG_LEVEL_INFO,
    LOG_LEVEL_WARN,
    LOG_LEVEL_ERROR,
};

/* Set once in main() before threads start; component borrowed (a string literal). */
void log_init(const char *component, enum log_level min);
/* Parses "debug|info|warn|error"; -1 if unknown. */
int log_level_parse(const char *s);
int log_enabled(enum log_level lvl);
/* Varargs: key, value string pairs ending with NULL. A NULL value skips the pair's
 * value as JSON null. Keys and values are borrowed and JSON-escaped. */
void log_write(enum log_level lvl, const char *event, ...);

/* The level is checked before any argument is evaluated. */
#define LOG_AT(lvl, event, ...)                                    \
    do {                                                           \
        if (log_enabled(lvl))                                      \
            log_write(lvl, event, ##__VA_ARGS__, (const char *)0); \
    } while (0)
#define LOG_DEBUG(event, ...) LOG_AT(LOG_LEVEL_DEBUG, event, ##__VA_ARGS__)
#define LOG_INFO(event, ...) LOG_AT(LOG_LEVEL_INFO, event, ##__VA_ARGS__)
#define LOG_WARN(event, ...) LOG_AT(LOG_LEVEL_WARN, event, ##__VA_ARGS__)
#define LOG_ERROR(event, ...) LOG_AT(LOG_LEVEL_ERROR, event, ##__VA_ARGS__)

#endif
