"""Issue 14: `[daemon] metrics = ADDRESS` serves GET /metrics in the Prometheus text format.

Traffic on echo, socks5 and upload shows up in the scrape, which `promtool check metrics`
accepts; a real Prometheus server (Debian's package) scrapes berth and answers a query for
berth_connections_accepted_total with the number of connections the test made; the endpoint
works on a unix socket and survives reloads; hostile clients (a slow request, a huge one, a
crowd of idle connections) cost only themselves."""
import json
import os
import re
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
import unittest
import urllib.parse
import urllib.request

from clients import TcpEcho, socks5_connect
from harness import (IO_TIMEOUT, START_TIMEOUT, DaemonTestCase, peer_closed, recv_exact,
                     wait_until)

PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """{(name, frozenset of (label, value)): float} of every sample."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = SAMPLE.match(line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(LABEL.findall(m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


def http_get(family, addr, path="/metrics", method="GET"):
    """(status, headers text, body) of one request, read to EOF."""
    s = socket.socket(family, socket.SOCK_STREAM)
    s.settimeout(IO_TIMEOUT)
    try:
        s.connect(addr)
        s.sendall(("%s %s HTTP/1.1\r\nHost: berth\r\n\r\n" % (method, path)).encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    finally:
        s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, head.decode(), body.decode()


def metrics_addr(d):
    m = re.search(r"serving /metrics on (\S+)", d.log())
    assert m, d.log()
    where = m.group(1)
    if where.startswith("/"):
        return socket.AF_UNIX, where
    host, port = where.rsplit(":", 1)
    return socket.AF_INET, (host, int(port))


def scrape(d):
    family, addr = metrics_addr(d)
    status, head, body = http_get(family, addr)
    assert status == 200, (status, head, body)
    assert "text/plain; version=0.0.4" in head, head
    return body


def listening_tcp_ports(pid):
    """TCP ports process `pid` listens on (from its socket fds and /proc/net/tcp*)."""
    inodes = set()
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            target = os.readlink("/proc/%d/fd/%s" % (pid, fd))
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            next(f)
            for row in f:
                cols = row.split()
                if cols[3] == "0A" and cols[9] in inodes:
                    ports.add(int(cols[1].rsplit(":", 1)[1], 16))
    return ports


def upload(addr, name, data):
    """One file over the upload protocol; returns the reply's status."""
    with socket.create_connection(addr, timeout=IO_TIMEOUT) as s:
        h = json.dumps({"cmd": "put", "file_name": name, "file_size": len(data)}).encode()
        s.sendall(struct.pack("<i", len(h)) + h + data)
        (n,) = struct.unpack("<i", recv_exact(s, 4))
        return json.loads(recv_exact(s, n))["status"]


def echo_once(addr, data=b"hello metrics\n"):
    with socket.create_connection(addr, timeout=IO_TIMEOUT) as s:
        s.sendall(data)
        assert recv_exact(s, len(data)) == data
        s.shutdown(socket.SHUT_WR)
        assert s.recv(1) == b""


