"""Issue 3: the daemon that is never down. Reload by worker generations under traffic,
listeners diffed across reloads, bad configs and bad plugins on reload, a replaced .so,
crashed workers replaced, graceful and immediate stop, and no growth in the master over
100 reloads.

Every wait is bounded by a generous timeout that guards against a hang; none is a
performance check.
"""
import os
import re
import shutil
import signal
import socket
import textwrap
import threading
import time
import unittest

from clients import EchoLoad
from harness import (IO_TIMEOUT, PLUGIN_DIR, START_TIMEOUT, TEST_PLUGIN_DIR, DaemonTestCase,
                     Berthd, built_test_plugin,
                     line_request, peer_closed, proc_rss_kib, recv_exact,
                     stream_connect, stream_echo, udp_roundtrip, unixgram_roundtrip,
                     wait_until)


def process_gone(pid):
    """True once pid has exited (a zombie waiting for its parent counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def children(pid):
    """The pids of a process's children (reaped ones are gone from the list)."""
    out = set()
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
            out.update(int(x) for x in f.read().split())
    return out


def echo_listeners(usock, extra=""):
    """tcp (127.0.0.1:0, so a tcp listener in `extra` takes 127.0.0.2 or up) and unix echo
    listeners, then `extra` (each part dedented on its own: an indented line would continue
    the value above it in INI)."""
    return textwrap.dedent(f"""
        [tcp]
        protocol = tcp
        address = 127.0.0.1:0
        handler = echo

        [unix]
        protocol = unix
        address = {usock}
        handler = echo
        """) + textwrap.dedent(extra)


class DatagramLoop(threading.Thread):
    """A client sending datagrams in a loop and waiting for each echo."""

    def __init__(self, addr, client_path=None):
        super().__init__(daemon=True)
        self.addr, self.client_path = addr, client_path
        self.ok = 0
        self.failures = []
        self.halt = threading.Event()

    def run(self):
        family = socket.AF_UNIX if self.client_path else socket.AF_INET
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            if self.client_path:
                s.bind(self.client_path)
            s.settimeout(IO_TIMEOUT)
            n = 0
            while not self.halt.is_set():
                msg = b"dgram %d" % n
                n += 1
                try:
                    s.sendto(msg, self.addr)
                    got = s.recvfrom(65536)[0]
                    if got == msg:
                        self.ok += 1
                    else:
                        self.failures.append("dgram %d: got %r" % (n, got))
                        return
                except OSError as e:
                    self.failures.append("dgram %d: %r" % (n, e))
                    return

    def stop(self):
        self.halt.set()
        self.join(IO_TIMEOUT * 2)
        if self.is_alive():
            raise AssertionError("datagram loop hung")


class LifecycleCase(DaemonTestCase):

    def new_daemon(self, listeners, **kw):
        """A Berthd whose config can still be edited before start()."""
        d = Berthd(self.tmp, listeners, **kw)
        self._daemons.append(d)
        return d

    def reload_ok(self, d):
        self.assertTrue(d.reload(), "reload failed:\n" + d.log())

    def wait_drained(self, d, timeout=START_TIMEOUT):
        """Only the serving generation's workers are left."""
        return d.wait_status(
            lambda s: all(w["generation"] == s["generation"] for w in s["workers"]),
            "old generations to drain", timeout)


