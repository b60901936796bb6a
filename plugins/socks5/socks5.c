/*
 * socks5: a SOCKS5 relay proxy (RFC 1928 CONNECT, RFC 1929 username/password) as a berth
 * plugin. The wire format lives in socks5_proto.c, the options in socks5_config.c, the
 * users file in socks5_users.c; this file is the per-connection state machine:
 *
 *   GREETING -> [AUTH -> VERIFYING] -> REQUEST -> CONNECTING -> RELAY
 *
 * with every failure going to DONE (a reply if the protocol has one, then close). The
 * host does the outbound connect (DNS off the loop, every address tried, each offered to
 * allow_dest_cb first, so a name cannot reach what its address may not) and the relay.
 */
/* strerrorname_np is a GNU extension: an out-of-tree build (cc with pkg-config's flags alone)
 * does not get _GNU_SOURCE from berth's CMake, and without it the call would be implicitly
 * declared as returning int, truncating the pointer. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE 1
#endif
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "berth/handler.h"
#include "socks5_config.h"
#include "socks5_metrics.h"
#include "socks5_proto.h"
#include "socks5_udp.h"
#include "socks5_users.h"

#ifndef BERTH_VERSION
#define BERTH_VERSION "0"
#endif

/* Client bytes held while the plugin waits on the password check or the connect: the rest
 * of the read that carried the message, and what one more read brings before the pause
 * takes hold. Past this the client is not waiting for replies as a client must. */
#define SOCKS5_MAX_PENDING (256u * 1024u)

static const berth_host_t *host;

typedef enum session_state {
    ST_GREETING = 0,
    ST_AUTH,
    ST_VERIFYING, /* the password is being checked on the thread pool */
    ST_REQUEST,
    ST_CONNECTING, /* host->connect is under way */
    ST_RELAY,
    ST_DONE, /* closing: input is ignored */
    ST_UDP,  /* a UDP association (socks5_udp.c) lives while the connection does */
} session_state_t;

/* Per connection; the host allocates it zeroed (conn_size) and frees it after finish. */
typedef struct session {
    const socks5_config_t *cfg;
    socks5_parser_t *parser; /* from setup until the connect succeeds */
    berth_timer_t *timer;    /* the handshake timer */
    uint8_t *pending;        /* client bytes that came while waiting (see SOCKS5_MAX_PENDING) */
    size_t npending;
    char *user; /* the RFC 1929 name as the client sent it, escaped for logs */
    char *dest; /* the requested destination, escaped for logs */
    const char *outcome;
    uint64_t start_ns, end_ns; /* end: when the outcome was known (closing may linger) */
    uint64_t bytes_up, bytes_down;
    int relay_error;
    int sys_errno;
    struct sockaddr_storage remote; /* the destination address tried or connected */
    uint16_t port;
    uint8_t state;
    uint8_t rep; /* the reply code sent, or 0xFF before any */
    uint8_t relayed;
    uint8_t logged;
    uint8_t paused;
    uint8_t client_eof;         /* the client sent EOF while we were waiting */
    uint8_t heard;              /* the client sent at least one byte */
    uint8_t quiet;              /* throttled: its session line is debug, the throttle logs for it */
    berth_timer_t *delay_timer; /* a throttled source's failure reply, held back */
    /* UDP ASSOCIATE and BIND */
    socks5_udp_t *udp;
    struct sockaddr_storage bind_want; /* BIND's DST.ADDR when an address, else family 0 */
    uint8_t binding;                   /* a BIND: CONNECTING waits for the peer */
    uint8_t bind_counted;              /* holds one of bind_max until finish */
} session_t;

/* A password check on the thread pool. Owns copies of the credentials, wiped on free. */
typedef struct verify {
    const socks5_users_t *users; /* the listener's; it outlives every connection */
    int ok;
    uint8_t ulen, plen;
    uint8_t user[255];
    uint8_t pass[255];
    _Alignas(max_align_t) unsigned char scratch[]; /* crypt's working memory */
} verify_t;

static uint64_t now_ns(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Client-chosen bytes made safe for one log line: printable ASCII but space, quote and
 * backslash as is, everything else as \xHH. */
static char *escape(const uint8_t *b, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    char *out = malloc(n * 4 + 1), *o = out;

    if (out == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++) {
        if (b[i] > 0x20 && b[i] < 0x7f && b[i] != '\\' && b[i] != '"') {
            *o++ = (char)b[i];
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[b[i] >> 4];
            *o++ = hex[b[i] & 15];
        }
    }
    *o = '\0';
    return out;
}

static void format_addr(const struct sockaddr_storage *ss, char *out, size_t outlen)
{
    char ip[INET6_ADDRSTRLEN];

    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

        inet_ntop(AF_INET, &s4->sin_addr, ip, sizeof(ip));
        snprintf(out, outlen, "%s:%u", ip, ntohs(s4->sin_port));
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;

        inet_ntop(AF_INET6, &s6->sin6_addr, ip, sizeof(ip));
        snprintf(out, outlen, "[%s]:%u", ip, ntohs(s6->sin6_port));
    } else {
        snprintf(out, outlen, "-");
    }
}

