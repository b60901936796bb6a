/* Unit tests for the SOCKS5 wire parser and reply builder (socks5_proto.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <cmocka.h>

#include "berth/handler.h"
#include "socks5_proto.h"

/* Feed `len` bytes in chunks of `chunk` until a result other than NEED_MORE; returns it and
 * how many bytes were taken in all. */
static int feed_chunks(socks5_parser_t *p, const uint8_t *b, size_t len, size_t chunk,
                       size_t *taken, socks5_msg_t *msg)
{
    size_t off = 0;
    int rc = SOCKS5_NEED_MORE;

    while (off < len) {
        size_t n = len - off < chunk ? len - off : chunk, used;

        rc = socks5_parser_feed(p, b + off, n, &used, msg);
        assert_true(used <= n);
        off += used;
        if (rc != SOCKS5_NEED_MORE)
            break;
        assert_int_equal(used, n);
    }
    *taken = off;
    return rc;
}

static void test_greeting_any_split(void **state)
{
    const uint8_t g[] = {5, 3, 0, 1, 2, 0xAA /* not part of it */};

    for (size_t chunk = 1; chunk <= sizeof(g); chunk++) {
        socks5_parser_t p;
        socks5_msg_t msg;
        size_t taken;

        socks5_parser_init(&p);
        assert_int_equal(feed_chunks(&p, g, sizeof(g), chunk, &taken, &msg), SOCKS5_MSG_GREETING);
        assert_int_equal(taken, 5);
        assert_int_equal(msg.greeting.nmethods, 3);
        assert_memory_equal(msg.greeting.methods, g + 2, 3);
        assert_int_equal(socks5_choose_method(&msg.greeting, SOCKS5_METHOD_PASSWORD),
                         SOCKS5_METHOD_PASSWORD);
        assert_int_equal(socks5_choose_method(&msg.greeting, 0x80), SOCKS5_METHOD_UNACCEPTABLE);
    }
}

static void test_greeting_no_methods(void **state)
{
    const uint8_t g[] = {5, 0};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    assert_int_equal(socks5_parser_feed(&p, g, 2, &used, &msg), SOCKS5_MSG_GREETING);
    assert_int_equal(msg.greeting.nmethods, 0);
    assert_int_equal(socks5_choose_method(&msg.greeting, SOCKS5_METHOD_NONE),
                     SOCKS5_METHOD_UNACCEPTABLE);
}

static void test_greeting_max_methods(void **state)
{
    uint8_t g[2 + 255];
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    g[0] = 5;
    g[1] = 255;
    for (int i = 0; i < 255; i++)
        g[2 + i] = (uint8_t)(i + 1); /* every method but 0 */
    socks5_parser_init(&p);
    assert_int_equal(socks5_parser_feed(&p, g, sizeof(g), &used, &msg), SOCKS5_MSG_GREETING);
    assert_int_equal(used, sizeof(g));
    assert_int_equal(socks5_choose_method(&msg.greeting, SOCKS5_METHOD_NONE),
                     SOCKS5_METHOD_UNACCEPTABLE);
    assert_int_equal(socks5_choose_method(&msg.greeting, SOCKS5_METHOD_PASSWORD),
                     SOCKS5_METHOD_PASSWORD);
}

/* A wrong version is judged on its first byte: no waiting for more. */
static void test_bad_version_first_byte(void **state)
{
    const uint8_t socks4[] = {4};
    const uint8_t http[] = {'G', 'E', 'T', ' ', '/'};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    assert_int_equal(socks5_parser_feed(&p, socks4, 1, &used, &msg), SOCKS5_ERR_VERSION);
    /* Sticky. */
    assert_int_equal(socks5_parser_feed(&p, socks4, 1, &used, &msg), SOCKS5_ERR_VERSION);
    assert_int_equal(used, 0);

    socks5_parser_init(&p);
    assert_int_equal(socks5_parser_feed(&p, http, sizeof(http), &used, &msg), SOCKS5_ERR_VERSION);
}

