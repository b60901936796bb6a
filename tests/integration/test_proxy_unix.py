"""Issue 12: the PROXY protocol on a unix stream listener (a local balancer such as HAProxy
with `send-proxy` to a unix socket), driven with raw AF_UNIX sockets.

A unix peer has no address, so there is no proxy_from: the socket file's mode guards who may
connect, and every peer must send the header. The address in it becomes the peer: the
whoami test plugin reports it, and allow/deny and per_source judge it."""
import os
import socket
import struct
import unittest

from harness import (IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin, check_config,
                     peer_closed, recv_until)

V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_inet(src, sport, dst, dport, cmd=0x21):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport)
    return V2SIG + bytes([cmd, 0x11]) + struct.pack(">H", len(body)) + body


class UnixProxy(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.tmp, "p.sock")
        plugin = built_test_plugin("whoami")
        self.d = self.daemon(f"""
            [u]
            protocol = unix
            address = {self.path}
            handler = {plugin}
            proxy_protocol = any
            proxy_timeout = 500ms
            per_source = 1
            deny = 198.51.100.9
            """, workers=2)
        self.d.wait_serving()

    def conn(self, header):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(IO_TIMEOUT)
        s.connect(self.path)
        self.addCleanup(s.close)
        if header:
            s.sendall(header)
        return s

    def counter(self, key, want):
        self.d.wait_status(lambda st: self.d.listener("u", st)[key] == want,
                           f"{key} == {want}")

    def test_the_header_address_becomes_the_peer(self):
        a = self.conn(b"PROXY TCP4 198.51.100.1 127.0.0.1 1000 80\r\nhello\n")
        self.assertEqual(recv_until(a), b"peer=198.51.100.1:1000 balancer=family-1\n")
        self.assertEqual(recv_until(a), b"hello\n")
        b = self.conn(v2_inet("198.51.100.2", 2000, "127.0.0.1", 80))
        self.assertEqual(recv_until(b), b"peer=198.51.100.2:2000 balancer=family-1\n")
        self.d.wait_log(r"u 198\.51\.100\.2:2000: whoami: balancer=family-1")

    def test_allow_deny_and_per_source_judge_the_header_address(self):
        a = self.conn(b"PROXY TCP4 198.51.100.1 127.0.0.1 1000 80\r\n")
        self.assertTrue(recv_until(a).startswith(b"peer=198.51.100.1:1000 "))
        # per_source = 1: the same client again, through the same socket file, is refused...
        self.assertTrue(peer_closed(self.conn(b"PROXY TCP4 198.51.100.1 127.0.0.1 1001 80\r\n")))
        self.counter("refused_source", 1)
        # ...and another one is not.
        c = self.conn(b"PROXY TCP4 198.51.100.3 127.0.0.1 1000 80\r\n")
        self.assertTrue(recv_until(c).startswith(b"peer=198.51.100.3:1000 "))
        self.assertTrue(peer_closed(self.conn(b"PROXY TCP4 198.51.100.9 127.0.0.1 1000 80\r\n")))
        self.counter("refused_acl", 1)

    def test_a_peer_must_send_the_header(self):
        self.assertTrue(peer_closed(self.conn(b"GET / HTTP/1.0\r\n\r\n")))
        self.assertTrue(peer_closed(self.conn(b"")))  # nothing within proxy_timeout
        self.counter("refused_proxy", 2)
        # A health check (v2 LOCAL) is closed quietly, not counted.
        self.assertTrue(peer_closed(self.conn(v2_inet("0.0.0.0", 0, "0.0.0.0", 0, cmd=0x20))))
        self.assertEqual(self.d.listener("u")["refused_proxy"], 2)


class UnixProxyConfig(DaemonTestCase):

    def check(self, body):
        path = os.path.join(self.tmp, "c.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\n[u]\nprotocol = unix\n"
                    "address = %s\nhandler = echo\n" % (PLUGIN_DIR, os.path.join(self.tmp, "s"))
                    + body)
        return check_config(path)

    def test_keys(self):
        rc, out = self.check("proxy_protocol = v2\n")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("proxy_protocol = v2\nproxy_from = 127.0.0.1\n")
        self.assertIn("proxy_from: unix peers have no IP address", out)
        rc, out = self.check("proxy_protocol = v2\nallow = 10.0.0.0/8\nper_source = 2\n")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("allow = 10.0.0.0/8\n")
        self.assertIn("allow: unix peers have no IP address", out)
        rc, out = self.check("per_source = 2\n")
        self.assertIn("per_source: only tcp and udp listeners", out)


if __name__ == "__main__":
    unittest.main()
