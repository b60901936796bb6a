/* Unit tests for the socks5 options and destination rules (socks5_config.c). The values go
 * through the daemon's own parser of declared options (config/plugin_opts.c), as berthd
 * parses them for the plugin, then through the plugin's check_option and build. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <arpa/inet.h>
#include <crypt.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "socks5_config.h"
#include "socks5_proto.h"
#include "berth/units.h"
#include "config/plugin_opts.h"

static berth_host_t host = {
    .abi_version = BERTH_ABI_VERSION,
    .size = sizeof(berth_host_t),
    .parse_duration = berth_parse_duration,
    .parse_size = berth_parse_size,
    .parse_bool = berth_parse_bool,
};

/* Options as a NULL-terminated key, value, key, value... array. */
static const char *table_get(void *ctx, const char *key)
{
    const char **kv = ctx;

    for (; kv[0] != NULL; kv += 2)
        if (strcmp(kv[0], key) == 0)
            return kv[1];
    return NULL;
}

static int check(const char *key, const char *value, char *err, size_t errlen)
{
    err[0] = '\0';
    return socks5_config_check(&host, key, value, err, errlen);
}

/* The host's half: kv parsed against socks5_options as berthd does, FILE:LINE errors and
 * all. 0 and *out, or -EINVAL with the first message in err. */
static int parse(const char **kv, socks5_opts_t **out, char *err, size_t errlen)
{
    config_option_t opts[16];
    config_listener_t lc;
    config_errors_t errs = {0};
    size_t n = 0;
    void *parsed = NULL;
    int rc;

    memset(&lc, 0, sizeof(lc));
    for (; kv[0] != NULL && n < 16; kv += 2, n++)
        opts[n] = (config_option_t){(char *)kv[0], (char *)kv[1], "t.conf", (int)n + 2};
    lc.name = (char *)"socks";
    lc.file = "t.conf";
    lc.line = 1;
    lc.options = opts;
    lc.noptions = n;
    rc = plugin_opts_parse(socks5_options, sizeof(socks5_opts_t), "socks5", &lc, &parsed, &errs);
    snprintf(err, errlen, "%s", errs.count ? errs.msgs[0] : "");
    config_errors_free(&errs);
    *out = parsed;
    return rc;
}

static void test_table(void **state)
{
    char err[512];

    assert_int_equal(
        plugin_opts_check_table(socks5_options, sizeof(socks5_opts_t), err, sizeof(err)), 0);
}

static int check_value(const char *key, const char *value, char *err, size_t errlen)
{
    const char *kv[] = {key, value, NULL};
    socks5_opts_t *o = NULL;
    int rc = parse(kv, &o, err, errlen);

    plugin_opts_free(socks5_options, o);
    return rc;
}

