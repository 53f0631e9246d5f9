#!/usr/bin/env python3
"""
relayd as a service: --daemon with a pidfile, then SIGTERM; a stale
pidfile does not stop a start and a second relayd on the same data_dir
is kept out (the waiting parent reports why); SIGTERM under load loses no
acknowledged point and leaves no request hanging (checked in a real
influxd after a restart); SIGHUP adds a backend that then gets new writes,
removes one, restarts one whose settings changed, refuses a broken file
and keeps what needs a restart; SIGHUP changes log_level; SIGUSR1 after
the log file was moved writes a new one; systemd's notify protocol
(READY, STATUS, WATCHDOG, RELOADING, STOPPING) against a socket of the
test's own; as root: refused without 'user:', switched to it with; the
init script starts, reports status, reloads and stops relayd through
start-stop-daemon; --check-config on every example configuration in the
repository.

Processes started detached are not this script's children: they are
stopped by the pid their pidfile names, which this script started.
Sanitizer reports of detached processes go to files (ASAN_OPTIONS
log_path), which fail the test that made them.
"""

import glob
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import threading
import time
import unittest

import relaytest
from relaytest import RELAYD_BIN, SOURCE_DIR, Influxd, Relayd, wait_until

IS_ROOT = os.geteuid() == 0


# ---- helpers ----------------------------------------------------------------

