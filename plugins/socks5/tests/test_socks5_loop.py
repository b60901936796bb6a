"""SOCKS5 through itself (issue 9 #1): the host refuses an outbound connect to any of
berthd's own listening addresses, whatever allow_dest says, so one client cannot chain
thousands of sessions through the proxy by sending nested CONNECTs as early data.

Every destination is on loopback (or another address of this host, for the wildcard case).
"""
import os
import socket
import subprocess
import tempfile
import threading
import unittest

from harness import IO_TIMEOUT, BerthTestCase
from clients import read_reply, recv_strict, request
from test_socks5 import CLEAN_ENV, _HTTP4, _QuietHandler

NESTED = 5000  # CONNECTs in the attacker's one write


def greeting_and_connect(host, port):
    return b"\x05\x01\x00" + request(1, host, port)


def other_local_ipv4():
    """A non-loopback IPv4 address of this host, or None."""
    try:
        out = subprocess.run(["ip", "-4", "-o", "addr", "show"], capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    for line in out.splitlines():
        parts = line.split()
        if "inet" in parts:
            ip = parts[parts.index("inet") + 1].split("/")[0]
            if not ip.startswith("127."):
                return ip
    return None


class Socks5LoopTest(BerthTestCase):
    @classmethod
    def setUpClass(cls):
        cls._www = tempfile.TemporaryDirectory(prefix="berth-socks5-loop-www-")
        with open(os.path.join(cls._www.name, "hello.txt"), "wb") as f:
            f.write(b"hello through socks5\n")
        handler = lambda *a, **kw: _QuietHandler(*a, directory=cls._www.name, **kw)  # noqa: E731
        cls.http = _HTTP4(("127.0.0.1", 0), handler)
        cls.http_port = cls.http.server_address[1]
        threading.Thread(target=cls.http.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        cls.http.shutdown()
        cls.http.server_close()
        cls._www.cleanup()

    def start_proxy(self, bind="127.0.0.1", allow="127.0.0.0/8"):
        # Port 0: the loop check must know the port the kernel chose, not the configured 0.
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = %s:0\nhandler = socks5\nallow_dest = %s\n"
            % (bind, allow), wait=True)
        self.port = self.d.port("socks")
        return self.d

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def reply_for(self, host, port):
        s = self.connect()
        s.sendall(greeting_and_connect(host, port))
        self.assertEqual(recv_strict(s, 2), b"\x05\x00")
        rep, _, _ = read_reply(s)
        s.close()
        return rep

    def curl_ok(self):
        r = subprocess.run(["curl", "-sS", "--max-time", "60", "--socks5",
                            "127.0.0.1:%d" % self.port,
                            "http://127.0.0.1:%d/hello.txt" % self.http_port],
                           capture_output=True, env=CLEAN_ENV, timeout=120)
        self.assertEqual((r.returncode, r.stdout), (0, b"hello through socks5\n"),
                         r.stderr.decode(errors="replace"))

    def test_connect_to_own_address_gets_reply_2(self):
        self.start_proxy()
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port), 0)
        self.assertEqual(self.reply_for("127.0.0.1", self.port), 2)
        # v4-mapped IPv6 is the same address.
        self.assertEqual(self.reply_for("::ffff:127.0.0.1", self.port), 2)
        self.d.wait_log(r"refused a connect to 127\.0\.0\.1 port %d .*own listener \[socks\]"
                        % self.port)

    def test_name_resolving_to_own_address_is_refused(self):
        self.start_proxy()
        self.assertEqual(self.reply_for("localhost", self.port), 2)
        self.d.wait_log(r"refused a connect to localhost port %d" % self.port)

    def test_wildcard_listener_matches_every_local_address(self):
        self.start_proxy(bind="*", allow="0.0.0.0/0, ::/0")
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port), 0)
        for host in ("127.0.0.1", "127.0.0.2", "0.0.0.0", "localhost"):
            self.assertEqual(self.reply_for(host, self.port), 2, host)
        ip = other_local_ipv4()
        if ip is not None:
            self.assertEqual(self.reply_for(ip, self.port), 2, ip)
        # Another port of the same addresses is not the listener: tried (and refused by the
        # kernel, nothing listens there), not denied.
        self.assertEqual(self.reply_for("127.0.0.2", self.http_port), 5)

    def test_nested_connects_in_one_write_do_not_take_the_listener(self):
        self.start_proxy()
        attack = greeting_and_connect("127.0.0.1", self.port) * NESTED
        self.assertGreater(len(attack), 60000)
        a = self.connect()
        a.sendall(attack)
        # The first CONNECT is refused: nothing is chained through the proxy.
        self.assertEqual(recv_strict(a, 2), b"\x05\x00")
        rep, _, _ = read_reply(a)
        self.assertEqual(rep, 2)
        self.curl_ok()  # a well-behaved client meanwhile
        a.close()
        self.d.wait_status(lambda s: self.d.listener("socks", s)["active"] <= 1,
                           "the listener's connections to drain")
        self.curl_ok()  # and after
        st = self.d.status()
        self.assertLess(self.d.listener("socks", st)["accepted"], 10)


if __name__ == "__main__":
    unittest.main()
