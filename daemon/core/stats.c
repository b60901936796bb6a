#include "core/stats.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* A memfd rather than an anonymous mapping: a binary upgrade hands it to the new image. */
static int stats_memfd = -1;

stats_t *stats_map(void)
{
    int fd = memfd_create("berth-stats", MFD_CLOEXEC);
    if (fd < 0)
        return NULL;
    if (ftruncate(fd, sizeof(stats_t)) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    void *p = mmap(NULL, sizeof(stats_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        close(fd);
        errno = e;
        return NULL;
    }
    stats_memfd = fd;
    stats_t *s = p; /* a new memfd reads as zeroes */
    s->started_ms = stats_now_ms();
    return s;
}

stats_t *stats_adopt(int fd, size_t size)
{
    if (size != sizeof(stats_t)) {
        errno = EPROTO;
        return NULL;
    }
    void *p = mmap(NULL, sizeof(stats_t), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED)
        return NULL;
    stats_memfd = fd;
    return p;
}

int stats_fd(void)
{
    return stats_memfd;
}

void stats_unmap(stats_t *s)
{
    if (s)
        munmap(s, sizeof *s);
    if (stats_memfd >= 0)
        close(stats_memfd);
    stats_memfd = -1;
}

uint64_t stats_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int stats_listener_claim(stats_t *s, int protocol, const char *name, const char *address)
{
    for (int i = 0; i < STATS_LISTENERS; i++) {
        stats_listener_t *l = &s->listeners[i];
        if (l->in_use)
            continue;
        memset(l, 0, sizeof *l);
        l->in_use = 1;
        l->protocol = protocol;
        snprintf(l->name, sizeof l->name, "%s", name);
        snprintf(l->address, sizeof l->address, "%s", address);
        return i;
    }
    return -1;
}

void stats_listener_release(stats_t *s, int slot)
{
    if (slot < 0 || slot >= STATS_LISTENERS)
        return;
    s->listeners[slot].in_use = 0;
    /* Its plugin metrics go with it: a socket opened later in this slot starts clean. */
    while (atomic_flag_test_and_set_explicit(&s->metrics_lock, memory_order_acquire)) {
    }
    for (int i = 0; i < STATS_METRICS; i++)
        if (atomic_load(&s->metrics[i].in_use) && s->metrics[i].listener == slot)
            atomic_store(&s->metrics[i].in_use, 0);
    atomic_flag_clear_explicit(&s->metrics_lock, memory_order_release);
}

int stats_worker_claim(stats_t *s, unsigned generation, unsigned index)
{
    for (int i = 0; i < STATS_WORKERS; i++) {
        stats_worker_t *w = &s->workers[i];
        if (atomic_load(&w->state) != WORKER_FREE)
            continue;
        memset(w, 0, sizeof *w);
        w->generation = generation;
        w->index = index;
        atomic_store(&w->cur_listener, -1);
        w->started_ms = stats_now_ms();
        atomic_store(&w->state, WORKER_STARTING);
        return i;
    }
    return -1;
}

void stats_worker_settle(stats_t *s, int slot)
{
    if (slot < 0 || slot >= STATS_WORKERS)
        return;
    stats_worker_t *w = &s->workers[slot];
    for (int i = 0; i < STATS_LISTENERS; i++) {
        uint32_t held = atomic_exchange(&w->active_by_listener[i], 0);
        if (held)
            atomic_fetch_sub(&s->listeners[i].active, held);
    }
    atomic_store(&w->state, WORKER_FREE);
}

const char *stats_hook_name(int hook)
{
    static const char *const names[] = {
        [STATS_HOOK_NONE] = "",
        [STATS_HOOK_LOAD] = "load()",
        [STATS_HOOK_CHECK_OPTION] = "check_option()",
        [STATS_HOOK_LISTENER_OPEN] = "listener_open()",
        [STATS_HOOK_LISTENER_CLOSE] = "listener_close()",
        [STATS_HOOK_SETUP] = "setup()",
        [STATS_HOOK_HANDLE] = "handle()",
        [STATS_HOOK_FINISH] = "finish()",
        [STATS_HOOK_TIMER] = "a timer callback",
        [STATS_HOOK_WORK] = "a work function",
        [STATS_HOOK_WORK_DONE] = "a work done callback",
        [STATS_HOOK_CONNECT] = "a connect callback",
        [STATS_HOOK_RELAY] = "a relay callback",
        [STATS_HOOK_OTHER] = "a callback",
    };
    if (hook < 0 || (size_t)hook >= sizeof(names) / sizeof(names[0]) || !names[hook])
        return "a callback";
    return names[hook];
}

/* ---- metrics ---- */

const uint64_t stats_duration_bounds_ms[STATS_DURATION_BUCKETS] = {
    5, 10, 50, 100, 500, 1000, 5000, 10000, 30000, 60000, 300000, 3600000,
};

void stats_conn_closed(stats_listener_t *st, stats_closed_t why, uint64_t ms)
{
    size_t b = 0;
    while (b < STATS_DURATION_BUCKETS && ms > stats_duration_bounds_ms[b])
        b++;
    atomic_fetch_add_explicit(&st->closed[why], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->duration_ms_sum, ms, memory_order_relaxed);
    atomic_fetch_add_explicit(&st->duration_buckets[b], 1, memory_order_relaxed);
}

static int name_start(char ch)
{
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || ch == '_';
}

static int name_char(char ch)
{
    return name_start(ch) || (ch >= '0' && ch <= '9');
}

static int value_char(char ch)
{
    return name_char(ch) || ch == '.' || ch == ':' || ch == '/' || ch == '+' || ch == '-';
}

int stats_metric_name_ok(const char *name)
{
    size_t len = strnlen(name, STATS_METRIC_NAME);
    if (len == 0 || len >= STATS_METRIC_NAME || !name_start(name[0]))
        return 0;
    const char *p = name;
    while (name_char(*p))
        p++;
    if (*p == '\0')
        return 1;
    if (*p++ != '{')
        return 0;
    for (;;) {
        const char *label = p;
        if (!name_start(*p))
            return 0;
        while (name_char(*p))
            p++;
        size_t llen = (size_t)(p - label);
        if ((llen == 8 && memcmp(label, "listener", 8) == 0) ||
            (llen >= 2 && label[0] == '_' && label[1] == '_'))
            return 0;
        if (p[0] != '=' || p[1] != '"')
            return 0;
        p += 2;
        while (value_char(*p))
            p++;
        if (*p++ != '"')
            return 0;
        if (*p == '}')
            return p[1] == '\0';
        if (*p++ != ',')
            return 0;
    }
}

int stats_metric_claim(stats_t *s, int listener, const char *name, const char *help, int kind)
{
    if (!stats_metric_name_ok(name) || listener < 0 || listener >= STATS_LISTENERS)
        return -EINVAL;
    int rc = -ENOSPC, free_slot = -1;
    while (atomic_flag_test_and_set_explicit(&s->metrics_lock, memory_order_acquire)) {
    }
    for (int i = 0; i < STATS_METRICS; i++) {
        stats_metric_t *m = &s->metrics[i];
        if (!atomic_load(&m->in_use)) {
            if (free_slot < 0)
                free_slot = i;
            continue;
        }
        if (m->listener == listener && strcmp(m->name, name) == 0) {
            rc = m->kind == kind ? i : -EINVAL;
            goto out;
        }
    }
    if (free_slot >= 0) {
        stats_metric_t *m = &s->metrics[free_slot];
        m->listener = listener;
        m->kind = kind;
        snprintf(m->name, sizeof m->name, "%s", name);
        snprintf(m->help, sizeof m->help, "%s", help ? help : "");
        atomic_store(&m->value, 0);
        atomic_store(&m->in_use, 1);
        rc = free_slot;
    } else {
        atomic_fetch_add(&s->metrics_full, 1);
    }
out:
    atomic_flag_clear_explicit(&s->metrics_lock, memory_order_release);
    return rc;
}
