/* Listening sockets, opened by the master and inherited by every worker generation. */
#ifndef BERTH_LISTEN_H
#define BERTH_LISTEN_H

#include <sys/socket.h>
#include <sys/types.h>

#include "config/config.h"

typedef struct lsock {
    berth_protocol_t protocol;
    struct sockaddr_storage addr;
    socklen_t addrlen;
    char *address; /* as the config wrote it */
    char *name;    /* the first listener that opened it, for messages */
    int fd;
    int slot;  /* stats slot */
    int users; /* generations that use it */
    dev_t dev; /* the unix socket file we made (never unlink anyone else's) */
    ino_t ino;
    char bound[64]; /* what it is bound to: "127.0.0.1:40123" for a configured port 0 */
    /* Crashes of plugin code serving it (see sockets_crash), and its quarantine. */
    uint64_t crash_at[CONFIG_CRASH_LIMIT_MAX]; /* loop times, within the window */
    unsigned ncrashes;
    int quarantined;
    char why[160];
    /* The groups it has joined (udp multicast listeners; ngroups 0 otherwise), and them as
     * text for status: "224.3.29.71,224.3.29.72". */
    config_mcast_t mcast;
    char groups[CONFIG_MCAST_MAX * (INET6_ADDRSTRLEN + 1)];
} lsock_t;

/* Open (socket, bind, listen) what `l` asks for. A stale unix socket file (nobody answers
 * on it) is replaced; a live one or a non-socket is an error, never unlinked.
 * Returns 0 or -errno with a message in err. */
int listen_open(const config_listener_t *l, lsock_t *out, char *err, size_t errlen);
/* Open a unix stream socket at `path` with file mode `mode` (the admin socket), with the
 * same stale-file rules as listen_open. 0 or -errno with a message in err. */
int listen_open_unix(const char *path, unsigned mode, unsigned backlog, const char *name,
                     lsock_t *out, char *err, size_t errlen);
/* Apply settings that may change on an open socket: backlog, unix file mode. */
void listen_update(lsock_t *s, const config_listener_t *l);
/* Change the multicast memberships of a kept socket to what `l` asks for, without closing
 * it. 0, or -errno with the cause in err (the memberships it had are kept then). */
int listen_update_groups(lsock_t *s, const config_listener_t *l, char *err, size_t errlen);
/* Close it, and remove its unix socket file if it is still the one we made. */
void listen_close(lsock_t *s);
/* The configured port (0: the kernel chose one, see bound); -1 for a unix socket. */
int listen_port(const lsock_t *s);
/* What socket fd is bound to, into buf: "127.0.0.1:40123" or "[::1]:40123" (the port the
 * kernel chose for a configured port 0); for any other family `address` (the configured
 * one) or, when that is NULL, the unix path it is bound to. Empty if getsockname fails. */
void listen_describe_bound(int fd, const char *address, char *buf, size_t len);
/* Does `l` name this very socket (same protocol family and address)? */
int listen_same(const lsock_t *s, const config_listener_t *l);

#endif
