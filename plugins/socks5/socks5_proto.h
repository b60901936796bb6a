/*
 * SOCKS5 wire format (RFC 1928) and username/password sub-negotiation (RFC 1929).
 *
 * A pure, incremental parser: it knows nothing of sockets or the host. Feed it bytes as
 * they arrive, in chunks of any size; it takes exactly the bytes of one message at a time
 * (never a byte past it, so what follows a request is the client's early data for the
 * destination) and hands back the message once it is whole. Every message is bounded by
 * its own length bytes, so the parser's buffer is fixed and it never allocates.
 */
#ifndef BERTH_SOCKS5_PROTO_H
#define BERTH_SOCKS5_PROTO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define SOCKS5_VERSION 0x05
#define SOCKS5_AUTH_VERSION 0x01

/* Methods (RFC 1928 section 3). */
#define SOCKS5_METHOD_NONE 0x00
#define SOCKS5_METHOD_PASSWORD 0x02
#define SOCKS5_METHOD_UNACCEPTABLE 0xFF

/* Commands. */
#define SOCKS5_CMD_CONNECT 0x01
#define SOCKS5_CMD_BIND 0x02
#define SOCKS5_CMD_UDP_ASSOCIATE 0x03

/* Address types. */
#define SOCKS5_ATYP_IPV4 0x01
#define SOCKS5_ATYP_NAME 0x03
#define SOCKS5_ATYP_IPV6 0x04

/* Reply codes (RFC 1928 section 6). */
#define SOCKS5_REP_SUCCEEDED 0x00
#define SOCKS5_REP_GENERAL_FAILURE 0x01
#define SOCKS5_REP_NOT_ALLOWED 0x02
#define SOCKS5_REP_NET_UNREACHABLE 0x03
#define SOCKS5_REP_HOST_UNREACHABLE 0x04
#define SOCKS5_REP_REFUSED 0x05
#define SOCKS5_REP_TTL_EXPIRED 0x06 /* what clients show as "timed out" */
#define SOCKS5_REP_CMD_UNSUPPORTED 0x07
#define SOCKS5_REP_ATYP_UNSUPPORTED 0x08

/* The longest message either side of the handshake: an RFC 1929 request,
 * VER ULEN UNAME(255) PLEN PASSWD(255). */
#define SOCKS5_MAX_MESSAGE 513
/* The longest reply: VER REP RSV ATYP, a 16-byte address, a port. */
#define SOCKS5_MAX_REPLY 22

/* What the parser expects next; the caller moves it on after each message. */
typedef enum socks5_phase {
    SOCKS5_PHASE_GREETING = 0, /* VER NMETHODS METHODS */
    SOCKS5_PHASE_AUTH,         /* RFC 1929: VER ULEN UNAME PLEN PASSWD */
    SOCKS5_PHASE_REQUEST,      /* VER CMD RSV ATYP DST.ADDR DST.PORT */
    SOCKS5_PHASE_DONE,         /* nothing more: the rest is data for the destination */
} socks5_phase_t;

/* Results of socks5_parser_feed(): a message (> 0), need more (0), or an error (< 0).
 * After an error the parser stays failed. */
typedef enum socks5_result {
    SOCKS5_MSG_GREETING = 1,
    SOCKS5_MSG_AUTH = 2,
    SOCKS5_MSG_REQUEST = 3,
    SOCKS5_NEED_MORE = 0,
    SOCKS5_ERR_VERSION = -1, /* a version byte that is not 5 (or 1 for auth): close */
    SOCKS5_ERR_ATYP = -2,    /* an address type not 1, 3 or 4: reply 8, close */
    SOCKS5_ERR_NAME = -3,    /* an empty domain name or one holding a NUL: reply 1, close */
    SOCKS5_ERR_PHASE = -4,   /* fed while DONE or after an error */
} socks5_result_t;

typedef struct socks5_greeting {
    uint8_t nmethods;
    const uint8_t *methods; /* nmethods bytes */
} socks5_greeting_t;

typedef struct socks5_auth {
    uint8_t ulen, plen;
    const uint8_t *user; /* ulen bytes, not NUL-terminated, MAY hold any byte */
    const uint8_t *pass; /* plen bytes */
} socks5_auth_t;

