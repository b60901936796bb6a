"""The peers an integration test runs itself, beside the daemon (harness.py runs the daemon):
echo servers on loopback for a proxy to relay to, a raw SOCKS5 client, and a background
load of echo round trips. One copy here, imported by the tests under tests/integration,
plugins/*/tests and packaging/tests (ctest puts this folder on their PYTHONPATH).

Every wait is bounded by harness.IO_TIMEOUT; none is a performance check.
"""
import socket
import threading

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
