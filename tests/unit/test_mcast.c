/* daemon/master/mcast.c: joining, changing and leaving multicast groups on a real socket.
 *
 * The test runs in a network namespace of its own (unshare(CLONE_NEWNET); skipped if that
 * is refused), with its loopback up and multicast on, and reads the memberships back from
 * /proc/net/igmp, as the kernel sees them. */
#include <arpa/inet.h>
#include <errno.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "master/mcast.h"

static int netns_ok;

static int group_setup(void **state)
{
    (void)state;
    if (unshare(CLONE_NEWNET) != 0)
        return 0; /* each test skips */
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    struct ifreq ifr;
    memset(&ifr, 0, sizeof ifr);
    snprintf(ifr.ifr_name, sizeof ifr.ifr_name, "lo");
    ifr.ifr_flags = IFF_UP | IFF_LOOPBACK | IFF_RUNNING | IFF_MULTICAST;
    netns_ok = fd >= 0 && ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
    if (fd >= 0)
        close(fd);
    return 0;
}

/* Is `group` (dotted quad) joined on lo? */
static int joined(const char *group)
{
    FILE *f = fopen("/proc/net/igmp", "r");
    assert_non_null(f);
    char line[256], dev[32] = "";
    struct in_addr want;
    assert_int_equal(inet_pton(AF_INET, group, &want), 1);
    char hex[16];
    snprintf(hex, sizeof hex, "%08X", (unsigned)want.s_addr);
    int found = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] != '\t' && line[0] != ' ') {
            if (sscanf(line, "%*d %31s", dev) != 1)
                dev[0] = '\0';
        } else if (strcmp(dev, "lo") == 0 && strstr(line, hex)) {
            found = 1;
        }
    }
    fclose(f);
    return found;
}

static config_mcast_t groups(const char *a, const char *b, const char *c)
{
    config_mcast_t m;
    memset(&m, 0, sizeof m);
    m.loop = -1;
    m.ifindex = if_nametoindex("lo");
    snprintf(m.interface, sizeof m.interface, "lo");
    const char *list[] = {a, b, c};
    for (size_t i = 0; i < 3; i++) {
        if (!list[i])
            continue;
        m.groups[m.ngroups].in.sin_family = AF_INET;
        assert_int_equal(inet_pton(AF_INET, list[i], &m.groups[m.ngroups].in.sin_addr), 1);
        m.ngroups++;
    }
    return m;
}

static int bound_socket(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET};
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    return fd;
}

static void test_join_change_leave(void **state)
{
    (void)state;
    if (!netns_ok)
        skip();
    char err[256] = "";
    int fd = bound_socket();
    config_mcast_t a = groups("224.3.29.71", "224.3.29.72", NULL);
    assert_int_equal(mcast_join(fd, AF_INET, &a, err, sizeof err), 0);
    assert_true(joined("224.3.29.71") && joined("224.3.29.72"));
    char text[128];
    mcast_describe(&a, text, sizeof text);
    assert_string_equal(text, "224.3.29.71,224.3.29.72");

    config_mcast_t b = groups("224.3.29.72", "224.3.29.73", NULL);
    assert_int_equal(mcast_change(fd, AF_INET, &a, &b, err, sizeof err), 0);
    assert_false(joined("224.3.29.71"));
    assert_true(joined("224.3.29.72") && joined("224.3.29.73"));

    config_mcast_t none = groups(NULL, NULL, NULL);
    assert_int_equal(mcast_change(fd, AF_INET, &b, &none, err, sizeof err), 0);
    assert_false(joined("224.3.29.72") || joined("224.3.29.73"));
    mcast_describe(&none, text, sizeof text);
    assert_string_equal(text, "");
    close(fd);
}

static void write_limit(const char *v)
{
    FILE *f = fopen("/proc/sys/net/ipv4/igmp_max_memberships", "w");
    assert_non_null(f);
    fputs(v, f);
    assert_int_equal(fclose(f), 0);
}

/* At the kernel's limit: ENOBUFS named in the message, and nothing half joined. */
static void test_limit_leaves_nothing_half_done(void **state)
{
    (void)state;
    if (!netns_ok)
        skip();
    char err[256] = "";
    write_limit("2");
    int fd = bound_socket();
    config_mcast_t three = groups("224.3.29.71", "224.3.29.72", "224.3.29.73");
    assert_int_equal(mcast_join(fd, AF_INET, &three, err, sizeof err), -ENOBUFS);
    assert_non_null(strstr(err, "cannot join multicast group 224.3.29.73 on lo"));
    assert_non_null(strstr(err, "igmp_max_memberships"));
    assert_false(joined("224.3.29.71") || joined("224.3.29.72"));

    /* A change that would pass the limit keeps what the socket had. */
    config_mcast_t one = groups("224.3.29.71", NULL, NULL);
    assert_int_equal(mcast_join(fd, AF_INET, &one, err, sizeof err), 0);
    config_mcast_t more = groups("224.3.29.71", "224.3.29.72", "224.3.29.73");
    assert_int_equal(mcast_change(fd, AF_INET, &one, &more, err, sizeof err), -ENOBUFS);
    assert_true(joined("224.3.29.71"));
    assert_false(joined("224.3.29.72") || joined("224.3.29.73"));
    close(fd);
    write_limit("20");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_join_change_leave),
        cmocka_unit_test(test_limit_leaves_nothing_half_done),
    };
    return cmocka_run_group_tests(tests, group_setup, NULL);
}
