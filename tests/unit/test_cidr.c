/* lib/cidr.c (libberth-util): parsing and matching allow/deny rules. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>

#include <cmocka.h>

#include "berth/cidr.h"

/* A peer address as accept() would hand it over. */
static struct sockaddr_storage peer(const char *ip, uint16_t port)
{
    struct sockaddr_storage ss;

    memset(&ss, 0, sizeof(ss));
    if (strchr(ip, ':')) {
        struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)&ss;
        sin6->sin6_family = AF_INET6;
        sin6->sin6_port = htons(port);
        assert_int_equal(inet_pton(AF_INET6, ip, &sin6->sin6_addr), 1);
    } else {
        struct sockaddr_in *sin = (struct sockaddr_in *)&ss;
        sin->sin_family = AF_INET;
        sin->sin_port = htons(port);
        assert_int_equal(inet_pton(AF_INET, ip, &sin->sin_addr), 1);
    }
    return ss;
}

static berth_cidr_t rule(const char *text, int with_port)
{
    berth_cidr_t c;

    memset(&c, 0xa5, sizeof(c));
    if (berth_cidr_parse(text, with_port, &c) != 0)
        fail_msg("'%s' was refused", text);
    return c;
}

/* Does rule `text` (ports allowed) match peer ip:port? */
static int matches(const char *text, const char *ip, uint16_t port)
{
    berth_cidr_t c = rule(text, 1);
    struct sockaddr_storage ss = peer(ip, port);

    return berth_cidr_match(&c, (const struct sockaddr *)&ss);
}

static void test_parse_ipv4(void **state)
{
    berth_cidr_t c = rule("10.0.0.0/8", 0);
    const uint8_t ten[4] = {10, 0, 0, 0};

    assert_int_equal(c.family, AF_INET);
    assert_memory_equal(c.addr, ten, 4);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(c.port, 0);

    c = rule("1.2.3.4", 0);
    assert_int_equal(c.prefix, 32);
    c = rule("1.2.3.4/32", 0);
    assert_int_equal(c.prefix, 32);
    c = rule("0.0.0.0/0", 0);
    assert_int_equal(c.prefix, 0);
    c = rule("192.168.128.0/17", 0);
    assert_int_equal(c.prefix, 17);
}

static void test_parse_ipv6(void **state)
{
    berth_cidr_t c = rule("::1", 0);
    uint8_t one[16] = {0};

    one[15] = 1;
    assert_int_equal(c.family, AF_INET6);
    assert_memory_equal(c.addr, one, 16);
    assert_int_equal(c.prefix, 128);

    c = rule("2001:db8::/32", 0);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(c.addr[0], 0x20);
    assert_int_equal(c.addr[3], 0xb8);
    c = rule("::/0", 0);
    assert_int_equal(c.prefix, 0);
    c = rule("[::1]", 0);
    assert_int_equal(c.prefix, 128);
    c = rule("[2001:db8::/32]", 0);
    assert_int_equal(c.prefix, 32);
}

static void test_parse_ports(void **state)
{
    berth_cidr_t c = rule("10.0.0.0/8:80", 1);

    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    assert_int_equal(c.port, 80);
    c = rule("1.2.3.4:65535", 1);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(c.port, 65535);
    c = rule("[::1]:443", 1);
    assert_int_equal(c.family, AF_INET6);
    assert_int_equal(c.prefix, 128);
    assert_int_equal(c.port, 443);
    c = rule("[2001:db8::/32]:443", 1);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(c.port, 443);
    c = rule("[2001:db8::]/32:443", 1);
    assert_int_equal(c.prefix, 32);
    assert_int_equal(c.port, 443);
    c = rule("*:443", 1);
    assert_int_equal(c.family, AF_UNSPEC);
    assert_int_equal(c.port, 443);
    /* Without a port, a ports-allowed parse takes the plain forms too. */
    c = rule("::1", 1);
    assert_int_equal(c.port, 0);
    c = rule("10.0.0.0/8", 1);
    assert_int_equal(c.port, 0);
}

static void test_parse_star(void **state)
{
    berth_cidr_t c = rule("*", 0);

    assert_int_equal(c.family, AF_UNSPEC);
    assert_int_equal(c.prefix, 0);
    assert_int_equal(c.port, 0);
}

