#!/usr/bin/env python3
"""
"204 means durable": the acceptance test of the write path. relayd's only
backend is a closed loopback port, so nothing is delivered and everything
acknowledged must stay queued: across kill -9 and a restart, byte for byte
and in order. Also: acceptance-time stamps, a bad line refuses the whole
request, a 100-client burst, the data_dir lock and file modes.
"""

import http.client
import os
import shutil
import stat
import threading
import time
import unittest

import relaytest

NREQ = 20
NLINES = 500
UNIT_NS = {"ns": 1, "s": 10 ** 9}
STATUS_KEYS = ("name", "pending_batches", "pending_points", "pending_bytes", "dead_batches")


def make_request(i, precision):
    """Request i: (body text, [(sent line, stamped?)]). Every tenth line has
    no timestamp; every fifth request has no final newline."""
    base = 1_600_000_000 * (10 ** 9 if precision == "ns" else 1)
    lines = []
    for j in range(NLINES):
        tags = "cpu,host=h%d,core=c%d" % (i % 3, j)
        fields = "value=%di,ratio=%.3f" % (i * NLINES + j, j / 7.0)
        if j % 50 == 7:
            fields += ',msg="a b,c=d"'
        if j % 10 == 4:
            lines.append(("%s %s" % (tags, fields), True))
        else:
            lines.append(("%s %s %d" % (tags, fields, base + i * 1000 + j), False))
    body = "\n".join(l for l, _ in lines)
    if i % 5 != 0:
        body += "\n"
    return body, lines


def status_core(b):
    return {k: b.get(k) for k in STATUS_KEYS}


class DurableWriteTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.relayd = relaytest.Relayd(self.addCleanup)
        self.backend_url = "http://127.0.0.1:%d" % relaytest.closed_port()
        self.relayd.write_config(self.tmp, backends=[("local", self.backend_url)])
        self.relayd.start()
        self.relayd.wait_ready()

    def check_dump_entry(self, d, sent):
        """d: one dump entry; sent: the request record. Returns the stamps
        found in the body."""
        lines = sent["lines"]
        unit = UNIT_NS[sent["precision"]]
        self.assertEqual(d["db"], "telemetry")
        if sent["rp"] is None:
            self.assertIn(d.get("rp"), ("", None), "rp of a request without rp")
        else:
            self.assertEqual(d["rp"], sent["rp"])
        self.assertEqual(d["precision"], sent["precision"])
        self.assertEqual(d["lines"], NLINES)
        body = d["body"]
        self.assertEqual(d["bytes"], len(body.encode("utf-8")), "bytes != len(body)")
        self.assertTrue(body.endswith("\n"), "stored body does not end with a newline")
        self.assertTrue(sent["before"] <= d["accept_ns"] <= sent["after"],
                        "accept_ns %d not within the POST [%d, %d]"
                        % (d["accept_ns"], sent["before"], sent["after"]))
        got = body.split("\n")[:-1]
        self.assertEqual(len(got), NLINES)
        stamps = set()
        lo, hi = sent["before"] // unit, sent["after"] // unit
        for j, ((line, stamped), stored) in enumerate(zip(lines, got)):
            if not stamped:
                self.assertEqual(stored, line, "line %d of a batch changed" % (j + 1))
                continue
            self.assertTrue(stored.startswith(line + " "),
                            "stamped line %d: %r does not extend %r" % (j + 1, stored, line))
            stamp = stored[len(line) + 1:]
            self.assertRegex(stamp, r"^[0-9]+$")
            ts = int(stamp)
            self.assertTrue(lo <= ts <= hi,
                            "stamp %d (precision %s) not within the POST [%d, %d]"
                            % (ts, sent["precision"], lo, hi))
            stamps.add(ts)
        self.assertEqual(len(stamps), 1, "one request got several acceptance stamps: %r" % stamps)
        return stamps

    def test_acknowledged_writes_survive_kill9(self):
        r = self.relayd
        sent = []
        t_first = time.time()
        for i in range(NREQ):
            precision = "ns" if i % 2 == 0 else "s"
            rp = "autogen" if i % 4 == 0 else None
            body, lines = make_request(i, precision)
            before = time.time_ns()
            status, headers, resp = r.write("telemetry", body, precision=precision, rp=rp)
            after = time.time_ns()
            self.assertEqual(status, 204, "request %d: %d %r" % (i, status, resp))
            sent.append({"lines": lines, "precision": precision, "rp": rp,
                         "before": before, "after": after})

        # Status while relayd runs.
        st = r.backend_status("local")
        self.assertEqual(st["pending_batches"], NREQ)
        self.assertEqual(st["pending_points"], NREQ * NLINES)
        self.assertEqual(st["dead_batches"], 0)
        age = st["oldest_age_seconds"]
        self.assertGreaterEqual(age, 0)
        self.assertLessEqual(age, time.time() - t_first + 2)

        dump1 = r.dump("local")
        self.assertEqual(len(dump1), NREQ)
        seqs = [d["seq"] for d in dump1]
        self.assertEqual(seqs, sorted(set(seqs)), "dump not in strictly increasing seq order")
        for d, s in zip(dump1, sent):
            self.check_dump_entry(d, s)
        self.assertEqual(st["pending_bytes"], sum(d["bytes"] for d in dump1))

        plain = r.relayctl("status")
        self.assertEqual(plain.returncode, 0, plain.stderr)
        self.assertIn("local", plain.stdout)
        self.assertTrue(any(v in plain.stdout for v in ("10000", "10,000", "10 000")),
                        "plain status does not show the 10000 pending points:\n" + plain.stdout)

        # kill -9: nothing acknowledged may be lost, nothing may change.
        r.kill9()
        st_stopped = r.backend_status("local")
        self.assertEqual(status_core(st_stopped), status_core(st), "status changed after kill -9")
        self.assertEqual(r.dump("local"), dump1, "dump changed after kill -9 (relayd stopped)")

        r.restart()
        st2 = r.backend_status("local")
        self.assertEqual(status_core(st2), status_core(st), "status changed after restart")
        self.assertGreaterEqual(st2["oldest_age_seconds"], age)
        self.assertEqual(r.dump("local"), dump1, "dump changed after restart")

        # One bad line (line 3 of 5) refuses the whole request.
        bad = ("cpu,host=a value=1 1000\n"
               "cpu,host=b value=2 2000\n"
               "cpu,host=c value= 3000\n"
               "cpu,host=d value=4 4000\n"
               "cpu,host=e value=5 5000\n")
        status, headers, resp = r.write("telemetry", bad)
        self.assertEqual(status, 400, resp)
        err = relaytest.json_error(headers, resp)
        self.assertIn("line 3", err)
        self.assertEqual(status_core(r.backend_status("local")), status_core(st),
                         "a refused request changed the queue")
        self.assertEqual(r.dump("local"), dump1)

        # The sequence goes on after the restart: no number is reused.
        status, _, resp = r.write("telemetry", "after,restart=1 value=1 1\n")
        self.assertEqual(status, 204, resp)
        dump3 = r.dump("local")
        self.assertEqual(dump3[:-1], dump1)
        self.assertGreater(dump3[-1]["seq"], dump1[-1]["seq"])
        self.assertEqual(dump3[-1]["body"], "after,restart=1 value=1 1\n")

    def test_burst_of_100_clients(self):
        r = self.relayd
        before = r.backend_status("local")
        nclients = 100
        barrier = threading.Barrier(nclients, timeout=30)
        results = [None] * nclients
        bodies = []
        for k in range(nclients):
            n = k % 10 + 1
            bodies.append("".join("burst,client=c%d,i=%d value=%di %d\n" % (k, j, j, 1000 + j)
                                  for j in range(n)))

        def client(k):
            conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=60)
            try:
                conn.connect()
                barrier.wait()
                conn.request("POST", "/write?db=burst", body=bodies[k].encode())
                resp = conn.getresponse()
                results[k] = (resp.status, resp.read())
            except Exception as e:  # reported below, per client
                results[k] = ("exception", repr(e))
            finally:
                conn.close()

        threads = [threading.Thread(target=client, args=(k,)) for k in range(nclients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        self.assertFalse(any(t.is_alive() for t in threads), "a client hung")
        bad = [(k, res) for k, res in enumerate(results) if res is None or res[0] != 204]
        self.assertEqual(bad, [], "clients not answered 204")

        total = sum(b.count("\n") for b in bodies)
        after = r.backend_status("local")
        self.assertEqual(after["pending_points"] - before["pending_points"], total)
        self.assertEqual(after["pending_batches"] - before["pending_batches"], nclients)
        stored = sorted(d["body"] for d in r.dump("local") if d["db"] == "burst")
        self.assertEqual(stored, sorted(bodies), "the burst's bodies are not each stored once")

    def test_second_relayd_on_same_data_dir_refuses(self):
        r = self.relayd
        status, _, resp = r.write("telemetry", "lock,test=1 value=1 1\n")
        self.assertEqual(status, 204, resp)
        second = relaytest.Relayd(self.addCleanup, name="second")
        second.write_config(self.tmp, backends=[("local", self.backend_url)],
                            data_dir=r.data_dir)
        second.start()
        rc = second.wait_exit(15)
        self.assertIsNotNone(rc, "a second relayd on the same data_dir kept running")
        self.assertNotEqual(rc, 0, "a second relayd on the same data_dir exited 0")
        log = second.log_since_start()
        self.assertTrue("locked" in log.lower() or "already" in log.lower(),
                        "no 'locked'/'already' in the refusal: %r" % log)
        self.assertIn(r.data_dir.rstrip("/"), log, "the refusal does not name the data_dir")
        # The first one is untouched and still takes writes.
        self.assertTrue(r.alive())
        status, _, _ = r.get("/ping")
        self.assertEqual(status, 204)
        status, _, resp = r.write("telemetry", "lock,test=2 value=2 2\n")
        self.assertEqual(status, 204, resp)
        self.assertEqual(r.backend_status("local")["pending_batches"], 2)

    def test_sigterm_stops_cleanly_and_keeps_the_queue(self):
        r = self.relayd
        body = "term,n=1 value=1 1\nterm,n=2 value=2 2\n"
        status, _, resp = r.write("telemetry", body)
        self.assertEqual(status, 204, resp)
        t0 = time.monotonic()
        rc = r.stop(grace=10)
        self.assertEqual(rc, 0, "relayd exited %s on SIGTERM" % rc)
        self.assertLess(time.monotonic() - t0, 10, "SIGTERM took the whole grace period")
        self.assertFalse(relaytest.port_is_listening(r.port))
        self.assertEqual([d["body"] for d in r.dump("local")], [body])
        r.restart()
        self.assertEqual([d["body"] for d in r.dump("local")], [body])
        self.assertEqual(r.backend_status("local")["pending_points"], 2)

    def test_data_dir_and_file_modes(self):
        # Restart with umask 0 so the modes cannot come from the umask.
        r = self.relayd
        r.stop()
        shutil.rmtree(r.data_dir)
        r.start(umask=0)
        r.wait_ready()
        status, _, resp = r.write("telemetry", "modes value=1 1\n")
        self.assertEqual(status, 204, resp)
        mode = stat.S_IMODE(os.stat(r.data_dir).st_mode)
        self.assertEqual(mode, 0o700, "data_dir mode %o" % mode)
        mdb = os.path.join(r.data_dir, "data.mdb")
        self.assertTrue(os.path.isfile(mdb), "no data.mdb in %s: %r" % (r.data_dir,
                                                                        os.listdir(r.data_dir)))
        mode = stat.S_IMODE(os.stat(mdb).st_mode)
        self.assertEqual(mode, 0o600, "data.mdb mode %o" % mode)


if __name__ == "__main__":
    relaytest.main()
