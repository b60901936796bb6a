/*
 * socks5's metrics on the daemon's /metrics (host->metric): replies sent by code and bytes
 * relayed each way, per listener. Registered at listener_open, counted at finish().
 */
#ifndef SOCKS5_METRICS_H
#define SOCKS5_METRICS_H

#include <stdint.h>

#include "berth/handler.h"

/* Register the listener's counters (none on a host without host->metric, or out of memory:
 * the proxy serves on uncounted). */
void socks5_metrics_open(const berth_host_t *host, berth_listener_t *l);
void socks5_metrics_close(berth_listener_t *l);
/* A session of `l` ended: reply code `rep` (0xFF: none sent) and the bytes relayed. */
void socks5_metrics_session(const berth_host_t *host, berth_listener_t *l, uint8_t rep, uint64_t up,
                            uint64_t down);

#endif
