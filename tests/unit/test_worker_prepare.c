/* daemon/worker/worker.c: worker_prepare(), what both -t and a starting worker run: load each
 * listener's plugin, hand it the keys the daemon does not know, open its state. Every error
 * comes out as FILE:LINE: message, all of them, not just the first. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config/config.h"
#include "worker/worker.h"

#ifndef TEST_PLUGIN_DIR
#error "TEST_PLUGIN_DIR must name the folder of the test plugins"
#endif

#define PLUGIN(name) TEST_PLUGIN_DIR "/" name ".so"
#define CONF "/berth-test/wp.conf"

static berth_config_t *load(const char *text)
{
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc = config_load_string(CONF, text, strlen(text), 0, &cfg, &errs);
    if (rc) {
        for (size_t i = 0; i < errs.count; i++)
            print_error("config: %s\n", errs.msgs[i]);
        config_errors_free(&errs);
        fail_msg("config_load_string: %d", rc);
    }
    config_errors_free(&errs);
    return cfg;
}

/* The one message of errs that starts with `prefix`; fails if none does. */
static const char *find(const config_errors_t *errs, const char *prefix)
{
    for (size_t i = 0; i < errs->count; i++)
        if (strncmp(errs->msgs[i], prefix, strlen(prefix)) == 0)
            return errs->msgs[i];
    for (size_t i = 0; i < errs->count; i++)
        print_error("  got: %s\n", errs->msgs[i]);
    fail_msg("no error starts with '%s'", prefix);
    return NULL;
}

static void assert_contains(const char *text, const char *part)
{
    if (strstr(text, part) == NULL)
        fail_msg("'%s' does not contain '%s'", text, part);
}

static void test_good_plugin_prepares(void **state)
{
    berth_config_t *cfg = load("[daemon]\n"
                               "workers = 1\n"
                               "[a]\n"
                               "protocol = tcp\n"
                               "address = 127.0.0.1:7001\n"
                               "handler = " PLUGIN("good") "\n"
                                                           "greeting = hello there\n"
                                                           "slow = yes\n"
                                                           "[b]\n"
                                                           "protocol = udp\n"
                                                           "address = 127.0.0.1:7001\n"
                                                           "handler = " PLUGIN("good") "\n");
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    config_errors_t errs = {0};
    int rc = worker_prepare(&w, &errs);
    for (size_t i = 0; i < errs.count; i++)
        print_error("unexpected: %s\n", errs.msgs[i]);
    assert_int_equal(rc, 0);
    assert_int_equal(errs.count, 0);
    assert_int_equal(w.nlisteners, 2);
    /* One plugin file, loaded once for both listeners. */
    assert_int_equal(w.nplugins, 1);
    assert_ptr_equal(w.listeners[0].plugin, w.listeners[1].plugin);
    assert_true(w.listeners[0].opened);
    assert_true(w.listeners[1].opened);
    /* good's listener state starts with the greeting it read through host->option. */
    assert_non_null(w.listeners[0].state);
    assert_string_equal((const char *)w.listeners[0].state, "hello there");
    assert_string_equal((const char *)w.listeners[1].state, "");
    worker_release(&w);
    config_errors_free(&errs);
    config_free(cfg);
}

static void test_every_error_with_its_line(void **state)
{
    static const char fmt[] = "[daemon]\n"                          /* 1 */
                              "workers = 1\n"                       /* 2 */
                              "[a]\n"                               /* 3 */
                              "protocol = tcp\n"                    /* 4 */
                              "address = 127.0.0.1:7001\n"          /* 5 */
                              "handler = %s\n"                      /* 6 good */
                              "greeting = reject-me\n"              /* 7 */
                              "colour = red\n"                      /* 8 */
                              "[b]\n"                               /* 9 */
                              "protocol = tcp\n"                    /* 10 */
                              "address = 127.0.0.1:7002\n"          /* 11 */
                              "handler = %s\n"                      /* 12 badabi */
                              "[c]\n"                               /* 13 */
                              "protocol = tcp\n"                    /* 14 */
                              "address = 127.0.0.1:7003\n"          /* 15 */
                              "handler = %s\n"                      /* 16 nosym */
                              "[d]\n"                               /* 17 */
                              "protocol = unix\n"                   /* 18 */
                              "address = /tmp/berth-test-wp.sock\n" /* 19 */
                              "handler = %s\n"                      /* 20 good */
                              "slow = maybe\n";                     /* 21 */
    char text[2048];
    snprintf(text, sizeof text, fmt, PLUGIN("good"), PLUGIN("badabi"), PLUGIN("nosym"),
             PLUGIN("good"));
    berth_config_t *cfg = load(text);
    worker_t w;
    memset(&w, 0, sizeof w);
    w.cfg = cfg;
    config_errors_t errs = {0};
    assert_int_equal(worker_prepare(&w, &errs), -EINVAL);

    const char *e = find(&errs, CONF ":7: ");
    assert_contains(e, "greeting");
    assert_contains(e, "good plugin refuses greeting 'reject-me'");
    e = find(&errs, CONF ":8: ");
    assert_contains(e, "colour");
    assert_contains(e, "good plugin has no option 'colour'");
    e = find(&errs, CONF ":12: ");
    assert_contains(e, PLUGIN("badabi"));
    assert_contains(e, "ABI");
    e = find(&errs, CONF ":16: ");
    assert_contains(e, PLUGIN("nosym"));
    assert_contains(e, BERTH_HANDLER_SYMBOL);
    e = find(&errs, CONF ":21: ");
    assert_contains(e, "slow");
    assert_contains(e, "boolean");
    assert_int_equal(errs.count, 5);
    /* A listener whose options failed is not opened. */
    assert_false(w.listeners[0].opened);
    assert_true(w.listeners[3].opened == 0);
    worker_release(&w);
    config_errors_free(&errs);
    config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_good_plugin_prepares),
        cmocka_unit_test(test_every_error_with_its_line),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
