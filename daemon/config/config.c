/*
 * berth.conf: INI text into an immutable berth_config_t.
 *
 * inih tokenizes `key = value` lines, but our own line reader sits in front of it. Debian's
 * inih is built without INI_HANDLER_LINENO, with a 200-byte line buffer, and reports only the
 * first syntax error; so the reader counts lines (the handler runs right after the reader
 * returns each line, so its counter is the handler's line), reads each line whole so a long
 * one is an error instead of being split in two, tracks [sections] itself (inih cuts their
 * names at 50 bytes and does not report empty ones), and checks every line inih would reject,
 * handing inih only lines it accepts. Every error is kept, each as "FILE:LINE: message".
 *
 * Listener values that depend on each other (address on protocol) are checked when their
 * section ends; plugin paths are resolved after everything is read, because plugin_dir may
 * come after the listeners or from an include.
 */
#include "config/config.h"
#include "core/log.h"
#include "berth/units.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <ini.h>
#include <limits.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifdef BERTH_DEFAULT_PLUGIN_DIR_BUILD
#define PLUGIN_DIR_DEFAULT BERTH_DEFAULT_PLUGIN_DIR_BUILD
#else
#define PLUGIN_DIR_DEFAULT BERTH_DEFAULT_PLUGIN_DIR
#endif

#define MAX_INCLUDE_DEPTH 8
#define MAX_NAME 64 /* section and key names */
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

#define DEFAULT_CONCURRENCY 1024u
#define MAX_CONCURRENCY 1000000u
#define DEFAULT_IDLE_TIMEOUT (5u * 60u * 1000u)
#define DEFAULT_BACKLOG 511u
#define DEFAULT_MODE 0660u
#define DEFAULT_WRITE_BUFFER (256u * 1024u)
#define MIN_WRITE_BUFFER 1024u
#define MAX_WRITE_BUFFER (1024u * 1024u * 1024u)
#define DEFAULT_SHUTDOWN_TIMEOUT (30u * 1000u)

#define DURATION_HINT "not a duration (e.g. 250ms, 30s, 5m, 1h, 2d)"
#define SIZE_HINT "not a size (e.g. 4096, 64K, 10M, 2G)"

struct where {
    const char *file;
    int line; /* 0: not seen */
};

enum section_kind {
    SEC_NONE,     /* before the first section of a file */
    SEC_DAEMON,   /* [daemon] */
    SEC_LISTENER, /* any other section */
    SEC_SKIP,     /* a section whose header was wrong: already reported, keys ignored */
};

enum daemon_key {
    DK_WORKERS,
    DK_USER,
    DK_PLUGIN_DIR,
    DK_ADMIN,
    DK_LOG_LEVEL,
    DK_LOG,
    DK_SHUTDOWN_TIMEOUT,
    DK_INCLUDE,
    DK_COUNT,
};

enum listener_key {
    LK_PROTOCOL,
    LK_ADDRESS,
    LK_HANDLER,
    LK_CONCURRENCY,
    LK_IDLE_TIMEOUT,
    LK_BACKLOG,
    LK_MODE,
    LK_WRITE_BUFFER,
    LK_ALLOW,
    LK_DENY,
    LK_CRASH_LIMIT,
    LK_ISOLATE,
    LK_COUNT,
};

/* What the parser knows about a listener beyond config_listener_t. */
struct listener_state {
    struct where seen[LK_COUNT];
    int protocol_ok;
    int address_ok;
};

struct parse;

/* One file (or string) being read. */
struct source {
    struct parse *p;
    const char *name; /* points into cfg->files */
    char *dir;        /* relative paths written in this file start here */
    FILE *fp;         /* or: */
    const char *mem;
    size_t memlen, mempos;
    int line;
    int depth; /* 0 for the main file */
    size_t nerrors;
    enum section_kind kind;
    size_t listener; /* index, when kind == SEC_LISTENER */
};

/* Where an error was found, to list errors by file and line in the end. */
struct error_key {
    size_t rank; /* index of its file in cfg->files */
    int line;
    size_t seq;
    char *msg;
};

struct parse {
    berth_config_t *cfg;
    config_errors_t *errs;
    size_t errs_base; /* errs->count before this load */
    struct error_key *keys;
    unsigned flags;
    size_t nerrors;
    int nomem;
    struct source *cur;
    struct where daemon_seen[DK_COUNT];
    struct listener_state *ls; /* parallel to cfg->listeners */
    size_t lcap;
    int too_many_reported;
    int plugin_dir_bad;
    /* The files being read, outermost first, to refuse an include cycle. */
    char *reading[MAX_INCLUDE_DEPTH + 1];
    size_t nreading;
};

typedef int (*daemon_setter)(struct parse *p, const char *value, char *err, size_t errlen);
typedef int (*listener_setter)(struct parse *p, config_listener_t *l, struct listener_state *ls,
                               const char *value, char *err, size_t errlen);

/* ---- errors ---------------------------------------------------------------------------- */

void config_errors_add(config_errors_t *errs, const char *file, int line, const char *fmt, ...)
{
    va_list ap;
    char *msg = NULL, *full = NULL;
    char **msgs;
    int n;

    if (!errs)
        return;
    va_start(ap, fmt);
    n = vasprintf(&msg, fmt, ap);
    va_end(ap);
    if (n < 0) {
        msg = NULL;
        goto out;
    }
    if (file)
        n = asprintf(&full, "%s:%d: %s", file, line, msg);
    else
        n = asprintf(&full, "%s", msg);
    if (n < 0) {
        full = NULL;
        goto out;
    }
    msgs = realloc(errs->msgs, (errs->count + 1) * sizeof(*msgs));
    if (!msgs)
        goto out;
    errs->msgs = msgs;
    errs->msgs[errs->count++] = full;
    full = NULL;
out:
    free(msg);
    free(full);
}