static void test_check_options(void **state)
{
    char err[512];

    assert_int_equal(check_value("auth", "none", err, sizeof(err)), 0);
    assert_int_equal(check_value("auth", "password", err, sizeof(err)), 0);
    assert_int_equal(check_value("auth", "gssapi", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "gssapi"));
    assert_non_null(strstr(err, "t.conf:2: auth:"));

    assert_int_equal(
        check_value("allow_dest", "127.0.0.0/8, ::1, [::1]:8080 10.0.0.0/8:443", err, sizeof(err)),
        0);
    assert_int_equal(check_value("deny_dest", "127.0.0.1:22", err, sizeof(err)), 0);
    assert_int_equal(check_value("allow_dest", "127.0.0.1/33", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "allow_dest"));
    assert_int_equal(check_value("deny_dest", "example.com", err, sizeof(err)), -EINVAL);

    assert_int_equal(check_value("handshake_timeout", "250ms", err, sizeof(err)), 0);
    assert_int_equal(check_value("connect_timeout", "1m", err, sizeof(err)), 0);
    assert_int_equal(check_value("connect_timeout", "0", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("handshake_timeout", "soon", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "soon"));
    assert_int_equal(check_value("relay_idle_timeout", "0", err, sizeof(err)), 0);
    assert_int_equal(check_value("relay_idle_timeout", "-1s", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("auth_fail_limit", "100000", err, sizeof(err)), 0);
    assert_int_equal(check_value("auth_fail_limit", "100001", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "auth_fail_limit: want an integer 0..100000"));

    /* What the table cannot say, and keys outside it: the plugin's check_option. */
    assert_int_equal(check("users", "/nonexistent/users", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "/nonexistent/users"));
    assert_int_equal(check("auth", "none", err, sizeof(err)), 0);
    assert_int_equal(check("alow_dest", "127.0.0.1", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "unknown option 'alow_dest'"));
}

static socks5_config_t *build(const char **kv, int want_rc, const char *want_err)
{
    socks5_config_t *cfg = NULL;
    socks5_opts_t *o = NULL;
    char err[512] = "";
    int rc = parse(kv, &o, err, sizeof(err));

    if (rc == 0)
        rc = socks5_config_build(&host, o, table_get, kv, &cfg, err, sizeof(err));
    plugin_opts_free(socks5_options, o);
    assert_int_equal(rc, want_rc);
    if (want_err != NULL && strstr(err, want_err) == NULL)
        fail_msg("error '%s' does not mention '%s'", err, want_err);
    return cfg;
}

static int allowed(const socks5_config_t *cfg, const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':') != NULL) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &s6->sin6_addr), 1);
    } else {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

        s4->sin_family = AF_INET;
        s4->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &s4->sin_addr), 1);
    }
    return socks5_dest_allowed(cfg, (const struct sockaddr *)&ss);
}

static void test_defaults_allow_nothing(void **state)
{
    const char *kv[] = {NULL};
    socks5_config_t *cfg = build(kv, 0, NULL);

    assert_int_equal(cfg->method, SOCKS5_METHOD_NONE);
    assert_null(cfg->users);
    assert_int_equal(cfg->handshake_ms, 10000);
    assert_int_equal(cfg->connect_ms, 10000);
    assert_int_equal(cfg->idle_ms, 300000);
    /* Never an open proxy by default. */
    assert_int_equal(allowed(cfg, "127.0.0.1", 80), 0);
    assert_int_equal(allowed(cfg, "::1", 80), 0);
    assert_int_equal(allowed(cfg, "8.8.8.8", 53), 0);
    socks5_config_free(cfg);
}

static void test_rules(void **state)
{
    const char *kv[] = {"allow_dest",
                        "127.0.0.0/8, [::1]:8080",
                        "deny_dest",
                        "127.0.0.1:22, 127.0.0.2",
                        "handshake_timeout",
                        "3s",
                        "connect_timeout",
                        "1500ms",
                        "relay_idle_timeout",
                        "0",
                        NULL};
    socks5_config_t *cfg = build(kv, 0, NULL);

    assert_int_equal(cfg->handshake_ms, 3000);
    assert_int_equal(cfg->connect_ms, 1500);
    assert_int_equal(cfg->idle_ms, 0);
    assert_int_equal(allowed(cfg, "127.0.0.1", 80), 1);
    assert_int_equal(allowed(cfg, "127.255.0.9", 1), 1);
    assert_int_equal(allowed(cfg, "127.0.0.1", 22), 0);        /* deny with a port */
    assert_int_equal(allowed(cfg, "127.0.0.2", 80), 0);        /* deny without one */
    assert_int_equal(allowed(cfg, "::ffff:127.0.0.1", 80), 1); /* v4-mapped is v4 */
    assert_int_equal(allowed(cfg, "::ffff:127.0.0.1", 22), 0);
    assert_int_equal(allowed(cfg, "::1", 8080), 1);
    assert_int_equal(allowed(cfg, "::1", 8081), 0);
    assert_int_equal(allowed(cfg, "128.0.0.1", 80), 0);
    assert_int_equal(allowed(cfg, "::2", 8080), 0);
    socks5_config_free(cfg);
}

