"""Issue 19: a listener on port 0 binds a port the kernel picks. berthd logs it, `status
--json` shows it as `bound` (and the table as well), clients reach the echo plugin on it,
and a reload that keeps the listener keeps the port."""
import os
import socket
import subprocess
import unittest

from harness import (BUILD, IO_TIMEOUT, DaemonTestCase, have_ipv6_loopback, split_bound,
                     stream_echo, udp_roundtrip)

BERTHCTL = os.path.join(BUILD, "berthctl")


class PortZero(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.v6 = have_ipv6_loopback()
        listeners = """
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo

            [any]
            protocol = tcp
            address = *:0
            handler = echo
            """
        if self.v6:
            listeners += """
            [tcp6]
            protocol = tcp
            address = [::1]:0
            handler = echo
            """
        self.d = self.daemon(listeners, workers=2)
        self.d.wait_serving()

    def bound(self, st=None):
        st = st or self.d.status()
        return {l["name"]: l["bound"] for l in st["listeners"]}

    def talk(self, bound):
        host, port = split_bound(bound["tcp"])
        self.assertEqual(host, "127.0.0.1")
        self.assertNotEqual(port, 0)
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"zero"), b"zero")
        host, uport = split_bound(bound["udp"])
        self.assertNotEqual(uport, 0)
        self.assertEqual(udp_roundtrip(("127.0.0.1", uport), b"dgram"), b"dgram")
        host, aport = split_bound(bound["any"])
        self.assertEqual(host, "0.0.0.0")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", aport), b"any"), b"any")
        if self.v6:
            host, port6 = split_bound(bound["tcp6"])
            self.assertEqual(host, "::1")
            self.assertEqual(stream_echo(socket.AF_INET6, ("::1", port6), b"six"), b"six")

    def test_bound_port_serves_and_survives_reload(self):
        b = self.bound()
        for name in b:
            self.d.wait_log(r"listener %s bound to %s$" % (name, b[name].replace("[", r"\[")
                                                          .replace("]", r"\]")))
        self.talk(b)
        st = self.d.status()
        self.assertEqual(self.d.listener("tcp", st)["address"], "127.0.0.1:0")

        # A reload keeps every listener, so every port.
        self.assertTrue(self.d.reload())
        self.d.wait_serving()
        self.assertEqual(self.bound(), b)
        self.talk(b)

        # A renamed section on the same configured address is the same socket, same port.
        with open(self.d.conf) as f:
            text = f.read()
        with open(self.d.conf, "w") as f:
            f.write(text.replace("[tcp]\n", "[tcp-renamed]\n"))
        self.assertTrue(self.d.reload())
        self.d.wait_serving()
        after = self.bound()
        self.assertEqual(after["tcp-renamed"], b["tcp"])

    @unittest.skipUnless(os.access(BERTHCTL, os.X_OK), "berthctl not built")
    def test_table_shows_bound_port(self):
        b = self.bound()
        r = subprocess.run([BERTHCTL, "-s", self.d.admin, "status"], capture_output=True,
                           text=True, timeout=IO_TIMEOUT * 3)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("127.0.0.1:0 (%s)" % b["tcp"], r.stdout)
        self.assertIn("127.0.0.1:0 (%s)" % b["udp"], r.stdout)


if __name__ == "__main__":
    unittest.main()
