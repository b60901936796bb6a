/*
 * libFuzzer target for the socks5 plugin's parser (plugins/socks5/socks5_proto.c).
 *
 * The input is a whole client side of a handshake. Its first byte picks how it is cut into
 * reads (so every split of every message is tried), then it is run through the parser the
 * way the plugin does: greeting, RFC 1929 auth if the client offers method 2, request.
 * Checks (CHECK: abort(), in every build) that the parser never takes more than it is given, that a
 * message it hands back holds together, and that it stops for good after an error.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "socks5_proto.h"

/* A check that holds in every build (CHECK() would vanish under NDEBUG): a failure is a
 * crash libFuzzer reports and saves the input of. */
#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_message(int rc, const socks5_msg_t *msg)
{
    uint8_t reply[SOCKS5_MAX_REPLY];
    struct sockaddr_in6 s6;

    switch (rc) {
    case SOCKS5_MSG_GREETING:
        (void)socks5_choose_method(&msg->greeting, SOCKS5_METHOD_PASSWORD);
        break;
    case SOCKS5_MSG_AUTH:
        /* Read every byte: ASan catches a pointer past the parser's buffer. */
        for (size_t i = 0; i < msg->auth.ulen; i++)
            (void)*(volatile const uint8_t *)&msg->auth.user[i];
        for (size_t i = 0; i < msg->auth.plen; i++)
            (void)*(volatile const uint8_t *)&msg->auth.pass[i];
        break;
    case SOCKS5_MSG_REQUEST:
        if (msg->request.atyp == SOCKS5_ATYP_NAME) {
            CHECK(msg->request.namelen > 0);
            CHECK(strlen(msg->request.name) == msg->request.namelen);
        } else {
            CHECK(msg->request.atyp == SOCKS5_ATYP_IPV4 || msg->request.atyp == SOCKS5_ATYP_IPV6);
        }
        memset(&s6, 0, sizeof(s6));
        s6.sin6_family = AF_INET6;
        memcpy(&s6.sin6_addr, msg->request.addr, 16);
        CHECK(socks5_reply(reply, 0, (const struct sockaddr *)&s6) <= SOCKS5_MAX_REPLY);
        break;
    default:
        break;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t chunk, off = 0;
    int rc = SOCKS5_NEED_MORE, failed = 0;

    if (size < 1)
        return 0;
    chunk = (size_t)data[0] % 16 + 1; /* reads of 1..16 bytes; 16 means "as much as is left" */
    data++;
    size--;

    socks5_parser_init(&p);
    while (off < size) {
        size_t n = chunk == 16 ? size - off : (chunk < size - off ? chunk : size - off);
        size_t used = 0;

        rc = socks5_parser_feed(&p, data + off, n, &used, &msg);
        CHECK(used <= n);
        off += used;
        if (rc == SOCKS5_NEED_MORE) {
            CHECK(used == n);
            continue;
        }
        if (rc < 0) {
            failed = rc;
            break;
        }
        check_message(rc, &msg);
        if (rc == SOCKS5_MSG_GREETING)
            socks5_parser_expect(&p, socks5_choose_method(&msg.greeting, SOCKS5_METHOD_PASSWORD) ==
                                             SOCKS5_METHOD_PASSWORD
                                         ? SOCKS5_PHASE_AUTH
                                         : SOCKS5_PHASE_REQUEST);
        else if (rc == SOCKS5_MSG_AUTH)
            socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
        else
            break; /* the request: the rest is data for the destination */
    }
    if (failed && failed != SOCKS5_ERR_PHASE) {
        size_t used = 1;

        /* Sticky: nothing more is taken after an error. */
        CHECK(socks5_parser_feed(&p, data, size, &used, &msg) == failed);
        CHECK(used == 0);
    }
    return 0;
}
