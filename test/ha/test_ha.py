#!/usr/bin/env python3
"""
High availability as docs/high-availability.md describes it, on loopback:
haproxy (docs/high-availability/haproxy.cfg, the shipped file, addresses
given in its environment) in front of two relayd and two real influxd.

Writers post unique points through haproxy the whole time (each point its
own timestamp in its writer's series; every 204 is counted), a querier
asks through haproxy and notes which server answered (the
X-Influxdb-Server header the configuration adds). Phases:

 1. influxd B stopped for a while, then started: during B's catch-up no
    query reaches B (its own httpd queryReq stays 0 until every relay
    says B is caught up, and no answer comes from B), then B answers
    queries again.
 2. relay1 killed (SIGKILL) under load, restarted later: writers see no
    error (haproxy sends the write again to relay2); while relay1 is down
    no server is vouched for, so queries get 503 (the consistent default).
 3. both: influxd B stopped, relay1 killed and restarted, B started.
 4. relayctl drain on relay1: haproxy takes it out of the write pool, it
    delivers its queues, drain --stop stops it; restarted, it rejoins.

At the end every acknowledged point is in both servers, and both hold
exactly the same points (per measurement and per series). The figures
are printed as HA {...} (JSON).

RELAYTEST_HA_LONG=1: the long form (longer outages, more rounds).
Exit 77 without haproxy or influxd.
"""

import http.client
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import relaytest  # noqa: E402
from relaytest import LOOPBACK, Influxd, Relayd, free_port, make_tmpdir, stop_process  # noqa: E402

HAPROXY = shutil.which("haproxy") or (os.path.exists("/usr/sbin/haproxy") and "/usr/sbin/haproxy")
CONFIG = os.path.join(relaytest.SOURCE_DIR, "docs", "high-availability", "haproxy.cfg")
LONG = os.environ.get("RELAYTEST_HA_LONG") == "1"
DB = "ha"
WRITERS = 4
POINTS_PER_WRITE = 20
WRITE_PAUSE = 0.02      # per writer; measured: about 110 writes, 2300 points/s in all

# Durations (seconds): short form for ctest, long form by hand.
if LONG:
    OUTAGE, RELAY_DOWN, SETTLE, ROUNDS = 60, 30, 10, 3
else:
    OUTAGE, RELAY_DOWN, SETTLE, ROUNDS = 10, 6, 4, 1


def log(msg):
    sys.stderr.write("# %s\n" % msg)
    sys.stderr.flush()