void config_errors_free(config_errors_t *errs)
{
    if (!errs)
        return;
    for (size_t i = 0; i < errs->count; i++)
        free(errs->msgs[i]);
    free(errs->msgs);
    errs->msgs = NULL;
    errs->count = 0;
}

static size_t file_rank(const struct parse *p, const char *file)
{
    for (size_t i = 0; file && i < p->cfg->nfiles; i++)
        if (p->cfg->files[i] == file || strcmp(p->cfg->files[i], file) == 0)
            return i;
    return SIZE_MAX;
}

__attribute__((format(printf, 4, 0))) static void vperr_at(struct parse *p, const char *file,
                                                           int line, const char *fmt, va_list ap)
{
    char *msg = NULL;
    size_t before = p->errs ? p->errs->count : 0;
    struct error_key *keys;

    p->nerrors++;
    if (p->cur)
        p->cur->nerrors++;
    if (vasprintf(&msg, fmt, ap) < 0) {
        p->nomem = 1;
        return;
    }
    config_errors_add(p->errs, file, line, "%s", msg);
    free(msg);
    if (!p->errs)
        return;
    if (p->errs->count == before) {
        p->nomem = 1;
        return;
    }
    keys = realloc(p->keys, (before + 1 - p->errs_base) * sizeof(*keys));
    if (!keys) {
        p->nomem = 1;
        return;
    }
    p->keys = keys;
    keys[before - p->errs_base] = (struct error_key){
        .rank = file_rank(p, file), .line = line, .seq = before, .msg = p->errs->msgs[before]};
}

static int compare_error_keys(const void *a, const void *b)
{
    const struct error_key *x = a, *y = b;

    if (x->rank != y->rank)
        return x->rank < y->rank ? -1 : 1;
    if (x->line != y->line)
        return x->line < y->line ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Errors are found out of order (a listener is checked when its section ends, plugins at the
 * very end); list them by file, in the order the files were read, then by line. */
static void sort_errors(struct parse *p)
{
    size_t n;

    if (!p->errs || p->nomem || p->errs->count <= p->errs_base)
        return;
    n = p->errs->count - p->errs_base;
    qsort(p->keys, n, sizeof(*p->keys), compare_error_keys);
    for (size_t i = 0; i < n; i++)
        p->errs->msgs[p->errs_base + i] = p->keys[i].msg;
}

__attribute__((format(printf, 4, 5))) static void perr_at(struct parse *p, const char *file,
                                                          int line, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vperr_at(p, file, line, fmt, ap);
    va_end(ap);
}

/* An error at the line being read. */
__attribute__((format(printf, 2, 3))) static void perr(struct parse *p, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vperr_at(p, p->cur->name, p->cur->line, fmt, ap);
    va_end(ap);
}

/* ---- small helpers --------------------------------------------------------------------- */

static char *xstrdup(struct parse *p, const char *s)
{
    char *d = strdup(s);

    if (!d)
        p->nomem = 1;
    return d;
}

/* `path` as written in a file whose directory is `dir`. */
static char *path_in(struct parse *p, const char *dir, const char *path)
{
    char *full = NULL;

    if (path[0] == '/' || !dir)
        return xstrdup(p, path);
    if (asprintf(&full, "%s/%s", dir, path) < 0) {
        full = NULL;
        p->nomem = 1;
    }
    return full;
}

static char *dir_of(const char *path)
{
    const char *slash = strrchr(path, '/');

    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

/* Decimal digits only, min <= value <= max. */
static int parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *out)
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

static int valid_name(const char *s)
{
    size_t n = 0;

    for (; s[n]; n++)
        if (!valid_name_char((unsigned char)s[n]) || n == MAX_NAME)
            return 0;
    return n > 0;
}

static int is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\f' || c == '\v' || c == '\r';
}

/* ---- [daemon] -------------------------------------------------------------------------- */

static int set_workers(struct parse *p, const char *value, char *err, size_t errlen)
{
    uint64_t n = 0;
    int rc = 0;

    if (strcmp(value, "auto") == 0) {
        p->cfg->workers_auto = 1;
    } else if (parse_number(value, 1, BERTH_MAX_WORKERS, &n) == 0) {
        p->cfg->workers_auto = 0;
        p->cfg->workers = (unsigned)n;
    } else {
        snprintf(err, errlen, "must be auto or 1..%d", BERTH_MAX_WORKERS);
        rc = -EINVAL;
    }
    return rc;
}

static int replace_string(struct parse *p, char **slot, char *value)
{
    if (!value)
        return -ENOMEM;
    free(*slot);
    *slot = value;
    return 0;
}

static int set_user(struct parse *p, const char *value, char *err, size_t errlen)
{
    int rc = -EINVAL;

    if (*value == '\0' || strpbrk(value, " \t:/") || strlen(value) > 32) {
        snprintf(err, errlen, "not a user name");
        goto out;
    }
    rc = replace_string(p, &p->cfg->user, xstrdup(p, value));
out:
    return rc;
}

static int set_plugin_dir(struct parse *p, const char *value, char *err, size_t errlen)
{
    int rc = -EINVAL;

    if (*value == '\0') {
        snprintf(err, errlen, "must not be empty");
        p->plugin_dir_bad = 1;
        goto out;
    }
    rc = replace_string(p, &p->cfg->plugin_dir, path_in(p, p->cur->dir, value));
out:
    return rc;
}

static int set_admin(struct parse *p, const char *value, char *err, size_t errlen)
{
    int rc = -EINVAL;

    if (*value != '\0' && *value != '/') {
        snprintf(err, errlen, "must be an absolute path (or empty, to disable it)");
        goto out;
    }
    if (strlen(value) > SUN_PATH_MAX) {
        snprintf(err, errlen, "longer than %zu bytes, the limit of a unix socket path",
                 SUN_PATH_MAX);
        goto out;
    }
    rc = replace_string(p, &p->cfg->admin, xstrdup(p, value));
out:
    return rc;
}

