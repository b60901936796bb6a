/* host->connect: resolve, check and connect out on behalf of a conn (see outbound.c). */
#ifndef BERTH_OUTBOUND_H
#define BERTH_OUTBOUND_H

#include <stdint.h>

#include "worker/conn.h"

int outbound_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg);

#endif
