/*
 * socks5 UDP ASSOCIATE (RFC 1928 section 7): one association per control connection, on the
 * host's datagram sockets (host->dgram_*): one faces the client (udp_address), one the
 * destinations (a dual-stack wildcard socket, so a client on IPv4 reaches IPv6 and back).
 */
#ifndef BERTH_SOCKS5_UDP_H
#define BERTH_SOCKS5_UDP_H

#include <sys/socket.h>

#include "berth/handler.h"
#include "socks5_config.h"
#include "socks5_proto.h"

typedef struct socks5_udp socks5_udp_t;

/* Open the association the request `r` on `conn` asks for. The address for the success
 * reply goes into *bnd. NULL (with the reply code to fail with in *rep) when it cannot be
 * opened. The host closes its sockets when conn ends; socks5_udp_end frees the rest. */
socks5_udp_t *socks5_udp_start(const berth_host_t *host, berth_conn_t *conn,
                               const socks5_config_t *cfg, const socks5_request_t *r,
                               struct sockaddr_storage *bnd, uint8_t *rep);
/* Why it ended on its own (the idle timeout), or NULL. */
const char *socks5_udp_outcome(const socks5_udp_t *u);
/* From finish(): log the association's counters and free it. */
void socks5_udp_end(socks5_udp_t *u);

#endif
