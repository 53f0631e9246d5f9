#!/usr/bin/env python3
"""
/health and /health/backends/NAME (issue 14), against a real influxd.

/health's status is ok, degraded (a backend not delivering or paused, or
a queue above 80 % of its limit) or failing (writes refused: 503), agrees
with relayctl on a pause, and carries each backend's limits, dead bytes,
last delivery and the store's disk figures.

/health/backends/NAME is what a load balancer asks before it sends
queries to an InfluxDB: 200 while that backend is up and lacks no write
older than max_lag; 503 with the reason while it is down, paused with a
backlog, or behind; 404 for a name relayd does not know.
"""

import json
import time
import unittest

import relaytest


def backend(name, url, **opts):
    b = {"name": name, "url": url, "retry_min": "100ms", "retry_max": "500ms"}
    b.update(opts)
    return b


class HealthTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.influx = relaytest.Influxd(self.addCleanup)
        self.influx.write_config(self.tmp)
        self.influx.start()
        self.influx.create_db("db")

    def relayd(self, backends, extra=None):
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=backends, extra_yaml=extra)
        r.start()
        r.wait_ready()
        return r

    def health(self, r):
        status, _, body = r.get("/health")
        doc = json.loads(body)
        self.assertEqual(status, 503 if doc["status"] in ("failing", "stopping") else 200, doc)
        return doc

    def backend_health(self, r, name, query=""):
        status, headers, body = r.get("/health/backends/%s%s" % (name, query))
        return status, body.decode()

    def test_backend_health_follows_an_outage(self):
        r = self.relayd([backend("influx", self.influx.url)])
        # Up and idle: caught up.
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 200, 10, what="200 for an idle backend")
        status, text = self.backend_health(r, "influx")
        self.assertTrue(text.startswith("caught up"), text)
        self.assertTrue(text.endswith("\n") and text.count("\n") == 1, repr(text))
        st, _, body = r.request("HEAD", "/health/backends/influx")
        self.assertEqual((st, body), (200, b""))
        self.assertEqual(self.backend_health(r, "nosuch")[0], 404)
        self.assertEqual(self.backend_health(r, "influx", "?max_lag=soon")[0], 400)
        self.assertEqual(self.health(r)["status"], "ok")

        # influxd stops: down, with the reason, and the relay degraded.
        self.influx.stop()
        for i in range(5):
            self.assertEqual(r.write("db", "m v=%di %d" % (i, 1_600_000_000 + i), precision="s")[0], 204)
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 503, 10, what="503 while down")
        status, text = self.backend_health(r, "influx")
        self.assertRegex(text, r"^(down|retrying)", text)
        doc = self.health(r)
        self.assertEqual(doc["status"], "degraded", doc)
        [b] = doc["backends"]
        self.assertFalse(b["caught_up"])
        self.assertEqual(b["pending_points"], 5)

        # Back: delivered, caught up again.
        self.influx.start()
        self.influx.wait_count("db", "m", "v", 5)
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 200, 20, what="200 once caught up")
        relaytest.wait_until(lambda: self.health(r)["status"] == "ok", 10, what="ok once caught up")
        [b] = self.health(r)["backends"]
        self.assertTrue(b["caught_up"])
        self.assertNotEqual(b["last_delivery"], "")
        self.assertLessEqual(b["last_delivery_age_seconds"], 30)

    def test_behind_is_judged_by_max_lag(self):
        r = self.relayd([backend("influx", self.influx.url)])
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 200, 10, what="caught up")
        # Paused with a backlog: 503, and /health agrees with relayctl.
        r.relayctl("pause", "influx")
        self.assertEqual(r.write("db", "m v=1i 1600000000", precision="s")[0], 204)
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 503, 10, what="503 when paused")
        status, text = self.backend_health(r, "influx")
        self.assertIn("paused with 1 batch pending", text)
        [b] = self.health(r)["backends"]
        self.assertEqual(b["state"], "paused")
        self.assertEqual(r.backend_status("influx")["state"], "paused")
        self.assertTrue(b["paused"])
        # A lag bound larger than the pending write's age: still 503, for
        # a pause stops delivery whatever the lag.
        self.assertEqual(self.backend_health(r, "influx", "?max_lag=1h")[0], 503)
        r.relayctl("resume", "influx")
        self.influx.wait_count("db", "m", "v", 1)
        relaytest.wait_until(lambda: self.backend_health(r, "influx")[0] == 200, 10, what="200 after resume")

    def test_status_degraded_then_failing_as_a_queue_fills(self):
        closed = "http://127.0.0.1:%d" % relaytest.closed_port()
        r = self.relayd([backend("influx", self.influx.url),
                         backend("gone", closed, max_size="1MiB")],
                        extra={"queue": {"retry_after": "1s"}})
        # Above 80 % of the 1 MiB limit, not at it.
        body = "m,host=h v=1 1600000000\n"
        chunk = "".join("big,host=h%05d value=\"%s\" %d\n" % (i, "y" * 200, 1_600_000_000 + i) for i in range(1000))
        sent = 0
        while sent + len(chunk) <= 0.95 * (1 << 20):
            st, _, resp = r.write("db", chunk, precision="s")
            self.assertEqual(st, 204, resp)
            sent += len(chunk)
        self.assertEqual(r.write("db", body, precision="s")[0], 204)
        doc = self.health(r)
        self.assertEqual(doc["status"], "degraded", doc)
        gone = [b for b in doc["backends"] if b["name"] == "gone"][0]
        self.assertEqual(gone["max_bytes"], 1 << 20)
        self.assertGreater(gone["percent_full"], 80)
        self.assertIn("full", doc["reason"])
        # Fill it: writes get 503 and the relay is failing, 503.
        refused = False
        for _ in range(20):
            st, _, _ = r.write("db", chunk, precision="s")
            if st == 503:
                refused = True
                break
        self.assertTrue(refused, "the queue never refused a write")
        status, _, body = r.get("/health")
        doc = json.loads(body)
        self.assertEqual((status, doc["status"]), (503, "failing"), doc)
        self.assertIn("writes were refused", doc["reason"])
        # The store's figures are there, and the disk has room.
        store = doc["store"]
        self.assertGreater(store["filesystem_free_bytes"], 0)
        self.assertGreaterEqual(store["filesystem_size_bytes"], store["filesystem_free_bytes"])
        self.assertGreaterEqual(store["map_size_bytes"], store["used_bytes"])
        # The healthy backend is caught up all along: the LB may query it.
        self.assertEqual(self.backend_health(r, "influx")[0], 200)
        self.assertEqual(self.backend_health(r, "gone")[0], 503)


if __name__ == "__main__":
    relaytest.main()
