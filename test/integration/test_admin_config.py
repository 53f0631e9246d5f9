#!/usr/bin/env python3
"""
The configuration as an administrator meets it (issue 17): relative paths
mean the configuration file's directory, so relayd and relayctl started
from other directories see the same store; an influxdb-relay TOML file is
named for what it is, with the way to convert it; a backend url ending in
/write is refused with the url to use; relayd without -c reads
/etc/relayd/relayd.yaml; a reload that adds a backend never says the
derived queue.map_size needs a restart (the map has headroom, and it is
address space: the file stays small), while a map_size the user set and
changed still does. log_output as a list of preferences: journal (lines
"<N>message" on stderr when JOURNAL_STREAM names it, text or JSON), the
fall through to a file when it does not, a single syslog without /dev/log
warned on stderr before --daemon detaches and by --check-config, the list
resolved again on SIGHUP, SIGUSR1 reopening the file chosen.
"""

import json
import os
import pwd
import re
import resource
import signal
import subprocess
import threading
import time
import unittest

import relaytest
from relaytest import RELAYCTL_BIN, RELAYD_BIN, Relayd

INFLUXDB_RELAY_TOML = """\
[[http]]
name = "example-http"
bind-addr = "127.0.0.1:9096"
output = [
    { name="local1", location = "http://127.0.0.1:8086/write" },
    { name="local2", location = "http://127.0.0.1:7086/write" },
]
[[udp]]
name = "example-udp"
bind-addr = "127.0.0.1:9096"
read-buffer = 0 # default
output = [
    { name="local1", location="127.0.0.1:8089", mtu=512 },
]
"""


def run(args, cwd=None, timeout=30):
    cp = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                        cwd=cwd, timeout=timeout)
    report = relaytest.sanitizer_report(cp.stderr)
    if report:
        raise AssertionError("sanitizer report from %s:\n%s" % (" ".join(args), report))
    return cp


class RelativePathsTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def test_relayd_and_relayctl_from_other_directories_share_the_store(self):
        conf = os.path.join(self.tmp, "etc")
        elsewhere = os.path.join(self.tmp, "elsewhere")
        other = os.path.join(self.tmp, "other")
        for d in (conf, elsewhere, other):
            os.mkdir(d)
        r = Relayd(self.addCleanup)
        down = "http://127.0.0.1:%d" % relaytest.closed_port()
        r.write_config(conf, [{"name": "down", "url": down, "retry_min": "1s", "retry_max": "10s"}],
                       data_dir="./q")
        r.tmpdir = elsewhere  # relayd's working directory
        r.start()
        r.wait_ready()
        for i in range(3):
            status, _, body = r.write("db", "m v=%d\n" % i)
            self.assertEqual(status, 204, body)
        self.assertTrue(os.path.isdir(os.path.join(conf, "q")), os.listdir(conf))
        self.assertFalse(os.path.exists(os.path.join(elsewhere, "q")))
        r.wait_log(r"queue in '%s/q'" % conf.replace(".", r"\."))

        cp = run([RELAYCTL_BIN, "-c", r.config, "status", "--json"], cwd=other)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn('"pending_batches":3', cp.stdout.replace(" ", ""))
        self.assertFalse(os.path.exists(os.path.join(other, "q")))
        # the config named relative to relayctl's directory: the same store
        cp = run([RELAYCTL_BIN, "-c", "../etc/relayd.yaml", "status", "--json"], cwd=other)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn('"pending_batches":3', cp.stdout.replace(" ", ""))


class ConfigMessagesTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_influxdb_relay_toml_is_named(self):
        path = self.write("relay.toml", INFLUXDB_RELAY_TOML)
        want = ("%s looks like an influxdb-relay configuration (TOML); relayd reads YAML. Convert it with: "
                "relayctl migrate %s > relayd.yaml (see docs/operations.md, \"Moving from influxdb-relay\")"
                % (path, path))
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(cp.stderr.strip(), want)
        self.assertNotIn("invalid yaml", cp.stderr)
        # a plain start says the same
        cp = run([RELAYD_BIN, "-c", path, "--allow-root"])
        self.assertEqual(cp.returncode, 1)
        self.assertEqual(cp.stderr.strip(), want)

    def test_backend_url_with_write_path_is_refused(self):
        port = relaytest.free_port()
        text = ("data_dir: %s\nlisten:\n  http: 127.0.0.1:%d\nbackends:\n  - name: a\n"
                "    url: http://h:8086/write\n" % (os.path.join(self.tmp, "data"), port))
        path = self.write("relayd.yaml", text)
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertIn("backends[0].url 'http://h:8086/write' ends in /write: relayd adds the write path "
                      "itself; use url: http://h:8086", cp.stderr)
        self.write("relayd.yaml", text.replace("/write", "/influx"))
        cp = relaytest.check_config(path)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_default_configuration_path(self):
        cp = run([RELAYD_BIN, "--help"])
        self.assertEqual(cp.returncode, 0)
        self.assertIn("default /etc/relayd/relayd.yaml", cp.stdout)
        if os.path.exists("/etc/relayd/relayd.yaml"):
            self.skipTest("/etc/relayd/relayd.yaml exists on this host")
        cp = run([RELAYD_BIN, "--check-config"])
        self.assertEqual(cp.returncode, 1, cp.stdout + cp.stderr)
        self.assertEqual(cp.stderr.strip(), "/etc/relayd/relayd.yaml: cannot read: No such file or directory")


class MapSizeReloadTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def backends(self, n):
        return [{"name": "b%d" % i, "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
                 "retry_min": "1s", "retry_max": "10s"} for i in range(n)]

    def reload(self, r, n, extra=None):
        r.write_config(self.tmp, self.backends(n), extra_yaml=extra)
        r.proc.send_signal(signal.SIGHUP)
        r.wait_log(r"configuration reloaded from .* \(%d backends?\)" % n)

    def store(self, r):
        status, _, body = r.get("/health")
        return json.loads(body)["store"]

    def test_adding_backends_needs_no_restart_of_a_derived_map(self):
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends(1))
        r.start()
        r.wait_ready()
        store = self.store(r)
        # room for every backend the queue can hold at 1GiB, in address
        # space only: the file is what is used, not the map
        self.assertGreaterEqual(store["map_size_bytes"], 2 * 64 * (1 << 30))
        self.assertLess(os.path.getsize(os.path.join(r.data_dir, "data.mdb")), 16 << 20)
        self.assertLess(store["file_size_bytes"], 16 << 20)
        self.reload(r, 2)
        self.reload(r, 5, {"queue": {"max_size": "512MiB"}})
        self.assertEqual(r.log_matches(r"map_size|needs a restart|need a map"), [])

    def test_a_user_set_map_size_changed_still_warns(self):
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends(1), extra_yaml={"queue": {"map_size": "256MiB"}})
        r.start()
        r.wait_ready()
        self.reload(r, 2, {"queue": {"map_size": "256MiB"}})
        self.assertEqual(r.log_matches(r"map_size|needs a restart"), [])
        self.reload(r, 2, {"queue": {"map_size": "512MiB"}})
        r.wait_log(r"reload: 'queue\.map_size' changed from '256 MiB' to '512 MiB': this needs a restart")

    def test_limits_beyond_the_derived_map_say_so(self):
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends(1), extra_yaml={"queue": {"max_size": "1MiB"}})
        r.start()
        r.wait_ready()
        # 64 + 2 x 64 x 1 MiB = 192 MiB mapped; 2 x 1 GiB + 64 MiB needed
        self.reload(r, 1, {"queue": {"max_size": "1GiB"}})
        r.wait_log(r"reload: the queues' limits now need a map of 2112 MiB \(twice the backends' max_size plus "
                   r"64 MiB\) but the queue's map is 192 MiB until a restart")
        self.assertEqual(r.log_matches(r"'queue\.map_size' changed"), [])


# ulimit -v 4000000 (KiB), as an operator or limits.conf sets it
AS_LIMIT = 4000000 * 1024


def limit_as():
    resource.setrlimit(resource.RLIMIT_AS, (AS_LIMIT, AS_LIMIT))


