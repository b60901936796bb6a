/* daemon/worker/relay.c: host->relay between a conn and an outbound conn, against a test
 * plugin defined here (its first bytes ask for a connect to the test's destination, then a
 * relay), on a real uv loop over loopback TCP: half-close each way, a large transfer through
 * a client that reads late (the backlog path), many small segments waiting at once (a short
 * splice that is not an empty socket), the idle timeout, and a peer that resets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "conn_fixture.h"

static struct {
    uint16_t port;
    uint64_t idle_ms;
    int relayed, relay_done, finished, relay_error, relay_rc, asked;
    uint64_t up, down;
    berth_conn_t *client, *peer;
} T;

static void t_relay_done(berth_conn_t *c, const berth_relay_stats_t *st, void *arg)
{
    (void)c;
    (void)arg;
    T.relay_done = 1;
    T.relay_error = st->error;
    T.up = st->bytes_up;
    T.down = st->bytes_down;
}

static void t_connected(berth_conn_t *c, const berth_connect_result_t *r, void *arg)
{
    (void)arg;
    assert_int_equal(r->error, BERTH_CONNECT_OK);
    assert_int_equal(H->write(c, "ok", 2), 0); /* a reply before the relay, like SOCKS5 */
    T.peer = r->peer;
    T.relay_rc = H->relay(c, r->peer, T.idle_ms, t_relay_done, NULL);
    T.relayed = 1;
}

static void t_handle(berth_conn_t *c, const void *data, size_t len)
{
    (void)data;
    (void)len;
    H->pause(c);
    assert_int_equal(H->connect(c, "127.0.0.1", T.port, 0, NULL, t_connected, NULL), 0);
    T.asked = 1;
}

static void t_finish(berth_conn_t *c)
{
    (void)c;
    T.finished++;
}

static const berth_handler_t test_desc = {
    BERTH_HANDLER_INIT("test-relay"),
    .handle = t_handle,
    .finish = t_finish,
};

/* A relay between the test's `*cli` and `*dst` ends. */
static void start(fx_t *f, uint64_t idle_ms, int *cli, int *dst)
{
    memset(&T, 0, sizeof T);
    T.idle_ms = idle_ms;
    fx_init(f, &test_desc, 0);
    struct sockaddr_in a;
    int ls = fx_listen(&a);
    T.port = ntohs(a.sin_port);
    T.client = fx_conn(f, cli);
    assert_int_equal(send(*cli, "go", 2, 0), 2);
    fx_run_until(f, &T.relayed);
    assert_int_equal(T.relay_rc, 0);
    *dst = fx_accept(ls);
    close(ls);
    char buf[2];
    assert_int_equal(fx_read(f, *cli, buf, 2), 2);
    assert_memory_equal(buf, "ok", 2);
}

static void finish(fx_t *f, int cli, int dst)
{
    fx_run_until(f, &T.relay_done);
    while (T.finished < 1)
        uv_run(&f->w.loop, UV_RUN_ONCE);
    close(cli);
    close(dst);
    fx_end(f);
}

static void both_ways(fx_t *f, int cli, int dst)
{
    char buf[16];
    assert_int_equal(send(cli, "ping", 4, 0), 4);
    assert_int_equal(fx_read(f, dst, buf, 4), 4);
    assert_memory_equal(buf, "ping", 4);
    assert_int_equal(send(dst, "pong!", 5, 0), 5);
    assert_int_equal(fx_read(f, cli, buf, 5), 5);
    assert_memory_equal(buf, "pong!", 5);
}

static void test_client_half_closes_first(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    both_ways(&f, cli, dst);
    shutdown(cli, SHUT_WR);
    char buf[16];
    assert_int_equal(fx_read(&f, dst, buf, sizeof buf), 0); /* the EOF is passed on */
    /* The other direction still flows. */
    assert_int_equal(send(dst, "late", 4, 0), 4);
    assert_int_equal(fx_read(&f, cli, buf, 4), 4);
    assert_memory_equal(buf, "late", 4);
    shutdown(dst, SHUT_WR);
    assert_int_equal(fx_read(&f, cli, buf, sizeof buf), 0);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, 0);
    assert_int_equal(T.up, 4);
    assert_int_equal(T.down, 9);
}

static int peer_nodelay(void)
{
    int on = -1;
    socklen_t len = sizeof on;
    assert_int_equal(getsockopt(conn_fd(T.peer), IPPROTO_TCP, TCP_NODELAY, &on, &len), 0);
    return on;
}

/* TCP_NODELAY on the outbound socket is set once Nagle could hold a send back: not for a
 * first send that fits in the smallest MSS, always before the second one. */
