/* Per-source limits of a listener (see source.h). */
#include "worker/source.h"

#include <stdlib.h>
#include <string.h>

#include "core/limits.h"
#include "core/log.h"
#include "worker/conn.h"

int source_limited(const berth_listener_t *l)
{
    return l->cfg->per_source || l->cfg->rate;
}

static int ask(berth_listener_t *l, const struct sockaddr *peer, int32_t *entry)
{
    const config_listener_t *cfg = l->cfg;
    limits_rule_t r = {
        .per_source = cfg->per_source,
        .rate = cfg->rate,
        .burst = cfg->burst,
        .prefix6 = cfg->per_source_prefix6,
        .listener = l->slot,
        .name = cfg->name,
        .full_closed = l->w->cfg->per_source_table_full_closed,
        .over_wait = cfg->over_limit_wait && l->stream,
    };
    return limits_admit(&r, l->w->slot, peer, entry);
}

int source_admit(berth_listener_t *l, const struct sockaddr *peer, int32_t *entry)
{
    *entry = -1;
    if (!source_limited(l))
        return 0;
    int v = ask(l, peer, entry);
    if (v == LIMITS_OK)
        return 0;
    if (v == LIMITS_OVER_CONNS && l->cfg->over_limit_wait && l->stream &&
        l->source_waiting < l->cfg->concurrency)
        return 1;
    atomic_fetch_add(&l->st->refused_source, 1);
    return -1;
}

/* ---- over_limit = wait ---- */

typedef struct waiter {
    berth_timer_t *timer;
    size_t n;
    unsigned char rest[]; /* bytes that came after the PROXY header */
} waiter_t;

static void wait_on_close(berth_conn_t *c, void *arg);
static int wait_on_readable(berth_conn_t *c, void *arg);

static const conn_hooks_t wait_hooks = {
    .on_close = wait_on_close,
    .on_readable = wait_on_readable,
    .takes_input = 1, /* nothing is read while it waits */
};

static void wait_on_close(berth_conn_t *c, void *arg)
{
    waiter_t *wt = arg;
    /* It ends while waiting (idle_timeout, drain deadline): its timers are gone. */
    wt->timer = NULL;
    conn_listener(c)->source_waiting--;
    conn_set_hooks(c, NULL, NULL);
    free(wt);
}

static int wait_on_readable(berth_conn_t *c, void *arg)
{
    (void)arg;
    conn_watch_read(c, 0);
    return 0; /* nothing was read: it waits for when the conn begins */
}

static void wait_retry(berth_conn_t *c, void *arg)
{
    waiter_t *wt = arg;
    berth_listener_t *l = conn_listener(c);
    int32_t entry = -1;
    wt->timer = NULL; /* a timer that ran is gone */
    /* A slot first (it may wait for one too), then the source's room. */
    int v = LIMITS_OVER_CONNS;
    if (worker_slot_take(l) == 0) {
        v = ask(l, conn_peer_addr(c, NULL), &entry);
        if (v == LIMITS_OK)
            conn_set_counted(c, 1);
        else
            worker_slot_give_back(l);
    }
    if (v == LIMITS_OVER_CONNS) {
        wt->timer = conn_timer_start(c, SOURCE_WAIT_RECHECK_MS, wait_retry, wt);
        if (wt->timer)
            return;
        atomic_fetch_add(&l->st->errors, 1);
    }
    l->source_waiting--;
    conn_set_hooks(c, NULL, NULL);
    if (v != LIMITS_OK) {
        if (v != LIMITS_OVER_CONNS)
            atomic_fetch_add(&l->st->refused_source, 1);
        free(wt);
        conn_abort(c);
        return;
    }
    log_debug("%s %s: its source is under per_source again; serving it", l->cfg->name,
              conn_name(c));
    conn_hold_source(c, entry);
    conn_begin(c, wt->rest, wt->n);
    free(wt);
}

void source_wait_park(berth_conn_t *c, const void *rest, size_t n)
{
    berth_listener_t *l = conn_listener(c);
    waiter_t *wt = malloc(sizeof *wt + n);
    if (wt == NULL) {
        atomic_fetch_add(&l->st->errors, 1);
        conn_abort(c);
        return;
    }
    wt->n = n;
    if (n)
        memcpy(wt->rest, rest, n);
    /* It waits without a concurrency slot: one client's extra conns hold up nobody else. */
    conn_set_counted(c, 0);
    worker_slot_give_back(l);
    l->source_waiting++;
    conn_set_hooks(c, &wait_hooks, wt);
    conn_watch_read(c, 0);
    wt->timer = conn_timer_start(c, SOURCE_WAIT_RECHECK_MS, wait_retry, wt);
    if (wt->timer == NULL) {
        atomic_fetch_add(&l->st->errors, 1);
        l->source_waiting--;
        conn_set_hooks(c, NULL, NULL);
        free(wt);
        conn_abort(c);
        return;
    }
    log_debug("%s %s: over per_source = %u; waiting (over_limit = wait)", l->cfg->name,
              conn_name(c), l->cfg->per_source);
}
