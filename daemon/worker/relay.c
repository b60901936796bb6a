/*
 * host->relay: pipe two connections both ways.
 *
 * Bytes never enter user space in the common case: each direction owns a pipe, and
 * splice(2) moves data from one socket into the pipe and from the pipe into the other socket
 * (on Linux, TCP pages are passed by reference, not copied). A direction reads only while
 * its pipe has room, so memory is bounded by the pipe size and a slow reader slows its
 * writer. EOF on one side becomes shutdown(SHUT_WR) on the other once the pipe is empty,
 * while the other direction goes on. The relay ends when both directions are done, on an
 * error, or after idle_ms without a byte either way.
 *
 * The relay adds no event registration of its own: it is a hook on both conns that takes
 * their input, so the conns' own sockets (already in the worker's set, io.h) report
 * readiness (conn_watch_read; on_readable says when a splice found a socket dry), and when a socket
 * cannot take more, the relay hands a bounded piece of the pipe to conn_write, whose completion
 * (on_writes_done) says the socket has room again.
 *
 * A TLS client cannot be spliced (its socket carries records, not the plaintext): its
 * directions copy. Down, the pipe is emptied through conn_write (which encrypts) instead of
 * splice; up, the TLS layer hands plaintext to on_data, which writes it to the peer with
 * conn_write and stops reading the client while that write is pending. kTLS (the kernel
 * doing the record layer, so splice works again) is future work.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "core/log.h"
#include "worker/relay.h"

#define RELAY_PIPE_SIZE (256 * 1024) /* asked for; the kernel may give less */
#define PIPE_POOL 64                 /* empty pipes a worker keeps for the next relays */
#define BACKLOG_MAX                                                                                \
    4096 /* handed to conn_write when a socket is full: enough to be told when it has room */
#define COPY_CHUNK 16384 /* one TLS record's worth, for a direction that copies */
#define PIPE_SLOT 4096   /* a pipe has one buffer slot per page of its size */

/* Empty pipes from ended relays: a new relay takes two instead of four syscalls more per
 * session. A worker is one thread, so a plain array serves. */
static struct {
    int fd[2];
    size_t cap;
} pipe_pool[PIPE_POOL];
static size_t pipe_pool_n;

typedef struct relay relay_t;

typedef struct relay_dir {
    berth_conn_t *from, *to;
    int pipe[2];
    size_t cap;                              /* the pipe's size */
    size_t inpipe;                           /* bytes spliced in, not yet out */
    uint64_t bytes;                          /* bytes delivered to `to` */
    unsigned eof : 1, done : 1, blocked : 1; /* blocked: a backlog write to `to` is pending */
    unsigned copy_in : 1, copy_out : 1;      /* `from` / `to` is TLS: copy, never splice */
    unsigned dry : 1; /* the last dir_fill read `from` dry (EAGAIN, a short splice, EOF) */
    unsigned inline_urgent : 1; /* SO_OOBINLINE is set on `from` (dir_past_mark) */
} relay_dir_t;

struct relay {
    relay_dir_t dir[2]; /* [0] up: client -> peer, [1] down: peer -> client */
    berth_conn_t *client, *peer;
    uv_timer_t idle;
    uint64_t idle_ms;
    uint64_t last;
    berth_relay_cb cb;
    void *arg;
    int refs; /* the relay itself, the idle timer's close */
    unsigned started : 1, ended : 1;
};

static void relay_end(relay_t *r, int error);
static void relay_update(relay_t *r);

static void relay_unref(relay_t *r)
{
    if (--r->refs > 0)
        return;
    for (int i = 0; i < 2; i++) {
        relay_dir_t *d = &r->dir[i];
        if (d->pipe[0] < 0)
            continue;
        if (d->inpipe == 0 && pipe_pool_n < PIPE_POOL) {
            pipe_pool[pipe_pool_n].fd[0] = d->pipe[0];
            pipe_pool[pipe_pool_n].fd[1] = d->pipe[1];
            pipe_pool[pipe_pool_n++].cap = d->cap;
        } else {
            close(d->pipe[0]);
            close(d->pipe[1]);
        }
    }
    free(r);
}

static void touch(relay_t *r)
{
    r->last = uv_now(conn_loop(r->client));
    conn_touch(r->client);
    conn_touch(r->peer);
}

static void delivered(relay_t *r, relay_dir_t *d, size_t n)
{
    d->bytes += (uint64_t)n;
    if (d->to == r->client)
        conn_count_out(r->client, n);
}

