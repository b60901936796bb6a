/*
 * loadgen: berth's load generator for stream servers (TCP or Unix stream).
 *
 * Modes (each connection is a small state machine on an epoll loop; -t spreads the
 * connections over threads, each with its own epoll instance):
 *   pingpong  M connections each send an S-byte message and wait for it to come back
 *             (or keep -p messages in flight), for -d seconds or -n messages.
 *   connect   M slots each loop: connect, send S bytes, read them back, half-close, wait for
 *             the server's EOF, close. Reports connections per second.
 *   hold      open M connections, echo one message on each, print a "ready" line, then hold
 *             them idle until -d elapses or SIGTERM/SIGINT; any close by the server counts.
 *   upload    M connections at once each send one file (-f) in the seeds' upload protocol
 *             (4-byte little-endian header length, JSON header {"cmd": "put", ...}, body),
 *             one blocking thread per connection, and read the reply frame (or, with
 *             --no-reply, half-close and wait for the server's close). Reports MB/s over all
 *             of them and the stall: last byte sent to reply (see upload_main()).
 *
 * Every echoed byte is checked. A failed connection (refused, reset, early EOF, wrong bytes,
 * no reply within -T) is counted by kind and replaced after a short pause, so the run goes on
 * and stays bounded in time. The last line on stdout is the result (JSON with --json).
 * Exit: 0 clean, 1 failures counted or nothing measured, 100 usage, 111 system failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAILURES 1
#define EXIT_USAGE 100
#define EXIT_SYSTEM 111

#define NS_PER_S 1000000000ULL
#define NS_PER_MS 1000000ULL
#define SCAN_INTERVAL_NS (10 * NS_PER_MS) /* how often timeouts and pauses are checked */
#define RETRY_PAUSE_NS (10 * NS_PER_MS)   /* after a failure, before the slot reconnects */
#define RBUF_SIZE 65536

/* ---- latency histogram: log-linear buckets, 32 per power of two (about 3% error) ---- */

#define HIST_SUB_BITS 5
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_MAX_BIT 40 /* values are clamped below 2^40 ns (about 18 minutes) */
#define HIST_BUCKETS (HIST_SUB + (HIST_MAX_BIT - HIST_SUB_BITS) * HIST_SUB)

typedef struct hist {
    uint64_t count[HIST_BUCKETS];
    uint64_t n, sum, max;
} hist_t;

static unsigned hist_index(uint64_t v)
{
    if (v >= (1ULL << HIST_MAX_BIT))
        v = (1ULL << HIST_MAX_BIT) - 1;
    if (v < HIST_SUB)
        return (unsigned)v;
    unsigned msb = 63u - (unsigned)__builtin_clzll(v);
    unsigned shift = msb - HIST_SUB_BITS;
    return HIST_SUB + shift * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

/* The middle of a bucket's range. */
static uint64_t hist_value(unsigned idx)
{
    if (idx < HIST_SUB)
        return idx;
    unsigned shift = (idx - HIST_SUB) / HIST_SUB;
    uint64_t base = (uint64_t)(HIST_SUB + (idx - HIST_SUB) % HIST_SUB) << shift;
    return base + ((1ULL << shift) >> 1);
}

static void hist_add(hist_t *h, uint64_t v)
{
    h->count[hist_index(v)]++;
    h->n++;
    h->sum += v;
    if (v > h->max)
        h->max = v;
}

static void hist_merge(hist_t *into, const hist_t *from)
{
    for (unsigned i = 0; i < HIST_BUCKETS; i++)
        into->count[i] += from->count[i];
    into->n += from->n;
    into->sum += from->sum;
    if (from->max > into->max)
        into->max = from->max;
}

static uint64_t hist_quantile(const hist_t *h, double q)
{
    if (h->n == 0)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->n + 0.5);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < HIST_BUCKETS; i++) {
        seen += h->count[i];
        if (seen >= rank) {
            uint64_t v = hist_value(i);
            return v > h->max ? h->max : v;
        }
    }
    return h->max;
}

/* ---- options and shared state ---- */

typedef enum lg_mode { MODE_PINGPONG, MODE_CONNECT, MODE_HOLD, MODE_UPLOAD } lg_mode_t;

static const char *const mode_names[] = {"pingpong", "connect", "hold", "upload"};

typedef struct options {
    lg_mode_t mode;
    unsigned conns;
    size_t size;
    unsigned depth;
    double duration;
    double warmup;
    uint64_t count; /* 0 = no limit */
    unsigned threads;
    double timeout;
    const char *label;
    const char *target;
    int json;
    int src_spread; /* -1 = auto */
    int proxy;      /* 0, or 1/2: send a PROXY protocol v1/v2 header first (-P) */
    /* upload mode */
    const char *file;   /* the file each connection sends */
    const char *sha256; /* its digest, hex: sent in the header, checked in the reply */
    const char *name;   /* file_name; connection i sends NAME.i when there are several */
    int no_reply;       /* the server sends no reply: half-close and wait for its close */
    int port_step;      /* connection i goes to port + i (one socat per connection) */
} options_t;

static options_t opt = {
    .mode = MODE_PINGPONG,
    .conns = 50,
    .size = 64,
    .depth = 1,
    .duration = 5.0,
    .warmup = 1.0,
    .threads = 1,
    .timeout = 5.0,
    .label = "",
    .src_spread = -1,
};

static struct sockaddr_storage target_addr;
static socklen_t target_len;

/* The payload: a pattern repeated so a whole burst of messages is one contiguous slice. */
static unsigned char *pattern;
static size_t pattern_len; /* a multiple of opt.size */

static atomic_int stop_flag;
static _Atomic uint64_t measure_start = UINT64_MAX; /* ns; nothing counts before */
static _Atomic uint64_t measure_end = UINT64_MAX;
static _Atomic uint64_t measured_total; /* for -n */
static uint64_t timeout_ns;
static pthread_barrier_t ready_barrier;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

static void on_signal(int sig)
{
    (void)sig;
    atomic_store(&stop_flag, 1);
}

