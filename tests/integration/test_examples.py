"""The example plugins in docs/examples (issue 15) build out of tree with their own Makefiles
against an install of the build tree, with pkg-config alone; the ones with unit tests pass
them on berth-testhost (`make check`); and the real berthd loads and serves each:

  hello    a greeting, then echo;
  daytime  the time of day per datagram (UDP) and per connection (TCP);
  forward  host->connect + host->relay to a TCP server;
  hashd    host->work on the pool, an idle timer, a bounded line.
"""
import os
import re
import shutil
import socket
import time
import unittest

from harness import (IO_TIMEOUT, SRC, DaemonTestCase, check_config, recv_exact, recv_until)
from outoftree import Install, ReverseServer, exported_symbols, under

EXAMPLES = ("hello", "daytime", "forward", "hashd")


class Examples(DaemonTestCase):

    def build_all(self):
        inst = Install(self.tmp)
        built = {}
        for name in EXAMPLES:
            folder = os.path.join(self.tmp, "ex-" + name)
            shutil.copytree(os.path.join(SRC, "docs", "examples", name), folder)
            self.assertFalse(under(folder, SRC))
            targets = ["all"]
            if os.path.exists(os.path.join(folder, "test_%s.c" % name)):
                targets.append("check")
            out = inst.make(folder, *targets)
            if "check" in targets:
                self.assertIn("%s: all checks passed" % name, out)
            so = os.path.join(folder, name + ".so")
            self.assertEqual(exported_symbols(so), ["berth_handler"], name)
            built[name] = so
        return built

    def test_examples_build_and_serve(self):
        so = self.build_all()
        target = ReverseServer()
        self.addCleanup(target.close)
        d = self.daemon("""
            [hello]
            protocol = tcp
            address = 127.0.0.1:0
            handler = %(hello)s
            greeting = hi there

            [daytime-udp]
            protocol = udp
            address = 127.0.0.1:0
            handler = %(daytime)s

            [daytime-tcp]
            protocol = tcp
            address = 127.0.0.1:0
            handler = %(daytime)s
            format = unix

            [forward]
            protocol = tcp
            address = 127.0.0.1:0
            handler = %(forward)s
            to = 127.0.0.1:%(port)d

            [hashd]
            protocol = tcp
            address = 127.0.0.1:0
            handler = %(hashd)s
            rounds = 1000
            line_timeout = 1s
            """ % dict(so, port=target.port))
        d.wait_serving()

        with socket.create_connection(d.bound("hello"), timeout=IO_TIMEOUT) as s:
            self.assertEqual(recv_until(s), b"hi there\n")
            s.sendall(b"echo me")
            self.assertEqual(recv_exact(s, 7), b"echo me")

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(IO_TIMEOUT)
            u.sendto(b"what time is it", d.bound("daytime-udp"))
            reply = u.recv(100)
        self.assertRegex(reply.decode(), r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\n$")

        with socket.create_connection(d.bound("daytime-tcp"),
                                      timeout=IO_TIMEOUT) as s:
            line = recv_until(s)
            self.assertEqual(s.recv(10), b"", "daytime closes after its line")
        self.assertLess(abs(int(line) - time.time()), 600)

        with socket.create_connection(d.bound("forward"), timeout=IO_TIMEOUT) as s:
            s.sendall(b"forward me")
            s.shutdown(socket.SHUT_WR)
            self.assertEqual(recv_exact(s, 10), b"em drawrof")
        self.assertEqual(len(target.peers), 1)

        with socket.create_connection(d.bound("hashd"), timeout=IO_TIMEOUT) as s:
            s.sendall(b"a\nb\n")
            self.assertRegex(recv_until(s).decode(), r"^[0-9a-f]{16}\n$")
            self.assertRegex(recv_until(s).decode(), r"^[0-9a-f]{16}\n$")
            # Then nothing for line_timeout: the plugin's timer says so and closes.
            self.assertEqual(recv_until(s), b"bye: idle\n")
            self.assertEqual(s.recv(10), b"")

    def test_example_option_errors_name_file_and_line(self):
        so = self.build_all()
        conf = os.path.join(self.tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\nplugin_dir = %s\n\n[d]\nprotocol = udp\naddress = 127.0.0.1:0\n"
                    "handler = %s\nformat = julian\n" % (self.tmp, so["daytime"]))
        code, out = check_config(conf)
        self.assertNotEqual(code, 0)
        self.assertRegex(out, re.escape(conf) + r":8: format: want rfc3339 or unix")


if __name__ == "__main__":
    unittest.main()
