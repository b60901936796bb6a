#include "socks5_config.h"

#include <errno.h>
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
    {.name = NULL},
};

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
    /* The rest of the table was parsed and bounded by the host. */
    for (const berth_option_t *o = socks5_options; o->name != NULL; o++)
        if (strcmp(o->name, key) == 0)
            return 0;
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
