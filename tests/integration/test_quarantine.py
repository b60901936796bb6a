"""Issue 9 #4: a listener whose plugin keeps crashing workers is quarantined, so the other
listeners of the same daemon keep serving. The crash is logged with the plugin, the hook and
the listener; `berthctl status` shows the quarantine and why; `berthctl resume` and a reload
lift it. The plugin is tests/plugins/crashy.c: it echoes, and a line "crash" segfaults."""
import os
import re
import socket
import subprocess
import threading
import time
import unittest

from harness import (BUILD, IO_TIMEOUT, DaemonTestCase, built_test_plugin,
                     stream_echo, wait_until)

BERTHCTL = os.path.join(BUILD, "berthctl")
# Under ASan a segfault is reported and the worker exits with status 1.
CRASHED = r"crashed \((signal 11|exit status 1)\)"


class Driver(threading.Thread):
    """Every 20 ms: connect to the crashy listener, and once a worker answers a ping (so the
    connection was accepted), make it crash. A connection nobody accepts (the listener is
    quarantined) is left with only the harmless ping in it."""

    def __init__(self, port):
        super().__init__(daemon=True)
        self.port = port
        self.halt = threading.Event()
        self.crashes = 0

    def run(self):
        deadline = time.monotonic() + 120  # bounded, whatever happens
        while not self.halt.is_set() and time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"ping\n")
                    if s.recv(16) == b"ping\n":
                        s.sendall(b"crash\n")
                        s.settimeout(IO_TIMEOUT)
                        s.recv(16)
                        self.crashes += 1
            except OSError:
                pass
            self.halt.wait(0.02)


class Quarantine(DaemonTestCase):
    expected_reports = r"SEGV|AddressSanitizer|==\d+==|#\d+ 0x|SUMMARY"

    def ctl(self, *argv):
        r = subprocess.run([BERTHCTL, "-s", self.d.admin, *argv], capture_output=True,
                           text=True, timeout=IO_TIMEOUT * 3)
        return r.returncode, r.stdout, r.stderr

    def start(self, isolate=False):
        self.d = self.daemon(f"""
            [crash]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            crash_limit = 3/1m
            {"isolate = yes" if isolate else ""}

            [echo]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo
            """, workers=2, log_level="info")
        self.d.wait_serving()
        self.crash_port, self.echo_addr = self.d.port("crash"), self.d.bound("echo")

    def probe(self, i):
        msg = b"probe %d\n" % i
        return stream_echo(socket.AF_INET, self.echo_addr, msg) == msg

    def drive_until_quarantined(self):
        line = re.compile(r"listener \[crash\] quarantined: 3 crashes within 60 s")
        before = len(line.findall(self.d.log()))
        drv = Driver(self.crash_port)
        drv.start()
        try:
            wait_until(lambda: len(line.findall(self.d.log())) > before, timeout=90,
                       what="the quarantine")
            # The worker that crashed last comes back at once; then every probe answers,
            # while the driver goes on knocking at the quarantined listener.
            self.d.wait_serving()
            answered = sum(self.probe(i) for i in range(100))
            self.assertEqual(answered, 100)
        finally:
            drv.halt.set()
            drv.join()
        return drv

    def test_quarantine_resume_and_reload(self):
        self.start()
        self.drive_until_quarantined()
        log = self.d.log()
        self.assertRegex(log, r"worker \d of generation 1 " + CRASHED +
                         r" in crashy\.so handle\(\) serving \[crash\]")
        st = self.d.status()
        self.assertIn("3 crashes within 60 s", self.d.listener("crash", st)["quarantined"])
        self.assertIsNone(self.d.listener("echo", st)["quarantined"])
        rc, out, err = self.ctl("status")
        self.assertEqual(rc, 0, err)
        self.assertIn("[crash] is quarantined: 3 crashes within 60 s", out)

        # berthctl resume lifts it: the crashy listener answers again.
        rc, out, err = self.ctl("resume", "echo")
        self.assertEqual(rc, 1)
        self.assertIn("not quarantined", err)
        rc, out, err = self.ctl("resume", "crash")
        self.assertEqual((rc, out), (0, "listener [crash] resumed\n"), err)
        self.d.wait_log(r"listener \[crash\]: quarantine lifted by berthctl resume")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.crash_port), b"hi\n"),
                         b"hi\n")
        self.assertIsNone(self.d.listener("crash")["quarantined"])

        # Quarantined again, then a reload lifts it.
        self.drive_until_quarantined()
        self.assertTrue(self.d.reload())
        self.d.wait_serving()
        self.d.wait_log(r"listener \[crash\]: quarantine lifted by the reload")
        self.assertIsNone(self.d.listener("crash")["quarantined"])
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.crash_port), b"yo\n"),
                         b"yo\n")
        self.assertEqual(self.d.stop(), 0)

    def test_isolate_from_the_first_crash(self):
        # isolate = yes: the crashy listener has two workers of its own, the echo listener
        # the two shared ones, which never see a crash.
        self.start(isolate=True)
        before = set(self.d.worker_pids())
        self.assertEqual(len(before), 4)
        line = re.compile(r"listener \[crash\] quarantined")
        drv = Driver(self.crash_port)
        drv.start()
        try:
            answered = 0
            # Every probe answers, from the first crash to the quarantine (3 crashes).
            for i in range(3000):
                answered += self.probe(i)
                if line.search(self.d.log()):
                    break
            self.assertEqual(answered, i + 1)
            wait_until(lambda: line.search(self.d.log()), timeout=90, what="the quarantine")
            self.assertEqual(sum(self.probe(i) for i in range(50)), 50)
        finally:
            drv.halt.set()
            drv.join()
        self.assertGreaterEqual(drv.crashes, 1)
        self.d.wait_serving()
        after = set(self.d.worker_pids())
        # Only the isolated workers (3 and 4) crash and are replaced, each at once: one of
        # them may take every crash, so one or both pids changed; the shared two never.
        self.assertIn(len(before - after), (1, 2), (before, after))
        self.assertNotRegex(self.d.log(), r"worker [12] of generation 1 crashed")
        self.assertRegex(self.d.log(), r"worker [34] of generation 1 " + CRASHED +
                         r" in crashy\.so handle\(\) serving \[crash\]")
        self.assertRegex(self.d.log(), r"it served: crash;")
        self.assertEqual(self.d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
