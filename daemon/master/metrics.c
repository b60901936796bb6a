/*
 * The /metrics endpoint (see metrics.h): a libuv server on the master's loop. A client is
 * read into a fixed buffer until its headers end, answered with one write, shut down for
 * writing, and read (and discarded) until its EOF, so closing never resets the answer away;
 * its deadline timer ends the exchange whatever it does.
 */
#include "master/metrics.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "core/log.h"
#include "master/listen.h"

#define UV__ERR_FROM(e) (-(e)) /* libuv's error codes are -errno on unix */

typedef struct metrics_client {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } h;
    uv_timer_t deadline;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    metrics_t *m;
    struct metrics_client *prev, *next;
    int closes;        /* handles whose close callback is still owed */
    int answered;      /* the answer is queued: what comes in now is discarded */
    int written;       /* ... and written whole: only the client's EOF is awaited */
    metrics_buf_t out; /* the answer, alive until its write completes */
    size_t len;
    char req[METRICS_REQUEST_MAX];
} metrics_client_t;

struct metrics {
    union {
        uv_handle_t handle;
        uv_stream_t stream;
        uv_tcp_t tcp;
        uv_pipe_t pipe;
    } server;
    uv_loop_t *loop;
    const stats_t *stats;
    metrics_client_t *clients; /* newest first */
    unsigned nclients;
    uint64_t refused, refused_logged, refused_log_at; /* newcomers closed at the cap */
    int closing;
    /* binary upgrade (metrics_pause): the listener's handle is closed, its socket kept in
     * paused_fd, and `quiet` is called once the clients it had are gone */
    int server_open; /* the server handle is open (or its close callback is owed) */
    int is_unix;
    unsigned live; /* clients not yet freed */
    int paused_fd;
    void (*quiet)(void *arg);
    void *quiet_arg;
    char path[sizeof(((struct sockaddr_un *)0)->sun_path)]; /* a unix socket's, to unlink */
    dev_t dev; /* ... only while the file there is still the one we bound */
    ino_t ino;
};

/* Remember which file at m->path is ours, so that closing removes that one only (a reload
 * that moved the socket, or another process's file put there since, is left alone). */
