/* master/handover.c: the binary upgrade's state document. What this release writes reads
 * back; older formats and unknown keys are read, newer formats and damaged documents are
 * refused with a reason. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "master/handover.h"

static handover_t a, b;

static int parse(const char *text, char *err, size_t errlen)
{
    return handover_parse(text, strlen(text), &a, err, errlen);
}

static void test_round_trip(void **state)
{
    handover_init(&a);
    a.format = HANDOVER_FORMAT;
    snprintf(a.from, sizeof a.from, "0.1.0");
    snprintf(a.exe, sizeof a.exe, "/usr/sbin/berthd");
    snprintf(a.failed, sizeof a.failed, "line one\nline two \\ with a backslash");
    snprintf(a.admin_path, sizeof a.admin_path, "/run/berth/admin.sock");
    a.next_generation = 7;
    a.stats_fd = 5;
    a.stats_size = sizeof(stats_t);
    a.limits_fd = 6;
    a.limits_len = 123456;
    a.limits_entries = 4096;
    a.admin_fd = 7;
    a.reply_fd = 8;
    a.rollback_fd = 9;
    a.nsocks = 2;
    for (size_t i = 0; i < 2; i++) {
        ho_sock_t *s = &a.socks[i];
        s->fd = 10 + (int)i;
        s->slot = (int)i;
        s->protocol = (int)i;
        s->addrlen = 16;
        memset(&s->addr, 0xa5 + (int)i, s->addrlen);
        snprintf(s->name, sizeof s->name, "listener %zu", i); /* a space is kept */
        snprintf(s->address, sizeof s->address, "127.0.0.1:0");
        snprintf(s->bound, sizeof s->bound, "127.0.0.1:4000%zu", i);
    }
    a.ngens = 2;
    a.gens[0] = (ho_gen_t){.id = 7, .state = HO_SERVING, .version = "0.1.0"};
    a.gens[1] = (ho_gen_t){.id = 5, .state = HO_DRAINING, .kill_in_ms = 4321, .version = "0.0.9"};
    a.nworkers = 3;
    a.workers[0] = (ho_worker_t){.gen = 7, .index = 0, .pid = 100, .ctl_fd = 20, .slot = 0};
    a.workers[1] = (ho_worker_t){.gen = 7, .index = 1, .pid = 101, .ctl_fd = 21, .slot = 1};
    a.workers[2] =
        (ho_worker_t){.gen = 5, .index = 0, .group = 1, .pid = 90, .ctl_fd = 22, .slot = 2};
    /* the keys appended to format 1 */
    a.metrics_fd = 30;
    snprintf(a.metrics_at, sizeof a.metrics_at, "/run/berth/metrics\\ sock");
    a.agent_fd = 31;
    snprintf(a.agent_at, sizeof a.agent_at, "[::1]:8081");
    a.npassed = 2;
    a.passed[0].fd = 3;
    snprintf(a.passed[0].name, sizeof a.passed[0].name, "echo-tcp");
    a.passed[1].fd = 4;
    snprintf(a.passed[1].name, sizeof a.passed[1].name, "name with spaces");
    int fd = handover_write(&a);
    assert_true(fd >= 0);
    char err[256] = "";
    assert_int_equal(handover_read(fd, &b, err, sizeof err), 0);
    close(fd);
    assert_string_equal(b.from, a.from);
    assert_string_equal(b.exe, a.exe);
    assert_string_equal(b.failed, a.failed);
    assert_string_equal(b.admin_path, a.admin_path);
    assert_int_equal(b.next_generation, 7);
    assert_int_equal(b.stats_fd, 5);
    assert_int_equal(b.stats_size, sizeof(stats_t));
    assert_int_equal(b.limits_fd, 6);
    assert_int_equal(b.limits_len, 123456);
    assert_int_equal(b.limits_entries, 4096);
    assert_int_equal(b.admin_fd, 7);
    assert_int_equal(b.reply_fd, 8);
    assert_int_equal(b.rollback_fd, 9);
    assert_int_equal(b.nsocks, 2);
    for (size_t i = 0; i < 2; i++) {
        assert_int_equal(b.socks[i].fd, a.socks[i].fd);
        assert_int_equal(b.socks[i].addrlen, 16);
        assert_memory_equal(&b.socks[i].addr, &a.socks[i].addr, 16);
        assert_string_equal(b.socks[i].name, a.socks[i].name);
        assert_string_equal(b.socks[i].bound, a.socks[i].bound);
    }
    assert_int_equal(b.ngens, 2);
    assert_int_equal(b.gens[1].kill_in_ms, 4321);
    assert_string_equal(b.gens[1].version, "0.0.9");
    assert_int_equal(b.nworkers, 3);
    assert_int_equal(b.workers[2].group, 1);
    assert_int_equal(b.workers[2].pid, 90);
    assert_int_equal(b.metrics_fd, 30);
    assert_string_equal(b.metrics_at, a.metrics_at);
    assert_int_equal(b.agent_fd, 31);
    assert_string_equal(b.agent_at, "[::1]:8081");
    assert_int_equal(b.npassed, 2);
    assert_int_equal(b.passed[1].fd, 4);
    assert_string_equal(b.passed[1].name, "name with spaces");
    int fds[HANDOVER_MAX_FDS];
    assert_int_equal(handover_fds(&b, fds, HANDOVER_MAX_FDS), 5 + 2 + 3 + 2 + 2);
}

