/*
 * berth-testhost: drive a plugin from a unit test, without a daemon.
 *
 * The test host implements the whole berth_host_t table in one thread, with no sockets and
 * no clock: a test accepts connections and feeds them bytes, EOF and datagrams; reads what
 * the plugin wrote; sees whether it closed, aborted or half-closed; answers the outbound
 * connects it asked for; moves time forward to fire its timers; and runs its pool work when
 * it chooses. Everything happens inside the test's own calls, in a fixed order, so a test is
 * repeatable to the byte.
 *
 *     berth_testhost_t *th = berth_testhost_new(&berth_handler, err, sizeof err);
 *     berth_listener_t *l = berth_testhost_listener(th, "echo", BERTH_PROTO_TCP,
 *                                                   (const char *[]){NULL}, err, sizeof err);
 *     berth_conn_t *c = berth_testhost_accept(th, l, "127.0.0.1:5000");
 *     berth_testhost_feed(c, "hi", 2);
 *     size_t n;
 *     const void *out = berth_testhost_output(c, &n);   // "hi"
 *     berth_testhost_free(th);
 *
 * Build: `cc test.c my.c $(pkg-config --cflags --libs berth-testhost)`.
 *
 * How it differs from berthd, on purpose:
 *   - Writes reach the peer at once: write_queue_size() is 0 and there is no backpressure
 *     (unless the test pauses reading itself).
 *   - Time moves only in berth_testhost_advance(); timers fire in order of their deadline.
 *   - host->work() queues; berth_testhost_run_work() runs each queued item's work function and
 *     then its done callback, on the test's thread.
 *   - host->connect() records the request; berth_testhost_connect_ok() / _connect_fail()
 *     answer it. The peer it makes is a conn like any other: feed it (bytes from the remote
 *     end), read its output (bytes the plugin or a relay sent to the remote end).
 *   - host->relay() moves bytes between the two conns as the test feeds them.
 *   - The sandbox declarations (allow_path, allow_connect, allow_bind) are checked and
 *     recorded, and a connect to a port never declared fails as in a confined worker.
 *   - host->dgram_* sockets record what the plugin sends (names unresolved, as given); the
 *     test injects datagrams. Misuse meets berthd's answers (handler.h, dgram_open): NULL
 *     or bad arguments -EINVAL, a socket closed (dgram_close, or its conn began to end:
 *     close, abort, EOF without eof(), a reset) -EPIPE from dgram_send and NULL with *len 0
 *     from dgram_local_addr, even from finish(); dgram_close of NULL or twice does nothing;
 *     dgram_open sets *out NULL on any error. A socket's memory stays until
 *     berth_testhost_free, so a kept handle is safe. As no name is resolved, nothing waits
 *     for the resolver: a name is -ENOBUFS only with max_queued 0, and berthd's -EBUSY (its
 *     cap on lookups in flight) and -EAGAIN (a full socket buffer) never come.
 *     host->listen_once is answered like a connect: the test names the peer that connects
 *     in; it times out as time moves past its timeout.
 * A conn stays readable after finish() until berth_testhost_free(), so a test can inspect
 * what a closed conn was sent.
 */
#ifndef BERTH_TESTHOST_H
#define BERTH_TESTHOST_H

#include <berth/handler.h>
#include <stdbool.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct berth_testhost berth_testhost_t;

/* A host for `plugin`: checks its abi_version and size, then calls load(). NULL with a
 * message in err when either fails. */
berth_testhost_t *berth_testhost_new(const berth_handler_t *plugin, char *err, size_t errlen);
/* The same for a built plugin file: dlopen()s it and reads its `berth_handler`. */
berth_testhost_t *berth_testhost_open(const char *so_path, char *err, size_t errlen);
/* Runs the done callback of every queued work item with -ECANCELED (its work never runs),
 * ends every open conn (finish), closes every listener (listener_close), calls worker_stop if
 * worker_start ran, then unload(); frees everything. NULL is fine. */
