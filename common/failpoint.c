/* common/failpoint.c: SIGKILL at a named point, for crash-consistency tests. */
#include "common/failpoint.h"

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Written once by failpoint_init() before threads start. */
static const char *armed;

void failpoint_init(void)
{
    const char *v = getenv("PAYNOTIFY_FAILPOINT");
    armed = (v != NULL && *v != '\0') ? v : NULL;
}

void failpoint_hit(const char *name)
{
    if (armed != NULL && strcmp(armed, name) == 0) {
        static const char msg[] = "{\"level\":\"error\",\"event\":\"failpoint_kill\"}\n";
        ssize_t rc = write(STDERR_FILENO, msg, sizeof(msg) - 1);
        (void)rc;
        kill(getpid(), SIGKILL);
    }
}
