/*
 * upload: the seeds' framed file upload (002_*, `put`), as a plugin a user can trust with
 * their files.
 *
 * The stream is cut into frames by frame.c and headers are read by header.c; this file
 * turns them into a queue of operations per connection, run strictly in order:
 *
 *   OPEN (create the temporary file)  WRITE... (append + hash)  COMMIT (verify, fsync,
 *   rename, fsync dir)  DISCARD (remove a truncated file)  REPLY (a ready frame)  CLOSE
 *
 * Disk operations run on the host's thread pool (host->work), one at a time per
 * connection, so replies leave in the order the files came and the loop never waits on the
 * disk. While more than QUEUED_HIGH bytes wait for the disk the connection is paused, so a
 * slow disk slows the client instead of filling memory.
 *
 * A file whose last byte has arrived is stored even if the client is gone by then (the
 * seed's client closes right after sending, without reading replies): finish() runs what is
 * left of such a file's queue itself. Anything less than a whole file is removed.
 *
 * Replies are held while the client keeps sending, unless its headers say "reply": "each"
 * (berth-upload does). The seed's client never reads a reply: one left unread in its socket
 * when it exits makes its kernel reset the connection and drop the bytes it still had queued
 * behind Nagle, truncating its last file. Held replies go out once the client has sent
 * nothing for HOLD_MS (while we do not pause it ourselves), at its EOF, before we close, or
 * past HOLD_MAX bytes.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#include <berth/handler.h>

#include "frame.h"
#include "header.h"
#include "store.h"
#include "upload_metrics.h"

#define UPLOAD_VERSION "1.0"

/* One disk write carries at most this much (a bigger chunk from the host is split). Each op
 * costs two pool round trips (append and hash) with their thread wake-ups, which on a busy or
 * virtualised machine cost more than the copy: measured at 256 KiB per op, the worker made
 * about 11,000 futex calls per 256 MiB and spent most of its time switching threads. */
#define OP_MAX_BYTES ((size_t)1 << 20)
#define OP_GROW_STEP ((size_t)256 << 10)
/* From this size on, a write's pwrite and its hashing run at once on two pool threads. */
#define SPLIT_MIN_BYTES ((size_t)128 << 10)
/* Pause reading once this much received data waits for the disk (plus one op in flight and
 * one read, at most OP_GROW_STEP into an op by host->recv_into: about 2.8 MiB of data, 3 MiB
 * of buffers at most, per upload; 1 MiB here halved the one-client speed, measured)... */
#define QUEUED_HIGH ((size_t)3 << 19)
/* ...and resume once it is down to this, not at the first byte under the mark, so a
 * connection does not flip between paused and reading on every op. */
#define QUEUED_LOW ((size_t)1 << 19)
/* ...or this many ops wait (tiny files or refused headers behind a slow one). */
#define OPS_HIGH 256

#define HOLD_MS 200
/* How soon a disk op the pool had no room for is offered again. */
#define RETRY_MS 5
#define HOLD_MAX ((size_t)64 << 10)

static const berth_host_t *host;

typedef struct upload_listener {
    char *dir;
    int dirfd;
    uint64_t max_size;
    uint64_t max_header;
    int overwrite;
    int do_fsync;
    uint64_t max_pending;
    uint64_t header_ms;       /* accept or the end of a file -> a whole header */
    uint64_t min_rate;        /* body bytes per second, 0: no floor */
    uint64_t min_rate_window; /* ms: the floor is judged over each window */
    uint64_t min_free;        /* bytes kept free on dir's file system, or... */
    unsigned min_free_pct;    /* ...this percentage of it (when min_free is 0) */
    /* Bytes announced by accepted headers and not yet received, over this worker's conns
     * (one loop per worker: no lock). */
    uint64_t pending;
    berth_listener_t *l;
    struct upload_listener *next; /* every open listener of this process, for the sweep */
} upload_listener_t;

static upload_listener_t *listeners; /* one loop per worker: no lock */

/* One file, from its header to its outcome. Shared by the ops that work on it. */
typedef struct ufile {
    upload_header_t h;
    upload_store_t st; /* touched only by the op running (thread) or by finish() */
    int overwrite, do_fsync;
    upload_listener_t *ls;
    uint64_t charged; /* of ls->pending: announced, not yet received */
    uint64_t received;
    int complete; /* every body byte has arrived */
    int done;     /* the outcome is decided, replied and logged */
    int refs;
    uint64_t t0_ns;
} ufile_t;

typedef enum op_kind { OP_OPEN, OP_WRITE, OP_COMMIT, OP_DISCARD, OP_REPLY, OP_CLOSE } op_kind_t;

typedef struct op {
    struct op *next;
    op_kind_t kind;
    ufile_t *f;         /* disk ops */
    unsigned char *buf; /* WRITE: data; REPLY: a whole frame */
    size_t len, cap;
    int halves; /* works in flight for it: 2 when a WRITE's append and hash run apart */
    /* Results, written by the pool threads, read on the loop after done(). */
    int ran, ran_hash;
    int status, hash_status;
    const char *why;
    unsigned char sha256[32];
} op_t;

typedef struct uconn {
    berth_conn_t *conn;
    upload_listener_t *ls;
    upload_frame_t frame;
    ufile_t *cur;  /* the file whose body is arriving, or NULL */
    int skipping;  /* the body arriving is a refused file's: dropped */
    int closing;   /* no more input is taken; a CLOSE is queued */
    int paused;    /* our own pause is in force */
    int finishing; /* in finish(): run what is left here, no host calls but log */
    op_t *head, *tail;
    op_t *inflight;      /* the head op while the pool runs it */
    size_t queued;       /* WRITE bytes not yet handed to the pool */
    unsigned nops;       /* ops in the queue */
    int reply_now;       /* replies go out at once: the client asked, or sent its EOF */
    unsigned char *held; /* reply frames held while the client is sending */
    size_t held_len, held_cap;
    berth_timer_t *hold_timer;
    berth_timer_t *header_timer; /* header_timeout: from accept or a file's end to a header */
    berth_timer_t *rate_timer;   /* min_rate: one window of a body */
    berth_timer_t *retry_timer;  /* the pool was full: submit the head op again */
    int in_body;                 /* a body (stored or skipped) is arriving */
    uint64_t body_bytes;         /* body bytes arrived, all files */
    uint64_t window_bytes;       /* body_bytes when the rate window began */
    int paused_in_window;        /* we paused the client during the window: no verdict */
    /* host->recv_into: the WRITE op whose buffer the host reads the body into next (the pool
     * is not given it until those bytes are in), or NULL; and whether the host said it
     * cannot (TLS), so the body keeps coming through handle(). */
    op_t *armed;
    int direct_off;
} uconn_t;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- names in logs ---- */

