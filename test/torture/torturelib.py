"""
torturelib: the pieces the torture runner (torture.py) is made of.

- A ledger of every write a writer sent and what came back: 204
  (acknowledged: must be delivered), 503 (refused: must never be
  delivered), a refused connection (never sent), or unknown (the
  connection broke after the request left: relayd was killed).
- Writers: threads posting batches of unique, timestamped points (a point
  names its batch by its timestamp), and an overwriter posting increasing
  values to one series at one timestamp, one request at a time.
- Chaos: SIGKILL relayd, aimed at a commit (a thread inside fdatasync,
  pwrite or writev of data.mdb, read from /proc) or at a random moment;
  stop, start, SIGSTOP and SIGCONT a backend process.
- Checks: per batch in a real influxd (count of points), per line in the
  recording fake (fakeinflux.py), lost and duplicated lines.

It drives the processes with the integration harness (relaytest.py) and
the scripted backend (fakeinflux.py) of test/integration. Python 3
standard library only.
"""

import collections
import http.client
import itertools
import json
import os
import platform
import random
import signal
import statistics
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "integration"))

import fakeinflux  # noqa: E402
import relaytest  # noqa: E402

LOOPBACK = relaytest.LOOPBACK

# Every batch owns the 1000 ns starting at BASE_NS + id * 1000: point j of
# batch id has the timestamp BASE_NS + id * 1000 + j. A time bucket of 1 us
# (GROUP BY time(1u)) is then exactly one batch, and every point is unique
# whatever its series. BASE_NS is in the past (influxd groups by time up
# to now()) and a multiple of 1000 (buckets start at multiples of their
# length since the epoch).
BASE_NS = 1_700_000_000 * 10 ** 9
MAX_LINES = 999
DB = "torture"
MEASUREMENT = "tt"
OVERWRITE_MEASUREMENT = "ow"


def log(msg):
    sys.stderr.write("# %s\n" % msg)
    sys.stderr.flush()


def batch_lines(bid, writer, n):
    """The n lines of batch bid: 4 series per writer (so that parallel
    lanes share them out), field v = the point's own number."""
    assert 1 <= n <= MAX_LINES
    return ["%s,w=w%d,s=s%d v=%di %d" % (MEASUREMENT, writer, j % 4, bid * 1000 + j,
                                           BASE_NS + bid * 1000 + j)
            for j in range(n)]


def line_batch(line):
    """The batch id a torture line belongs to (from its timestamp), or
    None for a line that is not one."""
    if not line.startswith(MEASUREMENT + ","):
        return None
    try:
        ts = int(line.rsplit(" ", 1)[1])
    except (IndexError, ValueError):
        return None
    return (ts - BASE_NS) // 1000


# ---- the ledger ------------------------------------------------------------

ACKED, REFUSED, NOT_SENT, UNKNOWN, OTHER = "204", "503", "not-sent", "unknown", "other"


class Batch:
    __slots__ = ("id", "writer", "lines", "fate", "status", "error", "t_sent", "t_done")

    def __init__(self, bid, writer, lines):
        self.id = bid
        self.writer = writer
        self.lines = lines
        self.fate = None
        self.status = None
        self.error = None
        self.t_sent = None
        self.t_done = None


class Ledger:
    """Every batch sent, with its fate. Thread safe."""

    def __init__(self):
        self.lock = threading.Lock()
        self.batches = {}
        self._ids = itertools.count(1)

    def new(self, writer, n):
        with self.lock:
            bid = next(self._ids)
            b = Batch(bid, writer, batch_lines(bid, writer, n))
            self.batches[bid] = b
            return b

    def by_fate(self, fate):
        with self.lock:
            return [b for b in self.batches.values() if b.fate == fate]

    def all(self):
        with self.lock:
            return list(self.batches.values())

    def max_id(self):
        with self.lock:
            return max(self.batches) if self.batches else 0

    def summary(self):
        c = collections.Counter(b.fate for b in self.all())
        return {"batches": sum(c.values()), "acked": c[ACKED], "refused_503": c[REFUSED],
                "not_sent": c[NOT_SENT], "unknown": c[UNKNOWN], "other_status": c[OTHER],
                "acked_lines": sum(len(b.lines) for b in self.by_fate(ACKED))}