/* The user a verified client certificate names (auth = certificate): the subject's CN, its
 * RFC 2253 escapes undone; without a CN, the first email or DNS subjectAltName. Escaped for
 * logs; NULL when the certificate names no one (or out of memory). */
static char *certificate_user(const berth_tls_info_t *info)
{
    uint8_t buf[256];
    size_t n = 0;
    const char *p = info->client_subject;

    /* RFC 2253: RDNs split by unescaped ',' (or '+' inside one), most specific first. */
    while (p != NULL && *p != '\0') {
        int cn = strncmp(p, "CN=", 3) == 0;

        p += cn ? 3 : 0;
        n = 0;
        while (*p != '\0' && *p != ',' && *p != '+') {
            unsigned hi, lo;

            if (*p == '\\' && p[1] != '\0' && sscanf(p + 1, "%1x%1x", &hi, &lo) == 2) {
                if (cn && n < sizeof(buf))
                    buf[n++] = (uint8_t)(hi << 4 | lo);
                p += 3;
                continue;
            }
            if (*p == '\\' && p[1] != '\0')
                p++;
            if (cn && n < sizeof(buf))
                buf[n++] = (uint8_t)*p;
            p++;
        }
        if (cn && n > 0)
            return escape(buf, n);
        if (*p != '\0')
            p++;
    }
    /* "DNS:a,email:b,IP:c": the first email or DNS name. */
    for (p = info->client_san; p != NULL && *p != '\0';) {
        const char *end = strchr(p, ',');
        size_t len = end ? (size_t)(end - p) : strlen(p);
        size_t skip = strncmp(p, "email:", 6) == 0 ? 6 : strncmp(p, "DNS:", 4) == 0 ? 4 : 0;

        if (skip > 0 && len > skip)
            return escape((const uint8_t *)p + skip, len - skip);
        p += len + (end != NULL);
    }
    return NULL;
}

/* The one info line per session. */
static void log_session(berth_conn_t *conn, session_t *s)
{
    char remote[INET6_ADDRSTRLEN + 16], outcome[160];
    uint64_t ms = ((s->end_ns ? s->end_ns : now_ns()) - s->start_ns) / 1000000u;

    if (s->logged)
        return;
    s->logged = 1;
    /* A connection that never said a word (a port probe, a health check) is no session; nor
     * is each attempt of a throttled brute force (one line per source and minute says it). */
    berth_log_level_t level =
        (s->heard || s->rep != 0xFF) && !s->quiet ? BERTH_LOG_INFO : BERTH_LOG_DEBUG;
    if (BERTH_HOST_HAS(host, log_enabled) && !host->log_enabled(level))
        return; /* nothing formatted for a line that would be dropped */
    format_addr(&s->remote, remote, sizeof(remote));
    if (s->relayed) {
        if (s->relay_error == 0)
            snprintf(outcome, sizeof(outcome), "ok");
        else if (s->relay_error == -ETIMEDOUT)
            snprintf(outcome, sizeof(outcome), "idle timeout");
        else
            snprintf(outcome, sizeof(outcome), "relay error (%s)", strerror(-s->relay_error));
    } else if (s->rep != 0xFF && s->rep != SOCKS5_REP_SUCCEEDED) {
        const char *name = s->sys_errno ? strerrorname_np(s->sys_errno) : NULL;

        snprintf(outcome, sizeof(outcome), "reply %u (%s%s%s)", s->rep, socks5_reply_text(s->rep),
                 name ? ", " : "", name ? name : "");
    } else {
        snprintf(outcome, sizeof(outcome), "%s", s->outcome ? s->outcome : "closed");
    }
    char duration[32];

    snprintf(duration, sizeof(duration), "%llu.%03llus", (unsigned long long)(ms / 1000),
             (unsigned long long)(ms % 1000));
    /* logs: structured fields (json lines carry them as members, text as key=value). */
    if (BERTH_HOST_HAS(host, log_fields)) {
        const berth_log_field_t f[] = {
            {"client", host->peer_name(conn), 0},
            {"user", s->user ? s->user : "-", 0},
            {"dest", s->dest ? s->dest : "-", 0},
            {"remote", remote, 0},
            {"up", NULL, (int64_t)s->bytes_up},
            {"down", NULL, (int64_t)s->bytes_down},
            {"duration", duration, 0},
            {"duration_ms", NULL, (int64_t)ms},
            {"outcome", outcome, 0},
        };
        host->log_fields(conn, level, f, sizeof(f) / sizeof(f[0]), "session");
        return;
    }
    host->log(conn, level,
              "session client=%s user=%s dest=%s remote=%s up=%llu down=%llu duration=%s "
              "outcome=%s",
              host->peer_name(conn), s->user ? s->user : "-", s->dest ? s->dest : "-", remote,
              (unsigned long long)s->bytes_up, (unsigned long long)s->bytes_down, duration,
              outcome);
}

