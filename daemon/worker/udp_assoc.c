/*
 * host->dgram_*: UDP sockets bound for a conn, for a plugin that relays datagrams on a
 * connection's behalf (SOCKS5 UDP ASSOCIATE). The sockets of a conn hang off its one hook
 * slot (on_close only: the plugin keeps reading the conn), so they close when the conn
 * begins to end, whatever ends it; each holds a ref on the conn until its uv handle has
 * closed and every name it was resolving has come back, so nothing is freed under libuv.
 *
 * Nothing is ever queued on a socket: a datagram goes out with uv_udp_try_send or is dropped
 * (UDP may drop; a proxy that buffered would be a flood amplifier). What does wait is a
 * datagram to a name, on the resolver (libuv's getaddrinfo on the pool, as connect uses),
 * and at most `max_queued` of those per socket. A lookup holds a pool thread until the
 * resolver answers or gives up, and the pool is the one connect's names and host->work
 * (upload's disk writes) share: so a listener also has at most half of the lookups libuv
 * runs at once (udp_assoc_resolve_cap) resolving for datagrams, whatever its associations
 * and their queues add up to, and all the worker's listeners together no more than that
 * half either; past that a datagram to a name is refused (-EBUSY) at once.
 *
 * What the plugin holds is not the socket's address but a handle: a slot of a per-process
 * table and that slot's generation, packed into the pointer (never 0). A handle whose socket
 * has closed (by dgram_close, or because its conn began to end) is found nowhere, so every
 * later call with it, even after the conn and its memory are gone, gets -EPIPE and touches
 * nothing freed; a slot reused by another socket has a new generation, so an old handle
 * never reaches a socket of someone else (until the slot has been reused 2^32 times,
 * 2^16 on a 32-bit system, where a pointer has half the bits to pack them in).
 */
#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <netdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "worker/udp_assoc.h"

typedef struct udp_set udp_set_t;
typedef struct resolve resolve_t;

/* The real socket; the plugin's berth_dgram_t * is its handle (see above). */
typedef struct dgram dgram_t;

struct dgram {
    udp_set_t *set;
    berth_conn_t *c;
    uv_udp_t h;
    struct sockaddr_storage local;
    socklen_t locallen;
    berth_dgram_cb cb;
    void *arg;
    uint32_t max_queued, queued;
    int pending; /* the handle's close, resolves in flight */
    unsigned closing : 1;
    dgram_t *next;
    resolve_t *resolves;
    berth_dgram_t *handle; /* what the plugin holds; its slot is given back at close */
};

/* A conn's sockets; found by conn in a per-process list (the loop is one thread, and a
 * worker has few associations). */
struct udp_set {
    berth_conn_t *c;
    dgram_t *head;
    udp_set_t *next;
};

struct resolve {
    dgram_t *d;
    berth_listener_t *l; /* counted in its dgram_resolving until it comes back */
    resolve_t *prev, *next;
    uv_getaddrinfo_t gai;
    berth_connect_allow_cb allow;
    void *arg;
    uint16_t port;
    char host[256]; /* for the log */
    size_t len;
    unsigned char data[];
};

static udp_set_t *sets;

/* ---- handles ---- */

#define HANDLE_SLOT_BITS (sizeof(uintptr_t) * 4)
#define HANDLE_SLOT_MASK (((uintptr_t)1 << HANDLE_SLOT_BITS) - 1)

typedef struct handle_slot {
    dgram_t *d;    /* NULL: free */
    uintptr_t gen; /* bumped at every reuse; never 0 */
    uint32_t next_free;
} handle_slot_t;

static handle_slot_t *slots;
static uint32_t nslots, cap, free_head; /* free_head: slot index + 1; 0 none */