def post_write(port, body, timeout=15.0, db=DB):
    """POST /write?db=DB&precision=ns on a new connection: (status, body),
    or raises OSError / http.client.HTTPException. connected tells whether
    the request may have left (a refused connection means it did not)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.connect()
    except OSError as e:
        conn.close()
        raise NotSent(e)
    try:
        conn.request("POST", "/write?db=%s&precision=ns" % db, body=body.encode())
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


class NotSent(Exception):
    """The connection was refused: the request never left."""


def send_batch(port, b, timeout=15.0):
    """Post batch b and record its fate in it."""
    body = "\n".join(b.lines) + "\n"
    b.t_sent = time.monotonic()
    try:
        status, resp = post_write(port, body, timeout)
    except NotSent as e:
        b.fate, b.error = NOT_SENT, repr(e.args[0])
    except (OSError, http.client.HTTPException) as e:
        b.fate, b.error = UNKNOWN, repr(e)
    else:
        b.status = status
        b.fate = ACKED if status == 204 else REFUSED if status == 503 else OTHER
        if b.fate != ACKED:
            b.error = resp[:300].decode("utf-8", "replace")
    b.t_done = time.monotonic()
    return b


# ---- writers ---------------------------------------------------------------

class Writers:
    """n threads, each posting batches of random size (lines) with a
    random pause (seconds) between posts until stopped."""

    def __init__(self, ledger, port, n=2, lines=(1, 100), pause=(0.02, 0.1), seed=0):
        self.ledger = ledger
        self.port = port
        self.n = n
        self.lines = lines
        self.pause = pause
        self.seed = seed
        self.stop_ev = threading.Event()
        self.paused = threading.Event()
        self.threads = []
        self.errors = []

    def _run(self, w):
        rnd = random.Random(self.seed * 1000 + w)
        try:
            while not self.stop_ev.is_set():
                if self.paused.is_set():
                    time.sleep(0.01)
                    continue
                b = self.ledger.new(w, rnd.randint(*self.lines))
                send_batch(self.port, b)
                if b.fate == NOT_SENT:
                    time.sleep(0.02)  # relayd is down: do not spin
                if self.pause[1] > 0:
                    time.sleep(rnd.uniform(*self.pause))
        except Exception as e:  # a bug of the runner, not of relayd
            self.errors.append(repr(e))
            raise

    def start(self):
        for w in range(self.n):
            t = threading.Thread(target=self._run, args=(w,), daemon=True, name="writer-%d" % w)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(60)
        if self.errors:
            raise AssertionError("a writer thread failed: %s" % self.errors)


class Overwriter:
    """One series, one timestamp, increasing values: `ow,k=one v=<i>i T`,
    one request at a time. last_acked is the value of the last 204."""

    def __init__(self, port, pause=0.02):
        self.port = port
        self.pause = pause
        self.value = 0
        self.last_acked = None
        self.acked = 0
        self.stop_ev = threading.Event()
        self.thread = None

    @staticmethod
    def line(v):
        return "%s,k=one v=%di %d" % (OVERWRITE_MEASUREMENT, v, BASE_NS)

    def post_next(self):
        self.value += 1
        try:
            status, _ = post_write(self.port, self.line(self.value) + "\n")
        except (NotSent, OSError, http.client.HTTPException):
            return None
        if status == 204:
            self.last_acked = self.value
            self.acked += 1
        return status

    def _run(self):
        while not self.stop_ev.is_set():
            if self.post_next() is None:
                time.sleep(0.02)
            time.sleep(self.pause)

    def start(self):
        self.thread = threading.Thread(target=self._run, daemon=True, name="overwriter")
        self.thread.start()
        return self

    def stop(self):
        self.stop_ev.set()
        if self.thread:
            self.thread.join(60)

    def finish(self, timeout=30.0):
        """After stop(): one more write, retried until acknowledged, so
        that the last value sent is an acknowledged one."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.post_next() == 204:
                return self.last_acked
            time.sleep(0.1)
        raise AssertionError("the overwriter's last write was never acknowledged")


# ---- relayd with a wrapper ---------------------------------------------------