static int set_log_level(struct parse *p, const char *value, char *err, size_t errlen)
{
    if (log_level_parse(value, &p->cfg->log_level) == 0)
        return 0;
    snprintf(err, errlen, "must be error, warn, info or debug");
    return -EINVAL;
}

static int set_log(struct parse *p, const char *value, char *err, size_t errlen)
{
    int rc = -EINVAL;

    if (strcmp(value, "stderr") != 0 && strcmp(value, "syslog") != 0 && value[0] != '/') {
        snprintf(err, errlen, "must be stderr, syslog, or an absolute file path");
        goto out;
    }
    rc = replace_string(p, &p->cfg->log, xstrdup(p, value));
out:
    return rc;
}

static int set_shutdown_timeout(struct parse *p, const char *value, char *err, size_t errlen)
{
    int rc = berth_parse_duration(value, &p->cfg->shutdown_timeout);

    if (rc < 0)
        snprintf(err, errlen, DURATION_HINT);
    return rc;
}

static const struct {
    const char *name;
    daemon_setter set; /* NULL for include, which reads files rather than setting a value */
} daemon_keys[DK_COUNT] = {
    [DK_WORKERS] = {"workers", set_workers},
    [DK_USER] = {"user", set_user},
    [DK_PLUGIN_DIR] = {"plugin_dir", set_plugin_dir},
    [DK_ADMIN] = {"admin", set_admin},
    [DK_LOG_LEVEL] = {"log_level", set_log_level},
    [DK_LOG] = {"log", set_log},
    [DK_SHUTDOWN_TIMEOUT] = {"shutdown_timeout", set_shutdown_timeout},
    [DK_INCLUDE] = {"include", NULL},
};

static void read_file(struct parse *p, const char *path, int depth, const char *pattern);

/* glob(3) gives its error callback no user pointer. */
static _Thread_local int glob_errno;
static _Thread_local char glob_epath[PATH_MAX];

static int glob_error(const char *epath, int eerrno)
{
    /* A folder that does not exist just matches nothing. */
    if (eerrno == ENOENT || eerrno == ENOTDIR)
        return 0;
    glob_errno = eerrno;
    snprintf(glob_epath, sizeof(glob_epath), "%s", epath);
    return 1;
}

/* `value` as a glob pattern, relative to `dir` with the wildcards of `dir` escaped: a config
 * folder named "[x]" still means itself. */
static char *glob_pattern(struct parse *p, const char *dir, const char *value)
{
    size_t n = strlen(dir), k = 0;
    char *out;

    if (value[0] == '/')
        return xstrdup(p, value);
    out = malloc(2 * n + strlen(value) + 2);
    if (!out) {
        p->nomem = 1;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (strchr("*?[\\", dir[i]))
            out[k++] = '\\';
        out[k++] = dir[i];
    }
    out[k++] = '/';
    strcpy(out + k, value);
    return out;
}

static int compare_paths(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void include(struct parse *p, const char *value)
{
    struct source *s = p->cur;
    char *pattern = NULL;
    glob_t g;
    int rc;

    memset(&g, 0, sizeof(g));
    if (p->flags & CONFIG_LOAD_NO_INCLUDE) {
        perr(p, "include '%s': includes are not allowed here", value);
        goto out;
    }
    if (*value == '\0') {
        perr(p, "include: the pattern is empty");
        goto out;
    }
    if (s->depth >= MAX_INCLUDE_DEPTH) {
        perr(p, "include '%s': includes nested more than %d deep", value, MAX_INCLUDE_DEPTH);
        goto out;
    }
    if (!strpbrk(value, "*?[")) {
        /* A plain file name is meant to exist: only a pattern may match nothing. */
        pattern = path_in(p, s->dir, value);
        if (pattern)
            read_file(p, pattern, s->depth + 1, value);
        goto out;
    }
    pattern = glob_pattern(p, s->dir, value);
    if (!pattern)
        goto out;
    glob_errno = 0;
    rc = glob(pattern, GLOB_NOSORT, glob_error, &g);
    if (rc == GLOB_NOSPACE) {
        p->nomem = 1;
        goto out;
    }
    if (rc == GLOB_ABORTED) {
        perr(p, "include '%s': %s: %s", value, glob_epath, strerror(glob_errno));
        goto out;
    }
    if (rc != 0)
        goto out; /* GLOB_NOMATCH */
    qsort(g.gl_pathv, g.gl_pathc, sizeof(*g.gl_pathv), compare_paths);
    for (size_t i = 0; i < g.gl_pathc; i++)
        read_file(p, g.gl_pathv[i], s->depth + 1, value);
out:
    globfree(&g);
    free(pattern);
}

static void daemon_key(struct parse *p, const char *name, const char *value)
{
    struct source *s = p->cur;
    char err[256] = "";
    size_t k = 0;

    while (k < DK_COUNT && strcmp(daemon_keys[k].name, name) != 0)
        k++;
    if (k == DK_COUNT) {
        perr(p, "unknown key '%s' in [daemon]", name);
        return;
    }
    if (k != DK_INCLUDE && p->daemon_seen[k].line) {
        perr(p, "duplicate key '%s' (first set at %s:%d)", name, p->daemon_seen[k].file,
             p->daemon_seen[k].line);
        return;
    }
    p->daemon_seen[k] = (struct where){s->name, s->line};
    if (k == DK_INCLUDE) {
        include(p, value);
        return;
    }
    if (daemon_keys[k].set(p, value, err, sizeof(err)) < 0 && err[0])
        perr(p, "%s '%s': %s", name, value, err);
}

/* ---- listener sections ----------------------------------------------------------------- */

static int set_protocol(struct parse *p, config_listener_t *l, struct listener_state *ls,
                        const char *value, char *err, size_t errlen)
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
    int rc = -EINVAL;

    for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
        if (strcmp(value, protos[i].name) == 0) {
            l->protocol = protos[i].proto;
            ls->protocol_ok = 1;
            rc = 0;
        }
    }
    if (rc < 0)
        snprintf(err, errlen, "must be tcp, udp, unix or unixgram");
    return rc;
}

