"""Issue 3: the admin socket berthctl talks to. `status --json` figures match what the test
did; `status`, `reload` (success, and the error text of a bad config), `stop`; bad requests;
owner-only permissions. Talks to the socket directly: one request line, answer "ok" or
"error", then the body, then EOF."""
import json
import os
import re
import socket
import subprocess
import textwrap
import threading
import unittest

from harness import (BUILD, IO_TIMEOUT, DaemonTestCase, admin_request, built_test_plugin,
                     line_request, stream_connect, stream_echo, udp_roundtrip)


class Status(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.usock = os.path.join(self.tmp, "s.sock")
        self.listeners = f"""
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo

            [unix]
            protocol = unix
            address = {self.usock}
            handler = echo

            [acl]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo
            deny = 127.0.0.0/8
            """
        self.d = self.daemon(self.listeners, workers=2)
        self.d.wait_serving()
        self.port, self.uport = self.d.port("tcp"), self.d.port("udp")
        self.acl_addr = self.d.bound("acl")

    def traffic(self):
        """Known traffic; returns {listener: (accepted, bytes)} it should account for."""
        tcp_bytes = 0
        for i in range(7):
            msg = b"t" * (10 * (i + 1))
            self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), msg), msg)
            tcp_bytes += len(msg)
        for i in range(5):
            msg = b"u" * 100
            self.assertEqual(udp_roundtrip(("127.0.0.1", self.uport), msg), msg)
        for i in range(3):
            msg = os.urandom(1000)
            self.assertEqual(stream_echo(socket.AF_UNIX, self.usock, msg), msg)
        for i in range(2):
            with stream_connect(socket.AF_INET, self.acl_addr) as s:
                s.settimeout(IO_TIMEOUT)
                try:
                    self.assertEqual(s.recv(10), b"")
                except ConnectionResetError:
                    pass
        return {"tcp": (7, tcp_bytes), "udp": (5, 500), "unix": (3, 3000), "acl": (0, 0)}

    def settled(self, st):
        return all(l["active"] == 0 for l in st["listeners"]) and \
            self.d.listener("acl", st)["refused_acl"] == 2

    def check_figures(self, st, expect, times=1):
        for name, (accepted, nbytes) in expect.items():
            l = self.d.listener(name, st)
            self.assertEqual(l["accepted"], accepted * times, name)
            self.assertEqual(l["bytes_in"], nbytes * times, name)
            self.assertEqual(l["bytes_out"], nbytes * times, name)
            self.assertEqual(l["active"], 0, name)
            self.assertEqual(l["errors"], 0, name)
        self.assertEqual(self.d.listener("acl", st)["refused_acl"], 2 * times)
        self.assertEqual(self.d.listener("tcp", st)["refused_acl"], 0)

    def test_json_figures_match_what_the_test_did(self):
        expect = self.traffic()
        st = self.d.wait_status(self.settled, "connections to end", IO_TIMEOUT)
        self.assertEqual(st["pid"], self.d.proc.pid)
        self.assertEqual(st["config"], self.d.conf)
        self.assertEqual((st["generation"], st["reloads_ok"], st["reloads_failed"]), (1, 0, 0))
        self.assertEqual((st["worker_restarts"], st["worker_crashes"]), (0, 0))
        self.assertGreaterEqual(st["uptime_s"], 0)
        by_name = {l["name"]: l for l in st["listeners"]}
        self.assertEqual(sorted(by_name), ["acl", "tcp", "udp", "unix"])
        self.assertEqual(by_name["tcp"]["protocol"], "tcp")
        self.assertEqual(by_name["tcp"]["address"], "127.0.0.1:0")
        self.assertEqual(by_name["tcp"]["bound"], "127.0.0.1:%d" % self.port)
        self.assertEqual(by_name["udp"]["protocol"], "udp")
        self.assertEqual(by_name["unix"]["protocol"], "unix")
        self.assertEqual(by_name["unix"]["address"], self.usock)
        self.check_figures(st, expect)
        # Per worker: two of them, serving, alive, and between them every connection.
        self.assertEqual(len(st["workers"]), 2)
        for w in st["workers"]:
            self.assertEqual((w["generation"], w["state"], w["active"]), (1, "serving", 0))
            os.kill(w["pid"], 0)
        self.assertEqual(sorted(w["index"] for w in st["workers"]), [1, 2])
        self.assertEqual(sum(w["accepted"] for w in st["workers"]), 15)
        self.assertEqual(sum(w["bytes_in"] for w in st["workers"]), sum(
            b for _, b in expect.values()))
        self.assertEqual(sum(w["bytes_out"] for w in st["workers"]), sum(
            b for _, b in expect.values()))
        self.assertEqual(self.d.stop(), 0)

    def test_figures_survive_a_reload(self):
        expect = self.traffic()
        self.d.wait_status(self.settled, "connections to end", IO_TIMEOUT)
        ok, body = self.d.request("reload")
        self.assertTrue(ok, body)
        self.traffic()
        st = self.d.wait_status(
            lambda s: all(l["active"] == 0 for l in s["listeners"]) and
            self.d.listener("acl", s)["refused_acl"] == 4, "connections to end", IO_TIMEOUT)
        self.assertEqual(st["generation"], 2)
        self.check_figures(st, expect, times=2)
        self.assertEqual(self.d.stop(), 0)

    def test_active_connection_shows(self):
        with stream_connect(socket.AF_INET, ("127.0.0.1", self.port)) as s:
            self.assertEqual(line_request(s, "hi"), "hi\n")
            st = self.d.status()
            self.assertEqual(self.d.listener("tcp", st)["active"], 1)
            self.assertEqual(sum(w["active"] for w in st["workers"]), 1)
        self.d.wait_status(lambda s: self.d.listener("tcp", s)["active"] == 0, "active 0",
                           IO_TIMEOUT)
        self.assertEqual(self.d.stop(), 0)

    def test_text_status(self):
        self.traffic()
        ok, body = self.d.request("status")
        self.assertTrue(ok, body)
        self.assertRegex(body, r"pid %d" % self.d.proc.pid)
        self.assertRegex(body, r"generation 1\b")
        for name in ("tcp", "udp", "unix", "acl"):
            self.assertRegex(body, r"(?m)^%s\s" % name)
        self.assertIn("127.0.0.1:%d" % self.port, body)
        # One row per worker: index, pid, generation, state.
        self.assertEqual(len(re.findall(r"(?m)^[12]\s+\d+\s+1\s+serving\s", body)), 2, body)
        self.assertEqual(self.d.stop(), 0)


