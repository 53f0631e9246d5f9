#!/usr/bin/env python3
"""
/metrics and /health/backends/NAME through the program (issue 14): what
the front door counts, as a scraper reads it from a real relayd. GET
/metrics answers Prometheus's text format with every family of the door,
the group commit, the UDP listeners and the queries, each once; a refused
write moves relayd_write_requests_refused_total by its reason, an accepted
one the points and bytes accepted, a query relayd_query_requests_total and
the backend's relayd_query_proxied_total, a datagram the listener's
relayd_udp_datagrams_total. Neither endpoint needs credentials when
auth.enabled is on. The backend is fakeinflux (no influxd needed).

The door provides the handlers' plumbing (relay/door/http_server.h:
http_server_set_metrics, http_server_metrics, http_server_set_backend_health);
cmd/relayd/monitor.c wires them.
"""

import re
import socket
import unittest
import urllib.parse

import fakeinflux
import relaytest

LOOPBACK = relaytest.LOOPBACK
PROM_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# Every family the door writes (docs/monitoring.md: "The front door and the
# group commit", "UDP listeners", "Queries").
DOOR_FAMILIES = {
    "relayd_http_requests_total": "counter",
    "relayd_http_connections_open": "gauge",
    "relayd_http_connections_accepted_total": "counter",
    "relayd_http_connections_refused_total": "counter",
    "relayd_http_buffered_bytes": "gauge",
    "relayd_http_buffered_limit_bytes": "gauge",
    "relayd_write_requests_refused_total": "counter",
    "relayd_points_refused_total": "counter",
    "relayd_points_accepted_total": "counter",
    "relayd_bytes_accepted_total": "counter",
    "relayd_ingest_commits_total": "counter",
    "relayd_ingest_commit_errors_total": "counter",
    "relayd_ingest_batches_committed_total": "counter",
    "relayd_ingest_batches_refused_total": "counter",
    "relayd_backend_refused_batches_total": "counter",
    "relayd_ingest_commit_duration_seconds": "histogram",
    "relayd_ingest_commit_group_size": "histogram",
    "relayd_udp_datagrams_total": "counter",
    "relayd_udp_datagrams_bad_total": "counter",
    "relayd_udp_datagrams_dropped_total": "counter",
    "relayd_udp_points_accepted_total": "counter",
    "relayd_udp_points_dropped_total": "counter",
    "relayd_udp_received_bytes_total": "counter",
    "relayd_udp_receive_errors_total": "counter",
    "relayd_udp_receive_buffer_bytes": "gauge",
    "relayd_query_requests_total": "counter",
    "relayd_query_proxied_total": "counter",
    "relayd_query_behind_total": "counter",
    "relayd_query_statements_queued_total": "counter",
    "relayd_query_errors_total": "counter",
    "relayd_query_response_bytes_total": "counter",
    "relayd_query_duration_seconds": "histogram",
}
REASONS = ("bad_request", "unauthorized", "too_large", "timeout", "queue_full", "overloaded", "storage_error",
           "shutting_down")

SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)",?')


