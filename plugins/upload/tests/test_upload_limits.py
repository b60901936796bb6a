"""The upload plugin against clients that try to hold the disk or the listener: headers that
announce big files and then go silent, headers that would not fit, partial headers, trickled
bodies. The disk tests run berthd in a mount namespace of its own on a 64 MiB tmpfs.

ctest sets BERTHD, BERTH_PLUGIN_DIR and BERTH_BUILD.
"""
import json
import os
import select
import socket
import struct
import subprocess
import time
import unittest

import harness
from harness import IO_TIMEOUT, Berthd, DaemonTestCase, wait_until

TMP_PREFIX = ".berth-upload."
MiB = 1 << 20


def frame(obj):
    payload = json.dumps(obj).encode()
    return struct.pack("<i", len(payload)) + payload


def header(name, size, **extra):
    h = {"cmd": "put", "file_name": name, "file_size": size, "reply": "each"}
    h.update(extra)
    return frame(h)


def read_reply(sock):
    (n,) = struct.unpack("<i", harness.recv_exact(sock, 4, timeout=None, strict=True))
    return json.loads(harness.recv_exact(sock, n, timeout=None, strict=True))


def closed_by_server(sock):
    """True once the server ends the connection (EOF or reset); the socket timeout guards."""
    try:
        while True:
            if not sock.recv(65536):
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True


class NamespacedBerthd(Berthd):
    """berthd in a mount namespace of its own, where `dir` is a fresh tmpfs of `size`. The
    test sees that dir through /proc/PID/root (the daemon's view of the file system)."""

    def __init__(self, tmp, listeners, mount_dir, size, **kw):
        super().__init__(tmp, listeners, **kw)
        self.mount_dir = mount_dir
        self.size = size

    def start(self, wait=None):
        # unshare execs sh, which execs berthd: proc.pid is the master itself.
        script = 'mount -t tmpfs -o size=%s tmpfs "$1" && exec "$2" -c "$3"' % self.size
        return self.spawn(["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
                           self.mount_dir, harness.BERTHD, self.conf], wait)

    def view(self):
        return "/proc/%d/root%s" % (self.proc.pid, self.mount_dir)


class UploadLimitCase(DaemonTestCase):
    options = ""

    def setUp(self):
        super().setUp()
        self.dir = os.path.join(self.tmp, "uploads")
        os.mkdir(self.dir)
        self.port = None  # the [up] listener's, once a daemon serves (port 0 in the config)
        self._socks = []

    def tearDown(self):
        for s in self._socks:
            s.close()
        for d in self._daemons:
            if d.proc and d.proc.poll() is None:
                d.stop()
        super().tearDown()

    def listeners(self, options):
        return (f"[up]\nprotocol = tcp\naddress = 127.0.0.1:0\nhandler = upload\n"
                f"dir = {self.dir}\n{options}\n")

    def start(self, options="", tmpfs=None):
        if tmpfs is None:
            self.berthd = self.daemon(self.listeners(options), wait=True)
        else:
            d = NamespacedBerthd(self.tmp, self.listeners(options), self.dir, tmpfs)
            self._daemons.append(d)
            self.berthd = d.start(True)
        self.port = self.berthd.port("up")
        return self.berthd

    def connect(self, timeout=IO_TIMEOUT):
        s = socket.create_connection(("127.0.0.1", self.port))
        s.settimeout(timeout)
        self._socks.append(s)
        return s

    def put(self, name, data):
        """A well-behaved client: one file, its reply."""
        s = self.connect()
        s.sendall(header(name, len(data)) + data)
        return read_reply(s)

    def entries(self):
        d = self.berthd.view() if isinstance(self.berthd, NamespacedBerthd) else self.dir
        return sorted(os.listdir(d))



