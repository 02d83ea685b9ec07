/* common/netcheck.h: which socket addresses an outbound webhook must not reach (loopback,
 * private, link-local incl. cloud metadata, CGNAT, multicast, reserved, and the IPv6 forms
 * that embed such an IPv4 address). Pure: no I/O, no DNS; callers pass the address they
 * are about to connect to, after resolution. */
#ifndef PAYNOTIFY_COMMON_NETCHECK_H
#define PAYNOTIFY_COMMON_NETCHECK_H

#include <stddef.h>
#include <sys/socket.h>

/* Longest text netcheck_classify() writes into addr, NUL included
 * (INET6_ADDRSTRLEN, or "address family N"). */
#define NETCHECK_ADDR_MAX 46
/* Longest text it writes into range, NUL included. */
#define NETCHECK_RANGE_MAX 64

/* sa borrowed (len bytes; any alignment). Fills addr with the address as text and, when
 * blocked, range with the blocked range's name ("loopback", "IPv4-mapped private
 * (10.0.0.0/8)", "link-local (cloud metadata)", ...); range is "" when allowed. Either
 * buffer may be NULL. Returns 1 when blocked, 0 when allowed. Anything that is not a
 * complete AF_INET or AF_INET6 address is blocked. */
int netcheck_classify(const struct sockaddr *sa, socklen_t len, char *addr, size_t addr_len,
                      char *range, size_t range_len);

/* Same verdict; why (may be NULL) gets "127.0.0.1 is loopback" when blocked, "" when
 * allowed. */
int netcheck_blocked(const struct sockaddr *sa, socklen_t len, char *why, size_t why_len);

#endif