static void stop_timer(session_t *s)
{
    if (s->timer != NULL) {
        host->timer_stop(s->timer);
        s->timer = NULL;
    }
}

static void pause_reading(berth_conn_t *conn, session_t *s)
{
    if (!s->paused) {
        host->pause(conn);
        s->paused = 1;
    }
}

static void resume_reading(berth_conn_t *conn, session_t *s)
{
    if (s->paused) {
        host->resume(conn);
        s->paused = 0;
    }
}

static void free_pending(session_t *s)
{
    free(s->pending);
    s->pending = NULL;
    s->npending = 0;
}

/* End the session without a reply: `how` is the outcome for the log. */
static void drop(berth_conn_t *conn, session_t *s, const char *how, int now)
{
    s->outcome = how;
    s->state = ST_DONE;
    s->end_ns = now_ns();
    stop_timer(s);
    if (now)
        host->abort(conn);
    else
        host->close(conn);
}

/* End the session with a bytes reply (auth status or method choice), then close. */
static void answer_and_close(berth_conn_t *conn, session_t *s, const uint8_t *msg, size_t len,
                             const char *how)
{
    drop(conn, s, how, host->write(conn, msg, len) < 0);
}

/* A failed request: the reply with code `rep` and 0.0.0.0:0, then close. */
static void fail(berth_conn_t *conn, session_t *s, uint8_t rep)
{
    uint8_t buf[SOCKS5_MAX_REPLY];
    size_t n = socks5_reply(buf, rep, NULL);

    s->rep = rep;
    answer_and_close(conn, s, buf, n, NULL);
}

static void stash(berth_conn_t *conn, session_t *s, const uint8_t *p, size_t len)
{
    uint8_t *n;

    if (len > SOCKS5_MAX_PENDING - s->npending) {
        drop(conn, s, "too much data before the reply", 1);
        return;
    }
    n = realloc(s->pending, s->npending + len);
    if (n == NULL) {
        drop(conn, s, "out of memory", 1);
        return;
    }
    memcpy(n + s->npending, p, len);
    s->pending = n;
    s->npending += len;
    /* Most clients wait for the reply, so reading is paused only once one does not: what
     * it sends next waits in the kernel. (Pausing up front costs every session two
     * epoll_ctl calls.) */
    pause_reading(conn, s);
}

static void consume(berth_conn_t *conn, session_t *s, const uint8_t *p, size_t len);

static void on_greeting(berth_conn_t *conn, session_t *s, const socks5_greeting_t *g)
{
    uint8_t reply[2] = {SOCKS5_VERSION, socks5_choose_method(g, s->cfg->method)};

    if (reply[1] == SOCKS5_METHOD_UNACCEPTABLE) {
        answer_and_close(conn, s, reply, sizeof(reply), "no acceptable auth method");
        return;
    }
    if (host->write(conn, reply, sizeof(reply)) < 0) {
        drop(conn, s, "client gone", 1);
        return;
    }
    if (reply[1] == SOCKS5_METHOD_PASSWORD) {
        socks5_parser_expect(s->parser, SOCKS5_PHASE_AUTH);
        s->state = ST_AUTH;
    } else {
        socks5_parser_expect(s->parser, SOCKS5_PHASE_REQUEST);
        s->state = ST_REQUEST;
    }
}

static void verify_free(verify_t *v)
{
    explicit_bzero(v, sizeof(*v) + socks5_users_scratch_size());
    free(v);
}

static void verify_work(void *arg)
{
    verify_t *v = arg;

    v->ok = socks5_users_verify(v->users, v->user, v->ulen, v->pass, v->plen, v->scratch);
}

static uint64_t now_ms(void)
{
    return now_ns() / 1000000u;
}

static void log_throttle(berth_conn_t *conn, const socks5_throttle_verdict_t *tv)
{
    if (tv->log_failures > 0)
        host->log(conn, BERTH_LOG_WARN, "%u failed password attempts from %s, throttled",
                  tv->log_failures, tv->source);
}

static void on_fail_delay(berth_conn_t *conn, void *arg)
{
    static const uint8_t bad_reply[2] = {SOCKS5_AUTH_VERSION, 0x01};
    session_t *s = host->state(conn);

    s->delay_timer = NULL; /* fired: gone */
    if (s->state == ST_VERIFYING)
        answer_and_close(conn, s, bad_reply, sizeof(bad_reply), "auth failed");
}

