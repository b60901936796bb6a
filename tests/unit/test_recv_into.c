/* daemon/worker/recv_into.c: host->recv_into on a real uv loop over loopback TCP, against a
 * test plugin defined here: a read lands in the plugin's buffer and later bytes go back to
 * handle(); re-armed from its callback it carries a large transfer whole; pause, EOF and close
 * drop an armed receive without its callback; the errors; writes while armed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "conn_fixture.h"

#define BIG (4u << 20)

static struct {
    unsigned char *direct; /* what the receives put there, in order */
    size_t direct_len, direct_cap;
    size_t step;    /* re-arm from the callback with this much room, 0: do not */
    unsigned calls; /* callbacks */
    char handled[64];
    size_t handled_len;
    int eof, finished;
    int eof_rc; /* recv_into's answer at the EOF */
} T;

static void t_handle(berth_conn_t *c, const void *data, size_t len)
{
    (void)c;
    assert_true(T.handled_len + len <= sizeof T.handled);
    memcpy(T.handled + T.handled_len, data, len);
    T.handled_len += len;
}

static void t_recv(berth_conn_t *c, void *arg, size_t n);

static void t_eof(berth_conn_t *c)
{
    T.eof = 1;
    T.eof_rc = H->recv_into(c, T.direct, T.direct_cap, t_recv, &T);
    H->close(c);
}

static void t_finish(berth_conn_t *c)
{
    (void)c;
    T.finished = 1;
}

static const berth_handler_t test_desc = {
    BERTH_HANDLER_INIT("test-recv-into"),
    .handle = t_handle,
    .eof = t_eof,
    .finish = t_finish,
};

static size_t room(size_t want)
{
    size_t left = T.direct_cap - T.direct_len;
    return want < left ? want : left;
}

static void t_recv(berth_conn_t *c, void *arg, size_t n)
{
    assert_ptr_equal(arg, &T);
    assert_true(n > 0);
    T.direct_len += n;
    T.calls++;
    /* Armed again only from here: the one just done is spent. */
    if (T.step && T.direct_len < T.direct_cap)
        assert_int_equal(H->recv_into(c, T.direct + T.direct_len, room(T.step), t_recv, &T), 0);
}

static berth_conn_t *start(fx_t *f, int *cli, size_t cap)
{
    memset(&T, 0, sizeof T);
    T.direct_cap = cap;
    T.direct = malloc(cap);
    assert_non_null(T.direct);
    fx_init(f, &test_desc, 0);
    return fx_conn(f, cli);
}

static void end(fx_t *f, int cli)
{
    close(cli);
    fx_run_until(f, &T.finished);
    fx_end(f);
    free(T.direct);
}

/* Send all of data while running the loop (the conn reads as we send). */
static void send_all(fx_t *f, int fd, const unsigned char *data, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t n = send(fd, data + off, len - off, MSG_DONTWAIT);
        if (n > 0) {
            off += (size_t)n;
            continue;
        }
        assert_true(n < 0 && (errno == EAGAIN || errno == EINTR));
        struct pollfd p[2] = {{fd, POLLOUT, 0}, {uv_backend_fd(&f->w.loop), POLLIN, 0}};
        poll(p, 2, uv_backend_timeout(&f->w.loop));
        uv_run(&f->w.loop, UV_RUN_NOWAIT);
    }
}

static void run_until_len(fx_t *f, const size_t *len, size_t want)
{
    while (*len < want)
        uv_run(&f->w.loop, UV_RUN_ONCE);
}

static void test_one_read_then_handle(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, 8);
    assert_int_equal(H->recv_into(c, T.direct, 8, t_recv, &T), 0);
    assert_int_equal(send(cli, "0123456789abcdef", 16, 0), 16);
    /* At most len into the buffer, one callback; the rest to handle(), in order. */
    run_until_len(&f, &T.handled_len, 8);
    assert_int_equal(T.calls, 1);
    assert_int_equal(T.direct_len, 8);
    assert_memory_equal(T.direct, "01234567", 8);
    assert_int_equal(T.handled_len, 8);
    assert_memory_equal(T.handled, "89abcdef", 8);
    end(&f, cli);
}

