"""Issue 11: TLS on a stream listener, done by the host for any plugin.

A CA, server and client certificates are made with the `openssl` command in setUpClass;
the real daemon serves echo over TLS, driven by Python's ssl module, `openssl s_client` and
`socat OPENSSL:`. Every wait is a generous hang guard, never a performance check.
"""
import os
import pwd
import re
import shutil
import socket
import ssl
import threading
import http.server
import subprocess
import sys
import tempfile
import time
import unittest

from clients import socks5_open, tcp_echo
from harness import (BERTHD, BUILD, IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin,
                     free_port, recv_exact, recv_until,
                     tcp_ready, wait_until)

OPENSSL = shutil.which("openssl")
SOCAT = shutil.which("socat")
TOOL_TIMEOUT = 30


def sh(*argv, cwd=None):
    r = subprocess.run(argv, cwd=cwd, capture_output=True, timeout=TOOL_TIMEOUT)
    if r.returncode != 0:
        raise AssertionError("%s exited %d: %s" % (argv, r.returncode, r.stderr.decode()))
    return r.stdout


def make_ca(d, name):
    key, crt = os.path.join(d, name + ".key"), os.path.join(d, name + ".crt")
    sh(OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
       "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=" + name)
    return key, crt


def make_cert(d, name, ca, cn, san, days=30, ext="serverAuth"):
    """A leaf signed by `ca` (key, crt); days may be negative (an expired one)."""
    key, csr, crt = (os.path.join(d, name + s) for s in (".key", ".csr", ".crt"))
    extf = os.path.join(d, name + ".ext")
    with open(extf, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=%s\n" % (san, ext))
    sh(OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
       "-keyout", key, "-out", csr, "-subj", "/CN=" + cn)
    if days > 0:
        sh(OPENSSL, "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0],
           "-CAcreateserial", "-out", crt, "-days", str(days), "-extfile", extf)
    else:
        # Expired: `openssl x509` (3.0) cannot backdate, `openssl ca` can.
        with open(os.path.join(d, "index.txt"), "w"):
            pass
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        cnf = os.path.join(d, "ca.cnf")
        with open(cnf, "w") as f:
            f.write("[ca]\ndefault_ca = c\n[c]\ndatabase = %s/index.txt\nnew_certs_dir = %s\n"
                    "serial = %s/serial\ndefault_md = sha256\npolicy = p\n"
                    "[p]\ncommonName = supplied\n" % (d, d, d))
        sh(OPENSSL, "ca", "-config", cnf, "-batch", "-notext", "-cert", ca[1], "-keyfile",
           ca[0], "-in", csr, "-out", crt, "-startdate", "20200101000000Z", "-enddate",
           "20200201000000Z", "-extfile", extf)
    return key, crt


def serial_of(pem_text):
    r = subprocess.run([OPENSSL, "x509", "-noout", "-serial"], input=pem_text.encode(),
                       capture_output=True, timeout=TOOL_TIMEOUT)
    return r.stdout.decode().strip().split("=")[-1].upper()


@unittest.skipUnless(OPENSSL, "needs the openssl command")
class TlsCase(DaemonTestCase):

    @classmethod
    def setUpClass(cls):
        cls._pki = tempfile.TemporaryDirectory(prefix="berth-tls-")
        d = cls.pki = cls._pki.name
        os.chmod(d, 0o755)
        cls.ca = make_ca(d, "ca")
        cls.other_ca = make_ca(d, "otherca")
        cls.server = make_cert(d, "server", cls.ca, "localhost", "DNS:localhost,IP:127.0.0.1")
        cls.server2 = make_cert(d, "server2", cls.ca, "localhost", "DNS:localhost,IP:127.0.0.1")
        cls.alt = make_cert(d, "alt", cls.ca, "alt.example", "DNS:alt.example")
        cls.client = make_cert(d, "client", cls.ca, "alice", "DNS:alice.example,email:a@x.org",
                               ext="clientAuth")
        cls.stranger = make_cert(d, "stranger", cls.other_ca, "mallory", "DNS:mallory",
                                 ext="clientAuth")
        cls.expired = make_cert(d, "expired", cls.ca, "localhost", "DNS:localhost", days=-1)
        cls.soon = make_cert(d, "soon", cls.ca, "localhost", "DNS:localhost", days=3)

    @classmethod
    def tearDownClass(cls):
        cls._pki.cleanup()

    def tls_daemon(self, extra="", pair=None, port=None, **kw):
        self.port = port or free_port()
        key, crt = pair or self.server
        self.d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = echo
            tls_certificate = {crt}
            tls_key = {key}
            """ + extra, wait=lambda: tcp_ready("127.0.0.1", self.port), **kw)
        self.d.wait_serving()
        return self.d

    def context(self, minv=ssl.TLSVersion.TLSv1_2, maxv=ssl.TLSVersion.TLSv1_3, cert=None,
                alpn=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(self.ca[1])
        ctx.minimum_version = minv
        ctx.maximum_version = maxv
        if cert:
            ctx.load_cert_chain(cert[1], cert[0])
        if alpn:
            ctx.set_alpn_protocols(alpn)
        return ctx

    def connect(self, ctx, name="localhost"):
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        s = ctx.wrap_socket(raw, server_hostname=name)
        self.addCleanup(s.close)
        return s

    def echo(self, s, data=b"hello over tls\n"):
        s.sendall(data)
        self.assertEqual(recv_exact(s, len(data)), data)


class Echo(TlsCase):

    def test_tls13_and_tls12_echo(self):
        self.tls_daemon()
        for v in (ssl.TLSVersion.TLSv1_3, ssl.TLSVersion.TLSv1_2):
            s = self.connect(self.context(v, v))
            self.assertEqual(s.version(), v.name.replace("_", "."))
            self.echo(s)
            self.echo(s, os.urandom(1 << 20))  # many records, and backpressure
            s.close()
        st = self.d.listener("echo")
        self.assertGreaterEqual(st["tls_handshakes"], 2)
        text = subprocess.run([os.path.join(BUILD, "berthctl"), "-s", self.d.admin, "status"],
                              capture_output=True, timeout=TOOL_TIMEOUT).stdout.decode()
        self.assertRegex(text, r"\[echo\] TLS handshakes: \d+ done, \d+ failed")

    def test_tls10_and_tls11_refused(self):
        self.tls_daemon()
        for v in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
            ctx = self.context(v, v)
            ctx.set_ciphers("ALL:@SECLEVEL=0")
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                self.connect(ctx)
        wait_until(lambda: self.d.listener("echo")["tls_handshakes_failed"] >= 2,
                   what="failed handshakes counted")

    def test_tls13_only(self):
        self.tls_daemon("tls_protocols = TLSv1.3\n")
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.connect(self.context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
        self.echo(self.connect(self.context()))

    @unittest.skipUnless(OPENSSL, "needs openssl")
    def test_openssl_s_client(self):
        # -quiet ignores stdin's EOF: the server's idle close (close_notify) ends it.
        self.tls_daemon("idle_timeout = 3s\n")
        r = subprocess.run([OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % self.port,
                            "-CAfile", self.ca[1], "-verify_return_error", "-quiet",
                            "-servername", "localhost"], input=b"ping s_client\n",
                           capture_output=True, timeout=TOOL_TIMEOUT)
        self.assertIn(b"ping s_client\n", r.stdout, r.stderr.decode())

    def test_clients_that_leave_right_after_the_handshake(self):
        # openssl s_time closes as soon as its handshake is done, often before the server's
        # last flight (TLS 1.3 tickets) is written: that write fails and ends the conn inside
        # the handshake's own processing, which must not touch the conn's timers after.
        self.tls_daemon()
        r = subprocess.run([OPENSSL, "s_time", "-connect", "127.0.0.1:%d" % self.port, "-new",
                            "-time", "2", "-tls1_3"], capture_output=True, text=True,
                           timeout=TOOL_TIMEOUT)
        self.assertIn("connections in", r.stdout, r.stderr)
        for _ in range(50):
            raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
            s = self.context().wrap_socket(raw, server_hostname="localhost")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            s.close()  # a reset right after our Finished
        self.assertEqual(self.d.status()["worker_crashes"], 0)
        self.echo(self.connect(self.context()))

    @unittest.skipUnless(SOCAT, "needs socat")
    def test_socat(self):
        self.tls_daemon()
        r = subprocess.run([SOCAT, "-T", "5", "-", "OPENSSL:127.0.0.1:%d,cafile=%s,"
                            "commonname=localhost" % (self.port, self.ca[1])],
                           input=b"ping socat\n", capture_output=True, timeout=TOOL_TIMEOUT)
        self.assertEqual(r.stdout, b"ping socat\n", r.stderr.decode())

    def test_close_notify_on_server_close(self):
        # idle_timeout closes the conn: the client sees a clean TLS end (close_notify).
        # (no echo first: a loaded machine could take longer than the idle timeout for it)
        self.tls_daemon("idle_timeout = 2s\n")
        s = self.connect(self.context())
        s.settimeout(IO_TIMEOUT)
        self.assertEqual(s.recv(10), b"")  # an SSLEOFError would mean no close_notify

    def test_alpn_answered(self):
        self.tls_daemon("tls_alpn = x-berth, http/1.1\n")
        s = self.connect(self.context(alpn=["http/1.1", "x-berth"]))
        self.assertEqual(s.selected_alpn_protocol(), "x-berth")
        self.echo(s)
        s = self.connect(self.context(alpn=["http/1.1"]))
        self.assertEqual(s.selected_alpn_protocol(), "http/1.1")

    def test_sni_picks_certificate(self):
        self.tls_daemon(f"tls_certificate = {self.alt[1]}\ntls_key = {self.alt[0]}\n")
        s = self.connect(self.context(), name="alt.example")
        self.assertEqual(s.getpeercert()["subject"][0][0][1], "alt.example")
        self.echo(s)
        s = self.connect(self.context(), name="localhost")
        self.assertEqual(s.getpeercert()["subject"][0][0][1], "localhost")

    def test_silent_client_dropped_at_handshake_timeout(self):
        self.tls_daemon("tls_handshake_timeout = 500ms\n")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(raw.close)
        t0 = time.monotonic()
        try:
            self.assertEqual(raw.recv(10), b"")
        except ConnectionResetError:
            pass
        self.assertGreater(time.monotonic() - t0, 0.4)
        self.d.wait_log(r"TLS handshake not done within 500 ms")
        # Garbage instead of a ClientHello: refused at once, and counted.
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(raw.close)
        raw.sendall(b"GET / HTTP/1.0\r\n\r\n")
        try:
            raw.recv(100)
        except ConnectionResetError:
            pass
        wait_until(lambda: self.d.listener("echo")["tls_handshakes_failed"] >= 2,
                   what="failed handshakes counted")

    def test_unix_listener(self):
        path = os.path.join(self.tmp, "tls.sock")
        self.d = self.daemon(f"""
            [echo]
            protocol = unix
            address = {path}
            handler = echo
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            """, wait=lambda: os.path.exists(path))
        raw = socket.socket(socket.AF_UNIX)
        raw.settimeout(IO_TIMEOUT)
        raw.connect(path)
        s = self.context().wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(s.close)
        self.echo(s)


def serve_http(test, body):
    """An HTTP server on loopback in a thread; returns its port."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    test.addCleanup(srv.server_close)
    test.addCleanup(srv.shutdown)
    return srv.server_address[1]


class Socks5OverTls(TlsCase):
    """socks5's relay over a TLS client copies (no splice): the plugin needs no TLS code."""

    def socks_daemon(self):
        self.port = free_port()
        self.d = self.daemon(f"""
            [socks]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = socks5
            allow_dest = 127.0.0.0/8
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            """, wait=lambda: tcp_ready("127.0.0.1", self.port))
        self.d.wait_serving()

    @unittest.skipUnless(SOCAT and shutil.which("curl"), "needs socat and curl")
    def test_curl_through_socat_tunnel(self):
        self.socks_daemon()
        body = os.urandom(3 << 20)
        http_port = serve_http(self, body)
        tunnel = free_port()
        p = subprocess.Popen([SOCAT, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % tunnel,
                              "OPENSSL:127.0.0.1:%d,cafile=%s,commonname=localhost"
                              % (self.port, self.ca[1])], stderr=subprocess.DEVNULL)
        self.addCleanup(p.wait)
        self.addCleanup(p.terminate)
        wait_until(lambda: tcp_ready("127.0.0.1", tunnel), what="the socat tunnel")
        r = subprocess.run(["curl", "-sS", "--max-time", "30", "--socks5",
                            "127.0.0.1:%d" % tunnel, "http://127.0.0.1:%d/" % http_port],
                           capture_output=True, timeout=TOOL_TIMEOUT)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        self.assertEqual(r.stdout, body)
        self.d.wait_log(r"relay over TLS: copying")

    def test_bulk_both_ways_and_eof(self):
        self.socks_daemon()
        echo_port = tcp_echo(self)
        s = self.connect(self.context())
        self.assertEqual(socks5_open(s, echo_port), 0)
        # One thread: an SSL object must not be read and written from two at once. Chunks
        # of 256 KiB in flight keep both directions and their backpressure busy.
        data = os.urandom(4 << 20)
        step = 256 << 10
        for off in range(0, len(data), step):
            s.sendall(data[off:off + step])
            self.assertEqual(recv_exact(s, step), data[off:off + step])
        # The client's close_notify is its EOF: the far side sees it and closes, and so
        # does the relay.
        s.unwrap()
        s.settimeout(IO_TIMEOUT)
        self.assertEqual(s.recv(10), b"")


BERTH_UPLOAD = os.environ.get("BERTH_UPLOAD") or os.path.join(BUILD, "berth-upload")
SEED_CLIENT = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "plugins", "upload", "tests", "seed_client.py")


