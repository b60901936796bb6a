#include "master/activation.h"

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#ifdef BERTH_HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "core/log.h"

typedef struct passed {
    int fd;
    char *name;
} passed_t;

static passed_t *passed;
static size_t npassed;
static int init_done, init_rc;

int activation_init(void)
{
    if (init_done)
        return init_rc;
    init_done = 1;
#ifdef BERTH_HAVE_SYSTEMD
    char **names = NULL;
    /* unset_environment: the workers and the plugins must not take these for theirs. */
    int n = sd_listen_fds_with_names(1, &names);
    if (n < 0) {
        init_rc = n;
        log_error("systemd socket activation: %s", strerror(-n));
        return n;
    }
    if (n > 0) {
        passed = calloc((size_t)n, sizeof *passed);
        if (passed == NULL)
            init_rc = -ENOMEM;
        for (int i = 0; i < n; i++) {
            int fd = SD_LISTEN_FDS_START + i;
            /* sd_listen_fds sets FD_CLOEXEC already; say so here, where it matters. */
            fcntl(fd, F_SETFD, FD_CLOEXEC);
            if (passed) {
                passed[i].fd = fd;
                passed[i].name = names && names[i] ? names[i] : strdup("unknown");
                if (names)
                    names[i] = NULL;
                log_info("systemd passed socket %s (fd %d)", passed[i].name, fd);
            }
        }
        if (passed)
            npassed = (size_t)n;
    }
    if (names) {
        for (int i = 0; i < n; i++)
            free(names[i]);
        free(names);
    }
#endif
    return init_rc;
}

size_t activation_count(void)
{
    return npassed;
}

int activation_fd(size_t i, const char **name)
{
    if (i >= npassed)
        return -1;
    *name = passed[i].name;
    return passed[i].fd;
}

int activation_adopt(int fd, const char *name)
{
    init_done = 1;
    passed_t *p = realloc(passed, (npassed + 1) * sizeof *passed);
    char *copy = strdup(name);
    if (p == NULL || copy == NULL) {
        free(copy);
        if (p)
            passed = p;
        return -ENOMEM; /* fd stays the caller's: a rollback hands it back */
    }
    passed = p;
    passed[npassed].fd = fd;
    passed[npassed++].name = copy;
    log_info("systemd passed socket %s (fd %d), held since before the upgrade", name, fd);
    return 0;
}

int activation_check(const berth_config_t *cfg, config_errors_t *errs)
{
    int rc = activation_init();
    if (rc) {
        config_errors_add(errs, cfg->path, 0, "systemd socket activation: %s", strerror(-rc));
        return rc;
    }
    for (size_t i = 0; i < npassed; i++) {
        size_t k;
        for (k = 0; k < cfg->nlisteners; k++)
            if (strcmp(cfg->listeners[k].name, passed[i].name) == 0)
                break;
        if (k == cfg->nlisteners) {
            config_errors_add(errs, cfg->path, 0,
                              "systemd passed a socket named \"%s\" (FileDescriptorName=%s, "
                              "fd %d) but no listener section [%s] uses it",
                              passed[i].name, passed[i].name, passed[i].fd, passed[i].name);
            rc = -EINVAL;
        }
    }
    return rc;
}

static const char *type_name(int type)
{
    return type == SOCK_STREAM ? "stream" : type == SOCK_DGRAM ? "datagram" : "other";
}

int activation_take(const config_listener_t *l, lsock_t *out, char *err, size_t errlen)
{
    size_t i;
    for (i = 0; i < npassed; i++)
        if (strcmp(passed[i].name, l->name) == 0)
            break;
    if (i == npassed)
        return 0;
    int fd = passed[i].fd;
    int type = 0, domain = 0, listening = 0;
    socklen_t len = sizeof type;
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        (len = sizeof domain, getsockopt(fd, SOL_SOCKET, SO_DOMAIN, &domain, &len)) < 0) {
        int e = errno;
        snprintf(err, errlen, "the socket systemd passed (fd %d) is not a socket: %s", fd,
                 strerror(e));
        return -e;
    }
    int want_type = l->protocol == BERTH_PROTO_TCP || l->protocol == BERTH_PROTO_UNIX ? SOCK_STREAM
                                                                                      : SOCK_DGRAM;
    int want_unix = l->protocol == BERTH_PROTO_UNIX || l->protocol == BERTH_PROTO_UNIXGRAM;
    if (type != want_type || (domain == AF_UNIX) != want_unix ||
        (!want_unix && domain != AF_INET && domain != AF_INET6)) {
        snprintf(err, errlen,
                 "the socket systemd passed as %s is a %s %s socket; protocol = %s wants a %s "
                 "%s one",
                 l->name,
                 domain == AF_UNIX    ? "unix"
                 : domain == AF_INET6 ? "IPv6"
                                      : "IPv4",
                 type_name(type), config_protocol_name(l->protocol), want_unix ? "unix" : "inet",
                 type_name(want_type));
        return -EPROTOTYPE;
    }
    len = sizeof listening;
    if (type == SOCK_STREAM &&
        (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 || !listening)) {
        snprintf(err, errlen, "the socket systemd passed as %s is not listening (Accept=no?)",
                 l->name);
        return -EINVAL;
    }
    int dup = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (dup < 0) {
        int e = errno;
        snprintf(err, errlen, "the socket systemd passed as %s: %s", l->name, strerror(e));
        return -e;
    }
    /* Workers poll and accept4 without blocking, as on the sockets they bind themselves. */
    int fl = fcntl(dup, F_GETFL);
    fcntl(dup, F_SETFL, fl | O_NONBLOCK);
    if (l->protocol == BERTH_PROTO_TCP) {
        int one = 1;
        setsockopt(dup, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    memset(out, 0, sizeof *out);
    out->slot = -1;
    out->protocol = l->protocol;
    /* The section's address, so a reload that keeps it keeps this socket (listen_same); ino
     * stays 0: the unix socket file is systemd's, never ours to remove. */
    memcpy(&out->addr, &l->addr, l->addrlen);
    out->addrlen = l->addrlen;
    out->address = strdup(l->address);
    out->name = strdup(l->name);
    if (out->address == NULL || out->name == NULL) {
        free(out->address);
        free(out->name);
        out->address = out->name = NULL;
        close(dup);
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    listen_describe_bound(dup, NULL, out->bound, sizeof out->bound);
    out->fd = dup;
    log_info("[%s] uses the socket systemd passed (FileDescriptorName=%s), bound to %s", l->name,
             l->name, out->bound);
    return 1;
}