/* ---- per-connection state machine ---- */

typedef enum err_kind {
    ERR_CONNECT,  /* refused, unreachable, any connect() failure */
    ERR_RESET,    /* read/write error after connecting (ECONNRESET, EPIPE, ...) */
    ERR_EOF,      /* the server closed while a reply was owed, or closed an idle connection */
    ERR_MISMATCH, /* echoed bytes differ from what was sent, or more came back than was sent */
    ERR_TIMEOUT,  /* no connect or reply within -T */
    ERR_KINDS
} err_kind_t;

static const char *const err_names[] = {"connect", "reset", "eof", "mismatch", "timeout"};

typedef enum conn_state {
    ST_IDLE_SLOT, /* no socket: waiting for `wake` to (re)connect */
    ST_CONNECTING,
    ST_ACTIVE,   /* messages in flight */
    ST_WAIT_EOF, /* connect mode: half-closed, waiting for the server's EOF */
    ST_HELD,     /* hold mode: echoed once, now idle */
} conn_state_t;

struct thread;

typedef struct conn {
    struct thread *t;
    int fd;
    conn_state_t state;
    uint32_t events;    /* what epoll watches now */
    uint64_t tx_queued; /* bytes of the stream handed to us to send (whole messages) */
    uint64_t tx_done;   /* bytes written */
    uint64_t rx_done;   /* bytes read back */
    uint64_t *sent_at;  /* ring of send times, one per message in flight */
    unsigned ring_head, ring_len;
    uint64_t started;  /* connect start (connect mode latency) */
    uint64_t deadline; /* 0 = none */
    uint64_t wake;     /* ST_IDLE_SLOT: when to reconnect */
    int ever_ready;    /* reached ST_ACTIVE at least once (hold: echoed once) */
} conn_t;

typedef struct thread {
    unsigned id;
    pthread_t tid;
    int epfd;
    conn_t *conns;
    unsigned nconns;
    unsigned nready; /* connections that reached the ready point once */
    hist_t hist;
    uint64_t messages; /* measured: messages (pingpong) or connections (connect) */
    uint64_t errors[ERR_KINDS];
    uint64_t next_scan;
    unsigned src_next; /* round-robin over the --src-spread source addresses */
    unsigned char rbuf[RBUF_SIZE];
} thread_t;

static int in_window(uint64_t t)
{
    return t >= atomic_load_explicit(&measure_start, memory_order_relaxed) &&
           t < atomic_load_explicit(&measure_end, memory_order_relaxed);
}

static void set_events(conn_t *c, uint32_t ev)
{
    if (c->events == ev)
        return;
    struct epoll_event e = {.events = ev, .data.ptr = c};
    if (epoll_ctl(c->t->epfd, EPOLL_CTL_MOD, c->fd, &e) == 0)
        c->events = ev;
}

static void conn_close(conn_t *c)
{
    if (c->fd >= 0) {
        close(c->fd); /* also drops it from the epoll set */
        c->fd = -1;
    }
    c->state = ST_IDLE_SLOT;
    c->deadline = 0;
    c->tx_queued = c->tx_done = c->rx_done = 0;
    c->ring_head = c->ring_len = 0;
}

static void conn_fail(conn_t *c, err_kind_t kind, uint64_t now)
{
    c->t->errors[kind]++;
    conn_close(c);
    c->wake = now + RETRY_PAUSE_NS;
}

static void conn_start(conn_t *c, uint64_t now)
{
    int fd = socket(target_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        c->t->errors[ERR_CONNECT]++;
        c->wake = now + RETRY_PAUSE_NS;
        return;
    }
    if (target_addr.ss_family != AF_UNIX) {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    if (opt.src_spread > 1) {
        /*
         * Thousands of connections a second leave the client's side in TIME_WAIT and exhaust
         * one source address's ephemeral ports within seconds; all of 127/8 is local, so each
         * further source address brings a fresh port range. The port is picked at connect().
         */
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
        struct sockaddr_in src = {.sin_family = AF_INET};
        src.sin_addr.s_addr = htonl(0x7f000001u + c->t->src_next++ % (unsigned)opt.src_spread);
        if (bind(fd, (struct sockaddr *)&src, sizeof src) < 0) {
            close(fd);
            c->t->errors[ERR_CONNECT]++;
            c->wake = now + RETRY_PAUSE_NS;
            return;
        }
    }
    c->fd = fd;
    c->started = now;
    c->deadline = now + timeout_ns;
    c->state = ST_CONNECTING;
    struct epoll_event e = {.events = EPOLLOUT, .data.ptr = c};
    if (epoll_ctl(c->t->epfd, EPOLL_CTL_ADD, fd, &e) < 0) {
        conn_fail(c, ERR_CONNECT, now);
        return;
    }
    c->events = EPOLLOUT;
    if (connect(fd, (struct sockaddr *)&target_addr, target_len) == 0 || errno == EINPROGRESS)
        return; /* EPOLLOUT tells when it is done */
    if (errno == EAGAIN) {
        /* A Unix listener with a full backlog: not a failure, try again shortly. */
        conn_close(c);
        c->wake = now + NS_PER_MS;
        return;
    }
    conn_fail(c, ERR_CONNECT, now);
}

/* Queue one more message on the connection (its bytes go out on the next flush). */
static void conn_queue(conn_t *c, uint64_t now)
{
    c->sent_at[(c->ring_head + c->ring_len) % opt.depth] = now;
    c->ring_len++;
    c->tx_queued += opt.size;
    if (c->deadline == 0)
        c->deadline = now + timeout_ns;
}

/* Write what is queued; returns -1 when the connection failed (and was closed). */
static int conn_flush(conn_t *c, uint64_t now)
{
    while (c->tx_done < c->tx_queued) {
        size_t off = (size_t)(c->tx_done % pattern_len);
        size_t n = pattern_len - off;
        if (n > c->tx_queued - c->tx_done)
            n = (size_t)(c->tx_queued - c->tx_done);
        ssize_t w = send(c->fd, pattern + off, n, MSG_NOSIGNAL);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                set_events(c, EPOLLIN | EPOLLOUT);
                return 0;
            }
            conn_fail(c, ERR_RESET, now);
            return -1;
        }
        c->tx_done += (uint64_t)w;
    }
    set_events(c, EPOLLIN);
    return 0;
}

