/* common/jsonx.h: typed access to JSON configuration objects (json-c) with errors naming
 * "<where>.<key>", and secrets given inline (`key`) or in a file (`key_file`, relative to
 * base_dir). Every char * returned is owned by the caller (free()); on error *out may
 * already hold partial results the caller frees the same way. */
#ifndef PAYNOTIFY_COMMON_JSONX_H
#define PAYNOTIFY_COMMON_JSONX_H

#include <json-c/json.h>
#include <stddef.h>

#include "common/errbuf.h"

/* Whole file, NUL-terminated; NULL if missing or larger than max. */
char *jsonx_read_file(const char *path, size_t max, struct errbuf *e);
/* Non-empty string member; absent (or null) is an error only when required. */
int jsonx_get_string(json_object *obj, const char *key, const char *where, int required, char **out,
                     struct errbuf *e);
/* Non-empty array of non-empty strings. */
int jsonx_get_string_array(json_object *obj, const char *key, const char *where, int required,
                           char ***out, size_t *n, struct errbuf *e);
/* `key` inline or `key_file` (surrounding whitespace trimmed). */
int jsonx_get_secret(json_object *obj, const char *key, const char *where, const char *base_dir,
                     int required, char **out, struct errbuf *e);
/* 0 if u starts with http:// or https://. */
int jsonx_check_http_url(const char *u, const char *where, const char *key, struct errbuf *e);

#endif
