#!/usr/bin/env python3
"""
A full disk and a full LMDB map: relayd answers 503 (never 204) for what it
could not commit, keeps everything it acknowledged, keeps serving /ping, and
takes writes again once space frees.

The disk is a 12 MiB tmpfs mounted for the test (needs root and mount(8);
exit 77 otherwise). A 4 MiB filler file is put on it first; removing it is
how space "frees" while relayd runs (unmounting is not possible then).
queue.map_size is 64 MiB and max_size 1 GiB, so the disk fills before any
limit does.
"""

import os
import shutil
import subprocess
import tempfile
import time
import unittest

import relaytest

LINES = 200
TMPFS_SIZE = "12m"
FILLER_BYTES = 4 * 1024 * 1024


def mount_tmpfs(path, size):
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=%s,mode=0755" % size,
                           "tmpfs", path], capture_output=True, text=True)


def umount(path):
    cp = subprocess.run(["umount", path], capture_output=True, text=True)
    if cp.returncode != 0:
        relaytest._log("umount %s failed (%s); lazy unmount" % (path, cp.stderr.strip()))
        subprocess.run(["umount", "-l", path], capture_output=True)


def probe_mount():
    """A reason to skip, or None when a tmpfs can be mounted here."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if not shutil.which("mount") or not shutil.which("umount"):
        return "mount/umount not found"
    d = tempfile.mkdtemp(prefix="relaytest-probe-")
    try:
        cp = mount_tmpfs(d, "1m")
        if cp.returncode != 0:
            return "cannot mount a tmpfs: %s" % (cp.stderr.strip() or cp.returncode)
        umount(d)
        return None
    finally:
        os.rmdir(d)


def batch(i):
    """200 distinct lines, about 14 KiB, each with a timestamp."""
    return "".join('disk,batch=b%05d,line=l%03d value=%di,text="payload %05d-%03d" %d\n'
                   % (i, j, j, i, j, 1_600_000_000_000_000_000 + i * 1000 + j)
                   for j in range(LINES))


class DiskFullTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.mnt = os.path.join(self.tmp, "tmpfs")
        os.mkdir(self.mnt)
        cp = mount_tmpfs(self.mnt, TMPFS_SIZE)
        self.assertEqual(cp.returncode, 0, "mount tmpfs: %s" % cp.stderr)
        self.addCleanup(umount, self.mnt)  # runs after relayd is stopped
        self.filler = os.path.join(self.mnt, "filler")
        with open(self.filler, "wb") as f:
            f.write(b"\xa5" * FILLER_BYTES)
        self.relayd = relaytest.Relayd(self.addCleanup)
        self.relayd.write_config(
            self.tmp, backends=[("local", "http://127.0.0.1:%d" % relaytest.closed_port())],
            data_dir=os.path.join(self.mnt, "data"),
            extra_yaml={"queue": {"map_size": "64MiB", "max_size": "1GiB"}})
        self.relayd.start()
        self.relayd.wait_ready()

    def test_full_disk_503_then_recovers(self):
        r = self.relayd
        accepted, refused = [], []
        consecutive = 0
        for i in range(3000):
            body = batch(i)
            status, headers, resp = r.write("disk", body)
            if status == 204:
                accepted.append(body)
                consecutive = 0
                continue
            self.assertEqual(status, 503, "batch %d: %d %r" % (i, status, resp[:300]))
            relaytest.json_error(headers, resp)
            refused.append(body)
            consecutive += 1
            if consecutive >= 5:
                break
        self.assertTrue(accepted, "no batch was accepted on the tmpfs")
        self.assertTrue(refused, "no 503 after 3000 batches on a %s tmpfs" % TMPFS_SIZE)
        relaytest._log("disk full after %d accepted batches, %d refused"
                       % (len(accepted), len(refused)))

        # relayd stays up and healthy.
        self.assertTrue(r.alive(), "relayd died on a full disk")
        status, _, _ = r.get("/ping")
        self.assertEqual(status, 204)
        st = r.backend_status("local")
        self.assertEqual(st["pending_points"], len(accepted) * LINES)
        self.assertEqual(st["pending_batches"], len(accepted))

        # Space frees: writes are taken again (allow a few 503s while relayd
        # notices, e.g. reopening its environment).
        os.unlink(self.filler)
        recovered = []
        for attempt in range(40):
            body = batch(10000 + attempt)
            status, headers, resp = r.write("disk", body)
            if status == 204:
                recovered.append(body)
                break
            self.assertEqual(status, 503, resp[:300])
            time.sleep(0.25)
        self.assertTrue(recovered, "still 503 after freeing %d bytes" % FILLER_BYTES)
        for k in range(5):
            body = batch(20000 + k)
            status, _, resp = r.write("disk", body)
            self.assertEqual(status, 204, "write %d after recovery: %r" % (k, resp[:300]))
            recovered.append(body)

        # After kill -9 and a restart: exactly the acknowledged batches, in order.
        r.kill9()
        r.restart()
        st = r.backend_status("local")
        self.assertEqual(st["pending_points"], (len(accepted) + len(recovered)) * LINES)
        self.assertEqual(st["pending_batches"], len(accepted) + len(recovered))
        bodies = [d["body"] for d in r.dump("local")]
        self.assertEqual(len(bodies), len(accepted) + len(recovered))
        refused_set = set(refused)
        self.assertFalse([b for b in bodies if b in refused_set], "a 503'd batch is queued")
        self.assertTrue(bodies == accepted + recovered,
                        "the queue is not exactly the acknowledged batches in order")


class MapFullTest(unittest.TestCase):
    """A small LMDB map on an ordinary disk: the map, not the limit, fills."""

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.relayd = relaytest.Relayd(self.addCleanup)
        self.relayd.write_config(
            self.tmp, backends=[("local", "http://127.0.0.1:%d" % relaytest.closed_port())],
            extra_yaml={"queue": {"map_size": "2MiB", "max_size": "1GiB"}})
        self.relayd.start()
        self.relayd.wait_ready()

    def test_full_map_503_keeps_what_was_acknowledged(self):
        r = self.relayd
        accepted, refused = [], 0
        for i in range(1000):
            status, headers, resp = r.write("map", batch(i))
            if status == 204:
                accepted.append(batch(i))
                continue
            self.assertEqual(status, 503, "batch %d: %d %r" % (i, status, resp[:300]))
            relaytest.json_error(headers, resp)
            refused += 1
            if refused >= 3:
                break
        self.assertTrue(accepted, "no batch accepted with a 2 MiB map")
        self.assertEqual(refused, 3, "no 503 after 1000 batches with a 2 MiB map")
        self.assertTrue(r.alive())
        status, _, _ = r.get("/ping")
        self.assertEqual(status, 204)

        r.kill9()
        r.restart()
        st = r.backend_status("local")
        self.assertEqual(st["pending_points"], len(accepted) * LINES)
        self.assertTrue([d["body"] for d in r.dump("local")] == accepted,
                        "the queue is not exactly the acknowledged batches in order")


if __name__ == "__main__":
    relaytest.main(probe=probe_mount)