/* A name for a log line: printable ASCII and UTF-8 kept, anything else as \xNN. */
static const char *log_name(const char *name, size_t len, char *buf, size_t size)
{
    size_t o = 0;
    if (name == NULL)
        return "(none)";
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)name[i];
        int esc = ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\';
        if (o + (esc ? 4 : 1) + 4 > size) {
            memcpy(buf + o, "...", 3);
            o += 3;
            break;
        }
        if (esc)
            o += (size_t)snprintf(buf + o, size - o, "\\x%02x", ch);
        else
            buf[o++] = (char)ch;
    }
    buf[o] = '\0';
    return buf;
}

static double since(uint64_t t0_ns)
{
    return (double)(now_ns() - t0_ns) / 1e9;
}

/* ---- files ---- */

static ufile_t *file_ref(ufile_t *f)
{
    f->refs++;
    return f;
}

/* `n` announced bytes are no longer pending: they arrived, or never will. */
static void file_uncharge(ufile_t *f, uint64_t n)
{
    if (n > f->charged)
        n = f->charged;
    f->charged -= n;
    f->ls->pending -= n;
}

static void file_unref(ufile_t *f)
{
    if (f == NULL || --f->refs > 0)
        return;
    file_uncharge(f, f->charged);
    /* Normally empty by now; a file dropped with a temporary still open loses it here. */
    upload_store_discard(&f->st);
    upload_header_clear(&f->h);
    free(f);
}

/* ---- the queue ---- */

static op_t *op_new(uconn_t *c, op_kind_t kind, ufile_t *f)
{
    op_t *op = calloc(1, sizeof(*op));
    if (op == NULL)
        return NULL;
    c->nops++;
    op->kind = kind;
    op->f = f ? file_ref(f) : NULL;
    if (c->tail)
        c->tail->next = op;
    else
        c->head = op;
    c->tail = op;
    return op;
}

static void op_free(op_t *op)
{
    file_unref(op->f);
    free(op->buf);
    free(op);
}

static op_t *op_pop(uconn_t *c)
{
    op_t *op = c->head;
    c->head = op->next;
    if (c->head == NULL)
        c->tail = NULL;
    c->nops--;
    return op;
}

static void flush_held(uconn_t *c)
{
    if (c->hold_timer) {
        host->timer_stop(c->hold_timer);
        c->hold_timer = NULL;
    }
    if (c->held_len && !c->finishing)
        host->write(c->conn, c->held, c->held_len); /* -EPIPE if the client is gone */
    c->held_len = 0;
}

static void on_hold_timer(berth_conn_t *conn, void *arg)
{
    uconn_t *c = arg;
    c->hold_timer = NULL; /* a fired timer is gone */
    /* A client we paused cannot send: that is not the pause we wait for. */
    if (c->paused && !c->closing)
        c->hold_timer = host->timer_start(conn, HOLD_MS, on_hold_timer, c);
    if (c->hold_timer == NULL)
        flush_held(c);
}

static void send_frame(uconn_t *c, unsigned char *frame, size_t len)
{
    if (c->finishing || frame == NULL)
        return;
    if (c->reply_now || c->held_len + len > HOLD_MAX) {
        flush_held(c);
        host->write(c->conn, frame, len); /* -EPIPE if the client is gone: nothing to do */
        return;
    }
    if (c->held_len + len > c->held_cap) {
        size_t cap = c->held_cap ? c->held_cap * 2 : 1024;
        while (cap < c->held_len + len)
            cap *= 2;
        unsigned char *p = realloc(c->held, cap);
        if (p == NULL) {
            flush_held(c);
            host->write(c->conn, frame, len);
            return;
        }
        c->held = p;
        c->held_cap = cap;
    }
    memcpy(c->held + c->held_len, frame, len);
    c->held_len += len;
    if (c->hold_timer == NULL)
        c->hold_timer = host->timer_start(c->conn, HOLD_MS, on_hold_timer, c);
    if (c->hold_timer == NULL)
        flush_held(c);
}

/* Queue an error reply (name MAY be NULL). */
static int queue_error(uconn_t *c, const char *name, size_t name_len, const char *msg)
{
    size_t len = 0;
    unsigned char *frame = upload_reply_error(name, name_len, msg, &len);
    if (frame == NULL)
        return -ENOMEM;
    op_t *op = op_new(c, OP_REPLY, NULL);
    if (op == NULL) {
        free(frame);
        return -ENOMEM;
    }
    op->buf = frame;
    op->len = len;
    return 0;
}

static void set_paused(uconn_t *c, int want)
{
    if (c->finishing || want == c->paused)
        return;
    c->paused = want;
    if (want)
        c->armed = NULL; /* a pause drops the host's armed receive */
    if (want)
        c->paused_in_window = 1;
    if (want)
        host->pause(c->conn);
    else
        host->resume(c->conn);
}

/* Too much waits for the disk: stop reading until it catches up. */
static int backlogged(const uconn_t *c)
{
    return c->queued >= QUEUED_HIGH || c->nops >= OPS_HIGH;
}

/* Stop taking input: what is queued still runs, then the connection closes. */
static void start_closing(uconn_t *c)
{
    if (c->closing)
        return;
    c->closing = 1;
    op_new(c, OP_CLOSE, NULL); /* on -ENOMEM, the close happens when the queue drains */
    set_paused(c, 1);
}

static void log_failed(uconn_t *c, ufile_t *f, const char *msg);

