/*
 * A worker process: one libuv loop over the listening sockets the master opened, the
 * plugins loaded afresh, and the connections. Nothing here runs in the master.
 */
#ifndef BERTH_WORKER_H
#define BERTH_WORKER_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "worker/io.h"
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
    /* One per cfg->listeners[i]: the address its socket is bound to (a port-0 listener's
     * real port), for the own-address check of outbound connects. MAY be NULL. */
    const struct sockaddr_storage *listen_bound;
} worker_spec_t;

struct worker;

struct berth_listener {
    struct worker *w;
    const config_listener_t *cfg;
    plugin_t *plugin;
    void *state; /* from listener_open */
    void *opts;  /* the plugin's declared options, parsed (config/plugin_opts.c) */
    int opened;  /* listener_open succeeded: listener_close is owed */
    int fd;
    int slot;
    stats_listener_t *st;
    struct tls_listener *tls; /* tls.c's: TLS contexts, NULL on a plain listener */
    int stream;               /* tcp/unix: accept; udp/unixgram: datagrams */
    uv_poll_t poll;
    uv_timer_t retry; /* resume polling after the concurrency cap or EMFILE */
    /* conn.c's: this listener's open conns by last activity, oldest first (idle_timeout) */
    struct berth_conn *idle_head, *idle_tail;
    /* conn.c's: host->work items of this listener: queued or running (capped), handed to
     * the pool (limited, so other listeners keep threads), and those waiting for that */
    unsigned work_count, work_inflight;
    unsigned source_waiting; /* source.c's: conns parked by over_limit = wait */
    struct work_req *work_head, *work_tail;
    unsigned poll_init : 1, polling : 1, paused : 1, retry_init : 1;
    unsigned at_cap : 1; /* metrics: the cap was reached and not left since */
    /* udp_assoc.c's: names of datagrams (host->dgram_send) being resolved on the pool,
     * capped (udp_assoc_resolve_cap) so they never hold every thread lookups may use */
    unsigned dgram_resolving;
};

typedef struct worker {
    uv_loop_t loop;
    const berth_config_t *cfg;
    unsigned generation, index;
    stats_t *stats;
    stats_worker_t *st;
    int slot;
    /* Per cfg->listeners[i], its stats slot (NULL under -t): set before worker_prepare so
     * a crash in check_option or listener_open names its listener. */
    const int *listen_slots;
    const struct sockaddr_storage *listen_bound; /* as in worker_spec_t; MAY be NULL */
    int ctl_fd;
    uv_poll_t ctl;
    berth_listener_t *listeners;
    size_t nlisteners;
    plugin_t **plugins;
    size_t nplugins;
    struct berth_conn *conns; /* every live conn, for the drain deadline */
    uint64_t nconns;
    /* conn.c's: closing conns by close time, oldest first (the linger bound), and the one
     * timer for every conn's idle timeout and linger bound */
    struct berth_conn *linger_head, *linger_tail;
    uv_timer_t conn_timer;
    uint64_t conn_queued; /* conns in any of the lists above */
    int conn_timer_init;
    unsigned pool_size, work_inflight_max; /* conn_pool_init */
    int accepting, draining, stop_now;
    uv_timer_t drain_timer;
    char *readbuf;
    size_t readbuf_size;
    io_loop_t io; /* conn.c's sockets: io.h */
    /* udp_assoc.c's: lookups for datagrams in flight, all listeners together */
    unsigned dgram_resolving;
} worker_t;

/* Run a worker to its end; returns the process exit status. */
int worker_run(const worker_spec_t *spec);

/* Load every listener's plugin, check its options and open its state (also for -t).
 * Errors go to errs as "FILE:LINE: message". Returns 0 or -EINVAL. */
int worker_prepare(worker_t *w, config_errors_t *errs);
void worker_release(worker_t *w);

/* worker.c: a conn of listener l ended and gave back its slot (l NULL: an uncounted conn
 * ended, which may end a drain). */
void worker_conn_gone(worker_t *w, berth_listener_t *l);
/* A listener's concurrency slot, taken and given back outside accept (over_limit = wait:
 * a waiting conn holds none). take: 0, or -1 when the listener is at concurrency. */
int worker_slot_take(berth_listener_t *l);
void worker_slot_give_back(berth_listener_t *l);

#endif
