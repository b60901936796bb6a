"""host->dgram_* misused by a plugin (tests/plugins/dgramabuse.c): a NULL socket, a socket
closed twice, an old handle after a new socket took its slot, and calls after the conn began
to end and from finish(), when the socket's memory is long gone. Each must refuse (-EINVAL,
-EPIPE, NULL) and touch nothing freed: the sanitizer build runs this too."""
import socket
import unittest

from harness import IO_TIMEOUT, DaemonTestCase, built_test_plugin, peer_closed, recv_until

EINVAL, EPIPE = 22, 32


class DgramMisuse(DaemonTestCase):

    def setUp(self):
        super().setUp()
        self.d = self.daemon(f"""
            [abuse]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("dgramabuse")}
            """)
        self.d.wait_serving()

    def echo(self, port):
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        u.settimeout(IO_TIMEOUT)
        try:
            u.sendto(b"ping", ("127.0.0.1", port))
            data, src = u.recvfrom(100)
            self.assertEqual((data, src), (b"ping", ("127.0.0.1", port)))
        finally:
            u.close()

    def command(self, s, line):
        s.sendall(line)
        return recv_until(s).decode().split()

    def test_every_misuse_is_refused(self):
        s = socket.create_connection(("127.0.0.1", self.d.port("abuse")), timeout=IO_TIMEOUT)
        with s:
            words = recv_until(s).decode().split()
            self.assertEqual(words[0], "open")
            self.assertEqual(words[2], "null=%d,null,0" % -EINVAL)
            first = int(words[1])
            self.echo(first)
            self.assertEqual(self.command(s, b"close\n"),
                             ["closed", "send=%d" % -EPIPE, "addr=null", "len=0"])
            words = self.command(s, b"reopen\n")
            self.assertEqual(words[0], "reopen")
            self.assertEqual(words[2], "old=%d" % -EPIPE)
            self.echo(int(words[1]))
            s.sendall(b"end\n")
            self.assertTrue(peer_closed(s))
        self.d.wait_log(r"dgramabuse: ending send=%d finish send=%d addr=null len=0" %
                        (-EPIPE, -EPIPE))

    def test_a_conn_that_ends_with_its_socket_open(self):
        # The client goes away: the host closes the socket; finish() still uses the handle.
        for _ in range(3):
            s = socket.create_connection(("127.0.0.1", self.d.port("abuse")), timeout=IO_TIMEOUT)
            with s:
                words = recv_until(s).decode().split()
                self.echo(int(words[1]))
        self.d.wait_log(r"dgramabuse: ending send=0 finish send=%d addr=null len=0" % -EPIPE)


if __name__ == "__main__":
    unittest.main()
