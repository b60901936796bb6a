"""Start the real berthd on loopback for integration tests.

ctest sets BERTHD (the daemon), BERTH_PLUGIN_DIR (the build's plugin folder) and
BERTH_BUILD (the build tree). Every test gets its own temporary folder, and a daemon that is
stopped when the test ends: SIGTERM, and its exit status must be 0 (or what the test
declared); a daemon that exited on its own with a status no test looked at fails the test,
and so does any sanitizer report in its log (see DaemonTestCase).

Ports: a tcp or udp listener is written with port 0 (`address = 127.0.0.1:0`); the daemon
binds a port the kernel picks, and Berthd.bound(name) / Berthd.port(name) read it from
`status --json`, so no port is picked free and released for another test to take under
`ctest -j`. The config refuses one address (protocol, host, port) on two listeners, port 0
included: a second tcp listener takes 127.0.0.2:0, a third 127.0.0.3:0 (all of 127/8 is
loopback, and a client connecting there still comes from 127.0.0.1). start(wait=True) waits
for the daemon to serve (status), not for a port to accept.

Skips: the files run under berth_unittest.py, which prints "BERTH-SKIP: <test>: <reason>" for
every skip and exits 77, which CMake (SKIP_RETURN_CODE) shows as ctest's "Not Run (Skipped)";
under CI (CI=true) a skip is a failure instead.
"""
import json
import os
import re
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


