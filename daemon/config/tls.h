/*
 * TLS on a listener: its keys (tls_*), the certificate and key files the master reads into
 * memory, and the SSL_CTX built from them.
 *
 *   tls_keys.c   the tls_* keys of a listener section (no OpenSSL)
 *   tls_files.c  reading the files (as root, in the master, before any worker drops
 *                privileges) and building an SSL_CTX from the bytes read
 *
 * The files are read by config_tls_load(), which the master calls after config_load() at
 * start and on every reload (so a renewed certificate is read afresh), and `berthd -t` calls
 * too. Workers are forked from the master and build their SSL_CTX from the bytes, never
 * from the files: a key file can be 0600 root while workers run as another user.
 * Key bytes are wiped when freed and never reach a log.
 */
#ifndef BERTH_CONFIG_TLS_H
#define BERTH_CONFIG_TLS_H

#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

#define CONFIG_TLS_MAX_PAIRS 8              /* certificate/key pairs on one listener */
#define CONFIG_TLS_MAX_FILE (1024u * 1024u) /* bytes of one PEM file */
#define CONFIG_TLS_DEFAULT_HANDSHAKE_TIMEOUT (10u * 1000u)
#define CONFIG_TLS_EXPIRY_WARN_DAYS 14

/* tls_protocols, as bits. */
#define CONFIG_TLS_V12 0x1u
#define CONFIG_TLS_V13 0x2u

typedef enum config_tls_verify {
    CONFIG_TLS_VERIFY_OFF = 0,
    CONFIG_TLS_VERIFY_OPTIONAL = 1,
    CONFIG_TLS_VERIFY_REQUIRE = 2,
} config_tls_verify_t;

/* The tls_* keys, for where each was set. */
enum config_tls_key {
    TK_CERTIFICATE,
    TK_KEY,
    TK_PROTOCOLS,
    TK_CIPHERS,
    TK_CIPHERSUITES,
    TK_ALPN,
    TK_SESSION_TICKETS,
    TK_HANDSHAKE_TIMEOUT,
    TK_CLIENT_CA,
    TK_VERIFY_CLIENT,
    TK_COUNT,
};

/* A file named by a key: its path, where the key was set, and (after config_tls_load) its
 * bytes, NUL-terminated. */
typedef struct config_tls_file {
    char *path;
    const char *file; /* points into config->files */
    int line;
    char *data;
    size_t len;
} config_tls_file_t;

typedef struct config_tls_pair {
    config_tls_file_t cert; /* PEM: the leaf first, then its chain */
    config_tls_file_t key;
} config_tls_pair_t;

typedef struct config_tls {
    /* The i-th tls_certificate goes with the i-th tls_key; the first pair is served when
     * the client sends no name (SNI) or one no certificate matches. */
    config_tls_pair_t pairs[CONFIG_TLS_MAX_PAIRS];
    size_t ncerts, nkeys;
    unsigned protocols;  /* CONFIG_TLS_V12 | CONFIG_TLS_V13 by default */
    char *ciphers;       /* TLS 1.2 cipher list (OpenSSL syntax), NULL: OpenSSL's default */
    char *ciphersuites;  /* TLS 1.3 suites, NULL: OpenSSL's default */
    unsigned char *alpn; /* the protocols offered, in wire format (length-prefixed) */
    size_t alpn_len;
    int session_tickets;        /* default on */
    uint64_t handshake_timeout; /* ms */
    config_tls_file_t client_ca;
    config_tls_verify_t verify_client; /* default: require with tls_client_ca, else off */
    struct {
        const char *file;
        int line;
    } seen[TK_COUNT];
} config_tls_t;

void config_tls_free(config_tls_t *t);

/* Read every TLS listener's files into memory and check them: readable, a key that matches
 * its certificate, a certificate not expired (a warning when it expires within
 * CONFIG_TLS_EXPIRY_WARN_DAYS), cipher lists OpenSSL accepts. Errors go to errs as
 * "FILE:LINE: message" at the key concerned. 0 or -EINVAL. */
int config_tls_load(berth_config_t *cfg, config_errors_t *errs);

/* config_load(), then config_tls_load(): what the master (at start, on reload) and `berthd -t`
 * run, as root, so workers get the files' bytes. On an error *out is NULL. */
int config_load_with_tls(const char *path, berth_config_t **out, config_errors_t *errs);

/* An SSL_CTX (as void *, so this header needs no OpenSSL) for pair `pair` of `t`, built from
 * the bytes config_tls_load() read. NULL with a message in err, and in *bad_key the key at
 * fault (enum config_tls_key). */
void *config_tls_ctx_new(const config_tls_t *t, size_t pair, char *err, size_t errlen,
                         int *bad_key);

#endif
