#include "socks5_config.h"

#include <errno.h>
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
    snprintf(err, errlen,
             "unknown option '%s' for socks5 (known: auth, users, allow_dest, deny_dest, "
             "handshake_timeout, connect_timeout, relay_idle_timeout, auth_fail_limit, "
             "auth_fail_window, auth_fail_block)",
             key);
    return -EINVAL;
}

void socks5_config_free(socks5_config_t *cfg)
{
    if (cfg == NULL)
        return;
    socks5_users_free(cfg->users);
    socks5_throttle_free(cfg->throttle);
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
