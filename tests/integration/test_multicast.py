"""Issue 16: multicast listeners. A udp listener with `multicast = GROUP, ...` joins the
groups (the master, before workers inherit the socket) and shares the group's port with other
receivers (SO_REUSEADDR), so the seeds' own socket_multicast_sender.py gets an answer from
each of two berthd instances. A reload that changes only the groups changes the memberships
on the kept socket. Config errors name FILE:LINE and the cause; status shows the groups.

Everything runs in a network namespace of the module's own (unshare(CLONE_NEWNET) at module
setup; berthd and the sender inherit it): loopback with multicast on and a route for
224.0.0.0/4, so the seed's group 224.3.29.71 and port 10000 are free to use as they are."""
import ctypes
import json
import os
import re
import socket
import subprocess
import sys
import unittest

from harness import (BUILD, IO_TIMEOUT, Berthd, DaemonTestCase, built_test_plugin,
                     check_config, wait_until, PLUGIN_DIR)

HERE = os.path.dirname(os.path.abspath(__file__))
SENDER = os.path.join(HERE, "seeds", "socket_multicast_sender.py")
BERTHCTL = os.path.join(BUILD, "berthctl")
GROUP, PORT = "224.3.29.71", 10000
CLONE_NEWNET = 0x40000000
NETNS_ERROR = None


def ip(*args):
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def setUpModule():
    """This process (and all it starts) into a network namespace of its own."""
    global NETNS_ERROR
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        NETNS_ERROR = "unshare(CLONE_NEWNET): %s" % os.strerror(ctypes.get_errno())
        return
    ip("link", "set", "lo", "up")
    ip("link", "set", "lo", "multicast", "on")
    ip("route", "add", "224.0.0.0/4", "dev", "lo")


def igmp_groups(dev="lo"):
    """The IPv4 groups joined on `dev`, from /proc/net/igmp, as dotted quads."""
    groups, cur = set(), None
    with open("/proc/net/igmp") as f:
        for line in f.readlines()[1:]:
            if not line.startswith(("\t", " ")):
                cur = line.split()[1]
                continue
            if cur == dev:
                raw = bytes.fromhex(line.split()[0])[::-1]  # host-order hex of a be32
                groups.add(socket.inet_ntoa(raw))
    return groups


def udp_inodes(port):
    """Inodes of the udp sockets bound to `port` (/proc/net/udp): one per open socket."""
    found = []
    with open("/proc/net/udp") as f:
        for line in f.readlines()[1:]:
            cols = line.split()
            if int(cols[1].split(":")[1], 16) == port:
                found.append(int(cols[9]))
    return sorted(found)


def ask_group(group, port, want, timeout=IO_TIMEOUT, source=None):
    """Send one datagram to the group until every answer in `want` has come (resending now
    and then: a datagram sent before a receiver joined is lost). Returns the answers.
    `source`: the address to send from (unbound, the kernel picks none on loopback: 127/8
    is host scope, so the datagram goes from 0.0.0.0)."""
    got = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        if source:
            s.bind((source, 0))
        s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
        s.settimeout(0.5)

        def probe():
            s.sendto(b"very important data", (group, port))
            while True:
                try:
                    data, _ = s.recvfrom(64)
                except socket.timeout:
                    break
                got.add(data)
                if want <= got:
                    return True
            return False
        wait_until(probe, timeout, interval=0, what="answers %r from %s" % (want, group))
    return got


def ask_group6(group, port, want, ifname, source, timeout=IO_TIMEOUT):
    """ask_group for IPv6: sent out of `ifname` from `source`."""
    got = set()
    with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as s:
        s.bind((source, 0))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF,
                     socket.if_nametoindex(ifname))
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 1)
        s.settimeout(0.5)

        def probe():
            s.sendto(b"very important data", (group, port))
            while True:
                try:
                    data, _ = s.recvfrom(64)
                except socket.timeout:
                    break
                got.add(data)
                if want <= got:
                    return True
            return False
        wait_until(probe, timeout, interval=0, what="answers %r from %s" % (want, group))
    return got