class Reload(LifecycleCase):

    def setUp(self):
        super().setUp()
        self.usock = os.path.join(self.tmp, "echo.sock")
        self.d = self.daemon(echo_listeners(self.usock), workers=2)
        self.d.wait_serving()
        self.port = self.d.port("tcp")
        self.tcp = (socket.AF_INET, ("127.0.0.1", self.port))
        self.unix = (socket.AF_UNIX, self.usock)

    def test_ten_sighups_under_connection_loops_fail_nothing(self):
        ino = os.stat(self.usock).st_ino
        loops = [EchoLoad(*self.tcp), EchoLoad(*self.unix)]
        for t in loops:
            t.start()
        try:
            wait_until(lambda: all(t.ok > 5 for t in loops), IO_TIMEOUT, what="loops to run")
            marks = []
            for i in range(10):
                self.reload_ok(self.d)
                marks.append([t.ok for t in loops])
                time.sleep(0.05)
            # Traffic went on between reloads, not only before and after.
            wait_until(lambda: all(t.ok > marks[-1][k] + 5 for k, t in enumerate(loops)),
                       IO_TIMEOUT, what="loops to go on after the last reload")
        finally:
            for t in loops:
                t.stop()
        print("connections across 10 reloads: tcp %d, unix %d" % (loops[0].ok, loops[1].ok))
        for t in loops:
            self.assertEqual(t.failures, [], "failed connections across reloads")
        st = self.d.status()
        self.assertEqual(st["generation"], 11)
        self.assertEqual(st["reloads_ok"], 10)
        self.assertEqual(st["reloads_failed"], 0)
        # Counters survive reloads: every connection made is counted once.
        self.assertEqual(self.d.listener("tcp", st)["accepted"], loops[0].ok)
        self.assertEqual(self.d.listener("unix", st)["accepted"], loops[1].ok)
        # The kept unix listener's file is the one bound at start, never re-created.
        self.assertEqual(os.stat(self.usock).st_ino, ino)
        self.wait_drained(self.d)
        self.assertEqual(self.d.stop(), 0)

    def test_datagrams_across_reloads_all_answered(self):
        """udp and unixgram sockets are kept too: a datagram sent while the generations
        change hands waits in the socket's buffer and is answered by one of them."""
        gpath = os.path.join(self.tmp, "g.dgram")
        self.d.write_config(echo_listeners(self.usock, f"""
            [udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo

            [gram]
            protocol = unixgram
            address = {gpath}
            handler = echo
            """), workers=2)
        self.reload_ok(self.d)
        self.assertEqual(self.d.port("tcp"), self.port, "the kept tcp listener changed port")
        loops = [DatagramLoop(self.d.bound("udp")),
                 DatagramLoop(gpath, os.path.join(self.tmp, "client.dgram"))]
        for t in loops:
            t.start()
        try:
            wait_until(lambda: all(t.ok > 5 for t in loops), IO_TIMEOUT, what="loops to run")
            for i in range(5):
                self.reload_ok(self.d)
                time.sleep(0.05)
            mark = [t.ok for t in loops]
            wait_until(lambda: all(t.ok > mark[k] + 5 for k, t in enumerate(loops)),
                       IO_TIMEOUT, what="loops to go on after the last reload")
        finally:
            for t in loops:
                t.stop()
        for t in loops:
            self.assertEqual(t.failures, [], "datagrams lost across reloads")
        self.assertEqual(self.d.stop(), 0)

    def test_connection_opened_before_reload_is_served_after(self):
        c = stream_connect(*self.tcp)
        u = stream_connect(*self.unix)
        try:
            self.assertEqual(line_request(c, "before"), "before\n")
            self.assertEqual(line_request(u, "before"), "before\n")
            self.reload_ok(self.d)
            st = self.d.status()
            self.assertEqual(st["generation"], 2)
            draining = [w for w in st["workers"] if w["generation"] == 1]
            self.assertTrue(draining and all(w["state"] == "draining" for w in draining),
                            st["workers"])
            self.assertEqual(line_request(c, "after"), "after\n")
            self.assertEqual(line_request(u, "after"), "after\n")
            # And new connections go to the new generation.
            self.assertEqual(stream_echo(*self.tcp, b"new\n"), b"new\n")
            # A second reload while generation 1 still drains: three generations at once.
            self.reload_ok(self.d)
            self.assertEqual(self.d.status()["generation"], 3)
            self.assertEqual(line_request(c, "after two"), "after two\n")
            self.assertEqual(line_request(u, "after two"), "after two\n")
        finally:
            c.close()
            u.close()
        # Once its connections are done, the old generation leaves.
        self.wait_drained(self.d)
        self.assertEqual(self.d.stop(), 0)

    def test_bad_config_on_reload_keeps_old_generation(self):
        pids = sorted(self.d.worker_pids())
        self.d.write_config(echo_listeners(self.usock, """
            [broken]
            protocol = tcp
            address = 127.0.0.1:1
            handler = echo
            concurrency = lots
            """), workers=2)
        self.assertFalse(self.d.reload())
        self.d.wait_log(r"reload failed, generation 1 goes on serving")
        self.d.wait_log(r"%s:\d+: concurrency 'lots'" % re.escape(self.d.conf))
        st = self.d.status()
        self.assertEqual((st["generation"], st["reloads_ok"], st["reloads_failed"]), (1, 0, 1))
        self.assertEqual(sorted(self.d.worker_pids()), pids)
        self.assertEqual(stream_echo(*self.tcp, b"still\n"), b"still\n")
        self.assertEqual(stream_echo(*self.unix, b"still\n"), b"still\n")
        self.assertEqual(self.d.stop(), 0)

    def test_bad_plugins_on_reload_keep_old_generation(self):
        pids = sorted(self.d.worker_pids())
        bad = [
            (built_test_plugin("badabi"), "", r"badabi\.so.*ABI"),
            (built_test_plugin("nosym"), "", r"nosym\.so.*berth_handler"),
            (built_test_plugin("good"), "greeting = reject-me",
             r"%s:\d+: good plugin refuses greeting" % re.escape(self.d.conf)),
        ]
        c = stream_connect(*self.tcp)
        ports = []
        try:
            for n, (handler, option, why) in enumerate(bad, 1):
                # Port 0 on a new address each time (127.0.0.2, .3, .4): a failed reload's
                # socket may not be closed yet when the next reload comes, and the same
                # address would take it over. Its port is in the log: a failed generation
                # never reaches status.
                host = "127.0.0.%d" % (n + 1)
                self.d.write_config(echo_listeners(self.usock, f"""
                    [plugin]
                    protocol = tcp
                    address = {host}:0
                    handler = {handler}
                    {option}
                    """), workers=2)
                self.assertFalse(self.d.reload(), handler)
                self.d.wait_log(why, IO_TIMEOUT)
                m = re.search(r"(?m)listener plugin bound to %s:(\d+)$" % re.escape(host),
                              self.d.log())
                self.assertTrue(m, "no port logged for [plugin] on " + host)
                ports.append((host, int(m.group(1))))
                st = self.d.status()
                self.assertEqual((st["generation"], st["reloads_failed"]), (1, n))
                self.assertEqual(sorted(self.d.worker_pids()), pids)
                self.assertEqual(line_request(c, "on %d" % n), "on %d\n" % n)
                self.assertEqual(stream_echo(*self.unix, b"still\n"), b"still\n")
        finally:
            c.close()
        # The failed generations' workers are gone, and a port opened for one of them was
        # closed again.
        self.wait_drained(self.d)
        for addr in ports:
            with self.assertRaises(ConnectionRefusedError):
                stream_connect(socket.AF_INET, addr).close()
        self.assertIn("reload failed, generation 1 goes on serving", self.d.log())
        # A good config after all that reloads fine.
        self.d.write_config(echo_listeners(self.usock), workers=2)
        self.reload_ok(self.d)
        self.assertEqual(stream_echo(*self.tcp, b"ok\n"), b"ok\n")
        self.assertEqual(self.d.stop(), 0)

    def test_second_sighup_during_a_reload_is_queued(self):
        """A SIGHUP while generation 2 is still starting is queued, not lost and not run
        at once: it runs after generation 2 is up, with the config as it is by then."""
        # open_delay holds each new worker in listener_open: the reload stays in progress
        # (generation 2 "starting") long enough for the test to see it and signal again.
        self.d.write_config(echo_listeners(self.usock, f"""
            [slow]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("good")}
            open_delay = 3s
            """), workers=2)
        self.d.signal(signal.SIGHUP)
        st = self.d.wait_status(
            lambda s: any(w["generation"] == 2 and w["state"] == "starting"
                          for w in s["workers"]), "generation 2 to be starting")
        self.assertEqual(st["reloads_ok"], 0)
        port = int(self.d.wait_log(r"listener slow bound to 127\.0\.0\.2:(\d+)$").group(1))
        # The config the queued reload must pick up: [slow] gone, [later] new.
        self.d.write_config(echo_listeners(self.usock, f"""
            [later]
            protocol = tcp
            address = 127.0.0.3:0
            handler = echo
            """), workers=2)
        self.d.signal(signal.SIGHUP)
        self.d.wait_log(r"reload queued")
        # Still the first reload in progress when the second was queued: nothing done yet.
        st = self.d.status()
        self.assertEqual(st["reloads_ok"] + st["reloads_failed"], 0,
                         "the first reload had ended before the second SIGHUP")
        st = self.d.wait_status(lambda s: s["reloads_ok"] + s["reloads_failed"] >= 2,
                                "two reloads", START_TIMEOUT * 2)
        self.assertEqual((st["reloads_ok"], st["reloads_failed"], st["generation"]), (2, 0, 3))
        # In order: generation 2 came up, and only then did the queued reload start.
        log = self.d.log()
        queued = log.index("reload queued")
        gen2_up = log.index("reloaded: generation 2", queued)
        self.assertGreater(log.index("reloading", gen2_up), gen2_up, log)
        # Generation 3 runs the config written before the second SIGHUP.
        self.assertEqual(stream_echo(socket.AF_INET, self.d.bound("later"), b"q\n"), b"q\n")
        self.wait_drained(self.d)
        with self.assertRaises(ConnectionRefusedError):
            stream_connect(socket.AF_INET, ("127.0.0.2", port)).close()
        self.assertEqual(self.d.stop(), 0)


