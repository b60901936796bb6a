/*
 * A generation: one config, its listening sockets (from the registry) and its workers.
 * It moves one way only: STARTING (workers load plugins) -> ACTIVE (serving) -> DRAINING
 * (stopped accepting, connections finishing), or STARTING -> DRAINING when it fails.
 * The master decides when; this file keeps the state and its invariants.
 */
#ifndef BERTH_GENERATION_H
#define BERTH_GENERATION_H

#include <stdint.h>
#include <uv.h>

#include "config/config.h"
#include "core/control.h"
#include "master/process.h"
#include "master/sockets.h"

#define START_DEADLINE_MS 30000 /* a worker that is not ready by then has failed */
#define KILL_GRACE_MS 5000
#define ISOLATED_WORKERS 2 /* at most, per isolated listener (never more than `workers`) */

enum gstate { G_STARTING, G_ACTIVE, G_DRAINING };

struct master;

typedef struct generation {
    unsigned id;
    int state;
    berth_config_t *cfg; /* owned */
    struct master *owner;
    uv_loop_t *loop;
    sockets_t *reg;
    int *fds;       /* per listener, the registry's (shared) listening fds */
    int *group_fds; /* ngroups rows of nlisteners: the fds each group's workers get (-1: not
                       theirs). Row 0 is the shared workers', row 1 + k the k-th isolated
                       listener's own workers' */
    unsigned ngroups;
    int *slots;                     /* per listener, stats slots */
    struct sockaddr_storage *bound; /* per listener, what its socket is bound to */
    size_t *socks;                  /* per listener, index into reg->socks; NULL until acquired */
    wproc_t *workers;
    unsigned nworkers;
    unsigned ready; /* workers in W_READY */
    int failed;
    char *fail_text; /* the first reason it failed */
    uint64_t deadline;
    uint64_t kill_at; /* draining: SIGKILL what is left by then */
    struct generation *next;
} generation_t;

/* Takes cfg (freed with the generation, or by the caller when this returns NULL). */
generation_t *generation_new(unsigned id, berth_config_t *cfg, uv_loop_t *loop, sockets_t *reg,
                             struct master *owner);
/* Acquire its sockets and fork its workers. 0, or -errno with errs filled. */
int generation_start(generation_t *g, config_errors_t *errs, uv_poll_cb on_ctl);
/* Fork (again) one of its workers. */
int generation_spawn(generation_t *g, wproc_t *wp, uv_poll_cb on_ctl);
/* Read every message waiting from wp; *changed is set when the generation may have become
 * ready or failed. 0 when the channel is closed. */
int generation_ctl_read(generation_t *g, wproc_t *wp, int *changed);
/* Tell its ready workers that listener socket `sock` (an index in the registry) is
 * quarantined (CTL_QUARANTINE) or no longer (CTL_RESUME). Returns whether it uses it. */
int generation_tell_listener(generation_t *g, size_t sock, uint32_t type);
/* The listening fds worker wp is given (-1: a listener it does not serve). */
const int *generation_worker_fds(const generation_t *g, const wproc_t *wp);
/* Its listener index (in g->cfg) whose stats slot is `slot`, or -1. */
int generation_listener_of_slot(const generation_t *g, int slot);
/* Mark it failed; the first reason is kept. */
void generation_fail(generation_t *g, const char *why);
/* STARTING -> ACTIVE, every worker ready: they start accepting. */
void generation_activate(generation_t *g);
/* -> DRAINING: workers stop accepting and drain (now: close everything). */
void generation_stop(generation_t *g, int now);
/* wp stops being ready (it stops or died): `ready` counts the workers in W_READY. */
void generation_worker_leaves(generation_t *g, const wproc_t *wp);
unsigned generation_alive(const generation_t *g);
/* Release its sockets and free it; every worker MUST be dead. */
void generation_free(generation_t *g);

void generation_list_push(generation_t **list, generation_t *g);
void generation_list_remove(generation_t **list, generation_t *g);
/* The live worker with this pid in any of the lists. */
wproc_t *generation_find_worker(generation_t *const *lists, int nlists, pid_t pid);

#endif
