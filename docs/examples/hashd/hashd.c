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
 * Options: rounds (default 100000), line_timeout (default 30s), max_line (default 1K).
 */
#include <berth/handler.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const berth_host_t *host;

struct settings {
    uint64_t rounds, idle_ms, max_line;
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
    host = h;
    return 0;
}

static int parse_count(const char *value, uint64_t min, uint64_t max, uint64_t *out)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(value, &end, 10);
    if (errno != 0 || *end != '\0' || end == value || value[0] == '-' || v < min || v > max)
        return -EINVAL;
    *out = v;
    return 0;
}

static int read_settings(berth_listener_t *l, struct settings *s, char *err, size_t errlen)
{
    const char *v;
    s->rounds = 100000;
    s->idle_ms = 30000;
    s->max_line = 1024;
    if ((v = host->option(l, "rounds")) != NULL &&
        parse_count(v, 1, UINT64_C(1000000000), &s->rounds) < 0) {
        snprintf(err, errlen, "rounds: want a whole number from 1 to 1000000000");
        return -EINVAL;
    }
    if ((v = host->option(l, "line_timeout")) != NULL &&
        (host->parse_duration(v, &s->idle_ms) < 0 || s->idle_ms == 0)) {
        snprintf(err, errlen, "line_timeout: want a duration such as 30s");
        return -EINVAL;
    }
    if ((v = host->option(l, "max_line")) != NULL &&
        (host->parse_size(v, &s->max_line) < 0 || s->max_line < 1 || s->max_line > 65536)) {
        snprintf(err, errlen, "max_line: want a size from 1 to 64K");
        return -EINVAL;
    }
    return 0;
}

static int hashd_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                              size_t errlen)
{
    (void)l;
    (void)value;
    if (strcmp(key, "rounds") != 0 && strcmp(key, "line_timeout") != 0 &&
        strcmp(key, "max_line") != 0) {
        snprintf(err, errlen, "%s: unknown key (hashd takes: rounds, line_timeout, max_line)", key);
        return -EINVAL;
    }
    return 0; /* the values are checked together in listener_open, which `berthd -t` runs */
}

static int hashd_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    struct settings *s = calloc(1, sizeof *s);
    if (s == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    if (read_settings(l, s, err, errlen) < 0) {
        free(s);
        return -EINVAL;
    }
    *state = s;
    return 0;
}

static void hashd_listener_close(berth_listener_t *l, void *state)
{
    (void)l;
    free(state);
}

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
    const struct settings *s = host->listener_state(conn);
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
    const struct settings *s = host->listener_state(conn);
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
    j->rounds = s->rounds;
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
    const struct settings *s = host->listener_state(conn);
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
    .check_option = hashd_check_option,
    .listener_open = hashd_listener_open,
    .listener_close = hashd_listener_close,
    .setup = hashd_setup,
    .handle = hashd_handle,
    .eof = hashd_eof,
    .finish = hashd_finish,
};
