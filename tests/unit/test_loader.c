/* daemon/worker/loader.c: plugin_open against test plugins built as real .so files. */
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

#include "worker/loader.h"
#include "worker/host.h"
#include "worker/worker.h"

#ifndef TEST_PLUGIN_DIR
#error "TEST_PLUGIN_DIR must name the folder of the test plugins"
#endif

#define PLUGIN(name) TEST_PLUGIN_DIR "/" name ".so"

static void assert_contains(const char *text, const char *part)
{
    if (strstr(text, part) == NULL)
        fail_msg("'%s' does not contain '%s'", text, part);
}

static void test_good_loads(void **state)
{
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(PLUGIN("good"), &berth_host_table, &p, err, sizeof err);
    if (rc)
        fail_msg("good.so: %d: %s", rc, err);
    assert_non_null(p);
    assert_string_equal(p->desc.name, "good");
    assert_string_equal(p->path, PLUGIN("good"));
    assert_int_equal(p->desc.abi_version, BERTH_ABI_VERSION);
    assert_int_equal(p->desc.size, sizeof(berth_handler_t));
    assert_true(p->loaded);
    assert_non_null(p->desc.handle);
    assert_non_null(p->desc.setup);
    assert_non_null(p->desc.finish);
    assert_non_null(p->desc.check_option);
    assert_non_null(p->desc.listener_open);
    assert_true(p->desc.conn_size > 0);
    plugin_close(p);
}

static void test_good_loads_twice(void **state)
{
    /* Two listeners may share a plugin file; each open stands on its own. */
    plugin_t *a = NULL, *b = NULL;
    char err[512] = "";
    assert_int_equal(plugin_open(PLUGIN("good"), &berth_host_table, &a, err, sizeof err), 0);
    assert_int_equal(plugin_open(PLUGIN("good"), &berth_host_table, &b, err, sizeof err), 0);
    plugin_close(a);
    assert_string_equal(b->desc.name, "good");
    plugin_close(b);
}

static void test_wrong_abi_is_refused_naming_the_file(void **state)
{
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(PLUGIN("badabi"), &berth_host_table, &p, err, sizeof err);
    assert_int_equal(rc, -EPROTO);
    assert_null(p);
    assert_contains(err, PLUGIN("badabi"));
    assert_contains(err, "ABI version 42");
    /* badabi's load() aborts: reaching here shows nothing was called before the check. */
}

static void test_missing_symbol_is_refused_naming_the_file(void **state)
{
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(PLUGIN("nosym"), &berth_host_table, &p, err, sizeof err);
    assert_int_equal(rc, -ENOENT);
    assert_null(p);
    assert_contains(err, PLUGIN("nosym"));
    assert_contains(err, BERTH_HANDLER_SYMBOL);
}

static void test_missing_file_is_refused_naming_the_file(void **state)
{
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(PLUGIN("no-such-plugin"), &berth_host_table, &p, err, sizeof err);
    assert_true(rc < 0);
    assert_null(p);
    assert_contains(err, PLUGIN("no-such-plugin"));
}

static void test_not_a_shared_object_is_refused_naming_the_file(void **state)
{
    char path[] = "/tmp/berth-test-loader-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "not an ELF file\n", 16), 16);
    close(fd);
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(path, &berth_host_table, &p, err, sizeof err);
    unlink(path);
    assert_true(rc < 0);
    assert_null(p);
    assert_contains(err, path);
}

static void test_load_failure_is_reported_naming_the_file(void **state)
{
    /* good's load() refuses a host of another ABI version. */
    berth_host_t host = berth_host_table;
    host.abi_version = BERTH_ABI_VERSION + 7;
    plugin_t *p = NULL;
    char err[512] = "";
    int rc = plugin_open(PLUGIN("good"), &host, &p, err, sizeof err);
    assert_int_equal(rc, -EPROTO);
    assert_null(p);
    assert_contains(err, PLUGIN("good"));
    assert_contains(err, "failed to load");
}

static void test_descriptor_checks(void **state)
{
    berth_handler_t h;
    char err[512];
    memset(&h, 0, sizeof h);
    h.abi_version = BERTH_ABI_VERSION;
    h.size = sizeof h;
    h.name = "t";
    assert_int_equal(plugin_check_descriptor(&h, "/x/t.so", err, sizeof err), 0);

    /* A plugin built against an older header, with fewer members: fine, the rest reads NULL. */
    h.size = (uint32_t)offsetof(berth_handler_t, eof);
    assert_int_equal(plugin_check_descriptor(&h, "/x/t.so", err, sizeof err), 0);

    h.size = 8; /* not even a name */
    assert_int_equal(plugin_check_descriptor(&h, "/x/t.so", err, sizeof err), -EPROTO);
    assert_contains(err, "/x/t.so");

    h.size = sizeof h + 8; /* a newer header than ours */
    assert_int_equal(plugin_check_descriptor(&h, "/x/t.so", err, sizeof err), -EPROTO);
    assert_contains(err, "/x/t.so");
    assert_contains(err, "newer");

    h.size = sizeof h;
    h.abi_version = 0;
    assert_int_equal(plugin_check_descriptor(&h, "/x/t.so", err, sizeof err), -EPROTO);
    assert_contains(err, "/x/t.so");
}

static void test_close_null(void **state)
{
    plugin_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_loads),
        cmocka_unit_test(test_good_loads_twice),
        cmocka_unit_test(test_wrong_abi_is_refused_naming_the_file),
        cmocka_unit_test(test_missing_symbol_is_refused_naming_the_file),
        cmocka_unit_test(test_missing_file_is_refused_naming_the_file),
        cmocka_unit_test(test_not_a_shared_object_is_refused_naming_the_file),
        cmocka_unit_test(test_load_failure_is_reported_naming_the_file),
        cmocka_unit_test(test_descriptor_checks),
        cmocka_unit_test(test_close_null),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
