/* daemon/master/admin.c: the admin protocol, with a test double for the master behind its
 * ops table (no master, no worker, no plugin). Real unix sockets on a real uv loop. */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "master/admin.h"

/* A guard against a hang, not a timing check: each poll step is 10 ms. */
#define MAX_STEPS 3000

struct fake {
    stats_t *stats;
    int reloads, stops;
    admin_done_cb pending[8]; /* reloads not answered yet */
    void *pending_arg[8];
    int npending;
    int reload_ok; /* answer reloads at once with this, or -1: keep them pending */
};

static void fake_snapshot(void *ctx, admin_snapshot_t *out)
{
    struct fake *k = ctx;
    out->stats = k->stats;
    out->conf_path = "/etc/berth/test.conf";
}

static void fake_reload(void *ctx, admin_done_cb done, void *arg)
{
    struct fake *k = ctx;
    k->reloads++;
    if (k->reload_ok < 0) {
        assert_true(k->npending < 8);
        k->pending[k->npending] = done;
        k->pending_arg[k->npending++] = arg;
        return;
    }
    done(arg, k->reload_ok, k->reload_ok ? NULL : "a.conf:3: bad value\n");
}

static void fake_stop(void *ctx)
{
    ((struct fake *)ctx)->stops++;
}

static int fake_resume(void *ctx, const char *name, char *msg, size_t len)
{
    int ok = strcmp(name, "socks") == 0;
    snprintf(msg, len, ok ? "listener [%s] resumed\n" : "no listener [%s]\n", name);
    return ok;
}

static const admin_ops_t fake_ops = {fake_snapshot, fake_reload, fake_stop, fake_resume, NULL};

struct fx {
    char dir[64];
    char path[96];
    uv_loop_t loop;
    struct fake k;
    admin_t *a;
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/berth-test-admin-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    snprintf(f->path, sizeof f->path, "%s/admin.sock", f->dir);
    assert_int_equal(uv_loop_init(&f->loop), 0);
    f->k.stats = stats_map();
    assert_non_null(f->k.stats);
    f->k.reload_ok = 1;
    config_errors_t errs = {0};
    f->a = admin_open(&f->loop, f->path, &fake_ops, &f->k, &errs);
    assert_non_null(f->a);
    assert_int_equal(errs.count, 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    admin_stop(f->a);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    assert_int_equal(uv_loop_close(&f->loop), 0);
    admin_free(f->a);
    struct stat st;
    assert_int_not_equal(lstat(f->path, &st), 0); /* the socket file is gone */
    rmdir(f->dir);
    stats_unmap(f->k.stats);
    free(f);
    return 0;
}

static int client(struct fx *f)
{
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    snprintf(sun.sun_path, sizeof sun.sun_path, "%s", f->path);
    assert_int_equal(connect(fd, (struct sockaddr *)&sun, sizeof sun), 0);
    return fd;
}

/* Run the loop until the client's answer ends with EOF; the answer, to be freed. */
static char *read_answer(struct fx *f, int fd)
{
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap + 1);
    assert_non_null(buf);
    for (int step = 0; step < MAX_STEPS; step++) {
        uv_run(&f->loop, UV_RUN_NOWAIT);
        struct pollfd p = {.fd = fd, .events = POLLIN};
        if (poll(&p, 1, 10) <= 0)
            continue;
        ssize_t n = recv(fd, buf + len, cap - len, MSG_DONTWAIT);
        if (n < 0 && errno == EAGAIN)
            continue;
        assert_true(n >= 0); /* an EOF, never a reset */
        if (n == 0) {
            buf[len] = '\0';
            return buf;
        }
        len += (size_t)n;
        assert_true(len < cap);
    }
    fail_msg("no answer");
    return NULL;
}

static char *ask(struct fx *f, const char *req)
{
    int fd = client(f);
    assert_int_equal(send(fd, req, strlen(req), MSG_NOSIGNAL), (ssize_t)strlen(req));
    char *ans = read_answer(f, fd);
    close(fd);
    return ans;
}

