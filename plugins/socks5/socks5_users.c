#include "socks5_users.h"

#include <crypt.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* RFC 1929 carries at most 255 bytes of name; a line longer than this is not a user. */
#define USERS_MAX_LINE 4096

void socks5_users_free(socks5_users_t *users)
{
    if (users == NULL)
        return;
    for (size_t i = 0; i < users->count; i++) {
        free(users->items[i].name);
        if (users->items[i].hash != NULL) {
            explicit_bzero(users->items[i].hash, strlen(users->items[i].hash));
            free(users->items[i].hash);
        }
    }
    free(users->items);
    free(users);
}

static int add_user(socks5_users_t *u, size_t *cap, const char *name, size_t namelen,
                    const char *hash)
{
    if (u->count == *cap) {
        size_t ncap = *cap ? *cap * 2 : 8;
        socks5_user_t *n = realloc(u->items, ncap * sizeof(*n));

        if (n == NULL)
            return -ENOMEM;
        u->items = n;
        *cap = ncap;
    }
    socks5_user_t *e = &u->items[u->count];
    e->name = strndup(name, namelen);
    e->namelen = namelen;
    e->hash = strdup(hash);
    u->count++; /* counted even when half-made, so socks5_users_free frees it */
    if (e->name == NULL || e->hash == NULL)
        return -ENOMEM;
    return 0;
}

int socks5_users_load(const char *path, socks5_users_t **out, char *err, size_t errlen)
{
    socks5_users_t *u = NULL;
    size_t cap = 0, linecap = 0;
    char *line = NULL;
    ssize_t n;
    int lineno = 0, rc = 0;
    FILE *f;

    *out = NULL;
    f = fopen(path, "re");
    if (f == NULL) {
        rc = -errno;
        snprintf(err, errlen, "users file %s: %s", path, strerror(errno));
        return rc;
    }
    u = calloc(1, sizeof(*u));
    if (u == NULL) {
        rc = -ENOMEM;
        snprintf(err, errlen, "users file %s: out of memory", path);
        goto out;
    }
    while ((n = getline(&line, &linecap, f)) != -1) {
        char *colon, *hash;
        size_t len = (size_t)n;
        int cs;

        lineno++;
        if (len > USERS_MAX_LINE || memchr(line, '\0', len) != NULL) {
            rc = -EINVAL;
            snprintf(err, errlen, "users file %s:%d: line too long or not text", path, lineno);
            goto out;
        }
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r' || line[len - 1] == ' ' ||
                           line[len - 1] == '\t'))
            line[--len] = '\0';
        if (len == 0 || line[0] == '#')
            continue;
        colon = strchr(line, ':');
        if (colon == NULL || colon == line || colon - line > 255) {
            rc = -EINVAL;
            snprintf(err, errlen, "users file %s:%d: expected name:hash (a name of 1 to 255 bytes)",
                     path, lineno);
            goto out;
        }
        hash = colon + 1;
        /* Only methods libcrypt deems fit: DES and MD5-crypt are refused (DES also reads
         * any two letters as a salt, so a plain-text password would pass for a hash). */
        cs = crypt_checksalt(hash);
        if (cs != CRYPT_SALT_OK) {
            rc = -EINVAL;
            snprintf(err, errlen,
                     "users file %s:%d: the hash of '%.*s' is %s (make one with mkpasswd or "
                     "openssl passwd -6)",
                     path, lineno, (int)(colon - line), line,
                     cs == CRYPT_SALT_METHOD_LEGACY || cs == CRYPT_SALT_TOO_CHEAP
                         ? "of a weak legacy crypt(3) method"
                         : "not a crypt(3) hash this system accepts");
            goto out;
        }
        for (size_t i = 0; i < u->count; i++) {
            if (u->items[i].namelen == (size_t)(colon - line) &&
                memcmp(u->items[i].name, line, u->items[i].namelen) == 0) {
                rc = -EINVAL;
                snprintf(err, errlen, "users file %s:%d: user '%.*s' is listed twice", path, lineno,
                         (int)(colon - line), line);
                goto out;
            }
        }
        rc = add_user(u, &cap, line, (size_t)(colon - line), hash);
        if (rc < 0) {
            snprintf(err, errlen, "users file %s: out of memory", path);
            goto out;
        }
    }
    if (ferror(f)) {
        rc = -EIO;
        snprintf(err, errlen, "users file %s: read error", path);
        goto out;
    }
    if (u->count == 0) {
        rc = -EINVAL;
        snprintf(err, errlen, "users file %s: no users in it", path);
        goto out;
    }
    *out = u;
    u = NULL;
out:
    if (line != NULL) {
        explicit_bzero(line, linecap);
        free(line);
    }
    fclose(f);
    socks5_users_free(u);
    return rc;
}

/* 1 if a[0..alen) equals b[0..blen), in time that depends only on the lengths. */
static int ct_equal(const uint8_t *a, size_t alen, const uint8_t *b, size_t blen)
{
    size_t n = alen < blen ? alen : blen;
    unsigned diff = alen != blen;

    for (size_t i = 0; i < n; i++)
        diff |= (unsigned)(a[i] ^ b[i]);
    return diff == 0;
}

size_t socks5_users_scratch_size(void)
{
    return sizeof(struct crypt_data);
}

int socks5_users_verify(const socks5_users_t *users, const uint8_t *user, size_t ulen,
                        const uint8_t *pass, size_t plen, void *scratch)
{
    struct crypt_data *cd = scratch;
    char password[256];
    size_t found = 0, idx = 0;
    const char *hash, *out;
    int ok;

    if (users == NULL || users->count == 0 || plen > 255)
        return 0;
    /* Every entry is compared, so the time does not depend on where (or whether) the name
     * is found. */
    for (size_t i = 0; i < users->count; i++) {
        size_t eq = (size_t)ct_equal((const uint8_t *)users->items[i].name, users->items[i].namelen,
                                     user, ulen);
        size_t mask = (size_t)0 - eq;

        idx = (idx & ~mask) | (i & mask);
        found |= eq;
    }
    /* An unknown name still costs one crypt, against a real hash of this file. */
    hash = users->items[idx].hash;

    memcpy(password, pass, plen);
    password[plen] = '\0';
    memset(cd, 0, sizeof(*cd));
    out = crypt_rn(password, hash, cd, (int)sizeof(*cd));
    ok = out != NULL && out[0] != '*' &&
         ct_equal((const uint8_t *)out, strlen(out), (const uint8_t *)hash, strlen(hash));
    ok = ok && found && memchr(pass, '\0', plen) == NULL;
    explicit_bzero(password, sizeof(password));
    return ok;
}
