/* common/jsonx.c: reading typed members of JSON configuration objects (json-c), with
 * errors that name the key ("channels.stripe.api_url: expected ..."), and secrets that may
 * live in files next to the configuration. */
#include "common/jsonx.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/xalloc.h"

char *jsonx_read_file(const char *path, size_t max, struct errbuf *e)
{
    FILE *f = fopen(path, "rb");
    char *buf;
    size_t n;

    if (f == NULL) {
        errbuf_set(e, ERRBUF_PERMANENT, "cannot open %s", path);
        return NULL;
    }
    buf = xcalloc(max + 1, 1);
    n = fread(buf, 1, max + 1, f);
    fclose(f);
    if (n > max) {
        free(buf);
        errbuf_set(e, ERRBUF_PERMANENT, "%s is larger than %zu bytes", path, max);
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

/* Reads a secret file: surrounding whitespace is trimmed. */
static char *read_secret(const char *base_dir, const char *file, struct errbuf *e)
{
    char path[4096];
    char *s, *end;

    if (file[0] == '/')
        snprintf(path, sizeof(path), "%s", file);
    else
        snprintf(path, sizeof(path), "%s/%s", base_dir, file);
    s = jsonx_read_file(path, 65536, e);
    if (s == NULL)
        return NULL;
    end = s + strlen(s);
    while (end > s && (end[-1] == '\n' || end[-1] == '\r' || end[-1] == ' ' || end[-1] == '\t'))
        *--end = '\0';
    if (*s == '\0') {
        free(s);
        errbuf_set(e, ERRBUF_PERMANENT, "%s is empty", path);
        return NULL;
    }
    return s;
}

int jsonx_get_string(json_object *obj, const char *key, const char *where, int required, char **out,
                     struct errbuf *e)
{
    json_object *v;

    *out = NULL;
    if (!json_object_object_get_ex(obj, key, &v) || json_object_is_type(v, json_type_null)) {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: missing", where, key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_string) || json_object_get_string_len(v) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: expected a non-empty string", where, key);
        return -1;
    }
    *out = xstrdup(json_object_get_string(v));
    return 0;
}

int jsonx_get_string_array(json_object *obj, const char *key, const char *where, int required,
                           char ***out, size_t *n, struct errbuf *e)
{
    json_object *v;
    size_t len;

    *out = NULL;
    *n = 0;
    if (!json_object_object_get_ex(obj, key, &v)) {
        if (!required)
            return 0;
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: missing", where, key);
        return -1;
    }
    if (!json_object_is_type(v, json_type_array) || json_object_array_length(v) == 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: expected a non-empty array of strings", where, key);
        return -1;
    }
    len = json_object_array_length(v);
    *out = xcalloc(len, sizeof(char *));
    for (size_t i = 0; i < len; i++) {
        json_object *item = json_object_array_get_idx(v, i);
        if (!json_object_is_type(item, json_type_string) || json_object_get_string_len(item) == 0) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.%s[%zu]: expected a non-empty string", where, key,
                       i);
            return -1;
        }
        (*out)[i] = xstrdup(json_object_get_string(item));
        (*n)++;
    }
    return 0;
}

/* A secret given inline as `key` or in a file as `key_file`. */
int jsonx_get_secret(json_object *obj, const char *key, const char *where, const char *base_dir,
                     int required, char **out, struct errbuf *e)
{
    char fkey[128];
    char *file = NULL;
    struct errbuf sub;

    snprintf(fkey, sizeof(fkey), "%s_file", key);
    if (jsonx_get_string(obj, fkey, where, 0, &file, e) != 0)
        return -1;
    if (file != NULL) {
        *out = read_secret(base_dir, file, &sub);
        free(file);
        if (*out == NULL) {
            errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: %s", where, fkey, sub.msg);
            return -1;
        }
        return 0;
    }
    if (jsonx_get_string(obj, key, where, 0, out, e) != 0)
        return -1;
    if (*out == NULL && required) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s: %s or %s missing", where, key, fkey);
        return -1;
    }
    return 0;
}

int jsonx_check_http_url(const char *u, const char *where, const char *key, struct errbuf *e)
{
    if (strncmp(u, "http://", 7) != 0 && strncmp(u, "https://", 8) != 0) {
        errbuf_set(e, ERRBUF_PERMANENT, "%s.%s: expected an http:// or https:// URL", where, key);
        return -1;
    }
    return 0;
}
