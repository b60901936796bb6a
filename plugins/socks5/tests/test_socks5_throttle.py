"""Failed RFC 1929 passwords are throttled per source (issue 9 #6): a brute force from one
address is delayed, then refused, and logged once, while other sources authenticate as before.

ctest sets BERTHD, BERTH_PLUGIN_DIR and BERTH_BUILD.
"""
import os
import re
import socket
import time
import unittest

from clients import auth_msg, crypt_hash, recv_strict
from harness import IO_TIMEOUT, DaemonTestCase, wait_until

THROTTLED = re.compile(r"(\d+) failed password attempts from (\S+), throttled")


class ThrottleTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        users = os.path.join(self.tmp, "users")
        with open(users, "w") as f:
            f.write("alice:%s\n" % crypt_hash("right"))
        self.users = users

    def tearDown(self):
        for d in self._daemons:
            if d.proc and d.proc.poll() is None:
                d.stop()
        super().tearDown()

    def start(self, options=""):
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = 127.0.0.1:0\nhandler = socks5\n"
            "auth = password\nusers = %s\nallow_dest = 127.0.0.0/8\n%s\n"
            % (self.users, options), wait=True)
        self.port = self.d.port("socks")

    def attempt(self, password, source="127.0.0.1"):
        """One RFC 1929 attempt from `source`: (the auth status byte, seconds it took)."""
        with socket.socket() as s:
            s.settimeout(IO_TIMEOUT)
            s.bind((source, 0))
            s.connect(("127.0.0.1", self.port))
            s.sendall(b"\x05\x01\x02")
            self.assertEqual(recv_strict(s, 2), b"\x05\x02")
            t0 = time.monotonic()
            s.sendall(auth_msg("alice", password))
            reply = recv_strict(s, 2)
            took = time.monotonic() - t0
            self.assertEqual(reply[0], 1)
            return reply[1], took

    def info_lines(self, text):
        return [l for l in self.d.log().splitlines() if " info " in l and text in l]

    def test_brute_force_is_throttled_other_sources_are_not(self):
        self.start()  # the defaults: 5 failures a minute, then delays, blocked at 10, for 1m
        took = []
        for i in range(50):
            status, t = self.attempt("wrong%d" % i)
            self.assertEqual(status, 1, "attempt %d was let in" % i)
            took.append(t)
        # Failures 6 to 10 were answered late, on a timer (200 ms doubling); the rest refused.
        for i, want in zip(range(5, 10), (0.2, 0.4, 0.8, 1.6, 3.2)):
            self.assertGreaterEqual(took[i], want * 0.9, "failure %d not delayed" % (i + 1))
        wait_until(lambda: self.d.log().count("auth refused: source throttled") >= 40,
                   timeout=IO_TIMEOUT, what="40 refusals")
        log = self.d.log()
        self.assertEqual(log.count("outcome=auth failed"), 10, "passwords checked when blocked")
        # One line for the source, not one per attempt; the session lines of the throttled
        # attempts are at debug.
        lines = THROTTLED.findall(log)
        self.assertEqual(lines, [("5", "127.0.0.1")], log)
        self.assertLessEqual(len(self.info_lines("outcome=auth failed")), 5)
        self.assertEqual(self.info_lines("auth refused"), [])
        self.assertNotIn("wrong", log)

        # Another source is not throttled: its right password works at once.
        self.assertEqual(self.attempt("right", source="127.0.0.2")[0], 0)
        # The blocked source is refused even with the right password, until the block ends.
        self.assertEqual(self.attempt("right")[0], 1)

    def test_block_ends(self):
        self.start("auth_fail_limit = 2\nauth_fail_window = 1m\nauth_fail_block = 1s")
        for i in range(4):
            self.assertEqual(self.attempt("nope")[0], 1)
        t_blocked = time.monotonic()
        self.assertEqual(self.attempt("right")[0], 1)
        # Once the second has passed, the right password works again.
        wait_until(lambda: self.attempt("right")[0] == 0, timeout=IO_TIMEOUT, interval=0.2,
                   what="the block to end")
        self.assertGreaterEqual(time.monotonic() - t_blocked, 0.5)

    def test_limit_zero_turns_it_off(self):
        self.start("auth_fail_limit = 0")
        for i in range(15):
            status, t = self.attempt("nope")
            self.assertEqual(status, 1)
        self.assertEqual(self.attempt("right")[0], 0)
        self.assertEqual(THROTTLED.findall(self.d.log()), [])


if __name__ == "__main__":
    unittest.main()