class FirstGeneration(LifecycleCase):

    def test_sighup_while_the_first_generation_starts_runs_once_it_is_up(self):
        """A SIGHUP that comes before generation 1 is ready (a unit's ExecReload racing its
        start) is queued, and runs once generation 1 serves: not lost."""
        d = self.new_daemon(f"""
            [slow]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("good")}
            open_delay = 2s
            """, workers=1)
        d.start()
        d.wait_log(r"worker 1 of generation 1 started")
        d.signal(signal.SIGHUP)
        d.wait_log(r"reload queued")
        st = d.wait_status(lambda s: s["reloads_ok"] >= 1, "the queued reload",
                           START_TIMEOUT * 2)
        self.assertEqual((st["reloads_ok"], st["reloads_failed"], st["generation"]), (1, 0, 2))
        self.assertEqual(d.stop(), 0)

class ListenerDiff(LifecycleCase):

    def test_listener_added_and_removed_kept_one_untouched(self):
        gone_sock = os.path.join(self.tmp, "gone.sock")
        new_sock = os.path.join(self.tmp, "new.sock")

        def conf(*sections):
            text = ""
            for name, proto, addr in sections:
                text += f"""
                    [{name}]
                    protocol = {proto}
                    address = {addr}
                    handler = echo
                    """
            return text
        # Three tcp addresses: port 0 on 127.0.0.1..3 (new must not be gone's address, or it
        # would take over gone's socket).
        d = self.daemon(conf(("keep", "tcp", "127.0.0.1:0"),
                             ("gone", "tcp", "127.0.0.2:0"),
                             ("gone_unix", "unix", gone_sock)))
        d.wait_serving()
        keep, gone = d.bound("keep"), d.bound("gone")
        on_keep = stream_connect(socket.AF_INET, keep)
        on_gone = stream_connect(socket.AF_INET, gone)
        try:
            self.assertEqual(line_request(on_keep, "a"), "a\n")
            self.assertEqual(line_request(on_gone, "a"), "a\n")
            d.write_config(conf(("keep", "tcp", "127.0.0.1:0"),
                                ("new", "tcp", "127.0.0.3:0"),
                                ("new_unix", "unix", new_sock)))
            self.reload_ok(d)
            self.assertEqual(d.bound("keep"), keep, "the kept listener changed port")
            self.assertEqual(stream_echo(socket.AF_INET, d.bound("new"), b"n\n"), b"n\n")
            self.assertEqual(stream_echo(socket.AF_UNIX, new_sock, b"n\n"), b"n\n")
            self.assertEqual(stream_echo(socket.AF_INET, keep, b"k\n"), b"k\n")
            # The old generation still serves what it had, on the removed listener too.
            self.assertEqual(line_request(on_keep, "b"), "b\n")
            self.assertEqual(line_request(on_gone, "b"), "b\n")
        finally:
            on_keep.close()
            on_gone.close()
        # Removed listeners close once no generation uses them; the kept one never did.
        d.wait_log(r"closing listener gone \(")
        d.wait_log(r"closing listener gone_unix \(")
        with self.assertRaises(ConnectionRefusedError):
            stream_connect(socket.AF_INET, gone).close()
        wait_until(lambda: not os.path.exists(gone_sock), IO_TIMEOUT,
                   what="the removed unix socket file to go")
        self.assertNotIn("closing listener keep", d.log())
        names = sorted(l["name"] for l in d.status()["listeners"])
        self.assertEqual(names, ["keep", "new", "new_unix"])
        self.assertEqual(d.stop(), 0)


    def test_kept_listener_takes_its_new_settings(self):
        """Same address, new allow, concurrency and mode: the socket is kept (same inode,
        never closed) and the new generation applies the new settings."""
        path = os.path.join(self.tmp, "kept.sock")

        def conf(allow, mode):
            return f"""
                [t]
                protocol = tcp
                address = 127.0.0.1:0
                handler = echo
                allow = {allow}

                [u]
                protocol = unix
                address = {path}
                handler = echo
                mode = {mode}
                """
        d = self.daemon(conf("127.0.0.0/8", "0660"))
        d.wait_serving()
        port = d.port("t")
        ino = os.stat(path).st_ino
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o660)
        d.write_config(conf("10.0.0.0/8", "0600"))
        self.reload_ok(d)
        d.wait_serving()
        self.assertEqual(os.stat(path).st_ino, ino)
        self.assertEqual(os.stat(path).st_mode & 0o777, 0o600)
        self.assertEqual(d.port("t"), port, "the kept listener changed port")
        with stream_connect(socket.AF_INET, ("127.0.0.1", port)) as s:
            self.assertTrue(peer_closed(s), "the new allow rule is not applied")
        d.wait_status(lambda st: d.listener("t", st)["refused_acl"] == 1, "refused_acl",
                      IO_TIMEOUT)
        self.assertEqual(d.stop(), 0)

    def test_renamed_listener_keeps_its_socket_under_the_new_name(self):
        d = self.daemon(f"""
            [before]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """)
        d.wait_serving()
        port = d.port("before")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"a\n"), b"a\n")
        d.write_config(f"""
            [after]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """)
        self.reload_ok(d)
        self.wait_drained(d)
        self.assertEqual(d.port("after"), port, "the renamed listener changed port")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"b\n"), b"b\n")
        st = d.status()
        self.assertEqual([l["name"] for l in st["listeners"]], ["after"],
                         "status names a renamed listener by its old section name")
        # The counters are the socket's: they carry over.
        self.assertEqual(d.listener("after", st)["accepted"], 2)
        self.assertEqual(d.stop(), 0)

    def test_unix_listener_switched_to_unixgram_by_reload(self):
        """Same path, other protocol: the old socket is removed and a new one made there.
        The path's socket is berthd's own, so it is not 'in use by another process'."""
        path = os.path.join(self.tmp, "switch.sock")

        def conf(kind):
            return f"""
                [s]
                protocol = {kind}
                address = {path}
                handler = echo
                """
        d = self.daemon(conf("unix"))
        d.wait_serving()
        self.assertEqual(stream_echo(socket.AF_UNIX, path, b"stream\n"), b"stream\n")
        d.write_config(conf("unixgram"))
        self.reload_ok(d)
        self.assertEqual(unixgram_roundtrip(path, path + ".client", b"dgram"), b"dgram")
        self.assertEqual(d.stop(), 0)


