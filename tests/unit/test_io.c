/* daemon/worker/io.c: the worker's edge-triggered socket set, on a real uv loop with unix
 * socket pairs: an edge reaches its socket's callback; a post runs once however often it is
 * asked for; an event for a registration that is gone (closed earlier in the batch, or kept
 * alive by a dup()ed descriptor) reaches nobody, even when its slot was taken again; a
 * callback that posts itself forever cannot keep the loop from polling; and the set keeps
 * the loop alive only while it holds sockets. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "worker/io.h"

typedef struct probe {
    io_t io;
    int in, posted, other;
    int repost; /* post itself again from every posted callback */
    io_loop_t *il;
} probe_t;

static void on_event(io_t *io, unsigned events)
{
    probe_t *p = (probe_t *)io;
    if (events & IO_POSTED) {
        p->posted++;
        if (p->repost)
            io_post(p->il, io);
    } else if (events & IO_IN) {
        p->in++;
    } else {
        p->other++;
    }
}

static void pair(int sv[2])
{
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
}

/* Close the set and the loop; every registration must be gone by then. */
static void done(uv_loop_t *loop, io_loop_t *il)
{
    assert_int_equal(il->nused, 0);
    io_loop_close(il);
    uv_run(loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(loop), 0);
}

static void close_pair(int sv[2])
{
    close(sv[0]);
    close(sv[1]);
}

/* A loop, a set, and one registered socket pair whose first end p watches. */
static void one_socket(uv_loop_t *loop, io_loop_t *il, int sv[2], probe_t *p)
{
    uv_loop_init(loop);
    pair(sv);
    *p = (probe_t){.il = il};
    assert_int_equal(io_start(il, loop, &p->io, sv[0], on_event), 0);
}

static void turn(uv_loop_t *loop)
{
    /* A few turns, none blocking: what is ready runs. */
    for (int i = 0; i < 3; i++)
        uv_run(loop, UV_RUN_NOWAIT);
}

static void test_edge_reaches_callback(void **state)
{
    (void)state;
    uv_loop_t loop;
    io_loop_t il = {0};
    int sv[2];
    probe_t p;
    one_socket(&loop, &il, sv, &p);
    turn(&loop);
    int before = p.in;
    assert_int_equal(write(sv[1], "x", 1), 1);
    turn(&loop);
    assert_int_equal(p.in, before + 1);
    /* Edge-triggered: nothing read, nothing new arrived, no second call. */
    turn(&loop);
    assert_int_equal(p.in, before + 1);
    io_stop(&il, &p.io);
    close_pair(sv);
    done(&loop, &il);
}

static void test_post_runs_once(void **state)
{
    (void)state;
    uv_loop_t loop;
    io_loop_t il = {0};
    int sv[2];
    probe_t p;
    one_socket(&loop, &il, sv, &p);
    io_post(&il, &p.io);
    io_post(&il, &p.io);
    turn(&loop);
    assert_int_equal(p.posted, 1);
    /* A stopped registration can still be posted (a close finishing), then never again. */
    io_stop(&il, &p.io);
    io_post(&il, &p.io);
    io_stop(&il, &p.io); /* unposts */
    turn(&loop);
    assert_int_equal(p.posted, 1);
    close_pair(sv);
    done(&loop, &il);
}

static void test_stale_event_is_dropped(void **state)
{
    (void)state;
    uv_loop_t loop;
    io_loop_t il = {0};
    uv_loop_init(&loop);
    int a[2], b[2];
    pair(a);
    pair(b);
    probe_t pa = {.il = &il}, pb = {.il = &il};
    assert_int_equal(io_start(&il, &loop, &pa.io, a[0], on_event), 0);
    turn(&loop);
    pa.in = pa.other = 0;
    /* An event is pending for a, then a's registration goes and b takes its slot. The
     * descriptor stays open through a dup(), as a plugin's copy would keep it: epoll still
     * reports it. */
    int dup_fd = dup(a[0]);
    assert_true(dup_fd >= 0);
    uint32_t slot = pa.io.slot;
    io_stop(&il, &pa.io);
    close(a[0]);
    assert_int_equal(io_start(&il, &loop, &pb.io, b[0], on_event), 0);
    assert_int_equal(pb.io.slot, slot);
    turn(&loop);
    pb.in = pb.other = 0;
    assert_int_equal(write(a[1], "x", 1), 1);
    turn(&loop);
    assert_int_equal(pa.in + pa.other, 0);
    assert_int_equal(pb.in, 0); /* b's socket had nothing: a's event is not b's */
    assert_int_equal(write(b[1], "y", 1), 1);
    turn(&loop);
    assert_int_equal(pb.in, 1);
    io_stop(&il, &pb.io);
    close(dup_fd);
    close(a[1]);
    close(b[0]);
    close(b[1]);
    done(&loop, &il);
}

static void test_endless_poster_yields(void **state)
{
    (void)state;
    uv_loop_t loop;
    io_loop_t il = {0};
    uv_loop_init(&loop);
    int a[2], b[2];
    pair(a);
    pair(b);
    probe_t hog = {.il = &il, .repost = 1}, other = {.il = &il};
    assert_int_equal(io_start(&il, &loop, &hog.io, a[0], on_event), 0);
    assert_int_equal(io_start(&il, &loop, &other.io, b[0], on_event), 0);
    turn(&loop);
    other.in = 0;
    io_post(&il, &hog.io);
    assert_int_equal(write(b[1], "x", 1), 1);
    /* Each turn runs the hog a bounded number of times, and the other socket's edge is
     * still delivered. */
    uv_run(&loop, UV_RUN_NOWAIT);
    uv_run(&loop, UV_RUN_NOWAIT);
    /* at most IO_POST_ROUNDS (4) per dispatch: the idle turn and the poll turn */
    assert_true(hog.posted > 0 && hog.posted <= 2 * 2 * 4);
    assert_int_equal(other.in, 1);
    hog.repost = 0;
    turn(&loop);
    int settled = hog.posted;
    turn(&loop);
    assert_int_equal(hog.posted, settled);
    io_stop(&il, &hog.io);
    io_stop(&il, &other.io);
    close_pair(a);
    close_pair(b);
    done(&loop, &il);
}

static void test_loop_alive_only_with_sockets(void **state)
{
    (void)state;
    uv_loop_t loop;
    io_loop_t il = {0};
    int sv[2];
    probe_t p;
    one_socket(&loop, &il, sv, &p);
    assert_true(uv_loop_alive(&loop));
    io_stop(&il, &p.io);
    /* Nothing registered, nothing posted: a DEFAULT run returns at once. */
    assert_int_equal(uv_run(&loop, UV_RUN_DEFAULT), 0);
    close_pair(sv);
    done(&loop, &il);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_edge_reaches_callback),
        cmocka_unit_test(test_post_runs_once),
        cmocka_unit_test(test_stale_event_is_dropped),
        cmocka_unit_test(test_endless_poster_yields),
        cmocka_unit_test(test_loop_alive_only_with_sockets),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
