"""
https backends (issue 15, "Towards backends"): delivery and queries over
TLS to a real influxd 1.6.7 with https-enabled, and the faults a
certificate can make, each of which holds the backend with a message that
says why and what to change, until fixed and reloaded (SIGHUP). mTLS, a
stalled or reset handshake and session resumption use fakeinflux.py, as
influxd 1.6.7 cannot ask for a client certificate.

Certificates are made here with the openssl command in the test's temp
dir: a private CA, a server certificate for 127.0.0.1 and localhost, an
expired one (openssl ca -startdate/-enddate: OpenSSL 3.0's x509 takes no
dates in the past), another CA, and a client certificate.
"""

import http.client
import json
import os
import shutil
import signal
import ssl
import subprocess
import time
import unittest
import urllib.parse

import fakeinflux
import relaytest

LOOPBACK = relaytest.LOOPBACK
EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]


def openssl(*args, cwd):
    cp = subprocess.run(["openssl"] + list(args), cwd=cwd, capture_output=True, text=True)
    if cp.returncode != 0:
        raise AssertionError("openssl %s: %s%s" % (" ".join(args), cp.stdout, cp.stderr))


class Certs:
    """Every certificate of the tests, in dir."""

    def __init__(self, d):
        self.dir = d = os.path.join(d, "certs")
        os.makedirs(os.path.join(d, "newcerts"))
        open(os.path.join(d, "index.txt"), "w").close()
        with open(os.path.join(d, "serial"), "w") as f:
            f.write("1000\n")
        for ca in ("ca", "other-ca"):
            openssl("req", "-x509", *EC, "-keyout", ca + ".key", "-out", ca + ".pem", "-days", "30",
                    "-subj", "/CN=relaytest %s" % ca, cwd=d)
        with open(os.path.join(d, "ca.cnf"), "w") as f:
            f.write("[ca]\ndefault_ca = own\n[own]\ndatabase = index.txt\nnew_certs_dir = newcerts\n"
                    "serial = serial\ndefault_md = sha256\npolicy = any\ncopy_extensions = copy\n"
                    "unique_subject = no\n[any]\ncommonName = supplied\n")
        self.server = self.make("server", "localhost", "DNS:localhost,IP:127.0.0.1")
        self.expired = self.make("expired", "localhost", "DNS:localhost,IP:127.0.0.1",
                                 dates=("20200101000000Z", "20200201000000Z"))
        self.client = self.make("client", "relayd-client", None)
        self.ca = os.path.join(d, "ca.pem")
        self.other_ca = os.path.join(d, "other-ca.pem")

    def make(self, name, cn, san, dates=None):
        """(cert, key) signed by ca; dates (start, end) through openssl ca."""
        d = self.dir
        openssl("req", *EC, "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=d)
        ext = name + ".ext"
        with open(os.path.join(d, ext), "w") as f:
            f.write("basicConstraints=CA:FALSE\n" + ("subjectAltName=%s\n" % san if san else ""))
        if dates:
            openssl("ca", "-batch", "-config", "ca.cnf", "-cert", "ca.pem", "-keyfile", "ca.key",
                    "-in", name + ".csr", "-out", name + ".pem", "-notext", "-extfile", ext,
                    "-startdate", dates[0], "-enddate", dates[1], cwd=d)
        else:
            openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                    "-CAcreateserial", "-days", "30", "-out", name + ".pem", "-extfile", ext, cwd=d)
        return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


class HttpsInfluxd(relaytest.Influxd):
    """influxd 1.6.7 with https-enabled: the harness's, asked over TLS."""

    def __init__(self, guard, certs, cert):
        super().__init__(guard)
        self.certs = certs
        self.cert = cert

    @property
    def url(self):
        return "https://%s:%d" % (LOOPBACK, self.port)

    def write_config(self, tmpdir, http_options=None, subdir="influxd"):
        opts = {"https-enabled": True, "https-certificate": self.cert[0], "https-private-key": self.cert[1]}
        return super().write_config(tmpdir, opts, subdir)

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        # The harness's checks (ping, queries) trust any certificate: the
        # certificate under test may be expired on purpose.
        ctx = ssl._create_unverified_context()
        conn = http.client.HTTPSConnection(LOOPBACK, self.port, timeout=timeout, context=ctx)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, resp.headers, resp.read()
        finally:
            conn.close()

    def start(self, tmpdir=None, timeout=15.0):
        if relaytest.INFLUXD_BIN is None:
            raise unittest.SkipTest("influxd not found on PATH")
        if self.config is None:
            self.write_config(tmpdir)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([relaytest.INFLUXD_BIN, "-config", self.config],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=self.dir)
        self.procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise AssertionError("influxd exited before it was ready")
            try:
                if self.request("GET", "/ping", timeout=1.0)[0] == 204:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                raise AssertionError("https influxd not ready within %.0f s" % timeout)
            time.sleep(0.05)


