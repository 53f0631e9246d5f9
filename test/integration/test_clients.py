#!/usr/bin/env python3
"""
Real InfluxDB 1.x clients write through relayd, and the points arrive in a
real influxd (Debian's 1.6.7) behind it: curl (inline, --data-binary @file,
chunked, gzip with Content-Encoding), the influx CLI's -import, and the
Python influxdb client (python3-influxdb: write_points at every precision,
batch_size, protocol='line', gzip=True). Every test counts what arrived in
influxd exactly and reads some values back.

Queries pass through relayd to the backend (docs/influxdb.md,
"Queries"), so these clients work unchanged when relayd takes influxd's
place:

- `influx -import` sends each DDL statement (CREATE DATABASE, CREATE
  RETENTION POLICY) as a query: relayd queues it for every backend, in
  order with the writes, and answers as influxd does; the DML follows
  through /write.
- The interactive `influx` shell, driven through a pseudo-terminal:
  `create database`, `show databases`, `use`, `insert`, `select`.
- The Python client's ping(), create_database(), query() and
  get_list_database().
- A Telegraf-like start against a fresh influxd: CREATE DATABASE, then
  writes at once; every point arrives.

The Python client is run by an interpreter that can import `influxdb`
(this one, or Debian's /usr/bin/python3 where python3-influxdb lives), as a
child process: a real client program, like curl and influx.
"""

import gzip
import json
import os
import pty
import re
import select
import shutil
import subprocess
import sys
import textwrap
import time
import unittest
import urllib.parse

import relaytest

BASE_NS = 1_700_000_000 * 10 ** 9  # 2023-11-14T22:13:20Z
UNIT_NS = {"n": 1, "ns": 1, "u": 10 ** 3, "ms": 10 ** 6, "s": 10 ** 9,
           "m": 60 * 10 ** 9, "h": 3600 * 10 ** 9}
CURL = shutil.which("curl")
INFLUX = shutil.which("influx")


PYCLIENT = relaytest.python_with_influxdb()


def probe():
    if PYCLIENT is None:
        return "no python3 with the influxdb module (apt-get install python3-influxdb)"
    return None


