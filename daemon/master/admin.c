#include "master/admin.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "master/listen.h"

struct admin {
    const admin_ops_t *ops;
    void *ctx;
    uv_loop_t *loop;
    lsock_t sock;
    uv_pipe_t server;
    int server_init;
    unsigned nclients;
    unsigned idle_ms;
    unsigned max_clients;
    uint64_t refused;        /* clients closed at once over ADMIN_CLIENTS_MAX */
    uint64_t refused_logged; /* ... of which the log has told */
    uint64_t refused_log_at; /* loop time of the last such line */
    struct admin_client *clients;
};

typedef struct admin_client {
    uv_pipe_t pipe;
    uv_timer_t idle; /* closes a client that sends no full request in ADMIN_IDLE_MS */
    admin_t *a;
    char req[ADMIN_REQUEST_MAX];
    size_t len;
    int answered;
    int discard;    /* answered a request too long: read the rest to EOF, then close */
    size_t dropped; /* ... at most DISCARD_MAX bytes of it */
    int closing;
    int running; /* a request is being carried out (a reload): its answer will come */
    int handles; /* open uv handles; freed when the last one closes */
    uv_shutdown_t shut;
    struct admin_client *prev, *next;
} admin_client_t;

#define DISCARD_MAX (1024 * 1024)

/* ---- a growable text buffer, capped by what a status can hold ---- */

typedef struct sbuf {
    char *p;
    size_t len, cap;
} sbuf_t;