class Metrics(DaemonTestCase):

    def start(self, daemon_keys, workers=2):
        self.updir = os.path.join(self.tmp, "up")
        os.mkdir(self.updir)
        self.dest = TcpEcho()
        self.addCleanup(self.dest.close)
        self.d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [socks]
            protocol = tcp
            address = 127.0.0.2:0
            handler = socks5
            allow_dest = 127.0.0.1:{self.dest.port}
            # Registers the UDP and BIND counters the dashboard queries too.
            udp = on
            bind = on

            [up]
            protocol = tcp
            address = 127.0.0.3:0
            handler = upload
            dir = {self.updir}
            max_size = 100
            """, daemon=daemon_keys, workers=workers, wait=True)

    def test_traffic_scrape_and_promtool(self):
        self.start("metrics = 127.0.0.1:0\n")
        echo, socks, up = (self.d.bound(n) for n in ("echo", "socks", "up"))
        for _ in range(5):
            echo_once(echo)
        relayed = 0
        for i in range(2):
            s, rep = socks5_connect(socks, self.dest.port)
            self.assertEqual(rep, 0)
            payload = b"x" * (100 + i)
            s.sendall(payload)
            self.assertEqual(recv_exact(s, len(payload)), payload)
            relayed += len(payload)
            s.close()
        s, rep = socks5_connect(socks, self.dest.port + 1 if self.dest.port < 65535 else 1)
        self.assertEqual(rep, 2)  # not in allow_dest
        s.close()
        self.assertEqual(upload(up, "a.txt", b"a" * 10), "ok")
        self.assertEqual(upload(up, "b.txt", b"b" * 20), "ok")
        self.assertEqual(upload(up, "big.txt", b"c" * 200), "error")  # over max_size

        def settled():
            s = parse(scrape(self.d))
            closed = sum(v for (n, l), v in s.items() if n == "berth_connections_closed_total")
            accepted = sum(v for (n, l), v in s.items()
                           if n == "berth_connections_accepted_total")
            return (accepted == closed == 11 and
                    value(s, "berth_socks5_relayed_bytes_total", listener="socks",
                          direction="up") == relayed)
        wait_until(settled, what="every connection closed and counted")
        text = scrape(self.d)
        s = parse(text)
        self.assertEqual(value(s, "berth_connections_accepted_total", listener="echo"), 5)
        self.assertEqual(value(s, "berth_connections_accepted_total", listener="socks"), 3)
        self.assertEqual(value(s, "berth_connections_accepted_total", listener="up"), 3)
        self.assertEqual(value(s, "berth_connections_closed_total", listener="echo",
                               reason="eof"), 5)
        self.assertEqual(value(s, "berth_transferred_bytes_total", listener="echo",
                               direction="in"), 5 * 14)
        self.assertEqual(value(s, "berth_transferred_bytes_total", listener="echo",
                               direction="out"), 5 * 14)
        self.assertEqual(value(s, "berth_connection_duration_seconds_count", listener="echo"), 5)
        self.assertEqual(value(s, "berth_connection_duration_seconds_bucket", listener="echo",
                               le="+Inf"), 5)
        self.assertEqual(value(s, "berth_socks5_replies_total", listener="socks", code="0"), 2)
        self.assertEqual(value(s, "berth_socks5_replies_total", listener="socks", code="2"), 1)
        self.assertEqual(value(s, "berth_socks5_relayed_bytes_total", listener="socks",
                               direction="down"), relayed)
        self.assertEqual(value(s, "berth_upload_files_stored_total", listener="up"), 2)
        self.assertEqual(value(s, "berth_upload_files_rejected_total", listener="up",
                               reason="too_large"), 1)
        self.assertEqual(value(s, "berth_build_info", version=re.search(
            r'version="([^"]+)"', text).group(1), abi="1"), 1)
        workers = [k for k in s if k[0] == "berth_worker_info"]
        self.assertEqual(len(workers), 2, workers)
        self.assertTrue(all(("state", "serving") in k[1] for k in workers), workers)
        # Every metric the Grafana dashboard queries is one berth serves.
        dash = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs",
                            "grafana", "berth.json")
        with open(dash) as f:
            exprs = [t["expr"] for p in json.load(f)["panels"] for t in p["targets"]]
        served = {n for n, _ in s}
        used = {n for e in exprs for n in re.findall(r"\bberth_[a-z0-9_]+", e)}
        self.assertTrue(used, exprs)
        self.assertEqual(used - served, set())
        # Every name once per family, and promtool's own checks.
        self.assertEqual(len(re.findall(r"^# TYPE berth_socks5_replies_total ", text, re.M)), 1)
        if PROMTOOL is None:
            self.skipTest("promtool is not installed (Debian: prometheus)")
        r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(),
                           capture_output=True, timeout=START_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stdout.decode() + r.stderr.decode())

    def test_errors_and_methods(self):
        self.start("metrics = 127.0.0.1:0\n", workers=1)
        family, addr = metrics_addr(self.d)
        self.assertEqual(http_get(family, addr, "/")[0], 404)
        self.assertEqual(http_get(family, addr, "/metrics", "POST")[0], 405)
        status, head, body = http_get(family, addr, "/metrics?x=1", "HEAD")
        self.assertEqual((status, body), (200, ""))
        self.assertRegex(head, r"Content-Length: [1-9]")

    @unittest.skipIf(PROMETHEUS is None, "prometheus is not installed")
    def test_real_prometheus_counts_the_connections(self):
        self.start("metrics = 127.0.0.1:0\n")
        made = 7
        for _ in range(made):
            echo_once(self.d.bound("echo"))
        _, (host, port) = metrics_addr(self.d)
        pdir = tempfile.mkdtemp(prefix="prom-", dir=self.tmp)
        conf = os.path.join(pdir, "prometheus.yml")
        with open(conf, "w") as f:
            f.write(f"""global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: berth
    static_configs:
      - targets: ["{host}:{port}"]