class ClientsBase(unittest.TestCase):
    """One influxd and one relayd in front of it for the whole class; each
    test writes to a database of its own. The backend creates a missing
    database (on_database_not_found: create) for the tests that write to
    one they never create."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.start(cls.tmp)
        cls.relayd = relaytest.Relayd(cls.addClassCleanup)
        cls.relayd.write_config(cls.tmp, backends=[{
            "name": "influx", "url": cls.influxd.url, "retry_min": "100ms", "retry_max": "1s",
            "on_database_not_found": "create",
            # One write at a time: each test writes into a database that
            # relayd has just created, where influxd 1.6.7 can drop a point
            # of concurrent writes while answering 204 (docs/influxdb.md,
            # "Concurrent writes into a new shard"; CI saw 18 of 20).
            "parallel": 1}])
        cls.relayd.start()
        cls.relayd.wait_ready()

    def url(self, db, **params):
        q = [("db", db)] + sorted(params.items())
        return "http://127.0.0.1:%d/write?%s" % (self.relayd.port, urllib.parse.urlencode(q))

    def path(self, name):
        return os.path.join(self.tmp, name)

    def wait_drained(self):
        self.relayd.wait_status("influx", timeout=30, pending_batches=0)

    def rows(self, db, measurement, where=""):
        return self.influxd.rows(db, 'SELECT * FROM "%s"%s' % (measurement, where))

    def health_http(self):
        status, _, body = self.relayd.get("/health")
        self.assertEqual(status, 200, body)
        return json.loads(body.decode())["http"]


# ---- curl -----------------------------------------------------------------

class CurlTest(ClientsBase):

    def curl(self, *args):
        """Run curl; returns the HTTP status it reports (-w)."""
        cp = subprocess.run([CURL, "-sS", "-o", "/dev/null", "-w", "%{http_code}"] + list(args),
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, "curl %r: %s" % (args, cp.stderr))
        return int(cp.stdout.strip())

    def test_curl_inline_bodies(self):
        db = "curl_plain"
        self.influxd.create_db(db)
        body = ("cpu,host=a usage=0.5 %d\n"
                "cpu,host=b usage=1.5 %d\n"
                "cpu,host=a usage=2.5 %d" % (BASE_NS, BASE_NS, BASE_NS + 10 ** 9))
        self.assertEqual(self.curl("-XPOST", self.url(db), "--data-binary", body), 204)
        # -d, precision=s, and the classic one-liner of the README.
        self.assertEqual(self.curl("-XPOST", self.url(db, precision="s"),
                                   "-d", "cpu,host=c usage=9 %d" % (BASE_NS // 10 ** 9 + 5)), 204)
        self.influxd.wait_count(db, "cpu", "usage", 4)
        got = {(r["host"], r["time"]): r["usage"] for r in self.rows(db, "cpu")}
        self.assertEqual(got, {("a", BASE_NS): 0.5, ("b", BASE_NS): 1.5,
                               ("a", BASE_NS + 10 ** 9): 2.5, ("c", BASE_NS + 5 * 10 ** 9): 9})

    def make_lines(self, measurement, n, stamped_every=0):
        """n lines, series h0..h9; every stamped_every-th line without a
        timestamp. Also returns the expected (host, i) -> time map."""
        lines, times = [], {}
        for i in range(n):
            tags = "%s,host=h%d,i=%05d" % (measurement, i % 10, i)
            if stamped_every and i % stamped_every == 0:
                lines.append("%s value=%di" % (tags, i))
                times[i] = None
            else:
                lines.append("%s value=%di %d" % (tags, i, BASE_NS + i * 1000))
                times[i] = BASE_NS + i * 1000
        return "\n".join(lines) + "\n", times

    def check_lines(self, db, measurement, n, times, window=None):
        self.influxd.wait_count(db, measurement, "value", n)
        rows = self.rows(db, measurement)
        self.assertEqual(len(rows), n)
        for r in rows:
            i = int(r["i"])
            self.assertEqual(r["value"], i)
            self.assertEqual(r["host"], "h%d" % (i % 10))
            if times[i] is not None:
                self.assertEqual(r["time"], times[i], "line %d" % i)
            else:
                lo, hi = window
                self.assertTrue(lo <= r["time"] <= hi, "stamped line %d: %d not in [%d, %d]"
                                % (i, r["time"], lo, hi))

    def test_curl_data_binary_file(self):
        # 20 000 lines (about 0.9 MB) from a file, one line in 100 without a
        # timestamp: relayd stamps it when it accepts the request.
        db = "curl_file"
        self.influxd.create_db(db)
        body, times = self.make_lines("filed", 20000, stamped_every=100)
        with open(self.path("curl_file.lp"), "w") as f:
            f.write(body)
        before = time.time_ns()
        self.assertEqual(self.curl("-XPOST", self.url(db), "--data-binary",
                                   "@" + self.path("curl_file.lp")), 204)
        after = time.time_ns()
        self.check_lines(db, "filed", 20000, times, window=(before, after))

    def test_curl_chunked_file(self):
        db = "curl_chunked"
        self.influxd.create_db(db)
        body, times = self.make_lines("chunky", 3000)
        with open(self.path("curl_chunked.lp"), "w") as f:
            f.write(body)
        self.assertEqual(self.curl("-XPOST", self.url(db), "-H", "Transfer-Encoding: chunked",
                                   "--data-binary", "@" + self.path("curl_chunked.lp")), 204)
        self.check_lines(db, "chunky", 3000, times)

    def test_curl_gzip_file(self):
        db = "curl_gzip"
        self.influxd.create_db(db)
        body, times = self.make_lines("zipped", 50000)
        with open(self.path("curl_gzip.lp.gz"), "wb") as f:
            f.write(gzip.compress(body.encode()))
        self.assertEqual(self.curl("-XPOST", self.url(db, precision="ns"),
                                   "-H", "Content-Encoding: gzip",
                                   "--data-binary", "@" + self.path("curl_gzip.lp.gz")), 204)
        self.check_lines(db, "zipped", 50000, times)
        rows = self.rows(db, "zipped", " WHERE i = '49999'")
        self.assertEqual([(r["value"], r["time"]) for r in rows], [(49999, BASE_NS + 49999000)])

    def test_curl_gzip_multi_member_arrives_as_it_would_directly(self):
        # A gzip body of two members (`cat a.gz b.gz`, valid per RFC 1952;
        # gzip -d and influxd read both): both arrive, as they do when
        # sent to influxd directly.
        db, direct = "curl_gzmm", "curl_gzmm_direct"
        self.influxd.create_db(db)
        self.influxd.create_db(direct)
        a = gzip.compress(b"mm,k=a value=1 %d\n" % BASE_NS)
        b = gzip.compress(b"mm,k=b value=2 %d\n" % BASE_NS)
        with open(self.path("mm.gz"), "wb") as f:
            f.write(a + b)
        st = self.curl("-XPOST", self.url(db), "-H", "Content-Encoding: gzip",
                       "--data-binary", "@" + self.path("mm.gz"))
        status, _, resp = self.influxd.request(
            "POST", "/write?db=" + direct, a + b, headers={"Content-Encoding": "gzip"})
        self.assertEqual(status, 204, resp)
        self.assertEqual(self.influxd.count(direct, "mm", "value"), 2)
        self.wait_drained()
        if st == 400:
            self.assertEqual(self.influxd.count_or_none(db, "mm", "value") or 0, 0)
        else:
            self.assertEqual(st, 204)
            self.assertEqual(self.influxd.count(db, "mm", "value"), 2,
                             "relayd answered 204 and delivered only part of the body")


# ---- influx -import --------------------------------------------------------

class InfluxImportTest(ClientsBase):

    def influx_import(self, path, *args):
        cp = subprocess.run([INFLUX, "-host", "127.0.0.1", "-port", str(self.relayd.port),
                             "-import", "-path", path] + list(args),
                            capture_output=True, text=True, timeout=120)
        return cp.returncode, cp.stdout + cp.stderr

    def write_file(self, name, text):
        with open(self.path(name), "w") as f:
            f.write(text)
        return self.path(name)

    def test_import_dml_12000_points_in_three_writes(self):
        # The importer sends 5000 points per write: 12 000 make three.
        db = "imp_dml"
        self.influxd.create_db(db)
        lines = ["imp,host=h%d,i=%05d value=%d.25,n=%di %d"
                 % (i % 4, i, i, i, BASE_NS + i * 10 ** 6) for i in range(12000)]
        path = self.write_file("dml.txt", "# DML\n# CONTEXT-DATABASE: %s\n%s\n" % (db, "\n".join(lines)))
        writes_before = self.health_http()["writes_ok"]
        rc, out = self.influx_import(path)
        self.assertEqual(rc, 0, out)
        self.assertIn("Processed 12000 inserts", out)
        self.assertIn("Failed 0 inserts", out)
        self.assertNotIn("error", out.lower())
        self.assertEqual(self.health_http()["writes_ok"] - writes_before, 3)
        self.influxd.wait_count(db, "imp", "value", 12000)
        rows = self.rows(db, "imp", " WHERE i = '00000' OR i = '11999' OR i = '05000'")
        got = sorted((r["i"], r["host"], r["value"], r["n"], r["time"]) for r in rows)
        self.assertEqual(got, [("00000", "h0", 0.25, 0, BASE_NS),
                               ("05000", "h0", 5000.25, 5000, BASE_NS + 5000 * 10 ** 6),
                               ("11999", "h3", 11999.25, 11999, BASE_NS + 11999 * 10 ** 6)])

    def test_import_precision_s_and_retention_policy(self):
        db = "imp_prec"
        self.influxd.create_db(db)
        base_s = BASE_NS // 10 ** 9
        lines = ["prec,i=%03d value=%di %d" % (i, i, base_s + i) for i in range(300)]
        path = self.write_file("prec.txt", "# DML\n# CONTEXT-DATABASE: %s\n"
                               "# CONTEXT-RETENTION-POLICY: autogen\n%s\n" % (db, "\n".join(lines)))
        rc, out = self.influx_import(path, "-precision", "s")
        self.assertEqual(rc, 0, out)
        self.assertIn("Processed 300 inserts", out)
        self.influxd.wait_count(db, "prec", "value", 300)
        rows = self.rows(db, "prec")
        self.assertEqual(sorted((r["i"], r["time"]) for r in rows),
                         [("%03d" % i, (base_s + i) * 10 ** 9) for i in range(300)])

    def test_import_ddl_reaches_influxd_in_order_with_the_dml(self):
        # influx -import sends each DDL statement to /query: relayd queues
        # it for the backend, answers as influxd does (no error printed),
        # and delivers it before the DML written after it. The database
        # and the retention policy are made by the DDL, not by the
        # backend's on_database_not_found.
        db = "imp_ddl"
        lines = ["ddl,i=%02d value=%di %d" % (i, i, BASE_NS + i) for i in range(50)]
        path = self.write_file("ddl.txt",
                               "# DDL\nCREATE DATABASE %s\n"
                               "CREATE RETENTION POLICY oneday ON %s DURATION 1d REPLICATION 1\n\n"
                               "# DML\n# CONTEXT-DATABASE: %s\n%s\n" % (db, db, db, "\n".join(lines)))
        rc, out = self.influx_import(path)
        self.assertEqual(rc, 0, out)
        self.assertNotIn("error", out)
        self.assertIn("Processed 2 commands", out)
        self.assertIn("Processed 50 inserts", out)
        self.assertIn("Failed 0 inserts", out)
        self.influxd.wait_count(db, "ddl", "value", 50)
        rows = self.rows(db, "ddl", " WHERE i = '49'")
        self.assertEqual([(r["value"], r["time"]) for r in rows], [(49, BASE_NS + 49)])
        res = self.influxd.query(db, "SHOW RETENTION POLICIES ON %s" % db)["results"][0]
        self.assertEqual(sorted(v[0] for v in res["series"][0]["values"]), ["autogen", "oneday"])
        self.assertFalse(self.relayd.log_matches(r"created database"), self.relayd.log())


# ---- the interactive influx shell ------------------------------------------

class InfluxShell:
    """The `influx` shell on a pseudo-terminal, as a person runs it."""

    def __init__(self, port, guard):
        self.master, slave = pty.openpty()
        self.proc = subprocess.Popen(
            [INFLUX, "-host", "127.0.0.1", "-port", str(port)],
            stdin=slave, stdout=slave, stderr=slave, close_fds=True,
            env=dict(os.environ, TERM="dumb", HOME=guard.tmp))
        os.close(slave)
        guard.addCleanup(self.close)
        self.banner = self.until_prompt()

    def until_prompt(self, timeout=15.0):
        """What the shell printed up to its next "> " prompt."""
        buf = b""
        deadline = time.monotonic() + timeout
        while not buf.endswith(b"> "):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no prompt from the influx shell; it printed %r" % buf)
            r, _, _ = select.select([self.master], [], [], min(left, 0.2))
            if r:
                try:
                    data = os.read(self.master, 65536)
                except OSError:
                    raise AssertionError("the influx shell ended; it printed %r" % buf)
                if not data:
                    raise AssertionError("the influx shell ended; it printed %r" % buf)
                buf += data
        return buf.decode("utf-8", "replace").replace("\r\n", "\n")[:-2]

    def run(self, line):
        """Type line; returns what the shell answered (without the echo)."""
        os.write(self.master, line.encode() + b"\n")
        out = self.until_prompt()
        return out.split("\n", 1)[1] if "\n" in out else ""

    def close(self):
        if self.proc.poll() is None:
            relaytest.stop_process(self.proc, grace=2.0)
        try:
            os.close(self.master)
        except OSError:
            pass


class InfluxShellTest(ClientsBase):

    def test_a_session_through_relayd_reads_as_one_straight_to_influxd(self):
        # One session straight to influxd, one through relayd, each with a
        # database of its own; typed the way a person does, waiting for
        # each prompt. Everything the shell prints must be the same but
        # for the database names and the stamped times.
        def session(port, db):
            sh = InfluxShell(port, self)
            # "Connected to http://127.0.0.1:PORT version V": the version
            # is the one /ping answers (relayd: its backend's own).
            out = [sh.banner.split("\n")[0].split(" version ")[-1]]
            for line in ("create database %s" % db, "use %s" % db,
                         "insert cpu,host=a usage=0.5", "insert cpu,host=b usage=1.5",
                         "select count(usage) from cpu", "show measurements", "show tag values with key = host",
                         "select host, usage from cpu where host = 'b'", "show databases"):
                text = sh.run(line)
                text = re.sub(r"\n\d{19} ", "\nTIME ", text)
                out.append("> %s\n%s" % (line.replace(db, "DB"), text.replace(db, "DB")))
            return out

        straight = session(self.influxd.port, "shell_direct")
        relayed = session(self.relayd.port, "shell_relayed")
        self.assertIn("Using database DB", relayed[2])
        self.assertNotIn("does not exist", "\n".join(relayed))
        # show databases lists both on the one influxd: compare the rest.
        self.assertEqual(straight[:-1], relayed[:-1])
        self.assertIn("shell_direct", relayed[-1].replace("DB", "shell_relayed"))
        self.assertIn("count\n", relayed[5].replace("-", ""))
        self.assertIn(" 2\n", relayed[5] + "\n")
        self.assertEqual(self.influxd.count("shell_relayed", "cpu", "usage"), 2)


# ---- a Telegraf-like start -------------------------------------------------

class TelegrafLikeStartTest(unittest.TestCase):
    """What Telegraf does when it starts: CREATE DATABASE "telegraf" through
    /query, then writes at once, against an influxd that has no database
    yet, and a relayd with the default on_database_not_found (hold)."""

    def test_create_database_then_writes_everything_arrives(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.start(self.tmp)
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[{"name": "influx", "url": influxd.url,
                                            "retry_min": "100ms", "retry_max": "1s"}])
        r.start()
        r.wait_ready()
        st, _, body = r.request("POST", "/query", b"q=" + urllib.parse.quote_plus(
            'CREATE DATABASE "telegraf"').encode(),
            {"Content-Type": "application/x-www-form-urlencoded"})
        self.assertEqual(st, 200, body)
        self.assertEqual(json.loads(body), {"results": [{"statement_id": 0}]})
        for i in range(20):
            body = "".join("cpu,host=h%d,cpu=cpu%d usage_idle=%d.5 %d\n" % (i % 3, j, j, BASE_NS + i * 1000 + j)
                           for j in range(50)).encode()
            st, _, resp = r.write("telegraf", body)
            self.assertEqual(st, 204, resp)
        influxd.wait_count("telegraf", "cpu", "usage_idle", 1000)
        self.assertFalse(r.log_matches(r"database not found|holding"), r.log())

# ---- the Python influxdb client ---------------------------------------------

PROLOGUE = """\
import json, sys
import influxdb
ARGS = json.loads(sys.argv[1])
client = influxdb.InfluxDBClient("127.0.0.1", ARGS["port"], database=ARGS.get("db"),
                                 gzip=ARGS.get("gzip", False))