static void sb_printf(sbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_printf(sbuf_t *b, const char *fmt, ...)
{
    va_list ap;
    for (;;) {
        size_t room = b->cap - b->len;
        va_start(ap, fmt);
        int n = b->p ? vsnprintf(b->p + b->len, room, fmt, ap) : -1;
        va_end(ap);
        if (n >= 0 && (size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        if (n >= 0 && cap < b->len + (size_t)n + 1)
            cap = b->len + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return;
        b->p = p;
        b->cap = cap;
    }
}

static void json_str(sbuf_t *b, const char *s)
{
    sb_printf(b, "\"");
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            sb_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            sb_printf(b, "\\u%04x", ch);
        else
            sb_printf(b, "%c", ch);
    }
    sb_printf(b, "\"");
}

/* "224.3.29.71,ff02::1:3" as ["224.3.29.71","ff02::1:3"]; [] for none. */
static void json_groups(sbuf_t *b, const char *groups)
{
    sb_printf(b, "[");
    for (const char *g = groups; g && *g;) {
        size_t n = strcspn(g, ",");
        sb_printf(b, "%s\"%.*s\"", g == groups ? "" : ",", (int)n, g);
        g += n + (g[n] == ',');
    }
    sb_printf(b, "]");
}

static const char *worker_state_name(int s)
{
    switch (s) {
    case WORKER_STARTING:
        return "starting";
    case WORKER_READY:
        return "serving";
    case WORKER_DRAINING:
        return "draining";
    default:
        return "free";
    }
}

static void human_bytes(uint64_t v, char *buf, size_t len)
{
    const char *u[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    double d = (double)v;
    int i = 0;
    while (d >= 1024 && i < 4) {
        d /= 1024;
        i++;
    }
    if (i == 0)
        snprintf(buf, len, "%llu B", (unsigned long long)v);
    else
        snprintf(buf, len, "%.1f %s", d, u[i]);
}

/* The address as configured, and for a port 0 the one the kernel gave:
 * "127.0.0.1:0 (127.0.0.1:40123)". */
static void shown_address(const admin_snapshot_t *snap, int i, char *buf, size_t len)
{
    const char *addr = snap->stats->listeners[i].address;
    size_t n = strlen(addr);
    if (snap->bound[i] && n >= 2 && strcmp(addr + n - 2, ":0") == 0)
        snprintf(buf, len, "%s (%s)", addr, snap->bound[i]);
    else
        snprintf(buf, len, "%s", addr);
}

char *admin_status(const admin_snapshot_t *snap, int json)
{
    const stats_t *st = snap->stats;
    sbuf_t b = {0};
    uint64_t now = stats_now_ms();
    uint64_t uptime = (now - st->started_ms) / 1000;
    if (json) {
        sb_printf(&b, "{\"pid\":%d,\"uptime_s\":%llu,\"generation\":%llu,", (int)getpid(),
                  (unsigned long long)uptime, (unsigned long long)atomic_load(&st->generation));
        sb_printf(&b,
                  "\"reloads_ok\":%llu,\"reloads_failed\":%llu,\"worker_restarts\":%llu,"
                  "\"worker_crashes\":%llu,\"config\":",
                  (unsigned long long)atomic_load(&st->reloads_ok),
                  (unsigned long long)atomic_load(&st->reloads_failed),
                  (unsigned long long)atomic_load(&st->worker_restarts),
                  (unsigned long long)atomic_load(&st->worker_crashes));
        json_str(&b, snap->conf_path);
        sb_printf(&b, ",\"listeners\":[");
        int first = 1;
        for (int i = 0; i < STATS_LISTENERS; i++) {
            const stats_listener_t *l = &st->listeners[i];
            if (!l->in_use)
                continue;
            sb_printf(&b, "%s{\"name\":", first ? "" : ",");
            json_str(&b, l->name);
            sb_printf(&b, ",\"protocol\":\"%s\",\"address\":",
                      config_protocol_name((berth_protocol_t)l->protocol));
            json_str(&b, l->address);
            sb_printf(&b, ",\"bound\":");
            if (snap->bound[i])
                json_str(&b, snap->bound[i]);
            else
                sb_printf(&b, "null");
            sb_printf(&b, ",\"quarantined\":");
            if (snap->quarantined[i])
                json_str(&b, snap->quarantined[i]);
            else
                sb_printf(&b, "null");
            sb_printf(&b, ",\"groups\":");
            json_groups(&b, snap->groups[i]);
            /* plugin version */
            sb_printf(&b, ",\"plugin\":");
            json_str(&b, l->plugin);
            sb_printf(&b, ",\"plugin_version\":");
            json_str(&b, l->plugin_version);
            sb_printf(&b,
                      ",\"active\":%llu,\"accepted\":%llu,\"refused_acl\":%llu,"
                      "\"refused_limit\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                      "\"errors\":%llu,\"idle_closed\":%llu,\"tls_handshakes\":%llu,"
                      "\"tls_handshakes_failed\":%llu,\"refused_proxy\":%llu,"
                      "\"refused_source\":%llu}",
                      (unsigned long long)atomic_load(&l->active),
                      (unsigned long long)atomic_load(&l->accepted),
                      (unsigned long long)atomic_load(&l->refused_acl),
                      (unsigned long long)atomic_load(&l->refused_limit),
                      (unsigned long long)atomic_load(&l->bytes_in),
                      (unsigned long long)atomic_load(&l->bytes_out),
                      (unsigned long long)atomic_load(&l->errors),
                      (unsigned long long)atomic_load(&l->idle_closed),
                      (unsigned long long)atomic_load(&l->tls_handshakes),
                      (unsigned long long)atomic_load(&l->tls_handshakes_failed),
                      (unsigned long long)atomic_load(&l->refused_proxy),
                      (unsigned long long)atomic_load(&l->refused_source));
            first = 0;
        }
        sb_printf(&b, "],\"workers\":[");
        first = 1;
        for (int i = 0; i < STATS_WORKERS; i++) {
            const stats_worker_t *w = &st->workers[i];
            int s = atomic_load(&w->state);
            if (s == WORKER_FREE)
                continue;
            sb_printf(&b,
                      "%s{\"index\":%u,\"pid\":%d,\"generation\":%u,\"state\":\"%s\","
                      "\"active\":%llu,\"accepted\":%llu,\"bytes_in\":%llu,\"bytes_out\":%llu,"
                      "\"uptime_s\":%llu"
                      /* sandbox */
                      ",\"sandbox\":{\"landlock_abi\":%d,\"rules\":%u,\"seccomp\":%s}}",
                      first ? "" : ",", w->index + 1, (int)w->pid, w->generation,
                      worker_state_name(s), (unsigned long long)atomic_load(&w->active),
                      (unsigned long long)atomic_load(&w->accepted),
                      (unsigned long long)atomic_load(&w->bytes_in),
                      (unsigned long long)atomic_load(&w->bytes_out),
                      (unsigned long long)((now - w->started_ms) / 1000),
                      /* sandbox */
                      atomic_load(&w->sandbox_landlock_abi),
                      (unsigned)atomic_load(&w->sandbox_rules),
                      atomic_load(&w->sandbox_seccomp) ? "true" : "false");
            first = 0;
        }
        /* binary upgrade: the running image's version, and each live generation's */
        sb_printf(&b, "],\"version\":");
        json_str(&b, BERTH_VERSION);
        sb_printf(&b, ",\"generations\":[");
        for (size_t i = 0; i < snap->ngens; i++) {
            sb_printf(&b, "%s{\"id\":%u,\"version\":", i ? "," : "", snap->gen_ids[i]);
            json_str(&b, snap->gen_versions[i] ? snap->gen_versions[i] : "");
            sb_printf(&b, "}");
        }
        sb_printf(&b, "]}\n");
        return b.p;
    }
    sb_printf(&b, "berthd %s, pid %d, up %llud %02lluh%02llum%02llus, config %s\n", BERTH_VERSION,
              (int)getpid(), (unsigned long long)(uptime / 86400),
              (unsigned long long)(uptime / 3600 % 24), (unsigned long long)(uptime / 60 % 60),
              (unsigned long long)(uptime % 60), snap->conf_path);
    sb_printf(&b,
              "generation %llu; reloads %llu ok, %llu failed; workers restarted %llu "
              "(%llu crashes)\n\n",
              (unsigned long long)atomic_load(&st->generation),
              (unsigned long long)atomic_load(&st->reloads_ok),
              (unsigned long long)atomic_load(&st->reloads_failed),
              (unsigned long long)atomic_load(&st->worker_restarts),
              (unsigned long long)atomic_load(&st->worker_crashes));
    /* Columns as wide as the longest name and address, so a table stays a table. */
    int wname = 8, waddr = 7;
    char addrs[STATS_LISTENERS][160];
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &st->listeners[i];
        if (!l->in_use)
            continue;
        shown_address(snap, i, addrs[i], sizeof addrs[i]);
        int n = (int)strlen(l->name), a = (int)strlen(addrs[i]);
        wname = n > wname ? n : wname;
        waddr = a > waddr ? a : waddr;
    }
    sb_printf(&b, "%-*s %-8s %-*s %7s %10s %9s %10s %10s %7s\n", wname, "LISTENER", "PROTO", waddr,
              "ADDRESS", "ACTIVE", "ACCEPTED", "REFUSED", "IN", "OUT", "ERRORS");
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &st->listeners[i];
        if (!l->in_use)
            continue;
        char in[32], out[32];
        human_bytes(atomic_load(&l->bytes_in), in, sizeof in);
        human_bytes(atomic_load(&l->bytes_out), out, sizeof out);
        sb_printf(
            &b, "%-*s %-8s %-*s %7llu %10llu %9llu %10s %10s %7llu\n", wname, l->name,
            config_protocol_name((berth_protocol_t)l->protocol), waddr, addrs[i],
            (unsigned long long)atomic_load(&l->active),
            (unsigned long long)atomic_load(&l->accepted),
            (unsigned long long)(atomic_load(&l->refused_acl) + atomic_load(&l->refused_limit) +
                                 atomic_load(&l->refused_proxy) + atomic_load(&l->refused_source)),
            in, out, (unsigned long long)atomic_load(&l->errors));
    }
    for (int i = 0; i < STATS_LISTENERS; i++)
        if (st->listeners[i].in_use && snap->quarantined[i])
            sb_printf(&b, "[%s] is quarantined: %s (berthctl resume %s, or a reload, lifts it)\n",
                      st->listeners[i].name, snap->quarantined[i], st->listeners[i].name);
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &st->listeners[i];
        unsigned long long ok = atomic_load(&l->tls_handshakes),
                           bad = atomic_load(&l->tls_handshakes_failed);
        if (l->in_use && (ok || bad))
            sb_printf(&b, "[%s] TLS handshakes: %llu done, %llu failed\n", l->name, ok, bad);
    }
    /* plugin version: which build serves, so a hot swap can be told apart */
    for (int i = 0; i < STATS_LISTENERS; i++)
        if (st->listeners[i].in_use && st->listeners[i].plugin[0])
            sb_printf(
                &b, "[%s] plugin %s version %s\n", st->listeners[i].name, st->listeners[i].plugin,
                st->listeners[i].plugin_version[0] ? st->listeners[i].plugin_version : "(none)");
    for (int i = 0; i < STATS_LISTENERS; i++)
        if (st->listeners[i].in_use && snap->groups[i])
            sb_printf(&b, "[%s] has joined multicast groups %s\n", st->listeners[i].name,
                      snap->groups[i]);
    sb_printf(&b, "\n%-7s %-8s %-4s %-9s %7s %10s %10s %10s\n", "WORKER", "PID", "GEN", "STATE",
              "ACTIVE", "ACCEPTED", "IN", "OUT");
    for (int i = 0; i < STATS_WORKERS; i++) {
        const stats_worker_t *w = &st->workers[i];
        int s = atomic_load(&w->state);
        if (s == WORKER_FREE)
            continue;
        char in[32], out[32];
        human_bytes(atomic_load(&w->bytes_in), in, sizeof in);
        human_bytes(atomic_load(&w->bytes_out), out, sizeof out);
        sb_printf(&b, "%-7u %-8d %-4u %-9s %7llu %10llu %10s %10s\n", w->index + 1, (int)w->pid,
                  w->generation, worker_state_name(s), (unsigned long long)atomic_load(&w->active),
                  (unsigned long long)atomic_load(&w->accepted), in, out);
    }
    /* binary upgrade: while old workers drain, which version each generation runs */
    for (size_t i = 0; i < snap->ngens; i++)
        sb_printf(&b, "%sgeneration %u runs berthd %s\n", i ? "" : "\n", snap->gen_ids[i],
                  snap->gen_versions[i] ? snap->gen_versions[i] : "?");
    return b.p;
}