class ReplacedPlugin(LifecycleCase):

    def test_new_connections_run_the_new_so_old_ones_the_old(self):
        so = os.path.join(self.tmp, "plugin.so")
        shutil.copy(built_test_plugin("good"), so)
        d = self.daemon(f"""
            [p]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {so}
            """, workers=2)
        d.wait_serving()
        port = d.port("p")
        old = stream_connect(socket.AF_INET, ("127.0.0.1", port))
        try:
            self.assertEqual(line_request(old, "version"), "good v1\n")
            # Installed the safe way: written beside, renamed into place.
            shutil.copy(built_test_plugin("good2"), so + ".new")
            os.rename(so + ".new", so)
            self.reload_ok(d)
            with stream_connect(socket.AF_INET, ("127.0.0.1", port)) as new:
                self.assertEqual(line_request(new, "version"), "good v2\n")
                self.assertEqual(line_request(new, "abc"), "v2:ABC\n")
            self.assertEqual(line_request(old, "version"), "good v1\n")
            self.assertEqual(line_request(old, "abc"), "ABC\n")
        finally:
            old.close()
        self.wait_drained(d)
        self.assertEqual(d.stop(), 0)


class Crashes(LifecycleCase):

    # A test that segfaults a worker on purpose declares it (expect_crash_report): ASan
    # turns that SIGSEGV into a report and exit status 1, which must then be there; any
    # other sanitizer report still fails the test. (abort() and SIGKILL give no report.)
    SEGV_REPORT = r"ERROR: AddressSanitizer: SEGV on unknown address"

    def conns_on_each_worker(self, d, family, addr):
        """One connection on each of the two workers; returns {pid: socket}. Which worker
        accepts is the kernel's choice (an idle one may win every time), so the worker that
        took the first is stopped (SIGSTOP) while the second connects. A worker's
        `accepted` figure tells which one took a connection."""
        def connect():
            before = {w["pid"]: w["accepted"] for w in d.status()["workers"]}
            s = stream_connect(family, addr)
            s.sendall(b"hi\n")
            self.assertEqual(recv_exact(s, 3), b"hi\n")
            after = {w["pid"]: w["accepted"] for w in d.status()["workers"]}
            pids = [p for p in after if after[p] != before.get(p)]
            self.assertEqual(len(pids), 1, (before, after))
            return pids[0], s
        found = {}
        try:
            first, s = connect()
            found[first] = s
            os.kill(first, signal.SIGSTOP)
            try:
                second, s = connect()
            finally:
                os.kill(first, signal.SIGCONT)
            found[second] = s
            self.assertEqual(len(found), 2, "both connections on worker %d" % first)
        except BaseException:
            for s in found.values():
                s.close()
            raise
        return found

    def check_crash_contained(self, d, port, conns, victim, how):
        """conns: {pid: socket}; `how(victim_socket)` brings down worker `victim`."""
        survivor = [p for p in conns if p != victim][0]
        how(conns[victim])
        st = d.wait_status(lambda s: s["worker_restarts"] >= 1, "the worker to be replaced")
        self.assertGreaterEqual(st["worker_crashes"], 1)
        d.wait_serving()
        pids = d.worker_pids()
        self.assertNotIn(victim, pids)
        self.assertIn(survivor, pids)
        self.assertEqual(len(pids), 2)
        # The dead worker's connection is gone; the other worker's is untouched.
        self.assertTrue(peer_closed(conns[victim], IO_TIMEOUT))
        self.assertEqual(line_request(conns[survivor], "survived"), "survived\n")
        for i in range(10):
            self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"x%d\n" % i),
                             b"x%d\n" % i)
        # Logged with its signal (or, under ASan, the exit status ASan gives it), its
        # generation and what it served.
        self.assertRegex(d.log(), r"worker \d of generation 1 (killed by signal 11 \(Segm"
                                  r"entation fault\)|exited with status 1); it served: l;")
        # A crashed worker's connections are settled: nothing counts as still active.
        for s in conns.values():
            s.close()
        d.wait_status(lambda s: d.listener("l", s)["active"] == 0, "active back to 0")

    def test_worker_killed_with_sigsegv_is_replaced(self):
        self.expect_crash_report(self.SEGV_REPORT)
        d = self.daemon(f"""
            [l]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, workers=2)
        d.wait_serving()
        port = d.port("l")
        conns = self.conns_on_each_worker(d, socket.AF_INET, ("127.0.0.1", port))
        victim = list(conns)[0]
        self.check_crash_contained(d, port, conns, victim,
                                   lambda s: os.kill(victim, signal.SIGSEGV))
        self.assertEqual(d.stop(), 0)

    def test_plugin_crash_is_contained(self):
        self.expect_crash_report(self.SEGV_REPORT)
        d = self.daemon(f"""
            [l]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            """, workers=2)
        d.wait_serving()
        port = d.port("l")
        conns = self.conns_on_each_worker(d, socket.AF_INET, ("127.0.0.1", port))
        victim = list(conns)[1]
        self.check_crash_contained(d, port, conns, victim, lambda s: s.sendall(b"crash\n"))
        self.assertEqual(d.stop(), 0)

    def test_draining_worker_that_dies_is_not_replaced(self):
        d = self.daemon(f"""
            [l]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, workers=1)
        d.wait_serving()
        port = d.port("l")
        old_pid = d.worker_pids()[0]
        with stream_connect(socket.AF_INET, ("127.0.0.1", port)) as s:
            self.assertEqual(line_request(s, "a"), "a\n")
            self.reload_ok(d)
            d.wait_serving()
            new_pid = d.worker_pids("serving")[0]
            self.assertEqual(d.worker_pids("draining"), [old_pid])
            os.kill(old_pid, signal.SIGKILL)
            self.assertTrue(peer_closed(s))
        self.wait_drained(d)
        st = d.status()
        self.assertEqual((st["worker_restarts"], st["worker_crashes"]), (0, 0))
        self.assertEqual([w["pid"] for w in st["workers"]], [new_pid])
        self.assertEqual(d.listener("l", st)["active"], 0)
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"b\n"), b"b\n")
        self.assertEqual(d.stop(), 0)

    def test_plugin_crashes_of_a_ready_worker_are_replaced_at_once(self):
        """A crash in plugin code of a serving worker costs no waiting: its listener's
        crash_limit bounds a loop there, not a delay that would starve the other listeners."""
        d = self.daemon(f"""
            [l]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            crash_limit = 10/1m
            """, workers=1)
        d.wait_serving()
        port = d.port("l")
        for n in range(1, 4):
            with stream_connect(socket.AF_INET, ("127.0.0.1", port)) as s:
                s.sendall(b"abort\n")
                self.assertTrue(peer_closed(s))
            d.wait_status(lambda st, n=n: st["worker_restarts"] >= n, "restart %d" % n)
            d.wait_serving()
        delays = [int(x) for x in re.findall(r"replacing it in (\d+) ms", d.log())]
        self.assertEqual(delays, [0, 0, 0], d.log())
        self.assertEqual(len(re.findall(r"crashed \(signal 6\) in crashy\.so handle\(\) "
                                        r"serving \[l\]", d.log())), 3, d.log())
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"ok\n"), b"ok\n")
        self.assertEqual(d.stop(), 0)

    def test_a_worker_that_crashes_before_ready_backs_off(self):
        """A replacement that crashes while starting (here in listener_open) is retried
        after a growing delay, not in a tight loop; once the cause is gone it serves."""
        self.expect_crash_report(self.SEGV_REPORT)
        flag = os.path.join(self.tmp, "crash-on-open")
        d = self.daemon(f"""
            [l]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            crash_open_if = {flag}
            """, workers=1)
        d.wait_serving()
        port = d.port("l")
        open(flag, "w").close()
        with stream_connect(socket.AF_INET, ("127.0.0.1", port)) as s:
            s.sendall(b"abort\n")
            self.assertTrue(peer_closed(s))
        d.wait_status(lambda st: st["worker_restarts"] >= 4, "4 replacements")
        os.unlink(flag)
        d.wait_serving(timeout=60)
        delays = [int(x) for x in re.findall(r"replacing it in (\d+) ms", d.log())]
        self.assertGreaterEqual(len(delays), 4, d.log())
        self.assertEqual(delays[0], 0, "the first crash was in handle() of a ready worker")
        starting = delays[1:4]
        self.assertTrue(0 < starting[0] < starting[1] < starting[2], delays)
        self.assertRegex(d.log(), r"in crashy\.so listener_open\(\) serving \[l\]")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", port), b"ok\n"), b"ok\n")
        self.assertEqual(d.stop(), 0)


