/*
 * berth-upload: send files to berthd's upload plugin (the seeds' framed `put` protocol).
 *
 * Per file: a 4-byte little-endian header length, a JSON header {"cmd": "put", "file_name",
 * "file_size", "sha256"}, then the bytes; the server answers each file with a frame of the
 * same shape, which is read and checked before the next file goes. Blocking sockets: one
 * connection, one file at a time. With --tls the connection is TLS (OpenSSL), the server's
 * certificate verified against the system's CAs or --ca, and its name against --servername
 * (default: the host of --address); the file bytes are then copied, not sendfile()d.
 *
 * Exit codes (see berth-upload(1)): 0 every file stored, 1 some file not stored, 2 usage,
 * 3 the server could not be reached or the connection failed before a file got its answer.
 */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#ifndef BERTH_VERSION
#define BERTH_VERSION "unknown"
#endif

#define EXIT_REJECTED 1
#define EXIT_USAGE 2
#define EXIT_SYSTEM 3

#define DEFAULT_ADDRESS "127.0.0.1:7009"
#define CHUNK ((size_t)1 << 20)
#define MAX_REPLY ((uint32_t)1 << 20)

static const char *prog = "berth-upload";
static int quiet;
static int show_progress;
static int unreachable; /* a connect failed: the files left would fail the same way */

typedef struct target {
    const char *address; /* HOST:PORT, or NULL */
    const char *unix_path;
    int tls;
    const char *ca, *cert, *key, *servername;
} target_t;

/* With --tls: the context, and the session of the one open connection (NULL otherwise). */
static SSL_CTX *tls_ctx;
static SSL *tls;

