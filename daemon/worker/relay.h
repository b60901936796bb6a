/* host->relay: pipe a plugin's conn and an outbound conn both ways (see relay.c). */
#ifndef BERTH_RELAY_H
#define BERTH_RELAY_H

#include <stdint.h>

#include "worker/conn.h"

int relay_start(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                void *arg);

#endif
