/*
 * daytime: a datagram plugin, the time of day as RFC 867 has it, on UDP and unix datagram
 * listeners (and on stream ones: the line, then close).
 *
 * Every datagram gets one reply to its sender: the current time as a line. On a datagram
 * listener each datagram is a conn of its own (setup, one handle, finish), so the plugin keeps
 * no per-client state; the host sends host->write's bytes back to the datagram's sender.
 *
 * Option: `format = rfc3339 | unix` (default rfc3339), checked at config time.
 */
#include <berth/handler.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const berth_host_t *host;

enum format { FORMAT_RFC3339, FORMAT_UNIX };

static int parse_format(const char *value, enum format *f)
{
    if (strcmp(value, "rfc3339") == 0)
        *f = FORMAT_RFC3339;
    else if (strcmp(value, "unix") == 0)
        *f = FORMAT_UNIX;
    else
        return -EINVAL;
    return 0;
}

static int daytime_load(const berth_host_t *h)
{
    host = h;
    return 0;
}

static int daytime_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                                size_t errlen)
{
    enum format f;
    (void)l;
    if (strcmp(key, "format") != 0) {
        snprintf(err, errlen, "%s: unknown key (daytime takes: format)", key);
        return -EINVAL;
    }
    if (parse_format(value, &f) < 0) {
        snprintf(err, errlen, "format: want rfc3339 or unix, not \"%s\"", value);
        return -EINVAL;
    }
    return 0;
}

static int daytime_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    enum format *f = malloc(sizeof *f);
    const char *v = host->option(l, "format");
    if (f == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    *f = FORMAT_RFC3339;
    if (v != NULL)
        parse_format(v, f); /* checked already */
    *state = f;
    return 0;
}

static void daytime_listener_close(berth_listener_t *l, void *state)
{
    (void)l;
    free(state);
}

static size_t format_now(enum format f, char *buf, size_t cap)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (f == FORMAT_UNIX)
        return (size_t)snprintf(buf, cap, "%lld\n", (long long)ts.tv_sec);
    gmtime_r(&ts.tv_sec, &tm);
    return strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ\n", &tm);
}

/* Stream listeners: the line, then close (RFC 867 over TCP). */
static int daytime_setup(berth_conn_t *conn)
{
    berth_protocol_t p = host->listener_protocol(host->listener(conn));
    if (p == BERTH_PROTO_TCP || p == BERTH_PROTO_UNIX) {
        char line[64];
        size_t n = format_now(*(enum format *)host->listener_state(conn), line, sizeof line);
        int rc = host->write(conn, line, n);
        host->close(conn);
        return rc;
    }
    return 0;
}

/* Datagram listeners: whatever the datagram says, the reply is the time. */
static void daytime_handle(berth_conn_t *conn, const void *data, size_t len)
{
    char line[64];
    size_t n = format_now(*(enum format *)host->listener_state(conn), line, sizeof line);
    (void)data;
    (void)len;
    if (host->write(conn, line, n) < 0)
        host->log(conn, BERTH_LOG_DEBUG, "reply not sent");
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("daytime"),
    .version = "1.0",
    .load = daytime_load,
    .check_option = daytime_check_option,
    .listener_open = daytime_listener_open,
    .listener_close = daytime_listener_close,
    .setup = daytime_setup,
    .handle = daytime_handle,
};
