/*
 * berth-testhost: the berth_host_t table in one thread, with no sockets and no clock.
 * See <berth/testhost.h> for what a test can do with it.
 *
 * Nothing here calls back into the plugin from inside a plugin's own call to the host:
 * close() and the end of a relay only mark the conn, and finish() runs when control returns
 * to the test host (settle()), as it does on berthd's loop.
 */
#include <berth/testhost.h>
#include <berth/options.h>
#include <berth/units.h>

#include <arpa/inet.h>
#include <dlfcn.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>

#define TH_WORK_PER_LISTENER 64 /* as berthd: host->work says -EAGAIN beyond it */

/* A growable byte buffer. */
typedef struct buf {
    char *data;
    size_t len, cap;
} buf_t;

struct berth_listener {
    berth_testhost_t *th;
    char *name;
    berth_protocol_t protocol;
    char **options; /* key, value, ..., NULL */
    size_t n_options;
    struct sockaddr_storage local;
    socklen_t local_len;
    void *state;
    void *opts; /* the declared options, parsed (host->listener_options) */
    /* sandbox declarations (host->allow_connect, allow_bind): ports, or BERTH_PORT_ANY */
    int connect_ports[32], bind_ports[32];
    size_t n_connect, n_bind;
    unsigned paths; /* allow_path calls */
    bool opened;
    size_t work_queued;
    struct berth_listener *next;
};

typedef struct reply {
    char *data;
    size_t len;
} reply_t;

struct berth_conn {
    berth_testhost_t *th;
    berth_listener_t *listener;
    bool outbound; /* a peer made by connect_ok: no plugin callbacks of its own */
    bool datagram;
    void *state;
    struct sockaddr_storage peer, local;
    socklen_t peer_len, local_len;
    char peer_name[128];

    buf_t out;        /* what was written to this conn, not yet consumed by the test */
    reply_t *replies; /* datagram replies, one each */
    size_t n_replies;
    buf_t held;    /* bytes fed while paused */
    bool eof_held; /* EOF fed while paused */

    unsigned pauses;
    bool closed, aborted, shut_down, finished, eof_seen, handled;
    bool finishing; /* close requested: finish() at the next settle */
    size_t work_pending;

    berth_conn_t *relay_peer;
    bool relayed, relay_eof_in; /* relay_eof_in: EOF came from this side */
    berth_relay_cb relay_done;
    void *relay_arg;
    uint64_t relay_idle_ms, relay_last;
    berth_relay_stats_t relay_stats;
    bool relay_finished;

    bool has_tls;
    berth_tls_info_t tls;

    /* host->recv_into: the next bytes go to the plugin's buffer */
    void *recv_buf;
    size_t recv_len;
    void (*recv_cb)(berth_conn_t *, void *, size_t);
    void *recv_arg;

    struct berth_conn *next;
};

struct berth_timer {
    berth_conn_t *conn;
    uint64_t due, seq;
    berth_timer_cb cb;
    void *arg;
    struct berth_timer *next;
};

/* A datagram socket bound for a conn (host->dgram_open): what the plugin sent on it, kept
 * for the test; what the test injects reaches the plugin's callback. */
typedef struct sent_dgram {
    char host[256];
    uint16_t port;
    char *data;
    size_t len;
} sent_dgram_t;

struct berth_dgram {
    berth_conn_t *conn;
    struct sockaddr_storage local;
    socklen_t local_len;
    berth_dgram_cb cb;
    void *arg;
    uint32_t max_queued;
    bool closed; /* by dgram_close or with its conn; kept allocated until free */
    sent_dgram_t *sent;
    size_t n_sent;
    struct berth_dgram *next;
};

typedef struct work_item {
    berth_conn_t *conn;
    berth_work_fn work;
    berth_done_cb done;
    void *arg;
    struct work_item *next;
} work_item_t;

struct berth_metric {
    berth_listener_t *listener;
    char *name;
    berth_metric_kind_t kind;
    int64_t value;
    struct berth_metric *next;
};

typedef struct connect_req {
    berth_testhost_connect_t pub;
    uint64_t deadline; /* listen_once: when it times out (0: never) */
    berth_connect_allow_cb allow;
    berth_connect_cb cb;
    void *arg;
} connect_req_t;

struct berth_testhost {
    berth_host_t host;
    const berth_handler_t *plugin;
    void *dl; /* from berth_testhost_open */
    bool loaded, started;
    berth_listener_t *listeners;
    berth_conn_t *conns; /* newest first; kept until free */
    struct berth_timer *timers;
    uint64_t now, timer_seq;
    work_item_t *work_head, *work_tail;
    size_t n_work;
    connect_req_t *connects;
    size_t n_connects, cap_connects;
    struct berth_metric *metrics;
    struct berth_dgram *dgrams; /* every one opened, newest first; kept until free */
    uint16_t next_port;         /* for port-0 binds: 50000, 50001, ... */
    buf_t log;
    bool verbose;
    int depth; /* > 0 while inside a test-host entry point that calls the plugin */
};

/* The one test host a plugin's calls belong to. A plugin keeps the table load() gave it, and
 * every call names a conn or listener that points back at its host, except log(NULL, ...)
 * and the parse helpers, which need none. */
static berth_testhost_t *last_host;

/* ---- small helpers ------------------------------------------------------------------------ */

/* The plugin descriptor has member `m` (it was built against a header that had it). */
#define PLUGIN_HAS(p, m)                                                                           \
    ((p)->size >= offsetof(berth_handler_t, m) + sizeof(((berth_handler_t *)0)->m))
#define HOOK(th, m) (PLUGIN_HAS((th)->plugin, m) ? (th)->plugin->m : NULL)

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size ? size : 1);
    if (!p) {
        fputs("berth-testhost: out of memory\n", stderr);
        abort();
    }
    return p;
}

static char *xstrdup(const char *s)
{
    size_t n = strlen(s) + 1;
    char *p = xcalloc(1, n);
    memcpy(p, s, n);
    return p;
}

static void buf_append(buf_t *b, const void *data, size_t len)
{
    if (len == 0)
        return;
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *p = realloc(b->data, cap);
        if (!p) {
            fputs("berth-testhost: out of memory\n", stderr);
            abort();
        }
        b->data = p;
        b->cap = cap;
    }
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

static void buf_free(buf_t *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

/* "127.0.0.1:5000", "[::1]:5000", "unix:" or "unix:/path" into *ss. 0 or -EINVAL. */
static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (strncmp(text, "unix:", 5) == 0) {
        struct sockaddr_un *un = (struct sockaddr_un *)ss;
        size_t n = strlen(text + 5);
        if (n >= sizeof un->sun_path)
            return -EINVAL;
        un->sun_family = AF_UNIX;
        memcpy(un->sun_path, text + 5, n);
        *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + (n ? 1 : 0));
        return 0;
    }
    char host[64];
    const char *colon;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':' || (size_t)(close - text - 1) >= sizeof host)
            return -EINVAL;
        memcpy(host, text + 1, (size_t)(close - text - 1));
        host[close - text - 1] = '\0';
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (!colon || (size_t)(colon - text) >= sizeof host)
            return -EINVAL;
        memcpy(host, text, (size_t)(colon - text));
        host[colon - text] = '\0';
    }
    char *end;
    errno = 0;
    unsigned long port = strtoul(colon + 1, &end, 10);
    if (errno || *end || end == colon + 1 || port > 65535)
        return -EINVAL;
    struct sockaddr_in *in = (struct sockaddr_in *)ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1) {
        in->sin_family = AF_INET;
        in->sin_port = htons((uint16_t)port);
        *len = sizeof *in;
        return 0;
    }
    if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1) {
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons((uint16_t)port);
        *len = sizeof *in6;
        return 0;
    }
    return -EINVAL;
}