/* -P: the header a balancer sends, naming this socket's own address as the client. It is
 * the first thing written on a fresh socket, so the send buffer takes it whole. */
static int send_proxy_header(conn_t *c)
{
    struct sockaddr_storage src;
    socklen_t slen = sizeof src;
    unsigned char hdr[64];
    size_t n;
    if (getsockname(c->fd, (struct sockaddr *)&src, &slen) < 0)
        return -1;
    const struct sockaddr_in *s = (const void *)&src, *d = (const void *)&target_addr;
    int inet = src.ss_family == AF_INET && target_addr.ss_family == AF_INET;
    if (opt.proxy == 1) {
        char a[INET_ADDRSTRLEN], b[INET_ADDRSTRLEN];
        if (inet && inet_ntop(AF_INET, &s->sin_addr, a, sizeof a) &&
            inet_ntop(AF_INET, &d->sin_addr, b, sizeof b))
            n = (size_t)snprintf((char *)hdr, sizeof hdr, "PROXY TCP4 %s %s %u %u\r\n", a, b,
                                 ntohs(s->sin_port), ntohs(d->sin_port));
        else
            n = (size_t)snprintf((char *)hdr, sizeof hdr, "PROXY UNKNOWN\r\n");
    } else {
        static const unsigned char sig[12] = {0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D,
                                              0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A};
        memcpy(hdr, sig, 12);
        hdr[12] = 0x21;               /* v2, PROXY */
        hdr[13] = inet ? 0x11 : 0x00; /* TCP over IPv4, or UNSPEC */
        hdr[14] = 0;
        hdr[15] = inet ? 12 : 0;
        n = 16;
        if (inet) {
            memcpy(hdr + 16, &s->sin_addr, 4);
            memcpy(hdr + 20, &d->sin_addr, 4);
            memcpy(hdr + 24, &s->sin_port, 2);
            memcpy(hdr + 26, &d->sin_port, 2);
            n += 12;
        }
    }
    return send(c->fd, hdr, n, MSG_NOSIGNAL) == (ssize_t)n ? 0 : -1;
}

static void conn_connected(conn_t *c, uint64_t now)
{
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err != 0) {
        conn_fail(c, ERR_CONNECT, now);
        return;
    }
    c->state = ST_ACTIVE;
    c->deadline = 0;
    if (opt.proxy && send_proxy_header(c) < 0) {
        conn_fail(c, ERR_RESET, now);
        return;
    }
    if (!c->ever_ready && opt.mode == MODE_PINGPONG) {
        c->ever_ready = 1;
        c->t->nready++;
    }
    unsigned burst = opt.mode == MODE_PINGPONG ? opt.depth : 1;
    for (unsigned i = 0; i < burst; i++)
        conn_queue(c, now);
    conn_flush(c, now);
}

/* A whole message came back. */
static void message_done(conn_t *c, uint64_t now)
{
    thread_t *t = c->t;
    uint64_t sent = c->sent_at[c->ring_head];
    c->ring_head = (c->ring_head + 1) % opt.depth;
    c->ring_len--;
    c->deadline = c->ring_len ? now + timeout_ns : 0;

    switch (opt.mode) {
    case MODE_PINGPONG:
        if (in_window(now)) {
            hist_add(&t->hist, now - sent);
            t->messages++;
            if (opt.count)
                atomic_fetch_add_explicit(&measured_total, 1, memory_order_relaxed);
        }
        conn_queue(c, now);
        break;
    case MODE_CONNECT:
        /* Half-close: a correct echo server finishes and closes its side too. */
        shutdown(c->fd, SHUT_WR);
        c->state = ST_WAIT_EOF;
        c->deadline = now + timeout_ns;
        break;
    case MODE_HOLD:
        c->state = ST_HELD;
        if (!c->ever_ready) {
            c->ever_ready = 1;
            t->nready++;
        }
        set_events(c, EPOLLIN | EPOLLRDHUP);
        break;
    case MODE_UPLOAD: /* upload_main() runs on its own threads, never here */
        break;
    }
}

static void conn_readable(conn_t *c, uint64_t now)
{
    thread_t *t = c->t;
    for (;;) {
        ssize_t r = recv(c->fd, t->rbuf, sizeof t->rbuf, 0);
        if (r < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                break;
            conn_fail(c, ERR_RESET, now);
            return;
        }
        if (r == 0) {
            if (c->state == ST_WAIT_EOF) {
                if (in_window(now)) {
                    hist_add(&t->hist, now - c->started);
                    t->messages++;
                    if (opt.count)
                        atomic_fetch_add_explicit(&measured_total, 1, memory_order_relaxed);
                }
                conn_close(c);
                conn_start(c, now); /* the slot's next connection, right away */
                return;
            }
            conn_fail(c, ERR_EOF, now);
            return;
        }
        size_t n = (size_t)r;
        if (c->state != ST_ACTIVE || c->rx_done + n > c->tx_done) {
            conn_fail(c, ERR_MISMATCH, now); /* bytes nobody asked for */
            return;
        }
        /* Check the bytes against the pattern and complete the messages they finish. */
        size_t pos = 0;
        while (pos < n) {
            size_t off = (size_t)(c->rx_done % pattern_len);
            size_t chunk = pattern_len - off;
            size_t to_msg_end = opt.size - (size_t)(c->rx_done % opt.size);
            if (chunk > to_msg_end)
                chunk = to_msg_end;
            if (chunk > n - pos)
                chunk = n - pos;
            if (memcmp(t->rbuf + pos, pattern + off, chunk) != 0) {
                conn_fail(c, ERR_MISMATCH, now);
                return;
            }
            pos += chunk;
            c->rx_done += chunk;
            if (c->rx_done % opt.size == 0) {
                message_done(c, now);
                if (c->state != ST_ACTIVE)
                    break;
            }
        }
        if (c->state == ST_ACTIVE && conn_flush(c, now) < 0)
            return;
        if (c->state != ST_ACTIVE)
            return; /* WAIT_EOF and HELD read again on the next event */
        if ((size_t)r < sizeof t->rbuf)
            break; /* drained: wait for the next event instead of an EAGAIN round trip */
    }
}

