/* daemon/config/config.c: berth.conf parsing, every value and every error path.
 *
 * Each test gets its own folder holding plugins/echo.so and plugins/other.so (empty files:
 * the config only checks that a plugin file exists). Expected messages write that folder as
 * '@'. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "config/config.h"

struct fx {
    char dir[PATH_MAX];
};

static int rm_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
    return remove(path);
}

static void path_of(const struct fx *f, const char *name, char *buf, size_t len)
{
    int n = snprintf(buf, len, "%s/%s", f->dir, name);

    assert_true(n > 0 && (size_t)n < len);
}

static void mk(const struct fx *f, const char *name)
{
    char p[PATH_MAX];

    path_of(f, name, p, sizeof(p));
    assert_int_equal(mkdir(p, 0755), 0);
}

static void put(const struct fx *f, const char *name, const char *text)
{
    char p[PATH_MAX];
    FILE *fp;

    path_of(f, name, p, sizeof(p));
    fp = fopen(p, "w");
    assert_non_null(fp);
    assert_int_equal(fwrite(text, 1, strlen(text), fp), strlen(text));
    assert_int_equal(fclose(fp), 0);
}

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    const char *tmp = getenv("TMPDIR");

    if (!f)
        return -1;
    snprintf(f->dir, sizeof(f->dir), "%s/berth-config-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(f->dir)) {
        free(f);
        return -1;
    }
    *state = f;
    mk(f, "plugins");
    put(f, "plugins/echo.so", "");
    put(f, "plugins/other.so", "");
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;

    nftw(f->dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    free(f);
    return 0;
}

/* `pattern` with every '@' replaced by the test folder. */
static char *expand(const struct fx *f, const char *pattern)
{
    size_t n = 1, dl = strlen(f->dir);
    char *out, *o;

    for (const char *p = pattern; *p; p++)
        n += *p == '@' ? dl : 1;
    out = o = malloc(n);
    assert_non_null(out);
    for (const char *p = pattern; *p; p++) {
        if (*p == '@') {
            memcpy(o, f->dir, dl);
            o += dl;
        } else {
            *o++ = *p;
        }
    }
    *o = '\0';
    return out;
}

static void dump(const config_errors_t *errs)
{
    for (size_t i = 0; i < errs->count; i++)
        print_message("  got: %s\n", errs->msgs[i]);
}

/* Exactly these errors, in this order. */
static void expect_errors(const struct fx *f, const config_errors_t *errs, const char *const *want,
                          size_t n)
{
    if (errs->count != n) {
        dump(errs);
        for (size_t i = 0; i < n; i++)
            print_message(" want: %s\n", want[i]);
        fail_msg("%zu errors, expected %zu", errs->count, n);
    }
    for (size_t i = 0; i < n; i++) {
        char *w = expand(f, want[i]);
        if (strcmp(errs->msgs[i], w) != 0) {
            dump(errs);
            print_message(" want: %s\n", w);
            free(w);
            fail_msg("error %zu differs", i);
        }
        free(w);
    }
}

#define EXPECT_ERRORS(f, errs, ...)                                                                \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        expect_errors((f), (errs), want_, sizeof(want_) / sizeof(want_[0]));                       \
    } while (0)

/* Write `text` as NAME and load it: expect failure with exactly the errors given. */
static void fails(const struct fx *f, const char *name, const char *text, const char *const *want,
                  size_t n)
{
    char p[PATH_MAX];
    berth_config_t *cfg = (berth_config_t *)1;
    config_errors_t errs = {0};

    put(f, name, text);
    path_of(f, name, p, sizeof(p));
    assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
    assert_null(cfg);
    expect_errors(f, &errs, want, n);
    config_errors_free(&errs);
}

#define FAILS(f, name, text, ...)                                                                  \
    do {                                                                                           \
        const char *const want_[] = {__VA_ARGS__};                                                 \
        fails((f), (name), (text), want_, sizeof(want_) / sizeof(want_[0]));                       \
    } while (0)

/* Write `text` as NAME and load it: expect success. */
static berth_config_t *loads(const struct fx *f, const char *name, const char *text)
{
    char p[PATH_MAX];
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    int rc;

    if (text)
        put(f, name, text);
    path_of(f, name, p, sizeof(p));
    rc = config_load(p, &cfg, &errs);
    if (rc != 0 || errs.count) {
        dump(&errs);
        config_errors_free(&errs);
        fail_msg("config_load: %d", rc);
    }
    assert_non_null(cfg);
    return cfg;
}

static void assert_inet(const config_listener_t *l, int family, const char *ip, uint16_t port)
{
    char buf[INET6_ADDRSTRLEN];

    assert_int_equal(l->addr.ss_family, family);
    if (family == AF_INET) {
        const struct sockaddr_in *sin = (const struct sockaddr_in *)&l->addr;
        assert_int_equal(l->addrlen, sizeof(*sin));
        assert_int_equal(ntohs(sin->sin_port), port);
        assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, buf, sizeof(buf)));
    } else {
        const struct sockaddr_in6 *sin6 = (const struct sockaddr_in6 *)&l->addr;
        assert_int_equal(l->addrlen, sizeof(*sin6));
        assert_int_equal(ntohs(sin6->sin6_port), port);
        assert_non_null(inet_ntop(AF_INET6, &sin6->sin6_addr, buf, sizeof(buf)));
    }
    assert_string_equal(buf, ip);
}

static void assert_path(const struct fx *f, const char *got, const char *pattern)
{
    char *w = expand(f, pattern);

    assert_non_null(got);
    assert_string_equal(got, w);
    free(w);
}

#define HEAD "[daemon]\nplugin_dir = plugins\n" /* two lines */

/* ---- what a good config gives ---------------------------------------------------------- */

static void test_minimal_defaults(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg = loads(f, "berth.conf",
                                "[daemon]\n"                 /* 1 */
                                "plugin_dir = plugins\n"     /* 2 */
                                "\n"                         /* 3 */
                                "[echo]\n"                   /* 4 */
                                "protocol = tcp\n"           /* 5 */
                                "address = 127.0.0.1:7007\n" /* 6 */
                                "handler = echo\n");         /* 7 */
    const config_listener_t *l = &cfg->listeners[0];

    assert_path(f, cfg->path, "@/berth.conf");
    assert_int_equal(cfg->nfiles, 1);
    assert_path(f, cfg->files[0], "@/berth.conf");
    assert_int_equal(cfg->workers_auto, 1);
    assert_true(cfg->workers >= 1 && cfg->workers <= BERTH_MAX_WORKERS);
    assert_null(cfg->user);
    assert_path(f, cfg->plugin_dir, "@/plugins");
    assert_string_equal(cfg->admin, BERTH_DEFAULT_ADMIN);
    assert_int_equal(cfg->log_level, BERTH_LOG_INFO);
    assert_string_equal(cfg->log, "stderr");
    assert_int_equal(cfg->shutdown_timeout, 30000);

    assert_int_equal(cfg->nlisteners, 1);
    assert_string_equal(l->name, "echo");
    assert_ptr_equal(l->file, cfg->files[0]);
    assert_int_equal(l->line, 4);
    assert_int_equal(l->protocol, BERTH_PROTO_TCP);
    assert_string_equal(l->address, "127.0.0.1:7007");
    assert_inet(l, AF_INET, "127.0.0.1", 7007);
    assert_string_equal(l->handler, "echo");
    assert_path(f, l->plugin_path, "@/plugins/echo.so");
    assert_int_equal(l->handler_line, 7);
    assert_int_equal(l->concurrency, 1024);
    assert_int_equal(l->idle_timeout, 300000);
    assert_int_equal(l->backlog, 511);
    assert_int_equal(l->mode, 0660);
    assert_int_equal(l->write_buffer, 256 * 1024);
    assert_int_equal(l->allow.count, 0);
    assert_int_equal(l->deny.count, 0);
    assert_int_equal(l->noptions, 0);
    assert_ptr_equal(config_find_listener(cfg, "echo"), l);
    assert_null(config_find_listener(cfg, "nope"));
    assert_null(config_find_listener(NULL, "echo"));
    config_free(cfg);
    config_free(NULL);
}

