/* lib/proxy.c (libberth-util): the PROXY protocol v1/v2 parser, whole and a byte at a time. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "berth/proxy.h"

#define V2SIG "\r\n\r\n\0\r\nQUIT\n"

/* Feed all of `data` at once; also one byte at a time into a second parser, which must agree
 * (same result; same bytes taken, unless it failed). Returns the result; *used gets the bytes
 * taken. */
static int feed_both(unsigned versions, const void *data, size_t len, size_t *used,
                     berth_proxy_t **out)
{
    berth_proxy_t *a = test_malloc(sizeof *a), *b = test_malloc(sizeof *b);
    berth_proxy_init(a, versions);
    berth_proxy_init(b, versions);
    size_t ua = 0;
    int ra = berth_proxy_feed(a, data, len, &ua);

    const unsigned char *d = data;
    int rb = 0;
    size_t ub = 0;
    for (size_t i = 0; i < len && rb == 0; i++) {
        size_t u = 0;
        rb = berth_proxy_feed(b, d + i, 1, &u);
        ub += u;
    }
    assert_int_equal(ra, rb);
    /* On an error the bytes fed earlier one by one were taken; all at once, none were. */
    if (ra >= 0)
        assert_int_equal(ua, ub);
    if (ra == 1)
        assert_memory_equal(&a->result, &b->result, sizeof a->result);
    test_free(b);
    if (used)
        *used = ua;
    if (out)
        *out = a;
    else
        test_free(a);
    return ra;
}

static void check_v4(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in *in = (const void *)ss;
    char buf[INET_ADDRSTRLEN];
    assert_int_equal(in->sin_family, AF_INET);
    assert_non_null(inet_ntop(AF_INET, &in->sin_addr, buf, sizeof buf));
    assert_string_equal(buf, ip);
    assert_int_equal(ntohs(in->sin_port), port);
}

static void check_v6(const struct sockaddr_storage *ss, const char *ip, uint16_t port)
{
    const struct sockaddr_in6 *in6 = (const void *)ss;
    char buf[INET6_ADDRSTRLEN];
    assert_int_equal(in6->sin6_family, AF_INET6);
    assert_non_null(inet_ntop(AF_INET6, &in6->sin6_addr, buf, sizeof buf));
    assert_string_equal(buf, ip);
    assert_int_equal(ntohs(in6->sin6_port), port);
}

static void v1_tcp4(void **state)
{
    (void)state;
    const char msg[] = "PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello";
    berth_proxy_t *p;
    size_t used;
    assert_int_equal(feed_both(BERTH_PROXY_V1, msg, sizeof msg - 1, &used, &p), 1);
    assert_int_equal(used, sizeof msg - 1 - 5); /* "hello" is the application's */
    assert_int_equal(p->result.version, 1);
    assert_int_equal(p->result.command, BERTH_PROXY_CMD_PROXY);
    assert_int_equal(p->result.family, AF_INET);
    check_v4(&p->result.src, "192.0.2.7", 56324);
    check_v4(&p->result.dst, "198.51.100.1", 443);
    /* Done is sticky and takes nothing more. */
    assert_int_equal(berth_proxy_feed(p, "x", 1, &used), 1);
    assert_int_equal(used, 0);
    test_free(p);
}

static void v1_tcp6_and_unknown(void **state)
{
    (void)state;
    const char msg[] = "PROXY TCP6 2001:db8::1 ::1 65535 0\r\n";
    berth_proxy_t *p;
    assert_int_equal(feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, msg, sizeof msg - 1, NULL, &p), 1);
    assert_int_equal(p->result.family, AF_INET6);
    check_v6(&p->result.src, "2001:db8::1", 65535);
    check_v6(&p->result.dst, "::1", 0);
    test_free(p);

    const char unk[] = "PROXY UNKNOWN\r\n";
    assert_int_equal(feed_both(BERTH_PROXY_V1, unk, sizeof unk - 1, NULL, &p), 1);
    assert_int_equal(p->result.family, AF_UNSPEC);
    test_free(p);
    const char unk2[] = "PROXY UNKNOWN ffff::1 ::1 1 2\r\n";
    assert_int_equal(feed_both(BERTH_PROXY_V1, unk2, sizeof unk2 - 1, NULL, &p), 1);
    assert_int_equal(p->result.family, AF_UNSPEC);
    test_free(p);
}

