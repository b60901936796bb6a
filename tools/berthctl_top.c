/*
 * berthctl top and status --watch. Each sample is one `status --json` answer; rates are the
 * differences of its counters between two samples over the time between them (a counter
 * that went down, a listener slot reused after a reload, counts from zero again).
 *
 * The view is plain ANSI (alternate screen, cursor home, erase line), no curses: it works
 * over SSH on any terminal that is VT100-like, and fits 80 columns. Sparklines use the
 * Unicode blocks when the locale's charset is UTF-8, ASCII otherwise.
 */
#include "berthctl_top.h"

#include <errno.h>
#include <jansson.h>
#include <langinfo.h>
#include <locale.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sysexits.h>
#include <termios.h>
#include <time.h>
#include <unistd.h>

#define ANSWER_MAX (4 * 1024 * 1024)
#define HISTORY 60 /* samples kept for the sparkline: a minute at one a second */
#define SPARK 20   /* sparkline cells: three samples each */
#define MAX_ROWS 256

static volatile sig_atomic_t stop_now;

static void on_stop(int sig)
{
    (void)sig;
    stop_now = 1;
}

/* One `status --json` answer parsed, or NULL (errno-style reason in *why). */
static json_t *fetch(const char *sock, long timeout_s, const char **why)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    *why = "socket path too long";
    if (strlen(sock) >= sizeof sun.sun_path)
        return NULL;
    strcpy(sun.sun_path, sock);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof sun) < 0) {
        *why = strerror(errno);
        if (fd >= 0)
            close(fd);
        return NULL;
    }
    struct timeval tv = {.tv_sec = timeout_s};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    static const char req[] = "status --json\n";
    char *buf = NULL;
    json_t *root = NULL;
    if (send(fd, req, sizeof req - 1, MSG_NOSIGNAL) < 0) {
        *why = strerror(errno);
        goto out;
    }
    buf = malloc(ANSWER_MAX + 1);
    size_t len = 0;
    ssize_t n = 0;
    while (buf && len < ANSWER_MAX && (n = recv(fd, buf + len, ANSWER_MAX - len, 0)) > 0)
        len += (size_t)n;
    if (buf == NULL || n < 0) {
        *why = buf ? (errno == EAGAIN ? "timed out" : strerror(errno)) : "out of memory";
        goto out;
    }
    buf[len] = '\0';
    *why = "unexpected answer";
    if (strncmp(buf, "ok\n", 3) != 0)
        goto out;
    root = json_loads(buf + 3, 0, NULL);
    if (root && !json_is_object(root)) {
        json_decref(root);
        root = NULL;
    }
out:
    free(buf);
    close(fd);
    return root;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static unsigned long long num(json_t *o, const char *key)
{
    json_t *v = json_object_get(o, key);
    return json_is_integer(v) && json_integer_value(v) > 0
               ? (unsigned long long)json_integer_value(v)
               : 0;
}

static const char *str(json_t *o, const char *key)
{
    const char *s = json_string_value(json_object_get(o, key));
    return s ? s : "";
}

/* One listener or worker across samples. */
typedef struct row {
    char key[72]; /* listener name, or "worker N" */
    int seen;     /* in the latest sample */
    unsigned long long accepted, bytes_in, bytes_out;
    double conn_s, in_s, out_s;
    double hist[HISTORY]; /* connections per second, oldest first */
    int nhist;
} row_t;

typedef struct view {
    row_t rows[MAX_ROWS];
    size_t nrows;
    double last_t;
    json_t *last;
} view_t;

static row_t *row_get(view_t *v, const char *key, int *fresh)
{
    for (size_t i = 0; i < v->nrows; i++)
        if (strcmp(v->rows[i].key, key) == 0) {
            *fresh = 0;
            return &v->rows[i];
        }
    if (v->nrows == MAX_ROWS)
        return NULL;
    row_t *r = &v->rows[v->nrows++];
    memset(r, 0, sizeof *r);
    snprintf(r->key, sizeof r->key, "%s", key);
    *fresh = 1;
    return r;
}

static double rate(unsigned long long now, unsigned long long before, double dt)
{
    return dt > 0 ? (double)(now >= before ? now - before : now) / dt : 0;
}

static void row_update(row_t *r, int fresh, json_t *o, double dt)
{
    unsigned long long acc = num(o, "accepted"), in = num(o, "bytes_in"), out = num(o, "bytes_out");
    if (!fresh && dt > 0) {
        r->conn_s = rate(acc, r->accepted, dt);
        r->in_s = rate(in, r->bytes_in, dt);
        r->out_s = rate(out, r->bytes_out, dt);
        if (r->nhist == HISTORY)
            memmove(r->hist, r->hist + 1, (HISTORY - 1) * sizeof r->hist[0]);
        else
            r->nhist++;
        r->hist[r->nhist - 1] = r->conn_s;
    }
    r->accepted = acc;
    r->bytes_in = in;
    r->bytes_out = out;
    r->seen = 1;
}

