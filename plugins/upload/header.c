/* The upload protocol's JSON header and reply frames: see header.h. */
#include "header.h"

#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void
set_error(upload_header_t *h, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->error, sizeof(h->error), fmt, ap);
    va_end(ap);
    /* jansson quotes the offending input in its messages: keep the reply printable ASCII. */
    for (char *p = h->error; *p; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p > 0x7e)
            *p = '?';
}

/*
 * Code points a name may not hold because a person cannot see them, or they reorder what
 * is seen: Unicode's format characters (general category Cf, as of Unicode 15: the
 * bidirectional embeddings, overrides and isolates U+202A..U+202E and U+2066..U+2069 that
 * make "txt.exe" of "exe.txt", zero-width spaces and joiners, the BOM, the soft hyphen,
 * tags...) and the line and paragraph separators U+2028/U+2029 (Zl, Zp). Sorted ranges.
 */
static const struct {
    uint32_t lo, hi;
} invisible[] = {
    {0x00AD, 0x00AD},   {0x0600, 0x0605},   {0x061C, 0x061C},   {0x06DD, 0x06DD},
    {0x070F, 0x070F},   {0x0890, 0x0891},   {0x08E2, 0x08E2},   {0x180E, 0x180E},
    {0x200B, 0x200F},   {0x2028, 0x202E},   {0x2060, 0x2064},   {0x2066, 0x206F},
    {0xFEFF, 0xFEFF},   {0xFFF9, 0xFFFB},   {0x110BD, 0x110BD}, {0x110CD, 0x110CD},
    {0x13430, 0x1343F}, {0x1BCA0, 0x1BCA3}, {0x1D173, 0x1D17A}, {0xE0001, 0xE0001},
    {0xE0020, 0xE007F},
};

static int is_invisible(uint32_t cp)
{
    size_t lo = 0, hi = sizeof(invisible) / sizeof(invisible[0]);
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (cp < invisible[mid].lo)
            hi = mid;
        else if (cp > invisible[mid].hi)
            lo = mid + 1;
        else
            return 1;
    }
    return 0;
}

/* Decode one UTF-8 sequence at s[0..len): its length, or 0 if it is not well formed
 * (overlong, a surrogate, past U+10FFFF, truncated). */
static size_t utf8_next(const unsigned char *s, size_t len, uint32_t *cp)
{
    size_t n;
    uint32_t c = s[0], min;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, c &= 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef)
        n = 3, c &= 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, c &= 0x07, min = 0x10000;
    else
        return 0;
    if (n > len)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((s[i] & 0xc0) != 0x80)
            return 0;
        c = c << 6 | (s[i] & 0x3f);
    }
    if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
        return 0;
    *cp = c;
    return n;
}

int upload_name_find_invisible(const char *name, size_t len, uint32_t *cp)
{
    const unsigned char *p = (const unsigned char *)name;
    for (size_t i = 0; i < len;) {
        size_t n = utf8_next(p + i, len - i, cp);
        if (n == 0)
            return -2;
        if (n > 1 && is_invisible(*cp))
            return (int)i;
        i += n;
    }
    return -1;
}

