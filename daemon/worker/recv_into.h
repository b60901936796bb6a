/* host->recv_into: a conn's next read into a buffer the plugin owns (see recv_into.c). */
#ifndef BERTH_RECV_INTO_H
#define BERTH_RECV_INTO_H

#include <stddef.h>

#include "worker/conn.h"

typedef void (*recv_into_cb)(berth_conn_t *c, void *arg, size_t n);

/* Arm one receive (handler.h's recv_into says what each error means). */
int recv_into_arm(berth_conn_t *c, void *buf, size_t len, recv_into_cb cb, void *arg);
/* Drop c's armed receive, if any, without its callback, and give the input back to the conn
 * (before a pause or a close: a close must not keep the hook, which would stop its linger
 * from reading the peer's EOF). */
void recv_into_drop(berth_conn_t *c);
/* Does a receive hold c's input (so plugin writes are still the plugin's)? */
int recv_into_holds(const berth_conn_t *c);

#endif
