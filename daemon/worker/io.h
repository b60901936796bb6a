/*
 * berth's own socket readiness, for the connection core's sockets (conn.c): one epoll set per
 * worker, each socket added once, edge-triggered, for everything it will ever be watched for
 * (input, output, hang-up), and never modified or removed: closing the socket takes it out.
 * The set's own descriptor sits in the libuv loop as one uv_poll, so libuv still runs
 * everything else (listeners, timers, the pool, the control channel).
 *
 * Why not libuv's streams: each one costs a FIONBIO ioctl on a socket accept4 already made
 * non-blocking, a getsockopt(SO_ERROR) after every successful connect, an EPOLL_CTL_MOD
 * whenever what it waits for changes, and an EPOLL_CTL_DEL at every close (issue 13).
 *
 * A registration is named in epoll by its slot and the slot's generation, never by a pointer:
 * an event for a socket closed earlier in the same batch, or for a descriptor someone dup()ed,
 * finds a newer generation and is dropped.
 *
 * Posting: io_post() asks for the callback (with IO_POSTED) soon, within this dispatch when
 * called from one, else at the loop's next turn. The connection core uses it to emulate
 * level-triggered input for code that reads in bounded steps, and to finish a close
 * asynchronously, as uv_close did.
 */
#ifndef BERTH_IO_H
#define BERTH_IO_H

#include <stdint.h>
#include <uv.h>

#define IO_IN 1u
#define IO_OUT 2u
#define IO_HUP 4u /* the peer's EOF (EPOLLRDHUP) or a hang-up */
#define IO_ERR 8u
#define IO_POSTED 16u
#define IO_PRI 32u /* TCP urgent data arrived */

typedef struct io io_t;
typedef void (*io_cb)(io_t *io, unsigned events);

struct io {
    int fd;
    uint32_t slot; /* index + 1 in the loop's table; 0: not registered */
    io_cb cb;
    io_t *rprev, *rnext; /* the posted list */
    unsigned posted : 1;
};

typedef struct io_slot {
    io_t *io;
    uint32_t gen;
} io_slot_t;

typedef struct io_loop {
    uv_loop_t *loop;
    int ep;
    uv_poll_t poll;
    uv_idle_t idle;
    io_slot_t *slots;
    uint32_t nslots, nused;
    uint32_t *free; /* indexes of free slots */
    uint32_t nfree;
    io_t *post_head, *post_tail;
    unsigned init : 1, idle_init : 1, dispatching : 1, idle_on : 1, poll_ref : 1;
} io_loop_t;

/* Register fd (non-blocking) with il, created on first use over `loop`. 0 or -errno. */
int io_start(io_loop_t *il, uv_loop_t *loop, io_t *io, int fd, io_cb cb);
/* io_start sets io's fd and callback even when it fails, so a failed socket can still be
 * posted (and closed from its callback). */
/* Forget io's registration and any posting; the caller closes the fd. */
void io_stop(io_loop_t *il, io_t *io);
/* Call io's callback with IO_POSTED soon (once, however often posted before it runs). */
void io_post(io_loop_t *il, io_t *io);
/* The worker ends: close the set and its handles (uv_close; the loop runs them). */
void io_loop_close(io_loop_t *il);

#endif
