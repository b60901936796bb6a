/* Unit tests for daemon/config/plugin_opts.c: a plugin's declared option table checked for
 * sense, values and defaults parsed into the plugin's struct, errors at FILE:LINE. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "config/plugin_opts.h"

typedef struct opts {
    const char *name;
    int on;
    int64_t count;
    uint64_t wait_ms;
    uint64_t limit;
    berth_cidr_list_t from;
    const char *dir;
    int level;
} opts_t;

static const char *const levels[] = {"low", "high", NULL};

#define O(n, t, f, m, d, lo, hi, ch)                                                               \
    {                                                                                              \
        .name = n, .type = t, .flags = f, .offset = offsetof(opts_t, m), .def = d, .min = lo,      \
        .max = hi, .choices = ch, .help = "h"                                                      \
    }

static const berth_option_t table[] = {
    O("name", BERTH_OPT_STRING, 0, name, "anon", 0, 0, NULL),
    O("on", BERTH_OPT_BOOL, 0, on, "yes", 0, 0, NULL),
    O("count", BERTH_OPT_INT, 0, count, "3", 1, 10, NULL),
    O("wait", BERTH_OPT_DURATION, 0, wait_ms, "1s", 0, 0, NULL),
    O("limit", BERTH_OPT_SIZE, 0, limit, NULL, 0, 1 << 20, NULL),
    O("from", BERTH_OPT_CIDR_LIST, 0, from, "127.0.0.0/8", 0, 0, NULL),
    O("dir", BERTH_OPT_PATH, BERTH_OPT_REQUIRED, dir, NULL, 0, 0, NULL),
    O("level", BERTH_OPT_ENUM, 0, level, "low", 0, 0, levels),
    {.name = NULL},
};

/* A listener section of `n` key/value pairs, each on line 10 + its index. */
static int parse(const char **kv, size_t n, opts_t **out, config_errors_t *errs)
{
    static config_option_t o[16];
    config_listener_t lc;
    void *p = NULL;

    memset(&lc, 0, sizeof(lc));
    for (size_t i = 0; i < n; i++)
        o[i] = (config_option_t){(char *)kv[2 * i], (char *)kv[2 * i + 1], "a.conf", 10 + (int)i};
    lc.name = (char *)"l";
    lc.file = "a.conf";
    lc.line = 9;
    lc.options = o;
    lc.noptions = n;
    int rc = plugin_opts_parse(table, sizeof(opts_t), "p", &lc, &p, errs);
    *out = p;
    return rc;
}

static void test_table_checks(void **state)
{
    char err[256];
    assert_int_equal(plugin_opts_check_table(table, sizeof(opts_t), err, sizeof err), 0);
    assert_int_equal(plugin_opts_check_table(NULL, 0, err, sizeof err), 0);
    /* An offset past the struct. */
    assert_int_equal(plugin_opts_check_table(table, offsetof(opts_t, level), err, sizeof err),
                     -EINVAL);
    assert_non_null(strstr(err, "option 'level'"));
    const berth_option_t noch[] = {O("level", BERTH_OPT_ENUM, 0, level, NULL, 0, 0, NULL),
                                   {.name = NULL}};
    assert_int_equal(plugin_opts_check_table(noch, sizeof(opts_t), err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "without choices"));
    const berth_option_t inverted[] = {O("count", BERTH_OPT_INT, 0, count, NULL, 5, 1, NULL),
                                       {.name = NULL}};
    assert_int_equal(plugin_opts_check_table(inverted, sizeof(opts_t), err, sizeof err), -EINVAL);
    const berth_option_t twice[] = {O("on", BERTH_OPT_BOOL, 0, on, NULL, 0, 0, NULL),
                                    O("on", BERTH_OPT_BOOL, 0, on, NULL, 0, 0, NULL),
                                    {.name = NULL}};
    assert_int_equal(plugin_opts_check_table(twice, sizeof(opts_t), err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "declared twice"));
    const berth_option_t baddef[] = {O("count", BERTH_OPT_INT, 0, count, "11", 1, 10, NULL),
                                     {.name = NULL}};
    assert_int_equal(plugin_opts_check_table(baddef, sizeof(opts_t), err, sizeof err), -EINVAL);
    assert_non_null(strstr(err, "its default"));
    const berth_option_t badtype[] = {{.name = "x", .type = (berth_option_type_t)99},
                                      {.name = NULL}};
    assert_int_equal(plugin_opts_check_table(badtype, sizeof(opts_t), err, sizeof err), -EINVAL);
}

static void test_values_and_defaults(void **state)
{
    const char *kv[] = {"dir",   "/srv", "count", "10", "limit", "1M",
                        "level", "high", "count", "7",  "other", "left to check_option"};
    config_errors_t errs = {0};
    opts_t *o;

    assert_int_equal(parse(kv, 6, &o, &errs), 0);
    assert_int_equal(errs.count, 0);
    assert_string_equal(o->name, "anon");
    assert_int_equal(o->on, 1);
    assert_int_equal(o->count, 7); /* the last one wins */
    assert_int_equal(o->wait_ms, 1000);
    assert_int_equal(o->limit, 1 << 20);
    assert_int_equal(o->from.count, 1);
    assert_string_equal(o->dir, "/srv");
    assert_int_equal(o->level, 1);
    plugin_opts_free(table, o);
}

static void test_errors_at_their_lines(void **state)
{
    const char *kv[] = {"on", "maybe", "count",     "0",     "wait", "-1s",   "limit",
                        "2M", "from",  "1.2.3.4/8", "level", "mid",  "count", "x"};
    config_errors_t errs = {0};
    opts_t *o = (opts_t *)1;

    assert_int_equal(parse(kv, 7, &o, &errs), -EINVAL);
    assert_null(o);
    const char *want[] = {
        "a.conf:9: [l]: dir is required by plugin 'p' (h)",
        "a.conf:10: on: want yes or no, not 'maybe'",
        "a.conf:16: count: want an integer 1..10, not 'x'",
        "a.conf:12: wait: want a duration (250ms, 10s, 5m, 1h), not '-1s'",
        "a.conf:13: limit: want a size 0..1048576 (512, 64K, 10M, 2G), not '2M'",
        "a.conf:14: from: '1.2.3.4/8' is not an address or CIDR",
        "a.conf:15: level: want one of low|high, not 'mid'",
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        int found = 0;
        for (size_t k = 0; k < errs.count; k++)
            found |= strcmp(errs.msgs[k], want[i]) == 0;
        if (!found) {
            for (size_t k = 0; k < errs.count; k++)
                fprintf(stderr, "got: %s\n", errs.msgs[k]);
            fail_msg("missing: %s", want[i]);
        }
    }
    assert_int_equal(errs.count, 7);
    config_errors_free(&errs);
}

static void test_describe(void **state)
{
    char buf[4096] = "";
    FILE *f = fmemopen(buf, sizeof buf, "w");
    char names[256];

    assert_non_null(f);
    plugin_opts_describe(table, f);
    fclose(f);
    assert_non_null(strstr(buf, "  count  integer 1..10, default 3\n"));
    assert_non_null(strstr(buf, "  dir    path, required\n"));
    assert_non_null(strstr(buf, "  level  enum low|high, default low\n"));
    plugin_opts_names(table, names, sizeof names);
    assert_string_equal(names, "takes: name, on, count, wait, limit, from, dir, level");
    plugin_opts_names(NULL, names, sizeof names);
    assert_string_equal(names, "takes no options");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table_checks),
        cmocka_unit_test(test_values_and_defaults),
        cmocka_unit_test(test_errors_at_their_lines),
        cmocka_unit_test(test_describe),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
