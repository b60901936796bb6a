/*
 * The keys of [daemon] and of listener sections, as tables: each key is a name, a type, where
 * its value goes (an offset into berth_config_t or config_listener_t), its bounds and the
 * message for a bad value, like nginx's ngx_command_t. Plain numbers, durations, sizes and
 * address lists need nothing else; a key whose value has a grammar of its own (workers =
 * auto, an octal mode, a protocol name) names a setter. A listener key the daemon does not
 * know is kept, in file order, for the listener's plugin to check.
 *
 * Listener values that depend on each other (address on protocol) are checked when the
 * section ends.
 */
#include "config/parse.h"
#include "core/limits.h"
#include "core/log.h"
#include "berth/proxy.h"
#include "berth/units.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_CONCURRENCY 1024u
#define MAX_CONCURRENCY 1000000u
#define DEFAULT_IDLE_TIMEOUT (5u * 60u * 1000u)
#define DEFAULT_BACKLOG 511u
#define DEFAULT_MODE 0660u
#define DEFAULT_WRITE_BUFFER (256u * 1024u)
#define DEFAULT_CRASH_LIMIT 5u
#define DEFAULT_CRASH_WINDOW (60u * 1000u)
#define DEFAULT_PROXY_TIMEOUT (5u * 1000u)
#define MIN_WRITE_BUFFER 1024u
#define MAX_WRITE_BUFFER (1024u * 1024u * 1024u)

#define DURATION_HINT "not a duration (e.g. 250ms, 30s, 5m, 1h, 2d)"
#define SIZE_HINT "not a size (e.g. 4096, 64K, 10M, 2G)"

enum key_type {
    KEY_U32,      /* decimal, min..max, into a uint32_t; help, or "must be MIN..MAX" */
    KEY_DURATION, /* berth_parse_duration, into a uint64_t (ms); help */
    KEY_SIZE,     /* berth_parse_size, min..max, into a uint64_t; SIZE_HINT, or help */
    KEY_CIDRS,    /* a list of addresses and prefixes, into a berth_cidr_list_t */
    KEY_CUSTOM,   /* the key's setter */
    KEY_INCLUDE,  /* [daemon] include: reads files rather than setting a value */
};

/* `obj` is the berth_config_t or the config_listener_t being filled. On a bad value a setter
 * writes why into err and returns -EINVAL; -ENOMEM leaves err empty. */
typedef int (*key_setter)(struct parse *p, void *obj, const char *value, char *err, size_t errlen);

struct key {
    const char *name;
    enum key_type type;
    size_t offset;
    uint64_t min, max;
    const char *help;
    key_setter set;
};

/* ---- small helpers --------------------------------------------------------------------- */

int keys_parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *out)
{
    uint64_t v = 0;
    const char *q = text;
    int rc = -EINVAL;

    if (*q == '\0')
        goto out;
    for (; *q; q++) {
        if (*q < '0' || *q > '9' || v > (UINT64_MAX - 9) / 10)
            goto out;
        v = v * 10 + (uint64_t)(*q - '0');
    }
    if (v < min || v > max)
        goto out;
    *out = v;
    rc = 0;
out:
    return rc;
}

static int valid_name_char(int c)
{
    return isalnum(c) || c == '-' || c == '_' || c == '.';
}

int keys_valid_name(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!valid_name_char((unsigned char)s[n]) || n == MAX_NAME)
            return 0;
    return n > 0;
}

static int replace_string(char **slot, char *value)
{
    if (!value)
        return -ENOMEM;
    free(*slot);
    *slot = value;
    return 0;
}

static struct listener_state *cur_state(struct parse *p)
{
    return &p->ls[p->cur->listener];
}

/* ---- [daemon] -------------------------------------------------------------------------- */

static int set_workers(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;
    uint64_t n = 0;
    int rc = 0;

    if (strcmp(value, "auto") == 0) {
        cfg->workers_auto = 1;
    } else if (keys_parse_number(value, 1, BERTH_MAX_WORKERS, &n) == 0) {
        cfg->workers_auto = 0;
        cfg->workers = (unsigned)n;
    } else {
        snprintf(err, errlen, "must be auto or 1..%d", BERTH_MAX_WORKERS);
        rc = -EINVAL;
    }
    return rc;
}

static int set_user(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (*value == '\0' || strpbrk(value, " \t:/") || strlen(value) > 32) {
        snprintf(err, errlen, "not a user name");
        return -EINVAL;
    }
    return replace_string(&cfg->user, parse_strdup(p, value));
}

