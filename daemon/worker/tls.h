/*
 * The TLS layer: between a conn's socket and its plugin, on a listener with tls_* keys.
 *
 * Memory BIOs, so libuv keeps owning the socket and its reads and writes: ciphertext read
 * by conn.c is handed to tls_conn_input(), the handshake runs, and plaintext goes to the
 * plugin through conn_layer_deliver(); the plugin's writes come through tls_conn_write() and
 * leave as records through conn_write_wire(). The handshake completes before setup() is
 * called, so a plugin's setup() can already ask what it settled (host->tls_info). A
 * handshake that takes longer than tls_handshake_timeout ends the conn.
 *
 * conn.c owns the conn and calls this layer; this layer calls back only through conn.h.
 */
#ifndef BERTH_TLS_H
#define BERTH_TLS_H

#include <stddef.h>

#include "berth/handler.h"
#include "config/config.h"
#include "worker/worker.h"

typedef struct tls_conn tls_conn_t;
typedef struct tls_listener tls_listener_t;

/* Build l->tls (one SSL_CTX per certificate pair) from the bytes the master read. Errors
 * into errs at the listener's line. 0 or -EINVAL. */
int tls_listener_open(berth_listener_t *l, config_errors_t *errs);
void tls_listener_close(berth_listener_t *l);

/* A TLS session for conn c of a TLS listener, its handshake timer started. NULL on -ENOMEM. */
tls_conn_t *tls_conn_new(berth_conn_t *c);
void tls_conn_free(tls_conn_t *t);
/* Ciphertext read from the socket. */
void tls_conn_input(tls_conn_t *t, const void *data, size_t len);
/* Plaintext from the plugin: 0, -EPIPE, -ENOMEM, or conn_write_wire's error. */
int tls_conn_write(tls_conn_t *t, const void *data, size_t len);
/* The socket reached EOF: the end of the plaintext, unless close_notify said so first. */
void tls_conn_eof(tls_conn_t *t);
/* Send close_notify (once, after a completed handshake). */
void tls_conn_close_notify(tls_conn_t *t);
/* Reading is wanted again: deliver what was decrypted-but-held (on the next loop turn). */
void tls_conn_kick(tls_conn_t *t);
/* Fill in what the handshake settled. 0, or -EAGAIN before it completed. */
int tls_conn_info(const tls_conn_t *t, berth_tls_info_t *info);

#endif
