/*
 * The worker process. The master forks it with the config already parsed and the
 * listening sockets open; it loads the plugins itself (the master never maps plugin
 * code, so a reload's fresh fork runs what is on disk now), reports ready, waits for the
 * master's go, then accepts.
 *
 * Accepting is ours, not libuv's: a uv_poll on the listening socket and accept4() here,
 * so that at the concurrency cap we simply stop polling (new clients wait in the kernel's
 * backlog instead of being reset) and resume as slots free, and so that a peer refused by
 * allow/deny is closed before any handle exists for it.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sysexits.h>
#include <unistd.h>

#include "core/control.h"
#include "core/limits.h"
#include "config/plugin_opts.h"
#include "core/log.h"
#include "worker/conn.h"
#include "worker/proxy_stage.h"
#include "worker/source.h"
#include "worker/dgram_dest.h"
#include "worker/host.h"
#include "worker/worker.h"
#include "worker/tls.h"
#include "worker/sandbox.h"

#define ACCEPT_BATCH 64 /* accept4 calls per readiness: failures and refusals only */
#define DGRAM_BATCH 64
#define CAP_RECHECK_MS 20 /* another worker may free a slot: look again this often */
#define EMFILE_RETRY_MS 100
#define READBUF_SIZE (64 * 1024)

static void listener_poll_start(berth_listener_t *l);
static void listener_poll_stop(berth_listener_t *l);
static void worker_check_done(worker_t *w);

/* ---- plugins ---- */

static plugin_t *find_plugin(worker_t *w, const char *path)
{
    for (size_t i = 0; i < w->nplugins; i++)
        if (strcmp(w->plugins[i]->path, path) == 0)
            return w->plugins[i];
    return NULL;
}

int worker_prepare(worker_t *w, config_errors_t *errs)
{
    const berth_config_t *cfg = w->cfg;
    char err[1024];
    int failed = 0;
    w->listeners = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof *w->listeners);
    w->plugins = calloc(cfg->nlisteners ? cfg->nlisteners : 1, sizeof *w->plugins);
    if (w->listeners == NULL || w->plugins == NULL) {
        config_errors_add(errs, cfg->path, 0, "out of memory");
        return -ENOMEM;
    }
    w->nlisteners = cfg->nlisteners;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        const config_listener_t *lc = &cfg->listeners[i];
        berth_listener_t *l = &w->listeners[i];
        l->w = w;
        l->cfg = lc;
        l->fd = -1;
        l->slot = w->listen_slots ? w->listen_slots[i] : -1;
        l->stream = lc->protocol == BERTH_PROTO_TCP || lc->protocol == BERTH_PROTO_UNIX;
        if (lc->tls && tls_listener_open(l, errs))
            failed = 1;
        plugin_t *p = find_plugin(w, lc->plugin_path);
        if (p == NULL) {
            err[0] = '\0';
            /* load() runs in there: a crash names this listener and load(). */
            conn_plugin_scope_t sc = conn_plugin_enter(w, l, STATS_HOOK_LOAD);
            int rc = plugin_open(lc->plugin_path, &berth_host_table, &p, err, sizeof err);
            conn_plugin_leave(w, sc);
            if (rc) {
                config_errors_add(errs, lc->file, lc->handler_line, "handler '%s': %s", lc->handler,
                                  err);
                failed = 1;
                continue;
            }
            w->plugins[w->nplugins++] = p;
            if (w->st != NULL && w->index == 0)
                log_info("generation %u loaded %s: plugin '%s' version %s", w->generation, p->path,
                         p->desc.name, p->desc.version ? p->desc.version : "(none)");
        }
        l->plugin = p;
        if (p->desc.handle == NULL) {
            config_errors_add(errs, lc->file, lc->handler_line,
                              "handler '%s': %s: plugin '%s' has no handle()", lc->handler, p->path,
                              p->desc.name);
            failed = 1;
            continue;
        }
        int bad_option = 0;
        /* Declared options first: parsed by the host, with FILE:LINE errors. check_option
         * then sees every key, for what the table cannot say. */
        if (p->desc.options && plugin_opts_parse(p->desc.options, p->desc.options_size,
                                                 p->desc.name, lc, &l->opts, errs))
            bad_option = 1;
        for (size_t k = 0; k < lc->noptions; k++) {
            const config_option_t *o = &lc->options[k];
            int declared = plugin_opts_find(p->desc.options, o->key) != NULL;
            if (declared && l->opts == NULL)
                continue; /* the table refused something: reported above */
            if (p->desc.check_option == NULL) {
                if (declared)
                    continue;
                char known[512];
                plugin_opts_names(p->desc.options, known, sizeof known);
                config_errors_add(errs, o->file, o->line, "unknown key '%s' (plugin '%s' %s)",
                                  o->key, p->desc.name, known);
                bad_option = 1;
                continue;
            }
            /* The host adds FILE:LINE only: the plugin's message names the key. */
            snprintf(err, sizeof err, "%s: plugin '%s' refused it", o->key, p->desc.name);
            conn_plugin_scope_t sc = conn_plugin_enter(w, l, STATS_HOOK_CHECK_OPTION);
            int bad = p->desc.check_option(l, o->key, o->value, err, sizeof err);
            conn_plugin_leave(w, sc);
            if (bad) {
                config_errors_add(errs, o->file, o->line, "%s", err);
                bad_option = 1;
            }
        }
        if (bad_option) {
            failed = 1;
            continue;
        }
        if (p->desc.listener_open) {
            snprintf(err, sizeof err, "plugin '%s' failed to open the listener", p->desc.name);
            conn_plugin_scope_t sc = conn_plugin_enter(w, l, STATS_HOOK_LISTENER_OPEN);
            int rc = p->desc.listener_open(l, &l->state, err, sizeof err);
            conn_plugin_leave(w, sc);
            if (rc) {
                config_errors_add(errs, lc->file, lc->line, "[%s]: %s", lc->name, err);
                failed = 1;
                continue;
            }
        }
        l->opened = 1;
    }
    return failed ? -EINVAL : 0;
}