class UploadOverTls(TlsCase):
    """The upload plugin behind TLS, with berth-upload --tls: the plugin has no TLS code."""

    def upload_daemon(self, extra=""):
        self.port = free_port()
        self.store = os.path.join(self.tmp, "store")
        os.mkdir(self.store)
        self.d = self.daemon(f"""
            [up]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = upload
            dir = {self.store}
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            """ + extra, wait=lambda: tcp_ready("127.0.0.1", self.port))
        self.d.wait_serving()

    def upload(self, *args, files):
        return subprocess.run([BERTH_UPLOAD, "-q", "-a", "127.0.0.1:%d" % self.port, "--tls",
                               *args, *files], capture_output=True, timeout=TOOL_TIMEOUT)

    def test_berth_upload_tls(self):
        self.upload_daemon()
        paths = []
        for i, size in enumerate((0, 1000, 5 << 20)):
            p = os.path.join(self.tmp, "f%d.bin" % i)
            with open(p, "wb") as f:
                f.write(os.urandom(size))
            paths.append(p)
        r = self.upload("--ca", self.ca[1], files=paths)
        self.assertEqual(r.returncode, 0, r.stderr.decode())
        for p in paths:
            with open(p, "rb") as a, open(os.path.join(self.store, os.path.basename(p)), "rb") as b:
                self.assertEqual(a.read(), b.read())

    @unittest.skipUnless(SOCAT, "needs socat")
    def test_seed_client_through_socat_tunnel(self):
        self.upload_daemon()
        tunnel = free_port()
        p = subprocess.Popen([SOCAT, "TCP-LISTEN:%d,bind=127.0.0.1,reuseaddr,fork" % tunnel,
                              "OPENSSL:127.0.0.1:%d,cafile=%s,commonname=localhost"
                              % (self.port, self.ca[1])], stderr=subprocess.DEVNULL)
        self.addCleanup(p.wait)
        self.addCleanup(p.terminate)
        wait_until(lambda: tcp_ready("127.0.0.1", tunnel), what="the socat tunnel")
        files = {}
        for name, size in (("a.bin", 1000), ("b.bin", 2 << 20)):
            path = os.path.join(self.tmp, name)
            files[name] = os.urandom(size)
            with open(path, "wb") as f:
                f.write(files[name])
        stdin = "".join("put %s\n" % os.path.join(self.tmp, n) for n in files)
        r = subprocess.run([sys.executable, SEED_CLIENT, "127.0.0.1", str(tunnel)], input=stdin,
                           text=True, capture_output=True, timeout=TOOL_TIMEOUT)
        self.assertIn("EOFError", r.stderr)  # the seed's only way to stop

        def stored():
            for n, data in files.items():
                try:
                    with open(os.path.join(self.store, n), "rb") as f:
                        if f.read() != data:
                            return False
                except OSError:
                    return False
            return True
        wait_until(stored, what="both files stored")

    def test_berth_upload_verifies_the_server(self):
        self.upload_daemon()
        p = os.path.join(self.tmp, "x.bin")
        with open(p, "wb") as f:
            f.write(b"x" * 100)
        r = self.upload("--ca", self.other_ca[1], files=[p])  # not the server's CA
        self.assertEqual(r.returncode, 3, r.stderr.decode())
        self.assertIn(b"certificate", r.stderr)
        r = self.upload("--ca", self.ca[1], "--servername", "alt.example", files=[p])
        self.assertEqual(r.returncode, 3, r.stderr.decode())
        self.assertFalse(os.path.exists(os.path.join(self.store, "x.bin")))

    def test_berth_upload_client_certificate(self):
        self.upload_daemon(f"tls_client_ca = {self.ca[1]}\n")
        p = os.path.join(self.tmp, "y.bin")
        with open(p, "wb") as f:
            f.write(b"y" * 100)
        r = self.upload("--ca", self.ca[1], files=[p])
        self.assertEqual(r.returncode, 3, r.stderr.decode())
        r = self.upload("--ca", self.ca[1], "--cert", self.client[1], "--key", self.client[0],
                        files=[p])
        self.assertEqual(r.returncode, 0, r.stderr.decode())


