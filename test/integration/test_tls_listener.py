#!/usr/bin/env python3
"""
The TLS listener (listen.https, the tls: section): real clients over TLS
to a real relayd, with certificates this test makes with the openssl CLI
in its temporary directory (a private CA, a server certificate for
127.0.0.1 and localhost, a second one for rotation, a client certificate).

- curl --cacert writes (204, the batch queued: relayctl dump), fails
  without the CA; /ping, /health and /metrics over TLS;
- python-influxdb (ssl=True, verify_ssl=CA) writes and queries through
  relayd to a real influxd; `influx -ssl` runs SHOW DATABASES (Go's
  crypto/tls reads SSL_CERT_FILE, so the CA is trusted, not skipped);
- plain HTTP to the TLS port: a 400 saying to use https://, a close, and
  one log line per burst; TLS to the plain port: a 400 and a close;
- tls.handshake_timeout closes a connection that never sends a
  ClientHello; beyond tls.max_handshakes a connection is closed at once;
- mTLS: no client certificate, no handshake; with tls.client_cert_auth and
  auth.enabled the certificate alone is credentials (204), and the plain
  port still wants credentials (401);
- rotation under load: writers POST over keep-alive TLS connections while
  the certificate is replaced and SIGHUP sent: no request fails, new
  connections see the new certificate; a bad file is refused by the
  reload and the new-old certificate stays served;
- backpressure over TLS: a client that pipelines and reads nothing stops
  being read; one that pipelines and reads gets every answer once;
- memory per idle TLS connection: 500 connections after their handshake,
  VmRSS delta / 500, bounded (printed for docs/performance.md), with
  http.max_connections refusing those beyond (503 over TLS).
"""

import hashlib
import http.client
import json
import os
import resource
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import textwrap
import threading
import time
import unittest

import relaytest

OPENSSL = shutil.which("openssl")
CURL = shutil.which("curl")
INFLUX = shutil.which("influx")
ASAN = relaytest.asan_build()
IDLE_TLS = 500
MIB = 1024 * 1024


PYCLIENT = relaytest.python_with_influxdb()


def openssl(*args, cwd):
    cp = subprocess.run([OPENSSL] + list(args), cwd=cwd, capture_output=True, text=True, timeout=30)
    if cp.returncode != 0:
        raise AssertionError("openssl %s: %s" % (" ".join(args), cp.stderr))


class Certs:
    """A private CA and the certificates it signs, as PEM files in dir."""

    def __init__(self, d):
        self.dir = d
        self.serial = 1000
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "30",
                "-subj", "/CN=relayd test CA", cwd=d)
        self.ca = self.path("ca.pem")

    def path(self, name):
        return os.path.join(self.dir, name)

    def leaf(self, name, cn, usage, san=None, days=365):
        """name.pem and name.key, signed by the CA."""
        self.serial += 1
        ext = "extendedKeyUsage=%s\n" % usage
        if san:
            ext += "subjectAltName=%s\n" % san
        with open(self.path(name + ".ext"), "w") as f:
            f.write(ext)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", name + ".key", "-out", name + ".csr", "-subj", "/CN=" + cn, cwd=self.dir)
        openssl("x509", "-req", "-in", name + ".csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-set_serial", str(self.serial), "-days", str(days), "-extfile", name + ".ext",
                "-out", name + ".pem", cwd=self.dir)
        return self.path(name + ".pem"), self.path(name + ".key")

    def der_sha256(self, pem):
        with open(pem) as f:
            der = ssl.PEM_cert_to_DER_cert(f.read())
        return hashlib.sha256(der).hexdigest()


def make_certs(d):
    c = Certs(d)
    c.server = c.leaf("server", "localhost", "serverAuth", "IP:127.0.0.1,DNS:localhost")
    # The rotation's certificate: 20 days left, so the reload warns.
    c.server2 = c.leaf("server2", "localhost", "serverAuth", "IP:127.0.0.1,DNS:localhost", days=20)
    c.client = c.leaf("client", "writer-1", "clientAuth")
    return c


def probe():
    if OPENSSL is None:
        return "no openssl CLI"
    return None


def raise_nofile(want):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < want and (hard == resource.RLIM_INFINITY or hard >= want):
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


def client_ctx(ca, cert=None):
    ctx = ssl.create_default_context(cafile=ca)
    if cert:
        ctx.load_cert_chain(cert[0], cert[1])
    return ctx


