"""
fakeinflux: a scripted stand-in for an InfluxDB backend, for the faults a
real influxd cannot produce on demand (a hang, a reset in the middle of a
response, a 503 with Retry-After, a 401 that later turns into 204, a 413
at an exact size).

A small threaded HTTP/1.1 server on 127.0.0.1 (keep-alive, Content-Length
and chunked request bodies). Each route ("/write", "/ping", "/query") has a
queue of behaviours, used one per request in order, then a default. Every
request is recorded (method, path, query, headers, body, arrival time,
what the fake did with it and when it decided so) before it is answered.
A body sent with Content-Encoding: gzip is recorded decompressed (body)
and as received (wire_body); too_large_over() measures the latter, as
influxd does.

Behaviours:
  "ok"                          204 (the default of /write and /ping)
  "hang"                        read the request, never answer; the
                                connection stays open until the client
                                closes it (or the fake stops)
  "reset_mid_response"          send the status line and part of a header,
                                then RST (SO_LINGER 0)
  status(503, body, headers)    that status with that body and headers
  too_large_over(N)             413 when the body is over N bytes (on the
                                wire), else 204
  gated(event, then)            wait until event is set (or the fake
                                stops), then do `then`
  if_body_contains(s, then, otherwise)
                                `then` when the body contains s
  interim(heads, then, pause)   interim (1xx) answers first, each head a
                                status code or (code, headers), `pause`
                                seconds apart (so that each may arrive in
                                a read of its own), then `then`
  raw(data, after)              these bytes as they are, then "close" the
                                connection, "keep" reading requests on it,
                                or "hold" it open without reading (a peer
                                that switched protocols)

TLS (tls=FakeTLS(...)): the fake serves https with a certificate and key,
optionally requiring a client certificate signed by client_ca (mTLS: a
fault influxd 1.6.7 cannot make, as it never asks for one). handshake
says what it does on a new connection: "ok", "stall" (accept the TCP
connection and never answer the TLS ClientHello) or "reset" (RST at
once); it may be changed while running. Each handshake done is recorded
in tls_sessions: True when the client resumed a session.

Python 3 standard library only.
"""

import gzip
import json
import select
import socket
import socketserver
import ssl
import struct
import threading
import time
import urllib.parse

LOOPBACK = "127.0.0.1"
VERSION = "1.6.7-fakeinflux"
MAX_HEAD = 64 * 1024


def status(code, body="", headers=None):
    """Answer with this status, body (str or bytes) and extra headers."""
    return {"kind": "status", "code": int(code), "body": body, "headers": dict(headers or {})}


def too_large_over(nbytes):
    """413 {"error":"Request Entity Too Large"} when the body is over nbytes
    bytes, else 204 (what influxd's max-body-size does)."""
    return {"kind": "max_body", "max": int(nbytes)}


def gated(event, then="ok"):
    """Hold the answer until event is set, then behave as `then`."""
    return {"kind": "gate", "event": event, "then": then}


def if_body_contains(needle, then, otherwise="ok"):
    """Behave as `then` when the body contains needle (bytes or str), else
    as `otherwise`."""
    if isinstance(needle, str):
        needle = needle.encode("utf-8")
    return {"kind": "if_body", "needle": needle, "then": then, "else": otherwise}


def interim(*heads, then="ok", pause=0.0):
    """Send each interim (1xx) answer of heads, a status code or (code,
    headers), then behave as `then`. The request is recorded with the final
    answer; the interim codes are in Request.interim."""
    hs = [(h, {}) if isinstance(h, int) else (int(h[0]), dict(h[1])) for h in heads]
    return {"kind": "interim", "heads": hs, "then": then, "pause": float(pause)}


def raw(data, after="close"):
    """Send data (bytes or str) as the whole answer, then "close" the
    connection, "keep" reading requests on it, or "hold" it open without
    reading anything more. Recorded as the status code data starts with."""
    if isinstance(data, str):
        data = data.encode("latin-1")
    if after not in ("close", "keep", "hold"):
        raise ValueError("fakeinflux.raw: after must be close, keep or hold, not %r" % (after,))
    return {"kind": "raw", "data": data, "after": after}


def influx_error(code, message, headers=None):
    """status() with InfluxDB's JSON error body."""
    return status(code, json.dumps({"error": message}) + "\n",
                  dict({"Content-Type": "application/json"}, **(headers or {})))


