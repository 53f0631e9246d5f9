#!/usr/bin/env python3
"""
UDP listeners (listen.udp) towards a real influxd: datagrams of line
protocol arrive with exact counts and values; lines without a timestamp get
the arrival time in the listener's precision; a bad datagram is dropped
whole, counted in /health and logged (rate-limited) while the good ones
around it arrive; a burst is grouped into few batches; SIGTERM right after
sending commits everything received; a full queue drops and counts; a port
already taken stops relayd from starting.

Datagrams are sent in windows and the test waits until relayd has read
each window (its /health counter), so that the kernel's socket buffer
never overflows: a datagram the kernel drops never reaches relayd and
would make the counts flaky rather than wrong.
"""

import json
import os
import socket
import time
import unittest

import relaytest

LOOPBACK = relaytest.LOOPBACK


def sender():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    return s


def udp_listener(port, db, **kw):
    d = {"address": "%s:%d" % (LOOPBACK, port), "db": db}
    d.update(kw)
    return d


def health(relayd):
    status, _, body = relayd.get("/health")
    # 503 while "failing": a full queue refused datagrams in the last 30 s.
    if status != 200 and not (status == 503 and b'"status":"failing"' in body):
        raise AssertionError("/health: %d %r" % (status, body[:300]))
    return json.loads(body.decode("utf-8"))


def udp_stats(relayd, port):
    """The /health "udp" entry of the listener on port."""
    doc = health(relayd)
    for u in doc.get("udp", []):
        if u["address"] == "%s:%d" % (LOOPBACK, port):
            return u
    raise AssertionError("no udp listener on port %d in /health: %r" % (port, doc.get("udp")))


