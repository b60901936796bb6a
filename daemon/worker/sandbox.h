/*
 * The worker's sandbox: Landlock (files, TCP bind and connect, signals and abstract unix
 * sockets) and a seccomp deny-list, applied by each worker to itself once its plugins are
 * loaded and its listeners are open, before it serves anyone. What a worker may still touch
 * is what its own listeners declared (host->allow_path, allow_connect, allow_bind during
 * listener_open) plus what any worker needs (the resolver's files, shared libraries, the
 * time zone, its log). docs/security.md is the threat model.
 */
#ifndef BERTH_SANDBOX_H
#define BERTH_SANDBOX_H

#include <stddef.h>

#include "berth/handler.h"
#include "config/config.h"

struct worker;

/* The host calls of berth_host_t (see handler.h). Each records a declaration for `l`; it is
 * used only if this worker serves `l` (with isolate, a listener's own workers see only its
 * declarations, and the shared workers none of them). 0, -EINVAL (a relative path, no access
 * bit, a port out of range) or -ENOMEM. A path that does not exist yet is refused with
 * -ENOENT: a rule is made on the file itself. */
int sandbox_allow_path(berth_listener_t *l, const char *path, unsigned access);
int sandbox_allow_connect(berth_listener_t *l, int port);
int sandbox_allow_bind(berth_listener_t *l, int port);

/* The Landlock ABI the running kernel offers (0: none: disabled or too old). */
int sandbox_landlock_abi(void);

/* One line for `berthd -t` and the start log: what a worker will apply under `cfg`, or why
 * nothing. Returns 1 when the kernel offers less than asked for (a warning), else 0. */
int sandbox_describe(const berth_config_t *cfg, char *out, size_t len);

/* What a worker applied, also written to its stats slot for `berthctl status --json`. */
typedef struct sandbox_result {
    int landlock_abi; /* 0: no Landlock */
    unsigned rules;   /* Landlock rules added (paths and ports) */
    int seccomp;      /* the deny-list is installed */
} sandbox_result_t;

/* Confine the calling worker: every listener with fd >= 0 is one it serves. Once applied it
 * cannot be undone. 0 (res says how much the kernel allowed), or a negative errno with `why`
 * filled: the worker must then not serve. With `sandbox = off`, 0 and nothing applied. */
int sandbox_apply(struct worker *w, sandbox_result_t *res, char *why, size_t whylen);

/* Drop every declaration (worker_release, berthd -t). */
void sandbox_forget(void);

#endif
