#include "master/sockets.h"

#include <assert.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "master/activation.h"

void sockets_init(sockets_t *r, stats_t *stats)
{
    memset(r, 0, sizeof *r);
    r->stats = stats;
    for (size_t i = 0; i < BERTH_MAX_LISTENERS; i++) {
        r->socks[i].fd = -1;
        r->socks[i].slot = -1;
    }
}

void sockets_release(sockets_t *r, size_t i)
{
    assert(i < r->n);
    lsock_t *s = &r->socks[i];
    assert(s->users > 0);
    if (--s->users > 0)
        return;
    if (s->fd >= 0) /* not already closed by a stop */
        log_info("closing listener %s (%s)", s->name, s->address);
    if (s->slot >= 0 && r->stats)
        stats_listener_release(r->stats, s->slot);
    s->slot = -1;
    listen_close(s);
}

void sockets_close_all(sockets_t *r)
{
    for (size_t i = 0; i < r->n; i++) {
        lsock_t *s = &r->socks[i];
        if (s->fd >= 0) {
            log_info("closing listener %s (%s)", s->name, s->address);
            listen_close(s);
        }
    }
}

lsock_t *sockets_find(sockets_t *r, const char *name)
{
    for (size_t i = 0; i < r->n; i++)
        if (r->socks[i].fd >= 0 && r->socks[i].name && strcmp(r->socks[i].name, name) == 0)
            return &r->socks[i];
    return NULL;
}

/* A unix path that one of our sockets of the other type holds (a reload turned a unix
 * listener into a unixgram one or back): the new socket takes the name; the old one keeps
 * serving the old generation, nameless, until it drains. */
static void unix_path_take_over(sockets_t *r, const config_listener_t *l)
{
    if (l->addr.ss_family != AF_UNIX)
        return;
    const char *path = ((const struct sockaddr_un *)&l->addr)->sun_path;
    for (size_t k = 0; k < r->n; k++) {
        lsock_t *s = &r->socks[k];
        if (s->fd < 0 || s->addr.ss_family != AF_UNIX || s->ino == 0 ||
            strcmp(((const struct sockaddr_un *)&s->addr)->sun_path, path) != 0)
            continue;
        log_info("[%s] takes %s over from [%s] (%s to %s)", l->name, path, s->name,
                 config_protocol_name(s->protocol), config_protocol_name(l->protocol));
        unlink(path);
        s->ino = 0; /* the name is not its to remove any more */
    }
}

/* The section of a kept socket may have been renamed. */
static void sock_rename(sockets_t *r, lsock_t *s, const char *name)
{
    if (strcmp(s->name, name) == 0)
        return;
    char *copy = strdup(name);
    if (copy == NULL)
        return; /* messages keep the old name */
    free(s->name);
    s->name = copy;
    if (s->slot >= 0 && r->stats)
        snprintf(r->stats->listeners[s->slot].name, sizeof r->stats->listeners[s->slot].name, "%s",
                 name);
}

static int sock_open(sockets_t *r, const config_listener_t *l, size_t *out, config_errors_t *errs)
{
    size_t i;
    for (i = 0; i < r->n; i++)
        if (r->socks[i].fd < 0 && r->socks[i].users == 0)
            break;
    if (i == BERTH_MAX_LISTENERS) {
        config_errors_add(errs, l->file, l->line, "too many listening sockets (%d)",
                          BERTH_MAX_LISTENERS);
        return -ENOSPC;
    }
    char err[512];
    /* socket activation: a socket systemd passed for this section, instead of binding. */
    int rc = activation_take(l, &r->socks[i], err, sizeof err);
    if (rc == 1 && (rc = listen_update_groups(&r->socks[i], l, err, sizeof err)) != 0)
        listen_close(&r->socks[i]);
    if (rc == 0 && r->socks[i].fd < 0) {
        unix_path_take_over(r, l);
        rc = listen_open(l, &r->socks[i], err, sizeof err);
    }
    if (rc) {
        config_errors_add(errs, l->file, l->line, "[%s]: %s", l->name, err);
        return rc;
    }
    lsock_t *s = &r->socks[i];
    s->slot = r->stats ? stats_listener_claim(r->stats, (int)l->protocol, l->name, l->address) : -1;
    if (i == r->n)
        r->n++;
    if (listen_port(s) == 0)
        log_info("listener %s bound to %s", l->name, s->bound);
    log_info("listening on %s %s for [%s]", config_protocol_name(l->protocol), l->address, l->name);
    if (s->groups[0])
        log_info("[%s] joined multicast groups %s", l->name, s->groups);
    *out = i;
    return 0;
}

/* A tcp/udp listener on port 0: the kernel picks its port, so several may share an address. */
static int port_zero(const config_listener_t *l)
{
    if (l->addr.ss_family == AF_INET)
        return ((const struct sockaddr_in *)&l->addr)->sin_port == 0;
    if (l->addr.ss_family == AF_INET6)
        return ((const struct sockaddr_in6 *)&l->addr)->sin6_port == 0;
    return 0;
}

