#!/usr/bin/env python3
"""
Delivery never stalls silently (issue 11). When a queue operation of a
backend's worker fails (recording a delivery, reading the queue,
dead-lettering), the worker shows it (relayctl status and /health: the
state "storage", the error, the attempts, when it tries again), tries
again on a timer with backoff, takes `relayctl retry`, and goes on by
itself once the cause is gone: no new write, signal or relayctl command
is needed.

The full disk is a tmpfs mounted for the test, as in test_disk_full.py
(root and mount(8); exit 77 otherwise), with a filler file whose removal
is how space frees while relayd runs. The backend is fakeinflux, started
only once the disk is full (until then the backend is down). A damaged
record is written with lmdb-utils' mdb_load.
"""

import json
import os
import re
import struct
import time
import unittest

import fakeinflux
import relaytest
from relaytest import MDB_DUMP, MDB_LOAD, mdb_dump, mdb_load  # noqa: E402 (the queue file's tools)
from test_disk_full import mount_tmpfs, probe_mount, umount

LINES = 200
BACKEND = "local"
# relayd tries a failed queue operation again after at least 1 s, backing
# off up to retry_max.
RETRY = {"retry_min": "100ms", "retry_max": "1s"}
# A commit that finds the tmpfs full fails as LMDB's short write, EIO:
# wal_append tells it apart from an I/O error, wal_ack and wal_dead_letter
# do not (yet).
FULL = r"(queue storage is full|Input/output error)"


def batch(i, tag="stall"):
    """200 distinct lines, about 14 KiB, each with a timestamp."""
    return "".join('%s,batch=b%05d,line=l%03d value=%di,text="payload %05d-%03d" %d\n'
                   % (tag, i, j, j, i, j, 1_600_000_000_000_000_000 + i * 1000 + j)
                   for j in range(LINES))


class StallChecks:
    """What a test sees of the worker of BACKEND in self.relayd."""

    def status(self):
        """BACKEND's entry in relayctl status --json (which exits 1, and
        says "damaged", when it finds a record it cannot decode)."""
        cp = self.relayd.relayctl("status", "--json")
        self.assertIn(cp.returncode, (0, 1), cp.stdout + cp.stderr)
        for b in json.loads(cp.stdout)["backends"]:
            if b["name"] == BACKEND:
                return b
        self.fail("backend %r not in status --json: %r" % (BACKEND, cp.stdout))

    def health(self):
        status, _, body = self.relayd.get("/health")
        # A full disk may refuse writes: the relay is failing (503)
        # while refusals are recent.
        doc = json.loads(body)
        self.assertEqual(status, 503 if doc["status"] in ("failing", "stopping") else 200, body)
        for b in json.loads(body)["backends"]:
            if b["name"] == BACKEND:
                return b
        self.fail("backend %r not in /health: %r" % (BACKEND, body))

    def wait_storage_state(self, error_rx, timeout=20.0, state="storage"):
        """Wait until status shows the worker retrying a queue operation
        whose error matches error_rx; return the status entry."""
        seen = {}

        def check():
            st = seen["st"] = self.status()
            return (st["state"] == state and re.search(error_rx, st["last_error"])
                    and st["attempts"] >= 1 and st["next_attempt_ms"] >= 0) and st

        return relaytest.wait_until(
            check, timeout, 0.2, what="state 'storage' with an error matching /%s/" % error_rx,
            detail=lambda: "last status %r; relayctl retry: %r; relayd log:\n%s"
            % (seen.get("st"), self.relayd.relayctl("retry", BACKEND).stderr.strip(),
               relaytest._tail(self.relayd.log_since_start())))

    def assert_visible_and_retrying(self, error_rx):
        """The worker shows the failure, tries again on its own timer, and
        relayctl retry skips the wait."""
        r = self.relayd
        st = self.wait_storage_state(error_rx)
        self.assertLessEqual(st["next_attempt_ms"], 1000, st)
        # /health says the same.
        h = self.health()
        self.assertEqual(h["state"], "storage", h)
        self.assertRegex(h["last_error"], error_rx)
        self.assertGreaterEqual(h["attempts"], 1, h)
        self.assertTrue(0 <= h["next_attempt_ms"] <= 1000, h)
        # relayctl status names the error and the next attempt.
        text = r.relayctl("status").stdout
        self.assertRegex(text, r"\n%s +storage " % BACKEND, text)
        self.assertRegex(text, r"  %s: .*(%s).*attempts?, next in [0-9.]+s\)" % (BACKEND, error_rx), text)
        # It tries again by itself, with backoff (at least 1 s apart: never
        # a tight loop).
        t0, a0 = time.monotonic(), st["attempts"]
        later = relaytest.wait_until(
            lambda: (lambda s: s["attempts"] >= a0 + 2 and s)(self.status()), 10, 0.2,
            what="two more attempts by the worker's own timer")
        self.assertEqual(later["state"], "storage", later)
        self.assertGreaterEqual(time.monotonic() - t0, 1.0, "two attempts within a second")
        # relayctl retry works in this state: the next attempt comes at once.
        a1 = self.status()["attempts"]
        cp = r.relayctl("retry", BACKEND)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("relayd retries backend '%s' now" % BACKEND, cp.stdout)
        relaytest.wait_until(lambda: self.status()["attempts"] > a1, 0.9, 0.05,
                             what="an attempt right after relayctl retry")
        # Not more than one ERROR line for the whole episode so far (the
        # state change), not one per attempt.
        self.assertLessEqual(len(r.log_matches(r" error backend '%s'" % BACKEND)), 3,
                             r.log_since_start())



