/*
 * berth-testhost's own tests: host->dgram_* refuses misuse with berthd's answers
 * (include/berth/handler.h, daemon/worker/udp_assoc.c), so a plugin tested on the test host
 * meets what it will meet in berthd. A probe plugin defined here drives each refusal; the
 * dgramabuse test plugin (tests/plugins/dgramabuse.c, linked in) is run through the test host
 * with the same expectations tests/integration/test_dgram_misuse.py has of berthd.
 */
#include <berth/testhost.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

extern const berth_handler_t berth_handler; /* dgramabuse */

/* ---- the probe plugin ---- */

static const berth_host_t *probe_host;

typedef struct probe_state {
    berth_dgram_t *d;
} probe_state_t;

/* What the probe's finish() met when it used its socket's handle, and a socket it tried to
 * open there. */
static struct {
    bool ran;
    int send, open;
    bool addr_null;
    socklen_t addr_len;
    berth_dgram_t *opened;
} at_finish;

static int probe_load(const berth_host_t *h)
{
    probe_host = h;
    return 0;
}

static void probe_datagram(berth_conn_t *conn, berth_dgram_t *d, const void *data, size_t len,
                           const struct sockaddr *from, void *arg)
{
    (void)conn;
    (void)d;
    (void)data;
    (void)len;
    (void)from;
    (void)arg;
}

static void probe_handle(berth_conn_t *conn, const void *data, size_t len)
{
    (void)conn;
    (void)data;
    (void)len;
}

static void probe_connected(berth_conn_t *conn, const berth_connect_result_t *result, void *arg)
{
    (void)conn;
    (void)result;
    (void)arg;
}

static void probe_finish(berth_conn_t *conn)
{
    probe_state_t *s = probe_host->state(conn);
    if (!s->d)
        return;
    at_finish.ran = true;
    at_finish.send = probe_host->dgram_send(s->d, "127.0.0.1", 9, "x", 1, NULL, NULL);
    at_finish.addr_len = 99;
    at_finish.addr_null = probe_host->dgram_local_addr(s->d, &at_finish.addr_len) == NULL;
    probe_host->dgram_close(s->d);
    probe_host->dgram_close(s->d);
    struct sockaddr_in at = {.sin_family = AF_INET};
    at_finish.opened = (berth_dgram_t *)&at_finish; /* not NULL: the call must clear it */
    at_finish.open = probe_host->dgram_open(conn, (const struct sockaddr *)&at, 0, 4,
                                            probe_datagram, NULL, &at_finish.opened);
}

static const berth_handler_t probe = {
    BERTH_HANDLER_INIT("probe"), .conn_size = sizeof(probe_state_t),
    .load = probe_load,          .handle = probe_handle,
    .finish = probe_finish,
};

typedef struct fixture {
    berth_testhost_t *th;
    const berth_host_t *h;
    berth_listener_t *l;
    berth_conn_t *c;
} fixture_t;

static int setup(void **state)
{
    static fixture_t f;
    char err[256] = "";
    memset(&f, 0, sizeof f);
    memset(&at_finish, 0, sizeof at_finish);
    f.th = berth_testhost_new(&probe, err, sizeof err);
    if (!f.th)
        fail_msg("%s", err);
    f.h = berth_testhost_table(f.th);
    f.l = berth_testhost_listener(f.th, "probe", BERTH_PROTO_TCP, (const char *[]){NULL}, err,
                                  sizeof err);
    if (!f.l)
        fail_msg("%s", err);
    f.c = berth_testhost_accept(f.th, f.l, "127.0.0.1:5000");
    *state = &f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    berth_testhost_free(f->th);
    return 0;
}

static const struct sockaddr *v4_any(struct sockaddr_in *at)
{
    memset(at, 0, sizeof *at);
    at->sin_family = AF_INET;
    return (const struct sockaddr *)at;
}

static const struct sockaddr *v6_any(struct sockaddr_in6 *at)
{
    memset(at, 0, sizeof *at);
    at->sin6_family = AF_INET6;
    return (const struct sockaddr *)at;
}

