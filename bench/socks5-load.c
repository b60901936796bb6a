/*
 * socks5-load: the socks5 benchmark's client and destination server, for loopback only.
 *
 *   socks5-load serve ADDR:PORT
 *       The destination. Each connection sends an 8-byte big-endian count N; the server
 *       answers with N bytes, then reads (and discards) until the client's EOF, then closes.
 *       N = 0 is a handshake probe: nothing is sent back.
 *   socks5-load bulk [-x PROXY] -t TARGET [-b BYTES] [-c CONNS]
 *       CONNS connections (one thread each) each fetch BYTES from TARGET, through the SOCKS5
 *       proxy at PROXY (no authentication) or directly without -x. Prints the throughput.
 *   socks5-load handshakes [-x PROXY] -t TARGET [-c CONNS] [-d SECONDS] [-n COUNT] [-s SIZE]
 *       CONNS threads each loop for SECONDS: connect, greeting, CONNECT request, wait for the
 *       success reply, send N = SIZE (default 0), read the SIZE bytes, half-close, wait for
 *       EOF, close (directly: connect, send N, half-close, read until EOF). Prints completed
 *       handshakes per second. With -n, COUNT sessions in all (split over the threads)
 *       instead of a duration (with -n and -d, whichever comes first); "ok" is the count a
 *       syscall or CPU measure divides by.
 *
 * Results are one JSON line on stdout. Exit: 0, 1 if any transfer or handshake failed,
 * 100 usage, 111 system failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXIT_FAILURES 1
#define EXIT_USAGE 100
#define EXIT_SYSTEM 111
#define BUF_SIZE (256 * 1024)
#define IO_TIMEOUT_S 10

static struct sockaddr_storage proxy_addr, target_addr;
static socklen_t proxy_len, target_len;
static int use_proxy;
static uint64_t opt_bytes = 1ull << 30;
static unsigned opt_conns = 1;
static double opt_duration = 3.0;
static uint64_t opt_count, opt_size;
static atomic_uint_fast64_t total_bytes, total_ok, total_failed;
static atomic_int stop_flag;

static double now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* "127.0.0.1:80" or "[::1]:80" */
static int parse_addr(const char *text, struct sockaddr_storage *ss, socklen_t *len)
{
    char host[64];
    const char *colon = strrchr(text, ':');
    size_t hl;

    if (colon == NULL)
        return -1;
    hl = (size_t)(colon - text);
    if (hl >= sizeof(host))
        return -1;
    memcpy(host, text, hl);
    host[hl] = '\0';
    memset(ss, 0, sizeof(*ss));
    if (host[0] == '[' && hl > 2 && host[hl - 1] == ']') {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;

        host[hl - 1] = '\0';
        if (inet_pton(AF_INET6, host + 1, &s6->sin6_addr) != 1)
            return -1;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons((uint16_t)atoi(colon + 1));
        *len = sizeof(*s6);
        return 0;
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    if (inet_pton(AF_INET, host, &s4->sin_addr) != 1)
        return -1;
    s4->sin_family = AF_INET;
    s4->sin_port = htons((uint16_t)atoi(colon + 1));
    *len = sizeof(*s4);
    return 0;
}

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);

        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int read_exact(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);

        if (n == 0)
            return -1;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int connect_to(const struct sockaddr_storage *ss, socklen_t len)
{
    struct timeval tv = {IO_TIMEOUT_S, 0};
    int one = 1;
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

    if (fd < 0)
        return -1;
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)ss, len) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* A connection to the target, through the proxy when there is one. */
static int open_session(void)
{
    uint8_t req[4 + 16 + 2], rep[4 + 16 + 2];
    size_t rlen;
    int fd;

    if (!use_proxy)
        return connect_to(&target_addr, target_len);
    fd = connect_to(&proxy_addr, proxy_len);
    if (fd < 0)
        return -1;
    if (write_all(fd, "\x05\x01\x00", 3) < 0 || read_exact(fd, rep, 2) < 0 || rep[0] != 5 ||
        rep[1] != 0)
        goto fail;
    req[0] = 5;
    req[1] = 1;
    req[2] = 0;
    if (target_addr.ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)&target_addr;

        req[3] = 1;
        memcpy(req + 4, &s4->sin_addr, 4);
        memcpy(req + 8, &s4->sin_port, 2);
        rlen = 10;
    } else {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)&target_addr;

        req[3] = 4;
        memcpy(req + 4, &s6->sin6_addr, 16);
        memcpy(req + 20, &s6->sin6_port, 2);
        rlen = 22;
    }
    if (write_all(fd, req, rlen) < 0 || read_exact(fd, rep, 4) < 0 || rep[1] != 0)
        goto fail;
    if (read_exact(fd, rep + 4, rep[3] == 4 ? 18 : 6) < 0)
        goto fail;
    return fd;
