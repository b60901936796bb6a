/*
 * The master. It parses the config, opens every listening socket, forks a generation of
 * workers and supervises them. It never loads plugin code: a worker forked from a master
 * with a .so mapped would carry the old code across a reload.
 *
 * A reload builds a new generation beside the serving one: new config, listening
 * sockets diffed by (protocol, address) so unchanged ones are handed over open, fresh
 * workers that load the plugins and report ready. Only when every new worker is ready do
 * the new ones start accepting and the old ones stop, then drain. If anything fails, the
 * new generation is stopped and the old one never notices.
 *
 * Signals arrive through a signalfd on the loop, never in a handler. The master uses no
 * uv_signal (its handler state would be inherited by every fork).
 */
#include "master/master.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "master/admin.h"
#include "core/control.h"
#include "worker/loader.h"
#include "core/log.h"
#include "core/notify.h"
#include "core/privs.h"
#include "worker/worker.h"

#define START_DEADLINE_MS 30000 /* a worker that is not ready by then has failed */
#define BACKOFF_MIN_MS 100
#define BACKOFF_MAX_MS 30000
#define STABLE_MS 10000 /* a worker that lived this long resets its crash backoff */
#define TICK_MS 100
#define KILL_GRACE_MS 5000

enum wstate { W_STARTING, W_READY, W_STOPPING, W_DEAD };
enum gstate { G_STARTING, G_ACTIVE, G_DRAINING };

typedef struct wproc {
    struct generation *gen;
    unsigned index;
    pid_t pid;
    int ctl_fd;
    uv_poll_t *ctl; /* its own allocation: it may outlive the generation until close_cb */
    int state;
    int slot;
    uint64_t started;
    uint64_t respawn_at; /* loop time; 0 = not waiting */
    unsigned backoff_ms;
} wproc_t;

typedef struct generation {
    unsigned id;
    int state;
    berth_config_t *cfg;
    int *fds;      /* per listener, the master's (shared) listening fds */
    int *slots;    /* per listener, stats slots */
    size_t *socks; /* per listener, index into m->socks */
    wproc_t *workers;
    unsigned nworkers;
    unsigned ready;
    int failed;
    char *fail_text;
    uint64_t deadline;
    uint64_t kill_at; /* draining: SIGKILL what is left by then */
    struct generation *next;
} generation_t;

static master_t *the_master; /* for the child's fd hygiene after fork */

static void on_ctl(uv_poll_t *p, int status, int events);
static void generation_check(master_t *m, generation_t *g);
static int open_log_file(const berth_config_t *cfg);
static void master_check_exit(master_t *m);
static void reload_finish(master_t *m, int ok, const char *text);

/* ---- listening sockets ---- */

static void sock_release(master_t *m, size_t i)
{
    lsock_t *s = &m->socks[i];
    if (--s->users > 0)
        return;
    if (s->fd >= 0) /* not already closed by a stop */
        log_info("closing listener %s (%s)", s->name, s->address);
    stats_listener_release(m->stats, s->slot);
    listen_close(s);
}

/* A unix path that one of our sockets of the other type holds (a reload turned a unix
 * listener into a unixgram one or back): the new socket takes the name; the old one keeps
 * serving the old generation, nameless, until it drains. */
static void unix_path_take_over(master_t *m, const config_listener_t *l)
{
    if (l->addr.ss_family != AF_UNIX)
        return;
    const char *path = ((const struct sockaddr_un *)&l->addr)->sun_path;
    for (size_t k = 0; k < m->nsocks; k++) {
        lsock_t *s = &m->socks[k];
        if (s->fd < 0 || s->addr.ss_family != AF_UNIX || s->ino == 0 ||
            strcmp(((const struct sockaddr_un *)&s->addr)->sun_path, path) != 0)
            continue;
        log_info("[%s] takes %s over from [%s] (%s to %s)", l->name, path, s->name,
                 config_protocol_name(s->protocol), config_protocol_name(l->protocol));
        unlink(path);
        s->ino = 0; /* the name is not its to remove any more */
    }
}

