/*
 * Binary upgrade (berthctl upgrade, SIGUSR2): the master re-executes the berthd found at its
 * path, in place (same PID), handing over everything through inherited descriptors (see
 * handover.h). First a child runs the new binary as `--handover-check`: it reads the
 * handover, checks the config and loads the plugins as `berthd -t` does; only when that
 * exits 0 does the master execute it. The new image adopts the old workers as generations
 * it only supervises, starts a generation of its own, and stops the adopted serving one
 * once its own is ready. If it cannot (config, sockets, its workers fail before ready), it
 * executes the previous image again (kept open as a descriptor), which does the same with
 * its own binary: the old version keeps serving, and berthctl upgrade is told why.
 */
#ifndef BERTH_UPGRADE_H
#define BERTH_UPGRADE_H

#include <sys/types.h>

#include "master/admin.h"
#include "master/agent.h"
#include "master/master.h"

#define UPGRADE_CHECK_MS 30000 /* the new binary's check must end by then */
#define UPGRADE_OUTPUT_MAX 8192
#define UPGRADE_QUIET_MS 2000 /* checked, the exec waits this long at most for open scrapes */

struct generation;

/* First start: remember the executable's path and keep the running image open. 0 or -errno. */
int upgrade_init(master_t *m, const char *admin_path);
/* A start through a handover (main.c's --handover FD): map the counters and the per-source
 * table (before the loop runs). 0, or -errno with the reason in err; a failure once the
 * document is read executes the previous image with it first (a rollback), so this returns
 * an error only when there is none or it could not be executed. */
int upgrade_adopt_early(master_t *m, int fd, char *err, size_t errlen);
/* ... then the admin socket, listening sockets and the workers (the loop is initialised).
 * Short of memory for them, it rolls back as upgrade_adopt_early does. */
int upgrade_adopt(master_t *m, const admin_ops_t *ops, const agent_ops_t *agent_ops, char *err,
                  size_t errlen);
/* Multicast memberships of adopted sockets are those of the config that made them: taken
 * from the matching listeners of cfg before its generation acquires them. */
void upgrade_adopt_groups(master_t *m, const berth_config_t *cfg);
/* Start an upgrade. client_fd: the berthctl connection (-1: a signal); see admin_ops_t. */
void upgrade_begin(master_t *m, int client_fd, admin_done_cb done, void *arg);
/* A child exited: 1 when it was one of the upgrade's (the check, an adopted worker). */
int upgrade_reap(master_t *m, pid_t pid, int status);
/* The first generation of this image is serving: the adopted serving ones drain. */
void upgrade_on_ready(master_t *m);
/* This image could not start a generation of its own (why): roll back to the previous image
 * when there is one. Returns 1 when adopted workers go on serving (the caller must not stop
 * the daemon), 0 when nothing was adopted. */
int upgrade_on_failed(master_t *m, const char *why);
/* Adopted workers still serving (an image that could not start its own generation). */
int upgrade_serving(const master_t *m);
unsigned upgrade_alive(const master_t *m);
/* The daemon stops: the adopted workers too (now: at once). */
void upgrade_stop(master_t *m, int now);
void upgrade_tick(master_t *m, uint64_t now);
void upgrade_snapshot(master_t *m, admin_snapshot_t *out);
void upgrade_free(master_t *m);

#endif