/* ---- connections ---- */

static void on_client_handle_closed(uv_handle_t *h)
{
    admin_client_t *c = h->data;
    if (--c->handles > 0)
        return;
    admin_t *a = c->a;
    if (c->prev)
        c->prev->next = c->next;
    else
        a->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    a->nclients--;
    free(c);
}

static void client_close(admin_client_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    uv_close((uv_handle_t *)&c->idle, on_client_handle_closed);
    uv_close((uv_handle_t *)&c->pipe, on_client_handle_closed);
}

static void on_shut(uv_shutdown_t *req, int status) {}

static void on_written(uv_write_t *req, int status)
{
    admin_client_t *c = req->data;
    free(req);
    /* Closing with the client's bytes unread would reset the connection under the
     * answer: send our EOF and wait for theirs (on_read closes; the idle timer bounds
     * the wait). */
    if (c->discard && status == 0 && !c->closing &&
        uv_shutdown(&c->shut, (uv_stream_t *)&c->pipe, on_shut) == 0) {
        uv_timer_again(&c->idle);
        return;
    }
    client_close(c);
}

static void answer(admin_client_t *c, int ok, const char *body)
{
    if (c->answered || c->closing)
        return;
    c->answered = 1;
    c->running = 0;
    size_t blen = body ? strlen(body) : 0;
    /* One allocation holds the request and the bytes until write_cb. */
    uv_write_t *req = malloc(sizeof *req + blen + 8);
    if (req == NULL) {
        client_close(c);
        return;
    }
    char *text = (char *)(req + 1);
    int n = snprintf(text, blen + 8, "%s\n%s", ok ? "ok" : "error", body ? body : "");
    if (n > 0 && body && blen && body[blen - 1] != '\n' && (size_t)n + 1 < blen + 8)
        text[n++] = '\n';
    req->data = c;
    uv_buf_t b = uv_buf_init(text, (unsigned)n);
    if (uv_write(req, (uv_stream_t *)&c->pipe, &b, 1, on_written)) {
        free(req);
        client_close(c);
    }
}

