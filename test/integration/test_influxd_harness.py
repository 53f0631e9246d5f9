#!/usr/bin/env python3
"""
Self-check of the harness: a private influxd starts on loopback ports of its
own, takes a database and three points written straight to it, and counts
them back. The delivery tests build on exactly this. Needs influxd only
(exit 77 without it); relayd is not involved.
"""

import os
import socket
import unittest

import relaytest


class InfluxdHarnessTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)
        self.influxd = relaytest.Influxd(self.addCleanup)
        self.influxd.start(self.tmp)

    def test_config_is_private_and_loopback(self):
        with open(self.influxd.config) as f:
            conf = f.read()
        self.assertIn('bind-address = "127.0.0.1:%d"' % self.influxd.port, conf)
        self.assertIn('bind-address = "127.0.0.1:%d"' % self.influxd.rpc_port, conf)
        self.assertNotIn(":8086", conf)
        # Its data lives in the test's temp dir, not in /var/lib/influxdb.
        for sub in ("meta", "data"):
            self.assertTrue(os.path.isdir(os.path.join(self.influxd.dir, sub)),
                            "influxd made no %s dir in %s" % (sub, self.influxd.dir))

    def test_ping(self):
        status, headers, body = self.influxd.request("GET", "/ping")
        self.assertEqual(status, 204)
        self.assertTrue(headers.get("X-Influxdb-Version"), "no X-Influxdb-Version header")
        self.assertEqual(body, b"")

    def test_write_three_points_and_count(self):
        self.influxd.create_db("harness")
        doc = self.influxd.query(None, "SHOW DATABASES")
        names = [v[0] for v in doc["results"][0]["series"][0]["values"]]
        self.assertIn("harness", names)

        self.assertEqual(self.influxd.count("harness", "cpu", "value"), 0)
        body = ("cpu,host=a value=1 1000000000\n"
                "cpu,host=b value=2 1000000000\n"
                "cpu,host=a value=3 2000000000\n")
        status, _, resp = self.influxd.write("harness", body)
        self.assertEqual(status, 204, resp)
        self.assertEqual(self.influxd.count("harness", "cpu", "value"), 3)

        # Second precision: seconds; one more point, distinct timestamp.
        status, _, resp = self.influxd.write("harness", "cpu,host=c value=4 3\n", precision="s")
        self.assertEqual(status, 204, resp)
        self.assertEqual(self.influxd.count("harness", "cpu", "value"), 4)

    def test_unknown_database_is_404(self):
        # What the relay's delivery classification relies on (docs/influxdb.md).
        status, _, body = self.influxd.write("no_such_db", "cpu value=1 1\n")
        self.assertEqual(status, 404, body)
        self.assertIn(b"database not found", body)

    def test_stop_by_pid(self):
        rc = self.influxd.stop()
        self.assertIsNotNone(rc)
        self.assertFalse(relaytest.port_is_listening(self.influxd.port))


class PortHelpersTest(unittest.TestCase):
    def test_closed_port_refuses(self):
        port = relaytest.closed_port()
        with self.assertRaises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=2)

    def test_free_ports_differ(self):
        ports = {relaytest.free_port() for _ in range(20)}
        self.assertEqual(len(ports), 20)


if __name__ == "__main__":
    relaytest.main(require=["influxd"])
