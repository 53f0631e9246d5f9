#!/usr/bin/env python3
"""
relayctl drain and undrain (issue 16: graceful drain for maintenance),
against a real relayd and a real influxd.

Drain takes a relay out of a load balancer's write pool: /health answers
503 "draining" with what is left to deliver, while writes that still
come are accepted (204) and delivered, and /health/backends/NAME is
unchanged. drain --wait exits 0 once no backend has anything pending or
held, 1 on --timeout naming the backlog; --stop then stops relayd
cleanly. undrain puts it back (/health 200), and so does a restart (the
drain is relayd's memory only).
"""

import json
import os
import re
import socket
import time
import unittest

import relaytest


def backend(name, url, **opts):
    b = {"name": name, "url": url, "retry_min": "100ms", "retry_max": "300ms"}
    b.update(opts)
    return b


class DrainTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.influx = relaytest.Influxd(self.addCleanup)
        self.influx.write_config(self.tmp)
        self.influx.start()
        self.influx.create_db("db")
        self.r = relaytest.Relayd(self.addCleanup)
        self.r.write_config(self.tmp, backends=[backend("influx", self.influx.url)])
        self.r.start()
        self.r.wait_ready()

    def health(self):
        status, _, body = self.r.get("/health")
        return status, json.loads(body)

    def metric_status(self):
        _, _, body = self.r.get("/metrics")
        return {m.group(1): m.group(2) for m in
                re.finditer(r'^relayd_status\{status="([a-z]+)"\} (\d)', body.decode(), re.M)}

    def test_drain_wait_stop(self):
        r = self.r
        relaytest.wait_until(lambda: self.health()[0] == 200, 10, what="/health 200 before the drain")
        self.assertEqual(self.metric_status().get("draining"), "0")

        # drain: /health 503 "draining", the reason says what is left.
        cp = r.relayctl("drain")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("draining", cp.stdout)
        status, doc = self.health()
        self.assertEqual((status, doc["status"]), (503, "draining"), doc)
        self.assertRegex(doc["reason"], r"^draining for maintenance: 0 batches left to deliver")
        self.assertEqual(self.metric_status(), {"ok": "0", "degraded": "0", "failing": "0",
                                                "draining": "1", "stopping": "0"})
        # Queries' health is about the InfluxDB servers: unchanged.
        st, _, body = r.get("/health/backends/influx")
        self.assertEqual(st, 200, body)
        # A second drain is the same drain.
        self.assertEqual(r.relayctl("drain").returncode, 0)

        # A write during the drain is accepted and delivered.
        self.assertEqual(r.write("db", "m v=1i 1600000000", precision="s")[0], 204)
        self.influx.wait_count("db", "m", "v", 1)
        r.wait_status("influx", pending_batches=0)

        # The backend goes away: the write waits, drain --wait times out
        # naming the backlog.
        self.influx.stop()
        for i in range(2, 5):
            self.assertEqual(r.write("db", "m v=%di %d" % (i, 1_600_000_000 + i), precision="s")[0], 204)
        status, doc = self.health()
        self.assertEqual((status, doc["status"]), (503, "draining"), doc)
        self.assertRegex(doc["reason"], r"^draining for maintenance: 3 batches left to deliver")
        cp = r.relayctl("drain", "--wait", "--timeout", "2s")
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("timed out", cp.stderr)
        self.assertIn("3 batches left to deliver", cp.stderr)
        self.assertRegex(cp.stderr, r"backend 'influx' \([a-z]+\): 3 batches pending")

        # Back: drain --wait exits 0 once delivered.
        self.influx.start()
        cp = r.relayctl("drain", "--wait", "--timeout", "60s")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("drained", cp.stdout)
        self.influx.wait_count("db", "m", "v", 4)

        # --stop: relayd exits 0, nothing left in the queue.
        cp = r.relayctl("drain", "--stop", "--timeout", "60s")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("stopped", cp.stdout)
        self.assertEqual(r.wait_exit(10), 0)
        [b] = r.queue_status()
        self.assertEqual((b["pending_batches"], b["dead_batches"]), (0, 0), b)

        # A restart ends the drain.
        r.start()
        r.wait_ready()
        relaytest.wait_until(lambda: self.health()[0] == 200, 10, what="/health 200 after a restart")

    def test_undrain(self):
        r = self.r
        cp = r.relayctl("drain", "--json")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        doc = json.loads(cp.stdout)
        self.assertTrue(doc["draining"])
        self.assertEqual(doc["pid"], r.proc.pid)
        self.assertEqual(self.health()[1]["status"], "draining")
        cp = r.relayctl("undrain")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        relaytest.wait_until(lambda: self.health()[0] == 200, 10, what="/health 200 after undrain")
        self.assertNotEqual(self.health()[1]["status"], "draining")
        self.assertEqual(self.metric_status().get("draining"), "0")
        # --wait after an undrain has nothing to wait for: drain again.
        self.assertEqual(r.relayctl("undrain", "--wait").returncode, 2)
        self.assertRegex(r.log(), r"draining for maintenance")
        self.assertRegex(r.log(), r"drain cancelled")

    def test_systemd_status_line(self):
        """The STATUS= line says draining as soon as the drain begins."""
        self.assertEqual(self.r.stop(), 0)
        path = os.path.join(self.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        saved = os.environ.get("NOTIFY_SOCKET")
        os.environ["NOTIFY_SOCKET"] = path
        try:
            self.r.start()
        finally:
            if saved is None:
                os.environ.pop("NOTIFY_SOCKET", None)
            else:
                os.environ["NOTIFY_SOCKET"] = saved
        self.r.wait_ready()
        self.assertEqual(self.r.relayctl("drain").returncode, 0)
        sock.settimeout(1.0)
        seen = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                msg = sock.recv(4096).decode()
            except socket.timeout:
                continue
            seen.append(msg)
            if "STATUS=draining; " in msg:
                break
        else:
            self.fail("no STATUS=draining line; got %r" % seen)

    def test_not_running(self):
        self.assertEqual(self.r.stop(), 0)
        cp = self.r.relayctl("drain")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("not running", cp.stderr)


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
