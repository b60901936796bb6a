"""Issue 12: the scale-out check. Debian's HAProxy (send-proxy-v2, agent-check, health checks
sending PROXY v2 LOCAL) in front of two berthd instances, each with its own config, ports and
agent; clients from several loopback addresses.

- berth sees and logs the clients' addresses, not HAProxy's; `deny` of one client address
  refuses that client only; `per_source = 2` holds per client across both workers of an
  instance (HAProxy's `balance source` keeps a client on one instance).
- A rolling restart (SIGTERM one instance, which says "drain" for drain_delay before it stops
  accepting; start it again; wait until HAProxy has it back; then the other) under a steady
  connection load (bench/loadgen, connect mode, 32 source addresses) loses no connection:
  loadgen counts 0 failures.

The whole module runs in a network namespace of its own (unshare(CLONE_NEWNET) at import, its
loopback brought up), so its HAProxy, berthds and load see no other test's traffic."""
import ctypes
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import unittest

from harness import (connect_from, BUILD, IO_TIMEOUT, START_TIMEOUT, Berthd, DaemonTestCase,
                     built_test_plugin, free_ports, peer_closed, recv_until, wait_until)

HAPROXY = shutil.which("haproxy") or "/usr/sbin/haproxy"
LOADGEN = os.path.join(BUILD, "bench", "loadgen")
CLONE_NEWNET = 0x40000000


def setUpModule():
    """Into a network namespace of our own: every process this module starts inherits it."""
    before = os.readlink("/proc/self/ns/net")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWNET) (the scale-out test runs as "
                      "root, in a network namespace of its own)")
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    if os.readlink("/proc/self/ns/net") == before:
        raise AssertionError("still in the host's network namespace")


