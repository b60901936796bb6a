/* CIDR rules for allow/deny. Parsing is strict (a typo in an access rule must not widen it)
 * and matching treats a v4-mapped IPv6 peer as the IPv4 peer it is, so a dual-stack socket
 * sees the same policy as an IPv4 one. */
#include "berth/cidr.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Longest entry: a full IPv6 address, brackets, "/128" and ":65535". */
#define CIDR_TEXT_MAX (INET6_ADDRSTRLEN + 16)

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

/* Decimal digits only (1..maxdigits of them), value <= max. */
static int parse_uint(const char *text, size_t maxdigits, unsigned long max, unsigned long *out)
{
    unsigned long v = 0;
    size_t n = 0;
    int rc = -EINVAL;

    for (; text[n] >= '0' && text[n] <= '9'; n++) {
        if (n == maxdigits)
            goto out;
        v = v * 10 + (unsigned long)(text[n] - '0');
    }
    if (n == 0 || text[n] != '\0' || v > max)
        goto out;
    *out = v;
    rc = 0;
out:
    return rc;
}

static int has_host_bits(const uint8_t *addr, unsigned prefix, unsigned width)
{
    for (unsigned i = prefix / 8; i < width / 8; i++) {
        uint8_t mask = 0xff;
        if (i == prefix / 8 && prefix % 8)
            mask = (uint8_t)(0xff >> (prefix % 8));
        if (addr[i] & mask)
            return 1;
    }
    return 0;
}

static int prefix_equal(const uint8_t *a, const uint8_t *b, unsigned prefix)
{
    unsigned full = prefix / 8, rem = prefix % 8;

    if (memcmp(a, b, full) != 0)
        return 0;
    if (rem) {
        uint8_t mask = (uint8_t)(0xff << (8 - rem));
        if ((a[full] ^ b[full]) & mask)
            return 0;
    }
    return 1;
}

