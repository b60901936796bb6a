/*
 * What the parts of the config parser share; not for code outside daemon/config/.
 *
 *   reader.c   the line reader in front of inih, [sections], includes and globbing
 *   errors.c   config_errors_t and the parse's own errors: the first ones by file:line, a count
 *   keys.c     the key tables of [daemon] and listener sections, and what a section checks
 *   address.c  listener addresses: host:port, [v6]:port, unix paths; what clashes
 *   config.c   the public entry points: load, free, find
 *
 * Everything here works on one `struct parse`, which lives for one config_load().
 */
#ifndef BERTH_CONFIG_PARSE_H
#define BERTH_CONFIG_PARSE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"

#define MAX_INCLUDE_DEPTH 8
#define MAX_NAME 64     /* section and key names */
#define MAX_OPTIONS 256 /* plugin keys in one listener section */
#define SUN_PATH_MAX (sizeof(((struct sockaddr_un *)0)->sun_path) - 1)

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
    DK_PER_SOURCE_TABLE,
    DK_AGENT,
    DK_DRAIN_DELAY,
    DK_PER_SOURCE_TABLE_FULL,
    DK_METRICS,    /* metrics: the /metrics endpoint */
    DK_LOG_FORMAT, /* logs: json */
    /* sandbox */
    DK_SANDBOX,
    DK_SANDBOX_VIOLATION,
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
    LK_PROXY_PROTOCOL,
    LK_PROXY_FROM,
    LK_PROXY_TIMEOUT,
    LK_PER_SOURCE,
    LK_PER_SOURCE_PREFIX6,
    LK_RATE,
    LK_BURST,
    LK_MULTICAST,
    LK_MULTICAST_INTERFACE,
    LK_MULTICAST_SOURCE,
    LK_MULTICAST_LOOP,
    LK_OVER_LIMIT,
    /* tcp_congestion */
    LK_TCP_CONGESTION,
    LK_COUNT,
};

/* What the parser knows about a listener beyond config_listener_t. */
struct listener_state {
    struct where seen[LK_COUNT];
    int protocol_ok;
    int address_ok;
    int too_many_options_reported;
};

struct parse;

/* One file (or string) being read. */
struct source {
    struct parse *p;
    const char *name; /* points into cfg->files */
    size_t rank;      /* index of name in cfg->files */
    char *dir;        /* relative paths written in this file start here */
    FILE *fp;         /* or: */
    const char *mem;
    size_t memlen, mempos;
    size_t bytes; /* read so far */
    int line;
    int depth; /* 0 for the main file */
    size_t nerrors;
    enum section_kind kind;
    size_t listener; /* index, when kind == SEC_LISTENER */
};

/* One error kept for the report: where it was found, to list errors by file and line. */
struct error_key {
    size_t rank; /* index of its file in cfg->files */
    int line;
    size_t seq;
    char *msg; /* "FILE:LINE: message" */
};

struct parse {
    berth_config_t *cfg;
    config_errors_t *errs;
    unsigned flags;
    size_t nerrors; /* every error found */
    int nomem;
    struct source *cur;
    struct where daemon_seen[DK_COUNT];
    struct listener_state *ls; /* parallel to cfg->listeners */
    size_t lcap;
    int too_many_reported;
    int plugin_dir_bad;
    /* The errors that sort first, as a max-heap (the last of them on top), and how many
     * others were found: memory stays bounded however many lines are wrong. */
    struct error_key kept[CONFIG_ERRORS_MAX];
    size_t nkept;
    size_t dropped;
    /* The files being read, outermost first, to refuse an include cycle. */
    char *reading[MAX_INCLUDE_DEPTH + 1];
    size_t nreading;
};

/* errors.c */
__attribute__((format(printf, 4, 0))) void parse_verror_at(struct parse *p, const char *file,
                                                           int line, const char *fmt, va_list ap);
__attribute__((format(printf, 4, 5))) void parse_error_at(struct parse *p, const char *file,
                                                          int line, const char *fmt, ...);
/* An error at the line being read. */
__attribute__((format(printf, 2, 3))) void parse_error(struct parse *p, const char *fmt, ...);
/* Hand the kept errors, sorted, and the count of the others to p->errs; frees what is left. */
void parse_errors_finish(struct parse *p);

/* reader.c */
void reader_read_file(struct parse *p, const char *path, int depth, const char *pattern);
void reader_read_string(struct parse *p, const char *name, const char *text, size_t len);
void reader_include(struct parse *p, const char *value);
char *parse_strdup(struct parse *p, const char *s);
char *parse_path_in(struct parse *p, const char *dir, const char *path);
char *parse_dir_of(const char *path);

/* keys.c */
void keys_daemon(struct parse *p, const char *name, const char *value);
void keys_listener(struct parse *p, const char *name, const char *value);
/* Start listener section `name` at the line being read; s->kind says what follows. */
void keys_section_begin(struct source *s, const char *name);
/* The checks that need the whole section. */
void keys_section_end(struct source *s);
int keys_parse_number(const char *text, uint64_t min, uint64_t max, uint64_t *out);
int keys_valid_name(const char *s);

/* tls_keys.c: the tls_* keys (1 if `name` is one of them), and their checks at the section's
 * end. */
int tls_keys_listener(struct parse *p, config_listener_t *l, const char *name, const char *value);
void tls_keys_section_end(struct parse *p, config_listener_t *l, int protocol_ok);
/* multicast.c: the setters of the multicast keys (key_setter signatures) and the checks at
 * the end of a section (protocol, families, the bound address). */
int multicast_set_groups(struct parse *p, void *obj, const char *value, char *err, size_t errlen);
int multicast_set_interface(struct parse *p, void *obj, const char *value, char *err,
                            size_t errlen);
int multicast_set_source(struct parse *p, void *obj, const char *value, char *err, size_t errlen);
int multicast_set_loop(struct parse *p, void *obj, const char *value, char *err, size_t errlen);
void multicast_section_end(struct parse *p, size_t idx);

/* address.c */
int address_parse_inet(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err,
                       size_t errlen);
int address_parse_unix(const char *text, struct sockaddr_storage *ss, socklen_t *len, char *err,
                       size_t errlen);
int address_is_unix(berth_protocol_t proto);
int address_is_stream(berth_protocol_t proto);
/* Would `a` and `b` bind the same thing? */
int address_same_binding(const config_listener_t *a, const config_listener_t *b);

#endif