"""


class PythonClientTest(ClientsBase):

    def client(self, code, **args):
        """Run code after PROLOGUE (client = InfluxDBClient(...)) in a child
        interpreter; returns what its last stdout line holds (JSON)."""
        args.setdefault("port", self.relayd.port)
        cp = subprocess.run([PYCLIENT, "-c", PROLOGUE + textwrap.dedent(code), json.dumps(args)],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        out = cp.stdout.strip().splitlines()
        return json.loads(out[-1]) if out else None

    def test_write_points_at_every_precision(self):
        # Integer times are sent as given, in the unit of time_precision;
        # ISO strings are converted by the client. Either way influxd must
        # end with the same instants as if written directly.
        db = "py_prec"
        self.influxd.create_db(db)
        expected = {}
        for p in ("n", "u", "ms", "s", "m", "h"):
            unit = UNIT_NS[p]
            base = BASE_NS // unit
            expected[p] = {"%02d" % i: ((base + i) * unit, i) for i in range(20)}
        iso = {"%02d" % i: "2023-11-14T22:13:%02d.%03dZ" % (20 + i, i) for i in range(20)}
        ok = self.client("""
            res = []
            for p, pts in sorted(ARGS["expected"].items()):
                unit = ARGS["units"][p]
                points = [{"measurement": "prec_" + p, "tags": {"i": i},
                           "time": t // unit, "fields": {"value": v}} for i, (t, v) in pts.items()]
                res.append(client.write_points(points, time_precision=p, batch_size=7))
            points = [{"measurement": "iso_ms", "tags": {"i": i}, "time": t,
                       "fields": {"value": int(i)}} for i, t in ARGS["iso"].items()]
            res.append(client.write_points(points, time_precision="ms"))
            print(json.dumps(res))
            """, db=db, expected=expected, units=UNIT_NS, iso=iso)
        self.assertEqual(ok, [True] * 7)
        for p, pts in expected.items():
            self.influxd.wait_count(db, "prec_" + p, "value", 20)
            got = {r["i"]: (r["time"], r["value"]) for r in self.rows(db, "prec_" + p)}
            self.assertEqual(got, {i: tuple(v) for i, v in pts.items()}, "precision %s" % p)
        self.influxd.wait_count(db, "iso_ms", "value", 20)
        got = {r["i"]: r["time"] for r in self.rows(db, "iso_ms")}
        self.assertEqual(got, {"%02d" % i: BASE_NS + i * 10 ** 9 + i * 10 ** 6 for i in range(20)})

    def test_write_points_batch_size_is_one_write_per_batch(self):
        db = "py_batch"
        self.influxd.create_db(db)
        before = self.health_http()
        ok = self.client("""
            points = [{"measurement": "batched", "tags": {"host": "h%d" % (i % 5), "i": "%04d" % i},
                       "time": ARGS["base"] + i, "fields": {"value": float(i), "odd": i % 2 == 1}}
                      for i in range(1000)]
            print(json.dumps(client.write_points(points, batch_size=128)))
            """, db=db, base=BASE_NS)
        self.assertTrue(ok)
        after = self.health_http()
        self.assertEqual(after["writes_ok"] - before["writes_ok"], 8)  # ceil(1000 / 128)
        self.assertEqual(after["points_accepted"] - before["points_accepted"], 1000)
        self.influxd.wait_count(db, "batched", "value", 1000)
        rows = self.rows(db, "batched", " WHERE i = '0999' OR i = '0128'")
        self.assertEqual(sorted((r["i"], r["host"], r["value"], r["odd"], r["time"]) for r in rows),
                         [("0128", "h3", 128.0, False, BASE_NS + 128),
                          ("0999", "h4", 999.0, True, BASE_NS + 999)])

    def test_write_protocol_line(self):
        db = "py_line"
        self.influxd.create_db(db)
        base_ms = BASE_NS // 10 ** 6
        ok = self.client("""
            lines = ["line,src=write value=%di %d" % (i, ARGS["base_ms"] + i) for i in range(40)]
            r1 = client.write(lines, params={"db": ARGS["db"], "precision": "ms"}, protocol="line")
            more = ["line,src=points value=%di %d" % (i, ARGS["base_ms"] + i) for i in range(60)]
            r2 = client.write_points(more, time_precision="ms", protocol="line", batch_size=25)
            print(json.dumps([r1, r2]))
            """, db=db, base_ms=base_ms)
        self.assertEqual(ok, [True, True])
        self.influxd.wait_count(db, "line", "value", 100)
        rows = self.rows(db, "line", " WHERE value = 39")
        self.assertEqual(sorted((r["src"], r["time"]) for r in rows),
                         [("points", (base_ms + 39) * 10 ** 6), ("write", (base_ms + 39) * 10 ** 6)])

    def test_gzip_client_and_points_without_time(self):
        # gzip=True compresses each request (Content-Encoding: gzip). Points
        # without a time get relayd's acceptance time, at the precision.
        db = "py_gzip"
        self.influxd.create_db(db)
        before = time.time_ns()
        ok = self.client("""
            points = [{"measurement": "gz", "tags": {"i": "%03d" % i}, "fields": {"value": i}}
                      for i in range(500)]
            print(json.dumps(client.write_points(points, time_precision="ms")))
            """, db=db, gzip=True)
        after = time.time_ns()
        self.assertTrue(ok)
        self.influxd.wait_count(db, "gz", "value", 500)
        rows = self.rows(db, "gz")
        self.assertEqual(sorted(int(r["i"]) for r in rows), list(range(500)))
        for r in rows:
            self.assertEqual(r["value"], int(r["i"]))
            self.assertEqual(r["time"] % 10 ** 6, 0, "not stamped at ms precision")
            self.assertTrue(before // 10 ** 6 * 10 ** 6 <= r["time"] <= after, r)

    def test_ping_create_database_query_and_list(self):
        got = self.client("""
            out = {"ping": client.ping()}
            client.create_database("py_api")
            client.write_points([{"measurement": "m", "tags": {"k": "a"},
                                  "fields": {"v": 1.5}, "time": 1700000000000000000},
                                 {"measurement": "m", "tags": {"k": "b"},
                                  "fields": {"v": 2.5}, "time": 1700000000000000001}])
            import time
            deadline = time.time() + 20
            while True:
                pts = list(client.query("SELECT * FROM m", epoch="ns").get_points())
                if len(pts) == 2 or time.time() > deadline:
                    break
                time.sleep(0.1)
            out["points"] = pts
            out["databases"] = [d["name"] for d in client.get_list_database()]
            print(json.dumps(out))
            """, db="py_api")
        # The backend's own version, not relayd's.
        self.assertEqual(got["ping"], self.influxd.version, got)
        self.assertEqual(got["points"], [{"time": 1700000000000000000, "k": "a", "v": 1.5},
                                         {"time": 1700000000000000001, "k": "b", "v": 2.5}])
        self.assertIn("py_api", got["databases"])
        self.assertIn("py_api", self.influxd.databases())


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd", "curl", "influx"), probe=probe)
