#!/usr/bin/env python3
"""
A missing database holds only itself (issue 13): with
on_database_not_found: hold (the default), writes to a database that does
not exist on a real influxd wait, in their order, while writes to every
other database of the same backend flow at once; the held database's
points arrive, in order (an overwritten point keeps its last value), once
it exists: found by the backoff's retries, or at once on relayctl retry.
A restart of relayd while a database is held (SIGTERM and kill -9) loses
nothing and keeps the order. relayctl status and /health show which
database is held and how much.

A queued statement (through relayd's /query door): one text that creates
two held databases wakes both at once, not only the first; a statement
naming a database that does not exist (CREATE RETENTION POLICY ... ON
nosuch) is dead-lettered with influxd's answer and never holds the
backend, and once the database exists relayctl dlq requeue delivers it.
"""

import json
import os
import time
import unittest
import urllib.parse

import relaytest

LIVE = "live"
MISSING = "later"
BASE_S = 1_600_000_000


def backend(name, url, **opts):
    b = {"name": name, "url": url, "retry_min": "100ms", "retry_max": "1s"}
    b.update(opts)
    return b


class DbHoldTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.influx = relaytest.Influxd(self.addCleanup)
        self.influx.write_config(self.tmp)
        self.influx.start()
        self.influx.create_db(LIVE)

    def relayd(self, **opts):
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[backend("b", self.influx.url, **opts)])
        r.start()
        r.wait_ready()
        return r

    def write(self, r, db, i, value=None):
        """Point i of measurement m (its own series) into db; with value,
        point 0 again (the same series and time) with that value."""
        if value is None:
            body = "m,i=%04d v=%di %d\n" % (i, i, BASE_S + i)
        else:
            body = "m,i=0000 v=%di %d\n" % (value, BASE_S)
        status, _, resp = r.write(db, body, precision="s")
        self.assertEqual(status, 204, resp)

    def values(self, db):
        rows = self.influx.rows(db, 'SELECT "v" FROM "m" GROUP BY "i"')
        return {row["i"]: row["v"] for row in rows}

    def held(self, r):
        """The held databases relayctl status --json shows for backend b."""
        return {h["db"]: h for h in r.backend_status("b").get("held", [])}

    def wait_held(self, r, batches, timeout=10.0):
        return relaytest.wait_until(
            lambda: self.held(r).get(MISSING, {}).get("batches") == batches and self.held(r),
            timeout, 0.2, what="%d batches of %r held" % (batches, MISSING),
            detail=lambda: "status %r; log:\n%s" % (r.backend_status("b"), r.log()[-3000:]))

    def test_a_missing_database_holds_only_itself(self):
        r = self.relayd()
        # interleaved: the missing database's writes never hold the live one
        for i in range(10):
            self.write(r, MISSING, i)
            self.write(r, LIVE, i)
        self.write(r, MISSING, 0, value=7)  # an overwrite of point 0, later in the queue
        self.influx.wait_count(LIVE, "m", "v", 10, timeout=10)
        self.wait_held(r, 11)
        st = r.backend_status("b")
        self.assertEqual(st["pending_batches"], 0, st)  # the log's cursor is past them
        h = self.held(r)[MISSING]
        self.assertEqual((h["points"], h["batches"]), (11, 11), h)
        self.assertGreater(h["bytes"], 0)
        self.assertGreaterEqual(h["oldest_age_seconds"], 0)
        status, _, body = r.get("/health")
        be = json.loads(body)["backends"][0]
        self.assertEqual([(x["db"], x["batches"]) for x in be["held"]], [(MISSING, 11)], be)
        text = r.relayctl("status").stdout
        self.assertIn("held", text)
        self.assertIn(MISSING, text)
        r.wait_log(r'database "%s" does not exist on .*holding its \d+ batch' % MISSING)
        # export carries the held batches too (purge would drop them)
        out = os.path.join(self.tmp, "exp")
        cp = r.relayctl("export", "b", out)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        files = [f for f in os.listdir(self.tmp) if f.startswith("exp.%s." % MISSING)]
        self.assertEqual(len(files), 1, os.listdir(self.tmp))
        with open(os.path.join(self.tmp, files[0])) as f:
            self.assertEqual(sum(1 for line in f if line.startswith("m,i=")), 11)
        self.assertNotIn(MISSING, self.influx.databases())
        # still flowing while held
        self.write(r, LIVE, 10)
        self.influx.wait_count(LIVE, "m", "v", 11, timeout=10)
        # created on the server: found by the next retry, in order
        self.influx.create_db(MISSING)
        self.influx.wait_count(MISSING, "m", "v", 10, timeout=10)
        relaytest.wait_until(lambda: self.values(MISSING).get("0000") == 7, 10, 0.2,
                             what="the overwrite's value last")
        r.wait_log(r'database "%s" released' % MISSING)
        r.wait_status("b", pending_batches=0, dead_batches=0)
        self.assertEqual(self.held(r), {})
        # released: new writes go straight through
        self.write(r, MISSING, 20)
        self.influx.wait_count(MISSING, "m", "v", 11, timeout=10)

    def test_held_across_restarts_and_retry_releases_at_once(self):
        r = self.relayd(retry_max="60s", retry_min="30s")
        for i in range(3):
            self.write(r, MISSING, i)
        self.wait_held(r, 3)
        self.assertEqual(r.stop(), 0)  # SIGTERM
        r.restart()
        self.assertEqual(self.held(r)[MISSING]["batches"], 3)
        self.write(r, MISSING, 0, value=5)
        self.write(r, LIVE, 0)
        self.influx.wait_count(LIVE, "m", "v", 1, timeout=10)
        self.wait_held(r, 4)
        r.kill9()
        r.restart()
        self.write(r, MISSING, 0, value=6)
        self.wait_held(r, 5)
        self.influx.create_db(MISSING)
        # retry_min is 30 s: only relayctl retry can bring them this soon
        t0 = time.monotonic()
        self.assertEqual(r.relayctl("retry", "b").returncode, 0)
        self.influx.wait_count(MISSING, "m", "v", 3, timeout=10)
        relaytest.wait_until(lambda: self.values(MISSING).get("0000") == 6, 10, 0.2,
                             what="the last overwrite's value")
        self.assertLess(time.monotonic() - t0, 15)
        r.wait_status("b", pending_batches=0, dead_batches=0)
        self.assertEqual(self.held(r), {})

    def statement(self, r, q):
        """q queued through relayd's /query door (answered by relayd)."""
        st, _, body = r.request("POST", "/query?" + urllib.parse.urlencode({"q": q}))
        self.assertEqual(st, 200, body)
        self.assertNotIn(b'"error"', body)

    def test_one_statement_creating_two_held_databases_wakes_both(self):
        other = MISSING + "2"
        r = self.relayd(retry_max="60s", retry_min="30s")
        for i in range(2):
            self.write(r, MISSING, i)
            self.write(r, other, i)
        relaytest.wait_until(lambda: {db: h["batches"] for db, h in self.held(r).items()} == {MISSING: 2, other: 2},
                             10, 0.2, what="both databases held",
                             detail=lambda: "status %r" % (r.backend_status("b"),))
        # retry_min is 30 s: only the statement's wake brings them this soon
        self.statement(r, 'CREATE DATABASE "%s"; CREATE DATABASE "%s"' % (MISSING, other))
        self.influx.wait_count(MISSING, "m", "v", 2, timeout=10)
        self.influx.wait_count(other, "m", "v", 2, timeout=10)
        r.wait_status("b", pending_batches=0, dead_batches=0)
        self.assertEqual(self.held(r), {})

    def test_statement_on_a_missing_database_is_dead_lettered_not_holding(self):
        r = self.relayd(retry_max="60s", retry_min="30s")
        self.statement(r, 'CREATE RETENTION POLICY "r7" ON "nosuch" DURATION 7d REPLICATION 1')
        r.wait_status("b", pending_batches=0, dead_batches=1)
        r.wait_log(r"statement \d+ names a database the backend does not have .*relayctl dlq requeue b \d+")
        # the backend is not held: a write behind it goes at once
        self.write(r, LIVE, 0)
        self.influx.wait_count(LIVE, "m", "v", 1, timeout=10)
        self.assertNotEqual(r.backend_status("b").get("state"), "holding")
        # the dead letter keeps influxd's answer, which names the database
        cp = r.relayctl("dlq", "list", "b")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("database not found: nosuch", cp.stdout)
        # once it exists, a requeue delivers it
        self.influx.create_db("nosuch")
        cp = r.relayctl("dlq", "requeue", "b", "--all")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        r.wait_status("b", pending_batches=0, dead_batches=0)
        rows = self.influx.query(None, 'SHOW RETENTION POLICIES ON "nosuch"')["results"][0]["series"][0]["values"]
        self.assertIn("r7", [row[0] for row in rows])


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