static void test_auth_needs_users(void **state)
{
    const char *password_only[] = {"auth", "password", NULL};
    const char *users_only[] = {"users", "/nonexistent", NULL};
    const char *missing_file[] = {"auth", "password", "users", "/nonexistent/u", NULL};
    const char *bad_auth[] = {"auth", "yes", NULL};
    const char *bad_rule[] = {"allow_dest", "1.2.3.4/8", NULL};

    assert_null(build(password_only, -EINVAL, "needs users"));
    assert_null(build(users_only, -EINVAL, "auth = password"));
    assert_null(build(missing_file, -ENOENT, "/nonexistent/u"));
    assert_null(build(bad_auth, -EINVAL, "auth"));
    assert_null(build(bad_rule, -EINVAL, "1.2.3.4/8"));
}

static void test_password_config(void **state)
{
    char path[] = "/tmp/test_socks5_config.XXXXXX";
    char salt[CRYPT_GENSALT_OUTPUT_SIZE];
    struct crypt_data cd;
    int fd = mkstemp(path);
    const char *kv[] = {"auth", "password", "users", path, NULL};
    socks5_config_t *cfg;
    FILE *f;

    assert_true(fd >= 0);
    f = fdopen(fd, "w");
    assert_non_null(f);
    memset(&cd, 0, sizeof(cd));
    assert_non_null(crypt_gensalt_rn("$6$", 0, NULL, 0, salt, sizeof(salt)));
    fprintf(f, "carol:%s\n", crypt_rn("pw", salt, &cd, sizeof(cd)));
    fclose(f);

    cfg = build(kv, 0, NULL);
    assert_int_equal(cfg->method, SOCKS5_METHOD_PASSWORD);
    assert_non_null(cfg->users);
    assert_int_equal(cfg->users->count, 1);
    socks5_config_free(cfg);
    unlink(path);
}