/* Take a new sample into the view: 0, or -1 when the daemon did not answer (*why). */
static int view_sample(view_t *v, const char *sock, long timeout_s, const char **why)
{
    json_t *root = fetch(sock, timeout_s, why);
    if (root == NULL)
        return -1;
    double t = now_s();
    double dt = v->last ? t - v->last_t : 0;
    for (size_t i = 0; i < v->nrows; i++)
        v->rows[i].seen = 0;
    size_t i;
    json_t *o;
    char key[72];
    int fresh;
    json_array_foreach(json_object_get(root, "listeners"), i, o)
    {
        snprintf(key, sizeof key, "l:%s", str(o, "name"));
        row_t *r = row_get(v, key, &fresh);
        if (r)
            row_update(r, fresh, o, dt);
    }
    json_array_foreach(json_object_get(root, "workers"), i, o)
    {
        snprintf(key, sizeof key, "w:%llu:%llu", num(o, "index"), num(o, "pid"));
        row_t *r = row_get(v, key, &fresh);
        if (r)
            row_update(r, fresh, o, dt);
    }
    /* Forget what is gone, so the table does not fill with old workers. */
    size_t kept = 0;
    for (i = 0; i < v->nrows; i++)
        if (v->rows[i].seen)
            v->rows[kept++] = v->rows[i];
    v->nrows = kept;
    if (v->last)
        json_decref(v->last);
    v->last = root;
    v->last_t = t;
    return 0;
}

static row_t *row_find(view_t *v, const char *key)
{
    for (size_t i = 0; i < v->nrows; i++)
        if (strcmp(v->rows[i].key, key) == 0)
            return &v->rows[i];
    return NULL;
}

/* 1536 -> "1.5K", the config's units (1024). Fits 6 characters. */
static const char *human(double x, char *buf, size_t len)
{
    static const char units[] = " KMGTP";
    int u = 0;
    while (x >= 999.5 && u < 5) {
        x /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, len, "%.0f", x);
    else
        snprintf(buf, len, x < 9.95 ? "%.1f%c" : "%.0f%c", x, units[u]);
    return buf;
}

static int utf8_terminal(void)
{
    setlocale(LC_CTYPE, "");
    const char *cs = nl_langinfo(CODESET);
    return cs && (strcmp(cs, "UTF-8") == 0 || strcmp(cs, "utf8") == 0);
}

/* The last minute of connections per second in SPARK cells, each the peak of its three
 * samples, scaled to the minute's peak. */
static void sparkline(const row_t *r, int utf8, char *out, size_t len)
{
    static const char *const blocks[] = {"\u2581", "\u2582", "\u2583", "\u2584",
                                         "\u2585", "\u2586", "\u2587", "\u2588"};
    static const char ascii[] = "_.-:=+*#";
    const int per = HISTORY / SPARK;
    double peak = 0;
    for (int i = 0; i < r->nhist; i++)
        peak = r->hist[i] > peak ? r->hist[i] : peak;
    size_t o = 0;
    out[0] = '\0';
    int cells_with_data = (r->nhist + per - 1) / per;
    for (int c = 0; c < SPARK; c++) {
        int first = c - (SPARK - cells_with_data); /* right-aligned: newest at the end */
        const char *glyph = " ";
        char one[2] = {0};
        if (first >= 0) {
            double m = 0;
            int start = r->nhist - (cells_with_data - first) * per;
            for (int k = start; k < start + per; k++)
                if (k >= 0 && k < r->nhist && r->hist[k] > m)
                    m = r->hist[k];
            int level = peak > 0 && m > 0 ? 1 + (int)(m / peak * 6.999) : 0;
            level = level > 7 ? 7 : level;
            if (utf8) {
                glyph = blocks[level];
            } else {
                one[0] = ascii[level];
                glyph = one;
            }
        }
        size_t g = strlen(glyph);
        if (o + g + 1 > len)
            break;
        memcpy(out + o, glyph, g + 1);
        o += g;
    }
}

static void uptime_text(unsigned long long s, char *buf, size_t len)
{
    snprintf(buf, len, "%llud%02lluh%02llum%02llus", s / 86400, s / 3600 % 24, s / 60 % 60, s % 60);
}

