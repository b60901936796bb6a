#include "socks5_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socks5_proto.h"

static const char *const auth_choices[] = {"none", "password", "certificate", NULL};

#define OPT(n, t, f, member, d, lo, hi, ch, h)                                                     \
    {                                                                                              \
        .name = n, .type = t, .flags = f, .offset = offsetof(socks5_opts_t, member), .def = d,     \
        .min = lo, .max = hi, .choices = ch, .help = h                                             \
    }
#define DAY_MS (24 * 3600 * 1000LL)

const berth_option_t socks5_options[] = {
    OPT("auth", BERTH_OPT_ENUM, 0, auth, "none", 0, 0, auth_choices,
        "none, password (RFC 1929, needs users) or certificate (the TLS client certificate)"),
    OPT("users", BERTH_OPT_STRING, 0, users, NULL, 0, 0, NULL,
        "a file of name:crypt(3)-hash lines; required by auth = password"),
    OPT("allow_dest", BERTH_OPT_CIDR_LIST, BERTH_OPT_PORTS, allow_dest, NULL, 0, 0, NULL,
        "destinations a CONNECT may reach; none by default (never an open proxy)"),
    OPT("deny_dest", BERTH_OPT_CIDR_LIST, BERTH_OPT_PORTS, deny_dest, NULL, 0, 0, NULL,
        "destinations carved out of allow_dest"),
    OPT("handshake_timeout", BERTH_OPT_DURATION, 0, handshake_ms, "10s", 1, DAY_MS, NULL,
        "from accept until the request is read"),
    OPT("connect_timeout", BERTH_OPT_DURATION, 0, connect_ms, "10s", 1, DAY_MS, NULL,
        "from the request until the destination answers"),
    OPT("relay_idle_timeout", BERTH_OPT_DURATION, 0, idle_ms, "5m", 0, 0, NULL,
        "no traffic either way for this long ends a relay; 0: never"),
    OPT("auth_fail_limit", BERTH_OPT_INT, 0, fail_limit, "5", 0, 100000, NULL,
        "wrong passwords per source and window before throttling; 0: off"),
    OPT("auth_fail_window", BERTH_OPT_DURATION, 0, fail_window_ms, "1m", 1, DAY_MS, NULL,
        "the window wrong passwords are counted in"),
    OPT("auth_fail_block", BERTH_OPT_DURATION, 0, fail_block_ms, "1m", 1, DAY_MS, NULL,
        "how long a source is refused after 2 x auth_fail_limit"),
    OPT("udp", BERTH_OPT_BOOL, 0, udp, "off", 0, 0, NULL,
        "serve UDP ASSOCIATE (RFC 1928 section 7); tcp listeners only"),
    OPT("udp_address", BERTH_OPT_STRING, 0, udp_address, NULL, 0, 0, NULL,
        "ADDR, ADDR:PORT, ADDR:PORT-PORT or :PORT-PORT the relay binds; default: the address "
        "the client reached, an ephemeral port"),
    OPT("udp_idle_timeout", BERTH_OPT_DURATION, 0, udp_idle_ms, "2m", 1, DAY_MS, NULL,
        "an association with no datagram either way for this long ends"),
    OPT("udp_associations", BERTH_OPT_INT, 0, udp_max, "64", 1, 100000, NULL,
        "UDP associations at once, per listener in each worker"),
    OPT("udp_queue", BERTH_OPT_INT, 0, udp_queue, "16", 1, 4096, NULL,
        "datagrams of one association waiting for a name to resolve; more are dropped"),
    OPT("bind", BERTH_OPT_BOOL, 0, bind, "off", 0, 0, NULL,
        "serve BIND (RFC 1928 section 6); tcp listeners only"),
    OPT("bind_timeout", BERTH_OPT_DURATION, 0, bind_ms, "1m", 1, DAY_MS, NULL,
        "how long a BIND waits for its one incoming connection"),
    OPT("bind_max", BERTH_OPT_INT, 0, bind_max, "16", 1, 100000, NULL,
        "BINDs at once (waiting or relaying), per listener in each worker"),
    {.name = NULL},
};

static int parse_port(const char *text, size_t len, unsigned *port)
{
    unsigned long n = 0;

    if (len == 0 || len > 5)
        return -EINVAL;
    for (size_t i = 0; i < len; i++) {
        if (text[i] < '0' || text[i] > '9')
            return -EINVAL;
        n = n * 10 + (unsigned long)(text[i] - '0');
    }
    if (n > 65535)
        return -EINVAL;
    *port = (unsigned)n;
    return 0;
}

