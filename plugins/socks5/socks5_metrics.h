/*
 * socks5's metrics on the daemon's /metrics (host->metric), per listener: replies sent by
 * code and bytes relayed each way (counted at finish()); with udp = on, UDP associations
 * opened, datagrams and bytes relayed each way and datagrams dropped by reason; with
 * bind = on, BINDs accepted and refused at bind_max (all counted as they happen).
 * Registered at listener_open; the listener's config keeps the pointer, so counting is one
 * atomic add on the daemon's shared memory, with no lookup.
 */
#ifndef SOCKS5_METRICS_H
#define SOCKS5_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "berth/handler.h"

#define SOCKS5_REPLY_CODES 9 /* RFC 1928: 0 succeeded .. 8 address type not supported */

/* Why a UDP datagram was dropped: the `reason` label, and the association's log line. */
typedef enum socks5_udp_drop {
    SOCKS5_DROP_STRANGER = 0, /* not from the client's address (and port, once known) */
    SOCKS5_DROP_FRAGMENT,     /* FRAG != 0: fragments are not reassembled */
    SOCKS5_DROP_MALFORMED,    /* a bad header, or a reply too big to wrap */
    SOCKS5_DROP_DENIED,       /* allow_dest/deny_dest refused the address */
    SOCKS5_DROP_QUEUE,        /* udp_queue full, or a socket buffer full */
    SOCKS5_DROP_UNASKED,      /* a reply from where the client never sent */
    SOCKS5_DROP_RESOLVER,     /* the listener's lookups in flight at the host's cap */
    SOCKS5_DROP_REASONS
} socks5_udp_drop_t;

/* One listener's counters. A pointer is NULL when its registration failed (the table
 * full); host->metric_add takes NULL and does nothing. */
typedef struct socks5_metrics {
    const berth_host_t *host;
    berth_metric_t *replies[SOCKS5_REPLY_CODES];
    berth_metric_t *up, *down;
    /* udp = on */
    berth_metric_t *udp_associations;
    berth_metric_t *udp_datagrams_up, *udp_datagrams_down;
    berth_metric_t *udp_bytes_up, *udp_bytes_down;
    berth_metric_t *udp_dropped[SOCKS5_DROP_REASONS];
    /* bind = on */
    berth_metric_t *binds_accepted, *binds_refused;
} socks5_metrics_t;

/* The `reason` label of a drop ("stranger", ...). */
const char *socks5_udp_drop_name(socks5_udp_drop_t why);

/* Register the listener's counters: the UDP ones only when `udp`, the BIND ones only when
 * `bind`, so a listener without them spends none of the daemon's shared slots. NULL on a
 * host without host->metric, or out of memory: the proxy serves on uncounted. */
socks5_metrics_t *socks5_metrics_open(const berth_host_t *host, berth_listener_t *l, int udp,
                                      int bind);
void socks5_metrics_close(socks5_metrics_t *m);

/* Counting, as it happens: each is one atomic add (nothing when `m` is NULL). */
static inline void socks5_metrics_bind(const socks5_metrics_t *m, int accepted)
{
    if (m != NULL)
        m->host->metric_add(accepted ? m->binds_accepted : m->binds_refused, 1);
}

static inline void socks5_metrics_udp_opened(const socks5_metrics_t *m)
{
    if (m != NULL)
        m->host->metric_add(m->udp_associations, 1);
}

/* One datagram of `bytes` payload relayed up (client to destination) or down. */
static inline void socks5_metrics_udp_relayed(const socks5_metrics_t *m, int up, size_t bytes)
{
    if (m == NULL)
        return;
    m->host->metric_add(up ? m->udp_datagrams_up : m->udp_datagrams_down, 1);
    m->host->metric_add(up ? m->udp_bytes_up : m->udp_bytes_down, (int64_t)bytes);
}

static inline void socks5_metrics_udp_dropped(const socks5_metrics_t *m, socks5_udp_drop_t why)
{
    if (m != NULL && (unsigned)why < SOCKS5_DROP_REASONS)
        m->host->metric_add(m->udp_dropped[why], 1);
}

/* A session of the listener ended: reply code `rep` (0xFF: none sent) and the bytes
 * relayed over TCP. */
void socks5_metrics_session(const socks5_metrics_t *m, uint8_t rep, uint64_t up, uint64_t down);

#endif