static void v1_malformed(void **state)
{
    (void)state;
    static const char *bad[] = {
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",       /* LF without CR */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",      /* CR without LF */
        "PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",    /* two spaces */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",       /* a field missing */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",   /* one too many */
        "PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",     /* no such protocol */
        "PROXY TCP4 1.2.3.256 5.6.7.8 1 2\r\n",   /* not an address */
        "PROXY TCP4 ::1 5.6.7.8 1 2\r\n",         /* v6 in TCP4 */
        "PROXY TCP6 1.2.3.4 ::1 1 2\r\n",         /* v4 in TCP6 */
        "PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", /* port too big */
        "PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",    /* leading zero */
        "PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",    /* sign */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",    /* trailing space */
        "PROXY \r\n",                             /* nothing */
        "PROXY UNKNOWNX\r\n",                     /* not UNKNOWN */
        "PROXY TCP4 1.2.3.4 5.6.7.8 1 \x01\r\n",  /* a control byte */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        int rc = feed_both(BERTH_PROXY_V1, bad[i], strlen(bad[i]), NULL, NULL);
        if (rc != BERTH_PROXY_EBADLINE)
            fail_msg("case %zu (%s): %d", i, bad[i], rc);
    }
    assert_string_equal(berth_proxy_strerror(BERTH_PROXY_EBADLINE), "malformed v1 line");
}

static void v1_oversized(void **state)
{
    (void)state;
    char line[200];
    memset(line, 'a', sizeof line);
    memcpy(line, "PROXY UNKNOWN ", 14);
    /* 107 bytes with CRLF is the most: 105 bytes and CRLF pass, 106 do not. */
    line[105] = '\r';
    line[106] = '\n';
    assert_int_equal(feed_both(BERTH_PROXY_V1, line, 107, NULL, NULL), 1);
    memset(line + 14, 'a', sizeof line - 14);
    line[106] = '\r';
    line[107] = '\n';
    assert_int_equal(feed_both(BERTH_PROXY_V1, line, 108, NULL, NULL), BERTH_PROXY_ETOOLONG);
    /* Never a line end: refused at byte 108, not waiting for more. */
    assert_int_equal(feed_both(BERTH_PROXY_V1, line, 107, NULL, NULL), 0);
    assert_int_equal(feed_both(BERTH_PROXY_V1, line, 150, NULL, NULL), BERTH_PROXY_ETOOLONG);
}

static void bad_signature(void **state)
{
    (void)state;
    /* The first wrong byte fails at once. */
    assert_int_equal(feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, "G", 1, NULL, NULL),
                     BERTH_PROXY_EBADSIG);
    assert_int_equal(
        feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, "GET / HTTP/1.0\r\n", 16, NULL, NULL),
        BERTH_PROXY_EBADSIG);
    assert_int_equal(feed_both(BERTH_PROXY_V1, "PROXZ", 5, NULL, NULL), BERTH_PROXY_EBADSIG);
    assert_int_equal(feed_both(BERTH_PROXY_V1, "proxy ", 6, NULL, NULL), BERTH_PROXY_EBADSIG);
    assert_int_equal(feed_both(BERTH_PROXY_V2, "\r\n\r\n\0\r\nQUIX\n", 12, NULL, NULL),
                     BERTH_PROXY_EBADSIG);
    /* A version not allowed is no signature at all. */
    assert_int_equal(feed_both(BERTH_PROXY_V2, "PROXY ", 6, NULL, NULL), BERTH_PROXY_EBADSIG);
    assert_int_equal(feed_both(BERTH_PROXY_V1, V2SIG, 12, NULL, NULL), BERTH_PROXY_EBADSIG);
    /* A prefix of a signature is not yet wrong. */
    assert_int_equal(feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, "PRO", 3, NULL, NULL), 0);
    assert_int_equal(feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, "\r\n\r\n", 4, NULL, NULL), 0);
}