/* The outcome of a file that fails: one reply, one log line. */
static void file_failed(uconn_t *c, ufile_t *f, const char *msg)
{
    size_t len = 0;

    if (f->done)
        return;
    f->done = 1;
    upload_metrics_rejected(host, c->ls->l, msg, 0);
    unsigned char *frame =
        c->finishing ? NULL : upload_reply_error(f->h.name, strlen(f->h.name), msg, &len);
    send_frame(c, frame, len);
    free(frame);
    log_failed(c, f, msg);
}

static void log_failed(uconn_t *c, ufile_t *f, const char *msg)
{
    char nb[UPLOAD_NAME_MAX * 4 + 8];
    host->log(c->conn, BERTH_LOG_INFO,
              "refused \"%s\": %" PRIu64 " of %" PRIu64 " bytes received in %.3fs: %s",
              log_name(f->h.name, strlen(f->h.name), nb, sizeof(nb)), f->received, f->h.size,
              since(f->t0_ns), msg);
}

static const char *errno_reason(int err, char *buf, size_t size)
{
    switch (-err) {
    case EEXIST:
        return "a file of that name exists (overwrite = no)";
    case ENOSPC:
    case EDQUOT:
        return "no space left on the server's disk";
    case EFBIG:
        return "file too large for the server's file system";
    case EISDIR:
        return "a directory of that name exists";
    default:
        snprintf(buf, size, "could not store the file: %s", strerror(-err));
        return buf;
    }
}

/* ---- the pool side ---- */

static void op_work(void *arg)
{
    op_t *op = arg;
    ufile_t *f = op->f;

    switch (op->kind) {
    case OP_OPEN:
        op->status = upload_store_open(&f->st, &f->h, f->overwrite, f->h.size);
        break;
    case OP_WRITE:
        op->status = upload_store_write(&f->st, op->buf, op->len);
        if (op->status != 0)
            upload_store_discard(&f->st);
        break;
    case OP_COMMIT:
        op->status =
            upload_store_commit(&f->st, &f->h, f->overwrite, f->do_fsync, op->sha256, &op->why);
        break;
    case OP_DISCARD:
        upload_store_discard(&f->st);
        break;
    case OP_REPLY:
    case OP_CLOSE:
        break;
    }
    op->ran = op->ran_hash = 1;
}

/* A big WRITE's two halves, run at once: they touch disjoint parts of the store. */
static void op_work_append(void *arg)
{
    op_t *op = arg;
    op->status = upload_store_append(&op->f->st, op->buf, op->len);
    op->ran = 1;
}

static void op_work_hash(void *arg)
{
    op_t *op = arg;
    op->hash_status = upload_store_hash(&op->f->st, op->buf, op->len);
    op->ran_hash = 1;
}

/* ---- back on the loop ---- */

/* The subject of the conn's verified TLS client certificate, or NULL (no TLS, no certificate,
 * or a host without tls_info). Valid until finish() returns. */
static const char *client_subject(const berth_conn_t *conn)
{
    berth_tls_info_t info;

    if (!BERTH_HOST_HAS(host, tls_info) || host->tls_info(conn, &info) < 0)
        return NULL;
    return info.client_subject;
}

static void op_complete(uconn_t *c, op_t *op)
{
    ufile_t *f = op->f;
    char buf[160], nb[UPLOAD_NAME_MAX * 4 + 8], hex[65];

    switch (op->kind) {
    case OP_OPEN:
        if (op->status != 0)
            file_failed(c, f, errno_reason(op->status, buf, sizeof(buf)));
        break;
    case OP_WRITE:
        if (op->status != 0 || op->hash_status != 0) {
            /* Both halves are back: nothing else touches the store now. */
            upload_store_discard(&f->st);
            file_failed(c, f,
                        errno_reason(op->status ? op->status : op->hash_status, buf, sizeof(buf)));
        }
        break;
    case OP_COMMIT:
        if (op->status != 0) {
            file_failed(c, f, op->why ? op->why : errno_reason(op->status, buf, sizeof(buf)));
            break;
        }
        f->done = 1;
        upload_metrics_stored(host, c->ls->l);
        upload_hex(op->sha256, sizeof(op->sha256), hex);
        if (!c->finishing) {
            size_t len = 0;
            unsigned char *frame =
                upload_reply_ok(f->h.name, strlen(f->h.name), f->h.size, hex, &len);
            send_frame(c, frame, len);
            free(frame);
        }
        /* Who stored it: a verified TLS client certificate's subject (RFC 2253, whose
         * escapes cover quotes and control characters), when the conn has one. */
        const char *who = client_subject(c->conn);
        /* logs: structured fields (json members; text: stored "NAME" key=value...). */
        if (BERTH_HOST_HAS(host, log_fields)) {
            char secs[32];
            const char *name = log_name(f->h.name, strlen(f->h.name), nb, sizeof(nb));

            snprintf(secs, sizeof(secs), "%.3fs", since(f->t0_ns));
            berth_log_field_t fl[] = {
                {"file", name, 0},     {"bytes", NULL, (int64_t)f->h.size}, {"sha256", hex, 0},
                {"duration", secs, 0}, {"client_gone", NULL, c->finishing}, {"client", who, 0},
            };
            host->log_fields(c->conn, BERTH_LOG_INFO, fl, who ? 6 : 5, "stored \"%s\"", name);
            break;
        }
        host->log(c->conn, BERTH_LOG_INFO,
                  "stored \"%s\": %" PRIu64 " bytes sha256=%s in %.3fs%s%s%s%s",
                  log_name(f->h.name, strlen(f->h.name), nb, sizeof(nb)), f->h.size, hex,
                  since(f->t0_ns), who ? " client=\"" : "", who ? who : "", who ? "\"" : "",
                  c->finishing ? " (client gone)" : "");
        break;
    case OP_DISCARD:
        file_failed(c, f, "the connection ended before the whole file arrived");
        break;
    case OP_REPLY:
    case OP_CLOSE:
        break;
    }
}

static void op_done(berth_conn_t *conn, void *arg, int status);

