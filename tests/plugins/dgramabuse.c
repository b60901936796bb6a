/*
 * dgramabuse: a test plugin that misuses host->dgram_* the way a buggy plugin would, so the
 * host's guarantees (include/berth/handler.h, dgram_open) are checked under ASan:
 * - setup(): the calls with a NULL socket, then a socket bound at 127.0.0.1 port 0 that echoes
 *   every datagram back to its sender; it writes "open PORT null=SEND,ADDR,LEN\n".
 * - "close\n": dgram_close twice, then send and local_addr on the closed handle; writes
 *   "closed send=N addr=null|set len=N\n".
 * - "reopen\n": a new echoing socket (which may reuse the old one's slot), then the old handle
 *   again; writes "reopen PORT old=N\n".
 * - "end\n": host->close(conn), then send on the socket the host has closed at once; finish()
 *   then uses it once more (send, local_addr, close), after its memory would have been freed,
 *   and logs "dgramabuse: ending send=N finish send=N addr=null|set len=N".
 */
#include <berth/handler.h>

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

static const berth_host_t *host;

typedef struct state {
    berth_dgram_t *d;
    int ending_send;
} state_t;

static int abuse_load(const berth_host_t *h)
{
    host = h;
    return BERTH_HOST_HAS(h, listen_once) ? 0 : -ENOTSUP;
}

static void on_datagram(berth_conn_t *conn, berth_dgram_t *d, const void *data, size_t len,
                        const struct sockaddr *from, void *arg)
{
    char ip[INET6_ADDRSTRLEN];
    (void)conn;
    (void)arg;
    if (from->sa_family != AF_INET)
        return;
    const struct sockaddr_in *in = (const void *)from;
    snprintf(ip, sizeof ip, "%u.%u.%u.%u", ((const unsigned char *)&in->sin_addr)[0],
             ((const unsigned char *)&in->sin_addr)[1], ((const unsigned char *)&in->sin_addr)[2],
             ((const unsigned char *)&in->sin_addr)[3]);
    host->dgram_send(d, ip, ntohs(in->sin_port), data, len, NULL, NULL);
}

static int open_echo(berth_conn_t *conn, berth_dgram_t **out)
{
    struct sockaddr_in at;
    memset(&at, 0, sizeof at);
    at.sin_family = AF_INET;
    at.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = host->dgram_open(conn, (const struct sockaddr *)&at, 0, 4, on_datagram, NULL, out);
    if (rc)
        return -1;
    socklen_t len = 0;
    const struct sockaddr_in *b = (const void *)host->dgram_local_addr(*out, &len);
    return b ? ntohs(b->sin_port) : -1;
}

static int abuse_setup(berth_conn_t *conn)
{
    state_t *s = host->state(conn);
    socklen_t len = 99;
    int null_send = host->dgram_send(NULL, "127.0.0.1", 9, "x", 1, NULL, NULL);
    const struct sockaddr *null_addr = host->dgram_local_addr(NULL, &len);
    host->dgram_close(NULL);
    int port = open_echo(conn, &s->d);
    char line[128];
    int n = snprintf(line, sizeof line, "open %d null=%d,%s,%u\n", port, null_send,
                     null_addr ? "set" : "null", (unsigned)len);
    return host->write(conn, line, (size_t)n);
}

static void abuse_handle(berth_conn_t *conn, const void *data, size_t len)
{
    state_t *s = host->state(conn);
    char line[128];
    int n = 0;
    if (len >= 5 && memcmp(data, "close", 5) == 0) {
        host->dgram_close(s->d);
        host->dgram_close(s->d);
        socklen_t alen = 99;
        int send = host->dgram_send(s->d, "127.0.0.1", 9, "x", 1, NULL, NULL);
        const struct sockaddr *a = host->dgram_local_addr(s->d, &alen);
        n = snprintf(line, sizeof line, "closed send=%d addr=%s len=%u\n", send, a ? "set" : "null",
                     (unsigned)alen);
    } else if (len >= 6 && memcmp(data, "reopen", 6) == 0) {
        berth_dgram_t *old = s->d;
        int port = open_echo(conn, &s->d);
        int send = host->dgram_send(old, "127.0.0.1", 9, "x", 1, NULL, NULL);
        n = snprintf(line, sizeof line, "reopen %d old=%d\n", port, send);
    } else if (len >= 3 && memcmp(data, "end", 3) == 0) {
        host->close(conn);
        s->ending_send = host->dgram_send(s->d, "127.0.0.1", 9, "x", 1, NULL, NULL);
        return;
    } else {
        n = snprintf(line, sizeof line, "what?\n");
    }
    host->write(conn, line, (size_t)n);
}

static void abuse_finish(berth_conn_t *conn)
{
    state_t *s = host->state(conn);
    socklen_t alen = 99;
    int send = host->dgram_send(s->d, "127.0.0.1", 9, "x", 1, NULL, NULL);
    const struct sockaddr *a = host->dgram_local_addr(s->d, &alen);
    host->dgram_close(s->d);
    host->log(conn, BERTH_LOG_INFO, "dgramabuse: ending send=%d finish send=%d addr=%s len=%u",
              s->ending_send, send, a ? "set" : "null", (unsigned)alen);
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("dgramabuse"),
    .conn_size = sizeof(state_t),
    .load = abuse_load,
    .setup = abuse_setup,
    .handle = abuse_handle,
    .finish = abuse_finish,
};
