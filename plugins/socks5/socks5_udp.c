/*
 * socks5 UDP ASSOCIATE. A datagram from the client is taken only from the client's address
 * (the control connection's peer) and, once known, its port: the port DST.PORT named, else
 * the one its first good datagram came from. Its header is parsed (socks5_udp_parse);
 * fragments and malformed headers are dropped and counted; its destination is judged by
 * allow_dest/deny_dest (a name's every address, once resolved off the loop by the host),
 * then the payload goes out from the destination-facing socket. A datagram coming back is
 * judged by the same rules, and must come from an address and port the client has sent to
 * (one of the last SOCKS5_UDP_RECENT it reached), not merely one allow_dest permits: anyone
 * else is dropped and counted (`unasked`). It is then wrapped with its source address and
 * sent to the client.
 *
 * Nothing is buffered: the host sends at once or drops (counted as `queue`), and at most
 * udp_queue datagrams per association wait for a name, and at most the listener's share of
 * the host's resolver threads across all its associations (past it: counted as `resolver`). The
 * association ends with its control connection (the host closes the sockets) or after
 * udp_idle_timeout without a datagram.
 *
 * Every drop, datagram and byte is counted twice as it happens: in the association, for the
 * line it logs when it ends, and on the listener's /metrics counters (socks5_metrics.h).
 */
#include "socks5_udp.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "socks5_metrics.h"

/* The destinations an association remembers, for the replies it lets through: the last ones
 * reached, oldest overwritten first. */
#define SOCKS5_UDP_RECENT 16

typedef struct recent_dest {
    uint8_t family; /* 0: empty */
    uint8_t addr[16];
    uint16_t port;
} recent_dest_t;

struct socks5_udp {
    const berth_host_t *host;
    berth_conn_t *conn;
    const socks5_config_t *cfg;
    berth_dgram_t *client;        /* faces the client, bound at udp_address */
    berth_dgram_t *out;           /* faces the destinations */
    struct sockaddr_storage peer; /* the client's address; its port 0 until known */
    berth_timer_t *idle;
    uint64_t last_ms;
    const char *ended;
    uint64_t up, down, dgrams_up, dgrams_down;
    uint64_t dropped[SOCKS5_DROP_REASONS];
    recent_dest_t recent[SOCKS5_UDP_RECENT];
    unsigned recent_next;
};

/* A reply: the widest header and the largest datagram UDP carries over IPv4. */
static uint8_t wrap_buf[SOCKS5_MAX_REPLY + 65507];

static uint64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static uint16_t port_of(const struct sockaddr *sa)
{
    return ntohs(sa->sa_family == AF_INET
                     ? ((const struct sockaddr_in *)(const void *)sa)->sin_port
                     : ((const struct sockaddr_in6 *)(const void *)sa)->sin6_port);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static int same_ip(const struct sockaddr *a, const struct sockaddr *b)
{
    if (a->sa_family != b->sa_family)
        return 0;
    if (a->sa_family == AF_INET)
        return memcmp(&((const struct sockaddr_in *)(const void *)a)->sin_addr,
                      &((const struct sockaddr_in *)(const void *)b)->sin_addr, 4) == 0;
    return memcmp(&((const struct sockaddr_in6 *)(const void *)a)->sin6_addr,
                  &((const struct sockaddr_in6 *)(const void *)b)->sin6_addr, 16) == 0;
}

/* v4-mapped IPv6 as IPv4: the host hands datagram sources over that way too. */
static void unmap(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    const struct sockaddr_in6 *in6 = (const void *)sa;

    memset(out, 0, sizeof(*out));
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;

        in->sin_family = AF_INET;
        in->sin_port = in6->sin6_port;
        memcpy(&in->sin_addr, in6->sin6_addr.s6_addr + 12, 4);
    } else if (sa->sa_family == AF_INET) {
        memcpy(out, sa, sizeof(struct sockaddr_in));
    } else if (sa->sa_family == AF_INET6) {
        memcpy(out, sa, sizeof(struct sockaddr_in6));
    }
}

