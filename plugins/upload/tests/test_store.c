/* Unit tests for putting uploads on disk (store.c), on a real temporary directory. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "store.h"

typedef struct fixture {
    char dir[64];
    char outside[64]; /* a second dir, standing for "anywhere but the upload dir" */
    int dirfd;
} fixture_t;

static void rm_tree(const char *path)
{
    DIR *d = opendir(path);
    if (d == NULL)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char p[512];
        snprintf(p, sizeof(p), "%s/%s", path, e->d_name);
        unlink(p);
    }
    closedir(d);
    rmdir(path);
}

static int setup(void **state)
{
    fixture_t *fx = calloc(1, sizeof(*fx));
    strcpy(fx->dir, "/tmp/upload-store-XXXXXX");
    strcpy(fx->outside, "/tmp/upload-outside-XXXXXX");
    if (mkdtemp(fx->dir) == NULL || mkdtemp(fx->outside) == NULL)
        return -1;
    fx->dirfd = open(fx->dir, O_RDONLY | O_DIRECTORY);
    *state = fx;
    return fx->dirfd < 0 ? -1 : 0;
}

static int teardown(void **state)
{
    fixture_t *fx = *state;
    close(fx->dirfd);
    rm_tree(fx->dir);
    rm_tree(fx->outside);
    free(fx);
    return 0;
}

/* The names in dir, sorted, joined by spaces ("" when empty). */
static void listing(const char *dir, char *out, size_t size)
{
    struct dirent **names;
    int n = scandir(dir, &names, NULL, alphasort);
    assert_true(n >= 0);
    out[0] = '\0';
    for (int i = 0; i < n; i++) {
        if (strcmp(names[i]->d_name, ".") != 0 && strcmp(names[i]->d_name, "..") != 0) {
            if (out[0])
                strncat(out, " ", size - strlen(out) - 1);
            strncat(out, names[i]->d_name, size - strlen(out) - 1);
        }
        free(names[i]);
    }
    free(names);
}

static void assert_listing(const char *dir, const char *want)
{
    char got[1024];
    listing(dir, got, sizeof(got));
    assert_string_equal(got, want);
}

static void read_file(const char *dir, const char *name, char *out, size_t size)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "rb");
    assert_non_null(f);
    size_t n = fread(out, 1, size - 1, f);
    out[n] = '\0';
    fclose(f);
}

static void write_file(const char *dir, const char *name, const char *text)
{
    char p[512];
    snprintf(p, sizeof(p), "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

static void header(upload_header_t *h, const char *name, const char *body)
{
    unsigned int n;
    memset(h, 0, sizeof(*h));
    strcpy(h->name, name);
    h->size = strlen(body);
    EVP_Digest(body, strlen(body), h->sha256, &n, EVP_sha256(), NULL);
    EVP_Digest(body, strlen(body), h->md5, &n, EVP_md5(), NULL);
    h->has_sha256 = h->has_md5 = 1;
}

/* Store body (written in two pieces) under name; returns commit's result. */
static int store(fixture_t *fx, upload_header_t *h, const char *body, int overwrite,
                 const char **why)
{
    upload_store_t s;
    unsigned char sha[32];
    upload_store_init(&s, fx->dirfd);
    int r = upload_store_open(&s, h, overwrite, h->size);
    if (r != 0)
        return r;
    size_t half = strlen(body) / 2;
    assert_int_equal(upload_store_write(&s, body, half), 0);
    assert_int_equal(upload_store_write(&s, body + half, strlen(body) - half), 0);
    r = upload_store_commit(&s, h, overwrite, 1, sha, why);
    if (r == 0)
        assert_memory_equal(sha, h->sha256, 32);
    upload_store_discard(&s); /* idempotent: a no-op after commit */
    return r;
}

static void test_store_and_verify(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    const char *why;
    char got[64];

    header(&h, "hello.txt", "hello, world\n");
    assert_int_equal(store(fx, &h, "hello, world\n", 0, &why), 0);
    assert_listing(fx->dir, "hello.txt");
    read_file(fx->dir, "hello.txt", got, sizeof(got));
    assert_string_equal(got, "hello, world\n");

    header(&h, "empty", "");
    assert_int_equal(store(fx, &h, "", 0, &why), 0);
    assert_listing(fx->dir, "empty hello.txt");

    /* Appending and hashing as separate steps (the plugin runs them on two threads). */
    upload_store_t s;
    unsigned char sha[32];
    header(&h, "split", "one two three");
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, h.size), 0);
    assert_int_equal(upload_store_append(&s, "one ", 4), 0);
    assert_int_equal(upload_store_hash(&s, "one ", 4), 0);
    assert_int_equal(upload_store_hash(&s, "two three", 9), 0);
    assert_int_equal(upload_store_append(&s, "two three", 9), 0);
    assert_int_equal(upload_store_commit(&s, &h, 0, 1, sha, &why), 0);
    assert_memory_equal(sha, h.sha256, 32);
    read_file(fx->dir, "split", got, sizeof(got));
    assert_string_equal(got, "one two three");
}

