"""
relaytest: the harness the integration tests use to drive whole processes.

It starts relayd (and influxd) as children on loopback ports, talks to them
over HTTP, runs relayctl against the same config, and always stops what it
started, by pid: SIGTERM, a grace period, then SIGKILL. Nothing is ever
stopped by name. Python 3 standard library only.

A test script ends with relaytest.main(require=[...]): it exits 77 (ctest's
SKIP_RETURN_CODE) when a required program is missing, 0 when every test
passed, 1 otherwise.

Environment:
  RELAYD_BIN, RELAYCTL_BIN  the programs under test (default
                            ../../build/bin/relayd and relayctl, relative to
                            this file)
  RELAY_SOURCE_DIR          the source tree (default ../..)
  INFLUXD_BIN               influxd (default: found on PATH)
  RELAYTEST_KEEP=1          keep the temp dirs of the tests
  RELAYTEST_VERBOSE=1       print every relayd/influxd log on cleanup
"""

import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SKIP_EXIT = 77
LOOPBACK = "127.0.0.1"

# The HTTP ports of the influxd this process started and has not yet
# stopped. A relayd backend pointed at one of them delivers with
# `parallel: 1` unless the test says otherwise: influxd 1.6.7 can hide a
# point of concurrent writes that create a shard, though it answers 204
# (docs/influxdb.md, "Concurrent writes into a new shard"), and the tests
# count points exactly. A test about parallel lanes against a real influxd
# sets `parallel` and creates the shards first (Influxd.prime_shards).
_INFLUXD_PORTS = set()


def _default_bin(env, name):
    path = os.environ.get(env)
    if path:
        # Absolute: relayd is started with the test's temporary directory
        # as its working directory.
        return os.path.abspath(path)
    return os.path.normpath(os.path.join(HERE, "..", "..", "build", "bin", name))


RELAYD_BIN = _default_bin("RELAYD_BIN", "relayd")
RELAYCTL_BIN = _default_bin("RELAYCTL_BIN", "relayctl")
SOURCE_DIR = os.environ.get("RELAY_SOURCE_DIR") or os.path.normpath(
    os.path.join(HERE, "..", ".."))
INFLUXD_BIN = os.environ.get("INFLUXD_BIN") or shutil.which("influxd")
KEEP = os.environ.get("RELAYTEST_KEEP") == "1"
VERBOSE = os.environ.get("RELAYTEST_VERBOSE") == "1"


def _log(msg):
    sys.stderr.write("# %s\n" % msg)
    sys.stderr.flush()


# ---- ports ----------------------------------------------------------------

_handed_out = set()


