"""Issue 13: tcp_congestion = NAME sets TCP_CONGESTION on a tcp listener's accepted sockets
and on the outbound sockets its plugin opens (host->connect), as the kernel reports them
(`ss -ti`); a listener without it keeps the kernel's default; a name the kernel does not
have is refused by the config check with file:line."""
import os
import shutil
import socket
import subprocess
import unittest

from harness import BERTHD, IO_TIMEOUT, DaemonTestCase, check_config, recv_exact

AVAILABLE = "/proc/sys/net/ipv4/tcp_available_congestion_control"
DEFAULT = "/proc/sys/net/ipv4/tcp_congestion_control"


def read(path):
    with open(path) as f:
        return f.read().split()


def other_algorithm():
    """An algorithm the kernel has that is not its default (reno is always built in)."""
    default = read(DEFAULT)[0]
    for name in ["reno", "cubic"] + read(AVAILABLE):
        if name != default and name in read(AVAILABLE):
            return name, default
    return None, default


def congestion_of(filt):
    """The congestion control of the established sockets `ss` selects with `filt`."""
    out = subprocess.run(["ss", "-tinH", "state", "established", filt], capture_output=True,
                         text=True, check=True).stdout
    algs = []
    for line in out.splitlines():
        if line.startswith((" ", "\t")):  # the info line under each socket
            words = line.split()
            algs.append(words[0] if words else "")
    return algs


@unittest.skipUnless(shutil.which("ss"), "needs ss (iproute2)")
class TcpCongestion(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.alg, self.default = other_algorithm()
        if self.alg is None:
            self.skipTest("the kernel has only its default congestion control")

    def test_accepted_and_outbound_sockets(self):
        dest = socket.socket()
        dest.bind(("127.0.0.1", 0))
        dest.listen(4)
        self.addCleanup(dest.close)
        dport = dest.getsockname()[1]
        d = self.daemon("""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            tcp_congestion = %s

            [plain]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo

            [socks]
            protocol = tcp
            address = 127.0.0.3:0
            handler = socks5
            allow_dest = 127.0.0.1
            tcp_congestion = %s
            """ % (self.alg, self.alg))
        d.wait_serving()

        # Accepted: the daemon's end of a connection to [echo]; [plain] keeps the default.
        for name, host, want in (("echo", "127.0.0.1", self.alg),
                                 ("plain", "127.0.0.2", self.default)):
            port = d.port(name)
            with socket.create_connection((host, port), timeout=IO_TIMEOUT) as c:
                c.sendall(b"ping")
                self.assertEqual(recv_exact(c, 4), b"ping")
                self.assertEqual(congestion_of("sport = :%d" % port), [want], name)

        # Outbound: the daemon's socket to the destination, the only one with that dport.
        with socket.create_connection(("127.0.0.3", d.port("socks")), timeout=IO_TIMEOUT) as c:
            c.sendall(b"\x05\x01\x00")
            self.assertEqual(recv_exact(c, 2), b"\x05\x00")
            c.sendall(b"\x05\x01\x00\x01\x7f\x00\x00\x01" + dport.to_bytes(2, "big"))
            self.assertEqual(recv_exact(c, 10)[:2], b"\x05\x00")
            peer, _ = dest.accept()
            with peer:
                self.assertEqual(congestion_of("dport = :%d" % dport), [self.alg])
                self.assertEqual(congestion_of("sport = :%d" % dport), [self.default])

    def test_unknown_algorithm_refused(self):
        conf = os.path.join(self.tmp, "bad.conf")
        with open(conf, "w") as f:
            f.write("[daemon]\nplugin_dir = %s\n[l]\nprotocol = tcp\n"
                    "address = 127.0.0.1:0\nhandler = echo\ntcp_congestion = nosuchcc\n"
                    % os.path.join(os.path.dirname(BERTHD), "plugins"))
        rc, out = check_config(conf)
        self.assertNotEqual(rc, 0)
        self.assertIn("%s:7: tcp_congestion 'nosuchcc': not available in this kernel" % conf,
                      out)


if __name__ == "__main__":
    unittest.main()
