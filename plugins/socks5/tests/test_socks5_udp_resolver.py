"""socks5 UDP ASSOCIATE against a resolver that never answers (issue 13, hostile clients).

A datagram to a name is resolved on the worker's thread pool, and a lookup holds its thread
until the resolver answers or gives up: the same threads CONNECT's names and host->work
need. The host caps a listener's lookups for datagrams at half its share of the pool; past
that a datagram to a name is dropped and counted as `resolver`.

The module runs in a network and mount namespace of its own (unshare at module setup; berthd
inherits both): loopback only, /etc/resolv.conf naming a DNS server on 127.0.0.1:53 that
this test runs and that answers nothing until the test lets it (then NXDOMAIN to every
query, so the lookups end), and /etc/hosts naming fast.test, which resolves from files
without the DNS server. The machine's own files are untouched (bind mounts, private).

Every check waits on an event (a query seen, a reply, a log line), never on a clock.
"""
import ctypes
import os
import socket
import struct
import subprocess
import tempfile
import threading
import unittest

import harness
from clients import TcpEcho, UdpEcho, greet, read_reply, recv_strict, udp_header
from harness import IO_TIMEOUT, DaemonTestCase, wait_until

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NS_ERROR = None
# UV_THREADPOOL_SIZE: libuv runs at most (8 + 1) / 2 = 4 lookups at once, the listener
# may hand the pool 8 work items: it may have 4 / 2 = 2 lookups for datagrams in flight.
POOL = 8
CAP = 2
FILES = None


def run(*argv):
    subprocess.run(argv, check=True, capture_output=True, text=True)


def setUpModule():
    """This process (and all it starts) into namespaces of its own, with our resolver files."""
    global NS_ERROR, FILES
    if os.geteuid() != 0:
        NS_ERROR = "needs root for network and mount namespaces"
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET | CLONE_NEWNS) != 0:
        NS_ERROR = "unshare: %s" % os.strerror(ctypes.get_errno())
        return
    FILES = tempfile.TemporaryDirectory(prefix="berth-resolver-")
    resolv = os.path.join(FILES.name, "resolv.conf")
    hosts = os.path.join(FILES.name, "hosts")
    with open(resolv, "w") as f:
        # The longest wait glibc allows: a lookup the server ignores holds its thread.
        f.write("nameserver 127.0.0.1\noptions timeout:30 attempts:5\n")
    with open(hosts, "w") as f:
        f.write("127.0.0.1 localhost fast.test\n")
    run("mount", "--make-rprivate", "/")
    run("mount", "--bind", resolv, "/etc/resolv.conf")
    run("mount", "--bind", hosts, "/etc/hosts")
    run("ip", "link", "set", "lo", "up")


