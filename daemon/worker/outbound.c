/*
 * host->connect: resolve off the loop (libuv's getaddrinfo on the thread pool), then try
 * every address in order until one connects, all under one deadline. Each address is
 * offered to the plugin's allow callback first, so a rule is checked on what a name
 * resolved to, not on the name.
 *
 * Whatever the plugin allows, an address that is one of the daemon's own TCP listeners is
 * refused (BERTH_CONNECT_DENIED): a proxy that connects to itself can be made to chain
 * through itself thousands of times by one request carrying nested requests as early data.
 * A wildcard listener (0.0.0.0 or ::) is every local address of the host on its port.
 *
 * The outbound attempt holds a ref on the plugin's conn: finish() waits for it, and the
 * plugin's callback runs exactly once, even when the conn closes first (then with
 * BERTH_CONNECT_FAILED and ECANCELED), so the plugin can always free its arg there.
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <ifaddrs.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "worker/outbound.h"

typedef struct outbound {
    berth_conn_t *c;
    char *host;
    uint16_t port;
    berth_connect_allow_cb allow;
    berth_connect_cb cb;
    void *arg;
    uv_getaddrinfo_t gai;
    struct addrinfo *res, *cur;
    struct addrinfo literal;
    struct sockaddr_storage literal_addr;
    berth_conn_t *peer; /* the attempt in progress */
    uv_timer_t timer;
    int pending; /* callbacks libuv owes us: gai, connect, timer close */
    unsigned resolving : 1, connecting : 1, done : 1, timed_out : 1, cancelled : 1, any_allowed : 1,
        warned : 1;
    berth_connect_result_t result;
} outbound_t;

static void try_next(outbound_t *o);

/* ---- the daemon's own listening addresses ---- */

#define LOCAL_ADDRS_TTL_MS 5000 /* how long the host's address list is trusted */

/* An address reduced to what a connect reaches: v4-mapped IPv6 as IPv4, and the
 * unspecified address as loopback (connecting to 0.0.0.0 or :: reaches this host). */
typedef struct norm_addr {
    int family; /* AF_INET or AF_INET6 */
    unsigned char ip[16];
    uint16_t port; /* host order */
} norm_addr_t;

static int normalize(const struct sockaddr *sa, norm_addr_t *n)
{
    memset(n, 0, sizeof *n);
    if (sa->sa_family == AF_INET) {
        const struct sockaddr_in *in = (const void *)sa;
        n->family = AF_INET;
        memcpy(n->ip, &in->sin_addr, 4);
        n->port = ntohs(in->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const void *)sa;
        n->port = ntohs(in6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
            n->family = AF_INET;
            memcpy(n->ip, in6->sin6_addr.s6_addr + 12, 4);
        } else {
            n->family = AF_INET6;
            memcpy(n->ip, &in6->sin6_addr, 16);
        }
    } else {
        return -1;
    }
    static const unsigned char zero[16];
    if (memcmp(n->ip, zero, n->family == AF_INET ? 4 : 16) == 0) {
        if (n->family == AF_INET)
            n->ip[0] = 127, n->ip[3] = 1;
        else
            n->ip[15] = 1;
    }
    return 0;
}

static int same_ip(const norm_addr_t *a, const norm_addr_t *b)
{
    return a->family == b->family && memcmp(a->ip, b->ip, a->family == AF_INET ? 4 : 16) == 0;
}

/* The host's addresses (getifaddrs), cached for a few seconds: the loop is one thread. */
static struct {
    norm_addr_t *a;
    size_t n;
    uint64_t at;
    int valid;
} local_addrs;

