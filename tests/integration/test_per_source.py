"""Issue 12: per-source limits across all workers (per_source, rate/burst), from several
loopback source addresses (the client socket bound to 127.0.0.2, 127.0.0.3, ...), directly and
behind a PROXY header; counted as refused_source; logged once a minute per source; held
across a reload (the table lives in the master's shared memory)."""
import os
import socket
import time
import unittest

from harness import (connect_from, IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin, check_config,
                     peer_closed, recv_until)


class PerSource(DaemonTestCase):

    def setUp(self):
        super().setUp()
        plugin = built_test_plugin("whoami")
        self.d = self.daemon(f"""
            [conc]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            per_source = 2

            [rate]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            rate = 1/s
            burst = 3

            [proxied]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = v1
            proxy_from = 127.0.0.1
            per_source = 1
            """, workers=2)
        self.d.wait_serving()
        self.conc_port = self.d.port("conc")
        self.rate_port = self.d.port("rate")
        self.proxy_port = self.d.port("proxied")

    def served(self, src, port):
        """Connect from src; the open socket if berth served it (its greeting came), else
        None once berth closed it."""
        s = connect_from(src, port)
        self.addCleanup(s.close)
        line = recv_until(s)
        if line.startswith(b"peer="):
            return s
        self.assertEqual(line, b"", "neither served nor closed")
        return None

    def counter(self, name, key):
        return self.d.listener(name)[key]

    def test_per_source_holds_across_workers(self):
        held = [self.served("127.0.0.2", self.conc_port) for _ in range(2)]
        self.assertTrue(all(held))
        # Both workers serve this listener; the third one is refused whichever takes it.
        for _ in range(6):
            self.assertIsNone(self.served("127.0.0.2", self.conc_port))
        self.d.wait_status(lambda st: self.d.listener("conc", st)["refused_source"] == 6,
                           "6 refusals counted")
        # Another source is not limited by that one.
        others = [self.served("127.0.0.3", self.conc_port) for _ in range(2)]
        self.assertTrue(all(others))
        self.assertIsNone(self.served("127.0.0.3", self.conc_port))
        # One closes: room for one more, and only one.
        held[0].close()
        self.d.wait_status(lambda st: self.d.listener("conc", st)["active"] == 3,
                           "the closed one to end")
        self.assertIsNotNone(self.served("127.0.0.2", self.conc_port))
        self.assertIsNone(self.served("127.0.0.2", self.conc_port))
        # Logged once per source (within the minute), not once per refusal.
        log = self.d.log()
        self.assertEqual(log.count("conc: 127.0.0.2 has per_source = 2 connections open"), 1, log)
        self.assertEqual(log.count("conc: 127.0.0.3 has per_source = 2 connections open"), 1, log)

    def test_rate_and_burst(self):
        start = time.monotonic()
        ok = refused = 0
        for _ in range(12):
            s = self.served("127.0.0.4", self.rate_port)
            if s:
                ok += 1
                s.close()
            else:
                refused += 1
        elapsed = time.monotonic() - start
        # The burst of 3, plus at most one token per second that went by.
        self.assertGreaterEqual(ok, 3)
        self.assertLessEqual(ok, 3 + int(elapsed) + 1)
        self.assertGreater(refused, 0)
        self.d.wait_status(lambda st: self.d.listener("rate", st)["refused_source"] == refused,
                           "refusals counted")
        # Another source has its own bucket.
        self.assertIsNotNone(self.served("127.0.0.5", self.rate_port))
        self.d.wait_log(r"rate: 127\.0\.0\.4 connects faster than rate = 1/s \(burst 3\)")

    def test_limits_apply_to_the_proxy_header_address(self):
        def via(client):
            s = connect_from("127.0.0.1", self.proxy_port)
            self.addCleanup(s.close)
            s.sendall(b"PROXY TCP4 %s 127.0.0.1 1000 80\r\n" % client.encode())
            return s
        a = via("198.51.100.1")
        self.assertTrue(recv_until(a).startswith(b"peer=198.51.100.1:1000 "))
        # The same client again through the same balancer: over per_source = 1.
        self.assertTrue(peer_closed(via("198.51.100.1")))
        # Another client through the same balancer: its own count.
        self.assertTrue(recv_until(via("198.51.100.2")).startswith(b"peer=198.51.100.2:1000 "))
        self.d.wait_status(lambda st: self.d.listener("proxied", st)["refused_source"] == 1,
                           "one refusal")

    def test_counts_survive_a_reload(self):
        held = [self.served("127.0.0.6", self.conc_port) for _ in range(2)]
        self.assertTrue(all(held))
        self.d.reload()
        # The new generation's workers see the connections the old one still serves.
        self.assertIsNone(self.served("127.0.0.6", self.conc_port))
        for s in held:
            s.close()
        self.d.wait_status(lambda st: self.d.listener("conc", st)["active"] == 0,
                           "the old generation's connections to end")
        self.assertIsNotNone(self.served("127.0.0.6", self.conc_port))