/* A socket the probe's conn opens (and finish() uses), bound at 0.0.0.0 port 0. */
static berth_dgram_t *open_v4(fixture_t *f, uint32_t max_queued)
{
    struct sockaddr_in at;
    berth_dgram_t *d = NULL;
    assert_int_equal(f->h->dgram_open(f->c, v4_any(&at), 0, max_queued, probe_datagram, NULL, &d),
                     0);
    assert_non_null(d);
    probe_state_t *s = f->h->state(f->c);
    s->d = d;
    return d;
}

/* ---- dgram_open ---- */

static void test_open_refuses_bad_arguments_and_clears_out(void **state)
{
    fixture_t *f = *state;
    struct sockaddr_in at;
    berth_dgram_t *sentinel = (berth_dgram_t *)&at, *d = sentinel;

    assert_int_equal(f->h->dgram_open(NULL, v4_any(&at), 0, 4, probe_datagram, NULL, &d), -EINVAL);
    assert_null(d);
    d = sentinel;
    assert_int_equal(f->h->dgram_open(f->c, NULL, 0, 4, probe_datagram, NULL, &d), -EINVAL);
    assert_null(d);
    d = sentinel;
    assert_int_equal(f->h->dgram_open(f->c, v4_any(&at), 0, 4, NULL, NULL, &d), -EINVAL);
    assert_null(d);
    d = sentinel;
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    assert_int_equal(
        f->h->dgram_open(f->c, (const struct sockaddr *)&un, 0, 4, probe_datagram, NULL, &d),
        -EINVAL);
    assert_null(d);
    assert_int_equal(f->h->dgram_open(f->c, v4_any(&at), 0, 4, probe_datagram, NULL, NULL),
                     -EINVAL);
    assert_int_equal(berth_testhost_dgrams(f->c), 0);

    /* A conn with a connect in flight has no room for one (berthd's one hook slot). */
    assert_int_equal(f->h->connect(f->c, "127.0.0.1", 80, 0, NULL, probe_connected, NULL), 0);
    d = sentinel;
    assert_int_equal(f->h->dgram_open(f->c, v4_any(&at), 0, 4, probe_datagram, NULL, &d),
                     -EALREADY);
    assert_null(d);
}

static void test_open_refused_once_the_conn_ends(void **state)
{
    fixture_t *f = *state;
    struct sockaddr_in at;
    berth_dgram_t *d = (berth_dgram_t *)&at;
    f->h->close(f->c);
    /* Begun to end, finish() not run yet (no settle until a test-host entry point). */
    assert_int_equal(f->h->dgram_open(f->c, v4_any(&at), 0, 4, probe_datagram, NULL, &d), -EPIPE);
    assert_null(d);
    assert_int_equal(berth_testhost_dgrams(f->c), 0);
}

/* ---- a NULL handle ---- */

static void test_null_handle_is_refused_everywhere(void **state)
{
    fixture_t *f = *state;
    assert_int_equal(f->h->dgram_send(NULL, "127.0.0.1", 9, "x", 1, NULL, NULL), -EINVAL);
    socklen_t len = 99;
    assert_null(f->h->dgram_local_addr(NULL, &len));
    assert_int_equal(len, 0);
    assert_null(f->h->dgram_local_addr(NULL, NULL));
    f->h->dgram_close(NULL);
    assert_true(berth_testhost_dgram_closed(NULL));
    assert_int_equal(berth_testhost_dgram_recv(NULL, "127.0.0.1:9", "x", 1), -EINVAL);
}

/* ---- dgram_send's arguments ---- */

static void test_send_refuses_bad_arguments(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    static char big[65508];
    assert_int_equal(f->h->dgram_send(d, NULL, 9, "x", 1, NULL, NULL), -EINVAL);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 0, "x", 1, NULL, NULL), -EINVAL);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, big, sizeof big, NULL, NULL), -EINVAL);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, NULL, 1, NULL, NULL), -EINVAL);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 0);
    /* The bounds themselves are fine: 65507 bytes, and no data at all. */
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, big, sizeof big - 1, NULL, NULL), 0);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 65535, NULL, 0, NULL, NULL), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 2);
    size_t n = 1;
    uint16_t port = 0;
    assert_non_null(berth_testhost_dgram_sent(d, 1, NULL, &port, &n));
    assert_int_equal(n, 0);
    assert_int_equal(port, 65535);
}

