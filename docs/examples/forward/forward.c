/*
 * forward: a port forwarder. Each client is connected to `to = HOST:PORT` and the two are
 * relayed both ways by the host (host->connect, then host->relay), like socat or a one-line
 * HAProxy backend.
 *
 * What it shows:
 *   - host->connect resolves names off the loop and tries every address; its callback runs
 *     once, also when the client leaves first (BERTH_CONNECT_FAILED, ECANCELED).
 *   - Bytes the client sends before the relay starts reach handle(): this plugin pauses
 *     reading in setup() so they wait in the kernel, and resumes just before relay().
 *   - The peer from a successful connect is the plugin's until it hands it to relay() or
 *     closes it.
 *   - berthd's worker sandbox lets a worker connect only where its listeners declared
 *     (host->allow_connect in listener_open).
 * Options: `to` (required), `connect_timeout` (default 10s), `relay_timeout` (default 5m).
 */
#include <berth/handler.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const berth_host_t *host;

struct target {
    char host[256];
    uint16_t port;
    uint64_t connect_ms, idle_ms;
};

/* "name:port", "1.2.3.4:port" or "[::1]:port". */
static int parse_to(const char *value, struct target *t)
{
    const char *colon = strrchr(value, ':');
    const char *h = value;
    size_t hlen;
    char *end;
    unsigned long port;

    if (colon == NULL)
        return -EINVAL;
    hlen = (size_t)(colon - value);
    if (value[0] == '[') {
        if (hlen < 2 || value[hlen - 1] != ']')
            return -EINVAL;
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || hlen >= sizeof t->host)
        return -EINVAL;
    errno = 0;
    port = strtoul(colon + 1, &end, 10);
    if (errno != 0 || *end != '\0' || end == colon + 1 || port == 0 || port > 65535)
        return -EINVAL;
    memcpy(t->host, h, hlen);
    t->host[hlen] = '\0';
    t->port = (uint16_t)port;
    return 0;
}

static int forward_load(const berth_host_t *h)
{
    host = h;
    return 0;
}

static int forward_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                                size_t errlen)
{
    struct target t;
    uint64_t ms;
    (void)l;
    if (strcmp(key, "to") == 0) {
        if (parse_to(value, &t) < 0) {
            snprintf(err, errlen, "to: want HOST:PORT (a name, an IPv4 address or [IPv6]:PORT)");
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "connect_timeout") == 0 || strcmp(key, "relay_timeout") == 0) {
        if (host->parse_duration(value, &ms) < 0) {
            snprintf(err, errlen, "%s: want a duration such as 10s or 5m", key);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen, "%s: unknown key (forward takes: to, connect_timeout, relay_timeout)",
             key);
    return -EINVAL;
}

static int forward_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    struct target *t = calloc(1, sizeof *t);
    const char *v;
    if (t == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if ((v = host->option(l, "to")) == NULL) {
        snprintf(err, errlen, "`to = HOST:PORT` is required");
        free(t);
        return -EINVAL;
    }
    parse_to(v, t); /* each value was checked by check_option */
    t->connect_ms = 10000;
    t->idle_ms = 300000;
    if ((v = host->option(l, "connect_timeout")) != NULL)
        host->parse_duration(v, &t->connect_ms);
    if ((v = host->option(l, "relay_timeout")) != NULL)
        host->parse_duration(v, &t->idle_ms);
    /* berthd confines each worker to what its listeners declare: this one connects out to
     * the target's port, and nowhere else. */
    if (BERTH_HOST_HAS(host, allow_connect)) {
        int rc = host->allow_connect(l, t->port);
        if (rc < 0) {
            snprintf(err, errlen, "cannot declare the connect to port %u: %s", t->port,
                     strerror(-rc));
            free(t);
            return rc;
        }
    }
    *state = t;
    return 0;
}

static void forward_listener_close(berth_listener_t *l, void *state)
{
    (void)l;
    free(state);
}

static void on_relay_done(berth_conn_t *conn, const berth_relay_stats_t *st, void *arg)
{
    (void)arg;
    host->log(conn, BERTH_LOG_INFO, "forwarded %llu bytes up, %llu down%s",
              (unsigned long long)st->bytes_up, (unsigned long long)st->bytes_down,
              st->error ? " (ended by an error or relay_timeout)" : "");
}

static void on_connect(berth_conn_t *conn, const berth_connect_result_t *res, void *arg)
{
    const struct target *t = arg;
    if (res->error != BERTH_CONNECT_OK) {
        if (res->sys_errno != ECANCELED) /* not "the client left first" */
            host->log(conn, BERTH_LOG_WARN, "connect to %s:%u failed (error %d, errno %d)", t->host,
                      t->port, (int)res->error, res->sys_errno);
        host->close(conn);
        return;
    }
    host->resume(conn);
    if (host->relay(conn, res->peer, t->idle_ms, on_relay_done, NULL) < 0) {
        host->close(res->peer);
        host->close(conn);
    }
}

static int forward_setup(berth_conn_t *conn)
{
    struct target *t = host->listener_state(conn);
    host->pause(conn);
    return host->connect(conn, t->host, t->port, t->connect_ms, NULL, on_connect, t);
}

/* Never reached while paused; relay() takes over reading after that. */
static void forward_handle(berth_conn_t *conn, const void *data, size_t len)
{
    (void)data;
    (void)len;
    host->abort(conn);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("forward"),
    .version = "1.0",
    .load = forward_load,
    .check_option = forward_check_option,
    .listener_open = forward_listener_open,
    .listener_close = forward_listener_close,
    .setup = forward_setup,
    .handle = forward_handle,
};