/* The screen, as text with "\033[K" (erase to end of line) at each line's end. */
static void draw(view_t *v, const char *sock, const char *err, int utf8, int rows_max)
{
    char a[16], b[16], up[32], spark[SPARK * 4 + 1];
    int line = 0;
    printf("\033[H");
#define LINE(...)                                                                                  \
    do {                                                                                           \
        if (line++ < rows_max) {                                                                   \
            printf(__VA_ARGS__);                                                                   \
            printf("\033[K\r\n");                                                                  \
        }                                                                                          \
    } while (0)
    json_t *st = v->last;
    if (st == NULL) {
        LINE("berthctl top: waiting for berthd at %.50s", sock);
        printf("\033[J");
        fflush(stdout);
        return;
    }
    uptime_text(num(st, "uptime_s"), up, sizeof up);
    LINE("berthd pid %llu  up %s  generation %llu  reloads %llu/%llu failed  crashes %llu",
         num(st, "pid"), up, num(st, "generation"),
         num(st, "reloads_ok") + num(st, "reloads_failed"), num(st, "reloads_failed"),
         num(st, "worker_crashes"));
    if (err)
        LINE("\033[7m no answer from berthd: %.50s \033[0m", err);
    else
        LINE("%s", "q or Ctrl-C quits");
    LINE("%s", "");
    LINE("\033[7m%-12s %-5s %7s %6s %7s %7s %5s %-20s\033[0m", "LISTENER", "PROTO", "CONN/S",
         "ACTIVE", "IN/S", "OUT/S", "ERRS", "CONN/S LAST MINUTE");
    size_t i;
    json_t *o;
    char key[72];
    json_array_foreach(json_object_get(st, "listeners"), i, o)
    {
        snprintf(key, sizeof key, "l:%s", str(o, "name"));
        row_t *r = row_find(v, key);
        if (r == NULL)
            continue;
        sparkline(r, utf8, spark, sizeof spark);
        LINE("%-12.12s %-5.5s %7.1f %6llu %7s %7s %5llu %s", str(o, "name"), str(o, "protocol"),
             r->conn_s, num(o, "active"), human(r->in_s, a, sizeof a), human(r->out_s, b, sizeof b),
             num(o, "errors"), spark);
    }
    LINE("%s", "");
    LINE("\033[7m%-6s %-8s %4s %-9s %6s %7s %7s %7s %-12s\033[0m", "WORKER", "PID", "GEN", "STATE",
         "ACTIVE", "CONN/S", "IN/S", "OUT/S", "UP");
    /* Generations: how many workers each has, and in which state. */
    char gens[160] = "";
    size_t glen = 0;
    unsigned long long seen_gen[16];
    int nseen = 0;
    json_array_foreach(json_object_get(st, "workers"), i, o)
    {
        snprintf(key, sizeof key, "w:%llu:%llu", num(o, "index"), num(o, "pid"));
        row_t *r = row_find(v, key);
        uptime_text(num(o, "uptime_s"), up, sizeof up);
        LINE("%-6llu %-8llu %4llu %-9.9s %6llu %7.1f %7s %7s %-12s", num(o, "index"), num(o, "pid"),
             num(o, "generation"), str(o, "state"), num(o, "active"), r ? r->conn_s : 0.0,
             human(r ? r->in_s : 0, a, sizeof a), human(r ? r->out_s : 0, b, sizeof b), up);
        unsigned long long g = num(o, "generation");
        int k;
        for (k = 0; k < nseen && seen_gen[k] != g; k++)
            ;
        if (k == nseen && nseen < 16) {
            seen_gen[nseen++] = g;
            unsigned n = 0;
            size_t j;
            json_t *w;
            json_array_foreach(json_object_get(st, "workers"), j, w) n += num(w, "generation") == g;
            int wrote = snprintf(gens + glen, sizeof gens - glen, "%s%llu: %u worker%s (%s)",
                                 glen ? ", " : "", g, n, n == 1 ? "" : "s",
                                 g == num(st, "generation") ? "current" : "older");
            if (wrote > 0 && (size_t)wrote < sizeof gens - glen)
                glen += (size_t)wrote;
        }
    }
    LINE("%s", "");
    LINE("generations %.68s", gens[0] ? gens : "none");
#undef LINE
    printf("\033[J"); /* clear whatever an earlier, longer screen left below */
    fflush(stdout);
}

static int term_rows(void)
{
    struct winsize ws;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0)
        return ws.ws_row;
    return 24;
}

static void catch_signals(void)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop; /* no SA_RESTART: poll() and recv() return EINTR */
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
    sigaction(SIGPIPE, &sa, NULL);
}

