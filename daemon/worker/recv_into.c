/*
 * host->recv_into: the next bytes of a stream conn read straight into a buffer the plugin
 * owns, not into the worker's read buffer and then handle(). The upload plugin keeps every
 * body byte in its own write buffers anyway; reading into them saves one copy of each byte
 * and lets a read be as big as the buffer (the worker's read buffer is 64 KiB).
 *
 * Built on the conn's hook slot, as the relay is: while a receive is armed the slot holds a
 * hook that takes the input, so libuv reports readiness instead of reading, and this file
 * reads the socket itself. The slot is emptied as soon as no receive is armed (the plugin's
 * callback did not arm another), which gives the input back to the conn and handle().
 * Emptying and refilling the slot costs no epoll_ctl: the read registration is kept.
 */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "worker/recv_into.h"

/* Reads per readiness report, like libuv's own loop: then other conns get their turn. */
#define READS_PER_WAKE 16

typedef struct recv_into {
    berth_conn_t *c;
    void *buf; /* armed iff not NULL */
    size_t len;
    recv_into_cb cb;
    void *arg;
    int hooked;  /* in c's hook slot */
    int running; /* inside on_readable: free it there, not under its feet */
} recv_into_t;

static const conn_hooks_t recv_hooks;

/* Empty the hook slot: the conn reads for handle() again (or for its linger). */
static void unhook(recv_into_t *r)
{
    r->buf = NULL;
    if (!r->hooked)
        return;
    r->hooked = 0;
    conn_set_hooks(r->c, NULL, NULL);
    if (!r->running)
        free(r);
}

static int on_readable(berth_conn_t *c, void *arg)
{
    recv_into_t *r = arg;
    int fd = conn_fd(c);
    int dry = 0;

    r->running = 1;
    for (int i = 0; i < READS_PER_WAKE && r->hooked && r->buf != NULL; i++) {
        if (fd < 0 || !conn_is_open(c)) {
            r->buf = NULL;
            break;
        }
        ssize_t n = read(fd, r->buf, r->len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            dry = 1;
            break; /* stays armed */
        }
        if (n <= 0) {
            /* EOF or an error: the conn's own read finds it again and says so (eof(),
             * or an abort and finish()). */
            r->buf = NULL;
            break;
        }
        conn_touch(c);
        conn_count_in(c, (size_t)n);
        /* Less than asked for: the socket is empty; more is a new edge (io.h). */
        int short_read = (size_t)n < r->len;
        recv_into_cb cb = r->cb;
        void *cb_arg = r->arg;
        r->buf = NULL; /* one shot: the callback may arm the next */
        conn_plugin_scope_t sc =
            conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_HANDLE);
        cb(c, cb_arg, (size_t)n);
        conn_plugin_leave(conn_worker(c), sc);
        if (short_read) {
            dry = 1;
            break;
        }
    }
    r->running = 0;
    if (r->hooked && r->buf == NULL)
        unhook(r); /* frees r */
    else if (!r->hooked)
        free(r);
    return dry;
}

/* The conn ends (its handle closes, the drain deadline): let go of it. */
static void on_close(berth_conn_t *c, void *arg)
{
    (void)c;
    unhook(arg);
}

static const conn_hooks_t recv_hooks = {
    .on_close = on_close,
    .on_readable = on_readable,
    .takes_input = 1,
};

int recv_into_arm(berth_conn_t *c, void *buf, size_t len, recv_into_cb cb, void *arg)
{
    if (buf == NULL || len == 0 || cb == NULL)
        return -EINVAL;
    if (conn_kind(c) != CONN_STREAM || conn_is_tls(c))
        return -ENOTSUP;
    recv_into_t *r = conn_hooks_arg(c, &recv_hooks);
    if (r == NULL) {
        if (conn_hooked(c))
            return -ENOTSUP; /* a relay or a connect holds the slot */
        if (!conn_is_open(c) || conn_eof(c) || conn_fd(c) < 0)
            return -EPIPE;
        if (!conn_input_wanted(c))
            return -EAGAIN;
        if ((r = calloc(1, sizeof *r)) == NULL)
            return -ENOMEM;
        r->c = c;
        r->hooked = 1;
        conn_set_hooks(c, &recv_hooks, r);
        conn_watch_read(c, 1);
    } else if (r->buf != NULL) {
        return -EBUSY;
    }
    r->buf = buf;
    r->len = len;
    r->cb = cb;
    r->arg = arg;
    return 0;
}

void recv_into_drop(berth_conn_t *c)
{
    recv_into_t *r = conn_hooks_arg(c, &recv_hooks);
    if (r != NULL)
        unhook(r);
}

int recv_into_holds(const berth_conn_t *c)
{
    return conn_hooks_arg(c, &recv_hooks) != NULL;
}
