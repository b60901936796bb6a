/*
 * Listener addresses: "host:port", "[v6]:port", "*:port", "localhost:port" for tcp and udp, an
 * absolute path for unix and unixgram; and which two listeners would bind the same thing.
 * Host names are never resolved: a config means the same on every start.
 */
#include "config/parse.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

/* "host:port", "[v6]:port", "*:port" (0.0.0.0), "localhost:port" (127.0.0.1). */
int address_parse_inet(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err,
                       size_t errlen)
{
    char host[INET6_ADDRSTRLEN];
    const char *start = text, *port;
    size_t hlen;
    uint64_t portnum = 0;
    int bracketed = 0, rc = -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "expected [IPv6]:port");
            goto out;
        }
        start = text + 1;
        hlen = (size_t)(close - start);
        port = close + 2;
        bracketed = 1;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            snprintf(err, errlen, "expected host:port");
            goto out;
        }
        if (memchr(text, ':', (size_t)(colon - text))) {
            snprintf(err, errlen, "an IPv6 address needs brackets, as in [::1]:7007");
            goto out;
        }
        hlen = (size_t)(colon - text);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(err, errlen, "expected host:port");
        goto out;
    }
    memcpy(host, start, hlen);
    host[hlen] = '\0';
    if (keys_parse_number(port, 0, 65535, &portnum) < 0) { /* 0: the kernel picks one */
        snprintf(err, errlen, "the port must be 0..65535");
        goto out;
    }
    if (bracketed) {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)portnum)};
        if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1) {
            snprintf(err, errlen, "'%s' is not an IPv6 address", host);
            goto out;
        }
        memcpy(ss, &sin6, sizeof(sin6));
        *len = sizeof(sin6);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)portnum)};
        if (strcmp(host, "*") == 0) {
            sin.sin_addr.s_addr = htonl(INADDR_ANY);
        } else if (strcmp(host, "localhost") == 0) {
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
            snprintf(err, errlen,
                     "'%s' is not a numeric IPv4 address, * or localhost (host names are not "
                     "resolved)",
                     host);
            goto out;
        }
        memcpy(ss, &sin, sizeof(sin));
        *len = sizeof(sin);
    }
    rc = 0;
out:
    return rc;
}

int address_parse_unix(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err,
                       size_t errlen)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(text);
    int rc = -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (text[0] != '/') {
        snprintf(err, errlen, "a unix socket address must be an absolute path");
        goto out;
    }
    if (n > SUN_PATH_MAX) {
        snprintf(err, errlen, "longer than %zu bytes, the limit of a unix socket path",
                 SUN_PATH_MAX);
        goto out;
    }
    memcpy(un.sun_path, text, n + 1);
    memcpy(ss, &un, sizeof(un));
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    rc = 0;
out:
    return rc;
}

int address_is_unix(berth_protocol_t proto)
{
    return proto == BERTH_PROTO_UNIX || proto == BERTH_PROTO_UNIXGRAM;
}

int address_is_stream(berth_protocol_t proto)
{
    return proto == BERTH_PROTO_TCP || proto == BERTH_PROTO_UNIX;
}

/* Two listeners clash when they would bind the same thing: tcp and udp have separate port
 * spaces, but unix and unixgram sockets are both files. */
int address_same_binding(const config_listener_t *a, const config_listener_t *b)
{
    if (address_is_unix(a->protocol) != address_is_unix(b->protocol))
        return 0;
    if (address_is_unix(a->protocol)) {
        const struct sockaddr_un *ua = (const struct sockaddr_un *)&a->addr;
        const struct sockaddr_un *ub = (const struct sockaddr_un *)&b->addr;
        return strcmp(ua->sun_path, ub->sun_path) == 0;
    }
    if (a->protocol != b->protocol || a->addr.ss_family != b->addr.ss_family)
        return 0;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *ia = (const struct sockaddr_in *)&a->addr;
        const struct sockaddr_in *ib = (const struct sockaddr_in *)&b->addr;
        /* Port 0: the kernel gives each its own port. */
        return ia->sin_port != 0 && ia->sin_port == ib->sin_port &&
               ia->sin_addr.s_addr == ib->sin_addr.s_addr;
    } else {
        const struct sockaddr_in6 *ia = (const struct sockaddr_in6 *)&a->addr;
        const struct sockaddr_in6 *ib = (const struct sockaddr_in6 *)&b->addr;
        return ia->sin6_port != 0 && ia->sin6_port == ib->sin6_port &&
               memcmp(&ia->sin6_addr, &ib->sin6_addr, sizeof(ia->sin6_addr)) == 0;
    }
}
