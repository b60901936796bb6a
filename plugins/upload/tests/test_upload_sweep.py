"""The upload plugin leaves nothing behind even when its worker is killed mid-file: the next
worker to serve the dir removes the temporary files nobody holds (each store keeps its file
flock()ed until it commits or discards it), and never one that a live upload is writing.
"""
import hashlib
import os
import signal
import socket
import struct
import json
import unittest

import harness
from harness import IO_TIMEOUT, DaemonTestCase, free_port, tcp_ready, wait_until

TMP_PREFIX = ".berth-upload."


def frame(obj):
    b = json.dumps(obj).encode()
    return struct.pack("<i", len(b)) + b


def read_reply(s):
    (n,) = struct.unpack("<i", harness.recv_exact(s, 4, strict=True))
    return json.loads(harness.recv_exact(s, n, strict=True))


class SweepTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.dir = os.path.join(self.tmp, "uploads")
        os.mkdir(self.dir)
        self.port = free_port()
        self.d = self.daemon(
            f"[up]\nprotocol = tcp\naddress = 127.0.0.1:{self.port}\nhandler = upload\n"
            f"dir = {self.dir}\nfsync = no\n",
            wait=lambda: tcp_ready("127.0.0.1", self.port))
        self.d.wait_serving()

    def temps(self):
        return sorted(n for n in os.listdir(self.dir) if n.startswith(TMP_PREFIX))

    def begin(self, name, size, part):
        """A connection with a header for `size` bytes and the first `part` of them sent,
        once its temporary file exists."""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        body = os.urandom(size)
        s.sendall(frame({"cmd": "put", "file_name": name, "file_size": size, "reply": "each",
                         "sha256": hashlib.sha256(body).hexdigest()}) + body[:part])
        return s, body

    def test_a_killed_workers_temporary_file_is_removed_by_the_next_worker(self):
        before = set(self.temps())
        s, _ = self.begin("half.bin", 1 << 20, 1 << 19)
        wait_until(lambda: set(self.temps()) - before, what="the temporary file")
        [pid] = self.d.worker_pids()
        os.kill(pid, signal.SIGKILL)
        self.d.wait_log(r"removed 1 temporary file left in .* by a worker that died")
        self.assertEqual(self.temps(), [])
        self.assertFalse(os.path.exists(os.path.join(self.dir, "half.bin")))
        # The replacement serves uploads as before.
        s2, body = self.begin("whole.bin", 4096, 4096)
        self.assertEqual(read_reply(s2)["status"], "ok")
        with open(os.path.join(self.dir, "whole.bin"), "rb") as f:
            self.assertEqual(f.read(), body)

    def test_a_live_uploads_file_survives_the_next_generations_sweep(self):
        s, body = self.begin("live.bin", 1 << 20, 1 << 19)
        wait_until(self.temps, what="the temporary file")
        live = self.temps()
        self.assertTrue(self.d.reload())
        self.d.wait_serving()
        self.assertEqual(self.temps(), live, "a sweep removed a file a live upload holds")
        self.assertNotRegex(self.d.log(), r"removed \d+ temporary file")
        # The old generation finishes the upload: the file is whole.
        s.sendall(body[1 << 19:])
        r = read_reply(s)
        self.assertEqual(r["status"], "ok", r)
        with open(os.path.join(self.dir, "live.bin"), "rb") as f:
            self.assertEqual(f.read(), body)
        self.assertEqual(self.temps(), [])


if __name__ == "__main__":
    unittest.main()
