/*
 * A listener's per-source limits (per_source, rate, burst) applied to a new connection's
 * client address, through the table all workers share (core/limits.h). Called where the
 * client's address is known: at accept, or after the PROXY header.
 */
#ifndef BERTH_SOURCE_H
#define BERTH_SOURCE_H

#include <stdint.h>
#include <sys/socket.h>

#include "worker/worker.h"

/* Does the listener limit sources at all? */
int source_limited(const berth_listener_t *l);
/* 0: let in, *entry (or -1) to hand to conn_hold_source; -1: over a limit (counted as
 * refused_source, logged at most once a minute per source). */
int source_admit(berth_listener_t *l, const struct sockaddr *peer, int32_t *entry);

#endif