static void own_path(metrics_t *m)
{
    struct stat st;
    if (m->path[0] && stat(m->path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        m->dev = st.st_dev;
        m->ino = st.st_ino;
    } else {
        m->path[0] = '\0';
    }
}

/* Nothing left open: free a closed one; tell a paused one's waiter. */
static void settle(metrics_t *m)
{
    if (m->server_open || m->live)
        return;
    if (m->closing) {
        if (m->paused_fd >= 0)
            close(m->paused_fd);
        struct stat st;
        if (m->path[0] && stat(m->path, &st) == 0 && st.st_dev == m->dev && st.st_ino == m->ino)
            unlink(m->path);
        free(m);
        return;
    }
    void (*cb)(void *) = m->quiet;
    m->quiet = NULL;
    if (cb)
        cb(m->quiet_arg);
}

static void client_closed(uv_handle_t *h)
{
    metrics_client_t *c = h->data;
    if (--c->closes > 0)
        return;
    metrics_t *m = c->m;
    metrics_buf_free(&c->out);
    free(c);
    m->live--;
    settle(m);
}

static void client_end(metrics_client_t *c)
{
    if (uv_is_closing(&c->h.handle))
        return;
    metrics_t *m = c->m;
    if (c->prev)
        c->prev->next = c->next;
    else
        m->clients = c->next;
    if (c->next)
        c->next->prev = c->prev;
    m->nclients--;
    uv_close(&c->h.handle, client_closed);
    uv_close((uv_handle_t *)&c->deadline, client_closed);
}

static void on_deadline(uv_timer_t *t)
{
    client_end(t->data);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    (void)req;
    (void)status; /* the read side sees the EOF, or the deadline ends it */
}

static void on_written(uv_write_t *req, int status)
{
    metrics_client_t *c = req->data;
    if (status < 0) {
        client_end(c);
        return;
    }
    c->written = 1;
    c->sreq.data = c;
    if (uv_shutdown(&c->sreq, &c->h.stream, on_shutdown) < 0)
        client_end(c);
}

static const char *reason_phrase(int status)
{
    switch (status) {
    case 200:
        return "OK";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 431:
        return "Request Header Fields Too Large";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Bad Request";
    }
}

static void answer(metrics_client_t *c, int status, int head)
{
    c->answered = 1;
    metrics_buf_t body = {.cap = METRICS_BODY_MAX};
    const char *type = "text/plain; charset=utf-8";
    if (status == 200) {
        if (metrics_render(c->m->stats, &body) < 0) {
            log_warn("metrics: the answer is over %u bytes or out of memory", METRICS_BODY_MAX);
            metrics_buf_free(&body);
            body = (metrics_buf_t){.cap = METRICS_BODY_MAX};
            status = 500;
        } else {
            type = "text/plain; version=0.0.4; charset=utf-8";
        }
    }
    if (status != 200)
        metrics_buf_printf(&body, "%d %s\n", status,
                           status == 500 ? "Internal Server Error" : reason_phrase(status));
    c->out.cap = METRICS_BODY_MAX + 1024;
    metrics_buf_printf(&c->out,
                       "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\n%s"
                       "Connection: close\r\n\r\n",
                       status, status == 500 ? "Internal Server Error" : reason_phrase(status),
                       type, body.len, status == 405 ? "Allow: GET, HEAD\r\n" : "");
    if (!head && body.len)
        metrics_buf_printf(&c->out, "%.*s", (int)body.len, body.data);
    metrics_buf_free(&body);
    if (c->out.over) {
        client_end(c);
        return;
    }
    uv_buf_t buf = uv_buf_init(c->out.data, (unsigned)c->out.len);
    c->wreq.data = c;
    if (uv_write(&c->wreq, &c->h.stream, &buf, 1, on_written) < 0)
        client_end(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    (void)hint;
    metrics_client_t *c = h->data;
    if (c->answered) {
        c->len = 0; /* discarded: only the EOF matters now */
        *buf = uv_buf_init(c->req, sizeof c->req);
        return;
    }
    *buf = uv_buf_init(c->req + c->len, (unsigned)(sizeof c->req - c->len));
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    metrics_client_t *c = s->data;
    if (nread == 0)
        return;
    if (nread < 0) {
        /* A client that half-closes after its request (printf ... | nc) still gets the whole
         * answer: with one queued, only reading stops, and on_written (or the deadline) ends
         * it. Before an answer, or on an error, there is nobody to answer. */
        if (nread == UV_EOF && c->answered) {
            uv_read_stop(&c->h.stream);
            return;
        }
        client_end(c);
        return;
    }
    if (c->answered)
        return;
    c->len += (size_t)nread;
    int head = 0;
    metrics_req_status_t st = metrics_request_parse(c->req, c->len, &head);
    if (st != METRICS_REQ_MORE)
        answer(c, (int)st, head);
}

/* At the cap, who makes room for a newcomer (the admin socket's rule, admin.c): the oldest
 * client that has not sent a whole request yet; else the oldest whose answer is written
 * whole (its write side is shut down and it is only awaited for its EOF: closing it now
 * loses nothing of the answer); else nobody, and the newcomer is refused. A scrape whose
 * request is in and whose answer is still being written is never cut for a newcomer, so
 * a peer that keeps opening connections cannot push a scraper out. */
static metrics_client_t *evictable(metrics_t *m)
{
    metrics_client_t *idle = NULL, *done = NULL;
    for (metrics_client_t *c = m->clients; c; c = c->next) { /* newest first */
        if (!c->answered)
            idle = c;
        else if (c->written)
            done = c;
    }
    return idle ? idle : done;
}

static void refuse_logged(metrics_t *m)
{
    m->refused++;
    uint64_t now = uv_now(m->loop);
    if (m->refused_log_at && now - m->refused_log_at < 60000)
        return;
    log_warn("metrics: at the cap of %u clients, each with a scrape in progress; closed %llu "
             "newcomer(s)",
             METRICS_CLIENTS, (unsigned long long)(m->refused - m->refused_logged));
    m->refused_logged = m->refused;
    m->refused_log_at = now ? now : 1;
}

/* Out of memory for a client: libuv has accept()ed it already and polls the server again
 * only once it is taken, so take it into a handle of our own and close it, or /metrics
 * would stop for good. While that handle is still closing (a second client in the same
 * turn), the server waits, untaken, for its close callback to take it; server_close
 * forgets a waiting server. */
static union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} drop;
static metrics_t *drop_waiting;

static void drop_take(metrics_t *m);

static void on_drop_closed(uv_handle_t *h)
{
    (void)h;
    metrics_t *m = drop_waiting;
    drop_waiting = NULL;
    if (m != NULL)
        drop_take(m);
}

static void drop_take(metrics_t *m)
{
    if (m->server.handle.type == UV_NAMED_PIPE)
        uv_pipe_init(m->loop, &drop.pipe, 0);
    else
        uv_tcp_init(m->loop, &drop.tcp);
    uv_accept(&m->server.stream, &drop.stream);
    uv_close(&drop.handle, on_drop_closed);
}

static void drop_client(metrics_t *m)
{
    log_warn("metrics: out of memory for a client; closing it");
    if (drop.handle.loop != NULL && uv_is_closing(&drop.handle))
        drop_waiting = m; /* libuv offers this server nothing more until it is taken */
    else
        drop_take(m);
}

static void on_connection(uv_stream_t *server, int status)
{
    metrics_t *m = server->data;
    if (status < 0 || m->closing)
        return;
    int unix_sock = server->type == UV_NAMED_PIPE;
    metrics_client_t *c = calloc(1, sizeof *c);
    if (c == NULL) {
        drop_client(m);
        return;
    }
    c->m = m;
    m->live++;
    if (unix_sock)
        uv_pipe_init(m->loop, &c->h.pipe, 0);
    else
        uv_tcp_init(m->loop, &c->h.tcp);
    c->h.handle.data = c;
    c->closes = 1;
    if (uv_accept(server, &c->h.stream) < 0) {
        uv_close(&c->h.handle, client_closed);
        return;
    }
    if (m->nclients >= METRICS_CLIENTS) {
        metrics_client_t *victim = evictable(m);
        if (victim == NULL) {
            refuse_logged(m);
            uv_close(&c->h.handle, client_closed);
            return;
        }
        client_end(victim);
    }
    uv_timer_init(m->loop, &c->deadline);
    c->deadline.data = c;
    c->closes = 2;
    c->next = m->clients;
    if (m->clients)
        m->clients->prev = c;
    m->clients = c;
    m->nclients++;
    uv_timer_start(&c->deadline, on_deadline, METRICS_DEADLINE_MS, 0);
    if (uv_read_start(&c->h.stream, on_alloc, on_read) < 0)
        client_end(c);
}

static void server_closed(uv_handle_t *h)
{
    metrics_t *m = h->data;
    m->server_open = 0;
    settle(m);
}

static void server_close(metrics_t *m)
{
    if (drop_waiting == m)
        drop_waiting = NULL; /* its waiting client goes with the server */
    uv_close(&m->server.handle, server_closed);
}

metrics_t *metrics_open(uv_loop_t *loop, const struct sockaddr *addr, socklen_t addrlen,
                        const stats_t *stats, char *err, size_t errlen)
{
    metrics_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    m->loop = loop;
    m->stats = stats;
    m->server_open = 1;
    m->paused_fd = -1;
    m->is_unix = addr->sa_family == AF_UNIX;
    int rc;
    if (addr->sa_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)addr;
        size_t n = addrlen > offsetof(struct sockaddr_un, sun_path)
                       ? strnlen(un->sun_path, addrlen - offsetof(struct sockaddr_un, sun_path))
                       : 0;
        uv_pipe_init(loop, &m->server.pipe, 0);
        m->server.handle.data = m;
        if (n == 0 || n >= sizeof m->path) {
            rc = UV_EINVAL;
        } else {
            memcpy(m->path, un->sun_path, n);
            m->path[n] = '\0';
            /* The listeners' rules: a stale socket file is replaced; a live one (another
             * berthd's) or a file that is not a socket is an error, never removed. Bound
             * here, not by uv_pipe_bind: libuv removes the file of a pipe it bound when the
             * handle closes, and a binary upgrade closes the handle (metrics_pause) with the
             * socket going on in the next image. settle() removes it at the end. */
            lsock_t ls;
            char why[512];
            if (listen_open_unix(m->path, 0600, 128, "metrics", &ls, why, sizeof why) < 0) {
                snprintf(err, errlen, "%s", why);
                m->path[0] = '\0';
                m->closing = 1;
                server_close(m);
                return NULL;
            }
            free(ls.address);
            free(ls.name);
            rc = uv_pipe_open(&m->server.pipe, ls.fd);
            if (rc) {
                unlink(m->path);
                close(ls.fd);
                m->path[0] = '\0';
            } else {
                own_path(m);
            }
        }
    } else {
        uv_tcp_init(loop, &m->server.tcp);
        m->server.handle.data = m;
        rc = uv_tcp_bind(&m->server.tcp, addr, 0);
    }
    if (rc == 0)
        rc = uv_listen(&m->server.stream, 128, on_connection);
    if (rc) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        m->closing = 1;
        server_close(m);
        return NULL;
    }
    return m;
}

