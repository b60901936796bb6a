/* daemon/worker/conn.c (and host.c): a conn's lifetime against a test plugin defined here,
 * on a real uv loop with TCP pairs over loopback: a close inside a callback, a close while
 * pool work or a connect is pending, writes after close, the idle timeout, and the hook a
 * worker records in shared memory while plugin code runs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cmocka.h>

#include "conn_fixture.h"

/* What the test plugin saw, in order. */
static struct {
    char log[256];
    int finished, setup, handled, work_ran, done_status, connect_error, connect_errno;
    int write_after_close, hook_in_handle, listener_in_handle;
    berth_conn_t *conn;
    int mode;
    uint16_t port;
} T;

enum { M_ECHO_CLOSE, M_WORK_CLOSE, M_CONNECT_CLOSE, M_ABORT, M_PAUSE, M_POOL, M_COLLECT };

/* M_COLLECT: every byte handle() is given, in order. */
static char collected[64];
static size_t ncollected;

/* M_POOL: "h" queues slow work (each item blocks until the test writes a byte to
 * hog_pipe) until the host says no; "q" queues one quick item. */
static int hog_pipe[2];
static int hog_running, hog_max_running, hog_done, hog_queued, hog_refused, quick_done;

static void hog_work(void *arg)
{
    (void)arg;
    int n = __atomic_add_fetch(&hog_running, 1, __ATOMIC_SEQ_CST);
    int m = __atomic_load_n(&hog_max_running, __ATOMIC_SEQ_CST);
    while (n > m && !__atomic_compare_exchange_n(&hog_max_running, &m, n, 0, __ATOMIC_SEQ_CST,
                                                 __ATOMIC_SEQ_CST))
        ;
    char b;
    while (read(hog_pipe[0], &b, 1) < 0 && errno == EINTR)
        ;
    __atomic_sub_fetch(&hog_running, 1, __ATOMIC_SEQ_CST);
}

static void hog_done_cb(berth_conn_t *c, void *arg, int status)
{
    (void)c;
    (void)arg;
    assert_int_equal(status, 0);
    hog_done++;
}

static void quick_work(void *arg)
{
    (void)arg;
}

static void quick_done_cb(berth_conn_t *c, void *arg, int status)
{
    (void)c;
    (void)arg;
    assert_int_equal(status, 0);
    quick_done = 1;
}

static void note(const char *what)
{
    strncat(T.log, what, sizeof T.log - strlen(T.log) - 1);
}

static int t_setup(berth_conn_t *c)
{
    T.setup++;
    T.conn = c;
    note("setup ");
    return 0;
}

static void t_work(void *arg)
{
    (void)arg;
    __atomic_store_n(&T.work_ran, 1, __ATOMIC_SEQ_CST);
}

static void t_done(berth_conn_t *c, void *arg, int status)
{
    (void)c;
    (void)arg;
    T.done_status = status;
    note("done ");
}

static void t_connected(berth_conn_t *c, const berth_connect_result_t *r, void *arg)
{
    (void)c;
    (void)arg;
    T.connect_error = r->error;
    T.connect_errno = r->sys_errno;
    if (r->peer)
        H->close(r->peer);
    note("connected ");
}

static void t_handle(berth_conn_t *c, const void *data, size_t len)
{
    T.handled++;
    T.hook_in_handle = atomic_load(&conn_worker(c)->st->cur_hook);
    T.listener_in_handle = atomic_load(&conn_worker(c)->st->cur_listener);
    switch (T.mode) {
    case M_ECHO_CLOSE:
        assert_int_equal(H->write(c, data, len), 0);
        H->close(c);
        H->close(c); /* idempotent */
        T.write_after_close = H->write(c, "x", 1);
        break;
    case M_WORK_CLOSE:
        assert_int_equal(H->work(c, t_work, t_done, NULL), 0);
        H->close(c);
        break;
    case M_CONNECT_CLOSE:
        assert_int_equal(H->connect(c, "127.0.0.1", T.port, 0, NULL, t_connected, NULL), 0);
        assert_int_equal(H->connect(c, "127.0.0.1", T.port, 0, NULL, t_connected, NULL), -EALREADY);
        H->close(c);
        break;
    case M_ABORT:
        H->abort(c);
        T.write_after_close = H->write(c, "x", 1);
        break;
    case M_POOL:
        if (((const char *)data)[0] == 'h') {
            int rc;
            while ((rc = H->work(c, hog_work, hog_done_cb, NULL)) == 0)
                hog_queued++;
            hog_refused = rc;
        } else {
            assert_int_equal(H->work(c, quick_work, quick_done_cb, NULL), 0);
        }
        break;
    case M_PAUSE:
        H->pause(c);
        H->pause(c);
        H->resume(c);
        H->resume(c);
        assert_int_equal(H->write(c, data, len), 0);
        break;
    case M_COLLECT:
        assert_true(ncollected + len <= sizeof collected);
        memcpy(collected + ncollected, data, len);
        ncollected += len;
        break;
    }
}