static int set_plugin_dir(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (*value == '\0') {
        snprintf(err, errlen, "must not be empty");
        p->plugin_dir_bad = 1;
        return -EINVAL;
    }
    return replace_string(&cfg->plugin_dir, parse_path_in(p, p->cur->dir, value));
}

static int set_admin(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (*value != '\0' && *value != '/') {
        snprintf(err, errlen, "must be an absolute path (or empty, to disable it)");
        return -EINVAL;
    }
    if (strlen(value) > SUN_PATH_MAX) {
        snprintf(err, errlen, "longer than %zu bytes, the limit of a unix socket path",
                 SUN_PATH_MAX);
        return -EINVAL;
    }
    return replace_string(&cfg->admin, parse_strdup(p, value));
}

static int set_log_level(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (log_level_parse(value, &cfg->log_level) == 0)
        return 0;
    snprintf(err, errlen, "must be error, warn, info or debug");
    return -EINVAL;
}

static int set_log(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (strcmp(value, "stderr") != 0 && strcmp(value, "syslog") != 0 && value[0] != '/') {
        snprintf(err, errlen, "must be stderr, syslog, or an absolute file path");
        return -EINVAL;
    }
    return replace_string(&cfg->log, parse_strdup(p, value));
}

static int set_agent(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;
    char why[200] = "";

    if (address_parse_inet(value, &cfg->agent_addr, &cfg->agent_addrlen, why, sizeof why) < 0) {
        snprintf(err, errlen, "%s", why[0] ? why : "not an address such as 127.0.0.1:8081");
        return -EINVAL;
    }
    return replace_string(&cfg->agent, parse_strdup(p, value));
}

static int set_table_full(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    if (strcmp(value, "open") == 0 || strcmp(value, "closed") == 0) {
        cfg->per_source_table_full_closed = value[0] == 'c';
        return 0;
    }
    snprintf(err, errlen, "must be open or closed");
    return -EINVAL;
}

/* metrics: [daemon] metrics = host:port, or an absolute path for a unix socket. */
static int set_metrics(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;
    char why[200] = "";
    int rc =
        value[0] == '/'
            ? address_parse_unix(value, &cfg->metrics_addr, &cfg->metrics_addrlen, why, sizeof why)
            : address_parse_inet(value, &cfg->metrics_addr, &cfg->metrics_addrlen, why, sizeof why);
    if (rc < 0) {
        snprintf(err, errlen, "%s",
                 why[0] ? why : "not an address such as 127.0.0.1:9187 or /run/berth/metrics.sock");
        return -EINVAL;
    }
    return replace_string(&cfg->metrics, parse_strdup(p, value));
}

/* logs: json */
static int set_log_format(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;

    (void)p;
    if (log_format_parse(value, &cfg->log_json) == 0)
        return 0;
    snprintf(err, errlen, "must be text or json");
    return -EINVAL;
}

/* sandbox: sandbox = on|off, sandbox_violation = eperm|kill */
static int set_sandbox(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    berth_config_t *cfg = obj;
    int on;

    if (berth_parse_bool(value, &on) == 0) {
        cfg->sandbox_off = !on;
        return 0;
    }
    snprintf(err, errlen, "must be on or off");
    return -EINVAL;
}

static int set_sandbox_violation(struct parse *p, void *obj, const char *value, char *err,
                                 size_t errlen)
{
    berth_config_t *cfg = obj;

    if (strcmp(value, "eperm") == 0 || strcmp(value, "kill") == 0) {
        cfg->sandbox_kill = value[0] == 'k';
        return 0;
    }
    snprintf(err, errlen, "must be eperm or kill");
    return -EINVAL;
}

#define DK(field) offsetof(berth_config_t, field)