class PerSourceConfig(DaemonTestCase):

    def check(self, body, protocol="tcp"):
        path = os.path.join(self.tmp, "c.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\n[l]\nprotocol = %s\naddress = 127.0.0.1:1\n"
                    "handler = echo\n%s" % (PLUGIN_DIR, protocol, body))
        return check_config(path)

    def test_keys(self):
        rc, out = self.check("per_source = 4\nrate = 10/s\nburst = 20\nper_source_prefix6 = 56\n")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("rate = 10\n")
        self.assertIn("must be N/s", out)
        rc, out = self.check("rate = 0/s\n")
        self.assertIn("must be N/s", out)
        rc, out = self.check("burst = 5\n")
        self.assertIn("burst: needs rate", out)
        rc, out = self.check("per_source_prefix6 = 48\n")
        self.assertIn("per_source_prefix6: needs per_source or rate", out)
        rc, out = self.check("per_source = 2\n", protocol="udp")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("per_source = 2\n", protocol="unixgram")
        self.assertIn("per_source: only tcp and udp listeners (and unix ones with "
                      "proxy_protocol) have per-source limits", out)
        path = os.path.join(self.tmp, "d.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nper_source_table = 0\nper_source_table_full = shut\n")
        rc, out = check_config(path)
        self.assertIn("per_source_table '0': must be 1..16777216", out)
        self.assertIn("per_source_table_full 'shut': must be open or closed", out)


def udp_from(src):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(IO_TIMEOUT)
    s.bind((src, 0))
    return s


class Datagrams(DaemonTestCase):
    """per_source on a udp listener counts a source's datagrams in flight (the good plugin's
    "sleep MS" holds one for MS ms); rate/burst count its datagrams. Over either, a datagram
    is dropped unanswered and counted as refused_source."""

    def setUp(self):
        super().setUp()
        plugin = built_test_plugin("good")
        self.d = self.daemon(f"""
            [conc]
            protocol = udp
            address = 127.0.0.1:0
            handler = {plugin}
            per_source = 2

            [rate]
            protocol = udp
            address = 127.0.0.1:0
            handler = {plugin}
            rate = 1/s
            burst = 3
            """, workers=2)
        self.d.wait_serving()
        self.conc_port = self.d.port("conc")
        self.rate_port = self.d.port("rate")

    def test_per_source_counts_datagrams_in_flight(self):
        a = udp_from("127.0.0.2")
        self.addCleanup(a.close)
        for _ in range(2):
            a.sendto(b"sleep 4000", ("127.0.0.1", self.conc_port))
        self.d.wait_status(lambda st: self.d.listener("conc", st)["active"] == 2,
                           "two datagrams held")
        a.sendto(b"dropped", ("127.0.0.1", self.conc_port))
        self.d.wait_status(lambda st: self.d.listener("conc", st)["refused_source"] == 1,
                           "the third one refused")
        # Another source is not held back by that one.
        b = udp_from("127.0.0.3")
        self.addCleanup(b.close)
        b.sendto(b"hello", ("127.0.0.1", self.conc_port))
        self.assertEqual(b.recvfrom(100)[0], b"HELLO\n")
        # The held ones end (answered); the source may send again, and its refused datagram
        # was never answered.
        self.assertEqual(a.recvfrom(100)[0], b"slept\n")
        self.assertEqual(a.recvfrom(100)[0], b"slept\n")
        self.d.wait_status(lambda st: self.d.listener("conc", st)["active"] == 0,
                           "the held ones to end")
        a.sendto(b"again", ("127.0.0.1", self.conc_port))
        self.assertEqual(a.recvfrom(100)[0], b"AGAIN\n")
        self.d.wait_log(r"conc: 127\.0\.0\.2 has per_source = 2")

    def test_rate_and_burst_per_source(self):
        a = udp_from("127.0.0.2")
        self.addCleanup(a.close)
        start = time.monotonic()
        for i in range(10):
            a.sendto(b"n%d" % i, ("127.0.0.1", self.rate_port))
        self.d.wait_status(lambda st: (self.d.listener("rate", st)["refused_source"] +
                                       self.d.listener("rate", st)["accepted"]) == 10,
                           "all 10 judged")
        elapsed = time.monotonic() - start
        st = self.d.listener("rate")
        answered = [a.recvfrom(100)[0] for _ in range(st["accepted"])]
        self.assertTrue(all(x.startswith(b"N") for x in answered), answered)
        self.assertGreaterEqual(len(answered), 3)
        self.assertLessEqual(len(answered), 3 + int(elapsed) + 1)
        self.assertEqual(st["refused_source"], 10 - len(answered))
        # Another source has its own bucket.
        b = udp_from("127.0.0.3")
        self.addCleanup(b.close)
        b.sendto(b"x", ("127.0.0.1", self.rate_port))
        self.assertEqual(b.recvfrom(100)[0], b"X\n")


