/* daemon/master/process.c: the respawn backoff. A crash and a spawn that fails (EMFILE,
 * fork's EAGAIN) both grow it, so a worker that cannot start is not retried every tick. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "master/process.h"

static void test_backoff_grows_and_caps(void **state)
{
    wproc_t wp;
    process_init(&wp, NULL, 0);
    unsigned want = BACKOFF_MIN_MS;
    for (int i = 0; i < 20; i++) {
        /* lived 0 ms: a spawn that failed, or a crash at once */
        assert_int_equal(process_backoff(&wp.backoff_ms, 0), want);
        want = want * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : want * 2;
    }
    assert_int_equal(process_backoff(&wp.backoff_ms, 0), BACKOFF_MAX_MS);
}

static void test_backoff_resets_after_a_stable_run(void **state)
{
    unsigned b = BACKOFF_MIN_MS;
    for (int i = 0; i < 5; i++)
        process_backoff(&b, STABLE_MS - 1);
    assert_int_equal(b, BACKOFF_MIN_MS << 5);
    assert_int_equal(process_backoff(&b, STABLE_MS), 0); /* rare: at once */
    assert_int_equal(process_backoff(&b, 0), BACKOFF_MIN_MS);
    assert_int_equal(process_backoff(&b, 0), BACKOFF_MIN_MS * 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_backoff_grows_and_caps),
        cmocka_unit_test(test_backoff_resets_after_a_stable_run),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