/* Without plugin_dir, the folder the build installs plugins in (CMake's
 * BERTH_PLUGIN_INSTALL_DIR), not a path written into the source. */
static void test_default_plugin_dir(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg = loads(f, "b.conf",
                                "[a]\nprotocol = tcp\naddress = 127.0.0.1:1\n"
                                "handler = plugins/echo.so\n");
    size_t n = strlen(cfg->plugin_dir), tail = strlen("/berth/plugins");

    assert_string_equal(cfg->plugin_dir, BERTH_DEFAULT_PLUGIN_DIR);
    assert_true(cfg->plugin_dir[0] == '/');
    assert_true(n > tail && strcmp(cfg->plugin_dir + n - tail, "/berth/plugins") == 0);
    assert_path(f, cfg->listeners[0].plugin_path, "@/plugins/echo.so");
    config_free(cfg);
}

static void test_every_key(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg = loads(f, "berth.conf",
                                "\xEF\xBB\xBF; berth test config\r\n"       /* 1 */
                                "[daemon]\r\n"                              /* 2 */
                                "workers = 4\n"                             /* 3 */
                                "user = nobody\n"                           /* 4 */
                                "plugin_dir: plugins ; a colon works too\n" /* 5 */
                                "admin =\n"                                 /* 6 */
                                "log_level = debug\n"                       /* 7 */
                                "log = syslog\n"                            /* 8 */
                                "shutdown_timeout = 250ms\n"                /* 9 */
                                "# a comment\n"                             /* 10 */
                                "[ web ]\n"                                 /* 11 */
                                "  protocol = tcp\n"                        /* 12 */
                                "  address = *:8080\n"                      /* 13 */
                                "  handler = echo\n"                        /* 14 */
                                "  concurrency = 10\n"                      /* 15 */
                                "  idle_timeout = 0\n"                      /* 16 */
                                "  backlog = 128\n"                         /* 17 */
                                "  write_buffer = 64K\n"                    /* 18 */
                                "  allow = 10.0.0.0/8, ::1 ; trusted\n"     /* 19 */
                                "  deny = 10.6.6.0/24\n"                    /* 20 */
                                "  greeting = hello; world\n"               /* 21 */
                                "  max_size = 10M\n"                        /* 22 */
                                "[v6]\n"                                    /* 23 */
                                "protocol = udp\n"                          /* 24 */
                                "address = [::1]:8080\n"                    /* 25 */
                                "handler = other\n"                         /* 26 */
                                "[lo]\n"                                    /* 27 */
                                "protocol = tcp\n"                          /* 28 */
                                "address = localhost:8081\n"                /* 29 */
                                "handler = ./plugins/other.so\n"            /* 30 */
                                "[sock]\n"                                  /* 31 */
                                "protocol = unix\n"                         /* 32 */
                                "address = /run/berth-test/echo.sock\n"     /* 33 */
                                "handler = echo\n"                          /* 34 */
                                "mode = 600\n"                              /* 35 */
                                "[dgram]\n"                                 /* 36 */
                                "protocol = unixgram\n"                     /* 37 */
                                "address = /run/berth-test/dgram.sock\n"    /* 38 */
                                "handler = echo\n"                          /* 39 */
                                "[wild6]\n"                                 /* 40 */
                                "protocol = tcp\n"                          /* 41 */
                                "address = [::]:8080\n"                     /* 42 */
                                "handler = echo\n");                        /* 43 */
    const config_listener_t *l;

    assert_int_equal(cfg->workers, 4);
    assert_int_equal(cfg->workers_auto, 0);
    assert_string_equal(cfg->user, "nobody");
    assert_path(f, cfg->plugin_dir, "@/plugins");
    assert_string_equal(cfg->admin, "");
    assert_int_equal(cfg->log_level, BERTH_LOG_DEBUG);
    assert_string_equal(cfg->log, "syslog");
    assert_int_equal(cfg->shutdown_timeout, 250);
    assert_int_equal(cfg->nlisteners, 6);

    l = config_find_listener(cfg, "web");
    assert_non_null(l);
    assert_int_equal(l->line, 11);
    assert_inet(l, AF_INET, "0.0.0.0", 8080);
    assert_int_equal(l->concurrency, 10);
    assert_int_equal(l->idle_timeout, 0);
    assert_int_equal(l->backlog, 128);
    assert_int_equal(l->write_buffer, 65536);
    assert_int_equal(l->allow.count, 2);
    assert_int_equal(l->allow.items[0].prefix, 8);
    assert_int_equal(l->allow.items[1].family, AF_INET6);
    assert_int_equal(l->deny.count, 1);
    assert_int_equal(l->deny.items[0].prefix, 24);
    assert_int_equal(l->noptions, 2);
    assert_string_equal(l->options[0].key, "greeting");
    assert_string_equal(l->options[0].value, "hello; world");
    assert_ptr_equal(l->options[0].file, cfg->files[0]);
    assert_int_equal(l->options[0].line, 21);
    assert_string_equal(l->options[1].key, "max_size");
    assert_string_equal(l->options[1].value, "10M");
    assert_int_equal(l->options[1].line, 22);

    l = config_find_listener(cfg, "v6");
    assert_int_equal(l->protocol, BERTH_PROTO_UDP);
    assert_inet(l, AF_INET6, "::1", 8080);
    assert_path(f, l->plugin_path, "@/plugins/other.so");

    l = config_find_listener(cfg, "lo");
    assert_inet(l, AF_INET, "127.0.0.1", 8081);
    assert_path(f, l->plugin_path, "@/./plugins/other.so");

    l = config_find_listener(cfg, "sock");
    assert_int_equal(l->protocol, BERTH_PROTO_UNIX);
    assert_int_equal(l->addr.ss_family, AF_UNIX);
    assert_string_equal(((const struct sockaddr_un *)&l->addr)->sun_path,
                        "/run/berth-test/echo.sock");
    assert_int_equal(l->addrlen, offsetof(struct sockaddr_un, sun_path) +
                                     strlen("/run/berth-test/echo.sock") + 1);
    assert_int_equal(l->mode, 0600);

    l = config_find_listener(cfg, "dgram");
    assert_int_equal(l->protocol, BERTH_PROTO_UNIXGRAM);
    assert_int_equal(l->mode, 0660);

    l = config_find_listener(cfg, "wild6");
    assert_inet(l, AF_INET6, "::", 8080);
    config_free(cfg);
}

static void test_workers_auto(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg = loads(f, "b.conf", HEAD "workers = auto\n");

    assert_int_equal(cfg->workers_auto, 1);
    assert_true(cfg->workers >= 1 && cfg->workers <= BERTH_MAX_WORKERS);
    assert_int_equal(cfg->nlisteners, 0);
    config_free(cfg);
    cfg = loads(f, "b.conf", HEAD "workers = 256\n");
    assert_int_equal(cfg->workers, 256);
    assert_int_equal(cfg->workers_auto, 0);
    config_free(cfg);
}