static void conn_event(conn_t *c, uint32_t ev, uint64_t now)
{
    switch (c->state) {
    case ST_CONNECTING:
        if (ev & (EPOLLOUT | EPOLLERR | EPOLLHUP))
            conn_connected(c, now);
        break;
    case ST_ACTIVE:
        if ((ev & EPOLLOUT) && conn_flush(c, now) < 0)
            return;
        if (ev & (EPOLLIN | EPOLLERR | EPOLLHUP))
            conn_readable(c, now);
        break;
    case ST_WAIT_EOF:
        conn_readable(c, now);
        break;
    case ST_HELD:
        /* An idle connection should hear nothing: a close, reset or stray byte is a failure. */
        conn_fail(c, (ev & EPOLLERR) ? ERR_RESET : ERR_EOF, now);
        break;
    case ST_IDLE_SLOT:
        break;
    }
}

/* Timeouts and reconnects. */
static void thread_scan(thread_t *t, uint64_t now)
{
    for (unsigned i = 0; i < t->nconns; i++) {
        conn_t *c = &t->conns[i];
        if (c->state == ST_IDLE_SLOT) {
            if (now >= c->wake && !(opt.mode == MODE_HOLD && c->ever_ready))
                conn_start(c, now);
        } else if (c->deadline && now >= c->deadline) {
            conn_fail(c, c->state == ST_CONNECTING ? ERR_CONNECT : ERR_TIMEOUT, now);
        }
    }
    t->next_scan = now + SCAN_INTERVAL_NS;
}

/* Run the loop until `until` (ns), the stop flag, or (when ready_only) every conn is ready. */
static void thread_loop(thread_t *t, uint64_t until, int ready_only)
{
    struct epoll_event evs[256];
    for (;;) {
        uint64_t now = now_ns();
        if (now >= until || atomic_load_explicit(&stop_flag, memory_order_relaxed))
            return;
        if (ready_only && t->nready == t->nconns)
            return;
        if (opt.count && atomic_load_explicit(&measured_total, memory_order_relaxed) >= opt.count) {
            atomic_store(&stop_flag, 1);
            return;
        }
        if (now >= t->next_scan)
            thread_scan(t, now);
        uint64_t wait = t->next_scan > now ? t->next_scan - now : 0;
        if (until - now < wait)
            wait = until - now;
        int n = epoll_wait(t->epfd, evs, 256, (int)((wait + NS_PER_MS - 1) / NS_PER_MS));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            perror("loadgen: epoll_wait");
            atomic_store(&stop_flag, 1);
            return;
        }
        /* A clock read per event: a batch can take long enough to skew latencies. */
        for (int i = 0; i < n; i++)
            conn_event(evs[i].data.ptr, evs[i].events, now_ns());
    }
}

/*
 * Everyone (the threads, and main in hold mode) meets here after set-up; whoever the barrier
 * picks sets the measuring window, and the second wait publishes it to all.
 */
static void sync_start(void)
{
    if (pthread_barrier_wait(&ready_barrier) == PTHREAD_BARRIER_SERIAL_THREAD) {
        uint64_t now = now_ns();
        uint64_t from = now + (uint64_t)(opt.warmup * (double)NS_PER_S);
        atomic_store(&measure_start, from);
        atomic_store(&measure_end, from + (uint64_t)(opt.duration * (double)NS_PER_S));
    }
    pthread_barrier_wait(&ready_barrier);
}

static void *thread_main(void *arg)
{
    thread_t *t = arg;
    uint64_t start = now_ns();
    for (unsigned i = 0; i < t->nconns; i++)
        conn_start(&t->conns[i], start);
    t->next_scan = start + SCAN_INTERVAL_NS;

    /* Set-up: every connection up (pingpong) or echoed once (hold), bounded by 2 * -T. */
    if (opt.mode != MODE_CONNECT)
        thread_loop(t, start + 2 * timeout_ns, 1);

    sync_start();
    if (opt.mode == MODE_HOLD)
        pthread_barrier_wait(&ready_barrier); /* main prints the ready line in between */
    thread_loop(t, atomic_load(&measure_end), 0);
    return NULL;
}

/* ---- set-up and report ---- */

static void usage(FILE *f)
{
    fprintf(f, "usage: loadgen [options] HOST:PORT | [V6]:PORT | unix:PATH\n"
               "  -m, --mode MODE      pingpong (default) | connect | hold | upload\n"
               "  -c, --conns N        connections, or connect slots (default 50; upload: 1)\n"
               "  -s, --size BYTES     message size (default 64)\n"
               "  -p, --depth N        messages in flight per connection, pingpong (default 1)\n"
               "  -d, --duration SEC   measured time; hold: how long to hold (default 5)\n"
               "  -w, --warmup SEC     run before measuring (default 1)\n"
               "  -n, --count N        stop after N measured messages (or -d, whichever first)\n"
               "  -t, --threads N      threads, each with its own epoll (default 1)\n"
               "  -T, --timeout SEC    connect and reply timeout (default 5)\n"
               "  -S, --src-spread N   bind to 127.0.0.1..127.0.0.N in turn (IPv4 loopback\n"
               "                       targets; default 32 in connect mode, else 1)\n"
               "  -P, --proxy v1|v2    send a PROXY protocol header first, as a balancer does\n"
               "  -l, --label TEXT     label echoed in the result\n"
               "  -j, --json           result as one JSON line\n"
               "  upload mode: -f, --file PATH (required), --sha256 HEX (sent, and checked in the\n"
               "  reply), --name NAME (default bench.bin; NAME.i per connection when -c > 1),\n"
               "  --no-reply (half-close, wait for the server's close), --port-step (connection\n"
               "  i goes to PORT + i)\n"
               "exit: 0 clean, 1 failures or nothing measured, 100 usage, 111 system failure\n");
}

