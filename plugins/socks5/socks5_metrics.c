/* See socks5_metrics.h. */
#include "socks5_metrics.h"

#include <stdio.h>
#include <stdlib.h>

static const char *const drop_names[SOCKS5_DROP_REASONS] = {
    [SOCKS5_DROP_STRANGER] = "stranger",   [SOCKS5_DROP_FRAGMENT] = "fragment",
    [SOCKS5_DROP_MALFORMED] = "malformed", [SOCKS5_DROP_DENIED] = "denied",
    [SOCKS5_DROP_QUEUE] = "queue",         [SOCKS5_DROP_UNASKED] = "unasked",
    [SOCKS5_DROP_RESOLVER] = "resolver",
};

const char *socks5_udp_drop_name(socks5_udp_drop_t why)
{
    return (unsigned)why < SOCKS5_DROP_REASONS ? drop_names[why] : "?";
}

static berth_metric_t *counter(const berth_host_t *host, berth_listener_t *l, const char *name,
                               const char *help)
{
    return host->metric(l, name, help, BERTH_METRIC_COUNTER);
}

static void open_udp(socks5_metrics_t *m, berth_listener_t *l)
{
    static const char dgrams[] = "UDP datagrams relayed from clients to destinations (up) and "
                                 "back (down).";
    static const char bytes[] = "Payload bytes relayed over UDP from clients to destinations "
                                "(up) and back (down), SOCKS5 headers not counted.";
    const berth_host_t *host = m->host;

    m->udp_associations =
        counter(host, l, "socks5_udp_associations_total", "UDP associations opened.");
    m->udp_datagrams_up = counter(host, l, "socks5_udp_datagrams_total{direction=\"up\"}", dgrams);
    m->udp_datagrams_down =
        counter(host, l, "socks5_udp_datagrams_total{direction=\"down\"}", dgrams);
    m->udp_bytes_up = counter(host, l, "socks5_udp_bytes_total{direction=\"up\"}", bytes);
    m->udp_bytes_down = counter(host, l, "socks5_udp_bytes_total{direction=\"down\"}", bytes);
    for (int i = 0; i < SOCKS5_DROP_REASONS; i++) {
        char name[64];

        snprintf(name, sizeof(name), "socks5_udp_dropped_total{reason=\"%s\"}", drop_names[i]);
        m->udp_dropped[i] = counter(host, l, name, "UDP datagrams dropped, by reason.");
    }
}

socks5_metrics_t *socks5_metrics_open(const berth_host_t *host, berth_listener_t *l, int udp,
                                      int bind)
{
    static const char relayed[] = "Bytes relayed from clients to destinations (up) and back "
                                  "(down).";
    static const char binds[] = "BIND requests accepted (a port opened) and refused at "
                                "bind_max.";
    socks5_metrics_t *m;

    if (!BERTH_HOST_HAS(host, metric_set))
        return NULL;
    m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    m->host = host;
    for (int i = 0; i < SOCKS5_REPLY_CODES; i++) {
        char name[64];

        snprintf(name, sizeof(name), "socks5_replies_total{code=\"%d\"}", i);
        m->replies[i] = counter(host, l, name, "SOCKS5 replies sent, by reply code (RFC 1928).");
    }
    m->up = counter(host, l, "socks5_relayed_bytes_total{direction=\"up\"}", relayed);
    m->down = counter(host, l, "socks5_relayed_bytes_total{direction=\"down\"}", relayed);
    if (udp)
        open_udp(m, l);
    if (bind) {
        m->binds_accepted = counter(host, l, "socks5_binds_total{result=\"accepted\"}", binds);
        m->binds_refused = counter(host, l, "socks5_binds_total{result=\"refused\"}", binds);
    }
    return m;
}

void socks5_metrics_close(socks5_metrics_t *m)
{
    free(m);
}

void socks5_metrics_session(const socks5_metrics_t *m, uint8_t rep, uint64_t up, uint64_t down)
{
    if (m == NULL)
        return;
    if (rep < SOCKS5_REPLY_CODES)
        m->host->metric_add(m->replies[rep], 1);
    if (up)
        m->host->metric_add(m->up, (int64_t)up);
    if (down)
        m->host->metric_add(m->down, (int64_t)down);
}
