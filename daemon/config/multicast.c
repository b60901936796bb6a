/*
 * The multicast keys of a udp listener: `multicast` (the groups), `multicast_interface`,
 * `multicast_source` (source-specific membership) and `multicast_loop`. Each value is checked
 * as it is read; what depends on the rest of the section (udp only, one family with the
 * address, an address that can receive the groups) when the section ends.
 *
 * An interface is resolved on this host when the config is read, so a name or an address
 * that no interface has is an error at its line, not a failed join at start.
 */
#include "config/parse.h"
#include "berth/units.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ifaddrs.h>
#include <net/if.h>
#include <stdio.h>
#include <string.h>

/* A numeric IPv4 or IPv6 address (no brackets, no port). */
static int parse_ip(const char *text, config_mcast_addr_t *out)
{
    memset(out, 0, sizeof *out);
    if (inet_pton(AF_INET, text, &out->in.sin_addr) == 1) {
        out->in.sin_family = AF_INET;
        return 0;
    }
    if (inet_pton(AF_INET6, text, &out->in6.sin6_addr) == 1) {
        out->in6.sin6_family = AF_INET6;
        return 0;
    }
    return -EINVAL;
}

static int is_multicast(const config_mcast_addr_t *a)
{
    if (a->sa.sa_family == AF_INET)
        return IN_MULTICAST(ntohl(a->in.sin_addr.s_addr));
    return IN6_IS_ADDR_MULTICAST(&a->in6.sin6_addr);
}

int config_mcast_same_ip(const config_mcast_addr_t *a, const config_mcast_addr_t *b)
{
    if (a->sa.sa_family != b->sa.sa_family)
        return 0;
    if (a->sa.sa_family == AF_INET)
        return a->in.sin_addr.s_addr == b->in.sin_addr.s_addr;
    return memcmp(&a->in6.sin6_addr, &b->in6.sin6_addr, sizeof a->in6.sin6_addr) == 0;
}

/* "GROUP[, GROUP...]": commas and/or blanks between them. */
int multicast_set_groups(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    config_mcast_t *m = &l->mcast;
    const char *q = value;
    char word[INET6_ADDRSTRLEN + 1];

    (void)p;
    m->ngroups = 0;
    for (;;) {
        q += strspn(q, ", \t");
        if (*q == '\0')
            break;
        size_t n = strcspn(q, ", \t");
        if (n >= sizeof word) {
            snprintf(err, errlen, "'%.*s...' is not an IPv4 or IPv6 address", 16, q);
            return -EINVAL;
        }
        memcpy(word, q, n);
        word[n] = '\0';
        q += n;
        config_mcast_addr_t a;
        if (parse_ip(word, &a) < 0) {
            snprintf(err, errlen, "'%s' is not an IPv4 or IPv6 address", word);
            return -EINVAL;
        }
        if (!is_multicast(&a)) {
            snprintf(err, errlen, "'%s' is not a multicast group (IPv4 224.0.0.0/4, IPv6 ff00::/8)",
                     word);
            return -EINVAL;
        }
        for (size_t i = 0; i < m->ngroups; i++) {
            if (config_mcast_same_ip(&m->groups[i], &a)) {
                snprintf(err, errlen, "'%s' is listed twice", word);
                return -EINVAL;
            }
        }
        if (m->ngroups == CONFIG_MCAST_MAX) {
            snprintf(err, errlen, "more than %d groups", CONFIG_MCAST_MAX);
            return -EINVAL;
        }
        m->groups[m->ngroups++] = a;
    }
    if (m->ngroups == 0) {
        snprintf(err, errlen, "the list is empty");
        return -EINVAL;
    }
    return 0;
}

/* The index of the interface that has address `a`, or 0. */
static unsigned ifindex_of_address(const config_mcast_addr_t *a, char *name, size_t namelen)
{
    struct ifaddrs *ifs = NULL;
    unsigned idx = 0;

    if (getifaddrs(&ifs) < 0)
        return 0;
    for (const struct ifaddrs *i = ifs; i && idx == 0; i = i->ifa_next) {
        if (!i->ifa_addr || i->ifa_addr->sa_family != a->sa.sa_family)
            continue;
        config_mcast_addr_t b;
        memset(&b, 0, sizeof b);
        memcpy(&b, i->ifa_addr, a->sa.sa_family == AF_INET ? sizeof b.in : sizeof b.in6);
        if (config_mcast_same_ip(a, &b)) {
            idx = if_nametoindex(i->ifa_name);
            snprintf(name, namelen, "%s", i->ifa_name);
        }
    }
    freeifaddrs(ifs);
    return idx;
}