def mld_groups(dev):
    """The IPv6 groups joined on `dev`, from /proc/net/igmp6."""
    groups = set()
    with open("/proc/net/igmp6") as f:
        for line in f:
            cols = line.split()
            if cols[1] == dev:
                groups.add(socket.inet_ntop(socket.AF_INET6, bytes.fromhex(cols[2])))
    return groups


def listener_text(ack, groups=GROUP, extra=""):
    return f"""
        [mcast]
        protocol = udp
        address = *:{PORT}
        handler = {built_test_plugin("ack")}
        multicast = {groups}
        ack = {ack}
        {extra}
        """


class Multicast(DaemonTestCase):

    def setUp(self):
        if NETNS_ERROR:
            self.skipTest(NETNS_ERROR)
        super().setUp()

    def receiver(self, name, ack, groups=GROUP, extra="", workers=1):
        tmp = os.path.join(self.tmp, name)
        os.mkdir(tmp)
        d = Berthd(tmp, listener_text(ack, groups, extra), workers=workers)
        self._daemons.append(d)
        return d.start(True)

    def test_seed_sender_gets_an_answer_from_two_receivers(self):
        self.receiver("a", "ack-a", workers=2)
        self.receiver("b", "ack-b")
        self.assertEqual(len(udp_inodes(PORT)), 2, "two sockets share the group's port")
        # Both answer (waiting on events, not on a clock) before the seed's sender, whose own
        # 0.2 s timeout is the seed's: a run on a loaded machine may miss an answer, so it
        # runs until one run has both (each run is a complete seed exchange).
        ask_group(GROUP, PORT, {b"ack-a", b"ack-b"})
        outputs = []

        def seed_run():
            r = subprocess.run([sys.executable, SENDER], capture_output=True, text=True,
                               timeout=60)
            self.assertEqual(r.returncode, 0, r.stderr)
            outputs.append(r.stdout)
            return ("received b'ack-a' from ('127.0.0.1', 10000)" in r.stdout and
                    "received b'ack-b' from ('127.0.0.1', 10000)" in r.stdout)
        wait_until(seed_run, 60, interval=0.1, what="a seed run answered by both")
        self.assertIn("sending b'very important data'", outputs[-1])
        self.assertIn("timed out, no more responses", outputs[-1])

    def test_reload_changes_groups_on_the_kept_socket(self):
        d = self.receiver("a", "ack", groups="224.3.29.71, 224.3.29.72")
        self.assertEqual(igmp_groups() & {"224.3.29.71", "224.3.29.72", "224.3.29.73"},
                         {"224.3.29.71", "224.3.29.72"})
        inodes = udp_inodes(PORT)
        self.assertEqual(len(inodes), 1)
        ask_group("224.3.29.72", PORT, {b"ack"})

        d.write_config(listener_text("ack", groups="224.3.29.72,224.3.29.73"))
        self.assertTrue(d.reload())
        self.assertEqual(igmp_groups() & {"224.3.29.71", "224.3.29.72", "224.3.29.73"},
                         {"224.3.29.72", "224.3.29.73"})
        self.assertEqual(udp_inodes(PORT), inodes, "the socket is kept, not reopened")
        self.assertNotIn("closing listener", d.log())
        d.wait_log(r"\[mcast\] multicast groups on the kept socket: "
                   r"224\.3\.29\.72,224\.3\.29\.73 \(were 224\.3\.29\.71,224\.3\.29\.72\)")
        ask_group("224.3.29.73", PORT, {b"ack"})
        st = d.wait_status(lambda s: d.listener("mcast", s)["groups"] ==
                           ["224.3.29.72", "224.3.29.73"], "groups in status")
        self.assertEqual(d.listener("mcast", st)["bound"], "0.0.0.0:%d" % PORT)

        # Groups gone: the socket stays, a plain udp listener now, in no group.
        d.write_config(f"""
            [mcast]
            protocol = udp
            address = *:{PORT}
            handler = {built_test_plugin("ack")}
            """)
        self.assertTrue(d.reload())
        self.assertEqual(igmp_groups() & {"224.3.29.71", "224.3.29.72", "224.3.29.73"}, set())
        self.assertEqual(udp_inodes(PORT), inodes)
        self.assertEqual(d.listener("mcast")["groups"], [])

    def test_failed_reload_keeps_the_groups(self):
        # The new groups are joined on the kept socket before the new workers load the
        # plugin; the plugin refuses its option, the reload fails, the old groups come back.
        d = self.receiver("a", "ack", groups="224.3.29.71")
        d.write_config(listener_text("far-too-long-an-ack-text", groups="224.3.29.75"))
        self.assertFalse(d.reload())
        self.assertEqual(igmp_groups() & {"224.3.29.71", "224.3.29.75"}, {"224.3.29.71"})
        self.assertEqual(d.listener("mcast")["groups"], ["224.3.29.71"])
        ask_group("224.3.29.71", PORT, {b"ack"})

    def test_status_shows_groups(self):
        d = self.receiver("a", "ack", groups="224.3.29.71,239.1.2.3", extra="""
            multicast_interface = lo
            multicast_loop = off""")
        self.assertEqual(d.listener("mcast")["groups"], ["224.3.29.71", "239.1.2.3"])
        r = subprocess.run([BERTHCTL, "-s", d.admin, "status"], capture_output=True, text=True,
                           timeout=60)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("[mcast] has joined multicast groups 224.3.29.71,239.1.2.3", r.stdout)
        ask_group("239.1.2.3", PORT, {b"ack"})

    def test_plugin_is_told_the_group(self):
        # host->multicast_group: the group a datagram was sent to, or NULL for unicast to
        # the same socket.
        self.receiver("a", "ack", groups="224.3.29.71,239.1.2.3", extra="group = yes")
        ask_group("239.1.2.3", PORT, {b"ack 239.1.2.3"})
        ask_group("224.3.29.71", PORT, {b"ack 224.3.29.71"})
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(IO_TIMEOUT)
            s.sendto(b"hello", ("127.0.0.1", PORT))
            self.assertEqual(s.recvfrom(64)[0], b"ack unicast")

    def test_source_specific_membership(self):
        # SSM: only datagrams from 127.0.0.1 to the group are delivered.
        self.receiver("a", "ack-ssm", groups="232.1.1.1", extra="multicast_source = 127.0.0.1")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.2", 0))
            other.setblocking(False)
            other.sendto(b"from another source", ("232.1.1.1", PORT))
            # Sent after it, through the same one worker: its answer comes after the other's
            # would have.
            ask_group("232.1.1.1", PORT, {b"ack-ssm"}, source="127.0.0.1")
            with self.assertRaises(BlockingIOError):
                other.recvfrom(64)

    def test_ipv6_on_a_veth_pair(self):
        # Loopback carries no IPv6 multicast: a veth pair, the receivers joined on v0, the
        # sender sending out of v1, addresses without duplicate address detection.
        ip("link", "add", "v0", "type", "veth", "peer", "name", "v1")
        self.addCleanup(ip, "link", "del", "v0")
        ip("addr", "add", "fd00::1/64", "dev", "v0", "nodad")
        ip("addr", "add", "fd00::2/64", "dev", "v1", "nodad")
        ip("link", "set", "v0", "up")
        ip("link", "set", "v1", "up")
        for name, ack in (("a", "ack6-a"), ("b", "ack6-b")):
            tmp = os.path.join(self.tmp, name)
            os.mkdir(tmp)
            d = Berthd(tmp, f"""
                [mcast6]
                protocol = udp
                address = [::]:{PORT}
                handler = {built_test_plugin("ack")}
                multicast = ff05::4242, ff02::4243
                multicast_interface = v0
                ack = {ack}
                group = yes
                """)
            self._daemons.append(d)
            d.start(True)
        self.assertLessEqual({"ff05::4242", "ff02::4243"}, mld_groups("v0"))
        self.assertEqual(d.listener("mcast6")["groups"], ["ff05::4242", "ff02::4243"])
        ask_group6("ff05::4242", PORT, {b"ack6-a ff05::4242", b"ack6-b ff05::4242"}, "v1",
                   "fd00::2")
        ask_group6("ff02::4243", PORT, {b"ack6-a ff02::4243", b"ack6-b ff02::4243"}, "v1",
                   "fd00::2")

    def test_membership_limit_is_an_error_that_names_it(self):
        # The kernel's limit of memberships per socket (net.ipv4.igmp_max_memberships,
        # per namespace) lowered to 1: joining the second group fails with ENOBUFS.
        with open("/proc/sys/net/ipv4/igmp_max_memberships") as f:
            old = f.read().strip()
        with open("/proc/sys/net/ipv4/igmp_max_memberships", "w") as f:
            f.write("1")
        self.addCleanup(lambda: open("/proc/sys/net/ipv4/igmp_max_memberships", "w").write(old))
        tmp = os.path.join(self.tmp, "limit")
        os.mkdir(tmp)
        d = Berthd(tmp, listener_text("ack", groups="224.3.29.71,224.3.29.72"))
        d.expected_exit = None
        d.start()
        self._daemons.append(d)
        rc = d.proc.wait(timeout=60)
        d.proc.status_seen = True
        d.expected_exit = rc
        self.assertNotEqual(rc, 0)
        self.assertRegex(d.log(), r"berth\.conf:\d+: \[mcast\]: cannot join multicast group "
                         r"224\.3\.29\.72: No buffer space available \(the kernel's limit")