#if defined(__GNUC__)
__attribute__((format(printf, 1, 2)))
#endif
static void
warnx(const char *fmt, ...)
{
    va_list ap;
    if (show_progress)
        fputs("\r\033[K", stderr);
    fprintf(stderr, "%s: ", prog);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: %s [-q] [-a HOST:PORT | -u PATH] [--tls [--ca FILE] [--cert FILE --key FILE]\n"
            "       [--servername NAME]] FILE...\n"
            "Upload each FILE to a berth upload listener and check the server's answer.\n"
            "\n"
            "  -a, --address HOST:PORT  TCP address of the listener (default %s;\n"
            "                           an IPv6 host goes in brackets: [::1]:7009)\n"
            "  -u, --unix PATH          the listener's Unix socket instead\n"
            "  -q, --quiet              no progress bar and no line per stored file\n"
            "      --tls                TLS to the listener, verifying its certificate\n"
            "      --ca FILE            trust the CAs in FILE (PEM) instead of the system's\n"
            "      --cert FILE --key FILE  a client certificate and its key (PEM)\n"
            "      --servername NAME    the name to ask for (SNI) and to verify (default:\n"
            "                           the host of --address)\n"
            "  -V, --version            print the version and exit\n"
            "  -h, --help               print this help and exit\n"
            "\n"
            "Exit status: 0 all stored, 1 some file not stored, 2 usage error,\n"
            "3 server unreachable or connection lost.\n",
            prog, DEFAULT_ADDRESS);
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- progress ---- */

typedef struct progress {
    const char *name;
    const char *phase;
    uint64_t total;
    double start, last;
} progress_t;

static void human(double v, char *out, size_t size)
{
    static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
    int u = 0;
    while (v >= 1024 && u < 4) {
        v /= 1024;
        u++;
    }
    snprintf(out, size, u == 0 ? "%.0f %s" : "%.1f %s", v, units[u]);
}

static void progress_start(progress_t *p, const char *name, const char *phase, uint64_t total)
{
    p->name = name;
    p->phase = phase;
    p->total = total;
    p->start = now_s();
    p->last = 0;
}

static void progress_show(progress_t *p, uint64_t done, int force)
{
    if (!show_progress)
        return;
    double t = now_s();
    if (!force && t - p->last < 0.1)
        return;
    p->last = t;
    double el = t - p->start;
    double rate = el > 0 ? (double)done / el : 0;
    int pct = p->total ? (int)(done * 100 / p->total) : 100;
    char d[32], tot[32], r[32], eta[32] = "--:--";
    human((double)done, d, sizeof(d));
    human((double)p->total, tot, sizeof(tot));
    human(rate, r, sizeof(r));
    if (rate > 0 && done < p->total) {
        uint64_t s = (uint64_t)((double)(p->total - done) / rate);
        snprintf(eta, sizeof(eta), "%" PRIu64 ":%02" PRIu64, s / 60, s % 60);
    } else if (done >= p->total) {
        snprintf(eta, sizeof(eta), "0:00");
    }
    int bar = 20, fill = pct * bar / 100;
    char bars[32];
    for (int i = 0; i < bar; i++)
        bars[i] = i < fill ? '#' : '.';
    bars[bar] = '\0';
    fprintf(stderr, "\r\033[K%-.30s %s [%s] %3d%% %s / %s %s/s ETA %s", p->name, p->phase, bars,
            pct, d, tot, r, eta);
    fflush(stderr);
}

static void progress_clear(void)
{
    if (show_progress) {
        fputs("\r\033[K", stderr);
        fflush(stderr);
    }
}

/* ---- the connection ---- */

static int connect_unix(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        warnx("%s: socket path too long", path);
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sun, sizeof(sun)) != 0) {
        warnx("cannot connect to %s: %s", path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static int connect_tcp(const char *address)
{
    char host[256];
    const char *port;
    const char *colon = strrchr(address, ':');

    if (colon == NULL || colon[1] == '\0') {
        warnx("%s: want HOST:PORT", address);
        return -1;
    }
    size_t hl = (size_t)(colon - address);
    if (hl >= 2 && address[0] == '[' && address[hl - 1] == ']') {
        address++;
        hl -= 2;
    }
    if (hl == 0 || hl >= sizeof(host)) {
        warnx("%s: want HOST:PORT", address);
        return -1;
    }
    memcpy(host, address, hl);
    host[hl] = '\0';
    port = colon + 1;

    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    int r = getaddrinfo(host, port, &hints, &res);
    if (r != 0) {
        warnx("%s: %s", host, gai_strerror(r));
        return -1;
    }
    int fd = -1, err = 0;
    for (ai = res; ai; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
        if (fd < 0) {
            err = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
            /* Small frames (header, then waiting for the answer) must not sit in Nagle. */
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            break;
        }
        err = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0)
        warnx("cannot connect to %s:%s: %s", host, port, strerror(err));
    return fd;
}

static const char *tls_error(void)
{
    unsigned long e = ERR_get_error();
    static char buf[256];
    if (e == 0)
        return "the connection closed";
    ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    return buf;
}

static int tls_setup(const target_t *t)
{
    tls_ctx = SSL_CTX_new(TLS_client_method());
    if (tls_ctx == NULL)
        return -1;
    SSL_CTX_set_min_proto_version(tls_ctx, TLS1_2_VERSION);
    SSL_CTX_set_verify(tls_ctx, SSL_VERIFY_PEER, NULL);
    if (t->ca ? SSL_CTX_load_verify_locations(tls_ctx, t->ca, NULL) != 1
              : SSL_CTX_set_default_verify_paths(tls_ctx) != 1) {
        warnx("%s: %s", t->ca ? t->ca : "system CAs", tls_error());
        return -1;
    }
    if (t->cert && (SSL_CTX_use_certificate_chain_file(tls_ctx, t->cert) != 1 ||
                    SSL_CTX_use_PrivateKey_file(tls_ctx, t->key, SSL_FILETYPE_PEM) != 1 ||
                    SSL_CTX_check_private_key(tls_ctx) != 1)) {
        warnx("%s, %s: %s", t->cert, t->key, tls_error());
        return -1;
    }
    return 0;
}

/* The name to verify: --servername, else the host of --address (brackets dropped). */
static void tls_name(const target_t *t, char *out, size_t size)
{
    out[0] = '\0';
    if (t->servername) {
        snprintf(out, size, "%s", t->servername);
        return;
    }
    if (t->address == NULL)
        return;
    const char *a = t->address, *colon = strrchr(a, ':');
    size_t n = colon ? (size_t)(colon - a) : strlen(a);
    if (n >= 2 && a[0] == '[' && a[n - 1] == ']')
        a++, n -= 2;
    if (n < size) {
        memcpy(out, a, n);
        out[n] = '\0';
    }
}

static int tls_connect(const target_t *t, int fd)
{
    char name[256];
    tls_name(t, name, sizeof name);
    tls = SSL_new(tls_ctx);
    if (tls == NULL || SSL_set_fd(tls, fd) != 1)
        goto fail;
    if (name[0]) {
        struct in6_addr ip6;
        struct in_addr ip4;
        int literal = inet_pton(AF_INET, name, &ip4) == 1 || inet_pton(AF_INET6, name, &ip6) == 1;
        if (!literal)
            SSL_set_tlsext_host_name(tls, name);
        X509_VERIFY_PARAM *vp = SSL_get0_param(tls);
        if (literal ? X509_VERIFY_PARAM_set1_ip_asc(vp, name) != 1
                    : X509_VERIFY_PARAM_set1_host(vp, name, 0) != 1)
            goto fail;
    }
    if (SSL_connect(tls) != 1) {
        long v = SSL_get_verify_result(tls);
        if (v != X509_V_OK)
            warnx("TLS: the server's certificate: %s", X509_verify_cert_error_string(v));
        else
            warnx("TLS handshake: %s", tls_error());
        goto fail;
    }
    return fd;
fail:
    SSL_free(tls);
    tls = NULL;
    close(fd);
    return -1;
}

static int connect_target(const target_t *t)
{
    int fd = t->unix_path ? connect_unix(t->unix_path) : connect_tcp(t->address);
    if (fd >= 0 && t->tls)
        fd = tls_connect(t, fd);
    return fd;
}

/* Close the connection: close_notify first on TLS. */
static void conn_close(int fd)
{
    if (tls) {
        SSL_shutdown(tls);
        SSL_free(tls);
        tls = NULL;
    }
    close(fd);
}

static int send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (tls && len > 0) {
        size_t done = 0;
        if (SSL_write_ex(tls, p, len, &done) != 1)
            return -EPIPE;
        p += done;
        len -= done;
    }
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

static int recv_all(int fd, void *data, size_t len)
{
    char *p = data;
    while (tls && len > 0) {
        size_t got = 0;
        if (SSL_read_ex(tls, p, len, &got) != 1)
            return -ECONNRESET;
        p += got;
        len -= got;
    }
    while (len > 0) {
        ssize_t n = recv(fd, p, len, 0);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        if (n == 0)
            return -ECONNRESET; /* the server closed before its answer was whole */
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

/* One reply frame, parsed. 0, or a negative errno (-EPROTO: not a reply). */
static int read_reply(int fd, json_t **reply)
{
    unsigned char lenb[4];
    int r = recv_all(fd, lenb, 4);
    if (r != 0)
        return r;
    uint32_t n = (uint32_t)lenb[0] | (uint32_t)lenb[1] << 8 | (uint32_t)lenb[2] << 16 |
                 (uint32_t)lenb[3] << 24;
    if (n == 0 || n > MAX_REPLY)
        return -EPROTO;
    char *buf = malloc(n);
    if (buf == NULL)
        return -ENOMEM;
    if ((r = recv_all(fd, buf, n)) == 0) {
        json_error_t e;
        *reply = json_loadb(buf, n, 0, &e);
        if (*reply == NULL || !json_is_object(*reply) ||
            !json_is_string(json_object_get(*reply, "status"))) {
            json_decref(*reply);
            *reply = NULL;
            r = -EPROTO;
        }
    }
    free(buf);
    return r;
}

/* ---- one file ---- */

typedef enum outcome { STORED, REFUSED, LOST } outcome_t;

static int hash_file(int fd, uint64_t size, unsigned char sha[32], progress_t *pr)
{
    static unsigned char buf[CHUNK];
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    uint64_t off = 0;
    unsigned int n;
    int r = 0;

    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
        r = -ENOMEM;
        goto out;
    }
    while (off < size) {
        ssize_t got = pread(fd, buf, sizeof(buf), (off_t)off);
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            r = -errno;
            goto out;
        }
        if (got == 0) {
            r = -ENODATA; /* shrank */
            goto out;
        }
        EVP_DigestUpdate(ctx, buf, (size_t)got);
        off += (uint64_t)got;
        progress_show(pr, off, 0);
    }
    if (EVP_DigestFinal_ex(ctx, sha, &n) != 1)
        r = -EIO;
out:
    EVP_MD_CTX_free(ctx);
    return r;
}

/* The same on TLS: a readable socket may hold only a session ticket (TLS 1.3 sends them
 * after the handshake), which is no answer. Peek without blocking. */
static int tls_reply_waiting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (SSL_pending(tls) > 0)
        return 1;
    if (poll(&p, 1, 0) <= 0 || !(p.revents & (POLLIN | POLLHUP | POLLERR)))
        return 0;
    int fl = fcntl(fd, F_GETFL);
    fcntl(fd, F_SETFL, fl | O_NONBLOCK);
    char b;
    int n = SSL_peek(tls, &b, 1);
    int err = n > 0 ? SSL_ERROR_NONE : SSL_get_error(tls, n);
    fcntl(fd, F_SETFL, fl);
    ERR_clear_error();
    return n > 0 || (err != SSL_ERROR_WANT_READ && err != SSL_ERROR_WANT_WRITE);
}

/* A reply readable right now? (the server answers early when it refuses a file) */
static int reply_waiting(int fd)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    if (tls)
        return tls_reply_waiting(fd);
    return poll(&p, 1, 0) > 0 && (p.revents & (POLLIN | POLLHUP | POLLERR));
}