/* ---- a closed socket ---- */

static void test_closed_socket_refuses_and_is_closed_once(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    socklen_t len = 0;
    assert_non_null(f->h->dgram_local_addr(d, &len));
    assert_int_equal(len, sizeof(struct sockaddr_in));
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, "a", 1, NULL, NULL), 0);

    f->h->dgram_close(d);
    f->h->dgram_close(d); /* again: nothing */
    assert_true(berth_testhost_dgram_closed(d));
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, "b", 1, NULL, NULL), -EPIPE);
    assert_int_equal(f->h->dgram_send(d, "example.org", 9, "b", 1, NULL, NULL), -EPIPE);
    len = 99;
    assert_null(f->h->dgram_local_addr(d, &len));
    assert_int_equal(len, 0);
    assert_int_equal(berth_testhost_dgram_recv(d, "127.0.0.1:9", "x", 1), -EPIPE);
    /* What it sent before stays readable. */
    assert_int_equal(berth_testhost_dgram_sent_count(d), 1);

    /* A new socket is another handle; the old one stays refused. */
    berth_dgram_t *e = open_v4(f, 4);
    assert_ptr_not_equal(e, d);
    assert_int_equal(f->h->dgram_send(e, "127.0.0.1", 9, "c", 1, NULL, NULL), 0);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, "c", 1, NULL, NULL), -EPIPE);
    assert_int_equal(berth_testhost_dgrams(f->c), 2);
    assert_ptr_equal(berth_testhost_dgram_at(f->c, 0), d);
    assert_ptr_equal(berth_testhost_dgram_at(f->c, 1), e);
}

/* ---- the conn began to end: its sockets close at once, not at finish() ---- */

static void check_ended(fixture_t *f, berth_dgram_t *d)
{
    assert_true(berth_testhost_dgram_closed(d));
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, "x", 1, NULL, NULL), -EPIPE);
    socklen_t len = 99;
    assert_null(f->h->dgram_local_addr(d, &len));
    assert_int_equal(len, 0);
    assert_int_equal(berth_testhost_dgram_recv(d, "127.0.0.1:9", "x", 1), -EPIPE);
    f->h->dgram_close(d);
}

static void test_conn_close_closes_its_sockets_at_once(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    f->h->close(f->c);
    assert_false(berth_testhost_finished(f->c)); /* ending, not ended */
    check_ended(f, d);
}

static void test_conn_abort_closes_its_sockets(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    f->h->abort(f->c);
    check_ended(f, d);
}

static void test_peer_eof_and_reset_close_the_sockets(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    berth_testhost_eof(f->c); /* the probe has no eof(): the host closes the conn */
    assert_true(berth_testhost_finished(f->c));
    check_ended(f, d);

    berth_conn_t *c2 = berth_testhost_accept(f->th, f->l, "127.0.0.1:5001");
    f->c = c2;
    berth_dgram_t *e = open_v4(f, 4);
    berth_testhost_reset(c2);
    assert_true(berth_testhost_finished(c2));
    check_ended(f, e);
}

/* ---- from finish() ---- */

static void test_finish_meets_refusals(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 9, "x", 1, NULL, NULL), 0);
    berth_testhost_eof(f->c);
    assert_true(at_finish.ran);
    assert_int_equal(at_finish.send, -EPIPE);
    assert_true(at_finish.addr_null);
    assert_int_equal(at_finish.addr_len, 0);
    assert_int_equal(at_finish.open, -EPIPE);
    assert_null(at_finish.opened);
    assert_int_equal(berth_testhost_dgrams(f->c), 1);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 1);
}

static void test_free_runs_finish_with_the_socket_open(void **state)
{
    fixture_t *f = *state;
    open_v4(f, 4);
    berth_testhost_free(f->th); /* ends the conn: finish() uses the handle after it closed */
    f->th = NULL;
    assert_true(at_finish.ran);
    assert_int_equal(at_finish.send, -EPIPE);
    assert_true(at_finish.addr_null);
    assert_int_equal(at_finish.addr_len, 0);
    assert_int_equal(at_finish.open, -EPIPE);
    assert_null(at_finish.opened);
}

/* ---- allow, and the socket's family ---- */