void berth_testhost_free(berth_testhost_t *th);

/* A listener section. `options` is "key", "value", ..., NULL, as berthd hands a plugin the
 * keys it does not know itself: the plugin's declared options (berth_handler_t.options) are
 * parsed first, with the daemon's own parsers and defaults (host->listener_options), then
 * every key goes to check_option. `address` is the test host's: the listener's local address
 * ("127.0.0.1:1080", "[::1]:53" or "unix:/path"; default 127.0.0.1:1). Then listener_open.
 * NULL with the message in err: the table's (naming the key) or the plugin's own, as berthd
 * reports them after FILE:LINE. */
berth_listener_t *berth_testhost_listener(berth_testhost_t *th, const char *name,
                                          berth_protocol_t protocol, const char *const *options,
                                          char *err, size_t errlen);
/* Calls the plugin's worker_start (once; accept and datagram call it when a test did not). */
void berth_testhost_start(berth_testhost_t *th);

/* A new stream conn from `peer` ("127.0.0.1:5000", "[::1]:5000", "unix:"): setup() runs.
 * If setup refuses, finish() runs and this returns the finished conn (check _finished). */
berth_conn_t *berth_testhost_accept(berth_testhost_t *th, berth_listener_t *l, const char *peer);
/* Bytes from the conn's remote end: handle() runs (or, on a relayed conn, the bytes go to
 * its partner's output). While the plugin has paused the conn they are held and delivered at
 * resume. -EPIPE if the conn has ended. */
int berth_testhost_feed(berth_conn_t *conn, const void *data, size_t len);
/* EOF from the remote end: eof() runs, or the host closes the conn when the plugin has none. */
void berth_testhost_eof(berth_conn_t *conn);
/* The remote end reset the connection (or a read failed): the host ends the conn without
 * eof(), as berthd does on ECONNRESET; finish() runs. */
void berth_testhost_reset(berth_conn_t *conn);
/* One datagram on a datagram listener: setup(), handle(), and finish() once handle() has
 * returned and no timer or work the plugin started on it is pending. Its replies are the
 * conn's output. */
berth_conn_t *berth_testhost_datagram(berth_testhost_t *th, berth_listener_t *l, const char *peer,
                                      const void *data, size_t len);

/* Everything the plugin (or a relay) wrote to this conn and the test has not consumed. */
const void *berth_testhost_output(const berth_conn_t *conn, size_t *len);
/* Drops the first `len` bytes of the output (all of it when len exceeds it). */
void berth_testhost_consume(berth_conn_t *conn, size_t len);
/* The conn's datagram replies are kept apart: the i-th reply, NULL past the last. */
const void *berth_testhost_reply(const berth_conn_t *conn, size_t i, size_t *len);

bool berth_testhost_closed(const berth_conn_t *conn);    /* close() or the host closed it */
bool berth_testhost_aborted(const berth_conn_t *conn);   /* abort() */
bool berth_testhost_shut_down(const berth_conn_t *conn); /* shutdown(): EOF sent */
bool berth_testhost_paused(const berth_conn_t *conn);
bool berth_testhost_finished(const berth_conn_t *conn); /* finish() has run */
bool berth_testhost_relayed(const berth_conn_t *conn);  /* handed to relay() */

/* Moves the clock `ms` forward, firing every timer whose deadline passes, in order. */
void berth_testhost_advance(berth_testhost_t *th, uint64_t ms);
uint64_t berth_testhost_now(const berth_testhost_t *th);
/* Timers started and not yet fired or stopped. */
size_t berth_testhost_timers(const berth_testhost_t *th);
/* Runs queued work (work function, then done) until none is left; how many ran. */
size_t berth_testhost_run_work(berth_testhost_t *th);
size_t berth_testhost_work_queued(const berth_testhost_t *th);