def free_port():
    """A loopback TCP port nobody listens on right now (bind 0, read back).
    The same port is never handed out twice by one process."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("cannot find a free loopback port")


def free_udp_port():
    """A loopback UDP port nobody is bound to right now (bind 0, read
    back); never one handed out before by this process."""
    for _ in range(100):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.bind((LOOPBACK, 0))
            port = s.getsockname()[1]
        finally:
            s.close()
        if ("udp", port) not in _handed_out:
            _handed_out.add(("udp", port))
            return port
    raise RuntimeError("cannot find a free loopback UDP port")


def closed_port():
    """A loopback port where a connection is refused: a backend that is
    down. Checked by connecting once."""
    for _ in range(20):
        port = free_port()
        try:
            c = socket.create_connection((LOOPBACK, port), timeout=2)
        except ConnectionRefusedError:
            return port
        except OSError:
            continue
        c.close()
    raise RuntimeError("cannot find a closed loopback port")


def port_is_listening(port):
    try:
        c = socket.create_connection((LOOPBACK, port), timeout=2)
    except OSError:
        return False
    c.close()
    return True


# ---- temp dirs and processes ----------------------------------------------

def asan_build():
    """Whether relayd was built with AddressSanitizer (which keeps freed
    memory in quarantine: memory bounds need more room)."""
    try:
        with open(RELAYD_BIN, "rb") as f:
            return b"AddressSanitizer" in f.read()
    except OSError:
        return False


def python_with_influxdb():
    """An interpreter that can import the influxdb client (python3-influxdb),
    or None: this one, or Debian's /usr/bin/python3 where the package lives.
    The tests run the client in it as a child process."""
    for py in (sys.executable, "/usr/bin/python3"):
        if py and os.access(py, os.X_OK):
            cp = subprocess.run([py, "-c", "import influxdb"], capture_output=True)
            if cp.returncode == 0:
                return py
    return None


def proc_mem(pid):
    """VmRSS and VmHWM of pid (from /proc/PID/status), in bytes."""
    out = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, val = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(val.split()[0]) * 1024
    return out


def read_head(sock, timeout=10.0):
    """Read one response head from a blocking socket: (status, head), or
    (None, what came) when the server closed first. Uses socket timeouts
    (poll), not select(), so any fd number works."""
    sock.settimeout(timeout)
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            return None, buf
        buf += chunk
    return int(buf.split(b" ", 2)[1]), buf


# ---- the queue file, through lmdb-utils (mdb_dump, mdb_load) ---------------

MDB_DUMP = shutil.which("mdb_dump")
MDB_LOAD = shutil.which("mdb_load")


def mdb_dump(env_dir, dbname):
    """{key bytes: value bytes} of named database dbname (mdb_dump -s)."""
    cp = subprocess.run([MDB_DUMP, "-s", dbname, env_dir], capture_output=True, text=True, check=True)
    lines = cp.stdout.splitlines()
    body = lines[lines.index("HEADER=END") + 1:lines.index("DATA=END")]
    return {bytes.fromhex(body[i].strip()): bytes.fromhex(body[i + 1].strip())
            for i in range(0, len(body), 2)}


def mdb_load(env_dir, dbname, entries):
    """Write entries into dbname (mdb_load -s, overwriting existing keys)."""
    text = ["VERSION=3", "format=bytevalue", "type=btree", "HEADER=END"]
    for k, v in entries.items():
        text += [" " + k.hex(), " " + v.hex()]
    text.append("DATA=END")
    subprocess.run([MDB_LOAD, "-s", dbname, env_dir], input="\n".join(text) + "\n", text=True,
                   check=True, capture_output=True)


def _crc32c_table():
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        t.append(c)
    return t


_CRC32C = _crc32c_table()


def crc32c(data, crc=0):
    """CRC32C (Castagnoli, reflected), the queue record's checksum."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc = _CRC32C[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def seal_record(rec):
    """A batch record (format 2) with its checksum made right: the CRC32C
    of the record with its own four bytes (16..19) taken as zero. For a
    record a test changes on purpose, so that it still decodes and what
    is wrong with it is what the test means."""
    rec = bytearray(rec)
    rec[16:20] = bytes(4)
    rec[16:20] = crc32c(bytes(rec)).to_bytes(4, "little")
    return bytes(rec)


def make_tmpdir(guard, prefix="relaytest-"):
    """A fresh temp dir, removed by the guard (e.g. self.addCleanup)
    unless RELAYTEST_KEEP=1. Register it before the processes that use it,
    so that cleanups (last in, first out) stop them first."""
    d = tempfile.mkdtemp(prefix=prefix)
    if guard is not None:
        def remove():
            if KEEP:
                _log("kept %s" % d)
            else:
                shutil.rmtree(d, ignore_errors=True)
        guard(remove)
    return d


def stop_process(proc, grace=10.0):
    """SIGTERM the child by its pid, wait up to grace seconds, then SIGKILL.
    Returns its exit status (negative for a signal)."""
    if proc.poll() is not None:
        return proc.returncode
    try:
        proc.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        return proc.wait(grace)
    except subprocess.TimeoutExpired:
        _log("pid %d ignored SIGTERM for %.0f s: SIGKILL" % (proc.pid, grace))
        try:
            proc.kill()
        except ProcessLookupError:
            pass
        return proc.wait()