static const struct key daemon_keys[DK_COUNT] = {
    [DK_WORKERS] = {.name = "workers", .type = KEY_CUSTOM, .set = set_workers},
    [DK_USER] = {.name = "user", .type = KEY_CUSTOM, .set = set_user},
    [DK_PLUGIN_DIR] = {.name = "plugin_dir", .type = KEY_CUSTOM, .set = set_plugin_dir},
    [DK_ADMIN] = {.name = "admin", .type = KEY_CUSTOM, .set = set_admin},
    [DK_LOG_LEVEL] = {.name = "log_level", .type = KEY_CUSTOM, .set = set_log_level},
    [DK_LOG] = {.name = "log", .type = KEY_CUSTOM, .set = set_log},
    [DK_SHUTDOWN_TIMEOUT] = {.name = "shutdown_timeout",
                             .type = KEY_DURATION,
                             .offset = DK(shutdown_timeout),
                             .help = DURATION_HINT},
    [DK_INCLUDE] = {.name = "include", .type = KEY_INCLUDE},
    [DK_PER_SOURCE_TABLE] = {.name = "per_source_table",
                             .type = KEY_U32,
                             .offset = DK(per_source_table),
                             .min = LIMITS_MIN_TABLE,
                             .max = LIMITS_MAX_TABLE},
    [DK_AGENT] = {.name = "agent", .type = KEY_CUSTOM, .set = set_agent},
    [DK_DRAIN_DELAY] = {.name = "drain_delay",
                        .type = KEY_DURATION,
                        .offset = DK(drain_delay),
                        .help = DURATION_HINT ", or 0"},
    [DK_PER_SOURCE_TABLE_FULL] = {.name = "per_source_table_full",
                                  .type = KEY_CUSTOM,
                                  .set = set_table_full},
    [DK_METRICS] = {.name = "metrics", .type = KEY_CUSTOM, .set = set_metrics},
    /* logs: json */
    [DK_LOG_FORMAT] = {.name = "log_format", .type = KEY_CUSTOM, .set = set_log_format},
    /* sandbox */
    [DK_SANDBOX] = {.name = "sandbox", .type = KEY_CUSTOM, .set = set_sandbox},
    [DK_SANDBOX_VIOLATION] = {.name = "sandbox_violation",
                              .type = KEY_CUSTOM,
                              .set = set_sandbox_violation},
};

/* ---- listener sections ----------------------------------------------------------------- */

static int set_over_limit(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;

    if (strcmp(value, "close") == 0 || strcmp(value, "wait") == 0) {
        l->over_limit_wait = value[0] == 'w';
        return 0;
    }
    snprintf(err, errlen, "must be close or wait");
    return -EINVAL;
}

static int set_protocol(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    static const struct {
        const char *name;
        berth_protocol_t proto;
    } protos[] = {
        {"tcp", BERTH_PROTO_TCP},
        {"udp", BERTH_PROTO_UDP},
        {"unix", BERTH_PROTO_UNIX},
        {"unixgram", BERTH_PROTO_UNIXGRAM},
    };
    config_listener_t *l = obj;

    for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
        if (strcmp(value, protos[i].name) == 0) {
            l->protocol = protos[i].proto;
            cur_state(p)->protocol_ok = 1;
            return 0;
        }
    }
    snprintf(err, errlen, "must be tcp, udp, unix or unixgram");
    return -EINVAL;
}

static int set_address(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;

    if (*value == '\0') {
        snprintf(err, errlen, "must not be empty");
        return -EINVAL;
    }
    /* Checked when the section ends: its meaning depends on the protocol. */
    return replace_string(&l->address, parse_strdup(p, value));
}

static int set_handler(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;

    if (*value == '\0') {
        snprintf(err, errlen, "must name a plugin or a path to one");
        return -EINVAL;
    }
    l->handler_line = p->cur->line;
    /* Resolved once everything is read: plugin_dir may come later. */
    return replace_string(&l->handler, parse_strdup(p, value));
}

static int set_mode(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    uint32_t mode = 0;
    size_t n = strlen(value);

    if (n == 0 || n > 4 || strspn(value, "01234567") != n) {
        snprintf(err, errlen, "must be an octal file mode such as 0660");
        return -EINVAL;
    }
    for (size_t i = 0; i < n; i++)
        mode = mode * 8 + (uint32_t)(value[i] - '0');
    if (mode > 0777) {
        snprintf(err, errlen, "only permission bits (0000..0777) apply to a socket");
        return -EINVAL;
    }
    l->mode = mode;
    return 0;
}

/* "K/WINDOW": K crashes within WINDOW quarantine the listener. */
static int set_crash_limit(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    const char *slash = strchr(value, '/');
    char count[32];
    uint64_t k = 0, window = 0;

    if (slash == NULL || (size_t)(slash - value) >= sizeof count) {
        snprintf(err, errlen, "expected COUNT/WINDOW, such as 5/1m");
        return -EINVAL;
    }
    memcpy(count, value, (size_t)(slash - value));
    count[slash - value] = '\0';
    if (keys_parse_number(count, 1, CONFIG_CRASH_LIMIT_MAX, &k) < 0 ||
        berth_parse_duration(slash + 1, &window) < 0 || window == 0) {
        snprintf(err, errlen, "expected COUNT/WINDOW, COUNT 1..%d, such as 5/1m",
                 CONFIG_CRASH_LIMIT_MAX);
        return -EINVAL;
    }
    l->crash_limit = (uint32_t)k;
    l->crash_window = window;
    return 0;
}

