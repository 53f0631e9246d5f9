#!/usr/bin/env python3
"""
Attacks on the door that pin memory or harm other clients (issue 10), each
reproduced against a running relayd, then all of them at once:

- bodies sent to any URL but /write (and to /write without credentials)
  are dropped as they arrive, gzip included, and nothing of a request is
  kept once its answer is queued;
- one global budget (http.max_buffered_size) caps what request bodies
  hold across all connections: a write beyond it gets 503 with
  Retry-After (413 when it alone needs more than the budget);
- a client that pipelines requests and reads no answers stops being
  parsed once a little output is queued;
- a name or credential the queue record cannot hold (over 65535 bytes) is
  a 400 for that request only: the writers committed with it get 204;
- control bytes in db, rp, org are refused; 417 has its reason phrase;
  timestamps that overflow nanoseconds at their precision, and unsigned
  integers with a backend of type v1, are refused with the line named.

RSS is read from /proc/PID/status (VmRSS, VmHWM); the figures are printed
for docs/performance.md.
"""

import gzip
import json
import os
import socket
import sys
import threading
import time
import unittest
import urllib.parse

import relaytest

MIB = 1024 * 1024


ASAN = relaytest.asan_build()
# Allocator slack. ASan keeps freed memory in quarantine (256 MiB by
# default), which these tests would measure as relayd's: every relayd this
# file starts gets a small one, so that the figures show what relayd holds
# (a /health answer, built as JSON values, frees dozens of small blocks).
SLACK = (96 if ASAN else 24) * MIB
if ASAN:
    os.environ["ASAN_OPTIONS"] = ":".join(
        x for x in (os.environ.get("ASAN_OPTIONS"), "quarantine_size_mb=8") if x)


def gzip_bomb(lines):
    """A small gzip body that inflates to lines * 13 bytes of line protocol."""
    return gzip.compress(b"m,t=a v=1i 1\n" * lines, 9)


def head(method, path, extra=(), length=None):
    h = ["%s %s HTTP/1.1" % (method, path), "Host: 127.0.0.1"] + list(extra)
    if length is not None:
        h.append("Content-Length: %d" % length)
    return ("\r\n".join(h) + "\r\n\r\n").encode()