class ScaleOut(DaemonTestCase):

    def instance(self, name):
        port, limited, agent = free_ports(3)
        tmp = os.path.join(self.tmp, name)
        os.makedirs(tmp)
        d = Berthd(tmp, f"""
            [load]
            protocol = tcp
            address = 127.0.0.1:{port}
            handler = echo
            proxy_protocol = v2
            proxy_from = 127.0.0.1

            [limited]
            protocol = tcp
            address = 127.0.0.1:{limited}
            handler = {built_test_plugin("whoami")}
            proxy_protocol = v2
            proxy_from = 127.0.0.1
            per_source = 2
            deny = 127.0.0.3
            """, daemon=f"""
            agent = 127.0.0.1:{agent}
            drain_delay = 1500ms
            """, workers=2)
        d.name, d.port, d.limited, d.agent = name, port, limited, agent
        self._daemons.append(d)
        d.start()
        d.wait_serving()
        return d

    def setUp(self):
        super().setUp()
        for tool in (HAPROXY, LOADGEN):
            if not os.access(tool, os.X_OK):
                self.fail("%s is missing (haproxy: the Debian package; loadgen: bench/)" % tool)
        self.a = self.instance("a")
        self.b = self.instance("b")
        self.fe_load, self.fe_limited = free_ports(2)
        self.stats_sock = os.path.join(self.tmp, "haproxy.sock")
        servers_load = "".join(
            f"    server {d.name} 127.0.0.1:{d.port} send-proxy-v2 weight 100 check "
            f"check-send-proxy inter 100ms agent-check agent-port {d.agent} agent-inter 100ms\n"
            for d in (self.a, self.b))
        servers_limited = "".join(
            f"    server {d.name} 127.0.0.1:{d.limited} send-proxy-v2 weight 100 check "
            f"check-send-proxy inter 100ms agent-check agent-port {d.agent} agent-inter 100ms\n"
            for d in (self.a, self.b))
        cfg = os.path.join(self.tmp, "haproxy.cfg")
        with open(cfg, "w") as f:
            f.write(f"""\
global
    maxconn 1000
    stats socket {self.stats_sock} level admin

defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    retries 3
    option redispatch

frontend fe_load
    bind 127.0.0.1:{self.fe_load}
    default_backend be_load

backend be_load
    balance roundrobin
{servers_load}
frontend fe_limited
    bind 127.0.0.1:{self.fe_limited}
    default_backend be_limited

backend be_limited
    balance source
    hash-type consistent
{servers_limited}""")
        self.hlog = open(os.path.join(self.tmp, "haproxy.log"), "wb")
        self.haproxy = subprocess.Popen([HAPROXY, "-db", "-f", cfg], stdout=self.hlog,
                                        stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_process, self.haproxy)
        self.addCleanup(self.hlog.close)
        self.wait_up(("be_load", "a"), ("be_load", "b"), ("be_limited", "a"),
                     ("be_limited", "b"))

    def stop_process(self, p):
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(IO_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def haproxy_status(self):
        """{(backend, server): status} from HAProxy's stats socket, or {} if not up yet."""
        if self.haproxy.poll() is not None:
            with open(os.path.join(self.tmp, "haproxy.log"), "rb") as f:
                raise AssertionError("haproxy exited:\n" + f.read().decode("utf-8", "replace"))
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(IO_TIMEOUT)
                s.connect(self.stats_sock)
                s.sendall(b"show stat\n")
                data = b""
                while True:
                    b = s.recv(65536)
                    if not b:
                        break
                    data += b
        except OSError:
            return {}
        lines = data.decode().splitlines()
        if not lines or not lines[0].startswith("# "):
            return {}
        head = lines[0][2:].split(",")
        col = head.index("status")
        out = {}
        for line in lines[1:]:
            f = line.split(",")
            if len(f) > col:
                out[(f[0], f[1])] = f[col]
        return out

    def wait_up(self, *servers):
        wait_until(lambda: all(self.haproxy_status().get(s) == "UP" for s in servers),
                   START_TIMEOUT, 0.05, "haproxy to see %s up" % (servers,))

    def test_clients_seen_denied_and_limited_behind_haproxy(self):
        c = connect_from("127.0.0.2", self.fe_limited)
        self.addCleanup(c.close)
        line = recv_until(c).decode()
        self.assertTrue(line.startswith("peer=127.0.0.2:%d balancer=127.0.0.1:" %
                                        c.getsockname()[1]), line)
        # It is logged under the client's address by the instance that served it.
        rx = r"limited 127\.0\.0\.2:%d: whoami: balancer=127\.0\.0\.1:" % c.getsockname()[1]
        wait_until(lambda: any(re.search(rx, d.log()) for d in (self.a, self.b)),
                   what="the client's address in a log")
        # per_source = 2: a second one is served, a third refused (same instance: balance
        # source), whichever of its two workers takes it.
        c2 = connect_from("127.0.0.2", self.fe_limited)
        self.addCleanup(c2.close)
        self.assertTrue(recv_until(c2).startswith(b"peer=127.0.0.2:"))
        for _ in range(3):
            c3 = connect_from("127.0.0.2", self.fe_limited)
            self.addCleanup(c3.close)
            self.assertTrue(peer_closed(c3))
        refused = lambda: sum(d.listener("limited")["refused_source"] for d in (self.a, self.b))
        wait_until(lambda: refused() == 3, what="3 refusals counted")
        # Another client is not limited by that one; the denied one only is refused.
        c4 = connect_from("127.0.0.4", self.fe_limited)
        self.addCleanup(c4.close)
        self.assertTrue(recv_until(c4).startswith(b"peer=127.0.0.4:"))
        c5 = connect_from("127.0.0.3", self.fe_limited)
        self.addCleanup(c5.close)
        self.assertTrue(peer_closed(c5))
        wait_until(lambda: sum(d.listener("limited")["refused_acl"] for d in (self.a, self.b))
                   == 1, what="the denied client counted")
        # HAProxy's LOCAL health checks are never counted as bad headers.
        self.assertEqual(sum(d.listener(n)["refused_proxy"] for d in (self.a, self.b)
                             for n in ("load", "limited")), 0)

    def test_rolling_restart_under_load_loses_no_connection(self):
        out = open(os.path.join(self.tmp, "loadgen.out"), "w+")
        self.addCleanup(out.close)
        load = subprocess.Popen([LOADGEN, "-m", "connect", "-c", "8", "-S", "32", "-d", "600",
                                 "-w", "0", "-T", "30", "-j", "127.0.0.1:%d" % self.fe_load],
                                stdout=out, stderr=subprocess.STDOUT)
        self.addCleanup(self.stop_process, load)
        for d in (self.a, self.b):
            wait_until(lambda d=d: d.listener("load")["accepted"] > 20,
                       what="load on instance %s" % d.name)
        for d in (self.a, self.b):
            d.signal(signal.SIGTERM)
            wait_until(lambda d=d: self.haproxy_status().get(("be_load", d.name)) != "UP",
                       what="haproxy to move clients off %s" % d.name)
            self.assertEqual(d.proc.wait(START_TIMEOUT), 0, d.log())
            d.logf.close()
            self.assertGreater(d.log().count("the agent says drain"), 0)
            # Started again: the counters live in the master's memory, so they start over.
            d.start()
            d.wait_serving()
            self.wait_up(("be_load", d.name), ("be_limited", d.name))
            wait_until(lambda d=d: d.listener("load")["accepted"] > 20,
                       what="load back on instance %s" % d.name)
        load.send_signal(signal.SIGTERM)
        self.assertIn(load.wait(START_TIMEOUT), (0, 1))
        out.seek(0)
        text = out.read()
        result = json.loads(text.strip().splitlines()[-1])
        self.assertGreater(result["messages"], 100, text)
        self.assertEqual(result["failures"], 0, text)
        print("rolling restart under load: %d connections in %.1f s, %d failed" %
              (result["messages"], result["seconds"], result["failures"]))
        self.assertEqual(load.returncode, 0, text)


if __name__ == "__main__":
    unittest.main()