static void test_unix_path_limit(void **state)
{
    struct fx *f = *state;
    char text[512], path[128];
    size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;
    berth_config_t *cfg;

    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[max] = '\0';
    snprintf(text, sizeof(text), HEAD "[u]\nprotocol = unix\naddress = %s\nhandler = echo\n", path);
    cfg = loads(f, "b.conf", text);
    assert_string_equal(((const struct sockaddr_un *)&cfg->listeners[0].addr)->sun_path, path);
    config_free(cfg);

    path[max] = 'a';
    path[max + 1] = '\0';
    snprintf(text, sizeof(text), HEAD "[u]\nprotocol = unix\naddress = %s\nhandler = echo\n", path);
    put(f, "b.conf", text);
    {
        char p[PATH_MAX], want[256];
        config_errors_t errs = {0};
        path_of(f, "b.conf", p, sizeof(p));
        assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
        snprintf(want, sizeof(want),
                 "@/b.conf:5: address '%s': longer than %zu bytes, the limit of a unix socket "
                 "path",
                 path, max);
        EXPECT_ERRORS(f, &errs, want);
        config_errors_free(&errs);
    }
}

static void test_protocol_names(void **state)
{
    assert_string_equal(config_protocol_name(BERTH_PROTO_TCP), "tcp");
    assert_string_equal(config_protocol_name(BERTH_PROTO_UDP), "udp");
    assert_string_equal(config_protocol_name(BERTH_PROTO_UNIX), "unix");
    assert_string_equal(config_protocol_name(BERTH_PROTO_UNIXGRAM), "unixgram");
    assert_string_equal(config_protocol_name((berth_protocol_t)0), "?");
}

/* ---- one bad value at a time ------------------------------------------------------------- */

static void test_daemon_bad_values(void **state)
{
    static const struct {
        const char *line; /* line 2 of the file */
        const char *error;
    } cases[] = {
        {"workers = 0", "workers '0': must be auto or 1..256"},
        {"workers = 257", "workers '257': must be auto or 1..256"},
        {"workers = -1", "workers '-1': must be auto or 1..256"},
        {"workers = many", "workers 'many': must be auto or 1..256"},
        {"workers =", "workers '': must be auto or 1..256"},
        {"user =", "user '': not a user name"},
        {"user = a:b", "user 'a:b': not a user name"},
        {"user = aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
         "user 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa': not a user name"},
        {"plugin_dir =", "plugin_dir '': must not be empty"},
        {"admin = run/admin.sock",
         "admin 'run/admin.sock': must be an absolute path (or empty, to disable it)"},
        {"log_level = verbose", "log_level 'verbose': must be error, warn, info or debug"},
        {"log_level = INFO", "log_level 'INFO': must be error, warn, info or debug"},
        {"log = file", "log 'file': must be stderr, syslog, or an absolute file path"},
        {"shutdown_timeout = soon",
         "shutdown_timeout 'soon': not a duration (e.g. 250ms, 30s, 5m, 1h, 2d)"},
        {"shutdown_timeout = -5s",
         "shutdown_timeout '-5s': not a duration (e.g. 250ms, 30s, 5m, 1h, 2d)"},
        {"colour = blue", "unknown key 'colour' in [daemon]"},
        {"protocol = tcp", "unknown key 'protocol' in [daemon]"},
        {"include =", "include: the pattern is empty"},
    };
    struct fx *f = *state;
    char text[512], want[512];

    char path[128];
    berth_config_t *cfg;

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), "[daemon]\n%s\n", cases[i].line);
        snprintf(want, sizeof(want), "@/b.conf:2: %s", cases[i].error);
        FAILS(f, "b.conf", text, want);
    }

    /* The admin socket path must fit a sockaddr_un (107 bytes do). */
    memset(path, 'a', sizeof(path));
    path[0] = '/';
    path[108] = '\0';
    snprintf(text, sizeof(text), "[daemon]\nadmin = %s\n", path);
    snprintf(want, sizeof(want),
             "@/b.conf:2: admin '%s': longer than 107 bytes, the limit of a unix socket path",
             path);
    FAILS(f, "b.conf", text, want);
    path[107] = '\0';
    snprintf(text, sizeof(text), "[daemon]\nadmin = %s\n", path);
    cfg = loads(f, "b.conf", text);
    assert_string_equal(cfg->admin, path);
    config_free(cfg);
}

