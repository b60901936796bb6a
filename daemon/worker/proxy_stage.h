/*
 * The PROXY protocol stage of a stream conn: between accept and setup(), read the header the
 * balancer sends (lib/proxy.c parses it), make its source address the conn's peer, check
 * allow/deny against that, then hand the conn (and any bytes that followed the header) to
 * the plugin through conn_begin. A conn whose header is malformed, late (proxy_timeout) or cut
 * short ends without the plugin ever seeing it; a LOCAL header (a health check) ends quietly.
 * Built on conn.h alone: the stage is the conn's hook while it runs.
 */
#ifndef BERTH_PROXY_STAGE_H
#define BERTH_PROXY_STAGE_H

#include "worker/conn.h"

/* Start the stage on a new stream conn of a listener with proxy_protocol on. */
void proxy_stage_start(berth_conn_t *c);

/* Is a peer that just connected one allowed to send the header (proxy_from)? If not, counted
 * as refused_proxy. */
int proxy_stage_admit(berth_listener_t *l, const struct sockaddr *peer);

#endif