static void test_parse_v4mapped_becomes_ipv4(void **state)
{
    berth_cidr_t c = rule("::ffff:10.0.0.0/104", 0);
    const uint8_t ten[4] = {10, 0, 0, 0};

    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 8);
    assert_memory_equal(c.addr, ten, 4);
    c = rule("::ffff:1.2.3.4", 0);
    assert_int_equal(c.family, AF_INET);
    assert_int_equal(c.prefix, 32);
    /* Shorter than the mapped range: it covers more than IPv4, so it stays IPv6. */
    c = rule("::/80", 0);
    assert_int_equal(c.family, AF_INET6);
}

static void test_parse_errors(void **state)
{
    static const struct {
        const char *text;
        int with_port;
    } bad[] = {
        {"", 1},
        {"10.0.0.1/8", 0}, /* host bits */
        {"10.128.0.0/8", 0},
        {"192.168.1.1/24", 1},
        {"2001:db8::1/32", 0},
        {"::1/0", 0},
        {"10.0.0.0/33", 0},
        {"::/129", 0},
        {"10.0.0.0/-1", 0},
        {"10.0.0.0/+8", 0},
        {"10.0.0.0/", 0},
        {"10.0.0.0/0008", 0},
        {"/8", 0},
        {"1.2.3", 0},
        {"1.2.3.4.5", 0},
        {"256.0.0.0", 0},
        {"localhost", 0},
        {"example.com", 1},
        {"10.0.0.0/8:80", 0}, /* a port where none is allowed */
        {"[::1]:443", 0},
        {"*:443", 0},
        {"1.2.3.4:0", 1},
        {"1.2.3.4:65536", 1},
        {"1.2.3.4:", 1},
        {"1.2.3.4:http", 1},
        {"1.2.3.4/32/32", 1},
        {"[::1", 1},
        {"[::1]x", 1},
        {"[::1]:", 1},
        {"[::1/64]/64", 1},
        {"[1.2.3.4]", 1},
        {"[*]", 1},
        {"*/8", 1},
        {"**", 1},
        {"1.2.3.4 ", 1},
        {"0123456789012345678901234567890123456789012345678901234567890123456789", 1},
    };
    berth_cidr_t c;

    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        if (berth_cidr_parse(bad[i].text, bad[i].with_port, &c) != -EINVAL)
            fail_msg("'%s' was accepted", bad[i].text);
    }
    assert_int_equal(berth_cidr_parse(NULL, 1, &c), -EINVAL);
    assert_int_equal(berth_cidr_parse("::1", 1, NULL), -EINVAL);
}

static void test_list_parse(void **state)
{
    berth_cidr_list_t list = {0};
    char bad[32] = "junk";

    assert_int_equal(berth_cidr_list_parse(&list, "127.0.0.0/8, ::1", 0, bad, sizeof(bad)), 0);
    assert_int_equal(list.count, 2);
    assert_string_equal(bad, "");
    assert_int_equal(list.items[0].family, AF_INET);
    assert_int_equal(list.items[1].family, AF_INET6);
    /* Appends; commas, spaces and tabs all separate, repeated or not. */
    assert_int_equal(berth_cidr_list_parse(&list, " 10.0.0.0/8,,192.168.0.0/16\t 172.16.0.0/12 ,",
                                           0, bad, sizeof(bad)),
                     0);
    assert_int_equal(list.count, 5);
    assert_int_equal(list.items[4].prefix, 12);
    assert_int_equal(berth_cidr_list_parse(&list, "", 0, bad, sizeof(bad)), 0);
    assert_int_equal(berth_cidr_list_parse(&list, " , ", 0, bad, sizeof(bad)), 0);
    assert_int_equal(list.count, 5);
    berth_cidr_list_free(&list);
    assert_null(list.items);
    assert_int_equal(list.count, 0);
    berth_cidr_list_free(&list); /* twice is harmless */
}