/* The outbound connects the plugin asked for, in order (answered ones stay listed). */
typedef struct berth_testhost_connect {
    berth_conn_t *conn;
    char host[256];
    uint16_t port;
    uint64_t timeout_ms;
    bool answered;
    bool listen; /* a host->listen_once (host, port: where it listens), not a connect */
} berth_testhost_connect_t;
size_t berth_testhost_connects(const berth_testhost_t *th);
const berth_testhost_connect_t *berth_testhost_connect_at(const berth_testhost_t *th, size_t i);
/* Answers connect i: unless the listener declared the port to the sandbox
 * (host->allow_connect, as berthd's confined workers need), the connect fails with
 * BERTH_CONNECT_FAILED and EACCES, as it would there. Else `remote` ("127.0.0.1:80") is
 * offered to the plugin's `allow` callback (a refusal gives BERTH_CONNECT_DENIED), then a
 * peer conn is made and the callback runs. Returns the peer, or NULL when refused. `local`
 * MAY be NULL. */
berth_conn_t *berth_testhost_connect_ok(berth_testhost_t *th, size_t i, const char *remote,
                                        const char *local);
void berth_testhost_connect_fail(berth_testhost_t *th, size_t i, berth_connect_error_t error,
                                 int sys_errno);

/* A listen_once is listed with the connects (listen set). connect_ok(i, peer, NULL) is a
 * peer connecting in: the plugin's `allow` sees it first; one it refuses is reset and the
 * listen goes on (NULL, still unanswered). connect_fail ends it as for a connect. */

/* The datagram sockets a conn opened (host->dgram_open), in order; the i-th, or NULL. */
size_t berth_testhost_dgrams(const berth_conn_t *conn);
berth_dgram_t *berth_testhost_dgram_at(const berth_conn_t *conn, size_t i);
/* A datagram arriving on `d` from `from` ("127.0.0.1:5353"): the plugin's callback runs.
 * -EPIPE if the socket is closed (by the plugin, or as its conn began to end); -EINVAL for
 * NULL. */
int berth_testhost_dgram_recv(berth_dgram_t *d, const char *from, const void *data, size_t len);
/* What the plugin sent on `d`: the i-th datagram, its destination as the plugin gave it (an
 * address or a name: nothing is resolved) and port; NULL past the last. */
size_t berth_testhost_dgram_sent_count(const berth_dgram_t *d);
const void *berth_testhost_dgram_sent(const berth_dgram_t *d, size_t i, const char **host,
                                      uint16_t *port, size_t *len);
/* Closed by dgram_close, or as its conn began to end (before finish() runs); true for NULL.
 * A closed socket's sent datagrams stay readable until berth_testhost_free. */
bool berth_testhost_dgram_closed(const berth_dgram_t *d);

/* Relay results: the stats handed to the relay's done callback, once it has run. */
bool berth_testhost_relay_done(const berth_conn_t *conn, berth_relay_stats_t *stats);

/* A plugin metric's value (host->metric), by listener and the full name the plugin gave
 * ("socks5_replies_total{code=\"5\"}"). false if the plugin registered no such metric. */
bool berth_testhost_metric(const berth_testhost_t *th, const berth_listener_t *l, const char *name,
                           int64_t *value);

/* What a conn's tls_info answers (NULL: -ENOTSUP, as on a listener without TLS). */
void berth_testhost_set_tls(berth_conn_t *conn, const berth_tls_info_t *info);

/* Every log line so far, "LEVEL message\n" each, and whether one contains `needle`. Lines go
 * to stderr too when BERTH_TESTHOST_VERBOSE is set. */
const char *berth_testhost_log(const berth_testhost_t *th);
bool berth_testhost_logged(const berth_testhost_t *th, const char *needle);

/* The host table the plugin was given (to call its helpers from a test). */
const berth_host_t *berth_testhost_table(const berth_testhost_t *th);

#ifdef __cplusplus
}
#endif
#endif /* BERTH_TESTHOST_H */
