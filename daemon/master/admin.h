/*
 * The admin socket berthctl talks to: a unix stream socket, owner-only (0600). One
 * request per connection, a line: "status", "status --json", "reload", "stop",
 * "resume LISTENER", "upgrade". The answer
 * is a first line "ok" or "error", then the body, then EOF.
 *
 * Admin knows nothing of the master: it is handed an ops table and an opaque context at
 * open, and calls through it.
 */
#ifndef BERTH_ADMIN_H
#define BERTH_ADMIN_H

#include <stddef.h>
#include <uv.h>

#include "config/config.h"
#include "core/stats.h"

#define ADMIN_REQUEST_MAX 256
#define ADMIN_IDLE_MS 10000 /* a client that sends no full request by then is closed */
#define ADMIN_CLIENTS_MAX 64

typedef struct admin admin_t;

/* How an asynchronous request (reload) ended; text MAY be NULL when ok. */
typedef void (*admin_done_cb)(void *arg, int ok, const char *text);

/* What a status report is made of: read when the report is made, never kept. */
typedef struct admin_snapshot {
    const stats_t *stats;
    const char *conf_path;
    /* Per listener stats slot, what its socket is bound to ("127.0.0.1:40123" for a
     * configured port 0); NULL when not known. */
    const char *bound[STATS_LISTENERS];
    /* Per listener stats slot, why it is quarantined; NULL when it is not. */
    const char *quarantined[STATS_LISTENERS];
    /* Per listener stats slot, the multicast groups it has joined, "224.3.29.71,ff02::1:3";
     * NULL when none. */
    const char *groups[STATS_LISTENERS];
    /* Binary upgrade: which berthd version each live generation's workers run. */
    size_t ngens;
    unsigned gen_ids[32];
    const char *gen_versions[32];
} admin_snapshot_t;

typedef struct admin_ops {
    void (*snapshot)(void *ctx, admin_snapshot_t *out);
    /* Start a reload; done is called exactly once, possibly before this returns. */
    void (*reload)(void *ctx, admin_done_cb done, void *arg);
    /* Begin a graceful stop. */
    void (*stop)(void *ctx);
    /* Lift the quarantine of listener `name`: 1, or 0 with why in msg. */
    int (*resume)(void *ctx, const char *name, char *msg, size_t msglen);
    /* Binary upgrade: re-execute berthd. `client_fd` is the asking connection: when the
     * upgrade goes as far as executing the new image, the image that comes out of it (the
     * new one, or the old one again) writes the answer to it, and done is never called here;
     * otherwise done is called exactly once. */
    void (*upgrade)(void *ctx, int client_fd, admin_done_cb done, void *arg);
} admin_ops_t;

typedef enum admin_req {
    ADMIN_REQ_NONE = 0, /* no full line yet */
    ADMIN_REQ_STATUS,
    ADMIN_REQ_STATUS_JSON,
    ADMIN_REQ_RELOAD,
    ADMIN_REQ_STOP,
    ADMIN_REQ_RESUME, /* "resume NAME": *arg is NAME */
    ADMIN_REQ_UNKNOWN,
    ADMIN_REQ_TOO_LONG,
    ADMIN_REQ_UPGRADE,
} admin_req_t;

/* Parse what a client sent so far (buf need not be NUL-terminated): a request once a full
 * line is there, ADMIN_REQ_NONE while it is not, ADMIN_REQ_TOO_LONG when len reaches
 * ADMIN_REQUEST_MAX - 1 with no end of line. For ADMIN_REQ_RESUME, *arg and *arglen (MAY
 * be NULL) give the listener name inside buf: one word of 1 to 63 bytes, no control
 * characters. */
admin_req_t admin_parse_request(const char *buf, size_t len, const char **arg, size_t *arglen);

/* Listen on `path`; NULL with errs filled on failure. ops and ctx MUST outlive it. */
admin_t *admin_open(uv_loop_t *loop, const char *path, const admin_ops_t *ops, void *ctx,
                    config_errors_t *errs);
/* The same on a listening socket handed over by a binary upgrade (fd, bound to path). */
admin_t *admin_adopt(uv_loop_t *loop, const char *path, int fd, const admin_ops_t *ops, void *ctx,
                     config_errors_t *errs);
/* The listening descriptor (-1 once stopped), for the handover. */
int admin_fd(const admin_t *a);
/* Change the idle timeout and the client cap (defaults ADMIN_IDLE_MS, ADMIN_CLIENTS_MAX);
 * for tests, which cannot wait 10 s. Applies to clients that connect afterwards. */
void admin_set_limits(admin_t *a, unsigned idle_ms, unsigned max_clients);
/* Stop accepting requests (the daemon is stopping); answers in flight still go out. */
void admin_stop(admin_t *a);
/* Free it once its loop has closed its handles. */
void admin_free(admin_t *a);
/* The status report, as text or JSON; the caller frees it. NULL when out of memory. */
char *admin_status(const admin_snapshot_t *snap, int json);

#endif
