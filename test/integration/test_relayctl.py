#!/usr/bin/env python3
"""
relayctl against real relayd and influxd processes (issue 5).

What works through the queue alone is tested with relayd stopped, and the
read-only views also while relayd ingests: status, peek, show, dump and
verify while writes pour in; pause/resume persisted in the queue across
relayd restarts; purge (refused without --yes); dead letters of a real
influxd listed with its message, shown, requeued after the cause is fixed
(the missing retention policy created) and then delivered, dropped;
export then `influx -import` into a fresh influxd reproduces every point;
import refuses a file with bad lines (listing them, queueing nothing) and
queues a good one for one backend only, which relayd then delivers;
verify passes on a healthy store and fails on damaged copies (made with
lmdb-utils' mdb_dump/mdb_load); relayctl killed with -9 in a loop while
relayd ingests does not make the data file grow.

What needs relayd's side of the control channel (a pause taking effect
at once, retry, the delivery state in status) is tested against relayd
answering on data_dir/relayd.sock.
"""

import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import threading
import time
import unittest

import relaytest
from relaytest import MDB_DUMP, MDB_LOAD, mdb_dump, mdb_load  # noqa: E402 (the queue file's tools)
from relaytest import seal_record as seal  # noqa: E402

DB = "telemetry"
RETRY = {"retry_min": "100ms", "retry_max": "1s"}
BASE_S = 1_600_000_000
UNIT_NS = {"ns": 1, "u": 1000, "ms": 10 ** 6, "s": 10 ** 9}
INFLUX_BIN = shutil.which("influx")
MDB_STAT = shutil.which("mdb_stat")


MIB = 1 << 20


ASAN = relaytest.asan_build()


def backend(name, url, **opts):
    b = {"name": name, "url": url}
    b.update(RETRY)
    b.update(opts)
    return b


def down_url():
    return "http://127.0.0.1:%d" % relaytest.closed_port()


LINE = re.compile(r"^([^, ]+)((?:,[^, =]+=[^, ]+)*) ([^ ]+)(?: (-?\d+))?$")


def parse_points(body, precision):
    """{(measurement, tags, field): (value text, time ns)} of simple
    generated line protocol (no escapes, no spaces in strings)."""
    out = {}
    for line in body.splitlines():
        if not line or line.startswith("#"):
            continue
        m = LINE.match(line)
        if not m:
            raise AssertionError("unexpected line %r" % line)
        meas, tags, fields, ts = m.groups()
        for f in fields.split(","):
            k, v = f.split("=", 1)
            out[(meas, tags, k)] = (v, int(ts) * UNIT_NS[precision])
    return out


def read_text(path):
    with open(path) as f:
        return f.read()


def lp_value(v):
    """A field value of influxd's JSON as line protocol writes it."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return "%di" % v
    if isinstance(v, float):
        return repr(v)
    return json.dumps(v)


def status_rows(text):
    """{backend: {"STATE": .., "DELIVERED/S": ..}} of the table in
    status's text output (the rate is its last column)."""
    lines = text.splitlines()
    head = next(i for i, l in enumerate(lines) if l.startswith("BACKEND "))
    if lines[head].split()[-1] != "DELIVERED/S":
        raise AssertionError("the last column of status is not DELIVERED/S: %r" % lines[head])
    rows = {}
    for line in lines[head + 1:]:
        if not line or line.startswith(" ") or line.startswith("DELIVERED/S:"):
            continue
        cells = line.split()
        rows[cells[0]] = {"STATE": cells[1], "DELIVERED/S": cells[-1]}
    return rows


