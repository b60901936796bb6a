/*
 * The built socks5.so driven through berth-testhost: greeting, CONNECT, relay, the reply
 * codes for each connect outcome, destination rules, the handshake timer. No daemon, no
 * sockets: the test answers the plugin's connects itself.
 */
#include <berth/testhost.h>

#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

typedef struct fixture {
    berth_testhost_t *th;
    berth_listener_t *l;
} fixture_t;

static fixture_t *open_socks5(const char *const *options)
{
    static fixture_t f;
    char err[256] = "";
    f.th = berth_testhost_open(PLUGIN_SO, err, sizeof err);
    if (!f.th)
        fail_msg("%s", err);
    f.l = berth_testhost_listener(f.th, "socks", BERTH_PROTO_TCP, options, err, sizeof err);
    if (!f.l)
        fail_msg("listener: %s", err);
    return &f;
}

static void expect_output(berth_conn_t *c, const void *want, size_t len)
{
    size_t n;
    const void *out = berth_testhost_output(c, &n);
    assert_int_equal(n, len);
    assert_memory_equal(out, want, len);
    berth_testhost_consume(c, n);
}

/* The greeting with "no authentication", answered. */
static berth_conn_t *greeted(fixture_t *f)
{
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:5555");
    assert_int_equal(berth_testhost_feed(c, "\x05\x01\x00", 3), 0);
    expect_output(c, "\x05\x00", 2);
    return c;
}

static const unsigned char connect_80[] = {5, 1, 0, 1, 127, 0, 0, 1, 0, 80};

static void test_connect_relays_both_ways(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){"allow_dest", "127.0.0.0/8", NULL});
    berth_conn_t *c = greeted(f);
    /* The request and early data in one read: the data waits for the peer. */
    unsigned char req[sizeof connect_80 + 3];
    memcpy(req, connect_80, sizeof connect_80);
    memcpy(req + sizeof connect_80, "GET", 3);
    assert_int_equal(berth_testhost_feed(c, req, sizeof req), 0);
    assert_int_equal(berth_testhost_connects(f->th), 1);
    const berth_testhost_connect_t *r = berth_testhost_connect_at(f->th, 0);
    assert_string_equal(r->host, "127.0.0.1");
    assert_int_equal(r->port, 80);
    assert_true(r->timeout_ms > 0);

    berth_conn_t *peer = berth_testhost_connect_ok(f->th, 0, "127.0.0.1:80", "127.0.0.1:40000");
    assert_non_null(peer);
    /* BND.ADDR/BND.PORT: our end of the outbound connection (40000 = 0x9c40). */
    expect_output(c, "\x05\x00\x00\x01\x7f\x00\x00\x01\x9c\x40", 10);
    expect_output(peer, "GET", 3);
    assert_true(berth_testhost_relayed(c));

    assert_int_equal(berth_testhost_feed(c, " /", 2), 0);
    expect_output(peer, " /", 2);
    assert_int_equal(berth_testhost_feed(peer, "HTTP/1.0 200", 12), 0);
    expect_output(c, "HTTP/1.0 200", 12);

    /* EOF travels as a half-close; both EOFs end the relay and the session. */
    berth_testhost_eof(c);
    assert_true(berth_testhost_shut_down(peer));
    assert_false(berth_testhost_finished(c));
    berth_testhost_eof(peer);
    assert_true(berth_testhost_shut_down(c));
    berth_relay_stats_t st;
    assert_true(berth_testhost_relay_done(c, &st));
    assert_int_equal(st.error, 0);
    assert_int_equal(st.bytes_down, 12);
    assert_true(berth_testhost_finished(c));
    assert_true(berth_testhost_finished(peer));
    /* The session's figures reach the plugin's metrics. */
    int64_t v = -1;
    assert_true(berth_testhost_metric(f->th, f->l, "socks5_replies_total{code=\"0\"}", &v));
    assert_int_equal(v, 1);
    assert_true(
        berth_testhost_metric(f->th, f->l, "socks5_relayed_bytes_total{direction=\"down\"}", &v));
    assert_int_equal(v, 12);
    /* udp and bind are off: their counters take none of the daemon's shared slots */
    assert_false(berth_testhost_metric(f->th, f->l, "socks5_udp_associations_total", &v));
    assert_false(berth_testhost_metric(f->th, f->l, "socks5_binds_total{result=\"refused\"}", &v));
    berth_testhost_free(f->th);
}

