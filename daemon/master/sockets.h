/*
 * The socket registry: every listening socket the master holds, shared by the generations
 * that use it. A reload asks for the sockets of its new config; a (protocol, address) the
 * registry already holds is handed over open (renamed if its section was), a new one is
 * opened, and one no generation uses any more is closed when its last user releases it.
 */
#ifndef BERTH_SOCKETS_H
#define BERTH_SOCKETS_H

#include <stddef.h>

#include "config/config.h"
#include "core/stats.h"
#include "master/listen.h"

typedef struct sockets {
    stats_t *stats; /* listener slots are claimed here */
    lsock_t socks[BERTH_MAX_LISTENERS];
    size_t n; /* slots used so far; a closed one (fd -1) is reused */
} sockets_t;

void sockets_init(sockets_t *r, stats_t *stats);
/* For every listener of cfg, in order, the index of its socket in r->socks: kept when r
 * already holds that (protocol, address), opened otherwise. Each index gains a user.
 * 0, or -errno with every error added to errs and nothing acquired. */
int sockets_acquire(sockets_t *r, const berth_config_t *cfg, size_t *idx, config_errors_t *errs);
/* One user fewer; the last one closes it (and frees its stats slot). */
void sockets_release(sockets_t *r, size_t i);
/* The daemon stops: close every open socket now, whoever still uses it. */
void sockets_close_all(sockets_t *r);
/* Plugin code serving socket i crashed a worker at loop time `now`. Returns 1 when that
 * makes `limit` crashes within `window` ms: the socket is then quarantined (why says why)
 * until sockets_lift. */
int sockets_crash(sockets_t *r, size_t i, uint64_t now, unsigned limit, uint64_t window);
/* Lift its quarantine and forget its crashes. */
void sockets_lift(sockets_t *r, size_t i);
/* The socket serving listener `name`, or NULL. */
lsock_t *sockets_find(sockets_t *r, const char *name);

/* A reload failed after it changed the multicast groups of kept sockets: give each socket of
 * `cfg` (the generation that goes on serving) its groups back. */
void sockets_restore_groups(sockets_t *r, const berth_config_t *cfg);

#endif
