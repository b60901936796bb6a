/*
 * The parsed configuration: immutable once config_load() returns. Runtime code never
 * sees INI text; a reload builds a whole new berth_config_t and swaps it.
 */
#ifndef BERTH_CONFIG_H
#define BERTH_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "berth/handler.h"
#include "berth/cidr.h"
#include "config/multicast.h"

#define BERTH_DEFAULT_CONF "/etc/berth/berth.conf"
/* The package's plugin folder, from the install layout CMake computes (BERTH_PLUGIN_INSTALL_DIR,
 * e.g. /usr/lib/x86_64-linux-gnu/berth/plugins on Debian). */
#ifndef BERTH_DEFAULT_PLUGIN_DIR
#error "BERTH_DEFAULT_PLUGIN_DIR must come from the build (the root CMakeLists.txt)"
#endif
#define BERTH_DEFAULT_ADMIN "/run/berth/admin.sock"
#define BERTH_MAX_WORKERS 256
#define BERTH_MAX_LISTENERS 256
#define CONFIG_CRASH_LIMIT_MAX 64

/* Bounds that keep a wrong or hostile config from costing unbounded time or memory. */
#define CONFIG_ERRORS_MAX 100                    /* errors kept and printed; the rest counted */
#define CONFIG_MAX_FILE_SIZE (16u * 1024 * 1024) /* bytes in one file (or string) */
#define CONFIG_MAX_FILES 1024                    /* files one config reads, includes and all */
#define CONFIG_TCP_CA_NAME_MAX 16                /* the kernel's TCP_CA_NAME_MAX, with the NUL */
/* Where the kernel lists the congestion controls it has (built in or loaded). */
#define CONFIG_TCP_CA_AVAILABLE "/proc/sys/net/ipv4/tcp_available_congestion_control"

/* A key of a listener section that the daemon does not know: the plugin's to check. */
typedef struct config_option {
    char *key;
    char *value;
    const char *file; /* points into config->files */
    int line;
} config_option_t;

typedef struct config_listener {
    char *name; /* the section name */
    const char *file;
    int line; /* the section header's line */

    berth_protocol_t protocol;
    char *address; /* as written, for messages and diffing */
    /* Resolved bind address: sockaddr_in/in6 for tcp/udp, sockaddr_un for unix/unixgram. */
    struct sockaddr_storage addr;
    socklen_t addrlen;

    char *handler;     /* as written ("echo" or a path) */
    char *plugin_path; /* plugin_dir/NAME.so, or the path itself when it holds a '/' (relative
                          to the directory of the file the listener is in) */
    int handler_line;

    uint32_t concurrency;    /* default 1024 */
    uint64_t idle_timeout;   /* ms, 0 = none; default 5 min */
    uint32_t backlog;        /* default 511 */
    uint32_t mode;           /* unix socket file mode, default 0660 */
    uint64_t write_buffer;   /* high watermark in bytes, default 256K; low is a quarter */
    berth_cidr_list_t allow; /* empty = everyone (unless deny matches) */
    berth_cidr_list_t deny;
    uint32_t crash_limit;  /* crashes within crash_window that quarantine it; default 5 */
    uint64_t crash_window; /* ms, default 1 min */
    int isolate;           /* served by worker processes of its own */
    /* PROXY protocol (tcp only): which header versions a peer must send first (0: off), from
     * which peers (required when on; anyone else is refused), and how long the header may
     * take (ms, default 5 s). */
    unsigned proxy_protocol; /* BERTH_PROXY_V1 | BERTH_PROXY_V2 */
    berth_cidr_list_t proxy_from;
    uint64_t proxy_timeout;
    /* Per-source limits (tcp only; 0: off), counted across every worker (core/limits.h):
     * open connections per client address, new ones per second and the bucket for bursts;
     * IPv6 clients grouped by prefix6 (default 64). */
    uint32_t per_source;
    uint32_t rate;
    uint32_t burst; /* 0: rate */
    uint32_t per_source_prefix6;
    int over_limit_wait; /* over per_source: hold the conn until one of its source ends */

    struct config_tls *tls; /* tls_* keys (config/tls.h); NULL: no TLS */

    config_option_t *options; /* plugin keys, in file order */
    size_t noptions;

    config_mcast_t mcast; /* udp only: the groups it joins (ngroups 0: none) */

    /* tcp_congestion: the TCP_CONGESTION of its accepted and outbound sockets (tcp only;
     * "": the kernel's default); checked against the kernel's available list. */
    char tcp_congestion[CONFIG_TCP_CA_NAME_MAX];
} config_listener_t;

