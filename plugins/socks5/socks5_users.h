/*
 * The `users = FILE` of auth = password: one `name:hash` line per user, the hash in any
 * crypt(3) format libcrypt accepts (yescrypt, sha512crypt, ... as made by `mkpasswd`,
 * `openssl passwd -6`). Blank lines and lines starting with '#' are skipped.
 */
#ifndef BERTH_SOCKS5_USERS_H
#define BERTH_SOCKS5_USERS_H

#include <stddef.h>
#include <stdint.h>

typedef struct socks5_user {
    char *name;
    size_t namelen;
    char *hash;
} socks5_user_t;

/* Immutable once loaded: shared by every connection of a listener, and read from the
 * thread pool while a password is checked. */
typedef struct socks5_users {
    socks5_user_t *items;
    size_t count;
} socks5_users_t;

/* Read `path`. Returns 0 and a table in *out, or a negative errno with a message (naming
 * the line) in err. A file with no user is an error: nobody could log in. */
int socks5_users_load(const char *path, socks5_users_t **out, char *err, size_t errlen);
void socks5_users_free(socks5_users_t *users);

/*
 * Does user/pass (RFC 1929 bytes, not NUL-terminated) match an entry? 1 or 0.
 * Blocking (it runs crypt(3)): call it off the loop. It compares the name against every
 * entry and runs crypt once whether or not the name exists (against the first entry's
 * hash), so its time does not tell which names exist; the hashes are compared in
 * constant time. A password holding a NUL byte never matches.
 * `scratch` is scratch space of socks5_users_scratch_size() bytes (crypt's own working
 * memory, which the caller wipes and frees).
 */
int socks5_users_verify(const socks5_users_t *users, const uint8_t *user, size_t ulen,
                        const uint8_t *pass, size_t plen, void *scratch);
size_t socks5_users_scratch_size(void);

#endif