static int set_isolate(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    int rc = berth_parse_bool(value, &l->isolate);

    if (rc < 0)
        snprintf(err, errlen, "must be yes or no");
    return rc;
}

static int set_proxy_protocol(struct parse *p, void *obj, const char *value, char *err,
                              size_t errlen)
{
    config_listener_t *l = obj;

    if (strcmp(value, "off") == 0)
        l->proxy_protocol = 0;
    else if (strcmp(value, "v1") == 0)
        l->proxy_protocol = BERTH_PROXY_V1;
    else if (strcmp(value, "v2") == 0)
        l->proxy_protocol = BERTH_PROXY_V2;
    else if (strcmp(value, "any") == 0)
        l->proxy_protocol = BERTH_PROXY_V1 | BERTH_PROXY_V2;
    else {
        snprintf(err, errlen, "must be off, v1, v2 or any");
        return -EINVAL;
    }
    return 0;
}

/* "N/s": new connections per second. */
static int set_rate(struct parse *p, void *obj, const char *value, char *err, size_t errlen)
{
    config_listener_t *l = obj;
    char num[16];
    size_t n = strlen(value);
    uint64_t v = 0;

    if (n < 3 || n - 2 >= sizeof num || strcmp(value + n - 2, "/s") != 0 ||
        (memcpy(num, value, n - 2), num[n - 2] = '\0',
         keys_parse_number(num, 1, MAX_CONCURRENCY, &v)) < 0) {
        snprintf(err, errlen, "must be N/s, N 1..%u (new connections per second)", MAX_CONCURRENCY);
        return -EINVAL;
    }
    l->rate = (uint32_t)v;
    return 0;
}

/* tcp_congestion: a name the kernel lists as available, so a typo or a module that is not
 * loaded fails the config check rather than every connection. */
static int set_tcp_congestion(struct parse *p, void *obj, const char *value, char *err,
                              size_t errlen)
{
    config_listener_t *l = obj;
    char avail[512] = "";
    size_t n = strlen(value), got = 0;
    FILE *f;

    if (n == 0 || n >= sizeof l->tcp_congestion || !keys_valid_name(value)) {
        snprintf(err, errlen, "not a congestion control name (e.g. cubic, bbr, reno)");
        return -EINVAL;
    }
    f = fopen(CONFIG_TCP_CA_AVAILABLE, "re");
    if (f != NULL) {
        got = fread(avail, 1, sizeof avail - 1, f);
        fclose(f);
    }
    avail[got] = '\0';
    avail[strcspn(avail, "\n")] = '\0';
    if (f == NULL) {
        snprintf(err, errlen, "cannot read %s: %s", CONFIG_TCP_CA_AVAILABLE, strerror(errno));
        return -EINVAL;
    }
    for (const char *q = avail; *q;) {
        size_t len = strcspn(q, " \t");
        if (len == n && memcmp(q, value, n) == 0) {
            memcpy(l->tcp_congestion, value, n + 1);
            return 0;
        }
        q += len;
        q += strspn(q, " \t");
    }
    snprintf(err, errlen, "not available in this kernel (available: %s)", avail);
    return -EINVAL;
}

#define LK(field) offsetof(config_listener_t, field)

