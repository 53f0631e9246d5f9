#!/usr/bin/env python3
"""
Monitoring: the alert rules and the Grafana dashboard of docs/monitoring/
against what relayd really exports on GET /metrics.

  a. promtool accepts the rules (check rules) and their unit tests pass
     (test rules relayd.rules.test.yml).
  b. Every metric the rules and the dashboard name is one docs/monitoring.md
     documents and one a live relayd exports (its # TYPE lines), with the
     right type for what the expression does with it (rate() of a counter,
     deriv() of a gauge); the documented and the exported metrics are the
     same set.
  c. promtool check metrics finds nothing to say about relayd's /metrics
     after some traffic (writes over HTTP and UDP, a query, a delivery).
  d. A real Prometheus (Debian's) scrapes relayd every second, with the
     rules loaded, while the real influxd behind it is stopped for a few
     seconds: the backlog it recorded rises and falls back to 0, the
     backend was "down", RelaydBackendDown went pending, every rule
     evaluates without error and every dashboard query runs.

Needs promtool and prometheus (Debian's prometheus package) and influxd;
a test whose program is missing is skipped. About 20 s.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import time
import unittest
import urllib.parse

import relaytest

DB = "telemetry"
MONITORING = os.path.join(relaytest.SOURCE_DIR, "docs", "monitoring")
RULES = os.path.join(MONITORING, "relayd.rules.yml")
RULE_TESTS = os.path.join(MONITORING, "relayd.rules.test.yml")
DASHBOARD = os.path.join(MONITORING, "grafana-dashboard.json")
MONITORING_DOC = os.path.join(relaytest.SOURCE_DIR, "docs", "monitoring.md")
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")

HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
# Functions over a range of a counter, and over a range of a gauge.
COUNTER_FUNCS = ("rate", "irate", "increase", "resets")
GAUGE_FUNCS = ("deriv", "delta", "idelta", "predict_linear", "changes",
               "avg_over_time", "max_over_time", "min_over_time")


# ---- what the rules, the dashboard and the docs name ----------------------

def rule_exprs(path=RULES):
    """[(alert or record name, expr)] of a rules file, read without a YAML
    library: an expr is on its line, or a block scalar (>-, |...) made of
    the lines indented deeper than its key."""
    out = []
    name = None
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        m = re.match(r"^\s*-?\s*(alert|record):\s*(\S+)", line)
        if m:
            name = m.group(2)
        m = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if m:
            indent, rest = len(m.group(1)), m.group(2).strip()
            if rest[:1] in (">", "|"):
                body = []
                i += 1
                while i < len(lines) and (not lines[i].strip() or
                                          len(lines[i]) - len(lines[i].lstrip()) > indent):
                    body.append(lines[i].strip())
                    i += 1
                out.append((name, " ".join(b for b in body if b)))
                continue
            if rest[:1] in ("'", '"'):
                rest = rest[1:-1]
            out.append((name, rest))
        i += 1
    return out


def dashboard_exprs(path=DASHBOARD):
    """[(panel title, expr)]: every target's expr, in rows too, and the
    queries of the template variables."""
    with open(path, encoding="utf-8") as f:
        dash = json.load(f)
    out = []

    def walk(panels):
        for p in panels:
            for t in p.get("targets", []):
                if t.get("expr"):
                    out.append((p.get("title", "?"), t["expr"]))
            walk(p.get("panels", []))

    walk(dash.get("panels", []))
    for v in dash.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and q:
            out.append(("variable $" + v["name"], q))
    return out


def dashboard_doc(path=DASHBOARD):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_NAME = re.compile(r"(?<![A-Za-z0-9_:$])((?:relayd|process)_[A-Za-z0-9_]+)")


def promql_names(expr):
    """The relayd_ and process_ metric names an expression reads (string
    literals, e.g. label values, left out)."""
    return set(_NAME.findall(_STRING.sub('""', expr)))


def promql_calls(expr, funcs):
    """Names given straight to one of funcs: rate(NAME...)."""
    rx = re.compile(r"\b(%s)\s*\(\s*((?:relayd|process)_[A-Za-z0-9_]+)" % "|".join(funcs))
    return {(m.group(1), m.group(2)) for m in rx.finditer(_STRING.sub('""', expr))}


def family(name, types):
    """The metric family a sample name belongs to: itself, or a histogram's
    for NAME_bucket, NAME_sum, NAME_count. None when types has neither."""
    if name in types:
        return name
    for suf in HISTOGRAM_SUFFIXES:
        if name.endswith(suf) and types.get(name[:-len(suf)]) == "histogram":
            return name[:-len(suf)]
    return None


def documented_metrics(path=MONITORING_DOC):
    """{name: type} from the tables of docs/monitoring.md: rows whose first
    cell is a `relayd_...` or `process_...` name and whose second its type."""
    out = {}
    with open(path, encoding="utf-8") as f:
        lines = f.read().splitlines()
    for line in lines:
        m = re.match(r"^\|\s*`((?:relayd|process)_[a-z0-9_]+)`\s*\|\s*(\w+)\s*\|", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def exposition_types(text):
    """{name: type} of the # TYPE lines of Prometheus's text format."""
    out = {}
    for line in text.splitlines():
        m = re.match(r"^# TYPE (\S+) (\S+)\s*$", line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def used_metrics():
    """[(where, expr)] of every expression of the rules and the dashboard."""
    return ([("rule " + n, e) for n, e in rule_exprs()] +
            [("dashboard panel %r" % t, e) for t, e in dashboard_exprs()])


def check_names(testcase, types, what):
    """Every name an expression reads belongs to a family of types, and is
    used as its type allows."""
    unknown, misused = [], []
    for where, expr in used_metrics():
        for name in sorted(promql_names(expr)):
            if family(name, types) is None and "%s: %s" % (where, name) not in unknown:
                unknown.append("%s: %s" % (where, name))
        for func, name in sorted(promql_calls(expr, COUNTER_FUNCS)):
            fam = family(name, types)
            if fam and not (types[fam] == "counter" or
                            (types[fam] == "histogram" and name != fam)):
                misused.append("%s: %s() of %s, a %s" % (where, func, name, types[fam]))
        for func, name in sorted(promql_calls(expr, GAUGE_FUNCS)):
            fam = family(name, types)
            if fam and types[fam] != "gauge":
                misused.append("%s: %s() of %s, a %s" % (where, func, name, types[fam]))
    testcase.assertEqual(unknown, [], "metrics used but not in %s" % what)
    testcase.assertEqual(misused, [], "metrics used against their type (%s)" % what)


# ---- promtool and Prometheus -----------------------------------------------

def promtool(*args, stdin=None, cwd=None):
    return subprocess.run([PROMTOOL] + list(args), input=stdin, capture_output=True, text=True,
                          timeout=60, cwd=cwd)


class Prometheus:
    """A private Prometheus (/usr/bin/prometheus) on a loopback port,
    scraping targets every second with rules loaded; stopped by its pid."""

    def __init__(self, guard):
        self.proc = None
        self.port = None
        self.log_path = None
        guard(self.cleanup)

    def start(self, tmpdir, job, targets, rule_files=(), timeout=20.0):
        if PROMETHEUS is None:
            raise unittest.SkipTest("prometheus not found on PATH")
        d = os.path.join(tmpdir, "prometheus")
        os.makedirs(os.path.join(d, "tsdb"))
        self.port = relaytest.free_port()
        config = os.path.join(d, "prometheus.yml")
        cfg = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s",
                       "evaluation_interval": "1s"},
            "rule_files": list(rule_files),
            "scrape_configs": [{"job_name": job,
                                "static_configs": [{"targets": list(targets)}]}],
        }
        with open(config, "w") as f:
            f.write("\n".join(relaytest.to_yaml(cfg)) + "\n")
        self.log_path = os.path.join(d, "prometheus.log")
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                [PROMETHEUS, "--config.file=" + config,
                 "--storage.tsdb.path=" + os.path.join(d, "tsdb"),
                 "--web.listen-address=%s:%d" % (relaytest.LOOPBACK, self.port),
                 "--log.level=warn"],
                stdin=subprocess.DEVNULL, stdout=logf, stderr=logf, cwd=d)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("prometheus exited with %s; log:\n%s"
                                     % (self.proc.returncode, self.log()))
            try:
                status, _, _ = relaytest.http_request(self.port, "GET", "/-/ready", timeout=1.0)
            except OSError:
                return False
            return status == 200

        relaytest.wait_until(ready, timeout, 0.1, what="prometheus ready",
                             detail=lambda: "log:\n" + self.log())

    def log(self):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""

    def api(self, path, **params):
        """GET /api/v1/PATH?params: its "data" (AssertionError unless
        status success)."""
        status, _, body = relaytest.http_request(
            self.port, "GET", "/api/v1/%s?%s" % (path, urllib.parse.urlencode(params)))
        try:
            doc = json.loads(body.decode("utf-8"))
        except ValueError:
            raise AssertionError("prometheus /api/v1/%s %r: %d %r" % (path, params, status, body))
        if status != 200 or doc.get("status") != "success":
            raise AssertionError("prometheus /api/v1/%s %r: %d %r" % (path, params, status, doc))
        return doc["data"]

    def query(self, q):
        """Instant query: [(labels, value float)]."""
        data = self.api("query", query=q)
        if data["resultType"] != "vector":
            return data["result"]
        return [(s["metric"], float(s["value"][1])) for s in data["result"]]

    def query_range(self, q, start, end, step=1):
        """[(labels, [(t, value)])]."""
        data = self.api("query_range", query=q, start="%.3f" % start, end="%.3f" % end,
                        step=str(step))
        return [(s["metric"], [(float(t), float(v)) for t, v in s["values"]])
                for s in data["result"]]

    def cleanup(self):
        if self.proc is not None:
            relaytest.stop_process(self.proc, grace=10)
            if relaytest.VERBOSE:
                relaytest._log("prometheus log:\n" + self.log())
            self.proc = None


