#include "socks5_config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "socks5_proto.h"

/* `certificate` is method 0 (no auth) on the wire: the TLS handshake already proved who the
 * client is. */
static int parse_auth(const char *value, uint8_t *method, uint8_t *certificate)
{
    *certificate = 0;
    if (strcmp(value, "none") == 0) {
        *method = SOCKS5_METHOD_NONE;
    } else if (strcmp(value, "password") == 0) {
        *method = SOCKS5_METHOD_PASSWORD;
    } else if (strcmp(value, "certificate") == 0) {
        *method = SOCKS5_METHOD_NONE;
        *certificate = 1;
    } else {
        return -EINVAL;
    }
    return 0;
}

#define AUTH_VALUES "none, password or certificate"

/* A duration; `positive`: 0 is refused (a zero handshake or connect timeout would refuse
 * every client). */
static int parse_ms(const berth_host_t *host, const char *key, const char *value, int positive,
                    uint64_t *ms, char *err, size_t errlen)
{
    if (host->parse_duration(value, ms) < 0 || (positive && *ms == 0)) {
        snprintf(err, errlen, "%s: '%s' is not a %sduration (e.g. 500ms, 10s, 5m)", key, value,
                 positive ? "positive " : "");
        return -EINVAL;
    }
    return 0;
}

static int parse_limit(const char *key, const char *value, unsigned *out, char *err, size_t errlen)
{
    char *end;
    unsigned long n;

    errno = 0;
    n = value[0] >= '0' && value[0] <= '9' ? strtoul(value, &end, 10) : 0;
    if (value[0] < '0' || value[0] > '9' || *end != '\0' || errno != 0 || n > 100000) {
        snprintf(err, errlen, "%s: '%s' is not a count from 0 to 100000", key, value);
        return -EINVAL;
    }
    *out = (unsigned)n;
    return 0;
}

static int parse_rules(berth_cidr_list_t *list, const char *key, const char *value, char *err,
                       size_t errlen)
{
    char bad[128];

    if (berth_cidr_list_parse(list, value, 1, bad, sizeof(bad)) < 0) {
        snprintf(err, errlen, "%s: '%s' is not an address or CIDR with an optional :port", key,
                 bad);
        return -EINVAL;
    }
    return 0;
}

