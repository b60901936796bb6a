#include "master/privs.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

/* Workers run as `user` when the master started as root; the master keeps root to bind
 * new sockets on reload. */
int privileges_drop(const berth_config_t *cfg, char *why, size_t len)
{
    if (getuid() != 0 && geteuid() != 0)
        return 0;
    if (cfg->user == NULL || strcmp(cfg->user, "root") == 0)
        return 0;
    struct passwd *pw = getpwnam(cfg->user);
    if (pw == NULL) {
        snprintf(why, len, "%s: user '%s' does not exist", cfg->path, cfg->user);
        return -1;
    }
    if (initgroups(pw->pw_name, pw->pw_gid) < 0 || setgid(pw->pw_gid) < 0 ||
        setuid(pw->pw_uid) < 0) {
        snprintf(why, len, "cannot switch to user '%s': %s", cfg->user, strerror(errno));
        return -1;
    }
    /* Checked: a setuid that silently did not stick would leave the worker root. */
    if (setuid(0) == 0 || geteuid() != pw->pw_uid || getegid() != pw->pw_gid) {
        snprintf(why, len, "privileges were not dropped to user '%s'", cfg->user);
        return -1;
    }
    return 0;
}
