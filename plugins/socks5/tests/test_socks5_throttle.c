/* Unit tests for the failed-password throttle (socks5_throttle.c), with time passed in. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <arpa/inet.h>
#include <netinet/in.h>

#include <cmocka.h>

#include "socks5_throttle.h"

static struct sockaddr_storage addr(const char *text)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(text, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
        s6->sin6_family = AF_INET6;
        assert_int_equal(inet_pton(AF_INET6, text, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
        s4->sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, text, &s4->sin_addr), 1);
    }
    return ss;
}

#define SA(ss) ((const struct sockaddr *)&(ss))

static void test_limit_delay_block_expire(void **state)
{
    socks5_throttle_t *t = socks5_throttle_new(5, 60000, 120000);
    struct sockaddr_storage a = addr("192.0.2.7"), b = addr("192.0.2.8");
    socks5_throttle_verdict_t v;
    uint64_t now = 1000;
    unsigned logged = 0;

    assert_non_null(t);
    /* Four failures: nothing happens. */
    for (int i = 0; i < 4; i++) {
        socks5_throttle_attempt(t, SA(a), now, &v);
        assert_false(v.blocked);
        socks5_throttle_failed(t, SA(a), now, &v);
        assert_int_equal(v.delay_ms, 0);
        assert_int_equal(v.log_failures, 0);
    }
    /* The fifth: throttled, logged once, with the count. */
    socks5_throttle_failed(t, SA(a), now, &v);
    assert_int_equal(v.delay_ms, 0);
    assert_int_equal(v.log_failures, 5);
    assert_string_equal(v.source, "192.0.2.7");
    /* Then growing delays, no more log lines within the minute. */
    uint64_t want[] = {200, 400, 800, 1600, 3200};
    for (int i = 0; i < 5; i++) {
        socks5_throttle_attempt(t, SA(a), now, &v);
        assert_false(v.blocked);
        socks5_throttle_failed(t, SA(a), now, &v);
        assert_int_equal(v.delay_ms, want[i]);
        logged += v.log_failures;
    }
    assert_int_equal(logged, 0);
    /* Ten failures: blocked for two minutes, even the attempt that would have had the right
     * password; another source is not. */
    for (int i = 0; i < 100; i++) {
        socks5_throttle_attempt(t, SA(a), now + 1000, &v);
        assert_true(v.blocked);
        assert_int_equal(v.log_failures, 0);
    }
    socks5_throttle_attempt(t, SA(b), now + 1000, &v);
    assert_false(v.blocked);
    /* A minute after the first line: one more line, counting what came since. */
    socks5_throttle_attempt(t, SA(a), now + 60000, &v);
    assert_true(v.blocked);
    assert_int_equal(v.log_failures, 5 + 100 + 1);
    /* The block ends. */
    socks5_throttle_attempt(t, SA(a), now + 119999, &v);
    assert_true(v.blocked);
    socks5_throttle_attempt(t, SA(a), now + 120000, &v);
    assert_false(v.blocked);
    socks5_throttle_failed(t, SA(a), now + 120000, &v);
    assert_int_equal(v.delay_ms, 0);
    socks5_throttle_free(t);
}

static void test_window_forgets(void **state)
{
    socks5_throttle_t *t = socks5_throttle_new(3, 10000, 60000);
    struct sockaddr_storage a = addr("198.51.100.1");
    socks5_throttle_verdict_t v;

    /* Two failures per window, for a long time: never throttled. */
    for (uint64_t now = 0; now < 1000000; now += 10000) {
        socks5_throttle_failed(t, SA(a), now, &v);
        socks5_throttle_failed(t, SA(a), now + 1, &v);
        assert_int_equal(v.delay_ms, 0);
        assert_int_equal(v.log_failures, 0);
        socks5_throttle_attempt(t, SA(a), now + 2, &v);
        assert_false(v.blocked);
    }
    socks5_throttle_free(t);
}

static void test_ipv6_by_64_and_mapped(void **state)
{
    socks5_throttle_t *t = socks5_throttle_new(1, 60000, 60000);
    struct sockaddr_storage a = addr("2001:db8:1:2::1"), a2 = addr("2001:db8:1:2:ffff::9"),
                            other = addr("2001:db8:1:3::1"), m = addr("::ffff:192.0.2.9"),
                            v4 = addr("192.0.2.9"), v4b = addr("192.0.2.10");
    socks5_throttle_verdict_t v;

    socks5_throttle_failed(t, SA(a), 5, &v);
    assert_string_equal(v.source, "2001:db8:1:2::/64");
    socks5_throttle_failed(t, SA(a2), 5, &v); /* same /64: the second failure blocks */
    socks5_throttle_attempt(t, SA(a), 6, &v);
    assert_true(v.blocked);
    socks5_throttle_attempt(t, SA(other), 6, &v);
    assert_false(v.blocked);
    /* An IPv4 client seen through an IPv6 socket is the same source as itself. */
    socks5_throttle_failed(t, SA(m), 5, &v);
    assert_string_equal(v.source, "192.0.2.9");
    socks5_throttle_failed(t, SA(v4), 5, &v);
    socks5_throttle_attempt(t, SA(v4), 6, &v);
    assert_true(v.blocked);
    socks5_throttle_attempt(t, SA(v4b), 6, &v);
    assert_false(v.blocked);
    socks5_throttle_free(t);
}

static void test_bounded_and_non_ip(void **state)
{
    socks5_throttle_t *t = socks5_throttle_new(1, 60000, 60000);
    struct sockaddr_storage a = addr("203.0.113.1");
    struct sockaddr un = {.sa_family = AF_UNIX};
    socks5_throttle_verdict_t v;

    socks5_throttle_failed(t, SA(a), 1, &v);
    socks5_throttle_failed(t, SA(a), 1, &v);
    socks5_throttle_attempt(t, SA(a), 2, &v);
    assert_true(v.blocked);
    /* More sources than slots: the oldest goes, the table does not grow. */
    for (uint32_t i = 0; i < SOCKS5_THROTTLE_SLOTS; i++) {
        struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x0a000000u + i)};
        socks5_throttle_failed(t, (const struct sockaddr *)&s4, 10 + i, &v);
    }
    socks5_throttle_attempt(t, SA(a), 5000, &v);
    assert_false(v.blocked);
    /* Not an IP source, or none: never throttled. */
    for (int i = 0; i < 10; i++) {
        socks5_throttle_failed(t, &un, 1, &v);
        assert_int_equal(v.delay_ms, 0);
        socks5_throttle_failed(t, NULL, 1, &v);
    }
    socks5_throttle_attempt(t, &un, 2, &v);
    assert_false(v.blocked);
    /* No table (throttling off): nothing. */
    socks5_throttle_failed(NULL, SA(a), 1, &v);
    socks5_throttle_attempt(NULL, SA(a), 1, &v);
    assert_false(v.blocked);
    socks5_throttle_free(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_limit_delay_block_expire),
        cmocka_unit_test(test_window_forgets),
        cmocka_unit_test(test_ipv6_by_64_and_mapped),
        cmocka_unit_test(test_bounded_and_non_ip),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
