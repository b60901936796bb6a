"""The socks5 limits a hostile client meets (issue 13): bind_max BINDs at once per listener,
refused with reply 1 and given back when a BIND ends; the wrong peers knocking on a BIND port
logged at most once a second, with the count kept quiet; UDP replies only from destinations
the client has sent to. Every wait is on an event; the one sleep only opens the next second
of the log limit."""
import re
import socket
import struct
import time
import unittest

import test_socks5_bind as tb
from clients import read_reply_text
import test_socks5_udp as tu
from harness import IO_TIMEOUT, DaemonTestCase


class BindLimits(DaemonTestCase):
    # The BIND tests' helpers, not their tests (those run from their own file).
    start_proxy = tb.SocksBindTest.start_proxy
    client = tb.SocksBindTest.client
    peer_from = tb.SocksBindTest.peer_from
    refused_from = tb.SocksBindTest.refused_from

    def test_bind_max_refuses_then_gives_back(self):
        self.start_proxy("bind = on\nbind_max = 1\n")
        first = self.client()
        first.sendall(tb.bind_request("127.0.0.1", 0))
        rep, host, port = read_reply_text(first)
        self.assertEqual(rep, 0)
        second = self.client()
        second.sendall(tb.bind_request("127.0.0.1", 0))
        self.assertEqual(read_reply_text(second)[0], 1)
        self.d.wait_log(r"bind: bind_max \(1\) reached, request refused")
        # The first one ends (its client goes): its slot is free again.
        first.close()
        def bind_ok():
            c = self.client()
            c.sendall(tb.bind_request("127.0.0.1", 0))
            return read_reply_text(c)[0] == 0
        deadline = time.monotonic() + 30
        while not bind_ok():
            self.assertLess(time.monotonic(), deadline, "bind_max slot never given back")
            time.sleep(0.05)

    def test_refused_peers_logged_once_a_second(self):
        self.start_proxy()
        s = self.client()
        s.sendall(tb.bind_request("127.0.0.2", 0))
        rep, host, port = read_reply_text(s)
        self.assertEqual(rep, 0)
        knocks = 30
        for _ in range(knocks):
            self.assertTrue(self.refused_from("127.0.0.1", (host, port)))
        time.sleep(1.1)
        self.assertTrue(self.refused_from("127.0.0.1", (host, port)))
        self.d.wait_log(r"\d+ more refused since the last such line")
        log = self.d.log()
        lines = re.findall(r"bind: refused a connection from 127\.0\.0\.1:\d+[^\n]*", log)
        quiet = sum(int(m) for m in re.findall(r"(\d+) more refused since the last such line", log))
        self.assertEqual(len(lines) + quiet, knocks + 1)
        self.assertLess(len(lines), knocks)


class UdpLimits(DaemonTestCase):
    # The UDP tests' helpers, not their tests.
    start_proxy = tu.SocksUdpTest.start_proxy
    control = tu.SocksUdpTest.control
    associate = tu.SocksUdpTest.associate
    assoc_line = tu.SocksUdpTest.assoc_line
    counters = tu.SocksUdpTest.counters

    def udp(self, host="127.0.0.1"):
        d = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        d.bind((host, 0))
        d.settimeout(IO_TIMEOUT)
        self.addCleanup(d.close)
        return d

    def test_replies_only_from_destinations_the_client_sent_to(self):
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        dest = self.udp()
        dport = dest.getsockname()[1]
        u.sendto(tu.udp_header("127.0.0.1", dport) + b"hello", relay)
        data, out = dest.recvfrom(65535)
        self.assertEqual(data, b"hello")
        # Allowed by allow_dest (127.0.0.0/8), but never sent to: another port, another
        # address. Sent before the real reply, so had they passed they would come first.
        self.udp().sendto(b"other port", out)
        self.udp("127.0.0.2").sendto(b"other address", out)
        dest.sendto(b"reply", out)
        data, _ = u.recvfrom(65535)
        self.assertEqual(data, tu.udp_header("127.0.0.1", dport) + b"reply")
        s.close()
        c = self.counters(self.assoc_line())
        self.assertEqual(c["unasked"], "2")
        self.assertEqual(c["datagrams_down"], "1")

    def test_a_name_resolved_counts_as_sent_to(self):
        self.start_proxy()
        s, u, relay = self.associate(client_port=None)
        dest = self.udp()
        dport = dest.getsockname()[1]
        name = b"localhost"
        head = b"\x00\x00\x00\x03" + bytes([len(name)]) + name + struct.pack("!H", dport)
        u.sendto(head + b"by name", relay)
        data, out = dest.recvfrom(65535)
        self.assertEqual(data, b"by name")
        dest.sendto(b"reply", out)
        data, _ = u.recvfrom(65535)
        self.assertEqual(data, tu.udp_header("127.0.0.1", dport) + b"reply")


if __name__ == "__main__":
    unittest.main()