fail:
    close(fd);
    return -1;
}

static int send_count(int fd, uint64_t n)
{
    uint8_t b[8];

    for (int i = 0; i < 8; i++)
        b[i] = (uint8_t)(n >> (56 - 8 * i));
    return write_all(fd, b, 8);
}

/* Read until EOF; returns the bytes read or -1. */
static int64_t drain(int fd, char *buf)
{
    int64_t total = 0;

    for (;;) {
        ssize_t n = recv(fd, buf, BUF_SIZE, 0);

        if (n == 0)
            return total;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        total += n;
    }
}

/* ---- serve ---- */

static void *serve_one(void *arg)
{
    int fd = (int)(intptr_t)arg;
    char *buf = calloc(1, BUF_SIZE);
    uint8_t b[8];
    uint64_t n = 0;

    if (buf == NULL || read_exact(fd, b, 8) < 0)
        goto out;
    for (int i = 0; i < 8; i++)
        n = n << 8 | b[i];
    while (n > 0) {
        size_t chunk = n < BUF_SIZE ? (size_t)n : BUF_SIZE;

        if (write_all(fd, buf, chunk) < 0)
            goto out;
        n -= chunk;
    }
    shutdown(fd, SHUT_WR);
    drain(fd, buf);
out:
    free(buf);
    close(fd);
    return NULL;
}

static int serve(const char *addr)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int one = 1, fd;
    pthread_attr_t attr;

    if (parse_addr(addr, &ss, &len) < 0)
        return EXIT_USAGE;
    fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return EXIT_SYSTEM;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (bind(fd, (struct sockaddr *)&ss, len) < 0 || listen(fd, 4096) < 0) {
        perror("socks5-load serve");
        return EXIT_SYSTEM;
    }
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_attr_setstacksize(&attr, 64 * 1024);
    printf("ready\n");
    fflush(stdout);
    for (;;) {
        pthread_t t;
        int c = accept4(fd, NULL, NULL, SOCK_CLOEXEC);

        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EMFILE)
                continue;
            perror("socks5-load accept");
            return EXIT_SYSTEM;
        }
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        if (pthread_create(&t, &attr, serve_one, (void *)(intptr_t)c) != 0)
            close(c);
    }
}

/* ---- bulk ---- */

static void *bulk_one(void *arg)
{
    char *buf = malloc(BUF_SIZE);
    int fd = open_session();
    uint64_t got = 0;

    if (buf == NULL || fd < 0 || send_count(fd, opt_bytes) < 0)
        goto fail;
    while (got < opt_bytes) {
        ssize_t n = recv(fd, buf, BUF_SIZE, 0);

        if (n <= 0) {
            if (n < 0 && errno == EINTR)
                continue;
            goto fail;
        }
        got += (uint64_t)n;
    }
    shutdown(fd, SHUT_WR);
    if (drain(fd, buf) != 0)
        goto fail;
    atomic_fetch_add(&total_bytes, got);
    atomic_fetch_add(&total_ok, 1);
    close(fd);
    free(buf);
    return NULL;
fail:
    atomic_fetch_add(&total_failed, 1);
    if (fd >= 0)
        close(fd);
    free(buf);
    return NULL;
}

/* ---- handshakes ---- */

static void *handshake_loop(void *arg)
{
    char *buf = malloc(BUF_SIZE);
    uint64_t todo = (uint64_t)(uintptr_t)arg; /* 0: until stop_flag */
    int counted = todo > 0;

    while (buf != NULL && !atomic_load(&stop_flag) && (!counted || todo-- > 0)) {
        int fd = open_session();

        /* The SIZE bytes are read before the half-close: a proxy that ends the session on
         * the client's EOF (microsocks) would otherwise drop them. */
        if (fd >= 0 && send_count(fd, opt_size) == 0 && read_exact(fd, buf, opt_size) == 0 &&
            shutdown(fd, SHUT_WR) == 0 && drain(fd, buf) == 0)
            atomic_fetch_add(&total_ok, 1);
        else
            atomic_fetch_add(&total_failed, 1);
        if (fd >= 0)
            close(fd);
    }
    free(buf);
    return NULL;
}

/* -n with -d: whichever comes first (a slow proxy gets the time, not the count). */
static void *deadline_thread(void *arg)
{
    struct timespec ts = {(time_t)opt_duration,
                          (long)((opt_duration - (double)(time_t)opt_duration) * 1e9)};

    nanosleep(&ts, NULL);
    atomic_store(&stop_flag, 1);
    return NULL;
}

