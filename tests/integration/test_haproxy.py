"""Issue 12: berth behind a real HAProxy (Debian's haproxy, run as a child process with -db,
no service), with send-proxy (v1) and send-proxy-v2 in front of one listener, and HAProxy's
health checks sending PROXY v2 LOCAL. Clients connect to HAProxy from 127.0.0.2 and 127.0.0.3;
berth must see and log those addresses, not HAProxy's, and apply `deny` to them."""
import os
import shutil
import socket
import subprocess
import unittest

from harness import (connect_from, IO_TIMEOUT, START_TIMEOUT, DaemonTestCase, built_test_plugin, free_ports,
                     peer_closed, recv_until, wait_until)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"


def haproxy_config(v1_port, v2_port, berth_port):
    return f"""\
global
    maxconn 200

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend via_v1
    bind 127.0.0.1:{v1_port}
    default_backend berth_v1

backend berth_v1
    server b1 127.0.0.1:{berth_port} send-proxy

frontend via_v2
    bind 127.0.0.1:{v2_port}
    default_backend berth_v2

backend berth_v2
    server b1 127.0.0.1:{berth_port} send-proxy-v2 check inter 200ms check-send-proxy
"""


class BehindHAProxy(DaemonTestCase):

    def setUp(self):
        super().setUp()
        if not os.access(HAPROXY, os.X_OK):
            self.fail("haproxy is missing (Debian package haproxy; make deps installs it)")
        self.berth_port, self.v1_port, self.v2_port = free_ports(3)
        self.d = self.daemon(f"""
            [edge]
            protocol = tcp
            address = 127.0.0.1:{self.berth_port}
            handler = {built_test_plugin("whoami")}
            proxy_protocol = any
            proxy_from = 127.0.0.1
            deny = 127.0.0.3
            """, workers=2)
        self.d.wait_serving()
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(haproxy_config(self.v1_port, self.v2_port, self.berth_port))
        self.hlog = open(os.path.join(self.tmp, "haproxy.log"), "wb")
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=self.hlog,
                                        stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_haproxy)
        wait_until(lambda: self.haproxy.poll() is not None or (
            self.port_open(self.v1_port) and self.port_open(self.v2_port)),
            START_TIMEOUT, what="haproxy to listen")
        if self.haproxy.poll() is not None:
            self.fail("haproxy exited %d:\n%s" % (self.haproxy.returncode, self.haproxy_log()))

    def haproxy_log(self):
        with open(os.path.join(self.tmp, "haproxy.log"), "rb") as f:
            return f.read().decode("utf-8", "replace")

    def stop_haproxy(self):
        if self.haproxy.poll() is None:
            self.haproxy.terminate()
            try:
                self.haproxy.wait(IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.haproxy.kill()
                self.haproxy.wait()
        self.hlog.close()

    @staticmethod
    def port_open(port):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return True
        except OSError:
            return False

    def client(self, src, port):
        s = connect_from(src, port)
        self.addCleanup(s.close)
        return s

    def test_berth_sees_the_clients_through_v1_and_v2(self):
        for port in (self.v1_port, self.v2_port):
            s = self.client("127.0.0.2", port)
            line = recv_until(s).decode()
            self.assertTrue(line.startswith("peer=127.0.0.2:%d balancer=127.0.0.1:" %
                                            s.getsockname()[1]), line)
            s.sendall(b"through haproxy\n")
            self.assertEqual(recv_until(s), b"through haproxy\n")
            self.d.wait_log(r"edge 127\.0\.0\.2:%d: whoami: balancer=127\.0\.0\.1:" %
                            s.getsockname()[1])

    def test_deny_refuses_one_client_only(self):
        denied = self.client("127.0.0.3", self.v2_port)
        self.assertTrue(peer_closed(denied))
        self.d.wait_status(lambda st: self.d.listener("edge", st)["refused_acl"] >= 1,
                           "the denied client to be counted")
        ok = self.client("127.0.0.2", self.v2_port)
        self.assertTrue(recv_until(ok).startswith(b"peer=127.0.0.2:"))

    def test_health_checks_are_local_and_quiet(self):
        # check-send-proxy: HAProxy's checks open conns with a v2 LOCAL header.
        self.d.wait_log(r"PROXY LOCAL \(a health check\)")
        st = self.d.status()
        self.assertEqual(self.d.listener("edge", st)["refused_proxy"], 0)


if __name__ == "__main__":
    unittest.main()