int top_run(const char *sock, long timeout_s)
{
    if (!isatty(STDIN_FILENO) || !isatty(STDOUT_FILENO)) {
        fprintf(stderr, "berthctl: top needs a terminal (try status --watch 1)\n");
        return EX_USAGE;
    }
    view_t *v = calloc(1, sizeof *v);
    const char *why = NULL;
    if (v == NULL || view_sample(v, sock, timeout_s, &why) < 0) {
        fprintf(stderr, "berthctl: cannot reach berthd at %s: %s\n", sock,
                v ? why : "out of memory");
        free(v);
        return EX_UNAVAILABLE;
    }
    int utf8 = utf8_terminal();
    struct termios saved, raw;
    tcgetattr(STDIN_FILENO, &saved);
    raw = saved;
    raw.c_lflag &= ~(tcflag_t)(ICANON | ECHO); /* keys one at a time, unseen; ISIG stays */
    raw.c_cc[VMIN] = 1;
    raw.c_cc[VTIME] = 0;
    catch_signals();
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &raw);
    printf("\033[?1049h\033[?25l\033[?7l\033[2J"); /* alternate screen, no cursor, no wrap */
    const char *err = NULL;
    draw(v, sock, err, utf8, term_rows());
    double next = now_s() + 1;
    while (!stop_now) {
        double wait = next - now_s();
        struct pollfd p = {.fd = STDIN_FILENO, .events = POLLIN};
        int n = poll(&p, 1, wait > 0 ? (int)(wait * 1000) + 1 : 0);
        if (n > 0) {
            char key;
            if (read(STDIN_FILENO, &key, 1) != 1 || key == 'q' || key == 'Q')
                break;
            if (key == 12) /* Ctrl-L: redraw from scratch */
                printf("\033[2J");
            draw(v, sock, err, utf8, term_rows());
            continue;
        }
        if (n < 0 && errno != EINTR)
            break;
        if (now_s() < next)
            continue;
        next += 1;
        if (next < now_s()) /* a stall (suspended, slow daemon): do not catch up in a burst */
            next = now_s() + 1;
        err = view_sample(v, sock, timeout_s < 2 ? timeout_s : 2, &why) < 0 ? why : NULL;
        draw(v, sock, err, utf8, term_rows());
    }
    printf("\033[?7h\033[?25h\033[?1049l"); /* wrap, cursor, the screen as it was */
    fflush(stdout);
    tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved);
    if (v->last)
        json_decref(v->last);
    free(v);
    return 0;
}

static void watch_print(view_t *v)
{
    json_t *st = v->last;
    char ts[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
    printf("%s daemon pid=%llu uptime_s=%llu generation=%llu reloads_ok=%llu reloads_failed=%llu "
           "worker_crashes=%llu\n",
           ts, num(st, "pid"), num(st, "uptime_s"), num(st, "generation"), num(st, "reloads_ok"),
           num(st, "reloads_failed"), num(st, "worker_crashes"));
    size_t i;
    json_t *o;
    char key[72];
    json_array_foreach(json_object_get(st, "listeners"), i, o)
    {
        snprintf(key, sizeof key, "l:%s", str(o, "name"));
        row_t *r = row_find(v, key);
        printf("%s listener name=%s protocol=%s conn_per_s=%.1f active=%llu in_per_s=%.0f "
               "out_per_s=%.0f errors=%llu accepted=%llu\n",
               ts, str(o, "name"), str(o, "protocol"), r ? r->conn_s : 0.0, num(o, "active"),
               r ? r->in_s : 0.0, r ? r->out_s : 0.0, num(o, "errors"), num(o, "accepted"));
    }
    json_array_foreach(json_object_get(st, "workers"), i, o)
    {
        snprintf(key, sizeof key, "w:%llu:%llu", num(o, "index"), num(o, "pid"));
        row_t *r = row_find(v, key);
        printf("%s worker index=%llu pid=%llu generation=%llu state=%s active=%llu "
               "conn_per_s=%.1f in_per_s=%.0f out_per_s=%.0f\n",
               ts, num(o, "index"), num(o, "pid"), num(o, "generation"), str(o, "state"),
               num(o, "active"), r ? r->conn_s : 0.0, r ? r->in_s : 0.0, r ? r->out_s : 0.0);
    }
    fflush(stdout);
}

int watch_run(const char *sock, long timeout_s, long interval_s)
{
    view_t *v = calloc(1, sizeof *v);
    const char *why = NULL;
    int rc = 0;
    catch_signals();
    if (v == NULL || view_sample(v, sock, timeout_s, &why) < 0) {
        fprintf(stderr, "berthctl: cannot reach berthd at %s: %s\n", sock,
                v ? why : "out of memory");
        free(v);
        return EX_UNAVAILABLE;
    }
    /* Rates need two samples: the first lines come after the first interval. */
    double next = now_s() + (double)interval_s;
    while (!stop_now) {
        double wait = next - now_s();
        if (wait > 0) {
            poll(NULL, 0, (int)(wait * 1000) + 1);
            continue;
        }
        next += (double)interval_s;
        if (next < now_s())
            next = now_s() + (double)interval_s;
        if (view_sample(v, sock, timeout_s, &why) < 0) {
            fprintf(stderr, "berthctl: no answer from berthd at %s: %s\n", sock, why);
            rc = EX_UNAVAILABLE;
            break;
        }
        watch_print(v);
    }
    if (v->last)
        json_decref(v->last);
    free(v);
    return rc;
}
