"""socks5 `auth = certificate` (issue 11): on a TLS listener that requires client certificates,
the verified certificate is the user, and the SOCKS5 negotiation takes method 0 (no auth).

The user is the subject's CN; a certificate without a CN names its first email or DNS
subjectAltName. A CA and client certificates are made with the `openssl` command (as
tests/integration/test_tls.py does); the real daemon is driven with Python's ssl module and raw
SOCKS5 bytes. Every wait is a generous hang guard, never a performance check.
"""
import os
import re
import ssl
import subprocess
import unittest

import test_tls as T
from clients import socks5_open, tcp_echo
from harness import BERTHD, IO_TIMEOUT, PLUGIN_DIR, free_port, recv_exact, tcp_ready


def make_client(d, name, ca, subj, san):
    """A client certificate with subject `subj` (openssl -subj form) signed by `ca`."""
    key, csr, crt = (os.path.join(d, name + s) for s in (".key", ".csr", ".crt"))
    extf = os.path.join(d, name + ".ext")
    with open(extf, "w") as f:
        f.write("subjectAltName=%s\nextendedKeyUsage=clientAuth\n" % san)
    T.sh(T.OPENSSL, "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", key, "-out", csr, "-subj", subj)
    T.sh(T.OPENSSL, "x509", "-req", "-in", csr, "-CA", ca[1], "-CAkey", ca[0],
         "-CAcreateserial", "-out", crt, "-days", "30", "-extfile", extf)
    return key, crt


class Socks5CertificateAuth(T.TlsCase):

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.nocn = make_client(cls.pki, "nocn", cls.ca, "/O=Berth Test",
                               "email:bob@example.org,DNS:bob.example")

    def socks_daemon(self, verify="require"):
        self.port = free_port()
        self.d = self.daemon(f"""
            [socks]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = socks5
            auth = certificate
            allow_dest = 127.0.0.0/8
            tls_certificate = {self.server[1]}
            tls_key = {self.server[0]}
            tls_client_ca = {self.ca[1]}
            tls_verify_client = {verify}
            """, wait=lambda: tcp_ready("127.0.0.1", self.port))
        self.d.wait_serving()

    def relay_once(self, cert, payload):
        echo_port = tcp_echo(self)
        s = self.connect(self.context(cert=cert))
        self.assertEqual(socks5_open(s, echo_port), 0)
        s.sendall(payload)
        self.assertEqual(recv_exact(s, len(payload)), payload)
        s.unwrap()
        s.settimeout(IO_TIMEOUT)
        self.assertEqual(s.recv(10), b"")

    def test_common_name_is_the_user(self):
        self.socks_daemon()
        self.relay_once(self.client, os.urandom(100000))
        self.d.wait_log(r"session client=127\.0\.0\.1:\d+ user=alice dest=127\.0\.0\.1:\d+ .*"
                        r"outcome=ok")

    def test_without_common_name_the_first_email_or_dns_san(self):
        self.socks_daemon()
        self.relay_once(self.nocn, b"through the relay\n")
        self.d.wait_log(r"session client=\S+ user=bob@example\.org dest=")

    def test_password_only_client_is_refused(self):
        # Method 0 is what certificate auth answers; a client offering only RFC 1929 gets
        # "no acceptable method", its certificate notwithstanding.
        self.socks_daemon()
        s = self.connect(self.context(cert=self.client))
        s.sendall(b"\x05\x01\x02")
        self.assertEqual(recv_exact(s, 2), b"\x05\xff")
        self.d.wait_log(r"user=alice .*outcome=no acceptable auth method")

    def test_no_client_certificate_is_refused_in_the_handshake(self):
        self.socks_daemon()
        with self.assertRaises((ssl.SSLError, ConnectionError, OSError)):
            s = self.connect(self.context())
            s.sendall(b"\x05\x01\x00")
            # TLS 1.3: the server's refusal of the missing certificate comes after the
            # client's handshake has finished, with the first read.
            recv_exact(s, 2)


@unittest.skipUnless(T.OPENSSL, "needs the openssl command")
class Socks5CertificateAuthConfig(T.TlsCase):
    """auth = certificate on a listener that does not require client certificates is a
    config error at the listener's FILE:LINE, found by `berthd -t`."""

    def check(self, tls_lines):
        conf = os.path.join(self.tmp, "check.conf")
        with open(conf, "w") as f:
            f.write(f"[daemon]\nworkers = 1\nplugin_dir = {PLUGIN_DIR}\nadmin = \n"
                    f"[socks]\nprotocol = tcp\naddress = 127.0.0.1:{free_port()}\n"
                    "handler = socks5\nauth = certificate\nallow_dest = 127.0.0.0/8\n"
                    + tls_lines)
        r = subprocess.run([BERTHD, "-t", "-c", conf], capture_output=True,
                           timeout=T.TOOL_TIMEOUT)
        return r.returncode, r.stderr.decode(), conf

    def assert_refused(self, tls_lines):
        rc, err, conf = self.check(tls_lines)
        self.assertNotEqual(rc, 0, err)
        self.assertRegex(err, re.escape("%s:5: " % conf) + r"\[socks\]: auth = certificate "
                         r"needs TLS with client certificates required")

    def pair(self):
        return f"tls_certificate = {self.server[1]}\ntls_key = {self.server[0]}\n"

    def test_without_tls(self):
        self.assert_refused("")

    def test_tls_without_client_certificates(self):
        self.assert_refused(self.pair())

    def test_optional_client_certificates(self):
        self.assert_refused(self.pair() + f"tls_client_ca = {self.ca[1]}\n"
                            "tls_verify_client = optional\n")

    def test_required_client_certificates(self):
        rc, err, _ = self.check(self.pair() + f"tls_client_ca = {self.ca[1]}\n"
                                "tls_verify_client = require\n")
        self.assertEqual(rc, 0, err)

    def test_users_file_with_certificate(self):
        users = os.path.join(self.tmp, "users")
        with open(users, "w") as f:
            f.write("bob:" + T.sh(T.OPENSSL, "passwd", "-6", "secret").decode())
        rc, err, _ = self.check(self.pair() + f"tls_client_ca = {self.ca[1]}\nusers = {users}\n")
        self.assertNotEqual(rc, 0, err)
        self.assertIn("users is set but auth is certificate", err)


if __name__ == "__main__":
    unittest.main()
