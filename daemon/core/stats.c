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
    if (slot >= 0 && slot < STATS_LISTENERS)
        s->listeners[slot].in_use = 0;
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
