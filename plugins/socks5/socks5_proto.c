#include "socks5_proto.h"

#include <string.h>
#include <netinet/in.h>

#include "berth/handler.h"

void socks5_parser_init(socks5_parser_t *p)
{
    p->phase = SOCKS5_PHASE_GREETING;
    p->failed = 0;
    p->held = 0;
    p->len = 0;
}

void socks5_parser_expect(socks5_parser_t *p, socks5_phase_t phase)
{
    p->phase = phase;
    p->held = 0;
    p->len = 0;
}

/* How many bytes the current message has in all, judged from what is held so far (a
 * lower bound until the length bytes are in), or an error as soon as a byte is wrong. */
static int message_size(const socks5_parser_t *p, size_t *total)
{
    const uint8_t *b = p->buf;
    size_t n = p->len;

    switch (p->phase) {
    case SOCKS5_PHASE_GREETING:
        if (n >= 1 && b[0] != SOCKS5_VERSION)
            return SOCKS5_ERR_VERSION;
        *total = n < 2 ? 2 : 2 + (size_t)b[1];
        return 0;
    case SOCKS5_PHASE_AUTH:
        if (n >= 1 && b[0] != SOCKS5_AUTH_VERSION)
            return SOCKS5_ERR_VERSION;
        if (n < 2)
            *total = 2;
        else if (n < 3 + (size_t)b[1])
            *total = 3 + (size_t)b[1];
        else
            *total = 3 + (size_t)b[1] + b[2 + b[1]];
        return 0;
    case SOCKS5_PHASE_REQUEST:
        if (n >= 1 && b[0] != SOCKS5_VERSION)
            return SOCKS5_ERR_VERSION;
        if (n < 4) {
            *total = 4;
            return 0;
        }
        switch (b[3]) {
        case SOCKS5_ATYP_IPV4:
            *total = 4 + 4 + 2;
            return 0;
        case SOCKS5_ATYP_IPV6:
            *total = 4 + 16 + 2;
            return 0;
        case SOCKS5_ATYP_NAME:
            *total = n < 5 ? 5 : 4 + 1 + (size_t)b[4] + 2;
            return 0;
        default:
            return SOCKS5_ERR_ATYP;
        }
    case SOCKS5_PHASE_DONE:
    default:
        return SOCKS5_ERR_PHASE;
    }
}

/* The held bytes are one whole message: fill msg. */
static int complete(socks5_parser_t *p, socks5_msg_t *msg)
{
    const uint8_t *b = p->buf;

    switch (p->phase) {
    case SOCKS5_PHASE_GREETING:
        msg->greeting.nmethods = b[1];
        msg->greeting.methods = b + 2;
        return SOCKS5_MSG_GREETING;
    case SOCKS5_PHASE_AUTH:
        msg->auth.ulen = b[1];
        msg->auth.user = b + 2;
        msg->auth.plen = b[2 + b[1]];
        msg->auth.pass = b + 3 + b[1];
        return SOCKS5_MSG_AUTH;
    case SOCKS5_PHASE_REQUEST: {
        socks5_request_t *r = &msg->request;
        const uint8_t *port;

        memset(r, 0, sizeof(*r));
        r->cmd = b[1];
        r->atyp = b[3];
        if (r->atyp == SOCKS5_ATYP_IPV4) {
            memcpy(r->addr, b + 4, 4);
            port = b + 8;
        } else if (r->atyp == SOCKS5_ATYP_IPV6) {
            memcpy(r->addr, b + 4, 16);
            port = b + 20;
        } else {
            r->namelen = b[4];
            if (r->namelen == 0 || memchr(b + 5, 0, r->namelen) != NULL)
                return SOCKS5_ERR_NAME;
            memcpy(r->name, b + 5, r->namelen);
            r->name[r->namelen] = '\0';
            port = b + 5 + r->namelen;
        }
        r->port = (uint16_t)((port[0] << 8) | port[1]);
        p->phase = SOCKS5_PHASE_DONE;
        return SOCKS5_MSG_REQUEST;
    }
    case SOCKS5_PHASE_DONE:
    default:
        return SOCKS5_ERR_PHASE;
    }
}

int socks5_parser_feed(socks5_parser_t *p, const uint8_t *data, size_t len, size_t *used,
                       socks5_msg_t *msg)
{
    size_t taken = 0;
    int rc;

    *used = 0;
    if (p->failed)
        return p->failed;
    if (p->held)
        return SOCKS5_ERR_PHASE; /* the caller has not moved the parser on */

    for (;;) {
        size_t total = 0, want;

        rc = message_size(p, &total);
        if (rc < 0)
            break;
        if (p->len == total) {
            rc = complete(p, msg);
            if (rc > 0)
                p->held = 1;
            break;
        }
        if (taken == len) {
            rc = SOCKS5_NEED_MORE;
            break;
        }
        /* total <= SOCKS5_MAX_MESSAGE by construction: each length is one byte. */
        want = total - p->len;
        if (want > len - taken)
            want = len - taken;
        memcpy(p->buf + p->len, data + taken, want);
        p->len = (uint16_t)(p->len + want);
        taken += want;
    }
    *used = taken;
    if (rc < 0 && rc != SOCKS5_ERR_PHASE)
        p->failed = rc;
    return rc;
}

