/*
 * The plugin ABI adapter: every member of berth_host_t. Each one checks what the ABI
 * promises and calls the conn, relay or outbound API; no other file knows the table.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "berth/units.h"
#include "config/tls.h"
#include "core/log.h"
#include "worker/bind_listen.h"
#include "worker/conn.h"
#include "worker/sandbox.h"
#include "worker/host.h"
#include "worker/outbound.h"
#include "worker/recv_into.h"
#include "worker/relay.h"
#include "worker/udp_assoc.h"

static int host_write(berth_conn_t *c, const void *data, size_t len)
{
    if (conn_taken(c) && conn_is_open(c) && !recv_into_holds(c))
        return -EBUSY; /* the relay owns the socket now */
    int rc = conn_write(c, data, len);
    if (rc == 0 && conn_kind(c) != CONN_DGRAM)
        conn_count_out(c, len); /* a datagram's send counts what it sent */
    return rc;
}

static void host_close(berth_conn_t *c)
{
    recv_into_drop(c);
    conn_close(c);
}

static void host_abort(berth_conn_t *c)
{
    recv_into_drop(c);
    conn_abort(c);
}

static int host_shutdown(berth_conn_t *c)
{
    return conn_shutdown(c);
}

static void host_pause(berth_conn_t *c)
{
    recv_into_drop(c); /* a pause stops an armed receive too */
    conn_pause(c);
}

static void host_resume(berth_conn_t *c)
{
    conn_resume(c);
}

static size_t host_write_queue_size(const berth_conn_t *c)
{
    return conn_write_queue_size(c);
}

static void *host_state(berth_conn_t *c)
{
    return conn_state(c);
}

static void *host_listener_state(berth_conn_t *c)
{
    return conn_listener(c)->state;
}

static berth_listener_t *host_listener(berth_conn_t *c)
{
    return conn_listener(c);
}

static const struct sockaddr *host_peer_addr(const berth_conn_t *c, socklen_t *len)
{
    return conn_peer_addr(c, len);
}

static const struct sockaddr *host_local_addr(const berth_conn_t *c, socklen_t *len)
{
    return conn_local_addr(c, len);
}

static const char *host_peer_name(const berth_conn_t *c)
{
    return conn_name(c);
}

static const char *host_listener_name(const berth_listener_t *l)
{
    return l->cfg->name;
}

static berth_protocol_t host_listener_protocol(const berth_listener_t *l)
{
    return l->cfg->protocol;
}

static const char *host_option(const berth_listener_t *l, const char *key)
{
    /* The last one wins, as everywhere in the config. */
    const char *v = NULL;
    for (size_t i = 0; i < l->cfg->noptions; i++)
        if (strcmp(l->cfg->options[i].key, key) == 0)
            v = l->cfg->options[i].value;
    return v;
}

/* A plugin's line, prefixed with what it concerns: "listener peer: ..." or "listener: ...". */
static void vlog_prefixed(berth_log_level_t level, const char *listener, const char *peer,
                          const char *fmt, va_list ap) BERTH_PRINTF(4, 0);
static void vlog_prefixed(berth_log_level_t level, const char *listener, const char *peer,
                          const char *fmt, va_list ap)
{
    if (!log_enabled(level))
        return;
    log_emit(level, listener, peer, NULL, 0, fmt, ap);
}

static void host_log(berth_conn_t *c, berth_log_level_t level, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
static void host_log(berth_conn_t *c, berth_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_prefixed(level, c ? conn_listener(c)->cfg->name : NULL, c ? conn_name(c) : NULL, fmt, ap);
    va_end(ap);
}

static void host_log_listener(berth_listener_t *l, berth_log_level_t level, const char *fmt, ...)
    BERTH_PRINTF(3, 4);
static void host_log_listener(berth_listener_t *l, berth_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vlog_prefixed(level, l ? l->cfg->name : NULL, NULL, fmt, ap);
    va_end(ap);
}

/* logs: structured fields */
static void host_log_fields(berth_conn_t *c, berth_log_level_t level,
                            const berth_log_field_t *fields, size_t n, const char *fmt, ...)
    BERTH_PRINTF(5, 6);
static void host_log_fields(berth_conn_t *c, berth_log_level_t level,
                            const berth_log_field_t *fields, size_t n, const char *fmt, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, c ? conn_listener(c)->cfg->name : NULL, c ? conn_name(c) : NULL, fields, n, fmt,
             ap);
    va_end(ap);
}

static berth_timer_t *host_timer_start(berth_conn_t *c, uint64_t ms, berth_timer_cb cb, void *arg)
{
    return conn_timer_start(c, ms, cb, arg);
}

static void host_timer_stop(berth_timer_t *timer)
{
    conn_timer_stop(timer);
}

static int host_work(berth_conn_t *c, berth_work_fn work, berth_done_cb done, void *arg)
{
    return conn_work(c, work, done, arg);
}

static int host_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                        berth_connect_allow_cb allow, berth_connect_cb cb, void *arg)
{
    return outbound_connect(c, host, port, timeout_ms, allow, cb, arg);
}

static int host_relay(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                      void *arg)
{
    return relay_start(c, peer, idle_ms, done, arg);
}

static int host_tls_info(const berth_conn_t *c, berth_tls_info_t *info)
{
    return conn_tls_info(c, info);
}

static const struct sockaddr *host_balancer_addr(const berth_conn_t *c, socklen_t *len)
{
    return conn_balancer_addr(c, len);
}

