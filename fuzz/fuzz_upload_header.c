/*
 * libFuzzer target for the upload plugin's protocol side (plugins/upload/frame.c and
 * header.c): the framing parser and the JSON header reader, fed the way the plugin feeds
 * them.
 *
 * The input is a whole client side of a connection. Its first byte picks how it is cut into
 * reads (so every split of every frame is tried); then frames are parsed, each header read,
 * and each body skipped by the size the header declared. Checks that the parser never takes
 * more than it is given, reports NONE only with everything consumed, stops for good after an
 * error, that an accepted header holds a name the name rules accept (no invisible format
 * character among them), and that the reply
 * frames built from whatever came in are well formed. ASan's leak check covers the rest.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "frame.h"
#include "header.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int ok)
{
    if (!ok)
        abort();
}

static void check_frame(unsigned char *f, size_t len)
{
    check(f != NULL && len >= 4);
    uint32_t n = (uint32_t)f[0] | (uint32_t)f[1] << 8 | (uint32_t)f[2] << 16 | (uint32_t)f[3] << 24;
    check(n == len - 4 && f[4] == '{' && f[len - 1] == '}');
    free(f);
}

static void on_header(upload_frame_t *fr, const unsigned char *json, size_t len, int *stop)
{
    upload_header_t h;
    const char *why;
    size_t flen = 0;

    upload_header_status_t st = upload_header_parse(json, len, &h);
    switch (st) {
    case UPLOAD_HEADER_OK:
        check(strlen(h.name) == h.raw_name_len);
        check(upload_name_check(h.name, strlen(h.name), &why) == 0);
        check(upload_name_find_invisible(h.name, strlen(h.name), &(uint32_t){0}) == -1);
        check(strchr(h.name, '/') == NULL && strcmp(h.name, "..") != 0);
        check(h.size <= INT64_MAX);
        check_frame(upload_reply_ok(
                        h.name, strlen(h.name), h.size,
                        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", &flen),
                    flen);
        upload_frame_body(fr, h.size);
        break;
    case UPLOAD_HEADER_REJECT:
        check(h.error[0] != '\0');
        upload_frame_body(fr, h.size);
        break;
    case UPLOAD_HEADER_BAD:
        check(h.error[0] != '\0');
        *stop = 1;
        break;
    }
    if (st != UPLOAD_HEADER_OK)
        check_frame(upload_reply_error(h.raw_name, h.raw_name_len, h.error, &flen), flen);
    upload_header_clear(&h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    upload_frame_t fr;
    size_t chunk, off = 0;
    int stop = 0, failed = 0;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] % 17; /* 0: everything in one read */
    data++;
    size--;
    upload_frame_init(&fr, 4096);
    while (off < size && !stop) {
        size_t n = chunk == 0 || chunk > size - off ? size - off : chunk;
        size_t used = 0;
        while (!stop) {
            upload_frame_ev_t ev;
            long r = upload_frame_feed(&fr, data + off + used, n - used, &ev);
            check(r >= 0 && (size_t)r <= n - used);
            used += (size_t)r;
            if (ev.type == UPLOAD_FRAME_NONE) {
                check(used == n);
                break;
            }
            switch (ev.type) {
            case UPLOAD_FRAME_ERROR:
                check(ev.error != UPLOAD_FRAME_OK);
                check(ev.declared < 0 || ev.declared > 4096);
                failed = 1;
                stop = 1;
                break;
            case UPLOAD_FRAME_HEADER:
                check(!failed && ev.len <= 4096);
                on_header(&fr, ev.data, ev.len, &stop);
                break;
            case UPLOAD_FRAME_DATA:
                check(ev.len > 0 && ev.data >= data + off && ev.data + ev.len <= data + off + n);
                break;
            default:
                break;
            }
        }
        off += n;
    }
    if (failed) {
        upload_frame_ev_t ev;
        check(upload_frame_feed(&fr, "x", 1, &ev) == 0 && ev.type == UPLOAD_FRAME_ERROR);
    }
    upload_frame_free(&fr);
    return 0;
}