/* The keys appended to format 1 are optional: a document without them (as an earlier writer
 * made it) reads with none; with them, each is read. */
static void test_appended_keys_are_optional(void **state)
{
    char err[256] = "";
    assert_int_equal(parse("berth-handover 1\nexe /b\nstats 3 10\nend\n", err, sizeof err), 0);
    assert_int_equal(a.metrics_fd, -1);
    assert_int_equal(a.agent_fd, -1);
    assert_int_equal(a.npassed, 0);
    assert_int_equal(parse("berth-handover 1\nexe /b\nstats 3 10\nmetrics 12 127.0.0.1:9\n"
                           "agent 13 127.0.0.1:8\nactivation 3 a\nactivation 4 b\nend\n",
                           err, sizeof err),
                     0);
    assert_int_equal(a.metrics_fd, 12);
    assert_string_equal(a.metrics_at, "127.0.0.1:9");
    assert_int_equal(a.agent_fd, 13);
    assert_int_equal(a.npassed, 2);
    assert_string_equal(a.passed[1].name, "b");
}

/* A release reads the format before it; a key it does not know is skipped. */
static void test_older_and_unknown_keys(void **state)
{
    char err[256] = "";
    assert_int_equal(parse("berth-handover 1\nexe /b\nstats 3 10\nfrom_the_future 12 x:9\n"
                           "end\nafter the end is not read\n",
                           err, sizeof err),
                     0);
    assert_int_equal(a.stats_fd, 3);
    assert_int_equal(a.metrics_fd, -1);
    assert_int_equal(a.admin_fd, -1);
    assert_int_equal(a.reply_fd, -1);
}

static void refused(const char *text, const char *why)
{
    char err[256] = "";
    assert_int_equal(parse(text, err, sizeof err), -EINVAL);
    if (strstr(err, why) == NULL)
        fail_msg("'%s' does not say '%s'", err, why);
}

