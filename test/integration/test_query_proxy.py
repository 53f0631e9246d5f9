#!/usr/bin/env python3
"""
The query pass-through (/query, /api/v2/query) against real influxd
(Debian's 1.6.7): answers compared byte for byte with the same query sent
straight to influxd; errors as influxd gives them; auth as for writes;
chunked answers streamed in chunks; a large answer and a slow reader with
relayd's memory flat; a client that leaves cancels the backend's query;
the Python client; two backends, one stopped, and the choice of the
caught-up one; the statement classes (CREATE DATABASE queued, DROP and
mixed queries refused).

A CREATE DATABASE sent while a backend is stopped reaches it before the
writes after it (QueuedStatements). A query sees the writes acknowledged
before it (relayd waits for its backend to deliver them, up to
query.max_lag).
"""

import base64
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import unittest
import urllib.parse

import relaytest

CURL = shutil.which("curl")
BASE_S = 1_600_000_000
MIB = 1024 * 1024

# How much relayd's RSS may grow while an answer of any size streams
# through it. ASan keeps freed memory in quarantine (256 MiB by default),
# which would count as relayd's: every relayd this file starts gets a
# small one, and the bound the quarantine and its shadow besides. A build
# that links libasan dynamically names only its entry points.


def _instrumented():
    try:
        with open(relaytest.RELAYD_BIN, "rb") as f:
            return b"__asan_init" in f.read()
    except OSError:
        return False


