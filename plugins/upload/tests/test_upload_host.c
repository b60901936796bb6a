/*
 * The built upload.so driven through berth-testhost: a file stored and answered, a bad name
 * refused with its body skipped, a connection that ends mid-file leaving nothing behind, and
 * header_timeout. The disk is real (a temporary folder); the pool work runs when the test
 * says so.
 */
#include <berth/testhost.h>

#include <dirent.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

typedef struct fixture {
    char dir[64];
    berth_testhost_t *th;
    berth_listener_t *l;
} fixture_t;

static int setup(void **state)
{
    fixture_t *f = calloc(1, sizeof *f);
    snprintf(f->dir, sizeof f->dir, "/tmp/berth-upload-host.XXXXXX");
    if (!mkdtemp(f->dir))
        fail_msg("mkdtemp: %s", strerror(errno));
    char err[256] = "";
    f->th = berth_testhost_open(PLUGIN_SO, err, sizeof err);
    if (!f->th)
        fail_msg("%s", err);
    f->l = berth_testhost_listener(f->th, "upload", BERTH_PROTO_TCP,
                                   (const char *[]){"dir", f->dir, "min_free", "0", NULL}, err,
                                   sizeof err);
    if (!f->l)
        fail_msg("listener: %s", err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture_t *f = *state;
    berth_testhost_free(f->th);
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.' && (!e->d_name[1] || (e->d_name[1] == '.' && !e->d_name[2])))
            continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", f->dir, e->d_name);
        unlink(p);
    }
    if (d)
        closedir(d);
    rmdir(f->dir);
    free(f);
    return 0;
}

/* A frame: 4-byte little-endian length, then the JSON header. */
static void send_header(berth_conn_t *c, const char *json)
{
    uint32_t n = (uint32_t)strlen(json);
    unsigned char len[4] = {n & 0xff, (n >> 8) & 0xff, (n >> 16) & 0xff, n >> 24};
    assert_int_equal(berth_testhost_feed(c, len, 4), 0);
    assert_int_equal(berth_testhost_feed(c, json, n), 0);
}

/* Runs pool work until the plugin asks for no more; gives up after many rounds. */
static void drain_work(fixture_t *f)
{
    for (int i = 0; i < 10000 && berth_testhost_run_work(f->th) > 0; i++)
        ;
    assert_int_equal(berth_testhost_work_queued(f->th), 0);
}

/* The JSON of the first reply frame, NUL-terminated, in buf; consumed from the output. */
static const char *reply(berth_conn_t *c, char *buf, size_t cap)
{
    size_t n;
    const unsigned char *out = berth_testhost_output(c, &n);
    assert_true(n >= 4);
    size_t len = out[0] | (size_t)out[1] << 8 | (size_t)out[2] << 16 | (size_t)out[3] << 24;
    assert_true(len + 4 <= n);
    assert_true(len < cap);
    memcpy(buf, out + 4, len);
    buf[len] = '\0';
    berth_testhost_consume(c, 4 + len);
    return buf;
}

static bool exists(const fixture_t *f, const char *name)
{
    char p[512];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", f->dir, name);
    return stat(p, &st) == 0;
}

static size_t files_in(const fixture_t *f)
{
    size_t n = 0;
    DIR *d = opendir(f->dir);
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        n += strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0;
    closedir(d);
    return n;
}

static void test_file_is_stored_and_answered(void **state)
{
    fixture_t *f = *state;
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:40001");
    /* sha256("hello world\n") */
    send_header(c,
                "{\"cmd\":\"put\",\"file_name\":\"a.txt\",\"file_size\":12,\"reply\":\"each\","
                "\"sha256\":\"a948904f2f0f479b8f8197694b30184b0d2ed1c1cd2a1ec0fb85d299a192a447\"}");
    assert_int_equal(berth_testhost_feed(c, "hello ", 6), 0);
    drain_work(f);
    assert_int_equal(berth_testhost_feed(c, "world\n", 6), 0);
    drain_work(f);
    char buf[1024];
    const char *r = reply(c, buf, sizeof buf);
    assert_non_null(strstr(r, "\"status\":\"ok\""));
    assert_non_null(strstr(r, "\"size\":12"));
    assert_true(exists(f, "a.txt"));
    assert_int_equal(files_in(f), 1);
    /* The stored line carries its fields (host->log_fields). */
    assert_true(berth_testhost_logged(f->th, " bytes=12"));
    berth_testhost_eof(c);
    drain_work(f);
    assert_true(berth_testhost_finished(c));
}

static void test_bad_name_is_refused_and_next_file_served(void **state)
{
    fixture_t *f = *state;
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:40002");
    send_header(c,
                "{\"cmd\":\"put\",\"file_name\":\"../evil\",\"file_size\":3,\"reply\":\"each\"}");
    assert_int_equal(berth_testhost_feed(c, "abc", 3), 0);
    drain_work(f);
    send_header(c, "{\"cmd\":\"put\",\"file_name\":\"good\",\"file_size\":2,\"reply\":\"each\"}");
    assert_int_equal(berth_testhost_feed(c, "ok", 2), 0);
    drain_work(f);
    char buf[1024];
    assert_non_null(strstr(reply(c, buf, sizeof buf), "\"status\":\"error\""));
    assert_non_null(strstr(reply(c, buf, sizeof buf), "\"status\":\"ok\""));
    assert_false(berth_testhost_closed(c));
    assert_int_equal(files_in(f), 1);
    assert_true(exists(f, "good"));
}

static void test_cut_mid_file_leaves_nothing(void **state)
{
    fixture_t *f = *state;
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:40003");
    send_header(c, "{\"cmd\":\"put\",\"file_name\":\"half\",\"file_size\":1000}");
    assert_int_equal(berth_testhost_feed(c, "0123456789", 10), 0);
    drain_work(f);
    berth_testhost_reset(c);
    drain_work(f);
    assert_true(berth_testhost_finished(c));
    assert_int_equal(files_in(f), 0);
}

static void test_header_timeout(void **state)
{
    fixture_t *f = *state;
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:40004");
    assert_int_equal(berth_testhost_feed(c, "\x20\x00", 2), 0); /* half a length */
    berth_testhost_advance(f->th, 9999);
    assert_false(berth_testhost_closed(c));
    berth_testhost_advance(f->th, 1); /* header_timeout defaults to 10s */
    drain_work(f);
    assert_true(berth_testhost_closed(c));
    char buf[1024];
    assert_non_null(strstr(reply(c, buf, sizeof buf), "header_timeout"));
}

static void test_oversized_header_closes(void **state)
{
    fixture_t *f = *state;
    berth_conn_t *c = berth_testhost_accept(f->th, f->l, "127.0.0.1:40005");
    assert_int_equal(berth_testhost_feed(c, "\xff\xff\xff\x7f", 4), 0);
    drain_work(f);
    assert_true(berth_testhost_closed(c));
    char buf[1024];
    assert_non_null(strstr(reply(c, buf, sizeof buf), "\"status\":\"error\""));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_file_is_stored_and_answered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_name_is_refused_and_next_file_served, setup,
                                        teardown),
        cmocka_unit_test_setup_teardown(test_cut_mid_file_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_header_timeout, setup, teardown),
        cmocka_unit_test_setup_teardown(test_oversized_header_closes, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
