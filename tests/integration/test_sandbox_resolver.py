"""The worker sandbox keeps what the name resolver needs: a listener that declares one
outbound TCP port (not BERTH_PORT_ANY) still resolves a name whose answer is too large for a
datagram, which glibc's resolver fetches again over TCP port 53.

The test runs in namespaces of its own (`unshare` of the network and the mounts, as root): a
fake DNS server on 127.0.0.1:53 answers every UDP query truncated (TC) and the TCP query
with an address; /etc/resolv.conf and /etc/nsswitch.conf are bind-mounted to point at it.
The plugin tests/plugins/escape.c resolves from inside a sandboxed worker."""
import ctypes
import errno
import os
import shutil
import socket
import struct
import subprocess
import threading
import unittest

from harness import DaemonTestCase, built_test_plugin, line_request, stream_connect

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
ANSWER = "10.1.2.3"


def enter_namespaces(tmp):
    """Move this (single-threaded) test process into new network and mount namespaces, with
    the loopback up and the resolver files of `tmp` mounted over /etc's. Every berthd the
    tests start inherits them. None, or why it cannot."""
    if os.geteuid() != 0:
        return "needs root (unshare)"
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWNET) != 0:
        return "unshare: " + os.strerror(ctypes.get_errno())
    resolv = os.path.join(tmp, "resolv.conf")
    nss = os.path.join(tmp, "nsswitch.conf")
    with open(resolv, "w") as f:
        f.write("nameserver 127.0.0.1\noptions attempts:1 timeout:5\n")
    with open(nss, "w") as f:
        f.write("hosts: dns\n")
    for cmd in (["mount", "--make-rprivate", "/"],
                ["mount", "--bind", resolv, "/etc/resolv.conf"],
                ["mount", "--bind", nss, "/etc/nsswitch.conf"],
                ["ip", "link", "set", "lo", "up"]):
        subprocess.run(cmd, check=True)
    return None


def dns_answer(query, truncated):
    """The reply to one query: truncated (TC, no answer), or an A record of ANSWER for an
    A question (other types: no answer)."""
    qid, _flags, qd = struct.unpack("!HHH", query[:6])
    end = 12
    while query[end] != 0:
        end += 1 + query[end]
    qtype = struct.unpack("!H", query[end + 1:end + 3])[0]
    question = query[12:end + 5]
    flags = 0x8180 | (0x0200 if truncated else 0)  # QR, RD, RA (+ TC)
    answers = b""
    if not truncated and qtype == 1:
        answers = (b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 60, 4) +
                   socket.inet_aton(ANSWER))
    return struct.pack("!HHHHHH", qid, flags, qd, 1 if answers else 0, 0, 0) + question + answers


class FakeDns:
    """127.0.0.1:53: UDP answers truncated, TCP answers whole; counts the TCP queries."""

    def __init__(self):
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 53))
        self.tcp = socket.socket()
        self.tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.tcp.bind(("127.0.0.1", 53))
        self.tcp.listen(16)
        self.tcp_queries = 0
        self.udp_queries = 0
        self.closed = False
        for fn in (self.serve_udp, self.serve_tcp):
            threading.Thread(target=fn, daemon=True).start()

    def serve_udp(self):
        while True:
            try:
                data, peer = self.udp.recvfrom(4096)
            except OSError:
                return
            if self.closed:
                return
            if len(data) < 12:
                continue
            self.udp_queries += 1
            self.udp.sendto(dns_answer(data, True), peer)

    def serve_tcp(self):
        while True:
            try:
                c, _ = self.tcp.accept()
            except OSError:
                return
            with c:
                try:
                    while True:
                        head = c.recv(2, socket.MSG_WAITALL)
                        if len(head) < 2:
                            break
                        q = c.recv(struct.unpack("!H", head)[0], socket.MSG_WAITALL)
                        self.tcp_queries += 1
                        a = dns_answer(q, False)
                        c.sendall(struct.pack("!H", len(a)) + a)
                except OSError:
                    pass

    def close(self):
        self.closed = True
        for s in (self.udp, self.tcp):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()


class SandboxResolver(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.nstmp = os.path.join("/tmp", "berth-resolver-%d" % os.getpid())
        os.makedirs(cls.nstmp, exist_ok=True)
        why = enter_namespaces(cls.nstmp)
        if why:
            raise unittest.SkipTest(why)
        cls.dns = FakeDns()

    @classmethod
    def tearDownClass(cls):
        cls.dns.close()
        shutil.rmtree(cls.nstmp, ignore_errors=True)
        super().tearDownClass()

    def test_a_declared_port_keeps_the_resolvers_tcp_fallback(self):
        # Something that listens on another port: the one port the listener declares.
        target = socket.socket()
        target.bind(("127.0.0.1", 0))
        target.listen(4)
        self.addCleanup(target.close)
        declared = target.getsockname()[1]
        self.d = self.daemon(f"""
            [escape]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("escape")}
            connect = {declared}
            """, workers=1, log_level="info")
        st = self.d.wait_serving()
        abi = st["workers"][0]["sandbox"]["landlock_abi"]
        if abi < 4:
            self.skipTest("Landlock ABI 4 (TCP rules) needed, this kernel has %d" % abi)
        s = stream_connect(socket.AF_INET, ("127.0.0.1", self.d.port("escape")))
        self.addCleanup(s.close)
        before = self.dns.tcp_queries
        self.assertEqual(line_request(s, "resolve big.berth.test").strip(), "addr " + ANSWER)
        self.assertGreater(self.dns.udp_queries, 0)
        self.assertGreater(self.dns.tcp_queries, before, "the answer came over TCP")
        # The declared port is reachable; the resolver's rule opened port 53, nothing else.
        self.assertEqual(line_request(s, "connect %d" % declared).strip(), "ok")
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        self.addCleanup(other.close)
        self.assertEqual(line_request(s, "connect %d" % other.getsockname()[1]).strip(),
                         "errno %d" % errno.EACCES)


if __name__ == "__main__":
    unittest.main()