static void verify_done(berth_conn_t *conn, void *arg, int status)
{
    static const uint8_t ok_reply[2] = {SOCKS5_AUTH_VERSION, 0x00};
    static const uint8_t bad_reply[2] = {SOCKS5_AUTH_VERSION, 0x01};
    verify_t *v = arg;
    int ok = status == 0 && v->ok;
    session_t *s = host->state(conn);
    uint8_t *held;
    size_t nheld;

    verify_free(v);
    if (status != 0 || s->state != ST_VERIFYING)
        return; /* the conn ended (or timed out) meanwhile */
    if (!ok) {
        socks5_throttle_verdict_t tv;

        socks5_throttle_failed(s->cfg->throttle, host->peer_addr(conn, &(socklen_t){0}), now_ms(),
                               &tv);
        log_throttle(conn, &tv);
        if (tv.delay_ms > 0) {
            /* Held back on a timer, never the loop; still VERIFYING meanwhile, so the
             * handshake timeout may end it first. */
            s->quiet = 1;
            s->delay_timer = host->timer_start(conn, tv.delay_ms, on_fail_delay, NULL);
            if (s->delay_timer != NULL)
                return;
        }
        answer_and_close(conn, s, bad_reply, sizeof(bad_reply), "auth failed");
        return;
    }
    if (host->write(conn, ok_reply, sizeof(ok_reply)) < 0) {
        drop(conn, s, "client gone", 1);
        return;
    }
    socks5_parser_expect(s->parser, SOCKS5_PHASE_REQUEST);
    s->state = ST_REQUEST;
    /* A client that sent its request without waiting: go on with it now. */
    held = s->pending;
    nheld = s->npending;
    s->pending = NULL;
    s->npending = 0;
    if (nheld > 0)
        consume(conn, s, held, nheld);
    free(held);
    if (s->state == ST_REQUEST && s->client_eof)
        drop(conn, s, "client closed mid-handshake", 0);
    else if (s->state == ST_REQUEST)
        resume_reading(conn, s);
}

static void on_auth(berth_conn_t *conn, session_t *s, const socks5_auth_t *a)
{
    static const uint8_t bad_reply[2] = {SOCKS5_AUTH_VERSION, 0x01};
    size_t scratch = socks5_users_scratch_size();
    socks5_throttle_verdict_t tv;
    verify_t *v;

    free(s->user);
    s->user = escape(a->user, a->ulen);
    /* A blocked source is refused before its password costs a crypt() on the pool. */
    socks5_throttle_attempt(s->cfg->throttle, host->peer_addr(conn, &(socklen_t){0}), now_ms(),
                            &tv);
    log_throttle(conn, &tv);
    if (tv.blocked) {
        explicit_bzero(s->parser->buf, sizeof(s->parser->buf));
        s->quiet = 1;
        answer_and_close(conn, s, bad_reply, sizeof(bad_reply), "auth refused: source throttled");
        return;
    }
    v = malloc(sizeof(*v) + scratch);
    if (v == NULL || s->user == NULL) {
        free(v);
        drop(conn, s, "out of memory", 1);
        return;
    }
    v->users = s->cfg->users;
    v->ok = 0;
    v->ulen = a->ulen;
    v->plen = a->plen;
    memcpy(v->user, a->user, a->ulen);
    memcpy(v->pass, a->pass, a->plen);
    /* The password now lives only in v, which is wiped when freed. */
    explicit_bzero(s->parser->buf, sizeof(s->parser->buf));

    s->state = ST_VERIFYING;
    if (host->work(conn, verify_work, verify_done, v) < 0) {
        verify_free(v);
        answer_and_close(conn, s, bad_reply, sizeof(bad_reply), "auth not checked");
    }
}

static void on_relay_done(berth_conn_t *conn, const berth_relay_stats_t *stats, void *arg)
{
    session_t *s = host->state(conn);

    s->bytes_up += stats->bytes_up;
    s->bytes_down += stats->bytes_down;
    s->relay_error = stats->error;
    s->state = ST_DONE;
    log_session(conn, s);
}

static void on_connected(berth_conn_t *conn, const berth_connect_result_t *res, void *arg)
{
    session_t *s = host->state(conn);
    uint8_t reply[SOCKS5_MAX_REPLY];
    size_t n;

    if (s->state != ST_CONNECTING) {
        /* We gave up first (connect timer, client gone): nobody wants this peer. */
        if (res->peer != NULL)
            host->close(res->peer);
        return;
    }
    stop_timer(s);
    if (res->remote.ss_family == AF_INET || res->remote.ss_family == AF_INET6)
        s->remote = res->remote;
    if (res->error != BERTH_CONNECT_OK || res->peer == NULL) {
        s->sys_errno = res->sys_errno;
        fail(conn, s, socks5_reply_for_connect_error(res->error));
        return;
    }

    /* BIND's second reply names the peer that connected; CONNECT's our end of it. */
    n = socks5_reply(reply, SOCKS5_REP_SUCCEEDED,
                     (const struct sockaddr *)(s->binding ? &res->remote : &res->local));
    s->rep = SOCKS5_REP_SUCCEEDED;
    if (host->write(conn, reply, n) < 0 ||
        (s->npending > 0 && host->write(res->peer, s->pending, s->npending) < 0)) {
        host->close(res->peer);
        drop(conn, s, "client gone", 1);
        return;
    }
    /* Early data (sent along with the request) has gone to the peer: count it. */
    s->bytes_up = s->npending;
    free_pending(s);
    free(s->parser);
    s->parser = NULL;

    s->state = ST_RELAY;
    s->relayed = 1;
    resume_reading(conn, s);
    if (host->relay(conn, res->peer, s->cfg->idle_ms, on_relay_done, NULL) < 0) {
        host->close(res->peer);
        s->relayed = 0;
        drop(conn, s, "relay not started", 1);
    }
}

