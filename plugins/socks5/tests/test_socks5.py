"""Integration tests for the socks5 plugin: the real berthd, real clients (curl and raw
sockets), destinations on loopback only.

Failures that need a network the machine does not have (unreachable networks and hosts, a
name that does not resolve) are made inside a network namespace of our own (`unshare -n`)
that has only loopback: routing rules there turn chosen loopback addresses unreachable, and
the resolver has no server it can reach, so no packet leaves the namespace.
"""
import hashlib
import http.server
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import unittest

import harness
from clients import (auth_msg, crypt_hash, greet, read_reply, recv_strict,  # noqa: F401
                     request)
from harness import (BERTHD, IO_TIMEOUT, Berthd, DaemonTestCase, free_port,
                     wait_until)

BIG_SIZE = 6 * 1024 * 1024 + 123  # "several MB", not a multiple of any buffer size

# Every process we start reaches the proxy and the servers directly.
CLEAN_ENV = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}


# ------------------------------------------------------------------ servers on loopback


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


class _HTTP4(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET
    daemon_threads = True


class _HTTP6(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def free_port_both():
    """A port free on both 127.0.0.1 and ::1, so "localhost" reaches a server either way."""
    for _ in range(50):
        p = free_port()
        try:
            with socket.socket(socket.AF_INET6) as s:
                s.bind(("::1", p))
            return p
        except OSError:
            continue
    raise AssertionError("no port free on both 127.0.0.1 and ::1")


class DrainThenAnswer:
    """A TCP server on loopback that reads until the client's EOF, then answers with the
    byte count and the SHA-256 of what it read, followed by `tail` bytes, and closes. It can
    only answer once the EOF (a half-close carried through the proxy) has reached it."""

    def __init__(self, tail):
        self.tail = tail
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._one, args=(c,), daemon=True).start()

    def _one(self, c):
        with c:
            c.settimeout(IO_TIMEOUT * 3)
            h, n = hashlib.sha256(), 0
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    h.update(b)
                    n += len(b)
                c.sendall(b"%d %s\n" % (n, h.hexdigest().encode()) + self.tail)
            except OSError:
                pass

    def close(self):
        self.sock.close()


def netns_usable():
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    r = subprocess.run(["unshare", "-n", "sh", "-c", "ip link set lo up"], capture_output=True)
    return r.returncode == 0


# ------------------------------------------------------------------ raw SOCKS5 client


def assert_closed(tc, s):
    """The server ends the connection (EOF or reset) without sending anything more."""
    s.settimeout(IO_TIMEOUT)
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        return
    except socket.timeout:
        tc.fail("the server left the connection open")
    tc.assertEqual(data, b"", "expected the connection to be closed")


def recv_all(s):
    chunks = []
    while True:
        b = s.recv(1 << 20)
        if not b:
            return b"".join(chunks)
        chunks.append(b)


class NetnsBerthd(Berthd):
    """berthd alone in a new network namespace that has only loopback, after `setup` shell
    commands; reached through a unix-socket listener (a path is visible across namespaces)."""

    def __init__(self, tmp, listeners, setup, **kw):
        super().__init__(tmp, listeners, **kw)
        self.setup = setup

    def start(self, wait=None):
        script = " && ".join(["ip link set lo up"] + self.setup + ['exec "$0" -c "$1"'])
        return self.spawn(["unshare", "-n", "sh", "-c", script, BERTHD, self.conf], wait)


def unix_ready(path):
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(0.5)
            s.connect(path)
            return True
    except OSError:
        return False


# ------------------------------------------------------------------ the tests


class Socks5Test(DaemonTestCase):
    @classmethod
    def setUpClass(cls):
        cls._www = tempfile.TemporaryDirectory(prefix="berth-socks5-www-")
        cls.big = os.urandom(BIG_SIZE)
        with open(os.path.join(cls._www.name, "big.bin"), "wb") as f:
            f.write(cls.big)
        with open(os.path.join(cls._www.name, "hello.txt"), "wb") as f:
            f.write(b"hello through socks5\n")
        handler = lambda *a, **kw: _QuietHandler(*a, directory=cls._www.name, **kw)  # noqa: E731
        # A test HTTP server on one port number for both families ("localhost"): picked free.
        cls.http_port = free_port_both()
        cls.http4 = _HTTP4(("127.0.0.1", cls.http_port), handler)
        cls.http6 = _HTTP6(("::1", cls.http_port), handler)
        for srv in (cls.http4, cls.http6):
            threading.Thread(target=srv.serve_forever, daemon=True).start()

    @classmethod
    def tearDownClass(cls):
        for srv in (cls.http4, cls.http6):
            srv.shutdown()
            srv.server_close()
        cls._www.cleanup()

    # tearDown is DaemonTestCase's: the test's sockets closed first, each daemon stopped with
    # exit status 0 (so a sanitizer build reports leaks at exit), and any sanitizer report
    # in its log fails the test, wherever it points (plugin, relay, outbound, master).

    # ---- helpers

    def start_proxy(self, options="allow_dest = 127.0.0.0/8, ::1", host="127.0.0.1"):
        self.proxy_host = host
        addr = "[%s]:0" % host if ":" in host else "%s:0" % host
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = %s\nhandler = socks5\n%s\n" % (addr, options),
            wait=True)
        self.port = self.d.port("socks")
        return self.d

    def connect(self):
        fam = socket.AF_INET6 if ":" in self.proxy_host else socket.AF_INET
        s = socket.socket(fam)
        s.settimeout(IO_TIMEOUT)
        s.connect((self.proxy_host, self.port))
        self.addCleanup(s.close)
        return s

    def handshake(self, s, user=None, password=None):
        if user is None:
            greet(s)
        else:
            s.sendall(b"\x05\x01\x02")
            self.assertEqual(recv_strict(s, 2), b"\x05\x02")
            s.sendall(auth_msg(user, password))
            self.assertEqual(recv_strict(s, 2), b"\x01\x00")

    def reply_for(self, host, port, cmd=1, **auth):
        s = self.connect()
        self.handshake(s, **auth)
        s.sendall(request(cmd, host, port))
        rep, _, _ = read_reply(s)
        if rep != 0:
            assert_closed(self, s)
        return rep

    def curl(self, url, *args, hostname=False, proxy=None):
        proxy = proxy or ("[%s]:%d" % (self.proxy_host, self.port) if ":" in self.proxy_host
                          else "%s:%d" % (self.proxy_host, self.port))
        out = os.path.join(self.tmp, "curl.out")
        cmd = ["curl", "-sS", "--max-time", "120", "-o", out,
               "--socks5-hostname" if hostname else "--socks5", proxy, *args, url]
        r = subprocess.run(cmd, capture_output=True, env=CLEAN_ENV, timeout=180)
        body = b""
        if os.path.exists(out):
            with open(out, "rb") as f:
                body = f.read()
            os.unlink(out)
        return r.returncode, body, r.stderr.decode(errors="replace")

    def session_lines(self):
        """The daemon's per-session lines, but for the harness's readiness probes (a connect
        and a close, with not a byte sent)."""
        return [l for l in self.d.log().splitlines()
                if " session client=" in l and "outcome=client closed" not in l]

    def wait_sessions(self, n):
        return wait_until(lambda: len(self.session_lines()) >= n and self.session_lines(),
                          timeout=IO_TIMEOUT, what="%d session log line(s)" % n)

    def users_file(self, users):
        path = os.path.join(self.tmp, "users")
        with open(path, "w") as f:
            f.write("# name:crypt-hash\n")
            for name, h in users.items():
                f.write("%s:%s\n" % (name, h))
        return path

    def password_proxy(self):
        users = {"alice": crypt_hash("wonder land"), "bob": crypt_hash("b0b", b"$6$")}
        # A hash made by another tool, as an operator would: openssl passwd -6 (make deps
        # installs openssl; without it this is an error, not a quietly weaker test).
        users["carol"] = subprocess.run(["openssl", "passwd", "-6", "c4rol"], check=True,
                                        capture_output=True, text=True).stdout.strip()
        path = self.users_file(users)
        self.start_proxy("auth = password\nusers = %s\nallow_dest = 127.0.0.0/8, ::1\n" % path)
        return users

    # ---- curl: the happy paths

    def test_curl_ipv4_big_body(self):
        self.start_proxy()
        rc, body, err = self.curl("http://127.0.0.1:%d/big.bin" % self.http_port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(len(body), BIG_SIZE)
        self.assertTrue(body == self.big, "body differs")
        (line,) = self.wait_sessions(1)
        self.assertIn("dest=127.0.0.1:%d" % self.http_port, line)
        self.assertIn("outcome=ok", line)
        self.assertIn("user=-", line)
        m = re.search(r"up=(\d+) down=(\d+) duration=\d+\.\d{3}s", line)
        self.assertIsNotNone(m, line)
        self.assertGreater(int(m.group(1)), 0)
        self.assertGreater(int(m.group(2)), BIG_SIZE)

    def test_curl_ipv6_big_body(self):
        self.start_proxy()
        rc, body, err = self.curl("http://[::1]:%d/big.bin" % self.http_port)
        self.assertEqual(rc, 0, err)
        self.assertTrue(body == self.big, "body differs")
        (line,) = self.wait_sessions(1)
        self.assertIn("dest=[::1]:%d" % self.http_port, line)
        self.assertIn("remote=[::1]:%d" % self.http_port, line)

    def test_curl_hostname(self):
        self.start_proxy()
        rc, body, err = self.curl("http://localhost:%d/big.bin" % self.http_port, hostname=True)
        self.assertEqual(rc, 0, err)
        self.assertTrue(body == self.big, "body differs")
        (line,) = self.wait_sessions(1)
        self.assertIn("dest=localhost:%d" % self.http_port, line)

    def test_curl_proxy_on_ipv6(self):
        self.start_proxy(host="::1")
        rc, body, err = self.curl("http://127.0.0.1:%d/hello.txt" % self.http_port)
        self.assertEqual(rc, 0, err)
        self.assertEqual(body, b"hello through socks5\n")

    def test_curl_many_in_a_row(self):
        self.start_proxy()
        for i in range(20):
            rc, body, err = self.curl("http://127.0.0.1:%d/hello.txt" % self.http_port)
            self.assertEqual((rc, body), (0, b"hello through socks5\n"), err)
        self.assertEqual(len(self.wait_sessions(20)), 20)

    # ---- passwords

    def test_curl_good_passwords(self):
        users = self.password_proxy()
        creds = {"alice": "wonder land", "bob": "b0b", "carol": "c4rol"}
        for name in users:
            rc, body, err = self.curl("http://127.0.0.1:%d/big.bin" % self.http_port,
                                      "--proxy-user", "%s:%s" % (name, creds[name]))
            self.assertEqual(rc, 0, "%s: %s" % (name, err))
            self.assertTrue(body == self.big, "body differs")
        lines = self.wait_sessions(len(users))
        for name in users:
            self.assertTrue(any("user=%s " % name in l and "outcome=ok" in l for l in lines))
        log = self.d.log()
        for pw in creds.values():
            self.assertNotIn(pw, log, "a password reached the log")

    def test_curl_bad_passwords(self):
        self.password_proxy()
        for cred in ("alice:wrong", "alice:", "mallory:wonder land", "bob:wonder land"):
            rc, body, err = self.curl("http://127.0.0.1:%d/hello.txt" % self.http_port,
                                      "--proxy-user", cred)
            self.assertNotEqual(rc, 0, cred)
            self.assertEqual(body, b"")
        lines = self.wait_sessions(4)
        self.assertTrue(all("outcome=auth failed" in l for l in lines), lines)
        self.assertNotIn("wrong", self.d.log())
        self.assertNotIn("wonder", self.d.log())

    def test_curl_no_credentials_when_required(self):
        self.password_proxy()
        rc, body, _ = self.curl("http://127.0.0.1:%d/hello.txt" % self.http_port)
        self.assertNotEqual(rc, 0)
        (line,) = self.wait_sessions(1)
        self.assertIn("outcome=no acceptable auth method", line)

    def test_raw_auth_failure_reply(self):
        self.password_proxy()
        s = self.connect()
        s.sendall(b"\x05\x02\x00\x02")
        self.assertEqual(recv_strict(s, 2), b"\x05\x02")
        s.sendall(auth_msg("alice", "wonder lan"))
        self.assertEqual(recv_strict(s, 2), b"\x01\x01")
        assert_closed(self, s)

    def test_raw_auth_pipelined(self):
        """Greeting, auth, request and data in one write: each is answered in turn."""
        self.password_proxy()
        s = self.connect()
        s.sendall(b"\x05\x01\x02" + auth_msg("alice", "wonder land") +
                  request(1, "127.0.0.1", self.http_port) + b"GET /hello.txt HTTP/1.0\r\n\r\n")
        self.assertEqual(recv_strict(s, 2), b"\x05\x02")
        self.assertEqual(recv_strict(s, 2), b"\x01\x00")
        rep, addr, port = read_reply(s)
        self.assertEqual(rep, 0)
        resp = recv_all(s)
        self.assertTrue(resp.startswith(b"HTTP/1.0 200"), resp[:80])
        self.assertTrue(resp.endswith(b"hello through socks5\n"))

    def test_method_none_not_offered(self):
        self.start_proxy()
        s = self.connect()
        s.sendall(b"\x05\x01\x02")  # only username/password, which this listener does not do
        self.assertEqual(recv_strict(s, 2), b"\x05\xff")
        assert_closed(self, s)
        s = self.connect()
        s.sendall(b"\x05\x00")  # no methods at all
        self.assertEqual(recv_strict(s, 2), b"\x05\xff")
        assert_closed(self, s)

    # ---- every reply code

    def test_reply_success_bound_address(self):
        self.start_proxy()
        s = self.connect()
        self.handshake(s)
        s.sendall(request(1, "127.0.0.1", self.http_port))
        rep, addr, port = read_reply(s)
        self.assertEqual(rep, 0)
        self.assertEqual(addr, socket.inet_aton("127.0.0.1"))
        self.assertNotEqual(port, 0)
        s6 = self.connect()
        self.handshake(s6)
        s6.sendall(request(1, "::1", self.http_port))
        rep, addr, port = read_reply(s6)
        self.assertEqual(rep, 0)
        self.assertEqual(addr, socket.inet_pton(socket.AF_INET6, "::1"))
        self.assertNotEqual(port, 0)

    def test_reply_1_bad_names(self):
        self.start_proxy()
        for name in (b"", b"local\x00host"):
            s = self.connect()
            self.handshake(s)
            s.sendall(bytes([5, 1, 0, 3, len(name)]) + name + b"\x00\x50")
            self.assertEqual(read_reply(s)[0], 1)
            assert_closed(self, s)

    def test_reply_2_default_allows_nothing(self):
        self.start_proxy(options="")
        wait_until(lambda: "no allow_dest" in self.d.log(), timeout=IO_TIMEOUT,
                   what="the no-allow_dest warning")
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port), 2)
        self.assertEqual(self.reply_for("::1", self.http_port), 2)
        self.assertEqual(self.reply_for("localhost", self.http_port), 2)

    def test_reply_2_rules(self):
        self.start_proxy("allow_dest = 127.0.0.0/8:%d, [::1]:%d\ndeny_dest = 127.0.0.2\n"
                         % (self.http_port, self.http_port))
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port), 0)
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port + 1), 2)
        self.assertEqual(self.reply_for("127.0.0.2", self.http_port), 2)
        self.assertEqual(self.reply_for("::1", self.http_port), 0)
        self.assertEqual(self.reply_for("::1", 22), 2)
        self.assertEqual(self.reply_for("::ffff:127.0.0.2", self.http_port), 2)

    def test_reply_2_name_cannot_sneak_past(self):
        """Rules are checked on what a name resolves to, not on the name."""
        self.start_proxy("allow_dest = 10.0.0.0/8\n")
        self.assertEqual(self.reply_for("localhost", self.http_port), 2)
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port), 2)
        self.d.stop()
        self._daemons.remove(self.d)
        self.start_proxy("allow_dest = *\ndeny_dest = 127.0.0.0/8, ::1\n")
        self.assertEqual(self.reply_for("localhost", self.http_port), 2)
        self.assertEqual(self.reply_for("::ffff:127.0.0.1", self.http_port), 2)

    def test_reply_5_refused(self):
        self.start_proxy()
        port = free_port()  # a destination port nobody listens on (not the daemon's)
        self.assertEqual(self.reply_for("127.0.0.1", port), 5)
        (line,) = self.wait_sessions(1)
        self.assertIn("outcome=reply 5 (connection refused, ECONNREFUSED)", line)

    def test_reply_6_timeout(self):
        """A destination whose accept queue is full drops our SYNs: the connect hangs."""
        self.start_proxy("allow_dest = 127.0.0.0/8\nconnect_timeout = 300ms\n")
        with socket.socket() as lst, socket.socket() as filler:
            lst.bind(("127.0.0.1", 0))
            lst.listen(0)
            filler.connect(lst.getsockname())
            self.assertEqual(self.reply_for("127.0.0.1", lst.getsockname()[1]), 6)
            # Data sent along with the request does not change that.
            s = self.connect()
            self.handshake(s)
            s.sendall(request(1, "127.0.0.1", lst.getsockname()[1]) + b"x" * (1 << 20))
            self.assertEqual(read_reply(s)[0], 6)

    def test_reply_7_commands(self):
        self.start_proxy()
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port, cmd=2), 7)  # BIND
        self.assertEqual(self.reply_for("127.0.0.1", self.http_port, cmd=3), 7)  # UDP ASSOCIATE
        self.assertEqual(self.reply_for("localhost", self.http_port, cmd=9), 7)

    def test_reply_8_address_type(self):
        self.start_proxy()
        for atyp in (0, 2, 5, 255):
            s = self.connect()
            self.handshake(s)
            s.sendall(bytes([5, 1, 0, atyp]))  # nothing after it: judged on this byte
            self.assertEqual(read_reply(s)[0], 8)
            assert_closed(self, s)

    @unittest.skipUnless(netns_usable(), "needs unshare -n and ip (root)")
    def test_netns_unreachable_and_no_name(self):
        """3, 4 (unreachable and unresolvable) and 5, in a namespace with only loopback."""
        sock = os.path.join(self.tmp, "socks.sock")
        setup = [
            # Look at our own rules before the local table: 127.0.0.98 has no network,
            # 127.0.0.97 no host; the rest of 127/8 stays local.
            "ip rule add pref 100 lookup local", "ip rule del pref 0",
            "ip rule add pref 10 to 127.0.0.98 unreachable",
            "ip route add unreachable 127.0.0.97 table 97",
            "ip rule add pref 11 to 127.0.0.97 lookup 97",
        ]
        d = NetnsBerthd(self.tmp, "[socks]\nprotocol = unix\naddress = %s\nhandler = socks5\n"
                        "allow_dest = 127.0.0.0/8\nconnect_timeout = 5s\n" % sock, setup)
        self._daemons.append(d)
        self.d = d
        d.start(wait=lambda: unix_ready(sock))

        def reply(host):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(IO_TIMEOUT)
            self.addCleanup(s.close)
            s.connect(sock)
            self.handshake(s)
            s.sendall(request(1, host, 80))
            rep = read_reply(s)[0]
            assert_closed(self, s)
            return rep

        self.assertEqual(reply("127.0.0.98"), 3)
        self.assertEqual(reply("127.0.0.97"), 4)
        self.assertEqual(reply("no-such-host.invalid"), 4)  # no resolver reachable
        self.assertEqual(reply("127.0.0.1"), 5)
        self.assertEqual(reply("localhost"), 5)  # from /etc/hosts, then refused
        lines = self.wait_sessions(5)
        self.assertTrue(any("dest=no-such-host.invalid:80" in l and "reply 4" in l
                            for l in lines), lines)

    # ---- malformed input: close, never hang

    def test_wrong_versions_close(self):
        self.start_proxy()
        cases = [
            b"\x04\x01\x00\x50\x7f\x00\x00\x01\x00",  # SOCKS4
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",     # HTTP
            b"\x00",
        ]
        for data in cases:
            s = self.connect()
            s.sendall(data)
            assert_closed(self, s)
        # Wrong version in the request, after a good greeting.
        s = self.connect()
        self.handshake(s)
        s.sendall(b"\x04" + request(1, "127.0.0.1", 80)[1:])
        assert_closed(self, s)

    def test_wrong_auth_version_closes(self):
        self.password_proxy()
        s = self.connect()
        s.sendall(b"\x05\x01\x02")
        self.assertEqual(recv_strict(s, 2), b"\x05\x02")
        s.sendall(b"\x05" + auth_msg("alice", "wonder land")[1:])
        assert_closed(self, s)

    def test_truncated_messages_close_on_eof(self):
        self.password_proxy()
        for data in (b"\x05", b"\x05\x03\x00", b"\x05\x01\x02\x01\x05ali"):
            s = self.connect()
            s.sendall(data)
            s.shutdown(socket.SHUT_WR)
            s.settimeout(IO_TIMEOUT)
            rest = recv_all(s)
            self.assertIn(rest, (b"", b"\x05\x02"))

    def test_truncated_request_closes_on_eof(self):
        self.start_proxy()
        for cut in (1, 4, 6, 9):
            s = self.connect()
            self.handshake(s)
            s.sendall(request(1, "127.0.0.1", self.http_port)[:cut])
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_all(s), b"")

    def test_handshake_timeout(self):
        self.password_proxy()
        self.d.stop()
        self._daemons.remove(self.d)
        path = os.path.join(self.tmp, "users")
        self.start_proxy("auth = password\nusers = %s\nallow_dest = 127.0.0.0/8\n"
                         "handshake_timeout = 200ms\n" % path)
        # Silent from the start; stuck half-way through a greeting; stuck after the method.
        for data in (b"", b"\x05\x02", b"\x05\x01\x02"):
            s = self.connect()
            if data:
                s.sendall(data)
            if data == b"\x05\x01\x02":
                self.assertEqual(recv_strict(s, 2), b"\x05\x02")
            assert_closed(self, s)
        lines = self.wait_sessions(3)
        self.assertTrue(all("outcome=handshake timeout" in l for l in lines), lines)

    def test_garbage_after_greeting_is_not_a_request(self):
        self.start_proxy()
        s = self.connect()
        s.sendall(b"\x05\x01\x00" + b"\x06" + b"\xff" * 4000)
        self.assertEqual(recv_strict(s, 2), b"\x05\x00")
        assert_closed(self, s)

    # ---- half-close and early data

    def test_half_close_carried_both_ways(self):
        """The client sends 3 MB and shuts its write side; the destination answers only
        after that EOF reaches it, and the client still gets all of the answer."""
        self.start_proxy()
        tail = os.urandom(2 * 1024 * 1024 + 7)
        srv = DrainThenAnswer(tail)
        self.addCleanup(srv.close)
        upload = os.urandom(3 * 1024 * 1024 + 11)
        s = self.connect()
        self.handshake(s)
        s.sendall(request(1, "127.0.0.1", srv.port))
        self.assertEqual(read_reply(s)[0], 0)
        s.sendall(upload)
        s.shutdown(socket.SHUT_WR)
        s.settimeout(IO_TIMEOUT * 3)
        resp = recv_all(s)
        want = b"%d %s\n" % (len(upload), hashlib.sha256(upload).hexdigest().encode()) + tail
        self.assertEqual(len(resp), len(want))
        self.assertTrue(resp == want, "response differs")
        (line,) = self.wait_sessions(1)
        self.assertIn("up=%d down=%d" % (len(upload), len(want)), line)
        self.assertIn("outcome=ok", line)

    def test_early_data_and_eof_with_the_request(self):
        """Greeting, request, data and EOF all at once, before any reply."""
        self.start_proxy()
        srv = DrainThenAnswer(b"bye\n")
        self.addCleanup(srv.close)
        data = os.urandom(100000)
        s = self.connect()
        s.sendall(b"\x05\x01\x00" + request(1, "127.0.0.1", srv.port) + data)
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(recv_strict(s, 2), b"\x05\x00")
        self.assertEqual(read_reply(s)[0], 0)
        resp = recv_all(s)
        self.assertEqual(resp, b"%d %s\nbye\n" % (len(data), hashlib.sha256(data).hexdigest().encode()))

    def test_relay_idle_timeout(self):
        self.start_proxy("allow_dest = 127.0.0.0/8\nrelay_idle_timeout = 300ms\n")
        srv = DrainThenAnswer(b"")  # waits for an EOF that never comes
        self.addCleanup(srv.close)
        s = self.connect()
        self.handshake(s)
        s.sendall(request(1, "127.0.0.1", srv.port))
        self.assertEqual(read_reply(s)[0], 0)
        said = b"some bytes, then silence"
        s.sendall(said)
        assert_closed(self, s)
        (line,) = self.wait_sessions(1)
        self.assertIn("up=%d down=0" % len(said), line)
        self.assertIn("outcome=idle timeout", line)

    def test_concurrent_sessions(self):
        self.start_proxy()
        n, errors, bodies = 40, [], []

        def fetch(i):
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT) as s:
                    s.sendall(b"\x05\x01\x00" + request(1, "::1" if i % 2 else "127.0.0.1",
                                                         self.http_port) +
                              b"GET /hello.txt HTTP/1.0\r\n\r\n")
                    self.assertEqual(recv_strict(s, 2), b"\x05\x00")
                    self.assertEqual(read_reply(s)[0], 0)
                    bodies.append(recv_all(s))
            except Exception as e:  # reported below, from the test's own thread
                errors.append(repr(e))

        threads = [threading.Thread(target=fetch, args=(i,)) for i in range(n)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(IO_TIMEOUT * 3)
        self.assertEqual(errors, [])
        self.assertEqual(len(bodies), n)
        self.assertTrue(all(b.endswith(b"\r\n\r\nhello through socks5\n") for b in bodies))
        self.assertEqual(len(self.wait_sessions(n)), n)

    def test_reload_reads_users_again(self):
        self.password_proxy()
        self.users_file({"alice": crypt_hash("new secret")})
        self.d.signal(signal.SIGHUP)
        wait_until(lambda: "reloaded: generation 2" in self.d.log(), timeout=IO_TIMEOUT * 2,
                   what="the reload")
        url = "http://127.0.0.1:%d/hello.txt" % self.http_port
        rc, body, err = self.curl(url, "--proxy-user", "alice:new secret")
        self.assertEqual((rc, body), (0, b"hello through socks5\n"), err)
        rc, _, _ = self.curl(url, "--proxy-user", "alice:wonder land")
        self.assertNotEqual(rc, 0)
        rc, _, _ = self.curl(url, "--proxy-user", "bob:b0b")
        self.assertNotEqual(rc, 0)

    def test_eof_right_after_the_request(self):
        """EOF while the proxy connects (no data): the destination still sees it."""
        self.start_proxy()
        srv = DrainThenAnswer(b"bye\n")
        self.addCleanup(srv.close)
        s = self.connect()
        self.handshake(s)
        s.sendall(request(1, "127.0.0.1", srv.port))
        s.shutdown(socket.SHUT_WR)
        self.assertEqual(read_reply(s)[0], 0)
        self.assertEqual(recv_all(s), b"0 %s\nbye\n" % hashlib.sha256(b"").hexdigest().encode())

    # ---- config

    def check(self, options, protocol="tcp", address=None):
        conf = os.path.join(self.tmp, "check.conf")
        address = address or "127.0.0.1:0"
        d = Berthd(self.tmp, "[socks]\nprotocol = %s\naddress = %s\nhandler = socks5\n%s\n"
                   % (protocol, address, options))
        os.replace(d.conf, conf)
        r = subprocess.run([BERTHD, "-t", "-c", conf], capture_output=True, text=True, timeout=60)
        return r.returncode, r.stdout + r.stderr

    def test_config_errors_name_file_and_line(self):
        cases = [
            ("auth = kerberos", "auth"),
            ("allow_dest = 127.0.0.1/40", "127.0.0.1/40"),
            ("deny_dest = localhost", "localhost"),
            ("connect_timeout = soon", "soon"),
            ("handshake_timeout = 0", "handshake_timeout"),
            ("users = /nonexistent/users", "/nonexistent/users"),
            ("alow_dest = 127.0.0.1", "alow_dest"),
        ]
        for opt, needle in cases:
            rc, out = self.check(opt if opt.startswith("allow_dest") else
                                 "allow_dest = 127.0.0.1\n" + opt)
            self.assertNotEqual(rc, 0, opt)
            self.assertRegex(out, r"check\.conf:\d+: .*" + re.escape(needle), opt)

    def test_config_cross_checks(self):
        for opts, needle in (("auth = password", "needs users"),
                             ("users = %s" % self.users_file({"a": crypt_hash("x")}),
                              "auth = password")):
            rc, out = self.check(opts)
            self.assertNotEqual(rc, 0, opts)
            self.assertIn(needle, out)
        rc, out = self.check("allow_dest = ::1", protocol="udp")
        self.assertNotEqual(rc, 0)
        self.assertIn("stream", out)

    def test_config_good(self):
        users = self.users_file({"alice": crypt_hash("pw")})
        rc, out = self.check("auth = password\nusers = %s\nallow_dest = 127.0.0.0/8, [::1]:80\n"
                             "deny_dest = 127.0.0.1:22\nhandshake_timeout = 5s\n"
                             "connect_timeout = 2500ms\nrelay_idle_timeout = 1h\n" % users)
        self.assertEqual(rc, 0, out)


    # ---- log lines hold no raw client bytes

    def test_hostile_user_name_is_escaped_in_the_log(self):
        """An RFC 1929 name with control bytes, quotes, backslash, space and a high byte
        is logged as \\xHH: one line, no terminal escape, nothing a log reader misparses."""
        self.password_proxy()
        hostile = b'ev\nil\x1b[31m"\\ q\xff'
        with self.connect() as s:
            s.sendall(bytes([5, 1, 2]))
            self.assertEqual(recv_strict(s, 2), bytes([5, 2]))
            s.sendall(bytes([1, len(hostile)]) + hostile + bytes([2]) + b"pw")
            reply = recv_strict(s, 2)
            self.assertEqual(reply[0], 1)
            self.assertNotEqual(reply[1], 0, "a hostile name logged in")
        (line,) = self.wait_sessions(1)
        self.assertIn(r"user=ev\x0ail\x1b[31m\x22\x5c\x20q\xff ", line)
        log = self.d.log()
        self.assertNotIn("\x1b", log)
        self.assertNotIn("il\x1b", log)
        self.assertFalse(any(l.startswith("il") for l in log.splitlines()), log)



class HostsBerthd(Berthd):
    """berthd in a mount namespace whose /etc/hosts is `hosts` (bind-mounted): names that
    resolve, from files, to addresses the test chooses; the machine's file is untouched."""

    def __init__(self, tmp, listeners, hosts, **kw):
        super().__init__(tmp, listeners, **kw)
        self.hosts = hosts

    def start(self, wait=None):
        script = 'mount --bind "$2" /etc/hosts && exec "$0" -c "$1"'
        return self.spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script,
                           BERTHD, self.conf, self.hosts], wait)


