#!/usr/bin/env python3
"""
Pacing a backlog (max_rate, issue 16) against a real influxd: a backlog
drains at about the configured rate (measured by its drain time), while
live writes are still accepted; relayctl status and /metrics show the
limit and the throttling; a SIGHUP that raises the limit speeds the drain
up without restarting delivery (nothing is sent twice: influxd's
pointsWrittenOK equals what was written).

The backlog is made by pausing the backend (relayctl pause) while writing,
so that the drain starts at a known moment (relayctl resume) without a
backoff's jitter.
"""

import re
import signal
import time
import unittest

import relaytest

DB = "telemetry"
PER_WRITE = 500


class RateLimitTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.next = 0

    def write(self, r, n_writes, measurement="paced"):
        """n_writes writes of PER_WRITE unique points through relayd."""
        for _ in range(n_writes):
            lines = []
            for _ in range(PER_WRITE):
                i = self.next
                self.next += 1
                lines.append("%s,k=k%07d value=%di %d" % (measurement, i, i, (1_600_000_000 + i) * 10 ** 9))
            status, _, resp = r.write(DB, "\n".join(lines) + "\n")
            self.assertEqual(status, 204, resp)
        return n_writes * PER_WRITE

    def config(self, r, influxd, max_rate):
        r.write_config(self.tmp, backends=[{
            "name": "b", "url": influxd.url, "retry_min": "100ms", "retry_max": "1s",
            "max_rate": max_rate, "rate_burst": "1s", "batch_max_lines": 1000, "parallel": 2}])

    def drain_time(self, r, timeout):
        """Seconds from now until nothing is pending for b."""
        t0 = time.monotonic()
        relaytest.wait_until(lambda: r.backend_status("b")["pending_batches"] == 0, timeout, interval=0.05,
                             what="the backlog drained", detail=lambda: r.log()[-3000:])
        return time.monotonic() - t0

    def metric(self, r, name):
        status, _, body = r.get("/metrics")
        self.assertEqual(status, 200)
        m = re.search(r'^%s\{backend="b"\} (\S+)$' % re.escape(name), body.decode(), re.M)
        self.assertIsNotNone(m, "%s not in /metrics" % name)
        return float(m.group(1))

    def test_backlog_paced_then_sped_up_by_sighup(self):
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        # Two lanes write at once (parallel: 2): the shards of the points'
        # 18 hours are made first, by one write (relaytest.Influxd.prime_shards).
        influxd.prime_shards(DB, 1_600_000_000, 1_600_000_000 + 64000)
        primed = influxd.points_written_ok()

        r = relaytest.Relayd(self.addCleanup)
        self.config(r, influxd, 5000)
        r.start()
        r.wait_ready()

        # Visible before anything is sent: the limit in force.
        self.assertEqual(self.metric(r, "relayd_backend_max_rate_points_per_second"), 5000)
        self.assertEqual(self.metric(r, "relayd_backend_max_rate_bytes_per_second"), 0)
        self.assertEqual(self.metric(r, "relayd_backend_throttled_seconds_total"), 0)
        st = r.backend_status("b")
        self.assertEqual((st["max_rate"], st["max_rate_bytes"], st["rate_burst_ms"], st["throttled"]),
                         (5000, 0, 1000, False), st)

        # 1. A backlog of 20 000 points at 5 000/s with a burst of 1 s: 5 000
        # go at once, the other 15 000 in about 3 s.
        self.assertEqual(r.relayctl("pause", "b").returncode, 0)
        total = self.write(r, 40)
        self.assertEqual(r.backend_status("b")["pending_points"], 20000)
        self.assertEqual(r.relayctl("resume", "b").returncode, 0)
        t0 = time.monotonic()
        # While it is paced: shown as throttled, and live writes are still
        # accepted at once (they join the queue behind the backlog).
        st = relaytest.wait_until(lambda: (lambda s: s if s["throttled"] else None)(r.backend_status("b")),
                                  5, interval=0.05, what="status says throttled")
        self.assertEqual(st["max_rate"], 5000)
        text = r.relayctl("status").stdout
        self.assertRegex(text, r"b: max_rate 5000 points/s \(burst 1\.0s\)")
        w0 = time.monotonic()
        total += self.write(r, 2, measurement="live")
        self.assertLess(time.monotonic() - w0, 1.0, "a live write waited for the pace")
        relaytest.wait_until(lambda: r.backend_status("b")["pending_batches"] == 0, 20, interval=0.05,
                             what="the backlog drained", detail=lambda: r.log()[-3000:])
        took = time.monotonic() - t0
        # 21 000 points: 16 000 beyond the burst, 3.2 s at 5 000/s.
        self.assertGreater(took, 2.5, "drained faster than max_rate allows")
        self.assertLess(took, 7.0, "drained much slower than max_rate")
        influxd.wait_count(DB, "paced", "value", 20000, timeout=10)
        influxd.wait_count(DB, "live", "value", 1000, timeout=10)
        self.assertGreater(self.metric(r, "relayd_backend_throttled_seconds_total"), 1.5)
        self.assertFalse(r.backend_status("b")["throttled"])

        # 2. 40 000 more at 2 000/s would take 19 s; a SIGHUP raising the
        # limit after about 2 s ends it at once, the worker keeping its place.
        self.assertEqual(r.relayctl("pause", "b").returncode, 0)
        total += self.write(r, 80)
        self.config(r, influxd, 2000)
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"backend 'b': max_rate 2000 points/s", timeout=5)
        self.assertEqual(r.relayctl("resume", "b").returncode, 0)
        time.sleep(2.0)
        st = r.backend_status("b")
        self.assertTrue(st["pending_points"] > 25000, st)  # paced: most still pending
        self.assertEqual(st["max_rate"], 2000)
        self.config(r, influxd, 1000000)
        r.proc.send_signal(signal.SIGHUP)
        took = self.drain_time(r, 20)
        # about 2 s here (influxd makes 34 000 new series); 17 s at 2 000/s
        self.assertLess(took, 8.0, "raising max_rate did not speed the drain")
        self.assertEqual(self.metric(r, "relayd_backend_max_rate_points_per_second"), 1000000)
        self.assertEqual(r.backend_status("b")["max_rate"], 1000000)
        self.assertFalse(r.log_matches(r"delivery settings changed: restarting its worker"),
                         "a rate change restarted the worker")

        influxd.wait_count(DB, "paced", "value", 60000, timeout=10)
        self.assertEqual(influxd.points_written_ok() - primed, total, "a point was lost or sent twice")
        self.assertEqual(r.backend_status("b")["dead_batches"], 0)


if __name__ == "__main__":
    unittest.main()