/* Each address the destination resolved to, before the host connects to it. */
static int allow_dest_cb(berth_conn_t *conn, const struct sockaddr *addr, void *arg)
{
    session_t *s = host->state(conn);
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (addr->sa_family == AF_INET) {
        memcpy(&ss, addr, sizeof(struct sockaddr_in));
        ((struct sockaddr_in *)&ss)->sin_port = htons(s->port);
    } else if (addr->sa_family == AF_INET6) {
        memcpy(&ss, addr, sizeof(struct sockaddr_in6));
        ((struct sockaddr_in6 *)&ss)->sin6_port = htons(s->port);
    } else {
        return -EAFNOSUPPORT;
    }
    s->remote = ss;
    return socks5_dest_allowed(s->cfg, (const struct sockaddr *)&ss) ? 0 : -EACCES;
}

/* BIND: each connection to the listening port, before it is taken as the peer. */
static int bind_peer_cb(berth_conn_t *conn, const struct sockaddr *addr, void *arg)
{
    session_t *s = host->state(conn);
    char who[INET6_ADDRSTRLEN + 16];
    struct sockaddr_storage ss;

    (void)arg;
    if (socks5_bind_peer_ok(s->cfg, (const struct sockaddr *)&s->bind_want, addr, s->port))
        return 0;
    memset(&ss, 0, sizeof(ss));
    memcpy(&ss, addr,
           addr->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in));
    format_addr(&ss, who, sizeof(who));
    /* Anyone may knock on the port: one line a second per listener, with the count of the
     * ones kept quiet, so a flood of strangers cannot flood the log. */
    struct socks5_bind_live *live = s->cfg->bind_live;
    uint64_t now = now_ms();
    if (live == NULL || live->refused_log_ms == 0 || now - live->refused_log_ms >= 1000) {
        if (live != NULL && live->refused_quiet > 0)
            host->log(conn, BERTH_LOG_INFO,
                      "bind: refused a connection from %s (not %s, or not allowed); "
                      "%llu more refused since the last such line",
                      who, s->dest, (unsigned long long)live->refused_quiet);
        else
            host->log(conn, BERTH_LOG_INFO,
                      "bind: refused a connection from %s (not %s, or not allowed)", who, s->dest);
        if (live != NULL) {
            live->refused_log_ms = now ? now : 1;
            live->refused_quiet = 0;
        }
    } else {
        live->refused_quiet++;
    }
    return -EACCES;
}

/* BIND (RFC 1928 section 6): listen, the first reply names where, the second the peer. */
static void on_bind(berth_conn_t *conn, session_t *s, const socks5_request_t *r)
{
    uint8_t reply[SOCKS5_MAX_REPLY];
    struct sockaddr_storage at, bound;
    socklen_t len = 0;
    const struct sockaddr *local = host->local_addr(conn, &len);
    size_t n;

    if (!s->cfg->bind || !BERTH_HOST_HAS(host, listen_once)) {
        fail(conn, s, SOCKS5_REP_CMD_UNSUPPORTED);
        return;
    }
    if (s->cfg->bind_live->active >= s->cfg->bind_max) {
        host->log(conn, BERTH_LOG_WARN, "bind: bind_max (%u) reached, request refused",
                  s->cfg->bind_max);
        socks5_metrics_bind(s->cfg->metrics, 0);
        fail(conn, s, SOCKS5_REP_GENERAL_FAILURE);
        return;
    }
    /* DST.ADDR, when an address other than the unspecified one, is who must connect. */
    memset(&s->bind_want, 0, sizeof(s->bind_want));
    if (r->atyp == SOCKS5_ATYP_IPV4 && memcmp(r->addr, "\0\0\0\0", 4) != 0) {
        s->bind_want.ss_family = AF_INET;
        memcpy(&((struct sockaddr_in *)&s->bind_want)->sin_addr, r->addr, 4);
    } else if (r->atyp == SOCKS5_ATYP_IPV6 &&
               !IN6_IS_ADDR_UNSPECIFIED((const struct in6_addr *)(const void *)r->addr)) {
        struct in6_addr a;

        memcpy(&a, r->addr, 16);
        if (IN6_IS_ADDR_V4MAPPED(&a)) {
            s->bind_want.ss_family = AF_INET;
            memcpy(&((struct sockaddr_in *)&s->bind_want)->sin_addr, r->addr + 12, 4);
        } else {
            s->bind_want.ss_family = AF_INET6;
            ((struct sockaddr_in6 *)&s->bind_want)->sin6_addr = a;
        }
    }
    /* The port opens on the address the client reached us at. */
    memset(&at, 0, sizeof(at));
    if (local == NULL || (local->sa_family != AF_INET && local->sa_family != AF_INET6)) {
        fail(conn, s, SOCKS5_REP_GENERAL_FAILURE);
        return;
    }
    memcpy(&at, local,
           local->sa_family == AF_INET ? sizeof(struct sockaddr_in) : sizeof(struct sockaddr_in6));
    if (at.ss_family == AF_INET)
        ((struct sockaddr_in *)&at)->sin_port = 0;
    else
        ((struct sockaddr_in6 *)&at)->sin6_port = 0;
    stop_timer(s);
    s->binding = 1;
    s->state = ST_CONNECTING;
    if (host->listen_once(conn, (const struct sockaddr *)&at, s->cfg->bind_ms, bind_peer_cb,
                          on_connected, NULL, &bound) < 0) {
        fail(conn, s, SOCKS5_REP_GENERAL_FAILURE);
        return;
    }
    s->bind_counted = 1;
    s->cfg->bind_live->active++;
    socks5_metrics_bind(s->cfg->metrics, 1);
    n = socks5_reply(reply, SOCKS5_REP_SUCCEEDED, (const struct sockaddr *)&bound);
    if (host->write(conn, reply, n) < 0)
        drop(conn, s, "client gone", 1);
}

