/* CIDR lists for allow/deny rules: "127.0.0.0/8, ::1, 10.0.0.0/8:443" */
#ifndef BERTH_CIDR_H
#define BERTH_CIDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct berth_cidr {
    int family;       /* AF_INET, AF_INET6, or AF_UNSPEC for "*" (any address) */
    uint8_t addr[16]; /* network byte order; IPv4 in the first 4 bytes */
    uint8_t prefix;   /* 0..32 or 0..128 */
    uint16_t port;    /* 0 = any port */
} berth_cidr_t;

typedef struct berth_cidr_list {
    berth_cidr_t *items;
    size_t count;
} berth_cidr_list_t;

/* Parse one entry: "1.2.3.0/24", "::1", "[::1]:443", "10.0.0.0/8:80", "*" (everything).
 * with_port: accept an optional ":port" (IPv6 with a port must be bracketed, the prefix
 * inside or after the brackets: "[2001:db8::/32]:443" or "[2001:db8::]/32:443").
 * Returns 0 or -EINVAL. Host bits set beyond the prefix are an error. An IPv4-mapped IPv6
 * entry with a prefix of at least 96 ("::ffff:10.0.0.0/104") is stored as the IPv4 rule it
 * means, so it matches IPv4 and v4-mapped peers alike. */
int berth_cidr_parse(const char *text, int with_port, berth_cidr_t *out);
/* Parse a comma- or space-separated list, appending to *list. On error returns -EINVAL and
 * copies the offending entry into bad (NUL-terminated), or -ENOMEM; either way *list is left
 * as it was. An empty text appends nothing and returns 0. */
int berth_cidr_list_parse(berth_cidr_list_t *list, const char *text, int with_port, char *bad,
                          size_t badlen);
void berth_cidr_list_free(berth_cidr_list_t *list);
/* Does `addr` (AF_INET, AF_INET6; v4-mapped v6 matches v4 rules) match an entry? A port in
 * an entry must equal the address's port. AF_UNIX never matches. A v4-mapped peer is an IPv4
 * peer: IPv6 rules such as "::/0" do not match it; "*" matches every IPv4 and IPv6 peer. */
int berth_cidr_match(const berth_cidr_t *c, const struct sockaddr *addr);
int berth_cidr_list_match(const berth_cidr_list_t *list, const struct sockaddr *addr);

/* allow/deny policy: denied if deny matches; else allowed if allow is empty or matches.
 * AF_UNIX peers are always allowed (filesystem permissions guard them). */
int berth_cidr_permit(const berth_cidr_list_t *allow, const berth_cidr_list_t *deny,
                      const struct sockaddr *addr);

#ifdef __cplusplus
}
#endif
#endif
