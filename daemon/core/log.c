#include "core/log.h"

#include <errno.h>
#include <fcntl.h>
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

void log_vmsg(berth_log_level_t level, const char *fmt, va_list ap)
{
    if (level > level_now || level < BERTH_LOG_ERROR)
        return;
    char msg[2048];
    vsnprintf(msg, sizeof msg, fmt, ap);
    /* One write per line so lines from several processes never interleave. */
    char line[2304];
    int n;
    if (to_syslog) {
        syslog(syslog_prio[level], "%s: %s", role_now, msg);
        return;
    }
    if (to_journal) {
        n = snprintf(line, sizeof line, "<%d>%s: %s\n", syslog_prio[level], role_now, msg);
    } else {
        struct timespec ts;
        struct tm tm;
        clock_gettime(CLOCK_REALTIME, &ts);
        localtime_r(&ts.tv_sec, &tm);
        n = snprintf(line, sizeof line,
                     "%04d-%02d-%02d %02d:%02d:%02d.%03ld %-5s berthd[%d] %s: %s\n",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level], (int)getpid(), role_now, msg);
    }
    if (n < 0)
        return;
    if ((size_t)n >= sizeof line) {
        n = sizeof line - 1;
        line[n - 1] = '\n';
    }
    ssize_t w = write(STDERR_FILENO, line, (size_t)n);
    (void)w;
}

void log_msg(berth_log_level_t level, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    log_vmsg(level, fmt, ap);
    va_end(ap);
}