static void local_addrs_refresh(uint64_t now)
{
    if (local_addrs.valid && now - local_addrs.at < LOCAL_ADDRS_TTL_MS)
        return;
    struct ifaddrs *ifa = NULL;
    size_t n = 0;
    if (getifaddrs(&ifa) == 0)
        for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
            n++;
    norm_addr_t *a = calloc(n ? n : 1, sizeof *a);
    if (a == NULL) {
        freeifaddrs(ifa);
        return; /* keep what we had; loopback is checked without the list */
    }
    size_t k = 0;
    for (struct ifaddrs *i = ifa; i; i = i->ifa_next)
        if (i->ifa_addr && normalize(i->ifa_addr, &a[k]) == 0)
            k++;
    if (ifa)
        freeifaddrs(ifa);
    free(local_addrs.a);
    local_addrs.a = a;
    local_addrs.n = k;
    local_addrs.at = now;
    local_addrs.valid = 1;
}

static int is_local_ip(const norm_addr_t *d, uint64_t now)
{
    static const unsigned char v6_loopback[16] = {[15] = 1};
    if (d->family == AF_INET && d->ip[0] == 127)
        return 1;
    if (d->family == AF_INET6 && memcmp(d->ip, v6_loopback, 16) == 0)
        return 1;
    local_addrs_refresh(now);
    for (size_t i = 0; i < local_addrs.n; i++)
        if (same_ip(&local_addrs.a[i], d))
            return 1;
    return 0;
}

/* Is `sa` one of the config's TCP listeners (the listener's name, or NULL)? */
static const char *own_listener(worker_t *w, const struct sockaddr *sa)
{
    norm_addr_t d;
    if (w->cfg == NULL || normalize(sa, &d))
        return NULL;
    for (size_t i = 0; i < w->cfg->nlisteners; i++) {
        const config_listener_t *lc = &w->cfg->listeners[i];
        if (lc->protocol != BERTH_PROTO_TCP)
            continue;
        /* Where the master bound it: a port-0 listener's port is the kernel's choice. */
        const struct sockaddr *la =
            (const struct sockaddr *)(w->listen_bound ? &w->listen_bound[i] : &lc->addr);
        norm_addr_t l;
        if (normalize(la, &l) || l.port != d.port)
            continue;
        int wildcard = 0;
        if (la->sa_family == AF_INET)
            wildcard = ((const struct sockaddr_in *)la)->sin_addr.s_addr == htonl(INADDR_ANY);
        else if (la->sa_family == AF_INET6)
            wildcard = IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)la)->sin6_addr);
        if (wildcard ? is_local_ip(&d, uv_now(&w->loop)) : same_ip(&l, &d))
            return lc->name;
    }
    return NULL;
}

static berth_connect_error_t map_error(int uverr)
{
    switch (uverr) {
    case UV_ECONNREFUSED:
        return BERTH_CONNECT_REFUSED;
    case UV_ENETUNREACH:
    case UV_ENETDOWN:
        return BERTH_CONNECT_NET_UNREACH;
    case UV_EHOSTUNREACH:
    case UV_EHOSTDOWN:
        return BERTH_CONNECT_HOST_UNREACH;
    case UV_ETIMEDOUT:
        return BERTH_CONNECT_TIMEOUT;
    case UV_EAI_NONAME:
    case UV_EAI_AGAIN:
    case UV_EAI_FAIL:
    case UV_EAI_NODATA:
    case UV_EAI_ADDRFAMILY:
        return BERTH_CONNECT_NO_NAME;
    default:
        return BERTH_CONNECT_FAILED;
    }
}

static void outbound_free_maybe(outbound_t *o)
{
    if (!o->done || o->pending > 0)
        return;
    berth_conn_t *c = o->c;
    if (o->res && o->res != &o->literal)
        uv_freeaddrinfo(o->res);
    free(o->host);
    free(o);
    conn_unref(c);
}

static void on_timer_closed(uv_handle_t *h)
{
    outbound_t *o = h->data;
    o->pending--;
    outbound_free_maybe(o);
}

