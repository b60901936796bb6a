/* The master process: config, listening sockets, worker generations, signals. */
#ifndef BERTH_MASTER_H
#define BERTH_MASTER_H

#include <uv.h>

#include "config/config.h"
#include "core/stats.h"
#include "master/sockets.h"

struct generation;
struct admin;
struct agent;

typedef void (*master_reload_cb)(void *arg, int ok, const char *text);

typedef struct reload_waiter {
    master_reload_cb cb;
    void *arg;
    struct reload_waiter *next;
} reload_waiter_t;

typedef struct master {
    uv_loop_t loop;
    const char *conf_path;
    stats_t *stats;
    sockets_t socks;             /* the listening sockets every generation draws from */
    struct generation *active;   /* serving */
    struct generation *starting; /* a reload's new generation, not yet ready */
    struct generation *old;      /* draining generations */
    unsigned next_generation;
    int signal_fd;
    uv_poll_t sig;
    uv_timer_t tick; /* respawn backoff, start deadlines */
    int stopping;
    int reload_queued;
    int exit_code;
    reload_waiter_t *waiters;        /* berthctl reload: told when the reload in hand ends */
    reload_waiter_t *queued_waiters; /* ... or the queued one */
    struct admin *admin;
    uint64_t started_ms;
    struct agent *agent;   /* [daemon] agent: HAProxy's agent-check */
    uv_timer_t drain_wait; /* SIGTERM with drain_delay: the agent says drain until it fires */
    int draining_soon;
    struct metrics *metrics; /* metrics: [daemon] metrics, kept while its address stays */
    char *metrics_at;        /* metrics: that address as configured */
    /* binary upgrade (master/upgrade.c) */
    struct upgrade *up;
    int handover_fd; /* -1, or the handover this image was started with */
} master_t;

/* Run the daemon on `path` until stopped; returns the exit status. */
int master_run(const char *path);
/* The same, started by a binary upgrade with the handover document at fd (see handover.h). */
int master_run_handover(const char *path, int fd);

/* Start a reload (or queue one behind the reload in hand); cb (MAY be NULL) is told how
 * it ended. */
void master_reload(master_t *m, master_reload_cb cb, void *arg);
/* Stop: drain every generation up to shutdown_timeout (now: close everything). */
void master_stop(master_t *m, int now);

#endif