void worker_release(worker_t *w)
{
    for (size_t i = 0; i < w->nlisteners; i++) {
        berth_listener_t *l = &w->listeners[i];
        if (l->opened && l->plugin->desc.listener_close) {
            conn_plugin_scope_t sc = conn_plugin_enter(w, l, STATS_HOOK_LISTENER_CLOSE);
            l->plugin->desc.listener_close(l, l->state);
            conn_plugin_leave(w, sc);
        }
        l->opened = 0;
        if (l->plugin)
            plugin_opts_free(l->plugin->desc.options, l->opts);
        l->opts = NULL;
        tls_listener_close(l);
    }
    for (size_t i = 0; i < w->nplugins; i++)
        plugin_close(w->plugins[i]);
    free(w->plugins);
    free(w->listeners);
    w->plugins = NULL;
    w->listeners = NULL;
    w->nplugins = w->nlisteners = 0;
    sandbox_forget(); /* sandbox: the declarations named these listeners */
}

/* ---- concurrency slots ---- */

static int slot_reserve(berth_listener_t *l)
{
    uint64_t cap = l->cfg->concurrency;
    if (atomic_fetch_add(&l->st->active, 1) >= cap) {
        atomic_fetch_sub(&l->st->active, 1);
        return -1;
    }
    atomic_fetch_add(&l->w->st->active_by_listener[l->slot], 1);
    atomic_fetch_add(&l->w->st->active, 1);
    return 0;
}

static void slot_release(berth_listener_t *l)
{
    atomic_fetch_sub(&l->w->st->active_by_listener[l->slot], 1);
    atomic_fetch_sub(&l->w->st->active, 1);
    atomic_fetch_sub(&l->st->active, 1);
}

void worker_conn_gone(worker_t *w, berth_listener_t *l)
{
    if (l) {
        slot_release(l);
        if (l->paused && w->accepting)
            listener_poll_start(l);
    }
    worker_check_done(w);
}

int worker_slot_take(berth_listener_t *l)
{
    return slot_reserve(l);
}

void worker_slot_give_back(berth_listener_t *l)
{
    slot_release(l);
    if (l->paused && l->w->accepting)
        listener_poll_start(l);
}

static void on_retry(uv_timer_t *t)
{
    berth_listener_t *l = t->data;
    if (l->w->accepting && l->paused)
        listener_poll_start(l);
}