/* Find or open the socket for every listener of g; 0 or -1 with errors logged. */
static int generation_bind(master_t *m, generation_t *g, config_errors_t *errs)
{
    const berth_config_t *cfg = g->cfg;
    int rc = 0;
    size_t n = cfg->nlisteners;
    g->fds = calloc(n ? n : 1, sizeof *g->fds);
    g->slots = calloc(n ? n : 1, sizeof *g->slots);
    g->socks = calloc(n ? n : 1, sizeof *g->socks);
    if (!g->fds || !g->slots || !g->socks)
        return -ENOMEM;
    size_t done = 0;
    for (; done < n; done++) {
        const config_listener_t *l = &cfg->listeners[done];
        size_t i;
        for (i = 0; i < m->nsocks; i++)
            if (m->socks[i].fd >= 0 && listen_same(&m->socks[i], l))
                break;
        if (i == m->nsocks) {
            for (i = 0; i < m->nsocks; i++)
                if (m->socks[i].fd < 0)
                    break;
            if (i == BERTH_MAX_LISTENERS) {
                config_errors_add(errs, l->file, l->line, "too many listening sockets (%d)",
                                  BERTH_MAX_LISTENERS);
                rc = -ENOSPC;
                break;
            }
            char err[512];
            unix_path_take_over(m, l);
            if (listen_open(l, &m->socks[i], err, sizeof err)) {
                config_errors_add(errs, l->file, l->line, "[%s]: %s", l->name, err);
                rc = -EADDRINUSE;
                break;
            }
            m->socks[i].slot =
                stats_listener_claim(m->stats, (int)l->protocol, l->name, l->address);
            if (i == m->nsocks)
                m->nsocks++;
            log_info("listening on %s %s for [%s]", config_protocol_name(l->protocol), l->address,
                     l->name);
        } else {
            /* Same socket; the section may have been renamed. */
            lsock_t *s = &m->socks[i];
            listen_update(s, l);
            if (strcmp(s->name, l->name) != 0) {
                char *name = strdup(l->name);
                if (name) {
                    free(s->name);
                    s->name = name;
                }
                if (s->slot >= 0)
                    snprintf(m->stats->listeners[s->slot].name,
                             sizeof m->stats->listeners[s->slot].name, "%s", l->name);
            }
        }
        m->socks[i].users++;
        g->socks[done] = i;
        g->fds[done] = m->socks[i].fd;
        g->slots[done] = m->socks[i].slot;
    }
    if (rc) {
        while (done-- > 0)
            sock_release(m, g->socks[done]);
        free(g->socks);
        g->socks = NULL;
    }
    return rc;
}

/* ---- workers ---- */

static int cmp_int(const void *a, const void *b)
{
    int x = *(const int *)a, y = *(const int *)b;
    return (x > y) - (x < y);
}

static void child_after_fork(wproc_t *self, int ctl_fd)
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
    signal(SIGCHLD, SIG_DFL);
    /* Nothing of the master's is ours: its loop, signalfd, admin socket and the admin
     * clients it is answering (holding one open would keep berthctl waiting for EOF),
     * other workers' channels, other generations' sockets. Keep only what we use. */
    int keep[BERTH_MAX_LISTENERS + 4];
    size_t nkeep = 0;
    keep[nkeep++] = STDERR_FILENO;
    keep[nkeep++] = ctl_fd;
    for (size_t k = 0; k < self->gen->cfg->nlisteners; k++)
        keep[nkeep++] = self->gen->fds[k];
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