static void usage(FILE *f)
{
    fprintf(
        f, "usage: socks5-load serve ADDR:PORT\n"
           "       socks5-load bulk [-x PROXY] -t TARGET [-b BYTES] [-c CONNS]\n"
           "       socks5-load handshakes [-x PROXY] -t TARGET [-c CONNS] [-d SECONDS] [-n COUNT]\n"
           "                              [-s SIZE]\n"
           "ADDR:PORT is 127.0.0.1:1080 or [::1]:1080\n");
}

int main(int argc, char **argv)
{
    const char *mode;
    pthread_t *threads;
    double t0, t1;
    int opt, have_target = 0, have_duration = 0;

    signal(SIGPIPE, SIG_IGN);
    if (argc < 2) {
        usage(stderr);
        return EXIT_USAGE;
    }
    mode = argv[1];
    if (strcmp(mode, "serve") == 0) {
        if (argc != 3) {
            usage(stderr);
            return EXIT_USAGE;
        }
        return serve(argv[2]);
    }
    optind = 2;
    while ((opt = getopt(argc, argv, "x:t:b:c:d:n:s:h")) != -1) {
        switch (opt) {
        case 'x':
            if (parse_addr(optarg, &proxy_addr, &proxy_len) < 0)
                goto bad;
            use_proxy = 1;
            break;
        case 't':
            if (parse_addr(optarg, &target_addr, &target_len) < 0)
                goto bad;
            have_target = 1;
            break;
        case 'b':
            opt_bytes = strtoull(optarg, NULL, 10);
            break;
        case 'c':
            opt_conns = (unsigned)strtoul(optarg, NULL, 10);
            break;
        case 'd':
            opt_duration = strtod(optarg, NULL);
            have_duration = 1;
            break;
        case 'n':
            opt_count = strtoull(optarg, NULL, 10);
            break;
        case 's':
            opt_size = strtoull(optarg, NULL, 10);
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            goto bad;
        }
    }
    if (!have_target || opt_conns == 0 || opt_conns > 4096 ||
        (strcmp(mode, "bulk") != 0 && strcmp(mode, "handshakes") != 0))
        goto bad;

    threads = calloc(opt_conns, sizeof(*threads));
    if (threads == NULL)
        return EXIT_SYSTEM;
    t0 = now_s();
    for (unsigned i = 0; i < opt_conns; i++) {
        /* COUNT split over the threads, the first ones taking the remainder */
        uint64_t share = opt_count / opt_conns + (i < opt_count % opt_conns);

        if (opt_count && share == 0)
            continue;
        if (pthread_create(&threads[i], NULL, strcmp(mode, "bulk") == 0 ? bulk_one : handshake_loop,
                           (void *)(uintptr_t)share) != 0)
            return EXIT_SYSTEM;
    }
    if (strcmp(mode, "handshakes") == 0 && opt_count && have_duration) {
        pthread_t t;

        if (pthread_create(&t, NULL, deadline_thread, NULL) == 0)
            pthread_detach(t);
    }
    if (strcmp(mode, "handshakes") == 0 && opt_count == 0) {
        struct timespec ts = {(time_t)opt_duration,
                              (long)((opt_duration - (double)(time_t)opt_duration) * 1e9)};

        nanosleep(&ts, NULL);
        atomic_store(&stop_flag, 1);
    }
    for (unsigned i = 0; i < opt_conns; i++)
        if (!opt_count || opt_count / opt_conns + (i < opt_count % opt_conns))
            pthread_join(threads[i], NULL);
    t1 = now_s();
    free(threads);

    if (strcmp(mode, "bulk") == 0)
        printf("{\"mode\": \"bulk\", \"conns\": %u, \"bytes\": %llu, \"seconds\": %.4f, "
               "\"mbytes_per_s\": %.1f, \"failed\": %llu}\n",
               opt_conns, (unsigned long long)atomic_load(&total_bytes), t1 - t0,
               (double)atomic_load(&total_bytes) / (t1 - t0) / 1e6,
               (unsigned long long)atomic_load(&total_failed));
    else
        printf("{\"mode\": \"handshakes\", \"conns\": %u, \"ok\": %llu, \"seconds\": %.4f, "
               "\"per_s\": %.1f, \"failed\": %llu}\n",
               opt_conns, (unsigned long long)atomic_load(&total_ok), t1 - t0,
               (double)atomic_load(&total_ok) / (t1 - t0),
               (unsigned long long)atomic_load(&total_failed));
    return atomic_load(&total_failed) ? EXIT_FAILURES : 0;
bad:
    usage(stderr);
    return EXIT_USAGE;
}
