/*
 * A worker without plugins or a master, for unit tests of the connection core: a real uv
 * loop, a listener whose "plugin" is a descriptor the test defines (no .so), shared stats in
 * plain memory, and TCP socket pairs over loopback. Each test calls fx_end(), which closes
 * what is left and checks that the loop closes cleanly.
 */
#ifndef BERTH_TEST_CONN_FIXTURE_H
#define BERTH_TEST_CONN_FIXTURE_H

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <linux/sockios.h>
#include <poll.h>
#include <sys/ioctl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "worker/conn.h"
#include "worker/host.h"
#include "worker/worker.h"

#define FX_BASE 1000 /* the listener's `active` before the test: conns give slots back */

typedef struct fx {
    worker_t w;
    berth_listener_t ls[2]; /* two listeners of the same plugin, slots 3 and 4 */
    config_listener_t lc[2];
    berth_listener_t *l; /* the first */
    plugin_t plugin;
    stats_t *stats;
} fx_t;

static const berth_host_t *const H = &berth_host_table;

static inline void fx_init(fx_t *f, const berth_handler_t *desc, uint64_t idle_ms)
{
    memset(f, 0, sizeof *f);
    f->stats = calloc(1, sizeof *f->stats);
    assert_non_null(f->stats);
    assert_int_equal(uv_loop_init(&f->w.loop), 0);
    f->w.st = &f->stats->workers[0];
    atomic_store(&f->w.st->cur_listener, -1);
    f->w.readbuf_size = 64 * 1024;
    f->w.readbuf = malloc(f->w.readbuf_size);
    f->plugin.desc = *desc;
    for (int i = 0; i < 2; i++) {
        config_listener_t *lc = &f->lc[i];
        berth_listener_t *l = &f->ls[i];
        lc->name = (char *)(i ? "test2" : "test");
        lc->protocol = BERTH_PROTO_TCP;
        lc->idle_timeout = idle_ms;
        lc->write_buffer = 256 * 1024;
        lc->concurrency = 1024;
        l->w = &f->w;
        l->cfg = lc;
        l->plugin = &f->plugin;
        l->fd = -1;
        l->slot = 3 + i;
        l->st = &f->stats->listeners[l->slot];
        l->stream = 1;
        atomic_store(&l->st->active, FX_BASE);
        atomic_store(&f->w.st->active_by_listener[l->slot], FX_BASE);
    }
    f->l = &f->ls[0];
    f->w.listeners = f->ls;
    f->w.nlisteners = 2;
    atomic_store(&f->w.st->active, FX_BASE);
    conn_pool_init(&f->w);
}

static inline void fx_walk_close(uv_handle_t *h, void *arg)
{
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static inline void fx_end(fx_t *f)
{
    uv_run(&f->w.loop, UV_RUN_NOWAIT);
    assert_int_equal(f->w.nconns, 0);
    assert_null(f->w.conns);
    /* Every conn gave its slot back. */
    assert_int_equal(atomic_load(&f->ls[0].st->active), FX_BASE);
    assert_int_equal(atomic_load(&f->ls[1].st->active), FX_BASE);
    /* Every conn's socket left the worker's set. */
    assert_int_equal(f->w.io.nused, 0);
    assert_null(f->w.io.post_head);
    io_loop_close(&f->w.io);
    uv_walk(&f->w.loop, fx_walk_close, NULL);
    uv_run(&f->w.loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->w.loop), 0);
    free(f->w.readbuf);
    free(f->stats);
}

/* A listening TCP socket on 127.0.0.1, any port. */
static inline int fx_listen(struct sockaddr_in *addr)
{
    int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(s >= 0);
    int one = 1; /* accepted sockets inherit it, as from berthd's listeners */
    setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    memset(addr, 0, sizeof *addr);
    addr->sin_family = AF_INET;
    addr->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(s, (struct sockaddr *)addr, sizeof *addr), 0);
    assert_int_equal(listen(s, 16), 0);
    socklen_t len = sizeof *addr;
    assert_int_equal(getsockname(s, (struct sockaddr *)addr, &len), 0);
    return s;
}