static void test_listener_bad_values(void **state)
{
    static const struct {
        const char *protocol; /* line 4 */
        const char *address;  /* line 5 */
        const char *extra;    /* line 7, or NULL */
        const char *error;
    } cases[] = {
        {"sctp", "127.0.0.1:1", NULL, "4: protocol 'sctp': must be tcp, udp, unix or unixgram"},
        {"TCP", "127.0.0.1:1", NULL, "4: protocol 'TCP': must be tcp, udp, unix or unixgram"},
        {"tcp", "127.0.0.1:1", "concurrency = 0", "7: concurrency '0': must be 1..1000000"},
        {"tcp", "127.0.0.1:1", "concurrency = 1000001",
         "7: concurrency '1000001': must be 1..1000000"},
        {"tcp", "127.0.0.1:1", "concurrency = lots", "7: concurrency 'lots': must be 1..1000000"},
        {"tcp", "127.0.0.1:1", "concurrency =", "7: concurrency '': must be 1..1000000"},
        {"tcp", "127.0.0.1:1", "idle_timeout = 5 min",
         "7: idle_timeout '5 min': not a duration (e.g. 250ms, 30s, 5m, 1h, 2d), or 0 for none"},
        {"tcp", "127.0.0.1:1", "backlog = 0", "7: backlog '0': must be 1..65535"},
        {"tcp", "127.0.0.1:1", "backlog = 65536", "7: backlog '65536': must be 1..65535"},
        {"unix", "/tmp/x.sock", "mode = 999",
         "7: mode '999': must be an octal file mode such as 0660"},
        {"unix", "/tmp/x.sock", "mode = 06600",
         "7: mode '06600': must be an octal file mode such as 0660"},
        {"unix", "/tmp/x.sock", "mode = rw",
         "7: mode 'rw': must be an octal file mode such as 0660"},
        {"unix", "/tmp/x.sock", "mode = 4755",
         "7: mode '4755': only permission bits (0000..0777) apply to a socket"},
        {"tcp", "127.0.0.1:1", "write_buffer = 1", "7: write_buffer '1': must be 1K..1G"},
        {"tcp", "127.0.0.1:1", "write_buffer = 2G", "7: write_buffer '2G': must be 1K..1G"},
        {"tcp", "127.0.0.1:1", "write_buffer = lots",
         "7: write_buffer 'lots': not a size (e.g. 4096, 64K, 10M, 2G)"},
        {"tcp", "127.0.0.1:1", "allow = 10.0.0.1/8",
         "7: allow '10.0.0.1/8': '10.0.0.1/8' is not an IPv4 or IPv6 address or prefix (e.g. "
         "10.0.0.0/8, ::1; no ports, no bits set past the prefix)"},
        {"tcp", "127.0.0.1:1", "allow = 10.0.0.0/8, bogus",
         "7: allow '10.0.0.0/8, bogus': 'bogus' is not an IPv4 or IPv6 address or prefix (e.g. "
         "10.0.0.0/8, ::1; no ports, no bits set past the prefix)"},
        {"tcp", "127.0.0.1:1", "deny = 1.2.3.4:80",
         "7: deny '1.2.3.4:80': '1.2.3.4:80' is not an IPv4 or IPv6 address or prefix (e.g. "
         "10.0.0.0/8, ::1; no ports, no bits set past the prefix)"},
        {"tcp", "127.0.0.1:1", "allow =", "7: allow '': the list is empty"},
        {"tcp", "127.0.0.1:1", "deny = ,", "7: deny ',': the list is empty"},
        {"tcp", "127.0.0.1", NULL, "5: address '127.0.0.1': expected host:port"},
        {"tcp", ":80", NULL, "5: address ':80': expected host:port"},
        {"tcp", "example.com:80", NULL,
         "5: address 'example.com:80': 'example.com' is not a numeric IPv4 address, * or "
         "localhost (host names are not resolved)"},
        {"udp", "::1:80", NULL,
         "5: address '::1:80': an IPv6 address needs brackets, as in [::1]:7007"},
        {"tcp", "[::1]80", NULL, "5: address '[::1]80': expected [IPv6]:port"},
        {"tcp", "[::1", NULL, "5: address '[::1': expected [IPv6]:port"},
        {"tcp", "[zz]:80", NULL, "5: address '[zz]:80': 'zz' is not an IPv6 address"},
        {"tcp", "[127.0.0.1]:80", NULL,
         "5: address '[127.0.0.1]:80': '127.0.0.1' is not an IPv6 address"},
        {"tcp", "127.0.0.1:65536", NULL, "5: address '127.0.0.1:65536': the port must be 0..65535"},
        {"udp", "127.0.0.1:http", NULL, "5: address '127.0.0.1:http': the port must be 0..65535"},
        {"tcp", "/tmp/x.sock", NULL, "5: address '/tmp/x.sock': expected host:port"},
        {"unix", "x.sock", NULL,
         "5: address 'x.sock': a unix socket address must be an absolute path"},
        {"unixgram", "127.0.0.1:80", NULL,
         "5: address '127.0.0.1:80': a unix socket address must be an absolute path"},
        {"tcp", "", NULL, "5: address '': must not be empty"},
        {"tcp", "127.0.0.1:1", "handler = x",
         "7: duplicate key 'handler' (first set at @/b.conf:6)"},
        {"tcp", "127.0.0.1:1", "mode = 0600",
         "7: mode: only unix and unixgram listeners have a socket file"},
        {"udp", "127.0.0.1:1", "backlog = 10",
         "7: backlog: only tcp and unix listeners accept connections"},
        {"unixgram", "/tmp/x.sock", "backlog = 10",
         "7: backlog: only tcp and unix listeners accept connections"},
        {"unix", "/tmp/x.sock", "allow = 127.0.0.1",
         "7: allow: unix peers have no IP address (file permissions guard them: mode)"},
        {"unixgram", "/tmp/x.sock", "deny = 127.0.0.1",
         "7: deny: unix peers have no IP address (file permissions guard them: mode)"},
    };
    struct fx *f = *state;
    char text[1024], want[512];

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        snprintf(text, sizeof(text), HEAD "[l]\nprotocol = %s\naddress = %s\nhandler = echo\n%s\n",
                 cases[i].protocol, cases[i].address, cases[i].extra ? cases[i].extra : "");
        snprintf(want, sizeof(want), "@/b.conf:%s", cases[i].error);
        FAILS(f, "b.conf", text, want);
    }
}

/* tcp_congestion: a name the kernel lists (reno is always built in), refused with file:line
 * otherwise, and only on tcp listeners. */
