"""The socks5 plugin builds out of tree against an installed berth-dev with pkg-config alone
(issue 10), and the real berthd serves a CONNECT with the .so so built. The build tree is
installed into a temporary prefix; outoftree.py says how pkg-config is pointed at it.
"""
import glob
import os
import shlex
import shutil
import socket
import struct
import unittest

from harness import BUILD, IO_TIMEOUT, SRC, DaemonTestCase, recv_exact
from outoftree import Install, ReverseServer, exported_symbols, run, under

PAYLOAD = bytes(range(256)) * 64 + b"out of tree"  # 16 KiB and a tail


class OutOfTree(DaemonTestCase):

    def build_socks5(self, inst):
        """Copy the plugin's sources out of the tree and compile them against the install;
        returns the path of the .so."""
        src = os.path.join(self.tmp, "socks5-src")
        os.mkdir(src)
        self.assertFalse(under(src, SRC), "the copy must be outside the source tree")
        plugin = os.path.join(SRC, "plugins", "socks5")
        files = sorted(glob.glob(os.path.join(plugin, "*.c")) +
                       glob.glob(os.path.join(plugin, "*.h")))
        self.assertIn(os.path.join(plugin, "socks5.c"), files)
        for f in files:
            shutil.copy(f, src)

        prefix = inst.prefix
        cflags = shlex.split(inst.pkg_config("--cflags", "berth"))
        libs = shlex.split(inst.pkg_config("--libs", "berth"))
        # Every folder pkg-config names is in the install, none in the source or build tree.
        dirs = [f[2:] for f in cflags + libs if f.startswith(("-I", "-L"))]
        self.assertTrue(any(f.startswith("-I") for f in cflags), "no -I in %r" % cflags)
        for d in dirs:
            self.assertTrue(under(d, prefix), "%s is not in the install %s" % (d, prefix))
            self.assertFalse(under(d, SRC), "%s is in the source tree" % d)
            self.assertNotIn("daemon", d.split(os.sep))
        self.assertIn("-lberth-util", libs)
        incs = [f[2:] for f in cflags if f.startswith("-I")]
        self.assertTrue(any(os.path.exists(os.path.join(d, "berth", "handler.h")) for d in incs),
                        "no berth/handler.h under %r" % incs)

        so = os.path.join(src, "socks5.so")
        # The command of docs/plugin-guide.md: -fvisibility=hidden keeps the sources' own
        # functions out of the dynamic symbol table. -Wall -Werror: a source that builds in
        # the tree only thanks to the project's own flags (-D_GNU_SOURCE, say) fails here.
        argv = (["cc", "-Wall", "-Werror", "-shared", "-fPIC", "-fvisibility=hidden", *cflags] +
                [os.path.basename(f) for f in files if f.endswith(".c")] +
                ["-o", so, *libs, "-lcrypt"])
        run(argv, cwd=src)

        self.assertEqual(exported_symbols(so), ["berth_handler"])
        return so

    def test_socks5_out_of_tree(self):
        so = self.build_socks5(Install(self.tmp))

        server = ReverseServer()
        self.addCleanup(server.close)
        d = self.daemon("""
            [socks]
            protocol = tcp
            address = 127.0.0.1:0
            handler = %s
            allow_dest = 127.0.0.0/8
            """ % so)
        d.wait_serving()
        # The worker maps the plugin built here, not the build tree's socks5.so.
        for pid in d.worker_pids():
            with open("/proc/%d/maps" % pid) as f:
                maps = f.read()
            self.assertIn(so, maps)
            self.assertNotIn(os.path.join(os.path.realpath(BUILD), "plugins", "socks5.so"), maps)
        host, _, port = d.listener("socks")["bound"].rpartition(":")

        with socket.create_connection((host, int(port)), timeout=IO_TIMEOUT) as s:
            s.sendall(b"\x05\x01\x00")
            self.assertEqual(recv_exact(s, 2, strict=True), b"\x05\x00")
            s.sendall(b"\x05\x01\x00\x01" + socket.inet_aton("127.0.0.1") +
                      struct.pack("!H", server.port))
            reply = recv_exact(s, 10, strict=True)
            self.assertEqual(reply[:4], b"\x05\x00\x00\x01", "CONNECT reply %r" % reply)
            s.sendall(PAYLOAD)
            s.shutdown(socket.SHUT_WR)
            got = recv_exact(s, len(PAYLOAD) + 1)
        self.assertEqual(got, bytes(reversed(PAYLOAD)))
        self.assertEqual(len(server.peers), 1)


if __name__ == "__main__":
    unittest.main()