static void on_done(void *arg, int ok, const char *text)
{
    admin_client_t *c = arg;
    answer(c, ok, ok ? "reloaded\n" : text);
}

static void on_upgrade_done(void *arg, int ok, const char *text)
{
    answer(arg, ok, text);
}

static void run_request(admin_client_t *c, admin_req_t req, const char *name)
{
    admin_t *a = c->a;
    uv_read_stop((uv_stream_t *)&c->pipe);
    uv_timer_stop(&c->idle);
    c->req[strcspn(c->req, "\r\n")] = '\0';
    log_debug("admin: %s", c->req);
    switch (req) {
    case ADMIN_REQ_STATUS:
    case ADMIN_REQ_STATUS_JSON: {
        admin_snapshot_t snap = {0};
        a->ops->snapshot(a->ctx, &snap);
        char *s = admin_status(&snap, req == ADMIN_REQ_STATUS_JSON);
        answer(c, s != NULL, s ? s : "out of memory\n");
        free(s);
        break;
    }
    case ADMIN_REQ_RELOAD:
        c->running = 1;
        a->ops->reload(a->ctx, on_done, c);
        break;
    case ADMIN_REQ_STOP:
        answer(c, 1, "stopping\n");
        a->ops->stop(a->ctx);
        break;
    case ADMIN_REQ_UPGRADE: {
        if (a->ops->upgrade == NULL) {
            answer(c, 0, "this berthd cannot upgrade\n");
            break;
        }
        uv_os_fd_t fd = -1;
        if (uv_fileno((uv_handle_t *)&c->pipe, &fd) != 0)
            fd = -1;
        c->running = 1;
        a->ops->upgrade(a->ctx, fd, on_upgrade_done, c);
        break;
    }
    case ADMIN_REQ_RESUME: {
        char msg[256] = "";
        int ok = a->ops->resume(a->ctx, name, msg, sizeof msg);
        answer(c, ok, msg);
        break;
    }
    default:
        answer(c, 0,
               "unknown request (try: status, status --json, reload, stop, resume LISTENER, "
               "upgrade)\n");
        break;
    }
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    admin_client_t *c = h->data;
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - 1 - c->len));
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    admin_client_t *c = s->data;
    if (n < 0) {
        if (!c->answered || c->discard)
            client_close(c);
        return;
    }
    if (c->discard) {
        c->dropped += (size_t)n;
        c->len = 0;
        if (c->dropped > DISCARD_MAX)
            client_close(c);
        return;
    }
    c->len += (size_t)n;
    c->req[c->len] = '\0';
    const char *arg = NULL;
    size_t arglen = 0;
    admin_req_t req = admin_parse_request(c->req, c->len, &arg, &arglen);
    if (req == ADMIN_REQ_TOO_LONG) {
        c->discard = 1;
        c->len = 0;
        answer(c, 0, "request too long\n");
    } else if (req != ADMIN_REQ_NONE) {
        char name[64] = "";
        if (arg)
            memcpy(name, arg, arglen < sizeof name ? arglen : sizeof name - 1);
        run_request(c, req, name);
    }
}

