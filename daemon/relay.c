/*
 * host->relay: pipe two connections both ways.
 *
 * Each direction owns one buffer (RELAY_BUF bytes) and reads only while that buffer is
 * free: a read is written at once (uv_try_write, no copy); if the far side cannot take it
 * all, the rest is queued from the same buffer and reading that direction stops until the
 * write completes. So memory per relay is bounded and a slow reader slows its writer. EOF
 * on one side becomes shutdown(SHUT_WR) on the other while the other direction goes on.
 * The relay ends when both directions are done, on an error, or after idle_ms without a
 * byte either way.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "worker.h"

#define RELAY_BUF (64 * 1024)

typedef struct relay relay_t;

typedef struct relay_dir {
    relay_t *r;
    berth_conn_t *from, *to;
    int up; /* client -> peer */
    char *buf;
    uv_write_t wreq;
    uv_shutdown_t sreq;
    unsigned reading : 1, writing : 1, eof : 1, shut : 1, done : 1;
    uint64_t bytes;
} relay_dir_t;

struct relay {
    relay_dir_t dir[2]; /* [0] up: client -> peer, [1] down: peer -> client */
    berth_conn_t *client, *peer;
    uv_timer_t idle;
    uint64_t idle_ms;
    uint64_t last;
    berth_relay_cb cb;
    void *arg;
    int refs; /* the relay itself, in-flight writes/shutdowns, the idle timer's close */
    int ended;
    int error;
};

static void relay_end(relay_t *r, int error);
static void dir_update(relay_dir_t *d);

static void relay_unref(relay_t *r)
{
    if (--r->refs > 0)
        return;
    free(r->dir[0].buf);
    free(r->dir[1].buf);
    free(r);
}

static relay_dir_t *dir_of(uv_stream_t *s)
{
    berth_conn_t *c = s->data;
    relay_t *r = c->relay;
    return c == r->client ? &r->dir[0] : &r->dir[1];
}

static void touch(relay_t *r)
{
    r->last = uv_now(&r->client->w->loop);
    conn_touch(r->client);
    conn_touch(r->peer);
}

static void dir_done(relay_dir_t *d)
{
    d->done = 1;
    relay_t *r = d->r;
    if (r->dir[0].done && r->dir[1].done)
        relay_end(r, 0);
}

static void on_shutdown(uv_shutdown_t *req, int status)
{
    relay_dir_t *d = req->data;
    relay_t *r = d->r;
    d->shut = 1;
    if (!r->ended)
        dir_done(d);
    relay_unref(r);
}

/* EOF read and everything written: pass the EOF on. */
static void dir_forward_eof(relay_dir_t *d)
{
    relay_t *r = d->r;
    if (d->writing || d->shut || r->ended)
        return;
    d->sreq.data = d;
    if (uv_shutdown(&d->sreq, &d->to->h.stream, on_shutdown) == 0) {
        r->refs++;
        d->shut = 1; /* requested; on_shutdown marks the direction done */
        return;
    }
    dir_done(d);
}

static void on_write(uv_write_t *req, int status)
{
    relay_dir_t *d = req->data;
    relay_t *r = d->r;
    d->writing = 0;
    if (!r->ended) {
        if (status < 0) {
            relay_end(r, status);
        } else {
            touch(r);
            if (d->eof)
                dir_forward_eof(d);
            else
                dir_update(d);
        }
    }
    relay_unref(r);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *buf)
{
    relay_dir_t *d = dir_of((uv_stream_t *)h);
    *buf = uv_buf_init(d->buf, RELAY_BUF);
}

static void on_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
    relay_dir_t *d = dir_of(s);
    relay_t *r = d->r;
    if (n == 0 || r->ended)
        return;
    if (n == UV_EOF) {
        d->eof = 1;
        dir_update(d);
        dir_forward_eof(d);
        return;
    }
    if (n < 0) {
        relay_end(r, (int)n);
        return;
    }
    touch(r);
    d->bytes += (uint64_t)n;
    if (d->up)
        conn_count_in(r->client, (size_t)n);
    else
        conn_count_out(r->client, (size_t)n);
    uv_buf_t b = uv_buf_init(d->buf, (unsigned)n);
    int w = uv_try_write(&d->to->h.stream, &b, 1);
    if (w == (int)n)
        return; /* all out: keep reading into the same buffer */
    if (w < 0 && w != UV_EAGAIN) {
        relay_end(r, w);
        return;
    }
    size_t off = w > 0 ? (size_t)w : 0;
    b = uv_buf_init(d->buf + off, (unsigned)((size_t)n - off));
    d->wreq.data = d;
    int rc = uv_write(&d->wreq, &d->to->h.stream, &b, 1, on_write);
    if (rc) {
        relay_end(r, rc);
        return;
    }
    r->refs++;
    d->writing = 1;
    dir_update(d); /* the buffer is lent to the write: stop reading into it */
}