class HandshakeInfo(TlsCase):
    """host->tls_info: what the handshake settled, as a plugin sees it in setup()."""

    def test_tls_info(self):
        plugin = built_test_plugin("tlsinfo")
        self.port = free_port()
        plain = free_port()
        self.d = self.daemon(f"""
            [info]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = {plugin}
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            tls_alpn = x-berth
            tls_client_ca = {self.ca[1]}
            tls_verify_client = optional
            [plain]
            protocol = tcp
            address = 127.0.0.1:{plain}
            handler = {plugin}
            """, wait=lambda: tcp_ready("127.0.0.1", plain))
        s = self.connect(self.context(ssl.TLSVersion.TLSv1_3, cert=self.client,
                                      alpn=["x-berth"]))
        line = recv_until(s).decode().split()
        self.assertEqual(line[:2], ["tls", "TLSv1.3"])
        self.assertEqual(line[2], s.cipher()[0])
        self.assertEqual(line[3:6], ["localhost", "x-berth", "CN=alice"])
        self.assertEqual(line[6], "DNS:alice.example,email:a@x.org")
        s = self.connect(self.context(ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2))
        line = recv_until(s).decode().split()
        self.assertEqual(line[:2], ["tls", "TLSv1.2"])
        self.assertEqual(line[4:], ["-", "-", "-"])
        self.echo(s)
        raw = socket.create_connection(("127.0.0.1", plain), timeout=IO_TIMEOUT)
        self.addCleanup(raw.close)
        self.assertEqual(recv_until(raw), b"notls\n")