static void test_name_is_resolved_by_the_host(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){NULL});
    berth_conn_t *c = greeted(f);
    static const unsigned char req[] = {5,   1,   0,   3,   9,   'l', 'o',  'c',
                                        'a', 'l', 'h', 'o', 's', 't', 0x1f, 0x90};
    assert_int_equal(berth_testhost_feed(c, req, sizeof req), 0);
    assert_int_equal(berth_testhost_connects(f->th), 1);
    assert_string_equal(berth_testhost_connect_at(f->th, 0)->host, "localhost");
    assert_int_equal(berth_testhost_connect_at(f->th, 0)->port, 8080);
    berth_testhost_free(f->th);
}

/* Each connect outcome gets its RFC 1928 reply code, and the session ends. */
static void test_connect_errors_map_to_reply_codes(void **unused)
{
    (void)unused;
    static const struct {
        berth_connect_error_t error;
        int sys_errno;
        unsigned char rep;
    } cases[] = {
        {BERTH_CONNECT_REFUSED, ECONNREFUSED, 5},
        {BERTH_CONNECT_NET_UNREACH, ENETUNREACH, 3},
        {BERTH_CONNECT_HOST_UNREACH, EHOSTUNREACH, 4},
        {BERTH_CONNECT_NO_NAME, 0, 4},
        {BERTH_CONNECT_TIMEOUT, ETIMEDOUT, 6},
        {BERTH_CONNECT_FAILED, EIO, 1},
        {BERTH_CONNECT_DENIED, 0, 2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        fixture_t *f = open_socks5((const char *[]){"allow_dest", "127.0.0.0/8", NULL});
        berth_conn_t *c = greeted(f);
        assert_int_equal(berth_testhost_feed(c, connect_80, sizeof connect_80), 0);
        berth_testhost_connect_fail(f->th, 0, cases[i].error, cases[i].sys_errno);
        size_t n;
        const unsigned char *out = berth_testhost_output(c, &n);
        assert_true(n >= 2);
        assert_int_equal(out[0], 5);
        assert_int_equal(out[1], cases[i].rep);
        assert_true(berth_testhost_closed(c));
        assert_true(berth_testhost_finished(c));
        char name[64];
        int64_t v = 0;
        snprintf(name, sizeof name, "socks5_replies_total{code=\"%d\"}", cases[i].rep);
        assert_true(berth_testhost_metric(f->th, f->l, name, &v));
        assert_int_equal(v, 1);
        berth_testhost_free(f->th);
    }
}

/* A destination the rules refuse is never connected: the allow callback says no when the
 * host offers the address, and the client hears "not allowed" (2). */
static void test_deny_dest_refuses_the_address(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){"deny_dest", "127.0.0.0/8", NULL});
    berth_conn_t *c = greeted(f);
    assert_int_equal(berth_testhost_feed(c, connect_80, sizeof connect_80), 0);
    size_t n;
    const unsigned char *out = berth_testhost_output(c, &n);
    if (berth_testhost_connects(f->th) == 1) {
        /* Checked when the host offers the address. */
        assert_null(berth_testhost_connect_ok(f->th, 0, "127.0.0.1:80", NULL));
        out = berth_testhost_output(c, &n);
    }
    assert_true(n >= 2);
    assert_int_equal(out[1], 2);
    assert_true(berth_testhost_finished(c));
    berth_testhost_free(f->th);
}