class Requests(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.listeners = f"""
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """
        self.d = self.daemon(self.listeners, workers=1)
        self.d.wait_serving()
        self.port = self.d.port("tcp")

    def test_socket_is_owner_only(self):
        self.assertEqual(os.stat(self.d.admin).st_mode & 0o777, 0o600)
        self.assertEqual(self.d.stop(), 0)
        self.assertFalse(os.path.exists(self.d.admin), "admin socket left behind")

    def test_reload_reports_success(self):
        ok, body = self.d.request("reload")
        self.assertTrue(ok, body)
        self.assertIn("reloaded", body)
        st = self.d.status()
        self.assertEqual((st["generation"], st["reloads_ok"]), (2, 1))
        self.assertEqual(self.d.stop(), 0)

    def test_reload_reports_the_error_of_a_bad_config(self):
        self.d.write_config(self.listeners + """
            [bad]
            protocol = tcp
            address = 127.0.0.1:1
            handler = echo
            idle_timeout = forever
            """, workers=1)
        ok, body = self.d.request("reload")
        self.assertFalse(ok, body)
        self.assertRegex(body, r"%s:\d+: idle_timeout 'forever'" % re.escape(self.d.conf))
        st = self.d.status()
        self.assertEqual((st["generation"], st["reloads_failed"]), (1, 1))
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), b"x\n"), b"x\n")
        self.assertEqual(self.d.stop(), 0)

    def test_reload_reports_the_error_of_a_bad_plugin(self):
        for handler, option, why in (
                (built_test_plugin("badabi"), "", r"badabi\.so: plugin ABI version 42"),
                (built_test_plugin("good"), "greeting = reject-me",
                 r"%s:\d+: good plugin refuses greeting" % re.escape(self.d.conf))):
            self.d.write_config(textwrap.dedent(self.listeners) + textwrap.dedent(f"""
                [plugin]
                protocol = tcp
                address = 127.0.0.2:0
                handler = {handler}
                {option}
                """), workers=1)
            ok, body = self.d.request("reload")
            self.assertFalse(ok, body)
            self.assertRegex(body, why)
        self.assertEqual(self.d.status()["generation"], 1)
        self.assertEqual(self.d.stop(), 0)

    def test_two_reload_requests_at_once_both_answered(self):
        """The second arrives while the first is in progress (open_delay holds the new
        workers in listener_open): it is queued behind it, and both callers hear back."""
        self.d.write_config(self.listeners + f"""
            [slow]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("good")}
            open_delay = 600ms
            """, workers=1)
        answers = []

        def ask():
            answers.append(admin_request(self.d.admin, "reload", timeout=IO_TIMEOUT * 3))
        first = threading.Thread(target=ask)
        first.start()
        self.d.wait_log(r"reloading", IO_TIMEOUT)
        ask()
        first.join(IO_TIMEOUT * 3)
        self.assertFalse(first.is_alive())
        self.assertEqual([ok for ok, _ in answers], [True, True], answers)
        self.assertEqual(self.d.status()["reloads_ok"], 2)
        self.assertEqual(self.d.stop(), 0)

    def test_stop_drains_then_exits_0(self):
        self.d.set_daemon_key("shutdown_timeout", "5m")
        self.assertTrue(self.d.reload())  # so the long timeout is the one in force
        with stream_connect(socket.AF_INET, ("127.0.0.1", self.port)) as s:
            self.assertEqual(line_request(s, "a"), "a\n")
            ok, body = self.d.request("stop")
            self.assertTrue(ok, body)
            self.d.wait_log(r"stopping: draining", IO_TIMEOUT)
            self.assertEqual(line_request(s, "b"), "b\n")
            self.assertIsNone(self.d.proc.poll())
        self.assertEqual(self.d.proc.wait(IO_TIMEOUT), 0)

    def test_bad_requests(self):
        for line in ("", "status --yaml", "restart", "reload now"):
            ok, body = self.d.request(line)
            self.assertFalse(ok, line)
            self.assertIn("unknown request", body)
        ok, body = self.d.request("x" * 1000)
        self.assertFalse(ok)
        # A client that connects and says nothing does not block the others.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as idle:
            idle.connect(self.d.admin)
            ok, _ = self.d.request("status")
            self.assertTrue(ok)
        self.assertEqual(self.d.stop(), 0)