/* UDP ASSOCIATE: the reply names the relay's socket; the connection then only keeps the
 * association alive. */
static void on_udp(berth_conn_t *conn, session_t *s, const socks5_request_t *r)
{
    uint8_t reply[SOCKS5_MAX_REPLY], code;
    struct sockaddr_storage bnd;
    size_t n;

    s->udp = socks5_udp_start(host, conn, s->cfg, r, &bnd, &code);
    if (s->udp == NULL) {
        fail(conn, s, code);
        return;
    }
    stop_timer(s);
    s->state = ST_UDP;
    s->rep = SOCKS5_REP_SUCCEEDED;
    n = socks5_reply(reply, SOCKS5_REP_SUCCEEDED, (const struct sockaddr *)&bnd);
    if (host->write(conn, reply, n) < 0)
        drop(conn, s, "client gone", 1);
}

static void on_handshake_timeout(berth_conn_t *conn, void *arg)
{
    session_t *s = host->state(conn);

    s->timer = NULL;
    if (s->state < ST_CONNECTING)
        drop(conn, s, "handshake timeout", 0);
}

static void on_request(berth_conn_t *conn, session_t *s, const socks5_request_t *r)
{
    char ip[INET6_ADDRSTRLEN], dest[INET6_ADDRSTRLEN + 16];
    const char *target = ip;
    int literal = 1;

    s->port = r->port;
    memset(&s->remote, 0, sizeof(s->remote));
    if (r->atyp == SOCKS5_ATYP_IPV4) {
        struct sockaddr_in *s4 = (struct sockaddr_in *)&s->remote;

        s4->sin_family = AF_INET;
        memcpy(&s4->sin_addr, r->addr, 4);
        s4->sin_port = htons(r->port);
        inet_ntop(AF_INET, r->addr, ip, sizeof(ip));
        format_addr(&s->remote, dest, sizeof(dest));
        s->dest = strdup(dest);
    } else if (r->atyp == SOCKS5_ATYP_IPV6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&s->remote;

        s6->sin6_family = AF_INET6;
        memcpy(&s6->sin6_addr, r->addr, 16);
        s6->sin6_port = htons(r->port);
        inet_ntop(AF_INET6, r->addr, ip, sizeof(ip));
        format_addr(&s->remote, dest, sizeof(dest));
        s->dest = strdup(dest);
    } else {
        char *name = escape((const uint8_t *)r->name, r->namelen);

        target = r->name;
        literal = 0;
        if (name != NULL) {
            size_t len = strlen(name) + 8;

            s->dest = malloc(len);
            if (s->dest != NULL)
                snprintf(s->dest, len, "%s:%u", name, r->port);
            free(name);
        }
    }
    if (s->dest == NULL) {
        drop(conn, s, "out of memory", 1);
        return;
    }
    if (r->cmd == SOCKS5_CMD_UDP_ASSOCIATE) {
        on_udp(conn, s, r);
        return;
    }
    if (r->cmd == SOCKS5_CMD_BIND) {
        on_bind(conn, s, r);
        return;
    }
    if (r->cmd != SOCKS5_CMD_CONNECT) {
        fail(conn, s, SOCKS5_REP_CMD_UNSUPPORTED);
        return;
    }
    /* A literal address is judged here already; every address, literal or resolved, is
     * judged again in allow_dest_cb. */
    if (literal && !socks5_dest_allowed(s->cfg, (const struct sockaddr *)&s->remote)) {
        fail(conn, s, SOCKS5_REP_NOT_ALLOWED);
        return;
    }

    /* host->connect's deadline is the connect timer: it answers BERTH_CONNECT_TIMEOUT (TTL
     * expired), also while a name is still resolving. */
    stop_timer(s);
    s->state = ST_CONNECTING;
    if (host->connect(conn, target, r->port, s->cfg->connect_ms, allow_dest_cb, on_connected,
                      NULL) < 0)
        fail(conn, s, SOCKS5_REP_GENERAL_FAILURE);
}