static void test_temporary_is_hidden_until_commit(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    upload_store_t s;
    char got[256];

    header(&h, "f", "abc");
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, 3), 0);
    listing(fx->dir, got, sizeof(got));
    assert_int_equal(strncmp(got, UPLOAD_TMP_PREFIX, strlen(UPLOAD_TMP_PREFIX)), 0);
    assert_null(strchr(got, ' '));
    upload_store_discard(&s);
    assert_listing(fx->dir, "");
}

static void test_digest_mismatch_leaves_nothing(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    const char *why;

    header(&h, "f", "abc");
    h.sha256[0] ^= 1;
    assert_int_equal(store(fx, &h, "abc", 0, &why), -EBADMSG);
    assert_non_null(strstr(why, "sha256"));
    assert_listing(fx->dir, "");

    header(&h, "f", "abc");
    h.md5[5] ^= 1;
    assert_int_equal(store(fx, &h, "abc", 0, &why), -EBADMSG);
    assert_non_null(strstr(why, "md5"));
    assert_listing(fx->dir, "");

    /* Fewer bytes than declared. */
    header(&h, "f", "abc");
    h.size = 4;
    assert_int_equal(store(fx, &h, "abc", 0, &why), -EBADMSG);
    assert_listing(fx->dir, "");
}

static void test_no_overwrite(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    upload_store_t s;
    const char *why;
    unsigned char sha[32];
    char got[64];

    write_file(fx->dir, "taken", "old");
    header(&h, "taken", "new");
    assert_int_equal(store(fx, &h, "new", 0, &why), -EEXIST);
    assert_listing(fx->dir, "taken");

    /* The name is taken after the upload started: commit still refuses, atomically. */
    header(&h, "late", "new");
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, 3), 0);
    assert_int_equal(upload_store_write(&s, "new", 3), 0);
    write_file(fx->dir, "late", "raced");
    assert_int_equal(upload_store_commit(&s, &h, 0, 1, sha, &why), -EEXIST);
    assert_listing(fx->dir, "late taken");
    read_file(fx->dir, "late", got, sizeof(got));
    assert_string_equal(got, "raced");

    /* overwrite = yes replaces it. */
    header(&h, "taken", "new");
    assert_int_equal(store(fx, &h, "new", 1, &why), 0);
    read_file(fx->dir, "taken", got, sizeof(got));
    assert_string_equal(got, "new");
    assert_listing(fx->dir, "late taken");
}

static void test_symlinks_are_not_followed(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    const char *why;
    char target[256], link[256], got[64];

    /* A symlink under the file's name, pointing out of the dir. */
    snprintf(target, sizeof(target), "%s/victim", fx->outside);
    write_file(fx->outside, "victim", "precious");
    snprintf(link, sizeof(link), "%s/evil", fx->dir);
    assert_int_equal(symlink(target, link), 0);

    header(&h, "evil", "payload");
    assert_int_equal(store(fx, &h, "payload", 0, &why), -EEXIST);
    read_file(fx->outside, "victim", got, sizeof(got));
    assert_string_equal(got, "precious");

    /* With overwrite the link itself is replaced; its target is untouched. */
    assert_int_equal(store(fx, &h, "payload", 1, &why), 0);
    read_file(fx->outside, "victim", got, sizeof(got));
    assert_string_equal(got, "precious");
    struct stat st;
    assert_int_equal(lstat(link, &st), 0);
    assert_true(S_ISREG(st.st_mode));
    assert_listing(fx->dir, "evil");
}

static void test_directory_in_the_way(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    const char *why;
    char p[256];

    snprintf(p, sizeof(p), "%s/sub", fx->dir);
    assert_int_equal(mkdir(p, 0755), 0);
    header(&h, "sub", "x");
    assert_int_not_equal(store(fx, &h, "x", 1, &why), 0);
    assert_listing(fx->dir, "sub");
    rmdir(p);
}

