#!/usr/bin/env python3
"""
The HTTP front door of relayd: routes, status codes, JSON errors, limits,
timeouts, keep-alive, pipelining, chunked bodies, queue limits (503 with
Retry-After), and relayd --check-config. The only backend is a closed
loopback port: what is accepted stays queued and is checked with
`relayctl dump`.
"""

import gzip
import os
import re
import time
import unittest
import urllib.parse

import relaytest

MAX_BODY = 64 * 1024


def body_of_size(n, measurement):
    """Valid line protocol of exactly n bytes, every line with a timestamp
    and a final newline (so the stored form is byte for byte the same)."""
    out = []
    total = 0
    i = 0
    while n - total > 200:
        line = "%s,i=%06d value=%di %d\n" % (measurement, i, i, 1000 + i)
        out.append(line)
        total += len(line)
        i += 1
    rem = n - total
    empty = "%s,pad= value=1i 1\n" % measurement
    out.append("%s,pad=%s value=1i 1\n" % (measurement, "x" * (rem - len(empty))))
    body = "".join(out)
    assert len(body) == n, (len(body), n)
    return body


def raw_request(method, path, body=b"", headers=None, port=None):
    """Bytes of one HTTP/1.1 request with Content-Length."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    h = {"Host": "127.0.0.1:%d" % port}
    if method != "GET" or body:
        h["Content-Length"] = str(len(body))
    h.update(headers or {})
    head = "%s %s HTTP/1.1\r\n" % (method, path)
    head += "".join("%s: %s\r\n" % kv for kv in h.items())
    return head.encode("latin-1") + b"\r\n" + body


def start_relayd(testcase, extra=None, backends=None):
    tmp = relaytest.make_tmpdir(testcase.addCleanup)
    r = relaytest.Relayd(testcase.addCleanup)
    if backends is None:
        backends = [("local", "http://127.0.0.1:%d" % relaytest.closed_port())]
    r.write_config(tmp, backends=backends, extra_yaml=extra)
    r.start()
    r.wait_ready()
    return r


class DoorTest(unittest.TestCase):
    """One relayd shared by the tests of this class; each test writes to a
    database of its own and looks only at that database's batches."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.relayd = relaytest.Relayd(cls.addClassCleanup)
        cls.relayd.write_config(
            cls.tmp,
            backends=[("local", "http://127.0.0.1:%d" % relaytest.closed_port())],
            extra_yaml={"http": {"max_body_size": "64KiB", "max_decompressed_size": "1MiB"}})
        cls.relayd.start()
        cls.relayd.wait_ready()

    def batches(self, db):
        return [d for d in self.relayd.dump("local") if d["db"] == db]

    def assert_error(self, resp_tuple, status):
        st, headers, body = resp_tuple
        self.assertEqual(st, status, body)
        return relaytest.json_error(headers, body)

    # routes

    def test_ping_get(self):
        status, headers, body = self.relayd.get("/ping")
        self.assertEqual(status, 204)
        self.assertTrue(headers.get("X-Influxdb-Version"), "no X-Influxdb-Version header")
        self.assertEqual(body, b"")

    def test_ping_head(self):
        status, headers, body = self.relayd.request("HEAD", "/ping")
        self.assertEqual(status, 204)
        self.assertTrue(headers.get("X-Influxdb-Version"), "no X-Influxdb-Version header")
        self.assertEqual(body, b"")

    def test_unknown_path_is_404_json(self):
        self.assert_error(self.relayd.get("/nope"), 404)
        self.assert_error(self.relayd.post("/nope?db=x", "cpu value=1 1\n"), 404)
        self.assert_error(self.relayd.get("/write/extra"), 404)

    def test_get_write_is_405(self):
        self.assert_error(self.relayd.get("/write?db=t405"), 405)
        self.assertEqual(self.batches("t405"), [])

    def test_missing_db_is_400(self):
        before = len(self.relayd.dump("local"))
        self.assert_error(self.relayd.post("/write", "cpu value=1 1\n"), 400)
        self.assert_error(self.relayd.post("/write?db=", "cpu value=1 1\n"), 400)
        self.assert_error(self.relayd.post("/write?precision=s", "cpu value=1 1\n"), 400)
        self.assertEqual(len(self.relayd.dump("local")), before)

    def test_bad_precision_is_400(self):
        for p in ("xx", "sec", "1s", "nanoseconds", "S", "NS", "us2"):
            self.assert_error(self.relayd.write("tprec_bad", "cpu value=1 1\n", precision=p), 400)
        self.assertEqual(self.batches("tprec_bad"), [])

    def test_every_valid_precision_is_204_and_stamps_in_its_unit(self):
        units = {"n": 1, "ns": 1, "u": 10 ** 3, "us": 10 ** 3, "\u00b5": 10 ** 3,
                 "ms": 10 ** 6, "s": 10 ** 9, "m": 60 * 10 **9, "h": 3600 * 10 ** 9}
        spans = {}
        for p, unit in units.items():
            line = "prec,p=%s value=1" % urllib.parse.quote(p)
            before = time.time_ns()
            status, _, body = self.relayd.write("tprec_%d" % len(spans), line + "\n", precision=p)
            after = time.time_ns()
            self.assertEqual(status, 204, "precision %r: %d %r" % (p, status, body))
            spans[p] = (len(spans), line, before // unit, after // unit)
        dump = self.relayd.dump("local")
        for p, (k, line, lo, hi) in spans.items():
            got = [d for d in dump if d["db"] == "tprec_%d" % k]
            self.assertEqual(len(got), 1, "precision %r" % p)
            stored = got[0]["body"]
            self.assertTrue(stored.startswith(line + " ") and stored.endswith("\n"), stored)
            ts = int(stored[len(line) + 1:-1])
            self.assertTrue(lo <= ts <= hi, "precision %r: stamp %d not in [%d, %d]"
                            % (p, ts, lo, hi))

    # line protocol

    def test_bad_line_is_400_naming_the_line_and_nothing_is_queued(self):
        body = ("good,n=1 value=1 1\n"
                "good,n=2 value=2 2\n"
                "good,n=3 value=3 3\n"
                "good,n=4 value=4 4\n"
                "bad,n=5 value=\"unterminated 5\n"
                "good,n=6 value=6 6\n")
        err = self.assert_error(self.relayd.write("tbadline", body), 400)
        self.assertIn("line 5", err)
        self.assertEqual(self.batches("tbadline"), [])

    def test_line_numbers_count_blank_and_comment_lines(self):
        body = "# a comment\n\ncpu value=1 1\nnofields\ncpu value=2 2\n"
        err = self.assert_error(self.relayd.write("tlineno", body), 400)
        self.assertIn("line 4", err)
        self.assertEqual(self.batches("tlineno"), [])

    def test_comment_and_blank_lines_dropped(self):
        body = ("# header comment\n"
                "\n"
                "cpu,host=a value=1 1000\n"
                "\n"
                "# another comment value=3 3\n"
                "cpu,host=b value=2 2000")  # no final newline
        status, _, resp = self.relayd.write("tcomments", body)
        self.assertEqual(status, 204, resp)
        got = self.batches("tcomments")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["body"], "cpu,host=a value=1 1000\ncpu,host=b value=2 2000\n")
        self.assertEqual(got[0]["lines"], 2)
        self.assertEqual(got[0]["bytes"], len(got[0]["body"]))

    def test_whitespace_only_and_indented_comment_lines_dropped(self):
        body = "   \n\t\ncpu,host=a value=1 1000\n  # indented comment\n \t \n"
        status, _, resp = self.relayd.write("twhite", body)
        self.assertEqual(status, 204, resp)
        got = self.batches("twhite")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["body"], "cpu,host=a value=1 1000\n")
        self.assertEqual(got[0]["lines"], 1)

    # connections

    def test_keep_alive_three_requests_one_connection(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("POST", "/write?db=tkeep", "keep,n=1 value=1 1\n", port=r.port))
        first = c.read_response()
        self.assertEqual(first.status, 204, first)
        self.assertNotEqual(first.headers.get("connection", "").lower(), "close")
        c.send(raw_request("POST", "/write?db=tkeep", "keep,n=2 value=2 2\n", port=r.port))
        second = c.read_response()
        self.assertEqual(second.status, 204, second)
        c.send(raw_request("GET", "/ping", port=r.port))
        third = c.read_response()
        self.assertEqual(third.status, 204, third)
        self.assertIn("x-influxdb-version", third.headers)
        self.assertEqual([d["body"] for d in self.batches("tkeep")],
                         ["keep,n=1 value=1 1\n", "keep,n=2 value=2 2\n"])

    def test_pipelining_three_posts_in_one_write(self):
        r = self.relayd
        bodies = ["pipe,n=%d value=%d %d\n" % (n, n, n) for n in range(3)]
        data = b"".join(raw_request("POST", "/write?db=tpipe", b, port=r.port) for b in bodies)
        c = r.raw()
        self.addCleanup(c.close)
        self.assertTrue(c.send(data))
        statuses = [c.read_response().status for _ in range(3)]
        self.assertEqual(statuses, [204, 204, 204])
        self.assertEqual([d["body"] for d in self.batches("tpipe")], bodies)

    def test_pipelining_answers_in_order(self):
        # 204, 400 (missing db), 404, 204: distinct answers show the order.
        r = self.relayd
        data = (raw_request("POST", "/write?db=tpipe2", "p2,n=1 value=1 1\n", port=r.port) +
                raw_request("POST", "/write", "p2,n=2 value=2 2\n", port=r.port) +
                raw_request("GET", "/nope", port=r.port) +
                raw_request("POST", "/write?db=tpipe2", "p2,n=3 value=3 3\n", port=r.port))
        c = r.raw()
        self.addCleanup(c.close)
        self.assertTrue(c.send(data))
        resps = [c.read_response() for _ in range(4)]
        self.assertEqual([x.status for x in resps], [204, 400, 404, 204])
        relaytest.raw_json_error(resps[1])
        relaytest.raw_json_error(resps[2])
        self.assertEqual([d["body"] for d in self.batches("tpipe2")],
                         ["p2,n=1 value=1 1\n", "p2,n=3 value=3 3\n"])

    def test_chunked_body(self):
        r = self.relayd
        text = "chunk,host=a value=1 1000\nchunk,host=b value=2 2000\nchunk,host=c value=3 3000\n"
        cuts = [0, 7, 30, 31, 60, len(text)]
        chunks = [text[a:b] for a, b in zip(cuts, cuts[1:])]
        data = ("POST /write?db=tchunk HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Transfer-Encoding: chunked\r\n\r\n")
        for ch in chunks:
            data += "%x\r\n%s\r\n" % (len(ch), ch)
        data += "0\r\n\r\n"
        c = r.raw()
        self.addCleanup(c.close)
        # Send in pieces so the body really arrives in several reads.
        raw = data.encode()
        for i in range(0, len(raw), 25):
            self.assertTrue(c.send(raw[i:i + 25]))
            time.sleep(0.01)
        resp = c.read_response()
        self.assertEqual(resp.status, 204, resp)
        got = self.batches("tchunk")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["body"], text)
        self.assertEqual(got[0]["lines"], 3)

    def test_expect_100_continue(self):
        # curl sends this for bodies over 1 KiB; whether or not relayd sends
        # 100 Continue, the body that follows must be taken.
        r = self.relayd
        body = body_of_size(4000, "expect")
        head = ("POST /write?db=texpect HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                "Content-Length: %d\r\nExpect: 100-continue\r\n\r\n" % len(body))
        c = r.raw()
        self.addCleanup(c.close)
        c.send(head)
        if c.readable_within(1.0):
            interim = c.read_response()
            self.assertEqual(interim.status, 100, interim)
        c.send(body)
        resp = c.read_response()
        self.assertEqual(resp.status, 204, resp)
        self.assertEqual([d["body"] for d in self.batches("texpect")], [body])

    # limits

    def test_body_at_the_limit_is_204(self):
        body = body_of_size(MAX_BODY, "atlimit")
        status, _, resp = self.relayd.write("tatlimit", body)
        self.assertEqual(status, 204, resp)
        got = self.batches("tatlimit")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["bytes"], MAX_BODY)

    # /health

    def test_health_reports_the_relay_and_each_backend(self):
        import json
        st, _, resp = self.relayd.write("thealth", "h value=1 1\nh value=2 2\n")
        self.assertEqual(st, 204, resp)
        status, headers, body = self.relayd.get("/health")
        self.assertEqual(status, 200, body)
        self.assertIn("application/json", headers.get("Content-Type", ""))
        doc = json.loads(body.decode())
        # The backend is a closed port: a backend not delivering makes the
        # relay degraded (writes are still taken, so 200); the reason
        # names it.
        self.assertIn(doc["status"], ("ok", "degraded"), doc)
        if doc["status"] == "degraded":
            self.assertIn("'local'", doc["reason"])
        self.assertGreaterEqual(doc["ingest"]["batches_committed"], 1)
        self.assertGreaterEqual(doc["http"]["points_accepted"], 2)
        self.assertEqual(doc["udp"], [])  # no UDP listener configured
        [b] = doc["backends"]
        self.assertEqual(b["name"], "local")
        # The backend is a closed port: it turns "down" and says why.
        deadline = time.monotonic() + 10
        while b["state"] != "down" and time.monotonic() < deadline:
            time.sleep(0.05)
            [b] = json.loads(self.relayd.get("/health")[2].decode())["backends"]
        self.assertEqual(b["state"], "down", b)
        self.assertIn("connect", b["last_error"])
        doc = json.loads(self.relayd.get("/health")[2].decode())
        self.assertEqual(doc["status"], "degraded", doc)
        self.assertIn("'local' is down", doc["reason"])
        self.assertFalse(b["caught_up"])
        self.assertFalse(b["paused"])
        for key in ("max_bytes", "max_age_seconds", "percent_full", "dead_bytes", "last_delivery"):
            self.assertIn(key, b)
        for key in ("map_size_bytes", "used_bytes", "file_size_bytes", "filesystem_free_bytes"):
            self.assertGreater(doc["store"][key], 0, key)
        ctl = self.relayd.backend_status("local")
        for key in ("pending_batches", "pending_points", "pending_bytes", "dead_batches"):
            self.assertEqual(b[key], ctl[key], key)
        self.assertGreaterEqual(b["pending_points"], 2)
        status, _, body = self.relayd.request("HEAD", "/health")
        self.assertEqual((status, body), (200, b""))
        self.assert_error(self.relayd.post("/health", b""), 405)

    # gzip request bodies

    def test_gzip_body_round_trip(self):
        lines = "".join("gz,host=h%d value=%d %d\n" % (i % 7, i, 1000 + i) for i in range(4000))
        packed = gzip.compress(lines.encode())
        # Bigger than max_body_size once inflated: the limit is on bytes sent.
        self.assertGreater(len(lines), MAX_BODY)
        self.assertLess(len(packed), MAX_BODY)
        st, _, resp = self.relayd.write("tgzip", packed, headers={"Content-Encoding": "gzip"})
        self.assertEqual(st, 204, resp)
        got = self.batches("tgzip")
        self.assertEqual(len(got), 1)
        self.assertEqual(got[0]["body"], lines)
        self.assertEqual(got[0]["lines"], 4000)

    def test_gzip_bomb_is_413_and_queues_nothing(self):
        bomb = gzip.compress(b"a" * (64 << 20))  # 64 MiB of 'a' in ~64 KiB
        self.assertLess(len(bomb), MAX_BODY)
        before = self.relayd.queue_status()
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("POST", "/write?db=tbomb", bomb, port=r.port,
                           headers={"Content-Encoding": "gzip"}))
        resp = c.read_response()
        self.assertEqual(resp.status, 413, resp)
        self.assertIn("decompressed", relaytest.raw_json_error(resp))
        self.assertEqual(self.batches("tbomb"), [])
        self.assertEqual(self.relayd.queue_status(), before)
        self.assertEqual(self.relayd.get("/ping")[0], 204)

    def test_gzip_malformed_or_truncated_is_400(self):
        packed = gzip.compress(b"cpu value=1 1\n")
        for body, why in ((b"not gzip at all", "malformed"), (packed[:-6], "truncated")):
            err = self.assert_error(self.relayd.write("tbadgz", body, headers={"Content-Encoding": "gzip"}), 400)
            self.assertIn("gzip", err, why)
        self.assertEqual(self.batches("tbadgz"), [])

    def test_unknown_content_encoding_is_415(self):
        err = self.assert_error(self.relayd.write("tbr", "cpu value=1 1\n", headers={"Content-Encoding": "br"}), 415)
        self.assertIn("br", err)
        self.assertEqual(self.batches("tbr"), [])

    def test_body_over_the_limit_is_413(self):
        r = self.relayd
        body = body_of_size(MAX_BODY + 1, "overlimit")
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("POST", "/write?db=toverlimit", body, port=r.port))
        resp = c.read_response()
        self.assertEqual(resp.status, 413, resp)
        relaytest.raw_json_error(resp)
        self.assertEqual(self.batches("toverlimit"), [])

    def test_chunked_body_over_the_limit_is_413(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send("POST /write?db=tchunkover HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Transfer-Encoding: chunked\r\n\r\n")
        piece = body_of_size(16 * 1024, "chunkover")
        for _ in range(6):  # 96 KiB in all
            if not c.send("%x\r\n%s\r\n" % (len(piece), piece)):
                break
        c.send("0\r\n\r\n")
        resp = c.read_response()
        self.assertEqual(resp.status, 413, resp)
        relaytest.raw_json_error(resp)
        self.assertEqual(self.batches("tchunkover"), [])

    def test_large_header_under_the_limit_is_accepted(self):
        status, _, resp = self.relayd.write("tbighdr", "hdr value=1 1\n",
                                            headers={"X-Pad": "a" * 8000})
        self.assertEqual(status, 204, resp)

    def test_header_over_the_limit_is_431(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("POST", "/write?db=t431", "hdr value=1 1\n",
                           headers={"X-Pad": "a" * 20000}, port=r.port))
        resp = c.read_response()
        self.assertEqual(resp.status, 431, resp)
        relaytest.raw_json_error(resp)
        self.assertEqual(self.batches("t431"), [])

    def test_url_over_the_limit_is_431(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("POST", "/write?db=t431url&pad=" + "a" * 20000, "hdr value=1 1\n",
                           port=r.port))
        resp = c.read_response()
        self.assertEqual(resp.status, 431, resp)
        relaytest.raw_json_error(resp)
        self.assertEqual(self.batches("t431url"), [])


class TimeoutTest(unittest.TestCase):
    """header_timeout and body_timeout of 1 s (idle_timeout stays long)."""

    def setUp(self):
        self.relayd = start_relayd(self, extra={"http": {
            "header_timeout": "1s", "body_timeout": "1s", "idle_timeout": "30s"}})

    def assert_408_then_close(self, c, t0):
        resp = c.read_response(timeout=6)
        elapsed = time.monotonic() - t0
        self.assertEqual(resp.status, 408, resp)
        relaytest.raw_json_error(resp)
        self.assertGreaterEqual(elapsed, 0.8, "408 came before the timeout (%.2f s)" % elapsed)
        self.assertLessEqual(elapsed, 4.0, "408 came late (%.2f s)" % elapsed)
        self.assertTrue(c.wait_closed(3), "connection not closed after the 408")

    def test_header_timeout_408_then_close(self):
        c = self.relayd.raw()
        self.addCleanup(c.close)
        t0 = time.monotonic()
        c.send("POST /write?db=theader HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Le")
        self.assert_408_then_close(c, t0)

    def test_header_timeout_is_not_reset_by_trickling_bytes(self):
        # A slowloris client sends a byte at a time: the header as a whole
        # must still be complete within header_timeout.
        c = self.relayd.raw()
        self.addCleanup(c.close)
        request = b"POST /write?db=ttrickle HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 200
        t0 = time.monotonic()
        for i in range(len(request)):
            if time.monotonic() - t0 > 6:
                break
            if c.readable_within(0.2) or not c.send(request[i:i + 1]):
                break
        elapsed = time.monotonic() - t0
        self.assertTrue(c.readable_within(3.0), "no answer to a trickled header")
        self.assertLessEqual(elapsed, 4.0, "the server waited %.1f s for the header" % elapsed)
        try:
            resp = c.read_response(timeout=3)
            self.assertEqual(resp.status, 408, resp)
        except EOFError:
            pass  # closed without a response: also a refusal
        self.assertTrue(c.wait_closed(3), "connection not closed")

    def test_body_timeout_408_then_close(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        t0 = time.monotonic()
        c.send("POST /write?db=tbody HTTP/1.1\r\nHost: 127.0.0.1\r\n"
               "Content-Length: 100\r\n\r\ncpu value=")
        self.assert_408_then_close(c, t0)
        self.assertEqual([d for d in r.dump("local") if d["db"] == "tbody"], [])

    def test_complete_request_within_timeouts_is_204(self):
        # The short timeouts must not hurt a request that is merely split.
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send("POST /write?db=tsplit HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(0.3)
        c.send("Content-Length: 14\r\n\r\ncpu va")
        time.sleep(0.3)
        c.send("lue=1 1\n")
        resp = c.read_response()
        self.assertEqual(resp.status, 204, resp)


class IdleTimeoutTest(unittest.TestCase):
    """idle_timeout of 1 s; header_timeout stays long so that only the idle
    timer can close the connection."""

    def setUp(self):
        self.relayd = start_relayd(self, extra={"http": {
            "idle_timeout": "1s", "header_timeout": "10s", "body_timeout": "10s"}})

    def test_idle_keep_alive_connection_is_closed(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        c.send(raw_request("GET", "/ping", port=r.port))
        resp = c.read_response()
        self.assertEqual(resp.status, 204)
        t0 = time.monotonic()
        self.assertTrue(c.wait_closed(6), "idle connection still open after 6 s")
        elapsed = time.monotonic() - t0
        self.assertGreaterEqual(elapsed, 0.7, "closed before the idle timeout (%.2f s)" % elapsed)

    def test_active_connection_stays_open(self):
        r = self.relayd
        c = r.raw()
        self.addCleanup(c.close)
        for i in range(8):  # 8 x 0.4 s: well past one idle_timeout in all
            c.send(raw_request("GET", "/ping", port=r.port))
            resp = c.read_response()
            self.assertEqual(resp.status, 204, "request %d" % i)
            time.sleep(0.4)


class QueueLimitTest(unittest.TestCase):
    """A write that would pass a backend's queue limit is refused with 503
    and Retry-After; what was queued before is kept."""

    BATCH = 250000  # 4 fit under 1 MiB (1048576), a 5th would pass the limit

    def fill_until_503(self, r, db, limit_name, limit_text="1MiB"):
        accepted = []
        refused = None
        for i in range(20):
            body = body_of_size(self.BATCH, "lim%03d" % i)
            status, headers, resp = r.write(db, body)
            if status == 204:
                accepted.append(body)
                continue
            self.assertEqual(status, 503, resp)
            refused = (headers, resp, body)
            break
        self.assertIsNotNone(refused, "no 503 after 20 batches of %d bytes" % self.BATCH)
        headers, resp, body = refused
        err = relaytest.json_error(headers, resp)
        self.assertIn(limit_name, err)
        self.assertIn("queue", err.lower())
        # the limit as the configuration wrote it, not in bytes
        self.assertIn("is full (max_size %s)" % limit_text, err)
        r.wait_log(r"refused \(503\): queue for backend '%s' is full \(max_size %s\)" % (limit_name, limit_text))
        retry = headers.get("Retry-After")
        self.assertIsNotNone(retry, "503 without Retry-After")
        self.assertEqual(retry.strip(), "7")
        return accepted

    def test_backend_max_size_503_keeps_the_queue(self):
        closed = "http://127.0.0.1:%d" % relaytest.closed_port()
        r = start_relayd(self, backends=[
            {"name": "small", "url": closed, "max_size": "1MiB"},
            {"name": "big", "url": "http://127.0.0.1:%d" % relaytest.closed_port()}],
            extra={"queue": {"retry_after": "7s"}})
        accepted = self.fill_until_503(r, "tlimit", "small")
        self.assertEqual(len(accepted), 4)
        # A refused batch is stored for no backend at all.
        for name in ("small", "big"):
            st = r.backend_status(name)
            self.assertEqual(st["pending_batches"], 4, name)
            self.assertEqual(st["pending_bytes"], 4 * self.BATCH, name)
            self.assertEqual([d["body"] for d in r.dump(name)], accepted, name)
        # Refused again, and still nothing lost; a batch that fits is taken.
        status, _, _ = r.write("tlimit", body_of_size(self.BATCH, "again"))
        self.assertEqual(status, 503)
        # /metrics names the backend whose limit refused them, and which limit.
        status, _, text = r.get("/metrics")
        self.assertEqual(status, 200)
        text = text.decode()
        self.assertIn('relayd_backend_refused_batches_total{backend="small",limit="max_size"} 2\n', text)
        self.assertIn('relayd_backend_refused_batches_total{backend="small",limit="max_age"} 0\n', text)
        self.assertIn('relayd_backend_refused_batches_total{backend="big",limit="max_size"} 0\n', text)
        small = body_of_size(40000, "fits")  # 1040000 <= 1048576
        status, _, resp = r.write("tlimit", small)
        self.assertEqual(status, 204, resp)
        self.assertEqual([d["body"] for d in r.dump("small")], accepted + [small])
        # And it all survives a restart.
        r.stop()
        r.restart()
        self.assertEqual([d["body"] for d in r.dump("small")], accepted + [small])

    def test_queue_max_size_default_limit_503(self):
        r = start_relayd(self, extra={"queue": {"max_size": "1048576B", "retry_after": "7s"}})
        accepted = self.fill_until_503(r, "tqlimit", "local", "1048576B")
        self.assertEqual(len(accepted), 4)
        st = r.backend_status("local")
        self.assertEqual(st["pending_bytes"], 4 * self.BATCH)
        self.assertEqual([d["body"] for d in r.dump("local")], accepted)
        status, _, _ = r.get("/ping")
        self.assertEqual(status, 204)


GOOD_CONFIG = """\
data_dir: {data_dir}
log_level: info
listen:
  http: 127.0.0.1:{port}
http:
  max_body_size: 25MiB
  header_timeout: 10s
queue:
  max_size: 1GiB
  retry_after: 10s
backends:
  - name: local
    url: http://127.0.0.1:{bport}
"""

# (what is wrong, the config with that fault on the line marked "# BAD")
BAD_CONFIGS = [
    ("unknown top-level key", GOOD_CONFIG.replace("log_level: info\n",
                                                  "log_level: info\nbogus_key: 1  # BAD\n")),
    ("unknown nested key", GOOD_CONFIG.replace("  max_body_size: 25MiB\n",
                                               "  max_body_sise: 25MiB  # BAD\n")),
    ("size is a sequence", GOOD_CONFIG.replace("  max_body_size: 25MiB\n",
                                               "  max_body_size: [1, 2]  # BAD\n")),
    ("size is a word", GOOD_CONFIG.replace("  max_body_size: 25MiB\n",
                                           "  max_body_size: lots  # BAD\n")),
    ("bad duration", GOOD_CONFIG.replace("  header_timeout: 10s\n",
                                         "  header_timeout: soon  # BAD\n")),
    ("listen port not a number", GOOD_CONFIG.replace("  http: 127.0.0.1:{port}\n",
                                                     "  http: 127.0.0.1:notaport  # BAD\n")),
    ("listen address out of range", GOOD_CONFIG.replace("  http: 127.0.0.1:{port}\n",
                                                        "  http: 256.1.1.1:{port}  # BAD\n")),
    ("backends not a list", GOOD_CONFIG.split("backends:")[0] + "backends: local  # BAD\n"),
    ("duplicate backend name", GOOD_CONFIG + "  - name: local  # BAD\n"
                                             "    url: http://127.0.0.1:{bport}\n"),
    ("backend url not http", GOOD_CONFIG.replace("    url: http://127.0.0.1:{bport}\n",
                                                 "    url: ftp://127.0.0.1:{bport}  # BAD\n")),
]


class CheckConfigTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.fmt = {"data_dir": os.path.join(self.tmp, "data"), "port": relaytest.free_port(),
                    "bport": relaytest.closed_port()}

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text.format(**self.fmt))
        return path

    def test_example_config_passes(self):
        path = os.path.join(relaytest.SOURCE_DIR, "config.example.yaml")
        self.assertTrue(os.path.isfile(path), "%s is missing" % path)
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_good_config_passes(self):
        path = self.write("good.yaml", GOOD_CONFIG)
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_bad_configs_name_file_line_col(self):
        for i, (what, text) in enumerate(BAD_CONFIGS):
            with self.subTest(what):
                path = self.write("bad%d.yaml" % i, text)
                line = [n for n, l in enumerate(text.split("\n"), 1) if "# BAD" in l]
                self.assertEqual(len(line), 1)
                cp = relaytest.check_config(path)
                out = cp.stdout + cp.stderr
                self.assertNotEqual(cp.returncode, 0, "%s accepted: %s" % (what, out))
                self.assertNotEqual(cp.returncode, -11, "crashed")
                pattern = r"%s:%d:\d+: \S" % (re.escape(path), line[0])
                self.assertRegex(out, pattern, "%s: no '%s:%d:COL: message'"
                                 % (what, path, line[0]))

    def test_missing_file_fails(self):
        cp = relaytest.check_config(os.path.join(self.tmp, "nope.yaml"))
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("nope.yaml", cp.stdout + cp.stderr)


if __name__ == "__main__":
    relaytest.main()