typedef struct allow_probe {
    const berth_host_t *h;
    berth_dgram_t *d;
    int what; /* 0 allow, 1 refuse, 2 close the socket, 3 close the conn */
    int family;
    uint16_t port;
    unsigned calls;
} allow_probe_t;

static int probe_allow(berth_conn_t *conn, const struct sockaddr *addr, void *arg)
{
    allow_probe_t *a = arg;
    a->calls++;
    a->family = addr->sa_family;
    a->port = addr->sa_family == AF_INET ? ntohs(((const struct sockaddr_in *)addr)->sin_port)
                                         : ntohs(((const struct sockaddr_in6 *)addr)->sin6_port);
    if (a->what == 2)
        a->h->dgram_close(a->d);
    else if (a->what == 3)
        a->h->close(conn);
    return a->what == 1 ? -1 : 0;
}

static void test_allow_refusing_or_closing(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    allow_probe_t a = {.h = f->h, .d = d, .what = 1};
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 53, "x", 1, probe_allow, &a), -EACCES);
    assert_int_equal(a.calls, 1);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(a.port, 53);
    a.what = 2; /* allow closes the socket: nothing is sent on it */
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 53, "x", 1, probe_allow, &a), -EPIPE);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 0);

    berth_dgram_t *e = open_v4(f, 4);
    a.d = e;
    a.what = 3; /* allow ends the conn */
    assert_int_equal(f->h->dgram_send(e, "127.0.0.1", 53, "x", 1, probe_allow, &a), -EPIPE);
    assert_int_equal(berth_testhost_dgram_sent_count(e), 0);
    assert_true(berth_testhost_dgram_closed(e));
}

static void test_family_and_v4_mapped(void **state)
{
    fixture_t *f = *state;
    berth_dgram_t *d = open_v4(f, 4);
    allow_probe_t a = {.h = f->h, .d = d};
    /* IPv6 from an IPv4 socket: after allow, as berthd checks it. */
    assert_int_equal(f->h->dgram_send(d, "::1", 53, "x", 1, probe_allow, &a), -EAFNOSUPPORT);
    assert_int_equal(a.family, AF_INET6);
    /* A v4-mapped address is offered to allow as IPv4, and sent. */
    assert_int_equal(f->h->dgram_send(d, "::ffff:127.0.0.1", 53, "x", 1, probe_allow, &a), 0);
    assert_int_equal(a.family, AF_INET);
    assert_int_equal(a.port, 53);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 1);

    /* A dual-stack (IPv6) socket reaches both. */
    struct sockaddr_in6 at6;
    berth_dgram_t *e = NULL;
    assert_int_equal(f->h->dgram_open(f->c, v6_any(&at6), 0, 4, probe_datagram, NULL, &e), 0);
    assert_int_equal(f->h->dgram_send(e, "::1", 53, "x", 1, NULL, NULL), 0);
    assert_int_equal(f->h->dgram_send(e, "127.0.0.1", 53, "x", 1, NULL, NULL), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(e), 2);
}

/* ---- names: recorded, never resolved, so no lookups in flight and no -EBUSY ---- */

static void test_names_are_recorded_not_resolved(void **state)
{
    fixture_t *f = *state;
    /* max_queued 0: berthd holds no datagram for a name, so every name is -ENOBUFS. */
    berth_dgram_t *d = open_v4(f, 0);
    assert_int_equal(f->h->dgram_send(d, "dns.example", 53, "q", 1, NULL, NULL), -ENOBUFS);
    assert_int_equal(f->h->dgram_send(d, "127.0.0.1", 53, "q", 1, NULL, NULL), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(d), 1);

    /* With room for one, a name is recorded as given; allow is never asked (nothing resolves),
     * and as nothing waits on a resolver, neither max_queued nor berthd's cap on lookups in
     * flight (-EBUSY) is ever reached. */
    berth_dgram_t *e = open_v4(f, 1);
    allow_probe_t a = {.h = f->h, .d = e, .what = 1};
    for (int i = 0; i < 64; i++)
        assert_int_equal(f->h->dgram_send(e, "dns.example", 53, "q", 1, probe_allow, &a), 0);
    assert_int_equal(a.calls, 0);
    assert_int_equal(berth_testhost_dgram_sent_count(e), 64);
    const char *host = NULL;
    assert_non_null(berth_testhost_dgram_sent(e, 63, &host, NULL, NULL));
    assert_string_equal(host, "dns.example");
}

