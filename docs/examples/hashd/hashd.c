/*
 * hashd: a line service that does its CPU work on the host's thread pool, with an idle timer.
 *
 * Each line a client sends ("some text\n") is hashed `rounds` times (iterated 64-bit FNV-1a,
 * standing in for any slow, CPU-bound step: a password hash, a compression, a lookup) and
 * answered with the hash in hex. The hashing runs in host->work on a pool thread, never on the
 * loop, so one client's slow line does not hold up any other client; while it runs the
 * plugin pauses reading that client, one line in flight at a time. A client that sends no
 * line for `line_timeout` is told so and closed.
 *
 * What it shows:
 *   - host->work: the work function runs on a pool thread and MUST NOT call the host; `done`
 *     runs on the loop and ALWAYS runs (even if the client left meanwhile), so it frees the
 *     job. finish() waits for it.
 *   - An idle timer stopped while a line is hashed and re-armed with each answer (a fired
 *     timer is gone: never stop it again; the host stops what is left when the conn ends).
 *   - Framing by lines with a bound (`max_line`): a client cannot grow memory without limit.
 *   - Declared options: a table the host checks and parses, so the plugin has no option code
 *     (no check_option, no listener_open) and `berthd --plugin-help hashd` lists them.
 * Options: rounds (default 100000), line_timeout (default 30s), max_line (default 1K).
 */
#include <berth/handler.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const berth_host_t *host;

/* Per listener, as the host parsed it from the declared options below. */
struct settings {
    int64_t rounds;    /* BERTH_OPT_INT */
    uint64_t idle_ms;  /* BERTH_OPT_DURATION: milliseconds */
    uint64_t max_line; /* BERTH_OPT_SIZE: bytes */
};

struct job {
    uint64_t rounds, hash;
    size_t len;
    char line[]; /* the line, without its newline */
};

/* A line is at most max_line bytes; a client may send up to QUEUED lines ahead of the one
 * being hashed (reading pauses while a job runs, but one read may carry several lines). */
#define QUEUED 4

struct hashd_conn {
    char *buf; /* unanswered bytes: QUEUED * (max_line + 1) */
    size_t len, cap;
    berth_timer_t *idle;
    int busy; /* a job is on the pool */
    int eof;  /* the client has sent everything: close after the last answer */
};

static int hashd_load(const berth_host_t *h)
{
    if (!BERTH_HOST_HAS(h, listener_options))
        return -ENOTSUP; /* a berthd older than declared options */
    host = h;
    return 0;
}

/* Declared options: berthd checks and parses them (FILE:LINE errors, `berthd --plugin-help
 * hashd` lists them) and hands the listener a parsed struct (host->listener_options). */
#define OPT(n, t, member, d, lo, hi, h)                                                            \
    {                                                                                              \
        .name = n, .type = t, .offset = offsetof(struct settings, member), .def = d, .min = lo,    \
        .max = hi, .help = h                                                                       \
    }
static const berth_option_t hashd_options[] = {
    OPT("rounds", BERTH_OPT_INT, rounds, "100000", 1, 1000000000,
        "how many times each line is hashed (the CPU work per line)"),
    OPT("line_timeout", BERTH_OPT_DURATION, idle_ms, "30s", 1, 24 * 3600 * 1000LL,
        "a client that sends no line for this long is closed"),
    OPT("max_line", BERTH_OPT_SIZE, max_line, "1K", 1, 65536, "the longest line taken"),
    {.name = NULL},
};

/* On a pool thread: only the job's own memory, no host calls. */
static void hash_work(void *arg)
{
    struct job *j = arg;
    uint64_t h = UINT64_C(14695981039346656037);
    for (uint64_t r = 0; r < j->rounds; r++)
        for (size_t i = 0; i < j->len; i++)
            h = (h ^ (unsigned char)j->line[i]) * UINT64_C(1099511628211);
    j->hash = h;
}

static void on_idle(berth_conn_t *conn, void *arg)
{
    struct hashd_conn *c = host->state(conn);
    (void)arg;
    c->idle = NULL; /* fired: gone */
    host->write(conn, "bye: idle\n", 10);
    host->close(conn);
}

