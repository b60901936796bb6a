/*
 * Reading a TLS listener's files into memory and building an SSL_CTX from the bytes. The
 * master reads (as root); workers build. The same builder runs for `berthd -t`, at start and
 * on reload in the master, and in each worker, so what the check accepts is what serves.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/tls.h"
#include "core/log.h"

/* The reason of OpenSSL's last error (never key material), and clear the queue. */
static const char *ssl_reason(void)
{
    unsigned long e = ERR_peek_last_error();
    const char *r = e ? ERR_reason_error_string(e) : NULL;
    ERR_clear_error();
    return r ? r : "not understood";
}

static int read_file(config_tls_file_t *f, char *err, size_t errlen)
{
    int rc = 0;
    char *buf = NULL;
    int fd = open(f->path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) < 0) {
        rc = -errno;
        snprintf(err, errlen, "cannot read %s: %s", f->path, strerror(-rc));
        goto out;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > (off_t)CONFIG_TLS_MAX_FILE) {
        rc = -EINVAL;
        snprintf(err, errlen, "%s: not a regular file of at most %u bytes", f->path,
                 CONFIG_TLS_MAX_FILE);
        goto out;
    }
    buf = malloc((size_t)st.st_size + 1);
    if (buf == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t n = read(fd, buf + got, (size_t)st.st_size - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            rc = n < 0 ? -errno : -EIO;
            snprintf(err, errlen, "cannot read %s: %s", f->path, strerror(-rc));
            goto out;
        }
        got += (size_t)n;
    }
    buf[got] = '\0';
    f->data = buf;
    f->len = got;
    buf = NULL;
out:
    if (buf) {
        OPENSSL_cleanse(buf, (size_t)st.st_size);
        free(buf);
    }
    if (fd >= 0)
        close(fd);
    return rc;
}

/* The leaf of a pair, parsed from its bytes (NULL: none). */
static X509 *leaf_of(const config_tls_file_t *f)
{
    BIO *b = BIO_new_mem_buf(f->data, (int)f->len);
    X509 *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    return x;
}

static void check_expiry(const config_tls_file_t *f, config_errors_t *errs, int *bad)
{
    X509 *x = leaf_of(f);
    if (x == NULL)
        return; /* the builder reports it */
    const ASN1_TIME *na = X509_get0_notAfter(x);
    int days = 0, secs = 0;
    if (ASN1_TIME_diff(&days, &secs, NULL, na)) {
        char when[64] = "?";
        struct tm tm;
        if (ASN1_TIME_to_tm(na, &tm))
            strftime(when, sizeof when, "%Y-%m-%d %H:%M:%S UTC", &tm);
        if (days < 0 || (days == 0 && secs <= 0)) {
            config_errors_add(errs, f->file, f->line, "tls_certificate %s: expired on %s", f->path,
                              when);
            *bad = 1;
        } else if (days < CONFIG_TLS_EXPIRY_WARN_DAYS) {
            log_warn("%s:%d: tls_certificate %s: expires on %s, in %d day%s", f->file, f->line,
                     f->path, when, days, days == 1 ? "" : "s");
        }
    }
    X509_free(x);
}

static int load_listener(config_listener_t *l, config_errors_t *errs)
{
    config_tls_t *t = l->tls;
    char err[512];
    int bad = 0;
    for (size_t i = 0; i < t->ncerts; i++) {
        config_tls_file_t *fs[2] = {&t->pairs[i].cert, &t->pairs[i].key};
        for (int j = 0; j < 2; j++) {
            if (fs[j]->data)
                continue;
            if (read_file(fs[j], err, sizeof err)) {
                config_errors_add(errs, fs[j]->file, fs[j]->line, "%s: %s",
                                  j ? "tls_key" : "tls_certificate", err);
                bad = 1;
            }
        }
    }
    if (t->client_ca.path && !t->client_ca.data && read_file(&t->client_ca, err, sizeof err)) {
        config_errors_add(errs, t->client_ca.file, t->client_ca.line, "tls_client_ca: %s", err);
        bad = 1;
    }
    if (bad)
        return -EINVAL;
    for (size_t i = 0; i < t->ncerts; i++) {
        int key = TK_CERTIFICATE;
        SSL_CTX *ctx = config_tls_ctx_new(t, i, err, sizeof err, &key);
        if (ctx == NULL) {
            const config_tls_file_t *f = key == TK_CERTIFICATE ? &t->pairs[i].cert
                                         : key == TK_KEY       ? &t->pairs[i].key
                                                               : NULL;
            if (f)
                config_errors_add(errs, f->file, f->line, "%s", err);
            else
                config_errors_add(errs, t->seen[key].file, t->seen[key].line, "%s", err);
            bad = 1;
            continue;
        }
        SSL_CTX_free(ctx);
        check_expiry(&t->pairs[i].cert, errs, &bad);
    }
    return bad ? -EINVAL : 0;
}

int config_tls_load(berth_config_t *cfg, config_errors_t *errs)
{
    int rc = 0;
    for (size_t i = 0; i < cfg->nlisteners; i++)
        if (cfg->listeners[i].tls && load_listener(&cfg->listeners[i], errs))
            rc = -EINVAL;
    return rc;
}