/* Hand a disk op to the pool: 0, or an error and nothing submitted. */
static int submit(uconn_t *c, op_t *op)
{
    if (op->kind == OP_WRITE && op->len >= SPLIT_MIN_BYTES) {
        op->halves = 2;
        if (host->work(c->conn, op_work_append, op_done, op) == 0) {
            if (host->work(c->conn, op_work_hash, op_done, op) != 0) {
                /* Hash here meanwhile: the append on the pool does not touch the digests. */
                op->halves = 1;
                op_work_hash(op);
            }
            return 0;
        }
    }
    op->halves = 1;
    return host->work(c->conn, op_work, op_done, op);
}

static void on_retry_timer(berth_conn_t *conn, void *arg);

/* The listener's share of the pool is full (host->work said -EAGAIN): the op stays at the
 * head of the queue, the client is paused so nothing piles up behind it, and the queue is
 * tried again shortly. Disk work never runs on the loop while the connection lives.
 * 0 when no timer could be had (the caller then does the work here, as a last resort). */
static int retry_later(uconn_t *c, op_t *op)
{
    if (c->retry_timer == NULL) {
        c->retry_timer = host->timer_start(c->conn, RETRY_MS, on_retry_timer, c);
        if (c->retry_timer == NULL)
            return 0;
    }
    c->inflight = NULL;
    if (op->kind == OP_WRITE)
        c->queued += op->len;
    set_paused(c, 1);
    return 1;
}

/* Run the queue until an op is handed to the pool or the queue is empty. */
static void arm(uconn_t *c);

static void pump(uconn_t *c)
{
    if (c->closing || c->finishing)
        c->armed = NULL; /* closing or pausing dropped it */
    while (c->inflight == NULL && c->head != NULL) {
        op_t *op = c->head;
        if (op == c->armed)
            break; /* the host is reading into it: submitted once those bytes are in */
        if (op->kind == OP_WRITE && op->len == 0) {
            op_free(op_pop(c)); /* made for a receive that was not armed */
            continue;
        }
        switch (op->kind) {
        case OP_REPLY:
            send_frame(c, op->buf, op->len);
            op_free(op_pop(c));
            continue;
        case OP_CLOSE:
            op_free(op_pop(c));
            flush_held(c);
            if (!c->finishing)
                host->close(c->conn);
            continue;
        default:
            break;
        }
        if (op->kind == OP_WRITE)
            c->queued -= op->len;
        /* A failed file's remaining ops have nothing to do. When finishing, a file that
         * never arrived whole is not worth writing: it is removed instead. */
        if ((op->f->done && op->kind != OP_DISCARD) ||
            (c->finishing && !op->f->complete && op->kind != OP_DISCARD)) {
            op_free(op_pop(c));
            continue;
        }
        c->inflight = op;
        if (!c->finishing) {
            int rc = submit(c, op);
            if (rc == 0)
                break;
            if (rc == -EAGAIN && retry_later(c, op))
                return;
        }
        /* finish() (or a host that will not queue work): the disk work happens here. */
        op_work(op);
        c->inflight = NULL;
        op_complete(c, op);
        op_free(op_pop(c));
    }
    if (c->paused && !c->closing && c->queued <= QUEUED_LOW && c->nops < OPS_HIGH / 2)
        set_paused(c, 0);
    if (c->closing && c->head == NULL && c->inflight == NULL && !c->finishing)
        host->close(c->conn);
    else
        arm(c);
}

static void on_retry_timer(berth_conn_t *conn, void *arg)
{
    uconn_t *c = arg;
    c->retry_timer = NULL; /* a fired timer is gone */
    pump(c);
}

static void op_done(berth_conn_t *conn, void *arg, int status)
{
    uconn_t *c = host->state(conn);
    op_t *op = arg;

    if (--op->halves > 0)
        return; /* the other half of a WRITE is still running */
    c->inflight = NULL;
    if (!op->ran && !op->ran_hash) {
        /* Cancelled before it ran: it stays queued, and finish() runs it. */
        if (op->kind == OP_WRITE)
            c->queued += op->len;
        return;
    }
    if (!op->ran || !op->ran_hash) {
        /* Half a WRITE cancelled: the file cannot be finished right. */
        if (!op->ran)
            op->status = -ECANCELED;
        if (!op->ran_hash)
            op->hash_status = -ECANCELED;
    }
    op_complete(c, op);
    op_free(op_pop(c));
    pump(c);
}

/* ---- deadlines ---- */

static void stop_timer(berth_timer_t **t)
{
    if (*t != NULL) {
        host->timer_stop(*t);
        *t = NULL;
    }
}

static void on_header_timeout(berth_conn_t *conn, void *arg);
static void on_rate_timer(berth_conn_t *conn, void *arg);

/* From now, a whole header within header_timeout (absolute: bytes do not extend it). */
static void header_clock_start(uconn_t *c)
{
    stop_timer(&c->header_timer);
    if (c->closing || c->finishing)
        return;
    c->header_timer = host->timer_start(c->conn, c->ls->header_ms, on_header_timeout, c);
    /* On -ENOMEM the connection goes on without the deadline; idle_timeout still holds. */
}

static void rate_window_start(uconn_t *c)
{
    c->window_bytes = c->body_bytes;
    c->paused_in_window = c->paused;
    if (c->ls->min_rate > 0 && !c->closing && !c->finishing)
        c->rate_timer = host->timer_start(c->conn, c->ls->min_rate_window, on_rate_timer, c);
}

static void body_begin(uconn_t *c)
{
    stop_timer(&c->header_timer);
    c->in_body = 1;
    stop_timer(&c->rate_timer);
    rate_window_start(c);
}

static void body_end(uconn_t *c)
{
    c->in_body = 0;
    stop_timer(&c->rate_timer);
    header_clock_start(c);
}