/* sendfile() for a TLS connection: the bytes must pass through OpenSSL. */
static ssize_t send_copy(int fd, int file, off_t *off, size_t want)
{
    static unsigned char buf[CHUNK];
    ssize_t n = pread(file, buf, want, *off);
    if (n <= 0)
        return n;
    if (send_all(fd, buf, (size_t)n) != 0) {
        errno = EPIPE;
        return -1;
    }
    *off += n;
    return n;
}

/* Check a reply against what was sent. */
static outcome_t judge(json_t *reply, const char *name, uint64_t size, const char *hex)
{
    const char *status = json_string_value(json_object_get(reply, "status"));
    if (strcmp(status, "ok") == 0) {
        json_t *sz = json_object_get(reply, "size");
        const char *sha = json_string_value(json_object_get(reply, "sha256"));
        if (!json_is_integer(sz) || (uint64_t)json_integer_value(sz) != size || sha == NULL ||
            strcmp(sha, hex) != 0) {
            warnx("%s: the server's answer does not match what was sent", name);
            return LOST;
        }
        if (!quiet)
            printf("%s: stored, %" PRIu64 " bytes, sha256 %s\n", name, size, hex);
        return STORED;
    }
    const char *err = json_string_value(json_object_get(reply, "error"));
    warnx("%s: refused: %s", name, err ? err : "(no reason given)");
    return REFUSED;
}