class MutualTls(TlsCase):

    def mtls(self, mode):
        self.tls_daemon(f"tls_client_ca = {self.ca[1]}\ntls_verify_client = {mode}\n")

    def test_require(self):
        self.mtls("require")
        self.echo(self.connect(self.context(cert=self.client)))
        for cert in (None, self.stranger):
            s = None
            with self.assertRaises((ssl.SSLError, ConnectionError)):
                # TLS 1.3: the refusal arrives after the client's Finished, at the first read.
                s = self.connect(self.context(cert=cert))
                self.echo(s)
        self.d.wait_log(r"TLS handshake failed")

    def test_optional(self):
        self.mtls("optional")
        self.echo(self.connect(self.context()))
        self.echo(self.connect(self.context(cert=self.client)))
        with self.assertRaises((ssl.SSLError, ConnectionError)):
            self.echo(self.connect(self.context(cert=self.stranger)))

    def test_off(self):
        self.tls_daemon()
        self.echo(self.connect(self.context()))
        self.echo(self.connect(self.context(cert=self.stranger)))


class Reload(TlsCase):

    def test_renewed_certificate_served_after_reload(self):
        live_key, live_crt = (os.path.join(self.tmp, n) for n in ("live.key", "live.crt"))
        shutil.copy(self.server[0], live_key)
        shutil.copy(self.server[1], live_crt)
        self.tls_daemon(pair=(live_key, live_crt))
        old = self.connect(self.context())
        self.echo(old)
        first = serial_of(ssl.DER_cert_to_PEM_cert(old.getpeercert(True)))
        # Renewal: the files are replaced, then a reload.
        shutil.copy(self.server2[0], live_key)
        shutil.copy(self.server2[1], live_crt)
        self.d.reload()
        new = self.connect(self.context())
        second = serial_of(ssl.DER_cert_to_PEM_cert(new.getpeercert(True)))
        self.assertNotEqual(first, second)
        self.assertEqual(second, serial_of(open(self.server2[1]).read()))
        self.echo(new)
        self.echo(old)  # the old generation's conn goes on

    def test_bad_key_on_reload_keeps_old_generation(self):
        live_key, live_crt = (os.path.join(self.tmp, n) for n in ("live.key", "live.crt"))
        shutil.copy(self.server[0], live_key)
        shutil.copy(self.server[1], live_crt)
        self.tls_daemon(pair=(live_key, live_crt))
        shutil.copy(self.alt[0], live_key)  # a key that is not the certificate's
        with open(live_key) as f:
            secret = f.read()
        self.assertFalse(self.d.reload())
        self.d.wait_log(r"reload failed")
        self.d.wait_log(r"does not match")
        self.echo(self.connect(self.context()))
        body = "".join(secret.splitlines()[1:-1])
        self.assertNotIn(body[:40], self.d.log())  # key bytes never reach the log