static int worker_spawn(master_t *m, wproc_t *wp)
{
    generation_t *g = wp->gen;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        log_error("socketpair: %s", strerror(errno));
        return -errno;
    }
    int slot = stats_worker_claim(m->stats, g->id, wp->index);
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
        stats_worker_settle(m->stats, slot);
        log_error("fork: %s", strerror(e));
        return -e;
    }
    if (pid == 0) {
        close(sv[0]);
        wp->ctl_fd = -1;
        child_after_fork(wp, sv[1]);
        char why[256];
        if (privileges_drop(g->cfg, why, sizeof why)) {
            ctl_send(sv[1], CTL_FAILED, why);
            exit(71);
        }
        worker_spec_t spec = {
            .cfg = g->cfg,
            .generation = g->id,
            .index = wp->index,
            .stats = m->stats,
            .stats_slot = slot,
            .ctl_fd = sv[1],
            .listen_fds = g->fds,
            .listen_slots = g->slots,
        };
        exit(worker_run(&spec));
    }
    close(sv[1]);
    wp->pid = pid;
    wp->slot = slot;
    wp->ctl_fd = sv[0];
    wp->state = W_STARTING;
    wp->started = uv_now(&m->loop);
    wp->respawn_at = 0;
    m->stats->workers[slot].pid = pid;
    wp->ctl = malloc(sizeof *wp->ctl);
    if (wp->ctl) {
        uv_poll_init(&m->loop, wp->ctl, wp->ctl_fd);
        wp->ctl->data = wp;
        uv_poll_start(wp->ctl, UV_READABLE, on_ctl);
    }
    log_debug("worker %u of generation %u started, pid %d", wp->index + 1, g->id, (int)pid);
    return 0;
}

static void worker_send(wproc_t *wp, uint32_t type)
{
    if (wp->ctl_fd >= 0 && ctl_send(wp->ctl_fd, type, NULL) < 0)
        log_debug("worker pid %d: control: %s", (int)wp->pid, strerror(errno));
}

static void on_ctl_closed(uv_handle_t *h)
{
    free(h);
}

static void worker_ctl_close(wproc_t *wp)
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

/* Read and act on every message waiting from a worker; 0 if its end is closed. */
static int ctl_drain(master_t *m, wproc_t *wp)
{
    for (;;) {
        ctl_msg_t msg;
        ssize_t n = wp->ctl_fd >= 0 ? recv(wp->ctl_fd, &msg, sizeof msg, MSG_DONTWAIT) : 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == EAGAIN)
            return 1;
        if (n <= 0)
            return 0; /* the worker is exiting; SIGCHLD tells us how */
        msg.text[sizeof msg.text - 1] = '\0';
        generation_t *g = wp->gen;
        if (msg.type == CTL_READY && wp->state == W_STARTING) {
            wp->state = W_READY;
            g->ready++;
            if (g->state != G_STARTING) /* a replacement for a crashed worker */
                worker_send(wp, CTL_GO);
            generation_check(m, g);
        } else if (msg.type == CTL_FAILED && wp->state == W_STARTING) {
            if (!g->failed) {
                g->failed = 1;
                free(g->fail_text);
                g->fail_text = strdup(msg.text);
            }
            generation_check(m, g);
        }
    }
}

static void on_ctl(uv_poll_t *p, int status, int events)
{
    wproc_t *wp = p->data;
    if (!ctl_drain(the_master, wp))
        uv_poll_stop(p);
}

/* ---- generations ---- */

static generation_t *generation_new(master_t *m, berth_config_t *cfg)
{
    generation_t *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    g->id = ++m->next_generation;
    g->cfg = cfg;
    g->nworkers = cfg->workers;
    g->workers = calloc(g->nworkers, sizeof *g->workers);
    if (g->workers == NULL) {
        free(g);
        return NULL;
    }
    for (unsigned i = 0; i < g->nworkers; i++) {
        g->workers[i].gen = g;
        g->workers[i].index = i;
        g->workers[i].ctl_fd = -1;
        g->workers[i].slot = -1;
        g->workers[i].state = W_DEAD;
        g->workers[i].backoff_ms = BACKOFF_MIN_MS;
    }
    g->state = G_STARTING;
    g->deadline = uv_now(&m->loop) + START_DEADLINE_MS;
    return g;
}

static unsigned generation_alive(const generation_t *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < g->nworkers; i++)
        n += g->workers[i].state != W_DEAD;
    return n;
}

