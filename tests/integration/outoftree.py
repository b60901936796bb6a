"""Building against an install of the build tree, as an out-of-tree plugin author does.

berth.pc (and berth-testhost.pc) are written at configure time with absolute paths (prefix,
includedir and libdir as CMAKE_INSTALL_PREFIX made them), so an install into another prefix
does not move them, and pkgconf's --define-prefix does not help (pkgconf 1.8.1 still hands out
-I/usr/local/include: includedir and libdir do not go through ${prefix}). install() therefore
relocates explicitly: it reads prefix, includedir and libdir from the installed berth.pc and
returns --define-variable arguments for each, with the configured prefix replaced by the
temporary one. Only the installed .pc files are visible (PKG_CONFIG_LIBDIR is their folder
alone), so a berth-dev installed on the machine cannot stand in for them.
"""
import glob
import os
import shlex
import socket
import subprocess
import threading

from harness import BUILD, IO_TIMEOUT, SANITIZED


def run(argv, **kw):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=600, **kw)
    if r.returncode != 0:
        raise AssertionError("%s exited %d:\n%s%s" % (shlex.join(argv), r.returncode, r.stdout,
                                                    r.stderr))
    return r.stdout


def under(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def pkg_env(pcdir):
    env = dict(os.environ, PKG_CONFIG_LIBDIR=pcdir, PKG_CONFIG_PATH="")
    env.pop("PKG_CONFIG_SYSROOT_DIR", None)
    return env


def pkg_config(pcdir, *args):
    return run(["pkg-config", *args], env=pkg_env(pcdir)).strip()


class Install:
    """The build tree installed into TMP/prefix: .prefix, .defines (pkg-config arguments
    that relocate the .pc files into it), .pcdir (their folder)."""

    def __init__(self, tmp, tc=None):
        self.prefix = os.path.join(tmp, "prefix")
        run(["cmake", "--install", BUILD, "--prefix", self.prefix])
        pcs = glob.glob(os.path.join(self.prefix, "**", "pkgconfig", "berth.pc"), recursive=True)
        if len(pcs) != 1:
            raise AssertionError("berth.pc installed once under %s: %r" % (self.prefix, pcs))
        self.pcdir = os.path.dirname(pcs[0])
        configured = pkg_config(self.pcdir, "--variable=prefix", "berth")
        if not configured.startswith("/"):
            raise AssertionError("prefix in berth.pc: %r" % configured)
        self.defines = []
        for var in ("prefix", "includedir", "libdir"):
            value = pkg_config(self.pcdir, "--variable=" + var, "berth")
            if not (value == configured or value.startswith(configured + "/")):
                raise AssertionError("%s=%s is not below prefix=%s in berth.pc" %
                                     (var, value, configured))
            self.defines.append("--define-variable=%s=%s%s" %
                                (var, self.prefix, value[len(configured):]))

    def pkg_config(self, *args):
        return pkg_config(self.pcdir, *self.defines, *args)

    def make(self, folder, *targets):
        """`make TARGETS` in an example's folder, with pkg-config pointed at the install. In
        a sanitizer build the installed libraries (berth-testhost) are instrumented by clang,
        so the example is built the same way to link with them."""
        pc = shlex.join(["pkg-config", *self.defines])
        flags = ["CFLAGS=-O2 -g -Wall -Wextra -Werror"]
        if SANITIZED:
            san = "-fsanitize=address,undefined -fno-omit-frame-pointer"
            flags = ["CC=clang", "CFLAGS=-O1 -g -Wall -Wextra -Werror " + san, "LDFLAGS=" + san]
        return run(["make", "-C", folder, "PKG_CONFIG=" + pc, *flags, *targets],
                   env=pkg_env(self.pcdir))


def exported_symbols(so):
    """The names a shared object exports (nm -D --defined-only)."""
    words = run(["nm", "-D", "--defined-only", so]).split()
    return words[2::3]  # "ADDRESS TYPE NAME" triples


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