class Scrape:
    """One /metrics answer, parsed: families (name -> type, each seen
    once) and samples ((name, frozenset of label pairs) -> value)."""

    def __init__(self, text):
        self.text = text
        self.types = {}
        self.samples = {}
        for line in text.splitlines():
            if line.startswith("# TYPE "):
                _, _, name, typ = line.split(" ", 3)
                if name in self.types:
                    raise AssertionError("family %s written twice" % name)
                self.types[name] = typ
                continue
            if not line or line.startswith("#"):
                continue
            m = SAMPLE.match(line)
            if not m:
                raise AssertionError("not a sample line: %r" % line)
            labels = frozenset(LABEL.findall(m.group(2) or ""))
            self.samples[(m.group(1), labels)] = float(m.group(3))

    def value(self, name, **labels):
        """The sample's value; 0 when absent (a pair not yet seen)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)


def datagram_listener(port):
    return "%s:%d" % (LOOPBACK, port)


class MetricsDoorTest(unittest.TestCase):

    def setUp(self):
        self.fake = fakeinflux.FakeInflux(guard=self.addCleanup).start()
        self.udp_port = relaytest.free_udp_port()
        tmp = relaytest.make_tmpdir(self.addCleanup)
        self.r = relaytest.Relayd(self.addCleanup)
        self.r.write_config(tmp, backends=[("fake", self.fake.url)], extra_yaml={
            "listen": {"udp": [{"address": datagram_listener(self.udp_port), "db": "tel",
                                "flush_interval": "10ms"}]},
            "auth": {"enabled": True, "users": [{"name": "w", "password": "pw"}]},
        })
        self.r.start()
        self.r.wait_ready()

    def scrape(self):
        status, headers, body = self.r.get("/metrics")
        self.assertEqual(status, 200, "GET /metrics: %d %r (cmd/relayd must set the door's /metrics handler)"
                         % (status, body[:200]))
        self.assertEqual(headers.get("Content-Type"), PROM_TYPE)
        return Scrape(body.decode("utf-8"))

    def write(self, body, **params):
        q = {"db": "d", "u": "w", "p": "pw"}
        q.update(params)
        return self.r.post("/write?" + urllib.parse.urlencode(q), body)

    def test_families_without_credentials(self):
        s = self.scrape()
        for name, typ in DOOR_FAMILIES.items():
            self.assertEqual(s.types.get(name), typ, "family %s" % name)
        for reason in REASONS:
            self.assertIn(("relayd_write_requests_refused_total", frozenset({("reason", reason)})), s.samples)
            self.assertIn(("relayd_points_refused_total", frozenset({("reason", reason)})), s.samples)
        for source in ("http", "udp"):
            self.assertIn(("relayd_points_accepted_total", frozenset({("source", source)})), s.samples)
        self.assertIn(("relayd_query_proxied_total", frozenset({("backend", "fake")})), s.samples)
        self.assertIn(("relayd_udp_datagrams_total", frozenset({("listener", datagram_listener(self.udp_port))})),
                      s.samples)
        # HEAD: the head only
        status, headers, body = self.r.request("HEAD", "/metrics")
        self.assertEqual((status, body), (200, b""))

    def test_refusals_and_acceptance_move(self):
        before = self.scrape()
        status, _, body = self.write("cpu v=1 1\ncpu \n")
        self.assertEqual(status, 400, body)
        status, _, body = self.r.post("/write?db=d", "cpu v=1 1\n")  # no credentials
        self.assertEqual(status, 401, body)
        good = "cpu v=1 1\ncpu v=2 2\ncpu v=3 3\n"
        status, _, body = self.write(good)
        self.assertEqual(status, 204, body)
        after = self.scrape()

        def moved(name, **labels):
            return after.value(name, **labels) - before.value(name, **labels)
        self.assertEqual(moved("relayd_write_requests_refused_total", reason="bad_request"), 1)
        self.assertEqual(moved("relayd_write_requests_refused_total", reason="unauthorized"), 1)
        self.assertEqual(moved("relayd_write_requests_refused_total", reason="queue_full"), 0)
        self.assertEqual(moved("relayd_http_requests_total", endpoint="write", code="400"), 1)
        self.assertEqual(moved("relayd_http_requests_total", endpoint="write", code="401"), 1)
        self.assertEqual(moved("relayd_http_requests_total", endpoint="write", code="204"), 1)
        self.assertEqual(moved("relayd_points_accepted_total", source="http"), 3)
        self.assertEqual(moved("relayd_bytes_accepted_total", source="http"), len(good))
        self.assertGreaterEqual(moved("relayd_ingest_commits_total"), 1)
        self.assertGreaterEqual(moved("relayd_ingest_commit_duration_seconds_count"), 1)
        self.assertGreaterEqual(moved("relayd_ingest_commit_group_size_count"), 1)
        # the scrape before this one was answered, and counted
        self.assertGreaterEqual(after.value("relayd_http_requests_total", endpoint="metrics", code="200"), 1)

    def test_query_moves(self):
        before = self.scrape()
        status, _, body = self.r.get("/query?" + urllib.parse.urlencode({"q": "SHOW DATABASES", "u": "w",
                                                                         "p": "pw"}))
        self.assertEqual(status, 200, body)
        after = self.scrape()
        self.assertEqual(after.value("relayd_query_requests_total") - before.value("relayd_query_requests_total"), 1)
        self.assertEqual(after.value("relayd_query_proxied_total", backend="fake")
                         - before.value("relayd_query_proxied_total", backend="fake"), 1)
        self.assertEqual(after.value("relayd_query_duration_seconds_count")
                         - before.value("relayd_query_duration_seconds_count"), 1)
        self.assertGreater(after.value("relayd_query_response_bytes_total"),
                           before.value("relayd_query_response_bytes_total"))
        self.assertEqual(after.value("relayd_http_requests_total", endpoint="query", code="200")
                         - before.value("relayd_http_requests_total", endpoint="query", code="200"), 1)

    def test_udp_moves(self):
        listener = datagram_listener(self.udp_port)
        before = self.scrape()
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"cpu v=1 1\ncpu v=2 2\n", (LOOPBACK, self.udp_port))
        finally:
            s.close()

        def committed():
            a = self.scrape()
            return a if a.value("relayd_udp_points_accepted_total", listener=listener) \
                - before.value("relayd_udp_points_accepted_total", listener=listener) == 2 else None
        after = relaytest.wait_until(committed, 10, 0.05, what="the datagram's 2 points committed")
        self.assertEqual(after.value("relayd_udp_datagrams_total", listener=listener)
                         - before.value("relayd_udp_datagrams_total", listener=listener), 1)
        self.assertEqual(after.value("relayd_points_accepted_total", source="udp")
                         - before.value("relayd_points_accepted_total", source="udp"), 2)
        self.assertGreater(after.value("relayd_bytes_accepted_total", source="udp"),
                           before.value("relayd_bytes_accepted_total", source="udp"))

    def test_backend_health_without_credentials(self):
        def caught_up():
            status, headers, body = self.r.get("/health/backends/fake")
            return (status, headers, body) if status == 200 else None
        status, headers, body = relaytest.wait_until(caught_up, 10, 0.1, what="/health/backends/fake 200")
        self.assertTrue(headers.get("Content-Type", "").startswith("text/plain"), headers)
        self.assertTrue(body.endswith(b"\n") and body.count(b"\n") == 1, body)
        status, _, body = self.r.get("/health/backends/fake?max_lag=2s")
        self.assertEqual(status, 200, body)
        status, _, body = self.r.get("/health/backends/nope")
        self.assertEqual(status, 404, body)
        status, _, body = self.r.get("/health/backends/fake?max_lag=soon")
        self.assertEqual(status, 400, body)
        self.assertIn(b"max_lag", body)
        status, _, body = self.r.request("HEAD", "/health/backends/fake")
        self.assertEqual((status, body), (200, b""))


if __name__ == "__main__":
    relaytest.main(require=("relayd",))
