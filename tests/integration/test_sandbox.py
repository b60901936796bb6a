"""Issue 18: each worker confines itself (Landlock and seccomp) once its listeners are open.
The plugin tests/plugins/escape.c tries, from handle(), what an attacker in a worker would:
read /etc/shadow and a file outside what its listener declared, write outside its folder,
connect() and bind() TCP, execve /bin/sh, ptrace its sibling. Each is refused with the errno
the sandbox promises; with sandbox_violation = eperm the worker goes on serving, with kill it
dies of SIGSYS, the log names the listener, and it is replaced. With isolate = yes a
listener's own workers get only that listener's declarations."""
import errno
import os
import re
import socket
import unittest

from harness import (IO_TIMEOUT, DaemonTestCase, built_test_plugin, check_config,
                     line_request, stream_connect, wait_until)


def ask(sock, line):
    """One request to the escape plugin: 0 for "ok", else the errno it got."""
    reply = line_request(sock, line).strip()
    if reply == "ok":
        return 0
    m = re.fullmatch(r"errno (\d+)", reply)
    if not m:
        raise AssertionError("escape answered %r to %r" % (reply, line))
    return int(m.group(1))


class Sandbox(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.up = os.path.join(self.tmp, "up")
        self.ro = os.path.join(self.tmp, "ro")
        os.mkdir(self.up)
        os.mkdir(self.ro)
        for path in (os.path.join(self.ro, "ok.txt"), os.path.join(self.tmp, "secret.txt")):
            with open(path, "w") as f:
                f.write("x\n")
        # A port that listens, so a connect() the sandbox lets through would succeed.
        self.target = socket.socket()
        self.target.bind(("127.0.0.1", 0))
        self.target.listen(16)
        self.addCleanup(self.target.close)
        self.target_port = self.target.getsockname()[1]

    def start(self, daemon="", workers=2, extra=""):
        self.d = self.daemon(f"""
            [escape]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("escape")}
            dir = {self.up}
            read = {self.ro}
            {extra}
            """, daemon=daemon, workers=workers, log_level="info")
        st = self.d.wait_serving()
        self.port = self.d.port("escape")
        return st

    def conn(self, addr=None):
        s = stream_connect(socket.AF_INET, addr or ("127.0.0.1", self.port))
        self.addCleanup(s.close)
        return s

    def landlock(self, st):
        abi = st["workers"][0]["sandbox"]["landlock_abi"]
        if abi == 0:
            self.skipTest("this kernel has no Landlock")
        return abi

    def test_every_escape_is_refused_and_the_worker_serves_on(self):
        st = self.start()
        abi = self.landlock(st)
        for w in st["workers"]:
            self.assertTrue(w["sandbox"]["seccomp"], w)
            self.assertGreater(w["sandbox"]["rules"], 2, w)
        self.assertRegex(self.d.log(), r"sandbox on: Landlock ABI %d" % abi)
        s = self.conn()
        me = int(line_request(s, "pid").strip())
        sibling = [p for p in self.d.worker_pids() if p != me][0]

        self.assertEqual(ask(s, "read /etc/shadow"), errno.EACCES)
        self.assertEqual(ask(s, "read " + os.path.join(self.tmp, "secret.txt")), errno.EACCES)
        self.assertEqual(ask(s, "read " + os.path.join(self.ro, "ok.txt")), 0)
        self.assertEqual(ask(s, "write " + os.path.join(self.up, "new")), 0)
        self.assertEqual(ask(s, "write " + os.path.join(self.tmp, "outside")), errno.EACCES)
        self.assertEqual(ask(s, "write " + os.path.join(self.ro, "ok.txt")), errno.EACCES)
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "outside")))
        if abi >= 4:
            self.assertEqual(ask(s, "connect %d" % self.target_port), errno.EACCES)
            self.assertEqual(ask(s, "bind"), errno.EACCES)
        self.assertEqual(ask(s, "exec"), errno.EPERM)
        self.assertEqual(ask(s, "ptrace %d" % sibling), errno.EPERM)
        # The same worker answers on, on this connection and on new ones.
        self.assertEqual(int(line_request(s, "pid").strip()), me)
        self.assertEqual(ask(self.conn(), "read " + os.path.join(self.ro, "ok.txt")), 0)
        self.assertEqual(sorted(self.d.worker_pids()), sorted([me, sibling]))

    def test_a_declared_port_may_be_reached(self):
        st = self.start(extra="connect = %d" % self.target_port)
        if self.landlock(st) < 4:
            self.skipTest("Landlock ABI 4 (TCP rules) needed")
        s = self.conn()
        self.assertEqual(ask(s, "connect %d" % self.target_port), 0)
        other = socket.socket()
        other.bind(("127.0.0.1", 0))
        other.listen(1)
        self.addCleanup(other.close)
        self.assertEqual(ask(s, "connect %d" % other.getsockname()[1]), errno.EACCES)

    def test_kill_on_violation_replaces_the_worker_and_names_the_listener(self):
        self.start(daemon="sandbox_violation = kill\n", workers=1)
        s = self.conn()
        before = int(line_request(s, "pid").strip())
        s.sendall(b"exec\n")
        s.settimeout(IO_TIMEOUT)
        try:
            self.assertEqual(s.recv(64), b"")  # the worker died: no answer, the conn ends
        except ConnectionResetError:
            pass
        self.d.wait_log(r"worker 1 of generation 1 crashed \(signal 31\) in escape\.so "
                        r"handle\(\) serving \[escape\]: a sandbox violation")
        wait_until(lambda: self.d.serving() and self.d.worker_pids() != [before],
                   what="the worker to be replaced")
        after = self.conn()
        self.assertNotEqual(int(line_request(after, "pid").strip()), before)
        self.assertEqual(ask(after, "read " + os.path.join(self.ro, "ok.txt")), 0)

    def test_off_confines_nothing(self):
        st = self.start(daemon="sandbox = off\n")
        for w in st["workers"]:
            self.assertEqual(w["sandbox"], {"landlock_abi": 0, "rules": 0, "seccomp": False})
        self.assertIn("sandbox off (sandbox = off)", self.d.log())
        s = self.conn()
        self.assertEqual(ask(s, "write " + os.path.join(self.tmp, "outside")), 0)
        self.assertEqual(ask(s, "connect %d" % self.target_port), 0)
        rc, out = check_config(self.d.conf)
        self.assertEqual(rc, 0, out)
        self.assertIn("sandbox off", out)

    def test_berthd_t_says_what_workers_apply(self):
        path = os.path.join(self.tmp, "t.conf")
        with open(path, "w") as f:
            f.write(f"[daemon]\nsandbox_violation = kill\n\n[e]\nprotocol = tcp\n"
                    f"address = 127.0.0.1:0\nhandler = {built_test_plugin('escape')}\n")
        rc, out = check_config(path)
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"sandbox on: (Landlock ABI \d+ .*)?seccomp deny-list \(kill\)")
        for bad, why in (("sandbox = maybe", "must be on or off"),
                         ("sandbox_violation = ignore", "must be eperm or kill")):
            with open(path, "w") as f:
                f.write(f"[daemon]\n{bad}\n")
            rc, out = check_config(path)
            self.assertNotEqual(rc, 0)
            self.assertIn(why, out)

    def test_isolate_cuts_the_sandbox_to_the_listener(self):
        other = os.path.join(self.tmp, "other")
        os.mkdir(other)
        self.d = self.daemon(f"""
            [alone]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("escape")}
            dir = {self.up}
            isolate = yes

            [shared]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("escape")}
            dir = {other}
            """, workers=2, log_level="info")
        st = self.d.wait_serving()
        self.landlock(st)
        alone = self.conn(self.d.bound("alone"))
        shared = self.conn(self.d.bound("shared"))
        self.assertEqual(ask(alone, "write " + os.path.join(self.up, "a")), 0)
        self.assertEqual(ask(alone, "write " + os.path.join(other, "a")), errno.EACCES)
        self.assertEqual(ask(shared, "write " + os.path.join(other, "b")), 0)
        self.assertEqual(ask(shared, "write " + os.path.join(self.up, "b")), errno.EACCES)


if __name__ == "__main__":
    unittest.main()