static void test_auth_any_split(void **state)
{
    const uint8_t a[] = {1, 5, 'a', 'l', 'i', 'c', 'e', 3, 'p', 'w', '!', 5, 1};

    for (size_t chunk = 1; chunk <= sizeof(a); chunk++) {
        socks5_parser_t p;
        socks5_msg_t msg;
        size_t taken;

        socks5_parser_init(&p);
        socks5_parser_expect(&p, SOCKS5_PHASE_AUTH);
        assert_int_equal(feed_chunks(&p, a, sizeof(a), chunk, &taken, &msg), SOCKS5_MSG_AUTH);
        assert_int_equal(taken, 11);
        assert_int_equal(msg.auth.ulen, 5);
        assert_memory_equal(msg.auth.user, "alice", 5);
        assert_int_equal(msg.auth.plen, 3);
        assert_memory_equal(msg.auth.pass, "pw!", 3);
    }
}

static void test_auth_longest_and_empty(void **state)
{
    uint8_t a[SOCKS5_MAX_MESSAGE];
    const uint8_t empty[] = {1, 0, 0};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    a[0] = 1;
    a[1] = 255;
    memset(a + 2, 'u', 255);
    a[257] = 255;
    memset(a + 258, 'p', 255);
    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_AUTH);
    assert_int_equal(socks5_parser_feed(&p, a, sizeof(a), &used, &msg), SOCKS5_MSG_AUTH);
    assert_int_equal(used, SOCKS5_MAX_MESSAGE);
    assert_int_equal(msg.auth.ulen, 255);
    assert_int_equal(msg.auth.plen, 255);
    assert_int_equal(msg.auth.pass[254], 'p');

    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_AUTH);
    assert_int_equal(socks5_parser_feed(&p, empty, sizeof(empty), &used, &msg), SOCKS5_MSG_AUTH);
    assert_int_equal(msg.auth.ulen, 0);
    assert_int_equal(msg.auth.plen, 0);
}

static void test_auth_bad_version(void **state)
{
    /* Some clients wrongly send 5 here. */
    const uint8_t a[] = {5, 1, 'a', 1, 'b'};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_AUTH);
    assert_int_equal(socks5_parser_feed(&p, a, sizeof(a), &used, &msg), SOCKS5_ERR_VERSION);
}

static void test_request_ipv4_any_split(void **state)
{
    const uint8_t r[] = {5, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'G', 'E', 'T'};

    for (size_t chunk = 1; chunk <= sizeof(r); chunk++) {
        socks5_parser_t p;
        socks5_msg_t msg;
        size_t taken;

        socks5_parser_init(&p);
        socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
        assert_int_equal(feed_chunks(&p, r, sizeof(r), chunk, &taken, &msg), SOCKS5_MSG_REQUEST);
        /* The early data after the request stays the caller's. */
        assert_int_equal(taken, 10);
        assert_int_equal(msg.request.cmd, SOCKS5_CMD_CONNECT);
        assert_int_equal(msg.request.atyp, SOCKS5_ATYP_IPV4);
        assert_memory_equal(msg.request.addr, r + 4, 4);
        assert_int_equal(msg.request.port, 8080);
        assert_int_equal(p.phase, SOCKS5_PHASE_DONE);
    }
}

static void test_request_ipv6(void **state)
{
    uint8_t r[22] = {5, 1, 0, 4};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    r[4 + 15] = 1; /* ::1 */
    r[20] = 0;
    r[21] = 80;
    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, r, sizeof(r), &used, &msg), SOCKS5_MSG_REQUEST);
    assert_int_equal(used, 22);
    assert_int_equal(msg.request.atyp, SOCKS5_ATYP_IPV6);
    assert_memory_equal(msg.request.addr, &in6addr_loopback, 16);
    assert_int_equal(msg.request.port, 80);
}