/* Stop polling until a slot frees here, or CAP_RECHECK_MS (another worker's slot). */
static void listener_pause(berth_listener_t *l, uint64_t retry_ms)
{
    listener_poll_stop(l);
    l->paused = 1;
    if (!l->retry_init) {
        uv_timer_init(&l->w->loop, &l->retry);
        l->retry.data = l;
        l->retry_init = 1;
    }
    uv_timer_start(&l->retry, on_retry, retry_ms, 0);
}

/* metrics: count each time the cap is reached once, not each recheck while it holds. */
static void listener_at_cap(berth_listener_t *l)
{
    if (!l->at_cap)
        atomic_fetch_add(&l->st->refused_concurrency, 1);
    l->at_cap = 1;
}

/* A peer got past accept/recvfrom with a slot reserved: the allow/deny (or proxy_from) check and
 * its conn, counted. NULL (slot given back, reason counted) if refused or out of memory. */
static berth_conn_t *admit(berth_listener_t *l, conn_kind_t kind,
                           const struct sockaddr_storage *peer, socklen_t plen, int *wait)
{
    *wait = 0;
    /* Behind a balancer the peer here is the balancer: allow/deny wait for the header. */
    if (l->cfg->proxy_protocol && !proxy_stage_admit(l, (const struct sockaddr *)peer)) {
        slot_release(l);
        return NULL;
    }
    if (!l->cfg->proxy_protocol &&
        !berth_cidr_permit(&l->cfg->allow, &l->cfg->deny, (const struct sockaddr *)peer)) {
        slot_release(l);
        atomic_fetch_add(&l->st->refused_acl, 1);
        return NULL;
    }
    int32_t source = -1;
    int over = l->cfg->proxy_protocol ? 0 : source_admit(l, (const struct sockaddr *)peer, &source);
    if (over < 0) {
        slot_release(l);
        return NULL;
    }
    *wait = over > 0; /* over per_source, over_limit = wait: parked once its handle is made */
    berth_conn_t *c = conn_new(l->w, l, kind, (const struct sockaddr *)peer, plen);
    if (c == NULL) {
        limits_release(l->w->slot, source);
        slot_release(l);
        atomic_fetch_add(&l->st->refused_limit, 1);
        return NULL;
    }
    conn_hold_source(c, source);
    l->at_cap = 0; /* metrics: below the cap again */
    atomic_fetch_add(&l->st->accepted, 1);
    atomic_fetch_add(&l->w->st->accepted, 1);
    return c;
}

/* ---- stream listeners ---- */

static void accept_stream(berth_listener_t *l)
{
    worker_t *w = l->w;
    for (int i = 0; i < ACCEPT_BATCH && w->accepting; i++) {
        if (slot_reserve(l)) {
            listener_at_cap(l);
            listener_pause(l, CAP_RECHECK_MS);
            return;
        }
        struct sockaddr_storage peer;
        socklen_t plen = sizeof peer;
        int fd = accept4(l->fd, (struct sockaddr *)&peer, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            int e = errno;
            slot_release(l);
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            if (e == EINTR || e == ECONNABORTED || e == EPROTO)
                continue;
            if (e == EMFILE || e == ENFILE || e == ENOBUFS || e == ENOMEM) {
                /* Clients wait in the backlog until descriptors free up. */
                log_warn("%s: accept: %s; pausing %d ms", l->cfg->name, strerror(e),
                         EMFILE_RETRY_MS);
                atomic_fetch_add(&l->st->errors, 1);
                listener_pause(l, EMFILE_RETRY_MS);
                return;
            }
            log_error("%s: accept: %s", l->cfg->name, strerror(e));
            atomic_fetch_add(&l->st->errors, 1);
            return;
        }
        int wait;
        berth_conn_t *c = admit(l, CONN_STREAM, &peer, plen, &wait);
        if (c == NULL) {
            close(fd); /* refused at once: no handle was ever made for it */
            continue;
        }
        int rc = wait ? conn_start_stream_waiting(c, fd) : conn_start_stream(c, fd);
        if (rc)
            log_error("%s: %s: %s", l->cfg->name, conn_name(c), uv_strerror(rc));
        /* One connection per readiness. libuv's epoll is level-triggered, so a backlog
         * that still holds clients is reported again at the loop's next turn, within the
         * same epoll_wait that collects the other sockets' events; accepting on until
         * EAGAIN costs a failing accept4 per wakeup, which with one client waiting (the
         * common case) is one syscall per connection. Errors and refused peers above go on
         * to the next client: they took no connection's work. */
        return;
    }
}

