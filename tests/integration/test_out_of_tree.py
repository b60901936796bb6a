"""The socks5 plugin builds out of tree against an installed berth-dev with pkg-config alone
(issue 10), and the real berthd serves a CONNECT with the .so so built.

The build tree is installed into a temporary prefix (`cmake --install BUILD --prefix TMP`);
the plugin's sources (plugins/socks5/*.c *.h, not its tests) are copied to a folder of their
own outside the source tree and compiled the way docs/plugin-guide.md says, with nothing but
what `pkg-config --cflags --libs berth` hands out.

berth.pc is written at configure time with absolute paths (prefix, includedir and libdir as
CMAKE_INSTALL_PREFIX made them, packaging/berth.pc.in), so an install into another prefix does
not move them, and pkgconf's --define-prefix does not help (with pkgconf 1.8.1 it still hands
out -I/usr/local/include: includedir and libdir do not go through ${prefix}). The test
therefore relocates explicitly: it reads prefix, includedir and libdir from the installed
berth.pc and passes --define-variable for each, with the configured prefix replaced by TMP. Only the
installed berth.pc is visible (PKG_CONFIG_LIBDIR is its folder alone), so a berth-dev installed
on the machine cannot stand in for it.
"""
import glob
import os
import shlex
import shutil
import socket
import struct
import subprocess
import threading
import unittest

from harness import BUILD, IO_TIMEOUT, SRC, DaemonTestCase, recv_exact

PAYLOAD = bytes(range(256)) * 64 + b"out of tree"  # 16 KiB and a tail


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    if r.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (shlex.join(argv), r.returncode, r.stdout,
                                                    r.stderr))
    return r.stdout


def under(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


class ReverseServer:
    """A TCP server on 127.0.0.1: reads one client until its EOF, answers with the bytes
    reversed, closes. It answers only once the client's half-close has come through."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.port = self.sock.getsockname()[1]
        self.peers = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            c, peer = self.sock.accept()
        except OSError:
            return
        self.peers.append(peer)
        with c:
            c.settimeout(IO_TIMEOUT * 3)
            buf = bytearray()
            try:
                while True:
                    b = c.recv(65536)
                    if not b:
                        break
                    buf += b
                c.sendall(bytes(reversed(buf)))
            except OSError:
                pass

    def close(self):
        self.sock.close()
        self.thread.join(IO_TIMEOUT)


class OutOfTree(DaemonTestCase):

    def pkg_config(self, pcdir, *args):
        env = dict(os.environ, PKG_CONFIG_LIBDIR=pcdir, PKG_CONFIG_PATH="")
        env.pop("PKG_CONFIG_SYSROOT_DIR", None)
        return run(["pkg-config", *args], env=env).strip()

    def install(self):
        """Install the build tree into TMP/prefix; returns (prefix, pkg-config arguments that
        relocate berth.pc into it, the .pc folder)."""
        prefix = os.path.join(self.tmp, "prefix")
        run(["cmake", "--install", BUILD, "--prefix", prefix])
        pcs = glob.glob(os.path.join(prefix, "**", "pkgconfig", "berth.pc"), recursive=True)
        self.assertEqual(len(pcs), 1, "berth.pc installed once under %s: %r" % (prefix, pcs))
        pcdir = os.path.dirname(pcs[0])
        configured = self.pkg_config(pcdir, "--variable=prefix", "berth")
        self.assertTrue(configured.startswith("/"), "prefix in berth.pc: %r" % configured)
        defines = []
        for var in ("prefix", "includedir", "libdir"):
            value = self.pkg_config(pcdir, "--variable=" + var, "berth")
            self.assertTrue(value == configured or value.startswith(configured + "/"),
                            "%s=%s is not below prefix=%s in berth.pc" % (var, value, configured))
            defines.append("--define-variable=%s=%s%s" % (var, prefix, value[len(configured):]))
        return prefix, defines, pcdir

    def build_socks5(self, prefix, defines, pcdir):
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

        cflags = shlex.split(self.pkg_config(pcdir, *defines, "--cflags", "berth"))
        libs = shlex.split(self.pkg_config(pcdir, *defines, "--libs", "berth"))
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

        exported = run(["nm", "-D", "--defined-only", so]).split()
        # "ADDRESS TYPE NAME" triples: the names are every third word.
        names = exported[2::3]
        self.assertEqual(names, ["berth_handler"], "exported: %r" % exported)
        return so

    def test_socks5_out_of_tree(self):
        prefix, defines, pcdir = self.install()
        so = self.build_socks5(prefix, defines, pcdir)

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
