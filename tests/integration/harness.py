"""Start the real berthd on loopback for integration tests.

ctest sets BERTHD (the daemon), BERTH_PLUGIN_DIR (the build's plugin folder) and
BERTH_BUILD (the build tree). Every test gets its own temporary folder, ports picked
free, and a daemon that is stopped (SIGTERM, then SIGKILL) when the test ends.
"""
import os
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest

BERTHD = os.environ.get("BERTHD", "build/berthd")
PLUGIN_DIR = os.environ.get("BERTH_PLUGIN_DIR", "build/plugins")
BUILD = os.environ.get("BERTH_BUILD", "build")
SRC = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# Generous bounds: these guard against hangs, they are not performance checks.
START_TIMEOUT = 20.0
IO_TIMEOUT = 10.0


def free_port(kind=socket.SOCK_STREAM, family=socket.AF_INET):
    """A port the kernel just handed out on loopback (free for both tcp and udp checks)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until(pred, timeout=START_TIMEOUT, interval=0.02, what="condition"):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(interval)


def tcp_ready(host, port):
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Berthd:
    """One berthd process on a config written from `daemon` and `listeners` text."""

    def __init__(self, tmp, listeners, daemon="", workers=1, log_level="debug", env=None):
        self.tmp = tmp
        self.conf = os.path.join(tmp, "berth.conf")
        self.log_path = os.path.join(tmp, "berthd.log")
        self.admin = os.path.join(tmp, "admin.sock")
        self.proc = None
        self.env = dict(os.environ, **(env or {}))
        self.write_config(listeners, daemon, workers, log_level)

    def write_config(self, listeners, daemon="", workers=1, log_level="debug"):
        text = textwrap.dedent(f"""\
            [daemon]
            workers = {workers}
            plugin_dir = {PLUGIN_DIR}
            admin = {self.admin}
            log_level = {log_level}
            shutdown_timeout = 5s
            """) + textwrap.dedent(daemon) + "\n" + textwrap.dedent(listeners)
        with open(self.conf, "w") as f:
            f.write(text)

    def start(self, wait=None):
        """Start; `wait` is a callable that returns True once the daemon serves."""
        self.logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen([BERTHD, "-c", self.conf], stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=self.env)
        if wait is not None:
            wait_until(lambda: self.proc.poll() is not None or wait(), what="berthd to serve")
            if self.proc.poll() is not None:
                raise AssertionError("berthd exited %d:\n%s" % (self.proc.returncode, self.log()))
        return self

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        self.proc.send_signal(sig)

    def stop(self, timeout=IO_TIMEOUT):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError("berthd did not exit on SIGTERM:\n" + self.log())
        finally:
            self.logf.close()

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def check_config(path, *extra):
    """Run `berthd -t -c path`; returns (exit code, output)."""
    r = subprocess.run([BERTHD, "-t", "-c", path, *extra], capture_output=True, text=True,
                       timeout=60)
    return r.returncode, r.stdout + r.stderr


class BerthTestCase(unittest.TestCase):
    """A temporary folder per test, and daemons started with self.daemon() stopped after."""

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="berth-test-")
        self.tmp = self._tmp.name
        self._daemons = []

    def tearDown(self):
        for d in self._daemons:
            if d.proc and d.proc.poll() is None:
                d.kill()
            if hasattr(d, "logf") and not d.logf.closed:
                d.logf.close()
            if self._outcome_failed():
                print("---- berthd log (%s) ----\n%s" % (self.id(), d.log()))
        self._tmp.cleanup()

    def _outcome_failed(self):
        outcome = getattr(self, "_outcome", None)
        if outcome is None:
            return False
        result = getattr(outcome, "result", None)
        if result is None:
            return False
        return any(t is self for t, _ in result.failures + result.errors)

    def daemon(self, listeners, wait=None, **kw):
        d = Berthd(self.tmp, listeners, **kw)
        self._daemons.append(d)
        return d.start(wait)
