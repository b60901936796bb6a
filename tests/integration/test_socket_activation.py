"""systemd socket activation: systemd-socket-activate (from systemd) passes named sockets to
berthd; each listener section named by a socket's FileDescriptorName= serves on it instead
of binding, keeps it across a reload, and a passed socket that no section names is an error
that names it.

A tcp socket with a kernel-chosen port cannot be asked of systemd-socket-activate (it wants
a port), so the test binds one itself and hands it over the way systemd does
(LISTEN_FDS/LISTEN_PID); systemd-socket-activate passes it on with its own unix socket, in
that order, named by --fdname."""
import os
import shutil
import signal
import socket
import unittest

import harness
from harness import IO_TIMEOUT, DaemonTestCase, wait_until

ACTIVATE = shutil.which("systemd-socket-activate")


def echo_once(sock, data):
    sock.sendall(data)
    return harness.recv_exact(sock, len(data), strict=True)


def connect_when_listening(sock, path):
    """connect() to the unix socket systemd-socket-activate made: its file appears at bind(),
    a moment before listen(), so ECONNREFUSED then means "not yet", not "refused"."""
    def attempt():
        try:
            sock.connect(path)
            return True
        except ConnectionRefusedError:
            return False
    wait_until(attempt, what="systemd-socket-activate to listen on " + path)


@unittest.skipUnless(ACTIVATE, "systemd-socket-activate is not installed")
class SocketActivation(DaemonTestCase):
    def activated(self, listeners, names, tcp):
        """A Berthd started under systemd-socket-activate: fd 3 is `tcp` (passed through),
        fd 4 the unix socket it listens on at self.path; `names` is --fdname."""
        self.path = os.path.join(self.tmp, "echo.sock")
        d = harness.Berthd(self.tmp, listeners)
        self._daemons.append(d)  # stopped, its exit status and log checked, by tearDown
        d.logf = open(d.log_path, "ab")
        # The tcp socket moves to fd 3; LISTEN_PID=$$ is the shell's pid, which exec keeps
        # for systemd-socket-activate.
        n = tcp.fileno()
        move = "" if n == 3 else "exec 3<&%d %d<&-; " % (n, n)
        argv = ["sh", "-c", move + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", ACTIVATE,
                "-l", self.path, "--fdname=" + names, "--", harness.BERTHD, "-c", d.conf]
        d.proc = harness._Proc(argv, stdout=d.logf, stderr=harness.subprocess.STDOUT,
                               env=d.env, pass_fds=[n])
        wait_until(lambda: os.path.exists(self.path), what="systemd-socket-activate listening")
        return d

    def setUp(self):
        super().setUp()
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(16)
        self.port = self.tcp.getsockname()[1]

    def tearDown(self):
        self.tcp.close()
        super().tearDown()

    def test_named_sockets_are_used_and_kept_across_a_reload(self):
        listeners = f"""
            [echo-tcp]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = echo

            [echo-unix]
            protocol = unix
            address = {os.path.join(self.tmp, "echo.sock")}
            handler = echo

            [echo-bound]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo
            """
        d = self.activated(listeners, "echo-tcp:echo-unix", self.tcp)
        # The first connection is what makes systemd-socket-activate start berthd; it waits
        # in the backlog and is served once the workers are.
        first = socket.socket(socket.AF_UNIX)
        first.settimeout(IO_TIMEOUT)
        connect_when_listening(first, self.path)
        self.assertEqual(echo_once(first, b"first\n"), b"first\n")
        wait_until(d.serving, what="berthd to serve")
        self.tcp.close()  # only berthd holds the tcp socket now
        log = d.log()
        self.assertIn("[echo-tcp] uses the socket systemd passed (FileDescriptorName=echo-tcp), "
                      "bound to 127.0.0.1:%d" % self.port, log)
        self.assertIn("[echo-unix] uses the socket systemd passed", log)
        self.assertIn("listening on tcp 127.0.0.2:0 for [echo-bound]", log)
        self.assertEqual(d.listener("echo-tcp")["bound"], "127.0.0.1:%d" % self.port)
        self.assertEqual(d.listener("echo-unix")["bound"], self.path)
        ino = os.stat(self.path).st_ino

        held = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.assertEqual(echo_once(held, b"before\n"), b"before\n")
        self.assertTrue(d.reload())
        # The passed sockets were neither closed nor bound again; the unix file is the same.
        self.assertEqual(d.log().count("uses the socket systemd passed"), 2, d.log())
        self.assertNotIn("closing listener echo-tcp", d.log())
        self.assertEqual(os.stat(self.path).st_ino, ino)
        self.assertEqual(echo_once(held, b"during\n"), b"during\n")
        held.close()
        wait_until(lambda: all(w["generation"] == 2 for w in d.status()["workers"]),
                   what="generation 1 to drain")
        for _ in range(3):
            with socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT) as c:
                self.assertEqual(echo_once(c, b"after\n"), b"after\n")
            with socket.socket(socket.AF_UNIX) as c:
                c.settimeout(IO_TIMEOUT)
                connect_when_listening(c, self.path)
                self.assertEqual(echo_once(c, b"after\n"), b"after\n")
        first.close()

    def test_a_passed_socket_no_listener_names_is_an_error_naming_it(self):
        listeners = f"""
            [echo-tcp]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = echo
            """
        d = self.activated(listeners, "echo-tcp:stray", self.tcp)
        with socket.socket(socket.AF_UNIX) as c:
            connect_when_listening(c, self.path)
            self.assertEqual(d.proc.wait(IO_TIMEOUT * 2), 78)
        self.assertRegex(d.log(), r'systemd passed a socket named "stray" '
                                  r'\(FileDescriptorName=stray, fd 4\) but no listener section '
                                  r'\[stray\] uses it')

    def test_a_passed_socket_of_the_wrong_kind_is_an_error(self):
        listeners = f"""
            [echo-tcp]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = echo

            [echo-unix]
            protocol = udp
            address = 127.0.0.2:0
            handler = echo
            """
        d = self.activated(listeners, "echo-tcp:echo-unix", self.tcp)
        with socket.socket(socket.AF_UNIX) as c:
            connect_when_listening(c, self.path)
            self.assertEqual(d.proc.wait(IO_TIMEOUT * 2), 78)
        self.assertIn("the socket systemd passed as echo-unix is a unix stream socket; "
                      "protocol = udp wants a inet datagram one", d.log())


if __name__ == "__main__":
    unittest.main()
