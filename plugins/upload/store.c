/* Putting one uploaded file on disk: see store.h. */
#include "store.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

void upload_store_init(upload_store_t *s, int dirfd)
{
    memset(s, 0, sizeof(*s));
    s->dirfd = dirfd;
    s->fd = -1;
}

static void free_digests(upload_store_t *s)
{
    EVP_MD_CTX_free(s->sha256);
    EVP_MD_CTX_free(s->md5);
    s->sha256 = s->md5 = NULL;
}

void upload_store_discard(upload_store_t *s)
{
    if (s->fd >= 0) {
        close(s->fd);
        s->fd = -1;
    }
    if (s->tmp[0] != '\0') {
        unlinkat(s->dirfd, s->tmp, 0);
        s->tmp[0] = '\0';
    }
    free_digests(s);
}

static int digest_new(upload_md_ctx_t **ctx, const EVP_MD *md)
{
    *ctx = EVP_MD_CTX_new();
    if (*ctx == NULL || EVP_DigestInit_ex(*ctx, md, NULL) != 1)
        return -ENOMEM;
    return 0;
}

/* Does `name` in dirfd still name the file open as fd? */
static int still_linked(int dirfd, const char *name, int fd)
{
    struct stat a, b;
    return fstat(fd, &a) == 0 && fstatat(dirfd, name, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
           a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

static int create_temp(upload_store_t *s)
{
    /* A random name, created exclusively: an attacker who can guess it still cannot make us
     * open their file, and O_NOFOLLOW refuses a symlink planted under it. The file is held
     * with an exclusive flock for as long as it is ours, so a sweep (upload_store_sweep) can
     * tell the leftovers of a killed worker from files in use; a sweep that took the name
     * between our open and our lock has unlinked it, so that name is given up. */
    for (int tries = 0; tries < 16; tries++) {
        unsigned char rnd[12];
        char hex[2 * sizeof(rnd) + 1];
        if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
            return -errno ? -errno : -EIO;
        upload_hex(rnd, sizeof(rnd), hex);
        snprintf(s->tmp, sizeof(s->tmp), "%s%s", UPLOAD_TMP_PREFIX, hex);
        s->fd =
            openat(s->dirfd, s->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644);
        if (s->fd < 0) {
            int e = errno;
            s->tmp[0] = '\0';
            if (e != EEXIST)
                return -e;
            continue;
        }
        if (flock(s->fd, LOCK_EX) == 0 && still_linked(s->dirfd, s->tmp, s->fd))
            return 0;
        close(s->fd);
        s->fd = -1;
        s->tmp[0] = '\0';
    }
    return -EEXIST;
}

int upload_store_sweep(int dirfd)
{
    int removed = 0;
    int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    DIR *d = fdopendir(fd);
    if (d == NULL) {
        int e = errno;
        close(fd);
        return -e;
    }
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (strncmp(de->d_name, UPLOAD_TMP_PREFIX, sizeof(UPLOAD_TMP_PREFIX) - 1) != 0)
            continue;
        int f = openat(dirfd, de->d_name, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (f < 0)
            continue;
        struct stat st;
        /* Unlocked: nobody writes it, its worker died. Locked: a live upload's, left alone. */
        if (fstat(f, &st) == 0 && S_ISREG(st.st_mode) && flock(f, LOCK_EX | LOCK_NB) == 0 &&
            still_linked(dirfd, de->d_name, f) && unlinkat(dirfd, de->d_name, 0) == 0)
            removed++;
        close(f);
    }
    closedir(d);
    return removed;
}

/*
 * Reserve disk up to UPLOAD_PREALLOC_STEP bytes past what the next write needs (never past the
 * announced size), so a full disk is found within a step of where it happens, without a
 * header alone ever claiming more than a step: disk is used as bytes arrive.
 */
static int prealloc(upload_store_t *s, uint64_t need)
{
    if (s->reserved >= s->size || s->reserved >= s->written + need + UPLOAD_PREALLOC_STEP / 2)
        return 0;
    uint64_t to = s->written + need + UPLOAD_PREALLOC_STEP;
    if (to > s->size)
        to = s->size;
    if (to <= s->reserved || to > INT64_MAX)
        return 0;
    if (fallocate(s->fd, FALLOC_FL_KEEP_SIZE, (off_t)s->reserved, (off_t)(to - s->reserved)) != 0) {
        /* Only a real shortage of space is fatal; a file system without fallocate is fine. */
        if (errno == ENOSPC || errno == EDQUOT || errno == EFBIG)
            return -errno;
        s->reserved = s->size; /* not supported here: do not ask again */
        return 0;
    }
    s->reserved = to;
    return 0;
}

int upload_store_open(upload_store_t *s, const upload_header_t *h, int overwrite, uint64_t reserve)
{
    struct stat st;
    int r;

    if (!overwrite && fstatat(s->dirfd, h->name, &st, AT_SYMLINK_NOFOLLOW) == 0)
        return -EEXIST;
    if ((r = create_temp(s)) != 0)
        goto fail;
    if ((r = digest_new(&s->sha256, EVP_sha256())) != 0)
        goto fail;
    if (h->has_md5 && (r = digest_new(&s->md5, EVP_md5())) != 0)
        goto fail;
    s->size = reserve;
    if ((r = prealloc(s, 0)) != 0)
        goto fail;
    return 0;
fail:
    upload_store_discard(s);
    return r;
}

/*
 * Start writing out each whole UPLOAD_WRITEBACK_STEP as it is complete: SYNC_FILE_RANGE_WRITE
 * alone queues the pages' writes, waiting only for room in the disk's queue. The disk works
 * while bytes still arrive, and the commit's fsync waits for the writes in flight instead of
 * starting the whole file. With UPLOAD_WRITEBACK_LAG > 0 (an A/B build) the step that many
 * behind is also waited for. Only a hint: a file system without sync_file_range just leaves
 * it all to the fsync.
 */
static int writeback(upload_store_t *s)
{
    while (s->written - s->flushed >= UPLOAD_WRITEBACK_STEP) {
        off_t at = (off_t)s->flushed;
        if (sync_file_range(s->fd, at, (off_t)UPLOAD_WRITEBACK_STEP, SYNC_FILE_RANGE_WRITE) != 0) {
            if (errno == EIO || errno == ENOSPC)
                return -errno;
            s->writeback = 0; /* not supported here: the fsync does it all */
            return 0;
        }
        const off_t lag = (off_t)(UPLOAD_WRITEBACK_LAG * UPLOAD_WRITEBACK_STEP);
        if (UPLOAD_WRITEBACK_LAG > 0 && at >= lag &&
            sync_file_range(s->fd, at - lag, (off_t)UPLOAD_WRITEBACK_STEP,
                            SYNC_FILE_RANGE_WAIT_BEFORE | SYNC_FILE_RANGE_WRITE |
                                SYNC_FILE_RANGE_WAIT_AFTER) != 0 &&
            (errno == EIO || errno == ENOSPC))
            return -errno;
        s->flushed += UPLOAD_WRITEBACK_STEP;
    }
    return 0;
}

int upload_store_append(upload_store_t *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    size_t left = len;

    if (s->fd < 0)
        return -EBADF;
    int r = prealloc(s, len);
    if (r != 0)
        return r;
    while (left > 0) {
        ssize_t n = pwrite(s->fd, p, left, (off_t)s->written);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -EIO;
        p += n;
        left -= (size_t)n;
        s->written += (uint64_t)n;
    }
    return s->writeback ? writeback(s) : 0;
}

int upload_store_hash(upload_store_t *s, const void *data, size_t len)
{
    if (s->sha256 == NULL)
        return -EBADF;
    if (EVP_DigestUpdate(s->sha256, data, len) != 1 ||
        (s->md5 && EVP_DigestUpdate(s->md5, data, len) != 1))
        return -EIO;
    return 0;
}

int upload_store_write(upload_store_t *s, const void *data, size_t len)
{
    int r = upload_store_append(s, data, len);
    return r != 0 ? r : upload_store_hash(s, data, len);
}

static int place(upload_store_t *s, const char *name, int overwrite)
{
    if (overwrite)
        return renameat(s->dirfd, s->tmp, s->dirfd, name) == 0 ? 0 : -errno;
    /* Never replace: RENAME_NOREPLACE is atomic; where the file system lacks it, link() is
     * too (it fails on an existing name), then the temporary name goes. */
    if (renameat2(s->dirfd, s->tmp, s->dirfd, name, RENAME_NOREPLACE) == 0)
        return 0;
    if (errno != EINVAL && errno != ENOSYS)
        return -errno;
    if (linkat(s->dirfd, s->tmp, s->dirfd, name, 0) != 0)
        return -errno;
    unlinkat(s->dirfd, s->tmp, 0);
    return 0;
}

int upload_store_commit(upload_store_t *s, const upload_header_t *h, int overwrite, int do_fsync,
                        unsigned char sha256[32], const char **why)
{
    unsigned char md5[16];
    unsigned int n;
    int r;

    *why = NULL;
    if (s->fd < 0 || s->written != h->size) {
        *why = "file size does not match file_size";
        r = -EBADMSG;
        goto fail;
    }
    if (EVP_DigestFinal_ex(s->sha256, sha256, &n) != 1 || n != 32) {
        r = -EIO;
        goto fail;
    }
    if (h->has_sha256 && memcmp(sha256, h->sha256, 32) != 0) {
        *why = "sha256 does not match the file received";
        r = -EBADMSG;
        goto fail;
    }
    if (s->md5) {
        if (EVP_DigestFinal_ex(s->md5, md5, &n) != 1 || n != 16) {
            r = -EIO;
            goto fail;
        }
        if (memcmp(md5, h->md5, 16) != 0) {
            *why = "md5 does not match the file received";
            r = -EBADMSG;
            goto fail;
        }
    }
    if (do_fsync && fsync(s->fd) != 0) {
        r = -errno;
        goto fail;
    }
    r = close(s->fd);
    s->fd = -1;
    if (r != 0) {
        r = -errno;
        goto fail;
    }
    if ((r = place(s, h->name, overwrite)) != 0)
        goto fail;
    s->tmp[0] = '\0';
    /* The rename is durable only once the directory is. If that fails the caller is told
     * the file was not stored, so it must not stay under its name either. */
    if (do_fsync && fsync(s->dirfd) != 0) {
        r = -errno;
        unlinkat(s->dirfd, h->name, 0);
        goto fail;
    }
    free_digests(s);
    return 0;
fail:
    upload_store_discard(s);
    return r;
}