static void test_request_name_any_split(void **state)
{
    const uint8_t r[] = {5, 3, 0, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0, 80};

    for (size_t chunk = 1; chunk <= sizeof(r); chunk++) {
        socks5_parser_t p;
        socks5_msg_t msg;
        size_t taken;

        socks5_parser_init(&p);
        socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
        assert_int_equal(feed_chunks(&p, r, sizeof(r), chunk, &taken, &msg), SOCKS5_MSG_REQUEST);
        assert_int_equal(taken, sizeof(r));
        assert_int_equal(msg.request.cmd, SOCKS5_CMD_UDP_ASSOCIATE);
        assert_int_equal(msg.request.atyp, SOCKS5_ATYP_NAME);
        assert_int_equal(msg.request.namelen, 9);
        assert_string_equal(msg.request.name, "localhost");
        assert_int_equal(msg.request.port, 80);
    }
}

static void test_request_longest_name(void **state)
{
    uint8_t r[4 + 1 + 255 + 2] = {5, 1, 0, 3, 255};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    memset(r + 5, 'a', 255);
    r[260] = 0xff;
    r[261] = 0xff;
    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, r, sizeof(r), &used, &msg), SOCKS5_MSG_REQUEST);
    assert_int_equal(strlen(msg.request.name), 255);
    assert_int_equal(msg.request.port, 65535);
}

static void test_request_bad_atyp_early(void **state)
{
    /* Judged on the fourth byte: nothing after it is needed. */
    const uint8_t r[] = {5, 1, 0, 2};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, r, sizeof(r), &used, &msg), SOCKS5_ERR_ATYP);
}

static void test_request_bad_names(void **state)
{
    const uint8_t empty[] = {5, 1, 0, 3, 0, 0, 80};
    const uint8_t nul[] = {5, 1, 0, 3, 4, 'a', 0, 'b', 'c', 0, 80};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, empty, sizeof(empty), &used, &msg), SOCKS5_ERR_NAME);
    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, nul, sizeof(nul), &used, &msg), SOCKS5_ERR_NAME);
}

static void test_request_bad_version(void **state)
{
    const uint8_t r[] = {4, 1, 0, 80, 127, 0, 0, 1, 0};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used;

    socks5_parser_init(&p);
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, r, sizeof(r), &used, &msg), SOCKS5_ERR_VERSION);
}

/* A pipelining client: greeting, auth and request in one buffer, handed on one message at a
 * time as the caller moves the parser on. */
static void test_pipelined_session(void **state)
{
    const uint8_t all[] = {5, 1, 2, 1, 1, 'u', 1, 'p', 5, 1, 0, 1, 10, 0, 0, 1, 0, 22, 'x'};
    socks5_parser_t p;
    socks5_msg_t msg;
    size_t used, off = 0;

    socks5_parser_init(&p);
    assert_int_equal(socks5_parser_feed(&p, all, sizeof(all), &used, &msg), SOCKS5_MSG_GREETING);
    off += used;
    /* Held until the caller says what comes next. */
    assert_int_equal(socks5_parser_feed(&p, all + off, sizeof(all) - off, &used, &msg),
                     SOCKS5_ERR_PHASE);
    assert_int_equal(used, 0);
    socks5_parser_expect(&p, SOCKS5_PHASE_AUTH);
    assert_int_equal(socks5_parser_feed(&p, all + off, sizeof(all) - off, &used, &msg),
                     SOCKS5_MSG_AUTH);
    off += used;
    socks5_parser_expect(&p, SOCKS5_PHASE_REQUEST);
    assert_int_equal(socks5_parser_feed(&p, all + off, sizeof(all) - off, &used, &msg),
                     SOCKS5_MSG_REQUEST);
    off += used;
    assert_int_equal(msg.request.port, 22);
    assert_int_equal(sizeof(all) - off, 1);
    /* Done: the parser takes nothing more. */
    assert_int_equal(socks5_parser_feed(&p, all + off, 1, &used, &msg), SOCKS5_ERR_PHASE);
    assert_int_equal(used, 0);
}