int upload_name_check(const char *name, size_t len, const char **why)
{
    uint32_t cp;

    if (len == 0) {
        *why = "empty file name";
        return -1;
    }
    if (len > UPLOAD_NAME_MAX) {
        *why = "file name longer than 255 bytes";
        return -1;
    }
    if ((len == 1 && name[0] == '.') || (len == 2 && name[0] == '.' && name[1] == '.')) {
        *why = "file name is . or ..";
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c == '/') {
            *why = "file name holds a /: a name, not a path";
            return -1;
        }
        if (c == 0) {
            *why = "file name holds a NUL byte";
            return -1;
        }
        /* C0 controls, DEL, and C1 controls (U+0080..U+009F, UTF-8 C2 80..C2 9F): names
         * that would mislead a person reading a directory listing or a log. */
        if (c < 0x20 || c == 0x7f ||
            (c == 0xc2 && i + 1 < len && (unsigned char)name[i + 1] >= 0x80 &&
             (unsigned char)name[i + 1] <= 0x9f)) {
            *why = "file name holds a control character";
            return -1;
        }
    }
    int at = upload_name_find_invisible(name, len, &cp);
    if (at == -2) {
        *why = "file name is not valid UTF-8";
        return -1;
    }
    if (at >= 0) {
        *why = UPLOAD_NAME_INVISIBLE;
        return -1;
    }
    if (len >= sizeof(UPLOAD_TMP_PREFIX) - 1 &&
        memcmp(name, UPLOAD_TMP_PREFIX, sizeof(UPLOAD_TMP_PREFIX) - 1) == 0) {
        *why = "file name is reserved for the server's temporary files";
        return -1;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* 0, 1 if absent (or null), -1 if present but not `n` bytes of hex. */
static int get_digest(json_t *root, const char *key, unsigned char *out, size_t n)
{
    json_t *v = json_object_get(root, key);
    if (v == NULL || json_is_null(v))
        return 1;
    if (!json_is_string(v) || json_string_length(v) != 2 * n)
        return -1;
    const char *s = json_string_value(v);
    for (size_t i = 0; i < n; i++) {
        int hi = hexval(s[2 * i]), lo = hexval(s[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return 0;
}

upload_header_status_t upload_header_parse(const void *json, size_t len, upload_header_t *h)
{
    upload_header_status_t st = UPLOAD_HEADER_BAD;
    json_error_t jerr;
    const char *why;

    memset(h, 0, sizeof(*h));
    /* NULs allowed in strings so a name holding one gets its own clear answer; duplicate
     * keys refused, as a header that says two things means neither. */
    json_t *root = json_loadb(json, len, JSON_REJECT_DUPLICATES | JSON_ALLOW_NUL, &jerr);
    if (root == NULL) {
        set_error(h, "header is not valid JSON: %s", jerr.text);
        return UPLOAD_HEADER_BAD;
    }
    if (!json_is_object(root)) {
        set_error(h, "header is not a JSON object");
        goto out;
    }

    /* A client that reads every reply says so; the seed's client, which never reads one,
     * cannot, and gets its replies once it stops sending (see upload.c). */
    json_t *reply = json_object_get(root, "reply");
    h->reply_each = json_is_string(reply) && strcmp(json_string_value(reply), "each") == 0;

    json_t *name = json_object_get(root, "file_name");
    if (json_is_string(name)) {
        h->raw_name_len = json_string_length(name);
        h->raw_name = malloc(h->raw_name_len + 1);
        if (h->raw_name == NULL) {
            set_error(h, "out of memory");
            goto out;
        }
        memcpy(h->raw_name, json_string_value(name), h->raw_name_len + 1);
    }

    json_t *cmd = json_object_get(root, "cmd");
    if (!json_is_string(cmd)) {
        set_error(h, "header has no \"cmd\" string");
        goto out;
    }
    if (json_string_length(cmd) != 3 || memcmp(json_string_value(cmd), "put", 3) != 0) {
        set_error(h, "unknown command (only \"put\" is served)");
        goto out;
    }

    json_t *size = json_object_get(root, "file_size");
    if (!json_is_integer(size)) {
        set_error(h, "\"file_size\" is missing or not an integer");
        goto out;
    }
    if (json_integer_value(size) < 0) {
        set_error(h, "\"file_size\" is negative");
        goto out;
    }
    h->size = (uint64_t)json_integer_value(size);

    /* From here on the body's length is known: a refusal need not end the connection. */
    st = UPLOAD_HEADER_REJECT;
    if (h->raw_name == NULL) {
        set_error(h, "\"file_name\" is missing or not a string");
        goto out;
    }
    if (upload_name_check(h->raw_name, h->raw_name_len, &why) != 0) {
        uint32_t cp;
        int at = upload_name_find_invisible(h->raw_name, h->raw_name_len, &cp);
        if (at >= 0 && strcmp(why, UPLOAD_NAME_INVISIBLE) == 0)
            set_error(h, "%s: U+%04X at byte %d", why, (unsigned)cp, at);
        else
            set_error(h, "%s", why);
        goto out;
    }
    int r = get_digest(root, "md5", h->md5, sizeof(h->md5));
    if (r < 0) {
        set_error(h, "\"md5\" is not 32 hex digits");
        goto out;
    }
    h->has_md5 = r == 0;
    r = get_digest(root, "sha256", h->sha256, sizeof(h->sha256));
    if (r < 0) {
        set_error(h, "\"sha256\" is not 64 hex digits");
        goto out;
    }
    h->has_sha256 = r == 0;

    memcpy(h->name, h->raw_name, h->raw_name_len + 1);
    st = UPLOAD_HEADER_OK;
out:
    json_decref(root);
    return st;
}

void upload_header_clear(upload_header_t *h)
{
    free(h->raw_name);
    h->raw_name = NULL;
    h->raw_name_len = 0;
}

void upload_hex(const unsigned char *bytes, size_t n, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * n] = '\0';
}

static unsigned char *frame(json_t *obj, size_t *frame_len)
{
    unsigned char *out = NULL;
    char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
    json_decref(obj);
    if (text == NULL)
        return NULL;
    size_t n = strlen(text);
    if (n <= INT32_MAX && (out = malloc(4 + n)) != NULL) {
        out[0] = (unsigned char)(n & 0xff);
        out[1] = (unsigned char)(n >> 8 & 0xff);
        out[2] = (unsigned char)(n >> 16 & 0xff);
        out[3] = (unsigned char)(n >> 24 & 0xff);
        memcpy(out + 4, text, n);
        *frame_len = 4 + n;
    }
    free(text);
    return out;
}

/* A JSON string, or null for a missing name or one that is not valid UTF-8. */
static json_t *name_value(const char *name, size_t name_len)
{
    json_t *v = name ? json_stringn(name, name_len) : NULL;
    return v ? v : json_null();
}

unsigned char *upload_reply_ok(const char *name, size_t name_len, uint64_t size,
                               const char *sha256_hex, size_t *frame_len)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    if (json_object_set_new(o, "status", json_string("ok")) != 0 ||
        json_object_set_new(o, "file_name", name_value(name, name_len)) != 0 ||
        json_object_set_new(o, "size", json_integer((json_int_t)size)) != 0 ||
        json_object_set_new(o, "sha256", json_string(sha256_hex)) != 0) {
        json_decref(o);
        return NULL;
    }
    return frame(o, frame_len);
}

unsigned char *upload_reply_error(const char *name, size_t name_len, const char *msg,
                                  size_t *frame_len)
{
    json_t *o = json_object();
    if (o == NULL)
        return NULL;
    /* A message is ASCII from this plugin or jansson; json_string() refuses anything not
     * UTF-8, so fall back rather than send no reply. */
    json_t *m = json_string(msg);
    if (json_object_set_new(o, "status", json_string("error")) != 0 ||
        json_object_set_new(o, "file_name", name_value(name, name_len)) != 0 ||
        json_object_set_new(o, "error", m ? m : json_string("error")) != 0) {
        json_decref(o);
        return NULL;
    }
    return frame(o, frame_len);
}
