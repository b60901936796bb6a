"""systemd's notify protocol (Type=notify), spoken to a fake NOTIFY_SOCKET.

berthd must say READY=1 once it serves, RELOADING=1 with MONOTONIC_USEC then READY=1
around a reload, and STOPPING=1 when told to stop, with STATUS= lines a person can read.
"""
import os
import signal
import socket
import time
import unittest

from harness import DaemonTestCase

WAIT = 10.0


class Notify(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.path = os.path.join(self.tmp, "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.sock.settimeout(WAIT)

    def tearDown(self):
        self.sock.close()
        super().tearDown()

    def messages_until(self, key):
        """Every datagram received until one holds `key`; their fields in order."""
        seen = []
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            data = self.sock.recv(4096).decode()
            fields = dict(line.split("=", 1) for line in data.splitlines() if "=" in line)
            seen.append(fields)
            if key in fields:
                return seen
        raise AssertionError("no %s in %r" % (key, seen))

    def test_ready_reloading_stopping(self):
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, env={"NOTIFY_SOCKET": self.path}, wait=True)
        ready = self.messages_until("READY")
        self.assertEqual(ready[-1]["READY"], "1")
        status = self.messages_until("STATUS")[-1]["STATUS"]
        self.assertIn("generation 1", status)

        before = time.clock_gettime(time.CLOCK_MONOTONIC) * 1e6
        d.signal(signal.SIGHUP)
        reloading = self.messages_until("RELOADING")[-1]
        self.assertEqual(reloading["RELOADING"], "1")
        usec = int(reloading["MONOTONIC_USEC"])
        self.assertGreaterEqual(usec, before - 1e6)
        self.assertEqual(self.messages_until("READY")[-1]["READY"], "1")
        self.assertIn("generation 2", self.messages_until("STATUS")[-1]["STATUS"])

        d.signal(signal.SIGTERM)
        self.assertEqual(self.messages_until("STOPPING")[-1]["STOPPING"], "1")
        self.assertEqual(d.proc.wait(WAIT), 0)


if __name__ == "__main__":
    unittest.main()