static void on_idle(uv_timer_t *t)
{
    admin_client_t *c = t->data;
    log_debug("admin: closing a client idle for %u ms", c->a->idle_ms);
    client_close(c);
}

/* At the cap, the oldest client that has not sent its request yet (an idle one: berthctl
 * sends its request as soon as it connects) makes room, so idle clients never lock berthctl
 * out; when every client is busy with a request the new one is closed at once instead.
 * The log says so at most once a minute. */
static admin_client_t *oldest_idle(admin_t *a)
{
    admin_client_t *found = NULL;
    for (admin_client_t *c = a->clients; c; c = c->next) /* newest first */
        if (!c->answered && !c->running && !c->closing)
            found = c;
    return found;
}

static void refuse_logged(admin_t *a)
{
    a->refused++;
    uint64_t now = uv_now(a->loop);
    if (a->refused_log_at && now - a->refused_log_at < 60000)
        return;
    log_warn("admin: at the cap of %u clients; closed %llu (idle ones first)", a->max_clients,
             (unsigned long long)(a->refused - a->refused_logged));
    a->refused_logged = a->refused;
    a->refused_log_at = now ? now : 1;
}

static void on_refused_closed(uv_handle_t *h)
{
    free(h);
}

/* Out of memory for a client: libuv has accept()ed it already and polls the server again
 * only once it is taken, so take it into a handle of our own and close it, or the admin
 * socket would stop answering for good. While that handle is still closing (a second
 * client in the same turn), the server waits, untaken, for its close callback to take it;
 * admin_stop forgets a waiting server. */
static uv_pipe_t drop;
static admin_t *drop_waiting;

static void drop_take(admin_t *a);

static void on_drop_closed(uv_handle_t *h)
{
    (void)h;
    admin_t *a = drop_waiting;
    drop_waiting = NULL;
    if (a != NULL)
        drop_take(a);
}

static void drop_take(admin_t *a)
{
    uv_pipe_init(a->loop, &drop, 0);
    uv_accept((uv_stream_t *)&a->server, (uv_stream_t *)&drop);
    uv_close((uv_handle_t *)&drop, on_drop_closed);
}

static void drop_client(admin_t *a)
{
    log_warn("admin: out of memory for a client; closing it");
    if (drop.loop != NULL && uv_is_closing((uv_handle_t *)&drop))
        drop_waiting = a; /* libuv offers this server nothing more until it is taken */
    else
        drop_take(a);
}

