/*
 * The TLS layer (daemon/worker/tls.c) on the server side, fed garbage and truncated records.
 *
 * The input's first byte picks the mode: bit 0 set, an in-process OpenSSL client first
 * completes a real handshake with the layer (over memory, as the socket would carry it), so
 * the rest of the input hits the record layer of an established session (decrypt errors,
 * truncated records, alerts, close_notify); clear, the input is the client's first flight
 * (ClientHello parsing). The rest is cut into chunks whose sizes the next bytes pick, as
 * reads from a socket would be. Bit 4 makes the peer vanish under the server's last handshake
 * flight (a wire write fails, which ends the conn), bit 5 after the handshake.
 *
 * The conn below stands in for conn.c: it records what the layer asks of it (writes,
 * close, abort, setup) so that the layer's own code is what runs and is checked.
 */
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "config/tls.h"
#include "worker/conn.h"
#include "worker/tls.h"

struct berth_conn {
    berth_listener_t *l;
    int open, setup, eofs;
    int fail_writes; /* a peer that went away: a wire write ends the conn, as conn.c does */
    BIO *to_client;  /* what the layer wrote, for the in-process client */
};

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static config_listener_t lcfg;
static config_tls_t tcfg;
static stats_listener_t lstats;
static berth_listener_t listener;
static int dummy_timer;

/* ---- what tls.c needs of conn.c ---- */
berth_listener_t *conn_listener(const berth_conn_t *c)
{
    return c->l;
}
const char *conn_name(const berth_conn_t *c)
{
    (void)c;
    return "fuzz";
}
int conn_is_open(const berth_conn_t *c)
{
    return c->open;
}
void conn_abort(berth_conn_t *c)
{
    c->open = 0;
}
void conn_close(berth_conn_t *c)
{
    c->open = 0;
}
berth_timer_t *conn_timer_start(berth_conn_t *c, uint64_t ms, berth_timer_cb cb, void *arg)
{
    (void)c, (void)ms, (void)cb, (void)arg;
    return (berth_timer_t *)&dummy_timer;
}
static struct berth_conn *cur;
void conn_timer_stop(berth_timer_t *t)
{
    (void)t;
    /* CHECK: conn.c frees a conn's timers when it ends; stopping one after is a double close */
    if (cur && !cur->open)
        abort();
}
int conn_write_wire(berth_conn_t *c, const void *data, size_t len)
{
    if (c->fail_writes) {
        c->open = 0;
        return -EPIPE;
    }
    if (c->to_client)
        BIO_write(c->to_client, data, (int)len);
    return 0;
}
int conn_layer_ready(berth_conn_t *c)
{
    c->setup = 1;
    return c->open ? 0 : -EPIPE;
}
void conn_layer_deliver(berth_conn_t *c, const void *data, size_t len)
{
    /* The plugin would read every byte. */
    volatile unsigned char sum = 0;
    for (size_t i = 0; i < len; i++)
        sum ^= ((const unsigned char *)data)[i];
    (void)sum;
    (void)c;
}
void conn_layer_eof(berth_conn_t *c)
{
    c->eofs++;
    c->open = 0;
}
int conn_input_wanted(const berth_conn_t *c)
{
    return c->open;
}

/* ---- set-up: a self-signed P-256 certificate, made once ---- */

static char *pem_of(int (*write)(BIO *, void *), void *obj, size_t *len)
{
    BIO *b = BIO_new(BIO_s_mem());
    write(b, obj);
    char *p = NULL;
    long n = BIO_get_mem_data(b, &p);
    char *out = malloc((size_t)n + 1);
    memcpy(out, p, (size_t)n);
    out[n] = '\0';
    *len = (size_t)n;
    BIO_free(b);
    return out;
}

static int write_cert(BIO *b, void *x)
{
    return PEM_write_bio_X509(b, x);
}

static int write_key(BIO *b, void *k)
{
    return PEM_write_bio_PrivateKey(b, k, NULL, NULL, 0, NULL, NULL);
}