/* ---- datagram listeners ---- */

static void read_datagrams(berth_listener_t *l)
{
    worker_t *w = l->w;
    for (int i = 0; i < DGRAM_BATCH && w->accepting; i++) {
        if (slot_reserve(l)) {
            listener_at_cap(l);
            listener_pause(l, CAP_RECHECK_MS);
            return;
        }
        struct sockaddr_storage peer, group;
        socklen_t plen = sizeof peer, glen = 0;
        ssize_t n = dgram_recv(l->fd, w->readbuf, w->readbuf_size, &peer, &plen, &l->cfg->addr,
                               &group, &glen);
        if (n < 0) {
            int e = errno;
            slot_release(l);
            if (e == EAGAIN || e == EWOULDBLOCK)
                return;
            if (e == EINTR)
                continue;
            log_error("%s: recvfrom: %s", l->cfg->name, strerror(e));
            atomic_fetch_add(&l->st->errors, 1);
            return;
        }
        if ((size_t)n > w->readbuf_size) {
            slot_release(l);
            log_debug("%s: dropped a %zd-byte datagram (more than %zu)", l->cfg->name, n,
                      w->readbuf_size);
            atomic_fetch_add(&l->st->errors, 1);
            continue;
        }
        int wait;
        berth_conn_t *c = admit(l, CONN_DGRAM, &peer, plen, &wait);
        if (c == NULL)
            continue;
        if (glen) /* sent to a multicast group: that is its local address */
            conn_set_local(c, (const struct sockaddr *)&group, glen);
        conn_datagram(c, w->readbuf, (size_t)n);
    }
}

static void on_listener_ready(uv_poll_t *p, int status, int events)
{
    berth_listener_t *l = p->data;
    if (status < 0) {
        log_error("%s: poll: %s", l->cfg->name, uv_strerror(status));
        return;
    }
    if (l->stream)
        accept_stream(l);
    else
        read_datagrams(l);
}

static void listener_poll_start(berth_listener_t *l)
{
    l->paused = 0;
    if (l->polling || l->fd < 0)
        return;
    if (!l->poll_init) {
        if (uv_poll_init(&l->w->loop, &l->poll, l->fd))
            return;
        l->poll.data = l;
        l->poll_init = 1;
    }
    if (uv_poll_start(&l->poll, UV_READABLE, on_listener_ready) == 0)
        l->polling = 1;
}

static void listener_poll_stop(berth_listener_t *l)
{
    if (l->polling)
        uv_poll_stop(&l->poll);
    l->polling = 0;
}

/* ---- control channel and draining ---- */

static void on_handle_closed_noop(uv_handle_t *h) {}

/* Stop accepting for good: our copies of the listening sockets close (the master and any
 * newer generation keep theirs). */
static void worker_stop_accepting(worker_t *w)
{
    w->accepting = 0;
    for (size_t i = 0; i < w->nlisteners; i++) {
        berth_listener_t *l = &w->listeners[i];
        listener_poll_stop(l);
        if (l->poll_init && !uv_is_closing((uv_handle_t *)&l->poll))
            uv_close((uv_handle_t *)&l->poll, on_handle_closed_noop);
        if (l->retry_init && !uv_is_closing((uv_handle_t *)&l->retry))
            uv_close((uv_handle_t *)&l->retry, on_handle_closed_noop);
        if (l->fd >= 0)
            close(l->fd);
        l->fd = -1;
    }
}

static void worker_finish(worker_t *w)
{
    if (w->drain_timer.data && !uv_is_closing((uv_handle_t *)&w->drain_timer))
        uv_close((uv_handle_t *)&w->drain_timer, on_handle_closed_noop);
    if (!uv_is_closing((uv_handle_t *)&w->ctl))
        uv_close((uv_handle_t *)&w->ctl, on_handle_closed_noop);
}

