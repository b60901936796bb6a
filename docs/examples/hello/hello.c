/*
 * hello: a berth plugin built outside berth's tree, against the installed <berth/handler.h>.
 *
 * On each connection it sends one greeting line, then echoes what the client sends. On a
 * datagram listener every datagram gets the greeting and its echo back. It shows the parts of
 * the contract most plugins need: an option checked at config time (`greeting`), per-listener
 * state built once (listener_open), per-connection state the host allocates (conn_size), and
 * logging through the host.
 */
#include <berth/handler.h>

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define GREETING_MAX 128

static const berth_host_t *host;

/* Per listener: the greeting line, built once from the options. */
struct hello_listener {
    char line[GREETING_MAX + 2];
    size_t len;
};

/* Per connection: zeroed by the host, freed by the host after finish(). */
struct hello_conn {
    uint64_t bytes;
};

static int hello_load(const berth_host_t *h)
{
    host = h;
    return 0;
}

/* Called by `berthd -t` and at every start and reload, once per key berthd does not know.
 * A refusal fails the whole config, reported as FILE:LINE: message. */
static int hello_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                              size_t errlen)
{
    (void)l;
    if (strcmp(key, "greeting") != 0) {
        snprintf(err, errlen, "%s: unknown key (hello takes: greeting)", key);
        return -EINVAL;
    }
    if (strlen(value) > GREETING_MAX || strpbrk(value, "\r\n") != NULL) {
        snprintf(err, errlen, "greeting: want one line of at most %d bytes", GREETING_MAX);
        return -EINVAL;
    }
    return 0;
}

static int hello_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    struct hello_listener *hl = calloc(1, sizeof *hl);
    if (hl == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *greeting = host->option(l, "greeting");
    hl->len = (size_t)snprintf(hl->line, sizeof hl->line, "%s\n", greeting ? greeting : "hello");
    *state = hl;
    return 0;
}

static void hello_listener_close(berth_listener_t *l, void *state)
{
    (void)l;
    free(state);
}

static int hello_setup(berth_conn_t *conn)
{
    const struct hello_listener *hl = host->listener_state(conn);
    return host->write(conn, hl->line, hl->len);
}

static void hello_handle(berth_conn_t *conn, const void *data, size_t len)
{
    struct hello_conn *hc = host->state(conn);
    hc->bytes += len;
    if (host->write(conn, data, len) < 0)
        host->abort(conn);
}

static void hello_finish(berth_conn_t *conn)
{
    const struct hello_conn *hc = host->state(conn);
    host->log(conn, BERTH_LOG_DEBUG, "done, %llu bytes echoed", (unsigned long long)hc->bytes);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("hello"),
    .version = "1.0",
    .conn_size = sizeof(struct hello_conn),
    .load = hello_load,
    .check_option = hello_check_option,
    .listener_open = hello_listener_open,
    .listener_close = hello_listener_close,
    .setup = hello_setup,
    .handle = hello_handle,
    .finish = hello_finish,
};