@unittest.skipUnless(os.geteuid() == 0, "needs root to drop to another user")
class RootOnlyKey(TlsCase):

    def test_key_0600_root_with_workers_as_nobody(self):
        nobody = pwd.getpwnam("nobody")
        keydir = os.path.join(self.tmp, "private")
        os.mkdir(keydir, 0o700)
        key = os.path.join(keydir, "server.key")
        shutil.copy(self.server[0], key)
        os.chmod(key, 0o600)
        plugins = os.path.join(self.tmp, "plugins")
        os.mkdir(plugins, 0o755)
        shutil.copy(os.path.join(PLUGIN_DIR, "echo.so"), plugins)
        os.chmod(self.tmp, 0o755)
        self.port = free_port()
        self.d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = {plugins}/echo.so
            tls_certificate = {self.server[1]}
            tls_key = {key}
            """, daemon="user = nobody\n", wait=lambda: tcp_ready("127.0.0.1", self.port))
        self.echo(self.connect(self.context()))
        pids = self.d.worker_pids()
        self.assertTrue(pids)
        for pid in pids:
            with open("/proc/%d/status" % pid) as f:
                uid = re.search(r"^Uid:\s+(\d+)", f.read(), re.M).group(1)
            self.assertEqual(int(uid), nobody.pw_uid)


class ConfigCheck(TlsCase):

    def check(self, listener):
        conf = os.path.join(self.tmp, "check.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nworkers = 1\nplugin_dir = {PLUGIN_DIR}\nadmin = \n"
                    f"[echo]\nprotocol = tcp\naddress = 127.0.0.1:{free_port()}\nhandler = echo\n"
                    + listener)
        r = subprocess.run([BERTHD, "-t", "-c", conf], capture_output=True,
                           timeout=TOOL_TIMEOUT)
        return r.returncode, r.stderr.decode(), conf

    def assert_error_at(self, listener, line, pattern):
        rc, err, conf = self.check(listener)
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, re.escape("%s:%d: " % (conf, line)) + pattern)

    def pair(self, p):
        return f"tls_certificate = {p[1]}\ntls_key = {p[0]}\n"

    def test_good(self):
        rc, err, _ = self.check(self.pair(self.server) + "tls_protocols = TLSv1.2 TLSv1.3\n")
        self.assertEqual(rc, 0, err)

    def test_unreadable_key(self):
        self.assert_error_at(f"tls_certificate = {self.server[1]}\ntls_key = /nonexistent.key\n",
                             10, "tls_key: cannot read /nonexistent.key")

    def test_mismatched_key(self):
        self.assert_error_at(f"tls_certificate = {self.server[1]}\ntls_key = {self.alt[0]}\n", 10,
                             "tls_key .* does not match tls_certificate")

    def test_expired_certificate(self):
        self.assert_error_at(self.pair(self.expired), 9, "tls_certificate .*expired on 2020-02-01")

    def test_expiring_soon_is_a_warning(self):
        rc, err, conf = self.check(self.pair(self.soon))
        self.assertEqual(rc, 0, err)
        self.assertRegex(err, re.escape("%s:9: " % conf) + r"tls_certificate .*expires on .* in [23] day")

    def test_unknown_and_old_protocols(self):
        self.assert_error_at(self.pair(self.server) + "tls_protocols = TLSv1.2 TLSv9\n", 11,
                             ".*unknown protocol 'TLSv9'")
        self.assert_error_at(self.pair(self.server) + "tls_protocols = TLSv1.1\n", 11,
                             ".*'TLSv1.1' is not offered")

    def test_bad_ciphers(self):
        self.assert_error_at(self.pair(self.server) + "tls_ciphers = NOPE-NOTHING\n", 11,
                             "tls_ciphers 'NOPE-NOTHING'")

    def test_key_without_certificate_and_udp(self):
        self.assert_error_at(f"tls_key = {self.server[0]}\n", 9, ".*needs each tls_certificate")
        conf = os.path.join(self.tmp, "udp.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nworkers = 1\nplugin_dir = {PLUGIN_DIR}\nadmin = \n"
                    f"[u]\nprotocol = udp\naddress = 127.0.0.1:{free_port()}\nhandler = echo\n"
                    + self.pair(self.server))
        r = subprocess.run([BERTHD, "-t", "-c", conf], capture_output=True, timeout=TOOL_TIMEOUT)
        self.assertNotEqual(r.returncode, 0)
        self.assertIn("%s:9: listener 'u': TLS is for tcp and unix listeners only" % conf,
                      r.stderr.decode())

    def test_verify_without_ca(self):
        self.assert_error_at(self.pair(self.server) + "tls_verify_client = require\n", 11,
                             ".*needs tls_client_ca")


if __name__ == "__main__":
    unittest.main()


class ProxyThenTls(TlsCase):
    """A listener with both proxy_protocol and TLS: the balancer's PROXY header comes first,
    in clear, then the client's TLS handshake; the plugin sees the header's client."""

    def test_proxy_header_then_handshake(self):
        self.d = self.daemon(f"""
            [who]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("whoami")}
            proxy_protocol = v1
            proxy_from = 127.0.0.1
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            """, wait=True)
        self.port = self.d.port("who")
        raw = socket.create_connection(("127.0.0.1", self.port), timeout=IO_TIMEOUT)
        self.addCleanup(raw.close)
        local = raw.getsockname()[1]
        raw.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 5555 %d\r\n" % self.port)
        s = self.context().wrap_socket(raw, server_hostname="localhost")
        self.addCleanup(s.close)
        line = recv_until(s, b"\n")
        self.assertEqual(line, b"peer=192.0.2.7:5555 balancer=127.0.0.1:%d\n" % local)
        self.echo(s)
        self.assertGreaterEqual(self.d.listener("who")["tls_handshakes"], 1)

    def test_no_header_is_refused_before_any_handshake(self):
        self.d = self.daemon(f"""
            [who]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("whoami")}
            proxy_protocol = v1
            proxy_from = 127.0.0.1
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            """, wait=True)
        self.port = self.d.port("who")
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            self.connect(self.context())
        wait_until(lambda: self.d.listener("who")["refused_proxy"] >= 1,
                   what="the headerless client counted")