static void worker_check_done(worker_t *w)
{
    if (w->draining && w->nconns == 0)
        worker_finish(w);
}

static void on_drain_deadline(uv_timer_t *t)
{
    worker_t *w = t->data;
    if (w->nconns)
        log_warn("shutdown_timeout reached: closing %llu connection(s)",
                 (unsigned long long)w->nconns);
    conn_abort_all(w);
}

static void worker_drain(worker_t *w, int now)
{
    if (w->draining) {
        if (now)
            on_drain_deadline(&w->drain_timer);
        return;
    }
    w->draining = 1;
    atomic_store(&w->st->state, WORKER_DRAINING);
    worker_stop_accepting(w);
    log_debug("draining %llu connection(s)", (unsigned long long)w->nconns);
    uv_timer_init(&w->loop, &w->drain_timer);
    w->drain_timer.data = w;
    uv_timer_start(&w->drain_timer, on_drain_deadline, now ? 0 : w->cfg->shutdown_timeout, 0);
    worker_check_done(w);
}

static void worker_go(worker_t *w)
{
    if (w->accepting || w->draining)
        return;
    w->accepting = 1;
    atomic_store(&w->st->state, WORKER_READY);
    /* Which build serves each listener now, for berthctl status. Every worker of the
     * generation writes the same bytes; the old generation no longer writes. */
    for (size_t i = 0; i < w->nlisteners; i++) {
        berth_listener_t *l = &w->listeners[i];
        if (l->st == NULL || l->plugin == NULL)
            continue;
        snprintf(l->st->plugin, sizeof l->st->plugin, "%s", l->plugin->desc.name);
        snprintf(l->st->plugin_version, sizeof l->st->plugin_version, "%s",
                 l->plugin->desc.version ? l->plugin->desc.version : "");
    }
    for (size_t i = 0; i < w->nlisteners; i++)
        listener_poll_start(&w->listeners[i]);
}

static void on_ctl(uv_poll_t *p, int status, int events)
{
    worker_t *w = p->data;
    ctl_msg_t m;
    ssize_t n = status < 0 ? -1 : recv(w->ctl_fd, &m, sizeof m, MSG_DONTWAIT);
    if (n < 0 && (errno == EAGAIN || errno == EINTR))
        return;
    if (n <= 0) {
        /* The master is gone: finish what we have and leave. */
        uv_poll_stop(p);
        worker_drain(w, 0);
        return;
    }
    switch (m.type) {
    case CTL_GO:
        worker_go(w);
        break;
    case CTL_STOP:
        worker_drain(w, 0);
        break;
    case CTL_STOP_NOW:
        worker_drain(w, 1);
        break;
    case CTL_QUARANTINE:
    case CTL_RESUME: {
        /* The master quarantined one listener (its plugin keeps crashing workers), or
         * lifted that. Connections open on it go on; only accepting stops. */
        m.text[sizeof m.text - 1] = '\0';
        char *end = NULL;
        unsigned long i = strtoul(m.text, &end, 10);
        if (end == m.text || i >= w->nlisteners)
            break;
        berth_listener_t *l = &w->listeners[i];
        if (m.type == CTL_RESUME) {
            if (w->accepting)
                listener_poll_start(l);
            break;
        }
        listener_poll_stop(l);
        l->paused = 0; /* a freed slot or the retry timer must not start it again */
        if (l->retry_init)
            uv_timer_stop(&l->retry);
        break;
    }
    case CTL_REOPEN:
        if (w->cfg->log[0] == '/') {
            int rc = log_open_file(w->cfg->log, -1, -1);
            if (rc)
                log_error("cannot reopen %s: %s", w->cfg->log, strerror(-rc));
        }
        break;
    default:
        log_warn("unknown control message %u", m.type);
    }
}

static void walk_close(uv_handle_t *h, void *arg)
{
    if (!uv_is_closing(h))
        uv_close(h, on_handle_closed_noop);
}

