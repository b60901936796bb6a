/*
 * nosym: a shared object that is not a berth plugin: it exports something, but not the
 * `berth_handler` descriptor. The host must say so, naming the file.
 */
#include <berth/handler.h>

BERTH_EXPORT int nosym_version(void);

BERTH_EXPORT int nosym_version(void)
{
    return 1;
}

/* The descriptor under another name, hidden: present in the file, not findable by dlsym. */
static void nosym_handle(berth_conn_t *conn, const void *data, size_t len) {}

const berth_handler_t nosym_handler = {
    BERTH_HANDLER_INIT("nosym"),
    .handle = nosym_handle,
};