static void test_outbound_nodelay_when_it_matters(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    assert_int_equal(peer_nodelay(), 0);
    char buf[4096];
    assert_int_equal(send(cli, "ping", 4, 0), 4);
    assert_int_equal(fx_read(&f, dst, buf, 4), 4);
    assert_int_equal(peer_nodelay(), 0); /* one small send: Nagle cannot delay it */
    assert_int_equal(send(cli, "again", 5, 0), 5);
    assert_int_equal(fx_read(&f, dst, buf, 5), 5);
    assert_int_equal(peer_nodelay(), 1);
    close(cli);
    close(dst);
    fx_run_until(&f, &T.relay_done);
    while (T.finished < 1)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    fx_end(&f);

    /* A first send bigger than 536 bytes could leave a short tail behind: set before it. */
    start(&f, 0, &cli, &dst);
    memset(buf, 'x', sizeof buf);
    assert_int_equal(send(cli, buf, 1000, 0), 1000);
    assert_int_equal(fx_read(&f, dst, buf, 1000), 1000);
    assert_int_equal(peer_nodelay(), 1);
    shutdown(cli, SHUT_WR);
    shutdown(dst, SHUT_WR);
    finish(&f, cli, dst);
}

static void test_destination_half_closes_first(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    shutdown(dst, SHUT_WR);
    char buf[16];
    assert_int_equal(fx_read(&f, cli, buf, sizeof buf), 0);
    assert_int_equal(send(cli, "after", 5, 0), 5);
    assert_int_equal(fx_read(&f, dst, buf, 5), 5);
    assert_memory_equal(buf, "after", 5);
    shutdown(cli, SHUT_WR);
    assert_int_equal(fx_read(&f, dst, buf, sizeof buf), 0);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, 0);
    assert_int_equal(T.up, 5);
    assert_int_equal(T.down, 0);
}

