/*
 * whoami: a test plugin that says who the host says the peer is. On setup() of a stream
 * conn it writes one line, "peer=NAME balancer=ADDR\n" (NAME from host->peer_name, ADDR
 * from host->balancer_addr as "IP:PORT" or "[IP]:PORT", or "none"), then echoes what it
 * reads. The PROXY protocol tests use it to see the address the plugin gets.
 */
#include <berth/handler.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const berth_host_t *host;

static int whoami_load(const berth_host_t *h)
{
    host = h;
    return BERTH_HOST_HAS(h, balancer_addr) ? 0 : -ENOTSUP;
}

static void addr_text(const struct sockaddr *sa, char *out, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "";
    if (sa == NULL) {
        snprintf(out, len, "none");
    } else if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        inet_ntop(AF_INET, &in->sin_addr, ip, sizeof ip);
        snprintf(out, len, "%s:%u", ip, ntohs(in->sin_port));
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, ip, sizeof ip);
        snprintf(out, len, "[%s]:%u", ip, ntohs(in6->sin6_port));
    } else {
        snprintf(out, len, "family-%d", sa->sa_family);
    }
}

static int whoami_setup(berth_conn_t *conn)
{
    char bal[80], line[256];
    socklen_t blen = 0;
    addr_text(host->balancer_addr(conn, &blen), bal, sizeof bal);
    int n = snprintf(line, sizeof line, "peer=%s balancer=%s\n", host->peer_name(conn), bal);
    host->log(conn, BERTH_LOG_INFO, "whoami: balancer=%s", bal);
    return host->write(conn, line, (size_t)n);
}

static void whoami_handle(berth_conn_t *conn, const void *data, size_t len)
{
    if (host->write(conn, data, len) < 0)
        host->abort(conn);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("whoami"),
    .load = whoami_load,
    .setup = whoami_setup,
    .handle = whoami_handle,
};