static int parse_onoff(const berth_host_t *host, const char *key, const char *value, uint8_t *out,
                       char *err, size_t errlen)
{
    int b;

    if (host->parse_bool(value, &b) < 0) {
        snprintf(err, errlen, "%s: '%s' is not on or off", key, value);
        return -EINVAL;
    }
    *out = b ? 1 : 0;
    return 0;
}

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
    uint64_t ms;

    if (strcmp(key, "auth") == 0) {
        uint8_t m, c;

        if (parse_auth(value, &m, &c) < 0) {
            snprintf(err, errlen, "auth: '%s' is not " AUTH_VALUES, value);
            return -EINVAL;
        }
        return 0;
    }
    if (strcmp(key, "users") == 0) {
        socks5_users_t *users;
        int rc = socks5_users_load(value, &users, err, errlen);

        socks5_users_free(users);
        return rc < 0 ? -EINVAL : 0;
    }
    if (strcmp(key, "allow_dest") == 0 || strcmp(key, "deny_dest") == 0) {
        berth_cidr_list_t list = {0};
        int rc = parse_rules(&list, key, value, err, errlen);

        berth_cidr_list_free(&list);
        return rc;
    }
    if (strcmp(key, "handshake_timeout") == 0 || strcmp(key, "connect_timeout") == 0)
        return parse_ms(host, key, value, 1, &ms, err, errlen);
    if (strcmp(key, "relay_idle_timeout") == 0)
        return parse_ms(host, key, value, 0, &ms, err, errlen);
    if (strcmp(key, "auth_fail_window") == 0 || strcmp(key, "auth_fail_block") == 0)
        return parse_ms(host, key, value, 1, &ms, err, errlen);
    if (strcmp(key, "auth_fail_limit") == 0) {
        unsigned n;

        return parse_limit(key, value, &n, err, errlen);
    }
    if (strcmp(key, "udp") == 0 || strcmp(key, "bind") == 0) {
        uint8_t b;

        return parse_onoff(host, key, value, &b, err, errlen);
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
    if (strcmp(key, "udp_idle_timeout") == 0 || strcmp(key, "bind_timeout") == 0)
        return parse_ms(host, key, value, 1, &ms, err, errlen);
    if (strcmp(key, "udp_associations") == 0 || strcmp(key, "udp_queue") == 0) {
        unsigned n;

        if (parse_limit(key, value, &n, err, errlen) < 0)
            return -EINVAL;
        if (n == 0) {
            snprintf(err, errlen, "%s: must be at least 1 (udp = off turns UDP off)", key);
            return -EINVAL;
        }
        return 0;
    }
    snprintf(err, errlen,
             "unknown option '%s' for socks5 (known: auth, users, allow_dest, deny_dest, "
             "handshake_timeout, connect_timeout, relay_idle_timeout, auth_fail_limit, "
             "auth_fail_window, auth_fail_block, udp, udp_address, udp_idle_timeout, "
             "udp_associations, udp_queue, bind, bind_timeout)",
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
    berth_cidr_list_free(&cfg->allow_dest);
    berth_cidr_list_free(&cfg->deny_dest);
    free(cfg);
}

int socks5_config_build(const berth_host_t *host, socks5_option_fn get, void *ctx,
                        socks5_config_t **out, char *err, size_t errlen)
{
    socks5_config_t *cfg;
    const char *v, *users;
    int rc = 0;

    *out = NULL;
    cfg = calloc(1, sizeof(*cfg));
    if (cfg == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
    }
    cfg->method = SOCKS5_METHOD_NONE;
    cfg->handshake_ms = SOCKS5_DEFAULT_HANDSHAKE_MS;
    cfg->connect_ms = SOCKS5_DEFAULT_CONNECT_MS;
    cfg->idle_ms = SOCKS5_DEFAULT_IDLE_MS;
    cfg->fail_limit = SOCKS5_DEFAULT_FAIL_LIMIT;
    cfg->fail_window_ms = SOCKS5_DEFAULT_FAIL_WINDOW_MS;
    cfg->fail_block_ms = SOCKS5_DEFAULT_FAIL_BLOCK_MS;
    cfg->udp_idle_ms = SOCKS5_DEFAULT_UDP_IDLE_MS;
    cfg->udp_max = SOCKS5_DEFAULT_UDP_ASSOCIATIONS;
    cfg->udp_queue = SOCKS5_DEFAULT_UDP_QUEUE;
    cfg->bind_ms = SOCKS5_DEFAULT_BIND_MS;

    if ((v = get(ctx, "auth")) != NULL && parse_auth(v, &cfg->method, &cfg->certificate) < 0) {
        snprintf(err, errlen, "auth: '%s' is not " AUTH_VALUES, v);
        rc = -EINVAL;
        goto out;
    }
    users = get(ctx, "users");
    if (cfg->method == SOCKS5_METHOD_PASSWORD && users == NULL) {
        snprintf(err, errlen, "auth = password needs users = FILE");
        rc = -EINVAL;
        goto out;
    }
    if (cfg->method == SOCKS5_METHOD_NONE && users != NULL) {
        /* Most likely a forgotten `auth = password`: refuse rather than run an open door. */
        snprintf(err, errlen, "users is set but auth is %s: add auth = password",
                 cfg->certificate ? "certificate" : "none");
        rc = -EINVAL;
        goto out;
    }
    if (users != NULL && (rc = socks5_users_load(users, &cfg->users, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "allow_dest")) != NULL &&
        (rc = parse_rules(&cfg->allow_dest, "allow_dest", v, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "deny_dest")) != NULL &&
        (rc = parse_rules(&cfg->deny_dest, "deny_dest", v, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "handshake_timeout")) != NULL &&
        (rc = parse_ms(host, "handshake_timeout", v, 1, &cfg->handshake_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "connect_timeout")) != NULL &&
        (rc = parse_ms(host, "connect_timeout", v, 1, &cfg->connect_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "relay_idle_timeout")) != NULL &&
        (rc = parse_ms(host, "relay_idle_timeout", v, 0, &cfg->idle_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "auth_fail_limit")) != NULL &&
        (rc = parse_limit("auth_fail_limit", v, &cfg->fail_limit, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "auth_fail_window")) != NULL &&
        (rc = parse_ms(host, "auth_fail_window", v, 1, &cfg->fail_window_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "auth_fail_block")) != NULL &&
        (rc = parse_ms(host, "auth_fail_block", v, 1, &cfg->fail_block_ms, err, errlen)) < 0)
        goto out;
    /* Every key was checked one by one already (check_option): only the values are read. */
    if ((v = get(ctx, "udp")) != NULL &&
        (rc = parse_onoff(host, "udp", v, &cfg->udp, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "bind")) != NULL &&
        (rc = parse_onoff(host, "bind", v, &cfg->bind, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "udp_address")) != NULL &&
        socks5_parse_udp_address(v, &cfg->udp_addr, &cfg->udp_port, &cfg->udp_port_last) < 0) {
        snprintf(err, errlen, "udp_address: '%s' is not ADDR[:PORT[-PORT]]", v);
        rc = -EINVAL;
        goto out;
    }
    if ((v = get(ctx, "udp_idle_timeout")) != NULL &&
        (rc = parse_ms(host, "udp_idle_timeout", v, 1, &cfg->udp_idle_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "bind_timeout")) != NULL &&
        (rc = parse_ms(host, "bind_timeout", v, 1, &cfg->bind_ms, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "udp_associations")) != NULL &&
        (rc = parse_limit("udp_associations", v, &cfg->udp_max, err, errlen)) < 0)
        goto out;
    if ((v = get(ctx, "udp_queue")) != NULL &&
        (rc = parse_limit("udp_queue", v, &cfg->udp_queue, err, errlen)) < 0)
        goto out;
    if (cfg->udp && (cfg->udp_max == 0 || cfg->udp_queue == 0)) {
        snprintf(err, errlen, "udp_associations and udp_queue must be at least 1");
        rc = -EINVAL;
        goto out;
    }
    if (cfg->udp && (cfg->udp_active = calloc(1, sizeof(*cfg->udp_active))) == NULL) {
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
