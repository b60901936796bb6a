/*
 * Counters in shared memory: mapped by the master before it forks, so every worker
 * generation writes into the same pages and the figures survive reloads and crashes.
 * Listener slots are keyed by the listening socket (protocol + address), so a listener
 * kept across a reload keeps its counters. Workers only ever add; the master settles what
 * a dead worker left behind (its connections are gone with it).
 */
#ifndef BERTH_STATS_H
#define BERTH_STATS_H

#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#define STATS_LISTENERS 256
#define STATS_WORKERS 256

/* metrics: why a conn ended (the first reason given wins). */
typedef enum stats_closed {
    STATS_CLOSED_EOF = 0, /* closed in order, by either side */
    STATS_CLOSED_IDLE,    /* idle_timeout */
    STATS_CLOSED_ERROR,   /* aborted: a read or write error, a reset, a refusal after accept */
    STATS_CLOSED_DRAIN,   /* aborted at the shutdown_timeout of a drain */
    STATS_CLOSED_REASONS,
} stats_closed_t;
/* Upper bounds (ms) of the connection duration histogram's buckets, then +Inf. */
#define STATS_DURATION_BUCKETS 12
extern const uint64_t stats_duration_bounds_ms[STATS_DURATION_BUCKETS];
/* Plugin metrics (host->metric): slots shared by every listener, a bounded table. */
#define STATS_METRICS 512
#define STATS_METRIC_NAME 128 /* "family{label=\"value\",...}", NUL included */
#define STATS_METRIC_HELP 160

typedef struct stats_listener {
    int in_use;
    int protocol;
    char name[64];
    char address[112];
    _Atomic uint64_t active; /* connections (or datagrams) being served: the concurrency cap */
    _Atomic uint64_t accepted;
    _Atomic uint64_t refused_acl;   /* allow/deny */
    _Atomic uint64_t refused_limit; /* setup() refused, or no memory */
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    _Atomic uint64_t errors;
    _Atomic uint64_t idle_closed;
    _Atomic uint64_t tls_handshakes;        /* TLS handshakes completed */
    _Atomic uint64_t tls_handshakes_failed; /* refused, broken or timed out */
    /* PROXY protocol: a peer outside proxy_from, or a header missing, malformed or late */
    _Atomic uint64_t refused_proxy;
    _Atomic uint64_t refused_source; /* per_source or rate */
    /* metrics: what /metrics adds (master/metrics_format.c). refused_concurrency: times an
     * accept found the listener at its concurrency cap and left clients in the backlog;
     * closed: ended conns by why (stats_closed_t); their lifetimes as a histogram in ms. */
    _Atomic uint64_t refused_concurrency;
    _Atomic uint64_t closed[STATS_CLOSED_REASONS];
    _Atomic uint64_t duration_ms_sum;
    _Atomic uint64_t duration_buckets[STATS_DURATION_BUCKETS + 1]; /* last: over every bound */
    /* plugin version: the plugin name and version string of the generation serving it,
     * written by its workers when they start serving (berthctl status) */
    char plugin[32];
    char plugin_version[32];
} stats_listener_t;

enum { WORKER_FREE = 0, WORKER_STARTING, WORKER_READY, WORKER_DRAINING };

/* Which plugin hook a worker is running: stored (a plain store, no syscall) before each call
 * into plugin code and cleared after, so the master can name the hook and listener of a
 * crash ("crashed in socks5.so handle() serving [socks]"). */
typedef enum stats_hook {
    STATS_HOOK_NONE = 0, /* host code */
    STATS_HOOK_LOAD,
    STATS_HOOK_CHECK_OPTION,
    STATS_HOOK_LISTENER_OPEN,
    STATS_HOOK_LISTENER_CLOSE,
    STATS_HOOK_SETUP,
    STATS_HOOK_HANDLE,
    STATS_HOOK_FINISH,
    STATS_HOOK_TIMER,
    STATS_HOOK_WORK,      /* a host->work() function, on the pool */
    STATS_HOOK_WORK_DONE, /* its done callback, on the loop */
    STATS_HOOK_CONNECT,   /* connect's allow or result callback */
    STATS_HOOK_RELAY,     /* relay's done callback */
    STATS_HOOK_OTHER,
} stats_hook_t;

