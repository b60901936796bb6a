"""Issue 17: upgrade berthd itself without dropping a connection.

A second berthd is built from this tree with another version string (a CMake build dir of
its own under the build tree, BERTH_VERSION_SUFFIX=+next, only the berthd target, through the
first build's compiler launcher: ccache makes later runs cheap). The daemon runs from a copy
of the first build; the copy is replaced on disk by rename, and `berthctl upgrade` re-executes
it in place. Failing new binaries (one that exits at once, one that crashes, a config it
refuses, one that fails after its exec) leave the old image serving, with the reason.

The second build has the upgrade's test-only failure hooks (-DBERTH_UPGRADE_TEST_HOOKS=ON:
BERTH_TEST_UPGRADE_FAIL, BERTH_TEST_UPGRADE_CHECK_FAIL, BERTH_TEST_UPGRADE_ADOPT_FAIL; see
docs/upgrade.md); the first, built as any berthd, has none. The /metrics and agent-check listeners are handed over too:
scrapes and checks run continuously through an upgrade without one failure.
"""
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import harness
import test_metrics
from clients import EchoLoad, TcpEcho, socks5_connect, tcp_echo
from harness import (BUILD, BERTHD, IO_TIMEOUT, SANITIZED, SRC, START_TIMEOUT, Berthd,
                     DaemonTestCase, recv_exact, recv_until, stream_echo, wait_until)

BERTHCTL = os.path.join(os.path.dirname(BERTHD), "berthctl")
SUFFIX = "+next"


def cache_value(cache, key):
    for line in cache.splitlines():
        if line.startswith(key + ":"):
            return line.split("=", 1)[1]
    return ""