static void test_parse(void **state)
{
    static const struct {
        const char *in;
        admin_req_t want;
    } cases[] = {
        {"status\n", ADMIN_REQ_STATUS},
        {"status\r\n", ADMIN_REQ_STATUS},
        {"status --json\n", ADMIN_REQ_STATUS_JSON},
        {"reload\nextra", ADMIN_REQ_RELOAD},
        {"stop\n", ADMIN_REQ_STOP},
        {"stat", ADMIN_REQ_NONE},
        {"", ADMIN_REQ_NONE},
        {"\n", ADMIN_REQ_UNKNOWN},
        {"status \n", ADMIN_REQ_UNKNOWN},
        {"STOP\n", ADMIN_REQ_UNKNOWN},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        assert_int_equal(admin_parse_request(cases[i].in, strlen(cases[i].in), NULL, NULL),
                         cases[i].want);
    }
    const char *arg = NULL;
    size_t arglen = 0;
    assert_int_equal(admin_parse_request("resume socks\r\n", 14, &arg, &arglen), ADMIN_REQ_RESUME);
    assert_int_equal(arglen, 5);
    assert_memory_equal(arg, "socks", 5);
    assert_int_equal(admin_parse_request("resume \n", 8, NULL, NULL), ADMIN_REQ_UNKNOWN);
    assert_int_equal(admin_parse_request("resume a b\n", 11, NULL, NULL), ADMIN_REQ_UNKNOWN);
    assert_int_equal(admin_parse_request("resumesocks\n", 12, NULL, NULL), ADMIN_REQ_UNKNOWN);
    char longname[80] = "resume ";
    memset(longname + 7, 'n', 64);
    longname[71] = '\n';
    assert_int_equal(admin_parse_request(longname, 72, NULL, NULL), ADMIN_REQ_UNKNOWN);
    const char nul[] = "stop\0\n";
    assert_int_equal(admin_parse_request(nul, sizeof nul - 1, NULL, NULL), ADMIN_REQ_UNKNOWN);
    char big[ADMIN_REQUEST_MAX];
    memset(big, 'x', sizeof big);
    assert_int_equal(admin_parse_request(big, ADMIN_REQUEST_MAX - 2, NULL, NULL), ADMIN_REQ_NONE);
    assert_int_equal(admin_parse_request(big, ADMIN_REQUEST_MAX - 1, NULL, NULL),
                     ADMIN_REQ_TOO_LONG);
    big[ADMIN_REQUEST_MAX - 2] = '\n';
    assert_int_equal(admin_parse_request(big, ADMIN_REQUEST_MAX - 1, NULL, NULL),
                     ADMIN_REQ_UNKNOWN);
}

static void test_status(void **state)
{
    struct fx *f = *state;
    int slot = stats_listener_claim(f->k.stats, BERTH_PROTO_TCP, "web", "127.0.0.1:80");
    assert_true(slot >= 0);
    char *s = ask(f, "status\n");
    assert_true(strncmp(s, "ok\nberthd ", 10) == 0);
    assert_non_null(strstr(s, "config /etc/berth/test.conf"));
    assert_non_null(strstr(s, "web "));
    free(s);
    s = ask(f, "status --json\n");
    assert_true(strncmp(s, "ok\n{\"pid\":", 10) == 0);
    assert_non_null(strstr(s, "\"name\":\"web\""));
    assert_non_null(strstr(s, "\"config\":\"/etc/berth/test.conf\""));
    free(s);
    assert_int_equal(f->k.reloads + f->k.stops, 0);
}