class TortureRelayd(relaytest.Relayd):
    """relaytest.Relayd that can run relayd under a wrapper command (fiu-run)
    with extra environment variables."""

    def __init__(self, guard=None, name="relayd", wrapper=(), env=None):
        super().__init__(guard, name)
        self.wrapper = list(wrapper)
        self.env = dict(env or {})

    def start(self, umask=None, args=()):
        if not self.wrapper and not self.env:
            return super().start(umask, args)
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("relayd pid %d is still running" % self.proc.pid)
        env = dict(os.environ)
        env.update(self.env)
        with open(self.log_path, "ab") as logf:
            logf.write(("==== start %d: %s %s -c %s\n" % (len(self.procs) + 1, " ".join(self.wrapper),
                                                          relaytest.RELAYD_BIN, self.config)).encode())
            logf.flush()
            self._log_offset = logf.tell()
            root = ["--allow-root"] if os.geteuid() == 0 else []
            # fiu-run execs relayd: the child's pid is relayd's.
            proc = subprocess.Popen(self.wrapper + [relaytest.RELAYD_BIN, "-c", self.config] + root + list(args),
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    cwd=self.tmpdir, env=env)
        self.procs.append(proc)
        self.proc = proc
        return proc


def prime_influxd(influxd):
    """The torture database and its one shard (every torture point falls
    in the same hour), made before relayd's parallel lanes write: influxd
    1.6.7 can hide a point of concurrent writes that create a shard
    (docs/influxdb.md, "Concurrent writes into a new shard")."""
    influxd.prime_shards(DB, BASE_NS // 10 ** 9, BASE_NS // 10 ** 9)


def relayd_config(relayd, tmpdir, backends, data_dir=None, extra=None):
    """Backends that retry fast (the runs are short) and time out soon,
    with relayd's default four parallel lanes, said here because the
    harness would give a real influxd one (relaytest._INFLUXD_PORTS)."""
    bl = []
    for name, url in backends:
        bl.append({"name": name, "url": url, "timeout": "2s", "connect_timeout": "1s",
                   "retry_min": "50ms", "retry_max": "1s", "parallel": 4})
    cfg = {"queue": {"retry_after": "1s"}}
    if extra:
        relaytest._deep_merge(cfg, extra)
    relayd.write_config(tmpdir, backends=bl, data_dir=data_dir, extra_yaml=cfg)


def wait_drained(relayd, names, timeout):
    """Poll status --json until every backend in names has nothing pending;
    AssertionError naming what is left (and dead letters) otherwise."""
    seen = {}

    def check():
        doc = relayd.status_json()
        seen["st"] = {b["name"]: b for b in doc["backends"]}
        return all(seen["st"].get(n, {}).get("pending_batches") == 0 for n in names)

    relaytest.wait_until(check, timeout, 0.5, what="every queue drained",
                         detail=lambda: "status %s; log:\n%s" % (
                             json.dumps({n: {k: s.get(k) for k in ("pending_batches", "dead_batches",
                                                                    "state", "last_error")}
                                         for n, s in seen.get("st", {}).items()}),
                             relaytest._tail(relayd.log_since_start(), 30)))
    dead = {n: s.get("dead_batches") for n, s in seen["st"].items() if s.get("dead_batches")}
    if dead:
        raise AssertionError("dead-lettered batches: %r" % dead)


# ---- chaos -----------------------------------------------------------------

# x86_64 syscall numbers of the calls an LMDB commit makes on data.mdb.
COMMIT_SYSCALLS = {18: "pwrite", 20: "writev", 74: "fsync", 75: "fdatasync"} \
    if platform.machine() == "x86_64" else {}


def in_commit(pid, mdb_path):
    """The commit syscall ("fdatasync", "pwrite", ...) a thread of pid is
    inside on mdb_path right now, or None. From /proc/PID/task/TID/syscall:
    the number and the first argument (the fd) of the call a blocked thread
    is in."""
    try:
        tids = os.listdir("/proc/%d/task" % pid)
    except OSError:
        return None
    for tid in tids:
        try:
            with open("/proc/%d/task/%s/syscall" % (pid, tid)) as f:
                parts = f.read().split()
        except OSError:
            continue
        if not parts or not parts[0].isdigit():
            continue
        name = COMMIT_SYSCALLS.get(int(parts[0]))
        if not name:
            continue
        try:
            target = os.readlink("/proc/%d/fd/%d" % (pid, int(parts[1], 16)))
        except (OSError, ValueError, IndexError):
            continue
        if target == mdb_path:
            return name
    return None


def kill_relayd(relayd, aim, within=0.5):
    """SIGKILL relayd. aim: first wait (at most within seconds) for a thread
    inside a commit syscall on data.mdb. Returns where it was caught: the
    syscall name, or "elsewhere"."""
    pid = relayd.proc.pid
    mdb = os.path.join(os.path.realpath(relayd.data_dir), "data.mdb")
    where = None
    if aim and COMMIT_SYSCALLS:
        deadline = time.monotonic() + within
        while where is None and time.monotonic() < deadline:
            where = in_commit(pid, mdb)
    elif COMMIT_SYSCALLS:
        where = in_commit(pid, mdb)
    relayd.kill9()
    return where or "elsewhere"


class BackendChaos:
    """Stop, start, freeze (SIGSTOP) and thaw (SIGCONT) one backend process:
    an relaytest.Influxd. Tracks its state; calm() leaves it running."""

    def __init__(self, influxd, rnd):
        self.influxd = influxd
        self.rnd = rnd
        self.state = "running"
        self.counts = collections.Counter()

    def freeze(self):
        if self.state == "running":
            os.kill(self.influxd.proc.pid, signal.SIGSTOP)
            self.state = "frozen"
            self.counts["sigstop"] += 1

    def thaw(self):
        if self.state == "frozen":
            os.kill(self.influxd.proc.pid, signal.SIGCONT)
            self.state = "running"
            self.counts["sigcont"] += 1

    def stop(self):
        self.thaw()
        if self.state == "running":
            self.influxd.stop()
            self.state = "stopped"
            self.counts["stop"] += 1

    def start(self):
        if self.state == "stopped":
            self.influxd.start()
            self.state = "running"
            self.counts["start"] += 1

    def step(self, busy=False):
        """One random change (or none), as the state allows; busy: a change
        nearly every time (a flapping backend)."""
        r = self.rnd.random() * (0.5 if busy else 1.0)
        if self.state == "running":
            if r < 0.2:
                self.freeze()
            elif r < 0.35:
                self.stop()
        elif self.state == "frozen":
            if r < 0.4:
                self.thaw()
            elif r < 0.45:
                self.stop()
        elif r < 0.45:
            self.start()
        return self.state

    def calm(self):
        self.thaw()
        self.start()


# ---- checks ----------------------------------------------------------------

def influx_batch_counts(influxd, max_id):
    """{batch id: points of that batch in influxd}, from one query counting
    points per 1 us bucket (a bucket is a batch)."""
    q = ("SELECT count(v) FROM %s WHERE time >= %d AND time < %d GROUP BY time(1u) fill(none)"
         % (MEASUREMENT, BASE_NS, BASE_NS + (max_id + 1) * 1000))
    res = influxd.query(DB, q, epoch="ns")["results"][0]
    if "error" in res:
        raise AssertionError("count query failed: %r" % res)
    out = {}
    for series in res.get("series", []):
        for t, n in series["values"]:
            out[(int(t) - BASE_NS) // 1000] = int(n)
    return out


def fake_line_counts(fake):
    """Counter of every torture line the fake answered with a 2xx."""
    c = collections.Counter()
    for r in fake.delivered():
        for line in r.lines():
            if line.startswith(MEASUREMENT + ","):
                c[line] += 1
    return c


def check_ledger(ledger, fake=None, influxd=None, fake_counts=None):
    """Compare what was sent with what arrived. Returns a dict of figures;
    the caller asserts. lost_*: acknowledged lines missing; refused_*:
    lines of a 503'd batch that arrived; partial_*: batches neither whole
    nor absent; phantom: lines that were never sent; duplicates: extra
    copies in the fake (at-least-once)."""
    batches = {b.id: b for b in ledger.all()}
    acked = [b for b in batches.values() if b.fate == ACKED]
    out = {"acked_batches": len(acked), "acked_lines": sum(len(b.lines) for b in acked)}
    examples = []
    if influxd is not None:
        counts = influx_batch_counts(influxd, ledger.max_id())
        lost = partial = refused = phantom = 0
        for bid, b in batches.items():
            n = counts.get(bid, 0)
            if b.fate == ACKED and n < len(b.lines):
                lost += len(b.lines) - n
                examples.append("influxd: acked batch %d has %d of %d points" % (bid, n, len(b.lines)))
            if b.fate in (REFUSED, NOT_SENT, OTHER) and n:
                refused += n
                examples.append("influxd: %s batch %d has %d points" % (b.fate, bid, n))
            if 0 < n < len(b.lines):
                partial += 1
                if b.fate != ACKED:
                    examples.append("influxd: %s batch %d partly there (%d of %d)"
                                    % (b.fate, bid, n, len(b.lines)))
            if n > len(b.lines):
                phantom += n - len(b.lines)
        phantom += sum(n for bid, n in counts.items() if bid not in batches)
        out.update({"influxd_lost": lost, "influxd_refused_delivered": refused,
                    "influxd_partial": partial, "influxd_phantom": phantom,
                    "influxd_points": sum(counts.values())})
    if fake is not None or fake_counts is not None:
        c = fake_counts if fake_counts is not None else fake_line_counts(fake)
        lost = refused = phantom = partial = unknown_delivered = 0
        sent = set()
        for bid, b in batches.items():
            got = [c.get(line, 0) for line in b.lines]
            sent.update(b.lines)
            have = sum(1 for g in got if g)
            if b.fate == ACKED and have < len(b.lines):
                lost += len(b.lines) - have
                if len(examples) < 20:
                    missing = [line for line, g in zip(b.lines, got) if not g]
                    examples.append("fake: acked batch %d misses %d of %d lines, e.g. %r"
                                    % (bid, len(missing), len(b.lines), missing[0]))
            if b.fate in (REFUSED, NOT_SENT, OTHER) and have:
                refused += have
                examples.append("fake: %s batch %d has %d lines" % (b.fate, bid, have))
            if b.fate == UNKNOWN and have:
                unknown_delivered += 1
            if 0 < have < len(b.lines):
                partial += 1
                if b.fate != ACKED:
                    examples.append("fake: %s batch %d partly there (%d of %d)"
                                    % (b.fate, bid, have, len(b.lines)))
        phantom = sum(n for line, n in c.items() if line not in sent)
        distinct = sum(1 for line in c if line in sent)
        dups = sum(n - 1 for line, n in c.items() if line in sent and n > 1)
        out.update({"fake_lost": lost, "fake_refused_delivered": refused, "fake_partial": partial,
                    "fake_phantom": phantom, "fake_distinct_lines": distinct,
                    "fake_duplicate_lines": dups,
                    "fake_duplicate_pct": round(100.0 * dups / distinct, 3) if distinct else 0.0,
                    "unknown_batches_delivered": unknown_delivered})
    out["examples"] = examples[:20]
    return out


def assert_no_loss(tc, figures, what):
    """The checks every scenario makes on check_ledger's figures."""
    bad = {k: v for k, v in figures.items()
           if any(k.endswith(s) for s in ("_lost", "_refused_delivered", "_partial", "_phantom")) and v}
    tc.assertFalse(bad, "%s: %r\n%s" % (what, bad, "\n".join(figures.get("examples", []))))


def overwrite_values(fake):
    """Values of the overwritten series in the order the fake took them
    (2xx answers only)."""
    vals = []
    prefix = OVERWRITE_MEASUREMENT + ",k=one v="
    for r in fake.delivered():
        for line in r.lines():
            if line.startswith(prefix):
                vals.append(int(line[len(prefix):].split("i", 1)[0]))
    return vals


def influx_overwrite_value(influxd):
    rows = influxd.rows(DB, 'SELECT v FROM %s' % OVERWRITE_MEASUREMENT)
    if len(rows) != 1:
        raise AssertionError("the overwritten series has %d points in influxd, not 1: %r"
                             % (len(rows), rows[:5]))
    return int(rows[0]["v"])


def percentile(values, p):
    if not values:
        return None
    v = sorted(values)
    return v[min(len(v) - 1, int(round(p / 100.0 * (len(v) - 1))))]


def lag_figures(lags):
    if not lags:
        return {"n": 0}
    return {"n": len(lags), "median_ms": round(1000 * statistics.median(lags), 1),
            "p95_ms": round(1000 * percentile(lags, 95), 1),
            "max_ms": round(1000 * max(lags), 1)}


def report(name, figures, path=None):
    """Print a scenario's figures as one JSON line (and append it to
    path)."""
    line = json.dumps({"scenario": name, **figures}, sort_keys=True)
    print("TORTURE %s" % line)
    sys.stdout.flush()
    if path:
        with open(path, "a") as f:
            f.write(line + "\n")