class SilentDns:
    """A DNS server on 127.0.0.1:53 that records each query's name and answers none, until
    release(): then NXDOMAIN to every query it kept and every one after."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 53))
        self.lock = threading.Lock()
        self.names = set()
        self.held = []
        self.released = False
        threading.Thread(target=self._serve, daemon=True).start()

    @staticmethod
    def qname(q):
        labels, i = [], 12
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode("ascii", "replace"))
            i += 1 + q[i]
        return ".".join(labels).lower(), i + 5  # the name, the end of the question

    def _answer(self, q, src):
        _, end = self.qname(q)
        # The query's id, QR + RD + RA, RCODE 3 (NXDOMAIN), the question only.
        self.sock.sendto(q[:2] + struct.pack("!HHHHH", 0x8183, 1, 0, 0, 0) + q[12:end], src)

    def _serve(self):
        while True:
            try:
                q, src = self.sock.recvfrom(4096)
            except OSError:
                return
            if len(q) < 17:
                continue
            with self.lock:
                self.names.add(self.qname(q)[0])
                if not self.released:
                    self.held.append((q, src))
                    continue
            self._answer(q, src)

    def seen(self, prefix):
        with self.lock:
            return sorted(n for n in self.names if n.startswith(prefix))

    def release(self):
        with self.lock:
            self.released = True
            held, self.held = self.held, []
        for q, src in held:
            self._answer(q, src)

    def close(self):
        self.release()
        self.sock.close()


class ResolverCapTest(DaemonTestCase):
    def setUp(self):
        if NS_ERROR:
            self.skipTest(NS_ERROR)
        super().setUp()
        self.dns = SilentDns()
        self.addCleanup(self.dns.close)
        self.echo = UdpEcho(prefix=None)  # a sink: datagrams are only counted
        self.addCleanup(self.echo.close)
        self.addCleanup(TcpEcho(port=self.echo.port).close)  # CONNECT's destination
        # Two UDP listeners: the cap holds for the worker's listeners together, not only
        # for each (with POOL threads each listener's own cap is CAP too).
        section = ("protocol = tcp\naddress = 127.0.0.1:0\nhandler = socks5\n"
                   "allow_dest = 127.0.0.0/8\nudp = on\n")
        self.d = self.daemon("[socks]\n" + section + "[socks2]\n" + section, wait=True,
                             env={"UV_THREADPOOL_SIZE": str(POOL)})
        self.port = self.d.port("socks")
        self.port2 = self.d.port("socks2")

    def tearDown(self):
        # Lookups still held would keep pool threads, and the worker, from ending.
        if not NS_ERROR:
            self.dns.release()
        super().tearDown()

    def greet(self, port=None):
        s = socket.create_connection(("127.0.0.1", port or self.port), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        greet(s)
        return s

    def associate(self, port=None):
        s = self.greet(port)
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.bind(("127.0.0.1", 0))
        self.addCleanup(u.close)
        s.sendall(b"\x05\x03\x00\x01" + socket.inet_aton("127.0.0.1") +
                  struct.pack("!H", u.getsockname()[1]))
        rep, addr, port = read_reply(s)
        self.assertEqual(rep, 0)
        return s, u, (socket.inet_ntoa(addr), port)

    def handled(self, u, relay, tag):
        """Everything u sent before is handled: the relay handles a socket's datagrams in
        order, and this one, to a literal address, reaches the echo server."""
        u.sendto(udp_header("127.0.0.1", self.echo.port) + tag, relay)
        wait_until(lambda: tag in self.echo.received(), what="datagram %r" % tag)

    def counters(self, text):
        return dict(kv.split("=") for kv in text.split() if "=" in kv)

    def test_names_that_never_resolve_leave_threads_for_connect(self):
        a, ua, relay_a = self.associate()
        b, ub, relay_b = self.associate(self.port2)  # the other listener
        n = 10  # well past CAP, well under udp_queue (16): every drop here is the cap's
        for i in range(n):
            ua.sendto(udp_header("slow%d.test" % i, self.echo.port) + b"x", relay_a)
        self.handled(ua, relay_a, b"a-done")
        # Lookups in flight: exactly CAP names reach the server, and stay unanswered.
        wait_until(lambda: len(self.dns.seen("slow")) >= CAP, what="the first lookups")
        # An association of the other listener shares the worker's cap: all of its names
        # are dropped.
        for i in range(3):
            ub.sendto(udp_header("other%d.test" % i, self.echo.port) + b"y", relay_b)
        self.handled(ub, relay_b, b"b-done")

        # The pool still has threads: a CONNECT to a name (from /etc/hosts) is resolved on
        # it and served while the names above hang.
        c = self.greet()
        c.sendall(b"\x05\x01\x00\x03\x09fast.test" + struct.pack("!H", self.echo.port))
        rep, _, _ = read_reply(c)
        self.assertEqual(rep, 0)
        c.sendall(b"ping")
        self.assertEqual(recv_strict(c, 4), b"ping")
        c.close()
        self.assertEqual(self.dns.seen("slow"), ["slow0.test", "slow1.test"])
        self.assertEqual(self.dns.seen("other"), [])

        # The server answers at last: the lookups end and give their places back, so a name
        # is resolved for a datagram again.
        self.dns.release()
        for i in range(CAP):
            self.d.wait_log(r"datagram to slow%d\.test port \d+ dropped" % i)
        ua.sendto(udp_header("fast.test", self.echo.port) + b"again", relay_a)
        wait_until(lambda: b"again" in self.echo.received(), what="a name resolved again")

        a.close()
        b.close()
        m = self.d.wait_log(r"(?s)(udp association ended \([^)]*\): .*){2}")
        lines = [l for l in self.d.log().splitlines() if "udp association ended" in l]
        got = sorted((self.counters(l.split("):", 1)[1]) for l in lines),
                     key=lambda c: int(c["datagrams_up"]))
        self.assertIsNotNone(m)
        # B: 1 literal sent, 3 names dropped; A: CAP names, 2 literals, 1 name handed on.
        self.assertEqual((got[0]["datagrams_up"], got[0]["resolver"], got[0]["queue"]),
                         ("1", "3", "0"))
        self.assertEqual((got[1]["datagrams_up"], got[1]["resolver"], got[1]["queue"]),
                         (str(CAP + 2), str(n - CAP), "0"))


if __name__ == "__main__":
    unittest.main()
