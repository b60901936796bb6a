/*
 * The tls_* keys of a listener section. They are kept apart from the key table in keys.c
 * because two of them repeat (tls_certificate and tls_key, one pair per certificate) and
 * their values land in a config_tls_t that exists only on a TLS listener.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "berth/units.h"
#include "config/parse.h"
#include "config/tls.h"

static const char *const tls_key_names[TK_COUNT] = {
    [TK_CERTIFICATE] = "tls_certificate",
    [TK_KEY] = "tls_key",
    [TK_PROTOCOLS] = "tls_protocols",
    [TK_CIPHERS] = "tls_ciphers",
    [TK_CIPHERSUITES] = "tls_ciphersuites",
    [TK_ALPN] = "tls_alpn",
    [TK_SESSION_TICKETS] = "tls_session_tickets",
    [TK_HANDSHAKE_TIMEOUT] = "tls_handshake_timeout",
    [TK_CLIENT_CA] = "tls_client_ca",
    [TK_VERIFY_CLIENT] = "tls_verify_client",
};

static void file_free(config_tls_file_t *f)
{
    free(f->path);
    if (f->data) {
        /* Key bytes must not linger in freed memory. */
        volatile char *v = f->data;
        for (size_t i = 0; i < f->len; i++)
            v[i] = 0;
        free(f->data);
    }
    memset(f, 0, sizeof *f);
}

void config_tls_free(config_tls_t *t)
{
    if (t == NULL)
        return;
    for (size_t i = 0; i < CONFIG_TLS_MAX_PAIRS; i++) {
        file_free(&t->pairs[i].cert);
        file_free(&t->pairs[i].key);
    }
    file_free(&t->client_ca);
    free(t->ciphers);
    free(t->ciphersuites);
    free(t->alpn);
    free(t);
}

/* "TLSv1.2 TLSv1.3" (spaces or commas) into bits. */
static int set_protocols(config_tls_t *t, const char *value, char *err, size_t errlen)
{
    char buf[256];
    unsigned bits = 0;
    if (strlen(value) >= sizeof buf) {
        snprintf(err, errlen, "too long");
        return -EINVAL;
    }
    strcpy(buf, value);
    for (char *save = NULL, *w = strtok_r(buf, " ,\t", &save); w;
         w = strtok_r(NULL, " ,\t", &save)) {
        if (strcmp(w, "TLSv1.2") == 0)
            bits |= CONFIG_TLS_V12;
        else if (strcmp(w, "TLSv1.3") == 0)
            bits |= CONFIG_TLS_V13;
        else if (strcmp(w, "TLSv1") == 0 || strcmp(w, "TLSv1.0") == 0 ||
                 strcmp(w, "TLSv1.1") == 0 || strncmp(w, "SSL", 3) == 0) {
            snprintf(err, errlen, "'%s' is not offered: it is broken (TLSv1.2 and TLSv1.3 are)", w);
            return -EINVAL;
        } else {
            snprintf(err, errlen, "unknown protocol '%s' (TLSv1.2, TLSv1.3)", w);
            return -EINVAL;
        }
    }
    if (bits == 0) {
        snprintf(err, errlen, "names no protocol (TLSv1.2, TLSv1.3)");
        return -EINVAL;
    }
    t->protocols = bits;
    return 0;
}

/* "h2, http/1.1" into ALPN's wire format. */
static int set_alpn(config_tls_t *t, const char *value, char *err, size_t errlen)
{
    size_t n = strlen(value);
    unsigned char *out = malloc(n + 1);
    char *buf = strdup(value);
    size_t len = 0;
    int rc = -ENOMEM;
    if (out == NULL || buf == NULL)
        goto out;
    rc = -EINVAL;
    for (char *save = NULL, *w = strtok_r(buf, " ,\t", &save); w;
         w = strtok_r(NULL, " ,\t", &save)) {
        size_t wl = strlen(w);
        if (wl > 255) {
            snprintf(err, errlen, "a protocol name is at most 255 bytes");
            goto out;
        }
        out[len++] = (unsigned char)wl;
        memcpy(out + len, w, wl);
        len += wl;
    }
    if (len == 0) {
        snprintf(err, errlen, "names no protocol (e.g. h2, http/1.1)");
        goto out;
    }
    free(t->alpn);
    t->alpn = out;
    t->alpn_len = len;
    out = NULL;
    rc = 0;
out:
    free(out);
    free(buf);
    return rc;
}

static int set_verify(config_tls_t *t, const char *value, char *err, size_t errlen)
{
    if (strcmp(value, "require") == 0)
        t->verify_client = CONFIG_TLS_VERIFY_REQUIRE;
    else if (strcmp(value, "optional") == 0)
        t->verify_client = CONFIG_TLS_VERIFY_OPTIONAL;
    else if (strcmp(value, "off") == 0)
        t->verify_client = CONFIG_TLS_VERIFY_OFF;
    else {
        snprintf(err, errlen, "must be require, optional or off");
        return -EINVAL;
    }
    return 0;
}

static int set_path(struct parse *p, config_tls_file_t *f, const char *value, char *err,
                    size_t errlen)
{
    if (*value == '\0') {
        snprintf(err, errlen, "must name a file");
        return -EINVAL;
    }
    char *path = parse_path_in(p, p->cur->dir, value);
    if (path == NULL)
        return -ENOMEM;
    free(f->path);
    f->path = path;
    f->file = p->cur->name;
    f->line = p->cur->line;
    return 0;
}