static void parse_addr_or_die(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    if (parse_addr(text, ss, len) < 0) {
        fprintf(stderr,
                "berth-testhost: not an address: \"%s\" (want 127.0.0.1:5000, "
                "[::1]:5000 or unix:/path)\n",
                text);
        abort();
    }
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char a[INET6_ADDRSTRLEN] = "?";
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &in->sin_addr, a, sizeof a);
        snprintf(out, outlen, "%s:%u", a, ntohs(in->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &in6->sin6_addr, a, sizeof a);
        snprintf(out, outlen, "[%s]:%u", a, ntohs(in6->sin6_port));
    } else {
        snprintf(out, outlen, "unix:%s", ((const struct sockaddr_un *)ss)->sun_path);
    }
}

BERTH_PRINTF(4, 0)
static void th_log(berth_testhost_t *th, berth_log_level_t level, const char *prefix,
                   const char *fmt, va_list ap)
{
    static const char *const names[] = {"ERROR", "WARN", "INFO", "DEBUG"};
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    char line[2300];
    int n = snprintf(line, sizeof line, "%s %s%s\n", (unsigned)level < 4 ? names[level] : "LOG",
                     prefix, msg);
    if (n < 0)
        return;
    size_t len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    if (th) {
        buf_append(&th->log, line, len);
        if (th->verbose)
            fwrite(line, 1, len, stderr);
    } else {
        fwrite(line, 1, len, stderr);
    }
}

/* ---- conn lifecycle ----------------------------------------------------------------------- */

static void timers_drop_conn(berth_testhost_t *th, berth_conn_t *c)
{
    struct berth_timer **pp = &th->timers;
    while (*pp) {
        struct berth_timer *t = *pp;
        if (t->conn == c) {
            *pp = t->next;
            free(t);
        } else {
            pp = &t->next;
        }
    }
}

static size_t conn_timers(const berth_testhost_t *th, const berth_conn_t *c)
{
    size_t n = 0;
    for (const struct berth_timer *t = th->timers; t; t = t->next)
        n += t->conn == c;
    return n;
}

/* The datagram sockets of `c` close as it begins to end, as berthd's do: no callback after,
 * and every later dgram_* call with their handles is refused (the handles stay allocated
 * until berth_testhost_free, so a plugin that keeps one touches nothing freed). */
static void dgrams_close_conn(berth_conn_t *c)
{
    for (berth_dgram_t *d = c->th->dgrams; d; d = d->next)
        if (d->conn == c)
            d->closed = true;
}

/* Ask to end `c`: finish() runs at the next settle once its work is done. */
static void conn_end(berth_conn_t *c)
{
    c->recv_cb = NULL; /* an armed receive is dropped without its callback */
    if (c->finished)
        return;
    c->closed = true;
    c->finishing = true;
    dgrams_close_conn(c);
}

static void relay_finish(berth_conn_t *c, int error);

/* Runs the finish() every ended conn is owed, and whatever that ends in turn. */
static void settle(berth_testhost_t *th)
{
    if (th->depth > 0)
        return;
    th->depth++;
    bool again = true;
    while (again) {
        again = false;
        for (berth_conn_t *c = th->conns; c; c = c->next) {
            if (c->finished)
                continue;
            /* A datagram conn ends once handle() has returned and nothing is pending. */
            if (c->datagram && c->handled && c->work_pending == 0 && conn_timers(th, c) == 0)
                c->finishing = true;
            if (!c->finishing || c->work_pending > 0)
                continue;
            /* Connects still unanswered fail with ECANCELED first, as berthd does. */
            for (size_t i = 0; i < th->n_connects; i++) {
                connect_req_t *r = &th->connects[i];
                if (r->pub.conn != c || r->pub.answered)
                    continue;
                r->pub.answered = true;
                berth_connect_result_t res = {.error = BERTH_CONNECT_FAILED,
                                              .sys_errno = ECANCELED};
                r->cb(c, &res, r->arg);
            }
            if (c->relay_peer && !c->relay_finished)
                relay_finish(c, -ECANCELED);
            dgrams_close_conn(c); /* closed with their conn, no callback after */
            timers_drop_conn(th, c);
            c->finished = true;
            c->closed = true;
            if (!c->outbound) {
                void (*fin)(berth_conn_t *) = HOOK(th, finish);
                if (fin)
                    fin(c);
            }
            free(c->state);
            c->state = NULL;
            buf_free(&c->held);
            again = true;
        }
    }
    th->depth--;
}

static berth_conn_t *conn_new(berth_testhost_t *th, berth_listener_t *l, const char *peer)
{
    berth_conn_t *c = xcalloc(1, sizeof *c);
    c->th = th;
    c->listener = l;
    if (peer) {
        parse_addr_or_die(peer, &c->peer, &c->peer_len);
        format_addr(&c->peer, c->peer_name, sizeof c->peer_name);
    }
    if (l) {
        c->local = l->local;
        c->local_len = l->local_len;
    }
    c->next = th->conns;
    th->conns = c;
    return c;
}

/* ---- the host table ----------------------------------------------------------------------- */

BERTH_PRINTF(3, 4)
static void h_log(berth_conn_t *conn, berth_log_level_t level, const char *fmt, ...)
{
    berth_testhost_t *th = conn ? conn->th : last_host;
    char prefix[300] = "";
    if (conn)
        snprintf(prefix, sizeof prefix, "%s %s: ", conn->listener ? conn->listener->name : "-",
                 conn->peer_name);
    va_list ap;
    va_start(ap, fmt);
    th_log(th, level, prefix, fmt, ap);
    va_end(ap);
}

BERTH_PRINTF(3, 4)
static void h_log_listener(berth_listener_t *l, berth_log_level_t level, const char *fmt, ...)
{
    berth_testhost_t *th = l ? l->th : last_host;
    char prefix[200] = "";
    if (l)
        snprintf(prefix, sizeof prefix, "%s: ", l->name);
    va_list ap;
    va_start(ap, fmt);
    th_log(th, level, prefix, fmt, ap);
    va_end(ap);
}

/* Every level is kept: a test reads the whole log (berth_testhost_log). */
static int h_log_enabled(berth_log_level_t level)
{
    (void)level;
    return 1;
}

/* Fields as " key=value" after the message, as berthd's text log writes them. */
BERTH_PRINTF(5, 6)
static void h_log_fields(berth_conn_t *conn, berth_log_level_t level,
                         const struct berth_log_field *fields, size_t n, const char *fmt, ...)
{
    char msg[1024], line[2048];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    size_t off = (size_t)snprintf(line, sizeof line, "%s", msg);
    for (size_t i = 0; i < n && i < BERTH_LOG_FIELDS_MAX && off < sizeof line; i++) {
        if (fields[i].str)
            off += (size_t)snprintf(line + off, sizeof line - off, " %s=%s", fields[i].key,
                                    fields[i].str);
        else
            off += (size_t)snprintf(line + off, sizeof line - off, " %s=%lld", fields[i].key,
                                    (long long)fields[i].num);
    }
    h_log(conn, level, "%s", line);
}

static int h_write(berth_conn_t *c, const void *data, size_t len)
{
    if (c->finished || c->closed || c->aborted || (c->shut_down && !c->datagram))
        return -EPIPE;
    if (c->datagram) {
        reply_t *r = realloc(c->replies, (c->n_replies + 1) * sizeof *r);
        if (!r)
            return -ENOMEM;
        c->replies = r;
        r[c->n_replies].data = xcalloc(1, len);
        memcpy(r[c->n_replies].data, data, len);
        r[c->n_replies].len = len;
        c->n_replies++;
    }
    buf_append(&c->out, data, len);
    return 0;
}

static void h_close(berth_conn_t *c)
{
    conn_end(c);
}

static void h_abort(berth_conn_t *c)
{
    if (!c->finished)
        c->aborted = true;
    conn_end(c);
}

static int h_shutdown(berth_conn_t *c)
{
    if (c->finished || c->closed || c->aborted)
        return -EPIPE;
    c->shut_down = true;
    return 0;
}

static void deliver(berth_conn_t *c, const void *data, size_t len);

static void h_pause(berth_conn_t *c)
{
    c->pauses++;
    c->recv_cb = NULL;
}

