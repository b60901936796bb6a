/* daemon/core/limits.c: the per-source table shared by every worker. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/limits.h"

static struct sockaddr_storage ip(const char *text)
{
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    if (strchr(text, ':')) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        in6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &in6->sin6_addr), 1);
    } else {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        in->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &in->sin_addr), 1);
    }
    return ss;
}

#define TABLE 1024u

static int admit(const limits_rule_t *r, int wslot, const char *text, int32_t *entry)
{
    struct sockaddr_storage ss = ip(text);
    return limits_admit(r, wslot, (const struct sockaddr *)&ss, entry);
}

static int setup(void **state)
{
    (void)state;
    return limits_map(TABLE);
}

static int teardown(void **state)
{
    (void)state;
    limits_unmap();
    return 0;
}

static void per_source_counts_and_gives_back(void **state)
{
    (void)state;
    limits_rule_t r = {.per_source = 2, .prefix6 = 64, .listener = 1, .name = "t"};
    int32_t a, b, c;
    assert_int_equal(admit(&r, 0, "192.0.2.1", &a), LIMITS_OK);
    assert_int_equal(admit(&r, 1, "192.0.2.1", &b), LIMITS_OK);
    assert_true(a >= 0 && a == b);
    assert_int_equal(admit(&r, 0, "192.0.2.1", &c), LIMITS_OVER_CONNS);
    assert_int_equal(c, -1);
    /* Another source, another listener: counted apart. An IPv4-mapped peer is that IPv4. */
    assert_int_equal(admit(&r, 0, "192.0.2.2", &c), LIMITS_OK);
    limits_release(0, c);
    limits_rule_t r2 = r;
    r2.listener = 2;
    assert_int_equal(admit(&r2, 0, "192.0.2.1", &c), LIMITS_OK);
    limits_release(0, c);
    assert_int_equal(admit(&r, 0, "::ffff:192.0.2.1", &c), LIMITS_OVER_CONNS);
    /* IPv6 by /64: two hosts of one /64 are one source; another /64 is not. */
    int32_t d, e, f;
    assert_int_equal(admit(&r, 0, "2001:db8:1:2::1", &d), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "2001:db8:1:2:ffff::9", &e), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "2001:db8:1:2::7", &f), LIMITS_OVER_CONNS);
    assert_int_equal(admit(&r, 0, "2001:db8:1:3::1", &f), LIMITS_OK);
    limits_release(0, d);
    limits_release(0, e);
    limits_release(0, f);
    /* One given back: room for one. */
    limits_release(1, b);
    assert_int_equal(admit(&r, 1, "192.0.2.1", &b), LIMITS_OK);
    assert_int_equal(admit(&r, 1, "192.0.2.1", &c), LIMITS_OVER_CONNS);
    limits_release(0, a);
    limits_release(1, b);
    /* A peer without an IP address is not limited. */
    struct sockaddr un = {.sa_family = AF_UNIX};
    assert_int_equal(limits_admit(&r, 0, &un, &c), LIMITS_OK);
    assert_int_equal(c, -1);
}

static void a_dead_worker_is_settled(void **state)
{
    (void)state;
    limits_rule_t r = {.per_source = 3, .prefix6 = 64, .listener = 3, .name = "t"};
    int32_t e;
    /* A child process (a worker) takes two and dies without giving them back. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        int32_t x;
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr = {htonl(0xC6336401)}};
        limits_admit(&r, 7, (const struct sockaddr *)&in, &x);
        limits_admit(&r, 7, (const struct sockaddr *)&in, &x);
        _exit(0);
    }
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(admit(&r, 0, "198.51.100.1", &e), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "198.51.100.1", &e), LIMITS_OVER_CONNS);
    limits_settle(7);
    int32_t f, g;
    assert_int_equal(admit(&r, 0, "198.51.100.1", &f), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "198.51.100.1", &g), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "198.51.100.1", &e), LIMITS_OVER_CONNS);
}

static void rate_and_burst(void **state)
{
    (void)state;
    limits_rule_t r = {.rate = 1, .burst = 3, .prefix6 = 64, .listener = 4, .name = "t"};
    int32_t e;
    for (int i = 0; i < 3; i++) {
        assert_int_equal(admit(&r, 0, "203.0.113.5", &e), LIMITS_OK);
        assert_int_equal(e, -1); /* a rate alone holds nothing */
    }
    assert_int_equal(admit(&r, 0, "203.0.113.5", &e), LIMITS_OVER_RATE);
    assert_int_equal(admit(&r, 0, "203.0.113.6", &e), LIMITS_OK);
    /* A token a second: after a little over one, one more (and not two). */
    usleep(1100 * 1000);
    assert_int_equal(admit(&r, 0, "203.0.113.5", &e), LIMITS_OK);
    assert_int_equal(admit(&r, 0, "203.0.113.5", &e), LIMITS_OVER_RATE);
}

static void a_full_table_fails_open(void **state)
{
    (void)state;
    limits_rule_t r = {.per_source = 1, .prefix6 = 64, .listener = 5, .name = "t"};
    /* Hold one connection from ever more sources: some source finds its window full, and is
     * let in without an entry, before more sources than entries are held. */
    uint32_t open_at = 0;
    for (uint32_t i = 1; i <= 4 * TABLE && !open_at; i++) {
        struct sockaddr_in in = {.sin_family = AF_INET, .sin_addr = {htonl(0x0A000000 + i)}};
        int32_t e;
        assert_int_equal(limits_admit(&r, 0, (const struct sockaddr *)&in, &e), LIMITS_OK);
        if (e < 0)
            open_at = i;
    }
    assert_true(open_at > 0);
}

static int setup_one(void **state)
{
    (void)state;
    return limits_map(1);
}

static void a_full_table_of_one_fails_closed_or_open(void **state)
{
    (void)state;
    limits_rule_t r = {.per_source = 4, .prefix6 = 64, .listener = 2, .name = "t"};
    int32_t a, b;
    assert_int_equal(admit(&r, 0, "192.0.2.2", &a), LIMITS_OK);
    assert_true(a >= 0);
    /* The one entry is held: a second source finds no room. */
    r.full_closed = 1;
    assert_int_equal(admit(&r, 0, "192.0.2.3", &b), LIMITS_TABLE_FULL);
    assert_int_equal(b, -1);
    r.full_closed = 0;
    assert_int_equal(admit(&r, 0, "192.0.2.3", &b), LIMITS_OK);
    assert_int_equal(b, -1);
    /* The first source keeps its entry; once it lets go, the other one gets it. */
    assert_int_equal(admit(&r, 0, "192.0.2.2", &b), LIMITS_OK);
    assert_int_equal(b, a);
    limits_release(0, a);
    limits_release(0, b);
    r.full_closed = 1;
    assert_int_equal(admit(&r, 0, "192.0.2.3", &b), LIMITS_OK);
    assert_int_equal(b, a);
    limits_release(0, b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(per_source_counts_and_gives_back, setup, teardown),
        cmocka_unit_test_setup_teardown(a_dead_worker_is_settled, setup, teardown),
        cmocka_unit_test_setup_teardown(rate_and_burst, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_table_fails_open, setup, teardown),
        cmocka_unit_test_setup_teardown(a_full_table_of_one_fails_closed_or_open, setup_one,
                                        teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
