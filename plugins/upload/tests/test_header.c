/* Unit tests for the upload header parser, name rules and reply frames (header.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <jansson.h>

#include "header.h"

static upload_header_status_t parse(const char *json, upload_header_t *h)
{
    return upload_header_parse(json, strlen(json), h);
}

static void expect(const char *json, upload_header_status_t want, const char *why_part)
{
    upload_header_t h;
    upload_header_status_t st = parse(json, &h);
    if (st != want || (why_part && strstr(h.error, why_part) == NULL))
        fail_msg("%s: got status %d (%s), want %d (%s)", json, st, h.error, want,
                 why_part ? why_part : "");
    upload_header_clear(&h);
}

static void test_seed_header(void **state)
{
    /* Exactly what the seed's client sends: json.dumps() with its default separators. */
    upload_header_t h;
    assert_int_equal(parse("{\"cmd\": \"put\", \"file_name\": \"a.txt\", \"file_size\": 42}", &h),
                     UPLOAD_HEADER_OK);
    assert_string_equal(h.name, "a.txt");
    assert_int_equal(h.size, 42);
    assert_false(h.has_md5);
    assert_false(h.has_sha256);
    upload_header_clear(&h);
}

static void test_digests(void **state)
{
    upload_header_t h;
    const char *json =
        "{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":0,"
        "\"md5\":\"D41D8CD98F00B204E9800998ECF8427E\","
        "\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"}";
    assert_int_equal(parse(json, &h), UPLOAD_HEADER_OK);
    assert_true(h.has_md5);
    assert_true(h.has_sha256);
    assert_int_equal(h.md5[0], 0xd4);
    assert_int_equal(h.md5[15], 0x7e);
    assert_int_equal(h.sha256[0], 0xe3);
    assert_int_equal(h.sha256[31], 0x55);
    upload_header_clear(&h);

    /* null is the same as absent; other keys are ignored. */
    assert_int_equal(parse("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,\"md5\":null,"
                           "\"extra\":[1,2]}",
                           &h),
                     UPLOAD_HEADER_OK);
    assert_false(h.has_md5);
    upload_header_clear(&h);

    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,\"md5\":\"abc\"}",
           UPLOAD_HEADER_REJECT, "md5");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,"
           "\"md5\":\"g41d8cd98f00b204e9800998ecf8427e\"}",
           UPLOAD_HEADER_REJECT, "md5");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,\"sha256\":5}",
           UPLOAD_HEADER_REJECT, "sha256");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,"
           "\"sha256\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b85\"}",
           UPLOAD_HEADER_REJECT, "sha256");
}

static void test_bad_headers_close(void **state)
{
    expect("", UPLOAD_HEADER_BAD, "not valid JSON");
    expect("{", UPLOAD_HEADER_BAD, "not valid JSON");
    expect("\xff\xfe", UPLOAD_HEADER_BAD, "not valid JSON");
    expect("[1,2]", UPLOAD_HEADER_BAD, "not a JSON object");
    expect("\"put\"", UPLOAD_HEADER_BAD, NULL);
    expect("{\"file_name\":\"x\",\"file_size\":1}", UPLOAD_HEADER_BAD, "cmd");
    expect("{\"cmd\":\"get\",\"file_name\":\"x\",\"file_size\":1}", UPLOAD_HEADER_BAD,
           "unknown command");
    expect("{\"cmd\":\"put\\u0000\",\"file_name\":\"x\",\"file_size\":1}", UPLOAD_HEADER_BAD,
           "unknown command");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\"}", UPLOAD_HEADER_BAD, "file_size");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":\"1\"}", UPLOAD_HEADER_BAD,
           "file_size");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1.5}", UPLOAD_HEADER_BAD,
           "file_size");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":-1}", UPLOAD_HEADER_BAD, "negative");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":99999999999999999999}",
           UPLOAD_HEADER_BAD, "not valid JSON");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1,\"file_size\":2}",
           UPLOAD_HEADER_BAD, "duplicate");
    expect("{\"cmd\":\"put\",\"file_name\":\"x\",\"file_size\":1} trailing", UPLOAD_HEADER_BAD,
           "not valid JSON");
}

static void test_error_text_is_printable(void **state)
{
    upload_header_t h;
    assert_int_equal(parse("\x01\x80 junk", &h), UPLOAD_HEADER_BAD);
    for (const char *p = h.error; *p; p++)
        assert_true(*p >= 0x20 && *p <= 0x7e);
    upload_header_clear(&h);
}

