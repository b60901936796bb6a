"""Integration tests for socks5 BIND (RFC 1928 section 6), with raw sockets against the real
berthd: the first reply names the port it listens on, the second the peer that connected,
then the two are relayed; a peer other than DST.ADDR is refused (and the wait goes on); the
wait ends after bind_timeout. Every check waits on an event, never on a clock.
"""
import socket
import struct
import unittest

import harness
from clients import greet, read_reply_text, recv_strict
from harness import IO_TIMEOUT, DaemonTestCase


def bind_request(host, port):
    fam, atyp = (socket.AF_INET6, 4) if ":" in host else (socket.AF_INET, 1)
    return bytes([5, 2, 0, atyp]) + socket.inet_pton(fam, host) + struct.pack("!H", port)


def refused(s):
    """The connection is reset or closed by the other end without a byte."""
    s.settimeout(IO_TIMEOUT)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:
        return True


class SocksBindTest(DaemonTestCase):
    def start_proxy(self, options="bind = on\n", host="127.0.0.1"):
        self.proxy_host = host
        addr = "[%s]:0" % host if ":" in host else "%s:0" % host
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = %s\nhandler = socks5\n"
            "allow_dest = 127.0.0.0/8, ::1\n%s\n" % (addr, options), wait=True)
        self.port = self.d.port("socks")

    def client(self):
        fam = socket.AF_INET6 if ":" in self.proxy_host else socket.AF_INET
        s = socket.socket(fam)
        s.settimeout(IO_TIMEOUT)
        s.connect((self.proxy_host, self.port))
        self.addCleanup(s.close)
        greet(s)
        return s

    def peer_from(self, src, dst):
        p = socket.socket(socket.AF_INET6 if ":" in src else socket.AF_INET)
        p.settimeout(IO_TIMEOUT)
        p.bind((src, 0))
        p.connect(dst)
        self.addCleanup(p.close)
        return p

    def refused_from(self, src, dst):
        """A connection from src is refused: reset (at once, or on the first read)."""
        try:
            p = self.peer_from(src, dst)
        except ConnectionResetError:
            return True
        return refused(p)

    def test_both_replies_then_relay(self):
        self.start_proxy()
        s = self.client()
        s.sendall(bind_request("127.0.0.1", 21))
        rep, host, port = read_reply_text(s)
        self.assertEqual((rep, host), (0, "127.0.0.1"))
        self.assertNotEqual(port, 0)
        p = self.peer_from("127.0.0.1", (host, port))
        rep, host2, port2 = read_reply_text(s)
        self.assertEqual((rep, host2, port2), (0, "127.0.0.1", p.getsockname()[1]))
        # Relayed both ways, EOF carried.
        p.sendall(b"from the peer")
        self.assertEqual(recv_strict(s, 13), b"from the peer")
        s.sendall(b"from the client")
        self.assertEqual(recv_strict(p, 15), b"from the client")
        p.shutdown(socket.SHUT_WR)
        self.assertEqual(s.recv(1), b"")
        s.close()
        self.assertEqual(p.recv(1), b"")
        # One incoming connection: the port is closed once the peer is taken.
        late = socket.socket()
        self.addCleanup(late.close)
        self.assertRaises(ConnectionRefusedError, late.connect, (host, port))

    def test_wrong_peer_refused_then_the_right_one(self):
        self.start_proxy()
        s = self.client()
        s.sendall(bind_request("127.0.0.2", 0))
        rep, host, port = read_reply_text(s)
        self.assertEqual(rep, 0)
        self.assertTrue(self.refused_from("127.0.0.1", (host, port)))
        self.d.wait_log(r"bind: refused a connection from 127\.0\.0\.1:\d+")
        right = self.peer_from("127.0.0.2", (host, port))
        rep, host2, _ = read_reply_text(s)
        self.assertEqual((rep, host2), (0, "127.0.0.2"))
        right.sendall(b"hello")
        self.assertEqual(recv_strict(s, 5), b"hello")

    def test_denied_peer_refused(self):
        # DST.ADDR unspecified: any address may connect, but deny_dest still rules.
        self.start_proxy("bind = on\ndeny_dest = 127.0.0.3\n")
        s = self.client()
        s.sendall(bind_request("0.0.0.0", 0))
        rep, host, port = read_reply_text(s)
        self.assertEqual(rep, 0)
        self.assertTrue(self.refused_from("127.0.0.3", (host, port)))
        self.peer_from("127.0.0.4", (host, port))
        self.assertEqual(read_reply_text(s)[:2], (0, "127.0.0.4"))

    def test_timeout(self):
        self.start_proxy("bind = on\nbind_timeout = 200ms\n")
        s = self.client()
        s.sendall(bind_request("127.0.0.1", 0))
        rep, host, port = read_reply_text(s)
        self.assertEqual(rep, 0)
        rep, _, _ = read_reply_text(s)
        self.assertEqual(rep, 6)  # TTL expired: what clients show as "timed out"
        self.assertTrue(refused(s))
        late = socket.socket()
        self.addCleanup(late.close)
        self.assertRaises(ConnectionRefusedError, late.connect, (host, port))

    def test_client_gone_closes_the_port(self):
        self.start_proxy()
        s = self.client()
        s.sendall(bind_request("127.0.0.1", 0))
        rep, host, port = read_reply_text(s)
        s.close()
        self.d.wait_log(r"session client=.* outcome=")

        def closed():
            t = socket.socket()
            try:
                t.connect((host, port))
                return False
            except ConnectionRefusedError:
                return True
            finally:
                t.close()
        harness.wait_until(closed, what="the BIND port to close")

    def test_bind_off_by_default(self):
        self.start_proxy("")
        s = self.client()
        s.sendall(bind_request("127.0.0.1", 0))
        self.assertEqual(read_reply_text(s)[0], 7)

    @unittest.skipUnless(socket.has_ipv6, "no IPv6")
    def test_ipv6(self):
        try:
            socket.socket(socket.AF_INET6).bind(("::1", 0))
        except OSError:
            self.skipTest("no IPv6 loopback")
        self.start_proxy(host="::1")
        s = self.client()
        s.sendall(bind_request("::1", 0))
        rep, host, port = read_reply_text(s)
        self.assertEqual((rep, host), (0, "::1"))
        self.peer_from("::1", (host, port))
        self.assertEqual(read_reply_text(s)[:2], (0, "::1"))


if __name__ == "__main__":
    unittest.main()
