/*
 * The connection core. conn.c alone owns `struct berth_conn` (it is opaque everywhere else):
 * its socket, its lifetime, its I/O, its timers and pool work. What builds on a conn
 * (relay, outbound) uses the functions below and the one hook slot a conn has; plugin calls
 * made from here go through conn_plugin_enter/leave, which record the hook being run in
 * shared memory for the master's crash report.
 *
 * Lifetime: a conn is freed once its socket has closed (it lives in the worker's
 * edge-triggered set, io.h, not in a libuv stream), every ref (pending work, connect, a
 * callback in progress) has been given back, and finish() has run.
 */
#ifndef BERTH_CONN_H
#define BERTH_CONN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "berth/handler.h"
#include "core/stats.h"
#include "worker/worker.h"

typedef enum conn_kind { CONN_STREAM, CONN_DGRAM, CONN_OUTBOUND } conn_kind_t;

/* What a module on top of a conn (a relay, an outbound connect) hears of it. A conn has one
 * hook slot; every member MAY be NULL. */
typedef struct conn_hooks {
    /* The conn begins to end (close, abort, drain deadline): let go of it. */
    void (*on_close)(berth_conn_t *c, void *arg);
    /* The last queued write completed. */
    void (*on_writes_done)(berth_conn_t *c, void *arg);
    /* With conn_watch_read() on: the socket is readable (or at EOF or in error); the hook
     * reads it itself, from conn_fd(). It returns nonzero when it read the socket dry (a
     * read said EAGAIN, or gave less than asked for), 0 when more may be waiting: the conn
     * then calls it again (after other sockets' turns) for as long as it watches. */
    int (*on_readable)(berth_conn_t *c, void *arg);
    /* On a conn with a layer (TLS) and a hook that takes its input: the layer's plaintext
     * (the socket is read by the conn, not the hook); data NULL and len 0 at the peer's EOF. */
    void (*on_data)(berth_conn_t *c, void *arg, const void *data, size_t len);
    /* Set: the hook owns the socket's input; the plugin's handle() is no longer called. */
    unsigned takes_input : 1;
} conn_hooks_t;

/* ---- creating and ending ---- */

/* A conn of listener l. A stream or datagram conn holds one of the listener's concurrency
 * slots (given back through worker_conn_gone); an outbound one does not. */
berth_conn_t *conn_new(worker_t *w, berth_listener_t *l, conn_kind_t kind,
                       const struct sockaddr *peer, socklen_t peerlen);
/* Adopt an accepted, non-blocking socket, call setup() and start reading (with
 * proxy_protocol on: read the PROXY header first, then conn_begin). 0 or a uv error (the conn
 * is then ending on its own). */
int conn_start_stream(berth_conn_t *c, int fd);
/* The same, for a conn over its source's per_source with over_limit = wait: its handle is
 * made, then it waits (source_wait_park) instead of beginning. */
int conn_start_stream_waiting(berth_conn_t *c, int fd);
/* Does the conn hold its listener's concurrency slot (given back when it is freed)? A conn
 * waiting for its source's room does not. */
void conn_set_counted(berth_conn_t *c, int counted);
/* The pre-setup stage (a PROXY header) is over: setup(), start reading, and hand `len` bytes
 * already read past the stage to handle(). 0, or -ECONNREFUSED if setup() refused (c is
 * then ending). The hook slot MUST be empty. */
int conn_begin(berth_conn_t *c, const void *data, size_t len);
/* Before setup(): the peer is `sa` (from a PROXY header), the socket's own peer is kept as the
 * balancer's address. Once per conn. 0, -EINVAL or -ENOMEM. */
int conn_set_peer(berth_conn_t *c, const struct sockaddr *sa, socklen_t len);
/* c holds a connection in per-source table entry `entry` (-1: none): given back when c ends. */
void conn_hold_source(berth_conn_t *c, int32_t entry);
/* The balancer's address if conn_set_peer replaced the peer, else NULL (*len 0). */
const struct sockaddr *conn_balancer_addr(const berth_conn_t *c, socklen_t *len);
/* One datagram: setup(), handle(), and the conn ends once nothing is pending on it. */
void conn_datagram(berth_conn_t *c, const void *data, size_t len);
/* How an outbound connect ended: 0, or a negative errno (-ECANCELED: the conn ended first). */
typedef void (*conn_connect_cb)(berth_conn_t *c, void *arg, int status);
/* An outbound conn: a TCP socket connecting to the address given to conn_new(); `cb` is
 * called from the loop, never from inside this call. 0, or a negative errno (the conn is
 * then gone). */
int conn_connect(berth_conn_t *c, conn_connect_cb cb, void *arg);
/* A connect succeeded: learn the local address; TCP_NODELAY follows with conn_sending(). */
void conn_connected(berth_conn_t *c, struct sockaddr_storage *local);
/* `len` bytes are about to be sent on the socket by other means than conn_write (a splice):
 * sets an outbound socket's TCP_NODELAY when Nagle could delay them (see conn.c). */
void conn_sending(berth_conn_t *c, size_t len);
/* An outbound conn over a socket accepted for it (host->listen_once): the fd becomes its
 * handle (closed here on error, the conn then ending on its own). 0 or a uv error. */
int conn_adopt(berth_conn_t *c, int fd);
/* The connect's callbacks are over (the plugin has had the peer): from here the conn reads
 * only for a hook that takes its input. MUST follow a successful connect. */