class DiskBudgetTest(UploadLimitCase):
    """Issue 9 #2: a header alone must not reserve disk."""

    def used(self):
        st = os.statvfs(self.berthd.view())
        return (st.f_blocks - st.f_bfree) * st.f_frsize

    def silent(self, name, size):
        s = self.connect()
        s.sendall(header(name, size))
        return s

    def test_silent_headers_do_not_fill_the_disk(self):
        self.start(tmpfs="64m")
        # Two clients announce 30 MiB each on a 64 MiB file system, then say nothing more.
        a, b = self.silent("a.bin", 30 * MiB), self.silent("b.bin", 30 * MiB)
        wait_until(lambda: len(self.entries()) == 2, timeout=IO_TIMEOUT,
                   what="both temporary files")
        # Disk is reserved in bounded steps ahead of the bytes, not for the whole file.
        self.assertLessEqual(self.used(), 2 * 8 * MiB + MiB, "disk reserved for silent headers")
        data = os.urandom(MiB)
        r = self.put("third.bin", data)
        self.assertEqual(r["status"], "ok", r)
        with open(os.path.join(self.berthd.view(), "third.bin"), "rb") as f:
            self.assertEqual(f.read(), data)
        # The silent ones leave, and leave nothing behind.
        a.close()
        b.close()
        wait_until(lambda: self.entries() == ["third.bin"], timeout=IO_TIMEOUT,
                   what="temporary files removed")

    def test_a_file_that_would_eat_min_free_is_refused(self):
        self.start(tmpfs="64m")  # min_free defaults to 5%: 3.2 MiB of 64
        s = self.connect()
        s.sendall(header("big.bin", 62 * MiB))
        r = read_reply(s)
        self.assertEqual(r["status"], "error")
        self.assertIn("min_free", r["error"])
        self.assertIn("no space left", r["error"])
        self.assertEqual(self.entries(), [])
        # The body is skipped and the connection goes on: one that fits is fine.
        s.sendall(b"\0" * (62 * MiB) + header("small.bin", 1000) + b"x" * 1000)
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assertEqual(self.entries(), ["small.bin"])

    def test_min_free_as_a_size(self):
        self.start("min_free = 40M", tmpfs="64m")
        s = self.connect()
        s.sendall(header("big.bin", 30 * MiB))
        r = read_reply(s)
        self.assertIn("min_free", r["error"])
        self.assertEqual(self.put("ok.bin", os.urandom(2 * MiB))["status"], "ok")
        self.assertEqual(self.entries(), ["ok.bin"])

    def test_max_pending_refuses_what_is_over_the_budget(self):
        self.start("max_pending = 40M", tmpfs="64m")
        a = self.silent("a.bin", 30 * MiB)
        wait_until(lambda: len(self.entries()) == 1, timeout=IO_TIMEOUT, what="a's temporary")
        b = self.connect()
        b.sendall(header("b.bin", 30 * MiB))
        r = read_reply(b)
        self.assertEqual(r["status"], "error")
        self.assertIn("max_pending", r["error"])
        self.assertIn("try again later", r["error"])
        # What is left of the budget still serves a small file, and bytes that arrive give
        # the budget back: a's 30 MiB, once sent, no longer count.
        self.assertEqual(self.put("small.bin", os.urandom(MiB))["status"], "ok")
        a.sendall(b"\0" * (30 * MiB))
        self.assertEqual(read_reply(a)["status"], "ok")
        self.assertEqual(self.put("c.bin", os.urandom(20 * MiB))["status"], "ok")
        self.assertEqual(self.entries(), ["a.bin", "c.bin", "small.bin"])

    def test_a_full_disk_is_found_as_bytes_arrive(self):
        # With min_free = 0 both 40 MiB headers fit what is free when they come; the bytes do
        # not: the one that runs out gets the error, and its part goes.
        self.start("min_free = 0", tmpfs="64m")
        a, b = self.connect(), self.connect()
        a.sendall(header("a.bin", 40 * MiB))
        b.sendall(header("b.bin", 40 * MiB))
        wait_until(lambda: len(self.entries()) == 2, timeout=IO_TIMEOUT, what="two temporaries")
        # One after the other: a's 40 MiB fit, b runs out on the way. (Interleaved, both
        # could hit the full disk at once on a loaded machine, before either part is gone.)
        chunk = b"\0" * MiB
        for _ in range(40):
            a.sendall(chunk)
        self.assertEqual(read_reply(a)["status"], "ok")
        for _ in range(40):
            b.sendall(chunk)
        r = read_reply(b)
        self.assertEqual(r["status"], "error", r)
        self.assertIn("space", r["error"])
        wait_until(lambda: self.entries() == ["a.bin"], timeout=IO_TIMEOUT, what="cleanup")