uint8_t socks5_choose_method(const socks5_greeting_t *g, uint8_t want)
{
    for (size_t i = 0; i < g->nmethods; i++)
        if (g->methods[i] == want)
            return want;
    return SOCKS5_METHOD_UNACCEPTABLE;
}

size_t socks5_reply(uint8_t *out, uint8_t rep, const struct sockaddr *bnd)
{
    out[0] = SOCKS5_VERSION;
    out[1] = rep;
    out[2] = 0x00;
    if (bnd != NULL && bnd->sa_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)bnd;
        const uint8_t *port = (const uint8_t *)&s6->sin6_port;

        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            out[3] = SOCKS5_ATYP_IPV4;
            memcpy(out + 4, s6->sin6_addr.s6_addr + 12, 4);
            memcpy(out + 8, port, 2);
            return 10;
        }
        out[3] = SOCKS5_ATYP_IPV6;
        memcpy(out + 4, s6->sin6_addr.s6_addr, 16);
        memcpy(out + 20, port, 2);
        return 22;
    }
    out[3] = SOCKS5_ATYP_IPV4;
    if (bnd != NULL && bnd->sa_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)bnd;

        memcpy(out + 4, &s4->sin_addr, 4);
        memcpy(out + 8, &s4->sin_port, 2);
    } else {
        memset(out + 4, 0, 6);
    }
    return 10;
}

uint8_t socks5_reply_for_connect_error(int error)
{
    switch (error) {
    case BERTH_CONNECT_OK:
        return SOCKS5_REP_SUCCEEDED;
    case BERTH_CONNECT_DENIED:
        return SOCKS5_REP_NOT_ALLOWED;
    case BERTH_CONNECT_NET_UNREACH:
        return SOCKS5_REP_NET_UNREACHABLE;
    case BERTH_CONNECT_HOST_UNREACH:
    case BERTH_CONNECT_NO_NAME:
        return SOCKS5_REP_HOST_UNREACHABLE;
    case BERTH_CONNECT_REFUSED:
        return SOCKS5_REP_REFUSED;
    case BERTH_CONNECT_TIMEOUT:
        return SOCKS5_REP_TTL_EXPIRED;
    case BERTH_CONNECT_FAILED:
    default:
        return SOCKS5_REP_GENERAL_FAILURE;
    }
}

const char *socks5_reply_text(uint8_t rep)
{
    switch (rep) {
    case SOCKS5_REP_SUCCEEDED:
        return "succeeded";
    case SOCKS5_REP_GENERAL_FAILURE:
        return "general failure";
    case SOCKS5_REP_NOT_ALLOWED:
        return "not allowed by rules";
    case SOCKS5_REP_NET_UNREACHABLE:
        return "network unreachable";
    case SOCKS5_REP_HOST_UNREACHABLE:
        return "host unreachable";
    case SOCKS5_REP_REFUSED:
        return "connection refused";
    case SOCKS5_REP_TTL_EXPIRED:
        return "timed out";
    case SOCKS5_REP_CMD_UNSUPPORTED:
        return "command not supported";
    case SOCKS5_REP_ATYP_UNSUPPORTED:
        return "address type not supported";
    default:
        return "unknown";
    }
}

int socks5_udp_parse(const uint8_t *data, size_t len, socks5_udp_header_t *h)
{
    size_t alen;

    memset(h, 0, sizeof(*h));
    if (len < 4)
        return SOCKS5_UDP_SHORT;
    if (data[0] != 0 || data[1] != 0)
        return SOCKS5_UDP_RSV;
    h->frag = data[2];
    if (h->frag != 0)
        return SOCKS5_UDP_FRAG;
    h->atyp = data[3];
    switch (h->atyp) {
    case SOCKS5_ATYP_IPV4:
        alen = 4;
        break;
    case SOCKS5_ATYP_IPV6:
        alen = 16;
        break;
    case SOCKS5_ATYP_NAME:
        if (len < 5)
            return SOCKS5_UDP_SHORT;
        h->namelen = data[4];
        alen = 1u + h->namelen;
        break;
    default:
        return SOCKS5_UDP_ATYP;
    }
    if (len < 4 + alen + 2)
        return SOCKS5_UDP_SHORT;
    if (h->atyp == SOCKS5_ATYP_NAME) {
        if (h->namelen == 0 || memchr(data + 5, 0, h->namelen) != NULL)
            return SOCKS5_UDP_NAME;
        memcpy(h->name, data + 5, h->namelen);
        h->name[h->namelen] = '\0';
    } else {
        memcpy(h->addr, data + 4, alen);
    }
    h->port = (uint16_t)(data[4 + alen] << 8 | data[4 + alen + 1]);
    if (h->port == 0)
        return SOCKS5_UDP_PORT;
    h->len = 4 + alen + 2;
    return SOCKS5_UDP_OK;
}

size_t socks5_udp_header(uint8_t *out, const struct sockaddr *from)
{
    uint8_t reply[SOCKS5_MAX_REPLY];
    size_t n;

    if (from == NULL || (from->sa_family != AF_INET && from->sa_family != AF_INET6))
        return 0;
    /* The same ATYP ADDR PORT as a reply's; only the first three bytes differ. */
    n = socks5_reply(reply, 0, from);
    memcpy(out, reply, n);
    out[0] = 0;
    out[1] = 0;
    out[2] = 0;
    return n;
}
