#include "master/generation.h"

#include <assert.h>
#include <errno.h>
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
    g->nworkers = cfg->workers;
    g->workers = calloc(g->nworkers ? g->nworkers : 1, sizeof *g->workers);
    if (g->fds == NULL || g->slots == NULL || g->workers == NULL) {
        free(g->fds);
        free(g->slots);
        free(g->workers);
        free(g);
        return NULL;
    }
    g->id = id;
    g->cfg = cfg;
    g->loop = loop;
    g->reg = reg;
    g->owner = owner;
    for (unsigned i = 0; i < g->nworkers; i++)
        process_init(&g->workers[i], g, i);
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
    }
    return 0;
}

int generation_spawn(generation_t *g, wproc_t *wp, uv_poll_cb on_ctl)
{
    process_spec_t spec = {
        .cfg = g->cfg,
        .generation = g->id,
        .fds = g->fds,
        .slots = g->slots,
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
            if (g->state != G_STARTING) /* a replacement for a crashed worker */
                process_send(wp, CTL_GO);
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
        wp->state = W_STOPPING;
        process_send(wp, now ? CTL_STOP_NOW : CTL_STOP);
        if (wp->slot >= 0)
            atomic_store(&g->reg->stats->workers[wp->slot].state, WORKER_DRAINING);
    }
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
    free(g->slots);
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
