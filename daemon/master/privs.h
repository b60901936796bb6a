/* Dropping root for the workers (and for berthd -t's plugin checks). */
#ifndef BERTH_PRIVS_H
#define BERTH_PRIVS_H

#include <stddef.h>

#include "config/config.h"

/* When running as root and cfg->user names another user: initgroups, setgid, setuid, and
 * check that root cannot be regained. 0, or -1 with the reason in why. */
int privileges_drop(const berth_config_t *cfg, char *why, size_t len);

#endif