static void dir_update(relay_dir_t *d)
{
    int want = !d->r->ended && !d->eof && !d->writing;
    if (want && !d->reading) {
        if (uv_read_start(&d->from->h.stream, on_alloc, on_read) == 0)
            d->reading = 1;
    } else if (!want && d->reading) {
        uv_read_stop(&d->from->h.stream);
        d->reading = 0;
    }
}

static void on_idle_closed(uv_handle_t *h)
{
    relay_unref(h->data);
}

static void on_idle(uv_timer_t *t)
{
    relay_t *r = t->data;
    uint64_t now = uv_now(&r->client->w->loop);
    if (now - r->last >= r->idle_ms) {
        relay_end(r, UV_ETIMEDOUT);
        return;
    }
    uv_timer_start(&r->idle, on_idle, r->idle_ms - (now - r->last), 0);
}

static void relay_end(relay_t *r, int error)
{
    if (r->ended)
        return;
    r->ended = 1;
    r->error = error;
    uv_timer_stop(&r->idle);
    uv_close((uv_handle_t *)&r->idle, on_idle_closed);
    for (int i = 0; i < 2; i++) {
        relay_dir_t *d = &r->dir[i];
        if (d->reading && !d->from->closed)
            uv_read_stop(&d->from->h.stream);
        d->reading = 0;
    }
    berth_conn_t *c = r->client, *p = r->peer;
    c->relay = NULL;
    p->relay = NULL;
    if (r->cb) {
        berth_relay_stats_t st = {r->dir[0].bytes, r->dir[1].bytes, error};
        r->cb(c, &st, r->arg);
    }
    /* Both directions finished cleanly: nothing is left to say to either side. */
    c->eof = p->eof = 1;
    if (error) {
        conn_abort(c);
        conn_abort(p);
    } else {
        conn_close(c);
        conn_close(p);
    }
    relay_unref(r);
}

/* A relayed conn is being closed from outside (drain deadline, abort): end the relay. */
void relay_on_close(berth_conn_t *c)
{
    relay_t *r = c->relay;
    if (r)
        relay_end(r, UV_ECANCELED);
}

int relay_start(berth_conn_t *c, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                void *arg)
{
    if (c == NULL || peer == NULL || c == peer || c->kind != CONN_STREAM ||
        peer->kind != CONN_OUTBOUND)
        return -EINVAL;
    if (c->relay || peer->relay || c->closing || c->closed || peer->closing || peer->closed)
        return -EPIPE;
    relay_t *r = calloc(1, sizeof *r);
    if (r == NULL)
        return -ENOMEM;
    r->dir[0].buf = malloc(RELAY_BUF);
    r->dir[1].buf = malloc(RELAY_BUF);
    if (!r->dir[0].buf || !r->dir[1].buf) {
        free(r->dir[0].buf);
        free(r->dir[1].buf);
        free(r);
        return -ENOMEM;
    }
    /* The plugin's reads stop here; the relay reads both sides from now on. */
    if (c->reading) {
        uv_read_stop(&c->h.stream);
        c->reading = 0;
    }
    r->client = c;
    r->peer = peer;
    r->cb = done;
    r->arg = arg;
    r->idle_ms = idle_ms;
    r->refs = 2; /* the relay, the idle timer */
    r->dir[0] = (relay_dir_t){.r = r, .from = c, .to = peer, .up = 1, .buf = r->dir[0].buf};
    r->dir[1] = (relay_dir_t){.r = r, .from = peer, .to = c, .up = 0, .buf = r->dir[1].buf};
    c->relay = r;
    peer->relay = r;
    uv_timer_init(&c->w->loop, &r->idle);
    r->idle.data = r;
    touch(r);
    if (idle_ms)
        uv_timer_start(&r->idle, on_idle, idle_ms, 0);
    /* A client that already half-closed (EOF seen by the plugin) starts that way. */
    if (c->eof) {
        r->dir[0].eof = 1;
        dir_forward_eof(&r->dir[0]);
    }
    dir_update(&r->dir[0]);
    dir_update(&r->dir[1]);
    return 0;
}
