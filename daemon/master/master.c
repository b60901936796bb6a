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
#include "config/tls.h"

#include <assert.h>
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <sysexits.h>
#include <unistd.h>

#include "core/control.h"
#include "core/limits.h"
#include "core/log.h"
#include "core/notify.h"
#include "master/admin.h"
#include "master/agent.h"
#include "master/generation.h"
#include "master/metrics.h"
#include "master/process.h"
#include "master/upgrade.h"
#include "worker/loader.h"
#include "worker/sandbox.h"

#define TICK_MS 100

static void generation_check(master_t *m, generation_t *g);
static int open_log_file(const berth_config_t *cfg);
static void master_check_exit(master_t *m);
static void reload_finish(master_t *m, int ok, const char *text);

static void on_ctl(uv_poll_t *p, int status, int events)
{
    wproc_t *wp = p->data;
    generation_t *g = wp->gen;
    int changed = 0;
    if (!generation_ctl_read(g, wp, &changed))
        uv_poll_stop(p);
    if (changed)
        generation_check(g->owner, g);
}

static generation_t *master_generation_new(master_t *m, berth_config_t *cfg)
{
    return generation_new(++m->next_generation, cfg, &m->loop, &m->socks, m);
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

static void reload_begin(master_t *m);
static void reload_finish(master_t *m, int ok, const char *text);
static void reload_run_queued(master_t *m);

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
        generation_list_push(&m->old, g);
        if (m->active == NULL && upgrade_on_failed(m, why)) {
            /* an upgraded image that could not start: the adopted workers go on */
        } else if (m->active == NULL) {
            log_error("cannot start:");
            log_lines(BERTH_LOG_ERROR, why);
            m->exit_code = EX_CONFIG;
            master_stop(m, 1);
        } else {
            sockets_restore_groups(&m->socks, m->active->cfg);
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
    /* A reload lifts every quarantine: the new workers start on every listener. */
    for (size_t i = 0; i < m->socks.n; i++) {
        if (m->socks.socks[i].fd >= 0 && m->socks.socks[i].quarantined) {
            log_info("listener [%s]: quarantine lifted by the reload", m->socks.socks[i].name);
            sockets_lift(&m->socks, i);
        }
    }
    generation_activate(g);
    generation_t *prev = m->active;
    m->active = g;
    if (m->starting == g)
        m->starting = NULL;
    atomic_store(&m->stats->generation, g->id);
    if (prev) {
        generation_stop(prev, 0);
        generation_list_push(&m->old, prev);
        atomic_fetch_add(&m->stats->reloads_ok, 1);
        log_info("reloaded: generation %u serves %zu listener(s) with %u worker(s); "
                 "generation %u drains",
                 g->id, g->cfg->nlisteners, g->nworkers, prev->id);
        reload_finish(m, 1, NULL);
    } else {
        log_info("ready: generation %u serves %zu listener(s) with %u worker(s)", g->id,
                 g->cfg->nlisteners, g->nworkers);
        upgrade_on_ready(m);
        char sandbox[300]; /* sandbox: what the workers applied, or why not */
        if (sandbox_describe(g->cfg, sandbox, sizeof sandbox))
            log_warn("%s", sandbox);
        else
            log_info("%s", sandbox);
        notify_ready();
        /* A SIGHUP (or berthctl reload) that came while the first generation started was
         * queued behind it: it runs now, with the config as it is now. */
        reload_run_queued(m);
    }
    status_line(m);
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

static void reload_finish(master_t *m, int ok, const char *text)
{
    reload_waiter_t *w = m->waiters;
    m->waiters = NULL;
    notify_ready();
    status_line(m);
    waiters_tell(w, ok, text);
    reload_run_queued(m);
}

static void reload_run_queued(master_t *m)
{
    if (!m->reload_queued || m->stopping)
        return;
    m->reload_queued = 0;
    m->waiters = m->queued_waiters;
    m->queued_waiters = NULL;
    reload_begin(m);
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

/* metrics: serve /metrics where cfg says; a reload that keeps the address keeps the
 * socket (no scrape is refused), one that changes it opens the new one before the old goes.
 * Returns 0, or -1 with the reason in errs. */
static int metrics_apply(master_t *m, const berth_config_t *cfg, config_errors_t *errs)
{
    const char *at = cfg->metrics;
    if ((at == NULL && m->metrics_at == NULL) ||
        (at && m->metrics_at && strcmp(at, m->metrics_at) == 0))
        return 0;
    metrics_t *mx = NULL;
    char *copy = NULL;
    if (at) {
        char why[256];
        mx = metrics_open(&m->loop, (const struct sockaddr *)&cfg->metrics_addr,
                          cfg->metrics_addrlen, m->stats, why, sizeof why);
        copy = strdup(at);
        if (mx == NULL || copy == NULL) {
            config_errors_add(errs, cfg->path, 0, "metrics %s: %s", at, mx ? "out of memory" : why);
            metrics_close(mx);
            free(copy);
            return -1;
        }
        log_info("metrics: serving /metrics on %s", metrics_where(mx, why, sizeof why));
    }
    metrics_close(m->metrics);
    free(m->metrics_at);
    m->metrics = mx;
    m->metrics_at = copy;
    return 0;
}

static void reload_begin(master_t *m)
{
    notify_reloading();
    log_info("reloading %s", m->conf_path);
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    generation_t *g = NULL;
    if (config_load_with_tls(m->conf_path, &cfg, &errs) == 0) {
        log_set_level(cfg->log_level);
        log_set_format(cfg->log_json);
        plugin_files_note(cfg, 1);
        if (limits_size() && cfg->per_source_table != limits_size())
            log_warn("per_source_table = %u takes effect at the next start; the table keeps its "
                     "%u entries (and its counts) across reloads",
                     cfg->per_source_table, limits_size());
        if (strcmp(cfg->log, m->active ? m->active->cfg->log : "") != 0 && open_log_file(cfg))
            log_error("cannot open log file %s; logging goes on where it was", cfg->log);
        g = metrics_apply(m, cfg, &errs) ? NULL : master_generation_new(m, cfg);
        if (g == NULL) {
            if (errs.count == 0)
                config_errors_add(&errs, m->conf_path, 0, "out of memory");
            config_free(cfg);
        } else if (generation_start(g, &errs, on_ctl) == 0) {
            m->starting = g;
            return; /* generation_check finishes it */
        }
    }
    char *text = errors_text(&errs);
    if (m->active)
        sockets_restore_groups(&m->socks, m->active->cfg);
    log_error("reload failed, generation %u goes on serving:", m->active ? m->active->id : 0);
    log_lines(BERTH_LOG_ERROR, text ? text : "out of memory");
    atomic_fetch_add(&m->stats->reloads_failed, 1);
    if (g) {
        generation_stop(g, 1);
        generation_list_push(&m->old, g);
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
    if (m->starting || (m->active == NULL && !upgrade_serving(m))) {
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
    m->draining_soon = 0;
    uv_timer_stop(&m->drain_wait);
    m->reload_queued = 0;
    waiters_tell(m->waiters, 0, "berthd is stopping");
    waiters_tell(m->queued_waiters, 0, "berthd is stopping");
    m->waiters = m->queued_waiters = NULL;
    if (m->active) {
        generation_stop(m->active, now);
        generation_list_push(&m->old, m->active);
        m->active = NULL;
    }
    if (m->starting) {
        generation_stop(m->starting, 1);
        generation_list_push(&m->old, m->starting);
        m->starting = NULL;
    }
    if (now)
        for (generation_t *g = m->old; g; g = g->next)
            generation_stop(g, 1);
    upgrade_stop(m, now);
    /* Nobody will accept again: close the listening sockets now (the workers close their
     * copies on STOP), so new clients are refused at once rather than left in a backlog. */
    sockets_close_all(&m->socks);
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
    if (upgrade_alive(m))
        return;
    while (m->old) {
        generation_t *g = m->old;
        m->old = g->next;
        generation_free(g);
    }
    uv_poll_stop(&m->sig);
    uv_close((uv_handle_t *)&m->sig, on_handle_closed);
    uv_close((uv_handle_t *)&m->tick, on_handle_closed);
    uv_close((uv_handle_t *)&m->drain_wait, on_handle_closed);
    agent_close(m->agent);
    m->agent = NULL;
    metrics_close(m->metrics); /* metrics: served while anything drained */
    m->metrics = NULL;
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

/* Where a dead worker was: the listener (index in g->cfg) and plugin hook it recorded in
 * shared memory before calling plugin code. When it recorded no listener, the only listener
 * it held connections of, if there was just one. */
static void crash_site(master_t *m, const generation_t *g, int wslot, int *lk, int *hook)
{
    stats_worker_t *w = &m->stats->workers[wslot];
    *hook = atomic_load(&w->cur_hook);
    *lk = generation_listener_of_slot(g, atomic_load(&w->cur_listener));
    if (*lk >= 0)
        return;
    int only = -1;
    for (size_t k = 0; k < g->cfg->nlisteners; k++) {
        int s = g->slots[k];
        if (s < 0 || atomic_load(&w->active_by_listener[s]) == 0)
            continue;
        if (only >= 0)
            return; /* more than one: no telling */
        only = (int)k;
    }
    *lk = only;
}

/* "in socks5.so handle() serving [socks]", "in host code serving [socks]", "in host code" */
static void describe_site(const generation_t *g, int lk, int hook, char *buf, size_t len)
{
    const char *hname = hook != STATS_HOOK_NONE ? stats_hook_name(hook) : NULL;
    if (hname && hname[0] == '\0')
        hname = NULL;
    if (lk < 0) {
        snprintf(buf, len, "in %s", hname ? hname : "host code");
        return;
    }
    const config_listener_t *l = &g->cfg->listeners[lk];
    const char *file = l->plugin_path ? strrchr(l->plugin_path, '/') : NULL;
    file = file ? file + 1 : (l->plugin_path ? l->plugin_path : l->handler);
    if (hname)
        snprintf(buf, len, "in %s %s serving [%s]", file, hname, l->name);
    else
        snprintf(buf, len, "in host code serving [%s]", l->name);
}

/* Tell the serving generation's workers that socket `sock` is quarantined or resumed. */
static void quarantine_tell(master_t *m, size_t sock, uint32_t type)
{
    if (m->active)
        generation_tell_listener(m->active, sock, type);
}

static void respawn(master_t *m, generation_t *g, wproc_t *wp, uint64_t now)
{
    if (generation_spawn(g, wp, on_ctl) == 0) {
        atomic_fetch_add(&m->stats->worker_restarts, 1);
        log_info("worker %u of generation %u replaced (pid %d)", wp->index + 1, g->id,
                 (int)wp->pid);
        return;
    }
    /* EMFILE, EAGAIN from fork: the same backoff as a crash, not a retry every tick. */
    unsigned delay = process_backoff(&wp->backoff_ms, 0);
    log_error("worker %u of generation %u: cannot start it; next try in %u ms", wp->index + 1,
              g->id, delay);
    wp->respawn_at = now + delay;
}

static void describe_listeners(const generation_t *g, const wproc_t *wp, char *buf, size_t len)
{
    size_t off = 0;
    const int *fds = generation_worker_fds(g, wp);
    buf[0] = '\0';
    for (size_t i = 0; i < g->cfg->nlisteners && off < len; i++)
        if (fds[i] >= 0)
            off += (size_t)snprintf(buf + off, len - off, "%s%s", off ? ", " : "",
                                    g->cfg->listeners[i].name);
}

static void on_worker_exit(master_t *m, wproc_t *wp, int status)
{
    generation_t *g = wp->gen;
    /* What it said before it died (its errors, say) counts more than how it died. */
    int changed = 0;
    if (wp->state == W_STARTING)
        generation_ctl_read(g, wp, &changed);
    if (changed)
        generation_check(m, g);
    int prev = wp->state;
    generation_worker_leaves(g, wp);
    int lk = -1, hook = STATS_HOOK_NONE;
    if (wp->slot >= 0)
        crash_site(m, g, wp->slot, &lk, &hook); /* before settle clears what it held */
    /* Still loading its plugins (its generation failed and stopped it meanwhile): it never
     * got to drain anything. */
    int preparing = hook == STATS_HOOK_LOAD || hook == STATS_HOOK_CHECK_OPTION ||
                    hook == STATS_HOOK_LISTENER_OPEN;
    wp->state = W_DEAD;
    wp->pid = 0;
    process_ctl_close(wp);
    if (wp->slot >= 0)
        stats_worker_settle(m->stats, wp->slot);
    if (wp->slot >= 0)
        limits_settle(wp->slot);
    wp->slot = -1;
    if (prev == W_STOPPING) {
        int died = WIFSIGNALED(status) || WEXITSTATUS(status) != 0;
        if (died && preparing) {
            char site[400];
            describe_site(g, lk, hook, site, sizeof site);
            if (WIFSIGNALED(status))
                log_error("worker %u of generation %u crashed (signal %d) %s before it was ready",
                          wp->index + 1, g->id, WTERMSIG(status), site);
            else
                log_error("worker %u of generation %u crashed (exit status %d) %s before it was "
                          "ready",
                          wp->index + 1, g->id, WEXITSTATUS(status), site);
        } else if (WIFSIGNALED(status)) {
            log_warn("worker %u of generation %u killed by signal %d (%s) while draining",
                     wp->index + 1, g->id, WTERMSIG(status), strsignal(WTERMSIG(status)));
        }
        if (generation_alive(g) == 0 && g->state == G_DRAINING) {
            log_debug("generation %u has drained", g->id);
            generation_list_remove(&m->old, g);
            generation_free(g);
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
    describe_listeners(g, wp, served, sizeof served);
    if (prev == W_STARTING && g->state == G_STARTING) {
        if (!g->failed) {
            char text[800], site[400] = "";
            if (hook != STATS_HOOK_NONE) {
                site[0] = ' ';
                describe_site(g, lk, hook, site + 1, sizeof site - 1);
            }
            snprintf(text, sizeof text, "%s: worker %u of generation %u %s%s before it was ready",
                     g->cfg->path, wp->index + 1, g->id, what, site);
            g->failed = 1;
            g->fail_text = strdup(text);
        }
        generation_check(m, g);
        return;
    }
    atomic_fetch_add(&m->stats->worker_crashes, 1);
    uint64_t now = uv_now(&m->loop);
    char site[400];
    describe_site(g, lk, hook, site, sizeof site);
    if (WIFSIGNALED(status) && WTERMSIG(status) == SIGSYS) /* sandbox: seccomp killed it */
        log_error("worker %u of generation %u crashed (signal %d) %s: a sandbox violation (a "
                  "denied system call, sandbox_violation = kill)",
                  wp->index + 1, g->id, WTERMSIG(status), site);
    else if (WIFSIGNALED(status))
        log_error("worker %u of generation %u crashed (signal %d) %s", wp->index + 1, g->id,
                  WTERMSIG(status), site);
    else
        log_error("worker %u of generation %u crashed (exit status %d) %s", wp->index + 1, g->id,
                  WEXITSTATUS(status), site);
    /* A crash in plugin code of a ready worker is replaced at once: its listener's
     * crash_limit, not a growing delay that would starve every other listener on the worker,
     * is what bounds a crash loop there. A crash before ready (loading, listener_open) or in
     * host code backs off instead of spinning, unless the worker had lived STABLE_MS. */
    unsigned delay = process_backoff(&wp->backoff_ms, now - wp->started);
    if (lk >= 0 && hook != STATS_HOOK_NONE && prev == W_READY) {
        delay = 0;
        wp->backoff_ms = BACKOFF_MIN_MS;
    }
    if (lk >= 0 && prev == W_READY && g->state == G_ACTIVE) {
        const config_listener_t *l = &g->cfg->listeners[lk];
        if (sockets_crash(&m->socks, g->socks[lk], now, l->crash_limit, l->crash_window)) {
            quarantine_tell(m, g->socks[lk], CTL_QUARANTINE);
            log_error("listener [%s] quarantined: %s (crash_limit %u/%llu s); no worker accepts "
                      "on it until a reload or 'berthctl resume %s'",
                      l->name, m->socks.socks[g->socks[lk]].why, l->crash_limit,
                      (unsigned long long)(l->crash_window / 1000), l->name);
            delay = 0; /* its cause is gone: the others need the worker back */
            wp->backoff_ms = BACKOFF_MIN_MS;
        }
    }
    log_error("worker %u of generation %u %s; it served: %s; replacing it in %u ms", wp->index + 1,
              g->id, what, served, delay);
    wp->respawn_at = now + delay;
    if (delay == 0 && g == m->active && !m->stopping)
        respawn(m, g, wp, now);
}

static void reap_children(master_t *m)
{
    int status;
    pid_t pid;
    while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
        wproc_t *wp = find_worker(m, pid);
        if (wp)
            on_worker_exit(m, wp, status);
        else if (upgrade_reap(m, pid, status))
            master_check_exit(m);
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
            if (wp->state == W_DEAD && wp->respawn_at && now >= wp->respawn_at)
                respawn(m, g, wp, now);
        }
    }
    upgrade_tick(m, now);
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
                    process_send(&g->workers[i], CTL_REOPEN);
}

static void on_drain_wait(uv_timer_t *t)
{
    master_stop(t->data, 0);
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
            if (!m->stopping && !m->draining_soon && m->active && m->active->cfg->drain_delay > 0) {
                /* The balancer's agent-check hears "drain" and moves new clients away while
                 * this host still takes them; then the usual stop. */
                m->draining_soon = 1;
                log_info("%s: draining: the agent says drain; stopping in %llu ms",
                         strsignal((int)si.ssi_signo),
                         (unsigned long long)m->active->cfg->drain_delay);
                uv_timer_start(&m->drain_wait, on_drain_wait, m->active->cfg->drain_delay, 0);
            } else if (m->draining_soon) {
                log_info("second %s: stopping without waiting out drain_delay",
                         strsignal((int)si.ssi_signo));
                master_stop(m, 0);
            } else if (m->stopping) {
                log_warn("second %s: stopping now", strsignal((int)si.ssi_signo));
                master_stop(m, 1);
            } else {
                master_stop(m, 0);
            }
            break;
        case SIGUSR1:
            master_reopen_log(m);
            break;
        case SIGUSR2: /* binary upgrade, as berthctl upgrade */
            upgrade_begin(m, -1, NULL, NULL);
            break;
        }
    }
}

/* ---- start ---- */

/* The agent-check's answer: see agent.h. The weight is the share of the serving
 * generation's connection slots that are free. */
static void agent_answer(void *ctx, char *buf, size_t len)
{
    master_t *m = ctx;
    const generation_t *g = m->active;
    if (m->draining_soon) {
        snprintf(buf, len, "drain\n");
        return;
    }
    if (g == NULL && upgrade_serving(m) && !m->stopping) {
        /* A binary upgrade: the previous image's workers serve until this one's are ready. */
        snprintf(buf, len, "up\n");
        return;
    }
    if (g == NULL || m->stopping) {
        snprintf(buf, len, "down\n");
        return;
    }
    uint64_t cap = 0, busy = 0;
    for (size_t i = 0; i < g->cfg->nlisteners; i++) {
        int slot = g->slots ? g->slots[i] : -1;
        if (slot < 0)
            continue;
        uint64_t c = g->cfg->listeners[i].concurrency;
        uint64_t a = atomic_load(&m->stats->listeners[slot].active);
        cap += c;
        busy += a < c ? a : c;
    }
    snprintf(buf, len, "up ready %u%%\n", cap ? (unsigned)((cap - busy) * 100 / cap) : 100u);
}

static const agent_ops_t agent_ops = {.answer = agent_answer};

/* What admin may ask of the master. */
static void admin_snapshot(void *ctx, admin_snapshot_t *out)
{
    master_t *m = ctx;
    out->stats = m->stats;
    out->conf_path = m->conf_path;
    for (size_t i = 0; i < m->socks.n; i++) {
        const lsock_t *s = &m->socks.socks[i];
        if (s->fd >= 0 && s->slot >= 0 && s->slot < STATS_LISTENERS) {
            out->bound[s->slot] = s->bound;
            out->quarantined[s->slot] = s->quarantined ? s->why : NULL;
            out->groups[s->slot] = s->groups[0] ? s->groups : NULL;
        }
    }
    upgrade_snapshot(m, out);
}

static void admin_reload(void *ctx, admin_done_cb done, void *arg)
{
    master_reload(ctx, done, arg);
}

static void admin_stop_daemon(void *ctx)
{
    master_stop(ctx, 0);
}

static int admin_resume(void *ctx, const char *name, char *msg, size_t len)
{
    master_t *m = ctx;
    generation_t *g = m->active;
    for (size_t k = 0; g && k < g->cfg->nlisteners; k++) {
        if (strcmp(g->cfg->listeners[k].name, name) != 0)
            continue;
        lsock_t *s = &m->socks.socks[g->socks[k]];
        if (!s->quarantined) {
            snprintf(msg, len, "listener [%s] is not quarantined\n", name);
            return 0;
        }
        sockets_lift(&m->socks, g->socks[k]);
        quarantine_tell(m, g->socks[k], CTL_RESUME);
        log_info("listener [%s]: quarantine lifted by berthctl resume", name);
        snprintf(msg, len, "listener [%s] resumed\n", name);
        return 1;
    }
    snprintf(msg, len, "no listener [%s]\n", name);
    return 0;
}

static void admin_upgrade(void *ctx, int client_fd, admin_done_cb done, void *arg)
{
    upgrade_begin(ctx, client_fd, done, arg);
}

static const admin_ops_t admin_ops = {
    .snapshot = admin_snapshot,
    .reload = admin_reload,
    .stop = admin_stop_daemon,
    .resume = admin_resume,
    .upgrade = admin_upgrade,
};

static void raise_nofile(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int master_main(const char *path, int hfd)
{
    master_t m;
    memset(&m, 0, sizeof m);
    m.conf_path = path;
    m.signal_fd = -1;
    m.handover_fd = hfd;
    sockets_init(&m.socks, NULL);
    int rc = 0;

    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    char *cfg_failed = NULL; /* a binary upgrade whose config fails: rolled back below */
    if (config_load_with_tls(path, &cfg, &errs)) {
        if (hfd < 0) {
            for (size_t i = 0; i < errs.count; i++)
                fprintf(stderr, "%s\n", errs.msgs[i]);
            config_errors_free(&errs);
            return EX_CONFIG;
        }
        cfg_failed = errors_text(&errs);
        config_errors_free(&errs);
        cfg = NULL;
    }
    log_init("master", cfg ? cfg->log_level : BERTH_LOG_INFO,
             cfg && strcmp(cfg->log, "syslog") == 0);
    if (cfg)
        log_set_format(cfg->log_json);
    rc = cfg ? open_log_file(cfg) : 0;
    if (rc) {
        fprintf(stderr, "%s: cannot open log file %s: %s\n", path, cfg->log, strerror(-rc));
        config_free(cfg);
        return EX_OSERR;
    }
    plugin_set_trusted_uid(getuid()); /* workers check plugins after dropping to `user` */
    plugin_files_note(cfg, 0);
    raise_nofile();
    signal(SIGPIPE, SIG_IGN);

    if (hfd >= 0) {
        /* A binary upgrade: the counters, the per-source table, the sockets, the admin
         * socket and the workers are the previous image's (see upgrade.h). */
        char why[1200];
        if (upgrade_adopt_early(&m, hfd, why, sizeof why)) {
            log_error("upgrade: cannot take over: %s", why);
            config_free(cfg);
            free(cfg_failed);
            upgrade_free(&m);
            return EX_SOFTWARE;
        }
    } else {
        m.stats = stats_map();
    }
    /* Before the first fork, as the counters: every worker of every generation shares it. */
    rc = limits_map(cfg ? cfg->per_source_table : 1);
    if (rc) {
        log_error("cannot map the per-source table (%u entries): %s",
                  cfg ? cfg->per_source_table : 1, strerror(-rc));
        config_free(cfg);
        stats_unmap(m.stats);
        return EX_OSERR;
    }
    if (m.stats == NULL || uv_loop_init(&m.loop)) {
        int e = errno;
        log_error("cannot set up: %s", strerror(e));
        config_free(cfg);
        stats_unmap(m.stats);
        return EX_OSERR;
    }
    m.started_ms = m.stats->started_ms;
    m.socks.stats = m.stats;

    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGCHLD);
    sigaddset(&mask, SIGHUP);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    sigaddset(&mask, SIGUSR1);
    sigaddset(&mask, SIGUSR2);
    sigprocmask(SIG_BLOCK, &mask, NULL);
    m.signal_fd = signalfd(-1, &mask, SFD_NONBLOCK | SFD_CLOEXEC);
    if (m.signal_fd < 0) {
        int e = errno;
        log_error("signalfd: %s", strerror(e));
        rc = EX_OSERR;
        goto out;
    }
    uv_poll_init(&m.loop, &m.sig, m.signal_fd);
    m.sig.data = &m;
    uv_poll_start(&m.sig, UV_READABLE, on_signal);
    uv_timer_init(&m.loop, &m.tick);
    m.tick.data = &m;
    uv_timer_start(&m.tick, on_tick, TICK_MS, TICK_MS);
    uv_timer_init(&m.loop, &m.drain_wait);
    m.drain_wait.data = &m;

    if (upgrade_init(&m, cfg && cfg->admin ? cfg->admin : NULL))
        log_warn("binary upgrade unavailable: cannot find this executable: %s", strerror(errno));
    if (hfd >= 0) {
        char why[1200];
        if (upgrade_adopt(&m, &admin_ops, &agent_ops, why, sizeof why)) {
            log_error("upgrade: cannot take over: %s", why);
            if (!cfg_failed)
                cfg_failed = strdup(why);
        }
#ifdef BERTH_UPGRADE_TEST_HOOKS
        /* Test builds only (cmake -DBERTH_UPGRADE_TEST_HOOKS=ON, docs/upgrade.md): a new image
         * that fails after its check passed, to see it roll back. The variable names the
         * version that fails. */
        const char *fail = getenv("BERTH_TEST_UPGRADE_FAIL");
        if (!cfg_failed && fail && strcmp(fail, BERTH_VERSION) == 0)
            cfg_failed = strdup("BERTH_TEST_UPGRADE_FAIL: this version fails after the exec");
#endif
    }
    /* The agent-check: a binary upgrade handed it over (kept if the config names it still). */
    if (cfg && m.agent && (!cfg->agent || strcmp(agent_at(m.agent), cfg->agent) != 0)) {
        agent_close(m.agent);
        m.agent = NULL;
    }
    if (cfg && cfg->agent && m.agent == NULL && !cfg_failed) {
        char why[256];
        m.agent = agent_open(&m.loop, (const struct sockaddr *)&cfg->agent_addr, cfg->agent,
                             &agent_ops, &m, why, sizeof why);
        if (m.agent == NULL && hfd >= 0) {
            char text[512];
            snprintf(text, sizeof text, "agent %s: %s", cfg->agent, why);
            cfg_failed = strdup(text); /* an upgrade: roll back */
        } else if (m.agent == NULL) {
            log_error("agent %s: %s", cfg->agent, why);
            config_free(cfg);
            rc = EX_OSERR;
            goto out_loop;
        }
    }
    if (cfg_failed) {
        /* Back to the previous image, which goes on; or, with none, the adopted workers. */
        if (!upgrade_on_failed(&m, cfg_failed)) {
            log_lines(BERTH_LOG_ERROR, cfg_failed);
            free(cfg_failed);
            config_free(cfg);
            rc = EX_CONFIG;
            goto out_loop;
        }
        free(cfg_failed);
        config_free(cfg);
        cfg = NULL;
        goto run;
    }
    if (hfd < 0 && cfg->admin && cfg->admin[0]) {
        m.admin = admin_open(&m.loop, cfg->admin, &admin_ops, &m, &errs);
        if (m.admin == NULL) {
            for (size_t i = 0; i < errs.count; i++)
                log_error("%s", errs.msgs[i]);
            config_errors_free(&errs);
            config_free(cfg);
            rc = EX_OSERR;
            goto out_loop;
        }
    }

    if (metrics_apply(&m, cfg, &errs)) {
        for (size_t i = 0; i < errs.count; i++)
            log_error("%s", errs.msgs[i]);
        config_errors_free(&errs);
        config_free(cfg);
        rc = EX_OSERR;
        goto out_loop;
    }

    upgrade_adopt_groups(&m, cfg);
    generation_t *g = master_generation_new(&m, cfg);
    if (g == NULL) {
        config_free(cfg);
        rc = EX_OSERR;
        goto out_loop;
    }
    if (generation_start(g, &errs, on_ctl)) {
        char *text = errors_text(&errs);
        for (size_t i = 0; i < errs.count; i++)
            log_error("%s", errs.msgs[i]);
        config_errors_free(&errs);
        m.starting = NULL;
        generation_stop(g, 1);
        generation_list_push(&m.old, g);
        if (!upgrade_on_failed(&m, text ? text : "cannot start a generation")) {
            m.exit_code = EX_CONFIG;
            master_stop(&m, 1);
        }
        free(text);
    } else {
        m.starting = g;
    }
run:
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
        uv_close((uv_handle_t *)&m.drain_wait, on_handle_closed);
    }
    agent_close(m.agent);
    m.agent = NULL;
    metrics_close(m.metrics);
    m.metrics = NULL;
    free(m.metrics_at);
    uv_run(&m.loop, UV_RUN_DEFAULT);
    uv_loop_close(&m.loop);
out:
    sockets_close_all(&m.socks);
    if (m.signal_fd >= 0)
        close(m.signal_fd);
    upgrade_free(&m);
    stats_unmap(m.stats);
    limits_unmap();
    return rc;
}

int master_run(const char *path)
{
    return master_main(path, -1);
}

int master_run_handover(const char *path, int fd)
{
    return master_main(path, fd);
}