static void arm_idle(berth_conn_t *conn, struct hashd_conn *c)
{
    const struct settings *s = host->listener_options(host->listener(conn));
    if (c->idle != NULL)
        host->timer_stop(c->idle);
    c->idle = host->timer_start(conn, s->idle_ms, on_idle, NULL);
}

static void take_lines(berth_conn_t *conn, struct hashd_conn *c);

static void hash_done(berth_conn_t *conn, void *arg, int status)
{
    struct job *j = arg;
    struct hashd_conn *c = host->state(conn);
    char out[32];
    int n;

    c->busy = 0;
    n = snprintf(out, sizeof out, "%016" PRIx64 "\n", j->hash);
    free(j);
    /* status is -ECANCELED if the pool dropped the job; a failed write means the client is
     * gone (done runs even then): either way nothing more to do for it. */
    if (status != 0 || host->write(conn, out, (size_t)n) < 0) {
        host->close(conn);
        return;
    }
    host->resume(conn);
    arm_idle(conn, c);
    take_lines(conn, c); /* a line that came with the last one */
    if (c->eof && !c->busy)
        host->close(conn);
}

/* Starts a job for the first whole line in the buffer, if any and none is running. */
static void take_lines(berth_conn_t *conn, struct hashd_conn *c)
{
    const struct settings *s = host->listener_options(host->listener(conn));
    char *nl;
    size_t len;
    struct job *j;

    if (c->busy)
        return;
    if ((nl = memchr(c->buf, '\n', c->len)) == NULL) {
        if (c->len > s->max_line) {
            host->write(conn, "line too long\n", 14);
            host->close(conn);
        }
        return;
    }
    len = (size_t)(nl - c->buf);
    if (len > s->max_line) {
        host->write(conn, "line too long\n", 14);
        host->close(conn);
        return;
    }
    j = malloc(sizeof *j + len);
    if (j == NULL) {
        host->abort(conn);
        return;
    }
    j->rounds = (uint64_t)s->rounds;
    j->len = len;
    memcpy(j->line, c->buf, len);
    memmove(c->buf, nl + 1, c->len - len - 1);
    c->len -= len + 1;
    if (host->work(conn, hash_work, hash_done, j) < 0) {
        free(j);
        host->write(conn, "busy\n", 5);
        host->close(conn);
        return;
    }
    c->busy = 1;
    host->pause(conn);
    /* Not idle while we work: the clock starts again with the answer. */
    if (c->idle != NULL) {
        host->timer_stop(c->idle);
        c->idle = NULL;
    }
}

static int hashd_setup(berth_conn_t *conn)
{
    const struct settings *s = host->listener_options(host->listener(conn));
    struct hashd_conn *c = host->state(conn);
    c->cap = QUEUED * (s->max_line + 1);
    c->buf = malloc(c->cap);
    if (c->buf == NULL)
        return -ENOMEM;
    arm_idle(conn, c);
    return c->idle ? 0 : -ENOMEM;
}

static void hashd_handle(berth_conn_t *conn, const void *data, size_t len)
{
    struct hashd_conn *c = host->state(conn);

    if (len > c->cap - c->len) {
        host->write(conn, "too much at once\n", 17);
        host->close(conn);
        return;
    }
    memcpy(c->buf + c->len, data, len);
    c->len += len;
    take_lines(conn, c);
}

/* The client half-closed (`echo text | nc`): answer what came, then close. */
static void hashd_eof(berth_conn_t *conn)
{
    struct hashd_conn *c = host->state(conn);
    c->eof = 1;
    take_lines(conn, c);
    if (!c->busy)
        host->close(conn);
}

static void hashd_finish(berth_conn_t *conn)
{
    struct hashd_conn *c = host->state(conn);
    free(c->buf); /* the host stops the timer itself */
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("hashd"),
    .version = "1.0",
    .conn_size = sizeof(struct hashd_conn),
    .load = hashd_load,
    .setup = hashd_setup,
    .handle = hashd_handle,
    .eof = hashd_eof,
    .finish = hashd_finish,
    .options = hashd_options,
    .options_size = sizeof(struct settings),
};