static void generation_free(master_t *m, generation_t *g)
{
    if (g->socks)
        for (size_t i = 0; i < g->cfg->nlisteners; i++)
            sock_release(m, g->socks[i]);
    config_free(g->cfg);
    free(g->fds);
    free(g->slots);
    free(g->socks);
    free(g->workers);
    free(g->fail_text);
    free(g);
}

static void generation_stop(generation_t *g, int now)
{
    uint64_t grace = now ? KILL_GRACE_MS : g->cfg->shutdown_timeout + KILL_GRACE_MS;
    uint64_t at = uv_now(&the_master->loop) + grace;
    if (g->kill_at == 0 || at < g->kill_at)
        g->kill_at = at;
    g->state = G_DRAINING;
    for (unsigned i = 0; i < g->nworkers; i++) {
        wproc_t *wp = &g->workers[i];
        wp->respawn_at = 0;
        if (wp->state == W_DEAD)
            continue;
        wp->state = W_STOPPING;
        worker_send(wp, now ? CTL_STOP_NOW : CTL_STOP);
        if (wp->slot >= 0)
            atomic_store(&the_master->stats->workers[wp->slot].state, WORKER_DRAINING);
    }
}

static void list_push(generation_t **list, generation_t *g)
{
    g->next = *list;
    *list = g;
}

static void list_remove(generation_t **list, generation_t *g)
{
    for (generation_t **p = list; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            g->next = NULL;
            return;
        }
    }
}

static void log_lines(berth_log_level_t level, const char *text)
{
    const char *p = text;
    while (p && *p) {
        const char *nl = strchr(p, '\n');
        int len = nl ? (int)(nl - p) : (int)strlen(p);
        log_msg(level, "%.*s", len, p);
        p = nl ? nl + 1 : NULL;
    }
}

static void status_line(master_t *m)
{
    const generation_t *g = m->active;
    if (g == NULL)
        return;
    notify_status("generation %u: %zu listener(s), %u worker(s)", g->id, g->cfg->nlisteners,
                  g->nworkers);
}

/* A starting generation may have become ready, or failed. */
static void generation_check(master_t *m, generation_t *g)
{
    if (g->state != G_STARTING)
        return;
    if (g->failed) {
        const char *why = g->fail_text ? g->fail_text : "a worker failed to start";
        g->state = G_DRAINING;
        if (m->starting == g)
            m->starting = NULL;
        generation_stop(g, 1);
        list_push(&m->old, g);
        if (m->active == NULL) {
            log_error("cannot start:");
            log_lines(BERTH_LOG_ERROR, why);
            m->exit_code = 78;
            master_stop(m, 1);
        } else {
            log_error("reload failed, generation %u goes on serving:", m->active->id);
            log_lines(BERTH_LOG_ERROR, why);
            atomic_fetch_add(&m->stats->reloads_failed, 1);
            reload_finish(m, 0, why);
        }
        return;
    }
    if (g->ready < g->nworkers)
        return;
    /* Every new worker is ready: hand over. New ones accept before old ones stop, and
     * kept sockets never close, so no client is refused in between. */
    g->state = G_ACTIVE;
    for (unsigned i = 0; i < g->nworkers; i++)
        worker_send(&g->workers[i], CTL_GO);
    generation_t *prev = m->active;
    m->active = g;
    if (m->starting == g)
        m->starting = NULL;
    atomic_store(&m->stats->generation, g->id);
    if (prev) {
        generation_stop(prev, 0);
        list_push(&m->old, prev);
        atomic_fetch_add(&m->stats->reloads_ok, 1);
        log_info("reloaded: generation %u serves %zu listener(s) with %u worker(s); "
                 "generation %u drains",
                 g->id, g->cfg->nlisteners, g->nworkers, prev->id);
        reload_finish(m, 1, NULL);
    } else {
        log_info("ready: generation %u serves %zu listener(s) with %u worker(s)", g->id,
                 g->cfg->nlisteners, g->nworkers);
        notify_ready();
    }
    status_line(m);
}

