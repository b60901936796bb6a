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

#endif
