/*
 * libFuzzer target for the socks5 plugin's users file parser (plugins/socks5/socks5_users.c):
 * the file an operator writes, but one whose lines a hostile party may shape (a name taken
 * from a sign-up form, a file synced from elsewhere).
 *
 * The input is the whole file, handed to socks5_users_load() through a memfd (the parser
 * reads a path). Checks (abort(), in every build) that a load either fails with a message or
 * gives a table that holds together: at least one user, each name 1 to 255 bytes without ':'
 * or NUL, names distinct, each hash a non-empty string. Passwords are not verified here:
 * crypt(3) with a cost the input chooses would make each run arbitrarily slow.
 */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "socks5_users.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    socks5_users_t *users = NULL;
    char err[512], path[64];
    int fd, rc;

    fd = memfd_create("users", MFD_CLOEXEC);
    CHECK(fd >= 0);
    for (size_t off = 0; off < size;) {
        ssize_t n = write(fd, data + off, size - off);
        CHECK(n > 0);
        off += (size_t)n;
    }
    snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
    err[0] = '\0';
    rc = socks5_users_load(path, &users, err, sizeof(err));
    close(fd);
    if (rc < 0) {
        CHECK(users == NULL);
        CHECK(err[0] != '\0' && memchr(err, '\0', sizeof(err)) != NULL);
        return 0;
    }
    CHECK(rc == 0 && users != NULL && users->count > 0);
    for (size_t i = 0; i < users->count; i++) {
        const socks5_user_t *u = &users->items[i];

        CHECK(u->namelen >= 1 && u->namelen <= 255);
        CHECK(strlen(u->name) == u->namelen);
        CHECK(memchr(u->name, ':', u->namelen) == NULL);
        CHECK(u->hash != NULL && u->hash[0] != '\0');
        for (size_t j = 0; j < i; j++)
            CHECK(users->items[j].namelen != u->namelen ||
                  memcmp(users->items[j].name, u->name, u->namelen) != 0);
    }
    socks5_users_free(users);
    return 0;
}
