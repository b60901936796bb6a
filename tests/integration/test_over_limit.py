"""Issue 12: over_limit = wait for per_source on a stream listener. A connection over its
source's per_source is accepted but not served (no setup(), nothing read: the whoami test
plugin greets on setup, so no greeting means not served) until a connection of that source
ends, in any worker; then it is served, with what it sent meanwhile. Other sources are not
held up by it, and over_limit = close (the default) still closes at once."""
import os
import socket
import unittest

from harness import (connect_from, IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin, check_config,
                     peer_closed, recv_until)


class OverLimitWait(DaemonTestCase):

    def setUp(self):
        super().setUp()
        plugin = built_test_plugin("whoami")
        self.d = self.daemon(f"""
            [w]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            per_source = 1
            over_limit = wait
            concurrency = 16

            [pw]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {plugin}
            proxy_protocol = v1
            proxy_from = 127.0.0.1
            per_source = 1
            over_limit = wait
            """, workers=2)
        self.d.wait_serving()
        self.port = self.d.port("w")
        self.proxy_port = self.d.port("pw")

    def conn(self, src, port=None):
        s = connect_from(src, port or self.port)
        self.addCleanup(s.close)
        return s

    def assert_unserved(self, s):
        s.setblocking(False)
        with self.assertRaises(BlockingIOError):
            s.recv(100)
        s.settimeout(IO_TIMEOUT)

    def test_waits_until_its_source_has_room(self):
        a = self.conn("127.0.0.2")
        self.assertTrue(recv_until(a).startswith(b"peer=127.0.0.2:"))
        b = self.conn("127.0.0.2")
        b.sendall(b"sent while waiting\n")
        self.d.wait_log(r"w 127\.0\.0\.2:\d+: over per_source = 1; waiting")
        # Another source is served meanwhile.
        c = self.conn("127.0.0.3")
        self.assertTrue(recv_until(c).startswith(b"peer=127.0.0.3:"))
        # Accepted, but holding no concurrency slot while it waits.
        self.d.wait_status(lambda st: self.d.listener("w", st)["accepted"] == 3, "3 accepted")
        self.assertEqual(self.d.listener("w")["active"], 2)
        self.assert_unserved(b)
        self.assertEqual(self.d.listener("w")["refused_source"], 0)
        # a ends: b is served, with what it sent while it waited.
        a.close()
        self.assertTrue(recv_until(b).startswith(b"peer=127.0.0.2:"))
        self.assertEqual(recv_until(b), b"sent while waiting\n")
        self.assertEqual(self.d.listener("w")["refused_source"], 0)
        self.assertIn("w: 127.0.0.2 has per_source = 1 connections open; holding (over_limit = "
                      "wait) more", self.d.log())

    def test_waiting_ones_are_served_one_at_a_time(self):
        a = self.conn("127.0.0.4")
        self.assertTrue(recv_until(a).startswith(b"peer="))
        waiting = [self.conn("127.0.0.4") for _ in range(3)]
        self.d.wait_status(lambda st: self.d.listener("w", st)["accepted"] == 4, "4 accepted")
        a.close()
        served = None
        # Exactly one of the three is served; the others still wait.
        for s in waiting:
            s.settimeout(0.05)
        while served is None:
            for s in waiting:
                try:
                    if recv_until(s, timeout=0.05).startswith(b"peer="):
                        served = s
                        break
                except socket.timeout:
                    pass
        for s in waiting:
            if s is not served:
                self.assert_unserved(s)
        served.close()
        self.d.wait_status(lambda st: self.d.listener("w", st)["active"] == 1, "the next one in")

    def test_behind_a_proxy_header(self):
        def via(client):
            s = self.conn("127.0.0.1", self.proxy_port)
            s.sendall(b"PROXY TCP4 %s 127.0.0.1 1000 80\r\nhi\n" % client.encode())
            return s
        a = via("198.51.100.1")
        self.assertTrue(recv_until(a).startswith(b"peer=198.51.100.1:1000 "))
        b = via("198.51.100.1")
        self.d.wait_log(r"pw 198\.51\.100\.1:1000: over per_source = 1; waiting")
        self.assert_unserved(b)
        a.close()
        self.assertTrue(recv_until(b).startswith(b"peer=198.51.100.1:1000 "))
        self.assertEqual(recv_until(b), b"hi\n")


class WaitQueueBound(DaemonTestCase):
    """At most `concurrency` conns wait per listener (in a worker); past that, closed. The
    waiting ones hold no slot, so other clients are still served."""

    def test_past_the_queue_closed_and_others_served(self):
        self.d = self.daemon(f"""
            [w]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("whoami")}
            per_source = 1
            over_limit = wait
            concurrency = 2
            """, workers=1)
        self.d.wait_serving()
        port = self.d.port("w")

        def conn(src):
            s = connect_from(src, port)
            self.addCleanup(s.close)
            return s
        a = conn("127.0.0.2")
        self.assertTrue(recv_until(a).startswith(b"peer=127.0.0.2:"))
        waiting = [conn("127.0.0.2") for _ in range(2)]
        self.d.wait_status(lambda st: self.d.listener("w", st)["accepted"] == 3, "3 accepted")
        self.assertTrue(peer_closed(conn("127.0.0.2")))
        self.d.wait_status(lambda st: self.d.listener("w", st)["refused_source"] == 1,
                           "the third extra one refused")
        # Two waiting and one served hold one slot of two: another client gets the other.
        b = conn("127.0.0.3")
        self.assertTrue(recv_until(b).startswith(b"peer=127.0.0.3:"))
        # And once a ends, a waiting one is served.
        a.close()
        b.close()
        served = None
        while served is None:
            for s in waiting:
                try:
                    if recv_until(s, timeout=0.05).startswith(b"peer=127.0.0.2:"):
                        served = s
                        break
                except socket.timeout:
                    pass
        for s in waiting:
            if s is not served:
                s.setblocking(False)
                with self.assertRaises(BlockingIOError):
                    s.recv(100)


class OverLimitConfig(DaemonTestCase):

    def check(self, body, protocol="tcp"):
        path = os.path.join(self.tmp, "c.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\n[l]\nprotocol = %s\n"
                    "address = 127.0.0.1:1\nhandler = echo\n%s" % (PLUGIN_DIR, protocol, body))
        return check_config(path)

    def test_keys(self):
        rc, out = self.check("per_source = 2\nover_limit = wait\n")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("per_source = 2\nover_limit = close\n")
        self.assertEqual(rc, 0, out)
        rc, out = self.check("per_source = 2\nover_limit = queue\n")
        self.assertIn("over_limit 'queue': must be close or wait", out)
        rc, out = self.check("over_limit = wait\n")
        self.assertIn("over_limit: needs per_source", out)
        rc, out = self.check("per_source = 2\nover_limit = wait\n", protocol="udp")
        self.assertIn("over_limit: a datagram over per_source cannot wait", out)


if __name__ == "__main__":
    unittest.main()