static void t_finish(berth_conn_t *c)
{
    (void)c;
    T.finished++;
    note("finish ");
}

static const berth_handler_t test_desc = {
    BERTH_HANDLER_INIT("test"), .conn_size = 16,    .setup = t_setup,
    .handle = t_handle,         .finish = t_finish,
};

static void reset(int mode)
{
    memset(&T, 0, sizeof T);
    T.mode = mode;
}

/* TCP urgent data: a read stops short at the urgent mark with bytes still behind it, so
 * that short read is no proof of an empty socket. Everything the client sent (the urgent
 * byte itself is out of band) reaches handle() though the client sends nothing more. */
static void test_bytes_behind_urgent_data_arrive(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_COLLECT);
    ncollected = 0;
    int cli;
    fx_conn(&f, &cli);
    assert_int_equal(send(cli, "abc", 3, 0), 3);
    assert_int_equal(send(cli, "X", 1, MSG_OOB), 1);
    assert_int_equal(send(cli, "defgh", 5, 0), 5);
    fx_wait_acked(cli);
    /* Nothing more will arrive: run the loop until the bytes are in, or it stays quiet. */
    for (int quiet = 0; ncollected < 8 && quiet < 50;) {
        size_t before = ncollected;
        uv_run(&f.w.loop, UV_RUN_NOWAIT);
        struct pollfd p = {uv_backend_fd(&f.w.loop), POLLIN, 0};
        if (poll(&p, 1, 20) <= 0 && ncollected == before)
            quiet++;
    }
    assert_int_equal(ncollected, 8);
    assert_memory_equal(collected, "abcdefgh", 8);
    close(cli);
    fx_run_until(&f, &T.finished);
    fx_end(&f);
}

static void test_close_inside_handle(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_ECHO_CLOSE);
    int cli;
    berth_conn_t *c = fx_conn(&f, &cli);
    assert_ptr_equal(c, T.conn);
    assert_non_null(H->state(c));
    assert_int_equal(send(cli, "hello", 5, 0), 5);
    char buf[16];
    /* The bytes written before the close arrive, then EOF (a graceful close). */
    assert_int_equal(fx_read(&f, cli, buf, sizeof buf), 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(T.write_after_close, -EPIPE);
    assert_int_equal(T.hook_in_handle, STATS_HOOK_HANDLE);
    assert_int_equal(T.listener_in_handle, 3);
    assert_int_equal(atomic_load(&f.w.st->cur_hook), STATS_HOOK_NONE);
    assert_int_equal(atomic_load(&f.w.st->cur_listener), -1);
    close(cli); /* the linger ends on our EOF */
    fx_run_until(&f, &T.finished);
    assert_int_equal(T.finished, 1);
    assert_string_equal(T.log, "setup finish ");
    fx_end(&f);
}

static void test_close_with_pending_work(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_WORK_CLOSE);
    int cli;
    fx_conn(&f, &cli);
    assert_int_equal(send(cli, "w", 1, 0), 1);
    assert_int_equal(fx_wait_end(&f, cli), 0);
    close(cli);
    /* finish() waits for the work's done(), which runs even though the conn closed. */
    fx_run_until(&f, &T.finished);
    assert_true(T.work_ran);
    assert_int_equal(T.done_status, 0);
    assert_string_equal(T.log, "setup done finish ");
    fx_end(&f);
}

static void test_close_with_pending_connect(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_CONNECT_CLOSE);
    struct sockaddr_in dst;
    int ls = fx_listen(&dst);
    T.port = ntohs(dst.sin_port);
    int cli;
    fx_conn(&f, &cli);
    assert_int_equal(send(cli, "c", 1, 0), 1);
    assert_int_equal(fx_wait_end(&f, cli), 0);
    close(cli);
    fx_run_until(&f, &T.finished);
    /* The connect's callback ran exactly once, cancelled, before finish(). */
    assert_string_equal(T.log, "setup connected finish ");
    assert_int_equal(T.connect_error, BERTH_CONNECT_FAILED);
    assert_int_equal(T.connect_errno, ECANCELED);
    close(ls);
    fx_end(&f);
}