static int generation_start(master_t *m, generation_t *g, config_errors_t *errs)
{
    int rc = generation_bind(m, g, errs);
    if (rc)
        return rc;
    for (unsigned i = 0; i < g->nworkers; i++) {
        rc = worker_spawn(m, &g->workers[i]);
        if (rc) {
            config_errors_add(errs, g->cfg->path, 0, "cannot start worker %u: %s", i + 1,
                              strerror(-rc));
            return rc;
        }
    }
    return 0;
}

/* ---- reload ---- */

static void waiters_tell(reload_waiter_t *w, int ok, const char *text)
{
    while (w) {
        reload_waiter_t *next = w->next;
        if (w->cb)
            w->cb(w->arg, ok, text);
        free(w);
        w = next;
    }
}

static void reload_begin(master_t *m);

static void reload_finish(master_t *m, int ok, const char *text)
{
    reload_waiter_t *w = m->waiters;
    m->waiters = NULL;
    notify_ready();
    status_line(m);
    waiters_tell(w, ok, text);
    if (m->reload_queued && !m->stopping) {
        m->reload_queued = 0;
        m->waiters = m->queued_waiters;
        m->queued_waiters = NULL;
        reload_begin(m);
    }
}

static char *errors_text(const config_errors_t *errs)
{
    size_t len = 1;
    for (size_t i = 0; i < errs->count; i++)
        len += strlen(errs->msgs[i]) + 1;
    char *t = malloc(len);
    if (t == NULL)
        return NULL;
    t[0] = '\0';
    for (size_t i = 0; i < errs->count; i++) {
        strcat(t, errs->msgs[i]);
        if (i + 1 < errs->count)
            strcat(t, "\n");
    }
    return t;
}

static void reload_begin(master_t *m)
{
    notify_reloading();
    log_info("reloading %s", m->conf_path);
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    generation_t *g = NULL;
    if (config_load(m->conf_path, &cfg, &errs) == 0) {
        log_set_level(cfg->log_level);
        if (strcmp(cfg->log, m->active ? m->active->cfg->log : "") != 0 && open_log_file(cfg))
            log_error("cannot open log file %s; logging goes on where it was", cfg->log);
        g = generation_new(m, cfg);
        if (g == NULL) {
            config_errors_add(&errs, m->conf_path, 0, "out of memory");
            config_free(cfg);
        } else if (generation_start(m, g, &errs) == 0) {
            m->starting = g;
            return; /* generation_check finishes it */
        }
    }
    char *text = errors_text(&errs);
    log_error("reload failed, generation %u goes on serving:", m->active ? m->active->id : 0);
    log_lines(BERTH_LOG_ERROR, text ? text : "out of memory");
    atomic_fetch_add(&m->stats->reloads_failed, 1);
    if (g) {
        generation_stop(g, 1);
        list_push(&m->old, g);
    }
    config_errors_free(&errs);
    reload_finish(m, 0, text ? text : "out of memory");
    free(text);
}

void master_reload(master_t *m, master_reload_cb cb, void *arg)
{
    if (m->stopping) {
        if (cb)
            cb(arg, 0, "berthd is stopping");
        return;
    }
    reload_waiter_t *w = NULL;
    if (cb) {
        w = calloc(1, sizeof *w);
        if (w == NULL) {
            cb(arg, 0, "out of memory");
            return;
        }
        w->cb = cb;
        w->arg = arg;
    }
    if (m->starting || m->active == NULL) {
        /* A reload is in hand: run one more after it, with the config as it is then. */
        m->reload_queued = 1;
        if (w) {
            w->next = m->queued_waiters;
            m->queued_waiters = w;
        }
        log_info("reload queued behind the one in progress");
        return;
    }
    if (w) {
        w->next = m->waiters;
        m->waiters = w;
    }
    reload_begin(m);
}

/* ---- stopping ---- */