int worker_run(const worker_spec_t *spec)
{
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = spec->cfg;
    w.generation = spec->generation;
    w.index = spec->index;
    w.stats = spec->stats;
    w.slot = spec->stats_slot;
    w.st = &spec->stats->workers[spec->stats_slot];
    w.st->pid = getpid();
    w.ctl_fd = spec->ctl_fd;
    w.listen_slots = spec->listen_slots;
    w.listen_bound = spec->listen_bound;

    char role[48];
    snprintf(role, sizeof role, "worker %u/gen %u", spec->index + 1, spec->generation);
    log_set_role(role);
    log_set_worker(spec->index + 1, spec->generation);

    int status = 1;
    config_errors_t errs = {0};
    if (uv_loop_init(&w.loop)) {
        ctl_send(w.ctl_fd, CTL_FAILED, "worker: cannot create its event loop");
        return EX_OSERR;
    }
    w.readbuf_size = READBUF_SIZE;
    w.readbuf = malloc(READBUF_SIZE);
    if (w.readbuf == NULL || worker_prepare(&w, &errs)) {
        char text[CTL_TEXT_MAX];
        size_t off = 0;
        text[0] = '\0';
        for (size_t i = 0; i < errs.count && off < sizeof text - 1; i++)
            off += (size_t)snprintf(text + off, sizeof text - off, "%s%s", i ? "\n" : "",
                                    errs.msgs[i]);
        if (errs.count == 0)
            snprintf(text, sizeof text, "worker: out of memory");
        ctl_send(w.ctl_fd, CTL_FAILED, text);
        config_errors_free(&errs);
        goto out;
    }
    for (size_t i = 0; i < w.nlisteners; i++) {
        w.listeners[i].fd = spec->listen_fds[i];
        w.listeners[i].slot = spec->listen_slots[i];
        w.listeners[i].st = &spec->stats->listeners[spec->listen_slots[i]];
    }
    conn_pool_init(&w);
    for (size_t i = 0; i < w.nplugins; i++)
        if (w.plugins[i]->desc.worker_start) {
            conn_plugin_scope_t sc = conn_plugin_enter(&w, NULL, STATS_HOOK_OTHER);
            w.plugins[i]->desc.worker_start();
            conn_plugin_leave(&w, sc);
        }
    /* sandbox: confine this worker before it serves anyone and before libuv's pool starts
     * threads: from here on it reaches only what its listeners declared. */
    sandbox_result_t sb;
    char sb_why[512];
    if (sandbox_apply(&w, &sb, sb_why, sizeof sb_why)) {
        char text[CTL_TEXT_MAX];
        snprintf(text, sizeof text,
                 "%s: worker cannot confine itself (sandbox = off to run "
                 "without): %s",
                 w.cfg->path, sb_why);
        ctl_send(w.ctl_fd, CTL_FAILED, text);
        goto out;
    }
    atomic_store(&w.st->sandbox_landlock_abi, sb.landlock_abi);
    atomic_store(&w.st->sandbox_rules, sb.rules);
    atomic_store(&w.st->sandbox_seccomp, sb.seccomp);
    if (sb.seccomp)
        log_debug("sandbox: Landlock ABI %d with %u rules, seccomp deny-list", sb.landlock_abi,
                  sb.rules);

    uv_poll_init(&w.loop, &w.ctl, w.ctl_fd);
    w.ctl.data = &w;
    uv_poll_start(&w.ctl, UV_READABLE | UV_DISCONNECT, on_ctl);
    ctl_send(w.ctl_fd, CTL_READY, "");

    uv_run(&w.loop, UV_RUN_DEFAULT);

    for (size_t i = 0; i < w.nplugins; i++)
        if (w.plugins[i]->desc.worker_stop) {
            conn_plugin_scope_t sc = conn_plugin_enter(&w, NULL, STATS_HOOK_OTHER);
            w.plugins[i]->desc.worker_stop();
            conn_plugin_leave(&w, sc);
        }
    status = 0;
out:
    /* Anything still open (a plugin's stray handle) is closed before the loop is. */
    io_loop_close(&w.io);
    uv_walk(&w.loop, walk_close, NULL);
    uv_run(&w.loop, UV_RUN_DEFAULT);
    if (uv_loop_close(&w.loop))
        log_warn("event loop closed with handles still open");
    worker_release(&w);
    free(w.readbuf);
    return status;
}