static void test_rearmed_carries_a_large_transfer(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, BIG);
    unsigned char *src = malloc(BIG);
    assert_non_null(src);
    for (size_t i = 0; i < BIG; i++)
        src[i] = (unsigned char)(i * 7 + (i >> 13));
    T.step = 256u << 10;
    assert_int_equal(H->recv_into(c, T.direct, room(T.step), t_recv, &T), 0);
    send_all(&f, cli, src, BIG);
    run_until_len(&f, &T.direct_len, BIG);
    assert_memory_equal(T.direct, src, BIG);
    assert_int_equal(T.handled_len, 0);
    assert_true(T.calls >= BIG / T.step);
    /* Done: the next bytes are handle()'s again. */
    assert_int_equal(send(cli, "tail", 4, 0), 4);
    run_until_len(&f, &T.handled_len, 4);
    assert_memory_equal(T.handled, "tail", 4);
    free(src);
    end(&f, cli);
}

static void test_pause_drops_it(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, 16);
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), 0);
    H->pause(c);
    /* Paused: nothing to arm until resume. */
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), -EAGAIN);
    assert_int_equal(send(cli, "abc", 3, 0), 3);
    uv_run(&f.w.loop, UV_RUN_NOWAIT);
    assert_int_equal(T.handled_len, 0);
    H->resume(c);
    run_until_len(&f, &T.handled_len, 3);
    assert_memory_equal(T.handled, "abc", 3);
    assert_int_equal(T.calls, 0);
    assert_int_equal(T.direct_len, 0);
    end(&f, cli);
}

static void test_eof_drops_it(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, 16);
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), 0);
    shutdown(cli, SHUT_WR);
    fx_run_until(&f, &T.eof);
    assert_int_equal(T.calls, 0);
    assert_int_equal(T.eof_rc, -EPIPE);
    end(&f, cli);
}

static void test_errors_and_writes(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, 16);
    assert_int_equal(H->recv_into(c, NULL, 16, t_recv, &T), -EINVAL);
    assert_int_equal(H->recv_into(c, T.direct, 0, t_recv, &T), -EINVAL);
    assert_int_equal(H->recv_into(c, T.direct, 16, NULL, &T), -EINVAL);
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), 0);
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), -EBUSY);
    /* The plugin still writes while a receive holds the input. */
    assert_int_equal(H->write(c, "hi", 2), 0);
    char buf[2];
    assert_int_equal(fx_read(&f, cli, buf, 2), 2);
    assert_memory_equal(buf, "hi", 2);
    assert_int_equal(send(cli, "xy", 2, 0), 2);
    run_until_len(&f, &T.direct_len, 2);
    assert_memory_equal(T.direct, "xy", 2);
    end(&f, cli);
}

static void test_close_drops_it_and_lingers(void **state)
{
    (void)state;
    fx_t f;
    int cli;
    berth_conn_t *c = start(&f, &cli, 16);
    assert_int_equal(H->recv_into(c, T.direct, 16, t_recv, &T), 0);
    H->close(c);
    /* Our close reaches the client; the conn then reads the client's EOF to end (it would
     * not if the receive kept the input). */
    assert_int_equal(fx_wait_end(&f, cli), 0);
    shutdown(cli, SHUT_WR);
    fx_run_until(&f, &T.finished);
    assert_int_equal(T.calls, 0);
    end(&f, cli);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_read_then_handle),
        cmocka_unit_test(test_rearmed_carries_a_large_transfer),
        cmocka_unit_test(test_pause_drops_it),
        cmocka_unit_test(test_eof_drops_it),
        cmocka_unit_test(test_errors_and_writes),
        cmocka_unit_test(test_close_drops_it_and_lingers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