static berth_dgram_t *handle_new(dgram_t *d)
{
    uint32_t i;
    if (free_head) {
        i = free_head - 1;
        free_head = slots[i].next_free;
    } else {
        if (nslots >= UINT32_MAX / 2 || nslots >= HANDLE_SLOT_MASK - 1)
            return NULL;
        if (nslots == cap) {
            uint32_t ncap = cap ? cap * 2 : 16;
            handle_slot_t *n = realloc(slots, (size_t)ncap * sizeof *n);
            if (n == NULL)
                return NULL;
            slots = n;
            cap = ncap;
        }
        i = nslots++;
        slots[i].gen = 0;
    }
    slots[i].gen = (slots[i].gen + 1) & (((uintptr_t)-1) >> HANDLE_SLOT_BITS);
    if (slots[i].gen == 0)
        slots[i].gen = 1;
    slots[i].d = d;
    slots[i].next_free = 0;
    return (berth_dgram_t *)((slots[i].gen << HANDLE_SLOT_BITS) | (uintptr_t)(i + 1));
}

/* The open socket behind a handle, or NULL (closed, or never one). */
static dgram_t *handle_get(const berth_dgram_t *h)
{
    uintptr_t v = (uintptr_t)h;
    uintptr_t i = v & HANDLE_SLOT_MASK;
    if (i == 0 || i > nslots)
        return NULL;
    handle_slot_t *s = &slots[i - 1];
    return s->d && s->gen == v >> HANDLE_SLOT_BITS ? s->d : NULL;
}

static void handle_free(const berth_dgram_t *h)
{
    uint32_t i = (uint32_t)((uintptr_t)h & HANDLE_SLOT_MASK) - 1;
    slots[i].d = NULL;
    slots[i].next_free = free_head;
    free_head = i + 1;
}
/* One receive buffer for every socket: a datagram is handed over before the next is read. */
static char recv_buf[65536];

static void dgram_free_maybe(dgram_t *d)
{
    if (!d->closing || d->pending > 0)
        return;
    berth_conn_t *c = d->c;
    free(d);
    conn_unref(c);
}

static void on_udp_closed(uv_handle_t *h)
{
    dgram_t *d = h->data;
    d->pending--;
    dgram_free_maybe(d);
}

static void set_unlink(udp_set_t *s)
{
    for (udp_set_t **p = &sets; *p; p = &(*p)->next)
        if (*p == s) {
            *p = s->next;
            return;
        }
}

static void dgram_close(dgram_t *d)
{
    if (d->closing)
        return;
    d->closing = 1;
    handle_free(d->handle);
    udp_set_t *s = d->set;
    for (dgram_t **p = &s->head; *p; p = &(*p)->next)
        if (*p == d) {
            *p = d->next;
            break;
        }
    if (s->head == NULL) {
        conn_set_hooks(s->c, NULL, NULL);
        set_unlink(s);
        free(s);
    }
    d->set = NULL;
    for (resolve_t *r = d->resolves; r; r = r->next)
        uv_cancel((uv_req_t *)&r->gai); /* one already running still comes back */
    uv_udp_recv_stop(&d->h);
    uv_close((uv_handle_t *)&d->h, on_udp_closed);
}

/* A handle already closed (twice, or after its conn began to end) or NULL: nothing. */
void udp_assoc_close(berth_dgram_t *h)
{
    dgram_t *d = handle_get(h);
    if (d)
        dgram_close(d);
}

/* The conn begins to end: every socket of it closes. */
static void set_on_close(berth_conn_t *c, void *arg)
{
    udp_set_t *s = arg;
    while (s->head) {
        dgram_t *d = s->head;
        int last = d->next == NULL;
        dgram_close(d); /* the last one frees s */
        if (last)
            break;
    }
}

static const conn_hooks_t udp_hooks = {.on_close = set_on_close};

/* v4-mapped IPv6 as IPv4, so a plugin compares addresses as it would on an IPv4 socket. */
static void unmap(const struct sockaddr *sa, struct sockaddr_storage *out)
{
    const struct sockaddr_in6 *in6 = (const void *)sa;
    memset(out, 0, sizeof *out);
    if (sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr)) {
        struct sockaddr_in *in = (struct sockaddr_in *)out;
        in->sin_family = AF_INET;
        in->sin_port = in6->sin6_port;
        memcpy(&in->sin_addr, in6->sin6_addr.s6_addr + 12, 4);
    } else {
        memcpy(out, sa,
               sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)h;
    (void)hint;
    buf->base = recv_buf;
    buf->len = sizeof recv_buf;
}