static int set_address(struct parse *p, config_listener_t *l, struct listener_state *ls,
                       const char *value, char *err, size_t errlen)
{
    if (*value == '\0') {
        snprintf(err, errlen, "must not be empty");
        return -EINVAL;
    }
    /* Checked when the section ends: its meaning depends on the protocol. */
    return replace_string(p, &l->address, xstrdup(p, value));
}

static int set_handler(struct parse *p, config_listener_t *l, struct listener_state *ls,
                       const char *value, char *err, size_t errlen)
{
    if (*value == '\0') {
        snprintf(err, errlen, "must name a plugin or a path to one");
        return -EINVAL;
    }
    l->handler_line = p->cur->line;
    /* Resolved once everything is read: plugin_dir may come later. */
    return replace_string(p, &l->handler, xstrdup(p, value));
}

static int set_concurrency(struct parse *p, config_listener_t *l, struct listener_state *ls,
                           const char *value, char *err, size_t errlen)
{
    uint64_t n = 0;
    int rc = parse_number(value, 1, MAX_CONCURRENCY, &n);

    if (rc < 0)
        snprintf(err, errlen, "must be 1..%u", MAX_CONCURRENCY);
    else
        l->concurrency = (uint32_t)n;
    return rc;
}

static int set_idle_timeout(struct parse *p, config_listener_t *l, struct listener_state *ls,
                            const char *value, char *err, size_t errlen)
{
    int rc = berth_parse_duration(value, &l->idle_timeout);

    if (rc < 0)
        snprintf(err, errlen, DURATION_HINT ", or 0 for none");
    return rc;
}

/* "K/WINDOW": K crashes within WINDOW quarantine the listener. */
static int set_crash_limit(struct parse *p, config_listener_t *l, struct listener_state *ls,
                           const char *value, char *err, size_t errlen)
{
    const char *slash = strchr(value, '/');
    char count[32];
    uint64_t k = 0, window = 0;
    if (slash == NULL || (size_t)(slash - value) >= sizeof count) {
        snprintf(err, errlen, "expected COUNT/WINDOW, such as 5/1m");
        return -EINVAL;
    }
    memcpy(count, value, (size_t)(slash - value));
    count[slash - value] = '\0';
    if (parse_number(count, 1, CONFIG_CRASH_LIMIT_MAX, &k) < 0 ||
        berth_parse_duration(slash + 1, &window) < 0 || window == 0) {
        snprintf(err, errlen, "expected COUNT/WINDOW, COUNT 1..%d, such as 5/1m",
                 CONFIG_CRASH_LIMIT_MAX);
        return -EINVAL;
    }
    l->crash_limit = (uint32_t)k;
    l->crash_window = window;
    return 0;
}

static int set_isolate(struct parse *p, config_listener_t *l, struct listener_state *ls,
                       const char *value, char *err, size_t errlen)
{
    int rc = berth_parse_bool(value, &l->isolate);
    if (rc < 0)
        snprintf(err, errlen, "must be yes or no");
    return rc;
}

static int set_backlog(struct parse *p, config_listener_t *l, struct listener_state *ls,
                       const char *value, char *err, size_t errlen)
{
    uint64_t n = 0;
    int rc = parse_number(value, 1, 65535, &n);

    if (rc < 0)
        snprintf(err, errlen, "must be 1..65535");
    else
        l->backlog = (uint32_t)n;
    return rc;
}

