/*
 * A worker process: one libuv loop over the listening sockets the master opened, the
 * plugins loaded afresh, and the connections. Nothing here runs in the master.
 */
#ifndef BERTH_WORKER_H
#define BERTH_WORKER_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "worker/loader.h"
#include "core/stats.h"

/* What the master hands a worker it forks. */
typedef struct worker_spec {
    const berth_config_t *cfg;
    unsigned generation;
    unsigned index;
    stats_t *stats;
    int stats_slot;
    int ctl_fd;            /* SOCK_SEQPACKET to the master */
    const int *listen_fds; /* one per cfg->listeners[i] */
    const int *listen_slots;
} worker_spec_t;

struct worker;
struct conn_timer;

struct berth_listener {
    struct worker *w;
    const config_listener_t *cfg;
    plugin_t *plugin;
    void *state; /* from listener_open */
    int opened;  /* listener_open succeeded: listener_close is owed */
    int fd;
    int slot;
    stats_listener_t *st;
    int stream; /* tcp/unix: accept; udp/unixgram: datagrams */
    uv_poll_t poll;
    uv_timer_t retry; /* resume polling after the concurrency cap or EMFILE */
    unsigned poll_init : 1, polling : 1, paused : 1, retry_init : 1;
};

typedef enum conn_kind { CONN_STREAM, CONN_DGRAM, CONN_OUTBOUND } conn_kind_t;

struct relay;
struct outbound;

struct berth_conn {
    struct worker *w;
    struct berth_listener *l;
    struct berth_conn *prev, *next; /* the worker's list of live conns */
    conn_kind_t kind;
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t idle; /* idle timeout and linger bound (stream kinds) */
    uint64_t last_active;
    unsigned setup_called : 1, closing : 1, closed : 1, eof : 1, shut_wr : 1, host_paused : 1,
        reading : 1, lingering : 1, handle_init : 1, idle_init : 1, finished : 1, handled : 1,
        counted : 1;
    int plugin_pauses;
    int refs;         /* pending work, connect, relay: finish() waits for them */
    unsigned nwrites; /* uv_write requests in flight */
    struct conn_timer *timers;
    struct relay *relay;
    struct outbound *outbound;
    struct sockaddr_storage peer, local;
    socklen_t peerlen, locallen;
    char *name;
    _Alignas(max_align_t) unsigned char state[];
};

typedef struct worker {
    uv_loop_t loop;
    const berth_config_t *cfg;
    unsigned generation, index;
    stats_t *stats;
    stats_worker_t *st;
    int slot;
    int ctl_fd;
    uv_poll_t ctl;
    berth_listener_t *listeners;
    size_t nlisteners;
    plugin_t **plugins;
    size_t nplugins;
    struct berth_conn *conns; /* every live conn, for the drain deadline */
    uint64_t nconns;
    int accepting, draining, stop_now;
    uv_timer_t drain_timer;
    char *readbuf;
    size_t readbuf_size;
    int readbuf_busy;
} worker_t;

/* Run a worker to its end; returns the process exit status. */
int worker_run(const worker_spec_t *spec);

/* Load every listener's plugin, check its options and open its state (also for -t).
 * Errors go to errs as "FILE:LINE: message". Returns 0 or -EINVAL. */
int worker_prepare(worker_t *w, config_errors_t *errs);
void worker_release(worker_t *w);

/* conn.c */
extern const berth_host_t berth_host_table;
berth_conn_t *conn_new(worker_t *w, berth_listener_t *l, conn_kind_t kind);
int conn_start_stream(berth_conn_t *c, int fd);
void conn_datagram(berth_conn_t *c, const void *data, size_t len);
void conn_close(berth_conn_t *c);
void conn_abort(berth_conn_t *c);
void conn_unref(berth_conn_t *c);
void conn_update_reading(berth_conn_t *c);
void conn_touch(berth_conn_t *c);
void conn_count_in(berth_conn_t *c, size_t n);
void conn_count_out(berth_conn_t *c, size_t n);
const char *conn_name(berth_conn_t *c);

/* worker.c: a conn of listener l ended and gave back its slot. */
void worker_conn_gone(worker_t *w, berth_listener_t *l);

/* outbound.c / relay.c */
int outbound_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg);
void outbound_cancel(berth_conn_t *c);
int relay_start(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                void *arg);
/* A relayed conn is being closed from outside; its last plugin write completed. */
void relay_on_close(berth_conn_t *c);
void relay_writes_done(berth_conn_t *c);

#endif
