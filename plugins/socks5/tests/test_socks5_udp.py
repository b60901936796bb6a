"""Integration tests for socks5 UDP ASSOCIATE (RFC 1928 section 7): the real berthd, a real
client (Debian's python3-socks, run under /usr/bin/python3 as its modules need) and raw
sockets, to UDP echo servers on loopback.

Every check waits on an event (a datagram, a log line, a port freed), never on a clock.
"""
import json
import os
import socket
import struct
import subprocess
import unittest

from clients import UdpEcho, read_reply, recv_strict, udp_header
from harness import IO_TIMEOUT, DaemonTestCase, have_ipv6_loopback, wait_until

HERE = os.path.dirname(os.path.abspath(__file__))
SYSTEM_PYTHON = "/usr/bin/python3"


def has_pysocks():
    if not os.path.exists(SYSTEM_PYTHON):
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import socks"],
                          capture_output=True).returncode == 0


def echo_both():
    """Echo servers on 127.0.0.1 and ::1 on the same port, so "localhost" reaches one
    whichever address the resolver gives first."""
    for _ in range(50):
        v4 = UdpEcho()
        try:
            v6 = UdpEcho(socket.AF_INET6, "::1", v4.port)
            return v4, v6
        except OSError:
            v4.close()
    raise AssertionError("no UDP port free on both 127.0.0.1 and ::1")