class Haproxy:
    """haproxy -db (foreground) on the shipped configuration."""

    def __init__(self, guard, tmpdir, env):
        self.port = int(env["HA_BIND"].rsplit(":", 1)[1])
        self.sock = env["HA_STATS_SOCKET"]
        self.log_path = os.path.join(tmpdir, "haproxy.log")
        full = dict(os.environ)
        full.update(env)
        self.env = full
        cp = subprocess.run([HAPROXY, "-c", "-f", CONFIG], env=full, capture_output=True, text=True)
        if cp.returncode != 0:
            raise AssertionError("haproxy -c -f %s: %s%s" % (CONFIG, cp.stdout, cp.stderr))
        with open(self.log_path, "ab") as f:
            self.proc = subprocess.Popen([HAPROXY, "-db", "-f", CONFIG], env=full, cwd=tmpdir,
                                         stdin=subprocess.DEVNULL, stdout=f, stderr=f)
        guard(self.cleanup)
        relaytest.wait_until(lambda: relaytest.port_is_listening(self.port), 10,
                             what="haproxy listening on %d" % self.port,
                             detail=lambda: relaytest._read_text(self.log_path))

    def cleanup(self):
        stop_process(self.proc, grace=5)

    def stat(self):
        """show stat: {(proxy, server): row dict}."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        s.connect(self.sock)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        lines = data.decode().splitlines()
        cols = lines[0].lstrip("# ").split(",")
        out = {}
        for line in lines[1:]:
            if not line:
                continue
            row = dict(zip(cols, line.split(",")))
            out[(row["pxname"], row["svname"])] = row
        return out

    def server_status(self, proxy, server):
        return self.stat()[(proxy, server)]["status"]


class Load:
    """Writers and a querier through haproxy, with a ledger."""

    def __init__(self, port):
        self.port = port
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.phase = "start"
        self.acked = {}          # (measurement, writer) -> set of seq
        self.sent_points = 0
        self.writes = 0
        self.write_codes = {}    # phase -> {status or error: n}
        self.queries = {}        # phase -> {server or status: n}
        self.query_log = []      # (time, server or status)
        self.base = (int(time.time()) - 3600) * 10**9
        self.threads = [threading.Thread(target=self.writer, args=(w,), daemon=True)
                        for w in range(WRITERS)]
        self.threads.append(threading.Thread(target=self.querier, daemon=True))

    def start(self):
        for t in self.threads:
            t.start()

    def finish(self):
        self.stop.set()
        for t in self.threads:
            t.join(30)

    def _count(self, table, key):
        d = table.setdefault(self.phase, {})
        d[key] = d.get(key, 0) + 1

    def writer(self, w):
        meas = "m%d" % (w % 2)
        seq = 0
        conn = None
        while not self.stop.is_set():
            phase = self.phase
            lines = []
            seqs = []
            for _ in range(POINTS_PER_WRITE):
                seq += 1
                seqs.append(seq)
                lines.append("%s,writer=w%d v=%di %d" % (meas, w, seq, self.base + seq * 1000))
            body = "\n".join(lines).encode()
            code = None
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=30)
                conn.request("POST", "/write?db=" + DB, body=body)
                resp = conn.getresponse()
                resp.read()
                code = resp.status
                if resp.getheader("Connection", "").lower() == "close":
                    conn.close()
                    conn = None
            except (OSError, http.client.HTTPException) as e:
                code = "error: %s" % type(e).__name__
                if conn is not None:
                    conn.close()
                conn = None
            with self.lock:
                self.writes += 1
                self.sent_points += len(seqs)
                self._count(self.write_codes, code)
                if code == 204:
                    self.acked.setdefault((meas, "w%d" % w), set()).update(seqs)
            self.stop.wait(WRITE_PAUSE)
        if conn is not None:
            conn.close()

    def querier(self):
        q = urllib.parse.urlencode({"db": DB, "q": 'SELECT count("v") FROM "m0"'})
        while not self.stop.is_set():
            what = None
            conn = http.client.HTTPConnection(LOOPBACK, self.port, timeout=10)
            try:
                conn.request("GET", "/query?" + q)
                resp = conn.getresponse()
                resp.read()
                if resp.status == 200:
                    what = resp.getheader("X-Influxdb-Server") or "unknown"
                else:
                    what = resp.status
            except (OSError, http.client.HTTPException) as e:
                what = "error: %s" % type(e).__name__
            finally:
                conn.close()
            with self.lock:
                self._count(self.queries, what)
                self.query_log.append((time.monotonic(), what))
            self.stop.wait(0.05)

    def set_phase(self, name):
        with self.lock:
            self.phase = name

    def acked_points(self):
        with self.lock:
            return sum(len(s) for s in self.acked.values())


def query_req(influxd):
    """httpd queryReq of influxd's /debug/vars (reset when it restarts)."""
    status, _, body = influxd.request("GET", "/debug/vars", timeout=5)
    if status != 200:
        raise AssertionError("/debug/vars: %d" % status)
    doc = json.loads(body.decode("utf-8"))
    return sum(int(v.get("values", {}).get("queryReq", 0))
               for k, v in doc.items() if k.startswith("httpd"))


def caught_up(relay, backend):
    """Whether relay answers 200 to /health/backends/BACKEND (False when it
    does not answer)."""
    try:
        status, _, _ = relaytest.http_request(relay.port, "GET", "/health/backends/" + backend,
                                              timeout=2)
        return status == 200
    except (OSError, http.client.HTTPException):
        return False


class DocTest(unittest.TestCase):

    def test_doc_shows_the_tested_file(self):
        """docs/high-availability.md shows haproxy.cfg as it is."""
        with open(CONFIG) as f:
            cfg = f.read()
        with open(os.path.join(relaytest.SOURCE_DIR, "docs", "high-availability.md")) as f:
            doc = f.read()
        self.assertIn("```haproxy\n" + cfg + "```\n", doc,
                      "docs/high-availability.md does not show %s as it is" % CONFIG)


