"""Logging to a file, and SIGUSR1 starting a new one after rotation (master and workers)."""
import os
import signal
import unittest

from harness import DaemonTestCase, free_port, tcp_ready, wait_until


class LogFile(DaemonTestCase):
    def test_sigusr1_reopens_the_rotated_file_in_every_process(self):
        port = free_port()
        path = os.path.join(self.tmp, "berthd.log")
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:{port}
            handler = echo
            """, daemon=f"log = {path}\n", workers=2,
            wait=lambda: tcp_ready("127.0.0.1", port))
        wait_until(lambda: os.path.exists(path) and "ready: generation 1" in open(path).read(),
                   what="the ready line in the log file")
        os.rename(path, path + ".1")
        d.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(path) and "reopened" in open(path).read(),
                   what="the master's line in the new file")
        # Workers reopened too: their drain lines (debug) land in the new file.
        self.assertEqual(d.stop(), 0)
        new = open(path).read()
        self.assertRegex(new, r"worker 1/gen 1: draining")
        self.assertRegex(new, r"worker 2/gen 1: draining")
        self.assertNotIn("draining", open(path + ".1").read())

    def test_log_file_that_cannot_be_opened_is_a_clear_error(self):
        port = free_port()
        bad = os.path.join(self.tmp, "no-such-dir", "berthd.log")
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:{port}
            handler = echo
            """, daemon=f"log = {bad}\n")
        self.assertEqual(d.proc.wait(10), 71)
        self.assertIn("cannot open log file " + bad, d.log())


if __name__ == "__main__":
    unittest.main()
