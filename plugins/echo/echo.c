/*
 * echo: bytes back on stream listeners; each datagram back to its sender on datagram
 * listeners. The host does the rest (backpressure, close on EOF, idle timeout).
 */
#include <berth/handler.h>

static const berth_host_t *host;

static int echo_load(const berth_host_t *h)
{
    host = h;
    return 0;
}

static void echo_handle(berth_conn_t *conn, const void *data, size_t len)
{
    if (host->write(conn, data, len) < 0)
        host->abort(conn);
}

/* No options: the empty table says so (berthd --plugin-help echo, and an unknown key's
 * message). */
static const berth_option_t echo_options[] = {{.name = NULL}};

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("echo"), .version = "1.0",        .load = echo_load,
    .handle = echo_handle,      .options = echo_options, /* none */
};
