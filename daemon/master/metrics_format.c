/*
 * The text exposition format 0.0.4 of every counter in shared memory (see metrics.h and the
 * list in berthd(8)). Figures are read with plain atomic loads while workers add: each value
 * is exact, a scrape is not a snapshot across values (Prometheus expects no more).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "berth/handler.h"
#include "master/metrics.h"

void metrics_buf_printf(metrics_buf_t *b, const char *fmt, ...)
{
    if (b->over)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n =
            vsnprintf(b->data ? b->data + b->len : NULL, b->data ? b->size - b->len : 0, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->over = 1;
            return;
        }
        if (b->data && (size_t)n < b->size - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t want = b->len + (size_t)n + 1;
        if (want > b->cap) {
            b->over = 1;
            return;
        }
        size_t size = b->size ? b->size : 4096;
        while (size < want)
            size *= 2;
        if (size > b->cap)
            size = b->cap;
        char *p = realloc(b->data, size);
        if (p == NULL) {
            b->over = 1;
            return;
        }
        b->data = p;
        b->size = size;
    }
}

void metrics_buf_free(metrics_buf_t *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->size = 0;
}

/* A label value: backslash, quote and newline escaped, as the format asks. */
static const char *esc(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 3 < size; p++) {
        if (*p == '\\' || *p == '"') {
            out[o++] = '\\';
            out[o++] = *p;
        } else if (*p == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

/* HELP text: backslash and newline escaped. */
static const char *esc_help(const char *in, char *out, size_t size)
{
    size_t o = 0;
    for (const char *p = in; *p && o + 3 < size; p++) {
        if (*p == '\\' || *p == '\n') {
            out[o++] = '\\';
            out[o++] = *p == '\n' ? 'n' : '\\';
        } else {
            out[o++] = *p;
        }
    }
    out[o] = '\0';
    return out;
}

static void family(metrics_buf_t *b, const char *name, const char *type, const char *help)
{
    metrics_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

#define U64(x) ((uint64_t)atomic_load(&(x)))

static const char *proto_name(int p)
{
    switch (p) {
    case BERTH_PROTO_TCP:
        return "tcp";
    case BERTH_PROTO_UDP:
        return "udp";
    case BERTH_PROTO_UNIX:
        return "unix";
    case BERTH_PROTO_UNIXGRAM:
        return "unixgram";
    default:
        return "unknown";
    }
}

/* One sample per listener in use: `name{listener="..."EXTRA} VALUE`. */
typedef uint64_t (*listener_value_fn)(const stats_listener_t *l, int arg);

static void per_listener(metrics_buf_t *b, const stats_t *s, const char *name, const char *label,
                         const char *const *values, int nvalues, listener_value_fn fn)
{
    char ln[160];
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &s->listeners[i];
        if (!l->in_use)
            continue;
        esc(l->name, ln, sizeof ln);
        if (label == NULL) {
            metrics_buf_printf(b, "%s{listener=\"%s\"} %" PRIu64 "\n", name, ln, fn(l, 0));
            continue;
        }
        for (int k = 0; k < nvalues; k++)
            metrics_buf_printf(b, "%s{listener=\"%s\",%s=\"%s\"} %" PRIu64 "\n", name, ln, label,
                               values[k], fn(l, k));
    }
}

static uint64_t v_active(const stats_listener_t *l, int k)
{
    (void)k;
    return U64(l->active);
}

static uint64_t v_accepted(const stats_listener_t *l, int k)
{
    (void)k;
    return U64(l->accepted);
}

static const char *const refused_reasons[] = {"deny",  "concurrency", "per_source",
                                              "proxy", "tls",         "setup"};

static uint64_t v_refused(const stats_listener_t *l, int k)
{
    switch (k) {
    case 0:
        return U64(l->refused_acl);
    case 1:
        return U64(l->refused_concurrency);
    case 2:
        return U64(l->refused_source);
    case 3:
        return U64(l->refused_proxy);
    case 4:
        return U64(l->tls_handshakes_failed);
    default:
        return U64(l->refused_limit);
    }
}

static const char *const closed_reasons[STATS_CLOSED_REASONS] = {
    [STATS_CLOSED_EOF] = "eof",
    [STATS_CLOSED_IDLE] = "idle",
    [STATS_CLOSED_ERROR] = "error",
    [STATS_CLOSED_DRAIN] = "drain",
};

static uint64_t v_closed(const stats_listener_t *l, int k)
{
    return U64(l->closed[k]);
}

static const char *const directions[] = {"in", "out"};

static uint64_t v_bytes(const stats_listener_t *l, int k)
{
    return k == 0 ? U64(l->bytes_in) : U64(l->bytes_out);
}

static uint64_t v_errors(const stats_listener_t *l, int k)
{
    (void)k;
    return U64(l->errors);
}

static uint64_t v_tls(const stats_listener_t *l, int k)
{
    (void)k;
    return U64(l->tls_handshakes);
}

static void durations(metrics_buf_t *b, const stats_t *s)
{
    const char *name = "berth_connection_duration_seconds";
    family(b, name, "histogram",
           "How long connections (stream) or datagrams lived, accept to end.");
    char ln[160];
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &s->listeners[i];
        if (!l->in_use)
            continue;
        esc(l->name, ln, sizeof ln);
        uint64_t cum = 0;
        for (int k = 0; k <= STATS_DURATION_BUCKETS; k++) {
            cum += U64(l->duration_buckets[k]);
            if (k < STATS_DURATION_BUCKETS)
                metrics_buf_printf(b, "%s_bucket{listener=\"%s\",le=\"%g\"} %" PRIu64 "\n", name,
                                   ln, (double)stats_duration_bounds_ms[k] / 1000.0, cum);
            else
                metrics_buf_printf(b, "%s_bucket{listener=\"%s\",le=\"+Inf\"} %" PRIu64 "\n", name,
                                   ln, cum);
        }
        uint64_t ms = U64(l->duration_ms_sum);
        metrics_buf_printf(b, "%s_sum{listener=\"%s\"} %" PRIu64 ".%03u\n", name, ln, ms / 1000,
                           (unsigned)(ms % 1000));
        metrics_buf_printf(b, "%s_count{listener=\"%s\"} %" PRIu64 "\n", name, ln, cum);
    }
}

static const char *worker_state(int st)
{
    switch (st) {
    case WORKER_STARTING:
        return "starting";
    case WORKER_READY:
        return "serving";
    case WORKER_DRAINING:
        return "draining";
    default:
        return NULL;
    }
}

static void workers(metrics_buf_t *b, const stats_t *s)
{
    family(b, "berth_worker_info", "gauge",
           "1 per worker process, labelled with its pid, generation, index and state.");
    for (int i = 0; i < STATS_WORKERS; i++) {
        const stats_worker_t *w = &s->workers[i];
        const char *st = worker_state(atomic_load(&w->state));
        if (st && w->pid > 0)
            metrics_buf_printf(b,
                               "berth_worker_info{pid=\"%ld\",generation=\"%u\",index=\"%u\","
                               "state=\"%s\"} 1\n",
                               (long)w->pid, w->generation, w->index, st);
    }
    family(b, "berth_worker_connections_active", "gauge",
           "Connections (or datagrams) a worker process is serving.");
    for (int i = 0; i < STATS_WORKERS; i++) {
        const stats_worker_t *w = &s->workers[i];
        if (worker_state(atomic_load(&w->state)) && w->pid > 0)
            metrics_buf_printf(b, "berth_worker_connections_active{pid=\"%ld\"} %" PRIu64 "\n",
                               (long)w->pid, U64(w->active));
    }
    family(b, "berth_worker_connections_accepted_total", "counter",
           "Connections (or datagrams) a worker process accepted since it started.");
    for (int i = 0; i < STATS_WORKERS; i++) {
        const stats_worker_t *w = &s->workers[i];
        if (worker_state(atomic_load(&w->state)) && w->pid > 0)
            metrics_buf_printf(b,
                               "berth_worker_connections_accepted_total{pid=\"%ld\"} %" PRIu64 "\n",
                               (long)w->pid, U64(w->accepted));
    }
}

static size_t family_len(const char *name)
{
    return strcspn(name, "{");
}

/* Plugin metrics: one HELP/TYPE per family, then every series of it, whatever the slot. */
static void plugin_metrics(metrics_buf_t *b, const stats_t *s)
{
    char ln[160], help[2 * STATS_METRIC_HELP];
    for (int i = 0; i < STATS_METRICS; i++) {
        const stats_metric_t *m = &s->metrics[i];
        if (!atomic_load(&m->in_use))
            continue;
        size_t flen = family_len(m->name);
        int seen = 0;
        for (int j = 0; j < i && !seen; j++) {
            const stats_metric_t *o = &s->metrics[j];
            seen = atomic_load(&o->in_use) && family_len(o->name) == flen &&
                   memcmp(o->name, m->name, flen) == 0;
        }
        if (seen)
            continue;
        metrics_buf_printf(b, "# HELP berth_%.*s %s\n# TYPE berth_%.*s %s\n", (int)flen, m->name,
                           esc_help(m->help, help, sizeof help), (int)flen, m->name,
                           m->kind == BERTH_METRIC_COUNTER ? "counter" : "gauge");
        for (int j = i; j < STATS_METRICS; j++) {
            const stats_metric_t *o = &s->metrics[j];
            if (!atomic_load(&o->in_use) || family_len(o->name) != flen ||
                memcmp(o->name, m->name, flen) != 0 || o->listener < 0 ||
                o->listener >= STATS_LISTENERS || !s->listeners[o->listener].in_use)
                continue;
            esc(s->listeners[o->listener].name, ln, sizeof ln);
            const char *labels = o->name + flen; /* "" or "{a=\"b\"}" */
            int64_t v = atomic_load(&o->value);
            if (o->kind == BERTH_METRIC_COUNTER && v < 0)
                v = 0;
            if (*labels)
                metrics_buf_printf(b, "berth_%.*s{listener=\"%s\",%s %" PRId64 "\n", (int)flen,
                                   o->name, ln, labels + 1, v);
            else
                metrics_buf_printf(b, "berth_%.*s{listener=\"%s\"} %" PRId64 "\n", (int)flen,
                                   o->name, ln, v);
        }
    }
}

int metrics_render(const stats_t *s, metrics_buf_t *b)
{
    family(b, "berth_build_info", "gauge", "The berthd version and plugin ABI version; always 1.");
    metrics_buf_printf(b, "berth_build_info{version=\"%s\",abi=\"%u\"} 1\n", BERTH_VERSION,
                       BERTH_ABI_VERSION);
    family(b, "berth_start_time_seconds", "gauge",
           "When berthd started, in seconds since the epoch.");
    metrics_buf_printf(b, "berth_start_time_seconds %" PRIu64 ".%03u\n", s->started_ms / 1000,
                       (unsigned)(s->started_ms % 1000));
    family(b, "berth_generation", "gauge",
           "The config generation now serving (1 at start, +1 per reload).");
    metrics_buf_printf(b, "berth_generation %" PRIu64 "\n", U64(s->generation));
    family(b, "berth_reloads_total", "counter", "Reloads, by result.");
    metrics_buf_printf(b, "berth_reloads_total{result=\"ok\"} %" PRIu64 "\n", U64(s->reloads_ok));
    metrics_buf_printf(b, "berth_reloads_total{result=\"failed\"} %" PRIu64 "\n",
                       U64(s->reloads_failed));
    family(b, "berth_worker_crashes_total", "counter",
           "Worker processes that died without being asked to.");
    metrics_buf_printf(b, "berth_worker_crashes_total %" PRIu64 "\n", U64(s->worker_crashes));
    family(b, "berth_worker_restarts_total", "counter",
           "Worker processes started again after a crash.");
    metrics_buf_printf(b, "berth_worker_restarts_total %" PRIu64 "\n", U64(s->worker_restarts));
    family(b, "berth_plugin_metrics_full_total", "counter",
           "Plugin metrics not published because the table of plugin metrics was full.");
    metrics_buf_printf(b, "berth_plugin_metrics_full_total %" PRIu64 "\n", U64(s->metrics_full));

    char ln[160], addr[240];
    family(b, "berth_listener_info", "gauge",
           "1 per listening socket, labelled with its protocol and address.");
    for (int i = 0; i < STATS_LISTENERS; i++) {
        const stats_listener_t *l = &s->listeners[i];
        if (l->in_use)
            metrics_buf_printf(
                b, "berth_listener_info{listener=\"%s\",protocol=\"%s\",address=\"%s\"} 1\n",
                esc(l->name, ln, sizeof ln), proto_name(l->protocol),
                esc(l->address, addr, sizeof addr));
    }
    family(b, "berth_connections_active", "gauge",
           "Connections (stream) or datagrams being served: what the concurrency cap counts.");
    per_listener(b, s, "berth_connections_active", NULL, NULL, 0, v_active);
    family(b, "berth_connections_accepted_total", "counter",
           "Connections (stream) or datagrams accepted.");
    per_listener(b, s, "berth_connections_accepted_total", NULL, NULL, 0, v_accepted);
    family(b, "berth_connections_refused_total", "counter",
           "Connections refused, by reason (concurrency: times the cap was reached and clients "
           "were left waiting in the backlog).");
    per_listener(b, s, "berth_connections_refused_total", "reason", refused_reasons,
                 (int)(sizeof refused_reasons / sizeof refused_reasons[0]), v_refused);
    family(b, "berth_connections_closed_total", "counter", "Connections that ended, by reason.");
    per_listener(b, s, "berth_connections_closed_total", "reason", closed_reasons,
                 STATS_CLOSED_REASONS, v_closed);
    family(b, "berth_transferred_bytes_total", "counter",
           "Bytes read from clients (in) and written to them (out).");
    per_listener(b, s, "berth_transferred_bytes_total", "direction", directions, 2, v_bytes);
    family(b, "berth_errors_total", "counter", "Socket errors (accept, read, write, send).");
    per_listener(b, s, "berth_errors_total", NULL, NULL, 0, v_errors);
    family(b, "berth_tls_handshakes_total", "counter", "TLS handshakes completed.");
    per_listener(b, s, "berth_tls_handshakes_total", NULL, NULL, 0, v_tls);
    durations(b, s);
    workers(b, s);
    plugin_metrics(b, s);
    return b->over ? -ENOMEM : 0;
}
