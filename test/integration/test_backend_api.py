#!/usr/bin/env python3
"""
Backends of both APIs. Debian's influxd (1.6.7) has no /api/v2/write, so
the v2 side is a scripted fake that records every request: what relayd
sends to a `type: v2` backend (bucket "db/rp", org, Token, v2 precisions,
minutes and hours rescaled to seconds) and to a v1 backend for a v2 write
(db/rp from the bucket, 1.8's "Token user:password" as Basic), and that a
backend's own credentials replace the writer's. The v1-to-real-influxd
path is covered by test_write_api and test_delivery.
"""

import base64
import unittest
import urllib.parse

import fakeinflux
import relaytest

RETRY = {"retry_min": "100ms", "retry_max": "1s"}


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


class BackendApi(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def fake(self):
        f = fakeinflux.FakeInflux(guard=self.addCleanup)
        f.set_default("ok", route="/api/v2/write")
        f.start()
        return f

    def relayd(self, backends):
        r = relaytest.Relayd(self.addCleanup)
        bl = []
        for b in backends:
            b = dict(b)
            b.update(RETRY)
            b.setdefault("parallel", 1)
            bl.append(b)
        r.write_config(self.tmp, backends=bl)
        r.start()
        r.wait_ready()
        return r

    def posts(self, f, path, n):
        f.wait_for(lambda reqs: sum(1 for q in reqs if q.method == "POST" and q.path == path
                                    and q.ok) >= n, 20, "%d POST %s" % (n, path))
        return [q for q in f.requests("POST", path) if q.ok]

    def test_v1_write_to_a_v2_backend(self):
        f = self.fake()
        r = self.relayd([{"name": "v2", "url": f.url, "type": "v2", "org": "acme", "token": "T0ken"}])
        st, _, b = r.write("telemetry", "cpu v=1 2\ncpu v=2 3\n", rp="week", precision="h",
                           u="writer", p="secret")
        self.assertEqual(st, 204, b)
        st, _, b = r.write("telemetry", "cpu v=3 4\n", precision="u")
        self.assertEqual(st, 204, b)
        got = self.posts(f, "/api/v2/write", 2)
        q0 = got[0].query
        self.assertEqual(q0, {"bucket": "telemetry/week", "org": "acme", "precision": "s"})
        self.assertEqual(got[0].headers.get("authorization"), "Token T0ken")
        self.assertEqual(got[0].text(), "cpu v=1 7200\ncpu v=2 10800\n")  # hours as seconds
        q1 = got[1].query
        self.assertEqual(q1, {"bucket": "telemetry", "org": "acme", "precision": "us"})
        self.assertEqual(got[1].text(), "cpu v=3 4\n")
        self.assertEqual(f.requests("POST", "/write"), [])

    def test_writer_credentials_and_org_reach_a_v2_backend(self):
        f = self.fake()
        r = self.relayd([{"name": "v2", "url": f.url, "type": "v2"}])
        st, _, b = r.post("/api/v2/write?org=theirs&bucket=db1%2Frp1&precision=ms", "m v=1 5\n",
                          {"Authorization": "Token writer-token"})
        self.assertEqual(st, 204, b)
        st, _, b = r.write("db2", "m v=2 6\n", u="u1", p="p1")
        self.assertEqual(st, 204, b)
        got = self.posts(f, "/api/v2/write", 2)
        self.assertEqual(got[0].query,
                         {"bucket": "db1/rp1", "org": "theirs", "precision": "ms"})
        self.assertEqual(got[0].headers.get("authorization"), "Token writer-token")
        # a v1 writer's user and password, in the form InfluxDB 1.8 takes
        self.assertEqual(got[1].query, {"bucket": "db2", "precision": "ns"})
        self.assertEqual(got[1].headers.get("authorization"), "Token u1:p1")

    def test_v2_write_to_a_v1_backend(self):
        f = self.fake()
        r = self.relayd([{"name": "v1", "url": f.url}])
        st, _, b = r.post("/api/v2/write?org=o&bucket=db%2Fautogen&precision=s", "m v=1 5\n",
                          {"Authorization": "Token name:pass"})
        self.assertEqual(st, 204, b)
        st, _, b = r.post("/api/v2/write?bucket=db&precision=ns", "m v=2 6\n",
                          {"Authorization": "Token opaque"})
        self.assertEqual(st, 204, b)
        got = self.posts(f, "/write", 2)
        self.assertEqual(got[0].query,
                         {"db": "db", "rp": "autogen", "precision": "s"})
        self.assertEqual(got[0].headers.get("authorization"), basic("name", "pass"))
        self.assertEqual(got[1].query, {"db": "db", "precision": "ns"})
        self.assertEqual(got[1].headers.get("authorization"), "Token opaque")

    def test_backend_credentials_replace_the_writers(self):
        f1, f2 = self.fake(), self.fake()
        r = self.relayd([{"name": "a", "url": f1.url, "username": "svc", "password": "svc-pw"},
                         {"name": "b", "url": f2.url, "type": "v2", "token": "user:pw"}])
        self.assertEqual(r.write("d", "m v=1 1\n", u="writer", p="writer-pw")[0], 204)
        self.assertEqual(r.write("d", "m v=2 2\n")[0], 204)
        def both(path):
            return lambda reqs: sum(len(q.lines()) for q in reqs
                                    if q.method == "POST" and q.path == path and q.ok) >= 2
        f1.wait_for(both("/write"), 20, "2 lines")
        f2.wait_for(both("/api/v2/write"), 20, "2 lines")
        a = [q for q in f1.requests("POST", "/write") if q.ok]
        b = [q for q in f2.requests("POST", "/api/v2/write") if q.ok]
        # coalesced or not, every request carries the backend's credentials
        for q in a:
            self.assertEqual(q.headers.get("authorization"), basic("svc", "svc-pw"))
            self.assertNotIn("writer", q.target)
        for q in b:
            self.assertEqual(q.headers.get("authorization"), "Token user:pw")
            self.assertNotIn("org", q.query)  # 1.8: no org
        self.assertEqual("".join(q.text() for q in a), "m v=1 1\nm v=2 2\n")
        self.assertEqual("".join(q.text() for q in b), "m v=1 1\nm v=2 2\n")

    def test_v2_bucket_not_found_follows_the_policy(self):
        f = self.fake()
        f.script(fakeinflux.status(404, '{"code":"not found","message":"bucket \\"nope\\" not found"}'),
                 route="/api/v2/write")
        r = self.relayd([{"name": "v2", "url": f.url, "type": "v2", "on_database_not_found": "dead_letter"}])
        self.assertEqual(r.write("nope", "m v=1 1\n")[0], 204)
        self.assertEqual(r.write("yes", "m v=2 2\n")[0], 204)
        r.wait_status("v2", pending_batches=0, dead_batches=1)
        got = self.posts(f, "/api/v2/write", 1)
        self.assertIn("m v=2 2\n", "".join(q.text() for q in got))


if __name__ == "__main__":
    relaytest.main()