class AddressSpaceLimitTest(unittest.TestCase):
    """The derived map's headroom is address space: under RLIMIT_AS it
    takes at most a quarter of the limit, never less than the limits need;
    relayctl's read-only open maps the file, not relayd's map."""

    def setUp(self):
        if relaytest.asan_build():
            self.skipTest("ASan reserves terabytes of shadow: no address-space limit")
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def backends(self, max_size=None):
        b = {"name": "down", "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
             "retry_min": "1s", "retry_max": "10s"}
        if max_size:
            b["max_size"] = max_size
        return [b]

    def test_relayd_and_relayctl_run_under_ulimit_v(self):
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends())
        r.start(preexec_fn=limit_as)
        r.wait_ready()
        status, _, body = r.write("db", "m v=1\n")
        self.assertEqual(status, 204, body)
        _, _, body = r.get("/health")
        # a quarter of the limit (976 MiB) is less than the need: the need
        self.assertEqual(json.loads(body)["store"]["map_size_bytes"], (2 << 30) + (64 << 20))
        cp = subprocess.run([RELAYCTL_BIN, "-c", r.config, "status"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, preexec_fn=limit_as)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertRegex(cp.stdout, r"down")
        cp = subprocess.run([RELAYCTL_BIN, "-c", r.config, "pause", "down"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, preexec_fn=limit_as)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # and relayctl under the limit beside a relayd without one (whose
        # map, recorded in the file, is 128 GiB: LMDB would take that size
        # for a read-only open given none)
        r.stop()
        r.start()
        r.wait_ready()
        cp = subprocess.run([RELAYCTL_BIN, "-c", r.config, "status"], stdin=subprocess.DEVNULL,
                            capture_output=True, text=True, timeout=30, preexec_fn=limit_as)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # relayd under the limit again, on the file that records 128 GiB
        r.stop()
        r.start(preexec_fn=limit_as)
        r.wait_ready()
        status, _, body = r.write("db", "m v=2\n")
        self.assertEqual(status, 204, body)

    def test_limits_that_cannot_fit_are_refused_by_name(self):
        r = Relayd(self.addCleanup)
        # 2 x 2 GiB + 64 MiB needed, 3906 MiB allowed
        r.write_config(self.tmp, self.backends("2GiB"))
        r.start(preexec_fn=limit_as)
        self.assertEqual(r.wait_exit(10), 1, r.log_since_start())
        self.assertRegex(r.log_since_start(),
                         r"the queue's LMDB map needs 4160 MiB of address space \(twice the backends' max_size "
                         r"plus 64 MiB\) but the process may use only 3906 MiB \(RLIMIT_AS: ulimit -v")


class LockOwnerTest(unittest.TestCase):
    """relayctl as root in a queue without lock.mdb creates it: it goes to
    the queue's owner, so that relayd running as that user opens it."""

    def setUp(self):
        if os.geteuid() != 0:
            self.skipTest("needs root")
        try:
            self.nobody = pwd.getpwnam("nobody")
        except KeyError:
            self.skipTest("no user nobody")
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        os.chmod(self.tmp, 0o755)  # nobody goes through to its queue

    def test_lock_created_by_a_root_relayctl_belongs_to_the_queue_owner(self):
        r = Relayd(self.addCleanup)
        down = [{"name": "down", "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
                 "retry_min": "1s", "retry_max": "10s"}]
        r.write_config(self.tmp, down, extra_yaml={"user": "nobody"})
        os.mkdir(r.data_dir, 0o700)
        os.chown(r.data_dir, self.nobody.pw_uid, self.nobody.pw_gid)
        r.start()
        r.wait_ready()
        status, _, body = r.write("db", "m v=1\n")
        self.assertEqual(status, 204, body)
        r.stop()
        lock = os.path.join(r.data_dir, "lock.mdb")
        os.unlink(lock)
        self.assertEqual(os.stat(os.path.join(r.data_dir, "data.mdb")).st_uid, self.nobody.pw_uid)
        cp = r.relayctl("status")
        self.assertEqual(cp.returncode, 0, cp.stderr)
        st = os.stat(lock)
        self.assertEqual((st.st_uid, st.st_gid), (self.nobody.pw_uid, self.nobody.pw_gid))
        r.start()
        r.wait_ready()
        status, _, body = r.write("db", "m v=2\n")
        self.assertEqual(status, 204, body)
        self.assertEqual(r.backend_status("down")["pending_batches"], 2)


def read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        return ""


class LogOutputTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def backends(self):
        return [{"name": "down", "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
                 "retry_min": "1s", "retry_max": "10s"}]

    def journal_relayd(self, log_format):
        """relayd with stderr on a pipe that JOURNAL_STREAM names, as
        systemd starts a service with StandardError=journal: what it
        wrote, until it stops."""
        r = Relayd(self.addCleanup)
        fallback = os.path.join(self.tmp, "fallback.log")
        r.write_config(self.tmp, self.backends(),
                       extra_yaml={"log_output": ["journal", fallback], "log_format": log_format})
        rfd, wfd = os.pipe()
        st = os.fstat(wfd)
        env = dict(os.environ, JOURNAL_STREAM="%d:%d" % (st.st_dev, st.st_ino))
        root = ["--allow-root"] if os.geteuid() == 0 else []
        proc = subprocess.Popen([RELAYD_BIN, "-c", r.config] + root, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=wfd, cwd=self.tmp, env=env)
        os.close(wfd)
        self.addCleanup(relaytest.stop_process, proc)
        out = []

        def drain():
            with os.fdopen(rfd, "rb") as f:
                for line in f:
                    out.append(line.decode("utf-8", "replace"))
        t = threading.Thread(target=drain, daemon=True)
        t.start()
        relaytest.wait_until(lambda: any("listening on" in l for l in out), 10, 0.05,
                             what="relayd listening", detail=lambda: "".join(out))
        status, _, _ = r.write("db", "m v=1\n")
        self.assertEqual(status, 204)
        relaytest.stop_process(proc)
        t.join(10)
        self.assertFalse(os.path.exists(fallback), "the journal was available: no fallback file")
        report = relaytest.sanitizer_report("".join(out))
        if report:
            raise AssertionError(report)
        return out

    def test_journal_lines_carry_the_priority_and_no_timestamp(self):
        out = self.journal_relayd("text")
        self.assertTrue(out)
        for line in out:
            self.assertRegex(line, r"^<[3-7]>\S", line)
            self.assertNotRegex(line, r"^<\d>\d{4}-\d\d-\d\dT", "the journal stamps the time itself")
        self.assertIn("<6>logging to journal\n", out)
        self.assertTrue([l for l in out if re.match(r"<5>relayd .* listening on http://", l)], out)
        self.assertTrue([l for l in out if l.startswith("<5>signal 15: shutting down")], out)

    def test_journal_with_json_lines(self):
        out = self.journal_relayd("json")
        for line in out:
            m = re.match(r"^<([3-7])>(\{.*\})\n$", line)
            self.assertIsNotNone(m, line)
            o = json.loads(m.group(2))
            self.assertEqual(list(o), ["time", "level", "pid", "msg"])
            want = {"debug": "7", "info": "6", "notice": "5", "warn": "4", "error": "3"}[o["level"]]
            self.assertEqual(m.group(1), want, line)
        self.assertTrue([l for l in out if '"msg":"logging to journal"' in l], out)

    def test_falls_through_to_a_file_without_the_journal(self):
        r = Relayd(self.addCleanup)
        path = os.path.join(self.tmp, "relayd-out.log")
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": ["journal", path]})
        env = os.environ.pop("JOURNAL_STREAM", None)
        try:
            r.start()
        finally:
            if env is not None:
                os.environ["JOURNAL_STREAM"] = env
        r.wait_ready()
        relaytest.wait_until(lambda: "listening on" in read_text(path), 10, 0.05, what="the log file",
                             detail=lambda: r.log_since_start())
        text = read_text(path)
        self.assertRegex(text, r"info logging to %s \(passed over: journal: JOURNAL_STREAM is not set"
                         % re.escape(path))
        self.assertNotIn("listening on", r.log_since_start(), "nothing on stderr after the choice")

        # SIGUSR1 reopens the file chosen (after logrotate moved it)
        os.rename(path, path + ".1")
        r.proc.send_signal(signal.SIGUSR1)
        relaytest.wait_until(lambda: "reopened" in read_text(path), 10, 0.05, what="the log file reopened")

    def test_reload_resolves_the_list_again(self):
        r = Relayd(self.addCleanup)
        later = os.path.join(self.tmp, "later")  # not there yet
        first = os.path.join(later, "relayd.log")
        second = os.path.join(self.tmp, "second.log")
        outputs = ["syslog", first, second] if not os.path.exists("/dev/log") else [first, second]
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": outputs})
        r.start()
        r.wait_ready()
        relaytest.wait_until(lambda: "listening on" in read_text(second), 10, 0.05, what="the second file")
        self.assertIn("cannot open log file '%s'" % first, read_text(second))
        os.mkdir(later)
        r.proc.send_signal(signal.SIGHUP)  # the same file: the first output is available now
        relaytest.wait_until(lambda: "configuration reloaded" in read_text(first), 10, 0.05,
                             what="the reload in the first file", detail=lambda: read_text(second))
        self.assertIn("reload: logging to %s now (was %s)" % (first, second), read_text(first))
        # and a list of outputs none of which can be used, with a file: the
        # output in force stays, with a warning, and the reload applies
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": ["/nonexistent/dir/x.log"]})
        r.proc.send_signal(signal.SIGHUP)
        relaytest.wait_until(lambda: read_text(first).count("configuration reloaded") == 2, 10, 0.05,
                             what="the second reload", detail=lambda: read_text(first))
        self.assertIn("warn reload: no log_output can be used: /nonexistent/dir/x.log: cannot open log file",
                      read_text(first))
        self.assertIn("logging on to %s" % first, read_text(first))
        self.assertNotIn("reload refused", read_text(first))

    def test_reload_keeps_the_open_log_file(self):
        """A reload that changes only backends does not reopen the log
        file: one whose directory cannot be written at that moment takes
        the reload's lines as before."""
        r = Relayd(self.addCleanup)
        logs = os.path.join(self.tmp, "logs")
        os.mkdir(logs)
        path = os.path.join(logs, "relayd.log")
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": [path]})
        r.start()
        r.wait_ready()
        relaytest.wait_until(lambda: "listening on" in read_text(path), 10, 0.05, what="the log file")
        # the file's path cannot be opened now (its parent is a file; root
        # would pass a chmod), while the file relayd has open stays
        moved = os.path.join(self.tmp, "logs.moved")
        os.rename(logs, moved)
        open(logs, "w").close()
        more = self.backends() + [{"name": "more", "url": "http://127.0.0.1:%d" % relaytest.closed_port()}]
        r.write_config(self.tmp, more, extra_yaml={"log_output": [path]})
        r.proc.send_signal(signal.SIGHUP)
        moved_log = os.path.join(moved, "relayd.log")
        relaytest.wait_until(lambda: "configuration reloaded" in read_text(moved_log), 10, 0.05,
                             what="the reload applied, in the open file", detail=lambda: read_text(moved_log))
        self.assertIn("(2 backends)", read_text(moved_log))
        self.assertNotIn("reload refused", read_text(moved_log))
        self.assertNotIn("no log_output", read_text(moved_log))
        _, _, body = r.get("/health")
        self.assertEqual(len(json.loads(body)["backends"]), 2, body)

    def test_syslog_without_dev_log_is_warned_on_stderr(self):
        if os.path.exists("/dev/log"):
            self.skipTest("/dev/log exists on this host")
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": "syslog"})
        want = ("log_output is syslog but /dev/log does not exist (no syslog daemon): its lines would be lost, "
                "so relayd logs to stderr; set log_output to a file")
        cp = relaytest.check_config(r.config)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("warning: " + want, cp.stderr)
        # --daemon: on the caller's stderr, before it detaches
        pidfile = os.path.join(self.tmp, "relayd.pid")
        root = ["--allow-root"] if os.geteuid() == 0 else []
        cp = run([RELAYD_BIN, "--daemon", "--pidfile", pidfile, "-c", r.config] + root)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with open(pidfile) as f:
            pid = int(f.read())
        self.addCleanup(self.kill, pid)
        self.assertRegex(cp.stderr, r"warn " + re.escape(want))
        # started in the foreground: the same, and it logs on stderr
        self.kill(pid)
        r.start()
        r.wait_ready()
        log = r.log_since_start()
        self.assertIn(want, log)
        self.assertRegex(log, r"info logging to stderr \(passed over: syslog: /dev/log does not exist")

    def test_daemon_start_warnings_and_errors_reach_stderr(self):
        """What a start says before --daemon detaches is on the caller's
        stderr (the init script shows it), warnings and refusals alike."""
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, self.backends(), extra_yaml={"log_output": ["journal", "stderr"]})
        pidfile = os.path.join(self.tmp, "relayd.pid")
        root = ["--allow-root"] if os.geteuid() == 0 else []
        env = os.environ.pop("JOURNAL_STREAM", None)
        try:
            cp = run([RELAYD_BIN, "--daemon", "--pidfile", pidfile, "-c", r.config] + root)
        finally:
            if env is not None:
                os.environ["JOURNAL_STREAM"] = env
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with open(pidfile) as f:
            self.addCleanup(self.kill, int(f.read()))
        self.assertIn("warn the log would go to stderr, which --daemon points at /dev/null", cp.stderr)
        # refusals: a TOML file, a /write url, a list of unusable outputs with a file
        toml = os.path.join(self.tmp, "relay.toml")
        with open(toml, "w") as f:
            f.write(INFLUXDB_RELAY_TOML)
        cp = run([RELAYD_BIN, "--daemon", "-c", toml] + root)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("looks like an influxdb-relay configuration (TOML)", cp.stderr)
        r2 = Relayd(self.addCleanup, name="second")
        r2.write_config(self.tmp, self.backends(), data_dir=os.path.join(self.tmp, "data2"),
                        extra_yaml={"log_output": ["/nonexistent/dir/relayd.log"]})
        cp = run([RELAYD_BIN, "--daemon", "-c", r2.config] + root)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("no log_output can be used (/nonexistent/dir/relayd.log: cannot create", cp.stderr)
        self.assertIn("no log_output can be used: /nonexistent/dir/relayd.log: cannot open log file", cp.stderr)

    @staticmethod
    def kill(pid):
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        for _ in range(150):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        os.kill(pid, signal.SIGKILL)


if __name__ == "__main__":
    relaytest.main()