class Socks5NamesAndBounds(DaemonTestCase):
    """A name whose first address is dead still connects (every address is tried), and a
    client that sends before the reply has at most a bounded amount held for it."""

    def proxy(self, daemon_cls=Berthd, env=None, **kw):
        d = daemon_cls(self.tmp, "[socks]\nprotocol = tcp\naddress = 127.0.0.1:0\n"
                       "handler = socks5\nallow_dest = 127.0.0.0/8\n", env=env, **kw)
        self._daemons.append(d)
        d.start(wait=True)
        self.port = d.port("socks")
        return d

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        return s

    def sessions(self, d):
        return [l for l in d.log().splitlines()
                if " session client=" in l and "outcome=client closed" not in l]

    @unittest.skipUnless(os.geteuid() == 0, "needs root for a mount namespace")
    def test_every_address_of_a_name_is_tried(self):
        """pair.test is 127.0.0.2 and 127.0.0.3; a server listens on one of them only. Each
        in turn: in one round or the other the dead address comes first, and both connect."""
        hosts = os.path.join(self.tmp, "hosts")
        with open(hosts, "w") as f:
            f.write("127.0.0.1 localhost\n127.0.0.2 pair.test\n127.0.0.3 pair.test\n")
        d = self.proxy(HostsBerthd, hosts=hosts)
        port = free_port()  # test servers on 127.0.0.2 and .3 in turn, one port number for both
        for n, live in enumerate(("127.0.0.2", "127.0.0.3"), 1):
            with socket.socket() as srv:
                srv.bind((live, port))
                srv.listen(4)
                srv.settimeout(IO_TIMEOUT)
                s = self.connect()
                s.sendall(b"\x05\x01\x00")
                self.assertEqual(recv_strict(s, 2), b"\x05\x00")
                s.sendall(request(1, "pair.test", port))
                code, _, _ = read_reply(s)
                self.assertEqual(code, 0, "pair.test with %s alive:\n%s" % (live, d.log()))
                peer, _ = srv.accept()
                with peer:
                    s.sendall(b"through")
                    self.assertEqual(harness.recv_exact(peer, 7, strict=True), b"through")
                s.close()
            line = wait_until(lambda: len(self.sessions(d)) >= n and self.sessions(d)[n - 1],
                              IO_TIMEOUT, what="session line %d" % n)
            self.assertIn("dest=pair.test:%d remote=%s:%d" % (port, live, port), line)

    def test_early_data_is_bounded_while_the_connect_waits(self):
        """Greeting, request and then megabytes, before any reply, to a destination whose
        connect does not complete (its accept queue is full: the SYN is dropped). The
        worker holds at most 256 KiB for it and stops reading; once the destination
        accepts, all of it arrives, in order."""
        asan = os.environ.get("ASAN_OPTIONS", "")
        d = self.proxy(env={"ASAN_OPTIONS": (asan + ":" if asan else "") +
                            "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"})
        d.wait_serving()
        worker = d.worker_pids()[0]
        srv = socket.socket()
        self.addCleanup(srv.close)
        srv.bind(("127.0.0.1", 0))
        srv.listen(0)
        dport = srv.getsockname()[1]
        filler = socket.create_connection(("127.0.0.1", dport), timeout=IO_TIMEOUT)
        self.addCleanup(filler.close)  # queued, never accepted: the queue is full
        rss0 = harness.proc_rss_kib(worker)

        s = self.connect()
        s.sendall(b"\x05\x01\x00" + request(1, "127.0.0.1", dport))
        self.assertEqual(recv_strict(s, 2), b"\x05\x00")
        block = os.urandom(1 << 16)
        sent, h = 0, hashlib.sha256()
        s.setblocking(False)
        while True:
            try:
                n = s.send(block)
                h.update(block[:n])
                sent += n
                self.assertLess(sent, 256 << 20, "the proxy kept reading before its reply")
            except BlockingIOError:
                if not select.select([], [s], [], 2.0)[1]:
                    break
        grown = harness.proc_rss_kib(worker) - rss0
        print("early data: %d KiB sent before the stall, worker RSS %+d KiB" %
              (sent >> 10, grown))
        self.assertLess(grown, 4 << 10, "worker RSS grew %d KiB for early data" % grown)
        # No reply yet: the connect is still waiting.
        self.assertEqual(select.select([s], [], [], 0)[0], [])

        # The destination makes room: the retried SYN gets through, everything flows.
        srv.settimeout(IO_TIMEOUT * 3)
        srv.accept()[0].close()  # the filler's
        peer, _ = srv.accept()   # the proxy's
        self.addCleanup(peer.close)
        s.setblocking(True)
        s.settimeout(IO_TIMEOUT)
        self.assertEqual(read_reply(s)[0], 0)
        got, left = hashlib.sha256(), sent
        peer.settimeout(IO_TIMEOUT)
        while left:
            b = peer.recv(min(left, 1 << 20))
            self.assertTrue(b, "EOF with %d bytes still to come" % left)
            got.update(b)
            left -= len(b)
        self.assertEqual(got.hexdigest(), h.hexdigest())


if __name__ == "__main__":
    unittest.main()