class FullDiskCase(StallChecks, unittest.TestCase):
    """A tmpfs of TMPFS_SIZE with a filler file, relayd's data_dir on it,
    and a fake backend that is down until self.fake.start()."""

    TMPFS_SIZE = "40m"
    FILLER_BYTES = 6 * 1024 * 1024

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.mnt = os.path.join(self.tmp, "tmpfs")
        os.mkdir(self.mnt)
        cp = mount_tmpfs(self.mnt, self.TMPFS_SIZE)
        self.assertEqual(cp.returncode, 0, "mount tmpfs: %s" % cp.stderr)
        self.addCleanup(umount, self.mnt)  # runs after relayd is stopped
        self.filler = os.path.join(self.mnt, "filler")
        with open(self.filler, "wb") as f:
            f.write(b"\xa5" * self.FILLER_BYTES)
        # Not listening yet: the backend is down.
        self.fake = fakeinflux.FakeInflux(port=relaytest.closed_port(), guard=self.addCleanup)
        self.relayd = relaytest.Relayd(self.addCleanup)
        self.relayd.write_config(
            self.tmp, backends=[dict({"name": BACKEND, "url": self.fake.url}, **RETRY)],
            data_dir=os.path.join(self.mnt, "data"),
            extra_yaml={"queue": {"map_size": "256MiB", "max_size": "1GiB"}})
        self.relayd.start()
        self.relayd.wait_ready()

    def fill_disk(self, first=None):
        """Write batches (first, when given, then batch(1), ...) until the
        queue answers 503 five times in a row; returns the bodies
        accepted."""
        accepted, consecutive = [], 0
        for i in range(5000):
            body = first if first is not None and i == 0 else batch(i)
            status, headers, resp = self.relayd.write("stall", body)
            if status == 204:
                accepted.append(body)
                consecutive = 0
                continue
            self.assertEqual(status, 503, "batch %d: %d %r" % (i, status, resp[:300]))
            consecutive += 1
            if consecutive >= 5:
                break
        self.assertGreaterEqual(consecutive, 5, "the %s tmpfs never filled" % self.TMPFS_SIZE)
        self.assertTrue(accepted)
        relaytest._log("disk full after %d accepted batches" % len(accepted))
        return accepted


