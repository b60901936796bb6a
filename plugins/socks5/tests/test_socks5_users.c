/* Unit tests for the users file and password check (socks5_users.c), with real crypt(3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "socks5_users.h"

static char dir[] = "/tmp/test_socks5_users.XXXXXX";

static int make_dir(void **state)
{
    return mkdtemp(dir) == NULL ? -1 : 0;
}

static int remove_dir(void **state)
{
    return rmdir(dir);
}

/* A hash of `password` in the format that `prefix` names ("$6$", "$y$"). */
static char *hash_of(const char *prefix, const char *password)
{
    struct crypt_data cd;
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    const char *h;

    memset(&cd, 0, sizeof(cd));
    assert_non_null(crypt_gensalt_rn(prefix, 0, NULL, 0, salt, sizeof(salt)));
    h = crypt_rn(password, salt, &cd, sizeof(cd));
    assert_non_null(h);
    return strdup(h);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");

    assert_non_null(f);
    assert_int_equal(fputs(text, f) >= 0, 1);
    assert_int_equal(fclose(f), 0);
}

static int verify(const socks5_users_t *u, const char *user, const char *pass, size_t plen)
{
    void *scratch = malloc(socks5_users_scratch_size());
    int ok;

    assert_non_null(scratch);
    ok = socks5_users_verify(u, (const uint8_t *)user, strlen(user), (const uint8_t *)pass, plen,
                             scratch);
    free(scratch);
    return ok;
}

static void test_load_and_verify(void **state)
{
    char path[128], text[1024], err[256];
    char *sha = hash_of("$6$", "s3cret"), *yes = hash_of("$y$", "pa ss:word");
    socks5_users_t *u;

    snprintf(path, sizeof(path), "%s/users", dir);
    /* Comments, blank lines, CRLF and trailing blanks are all fine. */
    snprintf(text, sizeof(text), "# comment\n\nalice:%s\r\nbob:%s   \n", sha, yes);
    write_file(path, text);

    assert_int_equal(socks5_users_load(path, &u, err, sizeof(err)), 0);
    assert_int_equal(u->count, 2);
    assert_string_equal(u->items[0].name, "alice");
    assert_string_equal(u->items[1].name, "bob");

    assert_int_equal(verify(u, "alice", "s3cret", 6), 1);
    assert_int_equal(verify(u, "bob", "pa ss:word", 10), 1);
    assert_int_equal(verify(u, "alice", "s3cre", 5), 0);
    assert_int_equal(verify(u, "alice", "s3cret!", 7), 0);
    assert_int_equal(verify(u, "alice", "pa ss:word", 10), 0);
    assert_int_equal(verify(u, "bob", "s3cret", 6), 0);
    assert_int_equal(verify(u, "alic", "s3cret", 6), 0);
    assert_int_equal(verify(u, "alicex", "s3cret", 6), 0);
    assert_int_equal(verify(u, "mallory", "s3cret", 6), 0);
    assert_int_equal(verify(u, "", "", 0), 0);
    /* A NUL would cut the password short for crypt: never a match. */
    assert_int_equal(verify(u, "alice", "s3cret\0junk", 11), 0);

    socks5_users_free(u);
    free(sha);
    free(yes);
    unlink(path);
}

static void expect_error(const char *text, const char *needle)
{
    char path[128], err[512];
    socks5_users_t *u = (socks5_users_t *)1;

    snprintf(path, sizeof(path), "%s/bad", dir);
    write_file(path, text);
    err[0] = '\0';
    assert_int_equal(socks5_users_load(path, &u, err, sizeof(err)), -EINVAL);
    assert_null(u);
    if (strstr(err, needle) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, needle);
    unlink(path);
}

static void test_bad_files(void **state)
{
    char *sha = hash_of("$6$", "x");
    char text[1024], longname[300];

    expect_error("", "no users");
    expect_error("# only a comment\n\n", "no users");
    expect_error("alice\n", ":1: expected name:hash");
    expect_error(":nohash\n", "expected name:hash");
    expect_error("alice:plaintext\n", "weak legacy");
    expect_error("alice:$1$saltsalt$2vnaRpHa6Jxjz5n83ok8Z0\n", "weak legacy");
    expect_error("alice:*\n", "not a crypt(3) hash");
    expect_error("alice:\n", "not a crypt(3) hash");
    snprintf(text, sizeof(text), "alice:%s\nbob:%s\nalice:%s\n", sha, sha, sha);
    expect_error(text, ":3: user 'alice' is listed twice");
    memset(longname, 'n', 256);
    longname[256] = '\0';
    snprintf(text, sizeof(text), "%s:%s\n", longname, sha);
    expect_error(text, "1 to 255 bytes");
    free(sha);
}

static void test_missing_file(void **state)
{
    char path[128], err[256];
    socks5_users_t *u;

    snprintf(path, sizeof(path), "%s/nope", dir);
    assert_int_equal(socks5_users_load(path, &u, err, sizeof(err)), -ENOENT);
    assert_null(u);
    assert_non_null(strstr(err, "nope"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_and_verify),
        cmocka_unit_test(test_bad_files),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, make_dir, remove_dir);
}