static void test_tcp_congestion(void **state)
{
    struct fx *f = *state;
    char avail[512] = "", want[1024];
    FILE *fp = fopen(CONFIG_TCP_CA_AVAILABLE, "r");
    size_t got;

    assert_non_null(fp);
    got = fread(avail, 1, sizeof avail - 1, fp);
    fclose(fp);
    avail[got] = '\0';
    avail[strcspn(avail, "\n")] = '\0';

    berth_config_t *cfg = loads(f, "b.conf",
                                HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\n"
                                     "tcp_congestion = reno\n");
    assert_string_equal(cfg->listeners[0].tcp_congestion, "reno");
    config_free(cfg);
    cfg = loads(f, "b.conf", HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\n");
    assert_string_equal(cfg->listeners[0].tcp_congestion, ""); /* the kernel's default */
    config_free(cfg);

    snprintf(want, sizeof want,
             "@/b.conf:7: tcp_congestion 'nosuchcc': not available in this kernel (available: "
             "%s)",
             avail);
    FAILS(f, "b.conf",
          HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\n"
               "tcp_congestion = nosuchcc\n",
          want);
    FAILS(f, "b.conf",
          HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\n"
               "tcp_congestion = a-name-too-long-for-it\n",
          "@/b.conf:7: tcp_congestion 'a-name-too-long-for-it': not a congestion control name "
          "(e.g. cubic, bbr, reno)");
    FAILS(f, "b.conf",
          HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\ntcp_congestion =\n",
          "@/b.conf:7: tcp_congestion '': not a congestion control name (e.g. cubic, bbr, reno)");
    FAILS(f, "b.conf",
          HEAD "[l]\nprotocol = udp\naddress = 127.0.0.1:1\nhandler = echo\n"
               "tcp_congestion = reno\n",
          "@/b.conf:7: tcp_congestion: only tcp listeners have TCP sockets to set it on");
}

static void test_handler_empty(void **state)
{
    struct fx *f = *state;

    FAILS(f, "b.conf", HEAD "[l]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler =\n",
          "@/b.conf:6: handler '': must name a plugin or a path to one");
}

/* ---- many errors at once ------------------------------------------------------------------ */

static void test_all_errors_reported(void **state)
{
    struct fx *f = *state;

    FAILS(f, "berth.conf",
          "[daemon]\n"                /* 1 */
          "workers = 0\n"             /* 2 */
          "log_level = verbose\n"     /* 3 */
          "log = file\n"              /* 4 */
          "shutdown_timeout = soon\n" /* 5 */
          "admin = run/admin.sock\n"  /* 6 */
          "user = two words\n"        /* 7 */
          "colour = blue\n"           /* 8 */
          "plugin_dir = plugins\n"    /* 9 */
          "[l]\n"                     /* 10 */
          "protocol = tcp\n"          /* 11 */
          "address = nowhere\n"       /* 12 */
          "handler = missing\n"       /* 13 */
          "concurrency = 0\n",        /* 14 */
          "@/berth.conf:2: workers '0': must be auto or 1..256",
          "@/berth.conf:3: log_level 'verbose': must be error, warn, info or debug",
          "@/berth.conf:4: log 'file': must be stderr, syslog, or an absolute file path",
          "@/berth.conf:5: shutdown_timeout 'soon': not a duration (e.g. 250ms, 30s, 5m, 1h, 2d)",
          "@/berth.conf:6: admin 'run/admin.sock': must be an absolute path (or empty, to "
          "disable it)",
          "@/berth.conf:7: user 'two words': not a user name",
          "@/berth.conf:8: unknown key 'colour' in [daemon]",
          "@/berth.conf:12: address 'nowhere': expected host:port",
          "@/berth.conf:13: handler 'missing': @/plugins/missing.so: No such file or directory",
          "@/berth.conf:14: concurrency '0': must be 1..1000000");
}

static void test_syntax_errors(void **state)
{
    struct fx *f = *state;

    FAILS(f, "b.conf",
          "[daemon]\n"                    /* 1 */
          "plugin_dir = plugins\n"        /* 2 */
          "this line has no separator\n"  /* 3 */
          "[unterminated\n"               /* 4 */
          "key = ignored\n"               /* 5: in a broken section, not reported */
          "[bad name!]\n"                 /* 6 */
          "[ok] trailing junk\n"          /* 7 */
          "[]\n"                          /* 8 */
          "= novalue\n"                   /* 9 */
          "[good]\n"                      /* 10 */
          "protocol = tcp\n"              /* 11 */
          "address = 127.0.0.1:7000\n"    /* 12 */
          "handler = echo\n"              /* 13 */
          "bad key = 1\n"                 /* 14 */
          "key ; = comment\n"             /* 15 */
          "[good2] ; a comment is fine\n" /* 16 */
          "protocol = tcp\n"              /* 17 */
          "address = 127.0.0.1:7001\n"    /* 18 */
          "handler = echo\n"              /* 19 */
          "[aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa]\n", /* 20 */
          "@/b.conf:3: expected 'key = value', a [section] or a comment",
          "@/b.conf:4: section header without a closing ']'",
          "@/b.conf:6: invalid section name 'bad name!' (1 to 64 letters, digits, '-', '_' or "
          "'.')",
          "@/b.conf:7: unexpected text after the section header: 'trailing junk'",
          "@/b.conf:8: invalid section name '' (1 to 64 letters, digits, '-', '_' or '.')",
          "@/b.conf:9: a key name must come before '='",
          "@/b.conf:14: invalid key name 'bad key' (1 to 64 letters, digits, '-', '_' or '.')",
          "@/b.conf:15: expected 'key = value', a [section] or a comment",
          "@/b.conf:20: invalid section name "
          "'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa' (1 to 64 letters, "
          "digits, '-', '_' or '.')");
}

static void test_key_outside_section(void **state)
{
    struct fx *f = *state;

    FAILS(f, "b.conf", "workers = 2\n[daemon]\nplugin_dir = plugins\n",
          "@/b.conf:1: key 'workers' is outside any section");
}

static void test_long_lines(void **state)
{
    struct fx *f = *state;
    char text[2048], ok[256], over[256], comment[300];
    berth_config_t *cfg;

    /* 199 characters is the most a line may hold (not counting its end). */
    snprintf(ok, sizeof(ok), "note = %0192d", 0);
    assert_int_equal(strlen(ok), 199);
    snprintf(over, sizeof(over), "note2 = %0192d", 0);
    assert_int_equal(strlen(over), 200);
    memset(comment, ';', 250);
    comment[250] = '\0';

    snprintf(text, sizeof(text),
             HEAD "[a]\nprotocol = tcp\naddress = 127.0.0.1:7000\nhandler = echo\n%s\r\n", ok);
    cfg = loads(f, "b.conf", text);
    assert_int_equal(cfg->listeners[0].noptions, 1);
    assert_int_equal(strlen(cfg->listeners[0].options[0].value), 192);
    config_free(cfg);

    snprintf(text, sizeof(text),
             HEAD "[a]\n"                      /* 3 */
                  "protocol = tcp\n"           /* 4 */
                  "address = 127.0.0.1:7000\n" /* 5 */
                  "handler = echo\n"           /* 6 */
                  "%s\n"                       /* 7: fits */
                  "%s\n"                       /* 8: one too many */
                  "%s\n"                       /* 9: a long comment is still too long */
                  "note3 = after\n"            /* 10 */
                  "bad line\n",                /* 11: counting went on right */
             ok, over, comment);
    FAILS(f, "b.conf", text, "@/b.conf:8: line too long (200 characters; the limit is 199)",
          "@/b.conf:9: line too long (250 characters; the limit is 199)",
          "@/b.conf:11: expected 'key = value', a [section] or a comment");
}

static void test_missing_required(void **state)
{
    struct fx *f = *state;

    FAILS(f, "b.conf",
          HEAD "[empty]\n"         /* 3 */
               "[noaddr]\n"        /* 4 */
               "protocol = tcp\n"  /* 5 */
               "handler = echo\n", /* 6 */
          "@/b.conf:3: listener 'empty': missing 'protocol'",
          "@/b.conf:3: listener 'empty': missing 'address'",
          "@/b.conf:3: listener 'empty': missing 'handler'",
          "@/b.conf:4: listener 'noaddr': missing 'address'");
}

static void test_duplicates(void **state)
{
    struct fx *f = *state;

    FAILS(f, "b.conf",
          "[daemon]\n"                    /* 1 */
          "plugin_dir = plugins\n"        /* 2 */
          "workers = 2\n"                 /* 3 */
          "[a]\n"                         /* 4 */
          "protocol = tcp\n"              /* 5 */
          "address = 127.0.0.1:7000\n"    /* 6 */
          "handler = echo\n"              /* 7 */
          "handler = other\n"             /* 8 */
          "greeting = hi\n"               /* 9 */
          "greeting = ho\n"               /* 10 */
          "[daemon]\n"                    /* 11: [daemon] may come back */
          "workers = 3\n"                 /* 12 */
          "[b]\n"                         /* 13 */
          "protocol = udp\n"              /* 14 */
          "address = 127.0.0.1:7000\n"    /* 15: udp beside tcp is fine */
          "handler = echo\n"              /* 16 */
          "[a]\n"                         /* 17 */
          "protocol = tcp\n"              /* 18: ignored */
          "[c]\n"                         /* 19 */
          "protocol = tcp\n"              /* 20 */
          "address = 127.0.0.1:7000\n"    /* 21 */
          "handler = echo\n"              /* 22 */
          "[d]\n"                         /* 23 */
          "protocol = unix\n"             /* 24 */
          "address = /tmp/berth-x.sock\n" /* 25 */
          "handler = echo\n"              /* 26 */
          "[e]\n"                         /* 27 */
          "protocol = unixgram\n"         /* 28 */
          "address = /tmp/berth-x.sock\n" /* 29 */
          "handler = echo\n"              /* 30 */
          "[f]\n"                         /* 31 */
          "protocol = tcp\n"              /* 32 */
          "address = [::1]:7000\n"        /* 33 */
          "handler = echo\n"              /* 34 */
          "[g]\n"                         /* 35 */
          "protocol = tcp\n"              /* 36 */
          "address = [0:0::1]:7000\n"     /* 37 */
          "handler = echo\n"              /* 38 */
          "[h]\n"                         /* 39 */
          "protocol = tcp\n"              /* 40 */
          "address = localhost:7000\n"    /* 41 */
          "handler = echo\n",             /* 42 */
          "@/b.conf:8: duplicate key 'handler' (first set at @/b.conf:7)",
          "@/b.conf:10: duplicate key 'greeting' (first set at @/b.conf:9)",
          "@/b.conf:12: duplicate key 'workers' (first set at @/b.conf:3)",
          "@/b.conf:17: duplicate section [a] (first at @/b.conf:4)",
          "@/b.conf:21: address '127.0.0.1:7000' (tcp) is already used by listener 'a' "
          "(@/b.conf:6)",
          "@/b.conf:29: address '/tmp/berth-x.sock' (unixgram) is already used by listener 'd' "
          "(@/b.conf:25)",
          "@/b.conf:37: address '[0:0::1]:7000' (tcp) is already used by listener 'f' "
          "(@/b.conf:33)",
          "@/b.conf:41: address 'localhost:7000' (tcp) is already used by listener 'a' "
          "(@/b.conf:6)");
}

static void test_too_many_listeners(void **state)
{
    struct fx *f = *state;
    size_t cap = 64 * 1024, n = 0;
    char *text = malloc(cap);

    assert_non_null(text);
    n += (size_t)snprintf(text + n, cap - n, HEAD);
    for (int i = 0; i < BERTH_MAX_LISTENERS + 2; i++)
        n += (size_t)snprintf(text + n, cap - n,
                              "[l%d]\nprotocol = tcp\naddress = 127.0.0.1:%d\nhandler = echo\n", i,
                              10000 + i);
    assert_true(n < cap);
    /* Section 257 starts at line 3 + 4 * 256; only the first one too many is reported. */
    FAILS(f, "b.conf", text, "@/b.conf:1027: too many listeners (at most 256)");
    free(text);
}

/* ---- plugins ------------------------------------------------------------------------------- */

static void test_missing_plugin(void **state)
{
    struct fx *f = *state;

    mk(f, "plugins/dir.so");
    FAILS(f, "b.conf",
          HEAD "[a]\n"                         /* 3 */
               "protocol = tcp\n"              /* 4 */
               "address = 127.0.0.1:7000\n"    /* 5 */
               "handler = nope\n"              /* 6 */
               "[b]\n"                         /* 7 */
               "protocol = tcp\n"              /* 8 */
               "address = 127.0.0.1:7001\n"    /* 9 */
               "handler = /nonexistent/x.so\n" /* 10 */
               "[c]\n"                         /* 11 */
               "protocol = tcp\n"              /* 12 */
               "address = 127.0.0.1:7002\n"    /* 13 */
               "handler = plugins/dir.so\n"    /* 14 */
               "[d]\n"                         /* 15 */
               "protocol = tcp\n"              /* 16 */
               "address = 127.0.0.1:7003\n"    /* 17 */
               "handler = dir\n",              /* 18 */
          "@/b.conf:6: handler 'nope': @/plugins/nope.so: No such file or directory",
          "@/b.conf:10: handler '/nonexistent/x.so': /nonexistent/x.so: No such file or "
          "directory",
          "@/b.conf:14: handler 'plugins/dir.so': @/plugins/dir.so: not a regular file",
          "@/b.conf:18: handler 'dir': @/plugins/dir.so: not a regular file");
}

static void test_bad_plugin_dir_reported_once(void **state)
{
    struct fx *f = *state;

    /* No "handler 'echo': ..." on top: the plugin_dir error says it all. */
    FAILS(f, "b.conf",
          "[daemon]\nplugin_dir =\n[a]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo\n",
          "@/b.conf:2: plugin_dir '': must not be empty");
}

static void test_plugin_dir_after_listeners(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg;

    mk(f, "conf.d");
    put(f, "conf.d/dir.conf", "[daemon]\nplugin_dir = ../plugins\n");
    cfg = loads(f, "b.conf",
                "[a]\n"
                "protocol = tcp\n"
                "address = 127.0.0.1:7000\n"
                "handler = echo\n"
                "[daemon]\n"
                "include = conf.d/*.conf\n");
    assert_path(f, cfg->plugin_dir, "@/conf.d/../plugins");
    assert_path(f, cfg->listeners[0].plugin_path, "@/conf.d/../plugins/echo.so");
    config_free(cfg);

    cfg = loads(f, "b.conf",
                "[a]\n"
                "protocol = tcp\n"
                "address = 127.0.0.1:7000\n"
                "handler = other\n"
                "[daemon]\n"
                "plugin_dir = plugins\n");
    assert_path(f, cfg->listeners[0].plugin_path, "@/plugins/other.so");
    config_free(cfg);
}

/* ---- includes ------------------------------------------------------------------------------ */

static void test_include_sorted(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg;

    mk(f, "conf.d");
    put(f, "conf.d/20-b.conf",
        "[second]\nprotocol = tcp\naddress = 127.0.0.1:7002\n"
        "handler = echo\n");
    put(f, "conf.d/10-a.conf",
        "[first]\nprotocol = udp\naddress = 127.0.0.1:7001\n"
        "handler = echo\nopt = 1\n");
    put(f, "conf.d/ignored.txt", "this is not a config file\n");
    cfg = loads(f, "b.conf",
                HEAD "include = conf.d/*.conf\n"    /* 3 */
                     "include = none.d/*.conf\n"    /* 4: a folder that does not exist */
                     "include = conf.d/*.nothing\n" /* 5: matches nothing */
                     "[main]\n"
                     "protocol = tcp\n"
                     "address = 127.0.0.1:7000\n"
                     "handler = echo\n");
    assert_int_equal(cfg->nlisteners, 3);
    assert_string_equal(cfg->listeners[0].name, "first");
    assert_string_equal(cfg->listeners[1].name, "second");
    assert_string_equal(cfg->listeners[2].name, "main");
    assert_int_equal(cfg->nfiles, 3);
    assert_path(f, cfg->files[0], "@/b.conf");
    assert_path(f, cfg->files[1], "@/conf.d/10-a.conf");
    assert_path(f, cfg->files[2], "@/conf.d/20-b.conf");
    assert_ptr_equal(cfg->listeners[0].file, cfg->files[1]);
    assert_int_equal(cfg->listeners[0].line, 1);
    assert_ptr_equal(cfg->listeners[0].options[0].file, cfg->files[1]);
    assert_int_equal(cfg->listeners[0].options[0].line, 5);
    assert_ptr_equal(cfg->listeners[2].file, cfg->files[0]);
    config_free(cfg);
}

static void test_include_from_folder_with_wildcards(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg;

    /* The folder of the including file is taken literally, only the pattern is a glob. */
    mk(f, "odd[1]*");
    mk(f, "odd[1]*/conf.d");
    put(f, "odd[1]*/conf.d/a.conf",
        "[a]\nprotocol = tcp\naddress = 127.0.0.1:7000\n"
        "handler = ../../plugins/echo.so\n");
    cfg = loads(f, "odd[1]*/b.conf", "[daemon]\ninclude = conf.d/*.conf\n");
    assert_int_equal(cfg->nlisteners, 1);
    assert_path(f, cfg->listeners[0].plugin_path, "@/odd[1]*/conf.d/../../plugins/echo.so");
    config_free(cfg);
}

static void test_include_absolute_and_daemon_keys(void **state)
{
    struct fx *f = *state;
    char text[PATH_MAX + 128];
    berth_config_t *cfg;

    put(f, "extra.conf", "[daemon]\nlog_level = warn\n");
    snprintf(text, sizeof(text), HEAD "include = %s/extra.conf\n", f->dir);
    cfg = loads(f, "b.conf", text);
    assert_int_equal(cfg->log_level, BERTH_LOG_WARN);
    config_free(cfg);
}

static void test_include_errors(void **state)
{
    struct fx *f = *state;

    mk(f, "conf.d");
    mk(f, "conf.d/sub.conf");
    put(f, "conf.d/a.conf",
        "workers = 3\n" /* 1: no section yet */
        "[daemon]\n"    /* 2 */
        "workers = 3\n" /* 3 */
        "bogus = 1\n"); /* 4 */
    FAILS(f, "b.conf",
          "[daemon]\n"                /* 1 */
          "workers = 2\n"             /* 2 */
          "include = missing.conf\n"  /* 3 */
          "include = conf.d/*.conf\n" /* 4 */
          "include = b.conf\n"        /* 5 */
          "plugin_dir = plugins\n",   /* 6 */
          "@/b.conf:3: include 'missing.conf': @/missing.conf: No such file or directory",
          "@/b.conf:4: include 'conf.d/*.conf': @/conf.d/sub.conf: not a regular file",
          "@/b.conf:5: include 'b.conf': @/b.conf: already being read (an include cycle)",
          "@/conf.d/a.conf:1: key 'workers' is outside any section",
          "@/conf.d/a.conf:3: duplicate key 'workers' (first set at @/b.conf:2)",
          "@/conf.d/a.conf:4: unknown key 'bogus' in [daemon]");
}

static void test_include_cycle(void **state)
{
    struct fx *f = *state;

    put(f, "x.conf", "[daemon]\ninclude = y.conf\n");
    put(f, "y.conf", "[daemon]\n\ninclude = ./x.conf\n");
    FAILS(f, "b.conf", HEAD "include = x.conf\n",
          "@/y.conf:3: include './x.conf': @/./x.conf: already being read (an include cycle)");
}

static void test_include_depth(void **state)
{
    struct fx *f = *state;
    char name[32], text[64];
    berth_config_t *cfg;

    /* b.conf -> d1 -> ... -> d8: eight levels are fine. */
    for (int i = 1; i <= 8; i++) {
        snprintf(name, sizeof(name), "d%d.conf", i);
        if (i < 8)
            snprintf(text, sizeof(text), "[daemon]\ninclude = d%d.conf\n", i + 1);
        else
            snprintf(text, sizeof(text), "[daemon]\nlog = syslog\n");
        put(f, name, text);
    }
    cfg = loads(f, "b.conf", HEAD "include = d1.conf\n");
    assert_string_equal(cfg->log, "syslog");
    assert_int_equal(cfg->nfiles, 9);
    config_free(cfg);

    /* A ninth is not. */
    put(f, "d8.conf", "[daemon]\ninclude = d9.conf\n");
    put(f, "d9.conf", "[daemon]\n");
    FAILS(f, "b.conf", HEAD "include = d1.conf\n",
          "@/d8.conf:2: include 'd9.conf': includes nested more than 8 deep");
}

static void test_include_unreadable_folder(void **state)
{
    struct fx *f = *state;
    char target[PATH_MAX];

    /* A folder glob cannot open (ELOOP: works even as root, unlike permissions). */
    path_of(f, "loop", target, sizeof(target));
    assert_int_equal(symlink(target, target), 0);
    FAILS(f, "b.conf", HEAD "include = loop/*.conf\n",
          "@/b.conf:3: include 'loop/*.conf': @/loop: Too many levels of symbolic links");
}

static void test_main_file_problems(void **state)
{
    struct fx *f = *state;
    char p[PATH_MAX];
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};

    path_of(f, "missing.conf", p, sizeof(p));
    assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
    assert_null(cfg);
    EXPECT_ERRORS(f, &errs, "@/missing.conf:0: No such file or directory");
    config_errors_free(&errs);

    path_of(f, "plugins", p, sizeof(p));
    assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
    EXPECT_ERRORS(f, &errs, "@/plugins:0: not a regular file");
    config_errors_free(&errs);

    /* Errors need not be collected; the result is the same. */
    assert_int_equal(config_load(p, &cfg, NULL), -EINVAL);
    assert_null(cfg);
    assert_int_equal(config_load(NULL, &cfg, &errs), -EINVAL);
    assert_int_equal(config_load(p, NULL, &errs), -EINVAL);
    assert_int_equal(errs.count, 0);
}

