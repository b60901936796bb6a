/* host->listen_once: a one-shot TCP listen for a conn (SOCKS5 BIND; see bind_listen.c). */
#ifndef BERTH_BIND_LISTEN_H
#define BERTH_BIND_LISTEN_H

#include <stdint.h>

#include "worker/conn.h"

int bind_listen_once(berth_conn_t *c, const struct sockaddr *addr, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg,
                     struct sockaddr_storage *bound);

#endif
