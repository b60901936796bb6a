"""Logging to a file, and SIGUSR1 starting a new one after rotation (master and workers)."""
import os
import pwd
import re
import shutil
import signal
import socket
import time
import threading
import unittest

from harness import (BERTHD, IO_TIMEOUT, PLUGIN_DIR, Berthd, DaemonTestCase,
                     stream_echo, wait_until)


class LogFile(DaemonTestCase):
    def test_sigusr1_reopens_the_rotated_file_in_every_process(self):
        path = os.path.join(self.tmp, "berthd.log")
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, daemon=f"log = {path}\n", workers=2, wait=True)
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
        bad = os.path.join(self.tmp, "no-such-dir", "berthd.log")
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, daemon=f"log = {bad}\n")
        self.assertEqual(d.proc.wait(10), 71)
        self.assertIn("cannot open log file " + bad, d.log())


def reachable_by(path, uid, gid):
    """True if every folder from / down to path lets uid/gid (not root) search it."""
    cur = os.sep
    for part in [p for p in os.path.abspath(path).split(os.sep) if p] + [None]:
        st = os.stat(cur)
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
        if part is None:
            return True
        cur = os.path.join(cur, part)


def uids(pid):
    """Real, effective, saved and filesystem uid of a process."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                return [int(x) for x in line.split()[1:]]
    raise AssertionError("no Uid line for %d" % pid)


@unittest.skipUnless(os.geteuid() == 0, "needs root to run workers as another user")
class AsUser(DaemonTestCase):
    """`user = nobody`: the workers run as nobody (in every build, ASan too), the master
    stays root, and a log file rotated away is reopened by the workers as that user."""

    def test_workers_run_as_user_and_reopen_the_log_as_that_user(self):
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.tmp, 0o755)
        if not reachable_by(self.tmp, nobody.pw_uid, nobody.pw_gid):
            self.skipTest("nobody cannot reach the temporary folder %s (TMPDIR)" % self.tmp)
        # The plugins where nobody can read them (the build tree may be under /root, 0700).
        plugins = os.path.join(self.tmp, "plugins")
        os.mkdir(plugins, 0o755)
        shutil.copy(os.path.join(PLUGIN_DIR, "echo.so"), plugins)
        path = os.path.join(self.tmp, "berthd.file.log")
        d = Berthd(self.tmp, f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, daemon=f"user = nobody\nlog = {path}\n", workers=2)
        self._daemons.append(d)
        d.set_daemon_key("plugin_dir", plugins)
        d.start()
        st = d.wait_serving()
        port = d.port("echo")
        self.assertEqual(uids(d.proc.pid), [0, 0, 0, 0])
        for w in st["workers"]:
            self.assertEqual(uids(w["pid"]), [nobody.pw_uid] * 4, "worker %d" % w["pid"])
        self.assertEqual(os.stat(path).st_uid, nobody.pw_uid, "log file not handed to user")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"x\n"), b"x\n")

        os.rename(path, path + ".1")
        d.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(path) and "reopened" in open(path).read(),
                   what="the master's line in the new file")
        self.assertEqual(os.stat(path).st_uid, nobody.pw_uid, "new log file not user's")
        self.assertEqual(d.stop(), 0)
        with open(path) as f:
            new = f.read()
        self.assertRegex(new, r"worker 1/gen 1: draining")
        self.assertRegex(new, r"worker 2/gen 1: draining")
        self.assertNotIn("cannot reopen", new)
        with open(path + ".1") as f:
            self.assertNotIn("draining", f.read())


class SyslogBerthd(Berthd):
    """berthd in a mount namespace whose /dev/log is the test's own datagram socket (there
    may be no syslog daemon, and the host's /dev is left alone): a tmpfs on /dev with the
    nodes berthd needs bound in from the real one."""

    def __init__(self, tmp, listeners, log_sock, **kw):
        super().__init__(tmp, listeners, **kw)
        self.log_sock = log_sock

    def start(self, wait=None):
        old = os.path.join(self.tmp, "olddev")
        os.mkdir(old)
        nodes = " ".join(n for n in ("null", "zero", "full", "random", "urandom")
                         if os.path.exists("/dev/" + n))
        script = "; ".join([
            "set -e",
            'mount --rbind /dev "$2"',
            "mount -t tmpfs -o mode=0755 berth-dev /dev",
            'for n in %s; do touch /dev/$n; mount --bind "$2/$n" /dev/$n; done' % nodes,
            'mkdir /dev/shm; mount --rbind "$2/shm" /dev/shm',
            'touch /dev/log; mount --bind "$3" /dev/log',
            'exec "$0" -c "$1"'])
        return self.spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           BERTHD, self.conf, old, self.log_sock], wait)


@unittest.skipUnless(os.geteuid() == 0, "needs root for a mount namespace")
class Syslog(DaemonTestCase):

    def test_log_syslog_sends_daemon_facility_lines(self):
        sock_path = os.path.join(self.tmp, "syslog.sock")
        rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(rx.close)
        rx.bind(sock_path)
        # Read from the start, in a thread: a unix datagram socket queues only
        # net.unix.max_dgram_qlen (10) messages, and syslog(3) blocks the sender on a full
        # queue, so a reader that waited for the daemon to serve first would deadlock it.
        got, lock, stop = [], threading.Lock(), threading.Event()
        rx.settimeout(0.2)

        def drain():
            while not stop.is_set():
                try:
                    m = rx.recv(65536).decode("utf-8", "replace")
                except socket.timeout:
                    continue
                except OSError:
                    return
                with lock:
                    got.append(m)
        reader = threading.Thread(target=drain, daemon=True)
        reader.start()
        self.addCleanup(reader.join, IO_TIMEOUT)
        self.addCleanup(stop.set)
        d = SyslogBerthd(self.tmp, f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, sock_path, daemon="log = syslog\n")
        self._daemons.append(d)
        d.start()
        d.wait_serving()
        port = d.port("echo")

        def until(pred, what):
            deadline = time.monotonic() + IO_TIMEOUT
            while True:
                with lock:
                    if any(pred(m) for m in got):
                        return
                    seen = list(got)
                if time.monotonic() > deadline:
                    self.fail("no syslog message %s; got %r\n%s" % (what, seen, d.log()))
                time.sleep(0.02)
        # daemon.info is <30>, daemon.debug <31>: the master's ready line, a worker's line.
        until(lambda m: m.startswith("<30>") and "ready: generation 1" in m, "ready")
        d.signal(signal.SIGTERM)
        until(lambda m: m.startswith("<31>") and "worker 1/gen 1: draining" in m,
              "from the worker")
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)
        self.assertTrue(all(re.match(r"<\d+>", m) and "berthd" in m for m in got), got)
        # Nothing of it went to stderr (the captured output), but what sanitizers write.
        self.assertNotIn("ready: generation 1", d.log())


if __name__ == "__main__":
    unittest.main()
