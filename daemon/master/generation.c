#include "master/generation.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/log.h"

generation_t *generation_new(unsigned id, berth_config_t *cfg, uv_loop_t *loop, sockets_t *reg,
                             struct master *owner)
{
    generation_t *g = calloc(1, sizeof *g);
    if (g == NULL)
        return NULL;
    size_t n = cfg->nlisteners ? cfg->nlisteners : 1;
    g->fds = calloc(n, sizeof *g->fds);
    g->slots = calloc(n, sizeof *g->slots);
    g->bound = calloc(n, sizeof *g->bound);
    /* isolate = yes: a listener served by workers of its own, so its crashes touch no
     * other listener's connections; the shared workers serve the rest. */
    unsigned niso = 0;
    for (size_t k = 0; k < cfg->nlisteners; k++)
        niso += cfg->listeners[k].isolate != 0;
    unsigned per_iso = cfg->workers < ISOLATED_WORKERS ? cfg->workers : ISOLATED_WORKERS;
    unsigned shared = niso == cfg->nlisteners && niso > 0 ? 0 : cfg->workers;
    g->ngroups = 1 + niso;
    g->nworkers = shared + niso * per_iso;
    g->group_fds = calloc(g->ngroups * n, sizeof *g->group_fds);
    g->workers = calloc(g->nworkers ? g->nworkers : 1, sizeof *g->workers);
    if (g->fds == NULL || g->slots == NULL || g->bound == NULL || g->workers == NULL ||
        g->group_fds == NULL) {
        free(g->group_fds);
        free(g->fds);
        free(g->slots);
        free(g->bound);
        free(g->workers);
        free(g);
        return NULL;
    }
    g->id = id;
    g->cfg = cfg;
    g->loop = loop;
    g->reg = reg;
    g->owner = owner;
    for (unsigned i = 0; i < g->nworkers; i++) {
        process_init(&g->workers[i], g, i);
        g->workers[i].group = i < shared ? 0 : 1 + (i - shared) / per_iso;
    }
    g->state = G_STARTING;
    g->deadline = uv_now(loop) + START_DEADLINE_MS;
    return g;
}

static int generation_bind(generation_t *g, config_errors_t *errs)
{
    size_t n = g->cfg->nlisteners;
    size_t *idx = calloc(n ? n : 1, sizeof *idx);
    if (idx == NULL)
        return -ENOMEM;
    int rc = sockets_acquire(g->reg, g->cfg, idx, errs);
    if (rc) {
        free(idx);
        return rc;
    }
    g->socks = idx;
    for (size_t i = 0; i < n; i++) {
        g->fds[i] = g->reg->socks[idx[i]].fd;
        g->slots[i] = g->reg->socks[idx[i]].slot;
        /* The address a port-0 listener really has, for the workers' own-address check. */
        socklen_t blen = sizeof g->bound[i];
        if (getsockname(g->fds[i], (struct sockaddr *)&g->bound[i], &blen) != 0)
            memcpy(&g->bound[i], &g->cfg->listeners[i].addr, sizeof g->bound[i]);
    }
    unsigned iso = 0;
    for (size_t i = 0; i < n; i++) {
        int isolated = g->cfg->listeners[i].isolate != 0;
        iso += isolated;
        for (unsigned grp = 0; grp < g->ngroups; grp++)
            g->group_fds[grp * n + i] = (isolated ? grp == iso : grp == 0) ? g->fds[i] : -1;
    }
    assert(iso + 1 == g->ngroups);
    return 0;
}

int generation_spawn(generation_t *g, wproc_t *wp, uv_poll_cb on_ctl)
{
    process_spec_t spec = {
        .cfg = g->cfg,
        .generation = g->id,
        .fds = generation_worker_fds(g, wp),
        .slots = g->slots,
        .bound = g->bound,
        .stats = g->reg->stats,
    };
    return process_spawn(wp, g->loop, &spec, on_ctl);
}

int generation_start(generation_t *g, config_errors_t *errs, uv_poll_cb on_ctl)
{
    assert(g->state == G_STARTING && g->socks == NULL);
    int rc = generation_bind(g, errs);
    if (rc)
        return rc;
    for (unsigned i = 0; i < g->nworkers; i++) {
        rc = generation_spawn(g, &g->workers[i], on_ctl);
        if (rc) {
            config_errors_add(errs, g->cfg->path, 0, "cannot start worker %u: %s", i + 1,
                              strerror(-rc));
            return rc;
        }
    }
    return 0;
}

void generation_fail(generation_t *g, const char *why)
{
    if (g->failed)
        return;
    g->failed = 1;
    g->fail_text = strdup(why);
}

static void tell_one(wproc_t *wp, size_t k, uint32_t type)
{
    char text[32];
    snprintf(text, sizeof text, "%zu", k);
    process_send_text(wp, type, text);
}

/* A worker that starts serving while some of its listeners are quarantined. */
static void tell_quarantined(generation_t *g, wproc_t *wp)
{
    const int *fds = generation_worker_fds(g, wp);
    for (size_t k = 0; k < g->cfg->nlisteners; k++)
        if (g->socks && fds[k] >= 0 && g->reg->socks[g->socks[k]].quarantined)
            tell_one(wp, k, CTL_QUARANTINE);
}

