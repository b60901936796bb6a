/*
 * badabi: a plugin built for an ABI this berthd does not speak. The host must refuse it
 * before calling anything, and say which file it was; load() here would tell on it.
 */
#include <berth/handler.h>

#include <stdlib.h>

static int badabi_load(const berth_host_t *h)
{
    abort(); /* never reached: the ABI check comes first */
}

static void badabi_handle(berth_conn_t *conn, const void *data, size_t len)
{
    abort();
}

BERTH_EXPORT const berth_handler_t berth_handler = {
    .abi_version = BERTH_ABI_VERSION + 41,
    .size = sizeof(berth_handler_t),
    .name = "badabi",
    .load = badabi_load,
    .handle = badabi_handle,
};
