/* See socks5_metrics.h. The counters of each listener of this process, in a short list. */
#include "socks5_metrics.h"

#include <stdio.h>
#include <stdlib.h>

#define REPLY_CODES 9 /* RFC 1928: 0 succeeded .. 8 address type not supported */

typedef struct listener_metrics {
    berth_listener_t *l;
    berth_metric_t *replies[REPLY_CODES];
    berth_metric_t *up, *down;
    struct listener_metrics *next;
} listener_metrics_t;

static listener_metrics_t *all;

void socks5_metrics_open(const berth_host_t *host, berth_listener_t *l)
{
    if (!BERTH_HOST_HAS(host, metric_set))
        return;
    listener_metrics_t *lm = calloc(1, sizeof(*lm));
    if (lm == NULL)
        return;
    lm->l = l;
    for (int i = 0; i < REPLY_CODES; i++) {
        char name[64];
        snprintf(name, sizeof(name), "socks5_replies_total{code=\"%d\"}", i);
        lm->replies[i] = host->metric(l, name, "SOCKS5 replies sent, by reply code (RFC 1928).",
                                      BERTH_METRIC_COUNTER);
    }
    lm->up = host->metric(l, "socks5_relayed_bytes_total{direction=\"up\"}",
                          "Bytes relayed from clients to destinations (up) and back (down).",
                          BERTH_METRIC_COUNTER);
    lm->down = host->metric(l, "socks5_relayed_bytes_total{direction=\"down\"}",
                            "Bytes relayed from clients to destinations (up) and back (down).",
                            BERTH_METRIC_COUNTER);
    lm->next = all;
    all = lm;
}

void socks5_metrics_close(berth_listener_t *l)
{
    for (listener_metrics_t **p = &all; *p; p = &(*p)->next) {
        if ((*p)->l == l) {
            listener_metrics_t *lm = *p;
            *p = lm->next;
            free(lm);
            return;
        }
    }
}

void socks5_metrics_session(const berth_host_t *host, berth_listener_t *l, uint8_t rep, uint64_t up,
                            uint64_t down)
{
    listener_metrics_t *lm = all;
    while (lm && lm->l != l)
        lm = lm->next;
    if (lm == NULL)
        return;
    if (rep < REPLY_CODES)
        host->metric_add(lm->replies[rep], 1);
    if (up)
        host->metric_add(lm->up, (int64_t)up);
    if (down)
        host->metric_add(lm->down, (int64_t)down);
}