/* Run bytes through the parser while the session is in a handshake phase; what is left when
 * it starts waiting (password check, connect) is kept for later. */
static void consume(berth_conn_t *conn, session_t *s, const uint8_t *p, size_t len)
{
    while (s->state == ST_GREETING || s->state == ST_AUTH || s->state == ST_REQUEST) {
        socks5_msg_t msg;
        size_t used;
        int rc = socks5_parser_feed(s->parser, p, len, &used, &msg);

        p += used;
        len -= used;
        switch (rc) {
        case SOCKS5_NEED_MORE:
            return;
        case SOCKS5_MSG_GREETING:
            on_greeting(conn, s, &msg.greeting);
            break;
        case SOCKS5_MSG_AUTH:
            on_auth(conn, s, &msg.auth);
            explicit_bzero(&msg.auth, sizeof(msg.auth));
            break;
        case SOCKS5_MSG_REQUEST:
            on_request(conn, s, &msg.request);
            break;
        case SOCKS5_ERR_ATYP:
            fail(conn, s, SOCKS5_REP_ATYP_UNSUPPORTED);
            break;
        case SOCKS5_ERR_NAME:
            fail(conn, s, SOCKS5_REP_GENERAL_FAILURE);
            break;
        default:
            drop(conn, s, "not SOCKS5 (bad version byte)", 0);
            break;
        }
    }
    if (len > 0 && (s->state == ST_VERIFYING || s->state == ST_CONNECTING))
        stash(conn, s, p, len);
}

static int socks5_load(const berth_host_t *h)
{
    if (h->abi_version != BERTH_ABI_VERSION || !BERTH_HOST_HAS(h, listener_options))
        return -ENOTSUP;
    host = h;
    return 0;
}

static int socks5_check_option(berth_listener_t *l, const char *key, const char *value, char *err,
                               size_t errlen)
{
    return socks5_config_check(host, key, value, err, errlen);
}

static const char *listener_option(void *ctx, const char *key)
{
    return host->option(ctx, key);
}

static int socks5_listener_open(berth_listener_t *l, void **state, char *err, size_t errlen)
{
    berth_protocol_t proto = host->listener_protocol(l);
    socks5_config_t *cfg;
    int rc;

    if (proto != BERTH_PROTO_TCP && proto != BERTH_PROTO_UNIX) {
        snprintf(err, errlen, "socks5 serves stream listeners only (protocol tcp or unix)");
        return -EINVAL;
    }
    rc =
        socks5_config_build(host, host->listener_options(l), listener_option, l, &cfg, err, errlen);
    if (rc < 0)
        return rc;
    if (cfg->certificate && (!BERTH_HOST_HAS(host, listener_tls_verify) ||
                             host->listener_tls_verify(l) != BERTH_TLS_VERIFY_REQUIRE)) {
        snprintf(err, errlen,
                 "auth = certificate needs TLS with client certificates required on this "
                 "listener (tls_certificate, tls_key, tls_client_ca, "
                 "tls_verify_client = require)");
        socks5_config_free(cfg);
        return -EINVAL;
    }
    if ((cfg->udp || cfg->bind) && proto != BERTH_PROTO_TCP) {
        snprintf(err, errlen,
                 "udp and bind need a tcp listener (the client's address is "
                 "what a UDP association and a BIND check)");
        socks5_config_free(cfg);
        return -EINVAL;
    }
    /* sandbox: CONNECT reaches any port allow_dest lets through (the allow_dest check is
     * ours, per address, in allow_dest_cb). */
    if (BERTH_HOST_HAS(host, allow_bind) && (rc = host->allow_connect(l, BERTH_PORT_ANY)) < 0) {
        snprintf(err, errlen, "cannot declare outbound access to the sandbox: %s", strerror(-rc));
        socks5_config_free(cfg);
        return rc;
    }
    /* sandbox: BIND listens on an ephemeral port of the worker's own (bind_listen_socket). */
    if (cfg->bind && BERTH_HOST_HAS(host, allow_bind) && (rc = host->allow_bind(l, 0)) < 0) {
        snprintf(err, errlen, "cannot declare BIND's listening ports to the sandbox: %s",
                 strerror(-rc));
        socks5_config_free(cfg);
        return rc;
    }
    if (cfg->allow_dest.count == 0)
        host->log_listener(l, BERTH_LOG_WARN,
                           "no allow_dest: every CONNECT is refused until allow_dest says what "
                           "may be reached");
    cfg->metrics = socks5_metrics_open(host, l, cfg->udp, cfg->bind);
    *state = cfg;
    return 0;
}