def tls_request(port, ctx, method, path, body=None, headers=None, timeout=10):
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=timeout)
    try:
        conn.request(method, path, body, headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


def peer_fingerprint(port, ca):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with client_ctx(ca).wrap_socket(raw, server_hostname="127.0.0.1") as s:
            return hashlib.sha256(s.getpeercert(binary_form=True)).hexdigest()


def closed_within(sock, seconds):
    """Whether the server closes sock (EOF or reset) within seconds."""
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) == b""
    except ConnectionResetError:
        return True
    except socket.timeout:
        return False


class TlsBase(unittest.TestCase):
    relayd_extra = {}

    @classmethod
    def start_relayd(cls, backends, extra=None, name="relayd"):
        r = relaytest.Relayd(cls.addClassCleanup, name=name)
        cls.tls_port = relaytest.free_port()
        cfg = {"listen": {"https": "127.0.0.1:%d" % cls.tls_port},
               "tls": {"cert_file": cls.certs.path("live.pem"), "key_file": cls.certs.path("live.key")}}
        relaytest._deep_merge(cfg, extra or {})
        r.write_config(cls.tmp, backends=backends, extra_yaml=cfg, log_level="debug")
        r.start()
        r.wait_ready()
        return r

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.certs = make_certs(cls.tmp)
        # The file relayd serves: replaced in place by the rotation test.
        shutil.copy(cls.certs.server[0], cls.certs.path("live.pem"))
        shutil.copy(cls.certs.server[1], cls.certs.path("live.key"))