static int h_recv_into(berth_conn_t *c, void *buf, size_t len,
                       void (*cb)(berth_conn_t *, void *, size_t), void *arg)
{
    if (!buf || !cb || len == 0)
        return -EINVAL;
    if (c->datagram || c->relayed || c->outbound || c->has_tls)
        return -ENOTSUP;
    if (c->finished || c->closed || c->finishing || c->eof_seen || c->eof_held)
        return -EPIPE;
    if (c->recv_cb)
        return -EBUSY;
    if (c->pauses > 0)
        return -EAGAIN;
    c->recv_buf = buf;
    c->recv_len = len;
    c->recv_cb = cb;
    c->recv_arg = arg;
    return 0;
}

static void h_resume(berth_conn_t *c)
{
    if (c->pauses == 0) {
        h_log(c, BERTH_LOG_ERROR, "berth-testhost: resume() without a pause()");
        abort();
    }
    c->pauses--;
    /* Held bytes are delivered when control is back with the test host, not inside the
     * plugin's own call: see berth_testhost_feed and friends (flush_held). */
}

static size_t h_write_queue_size(const berth_conn_t *c)
{
    (void)c;
    return 0;
}

static void *h_state(berth_conn_t *c)
{
    return c->state;
}

static void *h_listener_state(berth_conn_t *c)
{
    return c->listener ? c->listener->state : NULL;
}

static berth_listener_t *h_listener(berth_conn_t *c)
{
    return c->listener;
}

static const struct sockaddr *h_peer_addr(const berth_conn_t *c, socklen_t *len)
{
    if (len)
        *len = c->peer_len;
    return (const struct sockaddr *)&c->peer;
}

static const struct sockaddr *h_local_addr(const berth_conn_t *c, socklen_t *len)
{
    if (len)
        *len = c->local_len;
    return (const struct sockaddr *)&c->local;
}

static const char *h_peer_name(const berth_conn_t *c)
{
    return c->peer_name;
}

static const char *h_listener_name(const berth_listener_t *l)
{
    return l->name;
}

static berth_protocol_t h_listener_protocol(const berth_listener_t *l)
{
    return l->protocol;
}

static const char *h_option(const berth_listener_t *l, const char *key)
{
    const char *v = NULL;
    for (size_t i = 0; i + 1 < l->n_options * 2 && l->options[i]; i += 2)
        if (strcmp(l->options[i], key) == 0)
            v = l->options[i + 1]; /* the last one wins, as in the config */
    return v;
}

static berth_timer_t *h_timer_start(berth_conn_t *c, uint64_t ms, berth_timer_cb cb, void *arg)
{
    if (c->finished || c->closed || c->finishing)
        return NULL; /* as berthd: no timer for a conn that is ending */
    berth_testhost_t *th = c->th;
    struct berth_timer *t = xcalloc(1, sizeof *t);
    t->conn = c;
    t->due = th->now + ms;
    t->seq = th->timer_seq++;
    t->cb = cb;
    t->arg = arg;
    t->next = th->timers;
    th->timers = t;
    return t;
}

static int h_timer_restart(berth_timer_t *timer, uint64_t ms)
{
    if (timer == NULL)
        return -EINVAL;
    berth_testhost_t *th = timer->conn->th;
    for (struct berth_timer *t = th->timers; t; t = t->next) {
        if (t == timer) {
            t->due = th->now + ms;
            t->seq = th->timer_seq++;
            return 0;
        }
    }
    fputs("berth-testhost: timer_restart() on a timer that already fired or was stopped\n", stderr);
    abort();
}

/* The sandbox's declarations: checked as berthd checks them and recorded, so that
 * connect_ok can refuse a connect the plugin never declared, as a confined worker would. */
static int allow_port(berth_listener_t *l, int port, int *ports, size_t *n)
{
    if (port != BERTH_PORT_ANY && (port < 0 || port > 65535))
        return -EINVAL;
    if (l->th->started)
        return -EBUSY; /* confined once it serves */
    if (*n == 32)
        return -ENOMEM;
    ports[(*n)++] = port;
    return 0;
}

static int h_allow_connect(berth_listener_t *l, int port)
{
    return allow_port(l, port, l->connect_ports, &l->n_connect);
}

static int h_allow_bind(berth_listener_t *l, int port)
{
    return allow_port(l, port, l->bind_ports, &l->n_bind);
}

static int h_allow_path(berth_listener_t *l, const char *path, unsigned access)
{
    struct stat st;
    if (!path || path[0] != '/' || access == 0 ||
        (access & ~(BERTH_ACCESS_READ | BERTH_ACCESS_WRITE)))
        return -EINVAL;
    if (l->th->started)
        return -EBUSY;
    if (stat(path, &st) < 0)
        return -ENOENT;
    l->paths++;
    return 0;
}

