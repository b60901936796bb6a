#include "master/mcast.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

static void ip_text(const config_mcast_addr_t *a, char *buf, size_t len)
{
    buf[0] = '\0';
    inet_ntop(a->sa.sa_family,
              a->sa.sa_family == AF_INET ? (const void *)&a->in.sin_addr
                                         : (const void *)&a->in6.sin6_addr,
              buf, (socklen_t)len);
}

static int level_of(int family)
{
    return family == AF_INET ? IPPROTO_IP : IPPROTO_IPV6;
}

/* MCAST_{JOIN,LEAVE}_{,SOURCE_}GROUP: one code path for both families. */
static int membership(int fd, int family, const config_mcast_t *m, size_t i, int join)
{
    int rc;
    if (m->has_source) {
        struct group_source_req r;
        memset(&r, 0, sizeof r);
        r.gsr_interface = m->ifindex;
        memcpy(&r.gsr_group, &m->groups[i], sizeof m->groups[i]);
        memcpy(&r.gsr_source, &m->source, sizeof m->source);
        rc = setsockopt(fd, level_of(family),
                        join ? MCAST_JOIN_SOURCE_GROUP : MCAST_LEAVE_SOURCE_GROUP, &r, sizeof r);
    } else {
        struct group_req r;
        memset(&r, 0, sizeof r);
        r.gr_interface = m->ifindex;
        memcpy(&r.gr_group, &m->groups[i], sizeof m->groups[i]);
        rc = setsockopt(fd, level_of(family), join ? MCAST_JOIN_GROUP : MCAST_LEAVE_GROUP, &r,
                        sizeof r);
    }
    return rc < 0 ? -errno : 0;
}

static void join_error(const config_mcast_t *m, size_t i, int rc, char *err, size_t errlen)
{
    char g[INET6_ADDRSTRLEN];
    ip_text(&m->groups[i], g, sizeof g);
    snprintf(err, errlen, "cannot join multicast group %s%s%s: %s%s", g,
             m->interface[0] ? " on " : "", m->interface, strerror(-rc),
             rc == -ENOBUFS ? " (the kernel's limit of memberships: "
                              "net.ipv4.igmp_max_memberships)"
                            : "");
}

static int set_options(int fd, int family, const config_mcast_t *m, char *err, size_t errlen)
{
    int one = 1;
    /* Several receivers on one host share the group's port, as the seed's receivers do. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        goto fail;
    /* Each datagram then says where it was sent: the host tells plugins which group. */
    if (family == AF_INET ? setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof one)
                          : setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof one))
        goto fail;
    if (m->loop >= 0) {
        int rc;
        if (family == AF_INET) {
            unsigned char v = (unsigned char)m->loop;
            rc = setsockopt(fd, IPPROTO_IP, IP_MULTICAST_LOOP, &v, sizeof v);
        } else {
            unsigned v = (unsigned)m->loop;
            rc = setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_LOOP, &v, sizeof v);
        }
        if (rc < 0)
            goto fail;
    }
    if (m->ifindex) {
        int rc;
        if (family == AF_INET) {
            struct ip_mreqn r;
            memset(&r, 0, sizeof r);
            r.imr_ifindex = (int)m->ifindex;
            rc = setsockopt(fd, IPPROTO_IP, IP_MULTICAST_IF, &r, sizeof r);
        } else {
            unsigned v = m->ifindex;
            rc = setsockopt(fd, IPPROTO_IPV6, IPV6_MULTICAST_IF, &v, sizeof v);
        }
        if (rc < 0)
            goto fail;
    }
    return 0;
fail:;
    int e = errno;
    snprintf(err, errlen, "multicast socket options: %s", strerror(e));
    return -e;
}

int mcast_join(int fd, int family, const config_mcast_t *m, char *err, size_t errlen)
{
    int rc = set_options(fd, family, m, err, errlen);
    if (rc)
        return rc;
    for (size_t i = 0; i < m->ngroups; i++) {
        if ((rc = membership(fd, family, m, i, 1)) != 0) {
            join_error(m, i, rc, err, errlen);
            while (i-- > 0)
                membership(fd, family, m, i, 0);
            return rc;
        }
    }
    return 0;
}

static int has_group(const config_mcast_t *m, const config_mcast_addr_t *g)
{
    for (size_t i = 0; i < m->ngroups; i++)
        if (config_mcast_same_ip(&m->groups[i], g))
            return 1;
    return 0;
}

int mcast_change(int fd, int family, const config_mcast_t *from, const config_mcast_t *to,
                 char *err, size_t errlen)
{
    int rc;
    /* Another interface or source: every membership is another one. */
    int all = from->ifindex != to->ifindex || from->has_source != to->has_source ||
              (to->has_source && !config_mcast_same_ip(&from->source, &to->source));
    if (all) {
        for (size_t i = 0; i < from->ngroups; i++)
            membership(fd, family, from, i, 0);
        if ((rc = mcast_join(fd, family, to, err, errlen)) != 0) {
            char ignored[256];
            mcast_join(fd, family, from, ignored, sizeof ignored);
        }
        return rc;
    }
    if ((rc = set_options(fd, family, to, err, errlen)) != 0)
        return rc;
    for (size_t i = 0; i < to->ngroups; i++) {
        if (has_group(from, &to->groups[i]))
            continue;
        if ((rc = membership(fd, family, to, i, 1)) != 0) {
            join_error(to, i, rc, err, errlen);
            while (i-- > 0)
                if (!has_group(from, &to->groups[i]))
                    membership(fd, family, to, i, 0);
            return rc;
        }
    }
    for (size_t i = 0; i < from->ngroups; i++)
        if (!has_group(to, &from->groups[i]))
            membership(fd, family, from, i, 0);
    return 0;
}

void mcast_describe(const config_mcast_t *m, char *buf, size_t len)
{
    size_t used = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < m->ngroups && used < len; i++) {
        char g[INET6_ADDRSTRLEN];
        ip_text(&m->groups[i], g, sizeof g);
        int n = snprintf(buf + used, len - used, "%s%s", i ? "," : "", g);
        if (n < 0)
            break;
        used += (size_t)n;
    }
}