static void test_handshake_timeout_closes(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){"handshake_timeout", "2s", NULL});
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "[::1]:6000");
    assert_int_equal(berth_testhost_feed(c, "\x05\x02", 2), 0); /* half a greeting */
    berth_testhost_advance(f->th, 1999);
    assert_false(berth_testhost_closed(c));
    berth_testhost_advance(f->th, 1);
    assert_true(berth_testhost_closed(c));
    assert_true(berth_testhost_finished(c));
    berth_testhost_free(f->th);
}

static void test_bad_version_is_dropped(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){NULL});
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:7000");
    assert_int_equal(berth_testhost_feed(c, "\x04\x01\x00\x50", 4), 0);
    assert_true(berth_testhost_closed(c));
    assert_int_equal(berth_testhost_connects(f->th), 0);
    berth_testhost_free(f->th);
}

/* A client gone while its connect is pending: the host cancels the connect, the session
 * ends once, and no peer is left behind. */
static void test_client_gone_while_connecting(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){"allow_dest", "127.0.0.0/8", NULL});
    berth_conn_t *c = greeted(f);
    assert_int_equal(berth_testhost_feed(c, connect_80, sizeof connect_80), 0);
    assert_int_equal(berth_testhost_connects(f->th), 1);
    /* EOF alone is a half-close: the session still waits for its reply. */
    berth_testhost_eof(c);
    assert_false(berth_testhost_finished(c));
    berth_testhost_reset(c);
    assert_true(berth_testhost_finished(c));
    assert_true(berth_testhost_connect_at(f->th, 0)->answered);
    berth_testhost_free(f->th);
}

static void test_bad_option_is_refused(void **unused)
{
    (void)unused;
    char err[256] = "";
    berth_testhost_t *th = berth_testhost_open(PLUGIN_SO, err, sizeof err);
    assert_non_null(th);
    assert_null(berth_testhost_listener(th, "socks", BERTH_PROTO_TCP,
                                        (const char *[]){"auth", "carrier-pigeon", NULL}, err,
                                        sizeof err));
    assert_non_null(strstr(err, "auth"));
    berth_testhost_free(th);
}

/* UDP ASSOCIATE: the reply names the client-facing socket; a datagram from the client goes
 * to its destination through the other socket, the answer comes back wrapped; strangers and
 * fragments are dropped; the association ends with its TCP connection. */
