#include "master/listen.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stddef.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "master/mcast.h"

static int sock_type(berth_protocol_t p)
{
    return p == BERTH_PROTO_TCP || p == BERTH_PROTO_UNIX ? SOCK_STREAM : SOCK_DGRAM;
}

/* Is somebody serving on this unix socket file? 1 yes, 0 stale, -errno if unknown. */
static int unix_in_use(const struct sockaddr_un *sun, socklen_t len, int type)
{
    int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)sun, len);
    int e = errno;
    close(fd);
    if (rc == 0)
        return 1;
    if (e == ECONNREFUSED)
        return 0;
    return -e;
}

static int prepare_unix_path(const struct sockaddr_un *sun, socklen_t addrlen, int type, char *err,
                             size_t errlen)
{
    struct stat st;
    if (lstat(sun->sun_path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        int e = errno;
        snprintf(err, errlen, "%s: %s", sun->sun_path, strerror(e));
        return -e;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen, "%s exists and is not a socket; not removing it", sun->sun_path);
        return -EEXIST;
    }
    int used = unix_in_use(sun, addrlen, type);
    if (used == 1) {
        snprintf(err, errlen, "%s is in use by another process", sun->sun_path);
        return -EADDRINUSE;
    }
    if (used < 0) {
        snprintf(err, errlen, "%s: cannot tell whether it is in use: %s", sun->sun_path,
                 strerror(-used));
        return used;
    }
    if (unlink(sun->sun_path) < 0 && errno != ENOENT) {
        int e = errno;
        snprintf(err, errlen, "%s: stale socket: %s", sun->sun_path, strerror(e));
        return -e;
    }
    return 0;
}

void listen_describe_bound(int fd, const char *address, char *buf, size_t len)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "";
    buf[0] = '\0';
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
        return;
    if (ss.ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)&ss;
        inet_ntop(AF_INET, &a->sin_addr, host, sizeof host);
        snprintf(buf, len, "%s:%u", host, (unsigned)ntohs(a->sin_port));
    } else if (ss.ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)&ss;
        inet_ntop(AF_INET6, &a->sin6_addr, host, sizeof host);
        snprintf(buf, len, "[%s]:%u", host, (unsigned)ntohs(a->sin6_port));
    } else if (address != NULL) {
        snprintf(buf, len, "%s", address);
    } else if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *a = (const struct sockaddr_un *)&ss;
        size_t n = sl > offsetof(struct sockaddr_un, sun_path)
                       ? sl - offsetof(struct sockaddr_un, sun_path)
                       : 0;
        snprintf(buf, len, "%.*s", (int)strnlen(a->sun_path, n), a->sun_path);
    }
}

static void describe_bound(int fd, lsock_t *out)
{
    listen_describe_bound(fd, out->address ? out->address : "", out->bound, sizeof out->bound);
}

/* socket, bind, listen: the one way every listening socket (and the admin one) is made. */
static int open_socket(berth_protocol_t protocol, const struct sockaddr_storage *addr,
                       socklen_t addrlen, const char *address, const char *name, unsigned backlog,
                       unsigned mode, const config_mcast_t *mc, lsock_t *out, char *err,
                       size_t errlen)
{
    int rc = 0;
    int fd = -1;
    int one = 1;
    int family = addr->ss_family;
    int type = sock_type(protocol);
    memset(out, 0, sizeof *out);
    out->fd = -1;
    out->slot = -1;

    if (family == AF_UNIX &&
        (rc = prepare_unix_path((const struct sockaddr_un *)addr, addrlen, type, err, errlen)))
        goto out;
    fd = socket(family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        rc = -errno;
        snprintf(err, errlen, "socket: %s", strerror(-rc));
        goto out;
    }
    if (family != AF_UNIX && type == SOCK_STREAM) {
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        /* Accepted sockets inherit it: one call here instead of one per connection. */
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (mc && mc->ngroups) /* before bind: other receivers on this host share the port */
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (family == AF_INET6) /* so [::]:p and *:p (IPv4) can both be listed */
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
    if (family == AF_UNIX) {
        /* Created with the configured mode from the first instant, not chmod()ed later. */
        mode_t old = umask((mode_t)(0777 & ~mode));
        rc = bind(fd, (const struct sockaddr *)addr, addrlen) < 0 ? -errno : 0;
        umask(old);
    } else {
        rc = bind(fd, (const struct sockaddr *)addr, addrlen) < 0 ? -errno : 0;
    }
    if (rc < 0) {
        snprintf(err, errlen, "cannot bind %s: %s", address, strerror(-rc));
        goto out;
    }
    if (type == SOCK_STREAM && listen(fd, (int)backlog) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot listen on %s: %s", address, strerror(-rc));
        goto out;
    }
    if (mc && mc->ngroups) { /* joined before any worker inherits the socket */
        if ((rc = mcast_join(fd, family, mc, err, errlen)) != 0)
            goto out;
        out->mcast = *mc;
        mcast_describe(mc, out->groups, sizeof out->groups);
    }
    if (family == AF_UNIX) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)addr;
        struct stat st;
        if (stat(sun->sun_path, &st) == 0) {
            out->dev = st.st_dev;
            out->ino = st.st_ino;
        }
        chmod(sun->sun_path, (mode_t)mode);
    }
    out->protocol = protocol;
    memcpy(&out->addr, addr, addrlen);
    out->addrlen = addrlen;
    out->address = strdup(address);
    out->name = strdup(name);
    if (out->address == NULL || out->name == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    describe_bound(fd, out);
    out->fd = fd;
    fd = -1;
out:
    if (fd >= 0) {
        close(fd);
        if (family == AF_UNIX && rc && rc != -EADDRINUSE && rc != -EEXIST)
            unlink(((const struct sockaddr_un *)addr)->sun_path);
    }
    if (rc) {
        free(out->address);
        free(out->name);
        out->address = out->name = NULL;
    }
    return rc;
}

