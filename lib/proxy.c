/*
 * The PROXY protocol parser (see include/berth/proxy.h). Bytes are copied into the parser's
 * own buffer only up to the end of the header, so what follows it is never taken; each byte
 * is judged as it comes, so a wrong header fails at its first wrong byte rather than after a
 * timeout.
 */
#include "berth/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

static const uint8_t v1_sig[6] = {'P', 'R', 'O', 'X', 'Y', ' '};
static const uint8_t v2_sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                   0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};

enum { V2_AF_UNSPEC = 0, V2_AF_INET = 1, V2_AF_INET6 = 2, V2_AF_UNIX = 3 };
enum { V2_TR_UNSPEC = 0, V2_TR_STREAM = 1, V2_TR_DGRAM = 2 };

void berth_proxy_init(berth_proxy_t *p, unsigned versions)
{
    p->versions = versions & (BERTH_PROXY_V1 | BERTH_PROXY_V2);
    p->version = 0;
    p->len = 0;
    p->need = 0;
    p->done = 0;
    memset(&p->result, 0, sizeof p->result);
}

size_t berth_proxy_pending(const berth_proxy_t *p)
{
    return p->len;
}

const char *berth_proxy_strerror(int rc)
{
    switch (rc) {
    case BERTH_PROXY_EBADSIG:
        return "no PROXY protocol signature";
    case BERTH_PROXY_EBADLINE:
        return "malformed v1 line";
    case BERTH_PROXY_ETOOLONG:
        return "header too long";
    case BERTH_PROXY_EBADVER:
        return "bad v2 version or command";
    case BERTH_PROXY_EBADFAMILY:
        return "bad v2 address family or transport";
    case BERTH_PROXY_EBADLEN:
        return "v2 length too short for its addresses";
    case BERTH_PROXY_EBADTLV:
        return "v2 TLV past the end of the header";
    default:
        return "";
    }
}

/* The signature so far: still a prefix of an allowed one? Sets p->version once whole. */
static int check_signature(berth_proxy_t *p)
{
    int v1 = (p->versions & BERTH_PROXY_V1) &&
             memcmp(p->buf, v1_sig, p->len < sizeof v1_sig ? p->len : sizeof v1_sig) == 0;
    int v2 = (p->versions & BERTH_PROXY_V2) &&
             memcmp(p->buf, v2_sig, p->len < sizeof v2_sig ? p->len : sizeof v2_sig) == 0;
    if (!v1 && !v2)
        return BERTH_PROXY_EBADSIG;
    if (v1 && p->len >= sizeof v1_sig)
        p->version = 1;
    else if (v2 && p->len >= sizeof v2_sig)
        p->version = 2;
    return 0;
}

/* ---- v1 ---- */

/* A port: decimal 0..65535, no sign, no leading zero. */
static int v1_port(const char *s, uint16_t *out)
{
    unsigned long v = 0;
    size_t n = strlen(s);
    if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (unsigned long)(s[i] - '0');
    }
    if (v > 65535)
        return -1;
    *out = (uint16_t)v;
    return 0;
}

static int v1_addr(int af, const char *ip, uint16_t port, struct sockaddr_storage *ss,
                   socklen_t *len)
{
    memset(ss, 0, sizeof *ss);
    if (af == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)ss;
        in->sin_family = AF_INET;
        in->sin_port = htons(port);
        *len = sizeof *in;
        return inet_pton(AF_INET, ip, &in->sin_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)ss;
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(port);
    *len = sizeof *in6;
    return inet_pton(AF_INET6, ip, &in6->sin6_addr) == 1 ? 0 : -1;
}

/* The whole line, "PROXY ...\r\n", is in buf. */
static int v1_parse(berth_proxy_t *p)
{
    char line[BERTH_PROXY_V1_MAX + 1];
    char *tok[6];
    size_t ntok = 0;
    size_t n = p->len - 2; /* without CRLF */
    memcpy(line, p->buf, n);
    line[n] = '\0';
    berth_proxy_result_t *r = &p->result;
    r->version = 1;
    r->command = BERTH_PROXY_CMD_PROXY;
    r->family = AF_UNSPEC;
    /* "PROXY UNKNOWN" may be followed by anything: the receiver ignores it. */
    if (strncmp(line + 6, "UNKNOWN", 7) == 0 && (line[13] == '\0' || line[13] == ' '))
        return 1;
    /* Otherwise exactly six fields, each separated by one space. */
    char *s = line;
    for (;;) {
        if (ntok == 6)
            return BERTH_PROXY_EBADLINE;
        tok[ntok++] = s;
        char *sp = strchr(s, ' ');
        if (sp == NULL)
            break;
        *sp = '\0';
        s = sp + 1;
    }
    if (ntok != 6)
        return BERTH_PROXY_EBADLINE;
    for (size_t i = 0; i < 6; i++)
        if (tok[i][0] == '\0')
            return BERTH_PROXY_EBADLINE;
    int af;
    if (strcmp(tok[1], "TCP4") == 0)
        af = AF_INET;
    else if (strcmp(tok[1], "TCP6") == 0)
        af = AF_INET6;
    else
        return BERTH_PROXY_EBADLINE;
    uint16_t sport, dport;
    if (v1_port(tok[4], &sport) || v1_port(tok[5], &dport) ||
        v1_addr(af, tok[2], sport, &r->src, &r->srclen) ||
        v1_addr(af, tok[3], dport, &r->dst, &r->dstlen))
        return BERTH_PROXY_EBADLINE;
    r->family = af;
    return 1;
}