static inline int fx_accept(int ls)
{
    int fd = accept4(ls, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    assert_true(fd >= 0);
    return fd;
}

/* A connected TCP pair: *client is the test's end, the accepted end becomes a conn of
 * listener `which`. */
static inline berth_conn_t *fx_conn_on(fx_t *f, int which, int *client)
{
    berth_listener_t *l = &f->ls[which];
    struct sockaddr_in a;
    int ls = fx_listen(&a);
    int c = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_int_equal(connect(c, (struct sockaddr *)&a, sizeof a), 0);
    struct sockaddr_storage peer;
    socklen_t plen = sizeof peer;
    int fd = accept4(ls, (struct sockaddr *)&peer, &plen, SOCK_CLOEXEC | SOCK_NONBLOCK);
    assert_true(fd >= 0);
    close(ls);
    atomic_fetch_add(&l->st->active, 1); /* what worker.c's slot_reserve does */
    atomic_fetch_add(&f->w.st->active, 1);
    atomic_fetch_add(&f->w.st->active_by_listener[l->slot], 1);
    berth_conn_t *conn = conn_new(&f->w, l, CONN_STREAM, (struct sockaddr *)&peer, plen);
    assert_non_null(conn);
    assert_int_equal(conn_start_stream(conn, fd), 0);
    *client = c;
    return conn;
}

static inline berth_conn_t *fx_conn(fx_t *f, int *client)
{
    return fx_conn_on(f, 0, client);
}

/* Run the loop until *flag is set (every wait is on an event, no wall-clock bound). */
static inline void fx_run_until(fx_t *f, const int *flag)
{
    while (!*flag)
        uv_run(&f->w.loop, UV_RUN_ONCE);
}

/* Read from the test's end of a socket while running the loop: up to `len` bytes, until EOF
 * (returns the count) or an error (returns -errno). */
static inline ssize_t fx_read(fx_t *f, int fd, char *buf, size_t len)
{
    size_t got = 0;
    while (got < len) {
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        /* Wait for our socket or for the loop's next event, whichever comes first. */
        struct pollfd p[2] = {{fd, POLLIN, 0}, {uv_backend_fd(&f->w.loop), POLLIN, 0}};
        if (poll(p, 2, uv_backend_timeout(&f->w.loop)) <= 0 ||
            !(p[0].revents & (POLLIN | POLLHUP | POLLERR)))
            continue;
        ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n == 0)
            return (ssize_t)got;
        if (n < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        got += (size_t)n;
    }
    return (ssize_t)got;
}

/* Everything the test sent on fd is in the peer's socket (acknowledged), none left in ours:
 * no later arrival can give the peer a new edge. */
static inline void fx_wait_acked(int fd)
{
    int unacked = -1;
    for (int i = 0; i < 500 && unacked != 0; i++) {
        assert_int_equal(ioctl(fd, SIOCOUTQ, &unacked), 0);
        if (unacked)
            poll(NULL, 0, 10);
    }
    assert_int_equal(unacked, 0);
}

/* Read up to len bytes from fd while running the loop, until they are in or nothing has
 * moved (no bytes, no event for the loop) for 50 polls of 20 ms. */
static inline size_t fx_read_until_quiet(fx_t *f, int fd, char *buf, size_t len)
{
    size_t got = 0;
    int quiet = 0;
    while (got < len && quiet < 50) {
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
        struct pollfd p[2] = {{fd, POLLIN, 0}, {uv_backend_fd(&f->w.loop), POLLIN, 0}};
        poll(p, 2, 20);
        ssize_t n = recv(fd, buf + got, len - got, MSG_DONTWAIT);
        if (n > 0) {
            got += (size_t)n;
            quiet = 0;
        } else if (!(p[1].revents & POLLIN)) {
            quiet++;
        }
    }
    return got;
}

/* Wait for EOF (0) or a reset (-ECONNRESET) on the test's end, discarding data. */
static inline int fx_wait_end(fx_t *f, int fd)
{
    char buf[4096];
    for (;;) {
        ssize_t n = fx_read(f, fd, buf, sizeof buf);
        if (n <= 0)
            return (int)n;
        if ((size_t)n < sizeof buf)
            return 0;
    }
}

#endif