static void test_large_transfer_to_a_late_reader(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    /* 16 MiB from the destination while the client reads nothing: the client's socket and
     * the pipe fill, the relay stops reading the destination; then the client reads all. */
    enum { TOTAL = 16 << 20 };
    int small = 16 * 1024;
    setsockopt(cli, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    setsockopt(dst, SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    setsockopt(conn_fd(T.client), SOL_SOCKET, SO_SNDBUF, &small, sizeof small);
    char *out = malloc(TOTAL), *in = malloc(TOTAL);
    for (size_t i = 0; i < TOTAL; i++)
        out[i] = (char)(i * 7 + (i >> 13));
    fcntl(dst, F_SETFL, O_NONBLOCK);
    size_t sent = 0;
    int stalled = 0;
    while (sent < TOTAL && stalled < 50) {
        uv_run(&f.w.loop, UV_RUN_NOWAIT);
        ssize_t n = send(dst, out + sent, TOTAL - sent, MSG_DONTWAIT);
        if (n > 0) {
            sent += (size_t)n;
            stalled = 0;
        } else {
            stalled++;
            struct pollfd p[2] = {{dst, POLLOUT, 0}, {uv_backend_fd(&f.w.loop), POLLIN, 0}};
            poll(p, 2, 5);
        }
    }
    int big = 1 << 20;
    setsockopt(dst, SOL_SOCKET, SO_SNDBUF, &big, sizeof big);
    setsockopt(cli, SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    size_t got = 0;
    while (got < TOTAL) {
        ssize_t m;
        while (sent < TOTAL && (m = send(dst, out + sent, TOTAL - sent, MSG_DONTWAIT)) > 0)
            sent += (size_t)m;
        if (sent == got) {
            uv_run(&f.w.loop, UV_RUN_NOWAIT);
            continue;
        }
        ssize_t n = fx_read(&f, cli, in + got, sent - got < 65536 ? sent - got : 65536);
        assert_true(n > 0);
        got += (size_t)n;
    }
    free(out);
    free(in);
    shutdown(dst, SHUT_WR);
    shutdown(cli, SHUT_WR);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, 0);
    assert_int_equal(T.down, TOTAL);
}

/* Many small segments queued before the relay reads them: a splice stops when the pipe's
 * buffer slots run out (one per segment, or per few coalesced), short of what was asked,
 * with input still in the socket. With edge-triggered readiness that input would never be
 * read if the relay took the short splice for an empty socket, as the sender waits. Read
 * everything, failing if nothing moves while the loop has had every chance to run. */
static void test_small_segments_all_arrive(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    int one = 1, big = 4 << 20;
    setsockopt(cli, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    setsockopt(conn_fd(T.client), SOL_SOCKET, SO_RCVBUF, &big, sizeof big);
    enum { SEG = 100, COUNT = 1500, TOTAL = SEG * COUNT };
    char seg[SEG];
    for (int i = 0; i < COUNT; i++) {
        memset(seg, 'a' + i % 26, sizeof seg);
        assert_int_equal(send(cli, seg, sizeof seg, 0), SEG);
    }
    /* Everything is in the relay's socket (acknowledged), none left in the sender's: no
     * later arrival can make a new edge. */
    fx_wait_acked(cli);
    char *in = malloc(TOTAL);
    assert_int_equal(fx_read_until_quiet(&f, dst, in, TOTAL), TOTAL);
    for (size_t i = 0; i < TOTAL; i++)
        assert_int_equal(in[i], 'a' + (int)(i / SEG) % 26);
    free(in);
    shutdown(cli, SHUT_WR);
    shutdown(dst, SHUT_WR);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, 0);
    assert_int_equal(T.up, TOTAL);
}

/* The destination accepts, writes and closes before the worker's loop sees its connect
 * complete: the first readiness brings output, input and the peer's EOF at once. That is a
 * connection (with bytes and an EOF to relay), not a refusal. */
static void test_peer_writes_and_closes_at_once(void **state)
{
    (void)state;
    fx_t f;
    memset(&T, 0, sizeof T);
    fx_init(&f, &test_desc, 0);
    struct sockaddr_in a;
    int ls = fx_listen(&a);
    T.port = ntohs(a.sin_port);
    int cli;
    T.client = fx_conn(&f, &cli);
    assert_int_equal(send(cli, "go", 2, 0), 2);
    fx_run_until(&f, &T.asked);
    int dst = fx_accept(ls); /* the kernel completed the handshake; the loop has not run */
    close(ls);
    assert_int_equal(send(dst, "bye", 3, 0), 3);
    close(dst);
    fx_run_until(&f, &T.relayed); /* t_connected asserts BERTH_CONNECT_OK */
    assert_int_equal(T.relay_rc, 0);
    char buf[8];
    assert_int_equal(fx_read(&f, cli, buf, 5), 5);
    assert_memory_equal(buf, "okbye", 5);
    shutdown(cli, SHUT_WR);
    int e = fx_wait_end(&f, cli);
    assert_true(e == 0 || e == -ECONNRESET);
    fx_run_until(&f, &T.relay_done);
    while (T.finished < 1)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    close(cli);
    fx_end(&f);
    assert_int_equal(T.down, 3);
}

/* TCP urgent data from the client: splice stops at the urgent mark and never passes it, so
 * the relay reads past it with a plain recv, the urgent byte inline. Every byte arrives, in
 * order, though the client sends nothing more. */
static void test_urgent_data_passes(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    assert_int_equal(send(cli, "abc", 3, 0), 3);
    assert_int_equal(send(cli, "X", 1, MSG_OOB), 1);
    assert_int_equal(send(cli, "defgh", 5, 0), 5);
    char in[16];
    assert_int_equal(fx_read_until_quiet(&f, dst, in, 9), 9);
    assert_memory_equal(in, "abcXdefgh", 9);
    both_ways(&f, cli, dst); /* and splicing goes on past the mark */
    shutdown(cli, SHUT_WR);
    shutdown(dst, SHUT_WR);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, 0);
    assert_int_equal(T.up, 9 + 4);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 40, &cli, &dst);
    both_ways(&f, cli, dst);
    /* Then silence: the relay ends with ETIMEDOUT and both sides are cut. */
    int e1 = fx_wait_end(&f, cli);
    assert_true(e1 == 0 || e1 == -ECONNRESET);
    int e2 = fx_wait_end(&f, dst);
    assert_true(e2 == 0 || e2 == -ECONNRESET);
    finish(&f, cli, dst);
    assert_int_equal(T.relay_error, UV_ETIMEDOUT);
}

static void test_peer_resets(void **state)
{
    (void)state;
    fx_t f;
    int cli, dst;
    start(&f, 0, &cli, &dst);
    both_ways(&f, cli, dst);
    struct linger lg = {1, 0};
    setsockopt(dst, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(dst);
    /* The client is cut too, and the relay reports the error. */
    int e = fx_wait_end(&f, cli);
    assert_true(e == 0 || e == -ECONNRESET);
    fx_run_until(&f, &T.relay_done);
    assert_int_equal(T.relay_error, UV_ECONNRESET);
    while (T.finished < 1)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    close(cli);
    fx_end(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_client_half_closes_first),
        cmocka_unit_test(test_destination_half_closes_first),
        cmocka_unit_test(test_outbound_nodelay_when_it_matters),
        cmocka_unit_test(test_large_transfer_to_a_late_reader),
        cmocka_unit_test(test_small_segments_all_arrive),
        cmocka_unit_test(test_peer_writes_and_closes_at_once),
        cmocka_unit_test(test_urgent_data_passes),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_peer_resets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
