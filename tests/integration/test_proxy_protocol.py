"""Issue 12: PROXY protocol v1/v2 on a tcp listener, driven with raw sockets.

The whoami test plugin answers each conn with "peer=NAME balancer=ADDR" from host->peer_name
and host->balancer_addr, so what the plugin is told is what the test reads. Clients bind
their socket to 127.0.0.2 / 127.0.0.3 to be different peers on loopback."""
import os
import socket
import struct
import unittest

from harness import (connect_from, IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin, check_config,
                     peer_closed, recv_until)

V2SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_inet(src, sport, dst, dport, tlvs=b"", cmd=0x21, fam=0x11):
    body = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack(">HH", sport, dport) + tlvs
    return V2SIG + bytes([cmd, fam]) + struct.pack(">H", len(body)) + body


def v2_inet6(src, sport, dst, dport):
    body = (socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst) +
            struct.pack(">HH", sport, dport))
    return V2SIG + bytes([0x21, 0x21]) + struct.pack(">H", len(body)) + body


class ProxyProtocol(DaemonTestCase):

    def setUp(self):
        super().setUp()
        plugin = built_test_plugin("whoami")
        self.d = self.daemon(f"""
            [any]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = any
            proxy_from = 127.0.0.1, 127.0.0.2
            proxy_timeout = 500ms

            [v1]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = v1
            proxy_from = 127.0.0.2/32

            [v2]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = v2
            proxy_from = 127.0.0.0/8

            [acl]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = any
            proxy_from = 127.0.0.1
            deny = 192.0.2.66, 127.0.0.1
            """, workers=2)
        self.d.wait_serving()
        self.any_port = self.d.port("any")
        self.v1_port = self.d.port("v1")
        self.v2_port = self.d.port("v2")
        self.acl_port = self.d.port("acl")

    def conn(self, port, src="127.0.0.1"):
        s = connect_from(src, port)
        self.addCleanup(s.close)
        return s

    def counter(self, name, key):
        return self.d.listener(name)[key]

    def wait_counter(self, name, key, value):
        self.d.wait_status(lambda st: self.d.listener(name, st)[key] == value,
                           "%s %s == %d" % (name, key, value))

    def test_v1_peer_is_the_client_and_bytes_after_the_header_reach_the_plugin(self):
        s = self.conn(self.any_port)
        # The header and the first application bytes in one segment.
        s.sendall(b"PROXY TCP4 192.0.2.7 198.51.100.1 56324 443\r\nhello\n")
        line = recv_until(s).decode()
        bal_port = s.getsockname()[1]
        self.assertEqual(line, "peer=192.0.2.7:56324 balancer=127.0.0.1:%d\n" % bal_port)
        self.assertEqual(recv_until(s), b"hello\n")
        s.sendall(b"more\n")
        self.assertEqual(recv_until(s), b"more\n")
        # Its log lines name the client, not the balancer.
        self.d.wait_log(r"any 192\.0\.2\.7:56324: whoami: balancer=127\.0\.0\.1:%d" % bal_port)

    def test_v2_byte_by_byte_ipv6_and_tlvs(self):
        s = self.conn(self.v2_port, "127.0.0.3")
        hdr = v2_inet6("2001:db8::5", 4000, "::1", 443)
        for b in hdr:
            s.send(bytes([b]))
        self.assertEqual(recv_until(s).decode(),
                         "peer=[2001:db8::5]:4000 balancer=127.0.0.3:%d\n" % s.getsockname()[1])
        s2 = self.conn(self.v2_port)
        tlvs = b"\x01\x00\x02h2" + b"\x04\x00\x03abc"
        s2.sendall(v2_inet("203.0.113.9", 1234, "127.0.0.1", 80, tlvs) + b"x\n")
        self.assertEqual(recv_until(s2).decode(),
                         "peer=203.0.113.9:1234 balancer=127.0.0.1:%d\n" % s2.getsockname()[1])
        self.assertEqual(recv_until(s2), b"x\n")

    def test_unknown_keeps_the_real_peer(self):
        s = self.conn(self.any_port, "127.0.0.2")
        s.sendall(b"PROXY UNKNOWN\r\n")
        self.assertEqual(recv_until(s).decode(),
                         "peer=127.0.0.2:%d balancer=none\n" % s.getsockname()[1])

    def test_local_is_closed_quietly(self):
        s = self.conn(self.v2_port)
        s.sendall(V2SIG + bytes([0x20, 0x00, 0, 0]))
        self.assertTrue(peer_closed(s))
        st = self.d.status()
        self.assertEqual(self.d.listener("v2", st)["refused_proxy"], 0)
        self.assertEqual(self.d.listener("v2", st)["errors"], 0)

    def test_peer_outside_proxy_from_is_refused_and_its_header_ignored(self):
        # [v1] trusts 127.0.0.2 only: 127.0.0.1 and 127.0.0.3 are refused before a byte is read.
        for src in ("127.0.0.1", "127.0.0.3"):
            s = self.conn(self.v1_port, src)
            try:
                s.sendall(b"PROXY TCP4 10.9.9.9 10.0.0.1 1 2\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertTrue(peer_closed(s))
        self.wait_counter("v1", "refused_proxy", 2)
        self.assertNotIn("10.9.9.9", self.d.log())
        self.assertEqual(self.counter("v1", "accepted"), 0)
        # The trusted one gets through.
        s = self.conn(self.v1_port, "127.0.0.2")
        s.sendall(b"PROXY TCP4 10.9.9.9 10.0.0.1 1 2\r\n")
        self.assertEqual(recv_until(s).decode(),
                         "peer=10.9.9.9:1 balancer=127.0.0.2:%d\n" % s.getsockname()[1])

    def test_a_peer_in_proxy_from_must_send_a_header(self):
        s = self.conn(self.v1_port, "127.0.0.2")
        s.sendall(b"hello\n")
        self.assertTrue(peer_closed(s))
        self.wait_counter("v1", "refused_proxy", 1)

    def test_every_malformed_kind_ends_the_conn_and_is_counted(self):
        cases = [
            ("bad signature", self.any_port, b"GET / HTTP/1.0\r\n\r\n"),
            ("v2 on a v1 listener", self.v1_port, v2_inet("1.2.3.4", 1, "5.6.7.8", 2)),
            ("v1 on a v2 listener", self.v2_port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n"),
            ("bad v1 line", self.any_port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n"),
            ("v1 LF only", self.any_port, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n"),
            ("oversized v1", self.any_port, b"PROXY UNKNOWN " + b"a" * 200 + b"\r\n"),
            ("oversized v2", self.any_port, V2SIG + b"\x21\x11\xff\xff" + b"\0" * 64),
            ("bad v2 version", self.any_port, V2SIG + b"\x11\x11\x00\x0c" + b"\0" * 12),
            ("bad v2 command", self.any_port, V2SIG + b"\x2f\x11\x00\x0c" + b"\0" * 12),
            ("bad v2 family", self.any_port, V2SIG + b"\x21\x51\x00\x0c" + b"\0" * 12),
            ("v2 udp", self.any_port, V2SIG + b"\x21\x12\x00\x0c" + b"\0" * 12),
            ("bad v2 length", self.any_port, V2SIG + b"\x21\x21\x00\x0c" + b"\0" * 12),
            ("bad v2 TLV", self.any_port,
             v2_inet("1.2.3.4", 1, "5.6.7.8", 2, b"\x02\x00\x09abc")),
        ]
        expect = {}
        for what, port, data in cases:
            s = self.conn(port, "127.0.0.2")
            try:
                s.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.assertTrue(peer_closed(s), what)
            s.close()
            name = {self.any_port: "any", self.v1_port: "v1", self.v2_port: "v2"}[port]
            expect[name] = expect.get(name, 0) + 1
            self.wait_counter(name, "refused_proxy", expect[name])
        # The plugin never saw one of them.
        self.assertNotIn("whoami:", self.d.log())

    def test_truncated_slow_and_silent_headers_time_out(self):
        # Cut short by EOF: ended at once.
        s = self.conn(self.any_port)
        s.sendall(b"PROXY TCP4 1.2.3.4 ")
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(peer_closed(s))
        self.wait_counter("any", "refused_proxy", 1)
        # Half a header, then nothing: proxy_timeout (500ms) ends it, however idle_timeout is.
        s = self.conn(self.any_port)
        s.sendall(V2SIG[:7])
        self.assertTrue(peer_closed(s, timeout=30))
        # Nothing at all.
        s = self.conn(self.any_port)
        self.assertTrue(peer_closed(s, timeout=30))
        self.wait_counter("any", "refused_proxy", 3)
        self.d.wait_log(r"PROXY header: not complete in proxy_timeout")
        self.d.wait_log(r"PROXY header: none within proxy_timeout")

    def test_allow_deny_judge_the_header_address(self):
        # deny lists 127.0.0.1, the balancer itself: that must not refuse its clients.
        s = self.conn(self.acl_port)
        s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 5 6\r\n")
        self.assertTrue(recv_until(s).startswith(b"peer=192.0.2.7:5 "))
        s = self.conn(self.acl_port)
        s.sendall(b"PROXY TCP4 192.0.2.66 127.0.0.1 5 6\r\nhi\n")
        self.assertTrue(peer_closed(s))
        self.wait_counter("acl", "refused_acl", 1)
        # UNKNOWN: the balancer's own address is judged, and it is denied.
        s = self.conn(self.acl_port)
        s.sendall(b"PROXY UNKNOWN\r\n")
        self.assertTrue(peer_closed(s))
        self.wait_counter("acl", "refused_acl", 2)


class ProxyConfig(DaemonTestCase):

    def check(self, body):
        path = os.path.join(self.tmp, "c.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\n[l]\nprotocol = tcp\n"
                    "address = 127.0.0.1:1\nhandler = echo\n" % PLUGIN_DIR + body)
        return check_config(path)

    def test_keys(self):
        rc, out = self.check("proxy_protocol = v1\n")
        self.assertNotEqual(rc, 0)
        self.assertIn("proxy_protocol: needs proxy_from", out)
        rc, out = self.check("proxy_protocol = v3\nproxy_from = 10.0.0.0/8\n")
        self.assertIn("must be off, v1, v2 or any", out)
        rc, out = self.check("proxy_from = 10.0.0.0/8\n")
        self.assertIn("proxy_from: proxy_protocol is off", out)
        rc, out = self.check("proxy_protocol = any\nproxy_from = 10.0.0.0/8\nproxy_timeout = 0\n")
        self.assertIn("proxy_timeout: must be more than 0", out)
        rc, out = self.check("proxy_protocol = any\nproxy_from = 10.0.0.0/8\nproxy_timeout = 2s\n")
        self.assertEqual(rc, 0, out)
        path = os.path.join(self.tmp, "u.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\n[u]\nprotocol = udp\n"
                    "address = 127.0.0.1:1\nhandler = echo\nproxy_protocol = v2\n"
                    "proxy_from = 127.0.0.1\n" % PLUGIN_DIR)
        rc, out = check_config(path)
        self.assertIn("proxy_protocol: only tcp and unix listeners take a PROXY protocol header",
                      out)


if __name__ == "__main__":
    unittest.main()