class Stopping(LifecycleCase):

    def start(self, shutdown_timeout):
        d = self.new_daemon(f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, workers=2)
        d.set_daemon_key("shutdown_timeout", shutdown_timeout)
        d.start()
        d.wait_serving()
        self.port = d.port("e")
        return d

    def test_sigterm_lets_open_connection_finish_then_exits_0(self):
        # A long shutdown_timeout: the exit must come from the connection ending.
        d = self.start("5m")
        pids = d.worker_pids(None)
        s = stream_connect(socket.AF_INET, ("127.0.0.1", self.port))
        self.assertEqual(line_request(s, "one"), "one\n")
        d.signal(signal.SIGTERM)
        d.wait_log(r"stopping: draining")
        # Both workers have taken the STOP: the idle one goes, the busy one stays for s.
        d.wait_log(r"worker \d/gen 1: draining 1 connection")
        d.wait_log(r"worker \d/gen 1: draining 0 connection")
        self.assertEqual(line_request(s, "two"), "two\n")
        self.assertIsNone(d.proc.poll(), "exited while a connection was open")
        self.assertEqual(line_request(s, "three"), "three\n")
        s.close()
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)
        self.assertIn("stopped", d.log())
        for pid in pids:
            self.assertTrue(process_gone(pid), "worker %d outlived the master" % pid)

    def test_new_clients_are_turned_away_during_the_drain(self):
        """Once stopping, berthd accepts nothing more: a new client is refused (or closed)
        at once, not left in the listen backlog until shutdown_timeout and then reset."""
        d = self.start("5m")
        with stream_connect(socket.AF_INET, ("127.0.0.1", self.port)) as s:
            self.assertEqual(line_request(s, "one"), "one\n")
            d.signal(signal.SIGTERM)
            d.wait_log(r"stopping: draining")
            try:
                late = stream_connect(socket.AF_INET, ("127.0.0.1", self.port))
            except ConnectionRefusedError:
                pass
            else:
                with late:
                    # A worker that had not yet read its STOP may still accept it, and then
                    # serves it like any open connection; what must not happen is a client
                    # left in a backlog nobody will serve.
                    late.sendall(b"late\n")
                    late.settimeout(IO_TIMEOUT)
                    try:
                        got = late.recv(16)
                    except ConnectionResetError:
                        got = b""
                    except socket.timeout:
                        self.fail("a client connecting during the drain was left waiting")
                    self.assertIn(got, (b"", b"late\n"))
            self.assertEqual(line_request(s, "two"), "two\n")
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)

    def test_shutdown_timeout_closes_what_is_left(self):
        d = self.start("1s")
        s = stream_connect(socket.AF_INET, ("127.0.0.1", self.port))
        try:
            self.assertEqual(line_request(s, "one"), "one\n")
            d.signal(signal.SIGTERM)
            self.assertTrue(peer_closed(s, IO_TIMEOUT), "not closed at shutdown_timeout")
        finally:
            s.close()
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)

    def test_second_sigterm_stops_at_once(self):
        d = self.start("5m")
        s = stream_connect(socket.AF_INET, ("127.0.0.1", self.port))
        try:
            self.assertEqual(line_request(s, "one"), "one\n")
            d.signal(signal.SIGTERM)
            d.wait_log(r"stopping: draining")
            d.signal(signal.SIGTERM)
            # Far sooner than the 5 min shutdown_timeout: the hang guard is all we wait.
            rc = d.proc.wait(IO_TIMEOUT)
            self.assertTrue(peer_closed(s, IO_TIMEOUT))
        finally:
            s.close()
        self.assertEqual(rc, 0)
        self.assertIn("stopping now", d.log())

    def test_sigterm_during_a_reload_stops_both_generations(self):
        d = self.start("5m")
        gen1 = d.worker_pids()
        d.write_config(f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("good")}
            open_delay = 1s
            """, workers=2)
        d.signal(signal.SIGHUP)
        d.wait_log(r"reloading")
        gen2 = [w["pid"] for w in d.status()["workers"] if w["generation"] == 2]
        self.assertEqual(len(gen2), 2)
        d.signal(signal.SIGTERM)
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)
        for pid in gen1 + gen2:
            wait_until(lambda: process_gone(pid), IO_TIMEOUT, what="worker %d to exit" % pid)

    def test_workers_leave_when_the_master_is_killed(self):
        """A master killed outright (OOM killer, kill -9) leaves no worker behind serving
        on its own: the control channel's EOF tells them to drain and go."""
        d = self.start("2s")
        pids = d.worker_pids()
        with stream_connect(socket.AF_INET, ("127.0.0.1", self.port)) as s:
            self.assertEqual(line_request(s, "a"), "a\n")
            d.kill()
            # The connection is still served while its worker drains...
            self.assertEqual(line_request(s, "b"), "b\n")
        # ...and the workers are gone once it has ended (or shutdown_timeout passed).
        for pid in pids:
            wait_until(lambda: process_gone(pid), IO_TIMEOUT, what="worker %d to exit" % pid)

    def test_sigint_drains_like_sigterm(self):
        d = self.start("5m")
        with stream_connect(socket.AF_INET, ("127.0.0.1", self.port)) as s:
            d.signal(signal.SIGINT)
            d.wait_log(r"stopping: draining")
            self.assertEqual(line_request(s, "still"), "still\n")
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 0)


