/*
 * The upload protocol's framing, as a pure incremental parser: feed it bytes as they
 * arrive, in chunks of any size, and it hands back one event at a time. No I/O, no
 * allocation beyond the header buffer (capped by max_header), so it can be unit tested
 * and fuzzed on its own.
 *
 * Per file the stream carries a 4-byte little-endian *signed* header length (the seed
 * packs it with struct.pack('i')), that many bytes of JSON header, then the body, whose
 * length only the header knows: after a HEADER event the caller MUST tell the parser the
 * body size with upload_frame_body() before feeding it more.
 */
#ifndef BERTH_UPLOAD_FRAME_H
#define BERTH_UPLOAD_FRAME_H

#include <stddef.h>
#include <stdint.h>

#define UPLOAD_FRAME_LEN_BYTES 4

typedef enum upload_frame_ev_type {
    UPLOAD_FRAME_NONE = 0, /* every byte given was consumed: feed more */
    UPLOAD_FRAME_HEADER,   /* a whole header in ev.data/ev.len, valid until the next call */
    UPLOAD_FRAME_DATA,     /* body bytes: ev.data/ev.len point into the caller's input */
    UPLOAD_FRAME_END,      /* the body is complete; the next frame may follow */
    UPLOAD_FRAME_ERROR,    /* a bad header length (ev.error); the parser stays failed */
} upload_frame_ev_type_t;

typedef enum upload_frame_error {
    UPLOAD_FRAME_OK = 0,
    UPLOAD_FRAME_ENEGATIVE, /* the declared header length is negative */
    UPLOAD_FRAME_ETOOBIG,   /* the declared header length is over max_header */
} upload_frame_error_t;

typedef struct upload_frame_ev {
    upload_frame_ev_type_t type;
    const unsigned char *data;
    size_t len;
    upload_frame_error_t error;
    int64_t declared; /* UPLOAD_FRAME_ERROR: the header length the peer declared */
} upload_frame_ev_t;

typedef enum upload_frame_state {
    UPLOAD_FRAME_S_LEN = 0, /* reading the 4-byte length */
    UPLOAD_FRAME_S_HEADER,  /* reading the header */
    UPLOAD_FRAME_S_WAIT,    /* header delivered; waiting for upload_frame_body() */
    UPLOAD_FRAME_S_BODY,    /* reading the body */
    UPLOAD_FRAME_S_FAILED,  /* a bad length was seen */
} upload_frame_state_t;

/* Treat as opaque; it is public only so callers can embed it. */
typedef struct upload_frame {
    upload_frame_state_t state;
    size_t max_header;
    unsigned char lenbuf[UPLOAD_FRAME_LEN_BYTES];
    size_t len_have;
    unsigned char *hdr; /* owned; grown as header bytes arrive, never past hdr_len */
    size_t hdr_len, hdr_have, hdr_cap;
    uint64_t body_left;
    upload_frame_error_t error;
    int64_t declared;
} upload_frame_t;

/* max_header: the largest header length accepted (at most INT32_MAX). */
void upload_frame_init(upload_frame_t *f, size_t max_header);
/* Free the header buffer. The parser may be initialised again afterwards. */
void upload_frame_free(upload_frame_t *f);

/*
 * Consume a prefix of data[0..len) and report one event in *ev. Returns the number of
 * bytes consumed. Call again with the rest until it reports UPLOAD_FRAME_NONE (which it
 * does only once all of the input is consumed). END can be reported with len == 0, so
 * call it once more after upload_frame_body() even if no bytes are left.
 * Returns -1 (consuming nothing) if called in S_WAIT, i.e. upload_frame_body() is due;
 * ev->type is then NONE. On a header allocation failure it returns -2.
 */
long upload_frame_feed(upload_frame_t *f, const void *data, size_t len, upload_frame_ev_t *ev);

/* After a HEADER event: the body that follows is `size` bytes (0 allowed). */
void upload_frame_body(upload_frame_t *f, uint64_t size);

/* True at a frame boundary with no partial length read: an EOF here is a clean end. */
int upload_frame_idle(const upload_frame_t *f);

/* Body bytes still expected (S_BODY), for messages. */
uint64_t upload_frame_body_left(const upload_frame_t *f);

#endif