int listen_open(const config_listener_t *l, lsock_t *out, char *err, size_t errlen)
{
    return open_socket(l->protocol, &l->addr, l->addrlen, l->address, l->name, l->backlog, l->mode,
                       l->protocol == BERTH_PROTO_UDP ? &l->mcast : NULL, out, err, errlen);
}

int listen_open_unix(const char *path, unsigned mode, unsigned backlog, const char *name,
                     lsock_t *out, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_un *sun = (struct sockaddr_un *)&ss;
    sun->sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sun->sun_path) {
        memset(out, 0, sizeof *out);
        out->fd = -1;
        out->slot = -1;
        snprintf(err, errlen, "socket path too long: %s", path);
        return -ENAMETOOLONG;
    }
    memcpy(sun->sun_path, path, strlen(path) + 1);
    socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path) + 1);
    return open_socket(BERTH_PROTO_UNIX, &ss, len, path, name, backlog, mode, NULL, out, err,
                       errlen);
}

void listen_update(lsock_t *s, const config_listener_t *l)
{
    if (sock_type(l->protocol) == SOCK_STREAM)
        listen(s->fd, (int)l->backlog);
    if (s->addr.ss_family == AF_UNIX)
        chmod(((const struct sockaddr_un *)&s->addr)->sun_path, (mode_t)l->mode);
}

int listen_update_groups(lsock_t *s, const config_listener_t *l, char *err, size_t errlen)
{
    static const config_mcast_t none = {.loop = -1};
    const config_mcast_t *to = l->protocol == BERTH_PROTO_UDP ? &l->mcast : &none;
    if (s->mcast.ngroups == 0 && to->ngroups == 0)
        return 0;
    int rc = mcast_change(s->fd, s->addr.ss_family, &s->mcast, to, err, errlen);
    if (rc == 0) {
        s->mcast = *to;
        mcast_describe(to, s->groups, sizeof s->groups);
    }
    return rc;
}

void listen_close(lsock_t *s)
{
    if (s->addr.ss_family == AF_UNIX && s->ino) {
        const struct sockaddr_un *sun = (const struct sockaddr_un *)&s->addr;
        struct stat st;
        if (stat(sun->sun_path, &st) == 0 && st.st_dev == s->dev && st.st_ino == s->ino)
            unlink(sun->sun_path);
        s->ino = 0;
    }
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    free(s->address);
    free(s->name);
    s->address = s->name = NULL;
}

int listen_same(const lsock_t *s, const config_listener_t *l)
{
    if (sock_type(s->protocol) != sock_type(l->protocol) || s->addr.ss_family != l->addr.ss_family)
        return 0;
    switch (l->addr.ss_family) {
    case AF_INET: {
        const struct sockaddr_in *a = (const void *)&s->addr, *b = (const void *)&l->addr;
        return a->sin_port == b->sin_port && a->sin_addr.s_addr == b->sin_addr.s_addr;
    }
    case AF_INET6: {
        const struct sockaddr_in6 *a = (const void *)&s->addr, *b = (const void *)&l->addr;
        return a->sin6_port == b->sin6_port && a->sin6_scope_id == b->sin6_scope_id &&
               memcmp(&a->sin6_addr, &b->sin6_addr, sizeof a->sin6_addr) == 0;
    }
    case AF_UNIX: {
        const struct sockaddr_un *a = (const void *)&s->addr, *b = (const void *)&l->addr;
        return strncmp(a->sun_path, b->sun_path, sizeof a->sun_path) == 0;
    }
    default:
        return 0;
    }
}

int listen_port(const lsock_t *s)
{
    if (s->addr.ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)&s->addr)->sin_port);
    if (s->addr.ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)&s->addr)->sin6_port);
    return -1;
}