metrics_t *metrics_adopt(uv_loop_t *loop, int fd, const stats_t *stats, char *err, size_t errlen)
{
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    int listening = 0;
    socklen_t ll = sizeof listening;
    if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0 ||
        getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &ll) < 0 || !listening) {
        snprintf(err, errlen, "descriptor %d is not a listening socket", fd);
        close(fd);
        return NULL;
    }
    metrics_t *m = calloc(1, sizeof *m);
    if (m == NULL) {
        snprintf(err, errlen, "out of memory");
        close(fd);
        return NULL;
    }
    m->loop = loop;
    m->stats = stats;
    m->server_open = 1;
    m->paused_fd = -1;
    m->is_unix = ss.ss_family == AF_UNIX;
    int rc;
    if (ss.ss_family == AF_UNIX) {
        const struct sockaddr_un *un = (const struct sockaddr_un *)&ss;
        size_t off = offsetof(struct sockaddr_un, sun_path);
        size_t n = sl > off ? strnlen(un->sun_path, sl - off) : 0;
        uv_pipe_init(loop, &m->server.pipe, 0);
        m->server.handle.data = m;
        rc = uv_pipe_open(&m->server.pipe, fd);
        if (rc == 0 && n > 0 && n < sizeof m->path) {
            memcpy(m->path, un->sun_path, n);
            m->path[n] = '\0';
            own_path(m);
        }
    } else {
        uv_tcp_init(loop, &m->server.tcp);
        m->server.handle.data = m;
        rc = uv_tcp_open(&m->server.tcp, fd);
    }
    if (rc) {
        close(fd); /* not the handle's yet */
    } else {
        /* listen() again on a listening socket only sets the backlog: the connections that
         * waited in it during the exec are accepted now. */
        rc = uv_listen(&m->server.stream, 128, on_connection);
    }
    if (rc) {
        snprintf(err, errlen, "%s", uv_strerror(rc));
        m->path[0] = '\0'; /* not removed: a failed adoption leaves it to whoever goes on */
        m->closing = 1;
        server_close(m);
        return NULL;
    }
    return m;
}

