/*
 * crashy: echoes, except that a line "crash" makes the worker segfault and "abort" makes it
 * abort(): the plugin crash a worker must contain. Everything else is echoed back as is.
 */
#include <berth/handler.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const berth_host_t *host;

static int crashy_load(const berth_host_t *h)
{
    host = h;
    return 0;
}

static int starts_with(const void *data, size_t len, const char *word)
{
    size_t n = strlen(word);
    return len >= n && memcmp(data, word, n) == 0;
}

static void crashy_handle(berth_conn_t *conn, const void *data, size_t len)
{
    if (starts_with(data, len, "crash")) {
        /* A real fault, not raise(): the way a buggy plugin takes a worker down. */
        volatile int *volatile p = NULL;
        *p = 42;
        raise(SIGSEGV); /* if the store was somehow survived */
    }
    if (starts_with(data, len, "abort"))
        abort();
    if (host->write(conn, data, len) < 0)
        host->abort(conn);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("crashy"),
    .load = crashy_load,
    .handle = crashy_handle,
};