int generation_tell_listener(generation_t *g, size_t sock, uint32_t type)
{
    int used = 0;
    if (g->state != G_ACTIVE) /* a starting one is told at GO; a draining one accepts no more */
        return 0;
    for (size_t k = 0; g->socks && k < g->cfg->nlisteners; k++) {
        if (g->socks[k] != sock)
            continue;
        used = 1;
        for (unsigned i = 0; i < g->nworkers; i++)
            if (g->workers[i].state == W_READY && generation_worker_fds(g, &g->workers[i])[k] >= 0)
                tell_one(&g->workers[i], k, type);
    }
    return used;
}

const int *generation_worker_fds(const generation_t *g, const wproc_t *wp)
{
    assert(wp->group < g->ngroups);
    return g->group_fds + (size_t)wp->group * g->cfg->nlisteners;
}

int generation_listener_of_slot(const generation_t *g, int slot)
{
    for (size_t k = 0; slot >= 0 && k < g->cfg->nlisteners; k++)
        if (g->slots[k] == slot)
            return (int)k;
    return -1;
}

int generation_ctl_read(generation_t *g, wproc_t *wp, int *changed)
{
    for (;;) {
        ctl_msg_t msg;
        ssize_t n = wp->ctl_fd >= 0 ? recv(wp->ctl_fd, &msg, sizeof msg, MSG_DONTWAIT) : 0;
        int e = errno;
        if (n < 0 && e == EINTR)
            continue;
        if (n < 0 && e == EAGAIN)
            return 1;
        if (n <= 0)
            return 0; /* the worker is exiting; SIGCHLD tells us how */
        msg.text[sizeof msg.text - 1] = '\0';
        if (msg.type == CTL_READY && wp->state == W_STARTING) {
            wp->state = W_READY;
            g->ready++;
            assert(g->ready <= g->nworkers);
            if (g->state != G_STARTING) { /* a replacement for a crashed worker */
                process_send(wp, CTL_GO);
                tell_quarantined(g, wp);
            }
            *changed = 1;
        } else if (msg.type == CTL_FAILED && wp->state == W_STARTING) {
            generation_fail(g, msg.text);
            *changed = 1;
        }
    }
}

void generation_activate(generation_t *g)
{
    assert(g->state == G_STARTING && !g->failed && g->ready == g->nworkers);
    g->state = G_ACTIVE;
    for (unsigned i = 0; i < g->nworkers; i++)
        process_send(&g->workers[i], CTL_GO);
}

void generation_stop(generation_t *g, int now)
{
    uint64_t grace = now ? KILL_GRACE_MS : g->cfg->shutdown_timeout + KILL_GRACE_MS;
    uint64_t at = uv_now(g->loop) + grace;
    if (g->kill_at == 0 || at < g->kill_at)
        g->kill_at = at;
    g->state = G_DRAINING;
    for (unsigned i = 0; i < g->nworkers; i++) {
        wproc_t *wp = &g->workers[i];
        wp->respawn_at = 0;
        if (wp->state == W_DEAD)
            continue;
        generation_worker_leaves(g, wp);
        wp->state = W_STOPPING;
        process_send(wp, now ? CTL_STOP_NOW : CTL_STOP);
        if (wp->slot >= 0)
            atomic_store(&g->reg->stats->workers[wp->slot].state, WORKER_DRAINING);
    }
}

void generation_worker_leaves(generation_t *g, const wproc_t *wp)
{
    if (wp->state != W_READY)
        return;
    assert(g->ready > 0);
    g->ready--;
}

unsigned generation_alive(const generation_t *g)
{
    unsigned n = 0;
    for (unsigned i = 0; i < g->nworkers; i++)
        n += g->workers[i].state != W_DEAD;
    return n;
}

void generation_free(generation_t *g)
{
    assert(generation_alive(g) == 0);
    if (g->socks)
        for (size_t i = 0; i < g->cfg->nlisteners; i++)
            sockets_release(g->reg, g->socks[i]);
    config_free(g->cfg);
    free(g->fds);
    free(g->group_fds);
    free(g->slots);
    free(g->bound);
    free(g->socks);
    free(g->workers);
    free(g->fail_text);
    free(g);
}

void generation_list_push(generation_t **list, generation_t *g)
{
    g->next = *list;
    *list = g;
}

void generation_list_remove(generation_t **list, generation_t *g)
{
    for (generation_t **p = list; *p; p = &(*p)->next) {
        if (*p == g) {
            *p = g->next;
            g->next = NULL;
            return;
        }
    }
}

wproc_t *generation_find_worker(generation_t *const *lists, int nlists, pid_t pid)
{
    for (int k = 0; k < nlists; k++)
        for (generation_t *g = lists[k]; g; g = g->next)
            for (unsigned i = 0; i < g->nworkers; i++)
                if (g->workers[i].pid == pid && g->workers[i].state != W_DEAD)
                    return &g->workers[i];
    return NULL;
}
