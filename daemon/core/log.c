#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static berth_log_level_t level_now = BERTH_LOG_INFO;
static int to_syslog;
static int to_journal; /* stderr is the journal: it stamps time and pid itself */
static char role_now[48] = "berthd";
static int json_now;
static unsigned worker_now, generation_now; /* 0: the master */

static const char *const level_names[] = {"error", "warn", "info", "debug"};
static const int syslog_prio[] = {LOG_ERR, LOG_WARNING, LOG_INFO, LOG_DEBUG};

void log_init(const char *role, berth_log_level_t level, int use_syslog)
{
    log_set_role(role);
    level_now = level;
    to_journal = getenv("JOURNAL_STREAM") != NULL;
    if (use_syslog && !to_syslog)
        openlog("berthd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    to_syslog = use_syslog;
}

void log_reopen(void)
{
    if (to_syslog) {
        closelog();
        openlog("berthd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
    }
}

int log_open_file(const char *path, int owner, int group)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0640);
    if (fd < 0)
        return -errno;
    if (owner >= 0 && fchown(fd, (uid_t)owner, (gid_t)group) < 0) {
        int e = errno;
        close(fd);
        return -e;
    }
    int rc = dup2(fd, STDERR_FILENO) < 0 ? -errno : 0;
    close(fd);
    to_journal = 0; /* a plain file wants our own time stamps */
    return rc;
}

void log_set_role(const char *role)
{
    snprintf(role_now, sizeof role_now, "%s", role);
}

void log_set_level(berth_log_level_t level)
{
    level_now = level;
}

int log_enabled(berth_log_level_t level)
{
    return level <= level_now;
}

int log_level_parse(const char *text, berth_log_level_t *out)
{
    for (int i = 0; i < 4; i++) {
        if (strcmp(text, level_names[i]) == 0) {
            *out = (berth_log_level_t)i;
            return 0;
        }
    }
    return -1;
}

int log_format_parse(const char *text, int *json)
{
    if (strcmp(text, "text") == 0 || strcmp(text, "json") == 0) {
        *json = text[0] == 'j';
        return 0;
    }
    return -1;
}

void log_set_format(int json)
{
    json_now = json;
}

void log_set_worker(unsigned worker, unsigned generation)
{
    worker_now = worker;
    generation_now = generation;
}

/* A line under construction; `failed` once memory ran out (the line is then dropped). */
typedef struct lbuf {
    char *p;
    size_t len, cap;
    int failed;
} lbuf_t;