class SocksUdpTest(DaemonTestCase):
    def start_proxy(self, options="", host="127.0.0.1", env=None):
        self.proxy_host = host
        addr = "[%s]:0" % host if ":" in host else "%s:0" % host
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = %s\nhandler = socks5\n"
            "allow_dest = 127.0.0.0/8, ::1\nudp = on\n%s\n" % (addr, options), wait=True,
            env=env)
        self.port = self.d.port("socks")
        return self.d

    def control(self):
        fam = socket.AF_INET6 if ":" in self.proxy_host else socket.AF_INET
        s = socket.socket(fam)
        s.settimeout(IO_TIMEOUT)
        s.connect((self.proxy_host, self.port))
        self.addCleanup(s.close)
        s.sendall(b"\x05\x01\x00")
        self.assertEqual(recv_strict(s, 2), b"\x05\x00")
        return s

    def associate(self, client_port=0, family=socket.AF_INET, client_host="0.0.0.0"):
        """A control connection and a UDP client socket: (tcp, udp, relay address)."""
        s = self.control()
        u = socket.socket(socket.AF_INET6 if ":" in self.proxy_host else socket.AF_INET,
                          socket.SOCK_DGRAM)
        u.bind((self.proxy_host, 0))
        u.settimeout(IO_TIMEOUT)
        self.addCleanup(u.close)
        port = u.getsockname()[1] if client_port is None else client_port
        s.sendall(bytes([5, 3, 0, 1]) + socket.inet_aton(client_host) + struct.pack("!H", port))
        rep, addr, rport = read_reply(s)
        self.assertEqual(rep, 0)
        fam = socket.AF_INET if len(addr) == 4 else socket.AF_INET6
        return s, u, (socket.inet_ntop(fam, addr), rport)

    def assoc_line(self):
        return self.d.wait_log(r"udp association ended \(([^)]*)\): (.*)$")

    def counters(self, m):
        return dict(kv.split("=") for kv in m.group(2).split() if "=" in kv)

    # ---- a real client

    @unittest.skipUnless(has_pysocks(), "python3-socks (PySocks) is not installed")
    def test_pysocks_ipv4_ipv6_and_name(self):
        v4, v6 = echo_both()
        self.addCleanup(v4.close)
        self.addCleanup(v6.close)
        self.start_proxy()
        dests = ["127.0.0.1:%d" % v4.port, "localhost:%d:rdns" % v4.port]
        if have_ipv6_loopback():
            dests.append("[::1]:%d" % v6.port)
        r = subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, "pysocks_udp_client.py"),
                            "127.0.0.1", str(self.port), *dests],
                           capture_output=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stderr.decode(errors="replace"))
        results = json.loads(r.stdout)
        self.assertEqual(len(results), len(dests))
        for res in results:
            self.assertEqual(res["got"], "echo:" + res["sent"])
        self.assertEqual(results[0]["from"], ["127.0.0.1", v4.port])
        self.assertIn(results[1]["from"], (["127.0.0.1", v4.port], ["::1", v4.port]))
        if have_ipv6_loopback():
            self.assertEqual(results[2]["from"], ["::1", v6.port])
        # Each association ended with its client's TCP connection.
        self.d.wait_log(r"(?s)(udp association ended \(control connection closed\).*){%d}"
                        % len(dests))

    # ---- raw sockets

    def test_reply_names_the_relay_socket(self):
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        self.assertEqual(relay[0], "127.0.0.1")
        self.assertNotEqual(relay[1], 0)
        # The port is really bound: binding it ourselves fails while the association lives.
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            self.assertRaises(OSError, probe.bind, relay)

    @unittest.skipUnless(have_ipv6_loopback(), "no IPv6 loopback")
    def test_ipv6_listener_replies_ipv6(self):
        echo = UdpEcho(socket.AF_INET6, "::1")
        self.addCleanup(echo.close)
        self.start_proxy(host="::1")
        s, u, relay = self.associate(client_port=None, client_host="0.0.0.0")
        self.assertEqual(relay[0], "::1")
        u.sendto(udp_header("::1", echo.port) + b"six", relay)
        data, src = u.recvfrom(65535)
        self.assertEqual(data, udp_header("::1", echo.port) + b"echo:six")

    def test_stranger_dropped(self):
        echo = UdpEcho()
        self.addCleanup(echo.close)
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        # The same address, another port than the one the client named.
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        other.bind(("127.0.0.1", 0))
        other.sendto(udp_header("127.0.0.1", echo.port) + b"port stranger", relay)
        # Another address altogether.
        far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(far.close)
        far.bind(("127.0.0.2", 0))
        far.sendto(udp_header("127.0.0.1", echo.port) + b"address stranger", relay)
        # The client itself gets through; a datagram sent after the strangers' arrives after
        # them, so once the echo has it, theirs would have been seen.
        u.sendto(udp_header("127.0.0.1", echo.port) + b"client", relay)
        data, _ = u.recvfrom(65535)
        self.assertEqual(data, udp_header("127.0.0.1", echo.port) + b"echo:client")
        self.assertEqual(echo.received(), [b"client"])
        s.close()
        c = self.counters(self.assoc_line())
        self.assertEqual(c["stranger"], "2")
        self.assertEqual(c["datagrams_up"], "1")

    def test_first_datagram_fixes_the_port_when_none_named(self):
        echo = UdpEcho()
        self.addCleanup(echo.close)
        self.start_proxy()
        s, u, relay = self.associate(client_port=0)
        u.sendto(udp_header("127.0.0.1", echo.port) + b"first", relay)
        self.assertEqual(u.recvfrom(65535)[0][-len(b"echo:first"):], b"echo:first")
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(other.close)
        other.bind(("127.0.0.1", 0))
        other.sendto(udp_header("127.0.0.1", echo.port) + b"second port", relay)
        u.sendto(udp_header("127.0.0.1", echo.port) + b"again", relay)
        self.assertEqual(u.recvfrom(65535)[0][-len(b"echo:again"):], b"echo:again")
        self.assertEqual(echo.received(), [b"first", b"again"])

    def test_malformed_headers_dropped_and_counted(self):
        echo = UdpEcho()
        self.addCleanup(echo.close)
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        good = udp_header("127.0.0.1", echo.port)
        bad = {
            "short": b"\x00\x00\x00",
            "short address": b"\x00\x00\x00\x01\x7f\x00",
            "rsv": b"\x00\x01" + good[2:] + b"x",
            "atyp": b"\x00\x00\x00\x02" + good[4:] + b"x",
            "empty name": b"\x00\x00\x00\x03\x00" + struct.pack("!H", echo.port) + b"x",
            "nul in name": b"\x00\x00\x00\x03\x03a\x00b" + struct.pack("!H", echo.port),
            "name past the end": b"\x00\x00\x00\x03\xc8ab",
            "port 0": good[:8] + b"\x00\x00x",
        }
        for payload in bad.values():
            u.sendto(payload, relay)
        u.sendto(udp_header("127.0.0.1", echo.port, frag=1) + b"fragment", relay)
        u.sendto(udp_header("127.0.0.1", echo.port, frag=0x81) + b"last fragment", relay)
        u.sendto(good + b"whole", relay)
        self.assertEqual(u.recvfrom(65535)[0], good + b"echo:whole")
        self.assertEqual(echo.received(), [b"whole"])
        s.close()
        c = self.counters(self.assoc_line())
        self.assertEqual(c["malformed"], str(len(bad)))
        self.assertEqual(c["fragment"], "2")

    def test_denied_destination_dropped(self):
        echo = UdpEcho()
        self.addCleanup(echo.close)
        denied = UdpEcho()
        self.addCleanup(denied.close)
        self.start_proxy("deny_dest = 127.0.0.1:%d, [::1]:%d" % (denied.port, denied.port))
        s, u, relay = self.associate(client_port=None)
        u.sendto(udp_header("127.0.0.1", denied.port) + b"no", relay)
        u.sendto(udp_header("localhost", denied.port) + b"no by name", relay)
        u.sendto(udp_header("127.0.0.1", echo.port) + b"yes", relay)
        self.assertEqual(u.recvfrom(65535)[0][-len(b"echo:yes"):], b"echo:yes")
        # The name is judged once resolved, on the pool: wait for it before ending.
        self.d.wait_log(r"datagram to localhost port %d dropped: no address allowed"
                        % denied.port)
        s.close()
        c = self.counters(self.assoc_line())
        self.assertGreaterEqual(int(c["denied"]), 2)
        self.assertEqual(denied.received(), [])

    def test_association_dies_with_its_tcp_connection(self):
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        s.close()
        m = self.assoc_line()
        self.assertEqual(m.group(1), "control connection closed")

        # Its port is free again: the socket is gone, not just ignored.
        def port_free():
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(relay)
                    return True
                except OSError:
                    return False
        wait_until(port_free, what="the relay port to be closed")

    def test_idle_timeout_ends_the_association(self):
        echo = UdpEcho()
        self.addCleanup(echo.close)
        self.start_proxy("udp_idle_timeout = 300ms")
        s, u, relay = self.associate(client_port=None)
        u.sendto(udp_header("127.0.0.1", echo.port) + b"once", relay)
        self.assertEqual(u.recvfrom(65535)[0][-len(b"echo:once"):], b"echo:once")
        m = self.assoc_line()
        self.assertEqual(m.group(1), "udp idle timeout")
        # And the control connection with it.
        s.settimeout(IO_TIMEOUT)
        try:
            self.assertEqual(s.recv(1), b"")
        except ConnectionResetError:
            pass

    def test_flood_to_names_is_bounded_and_counted(self):
        v4, v6 = echo_both()
        self.addCleanup(v4.close)
        self.addCleanup(v6.close)
        # A pool of 8 threads: the listener may have 2 lookups for datagrams in flight (see
        # test_socks5_udp_resolver.py), so udp_queue is the limit this flood meets.
        self.start_proxy("udp_queue = 2", env={"UV_THREADPOOL_SIZE": "8"})
        s, u, relay = self.associate(client_port=None)
        n = 300
        for i in range(n):
            u.sendto(udp_header("localhost", v4.port) + b"flood %d" % i, relay)
        # The association still serves (the kernel may drop what overflows the relay
        # socket's buffer too, so the datagram is sent again until one gets through).
        sends = [0]

        def after():
            sends[0] += 1
            u.sendto(udp_header("127.0.0.1", v4.port) + b"after", relay)
            return b"after" in v4.received()
        wait_until(after, interval=0.1, what="a datagram after the flood")
        s.close()
        c = self.counters(self.assoc_line())
        queued = int(c["queue"])
        self.assertGreater(queued, 0)
        self.assertEqual(c["resolver"], "0")
        flood = [d for d in v4.received() + v6.received() if d.startswith(b"flood")]
        self.assertLessEqual(len(flood), n - queued)
        # Handed on: at most udp_queue names at a time, so the drops are the rest (a name
        # still resolving when the association ended counts as handed on, not delivered).
        self.assertGreaterEqual(int(c["datagrams_up"]), len(flood) + v4.received().count(b"after"))
        self.assertLessEqual(int(c["datagrams_up"]) + queued, n + sends[0])

    def test_udp_off_and_association_limit(self):
        self.start_proxy("udp_associations = 1")
        s, u, relay = self.associate(client_port=None)
        s2 = self.control()
        s2.sendall(bytes([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
        rep, _, _ = read_reply(s2)
        self.assertEqual(rep, 1)
        self.d.wait_log(r"udp_associations \(1\) reached")
        # With the first gone, there is room again.
        s.close()
        self.assoc_line()
        s3 = self.control()
        s3.sendall(bytes([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
        self.assertEqual(read_reply(s3)[0], 0)

    def test_udp_off_by_default(self):
        self.proxy_host = "127.0.0.1"
        self.d = self.daemon("[socks]\nprotocol = tcp\naddress = 127.0.0.1:0\n"
                             "handler = socks5\nallow_dest = 127.0.0.0/8\n", wait=True)
        self.port = self.d.port("socks")
        s = self.control()
        s.sendall(bytes([5, 3, 0, 1, 0, 0, 0, 0, 0, 0]))
        self.assertEqual(read_reply(s)[0], 7)

    def test_udp_address_range(self):
        # A range of ports for firewalls: two associations get two of them.
        probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        probe.bind(("127.0.0.1", 0))
        base = probe.getsockname()[1]
        probe.close()
        self.start_proxy("udp_address = 127.0.0.1:%d-%d" % (base, base + 40))
        _, _, r1 = self.associate(client_port=None)
        _, _, r2 = self.associate(client_port=None)
        for r in (r1, r2):
            self.assertEqual(r[0], "127.0.0.1")
            self.assertTrue(base <= r[1] <= base + 40, r)
        self.assertNotEqual(r1[1], r2[1])


if __name__ == "__main__":
    unittest.main()
