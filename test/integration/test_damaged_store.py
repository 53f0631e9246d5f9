#!/usr/bin/env python3
"""
relayd and every relayctl command on a damaged or hostile data.mdb (issue
11). One healthy store of 50 batches is written through relayd (its
backend down) once; each test case damages a copy of it, made at test
time, nothing checked in:

- the file itself: cut short (8192 bytes, half, a length that is no whole
  number of pages), meta pages zeroed (one, both), a copy taken while
  relayd was writing (newer meta pages over older data pages), bytes that
  are not LMDB at all, an LMDB file of a newer data version, 64 random
  16-byte scribbles over the pages (several seeds);
- one batch record, rewritten with mdb_dump/mdb_load: a `lines` of
  0xffffffff, a body length, a string length or a record version that
  disagree with the record, a record cut short; and a precision code of 9
  (whole otherwise: named by verify, shown, left out of an export).

What must hold: no process ever dies of a signal (SIGBUS, SIGSEGV, abort),
under ASan no out-of-bounds read either (the harness fails on a
sanitizer report); a damaged file is refused by relayd and by every
relayctl command with exit 1 and one message naming the file, what is
wrong and what to do, and is left as it was; a damaged record is named
(its sequence and why) by verify and by every view that meets it, every
other batch is still shown, dumped and exported, purge removes it, and
relayd starts and serves /health beside it.
"""
import hashlib
import json
import os
import random
import re
import shutil
import struct
import subprocess
import unittest

import relaytest
from relaytest import MDB_DUMP, MDB_LOAD, mdb_dump, mdb_load  # noqa: E402 (the queue file's tools)
from relaytest import seal_record as seal  # noqa: E402

DB = "telemetry"
BATCHES = 50
LINES = 20
PAGE = 4096

BATCH_HDR = struct.Struct("<QqQIIBBH6H")  # 48 bytes: docs/architecture.md, "On-disk format"


def down_url():
    return "http://127.0.0.1:%d" % relaytest.closed_port()