class ReloadLeak(LifecycleCase):

    def test_master_does_not_grow_over_100_reloads(self):
        """100 reloads (listeners added and removed in turn, a bad config every tenth time):
        the master's open descriptors come back to the same count, its RSS stays flat.

        The RSS bound is 2 MiB between reload 20 and reload 100. Why that much: the master's
        RSS moves for reasons that are not leaks (malloc arenas and fragmentation, pages of
        the shared stats map first touched as worker slots are claimed, up to a few hundred
        KiB), and the warm-up before reload 20 absorbs the one-time growth. Why not more: a
        reload allocates a whole config and generation, so a per-reload leak of those costs
        tens of KiB and crosses 2 MiB over 80 reloads, and descriptors are compared exactly.
        Under ASan the quarantine is turned off so freed memory is reused (else RSS grows
        by design), and LeakSanitizer checks what is left at exit (exit status 0)."""
        usock = os.path.join(self.tmp, "leak.sock")
        # The listener added and removed in turn is a unix one: a tcp port let go of and
        # bound again 50 times could be taken meanwhile by any client on the machine.
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"ASAN_OPTIONS": (asan + ":" if asan else "") +
               "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"}
        base = echo_listeners(usock, f"""
            [udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo
            """)
        extra = textwrap.dedent(f"""
            [extra]
            protocol = unix
            address = {self.tmp}/extra.sock
            handler = {built_test_plugin("good")}
            greeting = hi
            """)
        bad = "\n[broken]\nprotocol = tcp\naddress = nowhere\nhandler = echo\n"
        d = self.daemon(base, workers=1, log_level="info", env=env)
        d.wait_serving()
        pid = d.proc.pid
        tcp, udp = d.bound("tcp"), d.bound("udp")

        def fds():
            return len(os.listdir("/proc/%d/fd" % pid))

        rss = {}
        nfds = {}
        for i in range(1, 101):
            if i % 10 == 5:
                d.write_config(base + bad, workers=1, log_level="info")
                self.assertFalse(d.reload(), "reload %d of a bad config succeeded" % i)
            else:
                d.write_config(base + (extra if i % 2 else ""), workers=1, log_level="info")
                self.reload_ok(d)
            if i in (20, 100):
                self.wait_drained(d)
                # Every old worker reaped: no zombie among the master's children, and no
                # child that is not a worker of the status.
                def settled():
                    kids = children(pid)
                    pids = {w["pid"] for w in d.status()["workers"]}
                    return kids <= pids and not any(process_gone(k) for k in kids)
                try:
                    wait_until(settled, IO_TIMEOUT, what="old workers to be reaped")
                except AssertionError:
                    kids = children(pid)
                    raise AssertionError("master children %r (gone or zombie: %r), status %r"
                                         % (kids, [k for k in kids if process_gone(k)],
                                            d.status()["workers"]))
                rss[i] = proc_rss_kib(pid)
                nfds[i] = fds()
        self.assertEqual(d.bound("tcp"), tcp, "the kept tcp listener changed port")
        self.assertEqual(d.bound("udp"), udp, "the kept udp listener changed port")
        self.assertEqual(stream_echo(socket.AF_INET, tcp, b"ok\n"), b"ok\n")
        self.assertEqual(udp_roundtrip(udp, b"ok"), b"ok")
        st = d.status()
        self.assertEqual((st["reloads_ok"], st["reloads_failed"]), (90, 10))
        self.assertEqual(nfds[100], nfds[20], "master descriptors grew over 80 reloads")
        growth = rss[100] - rss[20]
        print("master RSS: %d KiB at reload 20, %d KiB at reload 100 (%+d KiB)" %
              (rss[20], rss[100], growth))
        self.assertLess(growth, 2048, "master RSS grew %d KiB over 80 reloads" % growth)
        self.assertEqual(d.stop(), 0)
        self.assertNotIn("LeakSanitizer", d.log())