/* ---- dgramabuse: the same answers tests/integration/test_dgram_misuse.py gets from berthd --- */

static void expect_output(berth_conn_t *c, const char *want)
{
    size_t n;
    const char *out = berth_testhost_output(c, &n);
    char got[256];
    assert_true(n < sizeof got);
    memcpy(got, out, n);
    got[n] = '\0';
    assert_string_equal(got, want);
    berth_testhost_consume(c, n);
}

static berth_testhost_t *abuse_host(berth_listener_t **l)
{
    char err[256] = "";
    berth_testhost_t *th = berth_testhost_new(&berth_handler, err, sizeof err);
    if (!th)
        fail_msg("%s", err);
    *l = berth_testhost_listener(th, "abuse", BERTH_PROTO_TCP, (const char *[]){NULL}, err,
                                 sizeof err);
    if (!*l)
        fail_msg("%s", err);
    return th;
}

static void echo(berth_conn_t *c, size_t i)
{
    berth_dgram_t *d = berth_testhost_dgram_at(c, i);
    assert_non_null(d);
    size_t before = berth_testhost_dgram_sent_count(d);
    assert_int_equal(berth_testhost_dgram_recv(d, "127.0.0.1:40000", "ping", 4), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(d), before + 1);
}

static void test_dgramabuse_every_misuse_is_refused(void **unused)
{
    (void)unused;
    berth_listener_t *l;
    berth_testhost_t *th = abuse_host(&l);
    berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:5000");
    char want[128];
    snprintf(want, sizeof want, "open 50000 null=%d,null,0\n", -EINVAL);
    expect_output(c, want);
    echo(c, 0);
    assert_int_equal(berth_testhost_feed(c, "close\n", 6), 0);
    snprintf(want, sizeof want, "closed send=%d addr=null len=0\n", -EPIPE);
    expect_output(c, want);
    assert_int_equal(berth_testhost_feed(c, "reopen\n", 7), 0);
    snprintf(want, sizeof want, "reopen 50001 old=%d\n", -EPIPE);
    expect_output(c, want);
    echo(c, 1);
    assert_int_equal(berth_testhost_feed(c, "end\n", 4), 0);
    assert_true(berth_testhost_closed(c));
    assert_true(berth_testhost_finished(c));
    snprintf(want, sizeof want, "dgramabuse: ending send=%d finish send=%d addr=null len=0", -EPIPE,
             -EPIPE);
    if (!berth_testhost_logged(th, want))
        fail_msg("no \"%s\" in the log:\n%s", want, berth_testhost_log(th));
    berth_testhost_free(th);
}

static void test_dgramabuse_conn_ends_with_its_socket_open(void **unused)
{
    (void)unused;
    berth_listener_t *l;
    berth_testhost_t *th = abuse_host(&l);
    for (int i = 0; i < 3; i++) {
        berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:5000");
        echo(c, 0);
        berth_testhost_eof(c); /* the client goes away */
        assert_true(berth_testhost_finished(c));
    }
    char want[128];
    snprintf(want, sizeof want, "dgramabuse: ending send=0 finish send=%d addr=null len=0", -EPIPE);
    if (!berth_testhost_logged(th, want))
        fail_msg("no \"%s\" in the log:\n%s", want, berth_testhost_log(th));
    berth_testhost_free(th);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_open_refuses_bad_arguments_and_clears_out, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_open_refused_once_the_conn_ends, setup, teardown),
        cmocka_unit_test_setup_teardown(test_null_handle_is_refused_everywhere, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_refuses_bad_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_closed_socket_refuses_and_is_closed_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conn_close_closes_its_sockets_at_once, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_conn_abort_closes_its_sockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_eof_and_reset_close_the_sockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_finish_meets_refusals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_runs_finish_with_the_socket_open, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_allow_refusing_or_closing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_family_and_v4_mapped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_names_are_recorded_not_resolved, setup, teardown),
        cmocka_unit_test(test_dgramabuse_every_misuse_is_refused),
        cmocka_unit_test(test_dgramabuse_conn_ends_with_its_socket_open),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