class DeadlineTest(UploadLimitCase):
    """Issue 9 #3: header_timeout and min_rate."""

    FAST = "header_timeout = 1s\nmin_rate = 10K\nmin_rate_window = 1s"

    def server_spoke(self, s, wait):
        """True if within `wait` s the server sent something or ended the connection."""
        r, _, _ = select.select([s], [], [], wait)
        return bool(r)

    def expect_error_and_close(self, s, part):
        r = read_reply(s)
        self.assertEqual(r["status"], "error", r)
        self.assertIn(part, r["error"])
        self.assertTrue(closed_by_server(s))
        return r

    def test_a_stalled_header_is_closed_after_header_timeout(self):
        self.start(self.FAST)
        s = self.connect()
        t0 = time.monotonic()
        s.sendall(header("x", 10)[:7])  # the length and a little of the JSON, then nothing
        # Not before the deadline (well before: half of it)...
        self.assertFalse(self.server_spoke(s, 0.5), "closed well before header_timeout")
        # ...and at it, with a reply that says why (the socket timeout is the hang guard).
        self.expect_error_and_close(s, "header_timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.berthd.wait_logged("no whole header within header_timeout (1000 ms), inside a header")

    def test_a_trickled_header_cannot_hold_the_connection(self):
        # One byte every 0.3 s would take 20 s and more to send this header; each byte does
        # not push the deadline back.
        self.start(self.FAST)
        s = self.connect()
        data = header("trickled-" + "x" * 40, 10)
        t0 = time.monotonic()
        sent = 0
        while sent < len(data):
            try:
                s.send(data[sent:sent + 1])
            except (BrokenPipeError, ConnectionResetError):
                break
            sent += 1
            if self.server_spoke(s, 0.3):
                break
        self.assertLess(sent, len(data), "the whole trickled header got through")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.expect_error_and_close(s, "header_timeout")

    def test_an_idle_connection_after_a_file_is_closed(self):
        self.start(self.FAST)
        s = self.connect()
        t0 = time.monotonic()  # the server's clock starts at the body's end, after this
        s.sendall(header("one.txt", 3) + b"abc")
        self.assertEqual(read_reply(s)["status"], "ok")
        self.expect_error_and_close(s, "header_timeout")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9, "closed before header_timeout")

    def test_a_body_under_min_rate_is_ended(self):
        self.start(self.FAST)
        s = self.connect()
        s.sendall(header("slow.bin", MiB))
        t0 = time.monotonic()
        # 100 bytes every 0.2 s: 500 bytes/s, under 10K/s. Send until the server answers.
        while not self.server_spoke(s, 0.2):
            s.sendall(b"y" * 100)
            self.assertLess(time.monotonic() - t0, IO_TIMEOUT, "never ended")
        self.expect_error_and_close(s, "min_rate")
        self.assertGreaterEqual(time.monotonic() - t0, 0.9)
        self.berthd.wait_logged('refused "slow.bin"')
        wait_until(lambda: self.entries() == [], timeout=IO_TIMEOUT, what="partial file removed")

    def test_well_behaved_clients_are_unaffected(self):
        self.start(self.FAST)
        big = os.urandom(8 * MiB)  # before the connect: header_timeout runs from there
        s = self.connect()
        s.sendall(header("big.bin", len(big)) + big)
        self.assertEqual(read_reply(s)["status"], "ok")
        # A pause between files under header_timeout, then another file, and a slow body
        # that stays over min_rate (about 40 KiB/s against 10K).
        time.sleep(0.5)
        s.sendall(header("second.bin", 100_000))
        for _ in range(25):
            s.sendall(b"z" * 4000)
            time.sleep(0.1)
        self.assertEqual(read_reply(s)["status"], "ok")
        self.assertEqual(self.entries(), ["big.bin", "second.bin"])

    def test_min_rate_zero_disables_it(self):
        self.start("min_rate = 0\nmin_rate_window = 1s")
        s = self.connect()
        s.sendall(header("slow.bin", 10))
        for _ in range(10):
            s.sendall(b"q")
            time.sleep(0.15)
        self.assertEqual(read_reply(s)["status"], "ok")

    def test_bad_values_are_config_errors(self):
        conf = os.path.join(self.tmp, "check.conf")
        for opt in ("header_timeout = 0", "header_timeout = soon", "min_rate = fast",
                    "min_rate_window = 0", "min_free = 100%", "min_free = -1", "max_pending = 0"):
            with open(conf, "w") as f:
                f.write("[daemon]\nworkers = 1\nplugin_dir = %s\nadmin = %s/a.sock\n\n%s" %
                        (harness.PLUGIN_DIR, self.tmp, self.listeners(opt)))
            r = subprocess.run([harness.BERTHD, "-t", "-c", conf], capture_output=True,
                               text=True, timeout=60)
            self.assertNotEqual(r.returncode, 0, opt)
            self.assertIn(opt.split(" ")[0], r.stdout + r.stderr, opt)


if __name__ == "__main__":
    unittest.main()