static void test_empty_file(void **state)
{
    struct fx *f = *state;
    berth_config_t *cfg = loads(f, "b.conf", "");

    assert_int_equal(cfg->nlisteners, 0);
    config_free(cfg);
}

/* ---- config_load_string -------------------------------------------------------------------- */

static void test_load_string(void **state)
{
    struct fx *f = *state;
    static const char text[] = HEAD "[a]\nprotocol = tcp\naddress = 127.0.0.1:1\nhandler = echo";
    char *name = expand(f, "@/mem.conf");
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};

    /* No NUL terminator needed, no final newline needed. */
    assert_int_equal(config_load_string(name, text, sizeof(text) - 1, 0, &cfg, &errs), 0);
    assert_non_null(cfg);
    assert_path(f, cfg->listeners[0].plugin_path, "@/plugins/echo.so");
    config_free(cfg);

    static const char nul[] = HEAD "wor\0kers = 2\nlog = x\n";
    assert_int_equal(config_load_string(name, nul, sizeof(nul) - 1, 0, &cfg, &errs), -EINVAL);
    assert_null(cfg);
    EXPECT_ERRORS(f, &errs, "@/mem.conf:3: NUL byte in line",
                  "@/mem.conf:4: log 'x': must be stderr, syslog, or an absolute file path");
    config_errors_free(&errs);

    static const char inc[] = HEAD "include = *.conf\n";
    assert_int_equal(
        config_load_string(name, inc, sizeof(inc) - 1, CONFIG_LOAD_NO_INCLUDE, &cfg, &errs),
        -EINVAL);
    EXPECT_ERRORS(f, &errs, "@/mem.conf:3: include '*.conf': includes are not allowed here");
    config_errors_free(&errs);

    assert_int_equal(config_load_string(name, NULL, 0, 0, &cfg, &errs), -EINVAL);
    assert_int_equal(config_load_string(NULL, text, 1, 0, &cfg, &errs), -EINVAL);
    assert_int_equal(errs.count, 0);
    free(name);
}