ASAN = relaytest.asan_build() or _instrumented()
RSS_SLACK = (24 if ASAN else 4) * MIB
if ASAN:
    os.environ["ASAN_OPTIONS"] = ":".join(
        x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=8") if x)


def qpath(path="/query", **params):
    return path + ("?" + urllib.parse.urlencode(params) if params else "")


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


PYCLIENT = relaytest.python_with_influxdb()


def write_points(influxd, db, n, per_body=100_000, series=10):
    """n points straight into influxd, in a few large bodies."""
    i = 0
    while i < n:
        k = min(per_body, n - i)
        body = "".join("big,s=s%d v=%di,w=%d.5 %d\n" % ((i + j) % series, i + j, i + j, (BASE_S * 10 ** 9) + (i + j) * 1000)
                       for j in range(k))
        st, _, b = influxd.request("POST", "/write?db=%s" % db, body.encode(), timeout=120)
        assert st == 204, (st, b)
        i += k


def chunks_of(raw_body):
    """The sizes of the HTTP chunks of a chunked body, as sent."""
    sizes = []
    pos = 0
    while True:
        eol = raw_body.index(b"\r\n", pos)
        size = int(raw_body[pos:eol].split(b";")[0], 16)
        pos = eol + 2 + size + 2
        if size == 0:
            return sizes
        sizes.append(size)


class RssSampler(threading.Thread):
    """Samples a pid's VmRSS every 20 ms until stopped: the peak."""

    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak = 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            self.peak = max(self.peak, relaytest.proc_mem(self.pid)["VmRSS"])
            time.sleep(0.02)

    def stop(self):
        self.stopped.set()
        self.join()
        return self.peak


class OneBackend(unittest.TestCase):
    """relayd in front of one influxd, which also answers directly."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.start(cls.tmp)
        cls.influxd.create_db("q")
        cls.influxd.query("q", 'CREATE RETENTION POLICY "week" ON "q" DURATION 7d REPLICATION 1')
        body = "".join("cpu,host=h%d,dc=d%d usage=%d.25,n=%di %d\n" % (i % 4, i % 2, i, i, (BASE_S + i) * 10 ** 9)
                       for i in range(200))
        st, _, b = cls.influxd.request("POST", "/write?db=q", body.encode())
        assert st == 204, b
        now = int(time.time()) - 60
        st, _, b = cls.influxd.request("POST", "/write?db=q&rp=week&precision=s",
                                       b"mem,host=h1 free=5i %d\nmem,host=h2 free=7i %d\n" % (now, now + 1))
        assert st == 204, b
        cls.relayd = relaytest.Relayd(cls.addClassCleanup)
        cls.relayd.write_config(cls.tmp, backends=[{"name": "influx", "url": cls.influxd.url,
                                                    "retry_min": "100ms", "retry_max": "1s",
                                                    "on_database_not_found": "create"}])
        cls.relayd.start()
        cls.relayd.wait_ready()

    def both(self, method, path, body=None, headers=None):
        a = self.relayd.request(method, path, body, headers)
        b = self.influxd.request(method, path, body, headers)
        return a, b

    def assertSame(self, method, path, body=None, headers=None):
        (sa, ha, ba), (sb, hb, bb) = self.both(method, path, body, headers)
        self.assertEqual((sa, ba), (sb, bb), "%s %s" % (method, path))
        for h in ("Content-Type", "Content-Encoding", "X-Influxdb-Error", "X-Influxdb-Version"):
            self.assertEqual(ha.get(h), hb.get(h), "%s on %s %s" % (h, method, path))
        self.assertEqual(ha.get("X-Relayd-Backend"), "influx")
        self.assertIsNone(ha.get("X-Relayd-Behind"))
        return sa, ha, ba

    def test_every_parameter_byte_for_byte(self):
        sel = 'SELECT * FROM "cpu" WHERE "host" = $h LIMIT 7'
        cases = [
            dict(q="SHOW DATABASES"),
            dict(q="SHOW MEASUREMENTS", db="q"),
            dict(q='SELECT mean("usage") FROM "cpu" GROUP BY "host"', db="q"),
            dict(q='SELECT * FROM "cpu" LIMIT 5', db="q", epoch="ms"),
            dict(q='SELECT * FROM "cpu" LIMIT 5', db="q", epoch="s", pretty="true"),
            dict(q='SELECT * FROM "mem"', db="q", rp="week", epoch="s"),
            dict(q='SELECT * FROM "cpu" LIMIT 30', db="q", chunked="true", chunk_size="7"),
            dict(q=sel, db="q", params=json.dumps({"h": "h2"})),
            dict(q="SHOW TAG KEYS; SHOW FIELD KEYS", db="q"),
        ]
        for params in cases:
            self.assertSame("GET", qpath(**params))
            self.assertSame("POST", qpath(**params))  # parameters in the URL
            form = urllib.parse.urlencode(params).encode()
            st, _, _ = self.assertSame("POST", "/query", form,
                                       {"Content-Type": "application/x-www-form-urlencoded"})
            self.assertEqual(st, 200)
        # a form body's db wins over the URL's, as Go's FormValue reads them
        self.assertSame("POST", qpath(q="SHOW MEASUREMENTS", db="nosuchdb"), b"db=q",
                        {"Content-Type": "application/x-www-form-urlencoded"})
        # gzip answers pass through as they are
        st, h, b = self.assertSame("GET", qpath(q='SELECT * FROM "cpu"', db="q"), None,
                                   {"Accept-Encoding": "gzip"})
        self.assertEqual(h.get("Content-Encoding"), "gzip")
        # CSV
        self.assertSame("GET", qpath(q='SELECT * FROM "cpu" LIMIT 3', db="q"), None,
                        {"Accept": "application/csv"})

    def test_a_query_sees_the_writes_acknowledged_before_it(self):
        # Write, then read at once, as a script or the influx shell does:
        # every acknowledged point is in the answer, each time (relayd
        # waits for its backend to deliver them, up to query.max_lag).
        db = "ryw"
        st, _, body = self.relayd.request("POST", qpath(q='CREATE DATABASE "%s"' % db))
        self.assertEqual(st, 200, body)
        for i in range(1, 41):
            st, _, body = self.relayd.write(db, "m,k=%d v=%di %d\n" % (i % 3, i, (BASE_S + i) * 10 ** 9))
            self.assertEqual(st, 204, body)
            st, _, body = self.relayd.get(qpath(q="SELECT count(v) FROM m", db=db))
            self.assertEqual(st, 200, body)
            series = json.loads(body)["results"][0].get("series")
            got = series[0]["values"][0][1] if series else 0
            self.assertEqual(got, i, "after %d acknowledged writes the query counted %d" % (i, got))

    def test_errors_pass_through(self):
        st, h, b = self.assertSame("GET", qpath(q="SELEKT 1", db="q"))
        self.assertEqual(st, 400)
        self.assertIn("error parsing query", h.get("X-Influxdb-Error", ""))
        # a statement error inside a 200
        st, h, b = self.assertSame("GET", qpath(q="SELECT * FROM cpu", db="nosuchdb"))
        self.assertEqual(st, 200)
        self.assertIn(b"database not found", b)
        st, h, b = self.assertSame("GET", "/query")
        self.assertEqual(st, 400)
        # /api/v2/query: 1.6.7 has no Flux: its 404 is passed back
        (sa, ha, ba), (sb, hb, bb) = self.both("POST", "/api/v2/query", b'{"query":"buckets()"}',
                                              {"Content-Type": "application/json"})
        self.assertEqual((sa, ba), (sb, bb))
        self.assertEqual(ha.get("X-Relayd-Backend"), "influx")

    def test_methods_and_keep_alive(self):
        st, h, b = self.relayd.request("HEAD", "/query?q=SHOW+DATABASES")
        self.assertEqual(st, 405)
        self.assertEqual(h.get("Allow"), "GET, POST")
        st, h, _ = self.relayd.request("GET", "/api/v2/query")
        self.assertEqual((st, h.get("Allow")), (405, "POST"))
        # several queries, and a write, on one connection
        c = self.relayd.raw()
        try:
            for i in range(3):
                c.send(b"GET /query?db=q&q=SHOW+MEASUREMENTS HTTP/1.1\r\nHost: x\r\n\r\n")
                r = c.read_response()
                self.assertEqual(r.status, 200)
                self.assertIn(b"cpu", r.body)
            c.send(b"POST /write?db=q HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nka v=1i 1000\n")
            self.assertEqual(c.read_response().status, 204)
            c.send(b"GET /query?q=SHOW+DATABASES HTTP/1.1\r\nHost: x\r\n\r\n")
            self.assertEqual(c.read_response().status, 200)
        finally:
            c.close()
        # HTTP/1.0 knows no chunks: the answer ends with the connection
        s = socket.create_connection(("127.0.0.1", self.relayd.port), timeout=10)
        try:
            s.sendall(b"GET /query?q=SHOW+DATABASES HTTP/1.0\r\n\r\n")
            raw = b""
            while True:
                d = s.recv(65536)
                if not d:
                    break
                raw += d
        finally:
            s.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertNotIn(b"chunked", head.lower())
        self.assertEqual(body, self.influxd.request("GET", "/query?q=SHOW+DATABASES")[2])

    def test_versions(self):
        st, h, _ = self.relayd.get("/ping")
        self.assertEqual(st, 204)
        self.assertEqual(h.get("X-Influxdb-Version"), self.influxd.version)
        # The project's version (CMakeLists.txt), which the build compiles in.
        with open(os.path.join(relaytest.SOURCE_DIR, "CMakeLists.txt")) as f:
            version = re.search(r"project\(relayd VERSION ([0-9.]+)", f.read()).group(1)
        self.assertEqual(h.get("X-Relayd-Version"), version)
        st, h, b = self.relayd.get("/ping?verbose=true")
        self.assertEqual(json.loads(b)["version"], self.influxd.version)
        st, h, b = self.relayd.get("/query?q=SHOW+DATABASES")
        self.assertEqual(h.get("X-Influxdb-Version"), self.influxd.version)

    def test_chunked_answer_streams_in_chunks(self):
        write_points(self.influxd, "q", 20_000, per_body=20_000)
        path = qpath(q='SELECT * FROM "big"', db="q", chunked="true", chunk_size="500")
        c = self.relayd.raw(timeout=60)
        try:
            c.send(("GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path).encode())
            raw = b""
            c.sock.settimeout(60)
            while True:
                d = c.sock.recv(65536)
                if not d:
                    break
                raw += d
        finally:
            c.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        self.assertIn(b"Transfer-Encoding: chunked", head)
        sizes = chunks_of(body)
        self.assertGreater(len(sizes), 1, "one chunk only")
        direct = self.influxd.request("GET", path, timeout=60)[2]
        lines = direct.count(b"\n")
        self.assertGreaterEqual(lines, 40)
        pos, out = 0, b""
        while True:
            eol = body.index(b"\r\n", pos)
            size = int(body[pos:eol], 16)
            out += body[eol + 2:eol + 2 + size]
            pos = eol + 2 + size + 2
            if size == 0:
                break
        self.assertEqual(out, direct)

    def test_statement_classes(self):
        st, h, b = self.relayd.get(qpath(q="DROP DATABASE q"))
        self.assertEqual(st, 400, b)
        msg = json.loads(b)["error"]
        self.assertEqual(h.get("X-Influxdb-Error"), msg)
        for want in ("DROP DATABASE", "every InfluxDB", "query.state_changing: queue"):
            self.assertIn(want, msg)
        self.assertIn("q", self.influxd.databases())
        for q in ('SELECT * INTO "copy" FROM "cpu"', "DELETE FROM cpu", 'GRANT ALL TO "x"',
                  "CREATE USER u WITH PASSWORD 'p'", "KILL QUERY 1"):
            st, h, b = self.relayd.get(qpath(q=q, db="q"))
            self.assertEqual(st, 400, (q, b))
        st, h, b = self.relayd.get(qpath(q="KILL QUERY 1"))
        self.assertIn("belongs to one InfluxDB", json.loads(b)["error"])
        st, h, b = self.relayd.get(qpath(q="CREATE DATABASE mixed; SHOW DATABASES"))
        self.assertEqual(st, 400, b)
        self.assertIn("separate queries", json.loads(b)["error"])
        # a syntax error naming no state change is influxd's to answer
        st, h, b = self.relayd.get(qpath(q="SELECT 'unclosed FROM cpu", db="q"))
        self.assertEqual(st, 400)
        self.assertEqual(h.get("X-Relayd-Backend"), "influx")

    def test_the_q_relayd_reads_is_the_q_influxd_would_run(self):
        # Each of these would make relayd classify one q while influxd's
        # Go server runs another (or relayd none at all): all refused,
        # and the database is still there.
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        cases = [
            ("GET", "/query?%71=DROP+DATABASE+q", None, None, "DROP DATABASE"),
            ("GET", "/query?q=SHOW+DATABASES;&q=DROP+DATABASE+q", None, None, "';'"),
            ("GET", "/query?q=SHOW+DATABASES&q=DROP+DATABASE+q", None, None, "more than one q"),
            ("POST", "/query?q=SHOW+DATABASES", b"q=DROP+DATABASE+q", form, "more than one q"),
            ("POST", "/query?q=SHOW+DATABASES", b"%71=DROP+DATABASE+q", form, "more than one q"),
            ("POST", "/query", b"q=SHOW+DATABASES\0&q=DROP+DATABASE+q", form, "NUL"),
            ("POST", "/query?q=SHOW+DATABASES",
             b"--b\r\nContent-Disposition: form-data; name=\"q\"\r\n\r\nDROP DATABASE q\r\n--b--\r\n",
             {"Content-Type": "multipart/form-data; boundary=b"}, "multipart"),
            ("POST", "/query", b"q=DROP+DATABASE+q",
             {"Content-Type": "Application/X-WWW-Form-Urlencoded; charset=utf-8"}, "DROP DATABASE"),
        ]
        for method, path, body, headers, want in cases:
            st, h, b = self.relayd.request(method, path, body, headers)
            self.assertEqual(st, 400, (path, body, b))
            self.assertIn(want, json.loads(b)["error"], (path, body))
            self.assertIsNone(h.get("X-Relayd-Backend"), (path, body))
        # Two Content-Type headers: Go reads the first, relayd would the last.
        conn = relaytest.RawConn(self.relayd.port)
        self.addCleanup(conn.close)
        body = b"q=DROP+DATABASE+q"
        conn.send(b"POST /query HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
                  b"Content-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n%s"
                  % (len(body), body))
        resp = conn.read_response()
        self.assertEqual(resp.status, 400, resp)
        self.assertIn(b"Content-Type", resp.body)
        self.assertIn("q", self.influxd.databases())

    def test_create_database_is_queued_and_answered_as_influxdb_does(self):
        before = json.loads(self.relayd.get("/health")[2])
        st, h, b = self.relayd.request("POST", qpath(q='CREATE DATABASE "made"; CREATE RETENTION POLICY "r1" '
                                                     'ON "made" DURATION 1d REPLICATION 1'))
        self.assertEqual(st, 200, b)
        self.assertEqual(json.loads(b), {"results": [{"statement_id": 0}, {"statement_id": 1}]})
        self.assertIsNone(h.get("X-Relayd-Backend"))  # answered by relayd, not passed through
        after = json.loads(self.relayd.get("/health")[2])
        self.assertEqual(after["ingest"]["batches_committed"], before["ingest"]["batches_committed"] + 1)
        self.assertEqual(after["queries"]["statements_queued"], before["queries"]["statements_queued"] + 1)

    @unittest.skipIf(PYCLIENT is None, "python3-influxdb is not installed")
    def test_python_client(self):
        code = textwrap.dedent("""
            import json, sys, time
            import influxdb
            c = influxdb.InfluxDBClient("127.0.0.1", int(sys.argv[1]), database="pyq")
            c.create_database("pyq")
            pts = [{"measurement": "t", "tags": {"k": str(i)}, "fields": {"v": i}, "time": (1600000000 + i) * 10**9}
                   for i in range(20)]
            c.write_points(pts)
            got = []
            for _ in range(100):
                got = list(c.query("SELECT * FROM t").get_points())
                if len(got) == 20:
                    break
                time.sleep(0.1)
            print(json.dumps({"points": got, "dbs": [d["name"] for d in c.get_list_database()]}))
            """)
        cp = subprocess.run([PYCLIENT, "-c", code, str(self.relayd.port)], capture_output=True, text=True,
                            timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        out = json.loads(cp.stdout.strip().splitlines()[-1])
        self.assertEqual(sorted(p["v"] for p in out["points"]), list(range(20)))
        self.assertIn("pyq", out["dbs"])


class Auth(unittest.TestCase):
    """auth.enabled at relayd; the backend with credentials of its own."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.write_config(cls.tmp, http_options={"auth-enabled": True})
        cls.influxd.start()
        st, _, b = cls.influxd.request("POST", qpath(q="CREATE USER admin WITH PASSWORD 'adm' WITH ALL PRIVILEGES"))
        assert st == 200, b
        st, _, b = cls.influxd.request("POST", qpath(q="CREATE DATABASE a", u="admin", p="adm"))
        assert st == 200, b
        cls.relayd = relaytest.Relayd(cls.addClassCleanup)
        cls.relayd.write_config(cls.tmp, backends=[{"name": "influx", "url": cls.influxd.url,
                                                    "username": "admin", "password": "adm"}],
                                extra_yaml={"auth": {"enabled": True,
                                                     "users": [{"name": "reader", "password": "rpw"}],
                                                     "tokens": [{"name": "t", "token": "tok123"}]}})
        cls.relayd.start()
        cls.relayd.wait_ready()

    def test_inbound_auth_as_for_writes(self):
        ok = [(qpath(q="SHOW DATABASES", u="reader", p="rpw"), {}),
              (qpath(q="SHOW DATABASES"), {"Authorization": basic("reader", "rpw")}),
              (qpath(q="SHOW DATABASES"), {"Authorization": "Token tok123"})]
        for path, h in ok:
            st, hh, b = self.relayd.request("GET", path, headers=h)
            self.assertEqual(st, 200, (path, h, b))
            self.assertIn(b'"a"', b)  # the backend's own credentials let it in
        st, _, b = self.relayd.get(qpath(q="SHOW DATABASES"))
        self.assertEqual(st, 401, b)
        self.assertIn("error", json.loads(b))
        st, _, b = self.relayd.get(qpath(q="SHOW DATABASES", u="reader", p="wrong"))
        self.assertEqual(st, 403, b)
        st, _, b = self.relayd.request("GET", qpath(q="SHOW DATABASES"), headers={"Authorization": "Token nope"})
        self.assertEqual(st, 403, b)


class TwoBackends(unittest.TestCase):
    """Queries go to the first backend that is up and caught up."""

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.a = relaytest.Influxd(self.addCleanup)
        self.a.write_config(self.tmp, subdir="a")
        self.a.start()
        self.b = relaytest.Influxd(self.addCleanup)
        self.b.write_config(self.tmp, subdir="b")
        self.b.start()
        for i in (self.a, self.b):
            i.create_db("d")

    def config(self, r, **query):
        q = {"max_lag": "1s"}
        q.update(query)
        r.write_config(self.tmp, backends=[
            {"name": "a", "url": self.a.url, "retry_min": "100ms", "retry_max": "300ms"},
            {"name": "b", "url": self.b.url, "retry_min": "100ms", "retry_max": "300ms"}],
            extra_yaml={"query": q})

    def start_relayd(self, when_behind="least_behind"):
        r = relaytest.Relayd(self.addCleanup)
        self.config(r, when_behind=when_behind)
        r.start()
        r.wait_ready()
        return r

    def test_reload_applies_the_query_keys(self):
        r = self.start_relayd()
        self.assertEqual(self.backend_of(r)[1], "a")
        self.config(r, backends=["b", "a"])
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"configuration reloaded")
        self.assertEqual(self.backend_of(r)[1], "b")
        self.config(r, enabled=False)
        r.proc.send_signal(signal.SIGHUP)
        relaytest.wait_until(lambda: r.get(qpath(q="SHOW DATABASES"))[0] == 404, 10, what="/query to be off")

    def backend_of(self, r, q="SHOW DATABASES"):
        st, h, b = r.get(qpath(q=q, db="d"))
        return st, h.get("X-Relayd-Backend"), h.get("X-Relayd-Behind"), b

    def pending(self, r, name):
        doc = json.loads(r.get("/health")[2])
        return [x for x in doc["backends"] if x["name"] == name][0]["pending_batches"]

    def test_stopped_backend_gets_no_query_until_drained(self):
        r = self.start_relayd()
        self.assertEqual(self.backend_of(r)[1], "a")
        relaytest.stop_process(self.a.proc)  # by its pid
        # a connect failure before any byte: the next backend answers
        st, name, behind, _ = self.backend_of(r)
        self.assertEqual((st, name), (200, "b"))
        for i in range(20):
            self.assertEqual(r.write("d", "m v=%di %d\n" % (i, (BASE_S + i) * 10 ** 9))[0], 204)
        r.wait_status("b", pending_batches=0)
        time.sleep(1.2)  # a's backlog is now older than max_lag
        self.assertGreater(self.pending(r, "a"), 0)
        st, name, behind, _ = self.backend_of(r, 'SELECT count(v) FROM m')
        self.assertEqual((st, name, behind), (200, "b", None))
        self.a.start()
        seen_a = False
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not seen_a:
            before = self.pending(r, "a")
            st, name, behind, body = self.backend_of(r, 'SELECT count(v) FROM m')
            self.assertEqual(st, 200)
            if name == "a":
                seen_a = True
                # a answered only once its backlog was delivered
                self.assertIn(b"20", body)
            else:
                self.assertEqual(name, "b")
                if before == 0:
                    time.sleep(0.05)
            time.sleep(0.05)
        self.assertTrue(seen_a, "backend a never got a query after it drained")
        self.assertEqual(self.pending(r, "a"), 0)

    def test_a_database_held_on_one_backend_is_read_from_the_other(self):
        # "x" exists on b only: a holds x's writes (database not found)
        # and lacks them, so a read of x goes to b, though a comes first.
        self.b.create_db("x")
        r = self.start_relayd()
        for i in range(5):
            self.assertEqual(r.write("x", "m v=%di %d\n" % (i, (BASE_S + i) * 10 ** 9))[0], 204)
        self.b.wait_count("x", "m", "v", 5)
        r.wait_log(r'database "x" does not exist')
        st, h, body = r.get(qpath(q="SELECT count(v) FROM m", db="x"))
        self.assertEqual((st, h.get("X-Relayd-Backend")), (200, "b"), body)
        self.assertEqual(json.loads(body)["results"][0]["series"][0]["values"][0][1], 5)
        # A client that names the database it creates (db=x, as the
        # Python client and influx -database do): the statement does not
        # wait behind x's held writes, and lets them go.
        st, _, body = r.request("POST", qpath(q='CREATE DATABASE "x"', db="x"))
        self.assertEqual(st, 200, body)
        self.a.wait_count("x", "m", "v", 5)
        relaytest.wait_until(lambda: r.get(qpath(q="SELECT count(v) FROM m", db="x"))[1].get("X-Relayd-Backend") == "a",
                             10, what="reads of x to go to a again")

    def test_paused_backlog_is_behind(self):
        # Both paused (relayctl) with a backlog older than max_lag: both
        # reachable, neither caught up.
        r = self.start_relayd()
        for name in ("a", "b"):
            cp = r.relayctl("pause", name)
            self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(r.write("d", "m v=1i 1000000000\n")[0], 204)
        time.sleep(1.3)
        st, name, behind, _ = self.backend_of(r)
        self.assertEqual((st, name), (200, "a"))  # equal lag: the first in order
        self.assertRegex(behind or "", r"^\d+\.\d{3}$")
        self.assertGreaterEqual(float(behind), 1.0)
        # refuse: 503 naming each and its lag
        self.config(r, when_behind="refuse")
        r.proc.send_signal(signal.SIGHUP)
        relaytest.wait_until(lambda: r.get(qpath(q="SHOW DATABASES"))[0] == 503, 10, what="a 503")
        st, h, b = r.get(qpath(q="SHOW DATABASES"))
        msg = json.loads(b)["error"]
        self.assertRegex(msg, r"'a' is paused and \d+\.\d{3}s behind, 'b' is paused and \d+\.\d{3}s behind")
        # resumed, a drains and answers, caught up
        self.assertEqual(r.relayctl("resume", "a").returncode, 0)
        r.wait_status("a", pending_batches=0)
        st, name, behind, _ = self.backend_of(r)
        self.assertEqual((st, name, behind), (200, "a", None))

    def test_when_behind(self):
        r = self.start_relayd("refuse")
        relaytest.stop_process(self.a.proc)
        relaytest.stop_process(self.b.proc)
        self.assertEqual(r.write("d", "m v=1i 1000000000\n")[0], 204)
        time.sleep(1.5)
        st, h, b = r.get(qpath(q="SHOW DATABASES"))
        self.assertEqual(st, 503, b)
        msg = json.loads(b)["error"]
        self.assertIn("'a' is", msg)
        self.assertIn("'b' is", msg)
        self.assertEqual(h.get("Retry-After"), "1")
        # least_behind: answers from the least behind one, marked
        r.stop()
        self.b.start()
        r2 = self.start_relayd("least_behind")
        deadline = time.monotonic() + 10
        while self.pending(r2, "b") and time.monotonic() < deadline:
            time.sleep(0.1)
        # b is caught up now; a (stopped) is behind: b, not marked
        st, name, behind, _ = self.backend_of(r2)
        self.assertEqual((st, name, behind), (200, "b", None))


