/*
 * The TLS layer (see tls.h). One SSL per conn over two memory BIOs: the read BIO holds
 * ciphertext conn.c read and this layer has not yet decrypted (at most one read's worth,
 * since conn.c stops reading while the plugin is paused), the write BIO the records to send,
 * handed to conn_write_wire() as soon as they are made.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "config/tls.h"
#include "core/log.h"
#include "worker/conn.h"
#include "worker/tls.h"

#define TLS_PLAIN_CHUNK (64 * 1024) /* plaintext handed to one handle() at most */

struct tls_listener {
    const config_tls_t *cfg;
    SSL_CTX *ctx[CONFIG_TLS_MAX_PAIRS]; /* [0]: served without SNI or when no name matches */
    size_t nctx;
};

struct tls_conn {
    berth_conn_t *c;
    SSL *ssl;
    BIO *rbio, *wbio; /* owned by ssl */
    berth_timer_t *handshake_timer, *kick_timer;
    char *alpn, *subject, *san; /* for tls_conn_info, made once the handshake is done */
    unsigned ready : 1, failed : 1, notified : 1, peer_done : 1;
};

/* The reason of OpenSSL's last error (never key material); clears the queue. */
static const char *tls_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "unknown error";
}

/* ---- listeners ---- */

/* SNI: the first pair whose certificate names the host the client asked for. */
static int on_servername(SSL *ssl, int *alert, void *arg)
{
    tls_listener_t *tl = arg;
    const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
    (void)alert;
    if (name == NULL || tl->nctx < 2)
        return SSL_TLSEXT_ERR_OK;
    for (size_t i = 0; i < tl->nctx; i++) {
        X509 *x = SSL_CTX_get0_certificate(tl->ctx[i]);
        if (x && X509_check_host(x, name, 0, 0, NULL) == 1) {
            if (i > 0)
                SSL_set_SSL_CTX(ssl, tl->ctx[i]);
            break;
        }
    }
    return SSL_TLSEXT_ERR_OK;
}

int tls_listener_open(berth_listener_t *l, config_errors_t *errs)
{
    const config_tls_t *t = l->cfg->tls;
    tls_listener_t *tl = calloc(1, sizeof *tl);
    if (tl == NULL) {
        config_errors_add(errs, l->cfg->file, l->cfg->line, "[%s]: out of memory", l->cfg->name);
        return -EINVAL;
    }
    tl->cfg = t;
    l->tls = tl;
    for (size_t i = 0; i < t->ncerts; i++) {
        char err[512];
        int bad = 0;
        SSL_CTX *ctx = config_tls_ctx_new(t, i, err, sizeof err, &bad);
        if (ctx == NULL) {
            config_errors_add(errs, l->cfg->file, l->cfg->line, "[%s]: %s", l->cfg->name, err);
            return -EINVAL;
        }
        tl->ctx[tl->nctx++] = ctx;
        SSL_CTX_set_tlsext_servername_callback(ctx, on_servername);
        SSL_CTX_set_tlsext_servername_arg(ctx, tl);
    }
    return 0;
}

void tls_listener_close(berth_listener_t *l)
{
    tls_listener_t *tl = l->tls;
    if (tl == NULL)
        return;
    for (size_t i = 0; i < tl->nctx; i++)
        SSL_CTX_free(tl->ctx[i]);
    free(tl);
    l->tls = NULL;
}

/* ---- conns ---- */

static void on_handshake_timeout(berth_conn_t *c, void *arg)
{
    tls_conn_t *t = arg;
    berth_listener_t *l = conn_listener(c);
    t->handshake_timer = NULL; /* gone once its callback runs */
    t->failed = 1;
    atomic_fetch_add(&l->st->tls_handshakes_failed, 1);
    log_info("%s %s: TLS handshake not done within %llu ms, closing", l->cfg->name, conn_name(c),
             (unsigned long long)l->cfg->tls->handshake_timeout);
    conn_abort(c);
}

tls_conn_t *tls_conn_new(berth_conn_t *c)
{
    berth_listener_t *l = conn_listener(c);
    tls_conn_t *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->c = c;
    t->ssl = SSL_new(l->tls->ctx[0]);
    t->rbio = BIO_new(BIO_s_mem());
    t->wbio = BIO_new(BIO_s_mem());
    if (t->ssl == NULL || t->rbio == NULL || t->wbio == NULL) {
        BIO_free(t->rbio);
        BIO_free(t->wbio);
        SSL_free(t->ssl);
        free(t);
        ERR_clear_error();
        return NULL;
    }
    /* An empty read BIO means "wait for more", not end of stream. */
    BIO_set_mem_eof_return(t->rbio, -1);
    SSL_set_bio(t->ssl, t->rbio, t->wbio);
    SSL_set_accept_state(t->ssl);
    t->handshake_timer =
        conn_timer_start(c, l->cfg->tls->handshake_timeout, on_handshake_timeout, t);
    return t;
}