int metrics_fd(const metrics_t *m)
{
    uv_os_fd_t fd = -1;
    if (m == NULL || m->closing)
        return -1;
    if (m->paused_fd >= 0)
        return m->paused_fd;
    return uv_fileno(&m->server.handle, &fd) < 0 ? -1 : fd;
}

int metrics_pause(metrics_t *m, void (*quiet)(void *arg), void *arg)
{
    if (m == NULL || m->closing || m->paused_fd >= 0)
        return -EINVAL;
    uv_os_fd_t fd = -1;
    if (uv_fileno(&m->server.handle, &fd) < 0)
        return -EBADF;
    m->paused_fd = fcntl(fd, F_DUPFD_CLOEXEC, 3);
    if (m->paused_fd < 0)
        return -errno;
    m->quiet = quiet;
    m->quiet_arg = arg;
    server_close(m);
    return 0;
}

int metrics_resume(metrics_t *m)
{
    if (m == NULL || m->closing || m->paused_fd < 0)
        return 0;
    m->quiet = NULL;
    if (m->server_open)
        return -EBUSY; /* its close callback has not run yet */
    int rc;
    if (m->is_unix) {
        uv_pipe_init(m->loop, &m->server.pipe, 0);
        m->server.handle.data = m;
        rc = uv_pipe_open(&m->server.pipe, m->paused_fd);
    } else {
        uv_tcp_init(m->loop, &m->server.tcp);
        m->server.handle.data = m;
        rc = uv_tcp_open(&m->server.tcp, m->paused_fd);
    }
    m->server_open = 1;
    if (rc == 0) {
        m->paused_fd = -1; /* the handle's now */
        rc = uv_listen(&m->server.stream, 128, on_connection);
    }
    if (rc) {
        log_error("metrics: cannot listen again after the upgrade failed: %s", uv_strerror(rc));
        server_close(m);
    }
    return rc;
}

const char *metrics_where(const metrics_t *m, char *buf, size_t len)
{
    if (m->path[0]) {
        snprintf(buf, len, "%s", m->path);
        return buf;
    }
    struct sockaddr_storage ss;
    int n = sizeof ss;
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (uv_tcp_getsockname(&m->server.tcp, (struct sockaddr *)&ss, &n) == 0) {
        if (ss.ss_family == AF_INET6) {
            const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)&ss;
            uv_ip6_name(in6, host, sizeof host);
            port = ntohs(in6->sin6_port);
        } else {
            const struct sockaddr_in *in = (const struct sockaddr_in *)&ss;
            uv_ip4_name(in, host, sizeof host);
            port = ntohs(in->sin_port);
        }
    }
    snprintf(buf, len, ss.ss_family == AF_INET6 ? "[%s]:%d" : "%s:%d", host, port);
    return buf;
}

void metrics_close(metrics_t *m)
{
    if (m == NULL || m->closing)
        return;
    m->closing = 1;
    m->quiet = NULL;
    while (m->clients)
        client_end(m->clients);
    if (m->paused_fd >= 0 && !m->server_open)
        settle(m); /* paused: the handle is closed already (freed now or by the last client) */
    else if (!uv_is_closing(&m->server.handle))
        server_close(m);
}
