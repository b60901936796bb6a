/*
 * host->listen_once: a TCP port a worker opens for one incoming connection on a conn's
 * behalf (SOCKS5 BIND). The listen fills the conn's hook slot (on_close: give up), holds a
 * ref on the conn until its poll and timer handles have closed, and hands the accepted
 * socket over as an outbound-kind conn (conn_adopt), which the plugin relays as it would a
 * connect's peer. Each connection is first offered to the plugin's allow callback; one it
 * refuses is reset and the listen goes on, so a stranger cannot end the wait for the peer.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "worker/bind_listen.h"

typedef struct listen_once {
    berth_conn_t *c;
    int fd;
    uv_poll_t poll;
    uv_timer_t timer;
    berth_connect_allow_cb allow;
    berth_connect_cb cb;
    void *arg;
    int pending; /* handle closes libuv owes us */
    unsigned done : 1;
    berth_connect_result_t result;
} listen_once_t;

/*
 * The one place a worker binds a TCP port of its own after start-up (every listener's socket
 * is the master's). A sandbox that confines a worker's bind(2) attaches its rule here.
 * Returns a listening, non-blocking socket and its address in *bound, or a negative errno.
 */
static int bind_listen_socket(const struct sockaddr *addr, struct sockaddr_storage *bound)
{
    socklen_t alen =
        addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
    int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    socklen_t blen = sizeof *bound;
    memset(bound, 0, sizeof *bound);
    if (bind(fd, addr, alen) || listen(fd, 1) || getsockname(fd, (struct sockaddr *)bound, &blen)) {
        int e = errno;
        close(fd);
        return -e;
    }
    return fd;
}

static void free_maybe(listen_once_t *o)
{
    if (!o->done || o->pending > 0)
        return;
    berth_conn_t *c = o->c;
    free(o);
    conn_unref(c);
}

static void on_poll_closed(uv_handle_t *h)
{
    listen_once_t *o = h->data;
    o->pending--;
    free_maybe(o);
}

static void on_timer_closed(uv_handle_t *h)
{
    listen_once_t *o = h->data;
    o->pending--;
    free_maybe(o);
}

static void finish(listen_once_t *o, berth_connect_error_t err, int sys)
{
    if (o->done)
        return;
    o->done = 1;
    berth_conn_t *c = o->c;
    conn_set_hooks(c, NULL, NULL);
    uv_poll_stop(&o->poll);
    uv_close((uv_handle_t *)&o->poll, on_poll_closed);
    /* uv_close stops a poll handle at once (epoll no longer has the fd) and never touches
     * the fd again: close it now, so the port is closed before the plugin hears the end. */
    close(o->fd);
    o->fd = -1;
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, on_timer_closed);
    o->result.error = err;
    o->result.sys_errno = sys;
    if (err != BERTH_CONNECT_OK)
        o->result.peer = NULL;
    conn_plugin_scope_t sc =
        conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_CONNECT);
    o->cb(c, &o->result, o->arg);
    conn_plugin_leave(conn_worker(c), sc);
    free_maybe(o);
}

static void unmap(struct sockaddr_storage *ss)
{
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        return;
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = in6->sin6_port;
    memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &in, sizeof in);
}

static void on_readable(uv_poll_t *h, int status, int events)
{
    listen_once_t *o = h->data;
    berth_conn_t *c = o->c;
    (void)events;
    if (o->done)
        return;
    if (status < 0) {
        finish(o, BERTH_CONNECT_FAILED, -status);
        return;
    }
    for (;;) {
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(o->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR || errno == ECONNABORTED)
                return;
            finish(o, BERTH_CONNECT_FAILED, errno);
            return;
        }
        unmap(&peer);
        int refused = 0;
        if (o->allow) {
            conn_plugin_scope_t sc =
                conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_CONNECT);
            refused = o->allow(c, (const struct sockaddr *)&peer, o->arg);
            conn_plugin_leave(conn_worker(c), sc);
        }
        if (o->done) { /* the plugin ended the conn from allow */
            close(fd);
            return;
        }
        if (refused) {
            struct linger lg = {1, 0}; /* a reset: it was not welcome */
            setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
            close(fd);
            continue;
        }
        socklen_t llen = sizeof o->result.local;
        if (getsockname(fd, (struct sockaddr *)&o->result.local, &llen))
            memset(&o->result.local, 0, sizeof o->result.local);
        unmap(&o->result.local);
        memcpy(&o->result.remote, &peer, sizeof peer);
        socklen_t alen =
            peer.ss_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6);
        berth_conn_t *p = conn_new(conn_worker(c), conn_listener(c), CONN_OUTBOUND,
                                   (struct sockaddr *)&peer, alen);
        if (p == NULL) {
            close(fd);
            finish(o, BERTH_CONNECT_FAILED, ENOMEM);
            return;
        }
        int rc = conn_adopt(p, fd);
        if (rc) {
            finish(o, BERTH_CONNECT_FAILED, -rc);
            return;
        }
        o->result.peer = p;
        finish(o, BERTH_CONNECT_OK, 0);
        return;
    }
}

static void on_deadline(uv_timer_t *t)
{
    finish(t->data, BERTH_CONNECT_TIMEOUT, ETIMEDOUT);
}

/* The conn is ending: the listen stops, the plugin hears ECANCELED. */
static void on_conn_close(berth_conn_t *c, void *arg)
{
    (void)c;
    finish(arg, BERTH_CONNECT_FAILED, ECANCELED);
}

static const conn_hooks_t listen_hooks = {.on_close = on_conn_close};

int bind_listen_once(berth_conn_t *c, const struct sockaddr *addr, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg,
                     struct sockaddr_storage *bound)
{
    if (cb == NULL || addr == NULL || bound == NULL ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return -EINVAL;
    if (conn_hooked(c))
        return -EALREADY;
    if (!conn_is_open(c))
        return -EPIPE;
    listen_once_t *o = calloc(1, sizeof *o);
    if (o == NULL)
        return -ENOMEM;
    int fd = bind_listen_socket(addr, bound);
    if (fd < 0) {
        free(o);
        return fd;
    }
    int rc = uv_poll_init(conn_loop(c), &o->poll, fd);
    if (rc) {
        close(fd);
        free(o);
        return rc;
    }
    o->c = c;
    o->fd = fd;
    o->allow = allow;
    o->cb = cb;
    o->arg = arg;
    o->poll.data = o;
    uv_timer_init(conn_loop(c), &o->timer);
    o->timer.data = o;
    o->pending = 2;
    unmap(bound);
    conn_ref(c);
    conn_set_hooks(c, &listen_hooks, o);
    uv_poll_start(&o->poll, UV_READABLE, on_readable);
    if (timeout_ms)
        uv_timer_start(&o->timer, on_deadline, timeout_ms, 0);
    return 0;
}