def pid_alive(pid):
    """Whether pid runs (a zombie waiting for its reaper counts as gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def read_pid(path):
    with open(path) as f:
        return int(f.read().strip())


def kill_pid(pid, grace=10.0):
    """SIGTERM a process this test started (by its pid), then SIGKILL."""
    if not pid_alive(pid):
        return
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        relaytest._log("pid %d ignored SIGTERM: SIGKILL" % pid)
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def sanitizer_env(tmp):
    """The environment for detached relayds: sanitizer reports into files
    under tmp (their stderr is /dev/null)."""
    env = dict(os.environ)
    extra = "log_path=%s" % os.path.join(tmp, "asan")
    env["ASAN_OPTIONS"] = (env["ASAN_OPTIONS"] + ":" + extra) if env.get("ASAN_OPTIONS") else extra
    env["UBSAN_OPTIONS"] = ((env["UBSAN_OPTIONS"] + ":") if env.get("UBSAN_OPTIONS") else "") + \
        "log_path=%s" % os.path.join(tmp, "ubsan")
    return env


def check_sanitizer_files(tmp):
    for path in glob.glob(os.path.join(tmp, "asan*")) + glob.glob(os.path.join(tmp, "ubsan*")):
        with open(path, errors="replace") as f:
            text = f.read()
        if relaytest.sanitizer_report(text):
            raise AssertionError("sanitizer report from a detached relayd (%s):\n%s"
                                 % (path, relaytest.sanitizer_report(text)))


def health(port):
    status, _, body = relaytest.http_request(port, "GET", "/health", timeout=10)
    return status, json.loads(body.decode("utf-8"))


def wait_health(port, pred, what, timeout=15.0):
    seen = {}

    def check():
        try:
            seen["h"] = health(port)[1]
        except (OSError, http.client.HTTPException, ValueError) as e:
            seen["h"] = repr(e)
            return False
        return isinstance(seen["h"], dict) and pred(seen["h"])

    wait_until(check, timeout, 0.05, what=what, detail=lambda: "last /health %r" % (seen.get("h"),))
    return seen["h"]


def proc_ids(pid):
    """(uids, gids) of /proc/pid/status: real, effective, saved, fs."""
    uids = gids = None
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("Uid:"):
                uids = [int(x) for x in line.split()[1:]]
            elif line.startswith("Gid:"):
                gids = [int(x) for x in line.split()[1:]]
    return uids, gids


def nobody():
    """(uid, gid) of nobody, or None."""
    import pwd
    try:
        pw = pwd.getpwnam("nobody")
    except KeyError:
        return None
    return pw.pw_uid, pw.pw_gid


def open_tree(tmp):
    """Let other users (nobody) through tmp; mkdtemp makes it 0700."""
    os.chmod(tmp, 0o755)


class ServiceTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-service-")
        self.addCleanup(check_sanitizer_files, self.tmp)

    # ---- --daemon ----------------------------------------------------------

    def run_daemon(self, config, pidfile, extra=(), pass_fds=()):
        root = ["--allow-root"] if IS_ROOT else []
        cp = subprocess.run([RELAYD_BIN, "--daemon", "--pidfile", pidfile, "-c", config] + root + list(extra),
                            stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                            timeout=30, env=sanitizer_env(self.tmp), pass_fds=pass_fds)
        if cp.returncode == 0:
            pid = read_pid(pidfile)
            self.addCleanup(kill_pid, pid)
        return cp

    def test_daemon_pidfile_sigterm(self):
        r = Relayd()
        log = os.path.join(self.tmp, "relayd.log")
        backend = "http://127.0.0.1:%d" % relaytest.closed_port()
        r.write_config(self.tmp, [("a", backend)], extra_yaml={"log_output": log})
        rundir = os.path.join(self.tmp, "run")
        os.mkdir(rundir)
        pidfile = os.path.join(rundir, "relayd.pid")

        leak = os.path.join(self.tmp, "inherited")
        fd = os.open(leak, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            cp = self.run_daemon(r.config, pidfile, pass_fds=(fd,))
        finally:
            os.close(fd)
        self.assertEqual(cp.returncode, 0, "relayd --daemon failed: %s" % cp.stderr)
        # The parent returned only once the daemon listens: no polling.
        pid = read_pid(pidfile)
        self.assertTrue(pid_alive(pid))
        status, h = health(r.port)
        self.assertEqual(status, 200)
        self.assertEqual(h["pid"], pid, "the pidfile names the process that answers")
        self.assertEqual(os.readlink("/proc/%d/cwd" % pid), "/")
        for fd in (0, 1, 2):
            self.assertEqual(os.readlink("/proc/%d/fd/%d" % (pid, fd)), "/dev/null", "fd %d" % fd)
        # Descriptors come and go while relayd runs (the /health
        # connection above is still closing): skip any that vanish.
        open_fds = []
        for f in os.listdir("/proc/%d/fd" % pid):
            try:
                open_fds.append(os.readlink("/proc/%d/fd/%s" % (pid, f)))
            except FileNotFoundError:
                pass
        self.assertNotIn(leak, open_fds, "a descriptor inherited from the caller stays open")
        self.assertNotEqual(os.getsid(pid), os.getsid(0), "a session of its own")
        self.assertNotEqual(os.getsid(pid), pid, "not a session leader (second fork)")
        with open("/proc/%d/stat" % pid) as f:
            ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        self.assertNotEqual(ppid, os.getpid())
        self.assertEqual(relaytest.http_request(r.port, "POST", "/write?db=x", b"m v=1 1")[0], 204)

        # A second relayd on the same data_dir: the lock keeps it out, the
        # waiting parent says so and exits 1; the first one's pidfile stays.
        other = os.path.join(rundir, "other.pid")
        r2 = Relayd(name="second")
        r2.write_config(self.tmp, [("a", backend)], data_dir=r.data_dir,
                        extra_yaml={"log_output": os.path.join(self.tmp, "second.log")})
        cp = self.run_daemon(r2.config, other)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("is locked by another relayd (pid %d)" % pid, cp.stderr)
        self.assertFalse(os.path.exists(other))
        self.assertEqual(read_pid(pidfile), pid)
        # A port that is taken: the reason reaches the terminal too.
        r3 = Relayd(name="third")
        r3.write_config(self.tmp, [("a", backend)], port=r.port, data_dir=os.path.join(self.tmp, "data3"),
                        extra_yaml={"log_output": os.path.join(self.tmp, "third.log")})
        cp = self.run_daemon(r3.config, other)
        self.assertEqual(cp.returncode, 1)
        self.assertRegex(cp.stderr, r"error cannot listen on 127\.0\.0\.1:%d: address already in use" % r.port)

        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid), 15, what="relayd pid %d gone after SIGTERM" % pid)
        self.assertFalse(os.path.exists(pidfile), "pidfile removed on exit")
        with open(log) as f:
            text = f.read()
        self.assertIn("signal 15: shutting down", text)
        self.assertIn("stopped:", text)

        # A stale pidfile (its process is gone) does not stop a start.
        dead = subprocess.Popen(["true"])
        dead.wait()
        with open(pidfile, "w") as f:
            f.write("%d\n" % dead.pid)
        cp = self.run_daemon(r.config, pidfile)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        pid2 = read_pid(pidfile)
        self.assertNotEqual(pid2, dead.pid)
        self.assertTrue(pid_alive(pid2))
        self.assertEqual(health(r.port)[1]["backends"][0]["pending_batches"], 1, "the queue survived")
        os.kill(pid2, signal.SIGTERM)
        wait_until(lambda: not pid_alive(pid2), 15, what="relayd pid %d gone after SIGTERM" % pid2)
        self.assertFalse(os.path.exists(pidfile))

    # ---- SIGTERM under load ------------------------------------------------

    def test_sigterm_under_load(self):
        influx = Influxd(self.addCleanup)
        influx.start(self.tmp)
        influx.create_db("load")
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, [("influx", influx.url)])
        r.start()
        r.wait_ready()

        nthreads, per_req = 6, 10
        base = 1_600_000_000 * 10 ** 9
        acked = [set() for _ in range(nthreads)]
        tried = [set() for _ in range(nthreads)]
        outcomes = [dict() for _ in range(nthreads)]
        hangs = []
        requests = [0]
        lock = threading.Lock()

        def writer(t):
            seq = 0
            conn = None
            while True:
                vals = list(range(seq * per_req, (seq + 1) * per_req))
                seq += 1
                body = "".join("load,t=w%d v=%di %d\n" % (t, v, base + v) for v in vals).encode()
                tried[t].update(vals)
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", r.port, timeout=20)
                    conn.request("POST", "/write?db=load", body=body)
                    resp = conn.getresponse()
                    resp.read()
                    kind = resp.status
                    if resp.status == 204:
                        acked[t].update(vals)
                    if resp.will_close:
                        conn.close()
                        conn = None
                except ConnectionRefusedError:
                    outcomes[t]["refused"] = outcomes[t].get("refused", 0) + 1
                    return  # no longer accepting: done
                except socket.timeout:
                    hangs.append((t, seq))
                    return
                except (OSError, http.client.HTTPException):
                    kind = "closed"
                    if conn is not None:
                        conn.close()
                    conn = None
                outcomes[t][kind] = outcomes[t].get(kind, 0) + 1
                with lock:
                    requests[0] += 1

        threads = [threading.Thread(target=writer, args=(t,), daemon=True) for t in range(nthreads)]
        for th in threads:
            th.start()
        wait_until(lambda: requests[0] >= 300, 30, what="300 writes under load")
        r.proc.send_signal(signal.SIGTERM)
        rc = r.wait_exit(40)
        self.assertEqual(rc, 0, "relayd exit status after SIGTERM under load")
        for th in threads:
            th.join(30)
        self.assertFalse([th for th in threads if th.is_alive()], "a writer still waits for an answer")
        self.assertEqual(hangs, [], "requests that got neither an answer nor a closed connection")
        kinds = set(k for o in outcomes for k in o)
        self.assertTrue(kinds <= {204, 503, "closed", "refused"}, "outcomes %r" % outcomes)
        n_acked = sum(len(a) for a in acked)
        self.assertGreater(n_acked, 0)
        self.assertTrue(r.log_matches(r"signal 15: shutting down"))

        # Restarted, relayd delivers everything that was acknowledged.
        r.start()
        r.wait_ready()
        r.wait_status("influx", timeout=60, pending_batches=0)

        def stored():
            rows = influx.rows("load", "SELECT v FROM load GROUP BY t")
            out = [set() for _ in range(nthreads)]
            for row in rows:
                out[int(row["t"][1:])].add(row["v"])
            return out

        got = wait_until(lambda: (lambda s: all(acked[t] <= s[t] for t in range(nthreads)) and s)(stored()),
                         30, 0.5, what="every acknowledged point in influxd",
                         detail=lambda: "missing %r" % [sorted(acked[t] - stored()[t])[:10]
                                                      for t in range(nthreads)])
        for t in range(nthreads):
            self.assertTrue(got[t] <= tried[t], "points nobody sent")
        relaytest._log("under load: %d points acknowledged, %d stored, outcomes %r"
                       % (n_acked, sum(len(g) for g in got), outcomes))

    # ---- SIGHUP ------------------------------------------------------------

    def test_sighup_backends(self):
        a = Influxd(self.addCleanup)
        a.write_config(self.tmp, subdir="influx-a")
        a.start()
        b = Influxd(self.addCleanup)
        b.write_config(self.tmp, subdir="influx-b")
        b.start()
        for i in (a, b):
            i.create_db("db")
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, [("a", a.url)])
        r.start()
        r.wait_ready()
        self.assertEqual(r.write("db", "m v=1i 1000000000")[0], 204)
        a.wait_count("db", "m", "v", 1)

        # Add b: a new queue that starts empty, then gets every new write.
        r.write_config(self.tmp, [("a", a.url), ("b", b.url)])
        r.proc.send_signal(signal.SIGHUP)
        h = wait_health(r.port, lambda h: h["config"]["reloads"] == 1, "reload 1")
        self.assertEqual([x["name"] for x in h["backends"]], ["a", "b"])
        self.assertEqual(r.write("db", "m v=2i 2000000000")[0], 204)
        a.wait_count("db", "m", "v", 2)
        b.wait_count("db", "m", "v", 1)
        self.assertEqual(b.rows("db", "SELECT v FROM m")[0]["v"], 2, "b got only what came after it")
        r.wait_log(r"backend 'b' \(%s\): 0 batches" % re.escape(b.url))

        # A broken file is refused with its reason; the old one stays.
        with open(r.config) as f:
            good = f.read()
        with open(r.config, "w") as f:
            f.write(good + "bogus_key: 1\n")
        r.proc.send_signal(signal.SIGHUP)
        wait_health(r.port, lambda h: h["config"]["reload_errors"] == 1, "refused reload")
        r.wait_log(r"error reload refused: .*%s:\d+:\d+: unknown key 'bogus_key'.*the configuration in force stays"
                   % re.escape(os.path.basename(r.config)))
        self.assertEqual(r.write("db", "m v=3i 3000000000")[0], 204)
        a.wait_count("db", "m", "v", 3)
        b.wait_count("db", "m", "v", 2)

        # Remove b, change a's delivery settings, and try to move the
        # listener: b stops (its queue stays), a's worker restarts, the
        # address needs a restart and stays.
        new_port = relaytest.free_port()
        r.write_config(self.tmp, [{"name": "a", "url": a.url, "timeout": "20s"}],
                       extra_yaml={"listen": {"http": "127.0.0.1:%d" % new_port}})
        r.proc.send_signal(signal.SIGHUP)
        h = wait_health(r.port, lambda h: h["config"]["reloads"] == 2, "reload 2")
        self.assertEqual([x["name"] for x in h["backends"]], ["a"])
        r.wait_log(r"backend 'b' is no longer configured: delivery stops, its queue stays on disk")
        r.wait_log(r"backend 'a': delivery settings changed: restarting its worker")
        r.wait_log(r"'listen\.http' changed from '127\.0\.0\.1:%d' to '127\.0\.0\.1:%d': this needs a restart"
                   % (r.port, new_port))
        self.assertFalse(relaytest.port_is_listening(new_port))
        self.assertEqual(r.write("db", "m v=4i 4000000000")[0], 204)
        a.wait_count("db", "m", "v", 4)
        time.sleep(0.5)
        self.assertEqual(b.count("db", "m", "v"), 2, "a removed backend gets nothing new")
        self.assertTrue(r.alive())

    def test_sighup_log_level_and_sigusr1(self):
        log = os.path.join(self.tmp, "relayd.log")
        backend = "http://127.0.0.1:%d" % relaytest.closed_port()
        r = Relayd(self.addCleanup)

        def config(level):
            r.write_config(self.tmp, [("a", backend)], log_level=level, extra_yaml={"log_output": log})

        def file_log(path=log):
            try:
                with open(path) as f:
                    return f.read()
            except OSError:
                return ""

        config("info")
        r.start()
        r.wait_ready()
        wait_until(lambda: "listening on" in file_log(), 10, what="the log file")
        self.assertNotRegex(file_log(), r"Z debug ")

        # log_level debug takes effect with the reload itself.
        config("debug")
        r.proc.send_signal(signal.SIGHUP)
        wait_health(r.port, lambda h: h["config"]["reloads"] == 1, "reload 1")
        wait_until(lambda: "debug backend 'a': delivery settings unchanged" in file_log(), 10,
                   what="a debug line after the reload")

        # logrotate: move the file, SIGUSR1, and lines go to a new file.
        os.rename(log, log + ".1")
        r.proc.send_signal(signal.SIGUSR1)
        wait_until(lambda: "log file '%s' reopened" % log in file_log(), 10, what="the reopened log file")
        self.assertNotIn("reopened", file_log(log + ".1"))
        r.proc.send_signal(signal.SIGHUP)
        wait_health(r.port, lambda h: h["config"]["reloads"] == 2, "reload 2")
        wait_until(lambda: "configuration reloaded" in file_log(), 10, what="a line in the new file")
        self.assertEqual(file_log(log + ".1").count("configuration reloaded"), 1)

        # log_level warn: notices are gone from the reload on.
        config("warn")
        r.proc.send_signal(signal.SIGHUP)
        wait_health(r.port, lambda h: h["config"]["reloads"] == 3, "reload 3")
        before = file_log()
        r.proc.send_signal(signal.SIGUSR1)
        time.sleep(0.3)
        with open(r.config, "a") as f:
            f.write("log_level: [\n")
        r.proc.send_signal(signal.SIGHUP)
        wait_health(r.port, lambda h: h["config"]["reload_errors"] == 1, "refused reload")
        wait_until(lambda: "error reload refused" in file_log(), 10, what="the refusal in the log")
        after = file_log()[len(before):]
        self.assertNotRegex(after, r"Z (debug|info|notice) ", "lines below warn after log_level: warn")

    # ---- systemd ---------------------------------------------------------

    def test_systemd_notify(self):
        path = os.path.join(self.tmp, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        sock.bind(path)
        os.chmod(path, 0o777)
        messages = []

        def receive(until, timeout=15.0):
            """Collect datagrams until one satisfies until(msg)."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                sock.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    msg = sock.recv(4096).decode()
                except socket.timeout:
                    break
                messages.append(msg)
                if until(msg):
                    return msg
            raise AssertionError("no notify message as wanted; got %r" % messages)

        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())])
        saved = {k: os.environ.get(k) for k in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")}
        os.environ["NOTIFY_SOCKET"] = path
        os.environ["WATCHDOG_USEC"] = "400000"
        os.environ.pop("WATCHDOG_PID", None)
        try:
            r.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        ready = receive(lambda m: "READY=1" in m)
        # READY only once the port answers and the queue is open.
        self.assertTrue(relaytest.port_is_listening(r.port))
        self.assertRegex(ready, r"STATUS=(ok|degraded); 0 points in 0 batches \(0 KiB\) queued, oldest 0 s; [01] of 1 backend up")
        t0 = time.monotonic()
        receive(lambda m: m == "WATCHDOG=1")
        receive(lambda m: m == "WATCHDOG=1")
        self.assertLess(time.monotonic() - t0, 2.0, "two watchdog pings within 2 s (interval 0.4 s)")

        self.assertEqual(r.write("db", "m v=1 1")[0], 204)
        r.proc.send_signal(signal.SIGHUP)
        receive(lambda m: m.startswith("RELOADING=1"))
        msg = receive(lambda m: "READY=1" in m)
        self.assertIn("1 point in 1 batch (", msg)
        r.proc.send_signal(signal.SIGTERM)
        receive(lambda m: "STOPPING=1" in m)
        self.assertEqual(r.wait_exit(20), 0)

    # ---- root and user: ----------------------------------------------------

    @unittest.skipUnless(IS_ROOT, "needs root")
    def test_root_needs_user(self):
        ids = nobody()
        if ids is None:
            self.skipTest("no user nobody")
        open_tree(self.tmp)
        r = Relayd(self.addCleanup)
        r.write_config(self.tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())])
        cp = subprocess.run([RELAYD_BIN, "-c", r.config], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("refusing to run as root: set 'user' in the configuration", cp.stderr)
        self.assertIn("--allow-root", cp.stderr)
        self.assertFalse(os.path.exists(r.data_dir), "refused before anything was created")

        # With user: it becomes nobody before it creates its queue.
        r.write_config(self.tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       extra_yaml={"user": "nobody", "data_dir": os.path.join(self.tmp, "q", "data")})
        os.mkdir(os.path.join(self.tmp, "q"))
        os.chown(os.path.join(self.tmp, "q"), ids[0], ids[1])
        cp = subprocess.run([RELAYD_BIN, "--check-config", "-c", r.config], capture_output=True, text=True)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        # Started without --allow-root (the harness adds it as root).
        with open(r.log_path, "ab") as logf:
            proc = subprocess.Popen([RELAYD_BIN, "-c", r.config], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf, cwd=self.tmp)
        r.procs.append(proc)
        r.proc = proc
        r.wait_ready()
        uids, gids = proc_ids(proc.pid)
        self.assertEqual(set(uids), {ids[0]}, "every uid is nobody's")
        self.assertEqual(set(gids), {ids[1]}, "every gid is nobody's group")
        st = os.stat(os.path.join(self.tmp, "q", "data", "data.mdb"))
        self.assertEqual((st.st_uid, st.st_gid), ids)
        self.assertEqual(r.stop(), 0)

    def test_unknown_user(self):
        r = Relayd()
        r.write_config(self.tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       extra_yaml={"user": "no-such-user-relayd"})
        cp = subprocess.run([RELAYD_BIN, "-c", r.config], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30)
        self.assertEqual(cp.returncode, 1)
        self.assertIn("cannot run as user 'no-such-user-relayd': no such user", cp.stderr)
        self.assertFalse(os.path.exists(r.data_dir))

    # ---- the init script -------------------------------------------------

    @unittest.skipUnless(IS_ROOT, "needs root (start-stop-daemon --chuid)")
    def test_init_script(self):
        """With Debian's /lib/lsb/init-functions, and with the script's own
        fallback: the same output, to the byte."""
        if not shutil.which("start-stop-daemon"):
            self.skipTest("no start-stop-daemon")
        if not os.path.exists("/lib/lsb/init-functions"):
            self.skipTest("no /lib/lsb/init-functions (sysvinit-utils)")
        for functions in ("/lib/lsb/init-functions", "/nonexistent/init-functions"):
            with self.subTest(init_functions=functions):
                self.init_script_run(functions)

    def init_script_setup(self, log_output, functions):
        """The init script run against a temporary tree as root, relayd
        started as nobody: its settings file, a configuration (a closed
        backend port; log_output may name "{qdir}", the queue's
        directory) and the environment; relayd stopped by its pidfile
        and its sanitizer reports checked at cleanup. Returns
        (script, env, relayd, tmp, qdir, pidfile, ids)."""
        ids = nobody()
        if ids is None:
            self.skipTest("no user nobody")
        tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-init-")
        open_tree(tmp)
        script = os.path.join(SOURCE_DIR, "cmd", "init", "relayd.init")
        qdir = os.path.join(tmp, "q")
        os.mkdir(qdir)
        os.chown(qdir, *ids)
        rundir = os.path.join(tmp, "run")
        pidfile = os.path.join(rundir, "relayd.pid")
        r = Relayd()
        r.write_config(tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       data_dir=os.path.join(qdir, "data"), extra_yaml={"log_output": log_output.format(qdir=qdir)})
        os.chmod(r.config, 0o644)
        defaults = os.path.join(tmp, "defaults")
        with open(defaults, "w") as f:
            f.write("DAEMON=%s\nCONFIG=%s\nRUNDIR=%s\nRELAYD_USER=nobody\nSTOP_TIMEOUT=20\n"
                    "INIT_FUNCTIONS=%s\n" % (RELAYD_BIN, r.config, rundir, functions))
        env = sanitizer_env(qdir)
        env["RELAYD_DEFAULTS"] = defaults

        def stop_by_pidfile():
            if os.path.exists(pidfile):
                kill_pid(read_pid(pidfile))
        self.addCleanup(stop_by_pidfile)
        self.addCleanup(check_sanitizer_files, qdir)
        return script, env, r, tmp, qdir, pidfile, ids

    def init_script_run(self, functions):
        script, env, r, tmp, qdir, pidfile, ids = self.init_script_setup("{qdir}/relayd.log", functions)
        log = os.path.join(qdir, "relayd.log")

        def init(action):
            # stdout and stderr in one pipe: the order as a terminal shows it.
            cp = subprocess.run(["sh", script, action], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, errors="replace", timeout=60, env=env)
            return cp.returncode, cp.stdout

        self.assertEqual(init("status"), (3, "relayd is not running ... failed!\n"))
        self.assertEqual(init("try-restart"), (0, "Restarting InfluxDB relay: relayd (not running).\n"))
        self.assertEqual(init("start"), (0, "Starting InfluxDB relay: relayd.\n"))
        pid = read_pid(pidfile)
        self.assertTrue(pid_alive(pid))
        self.assertEqual(set(proc_ids(pid)[0]), {ids[0]}, "runs as RELAYD_USER")
        self.assertEqual(relaytest.http_request(r.port, "GET", "/ping")[0], 204)
        self.assertEqual(init("status"), (0, "relayd is running (pid %d).\n" % pid))
        self.assertEqual(init("start"), (0, "Starting InfluxDB relay: relayd (already running).\n"))
        self.assertEqual(read_pid(pidfile), pid, "still the same relayd")

        r.write_config(tmp, [("a", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       data_dir=os.path.join(qdir, "data"), extra_yaml={"log_output": log}, log_level="debug")
        self.assertEqual(init("reload"), (0, "Reloading InfluxDB relay configuration: relayd.\n"))
        wait_health(r.port, lambda h: h["config"]["reloads"] == 1, "reload through the init script")
        self.assertEqual(read_pid(pidfile), pid)

        # A reload with a broken file is refused before relayd sees it:
        # one status line, the reason once, relayd runs on with the old one.
        with open(r.config) as f:
            good = f.read()
        with open(r.config, "a") as f:
            f.write("bogus: 1\n")
        rc, out = init("reload")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"^Reloading InfluxDB relay configuration: relayd failed!\n%s:\d+:1: "
                              r"unknown key 'bogus'\n$" % re.escape(r.config))
        status, h = health(r.port)
        self.assertEqual((status, h["config"]["reloads"], h["config"]["reload_errors"]), (200, 1, 0))
        self.assertEqual(read_pid(pidfile), pid)
        # restart with it: refused too, and the running relayd stays.
        rc, out = init("restart")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"^Restarting InfluxDB relay: relayd failed!\n%s:\d+:1: unknown key 'bogus'\n$"
                         % re.escape(r.config))
        self.assertTrue(pid_alive(pid))
        with open(r.config, "w") as f:
            f.write(good)

        # rotate: SIGUSR1, relayd reopens its log file.
        os.rename(log, log + ".1")
        self.assertEqual(init("rotate"), (0, "Reopening InfluxDB relay log file: relayd.\n"))
        wait_until(lambda: os.path.exists(log), 10, what="the reopened log file")

        self.assertEqual(init("restart"), (0, "Restarting InfluxDB relay: relayd.\n"))
        pid2 = read_pid(pidfile)
        self.assertNotEqual(pid2, pid)
        self.assertFalse(pid_alive(pid))
        self.assertEqual(relaytest.http_request(r.port, "GET", "/ping")[0], 204)
        self.assertEqual(init("try-restart"), (0, "Restarting InfluxDB relay: relayd.\n"))
        pid3 = read_pid(pidfile)
        self.assertNotEqual(pid3, pid2)

        self.assertEqual(init("stop"), (0, "Stopping InfluxDB relay: relayd.\n"))
        self.assertFalse(pid_alive(pid3))
        self.assertFalse(os.path.exists(pidfile), "relayd removed its pidfile")
        self.assertEqual(init("status"), (3, "relayd is not running ... failed!\n"))
        self.assertEqual(init("stop"), (0, "Stopping InfluxDB relay: relayd (not running).\n"))
        self.assertEqual(init("reload"), (7, "Reloading InfluxDB relay configuration: relayd failed!\n"
                                             "relayd is not running\n"))
        self.assertEqual(init("rotate"), (7, "Reopening InfluxDB relay log file: relayd failed!\n"
                                             "relayd is not running\n"))
        # A pidfile whose process is gone: LSB status 1.
        os.makedirs(os.path.dirname(pidfile), exist_ok=True)
        with open(pidfile, "w") as f:
            f.write("%d\n" % pid3)
        self.assertEqual(init("status"), (1, "relayd is not running but %s exists ... failed!\n" % pidfile))
        os.unlink(pidfile)

        # A broken configuration: start refuses with the reason, once,
        # after the status line (it was "relaydrelayd: ... failed!" and a
        # second "failed!").
        with open(r.config, "a") as f:
            f.write("bogus: 1\n")
        rc, out = init("start")
        self.assertEqual(rc, 1, out)
        self.assertRegex(out, r"^Starting InfluxDB relay: relayd failed!\n%s:\d+:1: unknown key 'bogus'\n$"
                         % re.escape(r.config))
        self.assertFalse(os.path.exists(pidfile))
        with open(log + ".1") as f:
            self.assertIn("configuration reloaded", f.read())

        self.assertEqual(init("bogus-action")[0], 3)

    def test_init_script_without_daemon(self):
        """Removed but not purged: the script and its rc links stay, the
        binary is gone. Every boot runs `start`: a quiet exit 0 (Debian's
        convention), not "failed!"; status says 4 (unknown)."""
        tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-init-")
        script = os.path.join(SOURCE_DIR, "cmd", "init", "relayd.init")
        defaults = os.path.join(tmp, "defaults")
        missing = os.path.join(tmp, "no-such-relayd")
        with open(defaults, "w") as f:
            f.write("DAEMON=%s\nRUNDIR=%s\nINIT_FUNCTIONS=/nonexistent/init-functions\n"
                    % (missing, os.path.join(tmp, "run")))
        env = dict(os.environ, RELAYD_DEFAULTS=defaults)
        for action in ("start", "stop", "restart", "try-restart", "reload", "force-reload", "rotate"):
            cp = subprocess.run(["sh", script, action], stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=30, env=env)
            self.assertEqual((cp.returncode, cp.stdout, cp.stderr), (0, "", ""), action)
        cp = subprocess.run(["sh", script, "status"], stdin=subprocess.DEVNULL, capture_output=True,
                            text=True, timeout=30, env=env)
        self.assertEqual((cp.returncode, cp.stdout), (4, "relayd is not installed (%s) ... failed!\n" % missing))

    @unittest.skipUnless(IS_ROOT, "needs root (start-stop-daemon --chuid)")
    def test_init_script_start_warnings(self):
        """A start that succeeds with relayd's warnings: the status line,
        then the warnings on stderr, each once (they were thrown away)."""
        if not shutil.which("start-stop-daemon"):
            self.skipTest("no start-stop-daemon")
        if os.path.exists("/dev/log"):
            self.skipTest("/dev/log exists: log_output syslog works here, relayd has nothing to warn of")
        script, env, r, tmp, qdir, pidfile, ids = self.init_script_setup("syslog", "/nonexistent/init-functions")
        cp = subprocess.run(["sh", script, "start"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=60, env=env)
        self.assertEqual((cp.returncode, cp.stdout), (0, "Starting InfluxDB relay: relayd.\n"), cp.stderr)
        self.assertTrue(pid_alive(read_pid(pidfile)))
        lines = cp.stderr.splitlines()
        self.assertTrue([l for l in lines if "log_output is syslog but /dev/log does not exist" in l], cp.stderr)
        self.assertEqual(len(lines), len(set(lines)), "each line once:\n" + cp.stderr)
        # Already running: nothing started, nothing to warn of.
        cp = subprocess.run(["sh", script, "start"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=60, env=env)
        self.assertEqual((cp.returncode, cp.stdout, cp.stderr),
                         (0, "Starting InfluxDB relay: relayd (already running).\n", ""))
        cp = subprocess.run(["sh", script, "stop"], stdin=subprocess.DEVNULL, capture_output=True, text=True,
                            errors="replace", timeout=60, env=env)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    # ---- example configurations --------------------------------------------

    def test_version(self):
        # Both programs name the same version, the one the build was made
        # from (CMakeLists.txt's project version), and exit 0.
        with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
            want = re.search(r"project\(relayd VERSION ([0-9.]+)", f.read()).group(1)
        for prog, name in ((relaytest.RELAYD_BIN, "relayd"), (relaytest.RELAYCTL_BIN, "relayctl")):
            r = subprocess.run([prog, "--version"], capture_output=True, text=True, timeout=10)
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertEqual(r.stdout, "%s %s\n" % (name, want))

    def test_check_config_examples(self):
        found = []
        # docs/monitoring holds Prometheus's rule files, not relayd's.
        skip = {".git", "corpus", "monitoring"}
        for dirpath, dirnames, filenames in os.walk(SOURCE_DIR):
            dirnames[:] = [d for d in dirnames if d not in skip and not d.startswith("build")]
            for name in filenames:
                if name.endswith((".yaml", ".yml")):
                    found.append(os.path.join(dirpath, name))
        rel = sorted(os.path.relpath(p, SOURCE_DIR) for p in found)
        for must in ("config.example.yaml", os.path.join("cmd", "init", "relayd.yaml")):
            self.assertIn(must, rel)
        # Complete configurations shown in the documentation count too.
        docs = []
        for path in glob.glob(os.path.join(SOURCE_DIR, "docs", "*.md")):
            with open(path) as f:
                for n, block in enumerate(re.findall(r"```yaml\n(.*?)```", f.read(), re.S)):
                    if "data_dir:" in block and "backends:" in block:
                        docs.append(("%s#%d" % (os.path.basename(path), n), block))
        man = os.path.join(SOURCE_DIR, "docs", "man", "relayd.yaml.5")
        with open(man) as f:
            m = re.search(r"\.SH EXAMPLE\n\.nf\n(.*?)\.fi", f.read(), re.S)
        self.assertIsNotNone(m, "relayd.yaml(5) has an EXAMPLE")
        docs.append(("relayd.yaml.5", m.group(1).replace("\\-", "-")))
        self.assertTrue(any(n.startswith("operations.md") for n, _ in docs), "operations.md shows a config")
        for n, block in docs:
            path = os.path.join(self.tmp, n.replace("#", "-") + ".yaml")
            with open(path, "w") as f:
                f.write(block)
            found.append(path)
        for path in found:
            cp = relaytest.check_config(path)
            self.assertEqual(cp.returncode, 0, "%s: %s%s" % (path, cp.stdout, cp.stderr))
            self.assertRegex(cp.stdout, r": ok \(\d+ backends?\)\nmemory ceiling: \d+ MiB "
                                        r"\(systemd: MemoryMax=\d+M\)\n")
            # Whether a log_output is available depends on the host (a
            # syslog daemon, systemd's journal): not the examples' fault.
            warnings = [l for l in cp.stderr.splitlines() if "warning" in l and "log_output" not in l]
            self.assertEqual(warnings, [], path)

    def test_check_config_warns_of_readable_secrets(self):
        # A token in a file every user may read: --check-config and the
        # start both say so, and how to fix it.
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(self.tmp, backends=[("local", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       extra_yaml={"auth": {"enabled": True, "tokens": [{"name": "t", "token": "s3cret"}]}})
        os.chmod(r.config, 0o644)
        cp = relaytest.check_config(r.config)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertIn("holds auth.tokens and is readable by every user (mode 0644): chmod o-r", cp.stderr)
        self.assertNotIn("s3cret", cp.stdout + cp.stderr)
        r.start()
        r.wait_ready()
        self.assertTrue(r.log_matches(r"warn.*readable by every user"), r.log_since_start())
        r.stop()
        os.chmod(r.config, 0o600)
        cp = relaytest.check_config(r.config)
        self.assertNotIn("readable", cp.stderr)


if __name__ == "__main__":
    relaytest.main(require=("relayd",))