class StallTest(FullDiskCase):
    def test_failed_ack_is_visible_retried_and_resumes_by_itself(self):
        """The reported case: a full disk, the backend down, kill -9, a
        restart, then the backend comes: the acks cannot commit. Before
        the fix the worker logged them, delivered everything and went
        idle, showing "up" with nothing to retry, the queue never shrank,
        and only a new write woke it."""
        r, fake = self.relayd, self.fake
        accepted = self.fill_disk()
        r.kill9()
        r.restart()
        self.assertEqual(self.status()["pending_batches"], len(accepted))
        fake.start()
        fake.wait_delivered(1, timeout=10)

        self.assert_visible_and_retrying(r"cannot record delivery up to batch \d+: " + FULL)
        st = self.status()
        self.assertGreater(st["pending_batches"], 0, st)
        # While it cannot record a delivery it sends nothing new (what it
        # sends would only be sent again).
        n = len(fake.writes())
        time.sleep(1.5)
        self.assertEqual(len(fake.writes()), n, "writes went on while no delivery could be recorded")

        # Space frees: delivery resumes by itself, without a new write.
        os.unlink(self.filler)
        st = r.wait_status(BACKEND, timeout=30, pending_batches=0, pending_points=0, state="up")
        self.assertEqual(st["last_error"], "", st)
        h = self.health()
        self.assertEqual((h["state"], h["last_error"], h["attempts"], h["next_attempt_ms"]), ("up", "", 0, -1), h)
        r.wait_log(r"backend '%s' is up again \(was storage\)" % BACKEND, timeout=2)
        # Every accepted point reached the backend (some twice: at least once).
        got = set()
        for q in fake.delivered():
            got.update(q.lines())
        want = set(l for b in accepted for l in b.splitlines())
        self.assertEqual(len(want - got), 0, "%d accepted lines never delivered" % len(want - got))
        # And the acks are on disk.
        r.kill9()
        r.restart()
        self.assertEqual(self.status()["pending_batches"], 0)


    def test_failed_ack_is_retried_while_paused(self):
        """relayctl pause while a delivery cannot be recorded: nothing is
        sent, but recording what was delivered goes on (it sends
        nothing), and resume then delivers the rest."""
        r, fake = self.relayd, self.fake
        accepted = self.fill_disk()
        r.kill9()
        r.restart()
        fake.start()
        self.wait_storage_state(r"cannot record delivery up to batch \d+: " + FULL)
        cp = r.relayctl("pause", BACKEND)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        st = r.wait_status(BACKEND, timeout=5, state="paused")
        self.assertRegex(st["last_error"], r"cannot record delivery")
        self.assertGreaterEqual(st["next_attempt_ms"], 0, st)
        cp = r.relayctl("retry", BACKEND)
        self.assertEqual(cp.returncode, 0, "retry of the failed ack while paused: " + cp.stdout + cp.stderr)
        n = len(fake.writes())
        os.unlink(self.filler)
        # What was delivered gets recorded, paused as it is; nothing more goes.
        st = relaytest.wait_until(
            lambda: (lambda s: s["last_error"] == "" and s)(self.status()), 10, 0.2,
            what="the delivered batches recorded while paused")
        self.assertEqual(st["state"], "paused", st)
        self.assertGreater(st["delivered_batches"], 0, st)
        self.assertEqual(st["pending_batches"] + st["delivered_batches"], len(accepted), st)
        self.assertEqual(len(fake.writes()), n, "a write went out while paused")
        cp = r.relayctl("resume", BACKEND)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        r.wait_status(BACKEND, timeout=30, pending_batches=0, state="up")


class DeadLetterFullDiskTest(FullDiskCase):
    def test_failed_dead_letter_is_visible_retried_and_resumes_by_itself(self):
        """The backend refuses every batch for good (400), but the disk is
        full: the dead-letter cannot commit. The worker shows it, tries
        again, and dead-letters everything once space frees."""
        r, fake = self.relayd, self.fake
        fake.set_default(fakeinflux.influx_error(400, "partial write: field type conflict"))
        accepted = self.fill_disk()
        fake.start()
        fake.wait_writes(1, timeout=10)
        self.assert_visible_and_retrying(r"cannot dead-letter batch \d+: " + FULL)
        st = self.status()
        self.assertEqual(st["pending_batches"], len(accepted), st)
        os.unlink(self.filler)
        # One dead-letter commit per batch: ASan's build is a few times slower.
        st = r.wait_status(BACKEND, timeout=240 if relaytest.asan_build() else 60, pending_batches=0,
                           dead_batches=len(accepted))
        self.assertEqual(fake.delivered(), [])


