/* tests/integration/vhost.h: a RabbitMQ vhost of the test's own on the shared test broker
 * (scripts/lib/stack.sh ctl), so that its queues, and their deletion, touch nobody else's.
 * Quorum queues are never deleted right after a broker restart: RabbitMQ 3.10's
 * at-least-once dead-letter worker can crash when its queue is deleted just as it becomes
 * leader, and enough such crashes take down its supervisor for the whole node. */
#ifndef PAYNOTIFY_TESTS_INTEGRATION_VHOST_H
#define PAYNOTIFY_TESTS_INTEGRATION_VHOST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Returns "amqp://.../<vhost>" for base_url (a static buffer), creating the vhost; exits
 * the test with a message if it cannot. */
static inline const char *test_vhost_url(const char *base_url, const char *name)
{
    static char url[512];
    char vhost[96], cmd[4096];
    const char *sh = getenv("PAYNOTIFY_STACK_SH"), *src = getenv("PAYNOTIFY_SOURCE_DIR");
    const char *dir = getenv("STACK_DIR");
    char shbuf[512];
    size_t n = strlen(base_url);

    if (sh == NULL || sh[0] == '\0') {
        if (src == NULL || dir == NULL) {
            fprintf(stderr,
                    "%s: needs STACK_DIR and PAYNOTIFY_STACK_SH or PAYNOTIFY_SOURCE_DIR "
                    "(exported by scripts/test)\n",
                    name);
            exit(1);
        }
        snprintf(shbuf, sizeof(shbuf), "%s/scripts/lib/stack.sh", src);
        sh = shbuf;
    }
    if (dir == NULL) {
        fprintf(stderr, "%s: needs STACK_DIR (exported by scripts/test)\n", name);
        exit(1);
    }
    snprintf(vhost, sizeof(vhost), "%s-%ld-%ld", name, (long)getpid(), (long)time(NULL));
    snprintf(cmd, sizeof(cmd),
             "'%s' ctl '%s' add_vhost '%s' >/dev/null && '%s' ctl '%s' set_permissions -p '%s' "
             "guest '.*' '.*' '.*' >/dev/null",
             sh, dir, vhost, sh, dir, vhost);
    if (system(cmd) != 0) {
        fprintf(stderr, "%s: could not create vhost %s\n", name, vhost);
        exit(1);
    }
    while (n > 0 && base_url[n - 1] == '/')
        n--;
    snprintf(url, sizeof(url), "%.*s/%s", (int)n, base_url, vhost);
    return url;
}

#endif
