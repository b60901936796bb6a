/*
 * berth plugin contract.
 *
 * A plugin is a shared object that exports exactly one symbol, `berth_handler`, a
 * `berth_handler_t` descriptor. berthd dlopen()s it with RTLD_NOW | RTLD_LOCAL, reads
 * `abi_version` and `size` before anything else, and refuses the file on a mismatch.
 *
 * Everything the host offers a plugin comes through the `berth_host_t` table handed to
 * `load()`: a plugin links against nothing of berthd's and needs no -rdynamic daemon.
 * Build one out of tree with:
 *
 *     cc -shared -fPIC $(pkg-config --cflags berth) my.c -o my.so
 *
 * Compatibility rules (read these before changing this file):
 *   - Fields of berth_handler_t and berth_host_t are only ever appended, never reordered
 *     or removed. The host reads a plugin's descriptor only up to the `size` the plugin
 *     was built with; a plugin MUST check `host->size` before calling a member added
 *     after the one it needs (BERTH_HOST_HAS()).
 *   - BERTH_ABI_VERSION changes only when an existing member changes meaning; the host
 *     refuses any other version.
 *
 * Error convention: functions return 0 or a negative errno (as libuv does). If a function
 * that takes a callback returns an error, the callback is never called.
 *
 * Threading: every callback runs on the worker's loop thread, except the `work` function
 * given to host->work(), which runs on a thread pool and MUST NOT call into the host.
 *
 * State and processes: every worker process loads the plugin and opens each listener for
 * itself, so per-listener state (listener_open) and anything a plugin keeps in globals is
 * per worker, and rebuilt at every reload (a new generation is new processes). State that
 * must be shared between workers or survive a reload lives outside the plugin: a file, a
 * database, shared memory the plugin maps itself, or `workers = 1`.
 *
 * Languages: the header is C11 and C++11 or later, warning-free under -Wall -Wextra
 * -pedantic; BERTH_HANDLER and BERTH_HANDLER_INIT use designated initializers, so a plugin
 * in C++ needs C++20 (g++ -std=c++20). In C++ BERTH_HANDLER gives the descriptor C linkage
 * and external visibility itself: no `extern "C"` block is needed around it.
 */
#ifndef BERTH_HANDLER_H
#define BERTH_HANDLER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include <berth/cidr.h>