def loopback_settle():
    """Return once the datagrams this process sent before have reached
    their sockets: a marker sent to ourselves is received. sendto() on
    loopback usually delivers at once, but the kernel may leave the work
    to ksoftirqd under load, and it keeps the order."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.bind((LOOPBACK, 0))
        s.settimeout(10)
        s.sendto(b"marker", s.getsockname())
        s.recv(16)
    finally:
        s.close()


def send_paced(relayd, port, datagrams, window=100, timeout=30.0, commit=False):
    """Send every datagram (bytes or str) to port, window by window,
    waiting after each window until relayd's datagram counter caught up
    (and with commit, until every group is committed or dropped)."""
    s = sender()
    try:
        base = udp_stats(relayd, port)["datagrams"]
        sent = 0
        for i in range(0, len(datagrams), window):
            for d in datagrams[i:i + window]:
                s.sendto(d.encode() if isinstance(d, str) else d, (LOOPBACK, port))
                sent += 1
            relaytest.wait_until(lambda: udp_stats(relayd, port)["datagrams"] >= base + sent, timeout, 0.02,
                                 what="relayd received %d datagrams" % sent,
                                 detail=lambda: "udp stats %r (the kernel may have dropped some: "
                                 "RcvbufErrors in /proc/net/snmp)" % (udp_stats(relayd, port),))
            if commit:
                settled(relayd, port)
    finally:
        s.close()


def settled(relayd, port):
    """Wait until every valid datagram received is committed or dropped
    (no group pending); return the stats."""
    def check():
        u = udp_stats(relayd, port)
        return u if u["datagrams"] == u["datagrams_committed"] + u["datagrams_bad"] + u["datagrams_dropped"] \
            else None
    return relaytest.wait_until(check, 20, 0.05, what="every datagram committed, bad or dropped",
                                detail=lambda: "udp stats %r" % (udp_stats(relayd, port),))


class UdpTest(unittest.TestCase):
    """One influxd for the class; each test starts its own relayd and
    writes to databases of its own."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.influxd = relaytest.Influxd(cls.addClassCleanup)
        cls.influxd.start(cls.tmp)

    def start_relayd(self, listeners, backend_url=None, extra=None, start=True):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        cfg = {"listen": {"udp": listeners}}
        for k, v in (extra or {}).items():
            cfg[k] = v
        r.write_config(tmp, backends=[{"name": "influx", "url": backend_url or self.influxd.url}],
                       extra_yaml=cfg)
        if start:
            r.start()
            r.wait_ready()
        return r

    # -- what arrives ------------------------------------------------------

    def test_datagrams_arrive_with_exact_counts_and_values(self):
        db = "udp_exact"
        self.influxd.create_db(db)
        port = relaytest.free_udp_port()
        r = self.start_relayd([udp_listener(port, db)])
        datagrams = []
        expect = {}
        t0 = 1700000000000000000
        for i in range(50):
            lines = []
            for j in range(4):
                n = i * 4 + j
                t = t0 + n * 1000
                lines.append('m,host=h%d,dc=x\\ y f=%d.5,i=%di,s="str %d \\"q\\"",b=%s %d'
                             % (n % 3, n, -n, n, "true" if n % 2 else "false", t))
                expect[t] = {"host": "h%d" % (n % 3), "dc": "x y", "f": n + 0.5, "i": -n,
                             "s": 'str %d "q"' % n, "b": bool(n % 2)}
            datagrams.append("\n".join(lines) + ("\n" if i % 2 else ""))
        send_paced(r, port, datagrams, window=25)
        self.influxd.wait_count(db, "m", "f", 200)
        rows = self.influxd.rows(db, 'SELECT * FROM "m"')
        self.assertEqual(len(rows), 200)
        for row in rows:
            want = expect[row["time"]]
            for k, v in want.items():
                self.assertEqual(row[k], v, "time %d field %s" % (row["time"], k))
        u = settled(r, port)
        self.assertEqual(u["db"], db)
        self.assertEqual(u["datagrams"], 50)
        self.assertEqual(u["datagrams_committed"], 50)
        self.assertEqual(u["datagrams_bad"], 0)
        self.assertEqual(u["datagrams_dropped"], 0)
        self.assertEqual(u["points_accepted"], 200)
        self.assertEqual(u["points_dropped"], 0)
        self.assertEqual(u["bytes"], sum(len(d) for d in datagrams))

    def test_arrival_time_in_listener_precision_and_rp(self):
        db_s, db_ns = "udp_prec_s", "udp_prec_ns"
        self.influxd.create_db(db_s)
        self.influxd.create_db(db_ns)
        ps, pns = relaytest.free_udp_port(), relaytest.free_udp_port()
        r = self.start_relayd([udp_listener(ps, db_s, precision="s", rp="autogen"),
                               udp_listener(pns, db_ns)])
        before = time.time_ns()
        send_paced(r, ps, ["t,l=s,i=%d v=%d" % (i, i) for i in range(5)])
        send_paced(r, pns, ["t,l=ns v=%d\nt,l=ns2 v=%d" % (i, i) for i in range(5)])
        after = time.time_ns()
        self.influxd.wait_count(db_s, "t", "v", 5)
        self.influxd.wait_count(db_ns, "t", "v", 10)
        for row in self.influxd.rows(db_s, 'SELECT * FROM "t"'):
            self.assertEqual(row["time"] % 1000000000, 0, "not stamped in seconds: %r" % row)
            self.assertGreaterEqual(row["time"], before // 1000000000 * 1000000000)
            self.assertLessEqual(row["time"], after)
        for row in self.influxd.rows(db_ns, 'SELECT * FROM "t"'):
            self.assertGreaterEqual(row["time"], before)
            self.assertLessEqual(row["time"], after)
        # Each listener has its own counters.
        self.assertEqual(udp_stats(r, ps)["points_accepted"], 5)
        self.assertEqual(udp_stats(r, pns)["points_accepted"], 10)
        self.assertEqual(udp_stats(r, pns)["db"], db_ns)

    def test_bad_datagram_dropped_counted_logged(self):
        db = "udp_bad"
        self.influxd.create_db(db)
        port = relaytest.free_udp_port()
        r = self.start_relayd([udp_listener(port, db, read_buffer="1GiB")])
        good = ["ok,n=%d v=%d %d" % (i, i, 1000 + i) for i in range(3)]
        # One bad line spoils its whole datagram, the good line before it too.
        send_paced(r, port, [good[0], "ok,n=x v=1 1\nok,n=y 2\n", good[1], good[2]])
        self.influxd.wait_count(db, "ok", "v", 3)
        u = settled(r, port)
        self.assertEqual(u["datagrams_bad"], 1)
        self.assertEqual(u["points_accepted"], 3)
        logged = r.wait_log(r"udp 127\.0\.0\.1:%d: bad datagram of 22 bytes from 127\.0\.0\.1:\d+ dropped: "
                            r"line 2: " % port)
        self.assertTrue(logged)
        # Many more within the rate-limit interval: counted, not all logged.
        send_paced(r, port, ["bad%d" % i for i in range(30)])
        u = udp_stats(r, port)
        self.assertEqual(u["datagrams_bad"], 31)
        self.assertLessEqual(len(r.log_matches(r"bad datagram")), 2)
        self.assertEqual(self.influxd.count(db, "ok", "v"), 3)
        # read_buffer beyond what the kernel grants: the granted size is
        # logged and shown.
        with open("/proc/sys/net/core/rmem_max") as f:
            rmem_max = int(f.read())
        if 2 * rmem_max < 1 << 30:
            m = r.wait_log(r"udp 127\.0\.0\.1:%d: read_buffer 1073741824 bytes asked, the kernel granted (\d+)"
                           % port)
            self.assertEqual(int(m.group(1)), u["receive_buffer"])
            self.assertLess(u["receive_buffer"], 1 << 30)

    def test_burst_grouped_into_few_batches(self):
        db = "udp_burst"
        self.influxd.create_db(db)
        port = relaytest.free_udp_port()
        # The backend is down first: every batch stays queued, and relayctl
        # counts them.
        r = self.start_relayd([udp_listener(port, db, flush_interval="500ms")],
                              backend_url="http://%s:%d" % (LOOPBACK, relaytest.closed_port()))
        n = 5000
        datagrams = ["b,d=%d,k=0 v=%d %d\nb,d=%d,k=1 v=%d %d\nb,d=%d,k=2 v=%d %d"
                     % (i, i, i + 1, i, i, i + 1, i, i, i + 1) for i in range(n)]
        send_paced(r, port, datagrams, window=250)
        u = settled(r, port)
        self.assertEqual(u["datagrams_committed"], n)
        self.assertEqual(u["points_accepted"], 3 * n)
        st = r.wait_status("influx", pending_points=3 * n)
        self.assertEqual(st["pending_batches"], u["batches"])
        self.assertLessEqual(u["batches"], n // 50,
                             "%d datagrams made %d batches" % (n, u["batches"]))
        # Then the backend comes: everything arrives, once.
        r.stop()
        r.write_config(r.tmpdir, backends=[{"name": "influx", "url": self.influxd.url}],
                       extra_yaml={"listen": {"udp": [udp_listener(port, db, flush_interval="500ms")]}})
        r.restart()
        self.influxd.wait_count(db, "b", "v", 3 * n, timeout=60)
        r.wait_status("influx", pending_points=0)

    def test_sigterm_commits_what_was_received(self):
        db = "udp_term"
        self.influxd.create_db(db)
        port = relaytest.free_udp_port()
        down = "http://%s:%d" % (LOOPBACK, relaytest.closed_port())
        # A long flush interval: nothing would commit before the signal if
        # the shutdown did not flush.
        listeners = [udp_listener(port, db, flush_interval="30s", read_buffer="4MiB")]
        r = self.start_relayd(listeners, backend_url=down)
        s = sender()
        for i in range(100):
            body = "\n".join("term,i=%d,j=%d v=%d %d" % (i, j, j, 1000 + i) for j in range(10))
            s.sendto(body.encode(), (LOOPBACK, port))
        s.close()
        loopback_settle()
        self.assertEqual(r.stop(), 0)
        self.assertTrue(r.log_matches(r"udp 127\.0\.0\.1:%d: 100 datagrams received .* 1000 points committed"
                                      % port), r.log_since_start())
        st = r.backend_status("influx")
        self.assertEqual(st["pending_points"], 1000)
        r.write_config(r.tmpdir, backends=[{"name": "influx", "url": self.influxd.url}],
                       extra_yaml={"listen": {"udp": listeners}})
        r.restart()
        self.influxd.wait_count(db, "term", "v", 1000)

    def test_queue_full_drops_are_counted(self):
        db = "udp_full"
        port = relaytest.free_udp_port()
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[{"name": "down", "max_size": "1MiB",
                                       "url": "http://%s:%d" % (LOOPBACK, relaytest.closed_port())}],
                       extra_yaml={"listen": {"udp": [udp_listener(port, db, flush_interval="50ms",
                                                                   batch_max_size="64KiB",
                                                                   read_buffer="4MiB")]}})
        r.start()
        r.wait_ready()
        n = 300
        pad = "x" * 8000
        datagrams = ['full,i=%d s="%s" %d' % (i, pad, i + 1) for i in range(n)]
        # Each window is committed before the next is sent, and is smaller
        # than a group: only the queue limit can drop anything.
        send_paced(r, port, datagrams, window=6, commit=True)
        u = settled(r, port)
        self.assertGreater(u["datagrams_dropped"], 0)
        self.assertGreater(u["points_accepted"], 0)
        self.assertEqual(u["datagrams_committed"] + u["datagrams_dropped"], n)
        self.assertEqual(u["points_accepted"] + u["points_dropped"], n)
        self.assertEqual(u["points_dropped"], u["datagrams_dropped"])
        st = r.backend_status("down")
        self.assertEqual(st["pending_points"], u["points_accepted"])
        self.assertLessEqual(st["pending_bytes"], 1 << 20)
        r.wait_log(r"udp 127\.0\.0\.1:%d: \d+ datagrams \(\d+ points\) dropped: the queue for backend 'down' is full \(max_size 1MiB\)"
                   % port)
        self.assertEqual(r.log_matches(r"next group is full"), [])
        # The HTTP door says the same thing to its writers (a body larger
        # than the room a 64 KiB group may have left).
        status, _, _ = r.write("other", 'x s="%s" 1' % (pad * 13))
        self.assertEqual(status, 503)

    def test_port_taken_refuses_start(self):
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(taken.close)
        taken.bind((LOOPBACK, 0))
        port = taken.getsockname()[1]
        r = self.start_relayd([udp_listener(port, "x")], start=False)
        r.start()
        rc = r.wait_exit(10)
        self.assertEqual(rc, 1, "relayd did not exit 1 with its UDP port taken")
        self.assertTrue(r.log_matches(r"cannot listen on udp 127\.0\.0\.1:%d: address already in use: "
                                      r"refusing to start" % port), r.log_since_start())
        self.assertFalse(relaytest.port_is_listening(r.port))


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