static void test_list_parse_error_leaves_list_alone(void **state)
{
    berth_cidr_list_t list = {0};
    char bad[16];

    assert_int_equal(berth_cidr_list_parse(&list, "10.0.0.0/8", 0, bad, sizeof(bad)), 0);
    assert_int_equal(
        berth_cidr_list_parse(&list, "192.168.0.0/16, 10.0.0.1/8, ::1", 0, bad, sizeof(bad)),
        -EINVAL);
    assert_string_equal(bad, "10.0.0.1/8");
    assert_int_equal(list.count, 1);
    assert_int_equal(berth_cidr_list_parse(&list, "::1 1.2.3.4:80", 0, bad, sizeof(bad)), -EINVAL);
    assert_string_equal(bad, "1.2.3.4:80");
    assert_int_equal(list.count, 1);
    /* The offending entry is cut to fit `bad`. */
    assert_int_equal(
        berth_cidr_list_parse(&list, "this-is-a-very-long-entry-indeed", 0, bad, sizeof(bad)),
        -EINVAL);
    assert_string_equal(bad, "this-is-a-very-");
    assert_int_equal(berth_cidr_list_parse(&list, "nope", 0, NULL, 0), -EINVAL);
    assert_int_equal(berth_cidr_list_parse(&list, NULL, 0, bad, sizeof(bad)), -EINVAL);
    assert_int_equal(berth_cidr_list_parse(NULL, "::1", 0, bad, sizeof(bad)), -EINVAL);
    assert_int_equal(list.count, 1);
    berth_cidr_list_free(&list);
    berth_cidr_list_free(NULL);
}

static void test_match_ipv4(void **state)
{
    assert_true(matches("10.0.0.0/8", "10.1.2.3", 1));
    assert_true(matches("10.0.0.0/8", "10.255.255.255", 1));
    assert_false(matches("10.0.0.0/8", "11.0.0.0", 1));
    assert_false(matches("10.0.0.0/8", "9.255.255.255", 1));
    /* A prefix that is not a whole number of bytes. */
    assert_true(matches("192.168.128.0/17", "192.168.200.1", 1));
    assert_false(matches("192.168.128.0/17", "192.168.127.255", 1));
    /* /32: exactly one address. */
    assert_true(matches("1.2.3.4/32", "1.2.3.4", 1));
    assert_false(matches("1.2.3.4", "1.2.3.5", 1));
    /* /0: every IPv4 address, but no IPv6 one. */
    assert_true(matches("0.0.0.0/0", "255.255.255.255", 1));
    assert_true(matches("0.0.0.0/0", "0.0.0.0", 1));
    assert_false(matches("0.0.0.0/0", "::1", 1));
}

static void test_match_ipv6(void **state)
{
    assert_true(matches("::1", "::1", 1));
    assert_false(matches("::1/128", "::2", 1));
    assert_true(matches("2001:db8::/32", "2001:db8:ffff::1", 1));
    assert_false(matches("2001:db8::/32", "2001:db9::1", 1));
    assert_true(matches("2001:db8:8000::/33", "2001:db8:ffff::1", 1));
    assert_false(matches("2001:db8:8000::/33", "2001:db8:7fff::1", 1));
    assert_true(matches("::/0", "fe80::1", 1));
    assert_false(matches("::/0", "10.0.0.1", 1));
    assert_false(matches("::1", "127.0.0.1", 1));
}

static void test_match_v4mapped_peer(void **state)
{
    /* A dual-stack socket reports an IPv4 client as ::ffff:a.b.c.d. */
    assert_true(matches("10.0.0.0/8", "::ffff:10.1.2.3", 1));
    assert_false(matches("10.0.0.0/8", "::ffff:11.1.2.3", 1));
    assert_true(matches("127.0.0.1", "::ffff:127.0.0.1", 1));
    assert_true(matches("0.0.0.0/0", "::ffff:8.8.8.8", 1));
    /* It is an IPv4 peer: IPv6 rules do not see it. */
    assert_false(matches("::/0", "::ffff:8.8.8.8", 1));
    /* A mapped rule is an IPv4 rule and matches either form. */
    assert_true(matches("::ffff:10.0.0.0/104", "10.9.9.9", 1));
    assert_true(matches("::ffff:10.0.0.0/104", "::ffff:10.9.9.9", 1));
    assert_false(matches("::ffff:10.0.0.0/104", "11.9.9.9", 1));
}

static void test_match_ports(void **state)
{
    assert_true(matches("10.0.0.0/8:443", "10.0.0.1", 443));
    assert_false(matches("10.0.0.0/8:443", "10.0.0.1", 80));
    assert_false(matches("10.0.0.0/8:443", "11.0.0.1", 443));
    assert_true(matches("10.0.0.0/8", "10.0.0.1", 65535)); /* no port: any */
    assert_true(matches("[::1]:443", "::1", 443));
    assert_false(matches("[::1]:443", "::1", 444));
    assert_true(matches("[2001:db8::]/32:22", "2001:db8::5", 22));
    assert_true(matches("1.2.3.4:53", "::ffff:1.2.3.4", 53));
    assert_false(matches("1.2.3.4:53", "::ffff:1.2.3.4", 54));
    assert_true(matches("*:25", "10.0.0.1", 25));
    assert_true(matches("*:25", "::1", 25));
    assert_false(matches("*:25", "::1", 26));
}