static void on_recv(uv_udp_t *h, ssize_t nread, const uv_buf_t *buf, const struct sockaddr *addr,
                    unsigned flags)
{
    dgram_t *d = h->data;
    (void)buf;
    if (d->closing || addr == NULL || nread < 0 || (flags & UV_UDP_PARTIAL))
        return; /* nothing, an error (ICMP), or truncated: nothing to hand over */
    if (addr->sa_family != AF_INET && addr->sa_family != AF_INET6)
        return;
    struct sockaddr_storage from;
    unmap(addr, &from);
    berth_conn_t *c = d->c;
    conn_touch(c);
    conn_count_in(c, (size_t)nread);
    conn_ref(c);
    conn_plugin_scope_t sc = conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_OTHER);
    d->cb(c, d->handle, recv_buf, (size_t)nread, (const struct sockaddr *)&from, d->arg);
    conn_plugin_leave(conn_worker(c), sc);
    conn_unref(c);
}

int udp_assoc_open(berth_conn_t *c, const struct sockaddr *addr, uint16_t port_last,
                   uint32_t max_queued, berth_dgram_cb cb, void *arg, berth_dgram_t **out)
{
    if (out)
        *out = NULL;
    if (c == NULL || cb == NULL || out == NULL || addr == NULL ||
        (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return -EINVAL;
    if (!conn_is_open(c))
        return -EPIPE;
    udp_set_t *s = sets;
    while (s && s->c != c)
        s = s->next;
    if (s == NULL && conn_hooked(c))
        return -EALREADY;

    dgram_t *d = calloc(1, sizeof *d);
    if (d == NULL)
        return -ENOMEM;
    d->handle = handle_new(d);
    if (d->handle == NULL) {
        free(d);
        return -ENOMEM;
    }
    int rc = uv_udp_init(conn_loop(c), &d->h);
    if (rc) {
        handle_free(d->handle);
        free(d);
        return rc;
    }
    d->h.data = d;
    d->c = c;
    d->cb = cb;
    d->arg = arg;
    d->max_queued = max_queued;
    d->pending = 1; /* the handle */

    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    memcpy(&ss, addr,
           addr->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    in_port_t *port = ss.ss_family == AF_INET ? &((struct sockaddr_in *)&ss)->sin_port
                                              : &((struct sockaddr_in6 *)&ss)->sin6_port;
    unsigned first = ntohs(*port), last = port_last > first ? port_last : first;
    rc = UV_EADDRINUSE;
    for (unsigned p = first; p <= last && rc == UV_EADDRINUSE; p++) {
        *port = htons((uint16_t)p);
        rc = uv_udp_bind(&d->h, (const struct sockaddr *)&ss, 0);
    }
    int len = sizeof d->local;
    if (rc == 0)
        rc = uv_udp_getsockname(&d->h, (struct sockaddr *)&d->local, &len);
    if (rc == 0)
        rc = uv_udp_recv_start(&d->h, on_alloc, on_recv);
    if (rc) {
        d->closing = 1;
        handle_free(d->handle);
        uv_close((uv_handle_t *)&d->h, on_udp_closed);
        conn_ref(c); /* given back in dgram_free_maybe */
        return rc;
    }
    d->locallen = (socklen_t)len;

    if (s == NULL) {
        s = calloc(1, sizeof *s);
        if (s == NULL) {
            d->closing = 1;
            handle_free(d->handle);
            uv_close((uv_handle_t *)&d->h, on_udp_closed);
            conn_ref(c);
            return -ENOMEM;
        }
        s->c = c;
        s->next = sets;
        sets = s;
        conn_set_hooks(c, &udp_hooks, s);
    }
    d->set = s;
    d->next = s->head;
    s->head = d;
    conn_ref(c);
    *out = d->handle;
    return 0;
}

const struct sockaddr *udp_assoc_local_addr(const berth_dgram_t *h, socklen_t *len)
{
    const dgram_t *d = handle_get(h);
    if (len)
        *len = d ? d->locallen : 0;
    return d ? (const struct sockaddr *)&d->local : NULL;
}

/* To one address, already allowed: 0 or a negative errno. */
static int send_to(dgram_t *d, const struct sockaddr *sa, const void *data, size_t len)
{
    struct sockaddr_storage to;
    memset(&to, 0, sizeof to);
    if (sa->sa_family == AF_INET && d->local.ss_family == AF_INET6) {
        /* A dual-stack socket reaches IPv4 through v4-mapped addresses. */
        const struct sockaddr_in *in = (const void *)sa;
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&to;
        in6->sin6_family = AF_INET6;
        in6->sin6_port = in->sin_port;
        in6->sin6_addr.s6_addr[10] = 0xff;
        in6->sin6_addr.s6_addr[11] = 0xff;
        memcpy(in6->sin6_addr.s6_addr + 12, &in->sin_addr, 4);
    } else if (sa->sa_family == AF_INET6 && d->local.ss_family == AF_INET) {
        return -EAFNOSUPPORT;
    } else {
        memcpy(&to, sa,
               sa->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    }
    uv_buf_t b = uv_buf_init((char *)(uintptr_t)data, (unsigned)len);
    int rc = uv_udp_try_send(&d->h, &b, 1, (const struct sockaddr *)&to);
    if (rc < 0)
        return rc == UV_EAGAIN ? -EAGAIN : rc;
    conn_touch(d->c);
    conn_count_out(d->c, len);
    return 0;
}

/* Lookups for datagrams a listener may have in flight. libuv runs at most (threads + 1) / 2
 * slow I/O requests (getaddrinfo) at once, so that those leave threads for the rest of the
 * work; connect's names count against the same bound. Half of that (and of what the
 * listener may hand the pool as host->work, conn_pool_init), at least 1, leaves lookups
 * for CONNECT while every datagram lookup hangs on a resolver that never answers. */
static unsigned udp_assoc_resolve_cap(worker_t *w)
{
    if (w->work_inflight_max == 0)
        conn_pool_init(w); /* a worker that did not size its pool: a unit test */
    unsigned slow = (w->pool_size + 1) / 2;
    unsigned share = w->work_inflight_max < slow ? w->work_inflight_max : slow;
    return share / 2 ? share / 2 : 1;
}

/* And all the worker's listeners together: half of libuv's slow-request bound, at least 1,
 * or several UDP listeners' caps would add up to every lookup libuv runs. */
static unsigned udp_assoc_resolve_cap_worker(worker_t *w)
{
    unsigned slow = (w->pool_size + 1) / 2;
    return slow / 2 ? slow / 2 : 1;
}

static int allowed(dgram_t *d, berth_connect_allow_cb allow, void *arg, const struct sockaddr *sa)
{
    if (allow == NULL)
        return 1;
    berth_conn_t *c = d->c;
    conn_plugin_scope_t sc = conn_plugin_enter(conn_worker(c), conn_listener(c), STATS_HOOK_OTHER);
    int refused = allow(c, sa, arg);
    conn_plugin_leave(conn_worker(c), sc);
    return refused == 0;
}

static void on_resolved(uv_getaddrinfo_t *req, int status, struct addrinfo *res)
{
    resolve_t *r = req->data;
    dgram_t *d = r->d;
    if (r->prev)
        r->prev->next = r->next;
    else
        d->resolves = r->next;
    if (r->next)
        r->next->prev = r->prev;
    assert(r->l->dgram_resolving > 0 && r->l->w->dgram_resolving > 0);
    r->l->dgram_resolving--;
    r->l->w->dgram_resolving--;
    d->queued--;
    d->pending--;
    if (status == 0 && !d->closing) {
        int sent = 0;
        for (struct addrinfo *ai = res; ai && !sent; ai = ai->ai_next) {
            if (ai->ai_family != AF_INET && ai->ai_family != AF_INET6)
                continue;
            if (ai->ai_family == AF_INET6 && d->local.ss_family == AF_INET)
                continue;
            struct sockaddr_storage ss;
            unmap(ai->ai_addr, &ss);
            if (!allowed(d, r->allow, r->arg, (const struct sockaddr *)&ss))
                continue;
            if (d->closing) /* the plugin closed it from allow */
                break;
            int rc = send_to(d, (const struct sockaddr *)&ss, r->data, r->len);
            if (rc)
                log_debug("%s %s: datagram to a name: %s", conn_listener(d->c)->cfg->name,
                          conn_name(d->c), strerror(-rc));
            sent = 1;
        }
        if (!sent && !d->closing)
            log_debug("%s %s: datagram to %s port %u dropped: no address allowed",
                      conn_listener(d->c)->cfg->name, conn_name(d->c), r->host, r->port);
    } else if (status < 0 && !d->closing) {
        log_debug("%s %s: datagram to %s port %u dropped: %s", conn_listener(d->c)->cfg->name,
                  conn_name(d->c), r->host, r->port, uv_strerror(status));
    }
    if (res)
        uv_freeaddrinfo(res);
    free(r);
    dgram_free_maybe(d);
}

int udp_assoc_send(berth_dgram_t *hd, const char *host, uint16_t port, const void *data, size_t len,
                   berth_connect_allow_cb allow, void *arg)
{
    if (hd == NULL || host == NULL || port == 0 || len > 65507 || (data == NULL && len > 0))
        return -EINVAL;
    dgram_t *d = handle_get(hd);
    if (d == NULL || d->closing || !conn_is_open(d->c))
        return -EPIPE;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
    } else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons(port);
        struct sockaddr_storage u;
        unmap((const struct sockaddr *)&ss, &u);
        ss = u;
    }
    if (ss.ss_family != 0) {
        if (!allowed(d, allow, arg, (const struct sockaddr *)&ss))
            return -EACCES;
        if (d->closing)
            return -EPIPE;
        return send_to(d, (const struct sockaddr *)&ss, data, len);
    }

    if (d->queued >= d->max_queued)
        return -ENOBUFS;
    berth_listener_t *l = conn_listener(d->c);
    worker_t *w = conn_worker(d->c);
    if (l->dgram_resolving >= udp_assoc_resolve_cap(w) ||
        w->dgram_resolving >= udp_assoc_resolve_cap_worker(w))
        return -EBUSY;
    resolve_t *r = malloc(sizeof *r + len);
    if (r == NULL)
        return -ENOMEM;
    memset(r, 0, sizeof *r);
    r->d = d;
    r->l = l;
    r->allow = allow;
    r->arg = arg;
    r->port = port;
    snprintf(r->host, sizeof r->host, "%s", host);
    r->len = len;
    memcpy(r->data, data, len);
    r->gai.data = r;
    struct addrinfo hints;
    memset(&hints, 0, sizeof hints);
    hints.ai_family = d->local.ss_family == AF_INET ? AF_INET : AF_UNSPEC;
    hints.ai_socktype = SOCK_DGRAM;
    hints.ai_protocol = IPPROTO_UDP;
    char service[8];
    snprintf(service, sizeof service, "%u", port);
    int rc = uv_getaddrinfo(conn_loop(d->c), &r->gai, on_resolved, host, service, &hints);
    if (rc) { /* no callback will come */
        free(r);
        return rc;
    }
    r->next = d->resolves;
    if (r->next)
        r->next->prev = r;
    d->resolves = r;
    l->dgram_resolving++;
    w->dgram_resolving++;
    d->queued++;
    d->pending++;
    return 0;
}
