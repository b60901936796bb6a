"""log_format = json: every line of a daemon that served traffic on every plugin is one JSON
object (json.loads), with the documented keys, and the fields plugins attach as members,
however hostile the bytes a peer sent."""
import json
import os
import socket
import struct
import unittest

from clients import socks5_connect, tcp_echo
from harness import IO_TIMEOUT, DaemonTestCase, recv_exact, stream_echo, udp_roundtrip, wait_until

KEYS = ("time", "level", "pid", "role", "worker", "generation", "listener", "peer", "message")
# A SOCKS5 domain name with quotes, a backslash, control bytes, a newline and bytes that are
# not UTF-8: the session line must still be one valid JSON line.
HOSTILE = b'ev"il\\\n\x01\x1b[31m\xff\xc3(.invalid'


class JsonLogs(DaemonTestCase):
    def lines(self, d):
        with open(d.log_path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")  # strict: a line that is not UTF-8 fails here
        return [json.loads(line) for line in text.splitlines()]

    def test_every_line_parses_and_plugin_fields_are_members(self):
        up = os.path.join(self.tmp, "uploads")
        os.mkdir(up)
        d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [echo-udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo

            [socks]
            protocol = tcp
            address = 127.0.0.2:0
            handler = socks5
            allow_dest = 127.0.0.0/8
            connect_timeout = 5s

            [up]
            protocol = tcp
            address = 127.0.0.3:0
            handler = upload
            dir = {up}
            """, daemon="log_format = json\n", workers=2, wait=True)
        echo = d.port("echo")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", echo), b"hi\n"), b"hi\n")
        self.assertEqual(udp_roundtrip(("127.0.0.1", d.port("echo-udp")), b"dgram"), b"dgram")

        # socks5: a relayed session to the echo listener, then a hostile domain name.
        outside = tcp_echo(self)
        s, rep = socks5_connect(("127.0.0.2", d.port("socks")), outside)
        self.assertEqual(rep, 0)
        s.sendall(b"through\n")
        self.assertEqual(recv_exact(s, 8, strict=True), b"through\n")
        s.close()
        s, rep = socks5_connect(("127.0.0.2", d.port("socks")), 80, HOSTILE)
        self.assertNotEqual(rep, 0)
        s.close()

        # upload: one file, framed as the protocol wants.
        data = b"x" * 1000
        head = json.dumps({"cmd": "put", "file_name": "a\"b.txt", "file_size": len(data)})
        u = socket.create_connection(("127.0.0.3", d.port("up")), timeout=IO_TIMEOUT)
        u.sendall(struct.pack("<i", len(head)) + head.encode() + data)
        (n,) = struct.unpack("<i", recv_exact(u, 4, strict=True))
        self.assertEqual(json.loads(recv_exact(u, n, strict=True))["status"], "ok")
        u.close()

        def sessions():
            return [l for l in self.lines(d) if l["message"] == "session"]
        wait_until(lambda: len(sessions()) >= 2, what="two socks5 session lines")
        wait_until(lambda: any(l["message"].startswith("stored") for l in self.lines(d)),
                   what="upload's stored line")
        self.assertEqual(d.stop(), 0)

        lines = self.lines(d)
        self.assertGreater(len(lines), 10)
        for l in lines:
            for k in KEYS:
                self.assertIn(k, l, l)
            self.assertIn(l["level"], ("error", "warn", "info", "debug"))
            self.assertIsInstance(l["pid"], int)
        # Master lines have no worker; a worker's lines name it and its generation.
        self.assertTrue(any(l["worker"] is None and l["role"] == "master" for l in lines))
        self.assertTrue(any(l["worker"] in (1, 2) and l["generation"] == 1 for l in lines))

        ok = [l for l in sessions() if l["outcome"] == "ok"]
        self.assertEqual(len(ok), 1, sessions())
        self.assertEqual(ok[0]["listener"], "socks")
        self.assertEqual(ok[0]["peer"], ok[0]["client"])
        self.assertEqual(ok[0]["dest"], "127.0.0.1:%d" % outside)
        self.assertEqual((ok[0]["up"], ok[0]["down"]), (8, 8))
        self.assertIsInstance(ok[0]["duration_ms"], int)

        bad = [l for l in sessions() if l["outcome"] != "ok"]
        self.assertEqual(len(bad), 1, sessions())
        # The name came through whole and readable: no raw control byte survived.
        self.assertIn("ev", bad[0]["dest"])
        self.assertIn("invalid:80", bad[0]["dest"])
        self.assertFalse(any(ord(c) < 0x20 for c in bad[0]["dest"]), bad[0]["dest"])

        stored = [l for l in lines if l["message"].startswith("stored")]
        self.assertEqual(len(stored), 1)
        self.assertEqual(stored[0]["listener"], "up")
        self.assertEqual(stored[0]["bytes"], len(data))
        self.assertEqual(len(stored[0]["sha256"]), 64)
        self.assertIn("a", stored[0]["file"])

    def test_text_is_the_default_and_fields_read_as_key_value(self):
        d = self.daemon("""
            [socks]
            protocol = tcp
            address = 127.0.0.1:0
            handler = socks5
            allow_dest = 127.0.0.0/8
            """, wait=True)
        s, rep = socks5_connect(("127.0.0.1", d.port("socks")), 80, HOSTILE)
        s.close()
        d.wait_log(r"session client=127\.0\.0\.1:\d+ user=- dest=\S+ remote=\S+ up=0 down=0 "
                   r"duration=\d+\.\d{3}s duration_ms=\d+ outcome=")
        for line in d.log().splitlines():
            self.assertFalse(line.startswith("{"), line)

    def test_a_bad_log_format_is_a_config_error(self):
        d = self.daemon("""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """, daemon="log_format = yaml\n")
        self.assertEqual(d.proc.wait(IO_TIMEOUT), 78)
        self.assertIn("log_format", d.log())
        self.assertIn("must be text or json", d.log())


if __name__ == "__main__":
    unittest.main()
