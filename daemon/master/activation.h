/*
 * systemd socket activation: the sockets a .socket unit passes (sd_listen_fds_with_names),
 * matched to listener sections by FileDescriptorName= (the section's name). A listener with
 * a passed socket uses it instead of binding; one without binds as usual; a passed socket no
 * listener names is a config error that names it. The passed sockets are held for the
 * master's whole life, so a reload (or a listener removed and added back) finds them again.
 */
#ifndef BERTH_ACTIVATION_H
#define BERTH_ACTIVATION_H

#include <stddef.h>

#include "config/config.h"
#include "master/listen.h"

/* The sockets systemd passed to this process, read once (and LISTEN_* unset, so workers
 * and plugins never see them). 0, or -errno when the environment named sockets that are
 * not there. Later calls return the first call's result. */
int activation_init(void);
/* How many sockets were passed (0 when not socket-activated). */
size_t activation_count(void);
/* binary upgrade: passed socket i (< activation_count()), for the handover: its descriptor
 * (close-on-exec: the upgrade clears that for the exec) and its FileDescriptorName=. */
int activation_fd(size_t i, const char **name);
/* binary upgrade: the image started by a handover holds the passed sockets the previous one
 * held (systemd's environment is gone by then); called before activation_init, which then
 * reads no environment. 0, or -ENOMEM (fd is then left open, the caller's). */
int activation_adopt(int fd, const char *name);
/* Every passed socket must be named by a listener of `cfg`: 0, or -EINVAL with one error
 * per socket that no listener names. */
int activation_check(const berth_config_t *cfg, config_errors_t *errs);
/* The passed socket for listener `l`: 1 with *out filled (its fd a duplicate of the one
 * held here, non-blocking, close-on-exec); 0 when systemd passed none for it; -errno with a
 * message in err when the socket is not what the section says (a tcp section given a
 * datagram socket, an IPv4 section given a unix one). */
int activation_take(const config_listener_t *l, lsock_t *out, char *err, size_t errlen);

#endif