static int set_mode(struct parse *p, config_listener_t *l, struct listener_state *ls,
                    const char *value, char *err, size_t errlen)
{
    uint32_t mode = 0;
    size_t n = strlen(value);
    int rc = -EINVAL;

    if (n == 0 || n > 4 || strspn(value, "01234567") != n) {
        snprintf(err, errlen, "must be an octal file mode such as 0660");
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        mode = mode * 8 + (uint32_t)(value[i] - '0');
    if (mode > 0777) {
        snprintf(err, errlen, "only permission bits (0000..0777) apply to a socket");
        goto out;
    }
    l->mode = mode;
    rc = 0;
out:
    return rc;
}

static int set_write_buffer(struct parse *p, config_listener_t *l, struct listener_state *ls,
                            const char *value, char *err, size_t errlen)
{
    uint64_t n = 0;
    int rc = berth_parse_size(value, &n);

    if (rc < 0) {
        snprintf(err, errlen, SIZE_HINT);
    } else if (n < MIN_WRITE_BUFFER || n > MAX_WRITE_BUFFER) {
        snprintf(err, errlen, "must be 1K..1G");
        rc = -EINVAL;
    } else {
        l->write_buffer = n;
    }
    return rc;
}

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

static int set_allow(struct parse *p, config_listener_t *l, struct listener_state *ls,
                     const char *value, char *err, size_t errlen)
{
    return set_cidrs(&l->allow, value, err, errlen);
}

static int set_deny(struct parse *p, config_listener_t *l, struct listener_state *ls,
                    const char *value, char *err, size_t errlen)
{
    return set_cidrs(&l->deny, value, err, errlen);
}

static const struct {
    const char *name;
    listener_setter set;
} listener_keys[LK_COUNT] = {
    [LK_PROTOCOL] = {"protocol", set_protocol},
    [LK_ADDRESS] = {"address", set_address},
    [LK_HANDLER] = {"handler", set_handler},
    [LK_CONCURRENCY] = {"concurrency", set_concurrency},
    [LK_IDLE_TIMEOUT] = {"idle_timeout", set_idle_timeout},
    [LK_BACKLOG] = {"backlog", set_backlog},
    [LK_MODE] = {"mode", set_mode},
    [LK_WRITE_BUFFER] = {"write_buffer", set_write_buffer},
    [LK_ALLOW] = {"allow", set_allow},
    [LK_DENY] = {"deny", set_deny},
    [LK_CRASH_LIMIT] = {"crash_limit", set_crash_limit},
    [LK_ISOLATE] = {"isolate", set_isolate},
};

/* A key the daemon does not know: the plugin's, checked when it is loaded. */
static void add_option(struct parse *p, config_listener_t *l, const char *name, const char *value)
{
    struct source *s = p->cur;
    config_option_t *opts;
    config_option_t o = {0};

    for (size_t i = 0; i < l->noptions; i++) {
        if (strcmp(l->options[i].key, name) == 0) {
            perr(p, "duplicate key '%s' (first set at %s:%d)", name, l->options[i].file,
                 l->options[i].line);
            return;
        }
    }
    o.key = xstrdup(p, name);
    o.value = xstrdup(p, value);
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

static void listener_key(struct parse *p, const char *name, const char *value)
{
    struct source *s = p->cur;
    config_listener_t *l = &p->cfg->listeners[s->listener];
    struct listener_state *ls = &p->ls[s->listener];
    char err[256] = "";
    size_t k = 0;

    while (k < LK_COUNT && strcmp(listener_keys[k].name, name) != 0)
        k++;
    if (k == LK_COUNT) {
        add_option(p, l, name, value);
        return;
    }
    if (ls->seen[k].line) {
        perr(p, "duplicate key '%s' (first set at %s:%d)", name, ls->seen[k].file,
             ls->seen[k].line);
        return;
    }
    ls->seen[k] = (struct where){s->name, s->line};
    if (listener_keys[k].set(p, l, ls, value, err, sizeof(err)) < 0) {
        if (err[0])
            perr(p, "%s '%s': %s", name, value, err);
        else
            p->nomem = 1;
    }
}

/* "host:port", "[v6]:port", "*:port" (0.0.0.0), "localhost:port" (127.0.0.1). */
static int parse_inet_address(const char *text, struct sockaddr_storage *ss, socklen_t *len,
                              char *err, size_t errlen)
{
    char host[INET6_ADDRSTRLEN];
    const char *start = text, *port;
    size_t hlen;
    uint64_t portnum = 0;
    int bracketed = 0, rc = -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (!close || close[1] != ':') {
            snprintf(err, errlen, "expected [IPv6]:port");
            goto out;
        }
        start = text + 1;
        hlen = (size_t)(close - start);
        port = close + 2;
        bracketed = 1;
    } else {
        const char *colon = strrchr(text, ':');
        if (!colon) {
            snprintf(err, errlen, "expected host:port");
            goto out;
        }
        if (memchr(text, ':', (size_t)(colon - text))) {
            snprintf(err, errlen, "an IPv6 address needs brackets, as in [::1]:7007");
            goto out;
        }
        hlen = (size_t)(colon - text);
        port = colon + 1;
    }
    if (hlen == 0 || hlen >= sizeof(host)) {
        snprintf(err, errlen, "expected host:port");
        goto out;
    }
    memcpy(host, start, hlen);
    host[hlen] = '\0';
    if (parse_number(port, 0, 65535, &portnum) < 0) { /* 0: the kernel picks one */
        snprintf(err, errlen, "the port must be 0..65535");
        goto out;
    }
    if (bracketed) {
        struct sockaddr_in6 sin6 = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)portnum)};
        if (inet_pton(AF_INET6, host, &sin6.sin6_addr) != 1) {
            snprintf(err, errlen, "'%s' is not an IPv6 address", host);
            goto out;
        }
        memcpy(ss, &sin6, sizeof(sin6));
        *len = sizeof(sin6);
    } else {
        struct sockaddr_in sin = {.sin_family = AF_INET, .sin_port = htons((uint16_t)portnum)};
        if (strcmp(host, "*") == 0) {
            sin.sin_addr.s_addr = htonl(INADDR_ANY);
        } else if (strcmp(host, "localhost") == 0) {
            sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        } else if (inet_pton(AF_INET, host, &sin.sin_addr) != 1) {
            snprintf(err, errlen,
                     "'%s' is not a numeric IPv4 address, * or localhost (host names are not "
                     "resolved)",
                     host);
            goto out;
        }
        memcpy(ss, &sin, sizeof(sin));
        *len = sizeof(sin);
    }
    rc = 0;
out:
    return rc;
}

static int parse_unix_address(const char *text, struct sockaddr_storage *ss, socklen_t *len,
                              char *err, size_t errlen)
{
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    size_t n = strlen(text);
    int rc = -EINVAL;

    memset(ss, 0, sizeof(*ss));
    if (text[0] != '/') {
        snprintf(err, errlen, "a unix socket address must be an absolute path");
        goto out;
    }
    if (n > SUN_PATH_MAX) {
        snprintf(err, errlen, "longer than %zu bytes, the limit of a unix socket path",
                 SUN_PATH_MAX);
        goto out;
    }
    memcpy(un.sun_path, text, n + 1);
    memcpy(ss, &un, sizeof(un));
    *len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
    rc = 0;
out:
    return rc;
}

static int is_unix(berth_protocol_t proto)
{
    return proto == BERTH_PROTO_UNIX || proto == BERTH_PROTO_UNIXGRAM;
}

static int is_stream(berth_protocol_t proto)
{
    return proto == BERTH_PROTO_TCP || proto == BERTH_PROTO_UNIX;
}

/* Two listeners clash when they would bind the same thing: tcp and udp have separate port
 * spaces, but unix and unixgram sockets are both files. */