static int parse_double(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || v < 0)
        return -1;
    *out = v;
    return 0;
}

static int parse_u64(const char *s, uint64_t *out, uint64_t min, uint64_t max)
{
    char *end;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (errno || end == s || *end || s[0] == '-' || v < min || v > max)
        return -1;
    *out = v;
    return 0;
}

static int parse_target(const char *s)
{
    memset(&target_addr, 0, sizeof target_addr);
    if (strncmp(s, "unix:", 5) == 0 || s[0] == '/') {
        const char *path = s[0] == '/' ? s : s + 5;
        struct sockaddr_un *un = (struct sockaddr_un *)&target_addr;
        if (strlen(path) >= sizeof un->sun_path)
            return -1;
        un->sun_family = AF_UNIX;
        strcpy(un->sun_path, path);
        target_len = (socklen_t)sizeof *un;
        return 0;
    }
    char host[256];
    const char *port;
    if (s[0] == '[') {
        const char *close = strchr(s, ']');
        if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host)
            return -1;
        memcpy(host, s + 1, (size_t)(close - s - 1));
        host[close - s - 1] = '\0';
        port = close + 2;
    } else {
        const char *colon = strrchr(s, ':');
        if (!colon || (size_t)(colon - s) >= sizeof host)
            return -1;
        memcpy(host, s, (size_t)(colon - s));
        host[colon - s] = '\0';
        port = colon + 1;
    }
    struct addrinfo hints = {.ai_socktype = SOCK_STREAM, .ai_flags = AI_NUMERICSERV};
    struct addrinfo *res;
    int rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        fprintf(stderr, "loadgen: %s: %s\n", s, gai_strerror(rc));
        return -1;
    }
    memcpy(&target_addr, res->ai_addr, res->ai_addrlen);
    target_len = res->ai_addrlen;
    freeaddrinfo(res);
    return 0;
}

static int parse_args(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"mode", required_argument, NULL, 'm'},
        {"conns", required_argument, NULL, 'c'},
        {"size", required_argument, NULL, 's'},
        {"depth", required_argument, NULL, 'p'},
        {"duration", required_argument, NULL, 'd'},
        {"warmup", required_argument, NULL, 'w'},
        {"count", required_argument, NULL, 'n'},
        {"threads", required_argument, NULL, 't'},
        {"timeout", required_argument, NULL, 'T'},
        {"label", required_argument, NULL, 'l'},
        {"src-spread", required_argument, NULL, 'S'},
        {"proxy", required_argument, NULL, 'P'},
        {"json", no_argument, NULL, 'j'},
        {"file", required_argument, NULL, 'f'},
        {"sha256", required_argument, NULL, 'X'},
        {"name", required_argument, NULL, 'N'},
        {"no-reply", no_argument, NULL, 'R'},
        {"port-step", no_argument, NULL, 'Q'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    int ch, conns_given = 0;
    uint64_t v;
    while ((ch = getopt_long(argc, argv, "m:c:s:p:d:w:n:t:T:S:P:l:jhf:", longopts, NULL)) != -1) {
        switch (ch) {
        case 'm':
            if (strcmp(optarg, "pingpong") == 0)
                opt.mode = MODE_PINGPONG;
            else if (strcmp(optarg, "connect") == 0)
                opt.mode = MODE_CONNECT;
            else if (strcmp(optarg, "hold") == 0)
                opt.mode = MODE_HOLD;
            else if (strcmp(optarg, "upload") == 0)
                opt.mode = MODE_UPLOAD;
            else
                return -1;
            break;
        case 'c':
            if (parse_u64(optarg, &v, 1, 1000000) < 0)
                return -1;
            conns_given = 1;
            opt.conns = (unsigned)v;
            break;
        case 's':
            if (parse_u64(optarg, &v, 1, 64u << 20) < 0)
                return -1;
            opt.size = (size_t)v;
            break;
        case 'p':
            if (parse_u64(optarg, &v, 1, 4096) < 0)
                return -1;
            opt.depth = (unsigned)v;
            break;
        case 'd':
            if (parse_double(optarg, &opt.duration) < 0 || opt.duration > 86400)
                return -1;
            break;
        case 'w':
            if (parse_double(optarg, &opt.warmup) < 0 || opt.warmup > 3600)
                return -1;
            break;
        case 'n':
            if (parse_u64(optarg, &opt.count, 1, UINT64_MAX) < 0)
                return -1;
            break;
        case 't':
            if (parse_u64(optarg, &v, 1, 256) < 0)
                return -1;
            opt.threads = (unsigned)v;
            break;
        case 'T':
            if (parse_double(optarg, &opt.timeout) < 0 || opt.timeout < 0.001 || opt.timeout > 3600)
                return -1;
            break;
        case 'S':
            if (parse_u64(optarg, &v, 1, 65534) < 0)
                return -1;
            opt.src_spread = (int)v;
            break;
        case 'P':
            if (strcmp(optarg, "v1") == 0)
                opt.proxy = 1;
            else if (strcmp(optarg, "v2") == 0)
                opt.proxy = 2;
            else
                return -1;
            break;
        case 'l':
            opt.label = optarg;
            break;
        case 'j':
            opt.json = 1;
            break;
        case 'f':
            opt.file = optarg;
            break;
        case 'X':
            if (strlen(optarg) != 64 || strspn(optarg, "0123456789abcdef") != 64)
                return -1;
            opt.sha256 = optarg;
            break;
        case 'N':
            if (strlen(optarg) == 0 || strlen(optarg) > 200 || strpbrk(optarg, "\"\\/"))
                return -1;
            opt.name = optarg;
            break;
        case 'R':
            opt.no_reply = 1;
            break;
        case 'Q':
            opt.port_step = 1;
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            return -1;
        }
    }
    if (optind != argc - 1)
        return -1;
    if ((opt.mode == MODE_UPLOAD) != (opt.file != NULL))
        return -1;
    if (opt.mode == MODE_UPLOAD && !conns_given)
        opt.conns = 1;
    opt.target = argv[optind];
    if (parse_target(opt.target) < 0)
        return -1;
    int loopback4 = target_addr.ss_family == AF_INET &&
                    (ntohl(((struct sockaddr_in *)&target_addr)->sin_addr.s_addr) >> 24) == 127;
    if (opt.src_spread < 0)
        opt.src_spread = opt.mode == MODE_CONNECT && loopback4 ? 32 : 1;
    if (opt.src_spread > 1 && !loopback4) {
        fprintf(stderr, "loadgen: --src-spread needs an IPv4 loopback target\n");
        return -1;
    }
    if (opt.mode != MODE_PINGPONG)
        opt.depth = 1;
    if (opt.mode == MODE_HOLD)
        opt.warmup = 0;
    if (opt.threads > opt.conns)
        opt.threads = opt.conns;
    return 0;
}

