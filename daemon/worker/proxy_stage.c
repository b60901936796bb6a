/*
 * The PROXY protocol stage (see proxy_stage.h). It takes the conn's input through the hook
 * slot and reads the socket itself, so the plugin's read path is untouched and a conn without
 * a header costs nothing here. Bytes read past the header in the same recv() are the
 * plugin's: they go to handle() right after setup().
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "berth/proxy.h"
#include "core/log.h"
#include "worker/proxy_stage.h"
#include "worker/source.h"

/* One recv(): the longest header, and what may follow it in the same segment. */
#define STAGE_READ 4096

typedef struct proxy_stage {
    berth_timer_t *timer;
    berth_proxy_t parser;
} proxy_stage_t;

static void stage_on_close(berth_conn_t *c, void *arg);
static int stage_on_readable(berth_conn_t *c, void *arg);

static const conn_hooks_t stage_hooks = {
    .on_close = stage_on_close,
    .on_readable = stage_on_readable,
    .takes_input = 1,
};

int proxy_stage_admit(berth_listener_t *l, const struct sockaddr *peer)
{
    /* A unix listener's peers are whoever its socket file's mode lets connect. */
    if (peer->sa_family == AF_UNIX || berth_cidr_list_match(&l->cfg->proxy_from, peer))
        return 1;
    atomic_fetch_add(&l->st->refused_proxy, 1);
    return 0;
}

/* The stage is over, one way or another: the hook slot is emptied and the stage freed. */
static void stage_end(berth_conn_t *c, proxy_stage_t *s)
{
    if (s->timer)
        conn_timer_stop(s->timer);
    conn_set_hooks(c, NULL, NULL);
    free(s);
}

/* A header that will not do: counted, logged (the balancer is misconfigured or something
 * else reached the port), and the conn ends without setup(). */
static void stage_fail(berth_conn_t *c, proxy_stage_t *s, const char *why)
{
    berth_listener_t *l = conn_listener(c);
    atomic_fetch_add(&l->st->refused_proxy, 1);
    log_info("%s %s: PROXY header: %s; closing", l->cfg->name, conn_name(c), why);
    stage_end(c, s);
    conn_abort(c);
}

static void stage_on_close(berth_conn_t *c, void *arg)
{
    proxy_stage_t *s = arg;
    /* The conn ends under the stage (drain deadline, linger bound): its timers are gone. */
    s->timer = NULL;
    conn_set_hooks(c, NULL, NULL);
    free(s);
}

static void stage_on_timeout(berth_conn_t *c, void *arg)
{
    proxy_stage_t *s = arg;
    s->timer = NULL; /* a timer that ran is gone */
    stage_fail(c, s,
               berth_proxy_pending(&s->parser) ? "not complete in proxy_timeout"
                                               : "none within proxy_timeout");
}

/* The header is in: the peer it names becomes the conn's, then allow/deny and setup(). */
static void stage_done(berth_conn_t *c, proxy_stage_t *s, const unsigned char *rest, size_t n)
{
    berth_listener_t *l = conn_listener(c);
    const berth_proxy_result_t *r = &s->parser.result;
    if (r->command == BERTH_PROXY_CMD_LOCAL) {
        /* The balancer's own health check: it got this far, that is the answer. */
        log_debug("%s %s: PROXY LOCAL (a health check); closing", l->cfg->name, conn_name(c));
        stage_end(c, s);
        conn_close(c);
        return;
    }
    if (r->family != AF_UNSPEC) {
        int rc = conn_set_peer(c, (const struct sockaddr *)&r->src, r->srclen);
        if (rc) {
            stage_fail(c, s, strerror(-rc));
            return;
        }
    }
    /* UNKNOWN/UNSPEC: the balancer's own address stands, and is what allow/deny judge. */
    stage_end(c, s);
    if (!berth_cidr_permit(&l->cfg->allow, &l->cfg->deny, conn_peer_addr(c, NULL))) {
        atomic_fetch_add(&l->st->refused_acl, 1);
        log_debug("%s %s: refused by allow/deny", l->cfg->name, conn_name(c));
        conn_abort(c);
        return;
    }
    int32_t source;
    int over = source_admit(l, conn_peer_addr(c, NULL), &source);
    if (over > 0) {
        source_wait_park(c, rest, n); /* over_limit = wait: until one of its source ends */
        return;
    }
    if (over < 0) {
        conn_abort(c);
        return;
    }
    conn_hold_source(c, source);
    conn_begin(c, rest, n);
}

static int stage_on_readable(berth_conn_t *c, void *arg)
{
    proxy_stage_t *s = arg;
    unsigned char buf[STAGE_READ];
    int fd = conn_fd(c);
    ssize_t got = fd < 0 ? -1 : recv(fd, buf, sizeof buf, 0);
    if (got < 0 && errno == EINTR)
        return 0;
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
        return 1;
    if (got <= 0) {
        /* The peer left (or reset) before a whole header: a port check if it sent nothing. */
        conn_mark_eof(c);
        if (got < 0 || berth_proxy_pending(&s->parser)) {
            stage_fail(c, s, got < 0 ? strerror(errno) : "cut short by the peer's EOF");
        } else {
            stage_end(c, s);
            conn_close(c);
        }
        return 1;
    }
    conn_touch(c);
    conn_count_in(c, (size_t)got);
    size_t used = 0;
    int rc = berth_proxy_feed(&s->parser, buf, (size_t)got, &used);
    if (rc < 0)
        stage_fail(c, s, berth_proxy_strerror(rc));
    else if (rc == 1)
        stage_done(c, s, buf + used, (size_t)got - used);
    return (size_t)got < sizeof buf; /* a short read found the socket dry */
}

void proxy_stage_start(berth_conn_t *c)
{
    const config_listener_t *cfg = conn_listener(c)->cfg;
    proxy_stage_t *s = malloc(sizeof *s);
    if (s == NULL) {
        atomic_fetch_add(&conn_listener(c)->st->errors, 1);
        conn_abort(c);
        return;
    }
    berth_proxy_init(&s->parser, cfg->proxy_protocol);
    conn_set_hooks(c, &stage_hooks, s);
    s->timer = conn_timer_start(c, cfg->proxy_timeout, stage_on_timeout, s);
    if (s->timer == NULL) {
        atomic_fetch_add(&conn_listener(c)->st->errors, 1);
        stage_end(c, s);
        conn_abort(c);
        return;
    }
    conn_watch_read(c, 1);
}