/* Tell the plugin, once. */
static void outbound_finish(outbound_t *o, berth_connect_error_t err, int sys)
{
    if (o->done)
        return;
    o->done = 1;
    berth_conn_t *c = o->c;
    conn_set_hooks(c, NULL, NULL);
    uv_timer_stop(&o->timer);
    uv_close((uv_handle_t *)&o->timer, on_timer_closed);
    o->result.error = err;
    o->result.sys_errno = sys;
    if (err != BERTH_CONNECT_OK)
        o->result.peer = NULL;
    conn_plugin_scope_t sc =
        conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_CONNECT);
    o->cb(c, &o->result, o->arg);
    conn_plugin_leave(conn_worker(c), sc);
    outbound_free_maybe(o);
}

/* A request came back to an attempt that has timed out, been cancelled or finished: tell the
 * plugin if nobody has yet, and free what is no longer pending. 1 when it was over. */
static int outbound_over(outbound_t *o)
{
    if (!o->done && !o->cancelled)
        return 0;
    if (!o->done)
        outbound_finish(o, o->timed_out ? BERTH_CONNECT_TIMEOUT : BERTH_CONNECT_FAILED,
                        o->timed_out ? ETIMEDOUT : ECANCELED);
    outbound_free_maybe(o);
    return 1;
}

static void on_connect(berth_conn_t *peer, void *arg, int status)
{
    outbound_t *o = arg;
    assert(peer == o->peer);
    o->connecting = 0;
    o->pending--;
    if (status == 0 && !o->done && !o->cancelled) {
        conn_connected(peer, &o->result.local);
        o->peer = NULL;
        o->result.peer = peer;
        conn_ref(peer); /* the plugin may close it in its callback */
        outbound_finish(o, BERTH_CONNECT_OK, 0);
        conn_connect_done(peer);
        conn_unref(peer);
        return;
    }
    o->peer = NULL;
    conn_abort(peer);
    if (outbound_over(o))
        return;
    o->result.error = map_error(status);
    o->result.sys_errno = -status;
    log_debug("%s %s: connect %s port %u: %s", conn_listener(o->c)->cfg->name, conn_name(o->c),
              o->host, o->port, uv_strerror(status));
    try_next(o);
}

static void try_next(outbound_t *o)
{
    berth_conn_t *c = o->c;
    while (o->cur) {
        struct addrinfo *ai = o->cur;
        o->cur = ai->ai_next;
        if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
            continue;
        memcpy(&o->result.remote, ai->ai_addr, ai->ai_addrlen);
        const char *self = own_listener(conn_worker(c), ai->ai_addr);
        if (self) {
            if (!o->warned) {
                char ip[INET6_ADDRSTRLEN] = "?";
                const void *bytes =
                    ai->ai_family == AF_INET
                        ? (const void *)&((const struct sockaddr_in *)ai->ai_addr)->sin_addr
                        : (const void *)&((const struct sockaddr_in6 *)ai->ai_addr)->sin6_addr;
                inet_ntop(ai->ai_family, bytes, ip, sizeof ip);
                log_warn("%s %s: refused a connect to %s port %u (%s): it is berthd's own "
                         "listener [%s]",
                         conn_listener(c)->cfg->name, conn_name(c), o->host, o->port, ip, self);
                o->warned = 1;
            }
            continue;
        }
        if (o->allow) {
            conn_plugin_scope_t sc =
                conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_CONNECT);
            int refused = o->allow(c, ai->ai_addr, o->arg);
            conn_plugin_leave(conn_worker(c), sc);
            if (refused)
                continue;
        }
        o->any_allowed = 1;
        berth_conn_t *peer = conn_new(conn_worker(c), conn_listener(c), CONN_OUTBOUND, ai->ai_addr,
                                      (socklen_t)ai->ai_addrlen);
        if (peer == NULL) {
            outbound_finish(o, BERTH_CONNECT_FAILED, ENOMEM);
            return;
        }
        int rc = conn_connect(peer, on_connect, o);
        if (rc) {
            o->result.error = map_error(rc);
            o->result.sys_errno = -rc;
            continue;
        }
        o->peer = peer;
        o->connecting = 1;
        o->pending++;
        return;
    }
    if (!o->any_allowed)
        outbound_finish(o, BERTH_CONNECT_DENIED, EACCES);
    else
        outbound_finish(o, o->result.error ? o->result.error : BERTH_CONNECT_FAILED,
                        o->result.sys_errno);
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    outbound_t *o = req->data;
    o->resolving = 0;
    o->pending--;
    o->res = res;
    if (outbound_over(o))
        return;
    if (status < 0) {
        log_debug("%s %s: resolve %s: %s", conn_listener(o->c)->cfg->name, conn_name(o->c), o->host,
                  uv_strerror(status));
        outbound_finish(o, map_error(status), 0);
        return;
    }
    o->cur = res;
    try_next(o);
}