static void on_header_timeout(berth_conn_t *conn, void *arg)
{
    uconn_t *c = arg;
    char msg[120];

    c->header_timer = NULL; /* a fired timer is gone */
    if (c->closing || c->in_body)
        return;
    /* Our disk work for this client is not done yet (it may be waiting for that reply): the
     * clock starts again once it is. */
    if (c->inflight != NULL || c->head != NULL) {
        header_clock_start(c);
        return;
    }
    snprintf(msg, sizeof(msg), "no whole header within header_timeout (%" PRIu64 " ms)",
             c->ls->header_ms);
    host->log(conn, BERTH_LOG_INFO, "%s%s (closing)", msg,
              upload_frame_idle(&c->frame) ? "" : ", inside a header");
    if (queue_error(c, NULL, 0, msg) != 0) {
        host->abort(conn);
        c->closing = 1;
        return;
    }
    start_closing(c);
    pump(c);
}

static void on_rate_timer(berth_conn_t *conn, void *arg)
{
    uconn_t *c = arg;
    char msg[200];

    c->rate_timer = NULL;
    if (c->closing || !c->in_body)
        return;
    uint64_t got = c->body_bytes - c->window_bytes;
    /* A window in which we held the client back ourselves (a slow disk) says nothing of it. */
    if (c->paused_in_window || got * 1000 >= c->ls->min_rate * c->ls->min_rate_window) {
        rate_window_start(c);
        return;
    }
    snprintf(msg, sizeof(msg),
             "the body arrived at %" PRIu64 " bytes/s over %" PRIu64 " ms, under min_rate (%" PRIu64
             " bytes/s)",
             got * 1000 / c->ls->min_rate_window, c->ls->min_rate_window, c->ls->min_rate);
    ufile_t *f = c->cur;
    int r;
    if (f != NULL && !f->done) {
        /* In order behind the writes queued before it: remove what was written, then say. */
        log_failed(c, f, msg);
        f->done = 1;
        r = op_new(c, OP_DISCARD, f) == NULL ? -ENOMEM
                                             : queue_error(c, f->h.name, strlen(f->h.name), msg);
    } else {
        host->log(conn, BERTH_LOG_INFO, "%s (closing)", msg);
        r = queue_error(c, NULL, 0, msg);
    }
    if (r != 0) {
        host->abort(conn);
        c->closing = 1;
        return;
    }
    start_closing(c);
    pump(c);
}

/* ---- input ---- */

/*
 * NULL if a file of `size` bytes may be accepted now, else why not (in msg). Headers cost
 * nothing on disk until bytes arrive, so these two bounds are what keeps silent clients
 * from claiming the disk: max_pending caps what accepted headers announced and has not
 * arrived; min_free refuses a file that would not fit with min_free left over.
 */
static const char *room_for(const upload_listener_t *ls, uint64_t size, char *msg, size_t len)
{
    struct statvfs vfs;

    if (size > ls->max_pending || ls->pending > ls->max_pending - size) {
        snprintf(msg, len,
                 "server busy: uploads in progress have %" PRIu64
                 " bytes still to come, and file_size %" PRIu64 " would pass max_pending %" PRIu64
                 "; try again later",
                 ls->pending, size, ls->max_pending);
        return msg;
    }
    if (fstatvfs(ls->dirfd, &vfs) != 0)
        return NULL; /* no figure to go by: a full disk is still found as bytes arrive */
    uint64_t avail = (uint64_t)vfs.f_bavail * vfs.f_frsize;
    uint64_t keep = ls->min_free;
    if (keep == 0)
        keep = (uint64_t)vfs.f_blocks * vfs.f_frsize / 100 * ls->min_free_pct;
    if (size > avail || avail - size < keep) {
        snprintf(msg, len,
                 "no space left on the server's disk for file_size %" PRIu64 ": %" PRIu64
                 " bytes available, and min_free keeps %" PRIu64 " free",
                 size, avail, keep);
        return msg;
    }
    return NULL;
}

static void on_header(uconn_t *c, const unsigned char *data, size_t len)
{
    const upload_listener_t *ls = c->ls;
    char nb[UPLOAD_NAME_MAX * 4 + 8], msg[200];

    ufile_t *f = calloc(1, sizeof(*f));
    if (f == NULL) {
        host->abort(c->conn);
        c->closing = 1;
        return;
    }
    f->refs = 1;
    f->ls = c->ls;
    f->t0_ns = now_ns();
    upload_store_init(&f->st, ls->dirfd);
    f->overwrite = ls->overwrite;
    f->do_fsync = ls->do_fsync;
    f->st.writeback = ls->do_fsync; /* the commit fsyncs: start the writes early */

    upload_header_status_t st = upload_header_parse(data, len, &f->h);
    const char *why = f->h.error;
    if (f->h.reply_each && !c->reply_now) {
        c->reply_now = 1;
        flush_held(c);
    }
    if (st == UPLOAD_HEADER_OK && f->h.size > ls->max_size) {
        snprintf(msg, sizeof(msg), "file_size %" PRIu64 " is over max_size %" PRIu64, f->h.size,
                 ls->max_size);
        why = msg;
        st = UPLOAD_HEADER_BAD; /* not worth reading: answer and close */
    }
    /* Refused for now, not for good: the body is skipped and the connection goes on. */
    if (st == UPLOAD_HEADER_OK && (why = room_for(ls, f->h.size, msg, sizeof(msg))) != NULL)
        st = UPLOAD_HEADER_REJECT;
    if (st != UPLOAD_HEADER_OK) {
        upload_metrics_rejected(host, c->ls->l, why, 1);
        host->log(c->conn, BERTH_LOG_INFO, "refused \"%s\": %s%s",
                  log_name(f->h.raw_name, f->h.raw_name_len, nb, sizeof(nb)), why,
                  st == UPLOAD_HEADER_BAD ? " (closing)" : "");
        if (queue_error(c, f->h.raw_name, f->h.raw_name_len, why) != 0) {
            host->abort(c->conn);
            c->closing = 1;
        } else if (st == UPLOAD_HEADER_BAD) {
            start_closing(c);
        } else {
            c->skipping = 1;
            body_begin(c);
            upload_frame_body(&c->frame, f->h.size);
        }
        file_unref(f);
        return;
    }
    if (op_new(c, OP_OPEN, f) == NULL) {
        file_unref(f);
        host->abort(c->conn);
        c->closing = 1;
        return;
    }
    f->charged = f->h.size;
    c->ls->pending += f->charged;
    c->cur = f;
    body_begin(c);
    upload_frame_body(&c->frame, f->h.size);
}

