/* The upload protocol's framing: see frame.h. */
#include "frame.h"

#include <stdlib.h>
#include <string.h>

/* The header buffer grows by doubling from here, so a peer that declares a large header
 * and then sends little of it costs little memory. */
#define HDR_MIN_CAP 256

void upload_frame_init(upload_frame_t *f, size_t max_header)
{
    memset(f, 0, sizeof(*f));
    if (max_header > INT32_MAX)
        max_header = INT32_MAX;
    f->max_header = max_header;
    f->state = UPLOAD_FRAME_S_LEN;
}

void upload_frame_free(upload_frame_t *f)
{
    free(f->hdr);
    f->hdr = NULL;
    f->hdr_cap = 0;
}

static int hdr_reserve(upload_frame_t *f, size_t need)
{
    if (need <= f->hdr_cap)
        return 0;
    size_t cap = f->hdr_cap ? f->hdr_cap : HDR_MIN_CAP;
    while (cap < need)
        cap *= 2;
    if (cap > f->hdr_len)
        cap = f->hdr_len;
    unsigned char *p = realloc(f->hdr, cap);
    if (p == NULL)
        return -1;
    f->hdr = p;
    f->hdr_cap = cap;
    return 0;
}

long upload_frame_feed(upload_frame_t *f, const void *data, size_t len, upload_frame_ev_t *ev)
{
    const unsigned char *in = data;
    size_t used = 0;

    memset(ev, 0, sizeof(*ev));
    for (;;) {
        switch (f->state) {
        case UPLOAD_FRAME_S_FAILED:
            ev->type = UPLOAD_FRAME_ERROR;
            ev->error = f->error;
            ev->declared = f->declared;
            return 0;

        case UPLOAD_FRAME_S_WAIT:
            return -1;

        case UPLOAD_FRAME_S_LEN: {
            if (used == len) {
                ev->type = UPLOAD_FRAME_NONE;
                return (long)used;
            }
            size_t n = UPLOAD_FRAME_LEN_BYTES - f->len_have;
            if (n > len - used)
                n = len - used;
            memcpy(f->lenbuf + f->len_have, in + used, n);
            f->len_have += n;
            used += n;
            if (f->len_have < UPLOAD_FRAME_LEN_BYTES)
                continue;
            uint32_t u = (uint32_t)f->lenbuf[0] | (uint32_t)f->lenbuf[1] << 8 |
                         (uint32_t)f->lenbuf[2] << 16 | (uint32_t)f->lenbuf[3] << 24;
            /* Two's complement, as struct.pack('i') wrote it. */
            int64_t declared = u > INT32_MAX ? (int64_t)u - ((int64_t)1 << 32) : (int64_t)u;
            f->len_have = 0;
            if (declared < 0 || (uint64_t)declared > f->max_header) {
                f->state = UPLOAD_FRAME_S_FAILED;
                f->error = declared < 0 ? UPLOAD_FRAME_ENEGATIVE : UPLOAD_FRAME_ETOOBIG;
                f->declared = declared;
                ev->type = UPLOAD_FRAME_ERROR;
                ev->error = f->error;
                ev->declared = declared;
                return (long)used;
            }
            f->hdr_len = (size_t)declared;
            f->hdr_have = 0;
            f->state = UPLOAD_FRAME_S_HEADER;
            continue;
        }

        case UPLOAD_FRAME_S_HEADER: {
            size_t n = f->hdr_len - f->hdr_have;
            if (n > len - used)
                n = len - used;
            if (n > 0) {
                if (hdr_reserve(f, f->hdr_have + n) != 0)
                    return -2;
                memcpy(f->hdr + f->hdr_have, in + used, n);
                f->hdr_have += n;
                used += n;
            }
            if (f->hdr_have < f->hdr_len) {
                ev->type = UPLOAD_FRAME_NONE;
                return (long)used;
            }
            f->state = UPLOAD_FRAME_S_WAIT;
            ev->type = UPLOAD_FRAME_HEADER;
            ev->data = f->hdr;
            ev->len = f->hdr_len;
            return (long)used;
        }

        case UPLOAD_FRAME_S_BODY: {
            if (f->body_left == 0) {
                f->state = UPLOAD_FRAME_S_LEN;
                ev->type = UPLOAD_FRAME_END;
                return (long)used;
            }
            if (used == len) {
                ev->type = UPLOAD_FRAME_NONE;
                return (long)used;
            }
            size_t n = len - used;
            if (n > f->body_left)
                n = (size_t)f->body_left;
            ev->type = UPLOAD_FRAME_DATA;
            ev->data = in + used;
            ev->len = n;
            f->body_left -= n;
            used += n;
            return (long)used;
        }
        }
    }
}

void upload_frame_body(upload_frame_t *f, uint64_t size)
{
    if (f->state != UPLOAD_FRAME_S_WAIT)
        return;
    /* The header is handled: give its memory back, an idle connection stays small. */
    upload_frame_free(f);
    f->hdr_len = f->hdr_have = 0;
    f->body_left = size;
    f->state = UPLOAD_FRAME_S_BODY;
}

int upload_frame_idle(const upload_frame_t *f)
{
    return f->state == UPLOAD_FRAME_S_LEN && f->len_have == 0;
}

uint64_t upload_frame_body_left(const upload_frame_t *f)
{
    return f->state == UPLOAD_FRAME_S_BODY ? f->body_left : 0;
}
