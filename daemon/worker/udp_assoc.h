/* host->dgram_*: UDP sockets bound for a conn (SOCKS5 UDP ASSOCIATE; see udp_assoc.c). */
#ifndef BERTH_UDP_ASSOC_H
#define BERTH_UDP_ASSOC_H

#include <stdint.h>

#include "worker/conn.h"

int udp_assoc_open(berth_conn_t *c, const struct sockaddr *addr, uint16_t port_last,
                   uint32_t max_queued, berth_dgram_cb cb, void *arg, berth_dgram_t **out);
const struct sockaddr *udp_assoc_local_addr(const berth_dgram_t *d, socklen_t *len);
int udp_assoc_send(berth_dgram_t *d, const char *host, uint16_t port, const void *data, size_t len,
                   berth_connect_allow_cb allow, void *arg);
void udp_assoc_close(berth_dgram_t *d);

#endif
