/* Unit tests for the upload framing parser (frame.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "frame.h"

/* What a whole stream parses into, flattened: header texts, body bytes, END markers. */
typedef struct trace {
    char text[8192];
    size_t len;
    int headers, ends, errors;
    upload_frame_error_t error;
} trace_t;

static void put(trace_t *t, const void *p, size_t n)
{
    assert_true(t->len + n <= sizeof(t->text));
    memcpy(t->text + t->len, p, n);
    t->len += n;
}

/* Feed `data` in chunks of `chunk` bytes (0: all at once); each header announces a body of
 * the size written in its text as a decimal number. */
static void run(trace_t *t, const void *data, size_t len, size_t chunk, size_t max_header)
{
    upload_frame_t f;
    const unsigned char *in = data;
    size_t off = 0;

    memset(t, 0, sizeof(*t));
    upload_frame_init(&f, max_header);
    do {
        size_t n = chunk == 0 || chunk > len - off ? len - off : chunk;
        size_t used = 0;
        for (;;) {
            upload_frame_ev_t ev;
            long r = upload_frame_feed(&f, in + off + used, n - used, &ev);
            assert_true(r >= 0);
            used += (size_t)r;
            if (ev.type == UPLOAD_FRAME_NONE) {
                assert_int_equal(used, n);
                break;
            }
            if (ev.type == UPLOAD_FRAME_ERROR) {
                t->errors++;
                t->error = ev.error;
                put(t, "!", 1);
                upload_frame_free(&f);
                return;
            }
            if (ev.type == UPLOAD_FRAME_HEADER) {
                char num[32] = {0};
                t->headers++;
                put(t, "<", 1);
                put(t, ev.data, ev.len);
                put(t, ">", 1);
                memcpy(num, ev.data, ev.len < sizeof(num) - 1 ? ev.len : sizeof(num) - 1);
                upload_frame_body(&f, strtoull(num, NULL, 10));
            } else if (ev.type == UPLOAD_FRAME_DATA) {
                assert_true(ev.len > 0);
                put(t, ev.data, ev.len);
            } else if (ev.type == UPLOAD_FRAME_END) {
                t->ends++;
                put(t, "|", 1);
            }
        }
        off += n;
    } while (off < len);
    upload_frame_free(&f);
}

/* Append one frame to buf: length (as given), header text, body. */
static size_t frame(unsigned char *buf, int32_t hlen, const char *hdr, const char *body)
{
    uint32_t u = (uint32_t)hlen;
    size_t o = 0;
    buf[o++] = (unsigned char)(u & 0xff);
    buf[o++] = (unsigned char)(u >> 8 & 0xff);
    buf[o++] = (unsigned char)(u >> 16 & 0xff);
    buf[o++] = (unsigned char)(u >> 24 & 0xff);
    memcpy(buf + o, hdr, strlen(hdr));
    o += strlen(hdr);
    memcpy(buf + o, body, strlen(body));
    return o + strlen(body);
}

static void test_one_frame(void **state)
{
    unsigned char buf[256];
    trace_t t;
    size_t n = frame(buf, 2, "11", "hello world");
    run(&t, buf, n, 0, 1024);
    assert_int_equal(t.headers, 1);
    assert_int_equal(t.ends, 1);
    assert_int_equal(t.errors, 0);
    assert_memory_equal(t.text, "<11>hello world|", t.len);
}

static void test_many_frames_any_chunking(void **state)
{
    unsigned char buf[512];
    size_t n = 0;
    n += frame(buf + n, 1, "3", "abc");
    n += frame(buf + n, 1, "0", ""); /* an empty file */
    n += frame(buf + n, 2, "10", "0123456789");
    n += frame(buf + n, 1, "1", "z");
    const char want[] = "<3>abc|<0>|<10>0123456789|<1>z|";
    for (size_t chunk = 0; chunk <= n; chunk++) {
        trace_t t;
        run(&t, buf, n, chunk, 1024);
        assert_int_equal(t.headers, 4);
        assert_int_equal(t.ends, 4);
        assert_int_equal(t.len, strlen(want));
        assert_memory_equal(t.text, want, t.len);
    }
}

static void test_empty_body_ends_without_more_input(void **state)
{
    unsigned char buf[16];
    upload_frame_t f;
    upload_frame_ev_t ev;
    size_t n = frame(buf, 1, "0", "");

    upload_frame_init(&f, 64);
    assert_int_equal(upload_frame_feed(&f, buf, n, &ev), (long)n);
    assert_int_equal(ev.type, UPLOAD_FRAME_HEADER);
    /* Until the body size is given the parser takes nothing. */
    assert_int_equal(upload_frame_feed(&f, "", 0, &ev), -1);
    assert_int_equal(ev.type, UPLOAD_FRAME_NONE);
    assert_false(upload_frame_idle(&f));
    upload_frame_body(&f, 0);
    assert_int_equal(upload_frame_feed(&f, "", 0, &ev), 0);
    assert_int_equal(ev.type, UPLOAD_FRAME_END);
    assert_true(upload_frame_idle(&f));
    assert_int_equal(upload_frame_feed(&f, "", 0, &ev), 0);
    assert_int_equal(ev.type, UPLOAD_FRAME_NONE);
    upload_frame_free(&f);
}