static void dest_key(const struct sockaddr *sa, recent_dest_t *k)
{
    memset(k, 0, sizeof(*k));
    k->family = (uint8_t)sa->sa_family;
    k->port = port_of(sa);
    if (sa->sa_family == AF_INET)
        memcpy(k->addr, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
    else
        memcpy(k->addr, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
}

static int recent_find(const socks5_udp_t *u, const recent_dest_t *k)
{
    for (unsigned i = 0; i < SOCKS5_UDP_RECENT; i++)
        if (u->recent[i].family == k->family && u->recent[i].port == k->port &&
            memcmp(u->recent[i].addr, k->addr, sizeof(k->addr)) == 0)
            return 1;
    return 0;
}

/* The address a datagram goes to (a literal one, or the one its name resolved to): the
 * replies from it are let through from now on. */
static void recent_add(socks5_udp_t *u, const struct sockaddr *sa)
{
    recent_dest_t k;

    dest_key(sa, &k);
    if (recent_find(u, &k))
        return;
    u->recent[u->recent_next] = k;
    u->recent_next = (u->recent_next + 1) % SOCKS5_UDP_RECENT;
}

/* A datagram dropped: counted for the log line and, at once, on /metrics. */
static void drop(socks5_udp_t *u, socks5_udp_drop_t why)
{
    u->dropped[why]++;
    socks5_metrics_udp_dropped(u->cfg->metrics, why);
}

static int dest_allow(berth_conn_t *conn, const struct sockaddr *addr, void *arg)
{
    socks5_udp_t *u = arg;

    (void)conn;
    if (socks5_dest_allowed(u->cfg, addr)) {
        recent_add(u, addr); /* the first allowed address is the one sent to */
        return 0;
    }
    drop(u, SOCKS5_DROP_DENIED);
    return -EACCES;
}

static void on_client_datagram(berth_conn_t *conn, berth_dgram_t *d, const void *data, size_t len,
                               const struct sockaddr *from, void *arg)
{
    socks5_udp_t *u = arg;
    socks5_udp_header_t h;
    char ip[INET6_ADDRSTRLEN];
    const char *target = ip;
    uint16_t known = port_of((const struct sockaddr *)&u->peer);
    int rc;

    (void)conn;
    (void)d;
    if (!same_ip(from, (const struct sockaddr *)&u->peer) || (known && port_of(from) != known)) {
        drop(u, SOCKS5_DROP_STRANGER);
        return;
    }
    rc = socks5_udp_parse(data, len, &h);
    if (rc == SOCKS5_UDP_FRAG) {
        drop(u, SOCKS5_DROP_FRAGMENT);
        return;
    }
    if (rc != SOCKS5_UDP_OK) {
        drop(u, SOCKS5_DROP_MALFORMED);
        return;
    }
    if (!known)
        set_port(&u->peer, port_of(from));
    u->last_ms = mono_ms();
    if (h.atyp == SOCKS5_ATYP_IPV4)
        inet_ntop(AF_INET, h.addr, ip, sizeof(ip));
    else if (h.atyp == SOCKS5_ATYP_IPV6)
        inet_ntop(AF_INET6, h.addr, ip, sizeof(ip));
    else
        target = h.name;
    rc = u->host->dgram_send(u->out, target, h.port, (const uint8_t *)data + h.len, len - h.len,
                             dest_allow, u);
    if (rc == -ENOBUFS || rc == -EAGAIN || rc == -ENOMEM) {
        drop(u, SOCKS5_DROP_QUEUE);
    } else if (rc == -EBUSY) {
        drop(u, SOCKS5_DROP_RESOLVER); /* the listener's lookups in flight are at the host's cap */
    } else if (rc == 0) {
        u->dgrams_up++;
        u->up += len - h.len;
        socks5_metrics_udp_relayed(u->cfg->metrics, 1, len - h.len);
    }
    /* -EACCES was counted by dest_allow; another error (-EAFNOSUPPORT) is a drop as UDP has
     * them. */
}

static void on_dest_datagram(berth_conn_t *conn, berth_dgram_t *d, const void *data, size_t len,
                             const struct sockaddr *from, void *arg)
{
    socks5_udp_t *u = arg;
    char ip[INET6_ADDRSTRLEN];
    uint16_t port = port_of((const struct sockaddr *)&u->peer);
    size_t n;
    int rc;

    (void)conn;
    (void)d;
    recent_dest_t k;

    if (port == 0)
        return; /* nothing was sent yet: nobody asked for this */
    if (!socks5_dest_allowed(u->cfg, from)) {
        drop(u, SOCKS5_DROP_DENIED);
        return;
    }
    dest_key(from, &k);
    if (!recent_find(u, &k)) {
        drop(u, SOCKS5_DROP_UNASKED); /* allowed, but the client never sent there */
        return;
    }
    n = socks5_udp_header(wrap_buf, from);
    if (n == 0 || len > sizeof(wrap_buf) - n || n + len > 65507) {
        drop(u, SOCKS5_DROP_MALFORMED);
        return;
    }
    memcpy(wrap_buf + n, data, len);
    u->last_ms = mono_ms();
    if (u->peer.ss_family == AF_INET)
        inet_ntop(AF_INET, &((struct sockaddr_in *)&u->peer)->sin_addr, ip, sizeof(ip));
    else
        inet_ntop(AF_INET6, &((struct sockaddr_in6 *)&u->peer)->sin6_addr, ip, sizeof(ip));
    rc = u->host->dgram_send(u->client, ip, port, wrap_buf, n + len, NULL, NULL);
    if (rc == 0) {
        u->dgrams_down++;
        u->down += len;
        socks5_metrics_udp_relayed(u->cfg->metrics, 0, len);
    } else {
        drop(u, SOCKS5_DROP_QUEUE);
    }
}

static void on_idle(berth_conn_t *conn, void *arg)
{
    socks5_udp_t *u = arg;
    uint64_t quiet = mono_ms() - u->last_ms;

    u->idle = NULL; /* fired: gone */
    if (quiet >= u->cfg->udp_idle_ms) {
        u->ended = "udp idle timeout";
        u->host->close(conn);
        return;
    }
    /* One timer per association, moved on only when it fires: no timer call per datagram. */
    u->idle = u->host->timer_start(conn, u->cfg->udp_idle_ms - quiet, on_idle, u);
    if (u->idle == NULL) {
        u->ended = "out of memory";
        u->host->close(conn);
    }
}

/* The address the client-facing socket binds: udp_address, else the address the client
 * connected to; port 0 or udp_address's. */
static int relay_address(const berth_host_t *host, berth_conn_t *conn, const socks5_config_t *cfg,
                         struct sockaddr_storage *ss)
{
    socklen_t len = 0;
    const struct sockaddr *local = host->local_addr(conn, &len);

    if (cfg->udp_addr.ss_family != 0)
        *ss = cfg->udp_addr;
    else if (local != NULL && (local->sa_family == AF_INET || local->sa_family == AF_INET6))
        unmap(local, ss);
    else
        return -EAFNOSUPPORT;
    set_port(ss, cfg->udp_port);
    return 0;
}

socks5_udp_t *socks5_udp_start(const berth_host_t *host, berth_conn_t *conn,
                               const socks5_config_t *cfg, const socks5_request_t *r,
                               struct sockaddr_storage *bnd, uint8_t *rep)
{
    socks5_udp_t *u;
    struct sockaddr_storage at, any6, any4;
    socklen_t len = 0;
    const struct sockaddr *peer = host->peer_addr(conn, &len);
    const struct sockaddr *local;
    int rc;

    *rep = SOCKS5_REP_GENERAL_FAILURE;
    if (!cfg->udp || !BERTH_HOST_HAS(host, listen_once)) {
        *rep = SOCKS5_REP_CMD_UNSUPPORTED;
        return NULL;
    }
    if (*cfg->udp_active >= cfg->udp_max) {
        host->log(conn, BERTH_LOG_WARN, "udp: udp_associations (%u) reached, request refused",
                  cfg->udp_max);
        return NULL;
    }
    if (peer == NULL || (peer->sa_family != AF_INET && peer->sa_family != AF_INET6) ||
        relay_address(host, conn, cfg, &at) < 0)
        return NULL;
    u = calloc(1, sizeof(*u));
    if (u == NULL)
        return NULL;
    u->host = host;
    u->conn = conn;
    u->cfg = cfg;
    unmap(peer, &u->peer);
    /* The client's port: the one it named, else learnt from its first good datagram. */
    set_port(&u->peer, r->port);

    rc = host->dgram_open(conn, (const struct sockaddr *)&at, cfg->udp_port_last, 0,
                          on_client_datagram, u, &u->client);
    if (rc < 0) {
        host->log(conn, BERTH_LOG_WARN, "udp: cannot bind the relay socket: %s", strerror(-rc));
        free(u);
        return NULL;
    }
    memset(&any6, 0, sizeof(any6));
    any6.ss_family = AF_INET6;
    memset(&any4, 0, sizeof(any4));
    any4.ss_family = AF_INET;
    rc = host->dgram_open(conn, (const struct sockaddr *)&any6, 0, cfg->udp_queue, on_dest_datagram,
                          u, &u->out);
    if (rc < 0) /* no IPv6 on this host */
        rc = host->dgram_open(conn, (const struct sockaddr *)&any4, 0, cfg->udp_queue,
                              on_dest_datagram, u, &u->out);
    if (rc < 0) {
        host->log(conn, BERTH_LOG_WARN, "udp: cannot open the outgoing socket: %s", strerror(-rc));
        host->dgram_close(u->client);
        free(u);
        return NULL;
    }
    u->last_ms = mono_ms();
    u->idle = host->timer_start(conn, cfg->udp_idle_ms, on_idle, u);
    if (u->idle == NULL) {
        host->dgram_close(u->out);
        host->dgram_close(u->client);
        free(u);
        return NULL;
    }
    /* BND: the relay socket's real address; a wildcard one is named by the address the
     * client reached us at, which it can send to. */
    unmap(host->dgram_local_addr(u->client, &len), bnd);
    local = host->local_addr(conn, &len);
    if (bnd->ss_family == AF_INET && ((struct sockaddr_in *)bnd)->sin_addr.s_addr == INADDR_ANY &&
        local != NULL) {
        struct sockaddr_storage l;

        unmap(local, &l);
        if (l.ss_family == AF_INET)
            ((struct sockaddr_in *)bnd)->sin_addr = ((struct sockaddr_in *)&l)->sin_addr;
    } else if (bnd->ss_family == AF_INET6 &&
               IN6_IS_ADDR_UNSPECIFIED(&((struct sockaddr_in6 *)bnd)->sin6_addr) && local != NULL &&
               local->sa_family == AF_INET6) {
        ((struct sockaddr_in6 *)bnd)->sin6_addr =
            ((const struct sockaddr_in6 *)(const void *)local)->sin6_addr;
    }
    (*cfg->udp_active)++;
    socks5_metrics_udp_opened(cfg->metrics);
    return u;
}

const char *socks5_udp_outcome(const socks5_udp_t *u)
{
    return u->ended;
}

void socks5_udp_end(socks5_udp_t *u)
{
    if (u == NULL)
        return;
    (*u->cfg->udp_active)--;
    u->host->log(u->conn, BERTH_LOG_INFO,
                 "udp association ended (%s): datagrams_up=%llu datagrams_down=%llu "
                 "bytes_up=%llu bytes_down=%llu dropped: stranger=%llu fragment=%llu "
                 "malformed=%llu denied=%llu queue=%llu unasked=%llu resolver=%llu",
                 u->ended ? u->ended : "control connection closed",
                 (unsigned long long)u->dgrams_up, (unsigned long long)u->dgrams_down,
                 (unsigned long long)u->up, (unsigned long long)u->down,
                 (unsigned long long)u->dropped[SOCKS5_DROP_STRANGER],
                 (unsigned long long)u->dropped[SOCKS5_DROP_FRAGMENT],
                 (unsigned long long)u->dropped[SOCKS5_DROP_MALFORMED],
                 (unsigned long long)u->dropped[SOCKS5_DROP_DENIED],
                 (unsigned long long)u->dropped[SOCKS5_DROP_QUEUE],
                 (unsigned long long)u->dropped[SOCKS5_DROP_UNASKED],
                 (unsigned long long)u->dropped[SOCKS5_DROP_RESOLVER]);
    free(u);
}
