#include "master/process.h"

#include <assert.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "core/control.h"
#include "core/log.h"
#include "master/privs.h"
#include "worker/worker.h"

void process_init(wproc_t *wp, struct generation *gen, unsigned index)
{
    memset(wp, 0, sizeof *wp);
    wp->gen = gen;
    wp->index = index;
    wp->ctl_fd = -1;
    wp->slot = -1;
    wp->state = W_DEAD;
    wp->backoff_ms = BACKOFF_MIN_MS;
}

unsigned process_backoff(unsigned *backoff_ms, uint64_t lived_ms)
{
    if (lived_ms >= STABLE_MS) {
        *backoff_ms = BACKOFF_MIN_MS;
        return 0; /* a rare crash: at once */
    }
    if (*backoff_ms < BACKOFF_MIN_MS)
        *backoff_ms = BACKOFF_MIN_MS;
    unsigned now = *backoff_ms;
    *backoff_ms = now * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : now * 2;
    return now;
}

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void child_after_fork(const process_spec_t *spec, int ctl_fd)
{
    /* Workers are told what to do by the master alone; a terminal's Ctrl-C or systemd's
     * SIGTERM to the whole group must not cut their connections short. */
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGINT, SIG_IGN);
    signal(SIGTERM, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGUSR1, SIG_IGN);
    signal(SIGUSR2, SIG_IGN); /* the master's binary upgrade */
    signal(SIGCHLD, SIG_DFL);
    /* Nothing of the master's is ours: its loop, signalfd, admin socket and the admin
     * clients it is answering (holding one open would keep berthctl waiting for EOF),
     * other workers' channels, other generations' sockets. Keep only what we use. */
    int keep[BERTH_MAX_LISTENERS + 4];
    size_t nkeep = 0;
    keep[nkeep++] = STDERR_FILENO;
    keep[nkeep++] = ctl_fd;
    for (size_t k = 0; k < spec->cfg->nlisteners; k++)
        if (spec->fds[k] >= 0)
            keep[nkeep++] = spec->fds[k];
    qsort(keep, nkeep, sizeof keep[0], cmp_int);
    int from = STDERR_FILENO + 1;
    for (size_t k = 0; k < nkeep; k++) {
        if (keep[k] > from)
            close_range((unsigned)from, (unsigned)keep[k] - 1, 0);
        if (keep[k] + 1 > from)
            from = keep[k] + 1;
    }
    close_range((unsigned)from, ~0u, 0);
    log_reopen();
}

int process_spawn(wproc_t *wp, uv_loop_t *loop, const process_spec_t *spec, uv_poll_cb on_ctl)
{
    assert(wp->state == W_DEAD && wp->ctl_fd < 0);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        int e = errno;
        log_error("socketpair: %s", strerror(e));
        return -e;
    }
    int slot = stats_worker_claim(spec->stats, spec->generation, wp->index);
    if (slot < 0) {
        close(sv[0]);
        close(sv[1]);
        log_error("no free worker slot (at most %d workers)", STATS_WORKERS);
        return -ENOSPC;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(sv[0]);
        close(sv[1]);
        stats_worker_settle(spec->stats, slot);
        log_error("fork: %s", strerror(e));
        return -e;
    }
    if (pid == 0) {
        close(sv[0]);
        child_after_fork(spec, sv[1]);
        char why[256];
        if (privileges_drop(spec->cfg, why, sizeof why)) {
            ctl_send(sv[1], CTL_FAILED, why);
            exit(EX_OSERR);
        }
        worker_spec_t ws = {
            .cfg = spec->cfg,
            .generation = spec->generation,
            .index = wp->index,
            .stats = spec->stats,
            .stats_slot = slot,
            .ctl_fd = sv[1],
            .listen_fds = spec->fds,
            .listen_slots = spec->slots,
            .listen_bound = spec->bound,
        };
        exit(worker_run(&ws));
    }
    close(sv[1]);
    wp->pid = pid;
    wp->slot = slot;
    wp->ctl_fd = sv[0];
    wp->state = W_STARTING;
    wp->started = uv_now(loop);
    wp->respawn_at = 0;
    spec->stats->workers[slot].pid = pid;
    wp->ctl = malloc(sizeof *wp->ctl);
    if (wp->ctl) {
        uv_poll_init(loop, wp->ctl, wp->ctl_fd);
        wp->ctl->data = wp;
        uv_poll_start(wp->ctl, UV_READABLE, on_ctl);
    }
    log_debug("worker %u of generation %u started, pid %d", wp->index + 1, spec->generation,
              (int)pid);
    return 0;
}

void process_send_text(wproc_t *wp, uint32_t type, const char *text)
{
    int rc = wp->ctl_fd >= 0 ? ctl_send(wp->ctl_fd, type, text) : 0;
    if (rc < 0)
        log_debug("worker pid %d: control: %s", (int)wp->pid, strerror(-rc));
}

void process_send(wproc_t *wp, uint32_t type)
{
    process_send_text(wp, type, NULL);
}

static void on_ctl_closed(uv_handle_t *h)
{
    free(h);
}

void process_ctl_close(wproc_t *wp)
{
    if (wp->ctl) {
        /* uv_close stops polling at once, so the descriptor can go now. */
        uv_close((uv_handle_t *)wp->ctl, on_ctl_closed);
        wp->ctl = NULL;
    }
    if (wp->ctl_fd >= 0)
        close(wp->ctl_fd);
    wp->ctl_fd = -1;
}
