/*
 * Worker processes: fork one with only the descriptors it needs, talk to it over its
 * control channel, and pace respawns with a backoff that grows on every failure (a crash
 * or a spawn that could not even fork) and resets once a worker has lived long enough.
 */
#ifndef BERTH_PROCESS_H
#define BERTH_PROCESS_H

#include <stdint.h>
#include <sys/types.h>
#include <uv.h>

#include "config/config.h"
#include "core/stats.h"

#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 10000 /* a worker that lived this long resets its backoff */

enum wstate { W_STARTING, W_READY, W_STOPPING, W_DEAD };

struct generation;

typedef struct wproc {
    struct generation *gen; /* owner; never dereferenced here */
    unsigned index;
    unsigned group; /* 0: the shared workers; 1 + k: those of the k-th isolated listener */
    pid_t pid;
    int ctl_fd;
    uv_poll_t *ctl; /* its own allocation: it may outlive the generation until close_cb */
    int state;
    int slot; /* stats worker slot */
    uint64_t started;
    uint64_t respawn_at; /* loop time; 0 = not waiting */
    unsigned backoff_ms;
} wproc_t;

/* What a worker is forked to serve. */
typedef struct process_spec {
    const berth_config_t *cfg;
    unsigned generation;
    const int *fds;                       /* per listener; -1: not this worker's */
    const int *slots;                     /* per listener stats slots */
    const struct sockaddr_storage *bound; /* per listener, the address it is bound to */
    stats_t *stats;
} process_spec_t;

void process_init(wproc_t *wp, struct generation *gen, unsigned index);
/* Fork a worker for `spec`; the control channel is polled on `loop` with on_ctl (its
 * handle's data is wp). 0 or -errno, logged. */
int process_spawn(wproc_t *wp, uv_loop_t *loop, const process_spec_t *spec, uv_poll_cb on_ctl);
void process_send(wproc_t *wp, uint32_t type);
void process_send_text(wproc_t *wp, uint32_t type, const char *text);
void process_ctl_close(wproc_t *wp);
/* The delay before the next try, and the one after it doubled (capped). A worker that lived
 * STABLE_MS or more (lived_ms; pass 0 for a spawn that failed) is replaced at once (0) and
 * the next delay starts again from the floor. */
unsigned process_backoff(unsigned *backoff_ms, uint64_t lived_ms);

#endif