static void on_connection(uv_stream_t *server, int status)
{
    admin_t *a = server->data;
    if (status < 0)
        return;
    admin_client_t *victim = NULL;
    if (a->nclients >= a->max_clients && (victim = oldest_idle(a)) != NULL) {
        client_close(victim);
        refuse_logged(a);
    } else if (a->nclients >= a->max_clients) {
        uv_pipe_t *p = malloc(sizeof *p);
        if (p == NULL) {
            drop_client(a);
            return;
        }
        uv_pipe_init(a->loop, p, 0);
        uv_accept(server, (uv_stream_t *)p);
        uv_close((uv_handle_t *)p, on_refused_closed);
        refuse_logged(a);
        return;
    }
    admin_client_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        drop_client(a);
        return;
    }
    c->a = a;
    c->next = a->clients;
    if (a->clients)
        a->clients->prev = c;
    a->clients = c;
    a->nclients++;
    uv_pipe_init(a->loop, &c->pipe, 0);
    uv_timer_init(a->loop, &c->idle);
    c->pipe.data = c;
    c->idle.data = c;
    c->handles = 2;
    uv_timer_start(&c->idle, on_idle, a->idle_ms, a->idle_ms);
    if (uv_accept(server, (uv_stream_t *)&c->pipe)) {
        client_close(c);
        return;
    }
    uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
}

static admin_t *admin_listen(admin_t *a, const char *path, config_errors_t *errs);

admin_t *admin_adopt(uv_loop_t *loop, const char *path, int fd, const admin_ops_t *ops, void *ctx,
                     config_errors_t *errs)
{
    admin_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->ops = ops;
    a->ctx = ctx;
    a->loop = loop;
    a->idle_ms = ADMIN_IDLE_MS;
    a->max_clients = ADMIN_CLIENTS_MAX;
    a->sock.fd = fd;
    struct sockaddr_un *sun = (struct sockaddr_un *)&a->sock.addr;
    sun->sun_family = AF_UNIX;
    snprintf(sun->sun_path, sizeof sun->sun_path, "%s", path);
    a->sock.addrlen = sizeof *sun;
    struct stat st;
    if (stat(path, &st) == 0 && S_ISSOCK(st.st_mode)) { /* ours to remove at the stop */
        a->sock.dev = st.st_dev;
        a->sock.ino = st.st_ino;
    }
    return admin_listen(a, path, errs);
}

int admin_fd(const admin_t *a)
{
    return a && a->server_init ? a->sock.fd : -1;
}

admin_t *admin_open(uv_loop_t *loop, const char *path, const admin_ops_t *ops, void *ctx,
                    config_errors_t *errs)
{
    admin_t *a = calloc(1, sizeof *a);
    if (a == NULL)
        return NULL;
    a->ops = ops;
    a->ctx = ctx;
    a->loop = loop;
    a->idle_ms = ADMIN_IDLE_MS;
    a->max_clients = ADMIN_CLIENTS_MAX;
    char err[512];
    /* Owner only: it can stop the daemon. */
    if (listen_open_unix(path, 0600, 16, "admin", &a->sock, err, sizeof err)) {
        config_errors_add(errs, NULL, 0, "admin socket: %s", err);
        free(a);
        return NULL;
    }
    return admin_listen(a, path, errs);
}

static admin_t *admin_listen(admin_t *a, const char *path, config_errors_t *errs)
{
    uv_loop_t *loop = a->loop;
    uv_pipe_init(loop, &a->server, 0);
    a->server.data = a;
    a->server_init = 1;
    int rc = uv_pipe_open(&a->server, a->sock.fd);
    if (rc == 0)
        rc = uv_listen((uv_stream_t *)&a->server, 16, on_connection);
    if (rc) {
        config_errors_add(errs, NULL, 0, "admin socket %s: %s", path, uv_strerror(rc));
        admin_stop(a);
        return a; /* freed by admin_free after the loop closes the handle */
    }
    return a;
}

void admin_set_limits(admin_t *a, unsigned idle_ms, unsigned max_clients)
{
    a->idle_ms = idle_ms;
    a->max_clients = max_clients;
}

static void on_server_closed(uv_handle_t *h) {}

void admin_stop(admin_t *a)
{
    if (a == NULL || !a->server_init)
        return;
    a->server_init = 0;
    if (drop_waiting == a)
        drop_waiting = NULL; /* its waiting client goes with the server */
    /* The pipe owns the descriptor and closes it; the path is ours to remove. */
    uv_close((uv_handle_t *)&a->server, on_server_closed);
    a->sock.fd = -1;
    listen_close(&a->sock);
    /* Clients still sending a request will get no answer now: close them, so the loop
     * can end. Answers being written or awaited (a reload told it is stopping) finish. */
    for (admin_client_t *c = a->clients; c; c = c->next)
        if (!c->answered && !c->running)
            client_close(c);
}

void admin_free(admin_t *a)
{
    if (a == NULL)
        return;
    listen_close(&a->sock);
    free(a);
}