static int set_string(char **slot, const char *value, char *err, size_t errlen)
{
    if (*value == '\0') {
        snprintf(err, errlen, "must not be empty");
        return -EINVAL;
    }
    char *s = strdup(value);
    if (s == NULL)
        return -ENOMEM;
    free(*slot);
    *slot = s;
    return 0;
}

static config_tls_t *tls_of(struct parse *p, config_listener_t *l)
{
    if (l->tls == NULL) {
        l->tls = calloc(1, sizeof *l->tls);
        if (l->tls == NULL) {
            p->nomem = 1;
            return NULL;
        }
        l->tls->protocols = CONFIG_TLS_V12 | CONFIG_TLS_V13;
        l->tls->session_tickets = 1;
        l->tls->handshake_timeout = CONFIG_TLS_DEFAULT_HANDSHAKE_TIMEOUT;
    }
    return l->tls;
}

int tls_keys_listener(struct parse *p, config_listener_t *l, const char *name, const char *value)
{
    int k = 0;
    while (k < TK_COUNT && strcmp(tls_key_names[k], name) != 0)
        k++;
    if (k == TK_COUNT)
        return 0;
    config_tls_t *t = tls_of(p, l);
    if (t == NULL)
        return 1;
    int repeats = k == TK_CERTIFICATE || k == TK_KEY;
    if (!repeats && t->seen[k].line) {
        parse_error(p, "duplicate key '%s' (first set at %s:%d)", name, t->seen[k].file,
                    t->seen[k].line);
        return 1;
    }
    if (!t->seen[k].line) {
        t->seen[k].file = p->cur->name;
        t->seen[k].line = p->cur->line;
    }
    char err[256] = "";
    int rc = 0;
    switch ((enum config_tls_key)k) {
    case TK_CERTIFICATE:
    case TK_KEY: {
        size_t *n = k == TK_CERTIFICATE ? &t->ncerts : &t->nkeys;
        if (*n >= CONFIG_TLS_MAX_PAIRS) {
            snprintf(err, sizeof err, "at most %d per listener", CONFIG_TLS_MAX_PAIRS);
            rc = -EINVAL;
            break;
        }
        config_tls_pair_t *pair = &t->pairs[*n];
        rc = set_path(p, k == TK_CERTIFICATE ? &pair->cert : &pair->key, value, err, sizeof err);
        if (rc == 0)
            (*n)++;
        break;
    }
    case TK_PROTOCOLS:
        rc = set_protocols(t, value, err, sizeof err);
        break;
    case TK_CIPHERS:
        rc = set_string(&t->ciphers, value, err, sizeof err);
        break;
    case TK_CIPHERSUITES:
        rc = set_string(&t->ciphersuites, value, err, sizeof err);
        break;
    case TK_ALPN:
        rc = set_alpn(t, value, err, sizeof err);
        break;
    case TK_SESSION_TICKETS:
        rc = berth_parse_bool(value, &t->session_tickets);
        if (rc < 0)
            snprintf(err, sizeof err, "must be on or off");
        break;
    case TK_HANDSHAKE_TIMEOUT:
        rc = berth_parse_duration(value, &t->handshake_timeout);
        if (rc == 0 && t->handshake_timeout == 0) {
            rc = -EINVAL;
            snprintf(err, sizeof err, "must be more than 0");
        } else if (rc < 0) {
            snprintf(err, sizeof err, "not a duration (e.g. 250ms, 10s, 1m)");
        }
        break;
    case TK_CLIENT_CA:
        rc = set_path(p, &t->client_ca, value, err, sizeof err);
        break;
    case TK_VERIFY_CLIENT:
        rc = set_verify(t, value, err, sizeof err);
        break;
    case TK_COUNT:
        break;
    }
    if (rc < 0 && err[0])
        parse_error(p, "%s '%s': %s", name, value, err);
    else if (rc < 0)
        p->nomem = 1;
    return 1;
}

void tls_keys_section_end(struct parse *p, config_listener_t *l, int protocol_ok)
{
    config_tls_t *t = l->tls;
    if (t == NULL)
        return;
    const char *file = l->file;
    int line = l->line;
    for (int k = 0; k < TK_COUNT; k++) {
        if (t->seen[k].line) {
            file = t->seen[k].file;
            line = t->seen[k].line;
            break;
        }
    }
    if (protocol_ok && l->protocol != BERTH_PROTO_TCP && l->protocol != BERTH_PROTO_UNIX)
        parse_error_at(p, file, line, "listener '%s': TLS is for tcp and unix listeners only",
                       l->name);
    if (t->ncerts == 0 || t->ncerts != t->nkeys)
        parse_error_at(p, file, line,
                       "listener '%s': TLS needs each tls_certificate paired with a tls_key "
                       "(%zu certificate%s, %zu key%s)",
                       l->name, t->ncerts, t->ncerts == 1 ? "" : "s", t->nkeys,
                       t->nkeys == 1 ? "" : "s");
    if (!t->seen[TK_VERIFY_CLIENT].line && t->client_ca.path)
        t->verify_client = CONFIG_TLS_VERIFY_REQUIRE;
    if (t->verify_client != CONFIG_TLS_VERIFY_OFF && t->client_ca.path == NULL)
        parse_error_at(p, t->seen[TK_VERIFY_CLIENT].file, t->seen[TK_VERIFY_CLIENT].line,
                       "tls_verify_client: needs tls_client_ca (the CA that signs client "
                       "certificates)");
}
