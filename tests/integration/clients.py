"""The peers an integration test runs itself, beside the daemon (harness.py runs the daemon):
echo servers on loopback for a proxy to relay to, a raw SOCKS5 client, and a background
load of echo round trips. One copy here, imported by the tests under tests/integration,
plugins/*/tests and packaging/tests (ctest puts this folder on their PYTHONPATH).

Every wait is bounded by harness.IO_TIMEOUT; none is a performance check.
"""
import ctypes
import ctypes.util
import socket
import struct
import threading

import harness
from harness import IO_TIMEOUT, stream_echo

# ------------------------------------------------------------------ echo servers


class TcpEcho:
    """A TCP echo server on loopback, outside berthd (socks5 never relays to berthd's own
    listeners): one thread per connection, every byte sent back until the client's EOF, then
    closed. .port, .close()."""

    def __init__(self, host="127.0.0.1", port=0, family=socket.AF_INET, backlog=64):
        self.sock = socket.socket(family, socket.SOCK_STREAM)
        self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._echo, args=(c,), daemon=True).start()

    @staticmethod
    def _echo(c):
        with c:
            while True:
                try:
                    b = c.recv(65536)
                    if not b:
                        return
                    c.sendall(b)
                except OSError:
                    return

    def close(self):
        self.sock.close()


def tcp_echo(test, **kw):
    """A TcpEcho closed when `test` ends; returns its port."""
    e = TcpEcho(**kw)
    test.addCleanup(e.close)
    return e.port


class UdpEcho:
    """A UDP server on loopback that remembers every datagram (received()) and, unless
    `prefix` is None, sends it back to its sender behind `prefix`."""

    def __init__(self, family=socket.AF_INET, host="127.0.0.1", port=0, prefix=b"echo:"):
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.prefix = prefix
        self.got = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                data, src = self.sock.recvfrom(65535)
            except OSError:
                return
            with self.lock:
                self.got.append(data)
            if self.prefix is None:
                continue
            try:
                self.sock.sendto(self.prefix + data, src)
            except OSError:
                pass

    def received(self):
        with self.lock:
            return list(self.got)

    def close(self):
        self.sock.close()


# ------------------------------------------------------------------ raw SOCKS5 client


def recv_strict(s, n):
    """Exactly n bytes, with the socket's own timeout; an AssertionError at an early EOF."""
    return harness.recv_exact(s, n, timeout=None, strict=True)


def crypt_hash(password, prefix=b"$y$"):
    """A crypt(3) hash made by the system's libcrypt (the library the plugin checks with)."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    salt = lib.crypt_gensalt(prefix, 0, None, 0)
    assert salt, "crypt_gensalt failed"
    return lib.crypt(password.encode(), salt).decode()


def auth_msg(user, password):
    """An RFC 1929 username/password request."""
    u, p = user.encode(), password.encode()
    return bytes([1, len(u)]) + u + bytes([len(p)]) + p


def _address(host, port):
    """ATYP ADDR PORT for `host`: an IPv4 or IPv6 literal, else a name (str, or bytes sent
    as they are)."""
    if isinstance(host, str):
        for fam, atyp in ((socket.AF_INET, 1), (socket.AF_INET6, 4)):
            try:
                return bytes([atyp]) + socket.inet_pton(fam, host) + struct.pack("!H", port)
            except OSError:
                pass
        host = host.encode()
    return bytes([3, len(host)]) + host + struct.pack("!H", port)


def request(cmd, host, port):
    """A request (1 CONNECT, 2 BIND, 3 UDP ASSOCIATE) for `host` (an IPv4/IPv6 literal, or a
    name) and `port`."""
    return bytes([5, cmd, 0]) + _address(host, port)


def udp_header(host, port, frag=0):
    """The header of a datagram through a UDP ASSOCIATE relay (RFC 1928 section 7)."""
    return bytes([0, 0, frag]) + _address(host, port)


def greet(s):
    """The greeting offering no authentication, which the proxy must accept."""
    s.sendall(b"\x05\x01\x00")
    got = recv_strict(s, 2)
    if got != b"\x05\x00":
        raise AssertionError("the greeting was answered %r" % got)


def read_reply(s):
    """A request reply: (code, bound address bytes, bound port)."""
    head = recv_strict(s, 4)
    if head[0] != 5 or head[2] != 0 or head[3] not in (1, 4):
        raise AssertionError("not a SOCKS5 reply with an IP address: %r" % head)
    addr = recv_strict(s, 4 if head[3] == 1 else 16)
    (port,) = struct.unpack("!H", recv_strict(s, 2))
    return head[1], addr, port


def read_reply_text(s):
    """A request reply: (code, bound address as text, bound port)."""
    code, addr, port = read_reply(s)
    return code, socket.inet_ntop(socket.AF_INET if len(addr) == 4 else socket.AF_INET6,
                                  addr), port


def socks5_open(s, dest_port, dest_host="127.0.0.1"):
    """Greeting and CONNECT on the connected socket s; returns the reply code."""
    greet(s)
    s.sendall(request(1, dest_host, dest_port))
    return read_reply(s)[0]


def socks5_connect(proxy, dest_port, dest_host="127.0.0.1"):
    """A new connection to the proxy at `proxy` (host, port), greeting and CONNECT to
    dest_host:dest_port; returns (socket, reply code)."""
    s = socket.create_connection(proxy, timeout=IO_TIMEOUT)
    try:
        return s, socks5_open(s, dest_port, dest_host)
    except BaseException:
        s.close()
        raise


# ------------------------------------------------------------------ background load


class EchoLoad(threading.Thread):
    """Echo round trips on a thread until stop(): connect, send `msg` (with the round trip's
    number for a %d in it), read it back, close; every failure recorded, none ends the loop.
    .ok counts the round trips that came back whole, .failures says what went wrong with
    the others; `pause` seconds between round trips (0: none). start() it; stop() fails if
    the thread hangs."""

    def __init__(self, family, addr, msg=b"conn %d\n", pause=0):
        super().__init__(daemon=True)
        self.family, self.addr = family, addr
        self.msg, self.pause = msg, pause
        self.ok = 0
        self.failures = []
        self.halt = threading.Event()

    def _halted(self):
        return self.halt.wait(self.pause) if self.pause else self.halt.is_set()

    def run(self):
        n = 0
        while not self._halted():
            msg = self.msg % n if b"%d" in self.msg else self.msg
            n += 1
            try:
                got = stream_echo(self.family, self.addr, msg, timeout=IO_TIMEOUT)
                if got == msg:
                    self.ok += 1
                else:
                    self.failures.append("conn %d: got %r" % (n, got))
            except OSError as e:
                self.failures.append("conn %d: %r" % (n, e))

    def stop(self):
        self.halt.set()
        self.join(IO_TIMEOUT * 2)
        if self.is_alive():
            raise AssertionError("the echo load hung")
