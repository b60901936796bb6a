#include "worker/dgram_dest.h"

#include <netinet/in.h>
#include <string.h>

ssize_t dgram_recv(int fd, void *buf, size_t len, struct sockaddr_storage *peer, socklen_t *plen,
                   const struct sockaddr_storage *bound, struct sockaddr_storage *group,
                   socklen_t *glen)
{
    in_port_t port = bound->ss_family == AF_INET6
                         ? ((const struct sockaddr_in6 *)(const void *)bound)->sin6_port
                         : ((const struct sockaddr_in *)(const void *)bound)->sin_port;
    union {
        char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
        struct cmsghdr align;
    } ctl;
    struct iovec iov = {.iov_base = buf, .iov_len = len};
    struct msghdr msg = {.msg_name = peer,
                         .msg_namelen = *plen,
                         .msg_iov = &iov,
                         .msg_iovlen = 1,
                         .msg_control = ctl.buf,
                         .msg_controllen = sizeof ctl.buf};
    *glen = 0;
    ssize_t n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_TRUNC);
    if (n < 0)
        return n;
    *plen = msg.msg_namelen;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level == IPPROTO_IP && c->cmsg_type == IP_PKTINFO) {
            struct in_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            if (!IN_MULTICAST(ntohl(pi.ipi_addr.s_addr)))
                continue;
            struct sockaddr_in g = {
                .sin_family = AF_INET, .sin_port = port, .sin_addr = pi.ipi_addr};
            memcpy(group, &g, sizeof g);
            *glen = sizeof g;
        } else if (c->cmsg_level == IPPROTO_IPV6 && c->cmsg_type == IPV6_PKTINFO) {
            struct in6_pktinfo pi;
            memcpy(&pi, CMSG_DATA(c), sizeof pi);
            if (!IN6_IS_ADDR_MULTICAST(&pi.ipi6_addr))
                continue;
            struct sockaddr_in6 g = {.sin6_family = AF_INET6, .sin6_port = port};
            g.sin6_addr = pi.ipi6_addr;
            if (IN6_IS_ADDR_MC_LINKLOCAL(&pi.ipi6_addr))
                g.sin6_scope_id = (uint32_t)pi.ipi6_ifindex;
            memcpy(group, &g, sizeof g);
            *glen = sizeof g;
        }
    }
    return n;
}
