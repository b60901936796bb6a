/*
 * Putting one uploaded file on disk, safely: a temporary file created with O_EXCL in the
 * upload dir (opened by fd: nothing here ever resolves a path outside it, and no symlink is
 * followed), hashed as it is written, verified, fsync()ed, renamed into place (without ever
 * replacing an existing name when overwrite is off, even in a race), and the dir fsync()ed.
 * Every failure removes the temporary file.
 *
 * These calls block on the disk: the plugin runs them off the loop thread. A store is used by
 * one thread at a time.
 */
#ifndef BERTH_UPLOAD_STORE_H
#define BERTH_UPLOAD_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "header.h"

typedef struct evp_md_ctx_st upload_md_ctx_t; /* OpenSSL's EVP_MD_CTX */

/* With writeback set, the step in which written bytes are handed to the disk, and how many
 * steps may be in flight (started, not yet waited for) behind the one just started before the
 * writer waits for the oldest; 0: never wait, the commit's fsync waits for them all. Both can
 * be set with -D for an A/B build. Waiting (lag 1, then 8) cost more than it saved at 8
 * uploads of 1 GiB at once (bench/README.md, sixth pass): a wait holds a pool thread the
 * other uploads' writes need for as long as the disk takes with all eight files in flight.
 * What an upload leaves in the page cache is bounded by the kernel's dirty limits instead
 * (pages under writeback count against them, and a writer over them is throttled in its
 * pwrite). */
#ifndef UPLOAD_WRITEBACK_STEP
#define UPLOAD_WRITEBACK_STEP ((uint64_t)8 << 20)
#endif
#ifndef UPLOAD_WRITEBACK_LAG
#define UPLOAD_WRITEBACK_LAG 0
#endif

/* Disk is reserved at most this far ahead of the bytes written. */
#define UPLOAD_PREALLOC_STEP ((uint64_t)8 << 20)

typedef struct upload_store {
    int dirfd; /* borrowed: the upload dir */
    int fd;    /* the temporary file, or -1 */
    char tmp[sizeof(UPLOAD_TMP_PREFIX) + 32];
    uint64_t written;
    uint64_t size;     /* the size announced: disk is never reserved past it */
    uint64_t reserved; /* bytes from 0 reserved with fallocate so far */
    /* Set by the caller when the commit will fsync: every UPLOAD_WRITEBACK_STEP bytes the
     * kernel is asked to start writing them out (sync_file_range, without waiting), so the
     * disk works while the bytes arrive and the final fsync waits for what is still in
     * flight, not for the whole file (with UPLOAD_WRITEBACK_LAG > 0, the step that far
     * behind is also waited for). */
    int writeback;
    uint64_t flushed; /* bytes from 0 whose writeback has been started */
    upload_md_ctx_t *sha256;
    upload_md_ctx_t *md5; /* only when the client sent an md5 */
} upload_store_t;

/* A store that holds nothing yet (safe to discard). */
void upload_store_init(upload_store_t *s, int dirfd);

/*
 * Create the temporary file for `h`. With overwrite off, refuse early (-EEXIST) if the name
 * is already taken; commit checks again, atomically. `reserve` is the size announced: disk is
 * reserved (fallocate, where the file system has it) in steps of UPLOAD_PREALLOC_STEP ahead
 * of the bytes written, never all of it up front, so a header alone cannot fill a disk.
 * 0 or a negative errno; on error nothing is left behind.
 */
int upload_store_open(upload_store_t *s, const upload_header_t *h, int overwrite, uint64_t reserve);

/* Append and hash. 0 or a negative errno (the caller then discards). */
int upload_store_write(upload_store_t *s, const void *data, size_t len);

/* The two halves of upload_store_write(), which touch disjoint parts of the store and so MAY
 * run at the same time on two threads (never two of the same kind at once): append `len`
 * bytes, and hash them. Each in file order. 0 or a negative errno. */
int upload_store_append(upload_store_t *s, const void *data, size_t len);
int upload_store_hash(upload_store_t *s, const void *data, size_t len);

/*
 * Check size and digests against `h`, fsync (if do_fsync), rename into place, fsync the dir.
 * On success the file is stored, `sha256` holds its digest, and the store is empty. On error
 * (-EBADMSG for a digest mismatch with *why set, -EEXIST for a name taken meanwhile, or any
 * errno of the disk) the temporary file is removed.
 */
int upload_store_commit(upload_store_t *s, const upload_header_t *h, int overwrite, int do_fsync,
                        unsigned char sha256[32], const char **why);

/* Close and remove the temporary file, if any. Idempotent. */
void upload_store_discard(upload_store_t *s);

/* Remove the temporary files that no store holds any more: those of a worker that was killed
 * (SIGKILL, a crash) before it could remove them. A store holds its file with an exclusive
 * flock(2) from creation to commit or discard, so a file nobody has locked is a leftover.
 * The number removed, or a negative errno if dirfd cannot be read. */
int upload_store_sweep(int dirfd);

#endif