static void test_errors_add(void **state)
{
    config_errors_t errs = {0};

    config_errors_add(&errs, "x.conf", 7, "%s %d", "value", 42);
    config_errors_add(&errs, NULL, 0, "no file");
    config_errors_add(NULL, "x.conf", 1, "nowhere");
    assert_int_equal(errs.count, 2);
    assert_string_equal(errs.msgs[0], "x.conf:7: value 42");
    assert_string_equal(errs.msgs[1], "no file");
    config_errors_free(&errs);
    assert_int_equal(errs.count, 0);
    assert_null(errs.msgs);
    config_errors_free(&errs);
    config_errors_free(NULL);
}

/* ---- bounds ------------------------------------------------------------------------------ */

/* 100,000 wrong lines: the first 100 by file:line, then one line counting the rest. */
static void test_many_errors_capped(void **state)
{
    struct fx *f = *state;
    const size_t n = 100000;
    char p[PATH_MAX], want[64];
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    FILE *fp;

    path_of(f, "bad.conf", p, sizeof(p));
    fp = fopen(p, "w");
    assert_non_null(fp);
    /* A listener missing its handler, checked when its section ends (the very end of the file,
     * so found last) but reported first: it is on line 1. */
    fputs("[a]\nprotocol = tcp\naddress = 127.0.0.1:1\n", fp);
    for (size_t i = 0; i < n; i++)
        fputs("garbage\n", fp);
    assert_int_equal(fclose(fp), 0);

    assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
    assert_null(cfg);
    assert_int_equal(errs.count, CONFIG_ERRORS_MAX + 1);
    assert_int_equal(errs.more, n + 1 - CONFIG_ERRORS_MAX);
    assert_int_equal(config_errors_total(&errs), n + 1);
    char *first = expand(f, "@/bad.conf:1: listener 'a': missing 'handler'");
    assert_string_equal(errs.msgs[0], first);
    free(first);
    for (size_t i = 1; i < CONFIG_ERRORS_MAX; i++) {
        char *w;
        snprintf(want, sizeof(want), "@/bad.conf:%zu: ", i + 3);
        w = expand(f, want);
        assert_memory_equal(errs.msgs[i], w, strlen(w));
        assert_string_equal(errs.msgs[i] + strlen(w),
                            "expected 'key = value', a [section] or a comment");
        free(w);
    }
    snprintf(want, sizeof(want), "... and %zu more errors", n + 1 - CONFIG_ERRORS_MAX);
    assert_string_equal(errs.msgs[CONFIG_ERRORS_MAX], want);

    /* Errors added later (a plugin's, a bind's) are counted in the same line. */
    config_errors_add(&errs, "x.conf", 1, "one more");
    assert_int_equal(errs.count, CONFIG_ERRORS_MAX + 1);
    snprintf(want, sizeof(want), "... and %zu more errors", n + 2 - CONFIG_ERRORS_MAX);
    assert_string_equal(errs.msgs[CONFIG_ERRORS_MAX], want);
    config_errors_free(&errs);
    assert_int_equal(errs.more, 0);
}