static int claimed(const size_t *idx, size_t n, size_t i)
{
    for (size_t k = 0; k < n; k++)
        if (idx[k] == i)
            return 1;
    return 0;
}

/* Which open socket each listener keeps (SIZE_MAX: none, open one). A socket is kept by a
 * listener of the same address; on port 0, where several listeners may share one address,
 * by the listener of the same name first, then by any other that is left over (a renamed
 * one). */
static void match_kept(const sockets_t *r, const berth_config_t *cfg, size_t *idx)
{
    for (size_t k = 0; k < cfg->nlisteners; k++)
        idx[k] = SIZE_MAX;
    for (int pass = 0; pass < 2; pass++) {
        for (size_t k = 0; k < cfg->nlisteners; k++) {
            const config_listener_t *l = &cfg->listeners[k];
            if (idx[k] != SIZE_MAX || (pass == 1 && !port_zero(l)))
                continue;
            for (size_t i = 0; i < r->n; i++) {
                const lsock_t *s = &r->socks[i];
                if (s->fd < 0 || !listen_same(s, l) || claimed(idx, cfg->nlisteners, i))
                    continue;
                if (pass == 0 && port_zero(l) && (!s->name || strcmp(s->name, l->name) != 0))
                    continue;
                idx[k] = i;
                break;
            }
        }
    }
}

int sockets_acquire(sockets_t *r, const berth_config_t *cfg, size_t *idx, config_errors_t *errs)
{
    int rc = activation_check(cfg, errs); /* socket activation: every passed socket named */
    size_t done = 0;
    match_kept(r, cfg, idx);
    for (; rc == 0 && done < cfg->nlisteners; done++) {
        const config_listener_t *l = &cfg->listeners[done];
        size_t i = idx[done];
        if (i != SIZE_MAX) {
            char err[512], was[sizeof r->socks[i].groups];
            memcpy(was, r->socks[i].groups, sizeof was);
            if ((rc = listen_update_groups(&r->socks[i], l, err, sizeof err)) != 0) {
                config_errors_add(errs, l->file, l->line, "[%s]: %s", l->name, err);
                break;
            }
            if (strcmp(was, r->socks[i].groups) != 0)
                log_info("[%s] multicast groups on the kept socket: %s (were %s)", l->name,
                         r->socks[i].groups[0] ? r->socks[i].groups : "none",
                         was[0] ? was : "none");
            listen_update(&r->socks[i], l);
            sock_rename(r, &r->socks[i], l->name);
        } else if ((rc = sock_open(r, l, &i, errs)) != 0) {
            break;
        }
        r->socks[i].users++;
        idx[done] = i;
    }
    if (rc)
        while (done-- > 0)
            sockets_release(r, idx[done]);
    return rc;
}

int sockets_crash(sockets_t *r, size_t i, uint64_t now, unsigned limit, uint64_t window)
{
    assert(i < r->n && limit >= 1 && limit <= CONFIG_CRASH_LIMIT_MAX);
    lsock_t *s = &r->socks[i];
    if (s->quarantined)
        return 0;
    unsigned kept = 0;
    for (unsigned k = 0; k < s->ncrashes; k++)
        if (now - s->crash_at[k] < window)
            s->crash_at[kept++] = s->crash_at[k];
    if (kept == CONFIG_CRASH_LIMIT_MAX) { /* a limit lowered by a reload: drop the oldest */
        memmove(s->crash_at, s->crash_at + 1, (kept - 1) * sizeof s->crash_at[0]);
        kept--;
    }
    s->crash_at[kept++] = now;
    s->ncrashes = kept;
    if (kept < limit)
        return 0;
    s->quarantined = 1;
    s->ncrashes = 0;
    snprintf(s->why, sizeof s->why, "%u crashes within %llu s", kept,
             (unsigned long long)((window + 999) / 1000));
    return 1;
}

void sockets_lift(sockets_t *r, size_t i)
{
    assert(i < r->n);
    lsock_t *s = &r->socks[i];
    s->quarantined = 0;
    s->ncrashes = 0;
    s->why[0] = '\0';
}

void sockets_restore_groups(sockets_t *r, const berth_config_t *cfg)
{
    for (size_t k = 0; k < cfg->nlisteners; k++) {
        const config_listener_t *l = &cfg->listeners[k];
        for (size_t i = 0; i < r->n; i++) {
            lsock_t *s = &r->socks[i];
            if (s->fd < 0 || !listen_same(s, l))
                continue;
            char err[512], was[sizeof s->groups];
            memcpy(was, s->groups, sizeof was);
            if (listen_update_groups(s, l, err, sizeof err) != 0)
                log_error("[%s]: restoring the multicast groups: %s", l->name, err);
            else if (strcmp(was, s->groups) != 0)
                log_info("[%s] multicast groups restored: %s", l->name,
                         s->groups[0] ? s->groups : "none");
            break;
        }
    }
}
