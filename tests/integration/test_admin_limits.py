"""Issue 9 #6: admin clients that never send a request. 1,000 of them, against a master
whose descriptor limit is low, neither stop `berthctl status` nor a reload (the admin
holds at most 64 clients, the oldest idle one making room for a new one), and an idle
client is closed after the idle timeout (10 s)."""
import os
import resource
import select
import socket
import subprocess
import time
import unittest

from harness import (BUILD, IO_TIMEOUT, DaemonTestCase, stream_echo, wait_until)

BERTHCTL = os.path.join(BUILD, "berthctl")
ADMIN_CLIENTS_MAX = 64
IDLE_S = 10


def closed_by_peer(s):
    """True once the daemon closed s (EOF or reset), without blocking."""
    r, _, _ = select.select([s], [], [], 0)
    if not r:
        return False
    try:
        return s.recv(64) == b""
    except OSError:
        return True


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


@unittest.skipUnless(os.access(BERTHCTL, os.X_OK), "berthctl not built")
class IdleAdminClients(DaemonTestCase):

    def ctl(self, *argv):
        r = subprocess.run([BERTHCTL, "-s", self.d.admin, *argv], capture_output=True,
                           text=True, timeout=IO_TIMEOUT * 3)
        return r.returncode, r.stdout, r.stderr

    def setUp(self):
        super().setUp()
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if hard < 1200:
            self.skipTest("this test opens 1,000 sockets; RLIMIT_NOFILE hard limit is %d" % hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 1200), hard))
        self.d = self.daemon(f"""
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, workers=2)
        self.d.wait_serving()
        self.port = self.d.port("tcp")

    def test_thousand_idle_clients(self):
        # Without the cap, 1,000 clients would take 1,000 of these 200 descriptors and leave
        # none for a reload's socketpairs or a respawn.
        master = self.d.proc.pid
        resource.prlimit(master, resource.RLIMIT_NOFILE, (200, 200))
        base = fd_count(master)
        idle = []
        try:
            for _ in range(1000):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(self.d.admin)  # blocking: waits while the backlog is full
                idle.append(s)
            # The master holds at most the cap, whatever the clients do.
            self.assertLessEqual(fd_count(master), base + ADMIN_CLIENTS_MAX + 2)

            rc, out, err = self.ctl("status")
            self.assertEqual(rc, 0, err)
            self.assertIn("tcp", out)
            rc, out, err = self.ctl("reload")
            self.assertEqual(rc, 0, err)
            self.assertEqual(out, "reloaded\n")
            self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), b"hi"), b"hi")
            self.d.wait_log(r"admin: at the cap of %d clients" % ADMIN_CLIENTS_MAX)

            # Every one of them is closed: most at once to make room, the last ones by the
            # idle timeout.
            wait_until(lambda: all(closed_by_peer(s) or s.fileno() < 0 for s in idle),
                       timeout=IDLE_S * 4, what="every idle admin client closed")
        finally:
            for s in idle:
                s.close()
        self.assertLessEqual(fd_count(master), base + 2)
        self.assertEqual(self.d.stop(), 0)

    def test_idle_timeout(self):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.connect(self.d.admin)
            start = time.monotonic()
            s.settimeout(IDLE_S * 4)
            self.assertEqual(s.recv(64), b"")
            # Closed by the timeout, not at once (a lower bound: never flaky on a slow host).
            self.assertGreaterEqual(time.monotonic() - start, IDLE_S - 1)
        # A client that sends its request in time is answered as ever.
        rc, out, err = self.ctl("status")
        self.assertEqual(rc, 0, err)


if __name__ == "__main__":
    unittest.main()
