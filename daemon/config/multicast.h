/*
 * The multicast settings of a udp listener (multicast, multicast_interface, multicast_source,
 * multicast_loop): plain values, no pointers, so a listening socket can keep a copy of what
 * it has joined and a reload can compare it with what the new config asks for.
 */
#ifndef BERTH_CONFIG_MULTICAST_H
#define BERTH_CONFIG_MULTICAST_H

#include <net/if.h>
#include <netinet/in.h>
#include <stddef.h>

/* Groups one listener may join: Linux's default net.ipv4.igmp_max_memberships. */
#define CONFIG_MCAST_MAX 20

typedef union config_mcast_addr {
    struct sockaddr sa;
    struct sockaddr_in in;
    struct sockaddr_in6 in6;
} config_mcast_addr_t;

typedef struct config_mcast {
    size_t ngroups; /* 0: not a multicast listener */
    config_mcast_addr_t groups[CONFIG_MCAST_MAX];
    char interface[IF_NAMESIZE + INET6_ADDRSTRLEN]; /* as written; "" = the kernel's choice */
    unsigned ifindex;                               /* resolved from it; 0 = the kernel's */
    int has_source;                                 /* source-specific (SSM) */
    config_mcast_addr_t source;
    int loop; /* -1: the kernel's default; 0 or 1 */
} config_mcast_t;

/* Do two addresses name the same IP (the port is not compared)? */
int config_mcast_same_ip(const config_mcast_addr_t *a, const config_mcast_addr_t *b);

#endif