void master_stop(master_t *m, int now)
{
    if (m->stopping && !now)
        return;
    if (!m->stopping) {
        notify_stopping();
        log_info(now ? "stopping now" : "stopping: draining connections");
    }
    m->stopping = 1;
    m->reload_queued = 0;
    waiters_tell(m->waiters, 0, "berthd is stopping");
    waiters_tell(m->queued_waiters, 0, "berthd is stopping");
    m->waiters = m->queued_waiters = NULL;
    if (m->active) {
        generation_stop(m->active, now);
        list_push(&m->old, m->active);
        m->active = NULL;
    }
    if (m->starting) {
        generation_stop(m->starting, 1);
        list_push(&m->old, m->starting);
        m->starting = NULL;
    }
    if (now)
        for (generation_t *g = m->old; g; g = g->next)
            generation_stop(g, 1);
    /* Nobody will accept again: close the listening sockets now (the workers close their
     * copies on STOP), so new clients are refused at once rather than left in a backlog. */
    for (size_t i = 0; i < m->nsocks; i++) {
        lsock_t *s = &m->socks[i];
        if (s->fd >= 0) {
            log_info("closing listener %s (%s)", s->name, s->address);
            listen_close(s);
        }
    }
    admin_stop(m->admin);
    master_check_exit(m);
}

static void on_handle_closed(uv_handle_t *h) {}

static void master_check_exit(master_t *m)
{
    if (!m->stopping || m->active || m->starting)
        return;
    for (generation_t *g = m->old; g; g = g->next)
        if (generation_alive(g))
            return;
    while (m->old) {
        generation_t *g = m->old;
        m->old = g->next;
        generation_free(m, g);
    }
    uv_poll_stop(&m->sig);
    uv_close((uv_handle_t *)&m->sig, on_handle_closed);
    uv_close((uv_handle_t *)&m->tick, on_handle_closed);
}

/* ---- children ---- */

static wproc_t *find_worker(master_t *m, pid_t pid)
{
    generation_t *lists[] = {m->active, m->starting, m->old};
    for (int k = 0; k < 3; k++)
        for (generation_t *g = lists[k]; g; g = g->next)
            for (unsigned i = 0; i < g->nworkers; i++)
                if (g->workers[i].pid == pid && g->workers[i].state != W_DEAD)
                    return &g->workers[i];
    return NULL;
}

static void describe_listeners(const generation_t *g, char *buf, size_t len)
{
    size_t off = 0;
    buf[0] = '\0';
    for (size_t i = 0; i < g->cfg->nlisteners && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, "%s%s", i ? ", " : "",
                                g->cfg->listeners[i].name);
}

static void on_worker_exit(master_t *m, wproc_t *wp, int status)
{
    generation_t *g = wp->gen;
    /* What it said before it died (its errors, say) counts more than how it died. */
    if (wp->state == W_STARTING)
        ctl_drain(m, wp);
    int prev = wp->state;
    wp->state = W_DEAD;
    wp->pid = 0;
    worker_ctl_close(wp);
    if (wp->slot >= 0)
        stats_worker_settle(m->stats, wp->slot);
    wp->slot = -1;
    if (prev == W_STOPPING) {
        if (WIFSIGNALED(status))
            log_warn("worker %u of generation %u killed by signal %d (%s) while draining",
                     wp->index + 1, g->id, WTERMSIG(status), strsignal(WTERMSIG(status)));
        if (generation_alive(g) == 0 && g->state == G_DRAINING) {
            log_debug("generation %u has drained", g->id);
            list_remove(&m->old, g);
            generation_free(m, g);
        }
        master_check_exit(m);
        return;
    }
    char what[64], served[512];
    if (WIFSIGNALED(status))
        snprintf(what, sizeof what, "killed by signal %d (%s)%s", WTERMSIG(status),
                 strsignal(WTERMSIG(status)), WCOREDUMP(status) ? ", core dumped" : "");
    else
        snprintf(what, sizeof what, "exited with status %d", WEXITSTATUS(status));
    describe_listeners(g, served, sizeof served);
    if (prev == W_STARTING && g->state == G_STARTING) {
        if (!g->failed) {
            char text[800];
            snprintf(text, sizeof text, "%s: worker %u of generation %u %s before it was ready",
                     g->cfg->path, wp->index + 1, g->id, what);
            g->failed = 1;
            g->fail_text = strdup(text);
        }
        generation_check(m, g);
        return;
    }
    atomic_fetch_add(&m->stats->worker_crashes, 1);
    uint64_t now = uv_now(&m->loop);
    if (now - wp->started >= STABLE_MS)
        wp->backoff_ms = BACKOFF_MIN_MS;
    log_error("worker %u of generation %u %s; it served: %s; replacing it in %u ms", wp->index + 1,
              g->id, what, served, wp->backoff_ms);
    wp->respawn_at = now + wp->backoff_ms;
    /* A crash loop backs off instead of spinning. */
    wp->backoff_ms = wp->backoff_ms * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : wp->backoff_ms * 2;
}