static void test_body_left_and_idle(void **state)
{
    unsigned char buf[32];
    upload_frame_t f;
    upload_frame_ev_t ev;
    size_t n = frame(buf, 1, "5", "ab");

    upload_frame_init(&f, 64);
    assert_true(upload_frame_idle(&f));
    assert_int_equal(upload_frame_feed(&f, buf, 2, &ev), 2); /* half a length */
    assert_int_equal(ev.type, UPLOAD_FRAME_NONE);
    assert_false(upload_frame_idle(&f));
    assert_int_equal(upload_frame_feed(&f, buf + 2, n - 2, &ev), 3);
    assert_int_equal(ev.type, UPLOAD_FRAME_HEADER);
    upload_frame_body(&f, 5);
    assert_int_equal(upload_frame_body_left(&f), 5);
    assert_int_equal(upload_frame_feed(&f, buf + 5, n - 5, &ev), 2);
    assert_int_equal(ev.type, UPLOAD_FRAME_DATA);
    assert_int_equal(ev.len, 2);
    assert_int_equal(upload_frame_body_left(&f), 3);
    assert_false(upload_frame_idle(&f));
    upload_frame_free(&f);
}

static void test_negative_length(void **state)
{
    unsigned char buf[16];
    trace_t t;
    size_t n = frame(buf, -1, "", "");
    run(&t, buf, n, 1, 1024);
    assert_int_equal(t.errors, 1);
    assert_int_equal(t.error, UPLOAD_FRAME_ENEGATIVE);

    n = frame(buf, INT32_MIN, "", "");
    run(&t, buf, n, 0, 1024);
    assert_int_equal(t.error, UPLOAD_FRAME_ENEGATIVE);
}

static void test_length_over_max(void **state)
{
    unsigned char buf[64];
    trace_t t;
    size_t n = frame(buf, 17, "", "");
    run(&t, buf, n, 0, 16);
    assert_int_equal(t.errors, 1);
    assert_int_equal(t.error, UPLOAD_FRAME_ETOOBIG);

    n = frame(buf, INT32_MAX, "", "");
    run(&t, buf, n, 0, 65536);
    assert_int_equal(t.error, UPLOAD_FRAME_ETOOBIG);

    /* Exactly max_header is fine. */
    n = frame(buf, 16, "0               ", "");
    run(&t, buf, n, 3, 16);
    assert_int_equal(t.errors, 0);
    assert_int_equal(t.headers, 1);
    assert_int_equal(t.ends, 1);
}

static void test_error_is_sticky(void **state)
{
    unsigned char buf[16];
    upload_frame_t f;
    upload_frame_ev_t ev;
    size_t n = frame(buf, -5, "", "");

    upload_frame_init(&f, 64);
    assert_int_equal(upload_frame_feed(&f, buf, n, &ev), 4);
    assert_int_equal(ev.type, UPLOAD_FRAME_ERROR);
    assert_int_equal(ev.declared, -5);
    assert_int_equal(upload_frame_feed(&f, "more", 4, &ev), 0);
    assert_int_equal(ev.type, UPLOAD_FRAME_ERROR);
    upload_frame_free(&f);
}

static void test_header_zero_length(void **state)
{
    unsigned char buf[8];
    upload_frame_t f;
    upload_frame_ev_t ev;
    size_t n = frame(buf, 0, "", "");

    upload_frame_init(&f, 64);
    assert_int_equal(upload_frame_feed(&f, buf, n, &ev), 4);
    assert_int_equal(ev.type, UPLOAD_FRAME_HEADER);
    assert_int_equal(ev.len, 0);
    upload_frame_free(&f);
}

static void test_big_body_counts(void **state)
{
    /* A body larger than any buffer: DATA events only point into the input. */
    unsigned char hdr[8];
    static unsigned char chunk[65536];
    upload_frame_t f;
    upload_frame_ev_t ev;
    uint64_t total = (uint64_t)5 << 30, seen = 0;

    upload_frame_init(&f, 64);
    size_t n = frame(hdr, 1, "x", "");
    assert_int_equal(upload_frame_feed(&f, hdr, n, &ev), (long)n);
    assert_int_equal(ev.type, UPLOAD_FRAME_HEADER);
    upload_frame_body(&f, total);
    for (int i = 0; i < 1000; i++) {
        assert_int_equal(upload_frame_feed(&f, chunk, sizeof(chunk), &ev), (long)sizeof(chunk));
        assert_int_equal(ev.type, UPLOAD_FRAME_DATA);
        assert_ptr_equal(ev.data, chunk);
        seen += ev.len;
    }
    assert_int_equal(upload_frame_body_left(&f), total - seen);
    upload_frame_free(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_frame),
        cmocka_unit_test(test_many_frames_any_chunking),
        cmocka_unit_test(test_empty_body_ends_without_more_input),
        cmocka_unit_test(test_body_left_and_idle),
        cmocka_unit_test(test_negative_length),
        cmocka_unit_test(test_length_over_max),
        cmocka_unit_test(test_error_is_sticky),
        cmocka_unit_test(test_header_zero_length),
        cmocka_unit_test(test_big_body_counts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