def substitute_variables(expr):
    """A dashboard expression as Grafana sends it: every variable matches
    everything, $__rate_interval is 4 scrape intervals."""
    for var, val in (("$__rate_interval", "4s"), ("$__interval", "1s"), ("${instance}", ".*"),
                     ("$instance", ".*"), ("${backend}", ".*"), ("$backend", ".*")):
        expr = expr.replace(var, val)
    return expr


# ---- a. the rules themselves ----------------------------------------------

@unittest.skipIf(PROMTOOL is None, "promtool not found on PATH")
class RulesTest(unittest.TestCase):
    def test_a_promtool_check_rules(self):
        cp = promtool("check", "rules", RULES)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        m = re.search(r"SUCCESS: (\d+) rules found", cp.stdout)
        self.assertTrue(m, cp.stdout)
        exprs = rule_exprs()
        # The reader of this file found every rule promtool found.
        self.assertEqual(len(exprs), int(m.group(1)), exprs)
        for name, expr in exprs:
            self.assertTrue(name and expr, (name, expr))
        with open(RULES, encoding="utf-8") as f:
            text = f.read()
        alerts = re.findall(r"^\s*- alert:\s*(\S+)", text, re.M)
        self.assertEqual(len(alerts), len(exprs))
        self.assertIn("relayd", re.findall(r"^\s*- name:\s*(\S+)", text, re.M))
        # Each alert has a for:, a severity (page or ticket), a summary and
        # a description; those whose series keep the backend label name it.
        blocks = re.split(r"^\s*- alert:", text, flags=re.M)[1:]
        for (alert, expr), block in zip(exprs, blocks):
            self.assertRegex(block, r"\n\s+for: \d+[smh]\n", alert)
            self.assertRegex(block, r"\n\s+severity: (page|ticket)\n", alert)
            self.assertRegex(block, r"\n\s+summary: ", alert)
            self.assertRegex(block, r"\n\s+description: ", alert)
            if "relayd_backend_" in expr and "by (job, instance)" not in expr:
                self.assertIn("{{ $labels.backend }}", block, alert)

    def test_a_promtool_unit_tests(self):
        cp = promtool("test", "rules", os.path.basename(RULE_TESTS), cwd=MONITORING)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("SUCCESS", cp.stdout)
        # Every alert has a test that expects it to fire.
        with open(RULE_TESTS, encoding="utf-8") as f:
            tests = f.read()
        tested = set(re.findall(r"alertname:\s*(\S+)\s*\n\s*exp_alerts:\s*\n\s*- exp_labels",
                                tests))
        alerts = {n for n, _ in rule_exprs()}
        self.assertEqual(sorted(alerts - tested), [], "alerts no test sees firing")

    def test_b_names_are_documented(self):
        """Every metric of the rules and the dashboard is in the tables of
        docs/monitoring.md, with the type its use needs."""
        documented = documented_metrics()
        self.assertGreater(len(documented), 50, "docs/monitoring.md's tables not found")
        self.assertTrue(set(documented.values()) <= {"gauge", "counter", "histogram"},
                        documented)
        check_names(self, documented, "docs/monitoring.md")
        # The dashboard has the panels and the variable it promises.
        dash = dashboard_doc()
        self.assertGreaterEqual(dash.get("schemaVersion", 0), 36)
        variables = {v["name"]: v for v in dash["templating"]["list"]}
        self.assertIn("backend", variables)
        self.assertIn("label_values(relayd_backend_pending_bytes", json.dumps(variables["backend"]))
        exprs = " ".join(e for _, e in dashboard_exprs())
        for needed in ("relayd_backend_pending_bytes", "relayd_backend_pending_points",
                       "relayd_backend_oldest_pending_age_seconds", "relayd_backend_max_bytes",
                       "relayd_backend_state", "relayd_points_accepted_total",
                       "relayd_backend_delivered_points_total",
                       "relayd_backend_delivery_latency_seconds_bucket",
                       "relayd_ingest_commit_duration_seconds_bucket",
                       "relayd_write_requests_refused_total",
                       "relayd_backend_dead_letter_batches",
                       "relayd_store_filesystem_free_bytes", "relayd_http_requests_total",
                       "relayd_query_requests_total", "relayd_query_duration_seconds_bucket"):
            self.assertIn(needed, exprs, "the dashboard has no panel of %s" % needed)
        ids = []

        def walk(panels):
            for p in panels:
                ids.append(p["id"])
                self.assertIn("gridPos", p, p.get("title"))
                walk(p.get("panels", []))

        walk(dash["panels"])
        self.assertEqual(len(ids), len(set(ids)), "panel ids repeat")