/* One byte of a v1 line (the signature is already in). */
static int v1_byte(berth_proxy_t *p, uint8_t b)
{
    if (p->len >= BERTH_PROXY_V1_MAX)
        return BERTH_PROXY_ETOOLONG;
    uint8_t prev = p->buf[p->len - 1];
    p->buf[p->len++] = b;
    if (prev == '\r' && b != '\n')
        return BERTH_PROXY_EBADLINE;
    if (b == '\n')
        return prev == '\r' ? v1_parse(p) : BERTH_PROXY_EBADLINE;
    if (b != '\r' && (b < 0x20 || b > 0x7e))
        return BERTH_PROXY_EBADLINE;
    return 0;
}

/* ---- v2 ---- */

static uint16_t be16(const uint8_t *b)
{
    return (uint16_t)((b[0] << 8) | b[1]);
}

/* What bytes 12 and 13 say, as soon as they are in. */
static int v2_check_fixed(const berth_proxy_t *p)
{
    if (p->len > 12) {
        uint8_t vc = p->buf[12];
        if ((vc >> 4) != 2 || ((vc & 0xF) != 0 && (vc & 0xF) != 1))
            return BERTH_PROXY_EBADVER;
    }
    if (p->len > 13 && (p->buf[12] & 0xF) == 1) {
        unsigned af = p->buf[13] >> 4, tr = p->buf[13] & 0xF;
        if (af > V2_AF_UNIX || tr > V2_TR_DGRAM)
            return BERTH_PROXY_EBADFAMILY;
        /* A stream listener: an IP address must come with the stream transport. */
        if ((af == V2_AF_INET || af == V2_AF_INET6) && tr != V2_TR_STREAM)
            return BERTH_PROXY_EBADFAMILY;
    }
    return 0;
}

/* The whole header is in buf. */
static int v2_parse(berth_proxy_t *p)
{
    berth_proxy_result_t *r = &p->result;
    const uint8_t *body = p->buf + 16;
    size_t blen = p->need - 16;
    r->version = 2;
    r->family = AF_UNSPEC;
    if ((p->buf[12] & 0xF) == 0) {
        /* LOCAL: whatever the body holds is not about a client. */
        r->command = BERTH_PROXY_CMD_LOCAL;
        return 1;
    }
    r->command = BERTH_PROXY_CMD_PROXY;
    unsigned af = p->buf[13] >> 4;
    size_t alen = af == V2_AF_INET ? 12 : af == V2_AF_INET6 ? 36 : af == V2_AF_UNIX ? 216 : 0;
    if (blen < alen)
        return BERTH_PROXY_EBADLEN;
    if (af == V2_AF_INET) {
        struct sockaddr_in *s = (struct sockaddr_in *)&r->src, *d = (struct sockaddr_in *)&r->dst;
        s->sin_family = d->sin_family = AF_INET;
        memcpy(&s->sin_addr, body, 4);
        memcpy(&d->sin_addr, body + 4, 4);
        memcpy(&s->sin_port, body + 8, 2);
        memcpy(&d->sin_port, body + 10, 2);
        r->srclen = r->dstlen = sizeof(struct sockaddr_in);
        r->family = AF_INET;
    } else if (af == V2_AF_INET6) {
        struct sockaddr_in6 *s = (struct sockaddr_in6 *)&r->src,
                            *d = (struct sockaddr_in6 *)&r->dst;
        s->sin6_family = d->sin6_family = AF_INET6;
        memcpy(&s->sin6_addr, body, 16);
        memcpy(&d->sin6_addr, body + 16, 16);
        memcpy(&s->sin6_port, body + 32, 2);
        memcpy(&d->sin6_port, body + 34, 2);
        r->srclen = r->dstlen = sizeof(struct sockaddr_in6);
        r->family = AF_INET6;
    }
    /* UNIX and UNSPEC carry nothing an IP listener can use: the real endpoints stand. */
    for (size_t off = alen; off < blen;) {
        if (blen - off < 3)
            return BERTH_PROXY_EBADTLV;
        size_t tlen = be16(body + off + 1);
        if (tlen > blen - off - 3)
            return BERTH_PROXY_EBADTLV;
        off += 3 + tlen;
        r->tlv_count++;
    }
    return 1;
}

int berth_proxy_feed(berth_proxy_t *p, const void *data, size_t len, size_t *used)
{
    const uint8_t *in = data;
    size_t i = 0;
    int rc = p->done;

    while (rc == 0 && i < len) {
        if (p->version == 0) {
            p->buf[p->len++] = in[i++];
            rc = check_signature(p);
        } else if (p->version == 1) {
            rc = v1_byte(p, in[i++]);
        } else if (p->need == 0) {
            /* v2, the fixed part: the version, command and family, then the length. */
            p->buf[p->len++] = in[i++];
            rc = v2_check_fixed(p);
            if (rc == 0 && p->len == 16) {
                size_t blen = be16(p->buf + 14);
                if (blen > BERTH_PROXY_V2_BODY_MAX)
                    rc = BERTH_PROXY_ETOOLONG;
                p->need = 16 + blen;
                if (rc == 0 && blen == 0)
                    rc = v2_parse(p);
            }
        } else {
            size_t n = p->need - p->len;
            if (n > len - i)
                n = len - i;
            memcpy(p->buf + p->len, in + i, n);
            p->len += n;
            i += n;
            if (p->len == p->need)
                rc = v2_parse(p);
        }
    }
    p->done = rc;
    if (used)
        *used = rc == 1 ? i : rc == 0 ? len : 0;
    return rc;
}