/* `to` is full: hand a piece of the pipe to its conn's write queue; its completion tells us
 * the socket has room again. */
static int dir_backlog(relay_t *r, relay_dir_t *d)
{
    char buf[COPY_CHUNK];
    size_t max = d->copy_out ? COPY_CHUNK : BACKLOG_MAX;
    size_t want = d->inpipe < max ? d->inpipe : max;
    ssize_t n;
    do
        n = read(d->pipe[0], buf, want);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return n < 0 ? -errno : -EIO;
    d->inpipe -= (size_t)n;
    int rc = conn_write(d->to, buf, (size_t)n);
    if (rc)
        return rc;
    delivered(r, d, (size_t)n);
    d->blocked = conn_writes_pending(d->to) > 0;
    return 0;
}

/* Move what the pipe holds into `to`. 0, or a negative errno that ends the relay. */
static int dir_flush(relay_t *r, relay_dir_t *d)
{
    while (d->copy_out && d->inpipe > 0 && !d->blocked) {
        int rc = dir_backlog(r, d);
        if (rc)
            return rc;
    }
    while (d->inpipe > 0 && !d->blocked) {
        conn_sending(d->to, d->inpipe);
        ssize_t n = splice(d->pipe[0], NULL, conn_fd(d->to), NULL, d->inpipe,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->inpipe -= (size_t)n;
            delivered(r, d, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN) {
            int rc = dir_backlog(r, d);
            if (rc)
                return rc;
            continue;
        }
        return n < 0 ? -errno : -EPIPE;
    }
    if (d->eof && !d->done && d->inpipe == 0 && !d->blocked) {
        /* Everything is out: pass the EOF on; the other direction keeps flowing. */
        if (d->copy_out)
            conn_shutdown(d->to); /* close_notify, then the TCP half-close */
        else
            shutdown(conn_fd(d->to), SHUT_WR);
        d->done = 1;
    }
    return 0;
}

/* `from` had TCP urgent data and a splice says EAGAIN: splice never reads past the urgent
 * mark (tcp_read_sock stops there), so the bytes behind it would wait for ever. A plain
 * recv does pass it; with SO_OOBINLINE the urgent byte comes in order with the rest, so the
 * destination gets every byte (its urgency is lost: a relay forwards a stream). What it
 * reads goes out through `to`'s write queue, which is why this runs only with the pipe
 * empty: nothing may overtake what is in it. 1: bytes moved (splice again), 0: dry, or a
 * negative errno. */
static int dir_past_mark(relay_t *r, relay_dir_t *d)
{
    char buf[COPY_CHUNK];
    int fd = conn_fd(d->from);
    if (!d->inline_urgent) {
        int one = 1;
        setsockopt(fd, SOL_SOCKET, SO_OOBINLINE, &one, sizeof one);
        d->inline_urgent = 1;
    }
    ssize_t n;
    do
        n = recv(fd, buf, sizeof buf, MSG_DONTWAIT);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -errno;
    if (n == 0) {
        d->eof = 1;
        conn_mark_eof(d->from);
        return 0;
    }
    if (d->from == r->client)
        conn_count_in(r->client, (size_t)n);
    touch(r);
    int rc = conn_write(d->to, buf, (size_t)n);
    if (rc)
        return rc;
    delivered(r, d, (size_t)n);
    d->blocked = conn_writes_pending(d->to) > 0;
    return 1;
}

/* Take what `from` has, as far as the pipe has room. */
static int dir_fill(relay_t *r, relay_dir_t *d)
{
    d->dry = 0;
    if (d->copy_in)
        return dir_flush(r, d); /* its input comes through relay_on_data */
    while (!d->eof && d->inpipe < d->cap) {
        size_t want = d->cap - d->inpipe;
        ssize_t n = splice(conn_fd(d->from), NULL, d->pipe[1], NULL, want,
                           SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
        if (n > 0) {
            d->inpipe += (size_t)n;
            if (d->from == r->client)
                conn_count_in(r->client, (size_t)n);
            touch(r);
            int rc = dir_flush(r, d);
            if (rc)
                return rc;
            /* Less than asked for: the socket is empty, or the pipe ran out of buffer slots
             * (each segment spliced takes at least one, whatever its size). Fewer bytes than
             * the pipe has slots cannot have used them all, so the socket is empty and a
             * second splice would only say EAGAIN; whatever comes meanwhile is a new edge
             * of the conn's socket (io.h), and a waiting EOF keeps it readable. Otherwise
             * splice again: with edges, input left behind would wait for the next arrival,
             * which a sender waiting for an answer never makes. */
            if ((size_t)n < want && (size_t)n < d->cap / PIPE_SLOT) {
                d->dry = 1;
                return 0;
            }
            continue;
        }
        if (n == 0) {
            d->eof = 1;
            d->dry = 1;
            conn_mark_eof(d->from);
            break;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN) {
            if (conn_urgent(d->from) && d->inpipe == 0 && !d->blocked) {
                int rc = dir_past_mark(r, d);
                if (rc > 0)
                    continue;
                if (rc < 0)
                    return rc;
                if (d->eof) {
                    d->dry = 1;
                    break;
                }
            }
            d->dry = 1;
            return 0;
        }
        return -errno;
    }
    return dir_flush(r, d);
}

/* After any progress: end, or say what each socket should be watched for. */
static void relay_after(relay_t *r, int rc)
{
    if (rc) {
        relay_end(r, rc);
        return;
    }
    if (r->dir[0].done && r->dir[1].done) {
        relay_end(r, 0);
        return;
    }
    relay_update(r);
}

/* A side's socket is readable (or at EOF, or in error). */
static int relay_on_readable(berth_conn_t *c, void *arg)
{
    relay_t *r = arg;
    if (r->ended || !r->started)
        return 0;
    relay_dir_t *d = &r->dir[c == r->peer];
    int rc = dir_fill(r, d);
    int dry = d->dry; /* relay_after may free r */
    relay_after(r, rc);
    return dry;
}

/* Plaintext from a TLS client (data NULL: its end): straight to the peer's write queue, and
 * the client is not read again until that write is out (relay_writes_done). */
static void relay_on_data(berth_conn_t *c, void *arg, const void *data, size_t len)
{
    relay_t *r = arg;
    relay_dir_t *d = &r->dir[0];
    (void)c;
    if (r->ended || !r->started)
        return;
    if (data == NULL) {
        d->eof = 1;
        relay_after(r, dir_flush(r, d));
        return;
    }
    conn_count_in(r->client, len);
    touch(r);
    int rc = conn_write(d->to, data, len);
    if (rc == 0) {
        delivered(r, d, len);
        d->blocked = conn_writes_pending(d->to) > 0;
    }
    relay_after(r, rc);
}

/* A side's queued writes are out: the plugin's last ones (the relay may start), or a
 * backlog (that direction may go on). */
static void relay_writes_done(berth_conn_t *c, void *arg);

/* Watch each socket for input while its direction's pipe has room. */
static void relay_update(relay_t *r)
{
    for (int i = 0; i < 2; i++) {
        relay_dir_t *out = &r->dir[i];
        conn_watch_read(i ? r->peer : r->client,
                        !out->eof && out->inpipe < out->cap && !(out->copy_in && out->blocked));
    }
}

static void on_idle_closed(uv_handle_t *h)
{
    relay_unref(h->data);
}

static void on_idle(uv_timer_t *t)
{
    relay_t *r = t->data;
    uint64_t now = uv_now(conn_loop(r->client));
    if (now - r->last >= r->idle_ms) {
        relay_end(r, UV_ETIMEDOUT);
        return;
    }
    uv_timer_start(&r->idle, on_idle, r->idle_ms - (now - r->last), 0);
}

static void relay_end(relay_t *r, int error)
{
    if (r->ended)
        return;
    r->ended = 1;
    uv_timer_stop(&r->idle);
    uv_close((uv_handle_t *)&r->idle, on_idle_closed);
    berth_conn_t *c = r->client, *p = r->peer;
    /* Nothing more is to be said to either side, so neither close lingers for an EOF. */
    conn_mark_eof(c);
    conn_mark_eof(p);
    conn_set_hooks(c, NULL, NULL);
    conn_set_hooks(p, NULL, NULL);
    if (r->cb) {
        berth_relay_stats_t st = {r->dir[0].bytes, r->dir[1].bytes, error};
        conn_plugin_scope_t sc =
            conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_RELAY);
        r->cb(c, &st, r->arg);
        conn_plugin_leave(conn_worker(c), sc);
    }
    if (error) {
        conn_abort(c);
        conn_abort(p);
    } else {
        conn_close(c);
        conn_close(p);
    }
    relay_unref(r);
}

/* A relayed conn is being closed from outside (drain deadline, abort): end the relay. */
static void relay_on_close(berth_conn_t *c, void *arg)
{
    relay_end(arg, UV_ECANCELED);
}

/* Both streams are idle now (the plugin's last writes are out): start moving bytes. */
static int relay_go(relay_t *r)
{
    if (conn_fd(r->client) < 0 || conn_fd(r->peer) < 0)
        return -EBADF;
    r->started = 1;
    touch(r);
    if (r->idle_ms)
        uv_timer_start(&r->idle, on_idle, r->idle_ms, 0);
    /* A client that half-closed before the relay: pass its EOF on at once. */
    if (r->dir[0].eof) {
        int rc = dir_flush(r, &r->dir[0]);
        if (rc)
            return rc;
    }
    relay_update(r);
    return 0;
}

static void relay_writes_done(berth_conn_t *c, void *arg)
{
    relay_t *r = arg;
    if (r->ended)
        return;
    if (!r->started) {
        if (conn_writes_pending(r->client) || conn_writes_pending(r->peer))
            return;
        int rc = relay_go(r);
        if (rc)
            relay_end(r, rc);
        return;
    }
    relay_dir_t *d = &r->dir[c == r->client]; /* the direction that writes to c */
    d->blocked = 0;
    int rc = dir_flush(r, d);
    if (rc == 0 && !d->blocked)
        rc = dir_fill(r, d); /* room again: its source may have more */
    relay_after(r, rc);
}

static const conn_hooks_t relay_hooks = {
    .on_close = relay_on_close,
    .on_writes_done = relay_writes_done,
    .on_readable = relay_on_readable,
    .on_data = relay_on_data,
    .takes_input = 1,
};

static int dir_init(relay_dir_t *d, berth_conn_t *from, berth_conn_t *to)
{
    d->from = from;
    d->to = to;
    if (pipe_pool_n > 0) {
        pipe_pool_n--;
        d->pipe[0] = pipe_pool[pipe_pool_n].fd[0];
        d->pipe[1] = pipe_pool[pipe_pool_n].fd[1];
        d->cap = pipe_pool[pipe_pool_n].cap;
        return 0;
    }
    if (pipe2(d->pipe, O_NONBLOCK | O_CLOEXEC) < 0) {
        int e = errno;
        d->pipe[0] = d->pipe[1] = -1;
        return -e;
    }
    int size = fcntl(d->pipe[1], F_SETPIPE_SZ, RELAY_PIPE_SIZE);
    if (size < 0)
        size = fcntl(d->pipe[1], F_GETPIPE_SZ);
    d->cap = size > 0 ? (size_t)size : 65536;
    return 0;
}

int relay_start(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                void *arg)
{
    if (c == NULL || peer == NULL || c == peer || conn_kind(c) != CONN_STREAM ||
        conn_kind(peer) != CONN_OUTBOUND)
        return -EINVAL;
    if (!conn_is_open(c) || !conn_is_open(peer))
        return -EPIPE;
    if (conn_hooked(c) || conn_hooked(peer))
        return -EBUSY;
    relay_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->dir[0].pipe[0] = r->dir[0].pipe[1] = r->dir[1].pipe[0] = r->dir[1].pipe[1] = -1;
    int rc = dir_init(&r->dir[0], c, peer);
    if (rc == 0)
        rc = dir_init(&r->dir[1], peer, c);
    if (rc) {
        r->refs = 1;
        relay_unref(r);
        return rc;
    }
    r->client = c;
    r->peer = peer;
    if (conn_is_tls(c)) {
        r->dir[0].copy_in = r->dir[1].copy_out = 1;
        log_debug("%s %s: relay over TLS: copying, not splicing (no kTLS)",
                  conn_listener(c)->cfg->name, conn_name(c));
    }
    r->cb = done;
    r->arg = arg;
    r->idle_ms = idle_ms;
    r->refs = 2; /* the relay, the idle timer */
    uv_timer_init(conn_loop(c), &r->idle);
    r->idle.data = r;
    /* The plugin's handle() is not called from here on; the relay moves both sides. */
    conn_set_hooks(c, &relay_hooks, r);
    conn_set_hooks(peer, &relay_hooks, r);
    /* A client that already half-closed (EOF seen by the plugin) starts that way. */
    if (conn_eof(c))
        r->dir[0].eof = 1;
    /* Writes the plugin queued just before (a reply, early data) go out first; libuv owns
     * the sockets until then. */
    if (conn_writes_pending(c) == 0 && conn_writes_pending(peer) == 0) {
        rc = relay_go(r);
        if (rc)
            relay_end(r, rc); /* done() runs with the error */
    } else {
        conn_watch_read(c, 0);
        conn_watch_read(peer, 0);
    }
    return 0;
}
