/*
 * forward's unit test, on berth-testhost: `make check`. The test answers the plugin's
 * connects itself and watches the relay carry bytes both ways.
 */
#include <berth/testhost.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const berth_handler_t berth_handler; /* forward.c's descriptor */

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
    berth_testhost_consume(c, n);
    return same;
}

int main(void)
{
    char err[256] = "";
    berth_testhost_t *th = berth_testhost_new(&berth_handler, err, sizeof err);
    CHECK(th != NULL);

    /* `to` is required, and checked. */
    CHECK(berth_testhost_listener(th, "f", BERTH_PROTO_TCP, (const char *[]){NULL}, err,
                                  sizeof err) == NULL);
    CHECK(strstr(err, "to = HOST:PORT") != NULL);
    CHECK(berth_testhost_listener(th, "f", BERTH_PROTO_TCP, (const char *[]){"to", "nope", NULL},
                                  err, sizeof err) == NULL);
    CHECK(strncmp(err, "to: ", 4) == 0);

    berth_listener_t *l = berth_testhost_listener(
        th, "f", BERTH_PROTO_TCP,
        (const char *[]){"to", "[::1]:8080", "connect_timeout", "3s", NULL}, err, sizeof err);
    CHECK(l != NULL);

    /* A client: the plugin connects to the target; early bytes wait (reading is paused). */
    berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:50000");
    CHECK(berth_testhost_connects(th) == 1);
    const berth_testhost_connect_t *req = berth_testhost_connect_at(th, 0);
    CHECK(strcmp(req->host, "::1") == 0 && req->port == 8080 && req->timeout_ms == 3000);
    CHECK(berth_testhost_paused(c));
    CHECK(berth_testhost_feed(c, "early", 5) == 0);

    berth_conn_t *peer = berth_testhost_connect_ok(th, 0, "[::1]:8080", NULL);
    CHECK(peer != NULL && berth_testhost_relayed(c));
    CHECK(output_is(peer, "early"));
    CHECK(berth_testhost_feed(peer, "reply", 5) == 0);
    CHECK(output_is(c, "reply"));
    berth_testhost_eof(c);
    berth_testhost_eof(peer);
    berth_relay_stats_t st;
    CHECK(berth_testhost_relay_done(c, &st) && st.bytes_up == 5 && st.bytes_down == 5);
    CHECK(berth_testhost_finished(c) && berth_testhost_finished(peer));
    CHECK(berth_testhost_logged(th, "forwarded 5 bytes up, 5 down"));

    /* A target that refuses: the client is closed and the failure logged. */
    c = berth_testhost_accept(th, l, "127.0.0.1:50001");
    berth_testhost_connect_fail(th, 1, BERTH_CONNECT_REFUSED, 111);
    CHECK(berth_testhost_finished(c));
    CHECK(berth_testhost_logged(th, "connect to ::1:8080 failed"));

    berth_testhost_free(th);
    puts("forward: all checks passed");
    return 0;
}