typedef struct socks5_request {
    uint8_t cmd;
    uint8_t atyp;
    uint16_t port;    /* host order */
    uint8_t addr[16]; /* ATYP 1: 4 bytes, ATYP 4: 16 bytes, network order */
    uint8_t namelen;  /* ATYP 3 */
    char name[256];   /* ATYP 3: NUL-terminated, holds no NUL of its own */
} socks5_request_t;

/* A message, valid until the next call into the parser (it points into the parser). */
typedef struct socks5_msg {
    socks5_greeting_t greeting;
    socks5_auth_t auth;
    socks5_request_t request;
} socks5_msg_t;

typedef struct socks5_parser {
    socks5_phase_t phase;
    int failed;   /* the error it stopped on, or 0 */
    int held;     /* a message was handed back and the caller has not called expect() */
    uint16_t len; /* bytes of the current message held in buf */
    uint8_t buf[SOCKS5_MAX_MESSAGE];
} socks5_parser_t;

void socks5_parser_init(socks5_parser_t *p);
/* Move on to the next phase once the caller has acted on a message. */
void socks5_parser_expect(socks5_parser_t *p, socks5_phase_t phase);

/*
 * Take bytes from data[0..len) for the current message; *used says how many were taken
 * (all of them unless a message completed). Returns SOCKS5_MSG_* with *msg filled when a
 * message is whole, SOCKS5_NEED_MORE when every byte was taken and the message is not yet
 * whole, or a SOCKS5_ERR_*. A version byte is judged as soon as it arrives, an address
 * type as soon as it arrives, so a hostile client cannot make the parser wait.
 */
int socks5_parser_feed(socks5_parser_t *p, const uint8_t *data, size_t len, size_t *used,
                       socks5_msg_t *msg);

/* The method to choose for a greeting: `want` if the client offers it, else 0xFF. */
uint8_t socks5_choose_method(const socks5_greeting_t *g, uint8_t want);

/* Build a reply into out (SOCKS5_MAX_REPLY bytes); returns its length. `bnd` MAY be NULL
 * (or not AF_INET/AF_INET6): then 0.0.0.0:0. A v4-mapped IPv6 address goes out as IPv4. */
size_t socks5_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bnd);

/* The reply code for a berth_connect_error_t. */
uint8_t socks5_reply_for_connect_error(int error);

/* Short text for a reply code, for logs. */
const char *socks5_reply_text(uint8_t rep);

/*
 * The SOCKS UDP request header (RFC 1928 section 7), which every datagram between client and
 * relay carries: RSV(2, zero) FRAG ATYP DST.ADDR DST.PORT, then DATA.
 */
#define SOCKS5_UDP_MAX_HEADER 262 /* 4 + a 1-byte length + a 255-byte name + 2 */

typedef enum socks5_udp_result {
    SOCKS5_UDP_OK = 0,
    SOCKS5_UDP_SHORT = -1, /* ends before its address and port do */
    SOCKS5_UDP_RSV = -2,   /* RSV is not 0x0000 */
    SOCKS5_UDP_FRAG = -3,  /* FRAG != 0: a fragment, which the relay does not reassemble */
    SOCKS5_UDP_ATYP = -4,  /* an address type not 1, 3 or 4 */
    SOCKS5_UDP_NAME = -5,  /* an empty name, or one holding a NUL */
    SOCKS5_UDP_PORT = -6,  /* DST.PORT 0: nothing can be sent there */
} socks5_udp_result_t;

typedef struct socks5_udp_header {
    uint8_t frag;
    uint8_t atyp;
    uint16_t port;    /* host order */
    uint8_t addr[16]; /* ATYP 1: 4 bytes, ATYP 4: 16 bytes */
    uint8_t namelen;  /* ATYP 3 */
    char name[256];   /* ATYP 3: NUL-terminated */
    size_t len;       /* header bytes: DATA starts at data + len */
} socks5_udp_header_t;

/* Parse the header of one whole datagram of `len` bytes (pure: no state, no allocation).
 * SOCKS5_UDP_OK with *h filled, or a SOCKS5_UDP_* error (h->frag is set for FRAG). */
int socks5_udp_parse(const uint8_t *data, size_t len, socks5_udp_header_t *h);
/* The header a reply from `from` (AF_INET or AF_INET6; v4-mapped goes out as IPv4) is
 * wrapped in, into out (at least 22 bytes); its length, or 0 for another family. */
size_t socks5_udp_header(uint8_t *out, const struct sockaddr *from);

#endif
