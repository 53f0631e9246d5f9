#!/usr/bin/env python3
"""
Delivery under faults a real influxd cannot produce on demand: a backend
that hangs, resets in the middle of its answer, answers 503 with
Retry-After, 413 above an exact size, 503 while a backlog builds up, starts
listening only later, or answers 401 until it is fixed. The backend is
fakeinflux (a scripted server on loopback, see fakeinflux.py), which records
every request; where it makes sense a real influxd is a second backend
beside it, to show that one backend's trouble does not hold back another.
"""

import base64
import collections
import threading
import time
import unittest
import urllib.parse

import fakeinflux
import relaytest
from relaytest import MDB_DUMP, MDB_LOAD, mdb_dump, mdb_load  # noqa: E402 (the queue file's tools)

DB = "telemetry"
BASE_NS = 1_600_000_000 * 10 ** 9





def lines_for(tag, n, pad=0):
    """n distinct lines with timestamps (stored byte for byte as sent)."""
    return ['fault,batch=%s,line=l%04d value=%di%s %d'
            % (tag, j, j, ',pad="%s"' % ("p" * ((j * 7) % pad)) if pad else "", BASE_NS + j)
            for j in range(n)]


def body_of(lines):
    return "\n".join(lines) + "\n"






class FaultTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def fake(self, port=None):
        return fakeinflux.FakeInflux(port=port, guard=self.addCleanup).start()

    def influxd(self):
        i = relaytest.Influxd(self.addCleanup)
        i.start(self.tmp)
        i.create_db(DB)
        return i

    def relayd(self, backends):
        # These tests script the fake request by request: one write in
        # flight per backend (parallel: 1) unless a test says otherwise.
        backends = [dict({"parallel": 1}, **b) if isinstance(b, dict) else b for b in backends]
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=backends)
        r.start()
        r.wait_ready()
        return r

    def write(self, r, body, **kw):
        status, _, resp = r.write(DB, body, **kw)
        self.assertEqual(status, 204, resp)

    def warm(self, r, fake, name="fake"):
        """One point in BASE_NS's hour, delivered, then forgotten by the
        fake: relayd's worker now knows that hour, so the test's writes
        into it go in lanes from the first (a write into an hour it has
        not written into goes whole: test_first_write_into_an_hour_goes_whole)."""
        self.write(r, "warm v=1i %d\n" % BASE_NS)
        self.drained(r, name)
        fake.forget()

    def drained(self, r, name, dead=0, timeout=20.0):
        return r.wait_status(name, timeout, pending_batches=0, pending_points=0,
                             pending_bytes=0, dead_batches=dead)

    def posts_seen(self, fake, n, timeout=10.0):
        """Wait until n POST /write arrived (answered or not)."""
        fake.wait_for(lambda reqs: sum(1 for q in reqs if q.method == "POST") >= n,
                      timeout, "%d POST /write" % n)
        return fake.writes()

    # a

    def test_hang_times_out_and_is_retried(self):
        fake = self.fake()
        fake.script("hang", "hang")
        real = self.influxd()
        r = self.relayd([
            {"name": "fake", "url": fake.url, "timeout": "1s", "retry_min": "100ms",
             "retry_max": "1s"},
            {"name": "real", "url": real.url, "retry_min": "100ms", "retry_max": "1s"}])
        body = body_of(lines_for("hang", 20))
        self.write(r, body)
        self.posts_seen(fake, 1)
        # The real backend is not held back by the hanging one (which
        # hangs twice: for two timeouts, more than 2 s).
        real.wait_count(DB, "fault", "value", 20, timeout=1.8)
        self.assertEqual(len(fake.delivered()), 0, fake.describe())
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        self.drained(r, "real")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["hang", "hang", "204"], fake.describe())
        self.assertEqual([w.text() for w in ws], [body] * 3, "a retry sent another body")
        for a, b in zip(ws, ws[1:]):
            gap = b.t - a.t
            self.assertGreaterEqual(gap, 0.9, "retried %.2f s after a hang, before the 1 s "
                                    "timeout" % gap)
            self.assertLess(gap, 5.0, "retried only %.2f s after a 1 s timeout" % gap)
        self.assertEqual(ws[0].query.get("db"), DB)
        r.wait_log(r"backend 'fake' is (down|answers with errors)", timeout=2)
        r.wait_log(r"backend 'fake' is up again", timeout=2)
        self.assertEqual(r.log_matches(r"backend 'real' is (down|HOLDING|answers)"), [])
        self.assertEqual(real.points_written_ok(), 20)

    # b

    def test_reset_mid_response_keeps_the_batch(self):
        fake = self.fake()
        gate = threading.Event()
        fake.script("reset_mid_response", fakeinflux.gated(gate, "ok"))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "1s"}])
        body = body_of(lines_for("reset", 10))
        self.write(r, body)
        ws = self.posts_seen(fake, 2)
        self.assertEqual(ws[0].answer, "reset")
        # The partial "HTTP/1.1 204 ..." was no delivery: still queued.
        st = r.backend_status("fake")
        self.assertEqual((st["pending_batches"], st["pending_points"], st["dead_batches"]),
                         (1, 10, 0), "after a reset in the middle of the response")
        gate.set()
        fake.wait_delivered(1, timeout=5)
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["reset", "204"], fake.describe())
        self.assertEqual([w.text() for w in ws], [body, body])

    # c

    def test_503_retry_after_is_honoured(self):
        fake = self.fake()
        fake.script(fakeinflux.influx_error(503, "service unavailable",
                                            {"Retry-After": "2"}))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "10s"}])
        body = body_of(lines_for("ra", 5))
        self.write(r, body)
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["503", "204"], fake.describe())
        gap = ws[1].t - ws[0].t
        self.assertTrue(1.7 <= gap <= 4.0,
                        "second attempt %.2f s after a 503 with Retry-After: 2" % gap)
        self.assertEqual(ws[1].text(), body)

    def test_retry_after_is_capped_at_retry_max(self):
        fake = self.fake()
        fake.script(fakeinflux.influx_error(429, "too many requests",
                                            {"Retry-After": "3600"}))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "1s"}])
        self.write(r, body_of(lines_for("cap", 5)))
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["429", "204"], fake.describe())
        gap = ws[1].t - ws[0].t
        self.assertTrue(0.09 <= gap <= 2.0,
                        "Retry-After: 3600 with retry_max 1s: retried after %.2f s" % gap)

    def assert_spaced(self, ws, least, what):
        """Every attempt in ws at least `least` seconds after the one
        before it."""
        for a, b in zip(ws, ws[1:]):
            self.assertGreaterEqual(b.t - a.t, least, "%s: an attempt %.3f s after the one before"
                                    % (what, b.t - a.t))

    def test_retry_after_overflow_is_capped_not_wrapped(self):
        # 2**61 s is 2**64 * 125 in ms: a product that wraps is 0 ms, and
        # 2**64 + 1 does not fit in 64 bits at all. Each must wait the cap
        # (retry_max), like any Retry-After beyond it.
        for value in ("2305843009213693952", "18446744073709551617",
                      "99999999999999999999999999999999"):
            with self.subTest(retry_after=value):
                self.tmp = relaytest.make_tmpdir(self.addCleanup)  # a relayd of its own
                fake = self.fake()
                fake.set_default(fakeinflux.influx_error(503, "overloaded", {"Retry-After": value}))
                r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                                  "retry_max": "1s"}])
                self.write(r, body_of(lines_for("ra-wrap", 5)))
                self.posts_seen(fake, 1)
                time.sleep(3.0)
                ws = fake.writes()
                self.assertLessEqual(len(ws), 5, "Retry-After: %s: %d POSTs in about 3 s"
                                     % (value, len(ws)))
                self.assert_spaced(ws, 0.9, "Retry-After: %s with retry_max 1s" % value)
                st = r.backend_status("fake")
                self.assertEqual((st["state"], st["pending_batches"]), ("retrying", 1))
                fake.set_default("ok")
                self.drained(r, "fake")
                r.stop()
                fake.stop()

    def test_retry_after_keeps_the_hold_floor(self):
        # A hold (401) waits at least 1 s whatever the server says; a
        # Retry-After that wraps to 0 ms must not undo that.
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(401, "authorization failed",
                                                 {"Retry-After": "2305843009213693952"}))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "10ms",
                          "retry_max": "1500ms"}])
        self.write(r, body_of(lines_for("ra-hold", 5)))
        self.posts_seen(fake, 1)
        time.sleep(3.0)
        ws = fake.writes()
        self.assertLessEqual(len(ws), 4, "%d POSTs in about 3 s of a hold" % len(ws))
        self.assert_spaced(ws, 0.95, "a hold with Retry-After: 2**61")
        self.assertEqual(r.backend_status("fake")["state"], "holding")

    def test_retry_after_small_values_keep_retry_min(self):
        # "Retry-After: 1" with retry_min 1.5s: the configured floor wins.
        fake = self.fake()
        fake.script(fakeinflux.influx_error(503, "busy", {"Retry-After": "1"}))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "1500ms",
                          "retry_max": "5s"}])
        self.write(r, body_of(lines_for("ra-min", 5)))
        fake.wait_delivered(1, timeout=10)
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["503", "204"], fake.describe())
        self.assertGreaterEqual(ws[1].t - ws[0].t, 1.45)

    def test_retry_after_http_date(self):
        # The HTTP-date form (RFC 9110 section 10.2.3), about 3 s ahead: the
        # next attempt comes 2 to 3 s later (the date has whole seconds),
        # not after retry_min.
        fake = self.fake()
        when = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 3))
        fake.script(fakeinflux.influx_error(503, "maintenance", {"Retry-After": when}))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "10s"}])
        self.write(r, body_of(lines_for("ra-date", 5)))
        fake.wait_delivered(1, timeout=10)
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["503", "204"], fake.describe())
        gap = ws[1].t - ws[0].t
        self.assertTrue(1.7 <= gap <= 3.8, "Retry-After: %s: retried after %.2f s" % (when, gap))

    def test_retry_after_garbage_is_ignored(self):
        # Neither seconds nor a date: the ordinary backoff decides.
        for value in ("-1", "+5", "5s", "1e3", "Tue, 99 Foo 2026 25:61:61 GMT", " 7 7"):
            with self.subTest(retry_after=value):
                self.tmp = relaytest.make_tmpdir(self.addCleanup)  # a relayd of its own
                fake = self.fake()
                fake.script(fakeinflux.influx_error(503, "busy", {"Retry-After": value}))
                r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                                  "retry_max": "600ms"}])
                self.write(r, body_of(lines_for("ra-bad", 3)))
                fake.wait_delivered(1, timeout=10)
                ws = fake.writes()
                self.assertEqual([w.answer for w in ws], ["503", "204"], fake.describe())
                gap = ws[1].t - ws[0].t
                self.assertTrue(0.09 <= gap <= 1.0, "Retry-After: %r: retried after %.2f s"
                                % (value, gap))
                r.stop()
                fake.stop()

    # interim (1xx) answers before the final one

    def test_interim_answers_are_skipped(self):
        fake = self.fake()
        fake.script(fakeinflux.interim(100),
                    fakeinflux.interim((103, {"Link": "</x>; rel=preload"})),
                    fakeinflux.interim(100, 103, 102, (103, {"Retry-After": "3600"}), pause=0.05),
                    fakeinflux.interim(100, 103, then=fakeinflux.influx_error(503, "busy")),
                    fakeinflux.interim(103, 103, 103, 103))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "200ms",
                          "retry_max": "400ms"}])
        bodies = [body_of(lines_for("interim%d" % i, 3)) for i in range(4)]
        for b in bodies[:3]:
            # Counted before the write: relayd may deliver it before the
            # write call returns here.
            n = len(fake.delivered())
            self.write(r, b)
            fake.wait_delivered(n + 1, timeout=5)
        # A 503 after interim answers is still a 503 (and a Retry-After
        # of an interim answer is not the final answer's): retried after
        # the backoff, then delivered.
        self.write(r, bodies[3])
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["204", "204", "204", "503", "204"], fake.describe())
        self.assertEqual([w.interim for w in ws], [[100], [103], [100, 103, 102, 103], [100, 103],
                                                   [103, 103, 103, 103]])
        self.assertEqual([w.text() for w in ws], bodies[:3] + [bodies[3]] * 2)
        self.assertTrue(0.19 <= ws[4].t - ws[3].t <= 1.5, fake.describe())
        # Every answer was read whole: the connection stays in step.
        self.assertEqual(len({w.conn_id for w in ws}), 1, fake.describe())
        self.assertEqual(r.backend_status("fake")["dead_batches"], 0)

    def test_101_is_a_failure(self):
        # 101 Switching Protocols is no answer to a POST: a failure, and
        # the connection (now speaking something else) is not used again.
        fake = self.fake()
        fake.script(fakeinflux.raw("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                                   "Upgrade: websocket\r\n\r\n", after="hold"),
                    fakeinflux.interim(100, then=fakeinflux.raw(
                        "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
                        "Upgrade: h2c\r\n\r\n", after="hold")))
        r = self.relayd([{"name": "fake", "url": fake.url, "timeout": "3s", "retry_min": "100ms",
                          "retry_max": "300ms"}])
        body = body_of(lines_for("upgrade", 4))
        self.write(r, body)
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["101", "101", "204"], fake.describe())
        self.assertEqual(len({w.conn_id for w in ws}), 3, "a connection reused after a 101")
        for a, b in zip(ws, ws[1:]):
            self.assertLess(b.t - a.t, 2.0, "waited for a timeout after a 101:\n" + fake.describe())
        r.wait_log(r"backend 'fake' (is down|answers with errors).*101", timeout=2)

    # on_database_not_found: create, when the database stays missing

    def test_create_database_that_stays_missing_holds(self):
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(404, 'database not found: "%s"' % DB))
        r = self.relayd([{"name": "fake", "url": fake.url, "on_database_not_found": "create",
                          "retry_min": "100ms", "retry_max": "2s"}])
        self.write(r, body_of(lines_for("nodb", 5)))
        self.posts_seen(fake, 1)
        time.sleep(5.0)
        writes = fake.writes()
        creates = fake.requests("POST", "/query")
        self.assertLessEqual(len(writes), 12, "%d writes in 5 s:\n%s" % (len(writes), fake.describe()[:3000]))
        self.assertGreaterEqual(len(creates), 1)
        self.assertLessEqual(len(creates), 6, "%d CREATE DATABASE in 5 s" % len(creates))
        self.assertIn("CREATE DATABASE", creates[0].query.get("q", ""))
        # A write answered "not found" after a CREATE waits (a hold, at
        # least 1 s) before the next attempt.
        reqs = [q for q in fake.requests() if q.method == "POST"]
        for i, q in enumerate(reqs[:-1]):
            if q.path == "/write" and i > 0 and reqs[i - 1].path == "/query":
                self.assertGreaterEqual(reqs[i + 1].t - q.t, 0.95, fake.describe())
        st = r.backend_status("fake")
        self.assertEqual((st["state"], st["pending_batches"], st["dead_batches"]), ("holding", 1, 0), st)
        self.assertIn("still not found after CREATE DATABASE", st["last_error"])
        self.assertGreaterEqual(st["attempts"], 1)
        self.assertLessEqual(len(r.log_matches(r"created database")), 2, r.log_since_start()[-3000:])
        self.assertLessEqual(len(r.log_since_start().splitlines()), 30, r.log_since_start()[-3000:])
        r.wait_log(r"backend 'fake' is HOLDING", timeout=1)
        fake.set_default("ok")
        self.drained(r, "fake", timeout=10)
        r.wait_log(r"backend 'fake' is up again", timeout=2)

    # values no request can carry

    def test_unsendable_batches_are_dead_lettered(self):
        self.unsendable_batches_are_dead_lettered(parallel=1)

    def test_unsendable_batches_are_dead_lettered_parallel(self):
        # With lanes, the hours of a round are read before anything is
        # sent: an unknown precision there is an unknown hour, not a stop.
        self.unsendable_batches_are_dead_lettered(parallel=4)

    def unsendable_batches_are_dead_lettered(self, parallel):
        # Batches whose stored values no request can carry: an unknown
        # precision code (a damaged record; relayd used to stop on it, at
        # every start), and a writer's token with a CR LF that would start
        # a header of its own (the door refuses both; a damaged queue is
        # how they come). Each is dead-lettered with the reason, alone; the
        # batches around them are delivered, and nothing is injected.
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
                          "retry_min": "100ms", "retry_max": "1s"}])
        bodies = [body_of(lines_for("unsendable%d" % i, 3)) for i in range(5)]
        evil = b"x\r\n\r\nPOST /write?db=evil HTTP/1.1"  # the token batch 3 will hold
        self.write(r, bodies[0], headers={"Authorization": "Token goodtoken"})
        self.write(r, bodies[1], headers={"Authorization": "Token goodtoken"})
        self.write(r, bodies[2], headers={"Authorization": "Token goodtoken"})
        self.write(r, bodies[3], headers={"Authorization": "Token " + "A" * len(evil)})
        self.write(r, bodies[4], headers={"Authorization": "Token goodtoken"})
        r.stop()
        batches = mdb_dump(r.data_dir, "batches")
        self.assertEqual(len(batches), 5)
        keys = sorted(batches)
        damaged = {}
        rec = bytearray(batches[keys[1]])
        self.assertEqual(rec[33], 0, "precision byte of a batch written in ns")
        rec[33] = 9
        damaged[keys[1]] = bytes(rec)
        rec = batches[keys[3]]
        self.assertIn(b"A" * len(evil), rec)
        damaged[keys[3]] = rec.replace(b"A" * len(evil), evil)
        for k in damaged:
            damaged[k] = relaytest.seal_record(damaged[k])
        mdb_load(r.data_dir, "batches", damaged)
        r.write_config(self.tmp, backends=[{"name": "fake", "url": fake.url, "parallel": parallel,
                                            "retry_min": "100ms", "retry_max": "1s"}])
        r.restart()
        self.drained(r, "fake", dead=2)
        self.assertTrue(r.alive(), "relayd stopped on a damaged batch")
        ws = fake.writes()
        if parallel == 1:
            self.assertEqual([w.text() for w in fake.delivered()], [bodies[0], bodies[2], bodies[4]],
                             fake.describe())
            self.assertEqual(len(ws), 3, "a batch no request can carry was sent:\n" + fake.describe())
        else:
            # in lanes: the same lines, shared out among several writes
            self.assertEqual(sorted(l for w in fake.delivered() for l in w.lines()),
                             sorted(l for b in (bodies[0], bodies[2], bodies[4]) for l in b.splitlines()),
                             fake.describe())
            self.assertEqual(len(ws), len(fake.delivered()), fake.describe())
        for w in fake.requests():
            self.assertNotIn("evil", w.target)
        # every write carries the good token (relayd's /ping at start,
        # which asks the backend's version for /query, carries none)
        for w in ws:
            self.assertEqual(w.headers.get("authorization"), "Token goodtoken")
        dl = r.relayctl("dlq", "list", "fake")
        self.assertEqual(dl.returncode, 0, dl.stderr)
        self.assertIn("precision code 9 is unknown", dl.stdout)
        self.assertIn("the writer's token holds a control byte", dl.stdout)
        self.assertNotIn("POST", dl.stdout, "the token is in the reason")
        self.assertEqual(len(r.log_matches(r"dead-lettered.*not sent")), 2, r.log_since_start())

    # d

    def test_413_splits_until_each_piece_fits(self):
        limit = 2000
        fake = self.fake()
        fake.set_default(fakeinflux.too_large_over(limit))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "1s"}])
        lines = lines_for("split", 400, pad=40)
        body = body_of(lines)
        self.assertGreater(len(body), 8 * limit)
        self.write(r, body)
        self.drained(r, "fake", timeout=30)
        ws = fake.writes()
        ok = fake.delivered()
        self.assertGreater(sum(1 for w in ws if w.answer == "413"), 0, fake.describe())
        got = collections.Counter(l for w in ok for l in w.lines())
        self.assertEqual(set(got), set(lines), "the 204'd pieces do not hold exactly the lines sent")
        self.assertEqual([l for l, n in got.items() if n != 1], [], "lines delivered more than once")
        for w in ok:
            self.assertLessEqual(len(w.body), limit)
            self.assertTrue(w.body.endswith(b"\n"), "a piece not cut at a line boundary: %r"
                            % w.body[-80:])
        # In order: the pieces, in arrival order, are the batch.
        self.assertEqual([l for w in ok for l in w.lines()], lines)
        self.assertEqual(r.backend_status("fake")["dead_batches"], 0)

    def test_413_single_line_too_long_is_dead_lettered(self):
        limit = 2000
        fake = self.fake()
        fake.set_default(fakeinflux.too_large_over(limit))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "1s"}])
        lines = lines_for("one", 6)
        huge = 'fault,batch=one,line=huge value=1i,pad="%s" %d' % ("h" * limit, BASE_NS)
        sent = lines[:3] + [huge] + lines[3:]
        self.write(r, body_of(sent))
        self.drained(r, "fake", dead=1, timeout=20)
        got = collections.Counter(l for w in fake.delivered() for l in w.lines())
        self.assertEqual(got, collections.Counter(lines),
                         "the lines around the too-long one; requests:\n" + fake.describe())
        # The queue moves on: a later batch goes through.
        later = body_of(lines_for("later", 3))
        self.write(r, later)
        self.drained(r, "fake", dead=1, timeout=10)
        self.assertEqual(fake.delivered()[-1].text(), later)
        dead = r.log_matches(r"dead-letter")
        self.assertEqual(len(dead), 1, dead)

    # e

    def test_backlog_is_coalesced(self):
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(503, "down for maintenance"))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "200ms",
                          "retry_max": "1s"}])
        batches = [lines_for("c%02d" % i, 3) for i in range(50)]
        for b in batches:
            self.write(r, body_of(b))
        self.posts_seen(fake, 1)
        self.assertEqual(r.backend_status("fake")["pending_batches"], 50)
        fake.set_default("ok")
        self.drained(r, "fake", timeout=15)
        ws = fake.writes()
        ok = fake.delivered()
        self.assertLess(len(ok), 10, "the backlog was not coalesced:\n" + fake.describe())
        self.assertLess(len(ws), 10, "far fewer POSTs than batches expected:\n" + fake.describe())
        self.assertEqual([l for w in ok for l in w.lines()], [l for b in batches for l in b],
                         "the delivered lines are not the batches, in order, once each")
        for w in ok:
            self.assertEqual((w.query.get("db"), w.query.get("precision")), (DB, "ns"))

    def test_coalesced_write_with_a_bad_batch_is_isolated(self):
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(503, "down for maintenance"))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "200ms",
                          "retry_max": "1s"}])
        batches = [lines_for("i%d" % i, 4) for i in range(6)]
        # Valid line protocol that the backend refuses (a type conflict
        # with what it holds: relayd refuses one within a request).
        batches[3][2] = 'fault,batch=i3,line=bad value_s="oops" %d' % BASE_NS
        for b in batches:
            self.write(r, body_of(b))
        self.posts_seen(fake, 1)
        fake.set_default(fakeinflux.if_body_contains(
            "line=bad", fakeinflux.influx_error(
                400, 'partial write: field type conflict: input field "value" on measurement '
                '"fault" is type string, already exists as type integer dropped=1')))
        self.drained(r, "fake", dead=1, timeout=15)
        ok = fake.delivered()
        good = [l for i, b in enumerate(batches) if i != 3 for l in b]
        self.assertEqual(sorted(l for w in ok for l in w.lines()), sorted(good),
                         "not every good line delivered exactly once:\n" + fake.describe())
        self.assertEqual([l for w in ok for l in w.lines()], good, "not in queue order")
        refused = [w for w in fake.writes() if w.answer == "400"]
        self.assertEqual(refused[-1].text(), body_of(batches[3]),
                         "the last refused write is not the bad batch alone")
        self.assertEqual(len(r.log_matches(r"dead-letter")), 1)

    # f

    def test_refused_then_probe_ping_before_write(self):
        port = relaytest.closed_port()
        r = self.relayd([{"name": "fake", "url": "http://127.0.0.1:%d" % port,
                          "retry_min": "100ms", "retry_max": "1s"}])
        body = body_of(lines_for("late", 10))
        self.write(r, body)
        r.wait_log(r"backend 'fake' is down, queueing and probing /ping", timeout=10)
        time.sleep(1.0)  # a few refused probes
        self.assertEqual(r.backend_status("fake")["pending_batches"], 1)
        fake = self.fake(port=port)
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        reqs = fake.requests()
        first_post = next(i for i, q in enumerate(reqs) if q.method == "POST")
        self.assertTrue(any(q.method == "GET" and q.path == "/ping" for q in reqs[:first_post]),
                        "no GET /ping before the write:\n" + fake.describe())
        self.assertEqual([w.text() for w in fake.writes()], [body])
        r.wait_log(r"backend 'fake' is up again", timeout=2)

    # g

    def test_401_holds_then_delivers(self):
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(401, "authorization failed"))
        real = self.influxd()
        r = self.relayd([
            {"name": "fake", "url": fake.url, "retry_min": "100ms", "retry_max": "1s"},
            {"name": "real", "url": real.url, "retry_min": "100ms", "retry_max": "1s"}])
        body = body_of(lines_for("auth", 10))
        self.write(r, body, u="alice", p="s3cret")
        r.wait_log(r"backend 'fake' is HOLDING", timeout=10)
        real.wait_count(DB, "fault", "value", 10, timeout=5)
        self.posts_seen(fake, 3, timeout=10)
        st = r.backend_status("fake")
        self.assertEqual((st["pending_batches"], st["pending_points"], st["dead_batches"]),
                         (1, 10, 0), "a 401 must keep the data")
        fake.set_default("ok")
        self.drained(r, "fake")
        self.drained(r, "real")
        ws = fake.writes()
        self.assertEqual([w.text() for w in fake.delivered()], [body])
        want = "Basic " + base64.b64encode(b"alice:s3cret").decode()
        for w in ws:
            self.assertEqual(w.headers.get("authorization"), want)
            self.assertNotIn("s3cret", w.target, "the password travels in the URL")
        r.wait_log(r"backend 'fake' is up again", timeout=2)

    # more transient answers

    def test_transient_answers_are_retried_not_dropped(self):
        fake = self.fake()
        fake.script(fakeinflux.influx_error(500, "engine: cache-max-memory-size exceeded"),
                    fakeinflux.influx_error(429, "too many requests"),
                    fakeinflux.influx_error(502, "bad gateway"),
                    fakeinflux.influx_error(408, "request timeout"),
                    fakeinflux.influx_error(504, "gateway timeout"))
        r = self.relayd([{"name": "fake", "url": fake.url, "retry_min": "100ms",
                          "retry_max": "300ms"}])
        body = body_of(lines_for("transient", 5))
        self.write(r, body)
        fake.wait_delivered(1, timeout=15)
        self.drained(r, "fake")
        ws = fake.writes()
        self.assertEqual([w.answer for w in ws], ["500", "429", "502", "408", "504", "204"],
                         fake.describe())
        self.assertTrue(all(w.text() == body for w in ws))
        for a, b in zip(ws, ws[1:]):
            self.assertGreaterEqual(b.t - a.t, 0.09, "retried without waiting retry_min")


    # parallel writes, split by series

    def series_lines(self, nseries, per_series):
        """Lines of nseries series, each with per_series points in time
        order, interleaved across series as a writer would send them."""
        return ['lane,series=s%02d value=%di %d' % (s, j, BASE_NS + j)
                for j in range(per_series) for s in range(nseries)]

    def assert_series_order(self, delivered_lines, sent_lines):
        def by_series(lines):
            out = {}
            for ln in lines:
                out.setdefault(ln.split(" ")[0], []).append(ln)
            return out
        got, want = by_series(delivered_lines), by_series(sent_lines)
        self.assertEqual(sorted(got), sorted(want))
        for key in want:
            self.assertEqual(got[key], want[key], "series %s out of order or incomplete" % key)

    def test_parallel_lanes_split_by_series_in_order(self):
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        sent = self.series_lines(24, 20)
        for i in range(0, len(sent), 48):
            self.write(r, body_of(sent[i:i + 48]))
        fake.wait_delivered(1, timeout=10)
        self.drained(r, "fake")
        ok = sorted((w for w in fake.writes() if w.ok), key=lambda w: w.t)
        lines = [ln for w in ok for ln in w.lines()]
        self.assertEqual(sorted(lines), sorted(sent), "every line exactly once")
        # Writes arrive round by round; inside a round a series is in one
        # write only, so in arrival order every series keeps its order.
        self.assert_series_order(lines, sent)
        self.assertGreater(len({w.conn_id for w in ok}), 1, "no write went in parallel: " + fake.describe())

    def test_first_write_into_an_hour_goes_whole(self):
        """influxd 1.6.7 can hide a point of concurrent writes that create
        a shard (docs/influxdb.md, "Concurrent writes into a new shard").
        Shards start and end on whole hours: a write whose points fall in
        an hour (of a db and rp) the worker has not delivered into goes as
        one request; once delivered, later writes into it use the lanes."""
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        hour = 3600 * 10 ** 9
        h0 = BASE_NS - BASE_NS % hour

        def rounds(t, tag, db=DB, rp=None):
            """One batch of 8 series at time t, delivered: its writes."""
            body = "".join("hours,series=%s%d v=%di %d\n" % (tag, i, i, t) for i in range(8))
            fake.forget()
            status, _, resp = r.write(db, body, rp=rp)
            self.assertEqual(status, 204, resp)
            self.drained(r, "fake")
            ws = fake.delivered()
            self.assertEqual(sorted(l for w in ws for l in w.lines()), sorted(body.splitlines()))
            return len(ws)

        self.assertEqual(rounds(h0 + 5, "a"), 1, "the first write into an hour went in lanes")
        self.assertEqual(rounds(h0 + 6, "b"), 4, "a write into a known hour did not use the lanes")
        self.assertEqual(rounds(h0 + hour, "c"), 1, "the next hour is a new one")
        self.assertEqual(rounds(h0 - 1, "d"), 1, "the hour before is a new one")
        self.assertEqual(rounds(h0 + hour - 1, "e"), 4)
        self.assertEqual(rounds(h0 + 7, "f", db="other"), 1, "another database's hour is a new one")
        self.assertEqual(rounds(h0 + 8, "g", rp="autogen"), 1, "another rp's hour is a new one")
        self.assertEqual(rounds(h0 + 9, "h", db="other"), 4)

    def test_hours_forgotten_when_shards_may_be_gone(self):
        """The hours a worker knows promise that their shards exist. A
        statement delivered through the queue (it may drop a database or
        change the default rp) and a write that finds no database make it
        forget them: the next write into those hours goes whole again,
        and the write that found no database is sent again whole, after
        the CREATE DATABASE, instead of in lanes into a new database."""
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4, "on_database_not_found": "create",
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        body = "".join("forget,series=s%d v=%di %d\n" % (i, i, BASE_NS + 1) for i in range(8))

        def delivered_writes():
            self.write(r, body)
            self.drained(r, "fake")
            ws = fake.delivered()
            fake.forget()
            return ws

        self.assertEqual(len(delivered_writes()), 4, "a known hour: lanes")
        status, _, resp = relaytest.http_request(r.port, "POST", "/query?" + urllib.parse.urlencode(
            {"q": 'CREATE DATABASE "other"'}))
        self.assertEqual(status, 200, resp)
        self.drained(r, "fake")
        self.assertEqual(len(fake.requests("POST", "/query")), 1, fake.describe())
        fake.forget()
        self.assertEqual(len(delivered_writes()), 1, "after a statement: the hour is new again")
        self.assertEqual(len(delivered_writes()), 4)
        # The first share to arrive finds no database: relayd creates it
        # and sends the whole write again, as one.
        fake.script(fakeinflux.influx_error(404, 'database not found: "%s"' % DB))
        self.write(r, body)
        self.drained(r, "fake")
        creates = fake.requests("POST", "/query")
        self.assertEqual(len(creates), 1, fake.describe())
        after = [w for w in fake.delivered() if w.t > creates[0].t]
        self.assertEqual([sorted(w.lines()) for w in after], [sorted(body.splitlines())], fake.describe())
        fake.forget()
        self.assertEqual(len(delivered_writes()), 1, "after a missing database: the hour is new again")

    def test_hours_of_a_split_batch_with_a_dead_line_are_not_learned(self):
        """A 413 splits a batch into pieces; a line too large alone is
        dead-lettered, never stored, so its hour's shard may not exist:
        the hours are not learned when the other pieces are delivered,
        and the next write into that hour goes whole."""
        fake = self.fake()
        limit = 4000
        fake.set_default(fakeinflux.too_large_over(limit))
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        hour = 3600 * 10 ** 9
        t = BASE_NS - BASE_NS % hour + 7 * hour  # an hour nothing else here writes into
        small = ["split,series=s%d v=%di %d" % (i % 8, i, t + i) for i in range(40)]
        huge = 'split,series=huge v=1i,pad="%s" %d' % ("h" * limit, t)
        self.write(r, "\n".join(small[:20] + [huge] + small[20:]) + "\n")
        self.drained(r, "fake", dead=1)
        fake.forget()
        body = "".join("split,series=n%d v=%di %d\n" % (i, i, t + 100) for i in range(8))
        self.write(r, body)
        self.drained(r, "fake", dead=1)
        self.assertEqual(len(fake.delivered()), 1, "the split batch's hour was learned: " + fake.describe())

    def test_parallel_retry_resends_only_the_failed_share(self):
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        fake.script(fakeinflux.influx_error(503, "busy"))
        sent = self.series_lines(16, 10)
        self.write(r, body_of(sent))
        fake.wait_delivered(2, timeout=10)
        self.drained(r, "fake")
        ws = fake.writes()
        failed = [w for w in ws if not w.ok]
        ok = [w for w in ws if w.ok]
        self.assertEqual(len(failed), 1, fake.describe())
        lines = [ln for w in ok for ln in w.lines()]
        self.assertEqual(sorted(lines), sorted(sent), "a share delivered twice or lost: " + fake.describe())
        # the failed share is exactly what was sent again
        self.assertIn(sorted(failed[0].lines()), [sorted(w.lines()) for w in ok if w.t > failed[0].t])
        self.assert_series_order(lines, sent)


    def test_parallel_shares_are_even(self):
        # Eight series of 30 points each, four lanes: every share of the
        # round carries two series. (Six of these keys hash to the same
        # lane under FNV-1a modulo 4, which is how lanes used to be chosen:
        # that share was three times the others.)
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        keys = ["even,series=h%03d" % i for i in (3, 7, 10, 14, 18, 21, 22, 23)]
        sent = ["%s value=%03di %d" % (k, j, BASE_NS + j) for j in range(30) for k in keys]
        self.write(r, body_of(sent))
        self.drained(r, "fake")
        ok = fake.delivered()
        self.assertEqual(sorted(len(w.lines()) for w in ok), [60, 60, 60, 60], fake.describe())
        lines = [ln for w in ok for ln in w.lines()]
        self.assertEqual(sorted(lines), sorted(sent))
        self.assert_series_order(lines, sent)

    def test_parallel_lanes_keep_tricky_lines_whole(self):
        # Lines are cut apart by relayd to share them out: a newline inside
        # a string field, escaped quotes and backslashes, and escaped
        # spaces and commas in the series key must not cut a line or move
        # it to another series' lane.
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4,
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        shapes = ['tricky,k=s%d v=%di %d',
                  'tricky,k=s%d msg="two\nlines",v=%di %d',
                  'tricky,k=s%d msg="say \\"hi\\" \\\\",v=%di %d',
                  'tricky\\ m,k=s%d\\ x\\,y v=%di %d',
                  'tricky,k=s%d msg="a=\\"b\\"\nc d",n="",v=%di %d']
        sent = [shapes[j % len(shapes)] % (j % 7, j, BASE_NS + j) for j in range(140)]
        for i in range(0, len(sent), 35):
            self.write(r, body_of(sent[i:i + 35]))
        self.drained(r, "fake")
        ok = fake.delivered()
        # Cut every delivered body back into the lines that were sent.
        got = []
        for w in ok:
            text, pos = w.text(), 0
            while pos < len(text):
                ln = next((c for c in sent if text.startswith(c + "\n", pos)), None)
                self.assertIsNotNone(ln, "a write does not hold whole lines: %r" % text[pos:pos + 80])
                got.append(ln)
                pos += len(ln) + 1
        self.assertEqual(sorted(got), sorted(sent), "every line exactly once")
        # The series key is everything before the first unescaped space.
        def key(ln):
            i = 0
            while ln[i] != " ":
                i += 2 if ln[i] == "\\" else 1
            return ln[:i]
        for k in set(map(key, sent)):
            self.assertEqual([ln for ln in got if key(ln) == k], [ln for ln in sent if key(ln) == k],
                             "series %s out of order" % k)
        self.assertGreater(len({w.conn_id for w in ok}), 1, "no write went in parallel: " + fake.describe())

    # rounds after rounds: the next one is read while this one is in flight

    def assert_acked_before_sent(self, fake, sent_lines):
        """The ordering rule across rounds and lanes: a write carrying a line
        of series S arrives only after every earlier line of S was answered
        2xx in an earlier write (or travels in this same write)."""
        prev, last = {}, {}
        for ln in sent_lines:
            key = ln.split(" ")[0]
            if key in last:
                prev[ln] = last[key]
            last[key] = ln
        ws = fake.writes()
        acked = {}
        for w in ws:
            if w.ok:
                for ln in w.lines():
                    acked[ln] = min(acked.get(ln, w.answered_t), w.answered_t)
        for w in ws:
            mine = set(w.lines())
            for ln in mine:
                p = prev.get(ln)
                while p is not None and p in mine:
                    p = prev.get(p)
                if p is None:
                    continue
                self.assertIn(p, acked, "%r was sent, the earlier %r never delivered:\n%s"
                              % (ln, p, fake.describe()))
                self.assertLess(acked[p], w.t, "%r went out before the earlier %r was answered 2xx:\n%s"
                                % (ln, p, fake.describe()))

    def backlog_behind_a_gate(self, fake, r, sent, per_batch):
        """Hold the first write at the fake until every batch is queued, so
        that the backlog is delivered in several rounds. Returns the gate."""
        gate = threading.Event()
        fake.set_default(fakeinflux.gated(gate))
        for i in range(0, len(sent), per_batch):
            self.write(r, body_of(sent[i:i + per_batch]))
        self.posts_seen(fake, 1)
        return gate

    def test_rounds_keep_series_order_across_a_retry(self):
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": 4, "batch_max_lines": 96,
                          "retry_min": "100ms", "retry_max": "1s"}])
        self.warm(r, fake)
        sent = self.series_lines(24, 20)
        gate = self.backlog_behind_a_gate(fake, r, sent, 48)
        # The first share of the next round is refused once, while the
        # round after it is already read and waiting.
        fake.script(fakeinflux.influx_error(503, "busy"))
        gate.set()
        self.drained(r, "fake", timeout=20)
        ws = fake.writes()
        self.assertEqual(sum(1 for w in ws if w.answer == "503"), 1, fake.describe())
        ok = [w for w in ws if w.ok]
        lines = [ln for w in ok for ln in w.lines()]
        self.assertEqual(sorted(lines), sorted(sent), "every line exactly once: " + fake.describe())
        self.assert_series_order(lines, sent)
        self.assert_acked_before_sent(fake, sent)
        self.assertGreater(len(ok), 8, "not several rounds: " + fake.describe())

    def isolate_across_rounds(self, parallel):
        fake = self.fake()
        r = self.relayd([{"name": "fake", "url": fake.url, "parallel": parallel, "batch_max_lines": 8,
                          "retry_min": "200ms", "retry_max": "1s"}])
        self.warm(r, fake)
        fake.set_default(fakeinflux.influx_error(503, "down for maintenance"))
        # Four series with a point in each batch, so that their order
        # across rounds and lanes shows.
        batches = [['iso,series=s%d value=%di %d' % (j, 10 * i + j, BASE_NS + i) for j in range(4)]
                   for i in range(8)]
        # The second round (batches 2 and 3) holds a line the backend
        # refuses for good, while the third is read ahead.
        bad = batches[3][1] = 'iso,series=s1 value_s="oops" %d' % (BASE_NS + 3)
        for b in batches:
            self.write(r, body_of(b))
        self.posts_seen(fake, 1)
        fake.set_default(fakeinflux.if_body_contains(
            "oops", fakeinflux.influx_error(
                400, 'partial write: field type conflict: input field "value" on measurement '
                '"iso" is type string, already exists as type integer dropped=1')))
        self.drained(r, "fake", dead=1, timeout=20)
        self.assertEqual(len(r.log_matches(r"dead-letter")), 1)
        refused = [w for w in fake.writes() if w.answer == "400"]
        self.assertEqual(refused[-1].text(), body_of(batches[3]),
                         "the last refused write is not the bad batch alone")
        delivered = [l for w in fake.delivered() for l in w.lines()]
        self.assertNotIn(bad, delivered)
        good = [l for i, b in enumerate(batches) if i != 3 for l in b]
        return fake, batches, bad, good, delivered

    def test_isolation_across_rounds(self):
        fake, _, _, good, delivered = self.isolate_across_rounds(1)
        self.assertEqual(delivered, good, "not every good line once, in queue order:\n" + fake.describe())

    def test_isolation_across_rounds_parallel(self):
        fake, batches, bad, good, delivered = self.isolate_across_rounds(4)
        # Shares delivered before the refusal are sent again while the bad
        # batch is looked for, and the shares of the bad batch that the
        # backend took stay delivered: every good line at least once, and
        # nothing else but lines of the bad batch.
        self.assertEqual(set(good) - set(delivered), set(), fake.describe())
        self.assertLessEqual(set(delivered) - set(good), set(batches[3]) - {bad}, fake.describe())
        self.assert_acked_before_sent(fake, [l for b in batches for l in b if l != bad])

    def test_413_across_rounds(self):
        limit = 1500
        fake = self.fake()
        fake.set_default(fakeinflux.influx_error(503, "down for maintenance"))
        r = self.relayd([{"name": "fake", "url": fake.url, "batch_max_lines": 30,
                          "retry_min": "200ms", "retry_max": "1s"}])
        # Batches of 10 lines fit alone; a round of three does not.
        batches = [lines_for("s%d" % i, 10, pad=20) for i in range(9)]
        for b in batches:
            self.assertLess(len(body_of(b)), limit)
            self.write(r, body_of(b))
        self.posts_seen(fake, 1)
        fake.set_default(fakeinflux.too_large_over(limit))
        self.drained(r, "fake", timeout=20)
        ws = fake.writes()
        self.assertGreater(sum(1 for w in ws if w.answer == "413"), 1, fake.describe())
        self.assertEqual([l for w in fake.delivered() for l in w.lines()], [l for b in batches for l in b],
                         "not every line once, in queue order:\n" + fake.describe())
        self.assertEqual(r.backend_status("fake")["dead_batches"], 0)


if __name__ == "__main__":
    # mdb_dump and mdb_load (lmdb-utils) damage a queue on purpose.
    relaytest.main(require=("relayd", "relayctl", "influxd", "mdb_dump", "mdb_load"))
