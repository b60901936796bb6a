/* See upload_metrics.h. The counters of each listener of this process, in a short list. */
#include "upload_metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const reasons[] = {"header", "too_large", "busy",      "no_space", "exists",
                                      "digest", "size",      "truncated", "store"};
#define NREASONS (sizeof(reasons) / sizeof(reasons[0]))

typedef struct listener_metrics {
    berth_listener_t *l;
    berth_metric_t *stored;
    berth_metric_t *rejected[NREASONS];
    struct listener_metrics *next;
} listener_metrics_t;

static listener_metrics_t *all;

const char *upload_metrics_reason(const char *why, int in_header)
{
    /* The replies upload.c, header.c and store.c give, by the words they are known by. */
    if (strncmp(why, "file_size ", 10) == 0 && strstr(why, "over max_size"))
        return "too_large";
    if (strncmp(why, "server busy", 11) == 0)
        return "busy";
    if (strstr(why, "no space left"))
        return "no_space";
    if (in_header)
        return "header";
    if (strstr(why, "exists"))
        return "exists";
    if (strstr(why, "sha256 does not match") || strstr(why, "md5 does not match"))
        return "digest";
    if (strstr(why, "file size does not match"))
        return "size";
    if (strstr(why, "ended before the whole file"))
        return "truncated";
    return "store";
}

void upload_metrics_open(const berth_host_t *host, berth_listener_t *l)
{
    if (!BERTH_HOST_HAS(host, metric_set))
        return;
    listener_metrics_t *lm = calloc(1, sizeof(*lm));
    if (lm == NULL)
        return;
    lm->l = l;
    lm->stored = host->metric(l, "upload_files_stored_total", "Files stored whole and verified.",
                              BERTH_METRIC_COUNTER);
    for (size_t i = 0; i < NREASONS; i++) {
        char name[80];
        snprintf(name, sizeof(name), "upload_files_rejected_total{reason=\"%s\"}", reasons[i]);
        lm->rejected[i] =
            host->metric(l, name, "Files refused or failed, by reason.", BERTH_METRIC_COUNTER);
    }
    lm->next = all;
    all = lm;
}

void upload_metrics_close(berth_listener_t *l)
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

static listener_metrics_t *find(berth_listener_t *l)
{
    listener_metrics_t *lm = all;
    while (lm && lm->l != l)
        lm = lm->next;
    return lm;
}

void upload_metrics_stored(const berth_host_t *host, berth_listener_t *l)
{
    listener_metrics_t *lm = find(l);
    if (lm)
        host->metric_add(lm->stored, 1);
}

void upload_metrics_rejected(const berth_host_t *host, berth_listener_t *l, const char *why,
                             int in_header)
{
    listener_metrics_t *lm = find(l);
    if (lm == NULL)
        return;
    const char *r = upload_metrics_reason(why ? why : "", in_header);
    for (size_t i = 0; i < NREASONS; i++)
        if (strcmp(reasons[i], r) == 0)
            host->metric_add(lm->rejected[i], 1);
}
