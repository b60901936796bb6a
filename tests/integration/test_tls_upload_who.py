"""Issue 11: upload logs who stored what. On a TLS conn with a verified client certificate,
the "stored" line names the certificate's subject (host->tls_info, RFC 2253 form); without a
client certificate the line is as before. berth-upload --tls is the client."""
import os
import unittest

import test_tls as T


class UploadNamesTheClient(T.UploadOverTls):

    def put(self, name, *args):
        p = os.path.join(self.tmp, name)
        with open(p, "wb") as f:
            f.write(os.urandom(5000))
        r = self.upload("--ca", self.ca[1], *args, files=[p])
        self.assertEqual(r.returncode, 0, r.stderr.decode())

    def test_stored_line_names_the_certificate_subject(self):
        self.upload_daemon(f"tls_client_ca = {self.ca[1]}\n")
        self.put("by-alice.bin", "--cert", self.client[1], "--key", self.client[0])
        self.d.wait_log(r'stored "by-alice\.bin" file=by-alice\.bin bytes=5000 sha256=[0-9a-f]{64} '
                        r'duration=[0-9.]+s client_gone=0 client=CN=alice$')

    def test_without_a_client_certificate_no_client_is_named(self):
        self.upload_daemon(f"tls_client_ca = {self.ca[1]}\ntls_verify_client = optional\n")
        self.put("anon.bin")
        m = self.d.wait_log(r'stored "anon\.bin" file=anon\.bin bytes=5000.*$')
        self.assertNotIn("client=", m.group(0))


# Only the tests defined here: those UploadOverTls has are run by test_tls itself.
def load_tests(loader, tests, pattern):
    return unittest.TestSuite(UploadNamesTheClient(n) for n in sorted(vars(UploadNamesTheClient))
                              if n.startswith("test_"))


if __name__ == "__main__":
    unittest.main()