static void test_reload_and_stop(void **state)
{
    struct fx *f = *state;
    char *s = ask(f, "reload\n");
    assert_string_equal(s, "ok\nreloaded\n");
    free(s);
    f->k.reload_ok = 0;
    s = ask(f, "reload\n");
    assert_string_equal(s, "error\na.conf:3: bad value\n");
    free(s);
    assert_int_equal(f->k.reloads, 2);

    /* An answer that comes later, after the loop ran a while. */
    f->k.reload_ok = -1;
    int fd = client(f);
    assert_int_equal(send(fd, "reload\n", 7, 0), 7);
    for (int i = 0; i < 100 && f->k.npending == 0; i++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    assert_int_equal(f->k.npending, 1);
    f->k.pending[0](f->k.pending_arg[0], 1, NULL);
    f->k.npending = 0;
    s = read_answer(f, fd);
    close(fd);
    assert_string_equal(s, "ok\nreloaded\n");
    free(s);

    s = ask(f, "stop\n");
    assert_string_equal(s, "ok\nstopping\n");
    free(s);
    assert_int_equal(f->k.stops, 1);
    s = ask(f, "resume socks\n");
    assert_string_equal(s, "ok\nlistener [socks] resumed\n");
    free(s);
    s = ask(f, "resume web\n");
    assert_string_equal(s, "error\nno listener [web]\n");
    free(s);
    s = ask(f, "restart\n");
    assert_true(strncmp(s, "error\nunknown request", 21) == 0);
    free(s);
}

/* A request longer than the admin reads gets an answer and a clean EOF, not a reset. */
static void test_too_long(void **state)
{
    struct fx *f = *state;
    int fd = client(f);
    char big[4000];
    memset(big, 'x', sizeof big);
    assert_int_equal(send(fd, big, sizeof big, MSG_NOSIGNAL), (ssize_t)sizeof big);
    shutdown(fd, SHUT_WR);
    char *s = read_answer(f, fd);
    close(fd);
    assert_string_equal(s, "error\nrequest too long\n");
    free(s);
}

/* An idle client is closed after the timeout; at the cap the oldest idle client makes room
 * for a new one, and when every client is busy with a request a new one is closed at once. */
static void test_idle_and_cap(void **state)
{
    struct fx *f = *state;
    admin_set_limits(f->a, 60000, 3);
    int idle[3];
    for (int i = 0; i < 3; i++) {
        idle[i] = client(f);
        for (int k = 0; k < 20; k++)
            uv_run(&f->loop, UV_RUN_NOWAIT); /* accepted in this order */
    }
    char *s = ask(f, "status\n"); /* served: the oldest idle one made room */
    assert_true(strncmp(s, "ok\n", 3) == 0);
    free(s);
    s = read_answer(f, idle[0]);
    assert_string_equal(s, "");
    free(s);
    close(idle[0]);

    /* Three clients busy with a reload nobody answers yet: a fourth is closed at once. */
    close(idle[1]);
    close(idle[2]);
    for (int k = 0; k < 20; k++)
        uv_run(&f->loop, UV_RUN_NOWAIT);
    f->k.reload_ok = -1;
    int busy[3];
    for (int i = 0; i < 3; i++) {
        busy[i] = client(f);
        assert_int_equal(send(busy[i], "reload\n", 7, 0), 7);
        for (int k = 0; k < 20; k++)
            uv_run(&f->loop, UV_RUN_NOWAIT);
    }
    assert_int_equal(f->k.reloads, 3);
    int over = client(f);
    s = read_answer(f, over);
    assert_string_equal(s, "");
    free(s);
    close(over);
    /* A client with a request in hand is not idle: the answer still reaches it. */
    for (int i = 0; i < 3; i++) {
        f->k.pending[i](f->k.pending_arg[i], 0, "stopping\n");
        s = read_answer(f, busy[i]);
        assert_string_equal(s, "error\nstopping\n");
        free(s);
        close(busy[i]);
    }
    f->k.npending = 0;

    /* The idle timeout. */
    admin_set_limits(f->a, 50, 3);
    int lone = client(f);
    s = read_answer(f, lone);
    assert_string_equal(s, "");
    free(s);
    close(lone);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test_setup_teardown(test_status, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reload_and_stop, setup, teardown),
        cmocka_unit_test_setup_teardown(test_too_long, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idle_and_cap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
