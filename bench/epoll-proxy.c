/*
 * epoll-proxy: the floor of socks5-bench. The least a SOCKS5 CONNECT proxy can do with epoll:
 * one thread, no authentication, no limits, no timers, no logging, no name resolution, and
 * each socket registered once, edge-triggered, for everything it will ever be watched for
 * (so no epoll_ctl but the two ADDs; close() takes a socket out of epoll).
 *
 * It does what the protocol asks and no less: the greeting's methods are read, the CONNECT
 * reply carries the outbound socket's real address (getsockname), bytes the client sent
 * after its request are passed on, each half-close is passed on, and a write the peer cannot
 * take is kept and finished on EPOLLOUT. A read shorter than the buffer is taken as "drained"
 * (edge-triggered: any later byte is a new edge), so there is no read that ends in EAGAIN.
 * Bytes move with read/write through a 64 KiB buffer per direction.
 *
 *   epoll-proxy ADDR:PORT     (127.0.0.1:1080 or [::1]:1080; prints "ready" when listening)
 *
 * Loopback benchmarking only. Exit: 100 usage, 111 system failure; runs until killed.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#define EXIT_USAGE 100
#define EXIT_SYSTEM 111
#define BUF 65536

enum { GREETING, REQUEST, CONNECTING, RELAY, DEAD };

typedef struct sess sess_t;

typedef struct side {
    sess_t *s;
    int fd;
    int eof;         /* read 0 from this side */
    int rdhup;       /* its FIN has arrived: read on to the 0 */
    int shut;        /* passed our EOF on to this side */
    size_t off, len; /* bytes for this side, not yet written (in buf) */
    char buf[BUF];
} side_t;

struct sess {
    int state;
    side_t c, o;  /* c.buf: bytes for the client; o.buf: bytes for the outbound side */
    size_t inlen; /* handshake bytes read from the client (in o.buf) */
    sess_t *next_dead;
};

static int ep;
static sess_t *dead; /* ended in this batch of events: freed after it, as others may name them */

static void sess_end(sess_t *s)
{
    close(s->c.fd);
    if (s->o.fd >= 0)
        close(s->o.fd);
    s->state = DEAD;
    s->next_dead = dead;
    dead = s;
}

/* Write what `to` has pending. 0: all out; 1: the socket is full; -1: error. */
static int flush(side_t *to)
{
    while (to->len > 0) {
        ssize_t n = send(to->fd, to->buf + to->off, to->len, MSG_NOSIGNAL);
        if (n < 0)
            return errno == EAGAIN ? 1 : -1;
        to->off += (size_t)n;
        to->len -= (size_t)n;
    }
    to->off = 0;
    return 0;
}

/* Move from `from` to `to` until `from` is drained or `to` is full. -1 on error. */
static int pump(side_t *from, side_t *to)
{
    int rc = flush(to);
    if (rc)
        return rc < 0 ? -1 : 0;
    while (!from->eof) {
        ssize_t n = read(from->fd, to->buf, BUF);
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0) {
            from->eof = 1;
            break;
        }
        to->len = (size_t)n;
        rc = flush(to);
        if (rc)
            return rc < 0 ? -1 : 0;
        if ((size_t)n < BUF && !from->rdhup)
            return 0; /* drained: the next byte (or FIN) is a new edge */
    }
    if (from->eof && to->len == 0 && !to->shut) {
        shutdown(to->fd, SHUT_WR);
        to->shut = 1;
    }
    return 0;
}

static void side_init(side_t *sd, sess_t *s)
{
    sd->s = s;
    sd->eof = sd->rdhup = sd->shut = 0;
    sd->off = sd->len = 0;
}

static int add(side_t *sd)
{
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = sd};
    return epoll_ctl(ep, EPOLL_CTL_ADD, sd->fd, &ev);
}

/* The handshake, from the client's bytes in s->o.buf. -1: end the session. */
static int handshake(sess_t *s)
{
    side_t *c = &s->c, *o = &s->o;
    ssize_t n = read(c->fd, o->buf + s->inlen, BUF - s->inlen);
    if (n == 0 || (n < 0 && errno != EAGAIN))
        return -1;
    if (n > 0)
        s->inlen += (size_t)n;
    unsigned char *b = (unsigned char *)o->buf;
    if (s->state == GREETING) {
        if (s->inlen < 2 || s->inlen < 2u + b[1])
            return 0;
        if (b[0] != 5)
            return -1;
        size_t used = 2u + b[1];
        memmove(b, b + used, s->inlen - used);
        s->inlen -= used;
        if (send(c->fd, "\x05\x00", 2, MSG_NOSIGNAL) != 2)
            return -1;
        s->state = REQUEST;
    }
    if (s->state != REQUEST || s->inlen < 5)
        return 0;
    struct sockaddr_storage ss = {0};
    socklen_t sl;
    size_t need;
    if (b[0] != 5 || b[1] != 1)
        return -1;
    if (b[3] == 1) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        need = 10;
        if (s->inlen < need)
            return 0;
        in->sin_family = AF_INET;
        memcpy(&in->sin_addr, b + 4, 4);
        memcpy(&in->sin_port, b + 8, 2);
        sl = sizeof *in;
    } else if (b[3] == 4) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        need = 22;
        if (s->inlen < need)
            return 0;
        in6->sin6_family = AF_INET6;
        memcpy(&in6->sin6_addr, b + 4, 16);
        memcpy(&in6->sin6_port, b + 20, 2);
        sl = sizeof *in6;
    } else {
        return -1; /* no names: the floor does not resolve */
    }
    /* Early data after the request goes to the destination once connected. */
    memmove(b, b + need, s->inlen - need);
    o->len = s->inlen - need;
    o->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (o->fd < 0)
        return -1;
    if (connect(o->fd, (struct sockaddr *)&ss, sl) < 0 && errno != EINPROGRESS)
        return -1;
    s->state = CONNECTING;
    return add(o);
}