""")
        log = open(os.path.join(pdir, "prometheus.log"), "wb")
        self.addCleanup(log.close)
        prom = subprocess.Popen([PROMETHEUS, "--config.file=" + conf,
                                 "--storage.tsdb.path=" + os.path.join(pdir, "data"),
                                 "--web.listen-address=127.0.0.1:0"],
                                stdout=log, stderr=subprocess.STDOUT, cwd=pdir)

        def stop():
            prom.send_signal(signal.SIGTERM)
            try:
                prom.wait(timeout=START_TIMEOUT)
            except subprocess.TimeoutExpired:
                prom.kill()
                prom.wait()
        self.addCleanup(stop)
        api = []

        def listening():
            self.assertIsNone(prom.poll(), open(log.name).read())
            api[:] = sorted(listening_tcp_ports(prom.pid))
            return bool(api)
        wait_until(listening, timeout=60, what="prometheus to listen")
        answer = []

        def counted():
            q = urllib.parse.urlencode(
                {"query": 'sum(berth_connections_accepted_total{listener="echo"})'})
            for p in api:
                try:
                    with urllib.request.urlopen("http://127.0.0.1:%d/api/v1/query?%s" % (p, q),
                                                timeout=IO_TIMEOUT) as r:
                        res = json.load(r)
                except OSError:
                    continue
                answer[:] = res["data"]["result"]
                return bool(answer) and float(answer[0]["value"][1]) == made
            return False
        wait_until(counted, timeout=120, interval=0.5,
                   what="prometheus to scrape %d accepted connections (last answer %r)"
                   % (made, answer))

    def test_unix_socket_and_reload(self):
        path = os.path.join(self.tmp, "metrics.sock")
        self.start("metrics = %s\n" % path, workers=1)
        body = scrape(self.d)
        self.assertIn("berth_build_info", body)
        ino = os.stat(path).st_ino
        # A reload with the same address keeps the socket; the counters go on.
        self.d.reload()
        self.assertEqual(os.stat(path).st_ino, ino)
        s = parse(scrape(self.d))
        self.assertEqual(value(s, "berth_reloads_total", result="ok"), 1)
        self.assertEqual(value(s, "berth_generation"), 2)
        # A reload to another address moves it: the old file goes.
        other = os.path.join(self.tmp, "metrics2.sock")
        self.d.set_daemon_key("metrics", other)
        self.d.reload()
        wait_until(lambda: not os.path.exists(path), what="the old socket to go")
        status, _, body = http_get(socket.AF_UNIX, other)
        self.assertEqual(status, 200)
        self.assertIn('berth_reloads_total{result="ok"} 2', body)

        # A path that holds a file which is not a socket, or another process's live socket,
        # is an error naming it, never removed; the socket in use goes on serving.
        plain = os.path.join(self.tmp, "not-a-socket")
        with open(plain, "w") as f:
            f.write("keep me\n")
        self.d.set_daemon_key("metrics", plain)
        self.assertFalse(self.d.reload())
        with open(plain) as f:
            self.assertEqual(f.read(), "keep me\n")
        self.assertIn("not a socket", self.d.log())
        live = os.path.join(self.tmp, "someone-else.sock")
        other_server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(other_server.close)
        other_server.bind(live)
        other_server.listen(4)
        ino = os.stat(live).st_ino
        self.d.set_daemon_key("metrics", live)
        self.assertFalse(self.d.reload())
        self.assertEqual(os.stat(live).st_ino, ino)
        self.assertIn("in use by another process", self.d.log())
        status, _, body = http_get(socket.AF_UNIX, other)
        self.assertEqual(status, 200)

    def test_hostile_clients_cost_only_themselves(self):
        self.start("metrics = 127.0.0.1:0\n", workers=1)
        family, addr = metrics_addr(self.d)
        # A slow request: it waits, a scrape beside it is answered, its deadline ends it.
        slow = socket.create_connection(addr, timeout=IO_TIMEOUT)
        self.addCleanup(slow.close)
        slow.sendall(b"GET /metr")
        self.assertIn("berth_build_info", scrape(self.d))
        self.assertTrue(peer_closed(slow, timeout=60))
        # A huge request: 431 once the buffer is full, then the close.
        with socket.create_connection(addr, timeout=IO_TIMEOUT) as big:
            big.sendall(b"GET /metrics HTTP/1.1\r\n")
            try:
                for _ in range(64):
                    big.sendall(b"X-Junk: " + b"j" * 1000 + b"\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            reply = b""
            try:
                while True:
                    chunk = big.recv(4096)
                    if not chunk:
                        break
                    reply += chunk
            except ConnectionResetError:
                pass
            self.assertTrue(reply.startswith(b"HTTP/1.1 431 "), reply[:100])
        # A crowd of idle connections: at most 32 are kept (the oldest go first), the
        # master's descriptors stay bounded, and a scrape still gets through.
        fds_before = len(os.listdir("/proc/%d/fd" % self.d.proc.pid))
        crowd = []
        for _ in range(100):
            c = socket.create_connection(addr, timeout=IO_TIMEOUT)
            crowd.append(c)
            self.addCleanup(c.close)
        self.assertIn("berth_build_info", scrape(self.d))
        wait_until(lambda: len(os.listdir("/proc/%d/fd" % self.d.proc.pid)) <= fds_before + 32,
                   what="the master to hold at most 32 metrics clients")
        evicted = sum(1 for c in crowd[:60] if peer_closed(c, timeout=IO_TIMEOUT))
        self.assertEqual(evicted, 60)
        # The daemon serves on.
        echo_once(self.d.bound("echo"))

    def start_big(self, n=200):
        """A daemon whose scrape is larger than the socket buffer of a client that does not
        read, so its answer stays in the writing: many listeners, each with its series and
        histogram, and a unix socket (whose sender's buffer, net.core.wmem_default, bounds
        what is in flight; TCP on loopback would take the whole answer at once)."""
        path = os.path.join(self.tmp, "metrics.sock")
        self.d = self.daemon("".join(f"""
            [echo{i}]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo
            """ for i in range(n)), daemon=f"metrics = {path}\n", workers=1, wait=True)
        family, addr = metrics_addr(self.d)
        self.assertEqual(family, socket.AF_UNIX)
        with open("/proc/sys/net/core/wmem_default") as f:
            wmem = int(f.read())
        size = len(scrape(self.d))
        self.assertGreater(size, 2 * wmem, "the answer must outgrow the socket buffer")
        return addr

    def connect(self, addr):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.settimeout(IO_TIMEOUT)
        s.connect(addr)
        return s

    def pending_scraper(self, addr):
        """A scraper that sends its whole request and reads nothing yet."""
        s = self.connect(addr)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: berth\r\n\r\n")
        # Its answer has begun: the master has its whole request.
        self.assertEqual(len(s.recv(1, socket.MSG_PEEK)), 1)
        return s

    def read_whole_answer(self, s):
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        head, _, body = data.partition(b"\r\n\r\n")
        self.assertTrue(head.startswith(b"HTTP/1.1 200 "), head[:100])
        length = int(re.search(rb"Content-Length: (\d+)", head).group(1))
        self.assertEqual(len(body), length, "the answer was cut")
        self.assertIn(b"berth_build_info", body)

    def test_idle_crowd_never_pushes_out_a_scrape_in_progress(self):
        # The admin socket's rule: at the cap, the oldest client without a whole request
        # makes room; a scraper whose request is in stays whatever comes after it.
        addr = self.start_big()
        first = [self.connect(addr) for _ in range(32)]
        scraper = self.pending_scraper(addr)
        crowd = [self.connect(addr) for _ in range(64)]
        # Every idle one of the first 32 made room, and the crowd's oldest too.
        self.assertEqual(sum(1 for c in first if peer_closed(c)), 32)
        self.assertTrue(peer_closed(crowd[0]))
        self.read_whole_answer(scraper)
        # With 32 idle connections held, a real scrape is answered (one of them makes room).
        self.assertIn("berth_build_info", scrape(self.d))

    def test_busy_slots_refuse_the_newcomer(self):
        # Every slot holds a scrape in progress: a newcomer is closed at once, unanswered,
        # and none of the 32 is cut.
        addr = self.start_big()
        scrapers = [self.pending_scraper(addr) for _ in range(32)]
        newcomer = self.connect(addr)
        try:
            newcomer.sendall(b"GET /metrics HTTP/1.1\r\nHost: berth\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        reply = b""
        try:
            while True:
                chunk = newcomer.recv(4096)
                if not chunk:
                    break
                reply += chunk
        except ConnectionResetError:
            pass
        self.assertEqual(reply, b"", "a newcomer at the cap is closed unanswered")
        for s in scrapers:
            self.read_whole_answer(s)
        wait_until(lambda: "closed 1 newcomer" in self.d.log(), what="the refusal logged")
        self.assertIn("berth_build_info", scrape(self.d))


if __name__ == "__main__":
    unittest.main()
