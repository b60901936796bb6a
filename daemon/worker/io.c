/*
 * The worker's edge-triggered socket set (see io.h).
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include "worker/io.h"

#define IO_BATCH 128     /* events taken per epoll_wait */
#define IO_POST_ROUNDS 4 /* rounds of posted callbacks per dispatch before yielding */

static void on_poll(uv_poll_t *p, int status, int events);
static void on_idle(uv_idle_t *h);

static int loop_init(io_loop_t *il, uv_loop_t *loop)
{
    if (il->init)
        return 0;
    if (!il->idle_init) {
        /* First, and whatever fails after: a socket that cannot be registered is still
         * closed through a post. */
        il->loop = loop;
        uv_idle_init(loop, &il->idle);
        il->idle.data = il;
        uv_unref((uv_handle_t *)&il->idle); /* ref'd only while posts wait; see io_post */
        il->idle_init = 1;
    }
    il->ep = epoll_create1(EPOLL_CLOEXEC);
    if (il->ep < 0)
        return -errno;
    int rc = uv_poll_init(loop, &il->poll, il->ep);
    if (rc == 0) {
        il->poll.data = il;
        rc = uv_poll_start(&il->poll, UV_READABLE, on_poll);
        if (rc)
            uv_close((uv_handle_t *)&il->poll, NULL);
    }
    if (rc) {
        close(il->ep);
        il->ep = -1;
        return rc;
    }
    /* The set keeps the loop alive only while it holds sockets. */
    uv_unref((uv_handle_t *)&il->poll);
    il->init = 1;
    return 0;
}

static void poll_ref(io_loop_t *il)
{
    int want = il->nused > 0;
    if (want && !il->poll_ref)
        uv_ref((uv_handle_t *)&il->poll);
    else if (!want && il->poll_ref)
        uv_unref((uv_handle_t *)&il->poll);
    il->poll_ref = want ? 1 : 0;
}

static int slot_take(io_loop_t *il, uint32_t *out)
{
    if (il->nfree == 0) {
        uint32_t n = il->nslots ? il->nslots * 2 : 64;
        io_slot_t *s = realloc(il->slots, n * sizeof *s);
        if (s == NULL)
            return -ENOMEM;
        il->slots = s;
        uint32_t *f = realloc(il->free, n * sizeof *f);
        if (f == NULL)
            return -ENOMEM;
        il->free = f;
        for (uint32_t i = n; i > il->nslots; i--) {
            s[i - 1].io = NULL;
            s[i - 1].gen = 0;
            f[il->nfree++] = i - 1;
        }
        il->nslots = n;
    }
    *out = il->free[--il->nfree];
    return 0;
}

int io_start(io_loop_t *il, uv_loop_t *loop, io_t *io, int fd, io_cb cb)
{
    io->fd = fd;
    io->cb = cb;
    io->slot = 0;
    int rc = loop_init(il, loop);
    if (rc)
        return rc;
    uint32_t idx;
    if ((rc = slot_take(il, &idx)))
        return rc;
    io_slot_t *s = &il->slots[idx];
    s->gen++;
    struct epoll_event ev;
    memset(&ev, 0, sizeof ev);
    ev.events = EPOLLIN | EPOLLPRI | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.u64 = (uint64_t)s->gen << 32 | idx;
    if (epoll_ctl(il->ep, EPOLL_CTL_ADD, fd, &ev) < 0) {
        rc = -errno;
        il->free[il->nfree++] = idx;
        return rc;
    }
    s->io = io;
    io->slot = idx + 1;
    il->nused++;
    poll_ref(il);
    return 0;
}

static void unpost(io_loop_t *il, io_t *io)
{
    if (!io->posted)
        return;
    if (io->rprev)
        io->rprev->rnext = io->rnext;
    else
        il->post_head = io->rnext;
    if (io->rnext)
        io->rnext->rprev = io->rprev;
    else
        il->post_tail = io->rprev;
    io->rprev = io->rnext = NULL;
    io->posted = 0;
}