class Request:
    """One request the fake received."""

    def __init__(self, method, target, version, headers, body, t, conn_id):
        self.method = method
        self.target = target
        self.version = version
        parts = urllib.parse.urlsplit(target)
        self.path = parts.path
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(parts.query,
                                                                keep_blank_values=True).items()}
        self.raw_query = parts.query
        self.headers = headers  # dict, lower-case names
        self.wire_body = body   # as received
        self.body = body        # decompressed when Content-Encoding: gzip
        self.body_error = None
        if headers.get("content-encoding", "").lower() == "gzip":
            try:
                self.body = gzip.decompress(body)
            except (OSError, EOFError) as e:
                self.body_error = "bad gzip body: %s" % e
        self.t = t              # time.monotonic() when the whole request was read
        self.conn_id = conn_id  # which connection (1, 2, ...)
        self.answer = None      # "204", "503", "hang", "reset", ...
        self.answered_t = None  # time.monotonic() when the answer was decided (before it is sent)
        self.interim = []       # interim (1xx) codes sent before the answer

    def text(self):
        return self.body.decode("utf-8", "replace")

    def lines(self):
        """The body's lines (line protocol), without newlines."""
        return self.text().splitlines()

    @property
    def ok(self):
        return self.answer is not None and self.answer.startswith("2")

    def __repr__(self):
        gz = ", gzip %d bytes" % len(self.wire_body) if self.wire_body is not self.body else ""
        return "<%s %s -> %s, %d bytes%s, conn %d>" % (self.method, self.target, self.answer,
                                                     len(self.body), gz, self.conn_id)


class _Closed(Exception):
    pass


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


class FakeTLS:
    """The fake's TLS: PEM file names; client_ca None: no client
    certificate asked."""

    def __init__(self, cert, key, client_ca=None, handshake="ok"):
        self.cert = cert
        self.key = key
        self.client_ca = client_ca
        self.handshake = handshake

    def context(self):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(self.cert, self.key)
        if self.client_ca:
            ctx.load_verify_locations(self.client_ca)
            ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