static const struct key listener_keys[LK_COUNT] = {
    [LK_PROTOCOL] = {.name = "protocol", .type = KEY_CUSTOM, .set = set_protocol},
    [LK_ADDRESS] = {.name = "address", .type = KEY_CUSTOM, .set = set_address},
    [LK_HANDLER] = {.name = "handler", .type = KEY_CUSTOM, .set = set_handler},
    [LK_CONCURRENCY] = {.name = "concurrency",
                        .type = KEY_U32,
                        .offset = LK(concurrency),
                        .min = 1,
                        .max = MAX_CONCURRENCY},
    [LK_IDLE_TIMEOUT] = {.name = "idle_timeout",
                         .type = KEY_DURATION,
                         .offset = LK(idle_timeout),
                         .help = DURATION_HINT ", or 0 for none"},
    [LK_BACKLOG] =
        {.name = "backlog", .type = KEY_U32, .offset = LK(backlog), .min = 1, .max = 65535},
    [LK_MODE] = {.name = "mode", .type = KEY_CUSTOM, .set = set_mode},
    [LK_WRITE_BUFFER] = {.name = "write_buffer",
                         .type = KEY_SIZE,
                         .offset = LK(write_buffer),
                         .min = MIN_WRITE_BUFFER,
                         .max = MAX_WRITE_BUFFER,
                         .help = "must be 1K..1G"},
    [LK_ALLOW] = {.name = "allow", .type = KEY_CIDRS, .offset = LK(allow)},
    [LK_DENY] = {.name = "deny", .type = KEY_CIDRS, .offset = LK(deny)},
    [LK_CRASH_LIMIT] = {.name = "crash_limit", .type = KEY_CUSTOM, .set = set_crash_limit},
    [LK_ISOLATE] = {.name = "isolate", .type = KEY_CUSTOM, .set = set_isolate},
    [LK_PROXY_PROTOCOL] = {.name = "proxy_protocol", .type = KEY_CUSTOM, .set = set_proxy_protocol},
    [LK_PROXY_FROM] = {.name = "proxy_from", .type = KEY_CIDRS, .offset = LK(proxy_from)},
    [LK_PROXY_TIMEOUT] = {.name = "proxy_timeout",
                          .type = KEY_DURATION,
                          .offset = LK(proxy_timeout),
                          .help = DURATION_HINT},
    [LK_PER_SOURCE] = {.name = "per_source",
                       .type = KEY_U32,
                       .offset = LK(per_source),
                       .min = 1,
                       .max = MAX_CONCURRENCY},
    [LK_PER_SOURCE_PREFIX6] = {.name = "per_source_prefix6",
                               .type = KEY_U32,
                               .offset = LK(per_source_prefix6),
                               .min = 1,
                               .max = 128},
    [LK_RATE] = {.name = "rate", .type = KEY_CUSTOM, .set = set_rate},
    [LK_BURST] =
        {.name = "burst", .type = KEY_U32, .offset = LK(burst), .min = 1, .max = MAX_CONCURRENCY},
    [LK_OVER_LIMIT] = {.name = "over_limit", .type = KEY_CUSTOM, .set = set_over_limit},
    [LK_MULTICAST] = {.name = "multicast", .type = KEY_CUSTOM, .set = multicast_set_groups},
    [LK_MULTICAST_INTERFACE] = {.name = "multicast_interface",
                                .type = KEY_CUSTOM,
                                .set = multicast_set_interface},
    [LK_MULTICAST_SOURCE] = {.name = "multicast_source",
                             .type = KEY_CUSTOM,
                             .set = multicast_set_source},
    [LK_MULTICAST_LOOP] = {.name = "multicast_loop", .type = KEY_CUSTOM, .set = multicast_set_loop},
    /* tcp_congestion */
    [LK_TCP_CONGESTION] = {.name = "tcp_congestion", .type = KEY_CUSTOM, .set = set_tcp_congestion},
};

/* ---- setting a value ------------------------------------------------------------------- */

static int set_cidrs(berth_cidr_list_t *list, const char *value, char *err, size_t errlen)
{
    char bad[64];
    int rc = berth_cidr_list_parse(list, value, 0, bad, sizeof(bad));

    if (rc == -EINVAL)
        snprintf(err, errlen,
                 "'%s' is not an IPv4 or IPv6 address or prefix (e.g. 10.0.0.0/8, ::1; no "
                 "ports, no bits set past the prefix)",
                 bad);
    else if (rc == 0 && list->count == 0) {
        snprintf(err, errlen, "the list is empty");
        rc = -EINVAL;
    }
    return rc;
}