typedef struct berth_config {
    char *path;   /* the main file */
    char **files; /* every file read (main first, then includes); owns the names */
    size_t nfiles;

    unsigned workers; /* resolved: "auto" = number of CPUs, at least 1 */
    int workers_auto;
    char *user; /* NULL when not set */
    char *plugin_dir;
    char *admin; /* admin socket path; "" disables */
    berth_log_level_t log_level;
    char *log;                        /* "stderr" (default) or "syslog" */
    uint64_t shutdown_timeout;        /* ms, default 30 s */
    uint32_t per_source_table;        /* entries of the per-source table; read at start only */
    int per_source_table_full_closed; /* a full table refuses new sources (default: lets in) */
    /* HAProxy agent-check: where to answer it (NULL: nowhere; read at start only), and how
     * long SIGTERM answers "drain" before the daemon stops accepting (ms, default 0). */
    char *agent;
    struct sockaddr_storage agent_addr;
    socklen_t agent_addrlen;
    uint64_t drain_delay;
    /* metrics: where GET /metrics is served, host:port or a unix socket path (NULL: off) */
    char *metrics;
    struct sockaddr_storage metrics_addr;
    socklen_t metrics_addrlen;
    int log_json; /* log_format = json (default text) */
    /* sandbox: each worker confines itself (worker/sandbox.c). Both 0 by default: on, and a
     * denied system call fails with EPERM; sandbox_kill kills the worker instead (SIGSYS). */
    int sandbox_off;
    int sandbox_kill;

    config_listener_t *listeners;
    size_t nlisteners;
} berth_config_t;

/*
 * The errors found, each as "FILE:LINE: message" (LINE 0 when it concerns a whole file): the
 * first CONFIG_ERRORS_MAX of them, then, when there were more, one last line "... and N more
 * errors". So printing msgs[0..count) is the whole report, and it stays short and cheap
 * however many errors there were.
 */
typedef struct config_errors {
    char **msgs;
    size_t count; /* lines in msgs, the "... and N more" line included */
    size_t more;  /* errors counted but not kept */
} config_errors_t;

/*
 * Parse `path` and its includes. On success returns 0 and stores a new config in *out.
 * On failure returns -EINVAL (or -ENOMEM), sets *out to NULL, and every error found is in
 * *errs (appended, sorted by file in the order the files were read, then by line: start
 * from `config_errors_t errs = {0};` and free them with config_errors_free; `errs` MAY be
 * NULL). Checks everything the daemon itself can: syntax, unknown [daemon] keys, values
 * and units, addresses, duplicate keys, sections and addresses, that each plugin file
 * exists. It does not load plugins. A file over CONFIG_MAX_FILE_SIZE is one error and is
 * not read; the time taken is linear in the bytes read and memory stays bounded.
 * Relative paths in a file (include, plugin_dir, a handler path) are relative to the
 * directory of that file.
 */
int config_load(const char *path, berth_config_t **out, config_errors_t *errs);

/* config_load_string() flags. */
#define CONFIG_LOAD_NO_INCLUDE 0x1u /* `include` is an error: for text from an untrusted source */

/*
 * The same, for `len` bytes of config text in memory (it need not be NUL-terminated and may
 * hold NUL bytes, which are errors). `name` stands for the file in messages; relative paths
 * (includes, plugin_dir, handler paths) are taken from its directory.
 */
int config_load_string(const char *name, const char *text, size_t len, unsigned flags,
                       berth_config_t **out, config_errors_t *errs);
void config_free(berth_config_t *cfg);
void config_errors_add(config_errors_t *errs, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
void config_errors_free(config_errors_t *errs);
/* How many errors were found, kept or not. */
size_t config_errors_total(const config_errors_t *errs);

const config_listener_t *config_find_listener(const berth_config_t *cfg, const char *name);
const char *config_protocol_name(berth_protocol_t p);

#endif