static void socks5_listener_close(berth_listener_t *l, void *state)
{
    socks5_config_t *cfg = state;

    (void)l;
    if (cfg != NULL)
        socks5_metrics_close(cfg->metrics);
    socks5_config_free(cfg);
}

static int socks5_setup(berth_conn_t *conn)
{
    session_t *s = host->state(conn);

    s->rep = 0xFF;
    s->start_ns = now_ns();
    s->cfg = host->listener_state(conn);
    if (s->cfg == NULL) {
        s->outcome = "no listener state";
        return -EINVAL;
    }
    s->parser = malloc(sizeof(*s->parser));
    if (s->parser == NULL) {
        s->outcome = "out of memory";
        return -ENOMEM;
    }
    socks5_parser_init(s->parser);
    if (s->cfg->certificate) {
        berth_tls_info_t info;

        /* listener_open made sure the listener requires a verified client certificate;
         * a conn without one (or naming no one) is refused all the same. */
        if (host->tls_info(conn, &info) < 0 || info.client_subject == NULL) {
            s->outcome = "no client certificate";
            return -EPERM;
        }
        s->user = certificate_user(&info);
        if (s->user == NULL) {
            s->outcome = "client certificate names no user (no CN, email or DNS name)";
            return -EPERM;
        }
    }
    s->timer = host->timer_start(conn, s->cfg->handshake_ms, on_handshake_timeout, NULL);
    if (s->timer == NULL) {
        s->outcome = "out of memory";
        return -ENOMEM;
    }
    return 0;
}

static void socks5_handle(berth_conn_t *conn, const void *data, size_t len)
{
    session_t *s = host->state(conn);

    s->heard = 1;
    switch (s->state) {
    case ST_GREETING:
    case ST_AUTH:
    case ST_REQUEST:
        consume(conn, s, data, len);
        break;
    case ST_VERIFYING:
    case ST_CONNECTING:
        stash(conn, s, data, len);
        break;
    default:
        break;
    }
}

static void socks5_eof(berth_conn_t *conn)
{
    session_t *s = host->state(conn);

    switch (s->state) {
    case ST_GREETING:
    case ST_AUTH:
    case ST_REQUEST:
        drop(conn, s,
             s->state == ST_GREETING && s->parser->len == 0 ? "client closed"
                                                            : "client closed mid-handshake",
             0);
        break;
    case ST_UDP:
        /* RFC 1928: the association ends with its TCP connection. */
        drop(conn, s, "udp association: client closed", 0);
        break;
    case ST_CONNECTING:
        if (s->binding) {
            /* Nobody to carry a half-close to yet: the BIND port closes now rather than at
             * bind_timeout. */
            drop(conn, s, "client closed while waiting for the BIND peer", 0);
            break;
        }
        /* fall through */
    case ST_VERIFYING:
        /* A client may send its request (and data) and half-close at once. The host keeps
         * the EOF and a relay starts from it; a handshake still short of its request after
         * the password check ends then (verify_done). */
        s->client_eof = 1;
        break;
    default:
        break; /* closing already, or the relay's */
    }
}

static void socks5_finish(berth_conn_t *conn)
{
    session_t *s = host->state(conn);

    if (s->udp != NULL && s->outcome == NULL)
        s->outcome =
            socks5_udp_outcome(s->udp) ? socks5_udp_outcome(s->udp) : "udp association ended";
    socks5_udp_end(s->udp);
    s->udp = NULL;
    if (s->bind_counted) {
        s->bind_counted = 0;
        s->cfg->bind_live->active--;
    }
    if (s->cfg != NULL)
        log_session(conn, s);
    if (s->cfg != NULL)
        socks5_metrics_session(s->cfg->metrics, s->rep, s->bytes_up, s->bytes_down);
    if (s->parser != NULL) {
        explicit_bzero(s->parser, sizeof(*s->parser));
        free(s->parser);
        s->parser = NULL;
    }
    free_pending(s);
    free(s->user);
    s->user = NULL;
    free(s->dest);
    s->dest = NULL;
}

BERTH_HANDLER = {
    BERTH_HANDLER_INIT("socks5"),
    .version = BERTH_VERSION,
    .conn_size = sizeof(session_t),
    .load = socks5_load,
    .check_option = socks5_check_option,
    .options = socks5_options,
    .options_size = sizeof(socks5_opts_t),
    .listener_open = socks5_listener_open,
    .listener_close = socks5_listener_close,
    .setup = socks5_setup,
    .handle = socks5_handle,
    .eof = socks5_eof,
    .finish = socks5_finish,
};
