/* Multicast membership of a listening udp socket: joined by the master after bind, before
 * any worker inherits the socket; changed in place when a reload changes only the groups. */
#ifndef BERTH_MCAST_H
#define BERTH_MCAST_H

#include <stddef.h>

#include "config/multicast.h"

/* Set the socket options (SO_REUSEADDR, loop, outgoing interface) and join every group of
 * `m` on the bound socket `fd` of `family`. On failure nothing stays joined; 0 or -errno
 * with the group and the cause in err. */
int mcast_join(int fd, int family, const config_mcast_t *m, char *err, size_t errlen);
/* Go from the memberships of `from` to those of `to`: join the new groups first, then leave
 * the dropped ones, so a failure (ENOBUFS at the kernel's limit) leaves `from` as it was.
 * 0 or -errno with the cause in err. */
int mcast_change(int fd, int family, const config_mcast_t *from, const config_mcast_t *to,
                 char *err, size_t errlen);
/* The groups, "224.3.29.71,224.3.29.72" ("" when none). */
void mcast_describe(const config_mcast_t *m, char *buf, size_t len);

#endif