def connect(port):
    s = socket.create_connection((relaytest.LOOPBACK, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Base(unittest.TestCase):
    extra = {}
    backend_type = None

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.relayd = relaytest.Relayd(self.addCleanup)
        backend = {"name": "local", "url": "http://127.0.0.1:%d" % relaytest.closed_port()}
        if self.backend_type:
            backend["type"] = self.backend_type
        self.relayd.write_config(self.tmp, backends=[backend], extra_yaml=self.extra)
        self.relayd.start()
        self.relayd.wait_ready()
        self.socks = []
        self.addCleanup(self.close_socks)

    def close_socks(self):
        for s in self.socks:
            s.close()

    def open(self):
        s = connect(self.relayd.port)
        self.socks.append(s)
        return s

    def mem(self):
        return relaytest.proc_mem(self.relayd.proc.pid)

    def report(self, what, base, peak, bound):
        sys.stderr.write("\n# %s (%s build): VmRSS %.1f MiB at start, peak %.1f MiB (+%.1f MiB, bound +%.0f MiB)\n"
                         % (what, "ASan" if ASAN else "normal", base / MIB, peak / MIB, (peak - base) / MIB,
                            bound / MIB))


class BodiesNotKeptTest(Base):
    """Bodies of anything but an accepted write cost nothing once read."""
    extra = {"auth": {"enabled": True, "users": [{"name": "w", "password": "pw"}]},
             "http": {"max_decompressed_size": "64MiB"}}

    def test_gzip_to_ping_and_unauthenticated_writes_are_not_kept(self):
        r = self.relayd
        bomb = gzip_bomb(1500000)  # ~19 MiB inflated, ~40 KiB sent
        base = self.mem()["VmRSS"]
        for i in range(20):
            s = self.open()
            s.sendall(head("POST", "/ping", ["Content-Encoding: gzip"], len(bomb)) + bomb)
            st, _ = relaytest.read_head(s)
            self.assertEqual(st, 405)
        for i in range(10):
            s = self.open()
            s.sendall(head("POST", "/write?db=x", ["Content-Encoding: gzip"], len(bomb)) + bomb)
            st, _ = relaytest.read_head(s)
            self.assertEqual(st, 401)
        for i in range(10):
            s = self.open()
            s.sendall(head("POST", "/nowhere", ["Content-Encoding: gzip"], len(bomb)) + bomb)
            st, _ = relaytest.read_head(s)
            self.assertEqual(st, 404)
        # The 40 connections stay open and idle.
        peak = self.mem()["VmHWM"]
        self.report("40 idle connections after gzip bodies to /ping, /nowhere and unauthenticated /write",
                    base, peak, SLACK)
        self.assertLess(peak - base, SLACK)
        # An authenticated write on the same kind of connection is taken.
        st, _, body = r.post("/write?db=ok&u=w&p=pw", gzip.compress(b"m v=1 1\n"),
                             {"Content-Encoding": "gzip"})
        self.assertEqual(st, 204, body)

    def test_buffers_released_after_the_answer(self):
        # 20 keep-alive connections each write ~4 MiB and stay idle: what
        # they hold afterwards is their structs, not their bodies.
        r = self.relayd
        body = ("m,t=a v=1i\n" * 380000).encode()
        gz = gzip.compress(body, 1)
        conns = []
        base = self.mem()["VmRSS"]
        for i in range(20):
            s = self.open()
            s.sendall(head("POST", "/write?db=big&u=w&p=pw", ["Content-Encoding: gzip"], len(gz)) + gz)
            st, h = relaytest.read_head(s, 30)
            self.assertEqual(st, 204, h)
            conns.append(s)
        health = json.loads(r.get("/health")[2])
        self.assertEqual(health["http"].get("buffered_bytes"), 0, health["http"])


class BudgetTest(Base):
    """http.max_buffered_size caps the bodies held across connections."""
    extra = {"http": {"max_buffered_size": "4MiB", "max_body_size": "1MiB",
                      "max_decompressed_size": "64MiB", "body_timeout": "20s"}}

    def test_writes_beyond_the_budget_get_503_then_succeed(self):
        r = self.relayd
        # Six writers each announce 1 MiB and send 700 KiB of it: 4.2 MiB
        # held (as doubling buffers), over the 4 MiB budget.
        line = b"m,t=a v=1i 1\n"
        chunk = line * (700 * 1024 // len(line))
        holders, refused = [], []
        for i in range(6):
            s = self.open()
            s.sendall(head("POST", "/write?db=held", [], len(line) * (MIB // len(line))) + chunk)
            holders.append(s)
        time.sleep(0.5)
        # A writer arriving now finds the budget taken.
        st, hdrs, body = r.post("/write?db=late", line * 50000)
        self.assertEqual(st, 503, body)
        self.assertEqual(hdrs.get("Retry-After"), "1")
        self.assertIn("max_buffered_size", body.decode())
        # Whichever holders were refused get 503 (their rest is dropped).
        rest = line * (MIB // len(line))
        for s in holders:
            s.sendall(rest[len(chunk):])
        statuses = [relaytest.read_head(s, 20)[0] for s in holders]
        self.assertTrue(set(statuses) <= {204, 503}, statuses)
        self.assertIn(204, statuses)
        # Once answered, everything is given back: the late writer is in.
        st, _, body = r.post("/write?db=late", line * 50000)
        self.assertEqual(st, 204, body)
        self.assertEqual(json.loads(r.get("/health")[2])["http"]["buffered_bytes"], 0)

    def test_a_write_that_alone_needs_more_than_the_budget_is_413(self):
        r = self.relayd
        bomb = gzip_bomb(600000)  # ~7.4 MiB inflated: more than the 4 MiB budget
        st, _, body = r.post("/write?db=bomb", bomb, {"Content-Encoding": "gzip"})
        self.assertEqual(st, 413, body)
        self.assertIn("max_buffered_size", body.decode())
        st, _, body = r.post("/write?db=after", b"m v=1 1\n")
        self.assertEqual(st, 204, body)
        self.assertEqual([d["db"] for d in r.dump("local")], ["after"])


class PipelineTest(Base):
    """A client that sends requests and reads no answers."""

    def test_unread_answers_stop_the_parsing(self):
        r = self.relayd
        req = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        data = req * ((8 * MIB) // len(req))
        base = self.mem()["VmRSS"]
        s = self.open()
        s.setblocking(False)
        sent = 0
        deadline = time.monotonic() + 4
        while sent < len(data) and time.monotonic() < deadline:
            try:
                sent += s.send(data[sent:sent + 65536])
            except BlockingIOError:
                time.sleep(0.01)
        time.sleep(0.5)
        peak = self.mem()["VmHWM"]
        self.report("one connection pipelining %d KiB of GET /health, reading nothing" % (sent // 1024),
                    base, peak, SLACK)
        self.assertLess(peak - base, SLACK)
        # Other clients are served meanwhile.
        self.assertEqual(r.get("/ping")[0], 204)

    def test_pipelined_answers_all_come_once_read(self):
        # Parsing stops and resumes many times: every request is
        # answered, in order, none twice.
        r = self.relayd
        n = 20000
        data = b"".join(b"GET /ping?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n))
        data += b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        s = self.open()
        got = []

        def reader():
            s.settimeout(60)
            try:
                while True:
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        return
                    got.append(chunk)
            except OSError:
                return
        t = threading.Thread(target=reader)
        t.start()
        time.sleep(0.2)
        s.sendall(data)
        t.join(60)
        out = b"".join(got)
        self.assertEqual(out.count(b"HTTP/1.1 204 No Content\r\n"), n)
        self.assertEqual(out.count(b"HTTP/1.1 200 OK\r\n"), 1)
        self.assertTrue(out.rstrip().endswith(b"}"), out[-200:])


class OnePartyTest(Base):
    """One writer's oversized field never fails the group commit."""
    extra = {"http": {"max_header_size": "200KiB"}}

    def test_oversized_names_refused_alone(self):
        r = self.relayd
        port = r.port
        stop = threading.Event()
        results = []

        def innocent(k):
            i = 0
            while not stop.is_set():
                st, _, _ = relaytest.http_request(port, "POST", "/write?db=innocent",
                                                  ("m,w=%d v=%di %d\n" % (k, i, i + 1)).encode())
                results.append(st)
                i += 1
        threads = [threading.Thread(target=innocent, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        try:
            for i in range(40):
                for name, q in (("db", "db=" + "d" * 70000), ("rp", "db=x&rp=" + "r" * 70000),
                                ("u", "db=x&u=" + "u" * 70000 + "&p=x")):
                    st, _, body = r.post("/write?" + q, b"m v=1 1\n")
                    self.assertEqual(st, 400, body[:200])
                    self.assertIn(b"65535", body)
        finally:
            stop.set()
            for t in threads:
                t.join(30)
        self.assertGreater(len(results), 20)
        self.assertEqual([s for s in results if s != 204], [])
        self.assertEqual({d["db"] for d in r.dump("local")}, {"innocent"})


class NamesAndValuesTest(Base):
    """What every backend would refuse is refused at the door."""

    def test_control_bytes_in_names(self):
        r = self.relayd
        for path in ("/write?db=" + urllib.parse.quote("telegraf\n# CONTEXT-DATABASE: victim\n"),
                     "/write?db=a&rp=" + urllib.parse.quote("r\x1b[31m"),
                     "/write?db=" + urllib.parse.quote("a\rb"),
                     "/api/v2/write?bucket=" + urllib.parse.quote("b\x00") + "&org=o",
                     "/api/v2/write?bucket=b&org=" + urllib.parse.quote("o\x7f")):
            st, _, body = r.post(path, b"m v=1 1\n")
            self.assertEqual(st, 400, (path, body))
            self.assertIn(b"control characters", body)
        self.assertEqual(r.dump("local"), [])

    def test_user_with_a_colon(self):
        # It would travel to a backend as Basic "a:b:pw", read as user a.
        st, _, body = self.relayd.write("c", "m v=1 1\n", u="a:b", p="pw")
        self.assertEqual(st, 400, body)
        self.assertIn(b"must not contain ':'", body)

    def test_417_reason_phrase(self):
        s = self.open()
        s.sendall(head("POST", "/write?db=a", ["Expect: something-else"], 8) + b"m v=1 1\n")
        st, h = relaytest.read_head(s)
        self.assertEqual(st, 417)
        self.assertTrue(h.startswith(b"HTTP/1.1 417 Expectation Failed\r\n"), h[:60])

    def test_timestamps_that_overflow_at_their_precision(self):
        r = self.relayd
        for prec, ts in (("h", 9000000000000), ("m", 1700000000), ("h", 1700000000), ("s", 9300000000),
                         ("ms", -9300000000000000)):
            st, _, body = r.write("p", "m v=1 1\nm v=2 %d\n" % ts, precision=prec)
            self.assertEqual(st, 400, (prec, ts, body))
            self.assertIn(b"line 2", body)
            self.assertIn(b"bad timestamp", body)
        # The largest that fit are taken.
        for prec, ts in (("h", 2562047), ("m", 153722867), ("s", 9223372036)):
            st, _, body = r.write("p", "m v=1 %d\n" % ts, precision=prec)
            self.assertEqual(st, 204, (prec, ts, body))

    def test_unsigned_refused_for_a_v1_backend(self):
        st, _, body = self.relayd.write("u", "m v=1i 1\nm u=1u 2\n")
        self.assertEqual(st, 400, body)
        self.assertIn(b"line 2", body)
        self.assertIn(b"unsigned", body)


class UnsignedV2Test(Base):
    backend_type = "v2"

    def test_unsigned_taken_when_every_backend_is_v2(self):
        st, _, body = self.relayd.post("/api/v2/write?bucket=u&org=o", b"m u=1u 2\n")
        self.assertEqual(st, 204, body)


class AllAtOnceTest(Base):
    """Every attack above at the same time, for DURATION seconds, while a
    normal client writes: its writes all get 204, and relayd's peak RSS
    stays within the configured budget plus the connections' cost."""
    BUDGET = 64 * MIB
    DURATION = 8
    extra = {"auth": {"enabled": True, "users": [{"name": "w", "password": "pw"}]},
             "http": {"max_buffered_size": "64MiB", "max_body_size": "8MiB",
                      "max_decompressed_size": "16MiB", "max_header_size": "128KiB",
                      "header_timeout": "4s", "body_timeout": "4s", "max_connections": 300}}

    def test_every_attack_at_once(self):
        r = self.relayd
        port = r.port
        stop = threading.Event()
        counts = {}
        errors = []
        lock = threading.Lock()

        def count(kind, what):
            with lock:
                counts.setdefault(kind, {}).setdefault(what, 0)
                counts[kind][what] += 1

        def attack(kind, fn):
            def run():
                while not stop.is_set():
                    try:
                        count(kind, fn())
                    except OSError as e:
                        count(kind, type(e).__name__)
                    except Exception as e:  # a bug in the attack itself
                        errors.append("%s: %r" % (kind, e))
                        return
            return threading.Thread(target=run, name=kind)

        bomb = gzip_bomb(1500000)  # ~19 MiB inflated: over max_decompressed_size

        def one(path, extra_headers, body, expect_close=True):
            s = connect(port)
            try:
                s.sendall(head("POST", path, extra_headers, len(body)) + body)
                return relaytest.read_head(s, 10)[0]
            finally:
                s.close()

        def pipeline_unread():
            # 8 MiB of GET /health on one connection, never reading.
            s = connect(port)
            s.setblocking(False)
            data = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n" * 4096
            sent = 0
            t0 = time.monotonic()
            while not stop.is_set() and sent < 8 * MIB and time.monotonic() - t0 < self.DURATION:
                try:
                    sent += s.send(data)
                except BlockingIOError:
                    time.sleep(0.05)
            s.close()
            return "sent %d MiB" % (sent // MIB)

        def slowloris():
            socks = [connect(port) for _ in range(20)]
            for s in socks:
                s.sendall(b"POST /write?db=slow&u=w&p=pw HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\nm")
            t0 = time.monotonic()
            while not stop.is_set() and time.monotonic() - t0 < 6:
                for s in socks:
                    try:
                        s.send(b"x" * 64)
                    except OSError:
                        pass
                time.sleep(0.2)
            for s in socks:
                s.close()
            return "round"

        def flood():
            socks = []
            for _ in range(100):
                try:
                    socks.append(connect(port))
                except OSError:
                    break
            time.sleep(0.5)
            for s in socks:
                s.close()
            return "round"

        def control_unread():
            path = r.data_dir + "/relayd.sock"
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            s.connect(path)
            s.setblocking(False)
            sent = 0
            t0 = time.monotonic()
            while not stop.is_set() and sent < 2 * MIB and time.monotonic() - t0 < self.DURATION:
                try:
                    sent += s.send(b"status\n" * 4096)
                except BlockingIOError:
                    time.sleep(0.05)
                except OSError:
                    break
            s.close()
            return "sent %d KiB" % (sent // 1024)

        attacks = [
            attack("gzip to /ping", lambda: one("/ping", ["Content-Encoding: gzip"], bomb)),
            attack("gzip to /nowhere", lambda: one("/nowhere", ["Content-Encoding: gzip"], bomb)),
            attack("gzip write without credentials", lambda: one("/write?db=x", ["Content-Encoding: gzip"], bomb)),
            attack("gzip bomb with credentials", lambda: one("/write?db=x&u=w&p=pw",
                                                              ["Content-Encoding: gzip"], bomb)),
            attack("oversized db name", lambda: one("/write?u=w&p=pw&db=" + "d" * 70000, [], b"m v=1 1\n")),
            attack("control bytes in db", lambda: one("/write?u=w&p=pw&db=a%0Ab", [], b"m v=1 1\n")),
            attack("pipelined /health unread", pipeline_unread),
            attack("pipelined /health unread 2", pipeline_unread),
            attack("slowloris", slowloris),
            attack("connection flood", flood),
        ]
        if os.path.exists(r.data_dir + "/relayd.sock"):
            attacks.append(attack("control socket unread", control_unread))

        base = self.mem()["VmRSS"]
        samples = []
        normal = []
        t0 = time.monotonic()
        for t in attacks:
            t.start()
        try:
            i = 0
            # The attacks run until the normal writer has had DURATION
            # seconds and more than 20 writes: what is asserted is that
            # writes go on beside every attack, not how fast (an ASan build
            # on a loaded machine is several times slower). Starved writes
            # fail on their own timeout; the cap ends a loop that crawls.
            while time.monotonic() - t0 < self.DURATION or len(normal) <= 20:
                if time.monotonic() - t0 > 10 * self.DURATION:
                    break
                body = "normal,k=%d v=%di %d\n" % (i % 7, i, i + 1)
                st, _, resp = r.write("normal", body, u="w", p="pw")
                self.assertEqual(st, 204, "normal write %d during the attacks: %r" % (i, resp[:300]))
                normal.append(body)
                samples.append(self.mem()["VmRSS"])
                i += 1
                time.sleep(0.05)
        finally:
            stop.set()
            for t in attacks:
                t.join(30)
        elapsed = time.monotonic() - t0
        peak = self.mem()["VmHWM"]
        self.assertEqual(errors, [])
        bound = self.BUDGET + SLACK + 300 * 4096
        sys.stderr.write("\n# every attack at once for %.1f s (%s build): %d normal writes, all 204; "
                         "VmRSS at start %.1f MiB, peak %.1f MiB (+%.1f MiB; budget %d MiB, bound +%.0f MiB)\n"
                         % (elapsed, "ASan" if ASAN else "normal", len(normal), base / MIB, peak / MIB,
                            (peak - base) / MIB, self.BUDGET // MIB, bound / MIB))
        for kind in sorted(counts):
            sys.stderr.write("#   %-32s %s\n" % (kind, counts[kind]))
        self.assertLess(peak - base, bound)
        self.assertGreater(len(normal), 20)
        # Every attack was answered as it should be, and did happen.
        self.assertEqual(set(counts["gzip to /ping"]) - {405, "ConnectionResetError", "BrokenPipeError"}, set())
        self.assertIn(401, counts["gzip write without credentials"])
        self.assertIn(413, counts["gzip bomb with credentials"])
        self.assertEqual(set(counts["oversized db name"]), {400})
        self.assertEqual(set(counts["control bytes in db"]), {400})
        # Only the normal client's points were queued, all of them.
        dump = r.dump("local")
        self.assertEqual([d["body"] for d in dump if d["db"] == "normal"], normal)
        self.assertEqual({d["db"] for d in dump}, {"normal"})
        health = json.loads(r.get("/health")[2])
        self.assertEqual(health["http"]["buffered_bytes"], 0)


if __name__ == "__main__":
    relaytest.main()
