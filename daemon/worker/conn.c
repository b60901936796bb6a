/*
 * The connection core: the one owner of `struct berth_conn` (see conn.h).
 *
 * Lifetime: a conn is freed only when its socket's close is done (conn_close_done, posted:
 * after the callback that closed it has returned), its pending work and connects have come back
 * (refs == 0), and finish() has run. The socket lives in the worker's edge-triggered set (io.h).
 * Bytes the socket would not take wait in the conn's write queue, copied. A graceful close flushes
 * queued writes, then half-closes and reads (discarding) until the peer's EOF or a short linger
 * bound, so the peer sees our last bytes instead of a reset caused by data it sent that we never
 * read.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/limits.h"
#include "core/log.h"
#include "berth/units.h"
#include "worker/conn.h"
#include "worker/io.h"
#include "worker/proxy_stage.h"
#include "worker/source.h"
#include "worker/tls.h"

#define LINGER_MS 2000

struct berth_conn {
    worker_t *w;
    berth_listener_t *l;
    berth_conn_t *prev, *next; /* the worker's list of live conns */
    io_t io;                   /* the socket, in the worker's edge-triggered set (io.h) */
    /* Bytes the socket would not take yet, in order; nwrites counts the entries. */
    struct write_req *wq_head, *wq_tail;
    size_t wq_bytes;
    conn_connect_cb connect_cb; /* an outbound connect not yet reported */
    void *connect_arg;
    /* The idle list of the listener, or the worker's linger list while closing (see
     * conn_timer): one timer per worker instead of one per conn. */
    berth_conn_t *qprev, *qnext;
    uint64_t last_active;      /* while closing: when the close began */
    const conn_hooks_t *hooks; /* the one hook slot: a relay, an outbound connect */
    struct tls_conn *tls;      /* the TLS layer (tls.c) between socket and plugin, or NULL */
    void *hooks_arg;
    struct conn_timer *timers;
    char *name;
    int refs; /* the handle, pending work, connect, a callback in progress */
    int plugin_pauses;
    unsigned nwrites; /* entries in the write queue */
    conn_kind_t kind;
    unsigned setup_called : 1, closing : 1, closed : 1, eof : 1, shut_wr : 1, host_paused : 1,
        reading : 1, lingering : 1, handle_init : 1, finished : 1, handled : 1, counted : 1,
        watch_read : 1, ending_hooks : 1, queue : 2, nodelay_due : 1, sent : 1;
    /* The socket's state as the edge-triggered set last said it (io.h): input may be waiting
     * (cleared only by a read that found the socket dry), a short read no longer proves it
     * dry (an EOF, an error or urgent data was seen: read on to EAGAIN); the
     * socket is closed and the close not yet finished; a half-close waits for the write queue; a
     * connect completed inside connect() itself; TCP; urgent data was seen. Output needs no
     * flag: a queue that waits is flushed at the next output edge (a short send leaves the
     * kernel owing one). */
    unsigned readable : 1, short_not_dry : 1, io_closing : 1, shut_pending : 1, connect_now : 1,
        is_tcp : 1, urgent : 1;
    socklen_t peerlen, locallen;
    /* Addresses: an IP peer inline; a named unix peer and the local address (asked for
     * rarely) on the heap, so an idle conn stays small. */
    union {
        struct sockaddr sa;
        struct sockaddr_in in;
        struct sockaddr_in6 in6;
    } peer;
    struct sockaddr_storage *peer_long, *local;
    struct sockaddr_storage *balancer; /* the socket's peer, when a PROXY header named another */
    socklen_t balancerlen;
    int32_t source; /* + 1: the per-source table entry this conn holds (0: none) */
    uint64_t born;  /* metrics: uv_now at conn_new, for the duration histogram */
    int end_why;    /* metrics: stats_closed_t + 1 once known (0: not yet) */
    _Alignas(max_align_t) unsigned char state[];
};

typedef struct conn_timer {
    uv_timer_t t;
    berth_conn_t *c;
    berth_timer_cb cb;
    void *arg;
    struct conn_timer *prev, *next;
} conn_timer_t;

typedef struct write_req {
    struct write_req *next;
    size_t len, off;
    char data[];
} write_req_t;

typedef struct work_req {
    uv_work_t req;
    struct work_req *next; /* waiting for the listener's share of the pool */
    berth_conn_t *c;
    berth_work_fn work;
    berth_done_cb done;
    void *arg;
} work_req_t;

static void conn_maybe_finish(berth_conn_t *c);
static void conn_end_handle(berth_conn_t *c);
static void timers_stop_all(berth_conn_t *c);
static void conn_update_reading(berth_conn_t *c);
static void conn_io_cb(io_t *io, unsigned events);

/* ---- calling plugin code ---- */

conn_plugin_scope_t conn_plugin_enter(worker_t *w, const berth_listener_t *l, stats_hook_t hook)
{
    conn_plugin_scope_t saved = {STATS_HOOK_NONE, -1};
    if (w == NULL || w->st == NULL)
        return saved;
    saved.hook = atomic_load_explicit(&w->st->cur_hook, memory_order_relaxed);
    saved.listener = atomic_load_explicit(&w->st->cur_listener, memory_order_relaxed);
    atomic_store_explicit(&w->st->cur_listener, l ? l->slot : -1, memory_order_relaxed);
    atomic_store_explicit(&w->st->cur_hook, (int)hook, memory_order_relaxed);
    return saved;
}

void conn_plugin_leave(worker_t *w, conn_plugin_scope_t saved)
{
    if (w == NULL || w->st == NULL)
        return;
    atomic_store_explicit(&w->st->cur_hook, saved.hook, memory_order_relaxed);
    atomic_store_explicit(&w->st->cur_listener, saved.listener, memory_order_relaxed);
}

/* The plugin hooks conn.c itself calls. */
static int call_setup(berth_conn_t *c)
{
    if (c->l->plugin->desc.setup == NULL)
        return 0;
    conn_plugin_scope_t s = conn_plugin_enter(c->w, c->l, STATS_HOOK_SETUP);
    int rc = c->l->plugin->desc.setup(c);
    conn_plugin_leave(c->w, s);
    return rc;
}

static void call_handle(berth_conn_t *c, const void *data, size_t len)
{
    conn_plugin_scope_t s = conn_plugin_enter(c->w, c->l, STATS_HOOK_HANDLE);
    c->l->plugin->desc.handle(c, data, len);
    conn_plugin_leave(c->w, s);
}

static void call_eof(berth_conn_t *c)
{
    conn_plugin_scope_t s = conn_plugin_enter(c->w, c->l, STATS_HOOK_HANDLE);
    c->l->plugin->desc.eof(c);
    conn_plugin_leave(c->w, s);
}

