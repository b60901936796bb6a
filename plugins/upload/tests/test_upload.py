"""Integration tests for the upload plugin: the real berthd, real clients (the seed's own
client, berth-upload, and raw sockets for hostile input), real files.

ctest sets BERTHD, BERTH_PLUGIN_DIR, BERTH_BUILD and BERTH_UPLOAD (the client's path).
"""
import hashlib
import json
import os
import select
import shutil
import socket
import stat
import struct
import subprocess
import sys
import textwrap
import time
import unittest

import harness
from harness import (IO_TIMEOUT, DaemonTestCase, check_config, free_port,
                     wait_until)

HERE = os.path.dirname(os.path.abspath(__file__))
SEED_CLIENT = os.path.join(HERE, "seed_client.py")
BERTH_UPLOAD = os.environ.get("BERTH_UPLOAD") or os.path.join(harness.BUILD, "tools",
                                                              "berth-upload")
TMP_PREFIX = ".berth-upload."


def frame(payload):
    """A frame as the seed packs it: struct.pack('i', len) (signed, little-endian here)."""
    if not isinstance(payload, bytes):
        payload = json.dumps(payload).encode()
    return struct.pack("<i", len(payload)) + payload


def header(name, data, **extra):
    h = {"cmd": "put", "file_name": name, "file_size": len(data)}
    h.update(extra)
    return frame(h)


def recv_exact(sock, n):
    return harness.recv_exact(sock, n, timeout=None, strict=True)


def read_reply(sock):
    (n,) = struct.unpack("<i", recv_exact(sock, 4))
    return json.loads(recv_exact(sock, n))