class DeadLetterPartFullDiskTest(FullDiskCase):
    def test_failed_dead_letter_of_a_413_piece_keeps_the_split(self):
        """A line the backend finds too large (413 whatever the piece) is
        dead-lettered alone, but the disk is full: that commit fails. The
        worker shows it, tries that same commit again (the pieces sent
        already are not sent again, the line is dead-lettered once), and
        goes on by itself once space frees."""
        r, fake = self.relayd, self.fake
        limit = 60_000
        fake.set_default(fakeinflux.too_large_over(limit))
        small = batch(0).splitlines()
        huge = 'stall,batch=huge value=1i,pad="%s" %d' % ("h" * limit, 1_600_000_000_000_000_000)
        first = "\n".join(small[:100] + [huge] + small[100:]) + "\n"
        accepted = self.fill_disk(first=first)
        fake.start()
        self.assert_visible_and_retrying(r"cannot dead-letter 1 line of batch 1: " + FULL)
        self.assertEqual(self.status()["dead_batches"], 0)
        pieces = [q.text() for q in fake.delivered()]
        os.unlink(self.filler)
        st = r.wait_status(BACKEND, timeout=120, pending_batches=0, dead_batches=1)
        self.assertEqual(st["dead_bytes"], len(huge) + 1, "the line was not dead-lettered exactly once")
        # The pieces of batch 1 delivered before the failure were not sent
        # again after it.
        again = [q.text() for q in fake.delivered()[len(pieces):] if q.text() in pieces]
        self.assertEqual(again, [], "pieces sent again after the dead-letter was retried")
        got = set(l for q in fake.delivered() for l in q.lines())
        want = set(l for b in accepted for l in b.splitlines()) - {huge}
        self.assertEqual(len(want - got), 0, "%d accepted lines never delivered" % len(want - got))


# ---- a record the queue cannot decode --------------------------------------

BATCH_HDR = struct.Struct("<QqQIIBBH6H")  # see docs/architecture.md, "On-disk format"






def with_accept_ns(rec, t):
    """The batch record rec with its stored acceptance time set to t."""
    hdr = list(BATCH_HDR.unpack_from(rec))
    hdr[1] = t
    return BATCH_HDR.pack(*hdr) + rec[BATCH_HDR.size:]


class CorruptRecordTest(StallChecks, unittest.TestCase):
    def test_unreadable_first_batch_is_moved_aside_and_the_queue_goes_on(self):
        """The first pending record cannot be decoded (an acceptance time
        of -1, which the queue refuses as corrupt). It used to stop the
        queue (a read retried for ever); now the worker moves it to the
        dead-letter queue, marked corrupt with its raw bytes, says so
        loudly, and delivers the rest without being woken."""
        tmp = relaytest.make_tmpdir(self.addCleanup)
        fake = fakeinflux.FakeInflux(guard=self.addCleanup).start()
        fake.set_default(fakeinflux.status(503, "down for now\n"))
        r = self.relayd = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[dict({"name": BACKEND, "url": fake.url, "parallel": 1}, **RETRY)])
        r.start()
        r.wait_ready()
        for i in range(3):
            status, _, resp = r.write("stall", batch(i, "corrupt"))
            self.assertEqual(status, 204, resp)
        r.stop()
        good = mdb_dump(r.data_dir, "batches")
        key = (1).to_bytes(8, "big")
        # And one changed byte in the body of the third: only its
        # checksum tells (it decodes otherwise).
        key3 = (3).to_bytes(8, "big")
        rec3 = bytearray(good[key3])
        rec3[-5] ^= 0x01
        mdb_load(r.data_dir, "batches", {key: with_accept_ns(good[key], -1), key3: bytes(rec3)})
        fake.set_default("ok")
        r.start()
        r.wait_ready()

        st = r.wait_status(BACKEND, timeout=20, pending_batches=0, dead_batches=2, state="up")
        self.assertEqual(st["last_error"], "")
        got = [l for q in fake.delivered() for l in q.lines()]
        self.assertEqual(got, batch(1, "corrupt").splitlines())
        self.assertGreaterEqual(len(r.log_matches(r"corrupt queue records? moved to the dead-letter queue")), 1,
                                r.log_since_start())
        cp = r.relayctl("--json", "dlq", "list", BACKEND)
        dead = json.loads(cp.stdout)["dead"]
        self.assertEqual([d["seq"] for d in dead], [1, 3], cp.stdout)
        self.assertTrue(all(d.get("corrupt") for d in dead), dead)
        self.assertIn("checksum", dead[1].get("message", "") + json.dumps(dead[1]), dead[1])
        # verify names it until the operator drops it
        self.assertIn("dead letter 1 is a quarantined batch that did not decode", r.relayctl("verify").stdout)


def probe():
    reason = probe_mount()
    if reason:
        return reason
    if not MDB_DUMP or not MDB_LOAD:
        return "mdb_dump/mdb_load (lmdb-utils) not found"
    return None


if __name__ == "__main__":
    relaytest.main(probe=probe)