static void on_deadline(uv_timer_t *t)
{
    outbound_t *o = t->data;
    o->timed_out = 1;
    o->cancelled = 1;
    if (o->resolving)
        uv_cancel((uv_req_t *)&o->gai); /* if it already runs, on_resolved still comes */
    if (o->connecting && o->peer)
        conn_abort(o->peer); /* on_connect follows with ECANCELED */
    /* The plugin hears now, not when a slow resolver returns: the deadline is the only
     * connect timer a plugin needs (the late on_resolved or on_connect finds it done). */
    outbound_finish(o, BERTH_CONNECT_TIMEOUT, ETIMEDOUT);
}

/* The plugin's conn is ending: the attempt stops, the plugin hears ECANCELED. */
static void outbound_cancel(berth_conn_t *c, void *arg)
{
    outbound_t *o = arg;
    if (o->done)
        return;
    o->cancelled = 1;
    if (o->resolving)
        uv_cancel((uv_req_t *)&o->gai);
    if (o->connecting && o->peer)
        conn_abort(o->peer);
    if (!o->resolving && !o->connecting)
        outbound_finish(o, BERTH_CONNECT_FAILED, ECANCELED);
}

static const conn_hooks_t outbound_hooks = {.on_close = outbound_cancel};

int outbound_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg)
{
    if (cb == NULL || host == NULL || port == 0)
        return -EINVAL;
    if (conn_hooked(c))
        return -EALREADY;
    if (!conn_is_open(c))
        return -EPIPE;
    outbound_t *o = calloc(1, sizeof *o);
    if (o == NULL || (o->host = strdup(host)) == NULL) {
        free(o);
        return -ENOMEM;
    }
    o->c = c;
    o->port = port;
    o->allow = allow;
    o->cb = cb;
    o->arg = arg;
    o->gai.data = o;

    /* A literal address needs no resolver. */
    struct sockaddr_in *in = (struct sockaddr_in *)&o->literal_addr;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&o->literal_addr;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        o->literal.ai_addrlen = sizeof *in;
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        o->literal.ai_addrlen = sizeof *in6;
    } else {
        struct addrinfo hints;
        memset(&hints, 0, sizeof hints);
        hints.ai_family = AF_UNSPEC;
        hints.ai_socktype = SOCK_STREAM;
        hints.ai_protocol = IPPROTO_TCP;
        char service[8];
        snprintf(service, sizeof service, "%u", port);
        int rc = uv_getaddrinfo(conn_loop(c), &o->gai, on_resolved, host, service, &hints);
        if (rc) { /* no callback will come */
            free(o->host);
            free(o);
            return rc;
        }
        o->resolving = 1;
        o->pending++;
    }
    uv_timer_init(conn_loop(c), &o->timer);
    o->timer.data = o;
    o->pending++; /* the timer's close */
    conn_ref(c);
    conn_set_hooks(c, &outbound_hooks, o);
    if (timeout_ms)
        uv_timer_start(&o->timer, on_deadline, timeout_ms, 0);
    if (o->literal.ai_addrlen) {
        o->literal.ai_family = o->literal_addr.ss_family;
        o->literal.ai_socktype = SOCK_STREAM;
        o->literal.ai_addr = (struct sockaddr *)&o->literal_addr;
        o->res = o->cur = &o->literal;
        try_next(o);
    }
    return 0;
}
