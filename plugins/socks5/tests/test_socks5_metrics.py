"""socks5's UDP ASSOCIATE and BIND counters on the daemon's /metrics: counted as they happen
(scraped while the association still lives), per listener, and registered only on a
listener with udp = on / bind = on (the daemon's table of plugin metrics is shared by all).
Every check waits on an event (a datagram, a reply, a scrape that shows it), never on a
clock."""
import re
import shutil
import socket
import subprocess

import test_socks5_bind as tb
from clients import UdpEcho, greet, read_reply, read_reply_text, recv_strict, udp_header
from harness import IO_TIMEOUT, START_TIMEOUT, DaemonTestCase, wait_until
import test_metrics as tm  # the module, so its test class is not run here too

DROPS = ("stranger", "fragment", "malformed", "denied", "queue", "unasked", "resolver")
UDP_FAMILIES = ("berth_socks5_udp_associations_total", "berth_socks5_udp_datagrams_total",
                "berth_socks5_udp_bytes_total", "berth_socks5_udp_dropped_total")


class SocksMetricsTest(DaemonTestCase):
    def setUp(self):
        super().setUp()
        self.echo = UdpEcho()
        self.addCleanup(self.echo.close)
        self.d = self.daemon(
            "[socks]\nprotocol = tcp\naddress = 127.0.0.1:0\nhandler = socks5\n"
            "allow_dest = 127.0.0.0/8\nudp = on\nbind = on\nbind_max = 1\n\n"
            "[plain]\nprotocol = tcp\naddress = 127.0.0.1:0\nhandler = socks5\n"
            "allow_dest = 127.0.0.0/8\n",
            daemon="metrics = 127.0.0.1:0\n", wait=True)

    def control(self):
        s = socket.create_connection(("127.0.0.1", self.d.port("socks")), timeout=IO_TIMEOUT)
        self.addCleanup(s.close)
        greet(s)
        return s

    def scrape(self):
        return tm.parse(tm.scrape(self.d))

    def udp(self, samples, family, **labels):
        return tm.value(samples, "berth_socks5_" + family, listener="socks", **labels)

    def test_udp_counted_while_the_association_lives(self):
        s = self.control()
        u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(u.close)
        u.bind(("127.0.0.1", 0))
        u.settimeout(IO_TIMEOUT)
        s.sendall(bytes([5, 3, 0, 1]) + socket.inet_aton("127.0.0.1") +
                  u.getsockname()[1].to_bytes(2, "big"))
        rep, addr, port = read_reply(s)
        self.assertEqual(rep, 0)
        relay = (socket.inet_ntoa(addr), port)
        # Opened, nothing relayed yet.
        wait_until(lambda: self.udp(self.scrape(), "udp_associations_total") == 1,
                   what="the association counted when it opens")
        # A stranger (another address) first, then the client: once the client's reply is
        # back, the stranger's datagram has been seen.
        far = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(far.close)
        far.bind(("127.0.0.2", 0))
        far.sendto(udp_header("127.0.0.1", self.echo.port) + b"stranger", relay)
        payload = b"metrics over udp"
        u.sendto(udp_header("127.0.0.1", self.echo.port) + payload, relay)
        data, _ = u.recvfrom(65535)
        self.assertEqual(data, udp_header("127.0.0.1", self.echo.port) + b"echo:" + payload)
        self.assertEqual(self.echo.received(), [payload])
        back = len(b"echo:" + payload)

        def counted():
            m = self.scrape()
            return (self.udp(m, "udp_datagrams_total", direction="down") == 1 and
                    self.udp(m, "udp_dropped_total", reason="stranger") == 1)
        # The control connection is still open: counted as it happened, not at the end.
        wait_until(counted, what="the datagrams and the drop counted")
        m = self.scrape()
        self.assertEqual(self.udp(m, "udp_associations_total"), 1)
        self.assertEqual(self.udp(m, "udp_datagrams_total", direction="up"), 1)
        self.assertEqual(self.udp(m, "udp_datagrams_total", direction="down"), 1)
        self.assertEqual(self.udp(m, "udp_bytes_total", direction="up"), len(payload))
        self.assertEqual(self.udp(m, "udp_bytes_total", direction="down"), back)
        for why in DROPS:
            self.assertEqual(self.udp(m, "udp_dropped_total", reason=why),
                             1 if why == "stranger" else 0, why)
        # The association's log line agrees when it ends.
        s.close()
        line = self.d.wait_log(r"udp association ended \(([^)]*)\): (.*)$")
        c = dict(kv.split("=") for kv in line.group(2).split() if "=" in kv)
        self.assertEqual((c["datagrams_up"], c["datagrams_down"], c["stranger"]),
                         ("1", "1", "1"))
        self.assertEqual((int(c["bytes_up"]), int(c["bytes_down"])), (len(payload), back))
        # A second association adds to the same counter.
        s2 = self.control()
        s2.sendall(bytes([5, 3, 0, 1]) + bytes(4) + bytes(2))
        self.assertEqual(read_reply(s2)[0], 0)
        wait_until(lambda: self.udp(self.scrape(), "udp_associations_total") == 2,
                   what="the second association counted")
        self.check_format()

    def test_binds_accepted_and_refused(self):
        first = self.control()
        first.sendall(tb.bind_request("127.0.0.1", 0))
        rep, host, port = read_reply_text(first)
        self.assertEqual(rep, 0)
        second = self.control()
        second.sendall(tb.bind_request("127.0.0.1", 0))
        self.assertEqual(read_reply_text(second)[0], 1)  # bind_max = 1
        # The first one's peer connects: the BIND goes on, and is counted once.
        p = socket.create_connection((host, port), timeout=IO_TIMEOUT)
        self.addCleanup(p.close)
        self.assertEqual(read_reply_text(first)[0], 0)
        p.sendall(b"peer")
        self.assertEqual(recv_strict(first, 4), b"peer")

        def counted():
            m = self.scrape()
            return (self.udp(m, "binds_total", result="accepted") == 1 and
                    self.udp(m, "binds_total", result="refused") == 1)
        wait_until(counted, what="one BIND accepted and one refused")
        self.check_format()

    def check_format(self):
        """Per listener: [plain] (udp and bind off) spends no slot on them; every family's
        TYPE once; promtool accepts the scrape."""
        text = tm.scrape(self.d)
        m = tm.parse(text)
        plain = {n for n, labels in m if ("listener", "plain") in labels}
        self.assertIn("berth_socks5_replies_total", plain)
        self.assertEqual(plain & set(UDP_FAMILIES + ("berth_socks5_binds_total",)), set())
        socks = {n for n, labels in m if ("listener", "socks") in labels}
        self.assertTrue(set(UDP_FAMILIES + ("berth_socks5_binds_total",)) <= socks, socks)
        for family in UDP_FAMILIES + ("berth_socks5_binds_total",):
            self.assertEqual(len(re.findall(r"^# TYPE %s counter$" % family, text, re.M)), 1,
                             family)
        promtool = shutil.which("promtool")
        if promtool is None:
            return
        r = subprocess.run([promtool, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=START_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())


if __name__ == "__main__":
    import unittest
    unittest.main()