static const struct sockaddr *host_multicast_group(const berth_conn_t *c, socklen_t *len)
{
    socklen_t n = 0;
    const struct sockaddr *sa = conn_local_addr(c, &n);
    int group =
        (sa->sa_family == AF_INET &&
         IN_MULTICAST(ntohl(((const struct sockaddr_in *)(const void *)sa)->sin_addr.s_addr))) ||
        (sa->sa_family == AF_INET6 &&
         IN6_IS_ADDR_MULTICAST(&((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr));
    if (len)
        *len = group ? n : 0;
    return group ? sa : NULL;
}

static int host_listener_tls_verify(const berth_listener_t *l)
{
    if (l->cfg->tls == NULL)
        return -ENOTSUP;
    switch (l->cfg->tls->verify_client) {
    case CONFIG_TLS_VERIFY_REQUIRE:
        return BERTH_TLS_VERIFY_REQUIRE;
    case CONFIG_TLS_VERIFY_OPTIONAL:
        return BERTH_TLS_VERIFY_OPTIONAL;
    default:
        return BERTH_TLS_VERIFY_OFF;
    }
}

/* metrics: plugin counters, slots of the shared stats (core/stats.h). */
static berth_metric_t *host_metric(berth_listener_t *l, const char *name, const char *help,
                                   berth_metric_kind_t kind)
{
    worker_t *w = l->w;
    if (w->stats == NULL || l->slot < 0)
        return NULL; /* berthd -t: nothing is published */
    const char *plugin = l->plugin->desc.name;
    size_t plen = strlen(plugin), nlen = name ? strcspn(name, "{") : 0;
    if (name == NULL || strncmp(name, plugin, plen) != 0 || name[plen] != '_' ||
        (kind != BERTH_METRIC_COUNTER && kind != BERTH_METRIC_GAUGE) ||
        (kind == BERTH_METRIC_COUNTER && (nlen < 6 || memcmp(name + nlen - 6, "_total", 6)))) {
        log_warn("%s: metric \"%s\" refused: a name starts with \"%s_\", a counter's ends in "
                 "_total",
                 l->cfg->name, name ? name : "(null)", plugin);
        return NULL;
    }
    int rc = stats_metric_claim(w->stats, l->slot, name, help, (int)kind);
    if (rc == -ENOSPC) {
        log_warn("%s: metric \"%s\" not published: the table of %d plugin metrics is full",
                 l->cfg->name, name, STATS_METRICS);
        return NULL;
    }
    if (rc < 0) {
        log_warn("%s: metric \"%s\" refused: not a metric name (or registered as another kind)",
                 l->cfg->name, name);
        return NULL;
    }
    return (berth_metric_t *)&w->stats->metrics[rc];
}

static void host_metric_add(berth_metric_t *m, int64_t delta)
{
    stats_metric_t *sm = (stats_metric_t *)m;
    if (sm == NULL || (sm->kind == BERTH_METRIC_COUNTER && delta < 0))
        return;
    atomic_fetch_add_explicit(&sm->value, delta, memory_order_relaxed);
}

static void host_metric_set(berth_metric_t *m, int64_t value)
{
    stats_metric_t *sm = (stats_metric_t *)m;
    if (sm == NULL || sm->kind != BERTH_METRIC_GAUGE)
        return;
    atomic_store_explicit(&sm->value, value, memory_order_relaxed);
}

/* declared options */
static const void *host_listener_options(const berth_listener_t *l)
{
    return l->opts;
}

/* timers: restart */
static int host_timer_restart(berth_timer_t *timer, uint64_t ms)
{
    if (timer == NULL)
        return -EINVAL;
    conn_timer_restart(timer, ms);
    return 0;
}

const berth_host_t berth_host_table = {
    .abi_version = BERTH_ABI_VERSION,
    .size = sizeof(berth_host_t),
    .log = host_log,
    .log_listener = host_log_listener,
    .write = host_write,
    .close = host_close,
    .abort = host_abort,
    .shutdown = host_shutdown,
    .pause = host_pause,
    .resume = host_resume,
    .write_queue_size = host_write_queue_size,
    .state = host_state,
    .listener_state = host_listener_state,
    .listener = host_listener,
    .peer_addr = host_peer_addr,
    .local_addr = host_local_addr,
    .peer_name = host_peer_name,
    .listener_name = host_listener_name,
    .listener_protocol = host_listener_protocol,
    .option = host_option,
    .parse_duration = berth_parse_duration,
    .parse_size = berth_parse_size,
    .parse_bool = berth_parse_bool,
    .timer_start = host_timer_start,
    .timer_stop = host_timer_stop,
    .work = host_work,
    .connect = host_connect,
    .relay = host_relay,
    .tls_info = host_tls_info,
    .balancer_addr = host_balancer_addr,
    .multicast_group = host_multicast_group,
    .listener_tls_verify = host_listener_tls_verify,
    /* metrics: plugin counters */
    .metric = host_metric,
    .metric_add = host_metric_add,
    .metric_set = host_metric_set,
    /* logs: structured fields */
    .log_fields = host_log_fields,
    /* SOCKS5 UDP/BIND host services */
    .dgram_open = udp_assoc_open,
    .dgram_local_addr = udp_assoc_local_addr,
    .dgram_send = udp_assoc_send,
    .dgram_close = udp_assoc_close,
    .listen_once = bind_listen_once,
    /* upload: receive into fd */
    .recv_into = recv_into_arm,
    /* declared options */
    .listener_options = host_listener_options,
    /* timers: restart */
    .timer_restart = host_timer_restart,
    /* sandbox: declared access */
    .allow_path = sandbox_allow_path,
    .allow_connect = sandbox_allow_connect,
    .allow_bind = sandbox_allow_bind,
    /* logs: level check */
    .log_enabled = log_enabled,
};
