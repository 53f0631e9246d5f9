#!/usr/bin/env python3
"""
The story of an outage in relayd's log (relay/delivery/outage.h), against
a real influxd: when the backend goes down (with the error), a reminder
every log_outage_reminder while it stays down (the backlog, its age, when
the queue is full at the rate it grows), when it comes back (after how
long, the backlog to deliver), and when that backlog has drained (in how
long). Every point written meanwhile arrives.
"""

import re
import time
import unittest

import relaytest

DB = "telemetry"


class OutageLogTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def test_outage_told_in_the_log(self):
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        influxd.create_db(DB)
        self.assertEqual(influxd.stop(), 0, "influxd did not stop cleanly")

        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[{"name": "b", "url": influxd.url, "retry_min": "100ms",
                                            "retry_max": "500ms"}],
                       extra_yaml={"log_outage_reminder": "1s"})
        r.start()
        r.wait_ready()

        total = 0

        def write(i):
            nonlocal total
            body = "".join("outage,batch=b%03d,line=l%02d value=%di %d\n"
                           % (i, j, i * 100 + j, (1_600_000_000 + i * 60 + j) * 10 ** 9)
                           for j in range(50))
            status, _, resp = r.write(DB, body)
            self.assertEqual(status, 204, resp)
            total += 50

        write(0)
        r.wait_log(r"backend 'b' is down, queueing and probing /ping: \S", timeout=10)
        # The backlog grows while it is down: the reminders see a rate.
        for i in range(1, 9):
            write(i)
            time.sleep(0.3)
        r.wait_log(r"backend 'b' still down after \d+s \([^)]*\): \d+ points in \d+ batch(es)? "
                   r"\([\d.]+ (B|KiB|MiB)\) pending, oldest \d+s old; ", timeout=5)
        reminders = r.log_matches(r"backend 'b' still down after")
        self.assertTrue(any(re.search(r"; at the current rate the queue \(1 GiB\) is full in about \d+[dhms]",
                                      line) for line in reminders), reminders)
        # Writes over: the next reminders show the whole backlog, no longer
        # growing.
        r.wait_log(r"backend 'b' still down after \d+s \([^)]*\): 450 points in 9 batches \([\d.]+ KiB\) "
                   r"pending, oldest \d+s old; the queue \(1 GiB, 0% used\) is not growing", timeout=5)

        influxd.start()
        influxd.wait_count(DB, "outage", "value", total, timeout=20)
        r.wait_log(r"backend 'b' is up again \(was down\) after \d+(ms|s|m\d*s?): delivering 9 batches "
                   r"\(450 points, [\d.]+ KiB\)", timeout=5)
        r.wait_log(r"backend 'b' caught up: the backlog of 9 batches drained in \d+(ms|s)", timeout=5)
        r.wait_status("b", 10, pending_batches=0, dead_batches=0)
        self.assertEqual(influxd.points_written_ok(), total, "a point was lost or sent twice")
        # Told once each: not a line per retry.
        self.assertEqual(len(r.log_matches(r"backend 'b' is down")), 1)
        self.assertEqual(len(r.log_matches(r"backend 'b' is up again")), 1)
        self.assertEqual(len(r.log_matches(r"backend 'b' caught up")), 1)

    def test_a_reload_keeps_the_outage(self):
        """A reload that restarts the backend's worker (its settings
        changed) while it is down: status and /health still say down at
        once, the log does not begin a second outage, and "up again after"
        counts from the first failure."""
        import json
        import signal
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        influxd.create_db(DB)
        self.assertEqual(influxd.stop(), 0)

        r = relaytest.Relayd(self.addCleanup)
        b = {"name": "b", "url": influxd.url, "retry_min": "100ms", "retry_max": "500ms"}
        r.write_config(self.tmp, backends=[b], extra_yaml={"log_outage_reminder": "0"})
        r.start()
        r.wait_ready()
        self.assertEqual(r.write(DB, "m v=1i 1600000000", precision="s")[0], 204)
        r.wait_log(r"backend 'b' is down", timeout=10)
        time.sleep(2.2)
        b2 = dict(b, retry_max="600ms")
        r.write_config(self.tmp, backends=[b2], extra_yaml={"log_outage_reminder": "0"})
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"backend 'b': delivering with its new settings", timeout=10)
        # At once, before the new worker has tried: still down.
        [h] = json.loads(r.get("/health")[2])["backends"]
        self.assertIn(h["state"], ("down", "retrying"), h)
        self.assertEqual(r.backend_status("b")["state"], h["state"])
        self.assertNotEqual(h["last_error"], "")
        influxd.start()
        influxd.wait_count(DB, "m", "v", 1, timeout=20)
        line = r.wait_log(r"backend 'b' is up again \(was down\) after", timeout=10)
        self.assertEqual(len(r.log_matches(r"backend 'b' is down")), 1, r.log_matches(r"backend 'b' is"))
        # The whole outage: at least the 2.2 s before the reload (the log
        # shows whole seconds).
        m = re.search(r"after (\d+(?:\.\d+)?)(ms|s)", r.log_matches(r"is up again")[0])
        self.assertIsNotNone(m)
        secs = float(m.group(1)) / (1000 if m.group(2) == "ms" else 1)
        self.assertGreaterEqual(secs, 2, line)


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