static void reap_children(master_t *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        wproc_t *wp = find_worker(m, pid);
        if (wp)
            on_worker_exit(m, wp, status);
    }
}

static void on_tick(uv_timer_t *t)
{
    master_t *m = t->data;
    uint64_t now = uv_now(&m->loop);
    if (m->active && !m->stopping) {
        generation_t *g = m->active;
        for (unsigned i = 0; i < g->nworkers; i++) {
            wproc_t *wp = &g->workers[i];
            if (wp->state == W_DEAD && wp->respawn_at && now >= wp->respawn_at) {
                if (worker_spawn(m, wp) == 0) {
                    atomic_fetch_add(&m->stats->worker_restarts, 1);
                    log_info("worker %u of generation %u replaced (pid %d)", wp->index + 1, g->id,
                             (int)wp->pid);
                } else {
                    wp->respawn_at = now + wp->backoff_ms;
                }
            }
        }
    }
    generation_t *g = m->starting;
    if (g && g->state == G_STARTING && now >= g->deadline && !g->failed) {
        g->failed = 1;
        g->fail_text = strdup("workers were not ready within 30 s");
        generation_check(m, g);
    }
    /* Workers enforce shutdown_timeout themselves; one that does not (a plugin stuck in a
     * loop) is killed a little later. */
    for (g = m->old; g; g = g->next) {
        if (g->kill_at == 0 || now < g->kill_at)
            continue;
        for (unsigned i = 0; i < g->nworkers; i++) {
            wproc_t *wp = &g->workers[i];
            if (wp->state != W_DEAD && wp->pid > 0) {
                log_warn("worker %u of generation %u (pid %d) did not drain in time; killing it",
                         wp->index + 1, g->id, (int)wp->pid);
                kill(wp->pid, SIGKILL);
            }
        }
        g->kill_at = 0;
    }
}

/* Open cfg->log when it is a file, owned by the workers' user so they can reopen it. */
static int open_log_file(const berth_config_t *cfg)
{
    if (cfg->log[0] != '/')
        return 0;
    int uid = -1, gid = -1;
    if (geteuid() == 0 && cfg->user && strcmp(cfg->user, "root") != 0) {
        struct passwd *pw = getpwnam(cfg->user);
        if (pw) {
            uid = (int)pw->pw_uid;
            gid = (int)pw->pw_gid;
        }
    }
    return log_open_file(cfg->log, uid, gid);
}

/* SIGUSR1: the log file was rotated away; every process starts a new one. */
static void master_reopen_log(master_t *m)
{
    const berth_config_t *cfg = m->active ? m->active->cfg : NULL;
    if (cfg == NULL || cfg->log[0] != '/') {
        log_info("SIGUSR1: logging to %s, nothing to reopen", cfg ? cfg->log : "stderr");
        return;
    }
    int rc = open_log_file(cfg);
    if (rc) {
        log_error("cannot reopen %s: %s", cfg->log, strerror(-rc));
        return;
    }
    log_info("log file %s reopened", cfg->log);
    generation_t *lists[] = {m->active, m->starting, m->old};
    for (int k = 0; k < 3; k++)
        for (generation_t *g = lists[k]; g; g = g->next)
            for (unsigned i = 0; i < g->nworkers; i++)
                if (g->workers[i].state != W_DEAD)
                    worker_send(&g->workers[i], CTL_REOPEN);
}