/* Make room for at least `want` more bytes in a WRITE op (at most OP_MAX_BYTES in all). */
static int op_grow(op_t *op, size_t want)
{
    if (op->len + want <= op->cap)
        return 0;
    /* Grow by doubling (a small file costs a small buffer), then in steps of OP_GROW_STEP, so
     * a partly filled 1 MiB op wastes at most a step. */
    size_t cap = op->cap ? op->cap : 16384;
    while (cap < op->len + want)
        cap = cap < OP_GROW_STEP ? cap * 2 : cap + OP_GROW_STEP;
    if (cap > OP_MAX_BYTES)
        cap = OP_MAX_BYTES;
    unsigned char *b = realloc(op->buf, cap);
    if (b == NULL)
        return -ENOMEM;
    op->buf = b;
    op->cap = cap;
    return 0;
}

/* Body bytes: copied into WRITE ops, or, when `direct` is the op the host read them into
 * (host->recv_into), already there at its end. */
static int on_data(uconn_t *c, const unsigned char *data, size_t len, op_t *direct)
{
    ufile_t *f = c->cur;
    if (c->skipping || f == NULL)
        return 0;
    f->received += len;
    file_uncharge(f, len);
    if (f->done)
        return 0; /* failed already (disk full...): the rest of the body is dropped */
    if (direct != NULL) {
        direct->len += len; /* recv_into asked for no more than the op has room for */
        c->queued += len;
        return 0;
    }
    while (len > 0) {
        op_t *op = c->tail;
        if (op == NULL || op->kind != OP_WRITE || op->f != f || op == c->inflight ||
            op->len == OP_MAX_BYTES) {
            if ((op = op_new(c, OP_WRITE, f)) == NULL)
                return -ENOMEM;
        }
        size_t n = OP_MAX_BYTES - op->len;
        if (n > len)
            n = len;
        if (op_grow(op, n) != 0)
            return -ENOMEM;
        memcpy(op->buf + op->len, data, n);
        op->len += n;
        c->queued += n;
        data += n;
        len -= n;
    }
    return 0;
}

static int on_end(uconn_t *c)
{
    ufile_t *f = c->cur;
    if (c->skipping) {
        c->skipping = 0;
        return 0;
    }
    c->cur = NULL;
    f->complete = 1;
    int r = 0;
    if (!f->done && op_new(c, OP_COMMIT, f) == NULL)
        r = -ENOMEM;
    file_unref(f);
    return r;
}

/* Bytes from the client, through handle() or (direct set) read by the host into that op. */
static void feed(uconn_t *c, const unsigned char *in, size_t len, op_t *direct)
{
    berth_conn_t *conn = c->conn;
    size_t off = 0;
    char msg[160];

    /* Still sending: held replies wait for the next pause. */
    if (c->hold_timer) {
        host->timer_stop(c->hold_timer);
        c->hold_timer = host->timer_start(conn, HOLD_MS, on_hold_timer, c);
        if (c->hold_timer == NULL)
            flush_held(c);
    }

    while (!c->closing) {
        upload_frame_ev_t ev;
        long n = upload_frame_feed(&c->frame, in + off, len - off, &ev);
        if (n < 0) {
            host->log(conn, BERTH_LOG_ERROR, "out of memory reading a header");
            host->abort(conn);
            c->closing = 1;
            break;
        }
        off += (size_t)n;
        int r = 0;
        if (ev.type == UPLOAD_FRAME_NONE)
            break;
        switch (ev.type) {
        case UPLOAD_FRAME_ERROR:
            if (ev.error == UPLOAD_FRAME_ENEGATIVE)
                snprintf(msg, sizeof(msg), "header length %" PRId64 " is negative", ev.declared);
            else
                snprintf(msg, sizeof(msg), "header length %" PRId64 " is over max_header %" PRIu64,
                         ev.declared, c->ls->max_header);
            host->log(conn, BERTH_LOG_INFO, "refused: %s (closing)", msg);
            r = queue_error(c, NULL, 0, msg);
            start_closing(c);
            break;
        case UPLOAD_FRAME_HEADER:
            on_header(c, ev.data, ev.len);
            break;
        case UPLOAD_FRAME_DATA:
            c->body_bytes += ev.len;
            r = on_data(c, ev.data, ev.len, direct);
            break;
        case UPLOAD_FRAME_END:
            r = on_end(c);
            body_end(c);
            break;
        case UPLOAD_FRAME_NONE:
            break;
        }
        if (r != 0) {
            host->log(conn, BERTH_LOG_ERROR, "out of memory");
            host->abort(conn);
            c->closing = 1;
            return;
        }
    }
    pump(c); /* which arms the next receive when a body is arriving and room is left */
    if (backlogged(c))
        set_paused(c, 1);
}

static void upload_handle(berth_conn_t *conn, const void *data, size_t len)
{
    feed(host->state(conn), data, len, NULL);
}

static void on_recv(berth_conn_t *conn, void *arg, size_t n)
{
    uconn_t *c = arg;
    op_t *op = c->armed;
    (void)conn;
    c->armed = NULL;
    feed(c, op->buf + op->len, n, op);
}

/*
 * Have the host read the body arriving straight into the WRITE op it will fill (no copy out
 * of the host's read buffer, and reads of up to OP_GROW_STEP rather than its 64 KiB), when a
 * stored file's body is arriving and nothing holds the client back. Otherwise, or where the
 * host cannot (TLS, an older host), the body comes through handle() as before.
 */