static int same_binding(const config_listener_t *a, const config_listener_t *b)
{
    if (is_unix(a->protocol) != is_unix(b->protocol))
        return 0;
    if (is_unix(a->protocol)) {
        const struct sockaddr_un *ua = (const struct sockaddr_un *)&a->addr;
        const struct sockaddr_un *ub = (const struct sockaddr_un *)&b->addr;
        return strcmp(ua->sun_path, ub->sun_path) == 0;
    }
    if (a->protocol != b->protocol || a->addr.ss_family != b->addr.ss_family)
        return 0;
    if (a->addr.ss_family == AF_INET) {
        const struct sockaddr_in *ia = (const struct sockaddr_in *)&a->addr;
        const struct sockaddr_in *ib = (const struct sockaddr_in *)&b->addr;
        return ia->sin_port == ib->sin_port && ia->sin_addr.s_addr == ib->sin_addr.s_addr;
    } else {
        const struct sockaddr_in6 *ia = (const struct sockaddr_in6 *)&a->addr;
        const struct sockaddr_in6 *ib = (const struct sockaddr_in6 *)&b->addr;
        return ia->sin6_port == ib->sin6_port &&
               memcmp(&ia->sin6_addr, &ib->sin6_addr, sizeof(ia->sin6_addr)) == 0;
    }
}

/* The checks that need the whole section. */
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
            perr_at(p, l->file, l->line, "listener '%s': missing '%s'", l->name,
                    listener_keys[required[i]].name);
    if (!ls->protocol_ok)
        return;

    w = &ls->seen[LK_MODE];
    if (w->line && !is_unix(l->protocol))
        perr_at(p, w->file, w->line, "mode: only unix and unixgram listeners have a socket file");
    w = &ls->seen[LK_BACKLOG];
    if (w->line && !is_stream(l->protocol))
        perr_at(p, w->file, w->line, "backlog: only tcp and unix listeners accept connections");
    for (int k = LK_ALLOW; k <= LK_DENY; k++) {
        w = &ls->seen[k];
        if (w->line && is_unix(l->protocol))
            perr_at(p, w->file, w->line,
                    "%s: unix peers have no IP address (file permissions guard them: mode)",
                    listener_keys[k].name);
    }

    if (!l->address)
        return;
    w = &ls->seen[LK_ADDRESS];
    if (is_unix(l->protocol))
        rc = parse_unix_address(l->address, &l->addr, &l->addrlen, err, sizeof(err));
    else
        rc = parse_inet_address(l->address, &l->addr, &l->addrlen, err, sizeof(err));
    if (rc < 0) {
        perr_at(p, w->file, w->line, "address '%s': %s", l->address, err);
        return;
    }
    ls->address_ok = 1;
    for (size_t j = 0; j < idx; j++) {
        const config_listener_t *o = &p->cfg->listeners[j];
        if (p->ls[j].address_ok && same_binding(l, o)) {
            perr_at(p, w->file, w->line,
                    "address '%s' (%s) is already used by listener '%s' (%s:%d)", l->address,
                    config_protocol_name(l->protocol), o->name, p->ls[j].seen[LK_ADDRESS].file,
                    p->ls[j].seen[LK_ADDRESS].line);
            break;
        }
    }
}

/* ---- sections -------------------------------------------------------------------------- */

static void section_end(struct source *s)
{
    if (s->kind == SEC_LISTENER)
        listener_end(s->p, s->listener);
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

static void section_begin(struct source *s, const char *name)
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
            perr(p, "duplicate section [%s] (first at %s:%d)", name, cfg->listeners[i].file,
                 cfg->listeners[i].line);
            return;
        }
    }
    if (cfg->nlisteners >= BERTH_MAX_LISTENERS) {
        if (!p->too_many_reported)
            perr(p, "too many listeners (at most %d)", BERTH_MAX_LISTENERS);
        p->too_many_reported = 1;
        return;
    }
    if (grow_listeners(p) < 0)
        return;
    l = &cfg->listeners[cfg->nlisteners];
    memset(l, 0, sizeof(*l));
    memset(&p->ls[cfg->nlisteners], 0, sizeof(p->ls[0]));
    l->name = xstrdup(p, name);
    if (!l->name)
        return;
    l->file = s->name;
    l->line = s->line;
    l->concurrency = DEFAULT_CONCURRENCY;
    l->idle_timeout = DEFAULT_IDLE_TIMEOUT;
    l->backlog = DEFAULT_BACKLOG;
    l->mode = DEFAULT_MODE;
    l->write_buffer = DEFAULT_WRITE_BUFFER;
    l->crash_limit = 5;
    l->crash_window = 60000;
    s->listener = cfg->nlisteners++;
    s->kind = SEC_LISTENER;
}

/* "[name]" (trimmed, s->kind set to what follows). `line` is trimmed and starts with '['. */
static void section_header(struct source *s, char *line)
{
    struct parse *p = s->p;
    char *close = strchr(line, ']');
    char *name = line + 1, *after, *end;

    section_end(s);
    s->kind = SEC_SKIP;
    if (!close) {
        perr(p, "section header without a closing ']'");
        return;
    }
    *close = '\0';
    after = close + 1;
    while (is_blank(*after))
        after++;
    if (*after != '\0' && *after != ';' && *after != '#') {
        perr(p, "unexpected text after the section header: '%s'", after);
        return;
    }
    while (is_blank(*name))
        name++;
    end = name + strlen(name);
    while (end > name && is_blank(end[-1]))
        *--end = '\0';
    if (!valid_name(name)) {
        perr(p, "invalid section name '%s' (1 to %d letters, digits, '-', '_' or '.')", name,
             MAX_NAME);
        return;
    }
    section_begin(s, name);
}

/* ---- reading --------------------------------------------------------------------------- */

static int source_getc(struct source *s)
{
    if (s->fp)
        return getc(s->fp);
    if (s->mempos < s->memlen)
        return (unsigned char)s->mem[s->mempos++];
    return EOF;
}

