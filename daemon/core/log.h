/* Logging: one line per event to stderr (the journal under systemd) or syslog. */
#ifndef BERTH_LOG_H
#define BERTH_LOG_H

#include <stdarg.h>

#include "berth/handler.h"

/* `role` prefixes every line ("master", "worker 2/gen 1"). use_syslog: openlog(ident). */
void log_init(const char *role, berth_log_level_t level, int use_syslog);
void log_set_role(const char *role);
/* After fork, once inherited descriptors are closed: reconnect to syslog if in use. */
void log_reopen(void);
/* Send stderr (and so every later line) to `path`, opened for appending; when `owner` is
 * not -1 the file is handed to that uid/gid so workers that dropped privileges can reopen
 * it. Called again after the file was rotated away (SIGUSR1). 0 or -errno. */
int log_open_file(const char *path, int owner, int group);
void log_set_level(berth_log_level_t level);
int log_enabled(berth_log_level_t level);
/* "error", "warn", "info" or "debug": 0, or -1 for anything else. */
int log_level_parse(const char *text, berth_log_level_t *out);
void log_msg(berth_log_level_t level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void log_vmsg(berth_log_level_t level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* log_format: 0 text (the default), 1 json (one object per line, see berthd(8)).
 * log_format_parse: "text" or "json", 0; -1 for anything else. */
int log_format_parse(const char *text, int *json);
void log_set_format(int json);
/* A worker's number (from 1) and generation, for the json lines' "worker" and
 * "generation" (null in the master's lines). */
void log_set_worker(unsigned worker, unsigned generation);
/* One line about `listener` (MAY be NULL) and `peer` (MAY be NULL), with `n` fields of its
 * own: text "listener peer: message key=value...", or members of the json object. */
void log_emit(berth_log_level_t level, const char *listener, const char *peer,
              const berth_log_field_t *fields, size_t n, const char *fmt, va_list ap)
    __attribute__((format(printf, 6, 0)));

#define log_error(...) log_msg(BERTH_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) log_msg(BERTH_LOG_WARN, __VA_ARGS__)
#define log_info(...) log_msg(BERTH_LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(BERTH_LOG_DEBUG, __VA_ARGS__)

#endif