class WatchReader:
    """relayctl status --watch with its output on a pipe (one block per
    refresh, a blank line after each), read by a thread: each block with
    the time it came."""

    def __init__(self, args):
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, errors="replace")
        self.blocks = []
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self.read, daemon=True)
        self.thread.start()

    def read(self):
        cur = []
        for line in self.proc.stdout:
            if line.strip():
                cur.append(line)
                continue
            with self.lock:
                self.blocks.append((time.monotonic(), "".join(cur)))
            cur = []

    def wait_block(self, pred, timeout, start=0, what="a refresh"):
        """The index of the first block from start on for which pred(text)
        holds, waiting at most timeout seconds."""
        found = {}

        def check():
            with self.lock:
                for i in range(start, len(self.blocks)):
                    if pred(self.blocks[i][1]):
                        found["i"] = i
                        return True
            return False

        relaytest.wait_until(check, timeout, 0.05, what="relayctl status --watch: %s" % what,
                             detail=lambda: "%d blocks, the last:\n%s"
                             % (len(self.blocks), self.blocks[-1][1] if self.blocks else "(none)"))
        return found["i"]

    def stop(self):
        """SIGTERM by pid; its exit status."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        try:
            _, err = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            raise AssertionError("relayctl status --watch did not stop on SIGTERM")
        self.thread.join(5)
        self.stderr = err
        return self.proc.returncode


class ScriptedDaemon:
    """A stand-in for relayd's side of the control socket: answers each
    request line from a table, records what it was asked."""

    def __init__(self, path, answers):
        self.path = path
        self.answers = answers
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(path)
        self.sock.listen(8)
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while True:
            try:
                c, _ = self.sock.accept()
            except OSError:
                return
            with c:
                buf = b""
                while True:
                    data = c.recv(4096)
                    if not data:
                        break
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        req = line.decode()
                        self.requests.append(req)
                        c.sendall((self.answers.get(req, "error unknown command") + "\n").encode())

    def close(self):
        self.sock.close()
        os.unlink(self.path)


class RelayctlTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    # processes

    def influxd(self, subdir="influxd", dbs=(DB,)):
        i = relaytest.Influxd(self.addCleanup)
        i.write_config(self.tmp, subdir=subdir)
        i.start()
        for db in dbs:
            i.create_db(db)
        return i

    def relayd(self, backends, name="relayd", start=True, **kw):
        r = relaytest.Relayd(self.addCleanup, name=name)
        r.write_config(self.tmp, backends=backends, **kw)
        if start:
            r.start()
            r.wait_ready()
        return r

    # relayctl

    def ctl(self, r, *args, rc=0, timeout=120.0):
        cp = r.relayctl(*args, timeout=timeout)
        if rc is not None and cp.returncode != rc:
            raise AssertionError("relayctl %s exited %d, not %d:\n%s%s"
                                 % (" ".join(map(str, args)), cp.returncode, rc, cp.stdout, cp.stderr))
        return cp

    def ctl_json(self, r, *args, rc=0):
        cp = self.ctl(r, *(args + ("--json",)), rc=rc)
        try:
            return json.loads(cp.stdout)
        except ValueError as e:
            raise AssertionError("relayctl %s --json printed no JSON (%s): %r"
                                 % (" ".join(args), e, cp.stdout[:500]))

    def relayd_answers(self, r):
        """Whether relayd answers on its control socket."""
        doc = r.status_json()
        return doc.get("relayd") == "running" and "relayd_error" not in doc

    def write_batches(self, r, n, lines=5, measurement="m", db=DB, rp=None, precision="s",
                      start=0, unstamped_every=0):
        """n batches through relayd (each asserted 204); returns the bodies."""
        bodies = []
        for i in range(start, start + n):
            ls = []
            for j in range(lines):
                t = (BASE_S + i * 100 + j) * 10 ** 9 // UNIT_NS[precision]
                if unstamped_every and j % unstamped_every == 1:
                    ls.append("%s,b=b%05d,l=l%03d v=%di" % (measurement, i, j, i * 1000 + j))
                else:
                    ls.append("%s,b=b%05d,l=l%03d v=%di %d" % (measurement, i, j, i * 1000 + j, t))
            body = "\n".join(ls) + "\n"
            status, _, resp = r.write(db, body, precision=precision, rp=rp)
            self.assertEqual(status, 204, resp)
            bodies.append(body)
        return bodies

    # 1

    def test_views_while_relayd_ingests_and_after_it_stopped(self):
        r = self.relayd([backend("down", down_url()), backend("also", down_url())])
        errors = []

        def writer():
            try:
                self.write_batches(r, 150)
            except BaseException as e:  # reported by the main thread
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        seen = []
        rounds = during = 0
        while t.is_alive() or rounds < 2:
            rounds += 1
            during += t.is_alive()
            st = r.backend_status("down")
            seen.append(st["pending_batches"])
            self.ctl(r, "status")
            self.ctl(r, "peek", "down", "-n", "3")
            if st["pending_batches"]:
                self.ctl(r, "show", "down", "1")
            self.ctl(r, "dump", "down")
            self.assertIn("ok:", self.ctl(r, "verify").stdout)
        t.join()
        self.assertEqual(errors, [])
        self.assertEqual(seen, sorted(seen), "pending batches went down while nothing is delivered")
        # The views ran while relayd ingested (a slow ASan relayctl may
        # manage only one or two rounds of them in that time).
        self.assertGreaterEqual(during, 1)

        doc = r.status_json()
        self.assertEqual(doc["relayd"], "running")
        st = r.backend_status("down")
        self.assertEqual(st["pending_batches"], 150)
        self.assertEqual(st["pending_points"], 750)
        self.assertFalse(st["paused"])
        peek = self.ctl_json(r, "peek", "down", "-n", "4")
        self.assertEqual([b["seq"] for b in peek["batches"]], [1, 2, 3, 4])
        b0 = peek["batches"][0]
        self.assertEqual((b0["db"], b0["rp"], b0["precision"], b0["points"]), (DB, "", "s", 5))
        self.assertIn("attempts", b0)
        table = self.ctl(r, "peek", "down").stdout.splitlines()
        self.assertTrue(table[0].startswith("SEQ"), table)
        self.assertEqual(len(table), 11)

        r.stop()
        doc = r.status_json()
        self.assertEqual(doc["relayd"], "stopped")
        self.assertEqual([b["state"] for b in doc["backends"]], ["stopped", "stopped"])
        # show: the stored line protocol, byte for byte
        dump = r.dump("down")
        self.assertEqual(self.ctl(r, "show", "down", "7").stdout, dump[6]["body"])
        shown = self.ctl_json(r, "show", "down", "7")
        self.assertEqual((shown["state"], shown["body"]), ("pending", dump[6]["body"]))
        # errors a person can act on, and exit 1
        cp = self.ctl(r, "peek", "nope", rc=1)
        self.assertIn("unknown backend 'nope'", cp.stderr)
        cp = self.ctl(r, "show", "down", "999", rc=1)
        self.assertIn("no batch 999", cp.stderr)
        self.ctl(r, "show", "down", "x", rc=2)
        self.ctl(r, "frobnicate", rc=2)
        self.assertIn("ok: 150 batches, 2 backends", self.ctl(r, "verify").stdout)

    # 2

    def test_missing_data_dir_empty_dir_and_incompatible_version(self):
        r = self.relayd([backend("down", down_url())], start=False)
        cp = self.ctl(r, "status", rc=1)
        self.assertIn("does not exist", cp.stderr)
        # a change never creates the queue
        cp = self.ctl(r, "pause", "down", rc=1)
        self.assertIn("does not exist", cp.stderr)
        self.assertFalse(os.path.exists(r.data_dir))
        os.mkdir(r.data_dir, 0o700)
        for args in (("status",), ("pause", "down"), ("import", "down", "/dev/null", "--db", DB)):
            cp = self.ctl(r, *args, rc=1)
            self.assertIn("holds no relayd queue", cp.stderr)
        self.assertEqual(os.listdir(r.data_dir), [])

        os.rmdir(r.data_dir)
        r.start()
        r.wait_ready()
        self.write_batches(r, 2)
        r.stop()
        self.ctl(r, "status")
        # The format record as a newer relayd would write it.
        entries = mdb_dump(r.data_dir, "meta")
        fmt = bytearray(entries[b"format"])
        fmt[8:12] = (99).to_bytes(4, "little")
        entries[b"format"] = bytes(fmt)
        mdb_load(r.data_dir, "meta", entries)
        newer = ("this queue was written by a newer relayd (format 99); this relayd reads format 3: "
                 "install the newer relayd or restore a backup")
        for args in (("status",), ("peek", "down"), ("pause", "down"), ("verify",), ("backup", r.tmpdir + "/bk")):
            cp = self.ctl(r, *args, rc=1)
            self.assertIn(newer, cp.stderr)
        self.assertFalse(os.path.exists(r.tmpdir + "/bk"))
        # relayd refuses it too, saying the same, and leaves it as it was
        r.start()
        self.assertNotEqual(r.wait_exit(15), 0)
        self.assertTrue(r.log_matches(re.escape(newer)), r.log_since_start())
        self.assertEqual(mdb_dump(r.data_dir, "meta")[b"format"], entries[b"format"])

    # 3

    def test_pause_resume_persist_across_restarts(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url), backend("b2", influxd.url)])
        r.stop()
        cp = self.ctl(r, "pause", "b1")
        self.assertIn("paused", cp.stdout)
        self.assertIn("relayd is not running", cp.stdout)
        st = r.backend_status("b1")
        self.assertEqual((st["paused"], st["state"]), (True, "paused"))
        self.assertFalse(r.backend_status("b2")["paused"])
        # relayd starts, appends and acks (rewriting the backend records):
        # the flag stays
        r.start()
        r.wait_ready()
        self.write_batches(r, 3)
        r.wait_status("b2", pending_batches=0)
        self.assertTrue(r.backend_status("b1")["paused"])
        r.stop()
        r.start()
        r.wait_ready()
        self.assertTrue(r.backend_status("b1")["paused"])
        self.ctl(r, "resume", "b1")
        self.assertFalse(r.backend_status("b1")["paused"])
        doc = self.ctl_json(r, "pause", "b1")
        self.assertEqual(doc["paused"], True)
        self.assertIn(doc["relayd"], ("notified", "not notified"))
        self.ctl(r, "resume", "b1")
        self.ctl(r, "pause", "nope", rc=1)

    def test_pause_holds_delivery_and_resume_delivers(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url)])
        self.assertTrue(self.relayd_answers(r), "relayd does not answer on data_dir/relayd.sock")
        self.ctl(r, "pause", "b1")
        self.write_batches(r, 4)
        time.sleep(1.5)
        self.assertEqual(influxd.count_or_none(DB, "m", "v"), 0)
        self.assertEqual(r.backend_status("b1")["pending_batches"], 4)
        r.stop()
        r.start()
        r.wait_ready()
        time.sleep(1.5)
        self.assertEqual(r.backend_status("b1")["pending_batches"], 4, "a restart lifted the pause")
        self.ctl(r, "resume", "b1")
        influxd.wait_count(DB, "m", "v", 20)
        r.wait_status("b1", pending_batches=0)

    def test_stuck_backend_shows_its_error_and_retry(self):
        r = self.relayd([backend("down", down_url(), retry_max="30s")])
        self.write_batches(r, 1)
        self.assertTrue(self.relayd_answers(r), "relayd does not answer on data_dir/relayd.sock")
        st = r.wait_status("down", state="down", timeout=20)
        self.assertIn("connect", st["last_error"].lower())
        self.assertIn("connect", self.ctl(r, "status").stdout.lower())
        self.ctl(r, "retry", "down")
        r.wait_log(r"backend 'down': retrying now \(relayctl retry\)")

    def test_relayctl_side_of_the_control_channel(self):
        """relayctl against a scripted daemon on data_dir/relayd.sock: what
        it asks, and how it shows the answers."""
        r = self.relayd([backend("b1", down_url()), backend("b2", down_url())])
        self.write_batches(r, 3)
        r.stop()
        status = {"pid": os.getpid(), "version": "9.9", "started_ns": 1, "backends": [
            {"name": "b1", "state": "retrying", "last_error": "HTTP 503: overloaded", "head_seq": 1,
             "attempts": 4, "next_attempt_ms": 1500, "last_delivery_ns": 0, "delivered_points": 0,
             "points_per_second": 0.0},
            # relayd's average has not decayed to 0, but nothing was
            # delivered in its window (the last delivery was in 2023)
            {"name": "b2", "state": "up", "last_error": "", "head_seq": 0, "attempts": 0,
             "next_attempt_ms": -1, "last_delivery_ns": 1700000000000000000, "delivered_points": 42,
             "points_per_second": 12.5},
            # not in relayctl's configuration: relayd took it in a reload
            {"name": "b3", "state": "up", "last_error": "", "head_seq": 0, "attempts": 0,
             "next_attempt_ms": -1, "last_delivery_ns": time.time_ns() - 10 ** 9, "delivered_points": 99,
             "points_per_second": 12.5}]}
        d = ScriptedDaemon(os.path.join(r.data_dir, "relayd.sock"), {
            "status": "ok " + json.dumps(status), "notify b1": "ok", "retry b1": "ok",
            "notify b2": "error backend 'b2' is busy"})
        self.addCleanup(d.close)

        doc = r.status_json()
        self.assertEqual((doc["relayd"], doc["pid"]), ("running", os.getpid()))
        b1, b2, b3 = doc["backends"]
        self.assertEqual((b1["state"], b1["last_error"], b1["attempts"], b1["next_attempt_ms"]),
                         ("retrying", "HTTP 503: overloaded", 4, 1500))
        self.assertEqual(b1["pending_batches"], 3)  # from the queue
        self.assertEqual((b2["state"], b2["delivered_points_per_second"], b2["points_per_second"],
                          b2["last_delivery_ns"]), ("up", 0.0, 0.0, 1700000000000000000))
        self.assertEqual((b3["name"], b3["state"], b3["delivered_points_per_second"], b3["points_per_second"]),
                         ("b3", "up", 12.5, 12.5))
        self.assertEqual((b1["delivered_points_per_second"], b1["points_per_second"]), (0.0, 0.0))
        text = self.ctl(r, "status").stdout
        self.assertIn("relayd: running (pid %d, version 9.9)" % os.getpid(), text)
        rows = status_rows(text)
        self.assertEqual([(n, row["DELIVERED/S"]) for n, row in rows.items()],
                         [("b1", "0.0"), ("b2", "0.0"), ("b3", "12.5")])
        self.assertIn("DELIVERED/S: points delivered per second, relayd's average over about the last 30 s", text)
        self.assertRegex(text, r"b1: HTTP 503: overloaded \(batch 1, 4 attempts, next in 1\.5s\)")
        self.assertIn("2023-11-14T22:13:20Z", text)
        # peek: attempts and last error for the batch relayd is trying
        batches = self.ctl_json(r, "peek", "b1")["batches"]
        self.assertEqual((batches[0]["attempts"], batches[0]["last_error"]), (4, "HTTP 503: overloaded"))
        self.assertEqual((batches[1]["attempts"], batches[1]["last_error"]), (None, None))
        # a change, then the nudge
        cp = self.ctl(r, "pause", "b1")
        self.assertIn("relayd took the change at once", cp.stdout)
        self.assertEqual(self.ctl_json(r, "resume", "b1")["relayd"], "notified")
        cp = self.ctl(r, "pause", "b2")
        self.assertIn("did not take the change at once (backend 'b2' is busy)", cp.stdout)
        self.ctl(r, "resume", "b2")
        self.assertIn("relayd retries backend 'b1' now", self.ctl(r, "retry", "b1").stdout)
        cp = self.ctl(r, "retry", "b2", rc=1)
        self.assertIn("unknown command", cp.stderr)
        self.assertIn("notify b1", d.requests)
        self.assertIn("retry b1", d.requests)
        # a watch refreshes (not a terminal: one block per refresh)
        p = subprocess.Popen([relaytest.RELAYCTL_BIN, "-c", r.config, "status", "--watch", "0.2"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        time.sleep(1.0)
        p.send_signal(signal.SIGINT)
        out, err = p.communicate(timeout=10)
        self.assertEqual(p.returncode, 0, err)
        self.assertGreaterEqual(out.count("relayd: running"), 3)

    def test_watch_default_interval_follows_reloads_and_reads_0_when_idle(self):
        """status --watch alone refreshes every 2 s; each refresh asks
        relayd again, so a backend added by a reload appears and a removed
        one (its queue empty) disappears. The rate is 0 with nothing
        delivered."""
        r = self.relayd([backend("b1", down_url())])
        doc = r.status_json()
        b1 = doc["backends"][0]
        self.assertEqual((b1["delivered_points_per_second"], b1["points_per_second"]), (0.0, 0.0))
        self.assertEqual(status_rows(self.ctl(r, "status").stdout)["b1"]["DELIVERED/S"], "0.0")

        w = WatchReader([relaytest.RELAYCTL_BIN, "-c", r.config, "status", "--watch"])
        self.addCleanup(lambda: w.proc.poll() is None and w.stop())
        first = w.wait_block(lambda t: "relayd: running" in t, 15, what="a first refresh")
        second = w.wait_block(lambda t: "relayd: running" in t, 15, start=first + 1, what="a second refresh")
        gap = w.blocks[second][0] - w.blocks[first][0]
        self.assertGreater(gap, 1.5, "refreshes %.2f s apart, not about 2 s" % gap)
        self.assertLess(gap, 4.0, "refreshes %.2f s apart, not about 2 s" % gap)
        rows = status_rows(w.blocks[first][1])
        self.assertEqual(list(rows), ["b1"])
        self.assertEqual(rows["b1"]["DELIVERED/S"], "0.0")

        # b2 joins the configuration: SIGHUP, and the next refreshes show it
        r.write_config(self.tmp, backends=[backend("b1", down_url()), backend("b2", down_url())])
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"configuration reloaded .*\(2 backends\)")
        i = w.wait_block(lambda t: "b2" in status_rows(t), 15, start=second + 1, what="backend b2 after the reload")
        rows = status_rows(w.blocks[i][1])
        self.assertEqual(list(rows), ["b1", "b2"])
        self.assertEqual(rows["b2"]["DELIVERED/S"], "0.0")
        # b1 leaves it (its queue is empty: not even shown as orphaned)
        r.write_config(self.tmp, backends=[backend("b2", down_url())])
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"backend 'b1' is no longer configured")
        i = w.wait_block(lambda t: list(status_rows(t)) == ["b2"], 15, start=i + 1,
                         what="backend b1 gone after the second reload")
        self.assertEqual(w.stop(), 0, w.stderr)

        # --watch N and --watch=N still take the number
        for args in (["--watch", "0.2"], ["--watch=0.2"]):
            w = WatchReader([relaytest.RELAYCTL_BIN, "-c", r.config, "status"] + args)
            first = w.wait_block(lambda t: "relayd: running" in t, 15)
            second = w.wait_block(lambda t: "relayd: running" in t, 15, start=first + 1)
            self.assertLess(w.blocks[second][0] - w.blocks[first][0], 1.5, args)
            self.assertEqual(w.stop(), 0, (args, w.stderr))
        cp = self.ctl(r, "status", "--watch", "0", rc=2)
        self.assertIn("--watch wants a number of seconds, not '0'", cp.stderr)

        # relayd stopped: nothing delivers, the rate is 0
        r.stop()
        self.assertEqual(r.backend_status("b2")["delivered_points_per_second"], 0.0)
        self.assertEqual(status_rows(self.ctl(r, "status").stdout)["b2"]["DELIVERED/S"], "0.0")

    # 4

    def test_purge_drops_one_backends_queue_only(self):
        influxd = self.influxd()
        r = self.relayd([backend("up", influxd.url), backend("down", down_url())])
        self.write_batches(r, 5)
        r.wait_status("up", pending_batches=0)
        influxd.wait_count(DB, "m", "v", 25)
        self.assertEqual(r.backend_status("down")["pending_batches"], 5)

        cp = self.ctl(r, "purge", "down", rc=1)
        self.assertIn("--yes", cp.stderr)
        self.assertIn("5 pending batches", cp.stderr)
        self.assertEqual(r.backend_status("down")["pending_batches"], 5)
        # while relayd runs (and its worker retries the batches it holds)
        doc = self.ctl_json(r, "purge", "down", "--yes")
        self.assertEqual((doc["purged_batches"], doc["purged_points"]), (5, 25))
        st = r.backend_status("down")
        self.assertEqual((st["pending_batches"], st["pending_points"], st["pending_bytes"]), (0, 0, 0))
        self.assertEqual(st["delivered_batches"], 0)
        self.assertIn("ok:", self.ctl(r, "verify").stdout)
        # the queue goes on
        self.write_batches(r, 2, start=5)
        influxd.wait_count(DB, "m", "v", 35)
        r.wait_status("down", pending_batches=2)
        # influxd has the points before relayd records the delivery: wait
        # for the ack too, or the stop may leave it for the next start.
        r.wait_status("up", pending_batches=0)
        r.stop()
        cp = self.ctl(r, "purge", "down", "--yes")
        self.assertRegex(cp.stdout, r"purged 2 batches \(10 points, .*\) of backend 'down'")
        self.assertIn("relayd is not running", cp.stdout)
        self.assertEqual(r.backend_status("down")["pending_batches"], 0)
        self.assertEqual(r.backend_status("up")["pending_batches"], 0)
        self.assertIn("ok: 0 batches", self.ctl(r, "verify").stdout)

    def test_a_removed_backend_is_shown_orphaned_until_purged(self):
        influxd = self.influxd()
        r = self.relayd([backend("up", influxd.url), backend("gone", down_url())])
        self.write_batches(r, 3)
        r.wait_status("up", pending_batches=0)
        # "gone" leaves the configuration; SIGHUP takes it out of relayd
        r.write_config(self.tmp, backends=[backend("up", influxd.url)])
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"backend 'gone' is no longer configured")
        doc = self.ctl_json(r, "status")
        byname = {b["name"]: b for b in doc["backends"]}
        self.assertEqual(byname["gone"]["state"], "orphaned")
        self.assertEqual(byname["gone"]["pending_batches"], 3)
        self.assertEqual(byname["up"]["state"], "up")
        self.assertRegex(self.ctl(r, "status").stdout, r"(?m)^gone +orphaned +no +3 ")
        # its queue can still be read and exported, and purged
        self.assertEqual(len(self.ctl_json(r, "peek", "gone")["batches"]), 3)
        doc = self.ctl_json(r, "purge", "gone", "--yes")
        self.assertEqual(doc["purged_batches"], 3)
        self.assertNotIn("gone", [b["name"] for b in self.ctl_json(r, "status")["backends"]])
        cp = self.ctl(r, "peek", "never", rc=1)
        self.assertIn("unknown backend 'never'", cp.stderr)

    # 5

    def test_dead_letters_listed_requeued_after_the_fix_then_delivered(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url)])
        bodies = self.write_batches(r, 3, measurement="late", rp="later")
        self.write_batches(r, 1, measurement="ok", start=10)
        r.wait_status("b1", pending_batches=0, dead_batches=3, timeout=30)

        doc = self.ctl_json(r, "dlq", "list", "b1")
        dead = doc["dead"]
        self.assertEqual(len(dead), 3)
        for d in dead:
            self.assertIn("retention policy not found", d["message"])
            self.assertEqual((d["db"], d["rp"], d["points"]), (DB, "later", 5))
            self.assertGreaterEqual(d["attempts"], 0)
            self.assertNotIn("body", d)
        seqs = [d["seq"] for d in dead]
        table = self.ctl(r, "dlq", "list", "b1").stdout
        self.assertIn("retention policy not found", table)
        shown = self.ctl(r, "dlq", "show", "b1", str(seqs[1])).stdout
        self.assertTrue(shown.startswith("# dead letter %d of backend 'b1'" % seqs[1]), shown)
        self.assertIn("retention policy not found", shown.splitlines()[1])
        self.assertTrue(shown.endswith(bodies[1]), shown)
        self.assertEqual(self.ctl(r, "show", "b1", str(seqs[1])).stdout, bodies[1])
        self.assertEqual(self.ctl_json(r, "show", "b1", str(seqs[1]))["state"], "dead")
        cp = self.ctl(r, "dlq", "show", "b1", "9999", rc=1)
        self.assertIn("no dead letter 9999", cp.stderr)

        # Requeued before the cause is fixed (relayd running): it goes to
        # the end of the queue, is refused again, and comes back dead under
        # a new sequence.
        cp = self.ctl(r, "dlq", "requeue", "b1", str(seqs[0]))
        self.assertIn("requeued 1 dead letter (5 points) of backend 'b1' at the end of its queue", cp.stdout)
        # relayd, told through its socket, may have refused it again already
        self.assertIn(len(self.ctl_json(r, "dlq", "list", "b1")["dead"]), (2, 3))
        self.write_batches(r, 1, measurement="ok", start=11)
        r.wait_status("b1", pending_batches=0, dead_batches=3, timeout=30)
        seqs2 = [d["seq"] for d in self.ctl_json(r, "dlq", "list", "b1")["dead"]]
        self.assertEqual(seqs2[:2], seqs[1:])
        self.assertGreater(seqs2[2], max(seqs))
        # a missing sequence: nothing requeued
        cp = self.ctl(r, "dlq", "requeue", "b1", str(seqs2[0]), "9999", rc=1)
        self.assertIn("no dead letter 9999: nothing was requeued", cp.stderr)
        self.assertEqual(r.backend_status("b1")["dead_batches"], 3)

        # The operator fixes the cause, then requeues everything.
        influxd.query(DB, 'CREATE RETENTION POLICY "later" ON "%s" DURATION 0s REPLICATION 1' % DB)
        doc = self.ctl_json(r, "dlq", "requeue", "b1", "--all")
        self.assertEqual((doc["requeued"], doc["points"]), (3, 15))
        self.assertEqual(self.ctl_json(r, "dlq", "list", "b1")["dead"], [])
        if doc.get("relayd") != "notified":
            self.write_batches(r, 1, measurement="ok", start=12)  # wakes the worker
        r.wait_status("b1", pending_batches=0, dead_batches=0, timeout=30)
        # Written by several lanes at once into the retention policy's
        # first shard: influxd may show them a moment after its 204s.
        relaytest.wait_until(lambda: len(influxd.rows(DB, 'SELECT * FROM "later"."late"')) == 15, 10,
                             what="15 points in later.late",
                             detail=lambda: "%d rows" % len(influxd.rows(DB, 'SELECT * FROM "later"."late"')))
        rows = influxd.rows(DB, 'SELECT * FROM "later"."late"')
        self.assertEqual(len(rows), 15)
        want = {}
        for body in bodies:
            want.update(parse_points(body, "s"))
        got = {("late", ",b=%s,l=%s" % (row["b"], row["l"]), "v"): ("%di" % row["v"], row["time"])
               for row in rows}
        self.assertEqual(got, want)

        # dropping
        self.write_batches(r, 2, measurement="never", rp="nope")
        r.wait_status("b1", pending_batches=0, dead_batches=2, timeout=30)
        dead = [d["seq"] for d in self.ctl_json(r, "dlq", "list", "b1")["dead"]]
        cp = self.ctl(r, "dlq", "drop", "b1", str(dead[0]))
        self.assertIn("dropped 1 dead letter (5 points)", cp.stdout)
        cp = self.ctl(r, "dlq", "drop", "b1", "--all", rc=1)
        self.assertIn("--yes", cp.stderr)
        self.ctl(r, "dlq", "drop", "b1", "--all", "--yes")
        self.assertIn("no dead letters", self.ctl(r, "dlq", "list", "b1").stdout)
        self.assertEqual(r.backend_status("b1")["dead_batches"], 0)
        self.assertIn("ok:", self.ctl(r, "verify").stdout)

    # 6

    def test_export_then_influx_import_reproduces_the_points(self):
        r = self.relayd([backend("down", down_url())])
        self.write_batches(r, 4, measurement="cpu", precision="s", unstamped_every=3)
        self.write_batches(r, 3, measurement="mem", db="other", rp="short", precision="ms", start=100)
        self.write_batches(r, 2, measurement="cpu", precision="ns", start=200)
        self.write_batches(r, 2, measurement="disk", precision="u", start=300)
        dump = r.dump("down")
        self.assertEqual(len(dump), 11)
        r.stop()

        base = os.path.join(self.tmp, "backlog")
        doc = self.ctl_json(r, "export", "down", base)
        files = {(f["db"], f["rp"], f["precision"]): f for f in doc["files"]}
        self.assertEqual(set(files), {(DB, "", "s"), ("other", "short", "ms"), (DB, "", "ns"),
                                      (DB, "", "u")})
        self.assertEqual(files[(DB, "", "s")]["points"], 20)
        self.assertEqual(files[(DB, "", "s")]["path"], base + ".telemetry.default.s.lp")
        self.assertEqual(files[("other", "short", "ms")]["path"], base + ".other.short.ms.lp")
        head = read_text(files[("other", "short", "ms")]["path"]).splitlines()[:4]
        self.assertIn("# DML", head)
        self.assertIn("# CONTEXT-DATABASE: other", head)
        self.assertIn("# CONTEXT-RETENTION-POLICY: short", head)
        # never overwritten
        before = {f["path"]: read_text(f["path"]) for f in doc["files"]}
        cp = self.ctl(r, "export", "down", base, rc=1)
        self.assertIn("File exists", cp.stderr)
        self.assertEqual({p: read_text(p) for p in before}, before)
        # the queue is unchanged
        self.assertEqual(r.backend_status("down")["pending_batches"], 11)

        fresh = self.influxd(subdir="fresh", dbs=(DB, "other"))
        fresh.query("other", 'CREATE RETENTION POLICY "short" ON "other" DURATION 0s REPLICATION 1')
        for f in doc["files"]:
            cp = subprocess.run([INFLUX_BIN, "-host", "127.0.0.1", "-port", str(fresh.port), "-import",
                                 "-path", f["path"], "-precision", f["precision"]],
                                capture_output=True, text=True, timeout=60)
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            self.assertIn("Failed 0 inserts", cp.stdout + cp.stderr)
        want = {}
        for d in dump:
            for k, v in parse_points(d["body"], d["precision"]).items():
                want[(d["db"], d["rp"]) + k] = v
        got = {}
        for db, rp, meas in ((DB, "autogen", "cpu"), (DB, "autogen", "disk"), ("other", "short", "mem")):
            for row in fresh.rows(db, 'SELECT * FROM "%s"."%s"' % (rp, meas)):
                got[(db, "" if rp == "autogen" else rp, meas, ",b=%s,l=%s" % (row["b"], row["l"]),
                     "v")] = (lp_value(row["v"]), row["time"])
        self.assertEqual(len(got), 55)
        self.assertEqual(got, want)

    def test_export_dead_letters(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url)])
        bodies = self.write_batches(r, 2, measurement="late", rp="later")
        r.wait_status("b1", pending_batches=0, dead_batches=2, timeout=30)
        base = os.path.join(self.tmp, "dead")
        cp = self.ctl(r, "export", "b1", base, "--dlq")
        path = base + ".telemetry.later.s.lp"
        self.assertIn("wrote %s: 10 points" % path, cp.stdout)
        self.assertIn("influx -import -path='%s' -precision=s" % path, cp.stdout)
        text = read_text(path)
        self.assertTrue(text.endswith("".join(bodies)), text)
        self.assertEqual(r.backend_status("b1")["dead_batches"], 2)
        cp = self.ctl(r, "export", "b1", os.path.join(self.tmp, "none"))
        self.assertIn("nothing to export", cp.stdout)

    # 7

    def test_import_validates_then_queues_for_one_backend_and_relayd_delivers(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url), backend("b2", down_url())], start=False)
        good = os.path.join(self.tmp, "backfill.lp")
        lines = ["# a backfill", ""]
        for i in range(12000):
            if i % 1000 == 7:
                lines.append('imp,k=k%05d v=%di,s="a b c"' % (i, i))  # no timestamp
            else:
                lines.append("imp,k=k%05d v=%di %d" % (i, i, BASE_S + i))
        with open(good, "w") as f:
            f.write("\n".join(lines) + "\n")
        # relayd never ran: no queue to import into
        cp = self.ctl(r, "import", "b1", good, "--db", DB, "--precision", "s", rc=1)
        self.assertIn("does not exist", cp.stderr)
        r.start()
        r.wait_ready()
        r.stop()

        bad = os.path.join(self.tmp, "bad.lp")
        with open(bad, "w") as f:
            f.write("imp v=1i 1\nimp v= 2\nimp v=3i 3\n\nbad\nimp,t= v=1 5\nimp v=6i 6\n")
        cp = self.ctl(r, "import", "b1", bad, "--db", DB, "--precision", "s", rc=1)
        self.assertIn("%s:2:" % bad, cp.stderr)
        self.assertIn("%s:5:" % bad, cp.stderr)
        self.assertIn("%s:6:" % bad, cp.stderr)
        self.assertNotIn("%s:1:" % bad, cp.stderr)
        self.assertIn("3 bad lines: nothing was queued", cp.stderr)
        self.assertEqual(r.backend_status("b1")["pending_batches"], 0)
        self.ctl(r, "import", "b1", good, rc=2)  # no --db
        self.ctl(r, "import", "b1", good, "--db", DB, "--precision", "x", rc=2)

        t0 = time.time_ns()
        doc = self.ctl_json(r, "import", "b1", good, "--db", DB, "--precision", "s")
        t1 = time.time_ns()
        self.assertEqual((doc["points"], doc["batches"]), (12000, 3))
        peek = self.ctl_json(r, "peek", "b1")["batches"]
        self.assertEqual([b["points"] for b in peek], [5000, 5000, 2000])
        self.assertEqual({(b["db"], b["rp"], b["precision"]) for b in peek}, {(DB, "", "s")})
        self.assertEqual(r.backend_status("b2")["pending_batches"], 0)  # for b1 only
        self.assertIn("ok:", self.ctl(r, "verify").stdout)

        r.start()
        r.wait_ready()
        influxd.wait_count(DB, "imp", "v", 12000, timeout=30)
        r.wait_status("b1", pending_batches=0)
        row = influxd.rows(DB, "SELECT * FROM imp WHERE k = 'k01007'")[0]
        self.assertEqual((row["v"], row["s"]), (1007, "a b c"))
        self.assertTrue(t0 // 10 ** 9 * 10 ** 9 <= row["time"] <= t1, row)  # stamped at import
        row = influxd.rows(DB, "SELECT * FROM imp WHERE k = 'k00042'")[0]
        self.assertEqual(row["time"], (BASE_S + 42) * 10 ** 9)

    # 8

    def test_verify_passes_on_a_healthy_store_and_fails_on_damaged_copies(self):
        r = self.relayd([backend("down", down_url())])
        self.write_batches(r, 10)
        r.stop()
        self.assertIn("ok: 10 batches, 1 backend, 0 dead letters", self.ctl(r, "verify").stdout)

        def damaged_copy(name, dbname, damage):
            d = os.path.join(self.tmp, name)
            os.mkdir(d, 0o700)
            shutil.copy(os.path.join(r.data_dir, "data.mdb"), d)
            entries = mdb_dump(d, dbname)
            damage(entries)
            mdb_load(d, dbname, entries)
            c = relaytest.Relayd(None, name=name)
            c.write_config(self.tmp, backends=[backend("down", down_url())], data_dir=d)
            return c

        def counters(entries):
            rec = bytearray(entries[b"down"])
            rec[16:24] = (11).to_bytes(8, "little")  # pending_batches
            entries[b"down"] = bytes(rec)

        def truncated(entries):
            key = (3).to_bytes(8, "big")
            entries[key] = entries[key][:-5]

        c1 = damaged_copy("copy1", "backends", counters)
        cp = self.ctl(c1, "verify", rc=1)
        self.assertIn("damaged: backend 'down': counters say 11 batches", cp.stdout)
        self.assertIn("1 problem", cp.stdout)
        c2 = damaged_copy("copy2", "batches", truncated)
        doc = self.ctl_json(c2, "verify", rc=1)
        self.assertFalse(doc["ok"])
        self.assertTrue(any("batch 3: corrupt, checksum" in p for p in doc["problems"]), doc)
        # the original is untouched and healthy
        self.assertIn("ok:", self.ctl(r, "verify").stdout)

    # 9

    def test_relayctl_killed_in_a_loop_while_relayd_ingests_does_not_grow_the_file(self):
        influxd = self.influxd()
        r = self.relayd([backend("b1", influxd.url)])
        data = os.path.join(r.data_dir, "data.mdb")
        # Dead letters (kept apart, never delivered) give relayctl's reads
        # something to copy: export --dlq spends milliseconds inside each
        # read transaction, where a kill -9 leaves a stale reader slot.
        pad = "x" * 80
        for i in range(40):
            body = "".join("dead,b=b%03d,l=l%03d v=%di,pad=\"%s\" %d\n"
                           % (i, j, j, pad, (BASE_S + j) * 10 ** 9) for j in range(1000))
            status, _, resp = r.write(DB, body, rp="nope")
            self.assertEqual(status, 204, resp)
        r.wait_status("b1", pending_batches=0, dead_batches=40, timeout=60)
        base_size = os.path.getsize(data)
        stop = threading.Event()
        written = [0]
        errors = []

        def writer():
            # ~20 KiB batches, about 25 a second (~0.5 MiB/s) for as long as
            # the test runs, delivered (and deleted) as they come.
            i = 0
            try:
                while not stop.is_set():
                    body = "".join("load,b=b%06d,l=l%03d v=%di,pad=\"%s\" %d\n"
                                   % (i, j, j, pad[:60], (BASE_S + i) * 10 ** 9 + j) for j in range(200))
                    status, _, resp = r.write(DB, body)
                    if status != 204:
                        raise AssertionError("write %d: %d %r" % (i, status, resp))
                    written[0] += len(body)
                    i += 1
                    time.sleep(0.04)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=writer)
        t.start()
        killed = 0
        stale_seen = 0
        rng = random.Random(5)
        try:
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                choice = rng.randrange(4)
                if choice == 0:
                    # reads its first page, then cannot create the file:
                    # the transaction without the disk traffic
                    args = ["export", "b1", os.path.join(self.tmp, "no", "such", "dir"), "--dlq"]
                elif choice == 1:
                    args = ["dump", "b1"]
                elif choice == 2:
                    args = ["verify"]
                else:
                    args = ["dlq", "list", "b1"]
                p = subprocess.Popen([relaytest.RELAYCTL_BIN, "-c", r.config] + args,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                     stdin=subprocess.DEVNULL)
                time.sleep(rng.uniform(0.0, 0.06))
                p.send_signal(signal.SIGKILL)
                p.wait()
                killed += 1
                if killed % 10 == 0:
                    stale_seen = max(stale_seen, stale_readers(r.data_dir))
            # No relayctl opens the queue any more (each open also frees
            # dead slots): relayd frees what is left, every 10 s of appends.
            left = stale_readers(r.data_dir)
            stale_seen = max(stale_seen, left)
            wait_until_s = time.monotonic() + 25
            while time.monotonic() < wait_until_s and left:
                time.sleep(0.5)
                left = stale_readers(r.data_dir)
        finally:
            stop.set()
            t.join()
        self.assertEqual(errors, [])
        r.wait_status("b1", pending_batches=0, dead_batches=40, timeout=60)
        # How far the file grew during the kill loop depends on how far
        # delivery fell behind on a loaded machine (the backlog is on
        # disk). What a snapshot pinned by a killed relayctl would do is
        # keep the file from reusing the pages freed since: so write as
        # much again, now without kills, and the file must not grow by it.
        size_after_loop = os.path.getsize(data)
        more = 0
        i = 10 ** 6
        while more < 4 << 20:
            body = "".join("load,b=b%06d,l=l%03d v=%di,pad=\"%s\" %d\n"
                           % (i, j, j, pad[:60], (BASE_S + i) * 10 ** 9 + j) for j in range(200))
            status, _, resp = r.write(DB, body)
            self.assertEqual(status, 204, resp)
            more += len(body)
            i += 1
            if i % 20 == 0:
                r.wait_status("b1", pending_batches=0, timeout=30)
        r.wait_status("b1", pending_batches=0, dead_batches=40, timeout=30)
        size = os.path.getsize(data)
        relaytest._log("after the kill loop: data.mdb %d bytes; after %d bytes more: %d bytes"
                       % (size_after_loop, more, size))
        self.assertLess(size - size_after_loop, more // 2,
                        "data.mdb grew with what was written after the kill loop: pages stay pinned")
        relaytest._log("relayctl killed %d times; up to %d stale reader slots seen; %d bytes "
                       "written; data.mdb %d bytes (%d before)"
                       % (killed, stale_seen, written[0], size, base_size))
        self.assertGreater(killed, 50)
        self.assertEqual(left, 0, "stale reader slots of killed relayctls were not freed")
        # A snapshot pinned for good would keep everything written since:
        # the file would grow by about what was written.
        self.assertGreater(written[0], 4 << 20)

        self.assertIn("ok:", self.ctl(r, "verify").stdout)

    # 10 (issue 10): the control channel and relayctl's output against
    # hostile clients and stored values

    def test_a_control_client_that_never_reads_holds_little_memory(self):
        """A client writes `status` requests on relayd.sock and never reads:
        relayd stops reading from it once about 64 KiB of answers wait, so
        the client cannot even send its 2 MiB, and relayd's RSS stays near
        where it was (before: 4.5 MB -> 149 MB). relayctl is served
        meanwhile; when the client reads at last it gets one whole status
        per request it got in, and the connection goes on."""
        r = self.relayd([backend("b1", down_url())])
        self.write_batches(r, 2)
        before = relaytest.proc_mem(r.proc.pid)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.addCleanup(sock.close)
        sock.connect(os.path.join(r.data_dir, "relayd.sock"))
        sock.setblocking(False)
        chunk = b"status\n" * 1024
        total, sent = 2 << 20, 0
        stuck_since = time.monotonic()
        deadline = stuck_since + 20
        while sent < total and time.monotonic() < deadline:
            try:
                n = sock.send(chunk[sent % len(chunk):][:total - sent])
                sent += n
                stuck_since = time.monotonic()
            except BlockingIOError:
                if time.monotonic() - stuck_since > 1.0:
                    break  # relayd stopped reading
                time.sleep(0.005)
        during = relaytest.proc_mem(r.proc.pid)
        relaytest._log("control client that never reads: %d of %d bytes of requests got in; relayd VmRSS "
                       "%.1f MiB before, %.1f MiB after (VmHWM %.1f MiB)"
                       % (sent, total, before["VmRSS"] / MIB, during["VmRSS"] / MIB, during["VmHWM"] / MIB))
        self.assertLess(sent, total, "relayd read every request of a client that never reads")
        self.assertLess(during["VmHWM"] - before["VmRSS"], (48 if ASAN else 16) * MIB)
        # relayd is not held up by it
        self.assertEqual(self.ctl_json(r, "status")["relayd"], "running")
        self.assertTrue(self.relayd_answers(r))
        # now read: one whole status per whole request that got in
        sock.setblocking(True)
        sock.settimeout(10)
        want, got, buf = sent // 7, 0, b""
        while got < want:
            data = sock.recv(1 << 16)
            self.assertTrue(data, "relayd closed after %d of %d answers" % (got, want))
            buf += data
            *lines, buf = buf.split(b"\n")
            for line in lines:
                self.assertTrue(line.startswith(b"ok {"), line[:100])
                doc = json.loads(line[3:])
                self.assertEqual(doc["backends"][0]["name"], "b1")
                got += 1
        self.assertEqual((got, buf), (want, b""))
        if sent % 7:
            sock.sendall(b"status\n"[sent % 7:])  # the request cut in the middle
            self.assertTrue(sock.recv(1 << 16).startswith(b"ok {"))
        sock.sendall(b"ping\n")
        self.assertEqual(sock.recv(100), b"ok relayd\n")
        # an over-long request line: a clear error, then relayd hangs up
        sock.sendall(b"x" * 5000)
        self.assertEqual(sock.recv(100), b"error request line too long\n")
        try:
            self.assertEqual(sock.recv(100), b"")
        except ConnectionResetError:
            pass  # closed with the rest of the line unread

    def test_an_absurd_stored_time_is_refused_not_computed_with(self):
        """A batch whose stored acceptance time is INT64_MIN or INT64_MAX
        (a damaged record): the queue's decoder refuses it as corrupt, so
        status, peek and relayd's /health never compute "now - accept_ns"
        with it (under UBSan that was a signed overflow that stopped the
        program); verify names the time."""
        r = self.relayd([backend("b1", down_url())])
        self.write_batches(r, 3)
        # Paused: relayd then never reads the queue, so the damaged record
        # stays where it is (a worker would quarantine it) for the next
        # round of this test.
        self.ctl(r, "pause", "b1")
        r.stop()
        good = mdb_dump(r.data_dir, "batches")
        for t in (-2 ** 63, 2 ** 63 - 1, -1):
            entries = dict(good)
            key = (1).to_bytes(8, "big")
            rec = dict(parse_batch_record(entries[key]), accept_ns=t)
            entries[key] = batch_record(**rec)
            mdb_load(r.data_dir, "batches", entries)
            cp = self.ctl(r, "verify", rc=1)
            self.assertIn("damaged: batch 1: corrupt, acceptance time %d ns is outside 1970..2200" % t, cp.stdout)
            for args in (("status",), ("status", "--json"), ("peek", "b1"), ("dump", "b1"),
                         ("export", "b1", os.path.join(self.tmp, "x" + str(t).replace("-", "m")))):
                cp = self.ctl(r, *args, rc=1)
                self.assertRegex(cp.stderr, r"batch 1 (of backend 'b1' is corrupt|not exported: corrupt)")
            # status still shows every queue, the damaged one as such
            self.assertRegex(self.ctl(r, "status", rc=1).stdout, r"\nb1 +damaged ")
            doc = json.loads(self.ctl(r, "status", "--json", rc=1).stdout)
            self.assertEqual(doc["backends"][0]["state"], "damaged")
            # relayd starts, answers /health, and reports the damage
            r.start()
            r.wait_ready()
            status, _, body = r.get("/health")
            self.assertEqual(status, 200)
            doc = json.loads(body)
            self.assertEqual(doc["backends"][0]["name"], "b1")
            self.assertGreaterEqual(doc["backends"][0]["oldest_age_seconds"], 0)
            cp = self.ctl(r, "status", rc=1)
            self.assertIn("relayd: running", cp.stdout)
            r.stop()
        mdb_load(r.data_dir, "batches", good)
        self.assertIn("ok: 3 batches", self.ctl(r, "verify").stdout)

    def rewrite_batches(self, r, changes):
        """relayd stopped: rewrite stored batches in place (mdb_load), each
        {seq: {field: value}} over the record's fields (bytes for the six
        strings and the body)."""
        entries = mdb_dump(r.data_dir, "batches")
        for seq, fields in changes.items():
            key = seq.to_bytes(8, "big")
            rec = parse_batch_record(entries[key])
            rec.update(fields)
            if "body" in fields:
                rec["lines"] = fields["body"].count(b"\n")
            entries[key] = batch_record(**rec)
        mdb_load(r.data_dir, "batches", entries)

    def test_export_files_cannot_be_restructured_by_stored_values(self):
        """Stored values that would change what `influx -import` does with an
        export file (a database name with a newline and a CONTEXT-DATABASE
        line, one with a ':' or leading white space, which the importer cuts
        and trims, a string field holding a newline and a context line, a
        body line starting with '#', a body without its last newline) are
        not exported: each such batch is named with the reason, counted,
        and the exit status is 1; every other batch is exported. Loaded
        into a real influxd, the files put nothing into the victim
        database and every good point where it belongs."""
        r = self.relayd([backend("down", down_url())])
        self.write_batches(r, 3, measurement="good", precision="s")
        self.write_batches(r, 7, measurement="bad", precision="s", start=10)
        r.stop()
        inj = b"vm v=1i %d\n" % (BASE_S + 1)
        self.rewrite_batches(r, {
            4: {"db": b"telemetry\n# CONTEXT-DATABASE: victim\n", "body": inj},
            5: {"db": b"victim:x", "body": inj},
            6: {"db": b" victim", "body": inj},
            7: {"body": b'm s="a\n# CONTEXT-DATABASE: victim\nvm v=2i %d\n" %d\n' % (BASE_S + 2, BASE_S + 3)},
            8: {"body": b"# CONTEXT-DATABASE: victim\n" + inj},
            9: {"body": inj[:-1]},
            10: {"rp": b"autogen\n# CONTEXT-DATABASE: victim"},
        })
        base = os.path.join(self.tmp, "out")
        cp = self.ctl(r, "export", "down", base, rc=1)
        for seq in range(4, 11):
            self.assertRegex(cp.stderr, r"batch %d not exported: " % seq)
        self.assertIn("7 batches not exported", cp.stderr)
        for ch in "\x1b\r":
            self.assertNotIn(ch, cp.stdout + cp.stderr)
        os.unlink(base + ".telemetry.default.s.lp")
        doc = self.ctl_json(r, "export", "down", base, rc=1)
        self.assertEqual(doc["skipped_batches"], 7)
        self.assertEqual([b["seq"] for b in doc["skipped"]], list(range(4, 11)))
        self.assertEqual([(f["db"], f["batches"], f["points"]) for f in doc["files"]], [(DB, 3, 15)])
        text = read_text(doc["files"][0]["path"])
        self.assertNotIn("victim", text)

        fresh = self.influxd(subdir="fresh", dbs=(DB, "victim"))
        cp = subprocess.run([INFLUX_BIN, "-host", "127.0.0.1", "-port", str(fresh.port), "-import",
                             "-path", doc["files"][0]["path"], "-precision", "s"],
                            capture_output=True, text=True, timeout=60)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertEqual(fresh.count(DB, "good", "v"), 15)
        self.assertEqual(fresh.query("victim", "SHOW SERIES")["results"][0].get("series"), None)
        self.assertEqual(fresh.count(DB, "vm", "v"), 0)

    def test_export_file_names_always_fit(self):
        """A 60 000-byte database name made the whole export fail with
        ENAMETOOLONG (nothing written, and export is the step before a
        purge): a long name becomes its first characters and a short hash
        of the whole, so that two long names with the same start get two
        files, and only safe characters are used. A FILE whose own name
        leaves no room is refused before anything is read."""
        r = self.relayd([backend("down", down_url())])
        self.write_batches(r, 3, precision="s")
        r.stop()
        long1 = b"d" * 60000
        long2 = b"d" * 59999 + b"e"
        self.rewrite_batches(r, {1: {"db": long1}, 2: {"db": long2}, 3: {"rp": b"r/../" * 100}})
        base = os.path.join(self.tmp, "out")
        doc = self.ctl_json(r, "export", "down", base)
        self.assertEqual(len(doc["files"]), 3)
        names = [os.path.basename(f["path"]) for f in doc["files"]]
        self.assertEqual(len(set(names)), 3)
        for n in names:
            self.assertLessEqual(len(n.encode()), 255, n)
            self.assertRegex(n, r"^out\.[A-Za-z0-9_.-]+\.s\.lp$")
            self.assertTrue(os.path.exists(os.path.join(self.tmp, n)))
        self.assertTrue(names[0].startswith("out." + "d" * 40))
        self.assertNotEqual(names[0], names[1])
        self.assertEqual([f["db"] for f in doc["files"]], [long1.decode(), long2.decode(), DB])
        with open(doc["files"][0]["path"]) as f:
            self.assertIn("# CONTEXT-DATABASE: %s\n" % long1.decode(), f.read())
        cp = self.ctl(r, "export", "down", os.path.join(self.tmp, "x" * 200), rc=1)
        self.assertIn("too long", cp.stderr)
        self.assertEqual(sorted(os.listdir(self.tmp)).count("x" * 200), 0)

    def test_import_refuses_control_bytes_in_names(self):
        """import queues batches with the --db and --rp given: a control
        byte there (ESC, CR, LF, DEL...) would be stored and shown, sent
        and exported later; the door refuses them, and so does import,
        naming the batch and the field, queueing nothing."""
        r = self.relayd([backend("b1", down_url())])
        r.stop()
        good = os.path.join(self.tmp, "in.lp")
        with open(good, "w") as f:
            f.write("".join("imp v=%di %d\n" % (i, BASE_S + i) for i in range(7000)))
        for db, rp, field in (("x\x1b[2Jy", None, "db"), ("x\ny", None, "db"), (DB, "r\r", "rp"),
                              (DB, "r\x7f", "rp"), ("\x01", None, "db")):
            args = ["import", "b1", good, "--db", db, "--precision", "s"] + (["--rp", rp] if rp else [])
            cp = self.ctl(r, *args, rc=1)
            self.assertRegex(cp.stderr, r"batch 1 \(points 1\.\.5000\): its %s .* holds a control byte" % field)
            self.assertIn("nothing was queued", cp.stderr)
            self.assertNotIn("\x1b", cp.stderr)
            self.assertEqual(r.backend_status("b1")["pending_batches"], 0)
        doc = self.ctl_json(r, "import", "b1", good, "--db", "ok db", "--rp", "r\u00e9", "--precision", "s")
        self.assertEqual(doc["batches"], 2)

    def test_what_relayctl_prints_from_the_queue_or_relayd_is_escaped(self):
        """Names, messages and bodies from the queue (db, rp, org, user, a
        dead letter's message, an orphaned queue's name, line protocol) and
        from relayd's answers (state, last error, version, an error reply)
        may hold any byte. No text output lets a control byte through
        (ESC, CR, BEL, DEL, C1, bytes that are not UTF-8): they show as
        \\xHH; every JSON output is valid UTF-8 JSON that gives the stored
        strings back exactly."""
        r = self.relayd([backend("b1", down_url())])
        self.write_batches(r, 2)
        r.stop()
        evil_db = b"db\x1b[31mRED\r\nX"
        evil_rp = b"rp\x07\x7f"
        evil_user = b"u\xc2\x9b2J"  # U+009B, the C1 CSI
        body = b'm,t=a\x1b[2J s="x\x1b[H\ny" 1600000000\n'
        self.rewrite_batches(r, {1: {"db": evil_db, "rp": evil_rp, "org": b"o\x1b]0;title\x07",
                                     "user": evil_user, "body": body},
                                 2: {"db": b"raw\x9b\xff"}})  # not UTF-8
        msg = b"HTTP 400: \x1b]0;pwned\x07\r\nfake line \xe2\x80\xae"
        dead = (struct.pack("<iIqH6x", 400, 3, BASE_S * 10 ** 9, len(msg)) + msg
                + batch_record(route=1, accept_ns=BASE_S * 10 ** 9, lines=1, precision=3,
                               body=b"m v=1i 1\n", db=evil_db))
        mdb_load(r.data_dir, "dead", {bytes([0]) + (1000).to_bytes(8, "big"): dead})
        rec = bytearray(mdb_dump(r.data_dir, "backends")[b"b1"])
        rec[0:4] = (7).to_bytes(4, "little")  # an id of its own
        rec[16:24] = (1).to_bytes(8, "little")  # "pending": listed as orphaned
        mdb_load(r.data_dir, "backends", {b"gone\x1b[2J": bytes(rec)})

        status = {"pid": os.getpid(), "version": "9\x1b[2J", "started_ns": 1, "backends": [
            {"name": "b1", "state": "up\x1b[5m", "last_error": "HTTP 500: \x1b]0;pwned\x07\r\nfake \x9b",
             "head_seq": 1, "attempts": 2, "next_attempt_ms": 100, "last_delivery_ns": 0,
             "delivered_points": 0, "points_per_second": 1.0}]}
        d = ScriptedDaemon(os.path.join(r.data_dir, "relayd.sock"), {
            "status": "ok " + json.dumps(status), "notify b1": "error busy \x1b[2J\x07",
            "retry b1": "error not now \x1b[2J"})
        self.addCleanup(d.close)

        def run(*args, rc=0):
            cp = subprocess.run([relaytest.RELAYCTL_BIN, "-c", r.config] + list(args),
                                stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
            err = cp.stderr.decode("utf-8", "replace")
            self.assertIsNone(relaytest.sanitizer_report(err), err)
            if rc is not None:
                self.assertEqual(cp.returncode, rc, (args, cp.stdout[:2000], err))
            return cp

        bad = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")

        def safe_text(args, data):
            text = data.decode("utf-8")  # bytes that are not UTF-8 are escaped too
            m = bad.search(text)
            self.assertIsNone(m, "%s printed %r raw: %r" % (args, m and m.group(), text[:3000]))
            return text

        texts = {}
        for args, rc in ((("status",), 0), (("peek", "b1"), 0), (("show", "b1", "1"), 0),
                         (("show", "b1", "2"), 0), (("dlq", "list", "b1"), 0), (("dlq", "show", "b1", "1000"), 0),
                         (("export", "b1", os.path.join(self.tmp, "e")), 1), (("verify",), 1),
                         (("pause", "b1"), 0), (("retry", "b1"), 1), (("status", "--json"), 0)):
            cp = run(*args, rc=rc)
            texts[args] = safe_text(args, cp.stdout)
            safe_text(args, cp.stderr)
        self.assertIn("\\x1b[31mRED\\x0d\\x0aX", texts[("show", "b1", "1")] + texts[("dlq", "show", "b1", "1000")])
        self.assertIn('m,t=a\\x1b[2J s="x\\x1b[H\\x0ay" 1600000000\n', texts[("show", "b1", "1")])
        self.assertIn("gone\\x1b[2J", texts[("status",)])
        self.assertIn("\\x1b]0;pwned\\x07\\x0d\\x0afake", texts[("status",)])
        self.assertIn("9\\x1b[2J", texts[("status",)])
        self.assertIn("\\x1b]0;pwned\\x07\\x0d\\x0afake line \\xe2\\x80\\xae", texts[("dlq", "list", "b1")])
        self.assertIn("busy \\x1b[2J\\x07", texts[("pause", "b1")])

        # JSON: valid, and the stored strings come back exactly
        def j(*args, rc=0):
            cp = run(*(args + ("--json",)), rc=rc)
            return json.loads(safe_json(cp.stdout))

        def safe_json(data):
            text = data.decode("utf-8")
            self.assertIsNone(bad.search(text), text[:2000])
            return text

        st = j("status")
        self.assertEqual([b["name"] for b in st["backends"]], ["b1", "gone\x1b[2J"])
        self.assertEqual(st["backends"][0]["last_error"], status["backends"][0]["last_error"])
        self.assertEqual(st["backends"][0]["state"], "up\x1b[5m")
        peek = j("peek", "b1")["batches"]
        self.assertEqual((peek[0]["db"], peek[0]["rp"]), (evil_db.decode(), evil_rp.decode()))
        self.assertEqual(peek[1]["db"], "raw\ufffd\ufffd")
        self.assertEqual(j("show", "b1", "1")["body"], body.decode())
        dl = j("dlq", "list", "b1")["dead"][0]
        self.assertEqual((dl["db"], dl["message"]), (evil_db.decode(), msg.decode()))
        self.assertEqual(j("dlq", "show", "b1", "1000")[0]["message"], msg.decode())
        self.assertTrue(any("gone\x1b[2J" in p for p in j("verify", rc=1)["problems"]))
        dump = [json.loads(line) for line in safe_json(run("dump", "b1").stdout).splitlines()]
        self.assertEqual((dump[0]["db"], dump[0]["org"], dump[0]["user"]),
                         (evil_db.decode(), "o\x1b]0;title\x07", evil_user.decode()))


# ---- lmdb-utils ------------------------------------------------------------


# ---- batch records (docs/architecture.md, "On-disk format") ---------------

BATCH_HDR = struct.Struct("<QqQIIBBH6H")  # 48 bytes
STRS = ("db", "rp", "user", "password", "org", "token")


def parse_batch_record(rec):
    """The fields of a stored batch record, as batch_record takes them."""
    route, accept_ns, _, lines, body_len, _, precision, _, *lens = BATCH_HDR.unpack_from(rec)
    out = {"route": route, "accept_ns": accept_ns, "lines": lines, "precision": precision}
    off = BATCH_HDR.size
    for name, n in zip(STRS, lens):
        out[name] = rec[off:off + n]
        off += n
    out["body"] = rec[off:off + body_len]
    return out


def batch_record(route, accept_ns, lines, precision, body, **strs):
    """A stored batch record (format 2, sealed); strs are bytes (db, rp, user, password, org, token)."""
    vals = [strs.get(k, b"") for k in STRS]
    return seal(BATCH_HDR.pack(route, accept_ns, 0, lines, len(body), 2, precision, 0, *map(len, vals))
                + b"".join(vals) + body)


def stale_readers(env_dir):
    """Reader slots of processes that no longer exist (mdb_stat -r)."""
    cp = subprocess.run([MDB_STAT, "-r", env_dir], capture_output=True, text=True)
    n = 0
    for line in cp.stdout.splitlines():
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            try:
                os.kill(int(parts[0]), 0)
            except ProcessLookupError:
                n += 1
            except PermissionError:
                pass
    return n


if __name__ == "__main__":
    # influx (influxdb-client) and lmdb-utils come with make test-deps.
    relaytest.main(require=("relayd", "relayctl", "influxd", "influx", "mdb_dump", "mdb_load",
                            "mdb_stat"))