static void test_reply_addresses(void **state)
{
    uint8_t out[SOCKS5_MAX_REPLY];
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(1080)};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(443)};
    const uint8_t want4[] = {5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38};
    const uint8_t wantmapped[] = {5, 0, 0, 1, 10, 1, 2, 3, 0x01, 0xbb};
    const uint8_t wantnone[] = {5, 5, 0, 1, 0, 0, 0, 0, 0, 0};

    inet_pton(AF_INET, "127.0.0.1", &s4.sin_addr);
    assert_int_equal(socks5_reply(out, 0, (struct sockaddr *)&s4), 10);
    assert_memory_equal(out, want4, 10);

    inet_pton(AF_INET6, "::1", &s6.sin6_addr);
    assert_int_equal(socks5_reply(out, 0, (struct sockaddr *)&s6), 22);
    assert_int_equal(out[3], 4);
    assert_memory_equal(out + 4, &in6addr_loopback, 16);
    assert_int_equal(out[20], 0x01);
    assert_int_equal(out[21], 0xbb);

    inet_pton(AF_INET6, "::ffff:10.1.2.3", &s6.sin6_addr);
    assert_int_equal(socks5_reply(out, 0, (struct sockaddr *)&s6), 10);
    assert_memory_equal(out, wantmapped, 10);

    assert_int_equal(socks5_reply(out, 5, NULL), 10);
    assert_memory_equal(out, wantnone, 10);
}

static void test_reply_codes(void **state)
{
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_OK), 0);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_FAILED), 1);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_DENIED), 2);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_NET_UNREACH), 3);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_HOST_UNREACH), 4);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_NO_NAME), 4);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_REFUSED), 5);
    assert_int_equal(socks5_reply_for_connect_error(BERTH_CONNECT_TIMEOUT), 6);
    assert_int_equal(socks5_reply_for_connect_error(99), 1);
    assert_string_equal(socks5_reply_text(6), "timed out");
    assert_string_equal(socks5_reply_text(200), "unknown");
}

static void test_udp_parse_addresses(void **state)
{
    socks5_udp_header_t h;
    const uint8_t v4[] = {0, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90, 'h', 'i'};
    uint8_t v6[4 + 16 + 2 + 1] = {0, 0, 0, 4};
    const uint8_t name[] = {0, 0, 0, 3, 9, 'l', 'o', 'c', 'a', 'l', 'h', 'o', 's', 't', 0, 53};

    assert_int_equal(socks5_udp_parse(v4, sizeof(v4), &h), SOCKS5_UDP_OK);
    assert_int_equal(h.atyp, SOCKS5_ATYP_IPV4);
    assert_int_equal(h.port, 8080);
    assert_int_equal(h.len, 10);
    assert_memory_equal(h.addr, v4 + 4, 4);
    /* A header with no data is a datagram of 0 bytes, which UDP may carry. */
    assert_int_equal(socks5_udp_parse(v4, 10, &h), SOCKS5_UDP_OK);

    v6[19] = 1;
    v6[21] = 7;
    assert_int_equal(socks5_udp_parse(v6, sizeof(v6), &h), SOCKS5_UDP_OK);
    assert_int_equal(h.atyp, SOCKS5_ATYP_IPV6);
    assert_memory_equal(h.addr, &in6addr_loopback, 16);
    assert_int_equal(h.port, 7);
    assert_int_equal(h.len, 22);

    assert_int_equal(socks5_udp_parse(name, sizeof(name), &h), SOCKS5_UDP_OK);
    assert_string_equal(h.name, "localhost");
    assert_int_equal(h.namelen, 9);
    assert_int_equal(h.port, 53);
    assert_int_equal(h.len, sizeof(name));
}

