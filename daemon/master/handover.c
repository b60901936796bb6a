/* The handover document: written by the master that re-executes, read by the new image. */
#include "master/handover.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void handover_init(handover_t *h)
{
    memset(h, 0, sizeof *h);
    h->stats_fd = h->limits_fd = h->admin_fd = h->reply_fd = h->rollback_fd = -1;
    h->metrics_fd = h->agent_fd = -1;
}

typedef struct wbuf {
    char *p;
    size_t len, cap;
    int failed;
} wbuf_t;

__attribute__((format(printf, 2, 3))) static void w_printf(wbuf_t *b, const char *fmt, ...)
{
    if (b->failed)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= b->cap - b->len)
        b->failed = 1;
    else
        b->len += (size_t)n;
}

/* Free text on one line: a backslash and a newline are escaped, a tab becomes a space. */
static void w_text(wbuf_t *b, const char *s)
{
    for (; *s && !b->failed; s++) {
        if (*s == '\\')
            w_printf(b, "\\\\");
        else if (*s == '\n')
            w_printf(b, "\\n");
        else if (*s == '\t' || *s == '\r')
            w_printf(b, " ");
        else
            w_printf(b, "%c", *s);
    }
}

int handover_write(const handover_t *h)
{
    wbuf_t b = {.cap = HANDOVER_TEXT_MAX};
    b.p = malloc(b.cap);
    if (b.p == NULL)
        return -ENOMEM;
    w_printf(&b, "berth-handover %u\nfrom ", HANDOVER_FORMAT);
    w_text(&b, h->from);
    w_printf(&b, "\nexe ");
    w_text(&b, h->exe);
    w_printf(&b, "\nnext_generation %u\nstats %d %zu\n", h->next_generation, h->stats_fd,
             h->stats_size);
    if (h->limits_fd >= 0)
        w_printf(&b, "limits %d %zu %" PRIu32 "\n", h->limits_fd, h->limits_len, h->limits_entries);
    if (h->admin_fd >= 0) {
        w_printf(&b, "admin %d ", h->admin_fd);
        w_text(&b, h->admin_path);
        w_printf(&b, "\n");
    }
    if (h->reply_fd >= 0)
        w_printf(&b, "reply %d\n", h->reply_fd);
    if (h->rollback_fd >= 0)
        w_printf(&b, "rollback %d\n", h->rollback_fd);
    if (h->failed[0]) {
        w_printf(&b, "failed ");
        w_text(&b, h->failed);
        w_printf(&b, "\n");
    }
    for (size_t i = 0; i < h->nsocks; i++) {
        const ho_sock_t *s = &h->socks[i];
        w_printf(&b, "sock %d %d %d %d %llu %llu %u ", s->fd, s->slot, s->protocol, s->quarantined,
                 s->dev, s->ino, (unsigned)s->addrlen);
        for (socklen_t k = 0; k < s->addrlen; k++)
            w_printf(&b, "%02x", ((const unsigned char *)&s->addr)[k]);
        w_printf(&b, "\t");
        w_text(&b, s->name);
        w_printf(&b, "\t");
        w_text(&b, s->address);
        w_printf(&b, "\t");
        w_text(&b, s->bound);
        w_printf(&b, "\n");
    }
    for (size_t i = 0; i < h->ngens; i++) {
        const ho_gen_t *g = &h->gens[i];
        w_printf(&b, "gen %u %d %" PRIu64 " ", g->id, g->state, g->kill_in_ms);
        w_text(&b, g->version);
        w_printf(&b, "\n");
    }
    for (size_t i = 0; i < h->nworkers; i++) {
        const ho_worker_t *w = &h->workers[i];
        w_printf(&b, "worker %u %u %u %d %d %d\n", w->gen, w->index, w->group, (int)w->pid,
                 w->ctl_fd, w->slot);
    }
    /* appended to format 1: a reader that does not know them skips them */
    if (h->metrics_fd >= 0) {
        w_printf(&b, "metrics %d ", h->metrics_fd);
        w_text(&b, h->metrics_at);
        w_printf(&b, "\n");
    }
    if (h->agent_fd >= 0) {
        w_printf(&b, "agent %d ", h->agent_fd);
        w_text(&b, h->agent_at);
        w_printf(&b, "\n");
    }
    for (size_t i = 0; i < h->npassed; i++) {
        w_printf(&b, "activation %d ", h->passed[i].fd);
        w_text(&b, h->passed[i].name);
        w_printf(&b, "\n");
    }
    w_printf(&b, "end\n");
    int fd = -1, rc = 0;
    if (b.failed) {
        rc = -E2BIG;
        goto out;
    }
    fd = memfd_create("berth-handover", 0);
    if (fd < 0) {
        rc = -errno;
        goto out;
    }
    for (size_t off = 0; off < b.len;) {
        ssize_t n = write(fd, b.p + off, b.len - off);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            goto out;
        }
        off += (size_t)n;
    }
    if (lseek(fd, 0, SEEK_SET) < 0)
        rc = -errno;