int multicast_set_interface(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    config_mcast_addr_t a;
    char name[IF_NAMESIZE] = "";

    (void)p;
    if (*value == '\0' || strlen(value) >= sizeof l->mcast.interface) {
        snprintf(err, errlen, "expected an interface name or one of its addresses");
        return -EINVAL;
    }
    if (parse_ip(value, &a) == 0) {
        l->mcast.ifindex = ifindex_of_address(&a, name, sizeof name);
        if (l->mcast.ifindex == 0) {
            snprintf(err, errlen, "no interface of this host has the address %s", value);
            return -EINVAL;
        }
    } else {
        l->mcast.ifindex = strlen(value) < IF_NAMESIZE ? if_nametoindex(value) : 0;
        if (l->mcast.ifindex == 0) {
            snprintf(err, errlen, "no interface named %s on this host", value);
            return -EINVAL;
        }
    }
    snprintf(l->mcast.interface, sizeof l->mcast.interface, "%s", value);
    return 0;
}

int multicast_set_source(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;

    (void)p;
    if (parse_ip(value, &l->mcast.source) < 0 || is_multicast(&l->mcast.source)) {
        snprintf(err, errlen, "expected the unicast IPv4 or IPv6 address of the one sender");
        return -EINVAL;
    }
    l->mcast.has_source = 1;
    return 0;
}

int multicast_set_loop(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    int on = 0;

    (void)p;
    if (berth_parse_bool(value, &on) < 0) {
        snprintf(err, errlen, "must be on or off");
        return -EINVAL;
    }
    l->mcast.loop = on;
    return 0;
}

static const char *family_name(int family)
{
    return family == AF_INET ? "IPv4" : "IPv6";
}

void multicast_section_end(struct parse *p, size_t idx)
{
    const config_listener_t *l = &p->cfg->listeners[idx];
    const struct listener_state *ls = &p->ls[idx];
    const struct where *g = &ls->seen[LK_MULTICAST];

    for (int k = LK_MULTICAST; k <= LK_MULTICAST_LOOP; k++) {
        const struct where *w = &ls->seen[k];
        if (!w->line)
            continue;
        const char *key = k == LK_MULTICAST             ? "multicast"
                          : k == LK_MULTICAST_INTERFACE ? "multicast_interface"
                          : k == LK_MULTICAST_SOURCE    ? "multicast_source"
                                                        : "multicast_loop";
        if (ls->protocol_ok && l->protocol != BERTH_PROTO_UDP)
            parse_error_at(p, w->file, w->line, "%s: only udp listeners join multicast groups",
                           key);
        else if (k != LK_MULTICAST && !g->line)
            parse_error_at(p, w->file, w->line, "%s: the listener has no 'multicast' groups", key);
    }
    if (!g->line || !ls->address_ok || l->protocol != BERTH_PROTO_UDP || l->mcast.ngroups == 0)
        return;
    int family = l->addr.ss_family;
    for (size_t i = 0; i < l->mcast.ngroups; i++) {
        if (l->mcast.groups[i].sa.sa_family != family) {
            char text[INET6_ADDRSTRLEN] = "";
            const config_mcast_addr_t *a = &l->mcast.groups[i];
            inet_ntop(a->sa.sa_family,
                      a->sa.sa_family == AF_INET ? (const void *)&a->in.sin_addr
                                                 : (const void *)&a->in6.sin6_addr,
                      text, sizeof text);
            parse_error_at(p, g->file, g->line,
                           "multicast: group %s is %s but the address '%s' is %s (one family "
                           "per listener)",
                           text, family_name(a->sa.sa_family), l->address, family_name(family));
            return;
        }
    }
    const struct where *s = &ls->seen[LK_MULTICAST_SOURCE];
    if (l->mcast.has_source && l->mcast.source.sa.sa_family != family)
        parse_error_at(p, s->file, s->line, "multicast_source: %s but the address '%s' is %s",
                       family_name(l->mcast.source.sa.sa_family), l->address, family_name(family));
    /* A socket bound to a unicast address never sees a group's datagrams. */
    config_mcast_addr_t bound;
    memset(&bound, 0, sizeof bound);
    memcpy(&bound, &l->addr, family == AF_INET ? sizeof bound.in : sizeof bound.in6);
    int wildcard = family == AF_INET ? bound.in.sin_addr.s_addr == htonl(INADDR_ANY)
                                     : IN6_IS_ADDR_UNSPECIFIED(&bound.in6.sin6_addr);
    int group = 0;
    for (size_t i = 0; i < l->mcast.ngroups; i++)
        group |= config_mcast_same_ip(&bound, &l->mcast.groups[i]);
    if (!wildcard && !group)
        parse_error_at(p, ls->seen[LK_ADDRESS].file, ls->seen[LK_ADDRESS].line,
                       "address '%s': a multicast listener binds the wildcard (*:PORT, [::]:PORT) "
                       "or one of its groups",
                       l->address);
    else if (group && l->mcast.ngroups > 1)
        parse_error_at(p, ls->seen[LK_ADDRESS].file, ls->seen[LK_ADDRESS].line,
                       "address '%s': bound to one group, the socket would not receive the "
                       "others (bind the wildcard instead)",
                       l->address);
}