static void test_match_star_and_others(void **state)
{
    berth_cidr_t any = rule("*", 0);
    struct sockaddr_un un = {.sun_family = AF_UNIX};
    struct sockaddr_storage v4 = peer("203.0.113.9", 1), v6 = peer("2001:db8::9", 1);

    assert_true(berth_cidr_match(&any, (struct sockaddr *)&v4));
    assert_true(berth_cidr_match(&any, (struct sockaddr *)&v6));
    assert_false(berth_cidr_match(&any, (struct sockaddr *)&un));
    assert_false(berth_cidr_match(&any, NULL));
    assert_false(berth_cidr_match(NULL, (struct sockaddr *)&v4));
}

static void test_list_match(void **state)
{
    berth_cidr_list_t list = {0};
    char bad[64];
    struct sockaddr_storage a = peer("192.168.1.10", 1), b = peer("::1", 1),
                            c = peer("172.16.0.1", 1);

    assert_false(berth_cidr_list_match(&list, (struct sockaddr *)&a));
    assert_false(berth_cidr_list_match(NULL, (struct sockaddr *)&a));
    assert_int_equal(
        berth_cidr_list_parse(&list, "10.0.0.0/8 192.168.0.0/16 ::1", 0, bad, sizeof(bad)), 0);
    assert_true(berth_cidr_list_match(&list, (struct sockaddr *)&a));
    assert_true(berth_cidr_list_match(&list, (struct sockaddr *)&b));
    assert_false(berth_cidr_list_match(&list, (struct sockaddr *)&c));
    berth_cidr_list_free(&list);
}

static void test_permit(void **state)
{
    berth_cidr_list_t allow = {0}, deny = {0}, none = {0};
    char bad[64];
    struct sockaddr_storage lan = peer("192.168.1.10", 1), lan_bad = peer("192.168.1.66", 1),
                            wan = peer("8.8.8.8", 1), lo6 = peer("::1", 1);
    struct sockaddr_un un = {.sun_family = AF_UNIX};

    /* Nothing configured: everyone. */
    assert_true(berth_cidr_permit(&none, &none, (struct sockaddr *)&wan));
    assert_true(berth_cidr_permit(NULL, NULL, (struct sockaddr *)&wan));

    assert_int_equal(berth_cidr_list_parse(&allow, "192.168.0.0/16, ::1", 0, bad, sizeof(bad)), 0);
    assert_int_equal(berth_cidr_list_parse(&deny, "192.168.1.66", 0, bad, sizeof(bad)), 0);
    assert_true(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&lan));
    assert_true(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&lo6));
    assert_false(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&lan_bad)); /* deny wins */
    assert_false(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&wan));     /* not allowed */
    /* Deny only: everyone else. */
    assert_true(berth_cidr_permit(&none, &deny, (struct sockaddr *)&wan));
    assert_false(berth_cidr_permit(&none, &deny, (struct sockaddr *)&lan_bad));
    /* Unix peers are always let in: file permissions guard them. */
    berth_cidr_list_free(&deny);
    assert_int_equal(berth_cidr_list_parse(&deny, "*", 0, bad, sizeof(bad)), 0);
    assert_false(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&lan));
    assert_true(berth_cidr_permit(&allow, &deny, (struct sockaddr *)&un));
    berth_cidr_list_free(&allow);
    berth_cidr_list_free(&deny);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_ipv4),
        cmocka_unit_test(test_parse_ipv6),
        cmocka_unit_test(test_parse_ports),
        cmocka_unit_test(test_parse_star),
        cmocka_unit_test(test_parse_v4mapped_becomes_ipv4),
        cmocka_unit_test(test_parse_errors),
        cmocka_unit_test(test_list_parse),
        cmocka_unit_test(test_list_parse_error_leaves_list_alone),
        cmocka_unit_test(test_match_ipv4),
        cmocka_unit_test(test_match_ipv6),
        cmocka_unit_test(test_match_v4mapped_peer),
        cmocka_unit_test(test_match_ports),
        cmocka_unit_test(test_match_star_and_others),
        cmocka_unit_test(test_list_match),
        cmocka_unit_test(test_permit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