static void test_refused(void **state)
{
    refused("", "empty");
    refused("berth-handover 2\nexe /b\nstats 3 10\nend\n", "newer");
    refused("berth-handover 0\nend\n", "newer"); /* format 0 was never written */
    refused("hello\n", "not a berth handover");
    refused("berth-handover 1\nexe /b\nstats 3 10\n", "truncated");
    refused("berth-handover 1\nexe /b\nstats 3 10\nend", "no end of line");
    refused("berth-handover 1\nexe /b\nend\n", "counters");
    refused("berth-handover 1\nstats 3 10\nend\n", "executable");
    refused("berth-handover 1\nexe relative\nstats 3 10\nend\n", "malformed exe");
    refused("berth-handover 1\nexe /b\nstats -1 10\nend\n", "malformed stats");
    refused("berth-handover 1\nexe /b\nstats 3 10 junk\nend\n", "malformed stats");
    /* a worker of a generation not listed before it */
    refused("berth-handover 1\nexe /b\nstats 3 10\nworker 1 0 0 100 4 0\nend\n",
            "malformed worker");
    refused("berth-handover 1\nexe /b\nstats 3 10\ngen 1 3 0 v\nend\n", "malformed gen");
    refused("berth-handover 1\nexe /b\nstats 3 10\ngen 1 1 0 v\nworker 1 0 0 1 4 0\nend\n",
            "malformed worker"); /* pid 1 is never a worker */
    refused("berth-handover 1\nexe /b\nstats 3 10\ngen 1 1 0 v\nworker 1 0 0 100 4 256\nend\n",
            "malformed worker"); /* stats slot out of range */
    /* sockets: address length against the hex, the three tab fields, slot range */
    refused("berth-handover 1\nexe /b\nstats 3 10\nsock 4 0 0 0 0 0 2 0a\tn\ta\tb\nend\n",
            "malformed sock");
    refused("berth-handover 1\nexe /b\nstats 3 10\nsock 4 0 0 0 0 0 1 0g\tn\ta\tb\nend\n",
            "malformed sock");
    refused("berth-handover 1\nexe /b\nstats 3 10\nsock 4 0 0 0 0 0 1 0a\tn\ta\nend\n",
            "malformed sock");
    refused("berth-handover 1\nexe /b\nstats 3 10\nsock 4 256 0 0 0 0 1 0a\tn\ta\tb\nend\n",
            "malformed sock");
    refused("berth-handover 1\nexe /b\nstats 3 10\nsock 4 0 0 0 0 0 1 0a\t\ta\tb\nend\n",
            "malformed sock"); /* a nameless socket */
    refused("berth-handover 1\nexe /b\nfailed bad escape \\t\nstats 3 10\nend\n",
            "malformed failed");
    refused("berth-handover 1\nexe /b\nstats 3 10\nmetrics 12\nend\n", "malformed metrics");
    refused("berth-handover 1\nexe /b\nstats 3 10\nmetrics -1 a:1\nend\n", "malformed metrics");
    refused("berth-handover 1\nexe /b\nstats 3 10\nagent x a:1\nend\n", "malformed agent");
    refused("berth-handover 1\nexe /b\nstats 3 10\nactivation 3 \nend\n",
            "malformed activation"); /* a nameless passed socket */
    refused("berth-handover 1\nexe /b\nstats 3 10\nactivation 3 a\tb\nend\n",
            "malformed activation"); /* a tab would not write back */
}

/* The limits: HANDOVER_MAX_GENS generations, BERTH_MAX_LISTENERS sockets. */
static void test_limits(void **state)
{
    size_t cap = 64 * 1024;
    char *t = malloc(cap);
    assert_non_null(t);
    size_t n = (size_t)snprintf(t, cap, "berth-handover 1\nexe /b\nstats 3 10\n");
    for (unsigned i = 0; i < HANDOVER_MAX_GENS; i++)
        n += (size_t)snprintf(t + n, cap - n, "gen %u 2 0 v\n", i + 1);
    snprintf(t + n, cap - n, "end\n");
    char err[256] = "";
    assert_int_equal(parse(t, err, sizeof err), 0);
    assert_int_equal(a.ngens, HANDOVER_MAX_GENS);
    snprintf(t + n, cap - n, "gen 999 2 0 v\nend\n");
    refused(t, "more than");
    n = (size_t)snprintf(t, cap, "berth-handover 1\nexe /b\nstats 3 10\n");
    for (unsigned i = 0; i <= BERTH_MAX_LISTENERS; i++)
        n += (size_t)snprintf(t + n, cap - n, "sock %u 0 0 0 0 0 1 0a\tn\ta\tb\n", i + 4);
    snprintf(t + n, cap - n, "end\n");
    refused(t, "more than");
    n = (size_t)snprintf(t, cap, "berth-handover 1\nexe /b\nstats 3 10\n");
    for (unsigned i = 0; i <= BERTH_MAX_LISTENERS; i++)
        n += (size_t)snprintf(t + n, cap - n, "activation %u n%u\n", i + 4, i);
    snprintf(t + n, cap - n, "end\n");
    refused(t, "more than");
    free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_older_and_unknown_keys),
        cmocka_unit_test(test_appended_keys_are_optional),
        cmocka_unit_test(test_refused),
        cmocka_unit_test(test_limits),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
