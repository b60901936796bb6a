/*
 * upload's metrics on the daemon's /metrics (host->metric): files stored, and files refused
 * by reason, per listener. Registered at listener_open.
 */
#ifndef UPLOAD_METRICS_H
#define UPLOAD_METRICS_H

#include "berth/handler.h"

/* Register the listener's counters (none on a host without host->metric, or out of memory:
 * uploads go on uncounted). */
void upload_metrics_open(const berth_host_t *host, berth_listener_t *l);
void upload_metrics_close(berth_listener_t *l);
void upload_metrics_stored(const berth_host_t *host, berth_listener_t *l);
/* A file refused with reply `why`, at its header (in_header) or later. */
void upload_metrics_rejected(const berth_host_t *host, berth_listener_t *l, const char *why,
                             int in_header);
/* The reason label for `why`: header, too_large, busy, no_space, exists, digest, size,
 * truncated or store. */
const char *upload_metrics_reason(const char *why, int in_header);

#endif
