/*
 * The Prometheus endpoint, served by the master on `[daemon] metrics = ADDRESS` (host:port
 * or a unix socket path): GET /metrics answers the shared counters (core/stats.h) in the
 * text exposition format 0.0.4, rendered from shared memory on the master's loop; no plugin
 * code runs. Each client gets one answer, then the close.
 *
 * Hostile clients cost only themselves: a request is read into a buffer of
 * METRICS_REQUEST_MAX bytes (more: 431), each client has METRICS_DEADLINE_MS from its
 * accept for the whole exchange (a slow sender or a reader that never reads is cut off),
 * and at most METRICS_CLIENTS are served at once. One more makes room as on the admin
 * socket: the oldest client that has not sent a whole request goes, else the oldest whose
 * answer is written whole; when every client has a scrape in progress the newcomer is
 * closed at once. A crowd of idle connections can neither lock a scraper out nor cut one
 * whose request is in.
 */
#ifndef BERTH_METRICS_H
#define BERTH_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>
#include <uv.h>

#include "core/stats.h"

#define METRICS_REQUEST_MAX 8192
#define METRICS_DEADLINE_MS 10000
#define METRICS_CLIENTS 32
#define METRICS_BODY_MAX (16u * 1024u * 1024u) /* what a render may grow to */

typedef struct metrics metrics_t;

/* Listen on addr (AF_INET, AF_INET6 or AF_UNIX: a stale socket file is replaced). NULL with a
 * message in err on failure. */
metrics_t *metrics_open(uv_loop_t *loop, const struct sockaddr *addr, socklen_t addrlen,
                        const stats_t *stats, char *err, size_t errlen);
/* binary upgrade: serve on `fd`, a listening socket the previous image handed over (tcp or
 * unix: its path, from the socket, is removed at the close as for one opened here). NULL
 * with a message in err on failure (fd is closed then). */
metrics_t *metrics_adopt(uv_loop_t *loop, int fd, const stats_t *stats, char *err, size_t errlen);
/* The listening descriptor, for a handover; -1 if none. */
int metrics_fd(const metrics_t *m);
/* binary upgrade: stop accepting (the socket stays open: connections wait in its backlog,
 * and metrics_fd names it) and call quiet(arg) once the clients already accepted are gone,
 * from the loop, so an exec cuts no scrape. 0 or -errno. */
int metrics_pause(metrics_t *m, void (*quiet)(void *arg), void *arg);
/* Accept again after a pause (the exec failed); quiet is not called any more. 0 or a uv
 * error (logged; the listener is gone then). */
int metrics_resume(metrics_t *m);
/* Where it listens, as "127.0.0.1:9187", "[::1]:9187" or the path (a port 0 resolved). */
const char *metrics_where(const metrics_t *m, char *buf, size_t len);
/* Stop listening and drop every client; freed once the handles have closed (a unix socket's
 * file is removed). NULL is fine. */
void metrics_close(metrics_t *m);

/* ---- the request (metrics_request.c): no I/O, for the fuzzer ---- */

typedef enum metrics_req_status {
    METRICS_REQ_MORE = 0, /* no end of headers yet: read on */
    METRICS_REQ_OK = 200, /* GET or HEAD /metrics (a query string is ignored) */
    METRICS_REQ_BAD = 400,
    METRICS_REQ_NOT_FOUND = 404,
    METRICS_REQ_METHOD = 405,  /* a well-formed request with another method */
    METRICS_REQ_TOO_BIG = 431, /* METRICS_REQUEST_MAX bytes without the end of the headers */
    METRICS_REQ_VERSION = 505,
} metrics_req_status_t;

/* Look at the `len` bytes read so far; *head is set to 1 for a HEAD request. */
metrics_req_status_t metrics_request_parse(const char *buf, size_t len, int *head);

/* ---- the answer (metrics_format.c) ---- */

/* A growable buffer with a cap: appends past `cap` fail and set `over`. */
typedef struct metrics_buf {
    char *data;
    size_t len, size, cap;
    int over; /* out of memory or past cap: the text is cut */
} metrics_buf_t;

void metrics_buf_printf(metrics_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void metrics_buf_free(metrics_buf_t *b);
/* Every metric of `s`, as of now, appended to `b`. 0, or -ENOMEM when `b` ran over. */
int metrics_render(const stats_t *s, metrics_buf_t *b);

#endif
