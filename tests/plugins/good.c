/*
 * good: a valid test plugin that exercises the whole contract the daemon offers, so the
 * loader, -t and the integration tests have something real to load.
 *
 * Protocol, one command per line (stream) or per datagram:
 *   version        -> "good vN\n" (N is VARIANT: the test of a .so replaced across reload
 *                     builds this file twice, as good.so and good2.so)
 *   sleep MS       -> "slept\n" after MS milliseconds (a host timer)
 *   work [MS]      -> "worked\n" once a pool thread has slept MS ms (default 10; host->work)
 *   quit           -> the connection is closed by the plugin
 *   anything else  -> the line upper-cased (VARIANT 2 prefixes "v2:")
 * With the option `greeting = TEXT` set, a stream connection is greeted with "TEXT\n".
 *
 * Options: `greeting` (1..64 printable characters, and not "reject-me": a value the test of
 * option errors uses), `slow` (a boolean, accepted and ignored), `open_delay` (a duration:
 * listener_open sleeps that long, so a test can catch a reload while workers start).
 * Anything else is refused.
 */
#include <berth/handler.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifndef VARIANT
#define VARIANT 1
#endif

#define LINE_MAX_LEN 1024
#define GREETING_MAX 64

typedef struct good_listener {
    char greeting[GREETING_MAX + 1];
} good_listener_t;

typedef struct good_conn {
    size_t len;
    char line[LINE_MAX_LEN];
} good_conn_t;

static const berth_host_t *host;

static int good_load(const berth_host_t *h)
{
    if (h->abi_version != BERTH_ABI_VERSION || !BERTH_HOST_HAS(h, work))
        return -EPROTO;
    host = h;
    return 0;
}

static void good_unload(void)
{
    host = NULL;
}

static int greeting_ok(const char *v, char *err, size_t errlen)
{
    size_t n = strlen(v);
    if (n == 0 || n > GREETING_MAX) {
        snprintf(err, errlen, "greeting: must be 1 to %d characters", GREETING_MAX);
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        if ((unsigned char)v[i] < 0x20 || (unsigned char)v[i] > 0x7e) {
            snprintf(err, errlen, "greeting: must be printable ASCII");
            return -EINVAL;
        }
    }
    if (strcmp(v, "reject-me") == 0) {
        snprintf(err, errlen, "good plugin refuses greeting 'reject-me'");
        return -EINVAL;
    }
    return 0;
}

static int good_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                             size_t errlen)
{
    if (strcmp(key, "greeting") == 0)
        return greeting_ok(value, err, errlen);
    if (strcmp(key, "slow") == 0) {
        int b;
        if (host->parse_bool(value, &b)) {
            snprintf(err, errlen, "%s: expected a boolean", key);
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "open_delay") == 0) {
        uint64_t ms;
        if (host->parse_duration(value, &ms) || ms > 60000) {
            snprintf(err, errlen, "%s: expected a duration up to 1m", key);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen, "good plugin has no option '%s'", key);
    return -EINVAL;
}

static int good_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    good_listener_t *gl = calloc(1, sizeof *gl);
    if (gl == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    const char *g = host->option(l, "greeting");
    if (g)
        snprintf(gl->greeting, sizeof gl->greeting, "%s", g);
    const char *d = host->option(l, "open_delay");
    uint64_t ms = 0;
    if (d && host->parse_duration(d, &ms) == 0 && ms) {
        struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000000L};
        nanosleep(&ts, NULL);
    }
    host->log_listener(l, BERTH_LOG_DEBUG, "good v%d opened listener %s", VARIANT,
                       host->listener_name(l));
    *state = gl;
    return 0;
}

static void good_listener_close(berth_listener_t *l, void *state)
{
    free(state);
}

static int is_stream(berth_conn_t *conn)
{
    berth_protocol_t p = host->listener_protocol(host->listener(conn));
    return p == BERTH_PROTO_TCP || p == BERTH_PROTO_UNIX;
}

