/*
 * The socks5 listener options, checked and built into an immutable struct before the loop
 * runs; connections only ever read it.
 *
 *   auth = none | password | certificate   default none; certificate: the verified TLS
 *                                 client certificate is the user (needs a TLS listener with
 *                                 tls_verify_client = require; checked in listener_open)
 *   users = FILE                  name:crypt-hash lines; required by auth = password
 *   allow_dest = CIDR[:port], ... destinations a CONNECT may reach; default: none at all
 *   deny_dest = CIDR[:port], ...  carved out of allow_dest
 *   handshake_timeout = 10s       from accept until the request is read
 *   connect_timeout = 10s         from the request until the destination answers
 *   relay_idle_timeout = 5m       no traffic either way for this long ends a relay; 0: never
 *   auth_fail_limit = 5           wrong passwords per source and window before throttling; 0: off
 *   auth_fail_window = 1m         the window they are counted in
 *   auth_fail_block = 1m          how long a source is refused after 2 x auth_fail_limit
 *   udp = on | off                UDP ASSOCIATE (RFC 1928 section 7); default off
 *   udp_address = [ADDR][:PORT[-PORT]]  where the client-facing relay socket binds; default
 *                                 the address the client connected to, an ephemeral port
 *   udp_idle_timeout = 2m         no datagram either way for this long ends an association
 *   udp_associations = 64         associations at once per listener (in each worker)
 *   udp_queue = 16                datagrams per association waiting for their name to resolve
 *   bind = on | off               BIND (RFC 1928 section 6); default off
 *   bind_timeout = 1m             how long a BIND waits for its one incoming connection
 *   bind_max = 16                 BINDs at once per listener (in each worker), waiting or relaying
 */
#ifndef BERTH_SOCKS5_CONFIG_H
#define BERTH_SOCKS5_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "berth/handler.h"
#include "berth/cidr.h"
#include "socks5_throttle.h"
#include "socks5_users.h"

typedef struct socks5_config {
    uint8_t method;               /* SOCKS5_METHOD_NONE or SOCKS5_METHOD_PASSWORD */
    uint8_t certificate;          /* auth = certificate (method is then NONE) */
    socks5_users_t *users;        /* non-NULL exactly when method is PASSWORD */
    berth_cidr_list_t allow_dest; /* empty: nothing allowed */
    berth_cidr_list_t deny_dest;
    uint64_t handshake_ms;
    uint64_t connect_ms;
    uint64_t idle_ms;
    unsigned fail_limit; /* 0: no throttling */
    uint64_t fail_window_ms;
    uint64_t fail_block_ms;
    /* Failed passwords per source (auth = password with fail_limit > 0, else NULL). The one
     * mutable part: a listener's connections share it, on the one loop of their worker. */
    socks5_throttle_t *throttle;
    /* UDP ASSOCIATE and BIND */
    uint8_t udp;
    uint8_t bind;
    struct sockaddr_storage udp_addr; /* ss_family 0: the address the client connected to */
    uint16_t udp_port, udp_port_last; /* udp_port_last > udp_port: a range */
    uint64_t udp_idle_ms;
    unsigned udp_max; /* associations at once */
    unsigned udp_queue;
    uint64_t bind_ms;
    /* Associations open now (udp = on, else NULL): mutable like throttle, one loop. */
    unsigned *udp_active;
    /* BIND limits (bind = on, else live NULL): BINDs at once, and the refused peers' log
     * line at most once a second, with the count it kept quiet. Mutable, one loop. */
    unsigned bind_max;
    struct socks5_bind_live {
        unsigned active;
        uint64_t refused_log_ms;
        uint64_t refused_quiet;
    } * bind_live;
    /* The listener's counters on /metrics (socks5_metrics.h), NULL when not published: set
     * and freed by listener_open/close, not by socks5_config_free. */
    struct socks5_metrics *metrics;
} socks5_config_t;

/* The declared options (socks5_options), as the host parses them for each listener. */
enum { SOCKS5_AUTH_NONE = 0, SOCKS5_AUTH_PASSWORD = 1, SOCKS5_AUTH_CERTIFICATE = 2 };
typedef struct socks5_opts {
    int auth; /* SOCKS5_AUTH_*: the index in the table's choices */
    const char *users;
    berth_cidr_list_t allow_dest;
    berth_cidr_list_t deny_dest;
    uint64_t handshake_ms;
    uint64_t connect_ms;
    uint64_t idle_ms;
    int64_t fail_limit;
    uint64_t fail_window_ms;
    uint64_t fail_block_ms;
    /* UDP ASSOCIATE and BIND */
    int udp;
    int bind;
    const char *udp_address; /* checked by socks5_config_check */
    uint64_t udp_idle_ms;
    int64_t udp_max;
    int64_t udp_queue;
    uint64_t bind_ms;
    int64_t bind_max;
} socks5_opts_t;

/* The table the descriptor declares: types, bounds, defaults, help. */
extern const berth_option_t socks5_options[];

/* How options outside the table are read: host->option for a listener, or a test's table. */
typedef const char *(*socks5_option_fn)(void *ctx, const char *key);

/* One key of the listener section, after the host parsed the table's: what the table cannot
 * say (the users file must load) and keys outside it. 0, or -EINVAL with a message in err
 * that names the key. */
int socks5_config_check(const berth_host_t *host, const char *key, const char *value, char *err,
                        size_t errlen);
/* Every option at once, from the parsed table `o` (and `get` for keys outside it), with the
 * checks that span keys. 0 and a config in *out, or a negative errno with a message in err. */
int socks5_config_build(const berth_host_t *host, const socks5_opts_t *o, socks5_option_fn get,
                        void *ctx, socks5_config_t **out, char *err, size_t errlen);
void socks5_config_free(socks5_config_t *cfg);

/* May a CONNECT reach `addr` (its port included)? Denied if deny_dest matches; else allowed
 * only if allow_dest matches. */
int socks5_dest_allowed(const socks5_config_t *cfg, const struct sockaddr *addr);

/* udp_address: "ADDR", "ADDR:PORT", "ADDR:PORT-PORT", ":PORT[-PORT]" (the connection's own
 * address), with IPv6 in brackets when a port follows ("[::1]:5000", or "::1" alone).
 * 0, or -EINVAL. *addr gets family 0 when no address is given. */
int socks5_parse_udp_address(const char *value, struct sockaddr_storage *addr, uint16_t *first,
                             uint16_t *last);
/* May a BIND's incoming peer be let in? `want` (MAY be NULL, or of family 0 when the request
 * named a name or the unspecified address) is DST.ADDR: the peer's address must equal it, as
 * Dante has it. The peer is then judged by allow_dest/deny_dest at DST.PORT. */
int socks5_bind_peer_ok(const socks5_config_t *cfg, const struct sockaddr *want,
                        const struct sockaddr *peer, uint16_t dst_port);

#endif