void tls_conn_free(tls_conn_t *t)
{
    if (t == NULL)
        return;
    /* Its timers were freed with the conn's. */
    SSL_free(t->ssl);
    free(t->alpn);
    free(t->subject);
    free(t->san);
    free(t);
}

/* Hand the records made so far to the socket. */
static int flush_wire(tls_conn_t *t)
{
    char *p = NULL;
    long n = BIO_get_mem_data(t->wbio, &p);
    int rc = 0;
    if (n > 0)
        rc = conn_write_wire(t->c, p, (size_t)n);
    (void)BIO_reset(t->wbio);
    return rc;
}

static void fail(tls_conn_t *t, const char *what, int err)
{
    berth_listener_t *l = conn_listener(t->c);
    const char *why = err == SSL_ERROR_SYSCALL ? "the peer went away" : tls_reason();
    t->failed = 1;
    if (!t->ready)
        atomic_fetch_add(&l->st->tls_handshakes_failed, 1);
    else
        atomic_fetch_add(&l->st->errors, 1);
    log_info("%s %s: TLS %s failed: %s", l->cfg->name, conn_name(t->c), what, why);
    flush_wire(t); /* the alert, if one was made */
    conn_close(t->c);
}

static char *dup_n(const unsigned char *s, size_t n)
{
    char *d = malloc(n + 1);
    if (d) {
        memcpy(d, s, n);
        d[n] = '\0';
    }
    return d;
}

/* The verified client certificate's subjectAltNames (DNS, email, IP), comma-separated. */
static char *san_text(X509 *x)
{
    GENERAL_NAMES *gens = X509_get_ext_d2i(x, NID_subject_alt_name, NULL, NULL);
    if (gens == NULL)
        return NULL;
    char buf[1024] = "";
    size_t off = 0;
    for (int i = 0; i < sk_GENERAL_NAME_num(gens); i++) {
        const GENERAL_NAME *g = sk_GENERAL_NAME_value(gens, i);
        char one[256] = "";
        if (g->type == GEN_DNS || g->type == GEN_EMAIL) {
            const ASN1_IA5STRING *s = g->type == GEN_DNS ? g->d.dNSName : g->d.rfc822Name;
            snprintf(one, sizeof one, "%s:%.*s", g->type == GEN_DNS ? "DNS" : "email",
                     ASN1_STRING_length(s), (const char *)ASN1_STRING_get0_data(s));
        } else if (g->type == GEN_IPADD) {
            const unsigned char *ip = ASN1_STRING_get0_data(g->d.iPAddress);
            int n = ASN1_STRING_length(g->d.iPAddress);
            if (n == 4)
                snprintf(one, sizeof one, "IP:%u.%u.%u.%u", ip[0], ip[1], ip[2], ip[3]);
        }
        if (one[0] && off + strlen(one) + 2 < sizeof buf)
            off += (size_t)snprintf(buf + off, sizeof buf - off, "%s%s", off ? "," : "", one);
    }
    GENERAL_NAMES_free(gens);
    return off ? strdup(buf) : NULL;
}

static void handshake_done(tls_conn_t *t)
{
    berth_listener_t *l = conn_listener(t->c);
    t->ready = 1;
    if (t->handshake_timer) {
        conn_timer_stop(t->handshake_timer);
        t->handshake_timer = NULL;
    }
    atomic_fetch_add(&l->st->tls_handshakes, 1);
    const unsigned char *a = NULL;
    unsigned alen = 0;
    SSL_get0_alpn_selected(t->ssl, &a, &alen);
    if (alen)
        t->alpn = dup_n(a, alen);
    X509 *peer = SSL_get0_peer_certificate(t->ssl);
    if (peer && SSL_get_verify_result(t->ssl) == X509_V_OK) {
        BIO *b = BIO_new(BIO_s_mem());
        if (b && X509_NAME_print_ex(b, X509_get_subject_name(peer), 0, XN_FLAG_RFC2253) >= 0) {
            char *p = NULL;
            long n = BIO_get_mem_data(b, &p);
            t->subject = dup_n((const unsigned char *)p, n > 0 ? (size_t)n : 0);
        }
        BIO_free(b);
        t->san = san_text(peer);
    }
    log_debug("%s %s: TLS handshake done: %s %s%s%s", l->cfg->name, conn_name(t->c),
              SSL_get_version(t->ssl), SSL_get_cipher_name(t->ssl), t->subject ? ", client " : "",
              t->subject ? t->subject : "");
}