/* Issue 9 #6: names that would read as another name. */
static void test_invisible_names(void **state)
{
    /* Every code point refused, as JSON escapes (what json.dumps sends) and raw UTF-8. */
    static const unsigned bad[] = {
        0x202A, 0x202B, 0x202C,  0x202D,  0x202E, /* embeddings and overrides */
        0x2066, 0x2067, 0x2068,  0x2069,          /* isolates */
        0x200B, 0x200C, 0x200D,  0x200E,  0x200F, /* zero width, LRM, RLM */
        0x2028, 0x2029, 0xFEFF,  0x061C,  0x00AD,  0x2060,  0x2064,  0x206F,  0x180E,
        0xFFF9, 0x0600, 0x110BD, 0x1D173, 0xE0001, 0xE0041, 0xE007F, 0x1343F,
    };
    char json[200], want[40];

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        unsigned cp = bad[i];
        if (cp >= 0x10000) {
            unsigned v = cp - 0x10000;
            snprintf(json, sizeof(json),
                     "{\"cmd\":\"put\",\"file_name\":\"abc\\u%04X\\u%04Xtxt.exe\","
                     "\"file_size\":1}",
                     0xD800 + (v >> 10), 0xDC00 + (v & 0x3ff));
        } else {
            snprintf(json, sizeof(json),
                     "{\"cmd\":\"put\",\"file_name\":\"abc\\u%04Xtxt.exe\",\"file_size\":1}", cp);
        }
        snprintf(want, sizeof(want), "U+%04X at byte 3", cp);
        expect(json, UPLOAD_HEADER_REJECT, want);
        expect(json, UPLOAD_HEADER_REJECT, "invisible or bidirectional");
    }
    /* Raw UTF-8 for U+202E (E2 80 AE), and upload_name_check() on its own. */
    expect("{\"cmd\":\"put\",\"file_name\":\"x\xe2\x80\xaegpj.exe\",\"file_size\":1}",
           UPLOAD_HEADER_REJECT, "U+202E at byte 1");
    const char *why = NULL;
    assert_int_equal(upload_name_check("a\xef\xbb\xbf", 4, &why), -1);
    assert_string_equal(why, UPLOAD_NAME_INVISIBLE);
    /* Not UTF-8 (jansson refuses it first; the check stands on its own too). */
    assert_int_equal(upload_name_check("a\xc0\xaf", 3, &why), -1);
    assert_non_null(strstr(why, "UTF-8"));
    assert_int_equal(upload_name_check("\xed\xa0\x80", 3, &why), -1);
    assert_int_equal(upload_name_check("\xe2\x80", 2, &why), -1);

    /* Visible neighbours stay fine: letters of many scripts, emoji, a hyphen, NBSP. */
    const char *good[] = {"r\xc3\xa9sum\xc3\xa9.pdf",
                          "\xe6\x96\x87\xe4\xbb\xb6.txt",
                          "\xd8\xb9\xd8\xb1\xd8\xa8\xd9\x8a.txt",
                          "\xf0\x9f\x98\x80.png",
                          "a\xe2\x80\x90"
                          "b",
                          "a\xc2\xa0"
                          "b",
                          "\xe2\x80\xaf",
                          "x\xe2\x81\xb0"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        uint32_t cp;
        if (upload_name_check(good[i], strlen(good[i]), &why) != 0)
            fail_msg("%s refused: %s", good[i], why);
        assert_int_equal(upload_name_find_invisible(good[i], strlen(good[i]), &cp), -1);
    }
}