class Streaming(unittest.TestCase):
    """A large answer, a slow reader and a client that leaves."""

    POINTS = 1_000_000

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.start(cls.tmp)
        cls.influxd.create_db("big")
        write_points(cls.influxd, "big", cls.POINTS)
        cls.relayd = relaytest.Relayd(cls.addClassCleanup)
        cls.relayd.write_config(cls.tmp, backends=[{"name": "influx", "url": cls.influxd.url}])
        cls.relayd.start()
        cls.relayd.wait_ready()
        cls.path = qpath(q='SELECT * FROM "big"', db="big", chunked="true", chunk_size="10000")

    def rss(self):
        return relaytest.proc_mem(self.relayd.proc.pid)["VmRSS"]

    @unittest.skipIf(CURL is None, "curl not found")
    def test_large_answer_with_rss_flat(self):
        def size(port):
            cp = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{size_download} %{http_code}",
                                 "http://127.0.0.1:%d%s" % (port, self.path)],
                                capture_output=True, text=True, timeout=120)
            self.assertEqual(cp.returncode, 0, cp.stderr)
            n, code = cp.stdout.split()
            self.assertEqual(code, "200")
            return int(n)
        self.relayd.get(qpath(q="SHOW DATABASES"))  # warm: the first answer's allocations
        before = self.rss()
        sampler = RssSampler(self.relayd.proc.pid)
        sampler.start()
        t0 = time.monotonic()
        through = size(self.relayd.port)
        t1 = time.monotonic()
        peak = sampler.stop()
        direct = size(self.influxd.port)
        t2 = time.monotonic()
        sys.stderr.write("\n# %d points, %d bytes chunked: %.2f s through relayd, %.2f s direct; relayd VmRSS "
                         "%.1f MiB before, peak %.1f MiB (+%.2f MiB, bound +%.0f MiB)\n"
                         % (self.POINTS, through, t1 - t0, t2 - t1, before / MIB, peak / MIB,
                            (peak - before) / MIB, RSS_SLACK / MIB))
        self.assertEqual(through, direct)
        self.assertGreater(direct, 20 * 1024 * 1024)
        self.assertLess(peak - before, RSS_SLACK, "relayd's RSS grew from %d to %d" % (before, peak))
        doc = json.loads(self.relayd.get("/health")[2])
        self.assertGreaterEqual(doc["queries"]["bytes"], direct)

    def test_slow_reader_and_a_client_that_leaves(self):
        before = self.rss()
        sampler = RssSampler(self.relayd.proc.pid)
        sampler.start()
        s = socket.create_connection(("127.0.0.1", self.relayd.port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        s.sendall(("GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % self.path).encode())
        got = 0
        for _ in range(30):
            d = s.recv(65536)
            self.assertTrue(d)
            got += len(d)
            time.sleep(0.05)
        peak = sampler.stop()
        sys.stderr.write("\n# slow reader, %d KiB read in 1.5 s: relayd VmRSS %.1f MiB before, peak %.1f MiB "
                         "(+%.2f MiB)\n" % (got // 1024, before / MIB, peak / MIB, (peak - before) / MIB))
        self.assertLess(peak - before, RSS_SLACK, "relayd's RSS grew from %d to %d" % (before, peak))

        def running():
            doc = self.influxd.query(None, "SHOW QUERIES")
            rows = doc["results"][0].get("series", [{}])[0].get("values", [])
            return [r for r in rows if "big" in str(r[1])]
        self.assertTrue(running(), "the query is not running on influxd")
        s.close()  # the client leaves mid-answer
        relaytest.wait_until(lambda: not running(), 10, what="influxd's query to stop")
        doc = json.loads(self.relayd.get("/health")[2])
        self.assertEqual(doc["http"]["buffered_bytes"], 0)


class CheckConfig(unittest.TestCase):

    def test_query_keys(self):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        path = r.write_config(tmp, backends=[("a", "http://127.0.0.1:1"), ("b", "http://127.0.0.1:2")],
                              extra_yaml={"query": {"backends": ["b", "a"], "when_behind": "refuse"}})
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("queries: to b, a (the first caught up within 1000 ms; else refused); "
                      "state changes refused", cp.stdout)
        path = r.write_config(tmp, backends=[("a", "http://127.0.0.1:1")],
                              extra_yaml={"query": {"backends": ["a", "nope"]}})
        cp = relaytest.check_config(path)
        self.assertNotEqual(cp.returncode, 0)
        self.assertRegex(cp.stderr, r"relayd\.yaml:\d+:\d+: 'query.backends' names 'nope', which is not a backend")


class QueuedStatements(unittest.TestCase):
    """CREATE DATABASE through relayd reaches a backend that was stopped
    when it was sent, before the writes that need it."""

    def test_create_database_reaches_a_stopped_backend(self):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        a = relaytest.Influxd(self.addCleanup)
        a.write_config(tmp, subdir="a")
        a.start()
        b = relaytest.Influxd(self.addCleanup)
        b.write_config(tmp, subdir="b")
        b.start()
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[{"name": "a", "url": a.url, "retry_min": "100ms", "retry_max": "300ms"},
                                      {"name": "b", "url": b.url, "retry_min": "100ms", "retry_max": "300ms"}])
        r.start()
        r.wait_ready()
        relaytest.stop_process(a.proc)
        st, _, body = r.request("POST", qpath(q='CREATE DATABASE "late"'))
        self.assertEqual(st, 200, body)
        self.assertEqual(r.write("late", "m v=1i 1000000000\n")[0], 204)
        a.start()
        a.wait_count("late", "m", "v", 1)
        b.wait_count("late", "m", "v", 1)
        # The statement went first: no backend ever answered "database
        # not found" for the write, so nothing was held.
        self.assertFalse(r.log_matches(r"does not exist|held"), r.log())


if __name__ == "__main__":
    relaytest.main(require=("relayd", "influxd"))