/* Decrypt what the read BIO holds and hand it to the plugin, while it wants input. */
static void drain(tls_conn_t *t)
{
    if (t->peer_done)
        return;
    static char plain[TLS_PLAIN_CHUNK]; /* one worker thread; handle() never re-enters here */
    while (!t->failed && conn_input_wanted(t->c)) {
        size_t got = 0;
        int r = 0, err = SSL_ERROR_NONE;
        while (got < sizeof plain) {
            r = SSL_read(t->ssl, plain + got, (int)(sizeof plain - got));
            if (r <= 0) {
                err = SSL_get_error(t->ssl, r);
                break;
            }
            got += (size_t)r;
        }
        flush_wire(t); /* TLS 1.3 tickets, key updates, alerts */
        if (got)
            conn_layer_deliver(t->c, plain, got);
        if (err == SSL_ERROR_NONE)
            continue; /* the buffer filled: there may be more */
        if (err == SSL_ERROR_WANT_READ)
            return;
        if (err == SSL_ERROR_ZERO_RETURN) {
            tls_conn_eof(t); /* close_notify: the plaintext ends here */
            return;
        }
        if (!t->failed && conn_is_open(t->c))
            fail(t, "read", err);
        return;
    }
}

void tls_conn_input(tls_conn_t *t, const void *data, size_t len)
{
    if (t->failed || BIO_write(t->rbio, data, (int)len) != (int)len)
        return;
    if (!t->ready) {
        int r = SSL_do_handshake(t->ssl);
        if (r != 1) {
            int err = SSL_get_error(t->ssl, r);
            if (err == SSL_ERROR_WANT_READ) {
                flush_wire(t);
                return;
            }
            fail(t, "handshake", err);
            return;
        }
        flush_wire(t);
        if (!conn_is_open(t->c))
            return; /* the peer went away under our last flight (its timers are gone) */
        handshake_done(t);
        if (conn_layer_ready(t->c) != 0)
            return; /* setup() refused it: the conn is ending */
    }
    drain(t);
}

int tls_conn_write(tls_conn_t *t, const void *data, size_t len)
{
    if (!t->ready || t->failed || t->notified)
        return -EPIPE;
    size_t off = 0;
    while (off < len) {
        size_t n = len - off > INT32_MAX ? INT32_MAX : len - off;
        int r = SSL_write(t->ssl, (const char *)data + off, (int)n);
        if (r <= 0) {
            ERR_clear_error();
            return -ENOMEM; /* a memory BIO refuses only when memory runs out */
        }
        off += (size_t)r;
    }
    return flush_wire(t);
}

void tls_conn_close_notify(tls_conn_t *t)
{
    if (!t->ready || t->failed || t->notified)
        return;
    t->notified = 1;
    SSL_shutdown(t->ssl);
    ERR_clear_error();
    flush_wire(t);
}

void tls_conn_eof(tls_conn_t *t)
{
    if (t->peer_done)
        return;
    t->peer_done = 1;
    conn_layer_eof(t->c);
}

static void on_kick(berth_conn_t *c, void *arg)
{
    tls_conn_t *t = arg;
    (void)c;
    t->kick_timer = NULL; /* gone once its callback runs */
    drain(t);
}

void tls_conn_kick(tls_conn_t *t)
{
    if (!t->ready || t->failed || t->kick_timer)
        return;
    if (BIO_ctrl_pending(t->rbio) == 0 && SSL_pending(t->ssl) == 0)
        return;
    /* Not now: the caller may be the plugin itself (resume() inside handle()). */
    t->kick_timer = conn_timer_start(t->c, 0, on_kick, t);
}

int tls_conn_info(const tls_conn_t *t, berth_tls_info_t *info)
{
    memset(info, 0, sizeof *info);
    if (!t->ready)
        return -EAGAIN;
    info->protocol = SSL_get_version(t->ssl);
    info->cipher = SSL_get_cipher_name(t->ssl);
    info->server_name = SSL_get_servername(t->ssl, TLSEXT_NAMETYPE_host_name);
    info->alpn = t->alpn;
    info->client_subject = t->subject;
    info->client_san = t->san;
    return 0;
}