static void lb_put(lbuf_t *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 1024;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (p == NULL) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void lb_printf(lbuf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lb_printf(lbuf_t *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        lb_put(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* The length of the valid UTF-8 sequence at s (at most n bytes), or 0 if it is not one. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    size_t len;
    unsigned min;
    unsigned cp;
    if (s[0] >= 0xC2 && s[0] <= 0xDF) {
        len = 2, min = 0x80, cp = s[0] & 0x1F;
    } else if (s[0] >= 0xE0 && s[0] <= 0xEF) {
        len = 3, min = 0x800, cp = s[0] & 0x0F;
    } else if (s[0] >= 0xF0 && s[0] <= 0xF4) {
        len = 4, min = 0x10000, cp = s[0] & 0x07;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((s[i] & 0xC0) != 0x80)
            return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return 0;
    return len;
}

/* `s` (up to `max` bytes) as a JSON string. Control bytes become \u00XX; a byte that is not
 * valid UTF-8 becomes the text \xNN, so every line is valid JSON in UTF-8 whatever a peer
 * sent (a SOCKS5 domain name is any 255 bytes). */
static void lb_json_str(lbuf_t *b, const char *s, size_t max)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t n = strnlen(s, max);
    lb_put(b, "\"", 1);
    for (size_t i = 0; i < n;) {
        size_t run = i;
        while (run < n && u[run] >= 0x20 && u[run] < 0x7F && u[run] != '"' && u[run] != '\\')
            run++;
        if (run > i) {
            lb_put(b, s + i, run - i);
            i = run;
            continue;
        }
        unsigned char c = u[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            lb_put(b, esc, 2);
            i++;
        } else if (c == '\n') {
            lb_put(b, "\\n", 2), i++;
        } else if (c == '\t') {
            lb_put(b, "\\t", 2), i++;
        } else if (c < 0x20 || c == 0x7F) {
            lb_printf(b, "\\u%04x", c), i++;
        } else {
            size_t k = utf8_len(u + i, n - i);
            if (k) {
                lb_put(b, s + i, k);
                i += k;
            } else {
                lb_printf(b, "\\\\x%02x", c), i++;
            }
        }
    }
    lb_put(b, "\"", 1);
}

/* Text mode: control bytes of a field's value as \xNN, so a value never breaks the line. */
static void lb_text_value(lbuf_t *b, const char *s, size_t max)
{
    size_t n = strnlen(s, max);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7F)
            lb_printf(b, "\\x%02x", c);
        else
            lb_put(b, s + i, 1);
    }
}

static const char *const reserved_keys[] = {"time",     "level", "pid",     "worker", "generation",
                                            "listener", "peer",  "message", "role"};

/* A field's key as [A-Za-z0-9_], prefixed with "plugin_" if it is one of the line's own. */
static void field_key(const char *key, char *out, size_t outlen)
{
    const char *k = key && key[0] ? key : "field";
    int taken = 0;
    for (size_t i = 0; i < sizeof reserved_keys / sizeof reserved_keys[0]; i++)
        taken |= strcmp(k, reserved_keys[i]) == 0;
    int n = snprintf(out, outlen, "%s%s", taken ? "plugin_" : "", k);
    if (n < 0)
        n = 0;
    for (char *p = out; *p; p++)
        if (!((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
              *p == '_'))
            *p = '_';
}

#define FIELD_VALUE_MAX 1024

static void format_json(lbuf_t *b, berth_log_level_t level, const char *listener, const char *peer,
                        const berth_log_field_t *fields, size_t n, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    lb_printf(b,
              "{\"time\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"pid\":%d,"
              "\"role\":",
              tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
              ts.tv_nsec / 1000000, level_names[level], (int)getpid());
    lb_json_str(b, role_now, sizeof role_now);
    if (worker_now)
        lb_printf(b, ",\"worker\":%u,\"generation\":%u", worker_now, generation_now);
    else
        lb_printf(b, ",\"worker\":null,\"generation\":null");
    lb_printf(b, ",\"listener\":");
    if (listener)
        lb_json_str(b, listener, FIELD_VALUE_MAX);
    else
        lb_put(b, "null", 4);
    lb_printf(b, ",\"peer\":");
    if (peer)
        lb_json_str(b, peer, FIELD_VALUE_MAX);
    else
        lb_put(b, "null", 4);
    lb_printf(b, ",\"message\":");
    lb_json_str(b, msg, SIZE_MAX);
    for (size_t i = 0; i < n; i++) {
        char key[72];
        field_key(fields[i].key, key, sizeof key);
        lb_printf(b, ",\"%s\":", key);
        if (fields[i].str)
            lb_json_str(b, fields[i].str, FIELD_VALUE_MAX);
        else
            lb_printf(b, "%lld", (long long)fields[i].num);
    }
    lb_put(b, "}", 1);
}

static void format_text(lbuf_t *b, const char *listener, const char *peer,
                        const berth_log_field_t *fields, size_t n, const char *msg)
{
    if (listener)
        lb_printf(b, "%s%s%s: ", listener, peer ? " " : "", peer ? peer : "");
    lb_put(b, msg, strlen(msg));
    for (size_t i = 0; i < n; i++) {
        char key[72];
        field_key(fields[i].key, key, sizeof key);
        lb_printf(b, " %s=", key);
        if (fields[i].str)
            lb_text_value(b, fields[i].str, FIELD_VALUE_MAX);
        else
            lb_printf(b, "%lld", (long long)fields[i].num);
    }
}

void log_emit(berth_log_level_t level, const char *listener, const char *peer,
              const berth_log_field_t *fields, size_t n, const char *fmt, va_list ap)
{
    if (level > level_now || level < BERTH_LOG_ERROR)
        return;
    if (n > BERTH_LOG_FIELDS_MAX)
        n = BERTH_LOG_FIELDS_MAX;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    lbuf_t body = {0};
    if (json_now)
        format_json(&body, level, listener, peer, fields, n, msg);
    else
        format_text(&body, listener, peer, fields, n, msg);
    if (body.failed || body.p == NULL) {
        free(body.p);
        return;
    }
    if (to_syslog) {
        if (json_now)
            syslog(syslog_prio[level], "%s", body.p);
        else
            syslog(syslog_prio[level], "%s: %s", role_now, body.p);
        free(body.p);
        return;
    }
    /* One write per line so lines from several processes never interleave. */
    lbuf_t line = {0};
    if (to_journal) {
        lb_printf(&line, "<%d>", syslog_prio[level]);
        if (!json_now)
            lb_printf(&line, "%s: ", role_now);
    } else if (!json_now) {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        lb_printf(&line,
                  "%04d-%02d-%02d %02d:%02d:%02d.%03ld %-5s berthd[%d] %s: ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000,
                  level_names[level], (int)getpid(), role_now);
    }
    lb_put(&line, body.p, body.len);
    lb_put(&line, "\n", 1);
    if (!line.failed) {
        ssize_t w = write(STDERR_FILENO, line.p, line.len);
        (void)w;
    }
    free(line.p);
    free(body.p);
}

void log_vmsg(berth_log_level_t level, const char *fmt, va_list ap)
{
    log_emit(level, NULL, NULL, NULL, 0, fmt, ap);
}

void log_msg(berth_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