static void call_finish(berth_conn_t *c)
{
    conn_plugin_scope_t s = conn_plugin_enter(c->w, c->l, STATS_HOOK_FINISH);
    c->l->plugin->desc.finish(c);
    conn_plugin_leave(c->w, s);
}

/* ---- refs ---- */

void conn_ref(berth_conn_t *c)
{
    assert(!c->finished);
    c->refs++;
}

/* A datagram's conn ends once handle() has returned and no timer or work is pending on it
 * (the datagram itself holds one ref until then). May free c. */
void conn_unref(berth_conn_t *c)
{
    assert(c->refs > 0);
    c->refs--;
    if (c->kind == CONN_DGRAM && !c->closed && c->handled && c->timers == NULL && c->refs <= 1) {
        conn_close(c);
        return;
    }
    conn_maybe_finish(c);
}

static uint64_t low_watermark(const berth_conn_t *c)
{
    return c->l->cfg->write_buffer / 4;
}

berth_conn_t *conn_new(worker_t *w, berth_listener_t *l, conn_kind_t kind,
                       const struct sockaddr *peer, socklen_t peerlen)
{
    size_t extra = kind == CONN_OUTBOUND ? 0 : l->plugin->desc.conn_size;
    berth_conn_t *c = calloc(1, sizeof *c + extra);
    if (c == NULL)
        return NULL;
    c->w = w;
    c->l = l;
    c->kind = kind;
    c->counted = kind != CONN_OUTBOUND;
    if (peer && peerlen <= sizeof c->peer) {
        memcpy(&c->peer, peer, peerlen);
        c->peerlen = peerlen;
    } else if (peer && peerlen <= sizeof(struct sockaddr_storage)) {
        c->peer_long = calloc(1, sizeof *c->peer_long);
        if (c->peer_long == NULL) {
            free(c);
            return NULL;
        }
        memcpy(c->peer_long, peer, peerlen);
        c->peerlen = peerlen;
    }
    c->last_active = c->born = uv_now(&w->loop);
    c->next = w->conns;
    if (w->conns)
        w->conns->prev = c;
    w->conns = c;
    w->nconns++;
    return c;
}

/* ---- facts ---- */

static const struct sockaddr *peer_sa(const berth_conn_t *c)
{
    return c->peer_long ? (const struct sockaddr *)c->peer_long : &c->peer.sa;
}

worker_t *conn_worker(const berth_conn_t *c)
{
    return c->w;
}

berth_listener_t *conn_listener(const berth_conn_t *c)
{
    return c->l;
}

conn_kind_t conn_kind(const berth_conn_t *c)
{
    return c->kind;
}

uv_loop_t *conn_loop(const berth_conn_t *c)
{
    return &c->w->loop;
}

int conn_is_open(const berth_conn_t *c)
{
    return !c->closing && !c->closed && !c->finished;
}

int conn_eof(const berth_conn_t *c)
{
    return c->eof;
}

int conn_urgent(const berth_conn_t *c)
{
    return c->urgent;
}

unsigned conn_writes_pending(const berth_conn_t *c)
{
    return c->nwrites;
}

int conn_fd(const berth_conn_t *c)
{
    if (c->kind == CONN_DGRAM || !c->handle_init || c->closed || c->io_closing)
        return -1;
    return c->io.fd;
}

void *conn_state(berth_conn_t *c)
{
    return c->kind != CONN_OUTBOUND && c->l->plugin->desc.conn_size ? c->state : NULL;
}

const struct sockaddr *conn_peer_addr(const berth_conn_t *c, socklen_t *len)
{
    if (len)
        *len = c->peerlen;
    return peer_sa(c);
}

const struct sockaddr *conn_local_addr(const berth_conn_t *c, socklen_t *len)
{
    /* Asked for rarely: a syscall on demand, not one per connection or datagram. */
    static struct sockaddr_storage none; /* AF_UNSPEC, for a conn that cannot say */
    berth_conn_t *m = (berth_conn_t *)c;
    if (m->local == NULL)
        m->local = calloc(1, sizeof *m->local);
    if (m->local == NULL) {
        if (len)
            *len = 0;
        return (const struct sockaddr *)&none;
    }
    if (c->locallen == 0) {
        int fd = c->kind == CONN_DGRAM ? c->l->fd : conn_fd(c);
        m->locallen = sizeof *m->local;
        if (fd < 0 || getsockname(fd, (struct sockaddr *)m->local, &m->locallen) < 0)
            m->locallen = 0;
    }
    if (len)
        *len = c->locallen;
    return (const struct sockaddr *)m->local;
}

void conn_set_local(berth_conn_t *c, const struct sockaddr *sa, socklen_t len)
{
    if (c->local == NULL)
        c->local = calloc(1, sizeof *c->local);
    if (c->local == NULL || len > sizeof *c->local)
        return;
    memcpy(c->local, sa, len);
    c->locallen = len;
}