#ifdef __cplusplus
extern "C" {
#endif

#define BERTH_ABI_VERSION 1u

#if defined(__GNUC__)
#define BERTH_EXPORT __attribute__((visibility("default")))
#define BERTH_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define BERTH_EXPORT
#define BERTH_PRINTF(f, a)
#endif

/* In C++ every member of the descriptor and of an option entry is zero unless given, as in C,
 * without g++'s -Wmissing-field-initializers on designated initializers. No layout change.
 * A member appended to berth_handler_t or berth_option_t takes it too. */
#ifdef __cplusplus
#define BERTH_ZERO_ = {}
#else
#define BERTH_ZERO_
#endif

/* A connection (stream listeners) or one datagram and its replies (datagram listeners).
 * Owned by the host; valid from setup() until finish() returns. */
typedef struct berth_conn berth_conn_t;
/* One listener section of the config, as one worker sees it. Owned by the host. */
typedef struct berth_listener berth_listener_t;
/* A timer bound to a connection; stopped and freed by the host when the connection ends. */
typedef struct berth_timer berth_timer_t;

typedef enum berth_log_level {
    BERTH_LOG_ERROR = 0,
    BERTH_LOG_WARN = 1,
    BERTH_LOG_INFO = 2,
    BERTH_LOG_DEBUG = 3,
} berth_log_level_t;

typedef enum berth_protocol {
    BERTH_PROTO_TCP = 1,
    BERTH_PROTO_UDP = 2,
    BERTH_PROTO_UNIX = 3,     /* AF_UNIX, SOCK_STREAM */
    BERTH_PROTO_UNIXGRAM = 4, /* AF_UNIX, SOCK_DGRAM */
} berth_protocol_t;

/* Why an outbound connect failed, for a plugin to map onto its own reply codes. */
typedef enum berth_connect_error {
    BERTH_CONNECT_OK = 0,
    BERTH_CONNECT_FAILED = 1,      /* anything not listed below */
    BERTH_CONNECT_DENIED = 2,      /* the plugin's `allow` callback refused every address, or
                                      it was one of the daemon's own listeners (see connect) */
    BERTH_CONNECT_NET_UNREACH = 3, /* ENETUNREACH */
    BERTH_CONNECT_HOST_UNREACH = 4,
    BERTH_CONNECT_REFUSED = 5, /* ECONNREFUSED */
    BERTH_CONNECT_TIMEOUT = 6,
    BERTH_CONNECT_NO_NAME = 7, /* the name did not resolve */
} berth_connect_error_t;

/* The outcome of host->connect(): on success `peer` is a new host-owned connection with no
 * plugin callbacks of its own, ready to be handed to host->relay(). */
typedef struct berth_connect_result {
    berth_connect_error_t error;
    int sys_errno;                  /* the errno behind `error`, or 0 */
    berth_conn_t *peer;             /* NULL unless error == BERTH_CONNECT_OK */
    struct sockaddr_storage remote; /* the address that answered (or the last one tried) */
    struct sockaddr_storage local;  /* our end of it: SOCKS5's BND.ADDR */
} berth_connect_result_t;

typedef void (*berth_timer_cb)(berth_conn_t *conn, void *arg);
typedef void (*berth_work_fn)(void *arg); /* runs on a pool thread */
typedef void (*berth_done_cb)(berth_conn_t *conn, void *arg, int status);
typedef void (*berth_connect_cb)(berth_conn_t *conn, const berth_connect_result_t *result,
                                 void *arg);
/* Asked once per resolved address before connecting; return 0 to allow it. */
typedef int (*berth_connect_allow_cb)(berth_conn_t *conn, const struct sockaddr *addr, void *arg);

/* Counters a relay reports when both of its directions are done. */
typedef struct berth_relay_stats {
    uint64_t bytes_up;   /* client -> peer */
    uint64_t bytes_down; /* peer -> client */
    int error;           /* 0, or the negative errno that ended it (UV_ETIMEDOUT on idle) */
} berth_relay_stats_t;
typedef void (*berth_relay_cb)(berth_conn_t *conn, const berth_relay_stats_t *stats, void *arg);

/* What the TLS handshake of a conn settled (host->tls_info). Every string is NUL-terminated,
 * owned by the host and valid until finish(); a member that does not apply is NULL. */
typedef struct berth_tls_info {
    const char *protocol;       /* "TLSv1.3", "TLSv1.2" */
    const char *cipher;         /* "TLS_AES_256_GCM_SHA384" */
    const char *server_name;    /* the name the client asked for (SNI) */
    const char *alpn;           /* the protocol ALPN settled on */
    const char *client_subject; /* a verified client certificate's subject, RFC 2253 form */
    const char *client_san;     /* its DNS, email and IP subjectAltNames, comma-separated */
} berth_tls_info_t;

/* A TLS listener's client-certificate check (tls_verify_client), as host->listener_tls_verify
 * tells it. */
typedef enum berth_tls_verify {
    BERTH_TLS_VERIFY_OFF = 0,
    BERTH_TLS_VERIFY_OPTIONAL = 1,
    BERTH_TLS_VERIFY_REQUIRE = 2,
} berth_tls_verify_t;

/* metrics: a plugin's counter or gauge of one listener, published on the daemon's
 * /metrics (host->metric). Owned by the host; valid while the listener is open. */
typedef struct berth_metric berth_metric_t;
typedef enum berth_metric_kind {
    BERTH_METRIC_COUNTER = 1, /* only ever goes up; its name ends in _total */
    BERTH_METRIC_GAUGE = 2,   /* goes up and down */
} berth_metric_kind_t;

/* One field of a structured log line (host->log_fields): `key` and either the text `str`
 * or, when `str` is NULL, the integer `num`. */
typedef struct berth_log_field {
    const char *key;
    const char *str;
    int64_t num;
} berth_log_field_t;
#define BERTH_LOG_FIELDS_MAX 32

/* SOCKS5 UDP/BIND host services: a datagram socket bound for a connection (host->dgram_*). */
typedef struct berth_dgram berth_dgram_t;
/* One datagram received on `d` from `from` (IPv4 as AF_INET, never v4-mapped). `data` is valid
 * only during the call. */
typedef void (*berth_dgram_cb)(berth_conn_t *conn, berth_dgram_t *d, const void *data, size_t len,
                               const struct sockaddr *from, void *arg);

/*
 * Declared options (berth_handler_t.options): a table the host checks and parses for the
 * plugin, with FILE:LINE errors, before check_option and listener_open run. Each parsed value
 * is stored at `offset` in a zeroed struct of `options_size` bytes per listener, which
 * host->listener_options returns. The C type at `offset`, per type:
 *
 *   BERTH_OPT_STRING     const char *         the text (NULL when unset with no default)
 *   BERTH_OPT_PATH       const char *         an absolute path ("/..."), not checked on disk
 *   BERTH_OPT_BOOL       int                  yes/no, true/false, on/off, 1/0 -> 1 or 0
 *   BERTH_OPT_INT        int64_t              decimal, within [min, max]
 *   BERTH_OPT_DURATION   uint64_t             milliseconds ("250ms", "10s", "5m", "1h"),
 *                                             within [min, max]
 *   BERTH_OPT_SIZE       uint64_t             bytes ("512", "64K", "10M", "2G"), within
 *                                             [min, max]
 *   BERTH_OPT_CIDR_LIST  berth_cidr_list_t    "10.0.0.0/8, ::1" (with BERTH_OPT_PORTS each
 *                                             entry MAY end in ":port"); see <berth/cidr.h>
 *   BERTH_OPT_ENUM       int                  the index of the value in `choices`
 *
 * Strings and lists are owned by the host and valid until listener_close() returns. min and
 * max bound INT, DURATION and SIZE (inclusive; both 0: no bound but the type's own). An
 * option the config does not set takes `def` (config text, parsed like a value from the
 * file), or else zero / NULL / an empty list. BERTH_OPT_REQUIRED makes leaving it out an
 * error. The table ends with an entry whose name is NULL.
 */
typedef enum berth_option_type {
    BERTH_OPT_STRING = 1,
    BERTH_OPT_BOOL = 2,
    BERTH_OPT_INT = 3,
    BERTH_OPT_DURATION = 4,
    BERTH_OPT_SIZE = 5,
    BERTH_OPT_CIDR_LIST = 6,
    BERTH_OPT_PATH = 7,
    BERTH_OPT_ENUM = 8,
} berth_option_type_t;

#define BERTH_OPT_REQUIRED 0x1u /* the config MUST set it */
#define BERTH_OPT_PORTS 0x2u    /* CIDR_LIST: entries MAY carry ":port" */

typedef struct berth_option {
    const char *name BERTH_ZERO_;         /* the key in the listener section */
    berth_option_type_t type BERTH_ZERO_; /* BERTH_OPT_* */
    unsigned flags BERTH_ZERO_;           /* BERTH_OPT_REQUIRED, BERTH_OPT_PORTS */
    size_t offset BERTH_ZERO_;            /* offsetof(the plugin's options struct, member) */
    const char *def BERTH_ZERO_;          /* the default as config text, or NULL */
    int64_t min BERTH_ZERO_;              /* INT, DURATION (ms), SIZE (bytes): inclusive bounds */
    int64_t max BERTH_ZERO_;
    const char *const *choices BERTH_ZERO_; /* ENUM: the accepted words, NULL-terminated */
    const char *help BERTH_ZERO_;           /* one line, for berthd --plugin-help */
} berth_option_t;

/*
 * What the host gives a plugin. Handed to load(); valid until the plugin is unloaded.
 */
typedef struct berth_host {
    uint32_t abi_version; /* BERTH_ABI_VERSION of the host */
    uint32_t size;        /* sizeof(berth_host_t) in the host: see BERTH_HOST_HAS */

    /* Logging, with the listener and peer prefixed. `conn` MAY be NULL. */
    void (*log)(berth_conn_t *conn, berth_log_level_t level, const char *fmt, ...)
        BERTH_PRINTF(3, 4);
    /* Logging from listener-level hooks (check/open/close). `l` MAY be NULL. */
    void (*log_listener)(berth_listener_t *l, berth_log_level_t level, const char *fmt, ...)
        BERTH_PRINTF(3, 4);

    /* Queue `len` bytes for the peer; the host copies them. On a datagram conn, sends one
     * datagram to the sender. Returns 0, -EPIPE after close/shutdown, or -ENOMEM.
     * Backpressure is the host's: past the high watermark it stops reading this conn and
     * resumes below the low one; a plugin need not watch it. */
    int (*write)(berth_conn_t *conn, const void *data, size_t len);
    /* End the connection once queued writes are flushed. finish() follows. Idempotent. */
    void (*close)(berth_conn_t *conn);
    /* End it now, discarding queued writes (TCP: a reset). finish() follows. */
    void (*abort)(berth_conn_t *conn);
    /* Half-close: send EOF after queued writes; reading goes on. */
    int (*shutdown)(berth_conn_t *conn);
    /* Stop / resume reading on the plugin's own account (e.g. while disk work is pending).
     * Counted: each pause needs its resume. Host backpressure is independent of it. */
    void (*pause)(berth_conn_t *conn);
    void (*resume)(berth_conn_t *conn);
    /* Bytes queued and not yet written to the socket. */
    size_t (*write_queue_size)(const berth_conn_t *conn);

    /* The plugin's per-connection state: `conn_size` zeroed bytes, or NULL if 0. */
    void *(*state)(berth_conn_t *conn);
    /* What listener_open() stored for this conn's listener (NULL if none). */
    void *(*listener_state)(berth_conn_t *conn);
    berth_listener_t *(*listener)(berth_conn_t *conn);
    /* Peer and local address. For a unix socket peer that did not bind, an AF_UNIX address
     * with an empty path. */
    const struct sockaddr *(*peer_addr)(const berth_conn_t *conn, socklen_t *len);
    const struct sockaddr *(*local_addr)(const berth_conn_t *conn, socklen_t *len);
    /* "127.0.0.1:5000", "[::1]:5000" or "unix:/path", for logs. */
    const char *(*peer_name)(const berth_conn_t *conn);

    /* Listener facts. */
    const char *(*listener_name)(const berth_listener_t *l);
    berth_protocol_t (*listener_protocol)(const berth_listener_t *l);
    /* The value of a plugin key in this listener's section, or NULL. */
    const char *(*option)(const berth_listener_t *l, const char *key);
    /* Parse helpers, so every plugin speaks the config's units: "30s", "5m", "1h", "250ms"
     * into milliseconds; "64K", "10M", "2G" into bytes. 0 or -EINVAL. */
    int (*parse_duration)(const char *text, uint64_t *ms);
    int (*parse_size)(const char *text, uint64_t *bytes);
    int (*parse_bool)(const char *text, int *value);

    /* A one-shot timer bound to `conn`; NULL on -ENOMEM. Stopped and freed when the conn
     * ends; stop it earlier with timer_stop (which frees it: do not touch it after). Once
     * its callback has run the timer is gone too: MUST NOT be stopped after that. */
    berth_timer_t *(*timer_start)(berth_conn_t *conn, uint64_t ms, berth_timer_cb cb, void *arg);
    void (*timer_stop)(berth_timer_t *timer);

    /* Run `work(arg)` on the thread pool, then `done(conn, arg, status)` on the loop
     * (status 0, or -ECANCELED if the pool dropped it before it ran). `done` always runs,
     * even if the conn was closed meanwhile, so the plugin can free `arg` there; the conn
     * stays allocated, and finish() waits, until it has. The pool is shared by every
     * listener of the worker: one listener has at most 64 items queued or running (beyond
     * that this returns -EAGAIN: refuse or retry what needed it), and only a share of the
     * pool's threads at once, the rest of its items waiting in order, so one plugin's slow
     * work (password hashing) cannot starve another's (disk writes). */
    int (*work)(berth_conn_t *conn, berth_work_fn work, berth_done_cb done, void *arg);

    /* Connect out to `host` (a name, or a literal IPv4/IPv6 address) and `port`; names are
     * resolved off the loop and every address is tried in order until one connects. Each
     * address is first offered to `allow` (MAY be NULL). `cb` runs exactly once, unless
     * this returns an error. It MAY run before connect() returns (a literal address that
     * `allow` refuses or that fails at once). If `conn` closes first, it runs with
     * BERTH_CONNECT_FAILED and sys_errno ECANCELED. On success the plugin owns result->peer: it
     * MUST hand it to relay() or close() it. `timeout_ms` (0: none) bounds the resolving and every
     * attempt together. An address that is one of the daemon's own TCP listeners (a wildcard
     * listener counts as every address of the host on its port) is never tried, whatever
     * `allow` says: if no other address is left, the result is BERTH_CONNECT_DENIED; the host
     * logs a warning once per connection. */
    int (*connect)(berth_conn_t *conn, const char *host, uint16_t port, uint64_t timeout_ms,
                   berth_connect_allow_cb allow, berth_connect_cb cb, void *arg);
    /* Pipe `conn` and `peer` (from connect) both ways until both directions are done:
     * bounded buffers, reading one side only while the other can take it, EOF carried as
     * shutdown(SHUT_WR), `idle_ms` without traffic ends it (0: no limit). Afterwards the
     * plugin's handle() is no longer called for `conn`; `done` (MAY be NULL) runs once
     * with the byte counts, then both connections close and finish() runs.
     * Before relay(): every byte read from `conn` until then went to handle() (the plugin
     * forwards with host->write(peer, ...) what it has to; nothing is held back for the
     * relay), and host->write() to `peer` works like on any conn (its bytes go out before
     * the relay's). relay() MAY be called on a conn the plugin has paused (host->pause while
     * connecting): the relay reads both sides whatever the plugin's pause count. */
    int (*relay)(berth_conn_t *conn, berth_conn_t *peer, uint64_t idle_ms, berth_relay_cb done,
                 void *arg);

    /* What the TLS handshake of `conn` settled, into *info (check BERTH_HOST_HAS(host,
     * tls_info) first). 0, or -ENOTSUP on a conn without TLS (its listener has no tls_*
     * keys). A TLS conn's handshake is complete before setup() is called. */
    int (*tls_info)(const berth_conn_t *conn, berth_tls_info_t *info);
    /* The balancer's own address, when the listener takes a PROXY protocol header
     * (proxy_protocol) and the header named the client: peer_addr and peer_name are then the
     * client's, and this is the address the connection really came from. NULL (and *len 0)
     * otherwise. Check BERTH_HOST_HAS(host, balancer_addr) first. */
    const struct sockaddr *(*balancer_addr)(const berth_conn_t *conn, socklen_t *len);
    /* The multicast group this datagram was sent to (with the listener's port), or NULL
     * when it was not sent to a group (a unicast datagram, a stream conn). A listener with
     * `multicast` groups receives both: a service-discovery plugin answers them apart. The
     * same address is the conn's local_addr. */
    const struct sockaddr *(*multicast_group)(const berth_conn_t *conn, socklen_t *len);
    /* The listener's tls_verify_client (a berth_tls_verify_t), or -ENOTSUP when it has no TLS.
     * For listener_open: a plugin that relies on client certificates (socks5's
     * auth = certificate) refuses a listener that does not require them. Check
     * BERTH_HOST_HAS(host, listener_tls_verify) first. */
    int (*listener_tls_verify)(const berth_listener_t *l);

    /* metrics: plugin counters. A counter or gauge of listener `l` (call it from
     * listener_open and keep the pointer in the listener's state), published on the daemon's
     * `[daemon] metrics` endpoint as berth_NAME{listener="..."}. `name` MUST start with the
     * plugin's name and `_` ("socks5_replies_total"), a counter's MUST end in `_total`, and it
     * MAY end in one label set, `{code="1",...}` (label values of [A-Za-z0-9_.:/+-]). Every
     * worker and generation calling with the same listener and name shares one value, in
     * the daemon's shared memory, so figures survive reloads and crashes while the listening
     * socket stays. Returns NULL when the name is refused or the daemon's table of
     * metrics is full (both logged), or under `berthd -t`: metric_add and
     * metric_set take NULL and do nothing, so a plugin needs no check. Check
     * BERTH_HOST_HAS(host, metric_set) first. */
    berth_metric_t *(*metric)(berth_listener_t *l, const char *name, const char *help,
                              berth_metric_kind_t kind);
    /* Add `delta` (a counter ignores a negative one). Lock-free; any loop thread. */
    void (*metric_add)(berth_metric_t *m, int64_t delta);
    /* Set a gauge (a counter ignores it). Shared by every worker: last writer wins. */
    void (*metric_set)(berth_metric_t *m, int64_t value);

    /* logs: structured fields. A log line with fields of its own, which log shippers read
     * without regexes: with log_format = json each field is a member of the line's object
     * (a string, or a number when `str` is NULL); with text, " key=value" after the
     * message. Keys SHOULD be [a-z0-9_]; the host replaces other bytes with '_' and
     * prefixes a key the line already has (time, level, message...) with "plugin_". At
     * most BERTH_LOG_FIELDS_MAX fields; values are clipped at 1024 bytes. `conn` MAY be
     * NULL. Check BERTH_HOST_HAS(host, log_fields) first. */
    void (*log_fields)(berth_conn_t *conn, berth_log_level_t level,
                       const struct berth_log_field *fields, size_t n, const char *fmt, ...)
        BERTH_PRINTF(5, 6);

    /* ---- SOCKS5 UDP/BIND host services (check BERTH_HOST_HAS(host, listen_once)) ---- */
    /* A UDP socket bound for `conn` at `addr` (port 0: an ephemeral one; with `port_last`
     * above addr's port, the first free port of that range). Every datagram it receives
     * calls `cb` on the loop. `max_queued` bounds the datagrams dgram_send holds while
     * their destination name resolves. The socket is closed by dgram_close or, at the
     * latest, when `conn` begins to end (no callback after that); its handle holds the conn
     * allocated until it has closed. A conn in a relay or a connect (or a listen_once) has
     * no room for one: -EALREADY. 0 and *out, or a negative errno (-EADDRINUSE when the
     * port or every port of the range is taken; -EINVAL for a NULL conn, cb, out or addr;
     * -EPIPE when `conn` is ending), *out NULL then.
     * *out is a handle, not memory: every dgram_* call below is safe with NULL, and with a
     * handle whose socket has closed (dgram_close, or the conn began to end), at any time
     * after, even from finish() or once the conn is gone: dgram_send then returns -EINVAL
     * (NULL) or -EPIPE (closed), dgram_local_addr NULL with *len 0, dgram_close nothing. */
    int (*dgram_open)(berth_conn_t *conn, const struct sockaddr *addr, uint16_t port_last,
                      uint32_t max_queued, berth_dgram_cb cb, void *arg, berth_dgram_t **out);
    /* The address it is bound to (a wildcard address stays the wildcard); NULL, *len 0,
     * once it has closed. */
    const struct sockaddr *(*dgram_local_addr)(const berth_dgram_t *d, socklen_t *len);
    /* Send one datagram to `host` (a literal IPv4/IPv6 address, or a name resolved off the
     * loop as connect's are) port `port`. Each address is first offered to `allow` (MAY be
     * NULL; called with the address and port); the first it allows gets the datagram, which
     * is never queued on the socket: 0 when sent or waiting for the resolver, -EACCES when
     * `allow` refused a literal address, -ENOBUFS when max_queued are already waiting,
     * -EBUSY when the listener's lookups in flight for datagrams (every socket of every
     * conn of it, in this worker) are at the host's cap, half the listener's share of the
     * thread pool (and the worker's listeners together at half of its lookups), so names
     * that never resolve cannot hold every thread work() needs,
     * -EAGAIN when the socket's buffer is full (the datagram is dropped, as UDP may),
     * -EAFNOSUPPORT when the socket's family cannot reach the address, -EINVAL for a NULL
     * `d` or `host`, port 0 or more than 65507 bytes, -EPIPE when `d` has closed or its conn
     * is ending. A name that does not resolve or whose every address is refused is dropped
     * without a word. */
    int (*dgram_send)(berth_dgram_t *d, const char *host, uint16_t port, const void *data,
                      size_t len, berth_connect_allow_cb allow, void *arg);
    /* Close it now: no callback after this returns; pending names are dropped. Closing it
     * again, or after the conn closed it, does nothing. */
    void (*dgram_close)(berth_dgram_t *d);
    /* A one-shot TCP listen for `conn` (SOCKS5 BIND): bound at `addr` (port 0: ephemeral)
     * with its address in *bound when this returns 0. The first connection that `allow`
     * (MAY be NULL) accepts becomes result->peer, a host-owned conn for relay() exactly as
     * connect() gives one; a connection `allow` refuses is reset and the listen goes on.
     * `cb` runs exactly once: with BERTH_CONNECT_OK, BERTH_CONNECT_TIMEOUT after
     * `timeout_ms` (0: none), or BERTH_CONNECT_FAILED and ECANCELED if `conn` ends first.
     * The listening socket is closed before `cb` runs. -EALREADY as for dgram_open. */
    int (*listen_once)(berth_conn_t *conn, const struct sockaddr *addr, uint64_t timeout_ms,
                       berth_connect_allow_cb allow, berth_connect_cb cb, void *arg,
                       struct sockaddr_storage *bound);

    /* upload: receive into fd */
    /* Have the conn's next read land in a buffer the plugin owns (which it then writes to a
     * file, say) instead of the host's read buffer and handle(): one copy fewer per byte, and
     * reads as big as the plugin asks for. One shot: the next read from the socket (at most
     * `len` > 0 bytes) goes into `buf`, then `cb(conn, arg, n)` runs once with the n > 0 bytes
     * now at the start of `buf`. Later bytes go to handle() again, unless cb (or a later
     * callback) arms another receive; the plugin asks for no more than it wants there (upload:
     * the rest of a file's body), so its framing stays its own. `buf` MUST stay valid until cb
     * runs or the receive is dropped. It is dropped without cb (the buffer is the plugin's
     * again) by pause(), close(), abort() and the conn's end, and at the peer's EOF or a read
     * error, which then reach eof() or finish() as usual. The host's backpressure does not
     * stop an armed receive (it is bounded by `len`). Returns 0; -EBUSY if one is armed
     * already; -EAGAIN when the conn is not reading now (paused, or the host's backpressure:
     * arm it after resume()); -EPIPE when it is ending or at EOF; -ENOTSUP where the input is
     * not the socket's own bytes (TLS, a datagram, a relayed conn): keep to handle() there;
     * -EINVAL for a NULL buf or cb or len 0. Check BERTH_HOST_HAS(host, recv_into) first. */
    int (*recv_into)(berth_conn_t *conn, void *buf, size_t len,
                     void (*cb)(berth_conn_t *conn, void *arg, size_t n), void *arg);

    /* declared options: the listener's parsed options struct (see berth_option_t), or NULL
     * when the plugin declares no table. Valid from check_option until listener_close.
     * Check BERTH_HOST_HAS(host, listener_options) first. */
    const void *(*listener_options)(const berth_listener_t *l);

    /* timers: restart. Re-arm a timer that has not fired yet to fire `ms` from now, in place
     * (an idle timeout pushed back on each read, without a stop and a start). 0, or -EINVAL
     * for a NULL timer. The rule of timer_start holds: once its callback has run the timer is
     * gone and MUST NOT be restarted. Check BERTH_HOST_HAS(host, timer_restart) first. */
    int (*timer_restart)(berth_timer_t *timer, uint64_t ms);

    /* sandbox: declared access. Each worker confines itself (Landlock, seccomp) once its
     * listeners are open; from then on it reaches only what its listeners declared here, in
     * listener_open (once the worker has confined itself, -EBUSY), plus what every worker needs
     * (shared libraries, resolver files, the time zone, the log). Check BERTH_HOST_HAS(host,
     * allow_bind) first: an older host has no sandbox and needs no declaration.
     *   allow_path: `path` (absolute, existing; a folder covers everything under it) with
     *     BERTH_ACCESS_READ and/or BERTH_ACCESS_WRITE (create, write, rename, remove, truncate).
     *   allow_connect: outbound TCP to `port`, or BERTH_PORT_ANY (host->connect needs it).
     *   allow_bind: binding a TCP socket to `port` (0: an ephemeral port), or BERTH_PORT_ANY.
     * Everything else fails with EACCES (files, TCP) or EPERM (execve, ptrace, mount...).
     * 0, -EINVAL, -ENOENT (no such path) or -ENOMEM. */
#define BERTH_ACCESS_READ 1u
#define BERTH_ACCESS_WRITE 2u
#define BERTH_PORT_ANY (-1)
    int (*allow_path)(berth_listener_t *l, const char *path, unsigned access);
    int (*allow_connect)(berth_listener_t *l, int port);
    int (*allow_bind)(berth_listener_t *l, int port);

    /* logs: level check. Nonzero if a line at `level` would be written now (the level can
     * change on reload, so ask each time): a plugin skips formatting a line that would be
     * dropped. Check BERTH_HOST_HAS(host, log_enabled) first. */
    int (*log_enabled)(berth_log_level_t level);
} berth_host_t;

/* True if the host's table has member `m` (a plugin built against a newer header). */
#define BERTH_HOST_HAS(host, m)                                                                    \
    ((host)->size >= offsetof(berth_host_t, m) + sizeof(((berth_host_t *)0)->m))

/*
 * The descriptor a plugin exports. Every member but the first three MAY be NULL.
 * Call order, per worker process:
 *   load(host)                                 once, after the ABI check
 *   for each listener using the plugin:
 *     check_option(l, key, value, err) ...      once per key the daemon does not know
 *     listener_open(l, &state)                 build per-listener state
 *   worker_start()                             the loop is about to run
 *   setup(conn) / handle(conn, data, len)... / finish(conn)   per connection
 *   worker_stop()                              the loop has drained
 *   listener_close(l, state) for each listener; unload()
 */
typedef struct berth_handler {
    uint32_t abi_version BERTH_ZERO_; /* BERTH_ABI_VERSION */
    uint32_t size BERTH_ZERO_;        /* sizeof(berth_handler_t) */
    const char *name BERTH_ZERO_;     /* short name for logs, e.g. "echo" */
    const char *version BERTH_ZERO_;  /* the plugin's own version string; MAY be NULL */
    size_t conn_size BERTH_ZERO_;     /* bytes of zeroed per-connection state (host->state) */

    /* Once per process. Keep `host`; return 0 or a negative errno. */
    int (*load)(const berth_host_t *host) BERTH_ZERO_;
    void (*unload)(void) BERTH_ZERO_;

    /* A key of the listener's section that the daemon does not know, for what a declared
     * option table (below) cannot say: called for every such key, after the table (if any)
     * parsed it. Return 0 to accept it; else write a message to err and return -EINVAL. The
     * host adds FILE:LINE and nothing else, so the message names the key itself
     * ("max_keys: want 1 to 1000, not 0"). Keys the plugin rejects fail the whole config.
     * A key that is neither in the table nor accepted here (check_option NULL) is an
     * unknown key. */
    int (*check_option)(berth_listener_t *l, const char *key, const char *value, char *err,
                        size_t errlen) BERTH_ZERO_;
    /* Build per-listener state once all options are checked (read them with
     * host->listener_options or host->option). Return 0 or a negative errno with a message
     * in err. The state is per worker process: see "State and processes" above. */
    int (*listener_open)(berth_listener_t *l, void **state, char *err, size_t errlen) BERTH_ZERO_;
    void (*listener_close)(berth_listener_t *l, void *state) BERTH_ZERO_;

    void (*worker_start)(void) BERTH_ZERO_;
    void (*worker_stop)(void) BERTH_ZERO_;

    /* A new connection (stream) or datagram. Return 0, or a negative errno to refuse it
     * (the host closes it and calls finish()). */
    int (*setup)(berth_conn_t *conn) BERTH_ZERO_;
    /* Bytes read (stream: any chunk, no framing; datagram: one whole datagram). `data` is
     * valid only during the call. On a datagram listener each datagram is a conn of its
     * own: setup(), one handle(), and finish() once handle() has returned and no timer or
     * work the plugin started on it is pending (or when it calls close). */
    void (*handle)(berth_conn_t *conn, const void *data, size_t len) BERTH_ZERO_;
    /* The peer sent EOF on a stream. If NULL, the host closes the conn once its writes are
     * flushed; else the plugin decides (e.g. host->close after its replies). */
    void (*eof)(berth_conn_t *conn) BERTH_ZERO_;
    /* The conn ends, for whatever reason. Called exactly once per successful or failed
     * setup(). Release everything but the state memory, which the host frees. */
    void (*finish)(berth_conn_t *conn) BERTH_ZERO_;

    /* declared options: the table (ended by an entry with a NULL name; MAY be NULL) and the
     * size of the struct its offsets point into. See berth_option_t. */
    const berth_option_t *options BERTH_ZERO_;
    size_t options_size BERTH_ZERO_;
} berth_handler_t;

/* Start a descriptor: `BERTH_HANDLER = { BERTH_HANDLER_INIT("echo"), .handle = ... };`
 * (members in the order declared above, as C++20 requires). A descriptor without it has
 * abi_version 0, which berthd refuses as not initialised. */
#define BERTH_HANDLER_INIT(plugin_name)                                                            \
    .abi_version = BERTH_ABI_VERSION, .size = sizeof(berth_handler_t), .name = (plugin_name)
#ifdef __cplusplus
/* A namespace-scope const has internal linkage in C++: `extern "C"` gives it external C
 * linkage (an unmangled, exported symbol) while the initializer keeps it a definition. */
#define BERTH_HANDLER extern "C" BERTH_EXPORT const berth_handler_t berth_handler
#else
#define BERTH_HANDLER BERTH_EXPORT const berth_handler_t berth_handler
#endif
#define BERTH_HANDLER_SYMBOL "berth_handler"

#ifdef __cplusplus
}
#endif
#endif /* BERTH_HANDLER_H */