static void arm(uconn_t *c)
{
    ufile_t *f = c->cur;

    if (c->armed != NULL || c->direct_off || c->finishing || c->closing || c->paused ||
        c->skipping || f == NULL || f->done || backlogged(c))
        return;
    if (!BERTH_HOST_HAS(host, recv_into)) {
        c->direct_off = 1;
        return;
    }
    uint64_t left = upload_frame_body_left(&c->frame);
    if (left == 0)
        return;
    op_t *op = c->tail;
    if (op == NULL || op->kind != OP_WRITE || op->f != f || op == c->inflight ||
        op->len == OP_MAX_BYTES) {
        if ((op = op_new(c, OP_WRITE, f)) == NULL)
            return; /* handle() then takes the bytes, and says so if memory stays short */
    }
    size_t want = OP_MAX_BYTES - op->len;
    /* A fresh op gets the room for all it will take in one allocation: growing it by
     * realloc as reads arrive copied up to 1.5x its bytes (measured: 6-9% of a worker's
     * CPU at 8 clients, on the loop thread). An op that handle() started grows in steps. */
    if (want > OP_GROW_STEP && op->cap != 0)
        want = OP_GROW_STEP;
    if (want > left)
        want = (size_t)left;
    if (op->cap - op->len < want && op_grow(op, want) != 0)
        return;
    size_t room = op->cap - op->len;
    if (room > OP_GROW_STEP)
        room = OP_GROW_STEP; /* one read: the bound on what passes the pause mark */
    if (room > left)
        room = (size_t)left;
    int rc = host->recv_into(c->conn, op->buf + op->len, room, on_recv, c);
    if (rc == 0)
        c->armed = op;
    else if (rc == -ENOTSUP)
        c->direct_off = 1;
    /* -EAGAIN (the host's backpressure) and the rest: handle() takes the bytes meanwhile. */
}

static void upload_eof(berth_conn_t *conn)
{
    uconn_t *c = host->state(conn);
    c->armed = NULL; /* the host dropped it at the EOF */
    /* Everything it will send has arrived: replies cannot cut anything short now. */
    c->reply_now = 1;
    flush_held(c);
    if (c->closing)
        return;
    if (c->cur != NULL) {
        /* Truncated: what was written goes, after the writes queued before it. */
        if (!c->cur->done && op_new(c, OP_DISCARD, c->cur) == NULL) {
            host->abort(conn);
            return;
        }
    } else if (!c->skipping && !upload_frame_idle(&c->frame)) {
        host->log(conn, BERTH_LOG_INFO, "connection ended inside a header");
    }
    start_closing(c);
    pump(c);
}

static int upload_setup(berth_conn_t *conn)
{
    uconn_t *c = host->state(conn);
    c->conn = conn;
    c->ls = host->listener_state(conn);
    if (c->ls == NULL)
        return -EINVAL;
    upload_frame_init(&c->frame, (size_t)c->ls->max_header);
    header_clock_start(c);
    return 0;
}

static void upload_finish(berth_conn_t *conn)
{
    uconn_t *c = host->state(conn);
    if (c->ls == NULL)
        return;
    /* The host waited for the op in flight. What is queued for files that arrived whole is
     * done now, on this thread; partial files are removed. The conn's timers are gone. */
    c->finishing = 1;
    c->hold_timer = c->header_timer = c->rate_timer = NULL;
    c->inflight = NULL;
    pump(c);
    if (c->cur != NULL) {
        ufile_t *f = c->cur;
        c->cur = NULL;
        upload_store_discard(&f->st);
        file_failed(c, f, "the connection ended before the whole file arrived");
        file_unref(f);
    }
    upload_frame_free(&c->frame);
    free(c->held);
    c->held = NULL;
}

/* ---- the listener ---- */

static int check_dir(const char *dir, char *err, size_t errlen)
{
    struct stat st;
    if (stat(dir, &st) != 0) {
        snprintf(err, errlen, "dir %s: %s", dir, strerror(errno));
        return -EINVAL;
    }
    if (!S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "dir %s is not a directory", dir);
        return -EINVAL;
    }
    return 0;
}

/* min_free: "5%" (of the file system) or a size ("1G"; "0" keeps nothing free). */
static int parse_min_free(const char *v, uint64_t *bytes, unsigned *pct)
{
    size_t n = strlen(v);
    *bytes = 0;
    *pct = 0;
    if (n > 1 && v[n - 1] == '%') {
        unsigned p = 0;
        for (size_t i = 0; i + 1 < n; i++) {
            if (v[i] < '0' || v[i] > '9' || p > 99)
                return -EINVAL;
            p = p * 10 + (unsigned)(v[i] - '0');
        }
        if (p > 99)
            return -EINVAL;
        *pct = p;
        return 0;
    }
    return host->parse_size(v, bytes) == 0 && *bytes <= INT64_MAX ? 0 : -EINVAL;
}

/* The options, declared: the host parses them (with FILE:LINE errors) into upload_opts_t
 * before check_option, which keeps what a table cannot say: dir must be a folder, min_free is
 * a size or a percentage. */
typedef struct upload_opts {
    const char *dir;
    uint64_t max_size;
    uint64_t max_header;
    uint64_t max_pending;
    uint64_t header_ms;
    uint64_t min_rate;
    uint64_t min_rate_window;
    const char *min_free;
    int overwrite;
    int do_fsync;
} upload_opts_t;

#define OPT(n, t, f, member, d, lo, hi, h)                                                         \
    {                                                                                              \
        .name = n, .type = t, .flags = f, .offset = offsetof(upload_opts_t, member), .def = d,     \
        .min = lo, .max = hi, .choices = NULL, .help = h                                           \
    }