/* ALPN: the first of the client's protocols we offer, in our order of preference. */
static int on_alpn(SSL *ssl, const unsigned char **out, unsigned char *outlen,
                   const unsigned char *in, unsigned inlen, void *arg)
{
    const config_tls_t *t = arg;
    unsigned char *o = NULL;
    (void)ssl;
    if (SSL_select_next_proto(&o, outlen, t->alpn, (unsigned)t->alpn_len, in, inlen) !=
        OPENSSL_NPN_NEGOTIATED)
        return SSL_TLSEXT_ERR_ALERT_FATAL; /* RFC 7301: no common protocol */
    *out = o;
    return SSL_TLSEXT_ERR_OK;
}

static int use_chain(SSL_CTX *ctx, const config_tls_file_t *f)
{
    BIO *b = BIO_new_mem_buf(f->data, (int)f->len);
    X509 *leaf = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    int ok = leaf && SSL_CTX_use_certificate(ctx, leaf) == 1;
    X509 *x;
    while (ok && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, x) != 1) {
            X509_free(x);
            ok = 0;
        }
    }
    X509_free(leaf);
    BIO_free(b);
    if (ok)
        ERR_clear_error(); /* the end of the PEM stream */
    return ok;
}

static int use_key(SSL_CTX *ctx, const config_tls_file_t *f)
{
    BIO *b = BIO_new_mem_buf(f->data, (int)f->len);
    EVP_PKEY *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    int rc = k == NULL ? 0 : SSL_CTX_use_PrivateKey(ctx, k) == 1 ? 1 : -1;
    EVP_PKEY_free(k);
    BIO_free(b);
    return rc;
}

static int use_client_ca(SSL_CTX *ctx, const config_tls_t *t)
{
    BIO *b = BIO_new_mem_buf(t->client_ca.data, (int)t->client_ca.len);
    X509_STORE *store = SSL_CTX_get_cert_store(ctx);
    STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
    int n = 0;
    X509 *x;
    while (b && names && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        X509_STORE_add_cert(store, x);
        X509_NAME *nm = X509_NAME_dup(X509_get_subject_name(x));
        if (nm && sk_X509_NAME_push(names, nm) <= 0)
            X509_NAME_free(nm);
        X509_free(x);
        n++;
    }
    ERR_clear_error();
    BIO_free(b);
    if (n == 0) {
        sk_X509_NAME_pop_free(names, X509_NAME_free);
        return 0;
    }
    SSL_CTX_set_client_CA_list(ctx, names); /* takes names */
    int mode = SSL_VERIFY_PEER;
    if (t->verify_client == CONFIG_TLS_VERIFY_REQUIRE)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    SSL_CTX_set_verify(ctx, mode, NULL);
    return 1;
}

void *config_tls_ctx_new(const config_tls_t *t, size_t pair, char *err, size_t errlen, int *bad_key)
{
    const config_tls_pair_t *p = &t->pairs[pair];
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    if (ctx == NULL) {
        snprintf(err, errlen, "cannot make a TLS context: %s", ssl_reason());
        *bad_key = TK_CERTIFICATE;
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx,
                                  t->protocols & CONFIG_TLS_V12 ? TLS1_2_VERSION : TLS1_3_VERSION);
    SSL_CTX_set_max_proto_version(ctx,
                                  t->protocols & CONFIG_TLS_V13 ? TLS1_3_VERSION : TLS1_2_VERSION);
    /* The host owns the buffers' lifetimes: partial writes and moving buffers are fine. */
    SSL_CTX_set_mode(ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
                              SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
                                 (t->session_tickets ? 0 : SSL_OP_NO_TICKET));
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    static const unsigned char sid_ctx[] = "berth";
    SSL_CTX_set_session_id_context(ctx, sid_ctx, sizeof sid_ctx - 1);
    if (!t->session_tickets)
        SSL_CTX_set_num_tickets(ctx, 0);
    if (t->ciphers && SSL_CTX_set_cipher_list(ctx, t->ciphers) != 1) {
        snprintf(err, errlen, "tls_ciphers '%s': no cipher OpenSSL knows (%s)", t->ciphers,
                 ssl_reason());
        *bad_key = TK_CIPHERS;
        goto fail;
    }
    if (t->ciphersuites && SSL_CTX_set_ciphersuites(ctx, t->ciphersuites) != 1) {
        snprintf(err, errlen, "tls_ciphersuites '%s': not TLS 1.3 suites OpenSSL knows (%s)",
                 t->ciphersuites, ssl_reason());
        *bad_key = TK_CIPHERSUITES;
        goto fail;
    }
    if (!use_chain(ctx, &p->cert)) {
        snprintf(err, errlen, "tls_certificate %s: not a PEM certificate (chain): %s", p->cert.path,
                 ssl_reason());
        *bad_key = TK_CERTIFICATE;
        goto fail;
    }
    int k = use_key(ctx, &p->key);
    if (k == 0) {
        snprintf(err, errlen, "tls_key %s: not a PEM private key: %s", p->key.path, ssl_reason());
        *bad_key = TK_KEY;
        goto fail;
    }
    if (k < 0 || SSL_CTX_check_private_key(ctx) != 1) {
        ERR_clear_error();
        snprintf(err, errlen, "tls_key %s does not match tls_certificate %s", p->key.path,
                 p->cert.path);
        *bad_key = TK_KEY;
        goto fail;
    }
    if (t->client_ca.data && !use_client_ca(ctx, t)) {
        snprintf(err, errlen, "tls_client_ca %s: no PEM certificate in it", t->client_ca.path);
        *bad_key = TK_CLIENT_CA;
        goto fail;
    }
    if (t->alpn)
        SSL_CTX_set_alpn_select_cb(ctx, on_alpn, (void *)t);
    return ctx;
fail:
    SSL_CTX_free(ctx);
    return NULL;
}