static void test_udp_associate(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5((const char *[]){"allow_dest", "127.0.0.0/8", "udp", "on", NULL});
    berth_conn_t *c = greeted(f);
    static const unsigned char req[] = {5, 3, 0, 1, 0, 0, 0, 0, 0, 0}; /* "any port" */
    assert_int_equal(berth_testhost_feed(c, req, sizeof req), 0);
    assert_int_equal(berth_testhost_dgrams(c), 2);
    berth_dgram_t *client = berth_testhost_dgram_at(c, 0), *dest = berth_testhost_dgram_at(c, 1);
    /* BND: the listener's address (the test host's 127.0.0.1) and the socket's port. */
    socklen_t len;
    const struct sockaddr_in *bnd =
        (const struct sockaddr_in *)berth_testhost_table(f->th)->dgram_local_addr(client, &len);
    unsigned char want[10] = {5, 0, 0, 1, 127, 0, 0, 1, 0, 0};
    memcpy(want + 8, &bnd->sin_port, 2);
    expect_output(c, want, sizeof want);

    /* client -> 127.0.0.1:5353 */
    static const unsigned char up[] = {0, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xe9, 'p', 'i', 'n', 'g'};
    assert_int_equal(berth_testhost_dgram_recv(client, "127.0.0.1:40001", up, sizeof up), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(dest), 1);
    const char *host;
    uint16_t port;
    size_t n;
    const char *data = berth_testhost_dgram_sent(dest, 0, &host, &port, &n);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 5353);
    assert_int_equal(n, 4);
    assert_memory_equal(data, "ping", 4);

    /* the answer, wrapped with its source, to the client's address and port */
    assert_int_equal(berth_testhost_dgram_recv(dest, "127.0.0.1:5353", "pong", 4), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(client), 1);
    data = berth_testhost_dgram_sent(client, 0, &host, &port, &n);
    assert_string_equal(host, "127.0.0.1");
    assert_int_equal(port, 40001);
    static const unsigned char down[] = {0, 0, 0, 1, 127, 0, 0, 1, 0x14, 0xe9, 'p', 'o', 'n', 'g'};
    assert_int_equal(n, sizeof down);
    assert_memory_equal(data, down, sizeof down);

    /* a stranger, another port of the client, a fragment: dropped */
    assert_int_equal(berth_testhost_dgram_recv(client, "127.0.0.2:40001", up, sizeof up), 0);
    assert_int_equal(berth_testhost_dgram_recv(client, "127.0.0.1:40002", up, sizeof up), 0);
    unsigned char frag[sizeof up];
    memcpy(frag, up, sizeof up);
    frag[2] = 1;
    assert_int_equal(berth_testhost_dgram_recv(client, "127.0.0.1:40001", frag, sizeof frag), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(dest), 1);
    /* to a destination allow_dest refuses, and an answer from where the client never sent */
    unsigned char far[sizeof up];
    memcpy(far, up, sizeof up);
    far[4] = 10;
    assert_int_equal(berth_testhost_dgram_recv(client, "127.0.0.1:40001", far, sizeof far), 0);
    assert_int_equal(berth_testhost_dgram_recv(dest, "127.0.0.1:5354", "pong", 4), 0);
    assert_int_equal(berth_testhost_dgram_sent_count(dest), 1);
    assert_int_equal(berth_testhost_dgram_sent_count(client), 1);

    /* counted on the listener's metrics as it happened, the association still open */
    static const struct {
        const char *name;
        int64_t want;
    } counted[] = {
        {"socks5_udp_associations_total", 1},
        {"socks5_udp_datagrams_total{direction=\"up\"}", 1},
        {"socks5_udp_datagrams_total{direction=\"down\"}", 1},
        {"socks5_udp_bytes_total{direction=\"up\"}", 4},
        {"socks5_udp_bytes_total{direction=\"down\"}", 4},
        {"socks5_udp_dropped_total{reason=\"stranger\"}", 2},
        {"socks5_udp_dropped_total{reason=\"fragment\"}", 1},
        {"socks5_udp_dropped_total{reason=\"denied\"}", 1},
        {"socks5_udp_dropped_total{reason=\"unasked\"}", 1},
        {"socks5_udp_dropped_total{reason=\"malformed\"}", 0},
        {"socks5_udp_dropped_total{reason=\"queue\"}", 0},
        {"socks5_udp_dropped_total{reason=\"resolver\"}", 0},
    };
    for (size_t i = 0; i < sizeof counted / sizeof counted[0]; i++) {
        int64_t v = -1;
        assert_true(berth_testhost_metric(f->th, f->l, counted[i].name, &v));
        if (v != counted[i].want)
            fail_msg("%s: %lld, want %lld", counted[i].name, (long long)v,
                     (long long)counted[i].want);
    }
    /* BIND is off on this listener: none of its slots taken */
    int64_t none;
    assert_false(
        berth_testhost_metric(f->th, f->l, "socks5_binds_total{result=\"accepted\"}", &none));

    /* the control connection ends: so does the association */
    berth_testhost_reset(c);
    assert_true(berth_testhost_finished(c));
    assert_true(berth_testhost_dgram_closed(client));
    assert_true(berth_testhost_dgram_closed(dest));
    berth_testhost_free(f->th);
}

/* BIND: the first reply names the listening port, the second the peer; a peer other than
 * DST.ADDR is refused and the wait goes on; then the two are relayed. */