static SSL_CTX *client_ctx;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *x = X509_new();
    ASN1_INTEGER_set(X509_get_serialNumber(x), 1);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 3600L * 24 * 365);
    X509_set_pubkey(x, k);
    X509_NAME *n = X509_get_subject_name(x);
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"localhost", -1, -1,
                               0);
    X509_set_issuer_name(x, n);
    X509_sign(x, k, EVP_sha256());
    tcfg.pairs[0].cert.data = pem_of(write_cert, x, &tcfg.pairs[0].cert.len);
    tcfg.pairs[0].key.data = pem_of(write_key, k, &tcfg.pairs[0].key.len);
    tcfg.pairs[0].cert.path = "fuzz.crt";
    tcfg.pairs[0].key.path = "fuzz.key";
    tcfg.ncerts = tcfg.nkeys = 1;
    tcfg.protocols = CONFIG_TLS_V12 | CONFIG_TLS_V13;
    tcfg.session_tickets = 1;
    tcfg.handshake_timeout = 10000;
    static unsigned char alpn[] = "\x02h2\x08http/1.1";
    tcfg.alpn = alpn;
    tcfg.alpn_len = sizeof alpn - 1;
    X509_free(x);
    EVP_PKEY_free(k);
    lcfg.name = "fuzz";
    lcfg.tls = &tcfg;
    listener.cfg = &lcfg;
    listener.st = &lstats;
    config_errors_t errs = {0};
    if (tls_listener_open(&listener, &errs) != 0)
        abort();
    client_ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(client_ctx, SSL_VERIFY_NONE, NULL);
    return 0;
}

/* Pump a real client against the layer until the handshake is done (or fails). */
static void handshake(berth_conn_t *c, tls_conn_t *t, int v12, int fail_last)
{
    SSL *cl = SSL_new(client_ctx);
    BIO *in = BIO_new(BIO_s_mem()), *out = BIO_new(BIO_s_mem());
    BIO_set_mem_eof_return(in, -1);
    SSL_set_bio(cl, in, out);
    if (v12)
        SSL_set_max_proto_version(cl, TLS1_2_VERSION);
    SSL_set_tlsext_host_name(cl, "localhost");
    SSL_set_connect_state(cl);
    c->to_client = in;
    for (int round = 0; round < 8 && c->open; round++) {
        SSL_do_handshake(cl);
        if (fail_last && round > 0)
            c->fail_writes = 1; /* the client's last flight, then it is gone */
        char *p = NULL;
        long n = BIO_get_mem_data(out, &p);
        if (n > 0) {
            tls_conn_input(t, p, (size_t)n);
            (void)BIO_reset(out);
        }
        if (SSL_is_init_finished(cl) && c->setup)
            break;
    }
    c->to_client = NULL;
    SSL_free(cl);
    ERR_clear_error();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    struct berth_conn c = {.l = &listener, .open = 1};
    tls_conn_t *t = tls_conn_new(&c);
    if (t == NULL)
        return 0;
    uint8_t mode = data[0];
    data++, size--;
    cur = &c;
    if (mode & 1) {
        handshake(&c, t, mode & 2, mode & 16);
        /* CHECK: a real client's handshake completes and setup() follows, unless the client
         * went away under the server's last flight, which ends the conn before setup() */
        if ((mode & 16) ? c.open || c.setup : !c.setup || !c.open)
            abort();
    }
    c.fail_writes = (mode & 32) != 0;
    while (size > 0 && c.open) {
        size_t n = 1 + (data[0] & 0x3f) * 64; /* 1..4033 bytes per read */
        data++, size--;
        if (n > size)
            n = size;
        tls_conn_input(t, data, n);
        data += n, size -= n;
        if (mode & 4)
            tls_conn_write(t, "x", 1);
    }
    if (mode & 8)
        tls_conn_eof(t);
    tls_conn_close_notify(t);
    tls_conn_free(t);
    cur = NULL;
    ERR_clear_error();
    return 0;
}