BERTHCTL = os.path.join(BUILD, "berthctl")


class Berthctl(DaemonTestCase):
    """The same through berthctl, and its exit codes (berthctl is always built)."""

    def ctl(self, *argv, env=None):
        r = subprocess.run([BERTHCTL, *argv], capture_output=True, text=True,
                           timeout=IO_TIMEOUT * 3, env=dict(os.environ, **(env or {})))
        return r.returncode, r.stdout, r.stderr

    def setUp(self):
        super().setUp()
        self.assertTrue(os.access(BERTHCTL, os.X_OK), BERTHCTL + " is not built")
        self.listeners = f"""
            [tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """
        self.d = self.daemon(self.listeners, workers=2)
        self.d.wait_serving()
        self.port = self.d.port("tcp")

    def test_status_json_matches_the_traffic(self):
        sent = 0
        for i in range(9):
            msg = b"m" * (i + 1) * 7
            self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), msg), msg)
            sent += len(msg)
        self.d.wait_status(lambda s: self.d.listener("tcp", s)["active"] == 0, "active 0",
                           IO_TIMEOUT)
        for argv in (["-s", self.d.admin, "status", "--json"],
                     ["-c", self.d.conf, "status", "--json"]):
            rc, out, err = self.ctl(*argv)
            self.assertEqual(rc, 0, err)
            st = json.loads(out)
            l = self.d.listener("tcp", st)
            self.assertEqual((l["accepted"], l["bytes_in"], l["bytes_out"]), (9, sent, sent))
            self.assertEqual(sum(w["accepted"] for w in st["workers"]), 9)
        rc, out, err = self.ctl("status", env={"BERTH_ADMIN": self.d.admin})
        self.assertEqual(rc, 0, err)
        self.assertIn("127.0.0.1:%d" % self.port, out)
        self.assertEqual(self.d.stop(), 0)

    def test_reload_and_stop(self):
        rc, out, err = self.ctl("-s", self.d.admin, "reload")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.status()["generation"], 2)
        self.d.write_config(self.listeners + """
            [bad]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo
            allow = 300.1.2.3
            """, workers=2)
        rc, out, err = self.ctl("-s", self.d.admin, "reload")
        self.assertEqual(rc, 1, out + err)
        self.assertRegex(err, r"%s:\d+: allow" % re.escape(self.d.conf))
        self.assertEqual(self.d.status()["generation"], 2)
        rc, out, err = self.ctl("-s", self.d.admin, "stop")
        self.assertEqual(rc, 0, err)
        self.assertEqual(self.d.proc.wait(IO_TIMEOUT), 0)
        rc, out, err = self.ctl("-s", self.d.admin, "status")
        self.assertEqual(rc, 69, "no daemon: " + err)

    def test_usage(self):
        for argv in ([], ["frobnicate"], ["reload", "--json"], ["status", "extra"],
                     ["-t", "0", "status"]):
            rc, out, err = self.ctl("-s", self.d.admin, *argv)
            self.assertEqual(rc, 64, "%s: %s" % (argv, err))
        self.assertEqual(self.d.stop(), 0)


if __name__ == "__main__":
    unittest.main()