/* The value of key `k` into `obj`; an error message into err, or none when out of memory. */
static int key_set(struct parse *p, const struct key *k, void *obj, const char *value, char *err,
                   size_t errlen)
{
    char *slot = (char *)obj + k->offset;
    uint64_t n = 0;
    int rc = -EINVAL;

    switch (k->type) {
    case KEY_U32:
        rc = keys_parse_number(value, k->min, k->max, &n);
        if (rc < 0 && k->help)
            snprintf(err, errlen, "%s", k->help);
        else if (rc < 0)
            snprintf(err, errlen, "must be %llu..%llu", (unsigned long long)k->min,
                     (unsigned long long)k->max);
        else
            *(uint32_t *)(void *)slot = (uint32_t)n;
        break;
    case KEY_DURATION:
        rc = berth_parse_duration(value, (uint64_t *)(void *)slot);
        if (rc < 0)
            snprintf(err, errlen, "%s", k->help);
        break;
    case KEY_SIZE:
        rc = berth_parse_size(value, &n);
        if (rc < 0) {
            snprintf(err, errlen, SIZE_HINT);
        } else if (n < k->min || n > k->max) {
            snprintf(err, errlen, "%s", k->help);
            rc = -EINVAL;
        } else {
            *(uint64_t *)(void *)slot = n;
        }
        break;
    case KEY_CIDRS:
        rc = set_cidrs((berth_cidr_list_t *)(void *)slot, value, err, errlen);
        break;
    case KEY_CUSTOM:
        rc = k->set(p, obj, value, err, errlen);
        break;
    case KEY_INCLUDE:
        reader_include(p, value);
        rc = 0;
        break;
    }
    return rc;
}

/* Look `name` up in `keys`; report a duplicate; set it. Returns the key's index, or `n` when
 * the table does not know it. */
static size_t key_apply(struct parse *p, const struct key *keys, size_t n, struct where *seen,
                        void *obj, const char *name, const char *value)
{
    struct source *s = p->cur;
    char err[256] = "";
    size_t k = 0;

    while (k < n && strcmp(keys[k].name, name) != 0)
        k++;
    if (k == n)
        return n;
    if (keys[k].type != KEY_INCLUDE && seen[k].line) {
        parse_error(p, "duplicate key '%s' (first set at %s:%d)", name, seen[k].file, seen[k].line);
        return k;
    }
    seen[k] = (struct where){s->name, s->line};
    if (key_set(p, &keys[k], obj, value, err, sizeof(err)) < 0) {
        if (err[0])
            parse_error(p, "%s '%s': %s", name, value, err);
        else
            p->nomem = 1;
    }
    return k;
}

void keys_daemon(struct parse *p, const char *name, const char *value)
{
    if (key_apply(p, daemon_keys, DK_COUNT, p->daemon_seen, p->cfg, name, value) == DK_COUNT)
        parse_error(p, "unknown key '%s' in [daemon]", name);
}

/* A key the daemon does not know: the plugin's, checked when it is loaded. */
static void add_option(struct parse *p, config_listener_t *l, struct listener_state *ls,
                       const char *name, const char *value)
{
    struct source *s = p->cur;
    config_option_t *opts;
    config_option_t o = {0};

    for (size_t i = 0; i < l->noptions; i++) {
        if (strcmp(l->options[i].key, name) == 0) {
            parse_error(p, "duplicate key '%s' (first set at %s:%d)", name, l->options[i].file,
                        l->options[i].line);
            return;
        }
    }
    if (l->noptions >= MAX_OPTIONS) {
        /* Each key above is checked against every other: keep that cheap. */
        if (!ls->too_many_options_reported)
            parse_error(p, "listener '%s': more than %d plugin keys", l->name, MAX_OPTIONS);
        ls->too_many_options_reported = 1;
        return;
    }
    o.key = parse_strdup(p, name);
    o.value = parse_strdup(p, value);
    o.file = s->name;
    o.line = s->line;
    opts = realloc(l->options, (l->noptions + 1) * sizeof(*opts));
    if (!o.key || !o.value || !opts) {
        p->nomem = 1;
        free(o.key);
        free(o.value);
        if (opts)
            l->options = opts;
        return;
    }
    l->options = opts;
    l->options[l->noptions++] = o;
}

void keys_listener(struct parse *p, const char *name, const char *value)
{
    config_listener_t *l = &p->cfg->listeners[p->cur->listener];
    struct listener_state *ls = cur_state(p);

    if (key_apply(p, listener_keys, LK_COUNT, ls->seen, l, name, value) == LK_COUNT &&
        !tls_keys_listener(p, l, name, value))
        add_option(p, l, ls, name, value);
}

/* ---- sections -------------------------------------------------------------------------- */

/* PROXY protocol keys: tcp only, and never on without the peers allowed to send a header
 * (else any client could name its own address). */
/* A unix stream listener behind a local balancer: its peers have the header's address. */
static int unix_proxied(const config_listener_t *l)
{
    return l->protocol == BERTH_PROTO_UNIX && l->proxy_protocol;
}