static void test_bind(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5(
        (const char *[]){"allow_dest", "127.0.0.0/8", "bind", "on", "bind_max", "1", NULL});
    berth_conn_t *c = greeted(f);
    static const unsigned char req[] = {5, 2, 0, 1, 127, 0, 0, 7, 0, 0};
    assert_int_equal(berth_testhost_feed(c, req, sizeof req), 0);
    assert_int_equal(berth_testhost_connects(f->th), 1);
    const berth_testhost_connect_t *l = berth_testhost_connect_at(f->th, 0);
    assert_true(l->listen);
    unsigned char first[10] = {
        5, 0, 0, 1, 127, 0, 0, 1, (unsigned char)(l->port >> 8), (unsigned char)l->port};
    expect_output(c, first, sizeof first);

    /* A second BIND meanwhile is past bind_max: refused (reply 1), and counted so. */
    berth_conn_t *c2 = greeted(f);
    assert_int_equal(berth_testhost_feed(c2, req, sizeof req), 0);
    size_t n2;
    const unsigned char *out2 = berth_testhost_output(c2, &n2);
    assert_true(n2 >= 2);
    assert_int_equal(out2[1], 1);
    int64_t v = -1;
    assert_true(berth_testhost_metric(f->th, f->l, "socks5_binds_total{result=\"accepted\"}", &v));
    assert_int_equal(v, 1);
    assert_true(berth_testhost_metric(f->th, f->l, "socks5_binds_total{result=\"refused\"}", &v));
    assert_int_equal(v, 1);
    /* UDP is off on this listener: none of its slots taken */
    assert_false(berth_testhost_metric(f->th, f->l, "socks5_udp_associations_total", &v));

    assert_null(berth_testhost_connect_ok(f->th, 0, "127.0.0.9:6000", NULL)); /* not DST.ADDR */
    assert_false(berth_testhost_connect_at(f->th, 0)->answered);
    size_t n;
    berth_testhost_output(c, &n);
    assert_int_equal(n, 0);

    berth_conn_t *peer = berth_testhost_connect_ok(f->th, 0, "127.0.0.7:6000", NULL);
    assert_non_null(peer);
    static const unsigned char second[] = {5, 0, 0, 1, 127, 0, 0, 7, 0x17, 0x70};
    expect_output(c, second, sizeof second);
    assert_true(berth_testhost_relayed(c));
    assert_int_equal(berth_testhost_feed(peer, "hello", 5), 0);
    expect_output(c, "hello", 5);
    berth_testhost_free(f->th);
}

static void test_bind_timeout(void **unused)
{
    (void)unused;
    fixture_t *f = open_socks5(
        (const char *[]){"allow_dest", "127.0.0.0/8", "bind", "on", "bind_timeout", "5s", NULL});
    berth_conn_t *c = greeted(f);
    static const unsigned char req[] = {5, 2, 0, 1, 127, 0, 0, 7, 0, 0};
    assert_int_equal(berth_testhost_feed(c, req, sizeof req), 0);
    size_t n;
    berth_testhost_output(c, &n);
    berth_testhost_consume(c, n);
    berth_testhost_advance(f->th, 4999);
    assert_false(berth_testhost_closed(c));
    berth_testhost_advance(f->th, 1);
    const unsigned char *out = berth_testhost_output(c, &n);
    assert_true(n >= 2);
    assert_int_equal(out[1], 6); /* TTL expired */
    assert_true(berth_testhost_finished(c));
    berth_testhost_free(f->th);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_connect_relays_both_ways),
        cmocka_unit_test(test_name_is_resolved_by_the_host),
        cmocka_unit_test(test_connect_errors_map_to_reply_codes),
        cmocka_unit_test(test_deny_dest_refuses_the_address),
        cmocka_unit_test(test_handshake_timeout_closes),
        cmocka_unit_test(test_bad_version_is_dropped),
        cmocka_unit_test(test_client_gone_while_connecting),
        cmocka_unit_test(test_bad_option_is_refused),
        cmocka_unit_test(test_udp_associate),
        cmocka_unit_test(test_bind),
        cmocka_unit_test(test_bind_timeout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