int berth_cidr_parse(const char *text, int with_port, berth_cidr_t *out)
{
    char buf[CIDR_TEXT_MAX];
    char *addr = buf, *prefix = NULL, *port = NULL;
    int bracketed = 0;
    unsigned width = 0;
    unsigned long v = 0;
    berth_cidr_t c = {0};
    size_t len;
    int rc = -EINVAL;

    if (!text || !out)
        goto out;
    len = strlen(text);
    if (len == 0 || len >= sizeof(buf))
        goto out;
    memcpy(buf, text, len + 1);

    if (buf[0] == '[') {
        char *close = strchr(buf, ']');
        char *rest;
        if (!close)
            goto out;
        *close = '\0';
        addr = buf + 1;
        bracketed = 1;
        rest = close + 1;
        if (*rest == '/') {
            prefix = rest + 1;
            rest = strchr(prefix, ':');
            if (rest)
                *rest++ = '\0';
            port = rest;
        } else if (*rest == ':') {
            port = rest + 1;
        } else if (*rest != '\0') {
            goto out;
        }
    } else {
        /* One colon: IPv4 (or "*") with a port. More: a bare IPv6 address, no port. */
        char *colon = strchr(buf, ':');
        if (colon && !strchr(colon + 1, ':')) {
            *colon = '\0';
            port = colon + 1;
        }
    }
    if (port && !with_port)
        goto out;

    char *slash = strchr(addr, '/');
    if (slash) {
        if (prefix)
            goto out;
        *slash = '\0';
        prefix = slash + 1;
    }

    if (strcmp(addr, "*") == 0) {
        if (prefix || bracketed)
            goto out;
        c.family = AF_UNSPEC;
    } else if (!bracketed && inet_pton(AF_INET, addr, c.addr) == 1) {
        c.family = AF_INET;
        width = 32;
    } else if (inet_pton(AF_INET6, addr, c.addr) == 1) {
        c.family = AF_INET6;
        width = 128;
    } else {
        goto out;
    }

    c.prefix = (uint8_t)width;
    if (prefix) {
        if (parse_uint(prefix, 3, width, &v) < 0)
            goto out;
        c.prefix = (uint8_t)v;
    }
    if (port) {
        if (parse_uint(port, 5, 65535, &v) < 0 || v == 0)
            goto out;
        c.port = (uint16_t)v;
    }
    if (has_host_bits(c.addr, c.prefix, width))
        goto out;

    if (c.family == AF_INET6 && c.prefix >= 96 &&
        memcmp(c.addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
        memmove(c.addr, c.addr + 12, 4);
        memset(c.addr + 4, 0, sizeof(c.addr) - 4);
        c.family = AF_INET;
        c.prefix = (uint8_t)(c.prefix - 96);
    }
    *out = c;
    rc = 0;
out:
    return rc;
}

int berth_cidr_list_parse(berth_cidr_list_t *list, const char *text, int with_port, char *bad,
                          size_t badlen)
{
    static const char seps[] = ", \t";
    size_t orig = list ? list->count : 0;
    const char *p = text;
    int rc = -EINVAL;

    if (bad && badlen)
        bad[0] = '\0';
    if (!list || !text)
        goto out;
    for (;;) {
        char tok[CIDR_TEXT_MAX];
        berth_cidr_t c;
        size_t n;

        p += strspn(p, seps);
        if (*p == '\0')
            break;
        n = strcspn(p, seps);
        if (n < sizeof(tok)) {
            memcpy(tok, p, n);
            tok[n] = '\0';
        }
        if (n >= sizeof(tok) || berth_cidr_parse(tok, with_port, &c) < 0) {
            if (bad && badlen)
                snprintf(bad, badlen, "%.*s", (int)n, p);
            rc = -EINVAL;
            goto out;
        }
        berth_cidr_t *items = realloc(list->items, (list->count + 1) * sizeof(*items));
        if (!items) {
            rc = -ENOMEM;
            goto out;
        }
        list->items = items;
        list->items[list->count++] = c;
        p += n;
    }
    rc = 0;
out:
    if (rc < 0 && list)
        list->count = orig;
    return rc;
}

void berth_cidr_list_free(berth_cidr_list_t *list)
{
    if (!list)
        return;
    free(list->items);
    list->items = NULL;
    list->count = 0;
}

/* The peer as (family, 16 address bytes, port), a v4-mapped IPv6 peer unmapped. Returns 0 for
 * anything that is neither IPv4 nor IPv6. The copies keep unaligned sockaddrs safe. */
static int peer_of(const struct sockaddr *sa, uint8_t addr[16], uint16_t *port)
{
    int family = 0;

    if (!sa)
        goto out;
    memset(addr, 0, 16);
    if (sa->sa_family == AF_INET) {
        struct sockaddr_in sin;
        memcpy(&sin, sa, sizeof(sin));
        memcpy(addr, &sin.sin_addr, 4);
        *port = ntohs(sin.sin_port);
        family = AF_INET;
    } else if (sa->sa_family == AF_INET6) {
        struct sockaddr_in6 sin6;
        memcpy(&sin6, sa, sizeof(sin6));
        *port = ntohs(sin6.sin6_port);
        if (memcmp(sin6.sin6_addr.s6_addr, v4mapped_prefix, sizeof(v4mapped_prefix)) == 0) {
            memcpy(addr, sin6.sin6_addr.s6_addr + 12, 4);
            family = AF_INET;
        } else {
            memcpy(addr, sin6.sin6_addr.s6_addr, 16);
            family = AF_INET6;
        }
    }
out:
    return family;
}

int berth_cidr_match(const berth_cidr_t *c, const struct sockaddr *addr)
{
    uint8_t a[16];
    uint16_t port = 0;
    int family = peer_of(addr, a, &port);

    if (!c || family == 0)
        return 0;
    if (c->port && c->port != port)
        return 0;
    if (c->family == AF_UNSPEC)
        return 1;
    return c->family == family && prefix_equal(c->addr, a, c->prefix);
}

int berth_cidr_list_match(const berth_cidr_list_t *list, const struct sockaddr *addr)
{
    if (!list)
        return 0;
    for (size_t i = 0; i < list->count; i++)
        if (berth_cidr_match(&list->items[i], addr))
            return 1;
    return 0;
}

int berth_cidr_permit(const berth_cidr_list_t *allow, const berth_cidr_list_t *deny,
                      const struct sockaddr *addr)
{
    if (addr && addr->sa_family == AF_UNIX)
        return 1;
    if (berth_cidr_list_match(deny, addr))
        return 0;
    return !allow || allow->count == 0 || berth_cidr_list_match(allow, addr);
}
