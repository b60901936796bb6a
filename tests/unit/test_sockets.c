/* daemon/master/sockets.c: the socket registry and the (protocol, address) diff of a reload.
 *
 * Real sockets: unix ones in a folder of the test's own, and tcp on a loopback port picked
 * free. Each config is parsed by the real config reader from text. */
#include <errno.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "master/sockets.h"

struct fx {
    char dir[PATH_MAX];
    stats_t *stats;
    sockets_t reg;
};

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof *f);
    assert_non_null(f);
    snprintf(f->dir, sizeof f->dir, "/tmp/berth-test-sockets-XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/echo.so", f->dir);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fclose(fp);
    f->stats = stats_map();
    assert_non_null(f->stats);
    sockets_init(&f->reg, f->stats);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    sockets_close_all(&f->reg);
    stats_unmap(f->stats);
    nftw(f->dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* A config of listeners "name=address" (unix paths are under the test's folder). */
static berth_config_t *conf(struct fx *f, const char *spec)
{
    char text[4096];
    size_t off = (size_t)snprintf(text, sizeof text, "[daemon]\nplugin_dir = %s\n", f->dir);
    char *copy = strdup(spec), *save = NULL;
    for (char *item = strtok_r(copy, " ", &save); item; item = strtok_r(NULL, " ", &save)) {
        char *eq = strchr(item, '=');
        assert_non_null(eq);
        *eq = '\0';
        const char *addr = eq + 1;
        const char *proto = addr[0] == '/' ? "unix" : strncmp(addr, "udp:", 4) == 0 ? "udp" : "tcp";
        if (strncmp(addr, "udp:", 4) == 0)
            addr += 4;
        off += (size_t)snprintf(text + off, sizeof text - off,
                                "[%s]\nprotocol = %s\naddress = %s%s\nhandler = echo\n", item,
                                proto, addr[0] == '/' ? f->dir : "", addr);
        assert_true(off < sizeof text);
    }
    free(copy);
    char name[PATH_MAX + 16];
    snprintf(name, sizeof name, "%s/berth.conf", f->dir);
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc = config_load_string(name, text, strlen(text), 0, &cfg, &errs);
    for (size_t i = 0; i < errs.count; i++)
        fprintf(stderr, "%s\n", errs.msgs[i]);
    config_errors_free(&errs);
    assert_int_equal(rc, 0);
    return cfg;
}

static int exists(struct fx *f, const char *name)
{
    char p[PATH_MAX + 16];
    struct stat st;
    snprintf(p, sizeof p, "%s%s", f->dir, name);
    return lstat(p, &st) == 0;
}

static int is_open(int fd)
{
    int type;
    socklen_t len = sizeof type;
    return getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0;
}

static int free_tcp_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof a;
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

/* A reload keeps what both configs have, opens what is new and closes, once the old
 * generation lets go, what only the old one had. */
static void test_reload_diff(void **state)
{
    struct fx *f = *state;
    char spec[256];
    int port = free_tcp_port();
    snprintf(spec, sizeof spec, "a=/a.sock b=/b.sock t=127.0.0.1:%d", port);
    berth_config_t *c1 = conf(f, spec);
    size_t i1[3];
    assert_int_equal(sockets_acquire(&f->reg, c1, i1, NULL), 0);
    int fa = f->reg.socks[i1[0]].fd, fb = f->reg.socks[i1[1]].fd, ft = f->reg.socks[i1[2]].fd;
    assert_true(fa >= 0 && fb >= 0 && ft >= 0);
    assert_true(exists(f, "/a.sock") && exists(f, "/b.sock"));

    snprintf(spec, sizeof spec, "t=127.0.0.1:%d a=/a.sock c=/c.sock", port);
    berth_config_t *c2 = conf(f, spec);
    size_t i2[3];
    assert_int_equal(sockets_acquire(&f->reg, c2, i2, NULL), 0);
    assert_int_equal(i2[0], i1[2]); /* kept, whatever the order */
    assert_int_equal(f->reg.socks[i2[0]].fd, ft);
    assert_int_equal(i2[1], i1[0]);
    assert_int_equal(f->reg.socks[i2[1]].fd, fa);
    assert_int_equal(f->reg.socks[i2[1]].users, 2);
    assert_true(i2[2] != i1[1]); /* opened beside b, which the old generation still uses */
    assert_true(exists(f, "/c.sock") && exists(f, "/b.sock"));

    /* The old generation drained. */
    for (size_t k = 0; k < 3; k++)
        sockets_release(&f->reg, i1[k]);
    assert_int_equal(f->reg.socks[i1[1]].fd, -1);
    assert_false(is_open(fb));
    assert_false(exists(f, "/b.sock"));
    assert_true(is_open(fa) && is_open(ft) && exists(f, "/a.sock"));
    assert_int_equal(f->reg.socks[i2[1]].users, 1);

    /* A slot freed is reused by the next new socket. */
    berth_config_t *c3 = conf(f, "d=/d.sock");
    size_t i3[1];
    assert_int_equal(sockets_acquire(&f->reg, c3, i3, NULL), 0);
    assert_int_equal(i3[0], i1[1]);
    sockets_release(&f->reg, i3[0]);
    for (size_t k = 0; k < 3; k++)
        sockets_release(&f->reg, i2[k]);
    assert_false(exists(f, "/a.sock") || exists(f, "/c.sock") || exists(f, "/d.sock"));
    assert_false(is_open(fa) || is_open(ft));
    config_free(c1);
    config_free(c2);
    config_free(c3);
}

/* A section renamed around the same address keeps its socket and its stats, under the new
 * name. */
static void test_renamed(void **state)
{
    struct fx *f = *state;
    berth_config_t *c1 = conf(f, "old=/r.sock");
    berth_config_t *c2 = conf(f, "new=/r.sock");
    size_t i1, i2;
    assert_int_equal(sockets_acquire(&f->reg, c1, &i1, NULL), 0);
    int slot = f->reg.socks[i1].slot;
    assert_true(slot >= 0);
    assert_string_equal(f->stats->listeners[slot].name, "old");
    assert_int_equal(sockets_acquire(&f->reg, c2, &i2, NULL), 0);
    assert_int_equal(i1, i2);
    assert_int_equal(f->reg.socks[i2].slot, slot);
    assert_string_equal(f->reg.socks[i2].name, "new");
    assert_string_equal(f->stats->listeners[slot].name, "new");
    assert_ptr_equal(sockets_find(&f->reg, "new"), &f->reg.socks[i2]);
    assert_null(sockets_find(&f->reg, "old"));
    sockets_release(&f->reg, i1);
    sockets_release(&f->reg, i2);
    assert_false(f->stats->listeners[slot].in_use);
    config_free(c1);
    config_free(c2);
}

/* tcp and udp on one port are two sockets; the same address under another protocol of the
 * same kind is a different key only when the socket type differs. */
static void test_protocol_is_part_of_key(void **state)
{
    struct fx *f = *state;
    char spec[128];
    int port = free_tcp_port();
    snprintf(spec, sizeof spec, "t=127.0.0.1:%d u=udp:127.0.0.1:%d", port, port);
    berth_config_t *c = conf(f, spec);
    size_t i[2];
    assert_int_equal(sockets_acquire(&f->reg, c, i, NULL), 0);
    assert_true(i[0] != i[1]);
    sockets_release(&f->reg, i[0]);
    sockets_release(&f->reg, i[1]);
    config_free(c);
}

/* Port 0: the kernel picks a port, `bound` says which, and a reload that keeps the listener
 * (the key is the configured address) keeps the port. */
static void test_port_zero_kept(void **state)
{
    struct fx *f = *state;
    berth_config_t *c1 = conf(f, "t=127.0.0.1:0 u=udp:127.0.0.1:0");
    berth_config_t *c2 = conf(f, "u2=udp:127.0.0.1:0 t2=127.0.0.1:0");
    size_t i1[2], i2[2];
    assert_int_equal(sockets_acquire(&f->reg, c1, i1, NULL), 0);
    lsock_t *t = &f->reg.socks[i1[0]];
    assert_int_equal(listen_port(t), 0);
    assert_true(strncmp(t->bound, "127.0.0.1:", 10) == 0);
    assert_true(atoi(t->bound + 10) > 0);
    char was[64];
    snprintf(was, sizeof was, "%s", t->bound);
    assert_int_equal(sockets_acquire(&f->reg, c2, i2, NULL), 0);
    assert_int_equal(i2[1], i1[0]);
    assert_int_equal(i2[0], i1[1]);
    assert_string_equal(f->reg.socks[i2[1]].bound, was);
    for (size_t k = 0; k < 2; k++) {
        sockets_release(&f->reg, i1[k]);
        sockets_release(&f->reg, i2[k]);
    }
    config_free(c1);
    config_free(c2);
}

/* Several port-0 listeners on one address each get a socket (and port) of their own, and a
 * reload gives each back its own socket by name, whatever the order. */
static void test_port_zero_shared_address(void **state)
{
    struct fx *f = *state;
    berth_config_t *c1 = conf(f, "a=127.0.0.1:0 b=127.0.0.1:0 c=udp:127.0.0.1:0");
    berth_config_t *c2 = conf(f, "b=127.0.0.1:0 c=udp:127.0.0.1:0 a=127.0.0.1:0 d=127.0.0.1:0");
    size_t i1[3], i2[4];
    assert_int_equal(sockets_acquire(&f->reg, c1, i1, NULL), 0);
    assert_int_not_equal(i1[0], i1[1]);
    assert_string_not_equal(f->reg.socks[i1[0]].bound, f->reg.socks[i1[1]].bound);
    assert_int_equal(sockets_acquire(&f->reg, c2, i2, NULL), 0);
    assert_int_equal(i2[0], i1[1]); /* b */
    assert_int_equal(i2[1], i1[2]); /* c */
    assert_int_equal(i2[2], i1[0]); /* a */
    for (size_t k = 0; k < 3; k++)
        assert_int_not_equal(i2[3], i1[k]); /* d: a new one */
    for (size_t k = 0; k < 3; k++)
        sockets_release(&f->reg, i1[k]);
    for (size_t k = 0; k < 4; k++)
        sockets_release(&f->reg, i2[k]);
    config_free(c1);
    config_free(c2);
}

/* K crashes within the window quarantine a socket; older ones fall out of the window; a
 * lift forgets them. */
static void test_crash_limit(void **state)
{
    struct fx *f = *state;
    berth_config_t *c = conf(f, "q=/q.sock");
    size_t i;
    assert_int_equal(sockets_acquire(&f->reg, c, &i, NULL), 0);
    assert_int_equal(sockets_crash(&f->reg, i, 1000, 3, 60000), 0);
    assert_int_equal(sockets_crash(&f->reg, i, 2000, 3, 60000), 0);
    /* 61.5 s on: the first two are out of the window. */
    assert_int_equal(sockets_crash(&f->reg, i, 62500, 3, 60000), 0);
    assert_int_equal(sockets_crash(&f->reg, i, 63000, 3, 60000), 0);
    assert_false(f->reg.socks[i].quarantined);
    assert_int_equal(sockets_crash(&f->reg, i, 63500, 3, 60000), 1);
    assert_true(f->reg.socks[i].quarantined);
    assert_string_equal(f->reg.socks[i].why, "3 crashes within 60 s");
    assert_int_equal(sockets_crash(&f->reg, i, 64000, 3, 60000), 0); /* already */
    sockets_lift(&f->reg, i);
    assert_false(f->reg.socks[i].quarantined);
    assert_int_equal(sockets_crash(&f->reg, i, 64500, 1, 60000), 1);
    sockets_release(&f->reg, i);
    config_free(c);
}

/* One socket that cannot be opened fails the whole acquire and leaves nothing held. */
static void test_failure_acquires_nothing(void **state)
{
    struct fx *f = *state;
    berth_config_t *c1 = conf(f, "a=/a.sock");
    size_t i1;
    assert_int_equal(sockets_acquire(&f->reg, c1, &i1, NULL), 0);
    /* A regular file where a socket should go is never removed: an error. */
    char p[PATH_MAX + 16];
    snprintf(p, sizeof p, "%s/file", f->dir);
    FILE *fp = fopen(p, "w");
    assert_non_null(fp);
    fclose(fp);
    berth_config_t *c2 = conf(f, "a=/a.sock n=/n.sock x=/file");
    size_t i2[3];
    config_errors_t errs = {0};
    assert_int_equal(sockets_acquire(&f->reg, c2, i2, &errs), -EEXIST);
    assert_int_equal(errs.count, 1);
    assert_non_null(strstr(errs.msgs[0], "not a socket"));
    config_errors_free(&errs);
    assert_int_equal(f->reg.socks[i1].users, 1);
    assert_false(exists(f, "/n.sock"));
    assert_true(exists(f, "/file"));
    sockets_release(&f->reg, i1);
    config_free(c1);
    config_free(c2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_reload_diff, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renamed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_protocol_is_part_of_key, setup, teardown),
        cmocka_unit_test_setup_teardown(test_failure_acquires_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_zero_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_port_zero_shared_address, setup, teardown),
        cmocka_unit_test_setup_teardown(test_crash_limit, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
