/*
 * libFuzzer target for the SOCKS UDP request header parser (socks5_udp_parse in
 * plugins/socks5/socks5_proto.c): the input is one datagram as a client sends it to the
 * relay. Checks (CHECK: abort(), in every build) that a header it accepts lies within the
 * datagram and holds together, and that wrapping its address again parses back to it.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>

#include "socks5_proto.h"

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
    socks5_udp_header_t h, back;
    uint8_t out[SOCKS5_MAX_REPLY];
    /* A copy of exactly `size` bytes, so ASan sees any read past the datagram. */
    uint8_t *copy = malloc(size ? size : 1);

    if (copy == NULL)
        return 0;
    memcpy(copy, data, size);
    int rc = socks5_udp_parse(copy, size, &h);
    CHECK(rc <= 0 && rc >= SOCKS5_UDP_PORT);
    if (rc == SOCKS5_UDP_FRAG)
        CHECK(h.frag != 0);
    if (rc == SOCKS5_UDP_OK) {
        /* The shortest: a one-byte name (4 + 1 + 1 + 2); IPv4 is 10. */
        CHECK(h.len >= 8 && h.len <= size && h.len <= SOCKS5_UDP_MAX_HEADER);
        CHECK(h.frag == 0 && h.port != 0);
        if (h.atyp == SOCKS5_ATYP_NAME) {
            CHECK(h.namelen > 0 && strlen(h.name) == h.namelen);
        } else {
            struct sockaddr_storage ss;
            size_t n;

            memset(&ss, 0, sizeof(ss));
            if (h.atyp == SOCKS5_ATYP_IPV4) {
                struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

                s4->sin_family = AF_INET;
                memcpy(&s4->sin_addr, h.addr, 4);
                s4->sin_port = htons(h.port);
            } else {
                struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

                CHECK(h.atyp == SOCKS5_ATYP_IPV6);
                s6->sin6_family = AF_INET6;
                memcpy(&s6->sin6_addr, h.addr, 16);
                s6->sin6_port = htons(h.port);
            }
            n = socks5_udp_header(out, (const struct sockaddr *)&ss);
            CHECK(n == 10 || n == 22);
            CHECK(socks5_udp_parse(out, n, &back) == SOCKS5_UDP_OK);
            CHECK(back.port == h.port);
        }
    }
    free(copy);
    return 0;
}