int socks5_parse_udp_address(const char *value, struct sockaddr_storage *addr, uint16_t *first,
                             uint16_t *last)
{
    char host[INET6_ADDRSTRLEN + 1];
    const char *ports = NULL;
    size_t hlen;
    unsigned a = 0, b = 0;

    memset(addr, 0, sizeof(*addr));
    if (value[0] == '[') {
        const char *end = strchr(value, ']');

        if (end == NULL || (end[1] != '\0' && end[1] != ':'))
            return -EINVAL;
        hlen = (size_t)(end - value - 1);
        if (hlen >= sizeof(host) || hlen == 0)
            return -EINVAL;
        memcpy(host, value + 1, hlen);
        host[hlen] = '\0';
        if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)addr)->sin6_addr) != 1)
            return -EINVAL;
        addr->ss_family = AF_INET6;
        ports = end[1] == ':' ? end + 2 : NULL;
    } else {
        const char *colon = strchr(value, ':');

        if (colon != NULL && strchr(colon + 1, ':') != NULL) { /* bare IPv6, no port */
            colon = NULL;
        }
        hlen = colon ? (size_t)(colon - value) : strlen(value);
        if (hlen >= sizeof(host))
            return -EINVAL;
        memcpy(host, value, hlen);
        host[hlen] = '\0';
        if (hlen > 0) {
            if (inet_pton(AF_INET, host, &((struct sockaddr_in *)addr)->sin_addr) == 1)
                addr->ss_family = AF_INET;
            else if (inet_pton(AF_INET6, host, &((struct sockaddr_in6 *)addr)->sin6_addr) == 1)
                addr->ss_family = AF_INET6;
            else
                return -EINVAL;
        } else if (colon == NULL) {
            return -EINVAL; /* empty */
        }
        ports = colon ? colon + 1 : NULL;
    }
    if (ports != NULL) {
        const char *dash = strchr(ports, '-');

        if (parse_port(ports, dash ? (size_t)(dash - ports) : strlen(ports), &a) < 0)
            return -EINVAL;
        b = a;
        if (dash != NULL && (parse_port(dash + 1, strlen(dash + 1), &b) < 0 || a == 0 || b < a))
            return -EINVAL;
    } else if (addr->ss_family == 0) {
        return -EINVAL;
    }
    *first = (uint16_t)a;
    *last = (uint16_t)b;
    return 0;
}

int socks5_config_check(const berth_host_t *host, const char *key, const char *value, char *err,
                        size_t errlen)
{
    (void)host;
    if (strcmp(key, "users") == 0) {
        socks5_users_t *users;
        int rc = socks5_users_load(value, &users, err, errlen);

        socks5_users_free(users);
        return rc < 0 ? -EINVAL : 0;
    }
    if (strcmp(key, "udp_address") == 0) {
        struct sockaddr_storage ss;
        uint16_t a, b;

        if (socks5_parse_udp_address(value, &ss, &a, &b) < 0) {
            snprintf(err, errlen,
                     "udp_address: '%s' is not ADDR, ADDR:PORT, ADDR:PORT-PORT or :PORT-PORT "
                     "(IPv6 in brackets before a port)",
                     value);
            return -EINVAL;
        }
        return 0;
    }
    /* The rest of the table was parsed and bounded by the host. */
    for (const berth_option_t *o = socks5_options; o->name != NULL; o++)
        if (strcmp(o->name, key) == 0)
            return 0;
    snprintf(err, errlen,
             "unknown option '%s' for socks5 (known: auth, users, allow_dest, deny_dest, "
             "handshake_timeout, connect_timeout, relay_idle_timeout, auth_fail_limit, "
             "auth_fail_window, auth_fail_block, udp, udp_address, udp_idle_timeout, "
             "udp_associations, udp_queue, bind, bind_timeout, bind_max)",
             key);
    return -EINVAL;
}

void socks5_config_free(socks5_config_t *cfg)
{
    if (cfg == NULL)
        return;
    socks5_users_free(cfg->users);
    socks5_throttle_free(cfg->throttle);
    free(cfg->udp_active);
    free(cfg->bind_live);
    berth_cidr_list_free(&cfg->allow_dest);
    berth_cidr_list_free(&cfg->deny_dest);
    free(cfg);
}

/* The config owns its rules: the host's parsed lists live only as long as the listener's
 * options, and socks5_config_free frees these. */
static int copy_rules(berth_cidr_list_t *to, const berth_cidr_list_t *from)
{
    to->count = 0;
    to->items = NULL;
    if (from->count == 0)
        return 0;
    to->items = malloc(from->count * sizeof(*from->items));
    if (to->items == NULL)
        return -ENOMEM;
    memcpy(to->items, from->items, from->count * sizeof(*from->items));
    to->count = from->count;
    return 0;
}