static int good_setup(berth_conn_t *conn)
{
    const good_listener_t *gl = host->listener_state(conn);
    if (gl && gl->greeting[0] && is_stream(conn)) {
        char buf[GREETING_MAX + 2];
        int n = snprintf(buf, sizeof buf, "%s\n", gl->greeting);
        return host->write(conn, buf, (size_t)n);
    }
    return 0;
}

static void reply(berth_conn_t *conn, const char *text)
{
    if (host->write(conn, text, strlen(text)) < 0)
        host->abort(conn);
}

static void on_slept(berth_conn_t *conn, void *arg)
{
    reply(conn, "slept\n");
}

static void pool_work(void *arg)
{
    uintptr_t ms = (uintptr_t)arg;
    struct timespec ts = {(time_t)(ms / 1000), (long)(ms % 1000) * 1000 * 1000};
    nanosleep(&ts, NULL);
}

static void pool_done(berth_conn_t *conn, void *arg, int status)
{
    if (status == 0)
        reply(conn, "worked\n");
}

static void command(berth_conn_t *conn, char *line, size_t len)
{
    if (len && line[len - 1] == '\r')
        line[--len] = '\0';
    if (strcmp(line, "version") == 0) {
        char buf[32];
        snprintf(buf, sizeof buf, "good v%d\n", VARIANT);
        reply(conn, buf);
    } else if (strncmp(line, "sleep ", 6) == 0) {
        uint64_t ms = strtoull(line + 6, NULL, 10);
        if (host->timer_start(conn, ms, on_slept, NULL) == NULL)
            host->abort(conn);
    } else if (strcmp(line, "work") == 0 || strncmp(line, "work ", 5) == 0) {
        uintptr_t ms = line[4] ? (uintptr_t)strtoull(line + 5, NULL, 10) : 10;
        if (host->work(conn, pool_work, pool_done, (void *)ms))
            host->abort(conn);
    } else if (strcmp(line, "quit") == 0) {
        host->close(conn);
    } else {
        char buf[LINE_MAX_LEN + 8];
        size_t off = 0;
        if (VARIANT == 2) {
            memcpy(buf, "v2:", 3);
            off = 3;
        }
        for (size_t i = 0; i < len; i++)
            buf[off++] = (char)(line[i] >= 'a' && line[i] <= 'z' ? line[i] - 32 : line[i]);
        buf[off++] = '\n';
        if (host->write(conn, buf, off) < 0)
            host->abort(conn);
    }
}

static void good_handle(berth_conn_t *conn, const void *data, size_t len)
{
    good_conn_t *s = host->state(conn);
    const char *p = data;
    if (!is_stream(conn)) {
        /* A datagram is one command, with or without its newline. */
        char line[LINE_MAX_LEN];
        size_t n = len < sizeof line - 1 ? len : sizeof line - 1;
        memcpy(line, p, n);
        if (n && line[n - 1] == '\n')
            n--;
        line[n] = '\0';
        command(conn, line, n);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        if (p[i] == '\n') {
            s->line[s->len] = '\0';
            command(conn, s->line, s->len);
            s->len = 0;
        } else if (s->len < sizeof s->line - 1) {
            s->line[s->len++] = p[i];
        } else {
            host->log(conn, BERTH_LOG_WARN, "line longer than %d bytes", LINE_MAX_LEN);
            host->abort(conn);
            return;
        }
    }
}

static void good_finish(berth_conn_t *conn)
{
    host->log(conn, BERTH_LOG_DEBUG, "good v%d: connection done", VARIANT);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("good"),
    .version = VARIANT == 2 ? "2" : "1",
    .conn_size = sizeof(good_conn_t),
    .load = good_load,
    .unload = good_unload,
    .check_option = good_check_option,
    .listener_open = good_listener_open,
    .listener_close = good_listener_close,
    .setup = good_setup,
    .handle = good_handle,
    .finish = good_finish,
};