out:
    free(b.p);
    if (rc && fd >= 0)
        close(fd);
    return rc ? rc : fd;
}

/* Undo w_text into out (at most outlen - 1 bytes). */
static int r_text(const char *s, size_t n, char *out, size_t outlen)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (c == '\\') {
            if (++i == n)
                return -1;
            c = s[i] == 'n' ? '\n' : s[i] == '\\' ? '\\' : 0;
            if (c == 0)
                return -1;
        }
        if (o + 1 >= outlen)
            return -1;
        out[o++] = c;
    }
    out[o] = '\0';
    return 0;
}

/* A tab or a carriage return, which w_text writes as a space: never in an address or a
 * name (systemd's FileDescriptorName= has no control characters). */
static int lossy(const char *s)
{
    return strpbrk(s, "\t\r") != NULL;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int parse_fd(long v)
{
    return v >= 0 && v < 1 << 20 ? (int)v : -2;
}

/* One "sock" line after the key. */
static int parse_sock(const char *p, const char *end, ho_sock_t *s)
{
    char head[400];
    const char *tab = memchr(p, '\t', (size_t)(end - p));
    if (tab == NULL || (size_t)(tab - p) >= sizeof head)
        return -1;
    memcpy(head, p, (size_t)(tab - p));
    head[tab - p] = '\0';
    int fd, slot, proto, quar, used = 0;
    unsigned alen;
    char hex[2 * sizeof s->addr + 1];
    if (sscanf(head, "%d %d %d %d %llu %llu %u %256s%n", &fd, &slot, &proto, &quar, &s->dev,
               &s->ino, &alen, hex, &used) != 8 ||
        head[used] != '\0')
        return -1;
    if (fd < 0 || slot < -1 || slot >= STATS_LISTENERS || alen == 0 || alen > sizeof s->addr ||
        strlen(hex) != 2 * (size_t)alen)
        return -1;
    memset(&s->addr, 0, sizeof s->addr);
    for (unsigned k = 0; k < alen; k++) {
        int hi = hexval(hex[2 * k]), lo = hexval(hex[2 * k + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        ((unsigned char *)&s->addr)[k] = (unsigned char)(hi << 4 | lo);
    }
    s->fd = fd;
    s->slot = slot;
    s->protocol = proto;
    s->quarantined = quar != 0;
    s->addrlen = (socklen_t)alen;
    const char *f[3];
    size_t fl[3];
    const char *q = tab + 1;
    for (int k = 0; k < 3; k++) {
        const char *t = k < 2 ? memchr(q, '\t', (size_t)(end - q)) : end;
        if (t == NULL)
            return -1;
        f[k] = q;
        fl[k] = (size_t)(t - q);
        q = t + 1;
    }
    if (r_text(f[0], fl[0], s->name, sizeof s->name) ||
        r_text(f[1], fl[1], s->address, sizeof s->address) ||
        r_text(f[2], fl[2], s->bound, sizeof s->bound) || s->name[0] == '\0')
        return -1;
    return 0;
}

#define FAIL(...)                                                                                  \
    do {                                                                                           \
        snprintf(err, errlen, __VA_ARGS__);                                                        \
        return -EINVAL;                                                                            \
    } while (0)

int handover_parse(const char *text, size_t len, handover_t *h, char *err, size_t errlen)
{
    handover_init(h);
    int ended = 0, have_stats = 0;
    unsigned lineno = 0;
    for (const char *p = text; p < text + len && !ended;) {
        const char *nl = memchr(p, '\n', (size_t)(text + len - p));
        if (nl == NULL)
            FAIL("handover line %u: no end of line", lineno + 1);
        lineno++;
        char line[1200];
        size_t n = (size_t)(nl - p);
        const char *sp = memchr(p, ' ', n);
        size_t klen = sp ? (size_t)(sp - p) : n;
        const char *val = sp ? sp + 1 : nl;
        size_t vlen = (size_t)(nl - val);
        if (vlen < sizeof line) {
            memcpy(line, val, vlen);
            line[vlen] = '\0';
        } else {
            line[0] = '\0';
        }
#define KEY(k) (klen == sizeof(k) - 1 && memcmp(p, k, klen) == 0)
        int bad = 0, used = 0;
        if (lineno == 1) {
            if (!KEY("berth-handover") || sscanf(line, "%u%n", &h->format, &used) != 1 ||
                line[used] != '\0')
                FAIL("not a berth handover document");
            if (h->format == 0 || h->format > HANDOVER_FORMAT)
                FAIL("handover format %u is newer than this berthd reads (%u)", h->format,
                     HANDOVER_FORMAT);
        } else if (vlen >= sizeof line && !KEY("sock")) {
            bad = 1;
        } else if (KEY("from")) {
            bad = r_text(val, vlen, h->from, sizeof h->from);
        } else if (KEY("exe")) {
            bad = r_text(val, vlen, h->exe, sizeof h->exe) || h->exe[0] != '/';
        } else if (KEY("next_generation")) {
            bad = sscanf(line, "%u%n", &h->next_generation, &used) != 1 || line[used];
        } else if (KEY("stats")) {
            long fd;
            bad = sscanf(line, "%ld %zu%n", &fd, &h->stats_size, &used) != 2 || line[used] ||
                  (h->stats_fd = parse_fd(fd)) < 0;
            have_stats = !bad;
        } else if (KEY("limits")) {
            long fd;
            bad = sscanf(line, "%ld %zu %" SCNu32 "%n", &fd, &h->limits_len, &h->limits_entries,
                         &used) != 3 ||
                  line[used] || (h->limits_fd = parse_fd(fd)) < 0;
        } else if (KEY("admin")) {
            long fd;
            bad = sscanf(line, "%ld %n", &fd, &used) != 1 || (h->admin_fd = parse_fd(fd)) < 0 ||
                  r_text(line + used, strlen(line + used), h->admin_path, sizeof h->admin_path) ||
                  h->admin_path[0] == '\0';
        } else if (KEY("reply") || KEY("rollback")) {
            long fd;
            bad = sscanf(line, "%ld%n", &fd, &used) != 1 || line[used] || parse_fd(fd) < 0;
            if (!bad)
                *(KEY("reply") ? &h->reply_fd : &h->rollback_fd) = (int)fd;
        } else if (KEY("failed")) {
            bad = r_text(val, vlen, h->failed, sizeof h->failed);
        } else if (KEY("sock")) {
            if (h->nsocks == BERTH_MAX_LISTENERS)
                FAIL("handover line %u: more than %d sockets", lineno, BERTH_MAX_LISTENERS);
            bad = parse_sock(val, nl, &h->socks[h->nsocks]);
            h->nsocks += !bad;
        } else if (KEY("gen")) {
            if (h->ngens == HANDOVER_MAX_GENS)
                FAIL("handover line %u: more than %d generations", lineno, HANDOVER_MAX_GENS);
            ho_gen_t *g = &h->gens[h->ngens];
            bad = sscanf(line, "%u %d %" SCNu64 " %n", &g->id, &g->state, &g->kill_in_ms, &used) !=
                      3 ||
                  (g->state != HO_SERVING && g->state != HO_DRAINING) ||
                  r_text(line + used, strlen(line + used), g->version, sizeof g->version);
            h->ngens += !bad;
        } else if (KEY("worker")) {
            if (h->nworkers == STATS_WORKERS)
                FAIL("handover line %u: more than %d workers", lineno, STATS_WORKERS);
            ho_worker_t *w = &h->workers[h->nworkers];
            int pid;
            bad = sscanf(line, "%u %u %u %d %d %d%n", &w->gen, &w->index, &w->group, &pid,
                         &w->ctl_fd, &w->slot, &used) != 6 ||
                  line[used] || pid <= 1 || w->ctl_fd < 0 || w->slot < 0 ||
                  w->slot >= STATS_WORKERS;
            w->pid = pid;
            if (!bad) {
                bad = 1;
                for (size_t k = 0; k < h->ngens; k++)
                    bad &= h->gens[k].id != w->gen;
            }
            h->nworkers += !bad;
        } else if (KEY("metrics") || KEY("agent")) {
            long fd;
            int is_m = KEY("metrics");
            char *at = is_m ? h->metrics_at : h->agent_at;
            bad = sscanf(line, "%ld %n", &fd, &used) != 1 || parse_fd(fd) < 0 ||
                  r_text(line + used, strlen(line + used), at, sizeof h->metrics_at) ||
                  at[0] == '\0' || lossy(at);
            if (!bad)
                *(is_m ? &h->metrics_fd : &h->agent_fd) = (int)fd;
        } else if (KEY("activation")) {
            if (h->npassed == BERTH_MAX_LISTENERS)
                FAIL("handover line %u: more than %d passed sockets", lineno, BERTH_MAX_LISTENERS);
            long fd;
            bad = sscanf(line, "%ld %n", &fd, &used) != 1 || parse_fd(fd) < 0 ||
                  r_text(line + used, strlen(line + used), h->passed[h->npassed].name,
                         sizeof h->passed[h->npassed].name) ||
                  h->passed[h->npassed].name[0] == '\0' || lossy(h->passed[h->npassed].name);
            if (!bad)
                h->passed[h->npassed++].fd = (int)fd;
        } else if (KEY("end")) {
            ended = 1;
        } /* else: a key a newer writer added; skipped */
#undef KEY
        if (bad)
            FAIL("handover line %u: malformed %.*s", lineno, (int)(klen < 32 ? klen : 32), p);
        p = nl + 1;
    }
    if (lineno == 0)
        FAIL("empty handover document");
    if (!ended)
        FAIL("handover document truncated (no end line)");
    if (!have_stats)
        FAIL("handover document without the counters");
    if (h->exe[0] == '\0')
        FAIL("handover document without the executable path");
    return 0;
}

int handover_read(int fd, handover_t *h, char *err, size_t errlen)
{
    char *buf = malloc(HANDOVER_TEXT_MAX);
    if (buf == NULL)
        FAIL("out of memory");
    size_t len = 0;
    for (;;) {
        ssize_t n = pread(fd, buf + len, HANDOVER_TEXT_MAX - len, (off_t)len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            FAIL("reading the handover (fd %d): %s", fd, strerror(e));
        }
        if (n == 0 || (len += (size_t)n) == HANDOVER_TEXT_MAX)
            break;
    }
    int rc = handover_parse(buf, len, h, err, errlen);
    free(buf);
    return rc;
}

size_t handover_fds(const handover_t *h, int *out, size_t max)
{
    size_t n = 0;
#define ADD(fd)                                                                                    \
    do {                                                                                           \
        if ((fd) >= 0 && n < max)                                                                  \
            out[n++] = (fd);                                                                       \
    } while (0)
    ADD(h->stats_fd);
    ADD(h->limits_fd);
    ADD(h->admin_fd);
    ADD(h->reply_fd);
    ADD(h->rollback_fd);
    for (size_t i = 0; i < h->nsocks; i++)
        ADD(h->socks[i].fd);
    for (size_t i = 0; i < h->nworkers; i++)
        ADD(h->workers[i].ctl_fd);
    ADD(h->metrics_fd);
    ADD(h->agent_fd);
    for (size_t i = 0; i < h->npassed; i++)
        ADD(h->passed[i].fd);
#undef ADD
    return n;
}