int socks5_config_build(const berth_host_t *host, const socks5_opts_t *o, socks5_option_fn get,
                        void *ctx, socks5_config_t **out, char *err, size_t errlen)
{
    socks5_config_t *cfg;
    int rc = 0;

    (void)host;
    (void)get; /* keys outside the table, read as text */
    (void)ctx;
    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    cfg->method = o->auth == SOCKS5_AUTH_PASSWORD ? SOCKS5_METHOD_PASSWORD : SOCKS5_METHOD_NONE;
    cfg->certificate = o->auth == SOCKS5_AUTH_CERTIFICATE;
    cfg->handshake_ms = o->handshake_ms;
    cfg->connect_ms = o->connect_ms;
    cfg->idle_ms = o->idle_ms;
    cfg->fail_limit = (unsigned)o->fail_limit;
    cfg->fail_window_ms = o->fail_window_ms;
    cfg->fail_block_ms = o->fail_block_ms;
    cfg->udp = o->udp != 0;
    cfg->bind = o->bind != 0;
    cfg->udp_idle_ms = o->udp_idle_ms;
    cfg->udp_max = (unsigned)o->udp_max;
    cfg->udp_queue = (unsigned)o->udp_queue;
    cfg->bind_ms = o->bind_ms;
    cfg->bind_max = (unsigned)o->bind_max;

    if (cfg->method == SOCKS5_METHOD_PASSWORD && o->users == NULL) {
        snprintf(err, errlen, "auth = password needs users = FILE");
        rc = -EINVAL;
        goto out;
    }
    if (cfg->method == SOCKS5_METHOD_NONE && o->users != NULL) {
        /* Most likely a forgotten `auth = password`: refuse rather than run an open door. */
        snprintf(err, errlen, "users is set but auth is %s: add auth = password",
                 cfg->certificate ? "certificate" : "none");
        rc = -EINVAL;
        goto out;
    }
    if (o->users != NULL && (rc = socks5_users_load(o->users, &cfg->users, err, errlen)) < 0)
        goto out;
    if (copy_rules(&cfg->allow_dest, &o->allow_dest) < 0 ||
        copy_rules(&cfg->deny_dest, &o->deny_dest) < 0) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    if (o->udp_address != NULL &&
        socks5_parse_udp_address(o->udp_address, &cfg->udp_addr, &cfg->udp_port,
                                 &cfg->udp_port_last) < 0) {
        snprintf(err, errlen, "udp_address: '%s' is not ADDR[:PORT[-PORT]]", o->udp_address);
        rc = -EINVAL;
        goto out;
    }
    if ((cfg->udp && (cfg->udp_active = calloc(1, sizeof(*cfg->udp_active))) == NULL) ||
        (cfg->bind && (cfg->bind_live = calloc(1, sizeof(*cfg->bind_live))) == NULL)) {
        snprintf(err, errlen, "out of memory");
        rc = -ENOMEM;
        goto out;
    }
    if (cfg->method == SOCKS5_METHOD_PASSWORD && cfg->fail_limit > 0) {
        cfg->throttle =
            socks5_throttle_new(cfg->fail_limit, cfg->fail_window_ms, cfg->fail_block_ms);
        if (cfg->throttle == NULL) {
            snprintf(err, errlen, "out of memory");
            rc = -ENOMEM;
            goto out;
        }
    }
    *out = cfg;
    cfg = NULL;
out:
    socks5_config_free(cfg);
    return rc;
}

int socks5_dest_allowed(const socks5_config_t *cfg, const struct sockaddr *addr)
{
    if (berth_cidr_list_match(&cfg->deny_dest, addr))
        return 0;
    return berth_cidr_list_match(&cfg->allow_dest, addr);
}

int socks5_bind_peer_ok(const socks5_config_t *cfg, const struct sockaddr *want,
                        const struct sockaddr *peer, uint16_t dst_port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (peer->sa_family == AF_INET) {
        memcpy(&ss, peer, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&ss)->sin_port = htons(dst_port);
    } else if (peer->sa_family == AF_INET6) {
        memcpy(&ss, peer, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(dst_port);
    } else {
        return 0;
    }
    if (want != NULL && want->sa_family != 0) {
        if (want->sa_family != peer->sa_family)
            return 0;
        if (want->sa_family == AF_INET &&
            memcmp(&((const struct sockaddr_in *)(const void *)want)->sin_addr,
                   &((const struct sockaddr_in *)(const void *)peer)->sin_addr, 4) != 0)
            return 0;
        if (want->sa_family == AF_INET6 &&
            memcmp(&((const struct sockaddr_in6 *)(const void *)want)->sin6_addr,
                   &((const struct sockaddr_in6 *)(const void *)peer)->sin6_addr, 16) != 0)
            return 0;
    }
    return socks5_dest_allowed(cfg, (const struct sockaddr *)&ss);
}