static void test_names(void **state)
{
    char name[300], json[400];

    expect("{\"cmd\":\"put\",\"file_name\":\"../etc/passwd\",\"file_size\":1}",
           UPLOAD_HEADER_REJECT, "/");
    expect("{\"cmd\":\"put\",\"file_name\":\"/etc/passwd\",\"file_size\":1}", UPLOAD_HEADER_REJECT,
           "/");
    expect("{\"cmd\":\"put\",\"file_name\":\"a/b\",\"file_size\":1}", UPLOAD_HEADER_REJECT, "/");
    expect("{\"cmd\":\"put\",\"file_name\":\"..\",\"file_size\":1}", UPLOAD_HEADER_REJECT, "..");
    expect("{\"cmd\":\"put\",\"file_name\":\".\",\"file_size\":1}", UPLOAD_HEADER_REJECT, "..");
    expect("{\"cmd\":\"put\",\"file_name\":\"\",\"file_size\":1}", UPLOAD_HEADER_REJECT, "empty");
    expect("{\"cmd\":\"put\",\"file_name\":\"a\\u0000b\",\"file_size\":1}", UPLOAD_HEADER_REJECT,
           "NUL");
    expect("{\"cmd\":\"put\",\"file_name\":\"a\\nb\",\"file_size\":1}", UPLOAD_HEADER_REJECT,
           "control");
    expect("{\"cmd\":\"put\",\"file_name\":\"a\\u007fb\",\"file_size\":1}", UPLOAD_HEADER_REJECT,
           "control");
    expect("{\"cmd\":\"put\",\"file_name\":\"a\\u0085b\",\"file_size\":1}", UPLOAD_HEADER_REJECT,
           "control");
    expect("{\"cmd\":\"put\",\"file_name\":\".berth-upload.abc\",\"file_size\":1}",
           UPLOAD_HEADER_REJECT, "reserved");
    expect("{\"cmd\":\"put\",\"file_name\":3,\"file_size\":1}", UPLOAD_HEADER_REJECT, "file_name");
    expect("{\"cmd\":\"put\",\"file_size\":1}", UPLOAD_HEADER_REJECT, "file_name");

    /* Names that are fine: dots inside, UTF-8 (json.dumps escapes it), 255 bytes. */
    expect("{\"cmd\":\"put\",\"file_name\":\"..a\",\"file_size\":1}", UPLOAD_HEADER_OK, NULL);
    expect("{\"cmd\":\"put\",\"file_name\":\".hidden\",\"file_size\":1}", UPLOAD_HEADER_OK, NULL);
    expect("{\"cmd\":\"put\",\"file_name\":\"\\u6587\\u4ef6.txt\",\"file_size\":1}",
           UPLOAD_HEADER_OK, NULL);
    memset(name, 'n', 255);
    name[255] = '\0';
    snprintf(json, sizeof(json), "{\"cmd\":\"put\",\"file_name\":\"%s\",\"file_size\":1}", name);
    expect(json, UPLOAD_HEADER_OK, NULL);
    name[255] = 'n';
    name[256] = '\0';
    snprintf(json, sizeof(json), "{\"cmd\":\"put\",\"file_name\":\"%s\",\"file_size\":1}", name);
    expect(json, UPLOAD_HEADER_REJECT, "255");
}

static void test_reject_keeps_size_and_raw_name(void **state)
{
    upload_header_t h;
    assert_int_equal(parse("{\"cmd\":\"put\",\"file_name\":\"a/\\u0000\",\"file_size\":7}", &h),
                     UPLOAD_HEADER_REJECT);
    assert_int_equal(h.size, 7);
    assert_int_equal(h.raw_name_len, 3);
    assert_memory_equal(h.raw_name, "a/\0", 3);
    upload_header_clear(&h);
}

/* Decode a reply frame back into JSON. */
static json_t *unframe(const unsigned char *f, size_t len)
{
    assert_true(len >= 4);
    uint32_t n = (uint32_t)f[0] | (uint32_t)f[1] << 8 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 24;
    assert_int_equal(n, len - 4);
    json_error_t e;
    json_t *j = json_loadb((const char *)f + 4, n, JSON_ALLOW_NUL, &e);
    assert_non_null(j);
    return j;
}

static void test_replies(void **state)
{
    size_t len;
    const char *hex = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
    unsigned char *f = upload_reply_ok("a b.txt", 7, 1234, hex, &len);
    assert_non_null(f);
    json_t *j = unframe(f, len);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "ok");
    assert_string_equal(json_string_value(json_object_get(j, "file_name")), "a b.txt");
    assert_int_equal(json_integer_value(json_object_get(j, "size")), 1234);
    assert_string_equal(json_string_value(json_object_get(j, "sha256")), hex);
    json_decref(j);
    free(f);

    f = upload_reply_error(NULL, 0, "bad \"header\"", &len);
    assert_non_null(f);
    j = unframe(f, len);
    assert_string_equal(json_string_value(json_object_get(j, "status")), "error");
    assert_true(json_is_null(json_object_get(j, "file_name")));
    assert_string_equal(json_string_value(json_object_get(j, "error")), "bad \"header\"");
    json_decref(j);
    free(f);

    /* A raw name with a NUL survives (escaped); one that is not UTF-8 becomes null. */
    f = upload_reply_error("a\0b", 3, "x", &len);
    j = unframe(f, len);
    assert_int_equal(json_string_length(json_object_get(j, "file_name")), 3);
    json_decref(j);
    free(f);
    f = upload_reply_error("\xff", 1, "x", &len);
    j = unframe(f, len);
    assert_true(json_is_null(json_object_get(j, "file_name")));
    json_decref(j);
    free(f);
}

static void test_hex(void **state)
{
    char out[7];
    upload_hex((const unsigned char *)"\x00\xab\xff", 3, out);
    assert_string_equal(out, "00abff");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_seed_header),
        cmocka_unit_test(test_digests),
        cmocka_unit_test(test_bad_headers_close),
        cmocka_unit_test(test_error_text_is_printable),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_reject_keeps_size_and_raw_name),
        cmocka_unit_test(test_replies),
        cmocka_unit_test(test_invisible_names),
        cmocka_unit_test(test_hex),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