# ---- b, c: a live relayd's /metrics ----------------------------------------

def metrics_text(r):
    status, headers, body = r.get("/metrics")
    if status != 200:
        raise AssertionError("GET /metrics answered %d %r" % (status, body[:200]))
    ctype = headers.get("Content-Type", "")
    if not ctype.startswith("text/plain"):
        raise AssertionError("GET /metrics Content-Type %r" % ctype)
    return body.decode("utf-8")


class LiveMetricsTest(unittest.TestCase):
    """One relayd with an influxd behind it and a UDP listener, after some
    traffic of every kind, so that every family has samples."""

    maxDiff = None

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.write_config(cls.tmp)
        cls.influxd.start()
        cls.influxd.create_db(DB)
        cls.udp_port = relaytest.free_udp_port()
        cls.relayd = r = relaytest.Relayd(cls.addClassCleanup)
        r.write_config(cls.tmp, backends=[{"name": "b1", "url": cls.influxd.url,
                                           "retry_min": "100ms", "retry_max": "1s"}],
                       extra_yaml={"listen": {"udp": [{
                           "address": "%s:%d" % (relaytest.LOOPBACK, cls.udp_port), "db": DB}]}})
        r.start()
        r.wait_ready()
        for i in range(20):
            status, _, body = r.write(DB, "mon,src=http,i=%d value=%di\n" % (i, i))
            if status != 204:
                raise AssertionError("write %d: %d %r" % (i, status, body))
        status, _, _ = r.write(DB, "not line protocol\n")  # a refusal (bad_request)
        if status != 400:
            raise AssertionError("a bad line was answered %d, not 400" % status)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for i in range(5):
                s.sendto(b"mon,src=udp,i=%d value=%di\n" % (i, i), (relaytest.LOOPBACK,
                                                                     cls.udp_port))
        finally:
            s.close()
        cls.influxd.wait_count(DB, "mon", "value", 25, timeout=20)
        r.wait_status("b1", timeout=20, pending_batches=0)
        q = urllib.parse.urlencode({"db": DB, "q": 'SELECT count("value") FROM "mon"'})
        status, _, body = r.get("/query?" + q)
        if status != 200:
            raise AssertionError("query through relayd: %d %r" % (status, body))
        r.get("/health")
        r.get("/ping")
        metrics_text(r)  # once, so that the endpoint metrics has a count
        cls.text = metrics_text(r)

    def test_b_names_are_exported(self):
        """Every metric of the rules and the dashboard is in the # TYPE
        lines of a live relayd, and relayd exports exactly the metrics
        docs/monitoring.md documents, with the same types."""
        exported = exposition_types(self.text)
        self.assertIn("relayd_backend_pending_bytes", exported, self.text[:2000])
        check_names(self, exported, "relayd's GET /metrics")
        documented = documented_metrics()
        self.assertEqual(sorted(set(documented) - set(exported)), [],
                         "documented in docs/monitoring.md, not exported")
        self.assertEqual(sorted(set(exported) - set(documented)), [],
                         "exported, not documented in docs/monitoring.md")
        self.assertEqual({n: t for n, t in exported.items() if documented.get(n) != t}, {},
                         "exported with another type than docs/monitoring.md says")
        # Histograms have observations after the traffic.
        for h in ("relayd_backend_delivery_latency_seconds", "relayd_ingest_commit_duration_seconds",
                  "relayd_query_duration_seconds"):
            counts = [float(v) for v in re.findall(r"^%s_count(?:\{[^}]*\})? (\S+)$" % h,
                                                    self.text, re.M)]
            self.assertTrue(counts and max(counts) > 0, "%s has no observation" % h)

    @unittest.skipIf(PROMTOOL is None, "promtool not found on PATH")
    def test_c_promtool_check_metrics(self):
        cp = promtool("check", "metrics", stdin=self.text)
        self.assertEqual((cp.returncode, cp.stdout + cp.stderr), (0, ""),
                         "promtool check metrics on relayd's /metrics")