/* A v2 header: signature, ver_cmd, fam, then `body` (its length in the header is blen). */
static size_t v2(uint8_t *out, uint8_t ver_cmd, uint8_t fam, uint16_t blen, const void *body,
                 size_t bodylen)
{
    memcpy(out, V2SIG, 12);
    out[12] = ver_cmd;
    out[13] = fam;
    out[14] = (uint8_t)(blen >> 8);
    out[15] = (uint8_t)blen;
    memcpy(out + 16, body, bodylen);
    return 16 + bodylen;
}

static const uint8_t inet_body[12] = {192, 0, 2, 9, 10, 0, 0, 1, 0x1f, 0x90, 0x01, 0xbb};

static void v2_inet_with_tlvs(void **state)
{
    (void)state;
    uint8_t body[64], msg[128];
    memcpy(body, inet_body, 12);
    /* Two TLVs: ALPN "h2", and a NOOP of 0 bytes; then "app" after the header. */
    const uint8_t tlvs[] = {0x01, 0x00, 0x02, 'h', '2', 0x04, 0x00, 0x00};
    memcpy(body + 12, tlvs, sizeof tlvs);
    size_t n = v2(msg, 0x21, 0x11, 12 + sizeof tlvs, body, 12 + sizeof tlvs);
    memcpy(msg + n, "app", 3);
    berth_proxy_t *p;
    size_t used;
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n + 3, &used, &p), 1);
    assert_int_equal(used, n);
    assert_int_equal(p->result.version, 2);
    assert_int_equal(p->result.command, BERTH_PROXY_CMD_PROXY);
    assert_int_equal(p->result.family, AF_INET);
    assert_int_equal(p->result.tlv_count, 2);
    check_v4(&p->result.src, "192.0.2.9", 8080);
    check_v4(&p->result.dst, "10.0.0.1", 443);
    test_free(p);
}

static void v2_inet6_local_unspec_unix(void **state)
{
    (void)state;
    uint8_t body[300], msg[400];
    memset(body, 0, sizeof body);
    body[15] = 1;                                                       /* src ::1 */
    body[16] = 0x20, body[17] = 0x01, body[18] = 0x0d, body[19] = 0xb8; /* dst 2001:db8:: */
    body[32] = 0x30, body[33] = 0x39;                                   /* 12345 */
    body[34] = 0, body[35] = 80;
    size_t n = v2(msg, 0x21, 0x21, 36, body, 36);
    berth_proxy_t *p;
    assert_int_equal(feed_both(BERTH_PROXY_V1 | BERTH_PROXY_V2, msg, n, NULL, &p), 1);
    check_v6(&p->result.src, "::1", 12345);
    check_v6(&p->result.dst, "2001:db8::", 80);
    test_free(p);

    /* LOCAL: whatever its body, a health check. */
    n = v2(msg, 0x20, 0x00, 0, body, 0);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, &p), 1);
    assert_int_equal(p->result.command, BERTH_PROXY_CMD_LOCAL);
    assert_int_equal(p->result.family, AF_UNSPEC);
    test_free(p);
    n = v2(msg, 0x20, 0x11, 12, inet_body, 12);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, &p), 1);
    assert_int_equal(p->result.command, BERTH_PROXY_CMD_LOCAL);
    test_free(p);

    /* PROXY with UNSPEC or UNIX addresses: no address an IP listener can use. */
    n = v2(msg, 0x21, 0x00, 0, body, 0);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, &p), 1);
    assert_int_equal(p->result.family, AF_UNSPEC);
    test_free(p);
    n = v2(msg, 0x21, 0x31, 216, body, 216);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, &p), 1);
    assert_int_equal(p->result.family, AF_UNSPEC);
    test_free(p);
}