class FakeInflux:
    """The fake. guard: e.g. a TestCase's addCleanup, to stop it for sure."""

    def __init__(self, port=None, guard=None, tls=None):
        self.port = port
        self.tls = tls
        self.tls_sessions = []  # per handshake done: the session was resumed
        self.tls_failures = []  # per handshake failed: why
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._stop = threading.Event()
        self._queues = {}
        self._defaults = {"/write": "ok", "/ping": "ok", "/query": "query_ok"}
        self._requests = []
        self._conns = set()
        self._nconn = 0
        self._server = None
        self._thread = None
        if guard is not None:
            guard(self.stop)

    @property
    def url(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", LOOPBACK, self.port)

    # scripting

    def script(self, *behaviours, route="/write"):
        """Queue behaviours for the next requests to route."""
        with self._lock:
            self._queues.setdefault(route, []).extend(behaviours)

    def set_default(self, behaviour, route="/write"):
        """What route answers once its queue is empty."""
        with self._lock:
            self._defaults[route] = behaviour

    def _next_behaviour(self, route):
        with self._lock:
            q = self._queues.get(route)
            if q:
                return q.pop(0)
            return self._defaults.get(route, status(404, '{"error":"not found"}\n'))

    # what happened

    def requests(self, method=None, path=None):
        with self._lock:
            return [r for r in self._requests
                    if (method is None or r.method == method) and (path is None or r.path == path)]

    def forget(self):
        """Drop the requests recorded so far (what follows is then the
        test's)."""
        with self._lock:
            self._requests = []

    def writes(self):
        """POST /write requests, in arrival order."""
        return self.requests("POST", "/write")

    def delivered(self):
        """POST /write requests the fake answered with a 2xx."""
        return [r for r in self.writes() if r.ok]

    def wait_for(self, pred, timeout, what="requests"):
        """Wait until pred(list of all requests) is true (each request is
        recorded with its answer decided). Returns the list."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                reqs = list(self._requests)
                if pred(reqs):
                    return reqs
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError("fakeinflux: %s not seen within %.1f s; got:\n%s"
                                         % (what, timeout, self.describe(reqs)))
                self._changed.wait(min(remaining, 0.2))

    def wait_writes(self, n, timeout):
        """Wait until n POST /write arrived and were answered (or given up
        on: hang, reset). Returns every POST /write."""
        def pred(reqs):
            return sum(1 for r in reqs if r.method == "POST" and r.path == "/write"
                       and r.answer is not None) >= n
        self.wait_for(pred, timeout, "%d answered POST /write" % n)
        return self.writes()

    def wait_delivered(self, n, timeout):
        """Wait until n POST /write were answered with a 2xx. Returns every
        POST /write."""
        def pred(reqs):
            return sum(1 for r in reqs if r.method == "POST" and r.path == "/write"
                       and r.ok) >= n
        self.wait_for(pred, timeout, "%d POST /write answered 2xx" % n)
        return self.writes()

    def describe(self, reqs=None):
        if reqs is None:
            reqs = self.requests()
        if not reqs:
            return "  (no request)"
        t0 = reqs[0].t
        return "\n".join("  +%.3fs %r" % (r.t - t0, r) for r in reqs)

    # lifecycle

    def start(self):
        """Bind 127.0.0.1:port (a free one when port is None) and serve."""
        if self.port is None:
            s = socket.socket()
            s.bind((LOOPBACK, 0))
            self.port = s.getsockname()[1]
            s.close()
        fake = self
        self._ssl_ctx = self.tls.context() if self.tls else None

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                fake._serve_connection(self.request)

        self._server = _Server((LOOPBACK, self.port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self):
        """Stop listening, release hanging answers, close every connection."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        self.drop_connections()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None

    def drop_connections(self):
        """Close every open connection (the client sees its keep-alive
        connection end), and go on listening."""
        with self._lock:
            conns = list(self._conns)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # the connection loop

    def _recv(self, sock, buf, need):
        """Read into buf until need(buf) is true; _Closed at EOF or stop."""
        while not need(buf):
            if self._stop.is_set():
                raise _Closed()
            pending = getattr(sock, "pending", None)
            if not (pending and pending()):
                r, _, _ = select.select([sock], [], [], 0.1)
                if not r:
                    continue
            try:
                chunk = sock.recv(65536)
            except ssl.SSLWantReadError:
                continue
            except OSError:
                raise _Closed()
            if not chunk:
                raise _Closed()
            buf += chunk
        return buf

    def _read_request(self, sock, buf, conn_id):
        buf = self._recv(sock, buf, lambda b: b"\r\n\r\n" in b or len(b) > MAX_HEAD)
        if b"\r\n\r\n" not in buf:
            raise _Closed()
        head, rest = buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = (lines[0].split(" ", 2) + ["", ""])[:3]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                rest = self._recv(sock, rest, lambda b: b"\r\n" in b)
                size_line, rest = rest.split(b"\r\n", 1)
                size = int(size_line.split(b";")[0], 16)
                rest = self._recv(sock, rest, lambda b: len(b) >= size + 2)
                body += rest[:size]
                rest = rest[size + 2:]
                if size == 0:
                    break
        else:
            n = int(headers.get("content-length", "0") or 0)
            rest = self._recv(sock, rest, lambda b: len(b) >= n)
            body, rest = rest[:n], rest[n:]
        req = Request(method, target, version, headers, body, time.monotonic(), conn_id)
        return req, rest

    def _record(self, req, answer):
        with self._changed:
            req.answer = answer
            req.answered_t = time.monotonic()
            self._changed.notify_all()

    def _serve_connection(self, sock):
        with self._lock:
            self._nconn += 1
            conn_id = self._nconn
            self._conns.add(sock)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        buf = b""
        if self.tls is not None:
            raw = sock
            sock = self._tls_accept(raw)
            if sock is None:
                with self._lock:
                    self._conns.discard(raw)
                try:
                    raw.close()
                except OSError:
                    pass
                return
            with self._lock:
                self._conns.discard(raw)
                self._conns.add(sock)
        try:
            while not self._stop.is_set():
                req, buf = self._read_request(sock, buf, conn_id)
                with self._changed:
                    self._requests.append(req)
                behaviour = self._next_behaviour(req.path)
                keep = self._act(sock, req, behaviour)
                if not keep or req.headers.get("connection", "").lower() == "close":
                    break
        except _Closed:
            pass
        finally:
            with self._lock:
                self._conns.discard(sock)
            try:
                sock.close()
            except OSError:
                pass

    def _tls_accept(self, raw):
        """The handshake on raw, as self.tls.handshake says: the TLS
        socket, or None when there is none (stalled until stop, reset,
        or failed)."""
        mode = self.tls.handshake
        if mode == "stall":
            while not self._stop.wait(0.1):
                pass
            return None
        if mode == "reset":
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            return None
        raw.settimeout(10)
        sock = self._ssl_ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
        try:
            sock.do_handshake()
        except (ssl.SSLError, OSError) as e:
            with self._changed:
                self.tls_failures.append(str(e))
                self._changed.notify_all()
            # The alert is out; closing at once, with the client's request
            # unread, would send a reset that may overtake it. A real
            # server's timing varies: the test wants the alert read.
            self._stop.wait(0.3)
            try:
                sock.close()
            except OSError:
                pass
            return None
        sock.settimeout(None)
        sock.setblocking(True)
        with self._changed:
            self.tls_sessions.append(bool(sock.session_reused))
            self._changed.notify_all()
        return sock

    def _send(self, sock, code, body=b"", headers=None):
        reasons = {100: "Continue", 101: "Switching Protocols", 102: "Processing",
                   103: "Early Hints", 200: "OK", 204: "No Content", 400: "Bad Request", 401: "Unauthorized",
                   403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
                   413: "Request Entity Too Large", 429: "Too Many Requests",
                   500: "Internal Server Error", 502: "Bad Gateway",
                   503: "Service Unavailable", 504: "Gateway Timeout"}
        if isinstance(body, str):
            body = body.encode("utf-8")
        h = {"Content-Type": "application/json", "X-Influxdb-Version": VERSION,
             "X-Influxdb-Build": "OSS", "Request-Id": "fake-%d" % int(time.time() * 1e6)}
        h.update(headers or {})
        head = "HTTP/1.1 %d %s\r\n" % (code, reasons.get(code, "Status"))
        for k, v in h.items():
            head += "%s: %s\r\n" % (k, v)
        if code != 204 and code != 304 and not 100 <= code < 200:
            head += "Content-Length: %d\r\n" % len(body)
        else:
            body = b""
        head += "\r\n"
        try:
            sock.sendall(head.encode("latin-1") + body)
        except OSError:
            raise _Closed()

    def _act(self, sock, req, b):
        """Answer req as behaviour b says; False to close the connection."""
        if req.body_error:
            self._record(req, "400")
            self._send(sock, 400, json.dumps({"error": req.body_error}) + "\n")
            return True
        while isinstance(b, dict) and b.get("kind") in ("gate", "if_body"):
            if b["kind"] == "if_body":
                b = b["then"] if b["needle"] in req.body else b["else"]
                continue
            while not b["event"].wait(0.1):
                if self._stop.is_set():
                    self._record(req, "dropped")
                    return False
            b = b["then"]
        if isinstance(b, dict) and b.get("kind") == "interim":
            for code, headers in b["heads"]:
                head = "HTTP/1.1 %d %s\r\n" % (code, {100: "Continue", 102: "Processing",
                                                     103: "Early Hints"}.get(code, "Interim"))
                head += "".join("%s: %s\r\n" % kv for kv in headers.items()) + "\r\n"
                req.interim.append(code)
                try:
                    sock.sendall(head.encode("latin-1"))
                except OSError:
                    raise _Closed()
                if b["pause"]:
                    time.sleep(b["pause"])
            b = b["then"]
        if isinstance(b, dict) and b.get("kind") == "raw":
            code = b["data"][9:12].decode("latin-1", "replace") if b["data"].startswith(b"HTTP/") else "raw"
            self._record(req, code)
            try:
                sock.sendall(b["data"])
            except OSError:
                raise _Closed()
            if b["after"] == "hold":
                while not self._stop.wait(0.1):
                    pass
            return b["after"] == "keep"
        if b == "ok":
            self._record(req, "204")
            self._send(sock, 204)
            return True
        if b == "query_ok":
            self._record(req, "200")
            self._send(sock, 200, '{"results":[{"statement_id":0}]}\n')
            return True
        if b == "hang":
            self._record(req, "hang")
            # Never answer; wait for the client to give up (EOF) or the stop.
            try:
                self._recv(sock, b"", lambda buf: False)
            except _Closed:
                pass
            return False
        if b in ("reset", "reset_mid_response"):
            self._record(req, "reset")
            try:
                sock.sendall(b"HTTP/1.1 204 No Content\r\nX-Influxdb-Vers")
                time.sleep(0.2)  # let the client read the partial head first
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            except OSError:
                pass
            return False
        if isinstance(b, dict) and b.get("kind") == "status":
            self._record(req, str(b["code"]))
            self._send(sock, b["code"], b["body"], b["headers"])
            return True
        if isinstance(b, dict) and b.get("kind") == "max_body":
            if len(req.wire_body) > b["max"]:
                self._record(req, "413")
                self._send(sock, 413, '{"error":"Request Entity Too Large"}\n')
            else:
                self._record(req, "204")
                self._send(sock, 204)
            return True
        raise ValueError("fakeinflux: unknown behaviour %r" % (b,))