typedef struct stats_worker {
    _Atomic int state;
    pid_t pid;
    unsigned generation;
    unsigned index;      /* 0..workers-1 within its generation */
    uint64_t started_ms; /* CLOCK_REALTIME */
    _Atomic uint64_t accepted;
    _Atomic uint64_t active;
    _Atomic uint64_t bytes_in;
    _Atomic uint64_t bytes_out;
    /* What the worker runs now (see stats_hook_t): the listener's stats slot (-1: none) and
     * the hook. Written by the worker only, read by the master after the worker died. */
    _Atomic int cur_listener;
    _Atomic int cur_hook;
    /* This worker's share of each listener's `active`, so the master can settle a crash. */
    _Atomic uint32_t active_by_listener[STATS_LISTENERS];
    /* sandbox: what the worker applied to itself (worker/sandbox.c) before serving. */
    _Atomic int sandbox_landlock_abi; /* 0: no Landlock */
    _Atomic uint32_t sandbox_rules;
    _Atomic int sandbox_seccomp;
} stats_worker_t;

/* metrics: one plugin counter or gauge of one listener (host->metric). */
typedef struct stats_metric {
    _Atomic int in_use; /* set last, once the slot is filled */
    int listener;       /* the stats listener slot it belongs to */
    int kind;           /* BERTH_METRIC_COUNTER or BERTH_METRIC_GAUGE */
    char name[STATS_METRIC_NAME];
    char help[STATS_METRIC_HELP];
    _Atomic int64_t value;
} stats_metric_t;

typedef struct stats {
    uint64_t started_ms;
    _Atomic uint64_t generation; /* the generation now serving */
    _Atomic uint64_t reloads_ok;
    _Atomic uint64_t reloads_failed;
    _Atomic uint64_t worker_restarts;
    _Atomic uint64_t worker_crashes;
    stats_listener_t listeners[STATS_LISTENERS];
    stats_worker_t workers[STATS_WORKERS];
    /* metrics: plugin metrics, claimed under a spin lock (registration only, never a
     * conn's path), and how many registrations found the table full. */
    atomic_flag metrics_lock;
    _Atomic uint64_t metrics_full;
    stats_metric_t metrics[STATS_METRICS];
} stats_t;

/* Map a zeroed region shared with children forked later; NULL on failure. */
stats_t *stats_map(void);
void stats_unmap(stats_t *s);
/* Binary upgrade: the descriptor of the mapping (close-on-exec; -1 when none), and the new
 * image mapping the one it was handed (NULL with errno EPROTO when `size`, the writer's
 * sizeof(stats_t), is not ours). */
int stats_fd(void);
stats_t *stats_adopt(int fd, size_t size);
/* A free listener slot, marked in use; -1 if none. */
int stats_listener_claim(stats_t *s, int protocol, const char *name, const char *address);
void stats_listener_release(stats_t *s, int slot);
int stats_worker_claim(stats_t *s, unsigned generation, unsigned index);
/* A worker process is gone: hand back what it held of each listener's `active`. */
void stats_worker_settle(stats_t *s, int slot);
uint64_t stats_now_ms(void);
/* "handle()", "setup()", ...; "" for STATS_HOOK_NONE. */
const char *stats_hook_name(int hook);

/* metrics: a conn of listener `st` ended for `why` after `ms` milliseconds. */
void stats_conn_closed(stats_listener_t *st, stats_closed_t why, uint64_t ms);
/* The slot of plugin metric `name` of listener slot `listener`: the one already there
 * (same name: every worker and generation shares it), else a new one. -EINVAL for a name
 * stats_metric_name_ok refuses or a kind that differs from the slot's, -ENOSPC when all
 * STATS_METRICS slots are taken (counted in metrics_full). */
int stats_metric_claim(stats_t *s, int listener, const char *name, const char *help, int kind);
/* 1 if `name` is `family` or `family{label="value",...}`: family and label names
 * [a-zA-Z_][a-zA-Z0-9_]*, no label named `listener` or starting with `__`, values of
 * [A-Za-z0-9_.:/+-] (nothing to escape), shorter than STATS_METRIC_NAME. */
int stats_metric_name_ok(const char *name);

#endif
