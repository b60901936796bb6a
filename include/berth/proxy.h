/*
 * HAProxy's PROXY protocol, v1 (text) and v2 (binary), as a pure incremental parser: no I/O,
 * no allocation, bytes fed as they arrive (one at a time if need be). The daemon uses it for
 * listeners with `proxy_protocol` on; a plugin behind its own balancer may use it too.
 *
 * Specification: https://www.haproxy.org/download/2.8/doc/proxy-protocol.txt
 */
#ifndef BERTH_PROXY_H
#define BERTH_PROXY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Which versions a parser accepts (berth_proxy_init). */
#define BERTH_PROXY_V1 0x1u
#define BERTH_PROXY_V2 0x2u

/* The longest v1 line, CRLF included (the specification's own bound). */
#define BERTH_PROXY_V1_MAX 107
/* The longest v2 header accepted: the 16-byte fixed part and up to 2048 bytes of addresses
 * and TLVs (HAProxy sends a few dozen; the format allows 65535, which nobody needs). */
#define BERTH_PROXY_V2_BODY_MAX 2048
#define BERTH_PROXY_V2_MAX (16 + BERTH_PROXY_V2_BODY_MAX)

/* berth_proxy_feed's results: 0 (more bytes needed), 1 (done), or one of these. */
enum berth_proxy_error {
    BERTH_PROXY_EBADSIG = -1,    /* neither "PROXY " nor the v2 signature (or not allowed) */
    BERTH_PROXY_EBADLINE = -2,   /* a v1 line that does not parse */
    BERTH_PROXY_ETOOLONG = -3,   /* over BERTH_PROXY_V1_MAX or BERTH_PROXY_V2_MAX */
    BERTH_PROXY_EBADVER = -4,    /* v2: version other than 2, or a command other than LOCAL/PROXY */
    BERTH_PROXY_EBADFAMILY = -5, /* v2: an unknown address family or transport */
    BERTH_PROXY_EBADLEN = -6,    /* v2: the length cannot hold the family's addresses */
    BERTH_PROXY_EBADTLV = -7,    /* v2: a TLV runs past the end of the header */
};

typedef enum berth_proxy_command {
    BERTH_PROXY_CMD_PROXY = 1, /* a relayed connection: src/dst below, if family is set */
    BERTH_PROXY_CMD_LOCAL = 2, /* the balancer's own connection (a health check) */
} berth_proxy_command_t;

typedef struct berth_proxy_result {
    int version; /* 1 or 2 */
    berth_proxy_command_t command;
    /* AF_INET or AF_INET6 with the client (src) and the address it reached (dst); AF_UNSPEC
     * when the header carries no usable address (v1 UNKNOWN, v2 LOCAL, UNSPEC or UNIX): the
     * connection's own endpoints stand. */
    int family;
    struct sockaddr_storage src, dst;
    socklen_t srclen, dstlen;
    size_t tlv_count; /* v2 TLVs seen (and skipped) */
} berth_proxy_result_t;

/* The parser's state; treat as opaque. About 2.2 KiB. */
typedef struct berth_proxy {
    unsigned versions;
    int version; /* 0 until the signature says */
    size_t len;  /* bytes in buf */
    size_t need; /* v2: the whole header's length, once known */
    int done;    /* 1 or a negative error: sticky */
    uint8_t buf[BERTH_PROXY_V2_MAX];
    berth_proxy_result_t result;
} berth_proxy_t;

/* Start a parser accepting `versions` (BERTH_PROXY_V1 | BERTH_PROXY_V2). */
void berth_proxy_init(berth_proxy_t *p, unsigned versions);

/*
 * Feed `len` more bytes. Returns 0 when every byte was taken and the header is not complete
 * yet; 1 when it is complete, with *used set to how many of these bytes belong to it (the
 * rest are the application's: they follow the header on the wire) and p->result filled; or a
 * negative enum berth_proxy_error, at the first byte that cannot start or continue a valid
 * header (so a wrong first byte fails at once). After 1 or an error, further calls return the
 * same and take nothing. `used` MAY be NULL.
 */
int berth_proxy_feed(berth_proxy_t *p, const void *data, size_t len, size_t *used);

/* Bytes taken so far: nonzero means a header has begun (an EOF now is a truncated one). */
size_t berth_proxy_pending(const berth_proxy_t *p);

/* "bad signature", ... for a negative result; "" otherwise. */
const char *berth_proxy_strerror(int rc);

#ifdef __cplusplus
}
#endif
#endif
