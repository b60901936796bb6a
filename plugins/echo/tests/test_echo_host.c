/*
 * echo driven through berth-testhost: the built echo.so, no daemon, no sockets.
 */
#include <berth/testhost.h>

#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>

#include <cmocka.h>

static berth_testhost_t *open_echo(void)
{
    char err[256] = "";
    berth_testhost_t *th = berth_testhost_open(PLUGIN_SO, err, sizeof err);
    if (!th)
        fail_msg("%s", err);
    return th;
}

static void test_stream_echoes_and_closes_on_eof(void **unused)
{
    (void)unused;
    berth_testhost_t *th = open_echo();
    char err[256] = "";
    berth_listener_t *l = berth_testhost_listener(th, "echo", BERTH_PROTO_TCP,
                                                  (const char *[]){NULL}, err, sizeof err);
    assert_non_null(l);
    berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:5000");
    assert_false(berth_testhost_finished(c));

    assert_int_equal(berth_testhost_feed(c, "hello ", 6), 0);
    assert_int_equal(berth_testhost_feed(c, "world", 5), 0);
    size_t n;
    const char *out = berth_testhost_output(c, &n);
    assert_int_equal(n, 11);
    assert_memory_equal(out, "hello world", 11);

    /* echo has no eof hook: the host closes the conn, and finish() has run. */
    berth_testhost_eof(c);
    assert_true(berth_testhost_closed(c));
    assert_false(berth_testhost_aborted(c));
    assert_true(berth_testhost_finished(c));
    assert_int_equal(berth_testhost_feed(c, "x", 1), -EPIPE);
    berth_testhost_free(th);
}

static void test_datagram_replies_to_each(void **unused)
{
    (void)unused;
    berth_testhost_t *th = open_echo();
    char err[256] = "";
    berth_listener_t *l =
        berth_testhost_listener(th, "echo-udp", BERTH_PROTO_UDP,
                                (const char *[]){"address", "[::1]:7", NULL}, err, sizeof err);
    assert_non_null(l);
    berth_conn_t *a = berth_testhost_datagram(th, l, "[::1]:4000", "ping", 4);
    berth_conn_t *b = berth_testhost_datagram(th, l, "127.0.0.1:4001", "", 0);
    size_t n;
    const char *r = berth_testhost_reply(a, 0, &n);
    assert_non_null(r);
    assert_int_equal(n, 4);
    assert_memory_equal(r, "ping", 4);
    assert_null(berth_testhost_reply(a, 1, &n));
    /* An empty datagram is echoed as an empty datagram. */
    assert_non_null(berth_testhost_reply(b, 0, &n));
    assert_int_equal(n, 0);
    /* A datagram conn ends once handle() has returned and nothing is pending. */
    assert_true(berth_testhost_finished(a));
    assert_true(berth_testhost_finished(b));
    berth_testhost_free(th);
}

static void test_big_stream_is_echoed_whole(void **unused)
{
    (void)unused;
    berth_testhost_t *th = open_echo();
    char err[256] = "";
    berth_listener_t *l = berth_testhost_listener(th, "echo", BERTH_PROTO_UNIX,
                                                  (const char *[]){NULL}, err, sizeof err);
    assert_non_null(l);
    berth_conn_t *c = berth_testhost_accept(th, l, "unix:");
    static unsigned char chunk[65536];
    for (size_t i = 0; i < sizeof chunk; i++)
        chunk[i] = (unsigned char)(i * 7);
    for (int i = 0; i < 64; i++)
        assert_int_equal(berth_testhost_feed(c, chunk, sizeof chunk), 0);
    size_t n;
    const unsigned char *out = berth_testhost_output(c, &n);
    assert_int_equal(n, 64 * sizeof chunk);
    assert_memory_equal(out + 63 * sizeof chunk, chunk, sizeof chunk);
    berth_testhost_consume(c, n - 1);
    berth_testhost_output(c, &n);
    assert_int_equal(n, 1);
    berth_testhost_free(th); /* an open conn: free() finishes it */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_stream_echoes_and_closes_on_eof),
        cmocka_unit_test(test_datagram_replies_to_each),
        cmocka_unit_test(test_big_stream_is_echoed_whole),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