def _read_text(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


# What AddressSanitizer, LeakSanitizer, UBSan and TSan print: a build with
# RELAY_SANITIZE fails the test that provoked the report.
SANITIZER_MARKS = ("ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:",
                   "WARNING: ThreadSanitizer", "ERROR: ThreadSanitizer")


# Exit statuses of a crash (killed by these signals): a relayd that dies so,
# even while shutting down, fails the test.
CRASH_STATUS = {-signal.SIGSEGV, -signal.SIGABRT, -signal.SIGBUS, -signal.SIGFPE,
                -signal.SIGILL}


def sanitizer_report(text):
    """The first sanitizer report in text (a few lines), or None."""
    for mark in SANITIZER_MARKS:
        i = text.find(mark)
        if i >= 0:
            start = text.rfind("\n", 0, i) + 1
            return "\n".join(text[start:].splitlines()[:40])
    return None


def _tail(text, n=60):
    lines = text.splitlines()
    if len(lines) > n:
        lines = ["... (%d lines before)" % (len(lines) - n)] + lines[-n:]
    return "\n".join(lines)


# ---- polling --------------------------------------------------------------

def wait_until(pred, timeout, interval=0.1, what="the condition", detail=None):
    """Call pred() every interval seconds until it returns something true,
    and return that. AssertionError after timeout seconds, naming what and
    ending with detail() (the state to show, e.g. a log tail) when given.
    pred is always called once more at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        last = time.monotonic() >= deadline
        value = pred()
        if value:
            return value
        if last:
            msg = "%s not reached within %.1f s" % (what, timeout)
            if detail is not None:
                msg += "; " + str(detail())
            raise AssertionError(msg)
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


# ---- YAML -----------------------------------------------------------------

_PLAIN = re.compile(r"^[A-Za-z0-9_./@+][A-Za-z0-9_./:@+\-]*$")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "~", "y", "n"}


def _yaml_scalar(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return str(v)
    s = str(v)
    if _PLAIN.match(s) and s.lower() not in _YAML_WORDS:
        return s
    return json.dumps(s)  # a JSON string is a valid YAML double-quoted one


def to_yaml(obj, indent=0):
    """Block-style YAML for dicts, lists and scalars: a list of lines."""
    pad = "  " * indent
    out = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(v, (dict, list)) and v:
                out.append("%s%s:" % (pad, k))
                out.extend(to_yaml(v, indent + 1))
            elif isinstance(v, dict):
                out.append("%s%s: {}" % (pad, k))
            elif isinstance(v, list):
                out.append("%s%s: []" % (pad, k))
            else:
                out.append("%s%s: %s" % (pad, k, _yaml_scalar(v)))
    elif isinstance(obj, list):
        for item in obj:
            if isinstance(item, (dict, list)) and item:
                sub = to_yaml(item, indent + 1)
                sub[0] = pad + "- " + sub[0].lstrip()
                out.extend(sub)
            else:
                out.append("%s- %s" % (pad, _yaml_scalar(item)))
    else:
        out.append(pad + _yaml_scalar(obj))
    return out


def _deep_merge(dst, src):
    for k, v in src.items():
        if isinstance(v, dict) and isinstance(dst.get(k), dict):
            _deep_merge(dst[k], v)
        else:
            dst[k] = v
    return dst


# ---- HTTP helpers ---------------------------------------------------------

def http_request(port, method, path, body=None, headers=None, timeout=30.0):
    """One request on a new connection: (status, headers, body bytes).
    headers is an http.client.HTTPMessage (case-insensitive get)."""
    if isinstance(body, str):
        body = body.encode("utf-8")
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        return resp.status, resp.headers, data
    finally:
        conn.close()


def json_error(headers, body):
    """The "error" string of a JSON error response; AssertionError when the
    response is not Content-Type application/json with {"error": "..."}."""
    ctype = headers.get("Content-Type", "") if headers is not None else ""
    if not ctype.lower().startswith("application/json"):
        raise AssertionError("error response Content-Type is %r, not application/json "
                             "(body %r)" % (ctype, body[:300]))
    try:
        doc = json.loads(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise AssertionError("error body is not JSON (%s): %r" % (e, body[:300]))
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), str) or not doc["error"]:
        raise AssertionError('error body is not {"error":"..."}: %r' % (body[:300],))
    return doc["error"]


class RawResponse:
    def __init__(self, status, reason, headers, body, raw_head):
        self.status = status
        self.reason = reason
        self.headers = headers  # dict, lower-case names
        self.body = body
        self.raw_head = raw_head

    def __repr__(self):
        return "<RawResponse %d %r %r>" % (self.status, self.headers, self.body[:100])


class RawConn:
    """A raw TCP connection for what http.client cannot do: pipelining,
    partial requests, timeouts, watching the server close."""

    def __init__(self, port, timeout=10.0):
        self.sock = socket.create_connection((LOOPBACK, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.eof = False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send(self, data):
        """sendall; False (instead of an exception) when the server has
        already reset or closed the connection."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError):
            return False

    def _fill(self, deadline):
        """Read more bytes into buf; False at EOF/reset or timeout."""
        if self.eof:
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("timed out waiting for the server")
        r, _, _ = select.select([self.sock], [], [], remaining)
        if not r:
            raise socket.timeout("timed out waiting for the server")
        try:
            chunk = self.sock.recv(65536)
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self.eof = True
            return False
        self.buf += chunk
        return True

    def readable_within(self, seconds):
        """True when bytes (or EOF) arrive within seconds."""
        if self.buf or self.eof:
            return True
        r, _, _ = select.select([self.sock], [], [], seconds)
        return bool(r)

    def read_response(self, timeout=10.0, head=False):
        """Read one response. Raises EOFError when the server closes before
        a complete one arrives, socket.timeout when nothing comes."""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            if not self._fill(deadline):
                raise EOFError("connection closed; partial response %r" % self.buf[:200])
        head_bytes, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head_bytes.decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
            raise AssertionError("bad status line %r" % lines[0])
        status = int(parts[1])
        reason = parts[2] if len(parts) > 2 else ""
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if head or status in (204, 304) or 100 <= status < 200:
            body = b""
        elif "content-length" in headers:
            n = int(headers["content-length"])
            while len(self.buf) < n:
                if not self._fill(deadline):
                    raise EOFError("connection closed inside a body")
            body, self.buf = self.buf[:n], self.buf[n:]
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                while b"\r\n" not in self.buf:
                    if not self._fill(deadline):
                        raise EOFError("connection closed inside a chunk")
                size_line, self.buf = self.buf.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                while len(self.buf) < size + 2:
                    if not self._fill(deadline):
                        raise EOFError("connection closed inside a chunk")
                body += self.buf[:size]
                self.buf = self.buf[size + 2:]
                if size == 0:
                    break
        else:
            while self._fill(deadline):
                pass
            body, self.buf = self.buf, b""
        return RawResponse(status, reason, headers, body, head_bytes)

    def wait_closed(self, timeout):
        """True when the server closes (EOF or reset) within timeout; bytes
        that arrive first are kept in buf."""
        deadline = time.monotonic() + timeout
        try:
            while self._fill(deadline):
                pass
        except socket.timeout:
            return False
        return True


def raw_json_error(resp):
    """json_error() for a RawResponse."""
    return json_error({"Content-Type": resp.headers.get("content-type", "")}, resp.body)


# ---- relayd ---------------------------------------------------------------

class Relayd:
    """One relayd under test: its config, its data_dir, its log, and every
    process started for it (several across restarts)."""

    def __init__(self, guard=None, name="relayd"):
        self.name = name
        self.procs = []
        self.proc = None
        self.port = None
        self.tmpdir = None
        self.config = None
        self.data_dir = None
        self.log_path = None
        self._log_offset = 0
        self._expected_exit = set()
        if guard is not None:
            guard(self.cleanup)

    # configuration

    def write_config(self, tmpdir, backends, extra_yaml=None, data_dir=None,
                     port=None, log_level="info"):
        """Write tmpdir/<name>.yaml. backends: (name, url) tuples or dicts
        (for max_size/max_age). extra_yaml: a dict deep-merged into the
        config, or YAML text appended to it. data_dir defaults to
        tmpdir/data and is NOT created here (relayd creates it). A backend
        at an influxd of this harness gets `parallel: 1` unless it sets
        parallel (see _INFLUXD_PORTS)."""
        self.tmpdir = tmpdir
        self.port = port or self.port or free_port()
        self.data_dir = data_dir or os.path.join(tmpdir, "data")
        self.config = os.path.join(tmpdir, self.name + ".yaml")
        self.log_path = os.path.join(tmpdir, self.name + ".log")
        bl = []
        for b in backends:
            if isinstance(b, dict):
                b = dict(b)
            else:
                b = {"name": b[0], "url": b[1]}
            if urllib.parse.urlsplit(b["url"]).port in _INFLUXD_PORTS:
                b.setdefault("parallel", 1)
            bl.append(b)
        cfg = {
            "data_dir": self.data_dir,
            "log_level": log_level,
            "listen": {"http": "%s:%d" % (LOOPBACK, self.port)},
            "backends": bl,
        }
        if isinstance(extra_yaml, dict):
            _deep_merge(cfg, extra_yaml)
        text = "\n".join(to_yaml(cfg)) + "\n"
        if isinstance(extra_yaml, str):
            text += extra_yaml if extra_yaml.endswith("\n") else extra_yaml + "\n"
        with open(self.config, "w") as f:
            f.write(text)
        return self.config

    # lifecycle

    def start(self, umask=None, args=(), preexec_fn=None):
        """Spawn relayd -c CONFIG in the foreground, stdout and stderr
        appended to the log file. preexec_fn runs in the child before
        relayd (a resource limit, say)."""
        if self.config is None:
            raise RuntimeError("write_config first")
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("relayd pid %d is still running" % self.proc.pid)
        with open(self.log_path, "ab") as logf:
            logf.write(("==== start %d: %s -c %s\n" % (len(self.procs) + 1, RELAYD_BIN,
                                                       self.config)).encode())
            logf.flush()
            self._log_offset = logf.tell()
            kw = {}
            if umask is not None:
                kw["umask"] = umask
            if preexec_fn is not None:
                kw["preexec_fn"] = preexec_fn
            # relayd refuses to run as root without 'user:'; the tests
            # run as root in CI.
            root = ["--allow-root"] if os.geteuid() == 0 else []
            proc = subprocess.Popen([RELAYD_BIN, "-c", self.config] + root + list(args),
                                    stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                    cwd=self.tmpdir, **kw)
        self.procs.append(proc)
        self.proc = proc
        return proc

    def log(self):
        """The whole log (every start)."""
        return _read_text(self.log_path)

    def log_since_start(self):
        """What the current process wrote."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout=10.0):
        """Poll GET /ping until 204. AssertionError (with the log) when
        relayd exits first or is not ready within timeout."""
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                self._expected_exit.add(self.proc.pid)
                raise AssertionError("relayd exited with status %s before it was ready; log:\n%s"
                                     % (rc, _tail(self.log_since_start())))
            try:
                status, _, _ = http_request(self.port, "GET", "/ping", timeout=1.0)
                if status == 204:
                    if self.proc.poll() is not None:
                        continue  # someone else answers on our port
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                self._expected_exit.add(self.proc.pid)
                stop_process(self.proc, grace=2)
                raise AssertionError("relayd not ready within %.0f s (GET /ping); log:\n%s"
                                     % (timeout, _tail(self.log_since_start())))
            time.sleep(0.05)

    def wait_exit(self, timeout):
        """Exit status of the current process, or None if it still runs
        after timeout seconds."""
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None
        self._expected_exit.add(self.proc.pid)
        return rc

    def kill9(self):
        """SIGKILL the current process (by pid) and reap it."""
        self._expected_exit.add(self.proc.pid)
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def stop(self, grace=10.0):
        """SIGTERM, then SIGKILL after grace seconds. Returns the status."""
        self._expected_exit.add(self.proc.pid)
        return stop_process(self.proc, grace)

    def restart(self):
        self.start()
        self.wait_ready()

    def cleanup(self):
        """Stop every process started; then fail (an error of the test)
        when the log holds a sanitizer report."""
        for p in self.procs:
            if p.poll() is not None and p.pid not in self._expected_exit:
                _log("relayd %s pid %d exited by itself with status %s; log:\n%s"
                     % (self.name, p.pid, p.returncode, _tail(self.log())))
            stop_process(p, grace=5)
        crashed = [(p.pid, p.returncode) for p in self.procs if p.returncode in CRASH_STATUS]
        self.procs = []
        log = self.log() if self.log_path else ""
        if VERBOSE and self.log_path:
            _log("relayd %s log:\n%s" % (self.name, log))
        report = sanitizer_report(log)
        if report:
            raise AssertionError("sanitizer report in the relayd log %s:\n%s"
                                 % (self.log_path, report))
        if crashed:
            raise AssertionError("relayd crashed (pid, status): %r; log:\n%s"
                                 % (crashed, _tail(log)))

    # HTTP

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        """(status, headers, body) over a new connection; a connection error
        becomes an AssertionError that says whether relayd still runs."""
        try:
            return http_request(self.port, method, path, body, headers, timeout)
        except (OSError, http.client.HTTPException) as e:
            state = "running" if self.alive() else "exited with %s" % (
                self.proc.returncode if self.proc else None)
            raise AssertionError("%s %s failed: %r (relayd %s); log:\n%s"
                                 % (method, path, e, state, _tail(self.log_since_start())))

    def post(self, path, body, headers=None):
        return self.request("POST", path, body, headers)

    def get(self, path, headers=None):
        return self.request("GET", path, None, headers)

    def write(self, db, body, precision=None, rp=None, headers=None, **params):
        """POST /write?db=..[&rp=..][&precision=..]."""
        q = []
        if db is not None:
            q.append(("db", db))
        if rp is not None:
            q.append(("rp", rp))
        if precision is not None:
            q.append(("precision", precision))
        q.extend(params.items())
        return self.post("/write?" + urllib.parse.urlencode(q), body, headers)

    def raw(self, timeout=10.0):
        return RawConn(self.port, timeout)

    # relayctl

    def relayctl(self, *args, timeout=60.0):
        """CompletedProcess of relayctl -c CONFIG args... (text output).
        AssertionError when relayctl prints a sanitizer report."""
        cp = subprocess.run([RELAYCTL_BIN, "-c", self.config] + [str(a) for a in args],
                            stdin=subprocess.DEVNULL, capture_output=True,
                            timeout=timeout, text=True, errors="replace")
        report = sanitizer_report(cp.stderr)
        if report:
            raise AssertionError("sanitizer report from relayctl %s:\n%s"
                                 % (" ".join(map(str, args)), report))
        return cp

    def status_json(self):
        """Parsed `relayctl -c CFG status --json`."""
        cp = self.relayctl("status", "--json")
        if cp.returncode != 0:
            raise AssertionError("relayctl status --json exited %d: %s%s"
                                 % (cp.returncode, cp.stdout, cp.stderr))
        try:
            doc = json.loads(cp.stdout)
        except ValueError as e:
            raise AssertionError("relayctl status --json printed no JSON (%s): %r"
                                 % (e, cp.stdout[:500]))
        if not isinstance(doc, dict) or not isinstance(doc.get("backends"), list):
            raise AssertionError('status --json has no "backends" list: %r' % (doc,))
        return doc

    # What the queue holds per backend, without what relayd knows only
    # in memory (state, attempts, time to the next attempt...), which
    # changes by itself: for "nothing changed" comparisons.
    QUEUE_KEYS = ("name", "pending_batches", "pending_points", "pending_bytes", "dead_batches",
                  "dead_bytes", "paused", "delivered_batches", "delivered_points")

    def queue_status(self):
        """status --json reduced to what the queue holds, per backend."""
        return [{k: b[k] for k in self.QUEUE_KEYS if k in b} for b in self.status_json()["backends"]]

    def backend_status(self, name):
        """The entry of backend name in status --json."""
        doc = self.status_json()
        for b in doc["backends"]:
            if b.get("name") == name:
                return b
        raise AssertionError("backend %r not in status --json: %r" % (name, doc))

    def dump(self, backend):
        """`relayctl -c CFG dump BACKEND`: one dict per pending batch."""
        cp = self.relayctl("dump", backend)
        if cp.returncode != 0:
            raise AssertionError("relayctl dump %s exited %d: %s%s"
                                 % (backend, cp.returncode, cp.stdout, cp.stderr))
        out = []
        for n, line in enumerate(cp.stdout.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError as e:
                raise AssertionError("relayctl dump line %d is not JSON (%s): %r"
                                     % (n, e, line[:300]))
        return out


    # waiting for relayd

    def wait_status(self, backend, timeout=20.0, interval=0.2, **want):
        """Poll status --json until backend's entry has every key=value of
        want (e.g. pending_batches=0, dead_batches=1); return the entry.
        AssertionError with the last entry and the log tail otherwise."""
        seen = {}

        def check():
            seen["st"] = self.backend_status(backend)
            return all(seen["st"].get(k) == v for k, v in want.items()) and seen["st"]

        return wait_until(check, timeout, interval,
                          what="backend %r status %r" % (backend, want),
                          detail=lambda: "last status %r; relayd log:\n%s"
                          % (seen.get("st"), _tail(self.log())))

    def wait_log(self, pattern, timeout=10.0, flags=re.IGNORECASE):
        """Poll the log of the current process until the regular expression
        pattern matches a line; return the match."""
        rx = re.compile(pattern, flags)
        return wait_until(lambda: rx.search(self.log_since_start()), timeout, 0.1,
                          what="relayd log line /%s/" % pattern,
                          detail=lambda: "log:\n" + _tail(self.log_since_start()))

    def log_matches(self, pattern, flags=re.IGNORECASE, whole=False):
        """Lines of the log (of the current process, or of every start when
        whole) that match the regular expression pattern."""
        rx = re.compile(pattern, flags)
        text = self.log() if whole else self.log_since_start()
        return [l for l in text.splitlines() if rx.search(l)]

def check_config(path, timeout=30.0):
    """relayd --check-config -c PATH: CompletedProcess (text);
    AssertionError on a sanitizer report."""
    cp = subprocess.run([RELAYD_BIN, "--check-config", "-c", path],
                        stdin=subprocess.DEVNULL, capture_output=True,
                        timeout=timeout, text=True, errors="replace")
    report = sanitizer_report(cp.stderr)
    if report:
        raise AssertionError("sanitizer report from relayd --check-config %s:\n%s"
                             % (path, report))
    return cp


# ---- influxd --------------------------------------------------------------

INFLUXD_CONF = """\
reporting-disabled = true
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false

[http]
  enabled = true
  bind-address = "127.0.0.1:{port}"
  log-enabled = false

[monitor]
  store-enabled = false

[continuous_queries]
  enabled = false

[subscriber]
  enabled = false
"""


class Influxd:
    """A private influxd: its own config, dirs and loopback ports."""

    def __init__(self, guard=None):
        self.proc = None
        self.procs = []
        self.port = None
        self.rpc_port = None
        self.dir = None
        self.config = None
        self.log_path = None
        if guard is not None:
            guard(self.cleanup)

    @property
    def url(self):
        return "http://%s:%d" % (LOOPBACK, self.port)

    def write_config(self, tmpdir, http_options=None, subdir="influxd"):
        """http_options: extra [http] settings, e.g. {"max-body-size": 4096}
        or {"auth-enabled": True}. subdir: for several influxd in one
        tmpdir."""
        self.dir = os.path.join(tmpdir, subdir)
        os.makedirs(self.dir, exist_ok=True)
        self.port = self.port or free_port()
        self.rpc_port = self.rpc_port or free_port()
        self.config = os.path.join(self.dir, "influxdb.conf")
        self.log_path = os.path.join(self.dir, "influxd.log")
        text = INFLUXD_CONF.format(rpc_port=self.rpc_port, port=self.port, dir=self.dir)
        if http_options:
            extra = "".join("  %s = %s\n" % (k, json.dumps(v)) for k, v in http_options.items())
            text = text.replace("  log-enabled = false\n", "  log-enabled = false\n" + extra, 1)
        with open(self.config, "w") as f:
            f.write(text)
        return self.config

    def start(self, tmpdir=None, timeout=10.0):
        """Start influxd -config FILE and wait for GET /ping 204. Refuses
        to start when something already listens on its ports."""
        if INFLUXD_BIN is None:
            raise unittest.SkipTest("influxd not found on PATH")
        if self.config is None:
            self.write_config(tmpdir)
        for p in (self.port, self.rpc_port):
            if port_is_listening(p):
                raise AssertionError("port %d is already taken: not starting influxd" % p)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen([INFLUXD_BIN, "-config", self.config],
                                         stdin=subprocess.DEVNULL, stdout=logf, stderr=logf,
                                         cwd=self.dir)
        self.procs.append(self.proc)
        deadline = time.monotonic() + timeout
        while True:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError("influxd exited with %s before it was ready; log:\n%s"
                                     % (rc, _tail(_read_text(self.log_path))))
            try:
                status, headers, _ = http_request(self.port, "GET", "/ping", timeout=1.0)
                if status == 204 and self.proc.poll() is None:
                    self.version = headers.get("X-Influxdb-Version")
                    _INFLUXD_PORTS.add(self.port)
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.monotonic() > deadline:
                stop_process(self.proc, grace=2)
                raise AssertionError("influxd not ready within %.0f s; log:\n%s"
                                     % (timeout, _tail(_read_text(self.log_path))))
            time.sleep(0.05)

    def request(self, method, path, body=None, headers=None, timeout=30.0):
        return http_request(self.port, method, path, body, headers, timeout)

    def prime_shards(self, db, first_s, last_s, rp=None):
        """Create db and, in one write (one writer: no race), the shards
        that hold the seconds first_s..last_s: one point of measurement
        `_shard` per hour (shard groups last at least an hour and start
        on whole hours). After it, concurrent writes into that range do
        not create shards (docs/influxdb.md, "Concurrent writes into a
        new shard")."""
        self.create_db(db)
        hours = range(first_s // 3600, last_s // 3600 + 1)
        body = "".join("_shard v=1i %d\n" % (h * 3600) for h in hours)
        params = {"db": db, "precision": "s"}
        if rp:
            params["rp"] = rp
        status, _, resp = self.request("POST", "/write?" + urllib.parse.urlencode(params),
                                       body.encode())
        if status != 204:
            raise AssertionError("priming the shards of %s: %d %r" % (db, status, resp))

    def create_db(self, name):
        q = urllib.parse.urlencode({"q": 'CREATE DATABASE "%s"' % name})
        status, _, body = self.request("POST", "/query?" + q)
        doc = json.loads(body.decode("utf-8"))
        if status != 200 or any("error" in r for r in doc.get("results", [])):
            raise AssertionError("CREATE DATABASE %s: %d %r" % (name, status, body))

    def query(self, db, q, epoch=None, auth=None):
        """GET /query?db=..&q=..: the parsed JSON (AssertionError unless 200).
        epoch: "ns", "s"... for numeric times; auth: (user, password)."""
        params = {"q": q}
        if db:
            params["db"] = db
        if epoch:
            params["epoch"] = epoch
        if auth:
            params["u"], params["p"] = auth
        status, _, body = self.request("GET", "/query?" + urllib.parse.urlencode(params))
        if status != 200:
            raise AssertionError("query %r: %d %r" % (q, status, body))
        return json.loads(body.decode("utf-8"))

    def count(self, db, measurement, field):
        """SELECT count(field) FROM measurement: 0 when there is no series."""
        doc = self.query(db, 'SELECT count("%s") FROM "%s"' % (field, measurement))
        res = doc["results"][0]
        if "error" in res:
            raise AssertionError("count query failed: %r" % res)
        series = res.get("series")
        if not series:
            return 0
        return int(series[0]["values"][0][1])

    def databases(self):
        """The names SHOW DATABASES lists."""
        res = self.query(None, "SHOW DATABASES")["results"][0]
        return [v[0] for s in res.get("series", []) for v in s.get("values", [])]

    def count_or_none(self, db, measurement, field):
        """count(field), or None while the database does not exist."""
        if db not in self.databases():
            return None
        return self.count(db, measurement, field)

    def wait_count(self, db, measurement, field, n, timeout=20.0):
        """Poll until count(field) == n; return it. AssertionError with the
        last count otherwise (also when the count goes past n)."""
        seen = {}

        def check():
            seen["n"] = self.count_or_none(db, measurement, field)
            if seen["n"] is not None and seen["n"] > n:
                raise AssertionError("%s.%s: count(%s) is %d, more than the %d sent"
                                     % (db, measurement, field, seen["n"], n))
            return seen["n"] == n

        wait_until(check, timeout, 0.2,
                   what="%s.%s count(%s) == %d" % (db, measurement, field, n),
                   detail=lambda: "last count %r" % (seen.get("n"),))
        return n

    def rows(self, db, q):
        """The rows of a query's first series as dicts (epoch=ns times);
        [] when there is no series."""
        res = self.query(db, q, epoch="ns")["results"][0]
        if "error" in res:
            raise AssertionError("query %r failed: %r" % (q, res))
        out = []
        for series in res.get("series", []):
            cols = series["columns"]
            tags = series.get("tags", {})
            for v in series["values"]:
                row = dict(tags)
                row.update(zip(cols, v))
                out.append(row)
        return out

    def points_written_ok(self):
        """httpd pointsWrittenOK of /debug/vars: points every /write stored
        (a resent batch counts again)."""
        status, _, body = self.request("GET", "/debug/vars")
        if status != 200:
            raise AssertionError("/debug/vars: %d %r" % (status, body[:200]))
        doc = json.loads(body.decode("utf-8"))
        return sum(int(v.get("values", {}).get("pointsWrittenOK", 0))
                   for k, v in doc.items() if k.startswith("httpd"))

    def write(self, db, body, precision=None, rp=None):
        """POST /write straight to influxd: (status, headers, body)."""
        params = {"db": db}
        if precision:
            params["precision"] = precision
        if rp:
            params["rp"] = rp
        return self.request("POST", "/write?" + urllib.parse.urlencode(params), body)

    def stop(self, grace=10.0):
        return stop_process(self.proc, grace)

    def kill9(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def cleanup(self):
        _INFLUXD_PORTS.discard(self.port)
        for p in self.procs:
            stop_process(p, grace=5)
        if VERBOSE and self.log_path:
            _log("influxd log:\n%s" % _read_text(self.log_path))
        self.procs = []


# ---- running a script -----------------------------------------------------

def _missing(require):
    missing = []
    for name in require:
        if name == "relayd":
            path = RELAYD_BIN
        elif name == "relayctl":
            path = RELAYCTL_BIN
        elif name == "influxd":
            path = INFLUXD_BIN
        else:
            path = shutil.which(name)
        if not path or not (os.path.isfile(path) and os.access(path, os.X_OK)):
            missing.append("%s (%s)" % (name, path or "not on PATH"))
    return missing


def main(require=("relayd", "relayctl"), probe=None):
    """Run the calling script's tests. Exit 77 when a required program is
    missing or probe() returns a reason to skip; 0 when all tests pass."""
    missing = _missing(require)
    if missing:
        print("SKIP: required program missing: %s" % ", ".join(missing))
        sys.exit(SKIP_EXIT)
    if probe is not None:
        reason = probe()
        if reason:
            print("SKIP: %s" % reason)
            sys.exit(SKIP_EXIT)
    prog = unittest.main(module="__main__", verbosity=2, exit=False)
    result = prog.result
    if result.testsRun == 0:
        print("FAIL: no test ran")
        sys.exit(1)
    sys.exit(0 if result.wasSuccessful() else 1)