/* Would inih see `key = value` here? Its own test: the first '=' or ':' before an inline
 * comment (';' after whitespace). */
static int key_line_ok(struct source *s, const char *line)
{
    const char *q = line;
    int was_space = 0;

    while (*q && *q != '=' && *q != ':' && !(was_space && *q == ';')) {
        was_space = isspace((unsigned char)*q);
        q++;
    }
    if (*q != '=' && *q != ':') {
        perr(s->p, "expected 'key = value', a [section] or a comment");
        return -EINVAL;
    }
    if (q == line) {
        perr(s->p, "a key name must come before '%c'", *q);
        return -EINVAL;
    }
    return 0;
}

/* inih's fgets-style reader: one whole line per call (so inih's line count is ours), and
 * only lines inih will accept; anything else is reported here and handed on as a blank. */
static char *read_line(char *str, int num, void *stream)
{
    struct source *s = stream;
    struct parse *p = s->p;
    size_t cap = num > 1 ? (size_t)num - 1 : 0, len = 0, total = 0, nuls = 0;
    int c = EOF, last = 0;
    char *line, *end;

    for (;;) {
        c = source_getc(s);
        if (c == EOF || c == '\n')
            break;
        if (c == '\0')
            nuls++;
        if (len < cap)
            str[len++] = (char)c;
        total++;
        last = c;
    }
    if (c == EOF && total == 0) {
        if (s->fp && ferror(s->fp))
            perr_at(p, s->name, s->line + 1, "read error: %s", strerror(errno));
        return NULL;
    }
    s->line++;
    if (last == '\r') {
        total--;
        if (len > total)
            len = total;
    }
    str[len] = '\0';
    if (total > cap) {
        perr(p, "line too long (%zu characters; the limit is %zu)", total, cap);
        str[0] = '\0';
        return str;
    }
    if (nuls) {
        perr(p, "NUL byte in line");
        str[0] = '\0';
        return str;
    }

    line = str;
    if (s->line == 1 && len >= 3 && memcmp(line, "\xEF\xBB\xBF", 3) == 0)
        line += 3;
    /* Leading blanks go too: inih would take an indented line for the continuation of the
     * previous value, a Python configparser habit that only hides mistakes here. */
    while (isspace((unsigned char)*line))
        line++;
    end = line + strlen(line);
    while (end > line && isspace((unsigned char)end[-1]))
        *--end = '\0';

    if (*line == '[')
        section_header(s, line);
    else if (*line != '\0' && *line != ';' && *line != '#' && key_line_ok(s, line) == 0) {
        memmove(str, line, (size_t)(end - line) + 1);
        return str;
    }
    str[0] = '\0';
    return str;
}

static int on_key(void *user, const char *section, const char *name, const char *value)
{
    struct parse *p = user;
    struct source *s = p->cur;

    /* `section` is inih's idea of it; ours comes from the reader (see the top of the file). */
    if (s->kind == SEC_SKIP)
        return 1;
    if (!valid_name(name)) {
        perr(p, "invalid key name '%s' (1 to %d letters, digits, '-', '_' or '.')", name, MAX_NAME);
        return 1;
    }
    switch (s->kind) {
    case SEC_NONE:
        perr(p, "key '%s' is outside any section", name);
        break;
    case SEC_DAEMON:
        daemon_key(p, name, value);
        break;
    case SEC_LISTENER:
        listener_key(p, name, value);
        break;
    case SEC_SKIP:
        break;
    }
    /* Always go on: every error is reported by us, not through inih's return value. */
    return 1;
}

static const char *add_file_name(struct parse *p, const char *path)
{
    berth_config_t *cfg = p->cfg;
    char **files;
    char *copy;

    for (size_t i = 0; i < cfg->nfiles; i++)
        if (strcmp(cfg->files[i], path) == 0)
            return cfg->files[i];
    copy = xstrdup(p, path);
    files = realloc(cfg->files, (cfg->nfiles + 1) * sizeof(*files));
    if (!copy || !files) {
        p->nomem = 1;
        free(copy);
        if (files)
            cfg->files = files;
        return NULL;
    }
    cfg->files = files;
    cfg->files[cfg->nfiles++] = copy;
    return copy;
}

/* Read one source through inih. `id` names it for include-cycle checks (owned by us now). */
static void read_source(struct parse *p, struct source *src, char *id)
{
    struct source *prev = p->cur;
    int rc;

    src->p = p;
    src->dir = dir_of(src->name);
    if (!src->dir) {
        p->nomem = 1;
        free(id);
        return;
    }
    p->reading[p->nreading++] = id;
    p->cur = src;
    rc = ini_parse_stream(read_line, src, on_key, p);
    section_end(src);
    /* Only if our own checks missed what inih refused: never expected. */
    if (rc > 0 && src->nerrors == 0)
        perr_at(p, src->name, rc, "syntax error");
    else if (rc == -2)
        p->nomem = 1;
    p->cur = prev;
    free(p->reading[--p->nreading]);
    free(src->dir);
}

/* The main file (pattern NULL) or a file an include matched (errors at the include line). */
static void read_file(struct parse *p, const char *path, int depth, const char *pattern)
{
    struct source src = {.depth = depth};
    struct stat st;
    char *real = NULL;
    FILE *fp = NULL;
    const char *problem = NULL;

    if (stat(path, &st) < 0)
        problem = strerror(errno);
    else if (!S_ISREG(st.st_mode))
        problem = "not a regular file";
    else if (!(real = realpath(path, NULL)))
        problem = strerror(errno);
    if (!problem) {
        for (size_t i = 0; i < p->nreading; i++) {
            if (p->reading[i] && strcmp(p->reading[i], real) == 0) {
                problem = "already being read (an include cycle)";
                break;
            }
        }
    }
    if (!problem && !(fp = fopen(path, "r")))
        problem = strerror(errno);
    if (problem) {
        if (pattern)
            perr(p, "include '%s': %s: %s", pattern, path, problem);
        else
            perr_at(p, path, 0, "%s", problem);
        free(real);
        goto out;
    }
    src.name = add_file_name(p, path);
    if (!src.name) {
        free(real);
        goto out;
    }
    src.fp = fp;
    read_source(p, &src, real);
out:
    if (fp)
        fclose(fp);
}

