/* lib/units.c (libberth-util): durations, sizes, booleans. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "berth/units.h"

static uint64_t duration(const char *text)
{
    uint64_t ms = 12345;

    assert_int_equal(berth_parse_duration(text, &ms), 0);
    return ms;
}

static uint64_t size(const char *text)
{
    uint64_t bytes = 12345;

    assert_int_equal(berth_parse_size(text, &bytes), 0);
    return bytes;
}

static void test_duration_units(void **state)
{
    assert_int_equal(duration("250ms"), 250);
    assert_int_equal(duration("0ms"), 0);
    assert_int_equal(duration("30s"), 30000);
    assert_int_equal(duration("5m"), 300000);
    assert_int_equal(duration("1h"), 3600000);
    assert_int_equal(duration("2d"), 2 * 86400000ull);
    assert_int_equal(duration("1H"), 3600000);
    assert_int_equal(duration("250MS"), 250);
}

static void test_duration_bare_number_is_seconds(void **state)
{
    assert_int_equal(duration("7"), 7000);
    assert_int_equal(duration("0"), 0);
    assert_int_equal(duration("007"), 7000);
}

static void test_duration_limits(void **state)
{
    uint64_t ms = 0;

    assert_int_equal(duration("18446744073709551615ms"), UINT64_MAX);
    /* UINT64_MAX / 1000 seconds fits; one more does not. */
    assert_int_equal(duration("18446744073709551s"), 18446744073709551000ull);
    assert_int_equal(berth_parse_duration("18446744073709552s", &ms), -EINVAL);
    assert_int_equal(berth_parse_duration("18446744073709551616ms", &ms), -EINVAL);
    assert_int_equal(berth_parse_duration("99999999999999999999999", &ms), -EINVAL);
    assert_int_equal(berth_parse_duration("213503982335d", &ms), -EINVAL);
}

static void test_duration_errors(void **state)
{
    static const char *const bad[] = {
        "",   "s",     "ms",    "-1",  "+1",   "1.5s", "10 s", " 10s", "10s ",
        "1x", "10sec", "1h30m", "5mm", "0x10", "1e3",  "h",    "1s1",  "--1",
    };
    uint64_t ms = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (berth_parse_duration(bad[i], &ms) != -EINVAL)
            fail_msg("duration '%s' was accepted", bad[i]);
    }
    assert_int_equal(ms, 42); /* untouched on error */
    assert_int_equal(berth_parse_duration(NULL, &ms), -EINVAL);
    assert_int_equal(berth_parse_duration("1s", NULL), -EINVAL);
}

static void test_size_units(void **state)
{
    assert_int_equal(size("0"), 0);
    assert_int_equal(size("512"), 512);
    assert_int_equal(size("512B"), 512);
    assert_int_equal(size("64K"), 65536);
    assert_int_equal(size("64k"), 65536);
    assert_int_equal(size("64KB"), 65536);
    assert_int_equal(size("64kb"), 65536);
    assert_int_equal(size("64KiB"), 65536);
    assert_int_equal(size("10M"), 10ull << 20);
    assert_int_equal(size("10MiB"), 10ull << 20);
    assert_int_equal(size("2G"), 2ull << 30);
    assert_int_equal(size("2gb"), 2ull << 30);
    assert_int_equal(size("1T"), 1ull << 40);
    assert_int_equal(size("1TiB"), 1ull << 40);
    assert_int_equal(size("16777215T"), 16777215ull << 40);
}

static void test_size_errors(void **state)
{
    static const char *const bad[] = {
        "",
        "K",
        "-1",
        "+1",
        "1.5K",
        "1 K",
        " 1K",
        "1K ",
        "1P",
        "1KK",
        "1Kib2",
        "1Ki",
        "0x10",
        "1e3",
        "KB",
        "1bb",
        "1iB",
        "16777216T", /* 2^64 */
        "18446744073709551616",
    };
    uint64_t bytes = 42;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (berth_parse_size(bad[i], &bytes) != -EINVAL)
            fail_msg("size '%s' was accepted", bad[i]);
    }
    assert_int_equal(bytes, 42);
    assert_int_equal(berth_parse_size(NULL, &bytes), -EINVAL);
    assert_int_equal(berth_parse_size("1K", NULL), -EINVAL);
    assert_int_equal(size("18446744073709551615"), UINT64_MAX);
}

static void test_bool(void **state)
{
    static const struct {
        const char *text;
        int value;
    } good[] = {
        {"yes", 1}, {"true", 1},  {"on", 1},  {"1", 1}, {"YES", 1}, {"True", 1},
        {"no", 0},  {"false", 0}, {"off", 0}, {"0", 0}, {"No", 0},  {"OFF", 0},
    };
    static const char *const bad[] = {"", "maybe", "2", "y", "n", "yes ", " on", "01", "tru"};
    int v;

    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        v = -1;
        assert_int_equal(berth_parse_bool(good[i].text, &v), 0);
        assert_int_equal(v, good[i].value);
    }
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        v = -1;
        if (berth_parse_bool(bad[i], &v) != -EINVAL)
            fail_msg("bool '%s' was accepted", bad[i]);
        assert_int_equal(v, -1);
    }
    assert_int_equal(berth_parse_bool(NULL, &v), -EINVAL);
    assert_int_equal(berth_parse_bool("yes", NULL), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_duration_units),
        cmocka_unit_test(test_duration_bare_number_is_seconds),
        cmocka_unit_test(test_duration_limits),
        cmocka_unit_test(test_duration_errors),
        cmocka_unit_test(test_size_units),
        cmocka_unit_test(test_size_errors),
        cmocka_unit_test(test_bool),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
