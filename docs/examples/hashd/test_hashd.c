/*
 * hashd's unit test, on berth-testhost: `make check`. No daemon and no sockets; the test
 * decides when pool work runs and when time passes, so every step is checked in order.
 */
#include <berth/testhost.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const berth_handler_t berth_handler; /* hashd.c's descriptor */

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

static int output_is(berth_conn_t *c, const char *want)
{
    size_t n;
    const char *out = berth_testhost_output(c, &n);
    int same = n == strlen(want) && memcmp(out, want, n) == 0;
    if (!same)
        fprintf(stderr, "output: \"%.*s\", want \"%s\"\n", (int)n, out, want);
    berth_testhost_consume(c, n);
    return same;
}

int main(void)
{
    char err[256] = "";
    berth_testhost_t *th = berth_testhost_new(&berth_handler, err, sizeof err);
    CHECK(th != NULL);

    /* Options are checked: a bad value fails listener_open with its key named. */
    CHECK(berth_testhost_listener(th, "bad", BERTH_PROTO_TCP, (const char *[]){"rounds", "0", NULL},
                                  err, sizeof err) == NULL);
    CHECK(strstr(err, "rounds") != NULL);

    berth_listener_t *l = berth_testhost_listener(
        th, "hashd", BERTH_PROTO_TCP,
        (const char *[]){"rounds", "1", "line_timeout", "5s", "max_line", "16", NULL}, err,
        sizeof err);
    CHECK(l != NULL);
    berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:40000");

    /* Two lines in one read: one job at a time, reading paused while it runs. */
    CHECK(berth_testhost_feed(c, "a\nb\n", 4) == 0);
    CHECK(berth_testhost_work_queued(th) == 1);
    CHECK(berth_testhost_paused(c));
    CHECK(berth_testhost_run_work(th) == 2);                     /* a's done queues b */
    CHECK(output_is(c, "af63dc4c8601ec8c\naf63df4c8601f1a5\n")); /* FNV-1a of "a", "b" */
    CHECK(!berth_testhost_paused(c));

    /* Idle: not while a job runs; closed line_timeout after the last answer. */
    CHECK(berth_testhost_feed(c, "\n", 1) == 0);
    berth_testhost_advance(th, 60000);
    CHECK(!berth_testhost_closed(c));
    CHECK(berth_testhost_run_work(th) == 1);
    CHECK(output_is(c, "cbf29ce484222325\n")); /* the empty line */
    berth_testhost_advance(th, 4999);
    CHECK(!berth_testhost_closed(c));
    berth_testhost_advance(th, 1);
    CHECK(output_is(c, "bye: idle\n"));
    CHECK(berth_testhost_finished(c));

    /* A line past max_line is refused, and memory stays bounded. */
    c = berth_testhost_accept(th, l, "127.0.0.1:40001");
    CHECK(berth_testhost_feed(c, "0123456789abcdefg", 17) == 0);
    CHECK(output_is(c, "line too long\n"));
    CHECK(berth_testhost_closed(c));

    /* A half-close after the last line: it is answered, then the conn closes. */
    c = berth_testhost_accept(th, l, "127.0.0.1:40002");
    CHECK(berth_testhost_feed(c, "a\n", 2) == 0);
    berth_testhost_eof(c);
    CHECK(!berth_testhost_closed(c));
    CHECK(berth_testhost_run_work(th) == 1);
    CHECK(output_is(c, "af63dc4c8601ec8c\n"));
    CHECK(berth_testhost_finished(c));

    /* A job still queued when the host goes: its done runs with -ECANCELED and frees it
     * (a leak here shows under the sanitizers), and the conn is ended without an answer. */
    c = berth_testhost_accept(th, l, "127.0.0.1:40003");
    CHECK(berth_testhost_feed(c, "never\n", 6) == 0);
    CHECK(berth_testhost_work_queued(th) == 1);
    berth_testhost_free(th);
    puts("hashd: all checks passed");
    return 0;
}
