"""Issue 9 #5: a config of many wrong lines costs a short report, not the master.

A reload onto a config with 100,000 bad lines used to keep the master busy for half a minute
(every error kept, joined with a quadratic strcat) while admin did not answer. Now the parse
is linear, only the first 100 errors are kept and the rest counted: the reload fails quickly
with a capped report, `berthctl status` answers meanwhile, and the old generation serves on.
"""
import os
import re
import signal
import socket
import subprocess
import time
import unittest

from harness import BERTHD, BUILD, IO_TIMEOUT, DaemonTestCase, stream_echo

BERTHCTL = os.path.join(BUILD, "berthctl")
BAD_LINES = 100000
# Generous: guards against the master being stuck for long, not a performance check.
ANSWER_WITHIN = 10.0


class ConfigLimits(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(f"""
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """)
        self.d.wait_serving()
        self.port = self.d.port("tcp")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), b"a\n"), b"a\n")

    def break_config(self):
        with open(self.d.conf, "a") as f:
            f.write("garbage\n" * BAD_LINES)
        with open(self.d.conf) as f:
            return sum(1 for _ in f) - BAD_LINES  # lines before the bad ones

    @unittest.skipUnless(os.access(BERTHCTL, os.X_OK), "berthctl not built")
    def test_reload_onto_100k_bad_lines(self):
        good_lines = self.break_config()
        before = self.d.status()
        self.d.signal(signal.SIGHUP)
        start = time.monotonic()
        r = subprocess.run([BERTHCTL, "-s", self.d.admin, "status"], capture_output=True,
                           text=True, timeout=IO_TIMEOUT * 3)
        took = time.monotonic() - start
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertLess(took, ANSWER_WITHIN, "berthctl status took %.1f s" % took)

        st = self.d.wait_status(lambda s: s["reloads_failed"] > before["reloads_failed"],
                                "the reload to fail", ANSWER_WITHIN)
        self.assertEqual(st["generation"], before["generation"])
        self.assertEqual(st["reloads_ok"], before["reloads_ok"])

        self.d.wait_log(r"\.\.\. and %d more errors" % (BAD_LINES - 100))
        log = self.d.log()
        conf = re.escape(self.d.conf)
        reported = re.findall(r"%s:(\d+): expected 'key = value'" % conf, log)
        # The first 100, in line order, and not one more.
        self.assertEqual([int(n) for n in reported],
                         list(range(good_lines + 1, good_lines + 101)))
        self.assertEqual(len(re.findall(r"more errors", log)), 1)

        # The old generation serves on.
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), b"b\n"), b"b\n")
        self.assertEqual(self.d.stop(), 0)

    def test_check_refuses_a_file_over_16_mib(self):
        big = os.path.join(self.tmp, "big.conf")
        with open(big, "w") as f:
            f.write("[daemon]\n")
            line = ";" * 63 + "\n"
            f.write(line * (16 * 1024 * 1024 // len(line) + 1))
        size = os.path.getsize(big)
        r = subprocess.run([BERTHD, "-t", "-c", big],
                           capture_output=True, text=True, timeout=IO_TIMEOUT * 3)
        self.assertNotEqual(r.returncode, 0)
        self.assertEqual(r.stderr.splitlines(), [
            "%s:0: %d bytes, more than the 16 MiB a config file may hold" % (big, size),
            "%s: 1 error" % big])
        self.assertEqual(self.d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