class FullTable(DaemonTestCase):
    """per_source_table = 1: one source held fills it; the next source is let in (open, the
    default) or refused (closed), and the log says which, once a minute, not per connection."""

    def start(self, mode):
        plugin = built_test_plugin("whoami")
        extra = "per_source_table = 1\n"
        if mode:
            extra += f"per_source_table_full = {mode}\n"
        self.d = self.daemon(f"""
            [conc]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            per_source = 3
            """, daemon=extra, workers=2)
        self.d.wait_serving()
        port = self.d.port("conc")
        return port

    def served(self, src, port):
        s = connect_from(src, port)
        self.addCleanup(s.close)
        line = recv_until(s)
        if line.startswith(b"peer="):
            return s
        self.assertEqual(line, b"", "neither served nor closed")
        return None

    def test_closed_refuses_new_sources(self):
        port = self.start("closed")
        held = self.served("127.0.0.2", port)
        self.assertIsNotNone(held)
        for _ in range(3):
            self.assertIsNone(self.served("127.0.0.3", port))
        self.d.wait_status(lambda st: self.d.listener("conc", st)["refused_source"] == 3,
                           "3 refusals counted")
        # The source that holds the entry still has its own limit of 3.
        more = [self.served("127.0.0.2", port) for _ in range(2)]
        self.assertTrue(all(more))
        self.assertIsNone(self.served("127.0.0.2", port))
        log = self.d.log()
        self.assertEqual(log.count("per-source table is full"), 1, log)
        self.assertIn("conc: the per-source table is full (per_source_table = 1): 127.0.0.3 and "
                      "other new sources are refused (per_source_table_full = closed", log)
        # Once the held source lets go, the entry is free for the other one.
        for s in [held] + more:
            s.close()
        self.d.wait_status(lambda st: self.d.listener("conc", st)["active"] == 0,
                           "the closed ones to end")
        self.assertIsNotNone(self.served("127.0.0.3", port))

    def test_open_lets_new_sources_in_unlimited(self):
        port = self.start(None)
        self.assertIsNotNone(self.served("127.0.0.2", port))
        # No room for 127.0.0.3: let in, and past its per_source = 3 too.
        others = [self.served("127.0.0.3", port) for _ in range(5)]
        self.assertTrue(all(others))
        self.assertEqual(self.d.listener("conc")["refused_source"], 0)
        log = self.d.log()
        self.assertEqual(log.count("per-source table is full"), 1, log)
        self.assertIn("127.0.0.3 and other new sources are let in without a limit "
                      "(per_source_table_full = open", log)


if __name__ == "__main__":
    unittest.main()