static void test_errors_add_capped(void **state)
{
    config_errors_t errs = {0};

    for (int i = 0; i < CONFIG_ERRORS_MAX; i++)
        config_errors_add(&errs, "x.conf", i + 1, "e");
    assert_int_equal(errs.count, CONFIG_ERRORS_MAX);
    assert_int_equal(errs.more, 0);
    config_errors_add(&errs, "x.conf", 999, "e");
    assert_int_equal(errs.count, CONFIG_ERRORS_MAX + 1);
    assert_string_equal(errs.msgs[CONFIG_ERRORS_MAX], "... and 1 more error");
    assert_int_equal(config_errors_total(&errs), CONFIG_ERRORS_MAX + 1);
    config_errors_free(&errs);
}

static void write_size(const struct fx *f, const char *name, size_t size)
{
    char p[PATH_MAX];
    FILE *fp;

    path_of(f, name, p, sizeof(p));
    fp = fopen(p, "w");
    assert_non_null(fp);
    /* Comment lines: were it read, it would load. */
    for (size_t i = 0; i < size; i++)
        assert_int_not_equal(fputc(i % 64 == 63 ? '\n' : ';', fp), EOF);
    assert_int_equal(fclose(fp), 0);
}

/* A file over 16 MiB is one error naming it; one at the limit is read. */
static void test_file_size_limit(void **state)
{
    struct fx *f = *state;
    char *text;
    berth_config_t *cfg = NULL;
    config_errors_t errs = {0};
    char *name = expand(f, "@/mem.conf");

    write_size(f, "big.conf", CONFIG_MAX_FILE_SIZE + 1);
    FAILS(f, "b.conf", HEAD "include = big.conf\n",
          "@/b.conf:3: include 'big.conf': @/big.conf: 16777217 bytes, more than the 16 MiB a "
          "config file may hold");

    char p[PATH_MAX];
    path_of(f, "big.conf", p, sizeof(p));
    assert_int_equal(config_load(p, &cfg, &errs), -EINVAL);
    EXPECT_ERRORS(f, &errs,
                  "@/big.conf:0: 16777217 bytes, more than the 16 MiB a config file may hold");
    config_errors_free(&errs);

    /* In memory too; the text is never looked at. */
    text = calloc(1, CONFIG_MAX_FILE_SIZE + 1);
    assert_non_null(text);
    assert_int_equal(config_load_string(name, text, CONFIG_MAX_FILE_SIZE + 1, 0, &cfg, &errs),
                     -EINVAL);
    EXPECT_ERRORS(f, &errs,
                  "@/mem.conf:0: 16777217 bytes, more than the 16 MiB a config file may hold");
    config_errors_free(&errs);
    free(text);
    free(name);

    write_size(f, "big.conf", CONFIG_MAX_FILE_SIZE);
    cfg = loads(f, "big.conf", NULL);
    config_free(cfg);
}

/* A pattern that matches more files than a config may read is one error, none is read. */
static void test_include_too_many_files(void **state)
{
    struct fx *f = *state;
    char name[64];

    mk(f, "conf.d");
    for (int i = 0; i <= CONFIG_MAX_FILES; i++) {
        snprintf(name, sizeof(name), "conf.d/%04d.conf", i);
        put(f, name, "[daemon]\nbogus = 1\n");
    }
    FAILS(f, "b.conf", HEAD "include = conf.d/*.conf\n",
          "@/b.conf:3: include 'conf.d/*.conf': matches 1025 files, more than a config may read "
          "(1024 in all)");
}

/* A pattern that scans a huge folder is one error, even when it matches nothing there. */
static void add_empty_file(const struct fx *f, int i)
{
    char name[32], p[PATH_MAX];
    int fd;

    snprintf(name, sizeof(name), "big.d/f%05d", i);
    path_of(f, name, p, sizeof(p));
    fd = open(p, O_WRONLY | O_CREAT | O_EXCL, 0644);
    assert_true(fd >= 0);
    close(fd);
}

static void test_include_huge_folder(void **state)
{
    struct fx *f = *state;
    const int bound = 16 * CONFIG_MAX_FILES;

    mk(f, "big.d");
    /* With "." and "..", exactly as many entries as a pattern may look at. */
    for (int i = 0; i < bound - 2; i++)
        add_empty_file(f, i);
    config_free(loads(f, "b.conf", HEAD "include = big.d/*.conf\n"));

    add_empty_file(f, bound);
    FAILS(f, "b.conf", HEAD "include = big.d/*.conf\n",
          "@/b.conf:3: include 'big.d/*.conf': looks at more than 16384 directory entries");
}

/* Plugin keys are checked against each other: a listener takes a bounded number. */
static void test_too_many_plugin_keys(void **state)
{
    struct fx *f = *state;
    size_t cap = 64 * 300, off;
    char *text = malloc(cap);

    assert_non_null(text);
    off = (size_t)snprintf(text, cap,
                           HEAD "[a]\nprotocol = tcp\naddress = 127.0.0.1:1\n"
                                "handler = echo\n");
    for (int i = 0; i < 258; i++)
        off += (size_t)snprintf(text + off, cap - off, "k%d = v\n", i);
    FAILS(f, "b.conf", text, "@/b.conf:263: listener 'a': more than 256 plugin keys");
    free(text);
}

#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_minimal_defaults),
        T(test_default_plugin_dir),
        T(test_every_key),
        T(test_workers_auto),
        T(test_unix_path_limit),
        cmocka_unit_test(test_protocol_names),
        T(test_daemon_bad_values),
        T(test_listener_bad_values),
        T(test_tcp_congestion),
        T(test_handler_empty),
        T(test_all_errors_reported),
        T(test_syntax_errors),
        T(test_key_outside_section),
        T(test_long_lines),
        T(test_missing_required),
        T(test_duplicates),
        T(test_too_many_listeners),
        T(test_missing_plugin),
        T(test_bad_plugin_dir_reported_once),
        T(test_plugin_dir_after_listeners),
        T(test_include_sorted),
        T(test_include_from_folder_with_wildcards),
        T(test_include_absolute_and_daemon_keys),
        T(test_include_errors),
        T(test_include_cycle),
        T(test_include_depth),
        T(test_include_unreadable_folder),
        T(test_main_file_problems),
        T(test_empty_file),
        T(test_load_string),
        cmocka_unit_test(test_errors_add),
        T(test_many_errors_capped),
        cmocka_unit_test(test_errors_add_capped),
        T(test_file_size_limit),
        T(test_include_too_many_files),
        T(test_include_huge_folder),
        T(test_too_many_plugin_keys),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