static const berth_option_t upload_options[] = {
    OPT("dir", BERTH_OPT_PATH, BERTH_OPT_REQUIRED, dir, NULL, 0, 0,
        "the folder uploads are stored in (an existing directory)"),
    OPT("max_size", BERTH_OPT_SIZE, 0, max_size, "1G", 0, INT64_MAX,
        "the largest file_size a header may announce"),
    OPT("max_header", BERTH_OPT_SIZE, 0, max_header, "64K", 64, 16 << 20,
        "the largest JSON header"),
    OPT("max_pending", BERTH_OPT_SIZE, 0, max_pending, "4G", 1, INT64_MAX,
        "bytes announced and not yet received, over a worker's connections"),
    OPT("header_timeout", BERTH_OPT_DURATION, 0, header_ms, "10s", 1, UINT32_MAX,
        "from accept, or the end of a file, until a whole header"),
    OPT("min_rate", BERTH_OPT_SIZE, 0, min_rate, "1K", 0, UINT32_MAX,
        "body bytes per second a sender must keep up (0: no floor)"),
    OPT("min_rate_window", BERTH_OPT_DURATION, 0, min_rate_window, "30s", 1, UINT32_MAX,
        "the window min_rate is judged over"),
    OPT("min_free", BERTH_OPT_STRING, 0, min_free, "5%", 0, 0,
        "space kept free on dir's file system: a size (1G) or a percentage (0% to 99%)"),
    OPT("overwrite", BERTH_OPT_BOOL, 0, overwrite, "no", 0, 0,
        "replace a file of the same name (else the upload is refused)"),
    OPT("fsync", BERTH_OPT_BOOL, 0, do_fsync, "yes", 0, 0,
        "fsync each file and the folder before answering ok"),
    {.name = NULL},
};

static int upload_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                               size_t errlen)
{
    (void)l;
    if (strcmp(key, "dir") == 0)
        return check_dir(value, err, errlen);
    if (strcmp(key, "min_free") == 0) {
        uint64_t n;
        unsigned pct;
        if (parse_min_free(value, &n, &pct) != 0) {
            snprintf(err, errlen,
                     "min_free: want a size (1G) or a percentage (0%% to 99%%), not %s", value);
            return -EINVAL;
        }
        return 0;
    }
    for (const berth_option_t *o = upload_options; o->name; o++)
        if (strcmp(o->name, key) == 0)
            return 0; /* the host checked it */
    snprintf(err, errlen,
             "unknown key \"%s\" for the upload handler (dir, max_size, max_header, "
             "max_pending, min_free, header_timeout, min_rate, min_rate_window, overwrite, fsync)",
             key);
    return -EINVAL;
}

static void upload_listener_close(berth_listener_t *l, void *state)
{
    upload_listener_t *ls = state;
    upload_metrics_close(l);
    if (ls == NULL)
        return;
    for (upload_listener_t **p = &listeners; *p != NULL; p = &(*p)->next) {
        if (*p == ls) {
            *p = ls->next;
            break;
        }
    }
    if (ls->dirfd >= 0)
        close(ls->dirfd);
    free(ls->dir);
    free(ls);
}

static int upload_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    int r = -EINVAL;

    berth_protocol_t proto = host->listener_protocol(l);
    if (proto != BERTH_PROTO_TCP && proto != BERTH_PROTO_UNIX) {
        snprintf(err, errlen, "upload needs a stream listener (protocol = tcp or unix)");
        return -EINVAL;
    }
    upload_listener_t *ls = calloc(1, sizeof(*ls));
    if (ls == NULL)
        return -ENOMEM;
    ls->dirfd = -1;

    /* Parsed and checked by the host (upload_options) and check_option. */
    const upload_opts_t *o = host->listener_options(l);
    if ((r = check_dir(o->dir, err, errlen)) != 0)
        goto fail;
    if ((ls->dir = strdup(o->dir)) == NULL) {
        r = -ENOMEM;
        goto fail;
    }
    ls->max_size = o->max_size;
    ls->max_header = o->max_header;
    ls->max_pending = o->max_pending;
    ls->header_ms = o->header_ms;
    ls->min_rate = o->min_rate;
    ls->min_rate_window = o->min_rate_window;
    ls->overwrite = o->overwrite;
    ls->do_fsync = o->do_fsync;
    if (parse_min_free(o->min_free, &ls->min_free, &ls->min_free_pct) != 0) {
        snprintf(err, errlen, "min_free: bad value %s", o->min_free);
        r = -EINVAL;
        goto fail;
    }
    ls->dirfd = open(ls->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ls->dirfd < 0) {
        r = -errno;
        snprintf(err, errlen, "dir %s: %s", ls->dir, strerror(errno));
        goto fail;
    }
    /* sandbox: the worker may read and write the upload folder and nothing else of ours. */
    if (BERTH_HOST_HAS(host, allow_bind) &&
        (r = host->allow_path(l, ls->dir, BERTH_ACCESS_READ | BERTH_ACCESS_WRITE)) != 0) {
        snprintf(err, errlen, "dir %s: cannot declare it to the sandbox: %s", ls->dir,
                 strerror(-r));
        goto fail;
    }
    ls->l = l;
    ls->next = listeners;
    listeners = ls;
    upload_metrics_open(host, l);
    *state = ls;
    return 0;
fail:
    upload_listener_close(l, ls);
    return r;
}

/* A worker killed mid-upload (SIGKILL, a crash in another plugin) could not remove its
 * temporary files: the next worker to serve the dir does, before it takes a connection. Not
 * in listener_open, which `berthd -t` runs too: a check changes nothing on disk. */
static void upload_worker_start(void)
{
    for (upload_listener_t *ls = listeners; ls != NULL; ls = ls->next) {
        int n = upload_store_sweep(ls->dirfd);
        if (n > 0)
            host->log_listener(ls->l, BERTH_LOG_WARN,
                               "removed %d temporary file%s left in %s by a worker that died", n,
                               n == 1 ? "" : "s", ls->dir);
        else if (n < 0)
            host->log_listener(ls->l, BERTH_LOG_WARN, "cannot sweep %s: %s", ls->dir, strerror(-n));
    }
}

static int upload_load(const berth_host_t *h)
{
    /* The declared options need listener_options, the last member used here. */
    if (!BERTH_HOST_HAS(h, listener_options))
        return -ENOTSUP;
    host = h;
    return 0;
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("upload"),
    .version = UPLOAD_VERSION,
    .conn_size = sizeof(uconn_t),
    .load = upload_load,
    .check_option = upload_check_option,
    .listener_open = upload_listener_open,
    .listener_close = upload_listener_close,
    .worker_start = upload_worker_start,
    .setup = upload_setup,
    .handle = upload_handle,
    .eof = upload_eof,
    .finish = upload_finish,
    .options = upload_options,
    .options_size = sizeof(upload_opts_t),
};
