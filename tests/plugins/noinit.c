/*
 * noinit: a descriptor written without BERTH_HANDLER_INIT, so its abi_version is 0: berthd
 * must say it is not initialised and how to start it, not "ABI version 0".
 */
#include <berth/handler.h>

#include <stdlib.h>

static void noinit_handle(berth_conn_t *conn, const void *data, size_t len)
{
    abort(); /* never reached: refused before anything is called */
}

BERTH_HANDLER = {
    .name = "noinit",
    .handle = noinit_handle,
};
