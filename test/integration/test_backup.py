#!/usr/bin/env python3
"""
relayctl backup (issue 17): a consistent copy of a running queue, and
restoring it.

relayd runs with its backend down while writers keep writing; relayctl
backup copies the queue meanwhile: the queue is first filled with about
160 MB so that the copy takes a measurable time, and writes are sent and
acknowledged while it runs. The copy opens (relayctl status and
verify with data_dir pointed at it), holds every batch acknowledged
before the backup started, and refuses to be written over. Restored into
a fresh data_dir, a relayd with a real influxd backend delivers every
point the copy holds, which is then queried back. mdb_copy -c
(lmdb-utils), the documented alternative, is checked on the running
queue in the same way. Newer queue formats are refused in words by both
relayd and relayctl (test_relayctl.py), and by wal_open (test_wal.c).
"""

import json
import os
import shutil
import subprocess
import threading
import time
import unittest

import relaytest

DB = "telemetry"
BASE_S = 1_600_000_000
LINES = 20
PAD = 8000  # bytes of a string field per point of the filling batches: 160 KB a batch
FILL = 1300  # filling batches: about 210 MB queued before the backup
MDB_COPY = shutil.which("mdb_copy")


class Writers:
    """Threads writing batch after batch through relayd, each batch LINES
    points at its own times (batch numbers from first on); which batches
    were acknowledged (204), in the order they were, and when each was
    sent and acknowledged (time.monotonic). pad: bytes of a string field
    on every point, to grow the queue fast."""

    def __init__(self, r, n=2, first=0, pad=0):
        self.r = r
        self.acked = []
        self.times = []  # (sent, acknowledged) per batch acknowledged
        self.pad = ',p="%s"' % ("x" * pad) if pad else ""
        self.lock = threading.Lock()
        self.stop_ = threading.Event()
        self.errors = []
        self.next = first
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(n)]
        for t in self.threads:
            t.start()

    def take(self):
        with self.lock:
            i = self.next
            self.next += 1
            return i

    def run(self):
        while not self.stop_.is_set():
            i = self.take()
            body = "".join("bk,w=%d v=%d%s %d\n" % (i, j, self.pad, (BASE_S + i * LINES + j) * 10 ** 9)
                           for j in range(LINES))
            sent = time.monotonic()
            try:
                status, _, resp = self.r.write(DB, body)
            except OSError as e:
                self.errors.append(repr(e))
                return
            if status != 204:
                self.errors.append("%d %r" % (status, resp))
                return
            acked = time.monotonic()
            with self.lock:
                self.acked.append(i)
                self.times.append((sent, acked))

    def snapshot(self):
        with self.lock:
            return list(self.acked)

    def within(self, start, end):
        """How many batches were both sent after start and acknowledged
        before end."""
        with self.lock:
            return sum(1 for s, a in self.times if start < s and a < end)

    def stop(self):
        self.stop_.set()
        for t in self.threads:
            t.join(30)


class BackupTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def other(self, data_dir, name, url):
        """A relayd (not started) whose data_dir is data_dir: relayctl's
        view of a copy, or the relayd that restores it."""
        r = relaytest.Relayd(self.addCleanup, name=name)
        r.write_config(self.tmp, backends=[{"name": "b1", "url": url, "retry_min": "100ms", "retry_max": "1s"}],
                       data_dir=data_dir)
        return r

    def ctl(self, r, *args, rc=0):
        cp = r.relayctl(*args)
        self.assertEqual(cp.returncode, rc, "relayctl %s:\n%s%s" % (" ".join(args), cp.stdout, cp.stderr))
        return cp

    def check_copy(self, data_dir, name, url, acked):
        """The copy in data_dir opens, verifies, and holds at least the
        points of every batch in acked: its pending points."""
        v = self.other(data_dir, name, url)
        self.ctl(v, "verify")
        st = json.loads(self.ctl(v, "status", "--json").stdout)
        b1 = {b["name"]: b for b in st["backends"]}["b1"]
        self.assertGreaterEqual(b1["pending_points"], len(acked) * LINES)
        # every batch acknowledged before the copy is in it, by its points
        seen = set()
        for d in v.dump("b1"):
            for line in d["body"].splitlines():
                seen.add(int(line.split(",w=")[1].split(" ")[0]))
        missing = sorted(set(acked) - seen)
        self.assertEqual(missing, [], "acknowledged batches missing from the copy")
        return b1["pending_points"], seen

    def test_backup_of_a_running_queue_then_restore(self):
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        influxd.create_db(DB)
        self.assertEqual(influxd.stop(), 0)  # the backend is down: everything queues
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[{"name": "b1", "url": influxd.url, "retry_min": "100ms",
                                            "retry_max": "1s"}])
        r.start()
        r.wait_ready()
        # A queue large enough that the copy takes a measurable time (at
        # least 0.3 s on the machine this was written on; the copy and its
        # fsync run at about 200-300 MB/s there): FILL batches of 160 KB.
        fill = Writers(r, n=8, pad=PAD)
        self.addCleanup(fill.stop)
        relaytest.wait_until(lambda: len(fill.snapshot()) >= FILL, 120, 0.05, what="%d large batches" % FILL)
        fill.stop()
        self.assertEqual(fill.errors, [])
        filled = fill.snapshot()
        w = Writers(r, first=fill.next)
        self.addCleanup(w.stop)
        relaytest.wait_until(lambda: len(w.snapshot()) >= 300, 60, what="300 batches acknowledged")

        # relayctl backup while the writers write
        dest = os.path.join(self.tmp, "backup")
        before = filled + w.snapshot()
        start = time.monotonic()
        cp = self.ctl(r, "backup", dest, "--json")
        end = time.monotonic()
        during = filled + w.snapshot()
        # relayd went on taking writes while the copy ran: write requests
        # sent after the backup began were acknowledged before it ended
        # (LMDB's copy is one read transaction, which no writer waits for)
        inside = w.within(start, end)
        relaytest._log("backup of %d MiB took %.2f s; %d writes sent and acknowledged meanwhile"
                       % (os.path.getsize(os.path.join(r.data_dir, "data.mdb")) >> 20, end - start, inside))
        self.assertGreaterEqual(inside, 3, "writes acknowledged during a backup of %.2f s" % (end - start))
        doc = json.loads(cp.stdout)
        self.assertEqual(doc["dest"], dest)
        self.assertEqual(sorted(os.listdir(dest)), ["data.mdb"])
        self.assertEqual(os.stat(dest).st_mode & 0o777, 0o700)
        self.assertEqual(os.stat(os.path.join(dest, "data.mdb")).st_mode & 0o777, 0o600)
        self.assertEqual(doc["bytes"], os.path.getsize(os.path.join(dest, "data.mdb")))
        self.assertEqual(doc["format_version"], 3)
        (b1,) = doc["backends"]
        self.assertEqual(b1["backend"], "b1")
        self.assertGreaterEqual(b1["batches"], len(before))
        self.assertLessEqual(b1["batches"], len(during) + 2)  # at most those in flight besides
        self.assertEqual(b1["points"], b1["batches"] * LINES)
        # the text form says the same, and a non-empty DEST is refused
        cp = self.ctl(r, "backup", dest, rc=1)
        self.assertIn("is not empty", cp.stderr)
        text_dest = os.path.join(self.tmp, "backup-text")
        os.mkdir(text_dest, 0o700)  # an empty directory is fine
        out = self.ctl(r, "backup", text_dest).stdout
        self.assertRegex(out, r"backend 'b1': \d+ pending batches \(\d+ points, ")
        self.assertIn("synced to disk", out)
        self.assertNotIn("(s)", out)

        # mdb_copy -c on the running queue: the documented alternative
        mdb_dest = os.path.join(self.tmp, "mdb-copy")
        os.mkdir(mdb_dest, 0o700)
        before_mdb = w.snapshot()
        subprocess.run([MDB_COPY, "-c", r.data_dir, mdb_dest], check=True, capture_output=True, timeout=60)
        w.stop()
        self.assertEqual(w.errors, [])
        self.assertEqual(r.stop(), 0)
        self.check_copy(mdb_dest, "viewmdb", influxd.url, before_mdb)

        # the backup opens as a queue and holds every batch acknowledged
        # before it started
        points, seen = self.check_copy(dest, "view", influxd.url, before)
        self.assertEqual(points, b1["points"])

        # restore: a fresh data_dir with the copy's data.mdb, a relayd
        # delivering to a real influxd
        restored = os.path.join(self.tmp, "restored")
        os.mkdir(restored, 0o700)
        shutil.copy2(os.path.join(dest, "data.mdb"), os.path.join(restored, "data.mdb"))
        influxd.start()
        rr = self.other(restored, "restored", influxd.url)
        rr.start()
        rr.wait_ready()
        rr.wait_status("b1", timeout=60, pending_batches=0, dead_batches=0)
        influxd.wait_count(DB, "bk", "v", points, timeout=30)
        rows = influxd.rows(DB, 'SELECT "v" FROM "bk" GROUP BY "w"')
        got = {}
        for row in rows:
            got[int(row["w"])] = got.get(int(row["w"]), 0) + 1
        self.assertEqual(got, {i: LINES for i in seen})
        self.assertEqual(rr.log_matches(r"dead-letter"), [])


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd", "mdb_copy"))
