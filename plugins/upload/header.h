/*
 * The upload protocol's JSON header and reply frames. Pure functions (jansson for JSON,
 * no I/O), unit tested and fuzzed on their own.
 *
 * A header is `{"cmd": "put", "file_name": NAME, "file_size": N}` with optional "md5" and
 * "sha256" as hex strings; other keys are ignored.
 */
#ifndef BERTH_UPLOAD_HEADER_H
#define BERTH_UPLOAD_HEADER_H

#include <stddef.h>
#include <stdint.h>

#define UPLOAD_NAME_MAX 255
/* Temporary files in the upload dir start with this; clients may not use it. */
#define UPLOAD_TMP_PREFIX ".berth-upload."

typedef enum upload_header_status {
    UPLOAD_HEADER_OK = 0,
    /* The header is well formed and its body length known, but the file is refused (a bad
     * name or digest): answer with an error and skip the body; the connection goes on. */
    UPLOAD_HEADER_REJECT = 1,
    /* Not JSON, not a "put", or no usable file_size: the body length is unknown, so the
     * stream cannot be followed further. Answer with an error and close. */
    UPLOAD_HEADER_BAD = 2,
} upload_header_status_t;

typedef struct upload_header {
    char name[UPLOAD_NAME_MAX + 1]; /* valid only when OK: a checked, NUL-free name */
    /* file_name as the client sent it when it was a string (MAY hold NULs; NULL if absent or
     * not a string), for the reply. Owned: free with upload_header_clear(). */
    char *raw_name;
    size_t raw_name_len;
    uint64_t size; /* valid for OK and REJECT */
    int has_md5, has_sha256;
    int reply_each; /* "reply": "each": the client reads each reply before going on */
    unsigned char md5[16];
    unsigned char sha256[32];
    char error[160]; /* REJECT / BAD: why, for a person */
} upload_header_t;

/* Parse a header. Never fails silently: on REJECT or BAD h->error says why. Call
 * upload_header_clear() afterwards whatever it returns. */
upload_header_status_t upload_header_parse(const void *json, size_t len, upload_header_t *h);
void upload_header_clear(upload_header_t *h);

/* 0 if `name` (len bytes, may hold NULs) is an acceptable file name, else -1 with the
 * reason in `why` (a static string). Refused besides paths, `.`, `..` and the temporary
 * prefix: C0 and C1 controls, DEL, bytes that are not UTF-8, and invisible format characters
 * (bidirectional overrides and isolates, zero-width characters, U+2028/9, the BOM...: see
 * upload_name_find_invisible), for which `why` is UPLOAD_NAME_INVISIBLE. */
int upload_name_check(const char *name, size_t len, const char **why);

#define UPLOAD_NAME_INVISIBLE                                                                      \
    "file name holds an invisible or bidirectional format character, which would make it read "    \
    "as another name"

/* The byte offset of the first invisible format character (Unicode Cf, Zl, Zp) in `name`,
 * its code point in *cp; -1 if there is none, -2 if `name` is not valid UTF-8. */
int upload_name_find_invisible(const char *name, size_t len, uint32_t *cp);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void upload_hex(const unsigned char *bytes, size_t n, char *out);

/*
 * A reply frame (4-byte little-endian length, then compact JSON) in a malloc()ed buffer:
 *   ok:    {"status":"ok","file_name":NAME,"size":N,"sha256":HEX}
 *   error: {"status":"error","file_name":NAME|null,"error":MSG}
 * `name` MAY be NULL (JSON null). Returns NULL on -ENOMEM.
 */
unsigned char *upload_reply_ok(const char *name, size_t name_len, uint64_t size,
                               const char *sha256_hex, size_t *frame_len);
unsigned char *upload_reply_error(const char *name, size_t name_len, const char *msg,
                                  size_t *frame_len);

#endif