def file_hash(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()










# ---- damage to the file ----------------------------------------------------

def cut(n):
    def damage(path, older):
        size = os.path.getsize(path)
        os.truncate(path, n(size))
    return damage


def zero_meta(pages):
    def damage(path, older):
        with open(path, "r+b") as f:
            for p in pages:
                f.seek(p * PAGE)
                f.write(b"\0" * PAGE)
    return damage


def torn_copy(path, older):
    """What a copy taken while relayd wrote can look like: the meta pages
    of the later state over the data pages of an earlier, shorter one."""
    with open(path, "rb") as f:
        meta = f.read(2 * PAGE)
    shutil.copy(older, path)
    with open(path, "r+b") as f:
        f.write(meta)


def not_lmdb(path, older):
    with open(path, "wb") as f:
        f.write(b"# this is not a queue\n" * 3000)


def newer_lmdb(path, older):
    with open(path, "r+b") as f:
        for p in (0, 1):
            f.seek(p * PAGE + 16 + 4)  # page header, then magic, then the data version
            f.write(struct.pack("<I", 2))


def scribble(seed):
    def damage(path, older):
        rnd = random.Random(seed)
        size = os.path.getsize(path)
        with open(path, "r+b") as f:
            for _ in range(64):
                f.seek(rnd.randrange(2 * PAGE, size - 16))
                f.write(bytes(rnd.randrange(256) for _ in range(16)))
    return damage


# (name, damage, what the message must say)
FILE_DAMAGE = [
    ("cut to 8192 bytes", cut(lambda s: 8192), "the file was cut short"),
    ("cut to half", cut(lambda s: s // 2 // PAGE * PAGE), "the file was cut short"),
    ("cut inside a page", cut(lambda s: s - 1000), "the file was cut short"),
    ("cut inside the first meta page", cut(lambda s: 100), "fewer than one LMDB meta page"),
    ("meta page 0 zeroed", zero_meta([0]), "LMDB meta page 0 is all zeroes"),
    ("both meta pages zeroed", zero_meta([0, 1]), "LMDB meta page 0 is all zeroes"),
    ("a copy taken while relayd wrote", torn_copy, "the file was cut short"),
    ("not an LMDB file", not_lmdb, "not an LMDB meta page"),
    ("a newer LMDB data version", newer_lmdb, "LMDB file of data version 2"),
]

# ---- damage to one batch record -------------------------------------------


# Each change is sealed (its checksum written again), as a hostile file or
# a bug would have it: the fields themselves must still be checked. One
# more case leaves the checksum as it was, as damage does.

def set_u8(at, v):
    return lambda rec: seal(rec[:at] + bytes([v]) + rec[at + 1:])


def set_u32(at, v):
    return lambda rec: seal(rec[:at] + struct.pack("<I", v) + rec[at + 4:])


def add_u16(at, d):
    return lambda rec: seal(rec[:at] + struct.pack("<H", struct.unpack_from("<H", rec, at)[0] + d) + rec[at + 2:])


def flip_body_byte(rec):
    return rec[:-5] + bytes([rec[-5] ^ 0x01]) + rec[-4:]


# (name, sequence, change of the record, what verify and the views say).
# A precision code of 9 is not among them: such a batch is whole
# otherwise, relayd dead-letters it with its body (test_delivery_faults),
# and test_a_precision_code_outside_the_format_is_named covers relayctl.
RECORD_DAMAGE = [
    ("lines 0xffffffff", 20, set_u32(24, 0xFFFFFFFF),
     "header says 4294967295 points, the body holds %d lines" % LINES),
    ("body length", 30, lambda rec: set_u32(28, struct.unpack_from("<I", rec, 28)[0] + 1)(rec),
     "string and body lengths add up to"),
    ("string length", 40, add_u16(36, 5), "string and body lengths add up to"),
    ("record version", 45, set_u8(32, 3), "record version 3 (this binary reads 2)"),
    ("a short record", 1, lambda rec: rec[:30], "record of 30 bytes is shorter than its 48-byte header"),
    ("a flipped bit in the body", 25, flip_body_byte, "checksum "),
    ("an unknown kind", 35, set_u8(34, 7), "unknown batch kind 7"),
]


def as_statement(text):
    """The record changed into a statement (kind 1, byte 34) of text, its
    strings kept: what a queued CREATE DATABASE looks like on disk."""
    def change(rec):
        lens = struct.unpack_from("<6H", rec, 36)
        body = text.encode()
        head = rec[:48 + sum(lens)]
        head = head[:24] + struct.pack("<II", 0, len(body)) + head[32:34] + b"\x01" + head[35:]
        return seal(head + body)
    return change


class DamagedStoreTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        r = relaytest.Relayd(cls.addClassCleanup, name="source")
        r.write_config(cls.tmp, backends=[{"name": "b", "url": down_url()}])
        r.start()
        r.wait_ready()
        for i in range(BATCHES):
            body = "".join("m,b=b%03d,l=l%03d v=%di %d\n" % (i, j, j, 1_600_000_000 + i * 100 + j)
                           for j in range(LINES))
            status, _, resp = r.write(DB, body, precision="s")
            if status != 204:
                raise AssertionError("write %d: %d %r" % (i, status, resp))
            if i == BATCHES // 2 - 1:
                # the earlier, shorter state, for the torn copy
                r.stop()
                cls.older = os.path.join(cls.tmp, "older.mdb")
                shutil.copy(os.path.join(r.data_dir, "data.mdb"), cls.older)
                r.restart()
        r.stop()
        cls.source = r.data_dir
        cls.n = 0

    def copy(self, name):
        """A relayd (not started) whose data_dir is a fresh copy of the
        healthy store."""
        type(self).n += 1
        d = os.path.join(self.tmp, "copy%d" % self.n)
        os.mkdir(d, 0o700)
        shutil.copy(os.path.join(self.source, "data.mdb"), d)
        r = relaytest.Relayd(self.addCleanup, name="copy%d" % self.n)
        r.write_config(self.tmp, backends=[{"name": "b", "url": down_url()}], data_dir=d)
        return r

    def ctl(self, r, *args):
        cp = r.relayctl(*args)
        self.assertGreaterEqual(cp.returncode, 0, "relayctl %s died of signal %d:\n%s"
                                % (" ".join(map(str, args)), -cp.returncode, cp.stderr))
        return cp

    def every_command(self, r):
        """(args, CompletedProcess) of every relayctl command on r's queue,
        the views first, then the changes."""
        lp = os.path.join(self.tmp, "import%d.lp" % self.n)
        with open(lp, "w") as f:
            f.write("imported v=1i 1600000000\n")
        out = os.path.join(self.tmp, "export%d" % self.n)
        cmds = [("status",), ("status", "--json"), ("peek", "b", "-n", "100"), ("peek", "b", "--json"),
                ("show", "b", "5"), ("dump", "b"), ("export", "b", out), ("export", "b", out + "d", "--dlq"),
                ("dlq", "list", "b"), ("dlq", "show", "b", "1"), ("verify",), ("verify", "--json"),
                ("pause", "b"), ("resume", "b"), ("retry", "b"), ("purge", "b"),
                ("dlq", "requeue", "b", "--all"), ("dlq", "drop", "b", "--all", "--yes"),
                ("import", "b", lp, "--db", DB), ("purge", "b", "--yes")]
        return [(args, self.ctl(r, *args)) for args in cmds]

    def test_a_damaged_file_is_refused_by_every_command_and_by_relayd(self):
        for name, damage, why in FILE_DAMAGE:
            with self.subTest(name):
                r = self.copy(name)
                path = os.path.join(r.data_dir, "data.mdb")
                damage(path, self.older)
                before = file_hash(path)
                for args, cp in self.every_command(r):
                    if args[0] == "retry":
                        continue  # asks relayd only: never opens the file
                    self.assertEqual(cp.returncode, 1, "%s: %s:\n%s%s" % (name, args, cp.stdout, cp.stderr))
                    self.assertIn("'%s'" % path, cp.stderr, (name, args))
                    self.assertIn(why, cp.stderr, (name, args))
                    self.assertIn("move the file aside", cp.stderr, (name, args))
                    self.assertEqual(cp.stderr.count("\n"), 1, (name, args, cp.stderr))
                self.assertEqual(file_hash(path), before, "%s: a command changed the damaged file" % name)
                r.start()
                rc = r.wait_exit(15)
                self.assertEqual(rc, 1, "%s: relayd exited %r" % (name, rc))
                log = r.log_since_start()
                self.assertIn("'%s'" % path, log)
                self.assertIn(why, log)
                self.assertIn("refusing to start", log)
                self.assertIn("move the file aside", log)
                self.assertEqual(file_hash(path), before, "%s: relayd changed the damaged file" % name)

    def test_scribbled_pages_never_crash_anything(self):
        refused = 0
        for seed in range(12):
            with self.subTest(seed=seed):
                r = self.copy("scribbled %d" % seed)
                path = os.path.join(r.data_dir, "data.mdb")
                scribble(seed)(path, self.older)
                results = self.every_command(r)
                verify = dict(results)[("verify",)]
                if "is damaged" in verify.stderr:
                    refused += 1
                    for args, cp in results:
                        if args[0] == "retry":
                            continue
                        self.assertEqual(cp.returncode, 1, (seed, args))
                        self.assertIn("'%s'" % path, cp.stderr, (seed, args))
                        self.assertIn("move the file aside", cp.stderr, (seed, args))
                else:
                    for args, cp in results:
                        self.assertIn(cp.returncode, (0, 1), (seed, args, cp.stderr))
                        if cp.returncode:  # and says why
                            self.assertTrue((cp.stderr + cp.stdout).strip(), (seed, args))
                r.start()
                rc = r.wait_exit(3)
                if rc is None:
                    status, _, _ = r.get("/health")
                    self.assertEqual(status, 200)
                    self.assertEqual(r.stop(), 0)
                else:
                    self.assertEqual(rc, 1, "seed %d: relayd exited %r" % (seed, rc))
                    self.assertIn("'%s'" % path, r.log_since_start())
        relaytest._log("scribbled stores refused before LMDB touched them: %d of 12" % refused)

    def damage_record(self, r, seq, change):
        entries = mdb_dump(r.data_dir, "batches")
        key = seq.to_bytes(8, "big")
        entries[key] = change(entries[key])
        mdb_load(r.data_dir, "batches", entries)

    def test_a_damaged_record_is_named_skipped_and_purged(self):
        for name, seq, change, why in RECORD_DAMAGE:
            with self.subTest(name):
                r = self.copy(name)
                self.damage_record(r, seq, change)
                named = "batch %d" % seq

                cp = self.ctl(r, "verify")
                self.assertEqual(cp.returncode, 1)
                self.assertIn("damaged: batch %d: corrupt, %s" % (seq, why), cp.stdout)
                doc = json.loads(self.ctl(r, "verify", "--json").stdout)
                self.assertFalse(doc["ok"])
                self.assertTrue(any(p.startswith("batch %d: corrupt" % seq) for p in doc["problems"]), doc)

                # the views skip it, name it, and show every other batch
                cp = self.ctl(r, "peek", "b", "-n", "100")
                self.assertEqual(cp.returncode, 1, cp.stderr)
                self.assertIn("%s of backend 'b' is corrupt and was skipped: %s" % (named, why), cp.stderr)
                self.assertEqual(len(cp.stdout.splitlines()), 1 + BATCHES - 1)
                doc = json.loads(self.ctl(r, "peek", "b", "-n", "100", "--json").stdout)
                self.assertEqual([c["seq"] for c in doc["corrupt"]], [seq])
                self.assertEqual(len(doc["batches"]), BATCHES - 1)
                cp = self.ctl(r, "dump", "b")
                self.assertEqual(cp.returncode, 1)
                dumped = [json.loads(line) for line in cp.stdout.splitlines()]
                self.assertEqual([d["seq"] for d in dumped], [s for s in range(1, BATCHES + 1) if s != seq])
                self.assertIn(named, cp.stderr)
                cp = self.ctl(r, "show", "b", str(seq))
                self.assertEqual(cp.returncode, 1)
                self.assertIn("%s of backend 'b' is corrupt: %s" % (named, why), cp.stderr)
                self.assertEqual(self.ctl(r, "show", "b", str(seq % BATCHES + 1)).returncode, 0)
                out = os.path.join(self.tmp, "export-%d" % self.n)
                cp = self.ctl(r, "export", "b", out)
                self.assertEqual(cp.returncode, 1)
                self.assertIn("batch %d not exported: corrupt, %s" % (seq, why), cp.stderr)
                with open(out + ".%s.default.s.lp" % DB) as f:
                    self.assertEqual(sum(1 for line in f if line.startswith("m,")), (BATCHES - 1) * LINES)
                st = json.loads(self.ctl(r, "status", "--json").stdout)["backends"][0]
                self.assertEqual(st["state"], "damaged" if seq == 1 else "stopped")

                # purge removes what it cannot decode (on a copy of the
                # damaged file); the store is healthy then
                p = self.copy(name + ", purged")
                shutil.copy(os.path.join(r.data_dir, "data.mdb"), p.data_dir)
                cp = self.ctl(p, "purge", "b", "--yes")
                self.assertEqual(cp.returncode, 0, cp.stderr)
                self.assertRegex(cp.stdout, r"purged %d batches .*and 1 corrupt record that did not decode"
                                 % (BATCHES - 1))
                cp = self.ctl(p, "verify")
                self.assertEqual(cp.returncode, 0, cp.stdout)
                self.assertIn("ok: 0 batches", cp.stdout)

                # relayd starts beside it, its worker reads the queue, and it
                # serves /health (a lines count of 0xffffffff once made it
                # allocate 32 GiB and abort on every start)
                r.start()
                r.wait_ready()
                status, _, body = r.get("/health")
                self.assertEqual(status, 200)
                self.assertEqual(json.loads(body)["backends"][0]["name"], "b")
                self.assertTrue(r.alive())
                self.assertEqual(r.stop(), 0)
                # whatever its worker did with the record (left it, or moved
                # it to the dead-letter queue), dlq drop and purge clear it
                self.assertEqual(self.ctl(r, "dlq", "drop", "b", "--all", "--yes").returncode, 0)
                self.assertEqual(self.ctl(r, "purge", "b", "--yes").returncode, 0)
                cp = self.ctl(r, "verify")
                self.assertEqual(cp.returncode, 0, cp.stdout)

    def test_a_precision_code_outside_the_format_is_named(self):
        r = self.copy("precision 9")
        self.damage_record(r, 10, set_u8(33, 9))
        cp = self.ctl(r, "verify")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("damaged: batch 10: precision code 9 is not one of the format's", cp.stdout)
        cp = self.ctl(r, "peek", "b", "-n", "100")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertRegex(cp.stdout, r"\n10 +%s +\(default\) +invalid " % DB)
        out = os.path.join(self.tmp, "export-p9")
        cp = self.ctl(r, "export", "b", out)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("batch 10 not exported: its precision code is not one of the format's", cp.stderr)
        self.assertFalse(any(".invalid." in f for f in os.listdir(self.tmp)))
        self.assertEqual(self.ctl(r, "show", "b", "10").returncode, 0)
        for args, cp in self.every_command(r):
            self.assertIn(cp.returncode, (0, 1), (args, cp.stderr))

    def test_every_command_on_a_damaged_record_exits_cleanly(self):
        for name, seq, change, why in RECORD_DAMAGE:
            with self.subTest(name):
                r = self.copy(name)
                self.damage_record(r, seq, change)
                for args, cp in self.every_command(r):
                    self.assertIn(cp.returncode, (0, 1), (name, args, cp.stderr))
                    if cp.returncode:  # and says why
                        self.assertTrue((cp.stderr + cp.stdout).strip(), (name, args))
                # the last command purged: nothing damaged is left
                self.assertEqual(self.ctl(r, "verify").returncode, 0)

    # ---- issue 11 §3: checksums, the upgrade from format 1, salvage ----

    def original_dump(self):
        r = self.copy("original")
        cp = self.ctl(r, "dump", "b")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        return [json.loads(line) for line in cp.stdout.splitlines()]

    @staticmethod
    def same_batches(a, b):
        """The batches of two dumps, without their sequence numbers."""
        strip = lambda d: {k: v for k, v in d.items() if k != "seq"}
        return [strip(x) for x in a] == [strip(x) for x in b]

    def test_a_format_1_store_is_upgraded_by_relayd_in_one_go(self):
        want = self.original_dump()
        r = self.copy("format 1")
        # the old encoder: record version 1, no checksum; format record 1
        batches = mdb_dump(r.data_dir, "batches")
        for k, rec in batches.items():
            batches[k] = rec[:16] + b"\0\0\0\0" + rec[20:32] + b"\x01" + rec[33:]
        mdb_load(r.data_dir, "batches", batches)
        meta = mdb_dump(r.data_dir, "meta")
        meta[b"format"] = meta[b"format"][:8] + struct.pack("<I", 1) + meta[b"format"][12:]
        mdb_load(r.data_dir, "meta", meta)
        for args in (("dump", "b"), ("status",), ("verify",), ("pause", "b")):
            cp = self.ctl(r, *args)
            self.assertEqual(cp.returncode, 1, args)
            self.assertIn("is in an older format", cp.stderr)
            self.assertIn("start relayd once, it upgrades the queue in place", cp.stderr)
        r.start()
        r.wait_ready()
        self.assertEqual(r.stop(), 0)
        self.assertRegex(r.log(), r"upgraded the queue in '%s' from format 1 to 3: %d records rewritten"
                         % (re.escape(r.data_dir), BATCHES))
        cp = self.ctl(r, "dump", "b")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual([json.loads(line) for line in cp.stdout.splitlines()], want)
        self.assertEqual(self.ctl(r, "verify").returncode, 0)
        r.start()
        r.wait_ready()
        self.assertEqual(r.stop(), 0)
        self.assertEqual(len(re.findall("upgraded the queue", r.log())), 1)

    def test_a_format_2_store_is_upgraded_by_its_format_record_alone(self):
        want = self.original_dump()
        r = self.copy("format 2")
        meta = mdb_dump(r.data_dir, "meta")
        meta[b"format"] = meta[b"format"][:8] + struct.pack("<I", 2) + meta[b"format"][12:]
        mdb_load(r.data_dir, "meta", meta)
        batches = mdb_dump(r.data_dir, "batches")
        cp = self.ctl(r, "dump", "b")
        self.assertEqual(cp.returncode, 1)
        self.assertIn("is in an older format", cp.stderr)
        r.start()
        r.wait_ready()
        self.assertEqual(r.stop(), 0)
        self.assertRegex(r.log(), r"upgraded the queue in '%s' from format 2 to 3: 0 records" % re.escape(r.data_dir))
        self.assertEqual(mdb_dump(r.data_dir, "batches"), batches)  # not one record rewritten
        cp = self.ctl(r, "dump", "b")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual([json.loads(line) for line in cp.stdout.splitlines()], want)
        self.assertEqual(self.ctl(r, "verify").returncode, 0)

    # ---- issue 13: a statement in the queue, as the views show it ----

    def test_a_queued_statement_is_shown_as_such_and_left_out_of_export(self):
        r = self.copy("statement")
        self.damage_record(r, 10, as_statement('CREATE DATABASE "x"\n'))
        cp = self.ctl(r, "verify")  # only the counters, changed behind its back, are wrong
        self.assertNotIn("batch 10", cp.stdout)
        cp = self.ctl(r, "show", "b", "10")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stdout, 'statement: CREATE DATABASE "x"\n')
        cp = self.ctl(r, "peek", "b", "-n", "100")
        self.assertRegex(cp.stdout, r"\n10 +%s +\(default\) +stmt +0 " % DB)
        dump = [json.loads(line) for line in self.ctl(r, "dump", "b").stdout.splitlines()]
        self.assertEqual([d["kind"] for d in dump if d["seq"] == 10], ["statement"])
        self.assertEqual({d["kind"] for d in dump if d["seq"] != 10}, {"lines"})
        out = os.path.join(self.tmp, "export-stmt")
        cp = self.ctl(r, "export", "b", out)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("batch 10 not exported: it is a statement (InfluxQL, not line protocol", cp.stderr)
        self.assertIn("1 batch not exported", cp.stderr)
        files = [f for f in os.listdir(self.tmp) if f.startswith("export-stmt")]
        with open(os.path.join(self.tmp, files[0])) as f:
            self.assertNotIn("CREATE DATABASE", f.read())

    def salvage(self, r, name):
        """relayctl salvage of r's store into a new directory; a relayd (not
        started) configured on it, and the summary as JSON."""
        dest = os.path.join(self.tmp, "salvaged-%d" % self.n)
        cp = self.ctl(r, "salvage", dest, "--json")
        self.assertEqual(cp.returncode, 0, "%s: %s" % (name, cp.stderr))
        s = relaytest.Relayd(self.addCleanup, name="salvaged%d" % self.n)
        s.write_config(self.tmp, backends=[{"name": "b", "url": down_url()}], data_dir=dest)
        return s, json.loads(cp.stdout)

    def test_salvage_copies_every_readable_batch_into_a_new_store(self):
        want = self.original_dump()
        cases = [("healthy", None, BATCHES), ("meta page 0 zeroed", zero_meta([0]), BATCHES),
                 ("both meta pages zeroed", zero_meta([0, 1]), BATCHES),
                 ("cut to half", cut(lambda s: s // 2 // PAGE * PAGE), None),
                 ("cut inside a page", cut(lambda s: s - 1000), None)]
        cases += [("scribbled %d" % seed, scribble(seed), None) for seed in range(4)]
        for name, damage, n in cases:
            with self.subTest(name):
                r = self.copy(name)
                if damage:
                    damage(os.path.join(r.data_dir, "data.mdb"), self.older)
                s, doc = self.salvage(r, name)
                self.assertEqual(doc["backends"] + doc["backends_assumed"], 1, doc)
                if n is not None:
                    self.assertEqual(doc["batches"], n, doc)
                cp = self.ctl(s, "dump", "b")
                self.assertEqual(cp.returncode, 0, cp.stderr)
                got = [json.loads(line) for line in cp.stdout.splitlines()]
                self.assertEqual(len(got), doc["batches"])
                # every salvaged batch is one of the originals, whole, in
                # queue order
                strip = lambda d: tuple(sorted((k, v) for k, v in d.items() if k != "seq"))
                orig = [strip(x) for x in want]
                idx = [orig.index(strip(g)) for g in got]
                self.assertEqual(idx, sorted(idx), name)
                self.assertEqual(len(set(idx)), len(idx), name)
                self.assertEqual(self.ctl(s, "verify").returncode, 0)
                s.start()
                s.wait_ready()
                self.assertEqual(s.stop(), 0)
        # a batch already delivered (purged here) is never brought back, though
        # its bytes may still sit in a free page
        r = self.copy("purged")
        self.assertEqual(self.ctl(r, "purge", "b", "--yes").returncode, 0)
        s, doc = self.salvage(r, "purged")
        self.assertEqual(doc["batches"], 0, doc)
        # DEST holding a queue already is refused
        cp = self.ctl(r, "salvage", s.data_dir)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("holds a queue already", cp.stderr)


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "mdb_dump", "mdb_load"))
