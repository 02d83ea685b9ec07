/* common/failpoint.h: named crash points for fault tests. PAYNOTIFY_FAILPOINT=<name> makes
 * the process kill itself with SIGKILL the first time it reaches failpoint_hit(<name>),
 * exactly like a power cut at that line. Unset in production: then it costs one compare. */
#ifndef PAYNOTIFY_COMMON_FAILPOINT_H
#define PAYNOTIFY_COMMON_FAILPOINT_H

/* Reads PAYNOTIFY_FAILPOINT; call once in main() before threads start. */
void failpoint_init(void);
void failpoint_hit(const char *name);

#endif