class ListenerTest(TlsBase):
    """A real influxd behind a relayd with both listeners."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.start(cls.tmp)
        cls.relayd = cls.start_relayd([{"name": "influx", "url": cls.influxd.url, "retry_min": "100ms",
                                        "retry_max": "1s", "on_database_not_found": "create"}])
        cls.ctx = client_ctx(cls.certs.ca)

    def curl(self, *args):
        cp = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}"] + list(args),
                            capture_output=True, text=True, timeout=30)
        return cp.returncode, cp.stdout.strip(), cp.stderr

    def test_curl(self):
        if CURL is None:
            self.skipTest("no curl")
        r = self.relayd
        base = "https://127.0.0.1:%d" % self.tls_port
        self.assertTrue(any("https://127.0.0.1:%d" % self.tls_port in l
                            for l in r.log_matches("listening on http://.* and https://")), r.log())
        # Paused, so the batch stays queued for dump to show.
        self.assertEqual(r.relayctl("pause", "influx").returncode, 0)
        try:
            rc, code, err = self.curl("--cacert", self.certs.ca, "-XPOST", "--data-binary",
                                      "tls_curl,host=a value=1 1700000000000000000",
                                      base + "/write?db=tlsdb")
            self.assertEqual((rc, code), (0, "204"), err)
            dumped = r.dump("influx")
            self.assertTrue(any("tls_curl,host=a value=1" in json.dumps(b) for b in dumped), dumped)
        finally:
            r.relayctl("resume", "influx")
        # Without the CA, curl refuses the certificate (exit 60).
        rc, code, err = self.curl(base + "/ping")
        self.assertEqual(rc, 60, (code, err))
        for path, want in (("/ping", "204"), ("/health", "200"), ("/metrics", "200")):
            rc, code, err = self.curl("--cacert", self.certs.ca, base + path)
            self.assertEqual((rc, code), (0, want), (path, err))
        # ALPN http/1.1 and TLS 1.2 at least: what the listener agrees to.
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw:
            c = client_ctx(self.certs.ca)
            c.set_alpn_protocols(["h2", "http/1.1"])
            with c.wrap_socket(raw, server_hostname="127.0.0.1") as s:
                self.assertEqual(s.selected_alpn_protocol(), "http/1.1")
        c = client_ctx(self.certs.ca)
        c.maximum_version = ssl.TLSVersion.TLSv1_1
        c.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionResetError)):
                c.wrap_socket(raw, server_hostname="127.0.0.1")

    def test_python_influxdb(self):
        if PYCLIENT is None:
            self.skipTest("no python3 with the influxdb module")
        code = textwrap.dedent("""\
            import json, sys, time
            import influxdb
            a = json.loads(sys.argv[1])
            c = influxdb.InfluxDBClient("127.0.0.1", a["port"], database="pytls", ssl=True,
                                        verify_ssl=a["ca"])
            ok = c.write_points([{"measurement": "pytls", "tags": {"i": str(i)},
                                  "time": 1700000000 + i, "fields": {"value": i}} for i in range(10)],
                                time_precision="s")
            n = 0
            for _ in range(100):
                pts = list(c.query('SELECT count("value") FROM "pytls"').get_points())
                n = pts[0]["count"] if pts else 0
                if n == 10:
                    break
                time.sleep(0.1)
            print(json.dumps({"ok": ok, "n": n}))
            """)
        cp = subprocess.run([PYCLIENT, "-c", code, json.dumps({"port": self.tls_port, "ca": self.certs.ca})],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertEqual(json.loads(cp.stdout.strip().splitlines()[-1]), {"ok": True, "n": 10})

    def test_influx_cli(self):
        if INFLUX is None:
            self.skipTest("no influx CLI")
        self.influxd.create_db("influx_cli_tls")
        env = dict(os.environ, SSL_CERT_FILE=self.certs.ca)
        cp = subprocess.run([INFLUX, "-ssl", "-host", "127.0.0.1", "-port", str(self.tls_port),
                             "-execute", "SHOW DATABASES"], capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("influx_cli_tls", cp.stdout)

    def test_plain_http_to_tls_port(self):
        r = self.relayd
        before = len(r.log_matches("plain HTTP to a TLS port"))
        for _ in range(5):
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
                s.sendall(b"POST /write?db=x HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nm v=1")
                status, head = relaytest.read_head(s, 5)
                self.assertEqual(status, 400, head)
                rest = head.split(b"\r\n\r\n", 1)[1]
                n = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0]
                        .split(b":")[1])
                while len(rest) < n:
                    rest += s.recv(4096)
                doc = json.loads(rest.decode())
                self.assertEqual(doc["error"], "this port speaks HTTPS (TLS): use https://127.0.0.1:%d"
                                 % self.tls_port)
                self.assertIn(b"Connection: close", head)
                self.assertTrue(closed_within(s, 5), "not closed after the 400")
        time.sleep(0.3)
        self.assertEqual(len(r.log_matches("plain HTTP to a TLS port")) - before, 1, r.log_since_start())

    def test_tls_to_plain_port(self):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.relayd.port), timeout=5) as raw:
            with self.assertRaises((ssl.SSLError, ConnectionResetError, OSError)):
                self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
        self.assertLess(time.monotonic() - t0, 4)
        # And the raw answer: a 400 and a close.
        with socket.create_connection(("127.0.0.1", self.relayd.port), timeout=5) as s:
            s.sendall(b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00")
            status, head = relaytest.read_head(s, 5)
            self.assertEqual(status, 400, head)
            self.assertTrue(closed_within(s, 5))
        # Said in the log (rate-limited): before, a TLS client there left no
        # trace but its own "wrong version number".
        self.relayd.wait_log(r"spoke TLS to the plain HTTP port .*: answered 400 and closed", timeout=5)

    def test_rotation_under_load(self):
        r = self.relayd
        old = self.certs.der_sha256(self.certs.server[0])
        new = self.certs.der_sha256(self.certs.server2[0])
        self.assertEqual(peer_fingerprint(self.tls_port, self.certs.ca), old)
        stop = threading.Event()
        results = []

        def writer(k):
            conn = http.client.HTTPSConnection("127.0.0.1", self.tls_port, context=self.ctx, timeout=10)
            ok = bad = 0
            errors = []
            i = 0
            while not stop.is_set():
                i += 1
                try:
                    conn.request("POST", "/write?db=rot", "rot,w=%d v=%d %d" % (k, i, 1700000000 + i),
                                 {"Content-Type": "text/plain"})
                    resp = conn.getresponse()
                    resp.read()
                    if resp.status == 204:
                        ok += 1
                    else:
                        bad += 1
                        errors.append(resp.status)
                except Exception as e:  # any failure counts
                    bad += 1
                    errors.append(repr(e))
                    conn.close()
            conn.close()
            results.append((ok, bad, errors))

        threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            time.sleep(0.5)
            # The new pair lands by rename, as certbot's symlink swap does.
            shutil.copy(self.certs.server2[0], self.certs.path("live.pem.tmp"))
            shutil.copy(self.certs.server2[1], self.certs.path("live.key.tmp"))
            os.rename(self.certs.path("live.key.tmp"), self.certs.path("live.key"))
            os.rename(self.certs.path("live.pem.tmp"), self.certs.path("live.pem"))
            r.proc.send_signal(signal.SIGHUP)
            r.wait_log("configuration reloaded", timeout=10)
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertEqual(peer_fingerprint(self.tls_port, self.certs.ca), new)
        total_ok = sum(x[0] for x in results)
        self.assertEqual(sum(x[1] for x in results), 0, results)
        self.assertGreater(total_ok, 20, results)
        self.assertTrue(r.log_matches(r"tls: the certificate .*live.pem' expires on .* \(in 19 days\)"),
                        r.log_since_start())
        # A bad file: the reload is refused, the new certificate stays.
        with open(self.certs.path("live.pem"), "w") as f:
            f.write("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n")
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"reload refused: tls: cannot load certificate .*live.pem", timeout=10)
        self.assertEqual(peer_fingerprint(self.tls_port, self.certs.ca), new)
        st, _, _ = tls_request(self.tls_port, self.ctx, "GET", "/ping")
        self.assertEqual(st, 204)
        shutil.copy(self.certs.server2[0], self.certs.path("live.pem"))


class LimitsTest(TlsBase):
    """Handshake timeout and cap, and memory per idle TLS connection."""

    MAX_CONN = IDLE_TLS + 10

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        raise_nofile(4 * (IDLE_TLS + 100))
        cls.relayd = cls.start_relayd(
            [("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
            {"tls": {"handshake_timeout": "1s", "max_handshakes": 8},
             "http": {"max_connections": cls.MAX_CONN}}, name="limits")
        cls.ctx = client_ctx(cls.certs.ca)

    def test_handshake_timeout_and_cap(self):
        t0 = time.monotonic()
        with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
            self.assertTrue(closed_within(s, 5), "a silent connection was not closed")
            took = time.monotonic() - t0
        self.assertGreater(took, 0.8)
        self.assertLess(took, 3.5)
        silent = [socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) for _ in range(8)]
        try:
            time.sleep(0.2)
            with socket.create_connection(("127.0.0.1", self.tls_port), timeout=5) as s:
                t0 = time.monotonic()
                self.assertTrue(closed_within(s, 0.8), "beyond max_handshakes, not closed at once")
                self.assertLess(time.monotonic() - t0, 0.8)
        finally:
            for s in silent:
                s.close()
        time.sleep(0.3)
        st, _, body = tls_request(self.tls_port, self.ctx, "GET", "/ping")
        self.assertEqual(st, 204, body)

    def tls_open(self):
        raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
        return self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")

    def test_unread_answers_stop_the_parsing(self):
        # Backpressure holds over TLS: a client that pipelines requests
        # and reads no answers stops being read (the stream stops reading
        # records), and relayd's memory stays flat.
        r = self.relayd
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        data = req * ((8 * MIB) // len(req))
        base = relaytest.proc_mem(r.proc.pid)["VmRSS"]
        s = self.tls_open()
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 3
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += s.send(data[sent:sent + 16384])
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                time.sleep(0.01)
        time.sleep(0.3)
        # VmRSS, not VmHWM: the peak may be an earlier test's (500 idle
        # connections); what matters is what this client made relayd hold.
        now = relaytest.proc_mem(r.proc.pid)["VmRSS"]
        print("\n# TLS: %d KiB of pipelined GET /health sent unread; VmRSS %+.1f MiB"
              % (sent // 1024, (now - base) / MIB), file=sys.stderr)
        self.assertLess(sent, len(data), "relayd read everything: no backpressure")
        self.assertLess(now - base, (128 if ASAN else 16) * MIB)
        s.close()
        st, _, _ = tls_request(self.tls_port, self.ctx, "GET", "/ping")
        self.assertEqual(st, 204)

    def test_pipelined_answers_all_come_once_read(self):
        # Parsing stops and resumes many times over TLS: every request is
        # answered, in order, none twice. One thread sends and reads
        # (an SSL object is not for two threads at once).
        n = 5000
        data = b"".join(b"GET /ping?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
        data += b"GET /ping HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        s = self.tls_open()
        s.setblocking(False)
        sent = 0
        got = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            progress = False
            if sent < len(data):
                try:
                    sent += s.send(data[sent:sent + 16384])
                    progress = True
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError, BlockingIOError):
                    pass
            try:
                chunk = s.recv(1 << 16)
                if not chunk:
                    break
                got.append(chunk)
                progress = True
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError, BlockingIOError):
                pass
            except (ssl.SSLEOFError, ConnectionResetError):
                break
            if not progress:
                time.sleep(0.002)
        s.close()
        out = b"".join(got)
        self.assertEqual(sent, len(data))
        self.assertEqual(out.count(b"HTTP/1.1 204 No Content\r\n"), n + 1)

    def test_memory_per_idle_tls_connection(self):
        r = self.relayd
        # Warm up (the first handshakes allocate OpenSSL's tables).
        for _ in range(5):
            tls_request(self.tls_port, self.ctx, "GET", "/ping")
        time.sleep(0.3)
        before = relaytest.proc_mem(r.proc.pid)["VmRSS"]
        conns = []
        try:
            for _ in range(IDLE_TLS):
                raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
                s = self.ctx.wrap_socket(raw, server_hostname="127.0.0.1")
                conns.append(s)
            # One request on the last, so every handshake is surely done.
            conns[-1].sendall(b"GET /ping HTTP/1.1\r\nHost: x\r\n\r\n")
            status, _ = relaytest.read_head(conns[-1], 10)
            self.assertEqual(status, 204)
            time.sleep(0.5)
            after = relaytest.proc_mem(r.proc.pid)["VmRSS"]
            per = (after - before) / IDLE_TLS
            print("\n# memory per idle TLS connection: %.1f KiB (VmRSS %+.1f MiB for %d)"
                  % (per / 1024, (after - before) / MIB, IDLE_TLS), file=sys.stderr)
            # Under ASan what the handshakes freed stays in quarantine
            # (resident): the figure is the allocator's, bounded loosely.
            self.assertLess(per, (1024 if ASAN else 24) * 1024, "bytes per idle TLS connection")
            # http.max_connections bounds TLS connections too: beyond it,
            # a 503 over TLS once the handshake is done.
            refused = 0
            extra = []
            for _ in range(self.MAX_CONN - IDLE_TLS + 5):
                raw = socket.create_connection(("127.0.0.1", self.tls_port), timeout=10)
                extra.append(self.ctx.wrap_socket(raw, server_hostname="127.0.0.1"))
            # The ones beyond the limit get their 503 after the handshake;
            # wait for them together (a loaded machine, or ASan, may take
            # seconds), not one short timeout each.
            import select
            waiting = list(extra)
            deadline = time.monotonic() + 15
            while refused < 5 and waiting and time.monotonic() < deadline:
                ready, _, _ = select.select(waiting, [], [], 0.5)
                for s in ready:
                    # Readable may be only TLS 1.3's session tickets: no
                    # answer yet, so the socket goes back to the wait.
                    s.settimeout(0.2)
                    try:
                        head = s.recv(4096)
                    except (socket.timeout, ssl.SSLWantReadError):
                        continue
                    except ssl.SSLError:
                        head = b""
                    waiting.remove(s)
                    if head.startswith(b"HTTP/1.1 503"):
                        refused += 1
                        if b"too many connections" not in head:
                            head += s.recv(4096)
                        self.assertIn(b"too many connections", head)
            self.assertGreaterEqual(refused, 5)
            for s in extra:
                s.close()
        finally:
            for s in conns:
                s.close()


class MutualTlsTest(TlsBase):
    """tls.client_ca_file with client_cert_auth and auth.enabled."""

    @classmethod
    def setUpClass(cls):
        super().setUpClass()
        cls.relayd = cls.start_relayd(
            [("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
            {"tls": {"client_ca_file": cls.certs.ca, "client_cert_auth": True},
             "auth": {"enabled": True, "users": [{"name": "alice", "password": "secret"}]}},
            name="mtls")

    def test_client_certificate(self):
        r = self.relayd
        body = "mtls v=1 1700000000000000000"
        # Without a client certificate: no handshake (with TLS 1.3 the
        # refusal arrives with the first read).
        with self.assertRaises((ssl.SSLError, ConnectionResetError, BrokenPipeError,
                                http.client.RemoteDisconnected)):
            tls_request(self.tls_port, client_ctx(self.certs.ca), "POST", "/write?db=m", body)
        # With one, and no credentials: the certificate is the credential.
        ctx = client_ctx(self.certs.ca, self.certs.client)
        st, _, resp = tls_request(self.tls_port, ctx, "POST", "/write?db=m", body)
        self.assertEqual(st, 204, resp)
        st, _, resp = tls_request(self.tls_port, ctx, "GET", "/query?q=SHOW+DATABASES")
        self.assertNotIn(st, (401, 403), resp)
        r.wait_log(r"client certificate 'writer-1' accepted as credentials")
        # Credentials it brings are still checked.
        st, _, resp = tls_request(self.tls_port, ctx, "POST", "/write?db=m&u=alice&p=wrong", body)
        self.assertEqual(st, 403, resp)
        # Neither certificate nor credentials (the plain port): 401.
        st, _, resp = r.write("m", body)
        self.assertEqual(st, 401, resp)
        st, _, resp = r.write("m", body, u="alice", p="secret")
        self.assertEqual(st, 204, resp)


if __name__ == "__main__":
    relaytest.main(probe=probe)