def backend(name, url, **kw):
    b = {"name": name, "url": url, "retry_min": "100ms", "retry_max": "1s", "on_database_not_found": "create"}
    b.update(kw)
    return b


def points(tag, n, base=1_600_000_000):
    return "".join("tls,b=%s v=%di %d\n" % (tag, i, base + i) for i in range(n))


class TlsBackendTest(unittest.TestCase):

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.certs = Certs(cls.tmp)

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def relayd(self, backends, log_level="info"):
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends, log_level=log_level)
        r.start()
        r.wait_ready()
        return r

    def reload(self, r, backends=None, log_level="info"):
        if backends is not None:
            r.write_config(self.tmp, backends, log_level=log_level)
        r.proc.send_signal(signal.SIGHUP)

    def health_backend(self, r, name):
        st, _, body = r.get("/health")
        doc = json.loads(body)
        for b in doc.get("backends", []):
            if b.get("name") == name:
                return b
        raise AssertionError("no backend %r in /health: %r" % (name, doc))

    def assert_held(self, r, name, *words):
        """name holds, saying words in status and /health, and one log line."""
        st = r.wait_status(name, timeout=20, state="holding")
        for w in words:
            self.assertIn(w, st["last_error"], st)
        h = self.health_backend(r, name)
        self.assertEqual(h.get("state"), "holding", h)
        self.assertEqual(h.get("last_error"), st["last_error"])
        lines = [l for l in r.log_matches(r"backend '%s'" % name) if "certificate" in l or "tls" in l.lower()]
        lines = [l for l in lines if " debug " not in l.lower()]
        self.assertEqual(len(lines), 1, "\n".join(lines))
        return st

    # ---- real influxd 1.6.7 with https-enabled ----

    def test_delivery_query_and_verify_faults(self):
        influx = HttpsInfluxd(self.addCleanup, self.certs, self.certs.server)
        influx.start(self.tmp)
        influx.create_db("db")
        ca_copy = os.path.join(self.tmp, "ca-to-fix.pem")
        shutil.copy(self.certs.other_ca, ca_copy)
        good = backend("good", influx.url, tls_ca=self.certs.ca)
        wrongca = backend("wrongca", influx.url, tls_ca=ca_copy)
        wrongname = backend("wrongname", influx.url, tls_ca=self.certs.ca, tls_server_name="db.example")
        r = self.relayd([good, wrongca, wrongname])
        n = 500
        for i in range(5):
            self.assertEqual(r.write("db", points("x", 100, 1_600_000_000 + 100 * i), precision="s")[0], 204)
        r.wait_status("good", timeout=20, pending_batches=0)
        self.assertEqual(influx.wait_count("db", "tls", "v", n), n)

        # A query through relayd's pass-through reaches the https backend.
        st, h, body = r.get("/query?" + urllib.parse.urlencode({"db": "db", "q": 'SELECT count("v") FROM "tls"'}))
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body)["results"][0]["series"][0]["values"][0][1], n)
        self.assertEqual(h.get("X-Relayd-Backend"), "good")

        # Wrong CA: held, saying whose certificate and what to change.
        st = self.assert_held(r, "wrongca", "certificate verify failed", "subject 'CN = localhost'",
                              "issuer 'CN = relaytest ca'", "not after", "expected name '127.0.0.1'", "tls_ca")
        self.assertEqual(st["pending_batches"], 5)
        # Hostname mismatch: the name expected, and tls_server_name.
        self.assert_held(r, "wrongname", "expected name 'db.example'", "tls_server_name")

        # Fixed: the CA file replaced on disk (same keys) and SIGHUP; the
        # server name set to one the certificate carries, and SIGHUP.
        shutil.copy(self.certs.ca, ca_copy)
        wrongname["tls_server_name"] = "localhost"
        self.reload(r, [good, wrongca, wrongname])
        r.wait_status("wrongca", timeout=20, pending_batches=0, state="up")
        r.wait_status("wrongname", timeout=20, pending_batches=0, state="up")

        # A query to an https backend whose certificate fails: refused with
        # why. The failure comes before the backend saw the query, so the
        # door tries the next query backend, and with none left answers
        # 503 "no query backend reachable" and the reason (http_query.c).
        r.stop()
        r2 = self.relayd([backend("only", influx.url, tls_ca=self.certs.other_ca)])
        st, _, body = r2.get("/query?" + urllib.parse.urlencode({"db": "db", "q": "SHOW MEASUREMENTS"}))
        self.assertIn(st, (502, 503), body)
        self.assertIn("certificate verify failed", body.decode())
        self.assertIn("issuer 'CN = relaytest ca'", body.decode())

    def test_expired_certificate_and_insecure_skip_verify(self):
        influx = HttpsInfluxd(self.addCleanup, self.certs, self.certs.expired)
        influx.start(self.tmp)
        influx.create_db("db")
        expired = backend("expired", influx.url, tls_ca=self.certs.ca)
        insecure = backend("insecure", influx.url, insecure_skip_verify=True)
        r = self.relayd([expired, insecure])
        r.wait_log(r"warn.*backend 'insecure': insecure_skip_verify")
        self.assertEqual(r.write("db", points("e", 10), precision="s")[0], 204)
        r.wait_status("insecure", timeout=20, pending_batches=0)
        self.assert_held(r, "expired", "certificate has expired", "not after 'Feb  1 00:00:00 2020 GMT'",
                         "renew")

        # The server's certificate replaced (influxd restarted with it),
        # then SIGHUP: delivered at once, and the warning said again.
        influx.stop()
        influx.cert = self.certs.server
        influx.write_config(self.tmp)
        influx.start(self.tmp)
        self.reload(r)
        r.wait_status("expired", timeout=20, pending_batches=0, state="up")
        self.assertEqual(len(r.log_matches(r"backend 'insecure': insecure_skip_verify")), 2)

    # ---- fakeinflux: what influxd 1.6.7 cannot do ----

    def fake(self, **kw):
        tls = fakeinflux.FakeTLS(self.certs.server[0], self.certs.server[1], **kw)
        return fakeinflux.FakeInflux(guard=self.addCleanup, tls=tls).start()

    def test_mtls_and_session_resumption(self):
        fake = self.fake(client_ca=self.certs.ca)
        plain = backend("m", fake.url, tls_ca=self.certs.ca)
        r = self.relayd([plain], log_level="debug")
        self.assertEqual(r.write("db", points("m", 3), precision="s")[0], 204)
        st = r.wait_status("m", timeout=20, state="holding")
        self.assertIn("tls_cert", st["last_error"])
        self.assertEqual(fake.delivered(), [])

        # With a client certificate: delivered.
        plain.update(tls_cert=self.certs.client[0], tls_key=self.certs.client[1])
        self.reload(r, [plain], log_level="debug")
        r.wait_status("m", timeout=20, pending_batches=0, state="up")
        self.assertEqual(len(fake.delivered()), 1)

        # The connection goes; the next one resumes the session.
        fake.drop_connections()
        self.assertEqual(r.write("db", points("m", 3, 1_700_000_000), precision="s")[0], 204)
        fake.wait_delivered(2, 20)
        self.assertTrue(fake.tls_sessions[-1], fake.tls_sessions)
        r.wait_log(r"tls with 127\.0\.0\.1:%d: TLSv1\.[23], session resumed" % fake.port)

    def test_missing_ca_file_holds_until_it_is_there(self):
        fake = self.fake()
        ca = os.path.join(self.tmp, "later-ca.pem")
        r = self.relayd([backend("late", fake.url, tls_ca=ca)])
        self.assertEqual(r.write("db", points("l", 3), precision="s")[0], 204)
        st = r.wait_status("late", timeout=20, state="holding")
        self.assertIn("cannot set up TLS", st["last_error"])
        self.assertIn(ca, st["last_error"])
        self.assertEqual(self.health_backend(r, "late").get("state"), "holding")
        # The file appears; the same configuration is reloaded: read again.
        shutil.copy(self.certs.ca, ca)
        self.reload(r)
        r.wait_status("late", timeout=20, pending_batches=0, state="up")
        self.assertEqual(len(fake.delivered()), 1)

    def test_handshake_stall_and_reset_retry(self):
        fake = self.fake(handshake="stall")
        b = backend("s", fake.url, tls_ca=self.certs.ca, connect_timeout="300ms")
        r = self.relayd([b])
        self.assertEqual(r.write("db", points("s", 3), precision="s")[0], 204)
        st = r.wait_status("s", timeout=20, state="down")
        self.assertNotEqual(st["state"], "holding")
        fake.tls.handshake = "reset"
        time.sleep(1.5)
        self.assertIn(r.backend_status("s")["state"], ("down", "retrying"))
        fake.tls.handshake = "ok"
        r.wait_status("s", timeout=20, pending_batches=0, state="up")


if __name__ == "__main__":
    unittest.main()