static int connected(sess_t *s, uint32_t events)
{
    unsigned char rep[22] = {5, 0, 0};
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    size_t rl;
    if (events & (EPOLLERR | EPOLLHUP)) {
        send(s->c.fd, "\x05\x05\x00\x01\0\0\0\0\0\0", 10, MSG_NOSIGNAL);
        return -1;
    }
    if (getsockname(s->o.fd, (struct sockaddr *)&ss, &sl) < 0)
        return -1;
    if (ss.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&ss;
        rep[3] = 1;
        memcpy(rep + 4, &in->sin_addr, 4);
        memcpy(rep + 8, &in->sin_port, 2);
        rl = 10;
    } else {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
        rep[3] = 4;
        memcpy(rep + 4, &in6->sin6_addr, 16);
        memcpy(rep + 20, &in6->sin6_port, 2);
        rl = 22;
    }
    if (send(s->c.fd, rep, rl, MSG_NOSIGNAL) != (ssize_t)rl)
        return -1;
    s->state = RELAY;
    return 0;
}

static int relay(sess_t *s)
{
    if (pump(&s->c, &s->o) < 0 || pump(&s->o, &s->c) < 0)
        return -1;
    return s->c.shut && s->o.shut ? -1 : 0; /* both directions done: end */
}

/* One side's event: what it says, and only that (a read that finds nothing is a syscall the
 * floor does not make). Readable: its bytes to the other side. Writable: what waits for it,
 * then what its source held back meanwhile. */
static int relay_side(sess_t *s, side_t *sd, uint32_t events)
{
    side_t *other = sd == &s->c ? &s->o : &s->c;
    if ((events & EPOLLOUT) && sd->len > 0 && pump(other, sd) < 0)
        return -1;
    if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) && pump(sd, other) < 0)
        return -1;
    return s->c.shut && s->o.shut ? -1 : 0;
}

static void on_event(side_t *sd, uint32_t events)
{
    sess_t *s = sd->s;
    int rc = 0;
    if (events & (EPOLLRDHUP | EPOLLHUP))
        sd->rdhup = 1;
    switch (s->state) {
    case DEAD:
        return;
    case GREETING:
    case REQUEST:
        if (sd == &s->c)
            rc = handshake(s);
        break;
    case CONNECTING:
        if (sd == &s->o && (rc = connected(s, events)) == 0)
            rc = relay(s);
        break;
    default:
        rc = relay_side(s, sd, events);
    }
    if (rc < 0)
        sess_end(s);
}

static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    size_t hl = colon ? (size_t)(colon - text) : 0;
    if (!colon || hl >= sizeof host)
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof *ss);
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        host[hl - 1] = '\0';
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)atoi(colon + 1));
        *len = sizeof *s6;
        return inet_pton(AF_INET6, host + 1, &s6->sin6_addr) == 1 ? 0 : -1;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)atoi(colon + 1));
    *len = sizeof *s4;
    return inet_pton(AF_INET, host, &s4->sin_addr) == 1 ? 0 : -1;
}

int main(int argc, char **argv)
{
    struct sockaddr_storage ss;
    socklen_t sl;
    int one = 1, lfd;
    struct epoll_event ev = {.events = EPOLLIN}, evs[256];

    signal(SIGPIPE, SIG_IGN);
    if (argc != 2 || parse_addr(argv[1], &ss, &sl) < 0) {
        fprintf(stderr, "usage: epoll-proxy ADDR:PORT\n");
        return EXIT_USAGE;
    }
    lfd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    ep = epoll_create1(EPOLL_CLOEXEC);
    if (lfd < 0 || ep < 0)
        return EXIT_SYSTEM;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    /* Accepted sockets inherit it: no per-session setsockopt, as for berthd's listeners. */
    setsockopt(lfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (bind(lfd, (struct sockaddr *)&ss, sl) < 0 || listen(lfd, 4096) < 0) {
        perror("epoll-proxy");
        return EXIT_SYSTEM;
    }
    ev.data.ptr = NULL;
    if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev) < 0)
        return EXIT_SYSTEM;
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        int n = epoll_wait(ep, evs, 256, -1);
        if (n < 0 && errno != EINTR)
            return EXIT_SYSTEM;
        for (int i = 0; i < n; i++) {
            if (evs[i].data.ptr) {
                on_event(evs[i].data.ptr, evs[i].events);
                continue;
            }
            /* Level-triggered: one accept per wakeup, none that ends in EAGAIN. */
            int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
            if (fd < 0)
                continue;
            /* Not calloc: zeroing two 64 KiB buffers per session is no part of the floor. */
            sess_t *s = malloc(sizeof *s);
            if (s == NULL) {
                close(fd);
                continue;
            }
            s->state = GREETING;
            s->inlen = 0;
            s->next_dead = NULL;
            side_init(&s->c, s);
            side_init(&s->o, s);
            s->c.fd = fd;
            s->o.fd = -1;
            if (add(&s->c) < 0)
                sess_end(s);
        }
        while (dead) {
            sess_t *s = dead;
            dead = s->next_dead;
            free(s);
        }
    }
}