static bool connect_declared(const berth_listener_t *l, uint16_t port)
{
    for (size_t i = 0; l && i < l->n_connect; i++)
        if (l->connect_ports[i] == BERTH_PORT_ANY || l->connect_ports[i] == port)
            return true;
    return false;
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
    if (ss->ss_family == AF_INET)
        ((struct sockaddr_in *)ss)->sin_port = htons(port);
    else if (ss->ss_family == AF_INET6)
        ((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

static uint16_t get_port(const struct sockaddr_storage *ss)
{
    if (ss->ss_family == AF_INET)
        return ntohs(((const struct sockaddr_in *)ss)->sin_port);
    if (ss->ss_family == AF_INET6)
        return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
    return 0;
}

static socklen_t sa_len(const struct sockaddr *sa)
{
    return sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static int h_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg);

static bool bind_declared(const berth_listener_t *l, uint16_t port)
{
    for (size_t i = 0; l && i < l->n_bind; i++)
        if (l->bind_ports[i] == BERTH_PORT_ANY || l->bind_ports[i] == port)
            return true;
    return false;
}

/* Has `c` a connect or a listen_once not answered yet? (Either fills berthd's one slot.) */
static bool conn_busy(const berth_conn_t *c)
{
    const berth_testhost_t *th = c->th;
    for (size_t i = 0; i < th->n_connects; i++)
        if (th->connects[i].pub.conn == c && !th->connects[i].pub.answered)
            return true;
    return c->relayed;
}

/* Is `c` open, as berthd's conn_is_open: not begun to end (close, abort, EOF with no eof(),
 * a reset, the end of a datagram's handle) and not finished? */
static bool conn_open(const berth_conn_t *c)
{
    return !c->finished && !c->closed && !c->finishing;
}

/* The same refusals as berthd's (daemon/worker/udp_assoc.c), in the same order: *out NULL on
 * any error, -EINVAL for a NULL conn, cb, out or addr, -EPIPE once the conn began to end. */
static int h_dgram_open(berth_conn_t *c, const struct sockaddr *addr, uint16_t port_last,
                        uint32_t max_queued, berth_dgram_cb cb, void *arg, berth_dgram_t **out)
{
    (void)port_last; /* the test host never finds a port taken: the range's first */
    if (out)
        *out = NULL;
    if (!c || !addr || !cb || !out || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return -EINVAL;
    if (!conn_open(c))
        return -EPIPE;
    if (conn_busy(c))
        return -EALREADY;
    berth_testhost_t *th = c->th;
    berth_dgram_t *d = xcalloc(1, sizeof *d);
    d->conn = c;
    memcpy(&d->local, addr, sa_len(addr));
    d->local_len = sa_len(addr);
    if (get_port(&d->local) == 0)
        set_port(&d->local, th->next_port++);
    d->cb = cb;
    d->arg = arg;
    d->max_queued = max_queued;
    d->next = th->dgrams;
    th->dgrams = d;
    *out = d;
    return 0;
}

/* A socket closed (dgram_close, or its conn began to end), or NULL: every call refuses. */
static bool dgram_dead(const berth_dgram_t *d)
{
    return !d || d->closed || !conn_open(d->conn);
}

static const struct sockaddr *h_dgram_local_addr(const berth_dgram_t *d, socklen_t *len)
{
    bool dead = dgram_dead(d);
    if (len)
        *len = dead ? 0 : d->local_len;
    return dead ? NULL : (const struct sockaddr *)&d->local;
}

/* An IPv4-mapped IPv6 address as IPv4, as berthd hands `allow` and the callback. */
static void unmap_v4(struct sockaddr_storage *ss)
{
    const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)ss;
    if (ss->ss_family != AF_INET6 || !IN6_IS_ADDR_V4MAPPED(&in6->sin6_addr))
        return;
    struct sockaddr_in in;
    memset(&in, 0, sizeof in);
    in.sin_family = AF_INET;
    in.sin_port = in6->sin6_port;
    memcpy(&in.sin_addr, in6->sin6_addr.s6_addr + 12, 4);
    memset(ss, 0, sizeof *ss);
    memcpy(ss, &in, sizeof in);
}

/* berthd's answers (daemon/worker/udp_assoc.c), in its order: -EINVAL, -EPIPE, then a literal
 * address is offered to `allow` (-EACCES; -EPIPE if allow closed the socket or ended the
 * conn) and must suit the socket's family (-EAFNOSUPPORT: IPv6 on an IPv4 socket). A name
 * is recorded as it is (the test host resolves nothing: a test reads the name back with
 * berth_testhost_dgram_sent), so nothing waits for the resolver: -ENOBUFS only with a
 * max_queued of 0, which berthd refuses every name with, and never berthd's -EBUSY (its cap
 * on lookups in flight) or -EAGAIN (a full socket buffer). */
static int h_dgram_send(berth_dgram_t *d, const char *host, uint16_t port, const void *data,
                        size_t len, berth_connect_allow_cb allow, void *arg)
{
    if (!d || !host || port == 0 || len > 65507 || (!data && len > 0))
        return -EINVAL;
    if (dgram_dead(d))
        return -EPIPE;
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    struct sockaddr_in *in = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, host, &in->sin_addr) == 1)
        in->sin_family = AF_INET;
    else if (inet_pton(AF_INET6, host, &in6->sin6_addr) == 1)
        in6->sin6_family = AF_INET6;
    if (ss.ss_family != 0) {
        set_port(&ss, port);
        unmap_v4(&ss);
        if (allow && allow(d->conn, (const struct sockaddr *)&ss, arg) != 0)
            return -EACCES;
        if (dgram_dead(d))
            return -EPIPE;
        if (ss.ss_family == AF_INET6 && d->local.ss_family == AF_INET)
            return -EAFNOSUPPORT;
    } else if (d->max_queued == 0) {
        return -ENOBUFS;
    }
    sent_dgram_t *p = realloc(d->sent, (d->n_sent + 1) * sizeof *p);
    if (!p)
        return -ENOMEM;
    d->sent = p;
    sent_dgram_t *e = &d->sent[d->n_sent++];
    memset(e, 0, sizeof *e);
    snprintf(e->host, sizeof e->host, "%s", host);
    e->port = port;
    e->data = xcalloc(1, len);
    if (len > 0)
        memcpy(e->data, data, len);
    e->len = len;
    return 0;
}

/* NULL, or a socket closed already (twice, or after its conn closed it): nothing. */
static void h_dgram_close(berth_dgram_t *d)
{
    if (d)
        d->closed = true;
}

static int h_listen_once(berth_conn_t *c, const struct sockaddr *addr, uint64_t timeout_ms,
                         berth_connect_allow_cb allow, berth_connect_cb cb, void *arg,
                         struct sockaddr_storage *bound)
{
    if (!addr || !cb || !bound || (addr->sa_family != AF_INET && addr->sa_family != AF_INET6))
        return -EINVAL;
    if (c->finished || c->closed)
        return -EPIPE;
    if (conn_busy(c))
        return -EALREADY;
    berth_testhost_t *th = c->th;
    uint16_t want = ntohs(addr->sa_family == AF_INET6
                              ? ((const struct sockaddr_in6 *)(const void *)addr)->sin6_port
                              : ((const struct sockaddr_in *)(const void *)addr)->sin_port);
    if (!bind_declared(c->listener, want)) {
        /* berthd's worker sandbox refuses a bind its listener never declared. */
        h_log(c, BERTH_LOG_WARN,
              "berth-testhost: listen_once on port %u refused: the listener declared no "
              "allow_bind for it (berthd's sandbox would refuse it too)",
              want);
        return -EACCES;
    }
    memset(bound, 0, sizeof *bound);
    memcpy(bound, addr, sa_len(addr));
    if (get_port(bound) == 0)
        set_port(bound, th->next_port++);
    char text[INET6_ADDRSTRLEN] = "";
    inet_ntop(bound->ss_family,
              bound->ss_family == AF_INET6
                  ? (const void *)&((struct sockaddr_in6 *)bound)->sin6_addr
                  : (const void *)&((struct sockaddr_in *)bound)->sin_addr,
              text, sizeof text);
    int rc = h_connect(c, text, get_port(bound), timeout_ms, allow, cb, arg);
    if (rc < 0)
        return rc;
    connect_req_t *r = &th->connects[th->n_connects - 1];
    r->pub.listen = true;
    r->deadline = timeout_ms ? th->now + timeout_ms : 0;
    return 0;
}

static const void *h_listener_options(const berth_listener_t *l)
{
    return l->opts;
}

static void h_timer_stop(berth_timer_t *timer)
{
    berth_testhost_t *th = timer->conn->th;
    for (struct berth_timer **pp = &th->timers; *pp; pp = &(*pp)->next) {
        if (*pp == timer) {
            *pp = timer->next;
            free(timer);
            return;
        }
    }
    /* Not among the live timers: stopped twice, or after it fired. berthd's contract says
     * MUST NOT; a test should hear of it. */
    fputs("berth-testhost: timer_stop() on a timer that already fired or was stopped\n", stderr);
    abort();
}

static int h_work(berth_conn_t *c, berth_work_fn work, berth_done_cb done, void *arg)
{
    if (!work || !done || c->finished)
        return -EINVAL;
    if (c->listener && c->listener->work_queued >= TH_WORK_PER_LISTENER)
        return -EAGAIN;
    berth_testhost_t *th = c->th;
    work_item_t *w = xcalloc(1, sizeof *w);
    w->conn = c;
    w->work = work;
    w->done = done;
    w->arg = arg;
    if (th->work_tail)
        th->work_tail->next = w;
    else
        th->work_head = w;
    th->work_tail = w;
    th->n_work++;
    c->work_pending++;
    if (c->listener)
        c->listener->work_queued++;
    return 0;
}

static int h_connect(berth_conn_t *c, const char *host, uint16_t port, uint64_t timeout_ms,
                     berth_connect_allow_cb allow, berth_connect_cb cb, void *arg)
{
    if (!host || !cb || c->finished || c->closed)
        return -EINVAL;
    if (strlen(host) >= sizeof((berth_testhost_connect_t *)0)->host)
        return -ENAMETOOLONG;
    berth_testhost_t *th = c->th;
    if (th->n_connects == th->cap_connects) {
        size_t cap = th->cap_connects ? th->cap_connects * 2 : 8;
        connect_req_t *p = realloc(th->connects, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        th->connects = p;
        th->cap_connects = cap;
    }
    connect_req_t *r = &th->connects[th->n_connects++];
    memset(r, 0, sizeof *r);
    r->pub.conn = c;
    snprintf(r->pub.host, sizeof r->pub.host, "%s", host);
    r->pub.port = port;
    r->pub.timeout_ms = timeout_ms;
    r->allow = allow;
    r->cb = cb;
    r->arg = arg;
    return 0;
}

static int h_relay(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                   void *arg)
{
    if (!peer || peer == c || c->relay_peer || peer->relay_peer || c->finished || peer->finished ||
        !peer->outbound)
        return -EINVAL;
    c->relay_peer = peer;
    peer->relay_peer = c;
    c->relayed = peer->relayed = true;
    c->relay_done = done;
    c->relay_arg = arg;
    c->relay_idle_ms = peer->relay_idle_ms = idle_ms;
    c->relay_last = peer->relay_last = c->th->now;
    return 0;
}

static int h_tls_info(const berth_conn_t *c, berth_tls_info_t *info)
{
    if (!c->has_tls)
        return -ENOTSUP;
    *info = c->tls;
    return 0;
}

static const struct sockaddr *h_no_addr(const berth_conn_t *c, socklen_t *len)
{
    (void)c;
    if (len)
        *len = 0;
    return NULL;
}

static int h_listener_tls_verify(const berth_listener_t *l)
{
    (void)l;
    return -ENOTSUP;
}

/* The daemon's rules for a name (see handler.h): "<plugin>_" first, "_total" at the end of
 * a counter's (before an optional label set). A refusal is logged and gives NULL, as there. */
static berth_metric_t *h_metric(berth_listener_t *l, const char *name, const char *help,
                                berth_metric_kind_t kind)
{
    berth_testhost_t *th = l->th;
    const char *plugin = th->plugin->name;
    size_t plen = strlen(plugin), base = strcspn(name, "{");
    (void)help;
    if (strncmp(name, plugin, plen) != 0 || name[plen] != '_' ||
        (kind != BERTH_METRIC_COUNTER && kind != BERTH_METRIC_GAUGE) ||
        (kind == BERTH_METRIC_COUNTER &&
         (base < 6 || strncmp(name + base - 6, "_total", 6) != 0))) {
        h_log_listener(l, BERTH_LOG_WARN, "metric %s refused", name);
        return NULL;
    }
    for (struct berth_metric *m = th->metrics; m; m = m->next)
        if (m->listener == l && strcmp(m->name, name) == 0)
            return m;
    struct berth_metric *m = xcalloc(1, sizeof *m);
    m->listener = l;
    m->name = xstrdup(name);
    m->kind = kind;
    m->next = th->metrics;
    th->metrics = m;
    return m;
}

static void h_metric_add(berth_metric_t *m, int64_t delta)
{
    if (m && !(m->kind == BERTH_METRIC_COUNTER && delta < 0))
        m->value += delta;
}

static void h_metric_set(berth_metric_t *m, int64_t value)
{
    if (m && m->kind == BERTH_METRIC_GAUGE)
        m->value = value;
}

/* ---- relaying ----------------------------------------------------------------------------- */

/* `c` is the client side (the conn relay() was called with). */
static berth_conn_t *relay_client(berth_conn_t *c)
{
    return c->outbound ? c->relay_peer : c;
}

static void relay_finish(berth_conn_t *c, int error)
{
    berth_conn_t *client = relay_client(c);
    berth_conn_t *peer = client->relay_peer;
    if (client->relay_finished)
        return;
    client->relay_finished = peer->relay_finished = true;
    client->relay_stats.error = error;
    if (client->relay_done)
        client->relay_done(client, &client->relay_stats, client->relay_arg);
    conn_end(client);
    conn_end(peer);
}

/* Bytes that arrived on `from` while it is relayed go out on its partner. */
static void relay_bytes(berth_conn_t *from, const void *data, size_t len)
{
    berth_conn_t *to = from->relay_peer;
    berth_conn_t *client = relay_client(from);
    buf_append(&to->out, data, len);
    if (from == client)
        client->relay_stats.bytes_up += len;
    else
        client->relay_stats.bytes_down += len;
    from->relay_last = to->relay_last = from->th->now;
}

static void relay_eof(berth_conn_t *from)
{
    berth_conn_t *to = from->relay_peer;
    from->relay_eof_in = true;
    to->shut_down = true;
    if (to->relay_eof_in)
        relay_finish(from, 0);
}

/* ---- delivering input --------------------------------------------------------------------- */

static void deliver(berth_conn_t *c, const void *data, size_t len)
{
    if (c->relayed) {
        relay_bytes(c, data, len);
        return;
    }
    if (c->outbound) {
        /* A peer not (yet) relayed: berthd does not read it, so the bytes wait. */
        buf_append(&c->held, data, len);
        return;
    }
    /* An armed receive takes the first bytes (up to its length), as the next read would;
     * what is left goes to the next receive or to handle(). */
    const char *p = data;
    bool received = false;
    while (len > 0 && c->recv_cb && !c->finished && !c->closed) {
        size_t n = len < c->recv_len ? len : c->recv_len;
        void (*cb)(berth_conn_t *, void *, size_t) = c->recv_cb;
        memcpy(c->recv_buf, p, n);
        c->recv_cb = NULL;
        cb(c, c->recv_arg, n);
        p += n;
        len -= n;
        received = true;
        if (len > 0 && c->pauses > 0) {
            buf_append(&c->held, p, len); /* paused in the callback: the rest waits */
            return;
        }
    }
    if ((received && len == 0) || c->finished || c->closed)
        return;
    void (*handle)(berth_conn_t *, const void *, size_t) = HOOK(c->th, handle);
    if (handle)
        handle(c, p, len);
}

static void deliver_eof(berth_conn_t *c)
{
    if (c->eof_seen)
        return;
    c->eof_seen = true;
    c->recv_cb = NULL;
    if (c->relayed) {
        relay_eof(c);
        return;
    }
    if (c->outbound)
        return;
    void (*eof)(berth_conn_t *) = HOOK(c->th, eof);
    if (eof)
        eof(c);
    else
        conn_end(c);
}

/* Hands held input to conns that are no longer paused (or that a relay now reads). */
static void flush_held(berth_testhost_t *th)
{
    bool again = true;
    while (again) {
        again = false;
        for (berth_conn_t *c = th->conns; c; c = c->next) {
            if (c->finished || c->pauses > 0 || c->closed)
                continue;
            if (c->outbound && !c->relayed)
                continue;
            if (c->held.len > 0) {
                buf_t b = c->held;
                memset(&c->held, 0, sizeof c->held);
                th->depth++;
                deliver(c, b.data, b.len);
                th->depth--;
                buf_free(&b);
                again = true;
            }
            if (c->eof_held && c->pauses == 0 && c->held.len == 0) {
                c->eof_held = false;
                th->depth++;
                deliver_eof(c);
                th->depth--;
                again = true;
            }
        }
    }
}

/* How many conns have finished: settle and flush_held go on until neither changes it. */
static size_t finished_count(const berth_testhost_t *th)
{
    size_t n = 0;
    for (const berth_conn_t *c = th->conns; c; c = c->next)
        n += c->finished;
    return n;
}

static void after_plugin(berth_testhost_t *th)
{
    size_t before;
    do {
        before = finished_count(th);
        flush_held(th);
        settle(th);
    } while (finished_count(th) != before);
    flush_held(th);
    settle(th);
}

/* ---- public API --------------------------------------------------------------------------- */

static void fill_table(berth_host_t *h)
{
    memset(h, 0, sizeof *h);
    h->abi_version = BERTH_ABI_VERSION;
    h->size = sizeof *h;
    h->log = h_log;
    h->log_listener = h_log_listener;
    h->write = h_write;
    h->close = h_close;
    h->abort = h_abort;
    h->shutdown = h_shutdown;
    h->pause = h_pause;
    h->resume = h_resume;
    h->write_queue_size = h_write_queue_size;
    h->state = h_state;
    h->listener_state = h_listener_state;
    h->listener = h_listener;
    h->peer_addr = h_peer_addr;
    h->local_addr = h_local_addr;
    h->peer_name = h_peer_name;
    h->listener_name = h_listener_name;
    h->listener_protocol = h_listener_protocol;
    h->option = h_option;
    h->parse_duration = berth_parse_duration;
    h->parse_size = berth_parse_size;
    h->parse_bool = berth_parse_bool;
    h->timer_start = h_timer_start;
    h->timer_stop = h_timer_stop;
    h->work = h_work;
    h->connect = h_connect;
    h->relay = h_relay;
    h->tls_info = h_tls_info;
    h->balancer_addr = h_no_addr;
    h->multicast_group = h_no_addr;
    h->listener_tls_verify = h_listener_tls_verify;
    h->metric = h_metric;
    h->metric_add = h_metric_add;
    h->metric_set = h_metric_set;
    h->log_fields = h_log_fields;
    h->recv_into = h_recv_into;
    h->listener_options = h_listener_options;
    h->timer_restart = h_timer_restart;
    h->allow_path = h_allow_path;
    h->allow_connect = h_allow_connect;
    h->allow_bind = h_allow_bind;
    h->dgram_open = h_dgram_open;
    h->dgram_local_addr = h_dgram_local_addr;
    h->dgram_send = h_dgram_send;
    h->dgram_close = h_dgram_close;
    h->listen_once = h_listen_once;
    h->log_enabled = h_log_enabled;
}

berth_testhost_t *berth_testhost_new(const berth_handler_t *plugin, char *err, size_t errlen)
{
    if (!plugin) {
        snprintf(err, errlen, "no plugin descriptor");
        return NULL;
    }
    if (plugin->abi_version == 0) {
        snprintf(err, errlen,
                 "the descriptor is not initialised (abi_version 0): start it "
                 "with BERTH_HANDLER_INIT(\"name\")");
        return NULL;
    }
    if (plugin->abi_version != BERTH_ABI_VERSION) {
        snprintf(err, errlen, "plugin ABI version %u, this host speaks %u", plugin->abi_version,
                 BERTH_ABI_VERSION);
        return NULL;
    }
    if (plugin->size < offsetof(berth_handler_t, finish) + sizeof plugin->finish) {
        snprintf(err, errlen, "descriptor size %u is smaller than any berth_handler_t",
                 plugin->size);
        return NULL;
    }
    if (!plugin->name || !plugin->handle) {
        snprintf(err, errlen, "the descriptor has no %s", plugin->name ? "handle" : "name");
        return NULL;
    }
    if (PLUGIN_HAS(plugin, options_size) && plugin->options) {
        char why[256];
        if (berth_options_check_table(plugin->options, plugin->options_size, why, sizeof why)) {
            snprintf(err, errlen, "%s: declared options: %s", plugin->name, why);
            return NULL;
        }
    }
    berth_testhost_t *th = xcalloc(1, sizeof *th);
    fill_table(&th->host);
    th->plugin = plugin;
    th->verbose = getenv("BERTH_TESTHOST_VERBOSE") != NULL;
    th->next_port = 50000;
    last_host = th;
    int (*load)(const berth_host_t *) = HOOK(th, load);
    if (load) {
        int rc = load(&th->host);
        if (rc < 0) {
            snprintf(err, errlen, "%s: load() failed: %s", plugin->name, strerror(-rc));
            free(th);
            last_host = NULL;
            return NULL;
        }
    }
    th->loaded = true;
    return th;
}

berth_testhost_t *berth_testhost_open(const char *so_path, char *err, size_t errlen)
{
    void *dl = dlopen(so_path, RTLD_NOW | RTLD_LOCAL);
    if (!dl) {
        snprintf(err, errlen, "%s", dlerror());
        return NULL;
    }
    const berth_handler_t *d = dlsym(dl, BERTH_HANDLER_SYMBOL);
    if (!d) {
        snprintf(err, errlen, "%s: no symbol '%s'", so_path, BERTH_HANDLER_SYMBOL);
        dlclose(dl);
        return NULL;
    }
    berth_testhost_t *th = berth_testhost_new(d, err, errlen);
    if (!th) {
        dlclose(dl);
        return NULL;
    }
    th->dl = dl;
    return th;
}

void berth_testhost_start(berth_testhost_t *th)
{
    if (th->started)
        return;
    th->started = true;
    void (*start)(void) = HOOK(th, worker_start);
    if (start)
        start();
}

void berth_testhost_free(berth_testhost_t *th)
{
    if (!th)
        return;
    /* Queued work never runs: its done callbacks run with -ECANCELED, as the contract says,
     * so the plugin frees what it gave (berthd does the same for work the pool dropped). */
    while (th->work_head) {
        work_item_t *w = th->work_head;
        th->work_head = w->next;
        th->n_work--;
        if (w->conn->listener)
            w->conn->listener->work_queued--;
        th->depth++;
        w->done(w->conn, w->arg, -ECANCELED);
        th->depth--;
        w->conn->work_pending--;
        free(w);
    }
    th->work_tail = NULL;
    for (berth_conn_t *c = th->conns; c; c = c->next)
        if (!c->finished)
            conn_end(c);
    settle(th);
    if (th->started) {
        void (*stop)(void) = HOOK(th, worker_stop);
        if (stop)
            stop();
    }
    void (*lclose)(berth_listener_t *, void *) = HOOK(th, listener_close);
    for (berth_listener_t *l = th->listeners; l;) {
        berth_listener_t *next = l->next;
        if (l->opened && lclose)
            lclose(l, l->state);
        if (PLUGIN_HAS(th->plugin, options_size))
            berth_options_free(th->plugin->options, l->opts);
        for (size_t i = 0; i < l->n_options * 2; i++)
            free(l->options[i]);
        free(l->options);
        free(l->name);
        free(l);
        l = next;
    }
    void (*unload)(void) = HOOK(th, unload);
    if (th->loaded && unload)
        unload();
    for (berth_conn_t *c = th->conns; c;) {
        berth_conn_t *next = c->next;
        buf_free(&c->out);
        buf_free(&c->held);
        for (size_t i = 0; i < c->n_replies; i++)
            free(c->replies[i].data);
        free(c->replies);
        free(c->state);
        free(c);
        c = next;
    }
    for (struct berth_timer *t = th->timers; t;) {
        struct berth_timer *next = t->next;
        free(t);
        t = next;
    }
    for (berth_dgram_t *d = th->dgrams; d;) {
        berth_dgram_t *next = d->next;
        for (size_t i = 0; i < d->n_sent; i++)
            free(d->sent[i].data);
        free(d->sent);
        free(d);
        d = next;
    }
    for (struct berth_metric *m = th->metrics; m;) {
        struct berth_metric *next = m->next;
        free(m->name);
        free(m);
        m = next;
    }
    free(th->connects);
    buf_free(&th->log);
    if (th->dl)
        dlclose(th->dl);
    if (last_host == th)
        last_host = NULL;
    free(th);
}

berth_listener_t *berth_testhost_listener(berth_testhost_t *th, const char *name,
                                          berth_protocol_t protocol, const char *const *options,
                                          char *err, size_t errlen)
{
    berth_listener_t *l = xcalloc(1, sizeof *l);
    l->th = th;
    l->name = xstrdup(name);
    l->protocol = protocol;
    size_t n = 0;
    while (options && options[n * 2]) {
        if (!options[n * 2 + 1]) {
            snprintf(err, errlen, "option \"%s\" has no value", options[n * 2]);
            free(l->name);
            free(l);
            return NULL;
        }
        n++;
    }
    l->options = xcalloc(n * 2 + 1, sizeof *l->options);
    l->n_options = n;
    for (size_t i = 0; i < n * 2; i++)
        l->options[i] = xstrdup(options[i]);
    parse_addr_or_die(protocol == BERTH_PROTO_UNIX || protocol == BERTH_PROTO_UNIXGRAM
                          ? "unix:/run/berth-testhost.sock"
                          : "127.0.0.1:1",
                      &l->local, &l->local_len);
    l->next = th->listeners;
    th->listeners = l;

    /* As berthd: the declared options first (FILE:LINE errors there; here the key), then
     * check_option for every key, for what the table cannot say. */
    const berth_option_t *table = PLUGIN_HAS(th->plugin, options_size) ? th->plugin->options : NULL;
    if (table) {
        l->opts = xcalloc(1, th->plugin->options_size);
        for (const berth_option_t *o = table; o->name; o++) {
            const char *text = o->def;
            for (size_t i = 0; i < n; i++)
                if (strcmp(l->options[i * 2], o->name) == 0)
                    text = l->options[i * 2 + 1]; /* the last one wins */
            if (text == NULL) {
                if (o->flags & BERTH_OPT_REQUIRED) {
                    snprintf(err, errlen, "%s is required by plugin '%s' (%s)", o->name,
                             th->plugin->name, o->help ? o->help : "no help");
                    return NULL;
                }
                continue;
            }
            if (berth_option_parse(o, text, (char *)l->opts + o->offset, err, errlen) < 0)
                return NULL;
        }
    }
    int (*check)(berth_listener_t *, const char *, const char *, char *, size_t) =
        HOOK(th, check_option);
    for (size_t i = 0; i < n; i++) {
        const char *key = l->options[i * 2], *value = l->options[i * 2 + 1];
        if (strcmp(key, "address") == 0) {
            if (parse_addr(value, &l->local, &l->local_len) < 0) {
                snprintf(err, errlen, "address: not an address: %s", value);
                return NULL;
            }
            continue;
        }
        if (!check) {
            if (table && berth_options_find(table, key))
                continue;
            snprintf(err, errlen, "unknown key '%s' (plugin '%s')", key, th->plugin->name);
            return NULL;
        }
        snprintf(err, errlen, "%s: plugin '%s' refused it", key, th->plugin->name);
        if (check(l, key, value, err, errlen) < 0)
            return NULL;
        err[0] = '\0';
    }
    int (*open)(berth_listener_t *, void **, char *, size_t) = HOOK(th, listener_open);
    if (open) {
        char msg[512] = "";
        int rc = open(l, &l->state, msg, sizeof msg);
        if (rc < 0) {
            snprintf(err, errlen, "%s", msg[0] ? msg : strerror(-rc));
            return NULL;
        }
    }
    l->opened = true;
    return l;
}

static berth_conn_t *incoming(berth_testhost_t *th, berth_listener_t *l, const char *peer,
                              bool datagram)
{
    berth_testhost_start(th);
    berth_conn_t *c = conn_new(th, l, peer);
    c->datagram = datagram;
    if (th->plugin->conn_size)
        c->state = xcalloc(1, th->plugin->conn_size);
    int (*setup)(berth_conn_t *) = HOOK(th, setup);
    th->depth++;
    int rc = setup ? setup(c) : 0;
    th->depth--;
    if (rc < 0) {
        c->handled = true; /* nothing more for a refused datagram either */
        conn_end(c);
    }
    return c;
}

berth_conn_t *berth_testhost_accept(berth_testhost_t *th, berth_listener_t *l, const char *peer)
{
    berth_conn_t *c = incoming(th, l, peer, false);
    after_plugin(th);
    return c;
}

berth_conn_t *berth_testhost_datagram(berth_testhost_t *th, berth_listener_t *l, const char *peer,
                                      const void *data, size_t len)
{
    berth_conn_t *c = incoming(th, l, peer, true);
    if (!c->closed) {
        th->depth++;
        deliver(c, data, len);
        th->depth--;
    }
    c->handled = true;
    after_plugin(th);
    return c;
}

int berth_testhost_feed(berth_conn_t *c, const void *data, size_t len)
{
    if (c->finished || c->closed || c->eof_seen || c->eof_held)
        return -EPIPE;
    berth_testhost_t *th = c->th;
    if (c->pauses > 0 || c->held.len > 0 || (c->outbound && !c->relayed)) {
        buf_append(&c->held, data, len);
    } else {
        th->depth++;
        deliver(c, data, len);
        th->depth--;
    }
    after_plugin(th);
    return 0;
}

void berth_testhost_eof(berth_conn_t *c)
{
    if (c->finished || c->eof_seen)
        return;
    berth_testhost_t *th = c->th;
    if (c->pauses > 0 || c->held.len > 0 || (c->outbound && !c->relayed)) {
        c->eof_held = true;
    } else {
        th->depth++;
        deliver_eof(c);
        th->depth--;
    }
    after_plugin(th);
}

void berth_testhost_reset(berth_conn_t *c)
{
    if (c->finished)
        return;
    c->eof_seen = true;
    if (c->relayed)
        relay_finish(c, -ECONNRESET);
    conn_end(c);
    after_plugin(c->th);
}

const void *berth_testhost_output(const berth_conn_t *c, size_t *len)
{
    if (len)
        *len = c->out.len;
    return c->out.data ? c->out.data : "";
}

void berth_testhost_consume(berth_conn_t *c, size_t len)
{
    if (len >= c->out.len) {
        c->out.len = 0;
    } else {
        memmove(c->out.data, c->out.data + len, c->out.len - len);
        c->out.len -= len;
    }
    if (c->out.data)
        c->out.data[c->out.len] = '\0';
}

const void *berth_testhost_reply(const berth_conn_t *c, size_t i, size_t *len)
{
    if (i >= c->n_replies) {
        if (len)
            *len = 0;
        return NULL;
    }
    if (len)
        *len = c->replies[i].len;
    return c->replies[i].data;
}

bool berth_testhost_closed(const berth_conn_t *c)
{
    return c->closed;
}

bool berth_testhost_aborted(const berth_conn_t *c)
{
    return c->aborted;
}

bool berth_testhost_shut_down(const berth_conn_t *c)
{
    return c->shut_down;
}

bool berth_testhost_paused(const berth_conn_t *c)
{
    return c->pauses > 0;
}

bool berth_testhost_finished(const berth_conn_t *c)
{
    return c->finished;
}

bool berth_testhost_relayed(const berth_conn_t *c)
{
    return c->relayed;
}

static void relay_idle_check(berth_testhost_t *th)
{
    for (berth_conn_t *c = th->conns; c; c = c->next) {
        if (!c->relayed || c->outbound || c->relay_finished || c->relay_idle_ms == 0)
            continue;
        if (th->now - c->relay_last >= c->relay_idle_ms)
            relay_finish(c, -ETIMEDOUT);
    }
}

void berth_testhost_advance(berth_testhost_t *th, uint64_t ms)
{
    uint64_t target = th->now + ms;
    for (unsigned long fired = 0;; fired++) {
        if (fired == 1000000) {
            /* A timer that starts (or restarts) itself at 0 ms, for ever: a plugin bug a
             * test should hear of rather than hang on. */
            fputs("berth-testhost: a million timers fired in one advance(): a timer that "
                  "re-arms itself at 0 ms?\n",
                  stderr);
            abort();
        }
        struct berth_timer *next = NULL;
        for (struct berth_timer *t = th->timers; t; t = t->next)
            if (t->due <= target &&
                (!next || t->due < next->due || (t->due == next->due && t->seq < next->seq)))
                next = t;
        if (!next)
            break;
        if (next->due > th->now)
            th->now = next->due;
        /* Off the list before its callback: a fired timer is gone (the contract). */
        for (struct berth_timer **pp = &th->timers; *pp; pp = &(*pp)->next) {
            if (*pp == next) {
                *pp = next->next;
                break;
            }
        }
        berth_conn_t *c = next->conn;
        berth_timer_cb cb = next->cb;
        void *arg = next->arg;
        free(next);
        th->depth++;
        cb(c, arg);
        th->depth--;
        after_plugin(th);
    }
    th->now = target;
    for (size_t i = 0; i < th->n_connects; i++) {
        connect_req_t *r = &th->connects[i];
        if (!r->pub.listen || r->pub.answered || r->deadline == 0 || th->now < r->deadline)
            continue;
        r->pub.answered = true;
        berth_connect_result_t res;
        memset(&res, 0, sizeof res);
        res.error = BERTH_CONNECT_TIMEOUT;
        res.sys_errno = ETIMEDOUT;
        th->depth++;
        r->cb(r->pub.conn, &res, r->arg);
        th->depth--;
        after_plugin(th);
    }
    th->depth++;
    relay_idle_check(th);
    th->depth--;
    after_plugin(th);
}

uint64_t berth_testhost_now(const berth_testhost_t *th)
{
    return th->now;
}

size_t berth_testhost_timers(const berth_testhost_t *th)
{
    size_t n = 0;
    for (const struct berth_timer *t = th->timers; t; t = t->next)
        n++;
    return n;
}

size_t berth_testhost_run_work(berth_testhost_t *th)
{
    size_t ran = 0;
    while (th->work_head) {
        work_item_t *w = th->work_head;
        th->work_head = w->next;
        if (!th->work_head)
            th->work_tail = NULL;
        th->n_work--;
        w->work(w->arg);
        berth_conn_t *c = w->conn;
        if (c->listener)
            c->listener->work_queued--;
        th->depth++;
        w->done(c, w->arg, 0);
        th->depth--;
        c->work_pending--;
        free(w);
        ran++;
        after_plugin(th);
    }
    return ran;
}

size_t berth_testhost_work_queued(const berth_testhost_t *th)
{
    return th->n_work;
}

size_t berth_testhost_connects(const berth_testhost_t *th)
{
    return th->n_connects;
}

const berth_testhost_connect_t *berth_testhost_connect_at(const berth_testhost_t *th, size_t i)
{
    return i < th->n_connects ? &th->connects[i].pub : NULL;
}

static connect_req_t *pending_connect(berth_testhost_t *th, size_t i)
{
    if (i >= th->n_connects || th->connects[i].pub.answered) {
        fprintf(stderr, "berth-testhost: connect %zu was not asked for or is answered\n", i);
        abort();
    }
    return &th->connects[i];
}

berth_conn_t *berth_testhost_connect_ok(berth_testhost_t *th, size_t i, const char *remote,
                                        const char *local)
{
    connect_req_t *r = pending_connect(th, i);
    berth_connect_result_t res;
    memset(&res, 0, sizeof res);
    socklen_t rlen, llen;
    parse_addr_or_die(remote, &res.remote, &rlen);
    parse_addr_or_die(
        local ? local : (res.remote.ss_family == AF_INET6 ? "[::1]:40000" : "127.0.0.1:40000"),
        &res.local, &llen);
    r->pub.answered = true;
    berth_conn_t *c = r->pub.conn;
    th->depth++;
    if (r->pub.listen) {
        /* listen_once: `remote` is the peer connecting in. One `allow` refuses is reset and
         * the listen goes on; the first it accepts becomes the peer. */
        if (r->allow && r->allow(c, (const struct sockaddr *)&res.remote, r->arg) != 0) {
            r->pub.answered = false;
            th->depth--;
            after_plugin(th);
            return NULL;
        }
        berth_conn_t *peer = conn_new(th, NULL, remote);
        peer->outbound = true;
        parse_addr_or_die(r->pub.host[0] && strchr(r->pub.host, ':') ? "[::1]:1" : "127.0.0.1:1",
                          &peer->local, &peer->local_len);
        inet_pton(peer->local.ss_family, r->pub.host,
                  peer->local.ss_family == AF_INET6
                      ? (void *)&((struct sockaddr_in6 *)&peer->local)->sin6_addr
                      : (void *)&((struct sockaddr_in *)&peer->local)->sin_addr);
        set_port(&peer->local, r->pub.port);
        res.local = peer->local;
        res.peer = peer;
        r->cb(c, &res, r->arg);
        th->depth--;
        after_plugin(th);
        return peer;
    }
    if (!connect_declared(c->listener, r->pub.port)) {
        /* berthd's worker sandbox refuses a connect its listener never declared. */
        h_log(c, BERTH_LOG_WARN,
              "berth-testhost: connect to port %u refused: the listener declared no "
              "allow_connect for it (berthd's sandbox would refuse it too)",
              r->pub.port);
        res.error = BERTH_CONNECT_FAILED;
        res.sys_errno = EACCES;
        r->cb(c, &res, r->arg);
        th->depth--;
        after_plugin(th);
        return NULL;
    }
    if (r->allow && r->allow(c, (const struct sockaddr *)&res.remote, r->arg) != 0) {
        res.error = BERTH_CONNECT_DENIED;
        r->cb(c, &res, r->arg);
        th->depth--;
        after_plugin(th);
        return NULL;
    }
    berth_conn_t *peer = conn_new(th, NULL, remote);
    peer->outbound = true;
    peer->local = res.local;
    peer->local_len = llen;
    res.peer = peer;
    r->cb(c, &res, r->arg);
    th->depth--;
    after_plugin(th);
    return peer;
}

void berth_testhost_connect_fail(berth_testhost_t *th, size_t i, berth_connect_error_t error,
                                 int sys_errno)
{
    connect_req_t *r = pending_connect(th, i);
    r->pub.answered = true;
    berth_connect_result_t res;
    memset(&res, 0, sizeof res);
    res.error = error;
    res.sys_errno = sys_errno;
    th->depth++;
    r->cb(r->pub.conn, &res, r->arg);
    th->depth--;
    after_plugin(th);
}

size_t berth_testhost_dgrams(const berth_conn_t *c)
{
    size_t n = 0;
    for (const berth_dgram_t *d = c->th->dgrams; d; d = d->next)
        n += d->conn == c;
    return n;
}

berth_dgram_t *berth_testhost_dgram_at(const berth_conn_t *c, size_t i)
{
    /* In the order they were opened: the list is newest first. */
    size_t n = berth_testhost_dgrams(c), k = 0;
    if (i >= n)
        return NULL;
    for (berth_dgram_t *d = c->th->dgrams; d; d = d->next)
        if (d->conn == c && k++ == n - 1 - i)
            return d;
    return NULL;
}

int berth_testhost_dgram_recv(berth_dgram_t *d, const char *from, const void *data, size_t len)
{
    if (!d)
        return -EINVAL;
    if (dgram_dead(d))
        return -EPIPE;
    struct sockaddr_storage ss;
    socklen_t sl;
    parse_addr_or_die(from, &ss, &sl);
    berth_testhost_t *th = d->conn->th;
    th->depth++;
    d->cb(d->conn, d, data, len, (const struct sockaddr *)&ss, d->arg);
    th->depth--;
    after_plugin(th);
    return 0;
}

size_t berth_testhost_dgram_sent_count(const berth_dgram_t *d)
{
    return d->n_sent;
}

const void *berth_testhost_dgram_sent(const berth_dgram_t *d, size_t i, const char **host,
                                      uint16_t *port, size_t *len)
{
    if (i >= d->n_sent)
        return NULL;
    if (host)
        *host = d->sent[i].host;
    if (port)
        *port = d->sent[i].port;
    if (len)
        *len = d->sent[i].len;
    return d->sent[i].data;
}

bool berth_testhost_dgram_closed(const berth_dgram_t *d)
{
    return dgram_dead(d);
}

bool berth_testhost_relay_done(const berth_conn_t *c, berth_relay_stats_t *stats)
{
    const berth_conn_t *client = c->outbound ? c->relay_peer : c;
    if (!client || !client->relay_finished)
        return false;
    if (stats)
        *stats = client->relay_stats;
    return true;
}

void berth_testhost_set_tls(berth_conn_t *c, const berth_tls_info_t *info)
{
    c->has_tls = info != NULL;
    if (info)
        c->tls = *info;
}

bool berth_testhost_metric(const berth_testhost_t *th, const berth_listener_t *l, const char *name,
                           int64_t *value)
{
    for (const struct berth_metric *m = th->metrics; m; m = m->next) {
        if (m->listener == l && strcmp(m->name, name) == 0) {
            if (value)
                *value = m->value;
            return true;
        }
    }
    return false;
}

const char *berth_testhost_log(const berth_testhost_t *th)
{
    return th->log.data ? th->log.data : "";
}

bool berth_testhost_logged(const berth_testhost_t *th, const char *needle)
{
    return th->log.data && strstr(th->log.data, needle) != NULL;
}

const berth_host_t *berth_testhost_table(const berth_testhost_t *th)
{
    return &th->host;
}
