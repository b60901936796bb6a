/*
 * bare-uv-echo: the reference berthd's echo is measured against, the smallest correct libuv
 * echo server written the way a careful libuv user would: one loop, one read buffer for the
 * whole loop, the bytes written back with uv_try_write, and only what the socket does not take
 * at once copied and queued with uv_write (no malloc, no write request on the fast path).
 * Reading stops while a connection's write queue is over 1 MiB (libuv queues writes without
 * limit); EOF flushes what is queued with uv_shutdown before closing.
 *
 * usage: bare-uv-echo [HOST:]PORT | [V6]:PORT | unix:PATH    (HOST defaults to 127.0.0.1)
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <uv.h>

#define HIGH_WATER (1u << 20)
#define LOW_WATER (256u << 10)

typedef union stream {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_tcp_t tcp;
    uv_pipe_t pipe;
} stream_t;

typedef struct write_req {
    uv_write_t req;
    uv_buf_t buf;
} write_req_t;

static uv_loop_t *loop;
static int is_unix;

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf);

static void on_close(uv_handle_t *h)
{
    free(h);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    uv_close((uv_handle_t *)req->handle, on_close);
    free(req);
}

/* One buffer for the loop: read_cb consumes it before the loop reads again. */
static char read_buf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    *buf = uv_buf_init(read_buf, sizeof read_buf);
}

static void on_write(uv_write_t *req, int status)
{
    write_req_t *w = (write_req_t *)req;
    uv_stream_t *s = req->handle;
    free(w->buf.base);
    free(w);
    /* data != NULL: reading was stopped for backpressure (and the handle is not closing). */
    if (status == 0 && s->data && uv_stream_get_write_queue_size(s) < LOW_WATER) {
        s->data = NULL;
        uv_read_start(s, on_alloc, on_read);
    }
}

/* Queue a copy of what the socket did not take at once; 0 or a libuv error. */
static int queue_copy(uv_stream_t *s, const char *data, size_t len)
{
    write_req_t *w = malloc(sizeof *w);
    char *copy = malloc(len);
    if (!w || !copy) {
        free(w);
        free(copy);
        return UV_ENOMEM;
    }
    memcpy(copy, data, len);
    w->buf = uv_buf_init(copy, (unsigned)len);
    int rc = uv_write(&w->req, s, &w->buf, 1, on_write);
    if (rc != 0) {
        free(copy);
        free(w);
        return rc;
    }
    if (uv_stream_get_write_queue_size(s) > HIGH_WATER) {
        uv_read_stop(s);
        s->data = s;
    }
    return 0;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
    if (nread > 0) {
        uv_buf_t out = uv_buf_init(buf->base, (unsigned)nread);
        /* UV_EAGAIN also when writes are queued already: then all of it goes behind them. */
        int n = uv_try_write(s, &out, 1);
        if (n == UV_EAGAIN)
            n = 0;
        if (n < 0 || (n < nread && queue_copy(s, buf->base + n, (size_t)(nread - n)) != 0))
            uv_close((uv_handle_t *)s, on_close);
        return;
    }
    if (nread == 0)
        return;
    uv_shutdown_t *req = nread == UV_EOF ? malloc(sizeof *req) : NULL;
    uv_read_stop(s);
    if (!req || uv_shutdown(req, s, on_shutdown) != 0) {
        free(req);
        uv_close((uv_handle_t *)s, on_close);
    }
}

static void on_connection(uv_stream_t *server, int status)
{
    if (status < 0) {
        fprintf(stderr, "bare-uv-echo: accept: %s\n", uv_strerror(status));
        return;
    }
    stream_t *c = malloc(sizeof *c);
    if (!c)
        return;
    if (is_unix)
        uv_pipe_init(loop, &c->pipe, 0);
    else
        uv_tcp_init(loop, &c->tcp);
    c->stream.data = NULL;
    if (uv_accept(server, &c->stream) != 0) {
        uv_close(&c->handle, on_close);
        return;
    }
    if (!is_unix)
        uv_tcp_nodelay(&c->tcp, 1);
    if (uv_read_start(&c->stream, on_alloc, on_read) != 0)
        uv_close(&c->handle, on_close);
}

static int bind_target(stream_t *server, const char *arg)
{
    if (strncmp(arg, "unix:", 5) == 0) {
        is_unix = 1;
        uv_pipe_init(loop, &server->pipe, 0);
        return uv_pipe_bind(&server->pipe, arg + 5);
    }
    char host[64] = "127.0.0.1";
    const char *port = arg;
    const char *colon = strrchr(arg, ':');
    if (colon) {
        const char *h = arg, *e = colon;
        if (*h == '[' && e > h && e[-1] == ']') {
            h++;
            e--;
        }
        if ((size_t)(e - h) >= sizeof host)
            return UV_EINVAL;
        memcpy(host, h, (size_t)(e - h));
        host[e - h] = '\0';
        port = colon + 1;
    }
    int p = atoi(port);
    struct sockaddr_storage ss;
    int rc = strchr(host, ':') ? uv_ip6_addr(host, p, (struct sockaddr_in6 *)&ss)
                               : uv_ip4_addr(host, p, (struct sockaddr_in *)&ss);
    if (rc != 0)
        return rc;
    uv_tcp_init(loop, &server->tcp);
    return uv_tcp_bind(&server->tcp, (const struct sockaddr *)&ss, 0);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: bare-uv-echo [HOST:]PORT | [V6]:PORT | unix:PATH\n");
        return 100;
    }
    signal(SIGPIPE, SIG_IGN);
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    loop = uv_default_loop();
    stream_t server;
    int rc = bind_target(&server, argv[1]);
    if (rc == 0)
        rc = uv_listen(&server.stream, 1024, on_connection);
    if (rc != 0) {
        fprintf(stderr, "bare-uv-echo: %s: %s\n", argv[1], uv_strerror(rc));
        return 111;
    }
    return uv_run(loop, UV_RUN_DEFAULT);
}