def build_next():
    """The path of a berthd built from this tree with the version suffix."""
    out = os.path.join(os.path.abspath(BUILD), "upgrade-next")
    with open(os.path.join(BUILD, "CMakeCache.txt")) as f:
        cache = f.read()
    args = ["cmake", "-S", SRC, "-B", out, "-DBERTH_VERSION_SUFFIX=" + SUFFIX,
            "-DBERTH_TESTS=OFF", "-DBERTH_FUZZ=OFF", "-DBERTH_UPGRADE_TEST_HOOKS=ON"]
    for key in ("CMAKE_BUILD_TYPE", "CMAKE_C_COMPILER", "BERTH_SANITIZE", "BERTH_WERROR",
                "CMAKE_C_COMPILER_LAUNCHER"):
        v = cache_value(cache, key)
        if v:
            args.append("-D%s=%s" % (key, v))
    env = dict(os.environ, CCACHE_BASEDIR=SRC)
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL, env=env)
    subprocess.run(["nice", "-n", "10", "cmake", "--build", out, "--target", "berthd", "-j2"],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    return os.path.join(out, "berthd")


def version_of(path):
    return subprocess.run([path, "-V"], capture_output=True, text=True).stdout.split()[1]


LISTENERS = """
[echo]
protocol = tcp
address = 127.0.0.1:0
handler = echo

[socks]
protocol = tcp
address = 127.0.0.2:0
handler = socks5
allow_dest = 127.0.0.0/8
"""


class Upgrade(DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        cls.next_berthd = build_next()
        cls.old_version = version_of(BERTHD)
        cls.new_version = version_of(cls.next_berthd)

    def start(self, env=None, daemon=""):
        self.exe = os.path.join(self.tmp, "berthd")
        shutil.copy2(BERTHD, self.exe)
        d = Berthd(self.tmp, LISTENERS, daemon=daemon, workers=2, env=env)
        self._daemons.append(d)
        d.spawn([self.exe, "-c", d.conf], wait=True)
        return d

    def replace(self, src=None, text=None):
        """Put a new binary at the daemon's path by rename, as dpkg does."""
        tmp = self.exe + ".new"
        if text is not None:
            with open(tmp, "w") as f:
                f.write(text)
            os.chmod(tmp, 0o755)
        else:
            shutil.copy2(src, tmp)
        os.rename(tmp, self.exe)

    def upgrade(self, d):
        return subprocess.run([BERTHCTL, "-s", d.admin, "upgrade"], capture_output=True,
                              text=True, timeout=START_TIMEOUT * 3)

    def test_upgrade_under_load_loses_nothing(self):
        self.assertNotEqual(self.old_version, self.new_version)
        d = self.start()
        pid = d.proc.pid
        echo_port, socks_port = d.port("echo"), d.port("socks")
        target = TcpEcho()
        self.addCleanup(target.close)
        long_echo = socket.create_connection(("127.0.0.1", echo_port), timeout=IO_TIMEOUT)
        long_socks, rep = socks5_connect(("127.0.0.2", socks_port), target.port)
        self.assertEqual(rep, 0)
        for s in (long_echo, long_socks):
            s.sendall(b"before\n")
            self.assertEqual(recv_exact(s, 7), b"before\n")
        loads = [EchoLoad(socket.AF_INET, ("127.0.0.1", echo_port), b"load %d\n")
                 for _ in range(2)]
        for t in loads:
            t.start()
        wait_until(lambda: all(t.ok > 20 for t in loads), START_TIMEOUT, what="the load to run")
        before = d.listener("echo")["accepted"]
        old_gen = d.status()["generation"]
        self.replace(self.next_berthd)
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
        self.assertIn(self.new_version, r.stdout)
        mark = sum(t.ok for t in loads)
        wait_until(lambda: sum(t.ok for t in loads) > mark + 40, START_TIMEOUT,
                   what="the load to go on after the upgrade")
        for t in loads:
            t.stop()
        for t in loads:
            self.assertEqual(t.failures, [], "failed connections across the upgrade")
        self.assertEqual(d.proc.pid, pid)
        self.assertIsNone(d.proc.poll())
        st = d.status()
        self.assertEqual(st["version"], self.new_version)
        self.assertEqual(st["pid"], pid)
        self.assertGreater(st["generation"], old_gen)
        # While the old workers drain (the long-lived connections hold them), status says
        # which version each generation runs.
        versions = {g["id"]: g["version"] for g in st["generations"]}
        self.assertEqual(versions.get(old_gen), self.old_version, st)
        self.assertEqual(versions.get(st["generation"]), self.new_version, st)
        # Counters continue: nothing counted before is lost.
        self.assertGreaterEqual(d.listener("echo", st)["accepted"],
                                before + sum(t.ok for t in loads) - mark)
        # The long-lived connections, held by the old workers, still work.
        for s in (long_echo, long_socks):
            s.sendall(b"after!\n")
            self.assertEqual(recv_exact(s, 7), b"after!\n")
            s.close()
        d.wait_status(lambda s: all(w["generation"] == s["generation"] for w in s["workers"]),
                      "the old generation to drain")
        self.assertEqual([g["version"] for g in d.status()["generations"]], [self.new_version])
        # And once more, from the new image to itself: the handover it writes reads back.
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
        self.assertEqual(d.proc.pid, pid)
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", echo_port), b"x\n"), b"x\n")
        self.assertEqual(d.stop(), 0)

    def test_sigusr2_upgrades_and_a_reload_follows(self):
        d = self.start()
        pid = d.proc.pid
        echo_port = d.port("echo")
        self.replace(self.next_berthd)
        os.kill(pid, signal.SIGUSR2)
        d.wait_log("upgraded from berthd %s to %s" % (re.escape(self.old_version),
                                                      re.escape(self.new_version)))
        self.assertEqual(d.status()["version"], self.new_version)
        self.assertEqual(d.proc.pid, pid)
        # The upgraded master reloads as any other.
        self.assertTrue(d.reload(), d.log())
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", echo_port), b"x\n"), b"x\n")
        self.assertEqual(d.stop(), 0)

    def refused(self, d, pattern):
        echo_port = d.port("echo")
        pid = d.proc.pid
        held = socket.create_connection(("127.0.0.1", echo_port), timeout=IO_TIMEOUT)
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 1, r.stdout + r.stderr)
        self.assertRegex(r.stderr, pattern)
        self.assertRegex(d.log(), "upgrade (refused|failed)")
        self.assertEqual(d.proc.pid, pid)
        self.assertIsNone(d.proc.poll())
        held.close()
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", echo_port), b"x\n"), b"x\n")
        self.assertEqual(d.status()["version"], self.old_version)
        return r

    def test_new_binary_that_exits_at_once_is_refused(self):
        d = self.start()
        self.replace(text="#!/bin/sh\nexit 3\n")
        self.refused(d, "exited with status 3")

    def test_new_binary_that_crashes_is_refused(self):
        d = self.start()
        self.replace(text="#!/bin/sh\nkill -SEGV $$\n")
        self.refused(d, r"signal 11")

    def test_missing_binary_is_refused(self):
        d = self.start()
        os.unlink(self.exe)
        self.refused(d, "cannot execute")

    def test_config_the_new_binary_refuses(self):
        d = self.start()
        self.replace(self.next_berthd)
        with open(d.conf, "a") as f:
            f.write("\n[bad]\nprotocol = tcp\naddress = 127.0.0.9:0\nhandler = nosuchplugin\n")
        self.refused(d, "nosuchplugin")

    def test_new_image_that_fails_after_its_exec_rolls_back(self):
        d = self.start(env={"BERTH_TEST_UPGRADE_FAIL": self.new_version})
        pid = d.proc.pid
        self.replace(self.next_berthd)
        loads = [EchoLoad(socket.AF_INET, ("127.0.0.1", d.port("echo")), b"load %d\n")]
        loads[0].start()
        wait_until(lambda: loads[0].ok > 20, START_TIMEOUT, what="the load to run")
        self.refused(d, "BERTH_TEST_UPGRADE_FAIL")
        self.assertIn("going back to berthd", d.log())
        loads[0].stop()
        self.assertEqual(loads[0].failures, [])
        self.assertEqual(d.proc.pid, pid)
        self.assertEqual(d.stop(), 0)

    def test_new_image_that_cannot_adopt_rolls_back(self):
        # The new image fails to take over what it was handed (here limits_adopt refuses the
        # per-source table, as it would another release's layout): it hands the previous
        # image back the very document it was given and executes it, which serves on.
        d = self.start(env={"BERTH_TEST_UPGRADE_ADOPT_FAIL": self.new_version})
        pid = d.proc.pid
        self.replace(self.next_berthd)
        held, rep = socks5_connect(("127.0.0.2", d.port("socks")), self.target_port())
        self.assertEqual(rep, 0)
        loads = [EchoLoad(socket.AF_INET, ("127.0.0.1", d.port("echo")), b"load %d\n")]
        loads[0].start()
        wait_until(lambda: loads[0].ok > 20, START_TIMEOUT, what="the load to run")
        r = self.refused(d, "per-source table of berthd %s" % re.escape(self.old_version))
        self.assertIn("berthd %s cannot take over; going back to berthd %s" %
                      (self.new_version, self.old_version), d.log())
        loads[0].stop()
        self.assertEqual(loads[0].failures, [])
        self.assertEqual(d.proc.pid, pid)
        # The workers that served before the upgrade were handed back: a connection they
        # held goes on.
        held.sendall(b"still\n")
        self.assertEqual(recv_exact(held, 6), b"still\n")
        held.close()
        self.assertEqual(d.stop(), 0)

    def target_port(self):
        return tcp_echo(self)

    def test_a_check_that_fails_after_reading_the_handover(self):
        d = self.start(env={"BERTH_TEST_UPGRADE_CHECK_FAIL": "the check says no"})
        self.replace(self.next_berthd)
        self.refused(d, "the check says no")

    def test_the_production_build_has_no_failure_hooks(self):
        # The same variable that makes the +next build (hooks on) fail changes nothing in a
        # berthd built the ordinary way: upgrading to a copy of itself succeeds.
        d = self.start(env={"BERTH_TEST_UPGRADE_FAIL": self.old_version,
                            "BERTH_TEST_UPGRADE_CHECK_FAIL": "the check says no",
                            "BERTH_TEST_UPGRADE_ADOPT_FAIL": self.old_version})
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
        self.assertEqual(d.status()["version"], self.old_version)

    def scrapes_and_checks_survive(self, metrics_at):
        """Scrape /metrics (and ask the agent-check) in loops through an upgrade to the +next
        build and back to the first: every scrape answers 200 with counters that never go
        back, every check answers up."""
        d = self.start(daemon="metrics = %s\nagent = 127.0.0.1:0\n" % metrics_at)
        pid = d.proc.pid
        family, addr = test_metrics.metrics_addr(d)
        m = re.search(r"answering agent-checks on 127\.0\.0\.1:(\d+)", d.log())
        self.assertIsNotNone(m, d.log())
        agent_port = int(m.group(1))
        metrics_ino = os.stat(addr).st_ino if family == socket.AF_UNIX else None
        load = EchoLoad(socket.AF_INET, ("127.0.0.1", d.port("echo")), b"load %d\n")
        load.start()
        wait_until(lambda: load.ok > 20, START_TIMEOUT, what="the load to run")
        halt = threading.Event()
        scrapes, checks = [], []
        failures = []

        def scraper():
            while not halt.is_set():
                try:
                    status, head, body = test_metrics.http_get(family, addr)
                    if status != 200:
                        failures.append("scrape: %d %s" % (status, head))
                        continue
                    samples = test_metrics.parse(body)
                    scrapes.append(test_metrics.value(
                        samples, "berth_connections_accepted_total", listener="echo"))
                except (OSError, AssertionError, ValueError, IndexError) as e:
                    failures.append("scrape: %r" % e)

        def checker():
            while not halt.is_set():
                try:
                    with socket.create_connection(("127.0.0.1", agent_port),
                                                  timeout=IO_TIMEOUT) as c:
                        line = recv_until(c).decode()
                    if not line.startswith("up"):
                        failures.append("agent said %r" % line)
                    checks.append(line)
                except OSError as e:
                    failures.append("agent: %r" % e)

        threads = [threading.Thread(target=scraper, daemon=True),
                   threading.Thread(target=checker, daemon=True)]
        for t in threads:
            t.start()
        wait_until(lambda: len(scrapes) > 5 and len(checks) > 5, START_TIMEOUT,
                   what="scrapes and checks to run")
        self.replace(self.next_berthd)
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
        n = len(scrapes), len(checks)
        wait_until(lambda: len(scrapes) > n[0] + 5 and len(checks) > n[1] + 5, START_TIMEOUT,
                   what="scrapes and checks after the upgrade")
        # And back (the image the upgrade made hands its own adopted listeners on).
        self.replace(BERTHD)
        r = self.upgrade(d)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
        n = len(scrapes), len(checks)
        wait_until(lambda: len(scrapes) > n[0] + 5 and len(checks) > n[1] + 5, START_TIMEOUT,
                   what="scrapes and checks after the second upgrade")
        halt.set()
        for t in threads:
            t.join(IO_TIMEOUT * 2)
        load.stop()
        self.assertEqual(failures, [], d.log())
        self.assertEqual(load.failures, [])
        self.assertEqual(d.proc.pid, pid)
        # The counters in the scrapes continue: never lower than a scrape before.
        self.assertNotIn(None, scrapes)
        self.assertEqual(scrapes, sorted(scrapes), "a counter went back across an upgrade")
        self.assertGreater(scrapes[-1], scrapes[0])
        # Handed over, never opened again: no second "serving /metrics", no second agent.
        self.assertEqual(d.log().count("serving /metrics on"), 1, d.log())
        self.assertEqual(d.log().count("answering agent-checks on"), 1, d.log())
        if metrics_ino is not None:
            self.assertEqual(os.stat(addr).st_ino, metrics_ino)
        # A reload keeps them; the stop removes the unix socket as before.
        self.assertTrue(d.reload(), d.log())
        self.assertEqual(test_metrics.http_get(family, addr)[0], 200)
        self.assertEqual(d.stop(), 0)
        if metrics_ino is not None:
            self.assertFalse(os.path.exists(addr))
        print("\n%s: %d scrapes, %d agent checks, %d connections through two upgrades, "
              "0 failures" % (metrics_at, len(scrapes), len(checks), load.ok))

    def test_metrics_tcp_and_agent_are_handed_over(self):
        self.scrapes_and_checks_survive("127.0.0.1:0")

    def test_metrics_unix_socket_is_handed_over(self):
        self.scrapes_and_checks_survive(os.path.join(self.tmp, "metrics.sock"))


ACTIVATE = shutil.which("systemd-socket-activate")


@unittest.skipUnless(ACTIVATE, "systemd-socket-activate is not installed")
class UpgradeSocketActivated(DaemonTestCase):
    """Sockets systemd passed (held by the master for its life, see activation.h) survive the
    exec: the new image holds them, serves on them, and a reload still requires a listener
    for each. Set up as in test_socket_activation.py: a tcp socket of the test's own passed
    through systemd-socket-activate, which adds its unix socket."""

    @classmethod
    def setUpClass(cls):
        cls.next_berthd = build_next()

    def test_passed_sockets_survive_upgrades_and_reloads_still_find_them(self):
        tcp = socket.socket()
        self.addCleanup(tcp.close)
        tcp.bind(("127.0.0.1", 0))
        tcp.listen(16)
        port = tcp.getsockname()[1]
        path = os.path.join(self.tmp, "echo.sock")
        listeners = f"""
            [echo-tcp]
            protocol = tcp
            address = 127.0.0.1:{port}
            handler = echo

            [echo-unix]
            protocol = unix
            address = {path}
            handler = echo
            """
        exe = os.path.join(self.tmp, "berthd")
        shutil.copy2(BERTHD, exe)
        d = Berthd(self.tmp, listeners, workers=2)
        self._daemons.append(d)
        d.logf = open(d.log_path, "ab")
        n = tcp.fileno()
        move = "" if n == 3 else "exec 3<&%d %d<&-; " % (n, n)
        argv = ["sh", "-c", move + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", ACTIVATE,
                "-l", path, "--fdname=echo-tcp:echo-unix", "--", exe, "-c", d.conf]
        d.proc = harness._Proc(argv, stdout=d.logf, stderr=subprocess.STDOUT, env=d.env,
                               pass_fds=[n])
        first = []  # the connection that makes it start berthd

        def connect_first():
            # The file appears at bind(), a moment before listen(): refused until then.
            c = socket.socket(socket.AF_UNIX)
            c.settimeout(IO_TIMEOUT)
            try:
                c.connect(path)
            except (FileNotFoundError, ConnectionRefusedError):
                c.close()
                return False
            first.append(c)
            self.addCleanup(c.close)
            return True

        wait_until(connect_first, what="systemd-socket-activate listening")
        wait_until(d.serving, what="berthd to serve")
        tcp.close()  # only berthd holds the tcp socket now
        ino = os.stat(path).st_ino

        def serves():
            for family, addr in ((socket.AF_INET, ("127.0.0.1", port)),
                                 (socket.AF_UNIX, path)):
                self.assertEqual(stream_echo(family, addr, b"x\n"), b"x\n")

        serves()
        load = EchoLoad(socket.AF_INET, ("127.0.0.1", port), b"load %d\n")
        load.start()
        wait_until(lambda: load.ok > 20, START_TIMEOUT, what="the load to run")
        for binary in (self.next_berthd, BERTHD):
            os.rename(shutil.copy2(binary, exe + ".new"), exe)
            r = subprocess.run([BERTHCTL, "-s", d.admin, "upgrade"], capture_output=True,
                               text=True, timeout=START_TIMEOUT * 3)
            self.assertEqual(r.returncode, 0, r.stdout + r.stderr + d.log())
            mark = load.ok
            wait_until(lambda: load.ok > mark + 20, START_TIMEOUT, what="the load to go on")
        load.stop()
        self.assertEqual(load.failures, [])
        self.assertEqual(d.log().count("systemd passed socket echo-tcp (fd 3), held since "
                                       "before the upgrade"), 2, d.log())
        self.assertEqual(os.stat(path).st_ino, ino)
        serves()
        # A reload still knows what systemd passed: one that keeps both listeners keeps the
        # sockets; one that drops a section systemd passed a socket for is refused, naming it.
        self.assertTrue(d.reload(), d.log())
        serves()
        with open(d.conf) as f:
            conf = f.read()
        with open(d.conf, "w") as f:
            f.write(conf.replace("[echo-tcp]", "[renamed]"))
        self.assertFalse(d.reload(), d.log())
        self.assertIn('systemd passed a socket named "echo-tcp"', d.log())
        with open(d.conf, "w") as f:
            f.write(conf)
        self.assertTrue(d.reload(), d.log())
        serves()
        self.assertEqual(d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