def _sanitized_build():
    """True when berthd was built with ASan/UBSan (ctest says so; else look in the binary)."""
    v = os.environ.get("BERTH_SANITIZE")
    if v is not None:
        return v.upper() in ("1", "ON", "TRUE", "YES")
    try:
        with open(BERTHD, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


SANITIZED = _sanitized_build()


class _Proc(subprocess.Popen):
    """Popen that remembers whether anyone waited for (looked at) the exit status."""

    status_seen = False

    def wait(self, timeout=None):
        rc = super().wait(timeout)
        self.status_seen = True
        return rc


def free_port(kind=socket.SOCK_STREAM, family=socket.AF_INET):
    """A port the kernel just handed out on loopback, then released: another process (a test
    running in parallel) can take it before the daemon binds it. Use it only where the port
    must be known before the daemon starts (a restart on the same port, one port number on
    two listeners, servers the test runs itself); a daemon's listener takes port 0 and the
    test asks Berthd.port() which port it got."""
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


def split_bound(bound):
    """"127.0.0.1:40123" or "[::1]:40123" (a listener's `bound` in status --json) as
    (host, port)."""
    host, _, port = bound.rpartition(":")
    return host.strip("[]"), int(port)


def have_ipv6_loopback():
    """True when ::1 can be bound here (a container may have no IPv6 loopback)."""
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


# Where a client reaches a listener bound to a wildcard address.
_LOOPBACK_OF = {"0.0.0.0": "127.0.0.1", "::": "::1"}


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
        self._bound = {}
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
        self._bound.clear()

    def start(self, wait=None):
        """Start; `wait` is a callable that returns True once the daemon serves, or True for
        "every worker of the first generation serving" (status --json, see serving())."""
        return self.spawn([BERTHD, "-c", self.conf], wait)

    def spawn(self, argv, wait=None):
        """Run argv (which must end up exec'ing berthd in the same process) with the log as
        stdout and stderr; `wait` as for start()."""
        self.logf = open(self.log_path, "ab")
        self._bound.clear()
        if wait is True:
            wait = self.serving
        self.proc = _Proc(argv, stdout=self.logf, stderr=subprocess.STDOUT, env=self.env)
        if wait is not None:
            wait_until(lambda: self.proc.poll() is not None or wait(), what="berthd to serve")
            if self.proc.poll() is not None:
                self.proc.status_seen = True
                raise AssertionError("berthd exited %d:\n%s" % (self.proc.returncode, self.log()))
        return self

    # The exit status tearDown expects of a daemon still running then (after SIGTERM), or
    # of one that exited by itself without the test looking at its status.
    expected_exit = 0

    def log(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def signal(self, sig):
        if sig == signal.SIGHUP:
            self._bound.clear()
        self.proc.send_signal(sig)

    def stop(self, timeout=IO_TIMEOUT):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None or self.proc.poll() is not None:
            if self.proc is not None:
                self.proc.status_seen = True
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

    # ---- admin socket, status and reload (for the daemon's own tests) ----

    def set_daemon_key(self, key, value):
        """Change one `key = value` line the [daemon] section was written with (e.g.
        shutdown_timeout), in the config file as it is now."""
        with open(self.conf) as f:
            text = f.read()
        text, n = re.subn(r"(?m)^%s = .*$" % re.escape(key), "%s = %s" % (key, value), text,
                          count=1)
        if n != 1:
            raise AssertionError("no %r line in %s" % (key, self.conf))
        with open(self.conf, "w") as f:
            f.write(text)
        self._bound.clear()

    def request(self, line, timeout=IO_TIMEOUT):
        """An admin request to this daemon: (ok, body)."""
        return admin_request(self.admin, line, timeout)

    def status(self):
        """`status --json` as a dict."""
        ok, body = self.request("status --json")
        if not ok:
            raise AssertionError("status failed: " + body)
        return json.loads(body)

    def try_status(self):
        try:
            return self.status()
        except (OSError, ValueError):
            return None

    def serving(self):
        """True once a generation serves and every worker of it is accepting."""
        st = self.try_status()
        if not st or st["generation"] < 1:
            return False
        gen = [w for w in st["workers"] if w["generation"] == st["generation"]]
        return bool(gen) and all(w["state"] == "serving" for w in gen)

    def wait_serving(self, timeout=START_TIMEOUT):
        wait_until(lambda: self.proc.poll() is not None or self.serving(), timeout,
                   what="berthd to serve")
        if self.proc.poll() is not None:
            raise AssertionError("berthd exited %d:\n%s" % (self.proc.returncode, self.log()))
        return self.status()

    def wait_status(self, pred, what="status", timeout=START_TIMEOUT):
        """Wait until pred(status dict) is true; returns that status."""
        def probe():
            st = self.try_status()
            return st if st is not None and pred(st) else None
        return wait_until(probe, timeout, interval=0.05, what=what)

    def wait_log(self, pattern, timeout=START_TIMEOUT):
        """Wait until the log matches the regular expression; returns the match."""
        rx = re.compile(pattern, re.M)
        return wait_until(lambda: rx.search(self.log()), timeout, interval=0.05,
                          what="log line /%s/" % pattern)

    def wait_logged(self, text, count=1, timeout=IO_TIMEOUT):
        """Wait until the log holds `text` (a plain string) at least `count` times."""
        wait_until(lambda: self.log().count(text) >= count, timeout=timeout,
                   what="log line %r" % text)

    def reload(self, timeout=START_TIMEOUT):
        """SIGHUP, then wait until the reload has ended (ok or failed); True if it succeeded."""
        before = self.status()
        self.signal(signal.SIGHUP)
        st = self.wait_status(
            lambda s: s["reloads_ok"] + s["reloads_failed"] >
            before["reloads_ok"] + before["reloads_failed"], "the reload to end", timeout)
        self._bound.clear()
        return st["reloads_ok"] > before["reloads_ok"]

    def bound(self, name, timeout=START_TIMEOUT):
        """(host, port) a client reaches tcp or udp listener `name` on: the address the daemon bound
        (status --json `bound`; for `*:0` or `[::]:0` the loopback address of that family).
        Waits until the listener is bound. Kept until the config is rewritten or reloaded
        (SIGHUP, reload()) or the daemon restarted: a kept listener keeps its port across a
        reload, but a replaced one does not, so the next call asks the daemon again."""
        if name not in self._bound:
            def probe():
                if self.proc is not None and self.proc.poll() is not None:
                    self.proc.status_seen = True
                    raise AssertionError("berthd exited %d:\n%s" %
                                         (self.proc.returncode, self.log()))
                st = self.try_status()
                for l in (st or {}).get("listeners", []):
                    if l["name"] == name and l.get("bound"):
                        return l["bound"]
                return None
            host, port = split_bound(wait_until(probe, timeout, interval=0.05,
                                                what="listener %s to be bound" % name))
            self._bound[name] = (_LOOPBACK_OF.get(host, host), port)
        return self._bound[name]

    def port(self, name, timeout=START_TIMEOUT):
        """The port listener `name` is bound to (see bound())."""
        return self.bound(name, timeout)[1]

    def worker_pids(self, state="serving"):
        st = self.status()
        return [w["pid"] for w in st["workers"] if state is None or w["state"] == state]

    def listener(self, name, st=None):
        """One listener's figures from status --json."""
        st = st or self.status()
        for l in st["listeners"]:
            if l["name"] == name:
                return l
        raise AssertionError("no listener %r in status" % name)


def check_config(path, *extra):
    """Run `berthd -t -c path`; returns (exit code, output)."""
    r = subprocess.run([BERTHD, "-t", "-c", path, *extra], capture_output=True, text=True,
                       timeout=60)
    out = r.stdout + r.stderr
    reports = sanitizer_reports(out)
    if reports:
        raise AssertionError("sanitizer report from berthd -t:\n" + "\n\n".join(reports))
    return r.returncode, out


def free_ports(n, kind=socket.SOCK_STREAM, family=socket.AF_INET):
    """n distinct ports, picked together (free_port() called twice may hand out the same
    port: the first is released before the second is picked)."""
    host = "::1" if family == socket.AF_INET6 else "127.0.0.1"
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(family, kind)
            socks.append(s)
            s.bind((host, 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


# ctest sets BERTH_TEST_PLUGIN_DIR: good/good2/badabi/nosym/crashy .so built from tests/plugins.
TEST_PLUGIN_DIR = os.environ.get("BERTH_TEST_PLUGIN_DIR", os.path.join(BUILD, "test-plugins"))


def built_test_plugin(name):
    """Path of a test plugin (tests/plugins/NAME.c built as NAME.so)."""
    return os.path.join(TEST_PLUGIN_DIR, name + ".so")


def admin_request(path, line, timeout=IO_TIMEOUT):
    """One admin request: send `line`, read to EOF. Returns (ok, body): ok is True when
    the first line is "ok", False when "error"; body is the rest."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(path)
        s.sendall(line.encode() + b"\n")
        chunks = []
        while True:
            try:
                b = s.recv(65536)
            except ConnectionResetError:
                # Linux resets a unix stream whose peer closed with bytes unread (a request
                # refused before it was read whole): the answer has arrived all the same.
                if not chunks:
                    raise
                break
            if not b:
                break
            chunks.append(b)
    text = b"".join(chunks).decode("utf-8", "replace")
    head, _, body = text.partition("\n")
    if head not in ("ok", "error"):
        raise AssertionError("admin answered %r to %r" % (text, line))
    return head == "ok", body


def recv_exact(sock, n, timeout=IO_TIMEOUT, strict=False):
    """Read exactly n bytes: fewer if the peer closes first, or with `strict` an
    AssertionError saying how many came. timeout None keeps the socket's own."""
    if timeout is not None:
        sock.settimeout(timeout)
    buf = bytearray()
    while len(buf) < n:
        b = sock.recv(n - len(buf))
        if not b:
            if strict:
                raise AssertionError("EOF after %d of %d bytes" % (len(buf), n))
            break
        buf += b
    return bytes(buf)


def connect_from(src, port, host="127.0.0.1"):
    """A TCP connection to host:port from the loopback address `src` (127.0.0.2, ...), so a
    test can be several clients: per-source limits, ACLs, what a PROXY header claims."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    s.bind((src, 0))
    s.connect((host, port))
    return s


def recv_until(sock, end=b"\n", timeout=IO_TIMEOUT):
    """Read until `end` has arrived (or EOF); returns everything read."""
    sock.settimeout(timeout)
    buf = bytearray()
    while not buf.endswith(end):
        b = sock.recv(1)
        if not b:
            break
        buf += b
    return bytes(buf)


def stream_connect(family, addr, timeout=IO_TIMEOUT):
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(timeout)
    try:
        s.connect(addr)
    except BaseException:
        s.close()
        raise
    return s


def stream_echo(family, addr, data, timeout=IO_TIMEOUT):
    """Connect, send data, read as many bytes back, close cleanly; returns what came back."""
    with stream_connect(family, addr, timeout) as s:
        s.sendall(data)
        got = recv_exact(s, len(data), timeout)
        s.shutdown(socket.SHUT_WR)
        return got


def line_request(sock, line, timeout=IO_TIMEOUT):
    """Send one line on a connected stream, return the line that answers it."""
    sock.sendall(line.encode() + b"\n")
    return recv_until(sock, b"\n", timeout).decode()


def peer_closed(sock, timeout=IO_TIMEOUT):
    """True once the peer has closed (EOF or reset) within timeout; False on timeout."""
    sock.settimeout(timeout)
    try:
        while True:
            b = sock.recv(4096)
            if not b:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False


def udp_roundtrip(addr, data, family=socket.AF_INET, timeout=IO_TIMEOUT):
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(data, addr)
        return s.recvfrom(65536)[0]


def unixgram_roundtrip(path, client_path, data, timeout=IO_TIMEOUT):
    """A unix datagram exchange from a client bound to client_path (else no reply can come)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.bind(client_path)
        try:
            s.sendto(data, path)
            return s.recvfrom(65536)[0]
        finally:
            os.unlink(client_path)


def proc_rss_kib(pid):
    """VmRSS of a process, in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for pid %d" % pid)


# What a sanitizer build writes when it finds something (ASan, LSan, UBSan): the first line of
# a report. A report runs from there to its SUMMARY line.
SANITIZER_REPORT = re.compile(r"ERROR: (Address|Leak|Memory|Thread)Sanitizer|runtime error: ")


def sanitizer_reports(text):
    """Every sanitizer report in a log, each as one string (first line to SUMMARY)."""
    reports, cur = [], None
    for line in text.splitlines():
        if SANITIZER_REPORT.search(line):
            if cur:
                reports.append("\n".join(cur))
            cur = [line]
        elif cur is not None:
            cur.append(line)
            if line.startswith("SUMMARY:"):
                reports.append("\n".join(cur))
                cur = None
    if cur:
        reports.append("\n".join(cur))
    return reports


class DaemonTestCase(unittest.TestCase):
    """A temporary folder per test, and daemons started with self.daemon() (or added to
    self._daemons) stopped after it, each with its exit status asserted. Any sanitizer
    report in a daemon's log fails the test, wherever it points (master, worker, plugin).

    A test that crashes a worker on purpose calls self.expect_crash_report(regex): in a
    sanitizer build the reports whose first line matches are then expected (at least one
    must be there) and not counted. The older class attribute `expected_reports` (a regex)
    still works as an allowance for a whole class, without the must-be-there check."""

    expected_reports = None

    def setUp(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="berth-test-")
        self.tmp = self._tmp.name
        self._daemons = []
        self._expected_crash = []

    def expect_crash_report(self, pattern):
        """Declare that this test makes a worker crash under ASan, which then reports it:
        the report (first line matching `pattern`) must be there and does not fail it."""
        self._expected_crash.append(re.compile(pattern))

    def _stop_all(self):
        """Stop every daemon; returns the problems found (unclean exits)."""
        problems = []
        for d in self._daemons:
            if not d.proc:
                continue
            if d.proc.poll() is None:
                try:
                    rc = d.stop()
                except AssertionError as e:
                    problems.append(str(e))
                    continue
                if rc != d.expected_exit:
                    problems.append("berthd (pid %d) exited %d on SIGTERM, not %d" %
                                    (d.proc.pid, rc, d.expected_exit))
            elif not d.proc.status_seen and d.proc.returncode != d.expected_exit:
                problems.append("berthd (pid %d) exited %d by itself and no test checked it" %
                                (d.proc.pid, d.proc.returncode))
            if hasattr(d, "logf") and not d.logf.closed:
                d.logf.close()
        return problems

    def _reports(self):
        """Sanitizer reports not expected; and the expectations that no report met."""
        logs = []
        for d in self._daemons:
            if d.log_path not in logs:
                logs.append(d.log_path)
        found, met = [], set()
        allowed = re.compile(self.expected_reports) if self.expected_reports else None
        for path in logs:
            try:
                with open(path, "rb") as f:
                    text = f.read().decode("utf-8", "replace")
            except OSError:
                continue
            for r in sanitizer_reports(text):
                first = r.splitlines()[0]
                hit = [i for i, rx in enumerate(self._expected_crash) if rx.search(first)]
                if hit:
                    met.update(hit)
                elif not (allowed and allowed.search(first)):
                    found.append(r)
        unmet = []
        if SANITIZED:
            unmet = [rx.pattern for i, rx in enumerate(self._expected_crash) if i not in met]
        return found, unmet

    def tearDown(self):
        # Close the test's own sockets (addCleanup) first: nothing left for a drain to wait on.
        self.doCleanups()
        problems = self._stop_all()
        found, unmet = self._reports()
        failed = problems or found or unmet or self._outcome_failed()
        if failed:
            shown = set()
            for d in self._daemons:
                if d.log_path not in shown:
                    shown.add(d.log_path)
                    print("---- berthd log (%s) ----\n%s" % (self.id(), d.log()))
        self._tmp.cleanup()
        msg = []
        if problems:
            msg.append("unclean daemon exit:\n" + "\n".join(problems))
        if found:
            msg.append("sanitizer reports in the daemon log:\n" + "\n\n".join(found))
        if unmet:
            msg.append("expected crash report(s) not found: " + ", ".join(unmet))
        if msg:
            self.fail("\n".join(msg))

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


# The same class under its older name: every test that starts a daemon gets the checks.
BerthTestCase = DaemonTestCase