def closed_by_server(sock):
    """True once the server ends the connection (EOF or reset), within the hang guard."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


class UploadCase(DaemonTestCase):
    """A berthd with an upload listener on TCP and one on a Unix socket, same dir."""

    options = ""

    def setUp(self):
        super().setUp()
        self.dir = os.path.join(self.tmp, "uploads")
        os.mkdir(self.dir)
        self.files = os.path.join(self.tmp, "files")
        os.mkdir(self.files)
        self.port = None  # the [up] listener's, once a daemon serves (port 0 in the config)
        self.sock_path = os.path.join(self.tmp, "upload.sock")
        self._socks = []

    def tearDown(self):
        # Our sockets first; then DaemonTestCase's tearDown stops each daemon with its exit
        # status asserted and fails on any sanitizer report (master, worker or plugin).
        for s in self._socks:
            s.close()
        super().tearDown()

    def listeners(self, options=None):
        opts = self.options if options is None else options
        return (f"[up]\nprotocol = tcp\naddress = 127.0.0.1:0\nhandler = upload\n"
                f"dir = {self.dir}\n{opts}\n"
                f"[up-unix]\nprotocol = unix\naddress = {self.sock_path}\nhandler = upload\n"
                f"dir = {self.dir}\n{opts}\n")

    def start(self, options=None):
        self.berthd = self.daemon(self.listeners(options), wait=True)
        self.port = self.berthd.port("up")
        return self.berthd

    def connect(self, unix=False):
        if unix:
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(self.sock_path)
        else:
            s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(IO_TIMEOUT)
        self._socks.append(s)
        return s

    def make(self, name, data):
        path = os.path.join(self.files, name)
        with open(path, "wb") as f:
            f.write(data)
        return path

    def sample_files(self):
        """A binary, a text and an empty file: (path, bytes) each."""
        binary = bytes(range(256)) * 64 + os.urandom(50_000) + b"\r\n\x00\xff" * 100
        text = ("第一行: hello, berth\n" * 200 + "no newline at the end").encode()
        return [(self.make("blob.bin", binary), binary), (self.make("notes.txt", text), text),
                (self.make("empty", b""), b"")]

    def stored(self):
        return sorted(os.listdir(self.dir))

    def assert_no_leftovers(self, dirpath=None):
        left = [n for n in os.listdir(dirpath or self.dir) if n.startswith(TMP_PREFIX)]
        self.assertEqual(left, [], "temporary files left behind")

    def assert_stored(self, name, data):
        with open(os.path.join(self.dir, name), "rb") as f:
            self.assertEqual(f.read(), data, name)


    def seed_client(self, paths, unix=False, sent=None):
        addr = ["unix", self.sock_path] if unix else ["127.0.0.1", str(self.port)]
        stdin = "".join("put %s\n" % p for p in paths)
        r = subprocess.run([sys.executable, SEED_CLIENT, *addr], input=stdin, text=True,
                           capture_output=True, timeout=60)
        # It has no way to stop but the EOFError of input() on the end of stdin.
        self.assertIn("EOFError", r.stderr)
        self.assertEqual(r.stdout.count("upload successful"), len(paths) if sent is None else sent,
                         r.stdout + r.stderr)
        return r


class SeedClientTest(UploadCase):
    def check_seed_client(self, unix):
        self.start()
        files = self.sample_files()
        self.seed_client([p for p, _ in files], unix=unix)
        # The client leaves without reading a reply: the files are stored all the same.
        for p, _ in files:
            self.berthd.wait_logged('stored "%s"' % os.path.basename(p))
        for p, data in files:
            self.assert_stored(os.path.basename(p), data)
        self.assertEqual(self.stored(), sorted(os.path.basename(p) for p, _ in files))

    def test_seed_client_tcp(self):
        self.check_seed_client(unix=False)

    def test_seed_client_unix(self):
        self.check_seed_client(unix=True)

    def test_seed_client_missing_file(self):
        # The seed's own check: it sends nothing for a missing file; the next one goes through.
        self.start()
        (p, data), = self.sample_files()[1:2]
        r = self.seed_client([os.path.join(self.files, "nope"), p], sent=1)
        self.assertIn("is not exists", r.stdout)
        self.berthd.wait_logged('stored "notes.txt"')
        self.assert_stored("notes.txt", data)


class BerthUploadTest(UploadCase):
    def run_client(self, *args):
        return subprocess.run([BERTH_UPLOAD, *args], capture_output=True, text=True, timeout=120)

    def check_client(self, unix):
        self.start()
        files = self.sample_files()
        target = ["-u", self.sock_path] if unix else ["-a", "127.0.0.1:%d" % self.port]
        r = self.run_client(*target, *[p for p, _ in files])
        self.assertEqual(r.returncode, 0, r.stderr)
        for p, data in files:
            name = os.path.basename(p)
            self.assert_stored(name, data)
            self.assertIn("%s: stored, %d bytes, sha256 %s" %
                          (name, len(data), hashlib.sha256(data).hexdigest()), r.stdout)
        self.assertEqual(r.stderr, "")  # not a terminal: no progress bar

        # Again: every name is taken now (overwrite = no), each refused, exit status 1.
        r = self.run_client(*target, *[p for p, _ in files])
        self.assertEqual(r.returncode, 1)
        self.assertEqual(r.stderr.count("refused: a file of that name exists"), 3, r.stderr)
        self.assert_no_leftovers()

    def test_berth_upload_tcp(self):
        self.check_client(unix=False)

    def test_berth_upload_unix(self):
        self.check_client(unix=True)

    def test_berth_upload_large_file(self):
        # Big enough that the plugin pauses reading while the disk catches up.
        self.start()
        data = os.urandom(1 << 20) * 40
        p = self.make("large.bin", data)
        r = self.run_client("-q", "-a", "127.0.0.1:%d" % self.port, p)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assert_stored("large.bin", data)

    def test_berth_upload_refused_midway_then_goes_on(self):
        # Over max_size the server answers at once and closes; the client reports it and
        # carries on with the next file on a new connection.
        self.start("max_size = 100K")
        big = self.make("big", b"x" * 300_000)
        small = self.make("small", b"y" * 10)
        r = self.run_client("-a", "127.0.0.1:%d" % self.port, big, small)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("big: refused: file_size 300000 is over max_size 102400", r.stderr)
        self.assertIn("small: stored", r.stdout)
        self.assertEqual(self.stored(), ["small"])

    def test_berth_upload_usage_and_unreachable(self):
        r = self.run_client()
        self.assertEqual(r.returncode, 2)
        self.assertIn("usage", r.stderr)
        r = self.run_client("-a", "127.0.0.1:1", "-u", "/x", "f")
        self.assertEqual(r.returncode, 2)
        r = self.run_client("--help")
        self.assertEqual(r.returncode, 0)
        self.assertIn("Exit status", r.stdout)
        r = self.run_client("-V")
        self.assertEqual(r.returncode, 0)
        p = self.make("f", b"data")
        r = self.run_client("-a", "127.0.0.1:%d" % free_port(), p)  # a port nobody listens on
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("cannot connect", r.stderr)
        r = self.run_client("-u", os.path.join(self.tmp, "no.sock"), p)
        self.assertEqual(r.returncode, 3, r.stderr)
        # A local file that cannot be read is a file not stored (1), not a usage error.
        self.start()
        r = self.run_client("-a", "127.0.0.1:%d" % self.port, os.path.join(self.tmp, "nope"), p)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("f: stored", r.stdout)


class ProtocolTest(UploadCase):
    def test_many_files_one_connection_with_replies(self):
        self.start()
        s = self.connect()
        files = [("a.bin", os.urandom(70_000)), ("b.txt", b"text\n" * 1000), ("c", b"")]
        for name, data in files:
            s.sendall(header(name, data, sha256=hashlib.sha256(data).hexdigest()) + data)
        for name, data in files:
            r = read_reply(s)
            self.assertEqual(r, {"status": "ok", "file_name": name, "size": len(data),
                                 "sha256": hashlib.sha256(data).hexdigest()})
            self.assert_stored(name, data)
        # Whole frames byte by byte, md5 too.
        data = b"slow and steady"
        msg = header("slow", data, md5=hashlib.md5(data).hexdigest()) + data
        for i in range(len(msg)):
            s.sendall(msg[i:i + 1])
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assert_stored("slow", data)
        s.shutdown(socket.SHUT_WR)
        self.assertTrue(closed_by_server(s))
        self.assert_no_leftovers()

    def test_burst_of_small_frames(self):
        # Hundreds of frames behind a file still on its way to the disk: reading pauses on the
        # op count and resumes; every frame is answered, in order.
        self.start()
        s = self.connect()
        burst = [header("first", b"1") + b"1"]
        burst += [header("bad/%d" % i, b"xy") + b"xy" for i in range(600)]
        burst += [header("f%d" % i, b"z") + b"z" for i in range(300)]
        s.sendall(b"".join(burst))
        self.assertEqual(read_reply(s)["file_name"], "first")
        for i in range(600):
            self.assertEqual(read_reply(s)["file_name"], "bad/%d" % i)
        for i in range(300):
            r = read_reply(s)
            self.assertEqual((r["file_name"], r["status"]), ("f%d" % i, "ok"))
        self.assertEqual(len(self.stored()), 301)
        self.assert_no_leftovers()

    def test_client_gone_right_after_a_whole_file(self):
        # The seed client's way: send, then close at once, never reading the reply. (One file
        # only: with a reply to an earlier file unread, the client's kernel would reset the
        # connection on close and drop whatever it had not sent yet; see README.md.)
        self.start()
        data = os.urandom(1_500_000)
        s = self.connect()
        s.sendall(header("last", data) + data)
        s.close()
        self.berthd.wait_logged('stored "last"')
        self.assert_stored("last", data)
        self.assert_no_leftovers()

    def test_overwrite_yes(self):
        self.start("overwrite = yes")
        with open(os.path.join(self.dir, "f"), "wb") as f:
            f.write(b"old")
        s = self.connect()
        s.sendall(header("f", b"new") + b"new")
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assert_stored("f", b"new")

    def test_fsync_off(self):
        self.start("fsync = no")
        s = self.connect(unix=True)
        s.sendall(header("f", b"data") + b"data")
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assert_stored("f", b"data")


class HostileTest(UploadCase):
    """Each case: the reply it gets, and nothing left in (or outside) the upload dir."""

    def expect_error(self, s, part, name=None):
        r = read_reply(s)
        self.assertEqual(r["status"], "error", r)
        self.assertIn(part, r["error"])
        if name is not None:
            self.assertEqual(r["file_name"], name)
        return r

    def test_path_names(self):
        self.start()
        s = self.connect()
        cases = [("../escape", "/"), ("/tmp/escape", "/"), ("a/b", "/"), ("..", ". or .."),
                 (".", ". or .."), ("", "empty"), ("a\x00b", "NUL"), ("a\nb", "control"),
                 ("a\x1bb", "control"), ("x" * 256, "255"), (TMP_PREFIX + "x", "reserved")]
        for name, why in cases:
            s.sendall(header(name, b"payload") + b"payload")
            self.expect_error(s, why, name)
        # A name that is not a string, and none at all.
        s.sendall(frame({"cmd": "put", "file_name": 5, "file_size": 1}) + b"x")
        self.expect_error(s, "file_name", None)
        # The connection is still good: the body of each refused file was skipped.
        s.sendall(header("fine", b"ok") + b"ok")
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assertEqual(self.stored(), ["fine"])
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "escape")))
        self.assertFalse(os.path.exists("/tmp/escape"))

    def test_symlink_in_dir_is_not_followed(self):
        self.start()
        outside = os.path.join(self.tmp, "victim")
        with open(outside, "wb") as f:
            f.write(b"precious")
        os.symlink(outside, os.path.join(self.dir, "link"))
        s = self.connect()
        s.sendall(header("link", b"evil") + b"evil")
        self.expect_error(s, "exists", "link")
        with open(outside, "rb") as f:
            self.assertEqual(f.read(), b"precious")
        self.assert_no_leftovers()

    def check_closes(self, payload, part):
        s = self.connect()
        s.sendall(payload)
        self.expect_error(s, part)
        self.assertTrue(closed_by_server(s))
        self.assertEqual(self.stored(), [])

    def test_huge_header_length(self):
        self.start()
        self.check_closes(struct.pack("<i", 2**31 - 1), "over max_header")
        self.check_closes(struct.pack("<i", 65537) + b"{", "over max_header")

    def test_max_header_option(self):
        self.start("max_header = 100")
        self.check_closes(frame({"cmd": "put", "file_name": "x" * 100, "file_size": 0}),
                          "over max_header 100")

    def test_negative_header_length(self):
        self.start()
        self.check_closes(struct.pack("<i", -1), "negative")
        self.check_closes(struct.pack("<i", -(2**31)), "negative")

    def test_bad_json(self):
        self.start()
        self.check_closes(frame(b"{not json"), "not valid JSON")
        self.check_closes(frame(b"\xff\xfe\x00"), "not valid JSON")
        self.check_closes(frame(b"[1, 2]"), "not a JSON object")
        self.check_closes(frame(b""), "not valid JSON")

    def test_bad_file_size(self):
        self.start()
        for size in (-1, 1.5, "10", None):
            self.check_closes(frame({"cmd": "put", "file_name": "f", "file_size": size}),
                              "file_size")

    def test_unknown_cmd(self):
        self.start()
        self.check_closes(frame({"cmd": "get", "file_name": "f", "file_size": 0}),
                          "unknown command")
        self.check_closes(frame({"file_name": "f", "file_size": 0}), "cmd")

    def check_disconnect_halfway(self, unix, reset):
        self.start()
        s = self.connect(unix=unix)
        data = os.urandom(3_000_000)
        s.sendall(header("half", data) + data[:1_200_000])
        if reset:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        self.berthd.wait_logged('refused "half"')
        self.assertIn("the connection ended before the whole file arrived", self.berthd.log())
        self.assertEqual(self.stored(), [])

    def test_disconnect_halfway_tcp(self):
        self.check_disconnect_halfway(unix=False, reset=False)

    def test_reset_halfway_tcp(self):
        self.check_disconnect_halfway(unix=False, reset=True)

    def test_disconnect_halfway_unix(self):
        self.check_disconnect_halfway(unix=True, reset=False)

    def test_disconnect_inside_header(self):
        self.start()
        s = self.connect()
        s.sendall(struct.pack("<i", 50) + b'{"cmd": "put"')
        s.close()
        self.berthd.wait_logged("connection ended inside a header")
        self.assertEqual(self.stored(), [])

    def test_wrong_digests(self):
        self.start()
        s = self.connect()
        data = os.urandom(100_000)
        s.sendall(header("bad-sha", data, sha256=hashlib.sha256(b"other").hexdigest()) + data)
        self.expect_error(s, "sha256 does not match", "bad-sha")
        s.sendall(header("bad-md5", data, md5=hashlib.md5(b"other").hexdigest()) + data)
        self.expect_error(s, "md5 does not match", "bad-md5")
        s.sendall(header("bad-hex", data, sha256="zz") + data)
        self.expect_error(s, "64 hex digits", "bad-hex")
        self.assertEqual(self.stored(), [])
        # Still in step: the next file is fine.
        s.sendall(header("good", data, sha256=hashlib.sha256(data).hexdigest()) + data)
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assertEqual(self.stored(), ["good"])

    def test_over_max_size(self):
        self.start("max_size = 64K")
        s = self.connect()
        s.sendall(header("ok", b"x" * 65536) + b"x" * 65536)
        self.assertEqual(read_reply(s)["status"], "ok")
        s.sendall(header("big", b"x" * 65537) + b"x" * 1000)
        self.expect_error(s, "over max_size 65536", "big")
        self.assertTrue(closed_by_server(s))
        self.assertEqual(self.stored(), ["ok"])

    def test_existing_name_not_overwritten(self):
        self.start()
        with open(os.path.join(self.dir, "taken"), "wb") as f:
            f.write(b"old")
        s = self.connect()
        s.sendall(header("taken", b"new content") + b"new content")
        self.expect_error(s, "exists", "taken")
        self.assert_stored("taken", b"old")
        # Two clients racing for one new name: exactly one wins, the loser gets an error.
        a, b = self.connect(), self.connect()
        a.sendall(header("race", b"A" * 5000))
        b.sendall(header("race", b"B" * 5000) + b"B" * 5000)
        a.sendall(b"A" * 5000)
        replies = [read_reply(a)["status"], read_reply(b)["status"]]
        self.assertEqual(sorted(replies), ["error", "ok"])
        with open(os.path.join(self.dir, "race"), "rb") as f:
            self.assertIn(f.read(), (b"A" * 5000, b"B" * 5000))
        self.assertEqual(self.stored(), ["race", "taken"])

    @unittest.skipUnless(os.geteuid() == 0 and shutil.which("unshare"),
                         "needs root and unshare(1) for a private tmpfs")
    def test_full_disk(self):
        # berthd runs in its own mount namespace with a 1 MiB tmpfs over the upload dir.
        wrapper = os.path.join(self.tmp, "in-tmpfs")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec unshare -m --propagation private sh -c "
                    "'mount -t tmpfs -o size=1m tmpfs \"$0\" && exec \"$@\"' "
                    "%s %s \"$@\"\n" % (self.dir, harness.BERTHD))
        os.chmod(wrapper, 0o755)
        real = harness.BERTHD
        harness.BERTHD = wrapper
        try:
            self.start()
        finally:
            harness.BERTHD = real
        view = "/proc/%d/root%s" % (self.berthd.proc.pid, self.dir)  # the tmpfs, as it sees it
        self.assertTrue(os.path.ismount(view))
        s = self.connect()
        data = os.urandom(1_500_000)
        s.sendall(header("too-big", data) + data)
        self.expect_error(s, "no space left", "too-big")
        s.sendall(header("fits", b"small") + b"small")
        self.assertEqual(read_reply(s)["status"], "ok")
        # Fill most of it, then one that does not fit in what is left.
        part = os.urandom(700_000)
        s.sendall(header("part", part) + part)
        self.assertEqual(read_reply(s)["status"], "ok")
        s.sendall(header("rest", part) + part)
        self.expect_error(s, "no space left", "rest")
        self.assertEqual(sorted(os.listdir(view)), ["fits", "part"])
        self.assertEqual(os.listdir(self.dir), [])  # outside the namespace: untouched


class ConfigTest(UploadCase):
    def check(self, options, part):
        conf = os.path.join(self.tmp, "check.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\nadmin = %s/a.sock\n\n%s" %
                    (harness.PLUGIN_DIR, self.tmp,
                     f"[up]\nprotocol = tcp\naddress = 127.0.0.1:0\n"
                     f"handler = upload\n{options}\n"))
        rc, out = check_config(conf)
        if part is None:
            self.assertEqual(rc, 0, out)
        else:
            self.assertNotEqual(rc, 0, out)
            self.assertIn(part, out)
        return out

    def test_options(self):
        self.check(f"dir = {self.dir}\nmax_size = 10G\nmax_header = 1M\noverwrite = yes\n"
                   f"fsync = no", None)
        out = self.check(f"dir = {self.tmp}/missing", "No such file or directory")
        self.assertIn("check.conf:", out)
        open(os.path.join(self.tmp, "plain"), "w").close()
        self.check(f"dir = {self.tmp}/plain", "not a directory")
        self.check(f"dir = {self.dir}\nmax_size = lots", "max_size")
        self.check(f"dir = {self.dir}\nmax_header = 1G", "max_header")
        self.check(f"dir = {self.dir}\noverwrite = perhaps", "overwrite")
        self.check(f"dir = {self.dir}\nfsync = 2", "fsync")
        self.check(f"dir = {self.dir}\ncolour = blue", "unknown key")

    def test_dir_required_and_stream_only(self):
        self.check("", "dir is required")
        conf = os.path.join(self.tmp, "udp.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\nworkers = 1\nplugin_dir = %s\nadmin = %s/a.sock\n\n"
                    "[up]\nprotocol = udp\naddress = 127.0.0.1:0\nhandler = upload\n"
                    "dir = %s\n" % (harness.PLUGIN_DIR, self.tmp, self.dir))
        rc, out = check_config(conf)
        self.assertNotEqual(rc, 0, out)
        self.assertIn("stream listener", out)


class LogEscapingTest(UploadCase):
    def test_hostile_file_name_is_escaped_in_the_log(self):
        """A refused name with control bytes, DEL, quote and backslash is logged as \\xHH
        (UTF-8 kept): one line, no terminal escape."""
        self.start()
        s = self.connect()
        name = 'a\nb\x1bc"d\\e\x7ff\u00e9'
        s.sendall(header(name, b"x") + b"x")
        r = read_reply(s)
        self.assertEqual((r["status"], r["file_name"]), ("error", name), r)
        self.assertIn("control", r["error"])
        self.berthd.wait_logged("refused")
        line = [l for l in self.berthd.log().splitlines() if "refused" in l][0]
        self.assertIn('refused "a\\x0ab\\x1bc\\x22d\\x5ce\\x7ff\u00e9"', line)
        self.assertNotIn("\x1b", self.berthd.log())


class RepliesAndPausing(UploadCase):
    """Reply holding (quiet time, "reply": "each") and the pause that bounds what a
    connection holds while the disk lags."""

    def test_replies_are_held_until_the_client_is_quiet(self):
        """No "reply": "each": the reply waits until the client has been quiet 200 ms."""
        self.start()
        s = self.connect()
        data = os.urandom(5000)
        s.sendall(header("held.bin", data) + data)
        last = time.monotonic()  # the daemon's quiet time starts at its read, after this
        r = read_reply(s)
        waited = time.monotonic() - last
        self.assertEqual((r["status"], r["size"]), ("ok", len(data)), r)
        self.assertGreaterEqual(waited, 0.19, "reply sent %.3fs after the last byte" % waited)

    def test_reply_each_is_sent_while_the_client_still_sends(self):
        """With "reply": "each" the reply to file 1 comes at once, while the client streams
        file 2 without a pause (a held reply would come only at quiet, EOF or 64 KiB)."""
        self.start()
        s = self.connect()
        one = os.urandom(3000)
        s.sendall(header("each.bin", one, reply="each") + one)
        big = 1 << 30  # declared; never all sent
        s.sendall(header("stream.bin", b"", file_size=big))
        chunk = os.urandom(1 << 16)
        sent = 0
        while not select.select([s], [], [], 0)[0]:
            s.sendall(chunk)
            sent += len(chunk)
            self.assertLess(sent, 256 << 20, "no reply to a file that said reply: each")
        r = read_reply(s)
        self.assertEqual((r["status"], r["file_name"]), ("ok", "each.bin"), r)
        self.assert_stored("each.bin", one)
        s.close()
        self.berthd.wait_logged("connection ended")  # stream.bin: the partial file is removed
        wait_until(lambda: "stream.bin" not in self.stored(), IO_TIMEOUT,
                   what="the partial file to go")
        self.assert_no_leftovers()

    def test_a_lagging_disk_pauses_the_connection_and_bounds_its_memory(self):
        """UV_THREADPOOL_SIZE=1 and a good-plugin connection whose one work item holds the
        only pool thread for 5 s, ahead of the upload's disk operations: past 2 MiB waiting for the disk the upload
        connection is no longer read (the client stalls), the worker holds at most a few MiB
        for it, and the file completes once the disk catches up."""
        asan = os.environ.get("ASAN_OPTIONS", "")
        env = {"UV_THREADPOOL_SIZE": "1",
               "ASAN_OPTIONS": (asan + ":" if asan else "") +
               "quarantine_size_mb=0:thread_local_quarantine_size_kb=0"}
        self.berthd = self.daemon(self.listeners() + textwrap.dedent(f"""
            [g]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {harness.built_test_plugin("good")}
            """), wait=True, env=env)
        self.port = self.berthd.port("up")
        worker = self.berthd.worker_pids()[0]
        rss0 = harness.proc_rss_kib(worker)
        g = socket.create_connection(self.berthd.bound("g"), timeout=IO_TIMEOUT)
        self._socks.append(g)
        g.sendall(b"work 5000\n")  # the only pool thread, for 5 s

        s = self.connect()
        size = 64 << 20
        h = hashlib.sha256()
        s.sendall(header("lag.bin", b"", file_size=size))
        block = os.urandom(1 << 16)
        sent = 0
        s.setblocking(False)
        while sent < size:
            try:
                n = s.send(block[:min(len(block), size - sent)])
                h.update(block[:n])
                sent += n
            except BlockingIOError:
                if not select.select([], [s], [], 2.0)[1]:
                    break
        self.assertLess(sent, size, "all 64 MiB taken while the disk could not keep up")
        grown = harness.proc_rss_kib(worker) - rss0
        print("lagging disk: %d KiB sent before the stall, worker RSS %+d KiB" %
              (sent >> 10, grown))
        self.assertLess(grown, 8 << 10, "worker RSS grew %d KiB" % grown)

        # The pool frees up: the rest goes through and the file is whole.
        s.setblocking(True)
        s.settimeout(IO_TIMEOUT * 3)
        while sent < size:
            n = min(len(block), size - sent)
            s.sendall(block[:n])
            h.update(block[:n])
            sent += n
        s.shutdown(socket.SHUT_WR)
        r = read_reply(s)
        self.assertEqual((r["status"], r["size"], r["sha256"]), ("ok", size, h.hexdigest()), r)
        self.assertEqual(harness.recv_exact(g, 7, timeout=IO_TIMEOUT * 3, strict=True),
                         b"worked\n")


if __name__ == "__main__":
    unittest.main()