/*
 * Upload one file on *fd (connecting first if *fd < 0). On return *fd is still open if the
 * connection can carry the next file, else closed and -1.
 */
static outcome_t upload(const target_t *t, int *fd, const char *path)
{
    outcome_t out = REFUSED;
    json_t *hdr = NULL, *reply = NULL;
    char *text = NULL;
    unsigned char sha[32];
    char hex[65];
    progress_t pr;
    struct stat st;

    const char *name = strrchr(path, '/');
    name = name ? name + 1 : path;
    int file = open(path, O_RDONLY | O_CLOEXEC);
    if (file < 0) {
        warnx("%s: %s", path, strerror(errno));
        return REFUSED;
    }
    if (fstat(file, &st) != 0 || !S_ISREG(st.st_mode)) {
        warnx("%s: not a regular file", path);
        goto out;
    }
    uint64_t size = (uint64_t)st.st_size;

    progress_start(&pr, name, "sha256", size);
    int r = hash_file(file, size, sha, &pr);
    if (r != 0) {
        warnx("%s: %s", path, r == -ENODATA ? "file shrank while reading" : strerror(-r));
        goto out;
    }
    for (int i = 0; i < 32; i++)
        snprintf(hex + 2 * i, 3, "%02x", sha[i]);

    hdr = json_object();
    json_t *jname = json_string(name);
    if (jname == NULL) {
        warnx("%s: the file name is not UTF-8", path);
        goto out;
    }
    json_object_set_new(hdr, "cmd", json_string("put"));
    json_object_set_new(hdr, "file_name", jname);
    json_object_set_new(hdr, "file_size", json_integer((json_int_t)size));
    json_object_set_new(hdr, "sha256", json_string(hex));
    json_object_set_new(hdr, "reply", json_string("each")); /* we read each reply: send it now */
    text = json_dumps(hdr, JSON_COMPACT);
    if (text == NULL) {
        warnx("out of memory");
        out = LOST;
        goto out;
    }

    if (*fd < 0 && (*fd = connect_target(t)) < 0) {
        unreachable = 1;
        out = LOST;
        goto out;
    }
    /* Length and header in one send: one segment, not two. */
    size_t hl = strlen(text);
    char *msg = malloc(4 + hl);
    if (msg == NULL) {
        warnx("out of memory");
        out = LOST;
        goto out;
    }
    msg[0] = (char)(hl & 0xff);
    msg[1] = (char)(hl >> 8 & 0xff);
    msg[2] = (char)(hl >> 16 & 0xff);
    msg[3] = (char)(hl >> 24 & 0xff);
    memcpy(msg + 4, text, hl);
    r = send_all(*fd, msg, 4 + hl);
    free(msg);
    int sent_all = 0;
    if (r == 0) {
        off_t off = 0;
        progress_start(&pr, name, "upload", size);
        while ((uint64_t)off < size) {
            if (reply_waiting(*fd))
                break; /* an early answer: the server refused this file */
            size_t want = size - (uint64_t)off < CHUNK ? (size_t)(size - (uint64_t)off) : CHUNK;
            ssize_t n = tls ? send_copy(*fd, file, &off, want) : sendfile(*fd, file, &off, want);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0) {
                r = -errno;
                break;
            }
            if (n == 0) {
                r = -ENODATA;
                break;
            }
            progress_show(&pr, (uint64_t)off, 0);
        }
        sent_all = (uint64_t)off == size;
        if (sent_all)
            progress_show(&pr, size, 1);
    }
    progress_clear();
    if (r == -ENODATA) {
        /* The framing promised bytes that no longer exist: this connection is unusable. */
        warnx("%s: file shrank while sending", path);
        conn_close(*fd);
        *fd = -1;
        goto out;
    }
    /* Whatever happened to the sending, the server may have answered: read it. */
    int rr = read_reply(*fd, &reply);
    if (rr != 0) {
        warnx("%s: no answer from the server: %s", name,
              rr == -EPROTO ? "not a reply frame" : strerror(r ? -r : -rr));
        out = LOST;
        conn_close(*fd);
        *fd = -1;
        goto out;
    }
    out = judge(reply, name, size, hex);
    if (!sent_all || r != 0 || out != STORED) {
        /* Refused: the rest of the body may not have been sent, and the server may be closing
         * (it does after some refusals): the next file starts on a new connection. */
        conn_close(*fd);
        *fd = -1;
    }