void conn_connect_done(berth_conn_t *c);
/* Graceful: flush, half-close, linger for the peer's EOF. Idempotent. */
void conn_close(berth_conn_t *c);
/* Now, dropping queued writes (TCP: a reset). */
void conn_abort(berth_conn_t *c);
/* The drain deadline: abort every conn of w. */
void conn_abort_all(worker_t *w);
/* Keep c allocated across something pending (work, connect, a callback). */
void conn_ref(berth_conn_t *c);
/* Give it back; may free c. */
void conn_unref(berth_conn_t *c);

/* ---- hooks ---- */

/* Fill c's hook slot (it must be empty), or empty it (hooks NULL). */
void conn_set_hooks(berth_conn_t *c, const conn_hooks_t *hooks, void *arg);
/* The hook slot is filled; by a hook that takes the input. */
int conn_hooked(const berth_conn_t *c);
int conn_taken(const berth_conn_t *c);
/* The arg of c's hook slot if `hooks` fills it, else NULL. */
void *conn_hooks_arg(const berth_conn_t *c, const conn_hooks_t *hooks);
/* For a hook that takes input: be told when the socket is readable, or not. */
void conn_watch_read(berth_conn_t *c, int on);
/* Record that the peer's EOF was seen (or that nothing more is to be said to it), so a
 * close does not linger for it. */
void conn_mark_eof(berth_conn_t *c);
/* The peer has sent TCP urgent data (a splice cannot read past its mark: see relay.c). */
int conn_urgent(const berth_conn_t *c);

/* ---- I/O (the host table's calls) ---- */

int conn_write(berth_conn_t *c, const void *data, size_t len);
int conn_shutdown(berth_conn_t *c);
void conn_pause(berth_conn_t *c);
void conn_resume(berth_conn_t *c);
size_t conn_write_queue_size(const berth_conn_t *c);
berth_timer_t *conn_timer_start(berth_conn_t *c, uint64_t ms, berth_timer_cb cb, void *arg);
void conn_timer_stop(berth_timer_t *timer);
/* Re-arm a timer that has not fired: it fires `ms` from now (host->timer_restart). */
void conn_timer_restart(berth_timer_t *timer, uint64_t ms);
/* Pool work for c; -EAGAIN when its listener has WORK_QUEUE_MAX items queued or running. */
int conn_work(berth_conn_t *c, berth_work_fn work, berth_done_cb done, void *arg);
#define WORK_QUEUE_MAX 64
/* Size the thread pool before any work is queued (UV_THREADPOOL_SIZE, unless the
 * environment sets it): 4 + one per listener, at most 16; and how many of its threads one
 * listener may hold at once, so one plugin's slow work cannot starve another's. */
void conn_pool_init(worker_t *w);

/* ---- facts ---- */

worker_t *conn_worker(const berth_conn_t *c);
berth_listener_t *conn_listener(const berth_conn_t *c);
conn_kind_t conn_kind(const berth_conn_t *c);
uv_loop_t *conn_loop(const berth_conn_t *c);
/* Not closing nor closed: new work may start on it. */
int conn_is_open(const berth_conn_t *c);
int conn_eof(const berth_conn_t *c);
/* Plugin writes queued and not yet completed. */
unsigned conn_writes_pending(const berth_conn_t *c);
/* The socket, or -1 (datagram conns, a closed handle). */
int conn_fd(const berth_conn_t *c);
void *conn_state(berth_conn_t *c);
const struct sockaddr *conn_peer_addr(const berth_conn_t *c, socklen_t *len);
const struct sockaddr *conn_local_addr(const berth_conn_t *c, socklen_t *len);
/* A datagram's local address when it is not the socket's: the multicast group it was sent
 * to. Left to getsockname (conn_local_addr) if out of memory. */
void conn_set_local(berth_conn_t *c, const struct sockaddr *sa, socklen_t len);
const char *conn_name(const berth_conn_t *c);
void conn_touch(berth_conn_t *c);
void conn_count_in(berth_conn_t *c, size_t n);
void conn_count_out(berth_conn_t *c, size_t n);

/* ---- a layer between the socket and the plugin (TLS, tls.c) ----
 * The layer reads what the conn reads and writes through conn_write_wire(); conn_write()
 * goes through the layer. */

/* Bytes as they go on the socket. */
int conn_write_wire(berth_conn_t *c, const void *data, size_t len);
/* The layer's handshake is done: setup(). 0, or an error when the conn is ending. */
int conn_layer_ready(berth_conn_t *c);
/* Plaintext for the plugin's handle(), or for a hook's on_data. */
void conn_layer_deliver(berth_conn_t *c, const void *data, size_t len);
/* The end of the peer's plaintext (its close_notify, or the TCP EOF): the plugin's eof(), a
 * relay's on_data, or a close before setup. */
void conn_layer_eof(berth_conn_t *c);
/* Would the conn read now (no pause, no backpressure, not closing)? */
int conn_input_wanted(const berth_conn_t *c);
int conn_is_tls(const berth_conn_t *c);
/* host->tls_info: 0, -ENOTSUP without TLS, -EAGAIN before the handshake completed. */
int conn_tls_info(const berth_conn_t *c, berth_tls_info_t *info);

/* ---- calling plugin code ---- */

/* Before every call into a plugin: record the hook and listener in the worker's shared
 * stats (two relaxed stores, no syscall); after it, put back what was there (a plugin call
 * may nest: close() inside handle() runs finish()). */
typedef struct conn_plugin_scope {
    int hook, listener;
} conn_plugin_scope_t;
conn_plugin_scope_t conn_plugin_enter(worker_t *w, const berth_listener_t *l, stats_hook_t hook);
void conn_plugin_leave(worker_t *w, conn_plugin_scope_t saved);

#endif