class MasterAndSignals(LifecycleCase):

    def plugin_maps(self, pid):
        """Lines of /proc/PID/maps that map a plugin (the shipped or the test ones)."""
        with open("/proc/%d/maps" % pid) as f:
            return [l for l in f if PLUGIN_DIR in l or TEST_PLUGIN_DIR in l or
                    re.search(r"/(echo|socks5|upload|good|good2|crashy)\.so$", l.strip())]

    def test_master_never_maps_plugin_code(self):
        """Plugins are loaded in the workers only: the master (root, long-lived) never has
        plugin code mapped, after start or after a reload that adds a plugin."""
        d = self.daemon(f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, workers=1)
        d.wait_serving()
        worker = d.worker_pids()[0]
        self.assertTrue(self.plugin_maps(worker), "the worker does not map echo.so: test broken")
        self.assertEqual(self.plugin_maps(d.proc.pid), [])
        d.write_config(f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [g]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("good")}
            """, workers=1)
        self.reload_ok(d)
        self.assertEqual(stream_echo(socket.AF_INET, d.bound("g"), b"hi\n"), b"HI\n")
        self.assertEqual(self.plugin_maps(d.proc.pid), [])
        self.assertEqual(d.stop(), 0)

    def test_sigusr1_reaches_a_generation_still_starting(self):
        """The log file rotated while generation 2 is still starting (held in listener_open):
        its workers, once up, write to the new file too."""
        path = os.path.join(self.tmp, "berthd.file.log")
        listeners = f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """
        d = self.new_daemon(listeners, daemon=f"log = {path}\n", workers=1)
        d.start()
        d.wait_serving()
        d.write_config(listeners + f"""
            [slow]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("good")}
            open_delay = 3s
            """, daemon=f"log = {path}\n", workers=1)
        d.signal(signal.SIGHUP)
        d.wait_status(lambda s: any(w["generation"] == 2 and w["state"] == "starting"
                                    for w in s["workers"]), "generation 2 to be starting")
        os.rename(path, path + ".1")
        d.signal(signal.SIGUSR1)
        wait_until(lambda: os.path.exists(path) and "reopened" in open(path).read(),
                   what="the master's line in the new file")
        st = d.status()
        self.assertTrue(any(w["generation"] == 2 and w["state"] == "starting"
                            for w in st["workers"]),
                        "generation 2 was up before SIGUSR1: the test proves nothing")
        st = d.wait_status(lambda s: s["reloads_ok"] == 1, "the reload to end")
        self.assertEqual(st["generation"], 2)
        self.wait_drained(d)
        self.assertEqual(stream_echo(socket.AF_INET, d.bound("slow"), b"q\n"), b"Q\n")
        self.assertEqual(d.stop(), 0)
        # Generation 2's drain lines (debug, written by its worker at stop) are in the new
        # file, none in the rotated one.
        with open(path) as f:
            self.assertRegex(f.read(), r"worker 1/gen 2: draining")
        with open(path + ".1") as f:
            self.assertNotRegex(f.read(), r"worker 1/gen 2: draining")


if __name__ == "__main__":
    unittest.main()