class MulticastConfig(unittest.TestCase):
    """The multicast keys' errors, each at its FILE:LINE (berthd -t)."""

    def check(self, body):
        import tempfile
        with tempfile.TemporaryDirectory(prefix="berth-test-") as tmp:
            path = os.path.join(tmp, "berth.conf")
            with open(path, "w") as f:
                f.write("[daemon]\nadmin =\nplugin_dir = %s\n" % PLUGIN_DIR + body)
            return check_config(path)

    def assertError(self, body, line, pattern):
        rc, out = self.check(body)
        self.assertNotEqual(rc, 0, out)
        self.assertRegex(out, r"berth\.conf:%d: .*%s" % (line, pattern))

    def test_errors(self):
        head = "[m]\nprotocol = udp\naddress = *:7000\nhandler = echo\n"  # lines 4..7
        self.assertError(head + "multicast = 10.0.0.1\n", 8,
                         r"multicast '10\.0\.0\.1': '10\.0\.0\.1' is not a multicast group")
        self.assertError(head + "multicast = 224.1.1.1, nope\n", 8, r"'nope' is not an IPv4")
        self.assertError(head + "multicast = ff02::1:3\n", 8,
                         r"multicast: group ff02::1:3 is IPv6 but the address '\*:7000' is IPv4")
        self.assertError(head + "multicast = 224.1.1.1\nmulticast_interface = nosuch0\n", 9,
                         r"no interface named nosuch0 on this host")
        self.assertError(head + "multicast = 224.1.1.1\nmulticast_interface = 192.0.2.77\n", 9,
                         r"no interface of this host has the address 192\.0\.2\.77")
        self.assertError(head + "multicast_loop = on\n", 8,
                         r"multicast_loop: the listener has no 'multicast' groups")
        self.assertError(head + "multicast = 224.1.1.1\nmulticast_loop = maybe\n", 9,
                         r"must be on or off")
        self.assertError(head + "multicast = 224.1.1.1\nmulticast_source = 224.1.1.2\n", 9,
                         r"unicast IPv4 or IPv6 address")
        self.assertError(head.replace("udp", "tcp") + "multicast = 224.1.1.1\n", 8,
                         r"multicast: only udp listeners join multicast groups")
        self.assertError(head.replace("*:7000", "127.0.0.1:7000") + "multicast = 224.1.1.1\n",
                         6, r"a multicast listener binds the wildcard")

    def test_good(self):
        rc, out = self.check("[m]\nprotocol = udp\naddress = 224.1.1.1:7000\nhandler = echo\n"
                             "multicast = 224.1.1.1\nmulticast_interface = lo\n"
                             "multicast_loop = off\nmulticast_source = 127.0.0.1\n"
                             "[m6]\nprotocol = udp\naddress = [::]:7000\nhandler = echo\n"
                             "multicast = ff02::1:3, ff05::42\n")
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
