/*
 * A listener's per-source limits (per_source, rate, burst) applied to a new connection's
 * client address, through the table all workers share (core/limits.h). Called where the
 * client's address is known: at accept (or a datagram's arrival), or after the PROXY header.
 *
 * With over_limit = wait, a stream conn over its source's per_source is parked instead of
 * closed: its handle is made but it is neither set up nor read, and it asks the table again
 * every SOURCE_WAIT_RECHECK_MS (a conn of that source may end in any worker) until it is let
 * in. At most `concurrency` conns wait per listener in one worker; past that, close.
 */
#ifndef BERTH_SOURCE_H
#define BERTH_SOURCE_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "worker/worker.h"

#define SOURCE_WAIT_RECHECK_MS 20

/* Does the listener limit sources at all? */
int source_limited(const berth_listener_t *l);
/* 0: let in, *entry (or -1) to hand to conn_hold_source; -1: over a limit (counted as
 * refused_source, logged at most once a minute per source); 1: over per_source, and the
 * listener's over_limit = wait has room: the caller parks the conn (source_wait_park). */
int source_admit(berth_listener_t *l, const struct sockaddr *peer, int32_t *entry);

struct berth_conn;
/* Park a stream conn that source_admit answered 1 for (its hook slot empty, not set up);
 * `rest` (n bytes read past a PROXY header) goes to the plugin once it begins. */
void source_wait_park(struct berth_conn *c, const void *rest, size_t n);

#endif