static void proxy_end(struct parse *p, const config_listener_t *l, const struct listener_state *ls)
{
    const struct where *w = &ls->seen[LK_PROXY_PROTOCOL];

    if (l->protocol != BERTH_PROTO_TCP && l->protocol != BERTH_PROTO_UNIX) {
        for (int k = LK_PROXY_PROTOCOL; k <= LK_PROXY_TIMEOUT; k++)
            if (ls->seen[k].line)
                parse_error_at(p, ls->seen[k].file, ls->seen[k].line,
                               "%s: only tcp and unix listeners take a PROXY protocol header",
                               listener_keys[k].name);
        return;
    }
    /* A unix peer has no address to judge: the socket file's mode says who may connect (a
     * local balancer), so every peer of it must send the header. */
    if (l->protocol == BERTH_PROTO_UNIX && ls->seen[LK_PROXY_FROM].line)
        parse_error_at(p, ls->seen[LK_PROXY_FROM].file, ls->seen[LK_PROXY_FROM].line,
                       "proxy_from: unix peers have no IP address (the socket file's mode "
                       "guards who may send the header)");
    else if (l->proxy_protocol && !ls->seen[LK_PROXY_FROM].line && l->protocol == BERTH_PROTO_TCP)
        parse_error_at(p, w->file, w->line,
                       "proxy_protocol: needs proxy_from, the balancers allowed to send the "
                       "header (anyone else could claim any address)");
    for (int k = LK_PROXY_FROM; k <= LK_PROXY_TIMEOUT; k++)
        if (ls->seen[k].line && !l->proxy_protocol)
            parse_error_at(p, ls->seen[k].file, ls->seen[k].line,
                           "%s: proxy_protocol is off in this listener", listener_keys[k].name);
    if (ls->seen[LK_PROXY_TIMEOUT].line && l->proxy_timeout == 0)
        parse_error_at(p, ls->seen[LK_PROXY_TIMEOUT].file, ls->seen[LK_PROXY_TIMEOUT].line,
                       "proxy_timeout: must be more than 0");
}

static void listener_end(struct parse *p, size_t idx)
{
    static const enum listener_key required[] = {LK_PROTOCOL, LK_ADDRESS, LK_HANDLER};
    config_listener_t *l = &p->cfg->listeners[idx];
    struct listener_state *ls = &p->ls[idx];
    const struct where *w;
    char err[256] = "";
    int rc;

    for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++)
        if (!ls->seen[required[i]].line)
            parse_error_at(p, l->file, l->line, "listener '%s': missing '%s'", l->name,
                           listener_keys[required[i]].name);
    tls_keys_section_end(p, l, ls->protocol_ok);
    if (!ls->protocol_ok)
        return;

    w = &ls->seen[LK_MODE];
    if (w->line && !address_is_unix(l->protocol))
        parse_error_at(p, w->file, w->line,
                       "mode: only unix and unixgram listeners have a socket file");
    w = &ls->seen[LK_BACKLOG];
    if (w->line && !address_is_stream(l->protocol))
        parse_error_at(p, w->file, w->line,
                       "backlog: only tcp and unix listeners accept connections");
    for (int k = LK_ALLOW; k <= LK_DENY; k++) {
        w = &ls->seen[k];
        if (w->line && address_is_unix(l->protocol) && !unix_proxied(l))
            parse_error_at(p, w->file, w->line,
                           "%s: unix peers have no IP address (file permissions guard them: mode)",
                           listener_keys[k].name);
    }
    proxy_end(p, l, ls);
    for (int k = LK_PER_SOURCE; k <= LK_BURST; k++)
        if (ls->seen[k].line && l->protocol != BERTH_PROTO_TCP && l->protocol != BERTH_PROTO_UDP &&
            !unix_proxied(l))
            parse_error_at(p, ls->seen[k].file, ls->seen[k].line,
                           "%s: only tcp and udp listeners (and unix ones with proxy_protocol) "
                           "have per-source limits",
                           listener_keys[k].name);
    w = &ls->seen[LK_BURST];
    if (w->line && !l->rate)
        parse_error_at(p, w->file, w->line, "burst: needs rate");
    w = &ls->seen[LK_OVER_LIMIT];
    if (w->line && !l->per_source)
        parse_error_at(p, w->file, w->line, "over_limit: needs per_source");
    else if (w->line && !address_is_stream(l->protocol))
        parse_error_at(p, w->file, w->line,
                       "over_limit: a datagram over per_source cannot wait; it is dropped");
    w = &ls->seen[LK_TCP_CONGESTION];
    if (w->line && l->protocol != BERTH_PROTO_TCP)
        parse_error_at(p, w->file, w->line,
                       "tcp_congestion: only tcp listeners have TCP sockets to set it on");
    w = &ls->seen[LK_PER_SOURCE_PREFIX6];
    if (w->line && !l->rate && !l->per_source)
        parse_error_at(p, w->file, w->line, "per_source_prefix6: needs per_source or rate");

    if (!l->address)
        return;
    w = &ls->seen[LK_ADDRESS];
    if (address_is_unix(l->protocol))
        rc = address_parse_unix(l->address, &l->addr, &l->addrlen, err, sizeof(err));
    else
        rc = address_parse_inet(l->address, &l->addr, &l->addrlen, err, sizeof(err));
    if (rc < 0) {
        parse_error_at(p, w->file, w->line, "address '%s': %s", l->address, err);
        return;
    }
    ls->address_ok = 1;
    for (size_t j = 0; j < idx; j++) {
        const config_listener_t *o = &p->cfg->listeners[j];
        if (p->ls[j].address_ok && address_same_binding(l, o)) {
            parse_error_at(p, w->file, w->line,
                           "address '%s' (%s) is already used by listener '%s' (%s:%d)", l->address,
                           config_protocol_name(l->protocol), o->name,
                           p->ls[j].seen[LK_ADDRESS].file, p->ls[j].seen[LK_ADDRESS].line);
            break;
        }
    }
}