/* JSON strings: the label is the only free text. */
static void json_string(FILE *f, const char *s)
{
    fputc('"', f);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            fprintf(f, "\\%c", ch);
        else if (ch < 0x20)
            fprintf(f, "\\u%04x", ch);
        else
            fputc(ch, f);
    }
    fputc('"', f);
}

typedef struct totals {
    hist_t hist;
    uint64_t messages;
    uint64_t errors[ERR_KINDS];
    uint64_t failures;
    unsigned ready;
} totals_t;

static void gather(thread_t *threads, totals_t *tot)
{
    memset(tot, 0, sizeof *tot);
    for (unsigned i = 0; i < opt.threads; i++) {
        hist_merge(&tot->hist, &threads[i].hist);
        tot->messages += threads[i].messages;
        tot->ready += threads[i].nready;
        for (unsigned k = 0; k < ERR_KINDS; k++) {
            tot->errors[k] += threads[i].errors[k];
            tot->failures += threads[i].errors[k];
        }
    }
}

static void report(const totals_t *tot, double secs)
{
    double rate = secs > 0 ? (double)tot->messages / secs : 0;
    double mbs = secs > 0 ? (double)tot->messages * (double)opt.size / secs / 1e6 : 0;
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
                 (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
    const hist_t *h = &tot->hist;
    double mean = h->n ? (double)h->sum / (double)h->n / 1e3 : 0;
    double p50 = (double)hist_quantile(h, 0.50) / 1e3;
    double p99 = (double)hist_quantile(h, 0.99) / 1e3;
    double p999 = (double)hist_quantile(h, 0.999) / 1e3;
    double max = (double)h->max / 1e3;

    if (opt.json) {
        printf("{\"tool\":\"loadgen\",\"label\":");
        json_string(stdout, opt.label);
        printf(",\"mode\":\"%s\",\"target\":", mode_names[opt.mode]);
        json_string(stdout, opt.target);
        printf(",\"conns\":%u,\"size\":%zu,\"depth\":%u,\"threads\":%u,\"connected\":%u,"
               "\"seconds\":%.3f,\"messages\":%llu,\"msg_per_s\":%.1f,\"mb_per_s\":%.3f,"
               "\"lat_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
               "\"max\":%.1f},\"errors\":{",
               opt.conns, opt.size, opt.depth, opt.threads, tot->ready, secs,
               (unsigned long long)tot->messages, rate, mbs, mean, p50, p99, p999, max);
        for (unsigned k = 0; k < ERR_KINDS; k++)
            printf("%s\"%s\":%llu", k ? "," : "", err_names[k], (unsigned long long)tot->errors[k]);
        printf("},\"failures\":%llu,\"cpu_s\":%.3f}\n", (unsigned long long)tot->failures, cpu);
    } else {
        const char *unit = opt.mode == MODE_CONNECT ? "conn" : "msg";
        printf("%s %s: %u conns, %zu-byte messages, depth %u, %u thread(s), %.2f s\n",
               mode_names[opt.mode], opt.target, opt.conns, opt.size, opt.depth, opt.threads, secs);
        printf("  %llu %ss, %.0f %s/s, %.2f MB/s\n", (unsigned long long)tot->messages, unit, rate,
               unit, mbs);
        printf("  latency us: mean %.1f  p50 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n", mean, p50,
               p99, p999, max);
        printf("  failures %llu:", (unsigned long long)tot->failures);
        for (unsigned k = 0; k < ERR_KINDS; k++)
            printf(" %s %llu", err_names[k], (unsigned long long)tot->errors[k]);
        printf("\n  loadgen cpu %.2f s\n", cpu);
    }
    fflush(stdout);
}

static int raise_nofile(rlim_t need)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
        return -1;
    if (rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur >= need ? 0 : -1;
}

/*
 * Hold mode: when stdin is a pipe, its closing also ends the hold, so a runner that dies
 * takes us with it (a terminal or /dev/null is not watched).
 */
static void hold_wait(void)
{
    uint64_t end = atomic_load(&measure_end);
    struct stat st;
    int watch_stdin = fstat(0, &st) == 0 && S_ISFIFO(st.st_mode);
    while (!atomic_load(&stop_flag)) {
        uint64_t now = now_ns();
        if (now >= end)
            break;
        uint64_t left_ms = (end - now) / NS_PER_MS + 1;
        struct pollfd p = {.fd = watch_stdin ? 0 : -1, .events = POLLIN};
        int rc = poll(&p, 1, left_ms > 100 ? 100 : (int)left_ms);
        if (rc > 0 && (p.revents & (POLLIN | POLLHUP))) {
            char buf[256];
            ssize_t r = read(0, buf, sizeof buf);
            if (r == 0)
                break;
            if (r < 0)
                watch_stdin = 0; /* stdin is not something we can watch */
        } else if (rc > 0 && (p.revents & POLLNVAL)) {
            watch_stdin = 0;
        }
    }
    atomic_store(&stop_flag, 1);
}

/* ---- upload mode ---- */

typedef struct upload_conn {
    pthread_t tid;
    unsigned id;
    uint64_t t0, t_last, t_end; /* connect, last body byte handed to the kernel, done */
    int ok;
    char why[160];
} upload_conn_t;

static uint64_t upload_size;
static pthread_barrier_t upload_barrier;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;
    while (len > 0) {
        ssize_t n = read(fd, p, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static void *upload_thread(void *arg)
{
    upload_conn_t *u = arg;
    char hdr[512], name[256];
    int fd = -1, src = open(opt.file, O_RDONLY | O_CLOEXEC);

    if (opt.conns > 1)
        snprintf(name, sizeof name, "%s.%u", opt.name, u->id);
    else
        snprintf(name, sizeof name, "%s", opt.name);
    int hl = snprintf(hdr + 4, sizeof hdr - 4,
                      "{\"cmd\": \"put\", \"file_name\": \"%s\", \"file_size\": %llu%s%s%s%s}",
                      name, (unsigned long long)upload_size, opt.sha256 ? ", \"sha256\": \"" : "",
                      opt.sha256 ? opt.sha256 : "", opt.sha256 ? "\"" : "",
                      opt.no_reply ? "" : ", \"reply\": \"each\"");
    uint32_t le = (uint32_t)hl;
    for (int i = 0; i < 4; i++)
        hdr[i] = (char)(le >> (8 * i));
    struct sockaddr_storage addr = target_addr;
    if (opt.port_step && addr.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        in->sin_port = htons((uint16_t)(ntohs(in->sin_port) + u->id));
    } else if (opt.port_step && addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        in6->sin6_port = htons((uint16_t)(ntohs(in6->sin6_port) + u->id));
    }
    pthread_barrier_wait(&upload_barrier); /* all start together */
    u->t0 = now_ns();
    if (src < 0) {
        snprintf(u->why, sizeof u->why, "%s: %s", opt.file, strerror(errno));
        goto out;
    }
    fd = socket(addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, target_len) != 0) {
        snprintf(u->why, sizeof u->why, "connect: %s", strerror(errno));
        goto out;
    }
    if (write_all(fd, hdr, (size_t)hl + 4) != 0) {
        snprintf(u->why, sizeof u->why, "sending the header: %s", strerror(errno));
        goto out;
    }
    off_t off = 0;
    while ((uint64_t)off < upload_size) {
        uint64_t left = upload_size - (uint64_t)off;
        ssize_t n = sendfile(fd, src, &off, left > (1u << 30) ? (1u << 30) : (size_t)left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            snprintf(u->why, sizeof u->why, "sending the body: %s",
                     n == 0 ? "file shorter than its size" : strerror(errno));
            goto out;
        }
    }
    u->t_last = now_ns();
    if (opt.no_reply) {
        char buf[4096];
        shutdown(fd, SHUT_WR);
        ssize_t n;
        while ((n = read(fd, buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
            ;
        u->ok = n == 0;
        if (!u->ok)
            snprintf(u->why, sizeof u->why, "waiting for the close: %s", strerror(errno));
        goto out;
    }
    unsigned char lb[4];
    char reply[4096];
    if (read_all(fd, lb, 4) != 0) {
        snprintf(u->why, sizeof u->why, "no reply");
        goto out;
    }
    uint32_t rl =
        (uint32_t)lb[0] | (uint32_t)lb[1] << 8 | (uint32_t)lb[2] << 16 | (uint32_t)lb[3] << 24;
    if (rl >= sizeof reply || read_all(fd, reply, rl) != 0) {
        snprintf(u->why, sizeof u->why, "reply of %u bytes cut short or too long", rl);
        goto out;
    }
    reply[rl] = '\0';
    u->ok = strstr(reply, "\"ok\"") != NULL && (!opt.sha256 || strstr(reply, opt.sha256) != NULL);
    if (!u->ok)
        snprintf(u->why, sizeof u->why, "reply: %.140s", reply);
out:
    u->t_end = now_ns();
    if (!u->t_last)
        u->t_last = u->t_end;
    if (fd >= 0)
        close(fd);
    if (src >= 0)
        close(src);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/*
 * Every connection sends the whole file at once; the clock runs from the first connect to the
 * last reply (or close), and MB/s counts every connection's body. The stall of a connection is
 * the time from its last body byte handed to the kernel to its reply: with fsync, mostly the
 * server's final fsync (the socket buffers hold at most a few MB in flight).
 */
static int upload_main(void)
{
    struct stat st;
    if (!opt.name)
        opt.name = "bench.bin";
    if (stat(opt.file, &st) != 0 || !S_ISREG(st.st_mode)) {
        fprintf(stderr, "loadgen: %s: not a regular file\n", opt.file);
        return EXIT_USAGE;
    }
    upload_size = (uint64_t)st.st_size;
    signal(SIGPIPE, SIG_IGN);
    upload_conn_t *us = calloc(opt.conns, sizeof *us);
    uint64_t *stalls = calloc(opt.conns, sizeof *stalls);
    if (!us || !stalls) {
        perror("loadgen: calloc");
        return EXIT_SYSTEM;
    }
    pthread_barrier_init(&upload_barrier, NULL, opt.conns);
    for (unsigned i = 0; i < opt.conns; i++) {
        us[i].id = i;
        int rc = pthread_create(&us[i].tid, NULL, upload_thread, &us[i]);
        if (rc != 0) {
            fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(rc));
            return EXIT_SYSTEM;
        }
    }
    uint64_t t0 = UINT64_MAX, t1 = 0, failures = 0;
    for (unsigned i = 0; i < opt.conns; i++) {
        pthread_join(us[i].tid, NULL);
        if (us[i].t0 < t0)
            t0 = us[i].t0;
        if (us[i].t_end > t1)
            t1 = us[i].t_end;
        stalls[i] = us[i].t_end - us[i].t_last;
        if (!us[i].ok) {
            failures++;
            fprintf(stderr, "loadgen: upload %u: %s\n", i, us[i].why);
        }
    }
    qsort(stalls, opt.conns, sizeof *stalls, cmp_u64);
    double secs = (double)(t1 - t0) / 1e9;
    double bytes = (double)upload_size * (double)(opt.conns - failures);
    double mbs = secs > 0 ? bytes / secs / 1e6 : 0;
    double smed = (double)stalls[opt.conns / 2] / 1e6, smax = (double)stalls[opt.conns - 1] / 1e6;
    if (opt.json) {
        printf("{\"mode\":\"upload\",\"label\":");
        json_string(stdout, opt.label);
        printf(",\"conns\":%u,\"size\":%llu,\"seconds\":%.6f,\"mb_per_s\":%.1f,"
               "\"stall_ms_median\":%.3f,\"stall_ms_max\":%.3f,\"failures\":%llu}\n",
               opt.conns, (unsigned long long)upload_size, secs, mbs, smed, smax,
               (unsigned long long)failures);
    } else {
        printf("upload %s: %u x %llu bytes in %.3f s: %.1f MB/s, stall median %.1f ms max %.1f "
               "ms, %llu failures\n",
               opt.label, opt.conns, (unsigned long long)upload_size, secs, mbs, smed, smax,
               (unsigned long long)failures);
    }
    pthread_barrier_destroy(&upload_barrier);
    free(stalls);
    free(us);
    return failures ? EXIT_FAILURES : 0;
}

int main(int argc, char **argv)
{
    if (parse_args(argc, argv) < 0) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (opt.mode == MODE_UPLOAD)
        return upload_main();
    if (raise_nofile((rlim_t)opt.conns + 64) < 0) {
        fprintf(stderr, "loadgen: RLIMIT_NOFILE too low for %u connections\n", opt.conns);
        return EXIT_SYSTEM;
    }
    timeout_ns = (uint64_t)(opt.timeout * (double)NS_PER_S);

    size_t reps = opt.size >= RBUF_SIZE ? 1 : (RBUF_SIZE + opt.size - 1) / opt.size;
    pattern_len = opt.size * reps;
    pattern = malloc(pattern_len);
    if (!pattern) {
        perror("loadgen: malloc");
        return EXIT_SYSTEM;
    }
    for (size_t i = 0; i < pattern_len; i++)
        pattern[i] = (unsigned char)('a' + (i % opt.size) % 26);

    struct sigaction sa = {.sa_handler = on_signal};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    thread_t *threads = calloc(opt.threads, sizeof *threads);
    conn_t *conns = calloc(opt.conns, sizeof *conns);
    uint64_t *ring = calloc((size_t)opt.conns * opt.depth, sizeof *ring);
    if (!threads || !conns || !ring) {
        perror("loadgen: calloc");
        return EXIT_SYSTEM;
    }
    unsigned base = opt.conns / opt.threads, extra = opt.conns % opt.threads, next = 0;
    for (unsigned i = 0; i < opt.threads; i++) {
        thread_t *t = &threads[i];
        t->id = i;
        t->nconns = base + (i < extra ? 1 : 0);
        t->conns = &conns[next];
        next += t->nconns;
        t->epfd = epoll_create1(EPOLL_CLOEXEC);
        if (t->epfd < 0) {
            perror("loadgen: epoll_create1");
            return EXIT_SYSTEM;
        }
        for (unsigned j = 0; j < t->nconns; j++) {
            conn_t *c = &t->conns[j];
            c->t = t;
            c->fd = -1;
            c->sent_at = &ring[(size_t)(c - conns) * opt.depth];
        }
    }

    unsigned parties = opt.threads + (opt.mode == MODE_HOLD ? 1 : 0);
    pthread_barrier_init(&ready_barrier, NULL, parties);
    for (unsigned i = 0; i < opt.threads; i++) {
        int rc = pthread_create(&threads[i].tid, NULL, thread_main, &threads[i]);
        if (rc != 0) {
            fprintf(stderr, "loadgen: pthread_create: %s\n", strerror(rc));
            return EXIT_SYSTEM;
        }
    }

    totals_t tot;
    if (opt.mode == MODE_HOLD) {
        sync_start();          /* every thread done with set-up and waiting for the ready line */
        gather(threads, &tot); /* threads only read from here to the barrier */
        if (opt.json)
            printf("{\"event\":\"ready\",\"conns\":%u,\"connected\":%u,\"failures\":%llu}\n",
                   opt.conns, tot.ready, (unsigned long long)tot.failures);
        else
            printf("ready: %u of %u connections open and echoed once, %llu failures\n", tot.ready,
                   opt.conns, (unsigned long long)tot.failures);
        fflush(stdout);
        pthread_barrier_wait(&ready_barrier);
        hold_wait();
    }
    for (unsigned i = 0; i < opt.threads; i++)
        pthread_join(threads[i].tid, NULL);
    uint64_t end = now_ns();

    uint64_t ms = atomic_load(&measure_start), me = atomic_load(&measure_end);
    double secs = 0;
    if (end > ms)
        secs = (double)((end < me ? end : me) - ms) / 1e9;
    gather(threads, &tot);
    if (opt.mode == MODE_HOLD) {
        /* Held connections: each one still open is one message (its first echo). */
        tot.messages = tot.ready;
        for (unsigned i = 0; i < opt.conns; i++)
            if (conns[i].ever_ready && conns[i].state != ST_HELD)
                tot.messages--;
    }
    report(&tot, secs);

    for (unsigned i = 0; i < opt.conns; i++)
        if (conns[i].fd >= 0)
            close(conns[i].fd);
    for (unsigned i = 0; i < opt.threads; i++)
        close(threads[i].epfd);
    pthread_barrier_destroy(&ready_barrier);
    free(ring);
    free(conns);
    free(threads);
    free(pattern);

    if (tot.failures || (opt.mode != MODE_CONNECT && tot.ready < opt.conns))
        return EXIT_FAILURES;
    return tot.messages ? 0 : EXIT_FAILURES;
}