static void test_write_error_cleans_up(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    upload_store_t s;
    struct rlimit old, lim = {4096, 4096};
    static char big[8192];

    /* The file size limit stands in for a full disk: a real write error, mid-file. */
    signal(SIGXFSZ, SIG_IGN);
    getrlimit(RLIMIT_FSIZE, &old);
    lim.rlim_max = old.rlim_max;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
    memset(big, 'x', sizeof(big));
    header(&h, "big", "");
    h.size = sizeof(big);
    h.has_sha256 = h.has_md5 = 0;
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, 0), 0);
    int r = upload_store_write(&s, big, sizeof(big));
    setrlimit(RLIMIT_FSIZE, &old);
    assert_int_equal(r, -EFBIG);
    upload_store_discard(&s);
    assert_listing(fx->dir, "");
}

/* Issue 9 #2: a header announcing a big file reserves a step of disk, not the file. */
static void test_reserve_in_steps(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    upload_store_t s;
    struct stat st;
    static char chunk[1 << 20];

    header(&h, "huge", "");
    h.size = (uint64_t)64 << 30; /* 64 GiB: far more than /tmp has */
    h.has_sha256 = h.has_md5 = 0;
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, h.size), 0);
    assert_int_equal(fstat(s.fd, &st), 0);
    assert_true((uint64_t)st.st_blocks * 512 <= UPLOAD_PREALLOC_STEP + 65536);
    /* Bytes arriving move the reservation along, a step ahead at most. */
    for (int i = 0; i < 20; i++) {
        assert_int_equal(upload_store_write(&s, chunk, sizeof(chunk)), 0);
        assert_int_equal(fstat(s.fd, &st), 0);
        assert_true((uint64_t)st.st_blocks * 512 <= s.written + UPLOAD_PREALLOC_STEP + 65536);
    }
    assert_true(s.reserved >= s.written);
    upload_store_discard(&s);
    assert_listing(fx->dir, "");
}

/* Issue 20: with writeback on, each whole step is handed to the disk as it is written (so the
 * commit's fsync has little left), and the file stored is still exactly the bytes sent. */
static void test_writeback_in_steps(void **state)
{
    fixture_t *fx = *state;
    upload_header_t h;
    upload_store_t s;
    unsigned char sha[32];
    const char *why = NULL;
    static unsigned char chunk[1 << 20];
    unsigned int n;

    header(&h, "streamed", "");
    h.has_md5 = 0;
    h.size = 20 * sizeof(chunk);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    assert_non_null(md);
    assert_int_equal(EVP_DigestInit_ex(md, EVP_sha256(), NULL), 1);
    upload_store_init(&s, fx->dirfd);
    assert_int_equal(upload_store_open(&s, &h, 0, h.size), 0);
    s.writeback = 1;
    for (int i = 0; i < 20; i++) {
        memset(chunk, 'a' + i, sizeof(chunk));
        assert_int_equal(EVP_DigestUpdate(md, chunk, sizeof(chunk)), 1);
        assert_int_equal(upload_store_write(&s, chunk, sizeof(chunk)), 0);
        /* Never more than a step behind (unless the file system has no sync_file_range). */
        if (s.writeback)
            assert_true(s.written - s.flushed < UPLOAD_WRITEBACK_STEP);
    }
    if (s.writeback)
        assert_int_equal(s.flushed, 2 * UPLOAD_WRITEBACK_STEP);
    assert_int_equal(EVP_DigestFinal_ex(md, h.sha256, &n), 1);
    EVP_MD_CTX_free(md);
    assert_int_equal(upload_store_commit(&s, &h, 0, 1, sha, &why), 0);
    assert_memory_equal(sha, h.sha256, 32);
    struct stat st;
    assert_int_equal(fstatat(fx->dirfd, "streamed", &st, 0), 0);
    assert_int_equal(st.st_size, 20 * sizeof(chunk));
    assert_listing(fx->dir, "streamed");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_store_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_temporary_is_hidden_until_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_digest_mismatch_leaves_nothing, setup, teardown),
        cmocka_unit_test_setup_teardown(test_no_overwrite, setup, teardown),
        cmocka_unit_test_setup_teardown(test_symlinks_are_not_followed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_directory_in_the_way, setup, teardown),
        cmocka_unit_test_setup_teardown(test_write_error_cleans_up, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reserve_in_steps, setup, teardown),
        cmocka_unit_test_setup_teardown(test_writeback_in_steps, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
