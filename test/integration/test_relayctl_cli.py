#!/usr/bin/env python3
"""
relayctl's command line beyond the queue (issue 17): the default
configuration (the packaged /etc/relayd/relayd.yaml, RELAYCTL_CONFIG, -c
winning), --version / -V / version as relayd's, relayctl migrate running
the converter script (a stub here, through RELAYCTL_MIGRATE_SCRIPT), and
one attempt count for a dead letter everywhere it is shown: relayd's log
line, dlq list (text and JSON) and dlq show, for a batch a real influxd
refuses for good (a field type conflict, 400).
"""

import json
import os
import re
import shutil
import stat
import subprocess
import unittest

import relaytest

DB = "telemetry"
DEFAULT_CONFIG = "/etc/relayd/relayd.yaml"


def run(args, env=None, timeout=60):
    e = dict(os.environ)
    e.pop("RELAYCTL_CONFIG", None)
    e.pop("RELAYCTL_MIGRATE_SCRIPT", None)
    if env:
        e.update(env)
    cp = subprocess.run([relaytest.RELAYCTL_BIN] + list(args), capture_output=True, text=True,
                        timeout=timeout, env=e, stdin=subprocess.DEVNULL)
    report = relaytest.sanitizer_report(cp.stderr)
    if report:
        raise AssertionError("sanitizer report from relayctl:\n" + report)
    return cp


class RelayctlCliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def relayd(self, backends, start=True):
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=backends)
        if start:
            r.start()
            r.wait_ready()
        return r

    # 1: the default configuration

    def test_default_configuration_is_the_packaged_one(self):
        if os.path.exists(DEFAULT_CONFIG):
            self.skipTest("%s exists on this machine" % DEFAULT_CONFIG)
        cp = run(["status"])
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("tried the default '%s'" % DEFAULT_CONFIG, cp.stderr)
        self.assertIn("-c FILE", cp.stderr)
        # the usage text says it too
        usage = run(["--help"]).stdout
        self.assertIn("usage: relayctl [-c FILE]", usage)
        self.assertIn(DEFAULT_CONFIG, usage)
        self.assertIn("RELAYCTL_CONFIG", usage)
        # RELAYCTL_CONFIG is read without -c; -c wins over it
        r = self.relayd([("b1", "http://127.0.0.1:%d" % relaytest.closed_port())], start=False)
        cp = run(["status", "--json"], env={"RELAYCTL_CONFIG": r.config})
        self.assertEqual(cp.returncode, 1, cp.stderr)
        self.assertIn("data directory '%s' does not exist" % r.data_dir, cp.stderr)
        cp = run(["-c", os.path.join(self.tmp, "nope.yaml"), "status"], env={"RELAYCTL_CONFIG": r.config})
        self.assertEqual(cp.returncode, 1)
        self.assertIn("nope.yaml", cp.stderr)
        self.assertNotIn("the default", cp.stderr)

    # 2: versions

    def test_version_as_relayd(self):
        want = run(["--version"]).stdout
        self.assertRegex(want, r"^relayctl \d+\.\d+\S*\n$")
        for args in (["-V"], ["version"], ["-c", "/nonexistent", "--version"]):
            cp = run(args)
            self.assertEqual((cp.returncode, cp.stdout), (0, want), args)
        for args in (["--version"], ["-V"]):
            cp = subprocess.run([relaytest.RELAYD_BIN] + args, capture_output=True, text=True, timeout=30)
            self.assertEqual(cp.returncode, 0)
            self.assertEqual(cp.stdout, want.replace("relayctl", "relayd"))

    # 7: migrate

    def test_migrate_runs_the_script(self):
        if not shutil.which("python3"):
            self.skipTest("no python3")
        script = os.path.join(self.tmp, "stub-migrate")
        with open(script, "w") as f:
            f.write("import sys\n"
                    "args = sys.argv[1:]\n"
                    "print('stub', ' '.join(args))\n"
                    "if '-o' in args:\n"
                    "    open(args[args.index('-o') + 1], 'w').write('from ' + args[0] + '\\n')\n"
                    "sys.exit(3 if args[0] == 'bad.toml' else 0)\n")
        toml = os.path.join(self.tmp, "relay.toml")
        open(toml, "w").close()
        env = {"RELAYCTL_MIGRATE_SCRIPT": script}
        cp = run(["migrate", toml], env=env)
        self.assertEqual((cp.returncode, cp.stdout), (0, "stub %s\n" % toml), cp.stderr)
        out = os.path.join(self.tmp, "relayd.yaml")
        cp = run(["migrate", toml, "-o", out], env=env)
        self.assertEqual((cp.returncode, cp.stdout), (0, "stub %s -o %s\n" % (toml, out)), cp.stderr)
        with open(out) as f:
            self.assertEqual(f.read(), "from %s\n" % toml)
        # every word after "migrate" is the converter's, untouched: the
        # options relayctl does not know (--udp-db, --force) too
        cp = run(["migrate", toml, "--udp-db", "t", "--force", "-o", out], env=env)
        self.assertEqual((cp.returncode, cp.stdout), (0, "stub %s --udp-db t --force -o %s\n" % (toml, out)),
                         cp.stderr)
        cp = run(["-o", out, "migrate", toml, "--force"], env=env)
        self.assertEqual((cp.returncode, cp.stdout), (0, "stub %s --force -o %s\n" % (toml, out)), cp.stderr)
        # its exit status is relayctl's; no configuration is needed
        cp = run(["migrate", "bad.toml"], env=env)
        self.assertEqual(cp.returncode, 3)
        # a missing script, a missing python3: said clearly
        cp = run(["migrate", toml], env={"RELAYCTL_MIGRATE_SCRIPT": os.path.join(self.tmp, "none")})
        self.assertEqual(cp.returncode, 127)
        self.assertIn("the converter '%s' is missing" % os.path.join(self.tmp, "none"), cp.stderr)
        cp = run(["migrate", toml], env={"RELAYCTL_MIGRATE_SCRIPT": script, "PATH": self.tmp})
        self.assertEqual(cp.returncode, 127)
        self.assertIn("relayctl migrate needs python3: apt-get install python3", cp.stderr)
        cp = run(["migrate"], env=env)
        self.assertEqual(cp.returncode, 2)
        self.assertIn("usage: migrate FILE [-o OUT]", cp.stderr)
        cp = run(["-c", "/nonexistent", "-o", out, "status"])
        self.assertEqual(cp.returncode, 2)
        self.assertIn("-o is for migrate only", cp.stderr)

    # 3: one attempt count

    def test_dead_letter_attempts_agree_with_the_log(self):
        influxd = relaytest.Influxd(self.addCleanup)
        influxd.write_config(self.tmp)
        influxd.start()
        influxd.create_db(DB)
        # "value" is a float in influxd: an integer is a conflict for good
        status, _, body = influxd.write(DB, "conf,k=a value=0.5 1000000000\n")
        self.assertEqual(status, 204, body)
        r = self.relayd([{"name": "b1", "url": influxd.url, "retry_min": "100ms", "retry_max": "1s"}])
        status, _, body = r.write(DB, "conf,k=b value=1i 2000000000\n")
        self.assertEqual(status, 204, body)
        r.wait_status("b1", pending_batches=0, dead_batches=1, timeout=30)
        lines = r.log_matches(r"dead-lettered")
        self.assertEqual(len(lines), 1, lines)
        m = re.search(r"batch (\d+) \(1 point, db '%s'\) dead-lettered after (\d+) attempts?: HTTP 400" % DB,
                      lines[0])
        self.assertTrue(m, lines[0])
        seq, logged = int(m.group(1)), int(m.group(2))
        self.assertEqual(logged, 1, lines[0])
        self.assertIn("after 1 attempt: ", lines[0])
        self.assertNotIn("(s)", lines[0])
        # dlq list, JSON and text; dlq show
        cp = r.relayctl("dlq", "list", "b1", "--json")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        d = json.loads(cp.stdout)["dead"]
        self.assertEqual([(x["seq"], x["attempts"], x["status"]) for x in d], [(seq, logged, 400)])
        cp = r.relayctl("dlq", "list", "b1")
        row = [l for l in cp.stdout.splitlines() if l.startswith(str(seq))]
        self.assertEqual(len(row), 1, cp.stdout)
        cells = row[0].split()
        # SEQ DB RP PREC POINTS BYTES ("29 B": two cells) STATUS ATTEMPTS
        self.assertEqual((cells[7], cells[8]), ("400", str(logged)), row[0])
        cp = r.relayctl("dlq", "show", "b1", str(seq))
        self.assertIn("refused with status 400 after 1 attempt at ", cp.stdout)


if __name__ == "__main__":
    relaytest.main(require=("relayd", "relayctl", "influxd"))