# ---- d. a real Prometheus during an outage ---------------------------------

class PrometheusOutageTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def test_d_prometheus_sees_the_backlog_rise_and_drain(self):
        if PROMETHEUS is None:
            self.skipTest("prometheus not found on PATH")
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        influxd.create_db(DB)
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[{"name": "b1", "url": influxd.url,
                                            "retry_min": "100ms", "retry_max": "1s"}])
        r.start()
        r.wait_ready()
        prom = Prometheus(self.addCleanup)
        prom.start(self.tmp, "relayd", ["%s:%d" % (relaytest.LOOPBACK, r.port)],
                   rule_files=[RULES])
        relaytest.wait_until(lambda: [v for _, v in prom.query('up{job="relayd"}') if v == 1],
                             15, 0.2, what="prometheus scraping relayd",
                             detail=lambda: "targets %r; log:\n%s"
                             % (prom.api("targets"), prom.log()))
        t0 = time.time() - 1
        sent = [0]

        def write_for(seconds):
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                status, _, body = r.write(DB, "outage,n=%d value=%di\n" % (sent[0], sent[0]))
                self.assertEqual(status, 204, body)
                sent[0] += 1
                time.sleep(0.1)

        write_for(2)
        self.assertEqual(influxd.stop(), 0, "influxd did not stop cleanly")
        write_for(6)
        influxd.start()
        write_for(1)
        influxd.wait_count(DB, "outage", "value", sent[0], timeout=20)
        r.wait_status("b1", timeout=20, pending_batches=0, pending_points=0)
        relaytest.wait_until(
            lambda: [v for _, v in prom.query('relayd_backend_pending_points{backend="b1"}')
                     if v == 0], 10, 0.2, what="prometheus scraping the drained queue")
        t1 = time.time() + 1

        series = prom.query_range('relayd_backend_pending_points{backend="b1"}', t0, t1)
        self.assertEqual(len(series), 1, series)
        labels, values = series[0]
        self.assertEqual((labels.get("job"), labels.get("backend")), ("relayd", "b1"), labels)
        v = [x for _, x in values]
        peak = v.index(max(v))
        rises = sum(1 for a, b in zip(v[:peak], v[1:peak + 1]) if b > a)
        self.assertGreater(max(v), 0, "the backlog never showed: %r" % v)
        self.assertGreaterEqual(rises, 3, "the backlog did not grow over several samples: %r" % v)
        self.assertIn(0.0, v[peak:], "the backlog did not fall back to 0: %r" % v)
        self.assertEqual(v[-1], 0.0, v)

        down = prom.query_range('relayd_backend_state{backend="b1", state="down"}', t0, t1)
        self.assertEqual(len(down), 1, down)
        self.assertIn(1.0, [x for _, x in down[0][1]], "b1 never showed as down: %r" % down)
        up = prom.query_range('relayd_backend_state{backend="b1", state="up"}', t0, t1)
        self.assertEqual(up[0][1][-1][1], 1.0, "b1 is not up at the end: %r" % up)
        # The rule saw it with the labels a real scrape carries.
        pending = prom.query_range('ALERTS{alertname="RelaydBackendDown", backend="b1"}', t0, t1)
        self.assertTrue(pending, "RelaydBackendDown never went pending during the outage")

        # Every rule evaluated without error on real series.
        groups = prom.api("rules")["groups"]
        rules = [rule for g in groups for rule in g["rules"]]
        self.assertEqual(len(rules), len(rule_exprs()), [r_["name"] for r_ in rules])
        bad = [(r_["name"], r_.get("health"), r_.get("lastError")) for r_ in rules
               if r_.get("health") != "ok"]
        self.assertEqual(bad, [], "rules that failed to evaluate")
        # Every dashboard query runs (variables matching everything).
        failed = []
        for title, expr in dashboard_exprs():
            q = substitute_variables(expr)
            if q.startswith("label_values("):
                m = re.match(r"label_values\((.*),\s*(\w+)\)$", q)
                q = m.group(1) if m else q
            try:
                prom.query(q)
            except AssertionError as e:
                failed.append("%s: %s" % (title, e))
        self.assertEqual(failed, [], "dashboard queries Prometheus refused")
        # The delivery latency quantile has a value for b1 (the outage's tail).
        lat = prom.query('histogram_quantile(0.99, sum by (backend, le) '
                         '(rate(relayd_backend_delivery_latency_seconds_bucket{backend="b1"}[1m])))')
        self.assertTrue(lat and lat[0][1] > 0, lat)


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "promtool"))