static void v2_malformed(void **state)
{
    (void)state;
    uint8_t msg[BERTH_PROXY_V2_MAX + 64], body[BERTH_PROXY_V2_MAX];
    memset(body, 0, sizeof body);
    memcpy(body, inet_body, 12);
    size_t n;
    /* Version 1 or 3 in the v2 format; command 2. Fails at byte 13, before the length. */
    n = v2(msg, 0x11, 0x11, 12, body, 12);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADVER);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, 13, NULL, NULL), BERTH_PROXY_EBADVER);
    n = v2(msg, 0x31, 0x11, 12, body, 12);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADVER);
    n = v2(msg, 0x22, 0x11, 12, body, 12);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADVER);
    /* Families and transports. */
    static const uint8_t badfam[] = {0x41, 0x14, 0x12, 0x10, 0x22, 0xf1};
    for (size_t i = 0; i < sizeof badfam; i++) {
        n = v2(msg, 0x21, badfam[i], 12, body, 12);
        int rc = feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL);
        if (rc != BERTH_PROXY_EBADFAMILY)
            fail_msg("family 0x%02x: %d", badfam[i], rc);
    }
    /* Lengths short of the family's addresses. */
    n = v2(msg, 0x21, 0x11, 11, body, 11);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADLEN);
    n = v2(msg, 0x21, 0x21, 12, body, 12);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADLEN);
    n = v2(msg, 0x21, 0x31, 100, body, 100);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADLEN);
    n = v2(msg, 0x21, 0x11, 0, body, 0);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADLEN);
    /* TLVs running past the end: a partial TLV head, a value too long. */
    n = v2(msg, 0x21, 0x11, 14, body, 14);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADTLV);
    body[12] = 0x02, body[13] = 0x00, body[14] = 0x05, body[15] = 'a';
    n = v2(msg, 0x21, 0x11, 16, body, 16);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_EBADTLV);
    /* Oversized: refused as soon as the length is read, without waiting for the body. */
    n = v2(msg, 0x21, 0x11, BERTH_PROXY_V2_BODY_MAX + 1, body, 0);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_ETOOLONG);
    n = v2(msg, 0x21, 0x11, 0xffff, body, 0);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), BERTH_PROXY_ETOOLONG);
    /* The largest allowed: addresses, then one TLV filling the rest. */
    memcpy(body, inet_body, 12);
    size_t tl = BERTH_PROXY_V2_BODY_MAX - 12 - 3;
    body[12] = 0xEE, body[13] = (uint8_t)(tl >> 8), body[14] = (uint8_t)tl;
    n = v2(msg, 0x21, 0x11, BERTH_PROXY_V2_BODY_MAX, body, BERTH_PROXY_V2_BODY_MAX);
    assert_int_equal(feed_both(BERTH_PROXY_V2, msg, n, NULL, NULL), 1);
}

static void truncated(void **state)
{
    (void)state;
    /* Every proper prefix of a valid header wants more, and says it has begun. */
    const char v1[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n";
    uint8_t msg[64];
    size_t n = v2(msg, 0x21, 0x11, 12, inet_body, 12);
    for (size_t k = 1; k < sizeof v1 - 1; k++) {
        berth_proxy_t p;
        berth_proxy_init(&p, BERTH_PROXY_V1 | BERTH_PROXY_V2);
        assert_int_equal(berth_proxy_feed(&p, v1, k, NULL), 0);
        assert_int_equal(berth_proxy_pending(&p), k);
    }
    for (size_t k = 1; k < n; k++) {
        berth_proxy_t p;
        berth_proxy_init(&p, BERTH_PROXY_V1 | BERTH_PROXY_V2);
        assert_int_equal(berth_proxy_feed(&p, msg, k, NULL), 0);
        assert_int_equal(berth_proxy_pending(&p), k);
    }
    berth_proxy_t p;
    berth_proxy_init(&p, BERTH_PROXY_V1);
    assert_int_equal(berth_proxy_pending(&p), 0);
    /* An error is sticky. */
    assert_int_equal(berth_proxy_feed(&p, "X", 1, NULL), BERTH_PROXY_EBADSIG);
    assert_int_equal(berth_proxy_feed(&p, "PROXY ", 6, NULL), BERTH_PROXY_EBADSIG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(v1_tcp4),
        cmocka_unit_test(v1_tcp6_and_unknown),
        cmocka_unit_test(v1_malformed),
        cmocka_unit_test(v1_oversized),
        cmocka_unit_test(bad_signature),
        cmocka_unit_test(v2_inet_with_tlvs),
        cmocka_unit_test(v2_inet6_local_unspec_unix),
        cmocka_unit_test(v2_malformed),
        cmocka_unit_test(truncated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