const char *conn_name(const berth_conn_t *cc)
{
    berth_conn_t *c = (berth_conn_t *)cc; /* the name is made once, on demand */
    if (c->name)
        return c->name;
    char buf[160];
    const struct sockaddr *sa = peer_sa(c);
    char ip[INET6_ADDRSTRLEN];
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(buf, sizeof buf, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(buf, sizeof buf, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else if (sa->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const void *)sa;
        size_t n = c->peerlen > offsetof(struct sockaddr_un, sun_path)
                       ? c->peerlen - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        if (n > 0 && un->sun_path[0] != '\0')
            snprintf(buf, sizeof buf, "unix:%.*s", (int)strnlen(un->sun_path, n), un->sun_path);
        else
            snprintf(buf, sizeof buf, "unix:(unnamed)");
    } else {
        snprintf(buf, sizeof buf, "(unknown)");
    }
    c->name = strdup(buf);
    return c->name ? c->name : "(no memory)";
}

/* ---- the idle and linger lists ----
 *
 * Every conn of a listener has the same idle_timeout and every closing conn the same linger
 * bound, so a list in order of last activity (a touch moves a conn to the tail) has the
 * next one due at its head, and one worker timer, set for the earliest head, serves them
 * all. */

enum { Q_NONE, Q_IDLE, Q_LINGER };

static berth_conn_t **q_head(berth_conn_t *c, int q)
{
    return q == Q_IDLE ? &c->l->idle_head : &c->w->linger_head;
}

static berth_conn_t **q_tail(berth_conn_t *c, int q)
{
    return q == Q_IDLE ? &c->l->idle_tail : &c->w->linger_tail;
}

static void q_remove(berth_conn_t *c)
{
    if (c->queue == Q_NONE)
        return;
    berth_conn_t **head = q_head(c, c->queue), **tail = q_tail(c, c->queue);
    if (c->qprev)
        c->qprev->qnext = c->qnext;
    else
        *head = c->qnext;
    if (c->qnext)
        c->qnext->qprev = c->qprev;
    else
        *tail = c->qprev;
    c->qprev = c->qnext = NULL;
    c->queue = Q_NONE;
    assert(c->w->conn_queued > 0);
    if (--c->w->conn_queued == 0 && c->w->conn_timer_init)
        uv_timer_stop(&c->w->conn_timer); /* nothing due: let the loop end */
}

static void conn_timer_arm(worker_t *w);

static void q_append(berth_conn_t *c, int q)
{
    q_remove(c);
    berth_conn_t **head = q_head(c, q), **tail = q_tail(c, q);
    int was_empty = *head == NULL;
    c->qprev = *tail;
    c->qnext = NULL;
    if (*tail)
        (*tail)->qnext = c;
    else
        *head = c;
    *tail = c;
    c->queue = q;
    c->w->conn_queued++;
    if (was_empty)
        conn_timer_arm(c->w);
}

static uint64_t due(const berth_conn_t *c)
{
    return c->last_active + (c->queue == Q_IDLE ? c->l->cfg->idle_timeout : LINGER_MS);
}

static void on_conn_timer_due(uv_timer_t *t);

static void conn_timer_arm(worker_t *w)
{
    if (!w->conn_timer_init) {
        uv_timer_init(&w->loop, &w->conn_timer);
        w->conn_timer.data = w;
        w->conn_timer_init = 1;
    }
    uint64_t next = UINT64_MAX;
    for (size_t i = 0; i < w->nlisteners; i++)
        if (w->listeners[i].idle_head && due(w->listeners[i].idle_head) < next)
            next = due(w->listeners[i].idle_head);
    if (w->linger_head && due(w->linger_head) < next)
        next = due(w->linger_head);
    if (next == UINT64_MAX) {
        uv_timer_stop(&w->conn_timer);
        return;
    }
    uint64_t now = uv_now(&w->loop);
    uv_timer_start(&w->conn_timer, on_conn_timer_due, next > now ? next - now : 0, 0);
}

void conn_touch(berth_conn_t *c)
{
    if (c->closing)
        return; /* the linger bound counts from the close */
    c->last_active = uv_now(&c->w->loop);
    if (c->queue == Q_IDLE && c->qnext)
        q_append(c, Q_IDLE);
}

void conn_count_in(berth_conn_t *c, size_t n)
{
    atomic_fetch_add_explicit(&c->l->st->bytes_in, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->w->st->bytes_in, n, memory_order_relaxed);
}

void conn_count_out(berth_conn_t *c, size_t n)
{
    atomic_fetch_add_explicit(&c->l->st->bytes_out, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&c->w->st->bytes_out, n, memory_order_relaxed);
}

/* ---- hooks ---- */

void conn_set_hooks(berth_conn_t *c, const conn_hooks_t *hooks, void *arg)
{
    assert(hooks == NULL || c->hooks == NULL);
    c->hooks = hooks;
    c->hooks_arg = hooks ? arg : NULL;
    c->watch_read = hooks && hooks->takes_input ? c->reading : 0;
    /* A hook that takes the input keeps the read registration as it is until it says what
     * it wants (conn_watch_read): stopping and restarting it costs epoll_ctl calls. */
    if (hooks == NULL || !hooks->takes_input)
        conn_update_reading(c);
}

int conn_hooked(const berth_conn_t *c)
{
    return c->hooks != NULL;
}

int conn_taken(const berth_conn_t *c)
{
    return c->hooks && c->hooks->takes_input;
}

void *conn_hooks_arg(const berth_conn_t *c, const conn_hooks_t *hooks)
{
    return c->hooks == hooks ? c->hooks_arg : NULL;
}

void conn_watch_read(berth_conn_t *c, int on)
{
    assert(c->hooks && c->hooks->takes_input);
    c->watch_read = on ? 1 : 0;
    conn_update_reading(c);
}

void conn_mark_eof(berth_conn_t *c)
{
    c->eof = 1;
}

/* Tell the hook the conn is ending, once. */
static void hooks_on_close(berth_conn_t *c)
{
    if (c->hooks && c->hooks->on_close && !c->ending_hooks) {
        c->ending_hooks = 1;
        c->hooks->on_close(c, c->hooks_arg);
        c->ending_hooks = 0;
    }
}

/* ---- reading ----
 *
 * The socket is in the worker's edge-triggered set (io.h): an event says input arrived, and
 * none comes again until more does. So the conn remembers it (readable) until a read finds
 * the socket dry, and whenever it wants input while readable, it reads, at once or through
 * io_post. That is level-triggered input, from edges, without an epoll_ctl when a pause or a
 * hook changes what the conn wants. */

#define READS_PER_EVENT 16 /* then the rest waits its turn behind other sockets */

static void conn_post(berth_conn_t *c)
{
    io_post(&c->w->io, &c->io);
}

/* The input ended or failed: what on_read did with libuv's UV_EOF and errors. */
static void conn_read_eof(berth_conn_t *c)
{
    c->eof = 1;
    c->readable = 0;
    conn_update_reading(c);
    if (c->lingering || c->closing) {
        if (c->nwrites == 0)
            conn_end_handle(c);
        return;
    }
    if (c->tls) {
        tls_conn_eof(c->tls); /* unless its close_notify already said so */
        return;
    }
    if (c->l->plugin->desc.eof)
        call_eof(c);
    else
        conn_close(c);
}

static void conn_read_error(berth_conn_t *c, int err)
{
    /* A reset or other error: nothing more can be said to this peer. */
    if (err != ECONNRESET)
        atomic_fetch_add(&c->l->st->errors, 1);
    log_debug("%s %s: read: %s", c->l->cfg->name, conn_name(c), strerror(err));
    c->eof = 1;
    c->readable = 0;
    conn_abort(c);
}

/* The conn wants input and the socket may have some. */
static void conn_read(berth_conn_t *c)
{
    worker_t *w = c->w;
    for (int i = 0; i < READS_PER_EVENT; i++) {
        if (!c->readable || !c->reading || c->io_closing)
            return;
        if (c->hooks && c->hooks->takes_input && c->tls == NULL) {
            /* The hook reads the socket itself (handle() may just have handed it over),
             * and says whether it read it dry. */
            if (c->hooks->on_readable && c->hooks->on_readable(c, c->hooks_arg) &&
                !c->short_not_dry)
                c->readable = 0;
            if (c->readable && c->reading && !c->io_closing)
                conn_post(c); /* more may be there: its turn comes again */
            return;
        }
        /* handle() returns before the next read, so one buffer per worker serves every
         * conn: an idle connection holds no read buffer. */
        ssize_t n = read(c->io.fd, w->readbuf, w->readbuf_size);
        if (n > 0) {
            conn_touch(c);
            conn_count_in(c, (size_t)n);
            /* A short read found the socket dry, unless its EOF is waiting behind. */
            if ((size_t)n < w->readbuf_size && !c->short_not_dry)
                c->readable = 0;
            if (c->lingering || c->closing)
                continue; /* discarded: we are only waiting for the peer's EOF */
            if (c->tls)
                tls_conn_input(c->tls, w->readbuf, (size_t)n);
            else
                call_handle(c, w->readbuf, (size_t)n);
            continue;
        }
        if (n == 0) {
            conn_read_eof(c);
            return;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            c->readable = 0;
            return;
        }
        conn_read_error(c, errno);
        return;
    }
    if (c->readable && c->reading && !c->io_closing)
        conn_post(c);
}

static void conn_update_reading(berth_conn_t *c)
{
    /* Datagrams are read by their listener; outbound conns only through a hook. */
    if (c->kind == CONN_DGRAM || !c->handle_init || c->closed || c->io_closing)
        return;
    int want;
    if (c->hooks && c->hooks->takes_input)
        want = c->watch_read && !c->closing;
    else if (c->kind != CONN_STREAM)
        want = 0;
    else if (c->lingering)
        want = !c->eof;
    else
        want = !c->closing && !c->eof && !c->host_paused && c->plugin_pauses == 0;
    c->reading = want ? 1 : 0;
    if (want && c->readable)
        conn_post(c); /* input that came while it was not wanted */
    if (c->tls && c->reading)
        tls_conn_kick(c->tls); /* input decrypted before a pause is delivered now */
}

/* ---- closing ---- */

static void on_timer_closed(uv_handle_t *h)
{
    free(h->data);
}

static void timers_stop_all(berth_conn_t *c)
{
    while (c->timers) {
        conn_timer_t *t = c->timers;
        c->timers = t->next;
        t->t.data = t;
        uv_close((uv_handle_t *)&t->t, on_timer_closed);
    }
}

static void wq_free(berth_conn_t *c)
{
    while (c->wq_head) {
        write_req_t *r = c->wq_head;
        c->wq_head = r->next;
        free(r);
    }
    c->wq_tail = NULL;
    c->wq_bytes = 0;
    c->nwrites = 0;
}

/* The socket was closed (conn_end_handle) and the loop has come round: what uv_close's
 * callback did. A connect still pending hears it was cancelled first. */
static void conn_close_done(berth_conn_t *c)
{
    if (c->connect_cb) {
        conn_connect_cb cb = c->connect_cb;
        c->connect_cb = NULL;
        cb(c, c->connect_arg, -ECANCELED);
    }
    c->closed = 1;
    conn_unref(c);
}

/* Close the socket now (queued writes are dropped); the conn's end completes through
 * io_post, as uv_close did. */
static void conn_end_handle(berth_conn_t *c)
{
    q_remove(c);
    timers_stop_all(c);
    if (c->kind == CONN_DGRAM) {
        if (!c->closed) {
            c->closed = 1;
            conn_unref(c);
        }
        return;
    }
    if (!c->handle_init || c->io_closing)
        return;
    c->reading = 0;
    hooks_on_close(c); /* a relay ends here, which may close this handle itself */
    if (c->io_closing)
        return;
    c->io_closing = 1;
    io_stop(&c->w->io, &c->io);
    close(c->io.fd);
    c->io.fd = -1;
    wq_free(c);
    conn_post(c);
}

/* All queued writes are out and we are closing: linger for the peer's EOF, or end now. */
static void conn_flushed(berth_conn_t *c)
{
    if (c->eof || c->kind == CONN_OUTBOUND || c->lingering) {
        conn_end_handle(c);
        return;
    }
    int fd = conn_fd(c);
    if (fd >= 0)
        shutdown(fd, SHUT_WR);
    c->lingering = 1;
    conn_update_reading(c);
}

/* What every way of ending a conn starts with. Returns 1 if that already ended it (a
 * datagram's conn has no handle to flush or close). */
static int conn_begin_end(berth_conn_t *c)
{
    c->closing = 1;
    if (c->hooks && !c->hooks->takes_input)
        hooks_on_close(c); /* an outbound connect is cancelled */
    if (c->kind != CONN_DGRAM)
        return 0;
    conn_end_handle(c);
    return 1;
}

/* metrics: the first reason a conn is given for its end is the one counted. */
static void conn_end_why(berth_conn_t *c, stats_closed_t why)
{
    if (c->end_why == 0)
        c->end_why = (int)why + 1;
}

void conn_close(berth_conn_t *c)
{
    if (c->closing || c->closed)
        return;
    conn_end_why(c, STATS_CLOSED_EOF);
    if (c->tls && !c->shut_wr)
        tls_conn_close_notify(c->tls);
    if (conn_begin_end(c))
        return;
    conn_update_reading(c);
    /* Bounds both the flush and the linger that follows it. */
    if (c->handle_init) {
        c->last_active = uv_now(&c->w->loop);
        q_append(c, Q_LINGER);
    }
    if (c->nwrites == 0)
        conn_flushed(c);
}

void conn_abort(berth_conn_t *c)
{
    if (c->closed)
        return;
    conn_end_why(c, STATS_CLOSED_ERROR);
    if (conn_begin_end(c))
        return;
    int fd;
    if (!c->eof && c->handle_init && c->is_tcp && (fd = conn_fd(c)) >= 0) {
        struct linger lg = {1, 0}; /* a reset: the peer must not take this for a clean end */
        setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    conn_end_handle(c);
}

void conn_abort_all(worker_t *w)
{
    /* A datagram's conn is freed inside conn_abort: step on before. */
    for (berth_conn_t *c = w->conns, *next; c; c = next) {
        next = c->next;
        conn_end_why(c, STATS_CLOSED_DRAIN);
        conn_abort(c);
    }
}

/* The earliest idle timeout or linger bound is due. */
static void on_conn_timer_due(uv_timer_t *t)
{
    worker_t *w = t->data;
    uint64_t now = uv_now(&w->loop);
    berth_conn_t *c;
    for (size_t i = 0; i < w->nlisteners; i++) {
        berth_listener_t *l = &w->listeners[i];
        while ((c = l->idle_head) != NULL && due(c) <= now) {
            atomic_fetch_add(&l->st->idle_closed, 1);
            conn_end_why(c, STATS_CLOSED_IDLE);
            log_debug("%s %s: idle for %llu ms, closing", l->cfg->name, conn_name(c),
                      (unsigned long long)l->cfg->idle_timeout);
            q_remove(c);
            conn_close(c);
        }
    }
    /* The linger bound: the peer neither read our last bytes nor closed. */
    while ((c = w->linger_head) != NULL && due(c) <= now)
        conn_abort(c);
    conn_timer_arm(w);
}

static void conn_maybe_finish(berth_conn_t *c)
{
    if (!c->closed || c->refs > 0 || c->finished)
        return;
    c->finished = 1;
    timers_stop_all(c);
    if (c->setup_called && c->l->plugin->desc.finish)
        call_finish(c);
    assert(c->timers == NULL);
    worker_t *w = c->w;
    if (c->prev)
        c->prev->next = c->next;
    else
        w->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    w->nconns--;
    berth_listener_t *l = c->l;
    int counted = c->counted;
    if (counted)
        stats_conn_closed(l->st, c->end_why ? c->end_why - 1 : STATS_CLOSED_EOF,
                          uv_now(&w->loop) - c->born);
    tls_conn_free(c->tls);
    if (c->source)
        limits_release(w->slot, c->source - 1);
    free(c->name);
    free(c->peer_long);
    free(c->local);
    free(c->balancer);
    free(c);
    if (counted)
        worker_conn_gone(w, l);
    else if (w->draining && w->nconns == 0)
        worker_conn_gone(w, NULL);
}

/* ---- starting ---- */

static int conn_setup(berth_conn_t *c)
{
    c->setup_called = 1;
    int rc = call_setup(c);
    if (rc) {
        atomic_fetch_add(&c->l->st->refused_limit, 1);
        log_debug("%s %s: refused by the plugin: %s", c->l->cfg->name, conn_name(c),
                  strerror(rc < 0 ? -rc : rc));
    }
    return rc;
}

/* tcp_congestion: the listener's congestion control on one of its TCP sockets. A refusal
 * (EPERM: a name outside tcp_allowed_congestion_control, for a worker without
 * CAP_NET_ADMIN) leaves the kernel's default and is said once per worker, not per conn. */
static void set_congestion(berth_conn_t *c, int fd)
{
    static int warned;
    const char *cc = c->l->cfg->tcp_congestion;
    if (cc[0] == '\0' || fd < 0)
        return;
    if (setsockopt(fd, IPPROTO_TCP, TCP_CONGESTION, cc, (socklen_t)strlen(cc)) == 0 || warned)
        return;
    warned = 1;
    log_warn("%s %s: tcp_congestion %s: %s (the kernel's default is used)", c->l->cfg->name,
             conn_name(c), cc, strerror(errno));
}

/* The socket (non-blocking already: accept4, socket() or listen_once made it so) joins the
 * worker's set. It holds the conn until its close is done. On failure the socket is closed
 * and the conn ends on its own, after the caller is done with it. */
static int conn_attach(berth_conn_t *c, int fd, int is_tcp)
{
    c->refs = 1;
    c->closed = 0;
    c->is_tcp = is_tcp ? 1 : 0;
    c->handle_init = 1;
    int rc = io_start(&c->w->io, &c->w->loop, &c->io, fd, conn_io_cb);
    if (rc) {
        close(fd);
        c->io.fd = -1;
        c->io_closing = 1;
        conn_post(c);
    }
    return rc;
}

static int stream_open(berth_conn_t *c, int fd)
{
    int is_tcp = c->l->cfg->protocol == BERTH_PROTO_TCP;
    int rc = conn_attach(c, fd, is_tcp);
    if (rc)
        return rc;
    if (is_tcp)
        set_congestion(c, fd); /* TCP_NODELAY comes from the listener */
    if (c->l->cfg->idle_timeout)
        q_append(c, Q_IDLE);
    return 0;
}

void conn_set_counted(berth_conn_t *c, int counted)
{
    assert(c->kind != CONN_OUTBOUND);
    c->counted = counted ? 1 : 0;
}

int conn_start_stream_waiting(berth_conn_t *c, int fd)
{
    int rc = stream_open(c, fd);
    if (rc == 0)
        source_wait_park(c, NULL, 0);
    return rc;
}

int conn_start_stream(berth_conn_t *c, int fd)
{
    int rc = stream_open(c, fd);
    if (rc)
        return rc;
    if (c->l->cfg->proxy_protocol) {
        proxy_stage_start(c); /* it calls conn_begin once the header is in */
        return 0;
    }
    conn_begin(c, NULL, 0);
    return 0;
}

int conn_begin(berth_conn_t *c, const void *data, size_t len)
{
    assert(c->kind == CONN_STREAM && !c->setup_called && c->hooks == NULL);
    if (c->l->tls) {
        /* setup() waits for the handshake: tls.c calls conn_layer_ready(). Bytes that came
         * with a PROXY header are the first of the handshake. */
        c->tls = tls_conn_new(c);
        if (c->tls == NULL) {
            atomic_fetch_add(&c->l->st->refused_limit, 1);
            conn_abort(c);
            return -ENOMEM;
        }
        conn_update_reading(c);
        if (len > 0)
            tls_conn_input(c->tls, data, len);
        return 0;
    }
    if (conn_setup(c)) {
        conn_abort(c);
        return -ECONNREFUSED;
    }
    conn_update_reading(c);
    if (len > 0 && !c->closing && !c->closed)
        call_handle(c, data, len);
    return 0;
}

int conn_set_peer(berth_conn_t *c, const struct sockaddr *sa, socklen_t len)
{
    assert(!c->setup_called);
    if (len > sizeof(struct sockaddr_storage) || c->balancer)
        return -EINVAL;
    struct sockaddr_storage *b = calloc(1, sizeof *b);
    if (b == NULL)
        return -ENOMEM;
    memcpy(b, peer_sa(c), c->peerlen);
    if (len <= sizeof c->peer) {
        free(c->peer_long);
        c->peer_long = NULL;
        memcpy(&c->peer, sa, len);
    } else {
        if (c->peer_long == NULL && (c->peer_long = calloc(1, sizeof *c->peer_long)) == NULL) {
            free(b);
            return -ENOMEM;
        }
        memcpy(c->peer_long, sa, len);
    }
    c->balancer = b;
    c->balancerlen = c->peerlen;
    c->peerlen = len;
    free(c->name); /* made again, from the new peer, the next time a line names it */
    c->name = NULL;
    return 0;
}

void conn_hold_source(berth_conn_t *c, int32_t entry)
{
    assert(c->source == 0);
    c->source = entry >= 0 ? entry + 1 : 0;
}

const struct sockaddr *conn_balancer_addr(const berth_conn_t *c, socklen_t *len)
{
    if (len)
        *len = c->balancer ? c->balancerlen : 0;
    return (const struct sockaddr *)c->balancer;
}

void conn_datagram(berth_conn_t *c, const void *data, size_t len)
{
    c->refs = 1; /* the datagram itself, dropped by conn_end_handle */
    conn_ref(c);
    conn_count_in(c, len);
    if (conn_setup(c) == 0 && !c->closing)
        call_handle(c, data, len);
    c->handled = 1;
    conn_unref(c);
}

int conn_connect(berth_conn_t *c, conn_connect_cb cb, void *arg)
{
    assert(c->kind == CONN_OUTBOUND && !c->handle_init);
    c->refs = 1; /* the socket, from here to its close (or now, on failure) */
    const struct sockaddr *sa = peer_sa(c);
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        c->closed = 1;
        conn_unref(c);
        return -e;
    }
    set_congestion(c, fd);
    int now = connect(fd, sa, c->peerlen) == 0;
    if (!now && errno != EINPROGRESS) {
        int e = errno;
        close(fd);
        c->closed = 1;
        conn_unref(c);
        return -e;
    }
    /* One EPOLL_CTL_ADD for all the socket will be watched for: the connect's completion
     * (output), the relay's input after it, and the peer's EOF. */
    c->is_tcp = 1;
    c->handle_init = 1;
    int rc = io_start(&c->w->io, &c->w->loop, &c->io, fd, conn_io_cb);
    if (rc) {
        close(fd);
        c->io.fd = -1;
        c->handle_init = 0;
        c->closed = 1;
        conn_unref(c);
        return rc;
    }
    c->connect_cb = cb;
    c->connect_arg = arg;
    if (now) {
        c->connect_now = 1; /* reported from the loop, never from inside this call */
        conn_post(c);
    }
    return 0;
}

/* The connect completed (or failed): tell its owner. No getsockopt(SO_ERROR) on success:
 * writable without an error or hang-up means connected. */
static void conn_connect_report(berth_conn_t *c, unsigned events)
{
    int status = 0;
    if (events & (IO_ERR | IO_HUP)) {
        /* An error or a hang-up: the socket says whether the connect failed. A peer that
         * accepted, wrote and closed at once brings its EOF with the connect (RDHUP and
         * OUT, no error): that is a connection, and its bytes are read after. */
        int err = 0;
        socklen_t len = sizeof err;
        if (getsockopt(c->io.fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
            err = errno;
        if (err)
            status = -err;
        else if (!(events & IO_OUT))
            status = -ECONNREFUSED;
    }
    conn_connect_cb cb = c->connect_cb;
    c->connect_cb = NULL;
    cb(c, c->connect_arg, status);
}

void conn_connect_done(berth_conn_t *c)
{
    conn_update_reading(c); /* from here it reads only for a hook that takes its input */
}

void conn_connected(berth_conn_t *c, struct sockaddr_storage *local)
{
    socklen_t len = sizeof *local;
    memset(local, 0, sizeof *local);
    if (getsockname(c->io.fd, (struct sockaddr *)local, &len) < 0)
        memset(local, 0, sizeof *local);
    c->nodelay_due = 1; /* set by conn_sending(), when it can matter */
}

/* TCP_NODELAY on an outbound socket, set only once Nagle could hold something back. Nagle
 * delays a segment smaller than the MSS only while sent data is unacknowledged: a fresh
 * connection's first send, if it fits in the smallest MSS a TCP peer may announce (536
 * bytes), always leaves at once. So the option is set before any later send, or before a
 * first one that is bigger; a session that sends one request upstream (the common short
 * CONNECT) never pays the setsockopt, and no send waits on Nagle either way. */
#define NAGLE_SAFE_FIRST 536

void conn_sending(berth_conn_t *c, size_t len)
{
    if (!c->nodelay_due)
        return;
    if (c->sent || len > NAGLE_SAFE_FIRST) {
        c->nodelay_due = 0;
        int one = 1;
        setsockopt(c->io.fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    c->sent = 1;
}

int conn_adopt(berth_conn_t *c, int fd)
{
    assert(c->kind == CONN_OUTBOUND && !c->handle_init);
    int rc = conn_attach(c, fd, 1);
    if (rc)
        return rc;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    return 0;
}

/* ---- writing ---- */

/* A write failed: nothing more can be said to this peer. */
static void conn_write_failed(berth_conn_t *c, int err)
{
    log_debug("%s %s: write: %s", c->l->cfg->name, conn_name(c), strerror(err));
    if (err != EPIPE && err != ECONNRESET)
        atomic_fetch_add(&c->l->st->errors, 1);
    c->eof = 1;
    conn_abort(c);
}

/* The write queue has emptied: what uv_write's callbacks did. */
static void conn_writes_done(berth_conn_t *c)
{
    if (c->host_paused && c->wq_bytes <= low_watermark(c)) {
        c->host_paused = 0;
        conn_update_reading(c);
    }
    if (c->shut_pending && !c->io_closing) {
        c->shut_pending = 0;
        shutdown(c->io.fd, SHUT_WR);
    }
    if (c->closing && c->nwrites == 0)
        conn_flushed(c);
    else if (c->nwrites == 0 && c->hooks && c->hooks->on_writes_done)
        c->hooks->on_writes_done(c, c->hooks_arg);
}

#define FLUSH_IOV 64

/* The socket has room: send what is queued, in as few calls as it takes. */
static void conn_flush(berth_conn_t *c)
{
    while (c->wq_head && !c->io_closing) {
        struct iovec iov[FLUSH_IOV];
        int n = 0;
        for (write_req_t *r = c->wq_head; r && n < FLUSH_IOV; r = r->next, n++)
            iov[n] = (struct iovec){r->data + r->off, r->len - r->off};
        struct msghdr msg = {.msg_iov = iov, .msg_iovlen = (size_t)n};
        ssize_t sent = sendmsg(c->io.fd, &msg, MSG_NOSIGNAL);
        if (sent < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return; /* the socket's next output edge flushes again */
            conn_write_failed(c, errno);
            return;
        }
        size_t left = (size_t)sent;
        c->wq_bytes -= left;
        if (c->host_paused && c->wq_bytes <= low_watermark(c)) {
            c->host_paused = 0; /* below a quarter of write_buffer: read again */
            conn_update_reading(c);
        }
        while (left > 0) {
            write_req_t *r = c->wq_head;
            size_t rest = r->len - r->off;
            if (left < rest) {
                r->off += left;
                break;
            }
            left -= rest;
            c->wq_head = r->next;
            if (c->wq_head == NULL)
                c->wq_tail = NULL;
            c->nwrites--;
            free(r);
        }
    }
    if (c->wq_head == NULL && !c->io_closing)
        conn_writes_done(c);
}

/* What the worker's set says of the socket (or IO_POSTED: a read or a close to finish). */
static void conn_io_cb(io_t *io, unsigned events)
{
    berth_conn_t *c = (berth_conn_t *)((char *)io - offsetof(berth_conn_t, io));
    if (c->io_closing) {
        if (events & IO_POSTED)
            conn_close_done(c); /* may free c */
        return;
    }
    if (events & (IO_IN | IO_HUP | IO_ERR | IO_PRI))
        c->readable = 1;
    /* From here a short read is no proof of an empty socket: an EOF or an error waits
     * behind the data, or a read stops at the urgent mark with bytes after it. Reads go on
     * until EAGAIN or the EOF. */
    if (events & (IO_HUP | IO_ERR | IO_PRI))
        c->short_not_dry = 1;
    if (events & IO_PRI)
        c->urgent = 1;
    if (c->connect_cb) {
        if ((events & (IO_OUT | IO_ERR | IO_HUP)) || c->connect_now)
            conn_connect_report(c, c->connect_now ? IO_OUT : events);
        if (!c->io_closing && c->connect_cb == NULL && c->wq_head)
            conn_flush(c); /* written while connecting: the socket has room now */
        return;
    }
    if (events & (IO_OUT | IO_ERR | IO_HUP)) {
        if (c->wq_head)
            conn_flush(c);
    }
    if (c->readable && c->reading && !c->io_closing)
        conn_read(c);
}

static int dgram_send(berth_conn_t *c, const void *data, size_t len)
{
    if (c->closed)
        return -EPIPE;
    const struct sockaddr *sa = peer_sa(c);
    const struct sockaddr_un *un = (const void *)sa;
    if (sa->sa_family == AF_UNIX &&
        (c->peerlen <= offsetof(struct sockaddr_un, sun_path) || un->sun_path[0] == '\0'))
        return -EDESTADDRREQ; /* an unbound unix datagram sender cannot be answered */
    ssize_t n = sendto(c->l->fd, data, len, MSG_DONTWAIT | MSG_NOSIGNAL, sa, c->peerlen);
    if (n < 0) {
        int e = errno;
        atomic_fetch_add(&c->l->st->errors, 1);
        return -e;
    }
    conn_count_out(c, (size_t)n);
    return 0;
}

/* Bytes as they go on the socket: the plugin's on a plain conn, records on a TLS one. */
int conn_write_wire(berth_conn_t *c, const void *data, size_t len)
{
    if (c->kind == CONN_DGRAM)
        return dgram_send(c, data, len);
    if (c->closing || c->shut_wr || c->closed || !c->handle_init)
        return -EPIPE;
    if (len == 0)
        return 0;
    conn_touch(c);
    conn_sending(c, len);
    size_t off = 0;
    if (c->wq_head == NULL) {
        /* The common case, nothing queued: write straight away, no copy. */
        ssize_t n;
        do
            n = send(c->io.fd, data, len, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n >= 0) {
            off = (size_t)n;
        } else if (errno != EAGAIN && errno != EWOULDBLOCK) {
            int e = errno;
            c->eof = 1;
            conn_abort(c);
            return e == EPIPE || e == ECONNRESET ? -EPIPE : -e;
        }
        if (off == len)
            return 0;
    }
    write_req_t *r = malloc(sizeof *r + (len - off));
    if (r == NULL)
        return -ENOMEM;
    memcpy(r->data, (const char *)data + off, len - off);
    r->len = len - off;
    r->off = 0;
    r->next = NULL;
    if (c->wq_tail)
        c->wq_tail->next = r;
    else
        c->wq_head = r;
    c->wq_tail = r;
    c->wq_bytes += r->len;
    c->nwrites++;
    if (!c->host_paused && c->wq_bytes > c->l->cfg->write_buffer) {
        c->host_paused = 1;
        conn_update_reading(c);
    }
    return 0;
}

/* A write by the plugin, or by a hook that owns the conn (a relay's backlog). The caller
 * counts the bytes (a relay counts only what its client gets). */
int conn_write(berth_conn_t *c, const void *data, size_t len)
{
    if (c->tls == NULL)
        return conn_write_wire(c, data, len);
    if (c->closing || c->shut_wr || c->closed || !c->handle_init)
        return -EPIPE;
    if (len == 0)
        return 0;
    conn_touch(c);
    return tls_conn_write(c->tls, data, len);
}

int conn_shutdown(berth_conn_t *c)
{
    if (c->kind == CONN_DGRAM)
        return -ENOTSUP;
    if (c->closing || c->closed || c->io_closing || !c->handle_init)
        return -EPIPE;
    if (c->shut_wr)
        return 0;
    if (c->tls)
        tls_conn_close_notify(c->tls);
    c->shut_wr = 1;
    /* After what is queued, as uv_shutdown did. */
    if (c->wq_head)
        c->shut_pending = 1;
    else
        shutdown(c->io.fd, SHUT_WR);
    return 0;
}

void conn_pause(berth_conn_t *c)
{
    c->plugin_pauses++;
    conn_update_reading(c);
}

void conn_resume(berth_conn_t *c)
{
    assert(c->plugin_pauses > 0); /* each resume needs its pause */
    if (c->plugin_pauses > 0)
        c->plugin_pauses--;
    conn_update_reading(c);
}

size_t conn_write_queue_size(const berth_conn_t *c)
{
    if (c->kind == CONN_DGRAM || !c->handle_init || c->closed)
        return 0;
    return c->wq_bytes;
}

/* ---- timers and pool work ---- */

static void on_conn_timer(uv_timer_t *t)
{
    conn_timer_t *ct = t->data;
    berth_conn_t *c = ct->c;
    if (ct->prev)
        ct->prev->next = ct->next;
    else
        c->timers = ct->next;
    if (ct->next)
        ct->next->prev = ct->prev;
    berth_timer_cb cb = ct->cb;
    void *arg = ct->arg;
    uv_close((uv_handle_t *)&ct->t, on_timer_closed);
    conn_ref(c);
    conn_plugin_scope_t s = conn_plugin_enter(c->w, c->l, STATS_HOOK_TIMER);
    cb(c, arg);
    conn_plugin_leave(c->w, s);
    conn_unref(c);
}

berth_timer_t *conn_timer_start(berth_conn_t *c, uint64_t ms, berth_timer_cb cb, void *arg)
{
    if (c->closed || c->finished || cb == NULL)
        return NULL;
    conn_timer_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    uv_timer_init(&c->w->loop, &t->t);
    t->t.data = t;
    t->c = c;
    t->cb = cb;
    t->arg = arg;
    t->next = c->timers;
    if (c->timers)
        c->timers->prev = t;
    c->timers = t;
    uv_timer_start(&t->t, on_conn_timer, ms, 0);
    return (berth_timer_t *)t;
}

void conn_timer_restart(berth_timer_t *timer, uint64_t ms)
{
    conn_timer_t *t = (conn_timer_t *)timer;
    /* A fired timer is closed and freed: the contract forbids restarting one. */
    assert(!uv_is_closing((uv_handle_t *)&t->t));
    uv_timer_start(&t->t, on_conn_timer, ms, 0);
}

void conn_timer_stop(berth_timer_t *timer)
{
    conn_timer_t *t = (conn_timer_t *)timer;
    if (t == NULL)
        return;
    berth_conn_t *c = t->c;
    if (t->prev)
        t->prev->next = t->next;
    else
        c->timers = t->next;
    if (t->next)
        t->next->prev = t->prev;
    uv_close((uv_handle_t *)&t->t, on_timer_closed);
}

/* The pool is shared by every listener of the worker. Each listener hands at most
 * work_inflight_max items to it at once (the rest wait here, in order, up to
 * WORK_QUEUE_MAX in all), so a plugin whose work is slow (password hashing) leaves threads
 * for the others (disk writes): with L listeners and P threads, a listener holds at most
 * max(P/2, P - L + 1). */

#define POOL_MIN 4
#define POOL_MAX 16

void conn_pool_init(worker_t *w)
{
    unsigned p = 0;
    const char *env = getenv("UV_THREADPOOL_SIZE");
    if (env && *env)
        p = (unsigned)strtoul(env, NULL, 10);
    if (p == 0) {
        p = POOL_MIN + (unsigned)w->nlisteners;
        if (p > POOL_MAX)
            p = POOL_MAX;
        char text[16];
        snprintf(text, sizeof text, "%u", p);
        setenv("UV_THREADPOOL_SIZE", text, 1); /* read by libuv at the first work */
    }
    unsigned l = w->nlisteners ? (unsigned)w->nlisteners : 1;
    unsigned fair = p > l ? p - l + 1 : 1;
    w->pool_size = p;
    w->work_inflight_max = fair > p / 2 ? fair : (p / 2 ? p / 2 : 1);
}

static void on_work(uv_work_t *req);
static void on_work_done(uv_work_t *req, int status);

static int work_submit(worker_t *w, work_req_t *r)
{
    int rc = uv_queue_work(&w->loop, &r->req, on_work, on_work_done);
    if (rc == 0)
        r->c->l->work_inflight++;
    return rc;
}

static void on_work(uv_work_t *req)
{
    /* A pool thread: the loop thread's hook record is not ours to write. */
    work_req_t *r = req->data;
    r->work(r->arg);
}

static void on_work_done(uv_work_t *req, int status)
{
    work_req_t *r = req->data;
    berth_conn_t *c = r->c;
    berth_listener_t *l = c->l;
    assert(l->work_inflight > 0 && l->work_count > 0);
    l->work_inflight--;
    l->work_count--;
    /* The listener's next waiting item takes the thread share this one frees. */
    work_req_t *next = l->work_head;
    if (next) {
        l->work_head = next->next;
        if (l->work_head == NULL)
            l->work_tail = NULL;
        int rc = work_submit(c->w, next);
        assert(rc == 0); /* uv_queue_work fails only on a NULL callback */
        (void)rc;
    }
    conn_plugin_scope_t s = conn_plugin_enter(c->w, l, STATS_HOOK_WORK_DONE);
    r->done(c, r->arg, status == UV_ECANCELED ? -ECANCELED : 0);
    conn_plugin_leave(c->w, s);
    free(r);
    conn_unref(c); /* the work's own ref */
}

int conn_work(berth_conn_t *c, berth_work_fn work, berth_done_cb done, void *arg)
{
    if (c->finished || work == NULL || done == NULL)
        return -EINVAL;
    berth_listener_t *l = c->l;
    if (l->work_count >= WORK_QUEUE_MAX)
        return -EAGAIN; /* the plugin may retry later, or refuse what needed it */
    work_req_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->c = c;
    r->work = work;
    r->done = done;
    r->arg = arg;
    r->req.data = r;
    worker_t *w = c->w;
    if (w->work_inflight_max == 0)
        conn_pool_init(w); /* a worker that did not size its pool: a unit test */
    if (l->work_inflight < w->work_inflight_max) {
        int rc = work_submit(w, r);
        if (rc) {
            free(r);
            return rc;
        }
    } else {
        if (l->work_tail)
            l->work_tail->next = r;
        else
            l->work_head = r;
        l->work_tail = r;
    }
    l->work_count++;
    conn_ref(c);
    return 0;
}

/* ---- a layer between the socket and the plugin (TLS) ---- */

int conn_layer_ready(berth_conn_t *c)
{
    if (conn_setup(c)) {
        conn_abort(c);
        return -ECONNREFUSED;
    }
    return c->closing || c->closed ? -EPIPE : 0;
}

void conn_layer_deliver(berth_conn_t *c, const void *data, size_t len)
{
    if (c->closing || c->closed)
        return;
    if (c->hooks && c->hooks->on_data)
        c->hooks->on_data(c, c->hooks_arg, data, len);
    else
        call_handle(c, data, len);
}

void conn_layer_eof(berth_conn_t *c)
{
    if (c->closing || c->closed)
        return;
    if (c->hooks && c->hooks->on_data)
        c->hooks->on_data(c, c->hooks_arg, NULL, 0);
    else if (c->setup_called && c->l->plugin->desc.eof && !conn_taken(c))
        call_eof(c);
    else
        conn_close(c);
}

int conn_input_wanted(const berth_conn_t *c)
{
    if (c->closing || c->closed || c->host_paused)
        return 0;
    if (c->hooks && c->hooks->takes_input)
        return c->watch_read;
    return c->plugin_pauses == 0;
}

int conn_is_tls(const berth_conn_t *c)
{
    return c->tls != NULL;
}

int conn_tls_info(const berth_conn_t *c, berth_tls_info_t *info)
{
    if (c->tls == NULL)
        return -ENOTSUP;
    return tls_conn_info(c->tls, info);
}