class HighAvailabilityTest(unittest.TestCase):

    def setUp(self):
        self.tmp = make_tmpdir(self.addCleanup, prefix="relaytest-ha-")
        self.a = Influxd(self.addCleanup)
        self.a.write_config(self.tmp, subdir="influx_a")
        self.b = Influxd(self.addCleanup)
        self.b.write_config(self.tmp, subdir="influx_b")
        for s in (self.a, self.b):
            s.start()
            s.create_db(DB)
        self.relays = []
        for n in (1, 2):
            r = Relayd(self.addCleanup, name="relay%d" % n)
            r.write_config(self.tmp, [("influx_a", self.a.url), ("influx_b", self.b.url)],
                           data_dir=os.path.join(self.tmp, "relay%d-data" % n))
            r.start()
            r.wait_ready()
            self.relays.append(r)
        self.r1, self.r2 = self.relays
        env = {
            "HA_BIND": "%s:%d" % (LOOPBACK, free_port()),
            "HA_STATS_SOCKET": os.path.join(self.tmp, "haproxy.sock"),
            "RELAY1_ADDR": LOOPBACK, "RELAY1_PORT": str(self.r1.port),
            "RELAY2_ADDR": LOOPBACK, "RELAY2_PORT": str(self.r2.port),
            "INFLUX_A_ADDR": LOOPBACK, "INFLUX_A_PORT": str(self.a.port),
            "INFLUX_B_ADDR": LOOPBACK, "INFLUX_B_PORT": str(self.b.port),
        }
        self.ha = Haproxy(self.addCleanup, self.tmp, env)
        self.figures = {"long": LONG, "phases": {}}

    # ---- helpers ----------------------------------------------------------

    def wait_servers(self, want, timeout=60):
        """Wait until haproxy shows influx_a and influx_b with these states
        (UP or DOWN, in the query pool)."""
        def check():
            st = self.ha.stat()
            return all(st[("influxdb_queries", s)]["status"].startswith(v)
                       for s, v in want.items())
        relaytest.wait_until(check, timeout, 0.1, what="haproxy query pool %r" % want,
                             detail=lambda: {k: v["status"] for k, v in self.ha.stat().items()
                                             if k[0] == "influxdb_queries"})

    def wait_relays_up(self, timeout=30):
        def check():
            st = self.ha.stat()
            return all(st[("relayd_writes", s)]["status"].startswith("UP")
                       for s in ("relay1", "relay2"))
        relaytest.wait_until(check, timeout, 0.1, what="both relays UP in haproxy")

    def catch_up(self, server, backend, started, timeout=90):
        """After server (influxd) started at `started`: poll its queryReq,
        then every relay's verdict, until both relays say caught up.
        Returns (seconds to catch up, queries B served while behind)."""
        served_while_behind = 0
        deadline = time.monotonic() + timeout
        while True:
            try:
                q = query_req(server)
            except (OSError, http.client.HTTPException):
                q = 0
            verdicts = [caught_up(r, backend) for r in self.relays]
            if all(verdicts):
                return time.monotonic() - started, served_while_behind
            served_while_behind = max(served_while_behind, q)
            if time.monotonic() > deadline:
                raise AssertionError("%s not caught up on every relay within %d s: %r; %r"
                                     % (backend, timeout, verdicts,
                                        [r.backend_status(backend) for r in self.relays]))
            time.sleep(0.1)

    def queries_between(self, t0, t1):
        out = {}
        with self.load.lock:
            for t, what in self.load.query_log:
                if t0 <= t < t1:
                    out[str(what)] = out.get(str(what), 0) + 1
        return out

    def phase_outage(self, name, kill_relay):
        """influxd B down for OUTAGE s (and relay1 killed and restarted
        inside it when kill_relay); then B started and caught up."""
        L = self.load
        L.set_phase(name)
        fig = {}
        t0 = time.monotonic()
        self.b.stop()
        t_down = time.monotonic()
        self.wait_servers({"influx_a": "UP", "influx_b": "DOWN"}, timeout=10)
        fig["b_out_of_pool_s"] = round(time.monotonic() - t_down, 2)
        if kill_relay:
            time.sleep(OUTAGE / 3)
            self.r1.kill9()
            time.sleep(RELAY_DOWN)
            self.r1.restart()
            time.sleep(max(0, OUTAGE - (time.monotonic() - t_down)))
        else:
            time.sleep(OUTAGE)
        fig["b_down_s"] = round(time.monotonic() - t_down, 1)
        fig["backlog_points"] = [r.backend_status("influx_b").get("pending_points")
                                 for r in self.relays]
        t_start = time.monotonic()
        self.b.start()
        secs, served = self.catch_up(self.b, "influx_b", t_start)
        t_caught = time.monotonic()
        fig["catch_up_s"] = round(secs, 2)
        fig["b_queries_while_behind"] = served
        self.assertEqual(served, 0, "influxd B served queries before every relay said it "
                         "was caught up")
        during = self.queries_between(t_start, t_caught)
        self.assertNotIn("influx_b", during, "a query was answered by B during its catch-up")
        self.wait_servers({"influx_a": "UP", "influx_b": "UP"}, timeout=15)
        fig["b_back_in_pool_after_caught_up_s"] = round(time.monotonic() - t_caught, 2)
        t_back = time.monotonic()
        relaytest.wait_until(lambda: self.queries_between(t_back, time.monotonic() + 1)
                             .get("influx_b", 0) > 0, 15, 0.2,
                             what="a query answered by B after its catch-up")
        time.sleep(SETTLE)
        fig["queries"] = {"outage": self.queries_between(t0, t_start),
                          "catch_up": during,
                          "after": self.queries_between(t_caught, time.monotonic())}
        fig["b_query_req_after"] = query_req(self.b)
        self.figures["phases"][name] = fig
        log("%s: %s" % (name, json.dumps(fig)))

    def phase_relay_kill(self, name):
        L = self.load
        L.set_phase(name)
        fig = {}
        t0 = time.monotonic()
        self.r1.kill9()
        t_kill = time.monotonic()
        time.sleep(RELAY_DOWN)
        fig["relay1_down_s"] = round(time.monotonic() - t_kill, 1)
        self.r1.restart()
        t_back = time.monotonic()
        self.wait_relays_up()
        self.wait_servers({"influx_a": "UP", "influx_b": "UP"}, timeout=30)
        fig["queries_back_after_restart_s"] = round(time.monotonic() - t_back, 2)
        time.sleep(SETTLE)
        fig["queries"] = {"relay1_down": self.queries_between(t_kill, t_back),
                          "after": self.queries_between(t_back, time.monotonic())}
        # The consistent default: once the checks have seen relay1 gone
        # (0.5 s apart), no server is vouched for and queries get 503.
        late = self.queries_between(t_kill + 2, t_back)
        self.assertFalse({k for k in late if k.startswith("influx_")},
                         "queries answered while relay1 was down: %r" % late)
        self.assertGreater(late.get("503", 0), 0, "no query tried while relay1 was down")
        self.figures["phases"][name] = fig
        log("%s: %s" % (name, json.dumps(fig)))

    def phase_drain(self, name):
        """relayctl drain on relay1 under load: haproxy's /health check
        takes it out of the write pool, it delivers what it holds, then
        drain --stop stops it; restarted, it rejoins the pool."""
        L = self.load
        L.set_phase(name)
        fig = {}
        t0 = time.monotonic()
        cp = self.r1.relayctl("drain")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        relaytest.wait_until(lambda: not self.ha.server_status("relayd_writes", "relay1")
                             .startswith("UP"), 10, 0.1,
                             what="relay1 out of haproxy's write pool")
        fig["out_of_write_pool_s"] = round(time.monotonic() - t0, 2)
        t_out = time.monotonic()
        served = self.ha.stat()[("relayd_writes", "relay1")]
        cp = self.r1.relayctl("drain", "--stop", "--timeout", "60s", timeout=90)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        fig["drain_stop_s"] = round(time.monotonic() - t_out, 2)
        self.assertEqual(self.r1.wait_exit(15), 0, "relay1 did not exit cleanly after the drain")
        # Nothing reached relay1 once haproxy had taken it out.
        after = self.ha.stat()[("relayd_writes", "relay1")]
        fig["writes_to_relay1_after_out"] = int(after["stot"]) - int(served["stot"])
        self.assertEqual(fig["writes_to_relay1_after_out"], 0)
        t_stop = time.monotonic()
        time.sleep(RELAY_DOWN / 2)
        self.r1.restart()
        t_back = time.monotonic()
        self.wait_relays_up()
        fig["back_in_write_pool_s"] = round(time.monotonic() - t_back, 2)
        self.wait_servers({"influx_a": "UP", "influx_b": "UP"}, timeout=30)
        time.sleep(SETTLE)
        fig["queries"] = {"draining": self.queries_between(t0, t_stop),
                          "relay1_stopped": self.queries_between(t_stop, t_back),
                          "after": self.queries_between(t_back, time.monotonic())}
        fig["relayctl"] = cp.stdout.strip().splitlines()[-1:]
        self.figures["phases"][name] = fig
        log("%s: %s" % (name, json.dumps(fig)))

    # ---- the scenario -------------------------------------------------------

    def test_ha(self):
        t_begin = time.monotonic()
        self.wait_relays_up()
        # Both servers enter the query pool once every relay has delivered
        # to them (a relay says "caught up" only for a backend that is up).
        self.load = L = Load(self.ha.port)
        L.start()
        self.wait_servers({"influx_a": "UP", "influx_b": "UP"}, timeout=30)
        time.sleep(SETTLE)
        for rnd in range(1, ROUNDS + 1):
            sfx = "" if ROUNDS == 1 else " #%d" % rnd
            self.phase_outage("1 influxd B down" + sfx, kill_relay=False)
            self.phase_relay_kill("2 relay1 killed" + sfx)
            self.phase_outage("3 B down, relay1 killed" + sfx, kill_relay=True)
            self.phase_drain("4 relay1 drained and stopped" + sfx)
        L.set_phase("end")
        time.sleep(2)
        L.finish()

        # Every queue drained, then compare.
        for r in self.relays:
            for b in ("influx_a", "influx_b"):
                r.wait_status(b, timeout=60, pending_batches=0)
        acked = L.acked
        f = self.figures
        f["writes"] = L.writes
        f["points_sent"] = L.sent_points
        f["points_acknowledged"] = L.acked_points()
        f["write_answers"] = {ph: {str(k): v for k, v in d.items()}
                              for ph, d in L.write_codes.items()}
        f["queries"] = {ph: {str(k): v for k, v in d.items()} for ph, d in L.queries.items()}
        lost = 0
        per_server = {}
        for name, srv in (("influx_a", self.a), ("influx_b", self.b)):
            got = {}
            top = max(max(v) for v in acked.values()) + 1000 * POINTS_PER_WRITE
            for meas in ("m0", "m1"):
                # In slices of 50 000 seqs, so that no answer is huge.
                for lo in range(0, top, 50000):
                    q = ('SELECT "v" FROM "%s" WHERE time >= %d AND time < %d GROUP BY "writer"'
                         % (meas, L.base + lo * 1000, L.base + (lo + 50000) * 1000))
                    res = srv.query(DB, q, epoch="ns")["results"][0]
                    self.assertNotIn("error", res)
                    for s in res.get("series", []):
                        got.setdefault((meas, s["tags"]["writer"]), []).extend(
                            (int(t), int(v)) for t, v in s["values"])
            for k in got:
                got[k].sort()
            per_server[name] = got
            for key, seqs in acked.items():
                have = {v for _, v in got.get(key, [])}
                missing = seqs - have
                lost += len(missing)
                self.assertFalse(missing, "%s lacks %d acknowledged points of %r (e.g. %r)"
                                 % (name, len(missing), key, sorted(missing)[:5]))
            # each point at the time its seq names
            for key, pts in got.items():
                for t, v in pts:
                    self.assertEqual(t, L.base + v * 1000, "%s %r: point %d at the wrong time"
                                     % (name, key, v))
        f["lost"] = lost
        failed = {ph: {k: v for k, v in d.items() if k != "204"}
                  for ph, d in f["write_answers"].items()}
        f["write_failures"] = sum(sum(d.values()) for d in failed.values())
        f["series"] = {name: {"%s,writer=%s" % k: len(v) for k, v in sorted(got.items())}
                       for name, got in per_server.items()}
        self.assertEqual(per_server["influx_a"], per_server["influx_b"],
                         "the two servers do not hold the same points")
        f["points_stored_each"] = sum(len(v) for v in per_server["influx_a"].values())
        f["duration_s"] = round(time.monotonic() - t_begin, 1)
        print("HA " + json.dumps(f, sort_keys=True))
        sys.stdout.flush()
        # haproxy sends a write whose relay died again to the other one:
        # writers see no error at all.
        self.assertEqual(f["write_failures"], 0, "writers got errors: %r" % failed)


def probe():
    if not HAPROXY:
        return "haproxy not installed (apt-get install haproxy)"
    return None


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"), probe=probe)