static void test_udp_parse_malformed(void **state)
{
    socks5_udp_header_t h;
    const uint8_t v4[] = {0, 0, 0, 1, 127, 0, 0, 1, 0x1f, 0x90};
    const uint8_t frag[] = {0, 0, 1, 1, 127, 0, 0, 1, 0x1f, 0x90, 'x'};
    const uint8_t rsv[] = {0, 1, 0, 1, 127, 0, 0, 1, 0x1f, 0x90};
    const uint8_t atyp[] = {0, 0, 0, 2, 127, 0, 0, 1, 0x1f, 0x90};
    const uint8_t empty[] = {0, 0, 0, 3, 0, 0, 80};
    const uint8_t nul[] = {0, 0, 0, 3, 3, 'a', 0, 'b', 0, 80};
    const uint8_t port0[] = {0, 0, 0, 1, 127, 0, 0, 1, 0, 0};
    const uint8_t name_short[] = {0, 0, 0, 3, 200, 'a', 'b'};

    /* Every truncation of a good header is short, never read past. */
    for (size_t n = 0; n < sizeof(v4); n++)
        assert_int_equal(socks5_udp_parse(v4, n, &h), SOCKS5_UDP_SHORT);
    assert_int_equal(socks5_udp_parse(frag, sizeof(frag), &h), SOCKS5_UDP_FRAG);
    assert_int_equal(h.frag, 1);
    assert_int_equal(socks5_udp_parse(rsv, sizeof(rsv), &h), SOCKS5_UDP_RSV);
    assert_int_equal(socks5_udp_parse(atyp, sizeof(atyp), &h), SOCKS5_UDP_ATYP);
    assert_int_equal(socks5_udp_parse(empty, sizeof(empty), &h), SOCKS5_UDP_NAME);
    assert_int_equal(socks5_udp_parse(nul, sizeof(nul), &h), SOCKS5_UDP_NAME);
    assert_int_equal(socks5_udp_parse(port0, sizeof(port0), &h), SOCKS5_UDP_PORT);
    assert_int_equal(socks5_udp_parse(name_short, sizeof(name_short), &h), SOCKS5_UDP_SHORT);
    assert_int_equal(socks5_udp_parse(name_short, 4, &h), SOCKS5_UDP_SHORT);
}

static void test_udp_header_build(void **state)
{
    uint8_t out[SOCKS5_MAX_REPLY];
    socks5_udp_header_t h;
    struct sockaddr_in s4 = {.sin_family = AF_INET, .sin_port = htons(5353)};
    struct sockaddr_in6 s6 = {.sin6_family = AF_INET6, .sin6_port = htons(9)};
    struct sockaddr_un_like {
        sa_family_t family;
    } other = {AF_UNIX};
    const uint8_t want4[] = {0, 0, 0, 1, 10, 0, 0, 2, 0x14, 0xe9};

    inet_pton(AF_INET, "10.0.0.2", &s4.sin_addr);
    assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&s4), 10);
    assert_memory_equal(out, want4, 10);
    /* What it builds, it parses back. */
    assert_int_equal(socks5_udp_parse(out, 10, &h), SOCKS5_UDP_OK);
    assert_int_equal(h.port, 5353);

    s6.sin6_addr = in6addr_loopback;
    assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&s6), 22);
    assert_int_equal(socks5_udp_parse(out, 22, &h), SOCKS5_UDP_OK);
    assert_int_equal(h.atyp, SOCKS5_ATYP_IPV6);
    assert_memory_equal(h.addr, &in6addr_loopback, 16);

    inet_pton(AF_INET6, "::ffff:10.0.0.2", &s6.sin6_addr);
    s6.sin6_port = htons(5353);
    assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&s6), 10);
    assert_memory_equal(out, want4, 10);

    assert_int_equal(socks5_udp_header(out, (struct sockaddr *)&other), 0);
    assert_int_equal(socks5_udp_header(out, NULL), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_greeting_any_split),   cmocka_unit_test(test_greeting_no_methods),
        cmocka_unit_test(test_greeting_max_methods), cmocka_unit_test(test_bad_version_first_byte),
        cmocka_unit_test(test_auth_any_split),       cmocka_unit_test(test_auth_longest_and_empty),
        cmocka_unit_test(test_auth_bad_version),     cmocka_unit_test(test_request_ipv4_any_split),
        cmocka_unit_test(test_request_ipv6),         cmocka_unit_test(test_request_name_any_split),
        cmocka_unit_test(test_request_longest_name), cmocka_unit_test(test_request_bad_atyp_early),
        cmocka_unit_test(test_request_bad_names),    cmocka_unit_test(test_request_bad_version),
        cmocka_unit_test(test_pipelined_session),    cmocka_unit_test(test_reply_addresses),
        cmocka_unit_test(test_reply_codes),          cmocka_unit_test(test_udp_parse_addresses),
        cmocka_unit_test(test_udp_parse_malformed),  cmocka_unit_test(test_udp_header_build),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
