/* core/log.c: the text and json line formats, escaping of hostile strings, field limits. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "core/log.h"

typedef struct capture {
    char path[64];
    int saved;
} capture_t;

static int setup(void **state)
{
    capture_t *c = calloc(1, sizeof *c);
    snprintf(c->path, sizeof c->path, "/tmp/berth-test-log.XXXXXX");
    int fd = mkstemp(c->path);
    assert_true(fd >= 0);
    c->saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    close(fd);
    /* stderr is not the journal here: JOURNAL_STREAM would drop the text time stamp. */
    unsetenv("JOURNAL_STREAM");
    log_init("worker 2/gen 3", BERTH_LOG_DEBUG, 0);
    log_set_worker(2, 3);
    *state = c;
    return 0;
}

static int teardown(void **state)
{
    capture_t *c = *state;
    dup2(c->saved, STDERR_FILENO);
    close(c->saved);
    unlink(c->path);
    free(c);
    log_set_format(0);
    log_set_worker(0, 0);
    return 0;
}

/* Everything logged since the last call. */
static char *taken(capture_t *c)
{
    static char buf[1 << 16];
    int fd = open(c->path, O_RDONLY);
    assert_true(fd >= 0);
    ssize_t n = read(fd, buf, sizeof buf - 1);
    assert_true(n >= 0);
    buf[n] = '\0';
    close(fd);
    assert_int_equal(ftruncate(STDERR_FILENO, 0), 0);
    lseek(STDERR_FILENO, 0, SEEK_SET);
    return buf;
}

static void emit(berth_log_level_t level, const char *listener, const char *peer,
                 const berth_log_field_t *f, size_t n, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
static void emit(berth_log_level_t level, const char *listener, const char *peer,
                 const berth_log_field_t *f, size_t n, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_emit(level, listener, peer, f, n, fmt, ap);
    va_end(ap);
}

static void test_json_line_escapes_everything_a_peer_can_send(void **state)
{
    capture_t *c = *state;
    log_set_format(1);
    const berth_log_field_t f[] = {
        {"dest", "a\"b\\c\n\x01\x7f\xff\xc3(:80", 0},
        {"message", NULL, -5}, /* taken: prefixed */
        {"bad key!", "v", 0},
        {"utf8", "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 0},     /* valid: kept as is */
        {"bad_utf8", "\xed\xa0\x80\xc0\x80\xf4\x90\x80\x80", 0}, /* surrogate, overlong, >10FFFF */
    };
    emit(BERTH_LOG_INFO, "l\"x", "1.2.3.4:5", f, 5, "m\t%s", "\x1b[31m");
    char *out = taken(c);
    assert_non_null(strstr(out, "{\"time\":\""));
    assert_non_null(strstr(out, "Z\",\"level\":\"info\",\"pid\":"));
    assert_non_null(strstr(out, ",\"role\":\"worker 2/gen 3\",\"worker\":2,\"generation\":3,"
                                "\"listener\":\"l\\\"x\",\"peer\":\"1.2.3.4:5\","
                                "\"message\":\"m\\t\\u001b[31m\","
                                "\"dest\":\"a\\\"b\\\\c\\n\\u0001\\u007f\\\\xff\\\\xc3(:80\","
                                "\"plugin_message\":-5,\"bad_key_\":\"v\","
                                "\"utf8\":\"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                                "\"bad_utf8\":\"\\\\xed\\\\xa0\\\\x80\\\\xc0\\\\x80\\\\xf4\\\\x90"
                                "\\\\x80\\\\x80\"}\n"));
    /* One line: the only newline is the last byte. */
    assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1);
}

static void test_json_master_line_has_null_worker(void **state)
{
    capture_t *c = *state;
    log_set_format(1);
    log_set_worker(0, 0);
    log_set_role("master");
    log_msg(BERTH_LOG_WARN, "reloading %s", "x");
    char *out = taken(c);
    assert_non_null(strstr(out, "\"level\":\"warn\""));
    assert_non_null(strstr(out, "\"role\":\"master\",\"worker\":null,\"generation\":null,"
                                "\"listener\":null,\"peer\":null,\"message\":\"reloading x\"}\n"));
}

static void test_fields_are_clipped_and_counted(void **state)
{
    capture_t *c = *state;
    log_set_format(1);
    char big[3000];
    memset(big, 'a', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    berth_log_field_t f[BERTH_LOG_FIELDS_MAX + 8];
    char keys[BERTH_LOG_FIELDS_MAX + 8][8];
    for (size_t i = 0; i < BERTH_LOG_FIELDS_MAX + 8; i++) {
        snprintf(keys[i], sizeof keys[i], "k%zu", i);
        f[i] = (berth_log_field_t){keys[i], i == 0 ? big : NULL, (int64_t)i};
    }
    emit(BERTH_LOG_INFO, NULL, NULL, f, BERTH_LOG_FIELDS_MAX + 8, "many");
    char *out = taken(c);
    char want[1100];
    snprintf(want, sizeof want, "\"k0\":\"%.1024s\",\"k1\":1,", big);
    assert_non_null(strstr(out, want));
    char last[32];
    snprintf(last, sizeof last, ",\"k%d\":%d}\n", BERTH_LOG_FIELDS_MAX - 1,
             BERTH_LOG_FIELDS_MAX - 1);
    assert_non_null(strstr(out, last));
    snprintf(last, sizeof last, "\"k%d\"", BERTH_LOG_FIELDS_MAX);
    assert_null(strstr(out, last));
}

static void test_text_line_has_fields_as_key_value(void **state)
{
    capture_t *c = *state;
    log_set_format(0);
    const berth_log_field_t f[] = {
        {"dest", "evil\nname\x01", 0},
        {"up", NULL, 42},
    };
    emit(BERTH_LOG_INFO, "socks", "127.0.0.1:9", f, 2, "session");
    char *out = taken(c);
    assert_non_null(strstr(out, " info  berthd["));
    assert_non_null(strstr(out, "] worker 2/gen 3: socks 127.0.0.1:9: session "
                                "dest=evil\\x0aname\\x01 up=42\n"));
    emit(BERTH_LOG_DEBUG, NULL, NULL, NULL, 0, "plain");
    out = taken(c);
    assert_non_null(strstr(out, "worker 2/gen 3: plain\n"));
}

static void test_level_filter_and_format_names(void **state)
{
    capture_t *c = *state;
    int json = -1;
    assert_int_equal(log_format_parse("json", &json), 0);
    assert_int_equal(json, 1);
    assert_int_equal(log_format_parse("text", &json), 0);
    assert_int_equal(json, 0);
    assert_int_equal(log_format_parse("JSON", &json), -1);
    assert_int_equal(log_format_parse("", &json), -1);
    log_set_level(BERTH_LOG_WARN);
    log_set_format(1);
    log_msg(BERTH_LOG_INFO, "hidden");
    assert_string_equal(taken(c), "");
    log_set_level(BERTH_LOG_DEBUG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_line_escapes_everything_a_peer_can_send, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_json_master_line_has_null_worker, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fields_are_clipped_and_counted, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_line_has_fields_as_key_value, setup, teardown),
        cmocka_unit_test_setup_teardown(test_level_filter_and_format_names, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
