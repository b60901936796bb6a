/* Where a datagram was sent: on a multicast listener the master asks for IP_PKTINFO /
 * IPV6_RECVPKTINFO, so each datagram says whether it came for one of the groups. */
#ifndef BERTH_DGRAM_DEST_H
#define BERTH_DGRAM_DEST_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/types.h>

/* recvfrom(fd, buf, len, MSG_DONTWAIT | MSG_TRUNC, peer, plen), and in *group the multicast
 * group the datagram was sent to, with the port of `bound` (the listener's address), when the
 * socket reports it and the destination was a group; else *glen is 0. Returns as recvfrom
 * (errno set). */
ssize_t dgram_recv(int fd, void *buf, size_t len, struct sockaddr_storage *peer, socklen_t *plen,
                   const struct sockaddr_storage *bound, struct sockaddr_storage *group,
                   socklen_t *glen);

#endif