static void test_abort_resets(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_ABORT);
    int cli;
    fx_conn(&f, &cli);
    assert_int_equal(send(cli, "a", 1, 0), 1);
    assert_int_equal(fx_wait_end(&f, cli), -ECONNRESET);
    fx_run_until(&f, &T.finished);
    assert_int_equal(T.write_after_close, -EPIPE);
    assert_int_equal(T.finished, 1);
    close(cli);
    fx_end(&f);
}

static void test_pause_resume_balanced(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_PAUSE);
    int cli;
    berth_conn_t *c = fx_conn(&f, &cli);
    assert_int_equal(send(cli, "p", 1, 0), 1);
    char buf[4];
    assert_int_equal(fx_read(&f, cli, buf, 1), 1);
    /* Still reading after two pauses and two resumes. */
    assert_int_equal(send(cli, "q", 1, 0), 1);
    assert_int_equal(fx_read(&f, cli, buf, 1), 1);
    assert_int_equal(buf[0], 'q');
    H->close(c);
    close(cli);
    fx_run_until(&f, &T.finished);
    fx_end(&f);
}

static void test_idle_timeout(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 30);
    reset(M_PAUSE);
    int cli1, cli2;
    fx_conn(&f, &cli1);
    fx_conn(&f, &cli2);
    /* Both are closed gracefully for idling, and linger until our EOF. */
    assert_int_equal(fx_wait_end(&f, cli1), 0);
    assert_int_equal(fx_wait_end(&f, cli2), 0);
    assert_int_equal(atomic_load(&f.l->st->idle_closed), 2);
    close(cli1);
    close(cli2);
    while (T.finished < 2)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    fx_end(&f);
}

static void test_peer_that_never_closes_is_bounded(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_PAUSE);
    int cli;
    berth_conn_t *c = fx_conn(&f, &cli);
    uint64_t t0 = uv_hrtime();
    H->close(c);
    /* We never close our end: the linger bound ends the conn anyway. */
    assert_int_equal(fx_wait_end(&f, cli), 0);
    fx_run_until(&f, &T.finished);
    /* Not before the bound (2 s in conn.c): it waited for an EOF that never came. */
    assert_true((uv_hrtime() - t0) / 1000000 >= 1500);
    close(cli);
    fx_end(&f);
}

/* One listener's slow pool work (password hashing, say) fills its queue: the host caps it,
 * and another listener's work (disk writes, say) still gets a thread at once. */
static void test_pool_work_is_capped_and_fair(void **state)
{
    (void)state;
    fx_t f;
    fx_init(&f, &test_desc, 0);
    reset(M_POOL);
    assert_int_equal(pipe(hog_pipe), 0);
    hog_running = hog_max_running = hog_done = hog_queued = hog_refused = quick_done = 0;
    int a, b;
    berth_conn_t *ca = fx_conn_on(&f, 0, &a);
    berth_conn_t *cb = fx_conn_on(&f, 1, &b);
    assert_int_equal(send(a, "h", 1, 0), 1);
    while (hog_refused == 0)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    assert_int_equal(hog_queued, WORK_QUEUE_MAX);
    assert_int_equal(hog_refused, -EAGAIN);
    /* Every one of them is still blocked; the other listener's work runs all the same. */
    assert_int_equal(send(b, "q", 1, 0), 1);
    fx_run_until(&f, &quick_done);
    assert_int_equal(hog_done, 0);
    assert_true(f.w.work_inflight_max < f.w.pool_size);
    assert_true(__atomic_load_n(&hog_max_running, __ATOMIC_SEQ_CST) <= (int)f.w.work_inflight_max);
    /* Let them go: every done() runs, then finish() of both conns. */
    char bytes[WORK_QUEUE_MAX];
    memset(bytes, 'x', sizeof bytes);
    assert_int_equal(write(hog_pipe[1], bytes, sizeof bytes), (ssize_t)sizeof bytes);
    H->close(ca);
    H->close(cb);
    close(a);
    close(b);
    while (T.finished < 2)
        uv_run(&f.w.loop, UV_RUN_ONCE);
    assert_int_equal(hog_done, WORK_QUEUE_MAX);
    assert_int_equal(f.ls[0].work_count, 0);
    assert_int_equal(f.ls[0].work_inflight, 0);
    close(hog_pipe[0]);
    close(hog_pipe[1]);
    fx_end(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_close_inside_handle),
        cmocka_unit_test(test_close_with_pending_work),
        cmocka_unit_test(test_close_with_pending_connect),
        cmocka_unit_test(test_abort_resets),
        cmocka_unit_test(test_pause_resume_balanced),
        cmocka_unit_test(test_idle_timeout),
        cmocka_unit_test(test_bytes_behind_urgent_data_arrive),
        cmocka_unit_test(test_peer_that_never_closes_is_bounded),
        cmocka_unit_test(test_pool_work_is_capped_and_fair),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