static void on_signal(uv_poll_t *p, int status, int events)
{
    master_t *m = p->data;
    struct signalfd_siginfo si;
    while (read(m->signal_fd, &si, sizeof si) == (ssize_t)sizeof si) {
        switch (si.ssi_signo) {
        case SIGCHLD:
            reap_children(m);
            break;
        case SIGHUP:
            master_reload(m, NULL, NULL);
            break;
        case SIGTERM:
        case SIGINT:
            if (m->stopping) {
                log_warn("second %s: stopping now", strsignal((int)si.ssi_signo));
                master_stop(m, 1);
            } else {
                master_stop(m, 0);
            }
            break;
        case SIGUSR1:
            master_reopen_log(m);
            break;
        }
    }
}

/* ---- start ---- */

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

int master_run(const char *path)
{
    master_t m;
    memset(&m, 0, sizeof m);
    the_master = &m;
    m.conf_path = path;
    m.signal_fd = -1;
    int rc = 0;

    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    if (config_load(path, &cfg, &errs)) {
        for (size_t i = 0; i < errs.count; i++)
            fprintf(stderr, "%s\n", errs.msgs[i]);
        config_errors_free(&errs);
        return 78;
    }
    log_init("master", cfg->log_level, strcmp(cfg->log, "syslog") == 0);
    rc = open_log_file(cfg);
    if (rc) {
        fprintf(stderr, "%s: cannot open log file %s: %s\n", path, cfg->log, strerror(-rc));
        config_free(cfg);
        return 71;
    }
    plugin_set_trusted_uid(getuid()); /* workers check plugins after dropping to `user` */
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    m.stats = stats_map();
    if (m.stats == NULL || uv_loop_init(&m.loop)) {
        log_error("cannot set up: %s", strerror(errno));
        config_free(cfg);
        stats_unmap(m.stats);
        return 71;
    }
    m.started_ms = m.stats->started_ms;

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    m.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m.signal_fd < 0) {
        log_error("signalfd: %s", strerror(errno));
        rc = 71;
        goto out;
    }
    uv_poll_init(&m.loop, &m.sig, m.signal_fd);
    m.sig.data = &m;
    uv_poll_start(&m.sig, UV_READABLE, on_signal);
    uv_timer_init(&m.loop, &m.tick);
    m.tick.data = &m;
    uv_timer_start(&m.tick, on_tick, TICK_MS, TICK_MS);

    if (cfg->admin && cfg->admin[0]) {
        m.admin = admin_open(&m, cfg->admin, &errs);
        if (m.admin == NULL) {
            for (size_t i = 0; i < errs.count; i++)
                log_error("%s", errs.msgs[i]);
            config_errors_free(&errs);
            config_free(cfg);
            rc = 71;
            goto out_loop;
        }
    }

    generation_t *g = generation_new(&m, cfg);
    if (g == NULL) {
        config_free(cfg);
        rc = 71;
        goto out_loop;
    }
    if (generation_start(&m, g, &errs)) {
        for (size_t i = 0; i < errs.count; i++)
            log_error("%s", errs.msgs[i]);
        config_errors_free(&errs);
        m.exit_code = 78;
        m.starting = NULL;
        list_push(&m.old, g);
        master_stop(&m, 1);
    } else {
        m.starting = g;
    }
    uv_run(&m.loop, UV_RUN_DEFAULT);
    rc = m.exit_code;
    if (rc == 0)
        log_info("stopped");
out_loop:
    admin_free(m.admin);
    m.admin = NULL;
    if (!uv_is_closing((uv_handle_t *)&m.sig)) {
        uv_close((uv_handle_t *)&m.sig, on_handle_closed);
        uv_close((uv_handle_t *)&m.tick, on_handle_closed);
    }
    uv_run(&m.loop, UV_RUN_DEFAULT);
    uv_loop_close(&m.loop);
out:
    for (size_t i = 0; i < m.nsocks; i++)
        if (m.socks[i].fd >= 0)
            listen_close(&m.socks[i]);
    if (m.signal_fd >= 0)
        close(m.signal_fd);
    stats_unmap(m.stats);
    return rc;
}