void io_stop(io_loop_t *il, io_t *io)
{
    unpost(il, io);
    if (io->slot == 0)
        return;
    uint32_t idx = io->slot - 1;
    il->slots[idx].io = NULL;
    il->slots[idx].gen++; /* events already queued for it are dropped */
    il->free[il->nfree++] = idx;
    il->nused--;
    io->slot = 0;
    poll_ref(il);
}

void io_post(io_loop_t *il, io_t *io)
{
    if (io->posted || !il->idle_init)
        return;
    io->posted = 1;
    io->rnext = NULL;
    io->rprev = il->post_tail;
    if (il->post_tail)
        il->post_tail->rnext = io;
    else
        il->post_head = io;
    il->post_tail = io;
    if (!il->dispatching && !il->idle_on) {
        uv_idle_start(&il->idle, on_idle);
        uv_ref((uv_handle_t *)&il->idle);
        il->idle_on = 1;
    }
}

/* Posted callbacks, in rounds: what a callback posts again waits for the next round, and
 * after IO_POST_ROUNDS the rest waits for the loop's next turn, so sockets that always have
 * more (a bounded reader) cannot keep the others from being polled. */
static void run_posted(io_loop_t *il)
{
    for (int round = 0; round < IO_POST_ROUNDS && il->post_head; round++) {
        size_t n = 0;
        for (io_t *io = il->post_head; io; io = io->rnext)
            n++;
        while (n-- > 0 && il->post_head) {
            io_t *io = il->post_head;
            unpost(il, io);
            io->cb(io, IO_POSTED);
        }
    }
    int want = il->post_head != NULL;
    if (want && !il->idle_on) {
        uv_idle_start(&il->idle, on_idle);
        uv_ref((uv_handle_t *)&il->idle);
        il->idle_on = 1;
    } else if (!want && il->idle_on) {
        uv_idle_stop(&il->idle);
        uv_unref((uv_handle_t *)&il->idle);
        il->idle_on = 0;
    }
}

static unsigned map_events(uint32_t e)
{
    unsigned r = 0;
    if (e & EPOLLIN)
        r |= IO_IN;
    if (e & EPOLLOUT)
        r |= IO_OUT;
    if (e & (EPOLLRDHUP | EPOLLHUP))
        r |= IO_HUP;
    if (e & EPOLLERR)
        r |= IO_ERR;
    if (e & EPOLLPRI)
        r |= IO_PRI;
    return r;
}

static void on_poll(uv_poll_t *p, int status, int events)
{
    io_loop_t *il = p->data;
    struct epoll_event ev[IO_BATCH];
    (void)status;
    (void)events;
    int n;
    do
        n = epoll_wait(il->ep, ev, IO_BATCH, 0);
    while (n < 0 && errno == EINTR);
    il->dispatching = 1;
    for (int i = 0; i < n; i++) {
        uint32_t idx = (uint32_t)ev[i].data.u64, gen = (uint32_t)(ev[i].data.u64 >> 32);
        if (idx >= il->nslots || il->slots[idx].gen != gen || il->slots[idx].io == NULL)
            continue; /* closed since, earlier in this batch or before */
        io_t *io = il->slots[idx].io;
        io->cb(io, map_events(ev[i].events));
    }
    run_posted(il);
    il->dispatching = 0;
}

static void on_idle(uv_idle_t *h)
{
    io_loop_t *il = h->data;
    il->dispatching = 1;
    run_posted(il);
    il->dispatching = 0;
}

static void on_closed_noop(uv_handle_t *h)
{
    (void)h;
}

void io_loop_close(io_loop_t *il)
{
    if (il->idle_init && !uv_is_closing((uv_handle_t *)&il->idle))
        uv_close((uv_handle_t *)&il->idle, on_closed_noop);
    il->idle_init = 0;
    if (!il->init)
        return;
    if (!uv_is_closing((uv_handle_t *)&il->poll))
        uv_close((uv_handle_t *)&il->poll, on_closed_noop);
    close(il->ep);
    il->ep = -1;
    free(il->slots);
    free(il->free);
    il->slots = NULL;
    il->free = NULL;
    il->nslots = il->nfree = il->nused = 0;
    il->init = 0;
}