/* ---- the whole config ------------------------------------------------------------------ */

static unsigned cpu_count(void)
{
    cpu_set_t set;
    long n = 0;

    CPU_ZERO(&set);
    if (sched_getaffinity(0, sizeof(set), &set) == 0)
        n = CPU_COUNT(&set);
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    if (n < 1)
        n = 1;
    if (n > BERTH_MAX_WORKERS)
        n = BERTH_MAX_WORKERS;
    return (unsigned)n;
}

/* What could only be done once everything was read. */
static void finish(struct parse *p)
{
    berth_config_t *cfg = p->cfg;
    struct stat st;

    if (cfg->workers_auto)
        cfg->workers = cpu_count();
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        const char *problem = NULL;

        if (!l->handler)
            continue;
        if (strchr(l->handler, '/')) {
            char *dir = dir_of(l->file);
            if (dir)
                l->plugin_path = path_in(p, dir, l->handler);
            else
                p->nomem = 1;
            free(dir);
        } else if (!p->plugin_dir_bad) {
            if (asprintf(&l->plugin_path, "%s/%s.so", cfg->plugin_dir, l->handler) < 0) {
                l->plugin_path = NULL;
                p->nomem = 1;
            }
        }
        if (!l->plugin_path)
            continue;
        if (stat(l->plugin_path, &st) < 0)
            problem = strerror(errno);
        else if (!S_ISREG(st.st_mode))
            problem = "not a regular file";
        if (problem)
            perr_at(p, l->file, l->handler_line, "handler '%s': %s: %s", l->handler, l->plugin_path,
                    problem);
    }
}

static berth_config_t *config_new(void)
{
    berth_config_t *cfg = calloc(1, sizeof(*cfg));

    if (!cfg)
        return NULL;
    cfg->workers_auto = 1;
    cfg->log_level = BERTH_LOG_INFO;
    cfg->shutdown_timeout = DEFAULT_SHUTDOWN_TIMEOUT;
    cfg->plugin_dir = strdup(PLUGIN_DIR_DEFAULT);
    cfg->admin = strdup(BERTH_DEFAULT_ADMIN);
    cfg->log = strdup("stderr");
    if (!cfg->plugin_dir || !cfg->admin || !cfg->log) {
        config_free(cfg);
        cfg = NULL;
    }
    return cfg;
}

static int load(const char *name, const char *text, size_t len, unsigned flags,
                berth_config_t **out, config_errors_t *errs)
{
    struct parse p = {.errs = errs, .errs_base = errs ? errs->count : 0, .flags = flags};
    int rc = -EINVAL;

    if (out)
        *out = NULL;
    if (!name || !out)
        goto out;
    p.cfg = config_new();
    if (!p.cfg || !(p.cfg->path = strdup(name))) {
        rc = -ENOMEM;
        goto out;
    }
    if (text) {
        struct source src = {.mem = text, .memlen = len};
        char *id = strdup(name);
        src.name = add_file_name(&p, name);
        if (src.name && id)
            read_source(&p, &src, id);
        else
            free(id);
    } else {
        read_file(&p, name, 0, NULL);
    }
    finish(&p);
    sort_errors(&p);
    if (p.nomem) {
        rc = -ENOMEM;
    } else if (p.nerrors == 0) {
        *out = p.cfg;
        p.cfg = NULL;
        rc = 0;
    }
out:
    config_free(p.cfg);
    free(p.ls);
    free(p.keys);
    return rc;
}

int config_load(const char *path, berth_config_t **out, config_errors_t *errs)
{
    return load(path, NULL, 0, 0, out, errs);
}

int config_load_string(const char *name, const char *text, size_t len, unsigned flags,
                       berth_config_t **out, config_errors_t *errs)
{
    if (!text)
        return -EINVAL;
    return load(name, text, len, flags, out, errs);
}

void config_free(berth_config_t *cfg)
{
    if (!cfg)
        return;
    for (size_t i = 0; i < cfg->nlisteners; i++) {
        config_listener_t *l = &cfg->listeners[i];
        free(l->name);
        free(l->address);
        free(l->handler);
        free(l->plugin_path);
        berth_cidr_list_free(&l->allow);
        berth_cidr_list_free(&l->deny);
        for (size_t j = 0; j < l->noptions; j++) {
            free(l->options[j].key);
            free(l->options[j].value);
        }
        free(l->options);
    }
    free(cfg->listeners);
    for (size_t i = 0; i < cfg->nfiles; i++)
        free(cfg->files[i]);
    free(cfg->files);
    free(cfg->path);
    free(cfg->user);
    free(cfg->plugin_dir);
    free(cfg->admin);
    free(cfg->log);
    free(cfg);
}

const config_listener_t *config_find_listener(const berth_config_t *cfg, const char *name)
{
    if (!cfg || !name)
        return NULL;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (strcmp(cfg->listeners[i].name, name) == 0)
            return &cfg->listeners[i];
    return NULL;
}

const char *config_protocol_name(berth_protocol_t p)
{
    switch (p) {
    case BERTH_PROTO_TCP:
        return "tcp";
    case BERTH_PROTO_UDP:
        return "udp";
    case BERTH_PROTO_UNIX:
        return "unix";
    case BERTH_PROTO_UNIXGRAM:
        return "unixgram";
    }
    return "?";
}