void keys_section_end(struct source *s)
{
    if (s->kind == SEC_LISTENER) {
        listener_end(s->p, s->listener);
        multicast_section_end(s->p, s->listener);
    }
    s->kind = SEC_NONE;
}

static int grow_listeners(struct parse *p)
{
    berth_config_t *cfg = p->cfg;
    size_t cap = p->lcap ? p->lcap * 2 : 8;
    config_listener_t *ls;
    struct listener_state *st;

    if (cfg->nlisteners < p->lcap)
        return 0;
    ls = realloc(cfg->listeners, cap * sizeof(*ls));
    if (!ls)
        goto nomem;
    cfg->listeners = ls;
    st = realloc(p->ls, cap * sizeof(*st));
    if (!st)
        goto nomem;
    p->ls = st;
    p->lcap = cap;
    return 0;
nomem:
    p->nomem = 1;
    return -ENOMEM;
}

void keys_section_begin(struct source *s, const char *name)
{
    struct parse *p = s->p;
    berth_config_t *cfg = p->cfg;
    config_listener_t *l;

    s->kind = SEC_SKIP;
    if (strcmp(name, "daemon") == 0) {
        s->kind = SEC_DAEMON;
        return;
    }
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        if (strcmp(cfg->listeners[i].name, name) == 0) {
            parse_error(p, "duplicate section [%s] (first at %s:%d)", name, cfg->listeners[i].file,
                        cfg->listeners[i].line);
            return;
        }
    }
    if (cfg->nlisteners >= BERTH_MAX_LISTENERS) {
        if (!p->too_many_reported)
            parse_error(p, "too many listeners (at most %d)", BERTH_MAX_LISTENERS);
        p->too_many_reported = 1;
        return;
    }
    if (grow_listeners(p) < 0)
        return;
    l = &cfg->listeners[cfg->nlisteners];
    memset(l, 0, sizeof(*l));
    memset(&p->ls[cfg->nlisteners], 0, sizeof(p->ls[0]));
    l->name = parse_strdup(p, name);
    if (!l->name)
        return;
    l->file = s->name;
    l->line = s->line;
    l->concurrency = DEFAULT_CONCURRENCY;
    l->idle_timeout = DEFAULT_IDLE_TIMEOUT;
    l->backlog = DEFAULT_BACKLOG;
    l->mode = DEFAULT_MODE;
    l->write_buffer = DEFAULT_WRITE_BUFFER;
    l->crash_limit = DEFAULT_CRASH_LIMIT;
    l->crash_window = DEFAULT_CRASH_WINDOW;
    l->proxy_timeout = DEFAULT_PROXY_TIMEOUT;
    l->per_source_prefix6 = 64;
    l->mcast.loop = -1;
    s->listener = cfg->nlisteners++;
    s->kind = SEC_LISTENER;
}