out:
    json_decref(reply);
    json_decref(hdr);
    free(text);
    close(file);
    return out;
}

int main(int argc, char **argv)
{
    static const struct option opts[] = {
        {"address", required_argument, NULL, 'a'},
        {"unix", required_argument, NULL, 'u'},
        {"quiet", no_argument, NULL, 'q'},
        {"version", no_argument, NULL, 'V'},
        {"help", no_argument, NULL, 'h'},
        {"tls", no_argument, NULL, 'T'},
        {"ca", required_argument, NULL, 'C'},
        {"cert", required_argument, NULL, 'E'},
        {"key", required_argument, NULL, 'K'},
        {"servername", required_argument, NULL, 'S'},
        {NULL, 0, NULL, 0},
    };
    target_t t = {.address = NULL, .unix_path = NULL};
    int c;

    while ((c = getopt_long(argc, argv, "a:u:qVh", opts, NULL)) != -1) {
        switch (c) {
        case 'a':
            t.address = optarg;
            break;
        case 'u':
            t.unix_path = optarg;
            break;
        case 'q':
            quiet = 1;
            break;
        case 'T':
            t.tls = 1;
            break;
        case 'C':
            t.ca = optarg;
            break;
        case 'E':
            t.cert = optarg;
            break;
        case 'K':
            t.key = optarg;
            break;
        case 'S':
            t.servername = optarg;
            break;
        case 'V':
            printf("berth-upload %s\n", BERTH_VERSION);
            return 0;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (t.address && t.unix_path) {
        warnx("-a and -u exclude each other");
        return EXIT_USAGE;
    }
    if (optind >= argc) {
        usage(stderr);
        return EXIT_USAGE;
    }
    if (!t.tls && (t.ca || t.cert || t.key || t.servername)) {
        warnx("--ca, --cert, --key and --servername need --tls");
        return EXIT_USAGE;
    }
    if (!t.cert != !t.key) {
        warnx("--cert and --key go together");
        return EXIT_USAGE;
    }
    if (t.tls && tls_setup(&t) != 0)
        return EXIT_SYSTEM;
    if (t.address == NULL && t.unix_path == NULL)
        t.address = DEFAULT_ADDRESS;
    show_progress = !quiet && isatty(STDERR_FILENO);
    signal(SIGPIPE, SIG_IGN);

    int fd = -1, refused = 0, lost = 0;
    for (int i = optind; i < argc && !unreachable; i++) {
        outcome_t o = upload(&t, &fd, argv[i]);
        if (o == REFUSED)
            refused++;
        else if (o == LOST)
            lost++;
        fflush(stdout);
    }
    if (fd >= 0)
        conn_close(fd);
    SSL_CTX_free(tls_ctx);
    return lost ? EXIT_SYSTEM : refused ? EXIT_REJECTED : 0;
}