static void test_udp_bind_options(void **state)
{
    char err[512];
    const char *off[] = {NULL};
    const char *on[] = {"udp",
                        "on",
                        "bind",
                        "yes",
                        "udp_address",
                        "[::1]:4000-4010",
                        "udp_idle_timeout",
                        "30s",
                        "udp_associations",
                        "3",
                        "udp_queue",
                        "5",
                        "bind_timeout",
                        "2s",
                        NULL};
    const char *bad_range[] = {"udp", "on", "udp_address", "127.0.0.1:10-5", NULL};
    socks5_config_t *cfg = build(off, 0, NULL);

    /* Off by default, with the documented defaults behind them. */
    assert_int_equal(cfg->udp, 0);
    assert_int_equal(cfg->bind, 0);
    assert_null(cfg->udp_active);
    assert_int_equal(cfg->udp_idle_ms, 120000);
    assert_int_equal(cfg->udp_max, 64);
    assert_int_equal(cfg->udp_queue, 16);
    assert_int_equal(cfg->bind_ms, 60000);
    assert_int_equal(cfg->udp_addr.ss_family, 0);
    socks5_config_free(cfg);

    cfg = build(on, 0, NULL);
    assert_int_equal(cfg->udp, 1);
    assert_int_equal(cfg->bind, 1);
    assert_non_null(cfg->udp_active);
    assert_int_equal(cfg->udp_addr.ss_family, AF_INET6);
    assert_int_equal(cfg->udp_port, 4000);
    assert_int_equal(cfg->udp_port_last, 4010);
    assert_int_equal(cfg->udp_idle_ms, 30000);
    assert_int_equal(cfg->udp_max, 3);
    assert_int_equal(cfg->udp_queue, 5);
    assert_int_equal(cfg->bind_ms, 2000);
    socks5_config_free(cfg);

    assert_null(build(bad_range, -EINVAL, "udp_address"));
    /* The table's keys, checked by the host with FILE:LINE... */
    assert_int_equal(check_value("udp", "maybe", err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "t.conf:2: udp:"));
    assert_int_equal(check_value("udp_queue", "0", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("udp_associations", "0", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("udp_idle_timeout", "0", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("bind_timeout", "soon", err, sizeof(err)), -EINVAL);
    assert_int_equal(check_value("bind", "off", err, sizeof(err)), 0);
    /* ... and the address form, which the table cannot say: the plugin's check_option. */
    assert_int_equal(check("udp_address", "example.com:53", err, sizeof(err)), -EINVAL);
    assert_int_equal(check("udp_address", ":4000-4001", err, sizeof(err)), 0);
}

static void test_udp_address_forms(void **state)
{
    struct sockaddr_storage ss;
    uint16_t a, b;

    assert_int_equal(socks5_parse_udp_address("127.0.0.1", &ss, &a, &b), 0);
    assert_int_equal(ss.ss_family, AF_INET);
    assert_int_equal(a, 0);
    assert_int_equal(b, 0);
    assert_int_equal(socks5_parse_udp_address("10.0.0.1:5000", &ss, &a, &b), 0);
    assert_int_equal(a, 5000);
    assert_int_equal(b, 5000);
    assert_int_equal(socks5_parse_udp_address("0.0.0.0:5000-5100", &ss, &a, &b), 0);
    assert_int_equal(b, 5100);
    assert_int_equal(socks5_parse_udp_address("::1", &ss, &a, &b), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(socks5_parse_udp_address("[::]:7", &ss, &a, &b), 0);
    assert_int_equal(ss.ss_family, AF_INET6);
    assert_int_equal(a, 7);
    assert_int_equal(socks5_parse_udp_address(":6000-6001", &ss, &a, &b), 0);
    assert_int_equal(ss.ss_family, 0);
    assert_int_equal(a, 6000);
    assert_int_equal(b, 6001);

    const char *bad[] = {"",
                         ":",
                         "[::1",
                         "[]:5",
                         "[::1]x",
                         "1.2.3.4:",
                         "1.2.3.4:65536",
                         "1.2.3.4:0-5",
                         "1.2.3.4:9-8",
                         "1.2.3.4:5-",
                         "host:5",
                         "1.2.3.4:5x",
                         "[127.0.0.1]:5"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(socks5_parse_udp_address(bad[i], &ss, &a, &b), -EINVAL);
}

static void test_bind_peer(void **state)
{
    const char *kv[] = {"allow_dest", "127.0.0.0/8, ::1", "deny_dest", "127.0.0.9", NULL};
    socks5_config_t *cfg = build(kv, 0, NULL);
    struct sockaddr_in want = {.sin_family = AF_INET}, peer = {.sin_family = AF_INET};
    struct sockaddr_in6 peer6 = {.sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT};
    struct sockaddr_storage any = {0};

    inet_pton(AF_INET, "127.0.0.2", &want.sin_addr);
    inet_pton(AF_INET, "127.0.0.2", &peer.sin_addr);
    peer.sin_port = htons(40000); /* the peer's own port is not DST.PORT: not compared */
    assert_int_equal(
        socks5_bind_peer_ok(cfg, (struct sockaddr *)&want, (struct sockaddr *)&peer, 21), 1);
    inet_pton(AF_INET, "127.0.0.3", &peer.sin_addr);
    assert_int_equal(
        socks5_bind_peer_ok(cfg, (struct sockaddr *)&want, (struct sockaddr *)&peer, 21), 0);
    assert_int_equal(
        socks5_bind_peer_ok(cfg, (struct sockaddr *)&want, (struct sockaddr *)&peer6, 21), 0);
    /* No address named: anyone allow_dest allows. */
    assert_int_equal(
        socks5_bind_peer_ok(cfg, (struct sockaddr *)&any, (struct sockaddr *)&peer, 21), 1);
    assert_int_equal(socks5_bind_peer_ok(cfg, NULL, (struct sockaddr *)&peer6, 21), 1);
    inet_pton(AF_INET, "127.0.0.9", &peer.sin_addr);
    assert_int_equal(socks5_bind_peer_ok(cfg, NULL, (struct sockaddr *)&peer, 21), 0);
    inet_pton(AF_INET, "10.0.0.1", &peer.sin_addr);
    assert_int_equal(socks5_bind_peer_ok(cfg, NULL, (struct sockaddr *)&peer, 21), 0);
    socks5_config_free(cfg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_table),
        cmocka_unit_test(test_check_options),
        cmocka_unit_test(test_defaults_allow_nothing),
        cmocka_unit_test(test_rules),
        cmocka_unit_test(test_auth_needs_users),
        cmocka_unit_test(test_password_config),
        cmocka_unit_test(test_udp_bind_options),
        cmocka_unit_test(test_udp_address_forms),
        cmocka_unit_test(test_bind_peer),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
