#!/usr/bin/env python3
"""
The write API beyond v1 /write: InfluxDB 2's /api/v2/write (org, bucket
"db/rp" or "db", v2 precisions, Token auth, errors in v2's JSON form),
and inbound authentication (auth.enabled with users and tokens: 401
without credentials, 403 with wrong ones, never a secret in the log).
v2 writes are delivered into a real influxd (Debian's 1.6.7, which has no
/api/v2/write itself: relayd translates the bucket to db/rp).
"""

import base64
import json
import time
import unittest
import urllib.parse

import relaytest

BASE_S = 1_600_000_000


def v2path(bucket=None, org=None, precision=None, **extra):
    q = []
    if org is not None:
        q.append(("org", org))
    if bucket is not None:
        q.append(("bucket", bucket))
    if precision is not None:
        q.append(("precision", precision))
    q.extend(extra.items())
    return "/api/v2/write?" + urllib.parse.urlencode(q)


def basic(user, password):
    return "Basic " + base64.b64encode(("%s:%s" % (user, password)).encode()).decode()


def v2_error(testcase, resp, status):
    """The {"code","message"} body of a v2 error answer."""
    st, headers, body = resp
    testcase.assertEqual(st, status, body)
    testcase.assertIn("application/json", headers.get("Content-Type", ""))
    doc = json.loads(body.decode("utf-8"))
    testcase.assertEqual(set(doc), {"code", "message"}, doc)
    return doc


class V2Delivery(unittest.TestCase):
    """v2 writes through relayd end in a real influxd, in the bucket's db/rp."""

    def test_v2_writes_arrive_in_db_and_rp(self):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        influx = relaytest.Influxd(self.addCleanup)
        influx.write_config(tmp)
        influx.start()
        influx.create_db("v2db")
        influx.query("v2db", 'CREATE RETENTION POLICY "week" ON "v2db" DURATION 7d REPLICATION 1')
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[{"name": "influx", "url": influx.url,
                                       "retry_min": "100ms", "retry_max": "1s"}])
        r.start()
        r.wait_ready()

        tok = {"Authorization": "Token some-token"}
        now = int(time.time()) - 3600  # inside the 7d retention of "week"
        body = "".join("v2m,host=h%d value=%d %d\n" % (i, i, now + i) for i in range(50))
        st, _, b = r.post(v2path("v2db/week", org="acme", precision="s"), body, tok)
        self.assertEqual(st, 204, b)
        body = "".join("v2m,host=h%d value=%d %d\n" % (i, i + 1000, (BASE_S + i) * 1000)
                       for i in range(30))
        st, _, b = r.post(v2path("v2db", org="acme", precision="ms"), body, tok)
        self.assertEqual(st, 204, b)
        # a v2 write without a timestamp: stamped at acceptance, in ns
        st, _, b = r.post(v2path("v2db"), "v2stamp value=1\n", tok)
        self.assertEqual(st, 204, b)

        r.wait_status("influx", pending_batches=0)
        doc = influx.query("v2db", 'SELECT count(value) FROM "week"."v2m"')
        self.assertEqual(doc["results"][0]["series"][0]["values"][0][1], 50)
        self.assertEqual(influx.count("v2db", "v2m", "value"), 30)  # default rp
        rows = influx.rows("v2db", 'SELECT value FROM "week"."v2m" WHERE host=\'h7\'')
        self.assertEqual([row["value"] for row in rows], [7])
        self.assertEqual(influx.count("v2db", "v2stamp", "value"), 1)


class V2Door(unittest.TestCase):
    """The v2 endpoint's parameters and errors; nothing is delivered (the
    backend is a closed port), the queue is read with relayctl dump."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.r = relaytest.Relayd(cls.addClassCleanup)
        cls.r.write_config(cls.tmp, backends=[("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
                           extra_yaml={"http": {"max_body_size": "4KiB"}})
        cls.r.start()
        cls.r.wait_ready()

    def batches(self, db):
        return [d for d in self.r.dump("b") if d["db"] == db]

    def test_bucket_org_and_token_are_kept_with_the_batch(self):
        st, _, b = self.r.post(v2path("kept/rp1", org="acme", precision="us"), "m v=1 5\n",
                               {"Authorization": "Token abc"})
        self.assertEqual(st, 204, b)
        st, _, b = self.r.post(v2path("kept", orgID="0123456789abcdef"), "m v=2 6\n")
        self.assertEqual(st, 204, b)
        got = self.batches("kept")
        self.assertEqual(len(got), 2, got)
        self.assertEqual((got[0]["rp"], got[0]["org"], got[0]["precision"], got[0]["auth"]),
                         ("rp1", "acme", "u", "token"))
        self.assertEqual(got[0]["body"], "m v=1 5\n")
        self.assertEqual((got[1]["rp"], got[1]["org"], got[1]["precision"], got[1]["auth"]),
                         ("", "0123456789abcdef", "ns", "none"))

    def test_credentials_with_control_bytes_are_refused(self):
        # They travel with the batch into the backend's request headers,
        # where a CR LF would smuggle a header or a whole request in.
        for params, headers in (({"u": "a\r\nX-Evil: 1", "p": "p"}, None),
                                ({"u": "a", "p": "p\r\n"}, None),
                                ({}, {"Authorization": "Basic " + base64.b64encode(b"a\r\nb:c").decode()})):
            st, _, body = self.r.write("ctl_bytes", "m v=1 1\n", headers=headers, **params)
            self.assertEqual(st, 400, (params, body))
            self.assertIn("control characters", json.loads(body)["error"])
        st, _, body = self.r.post(v2path("ctl_bytes"), "m v=1 1\n", {"Authorization": "Token a\tb"})
        self.assertEqual(st, 400, body)
        self.assertEqual(self.batches("ctl_bytes"), [])

    def test_errors_are_in_v2_form(self):
        doc = v2_error(self, self.r.post(v2path(org="acme"), "m v=1\n"), 400)
        self.assertEqual(doc["code"], "invalid")
        self.assertIn("bucket is required", doc["message"])
        doc = v2_error(self, self.r.post(v2path("/rp"), "m v=1\n"), 400)
        self.assertIn("bucket is required", doc["message"])
        # v2 takes ns, us, ms and s only
        for p in ("h", "m", "n", "u", "xs"):
            doc = v2_error(self, self.r.post(v2path("bad", precision=p), "m v=1\n"), 400)
            self.assertIn("invalid precision", doc["message"])
        doc = v2_error(self, self.r.post(v2path("bad"), "m v=1\nm v=\n"), 400)
        self.assertIn("line 2", doc["message"])
        doc = v2_error(self, self.r.get(v2path("bad")), 405)
        self.assertEqual(doc["code"], "method not allowed")
        doc = v2_error(self, self.r.post(v2path("bad"), "m v=1 1\n" * 1000), 413)
        self.assertEqual(doc["code"], "request too large")
        self.assertEqual(self.batches("bad"), [])
        # the v1 endpoint keeps its own form
        st, headers, body = self.r.write("", "m v=1\n")
        self.assertEqual(st, 400)
        self.assertEqual(list(json.loads(body)), ["error"])


USERS = [{"name": "writer", "password": "pw-Secret-1"}, {"name": "other", "password": "pw-Secret-2"}]
TOKENS = [{"name": "app", "token": "tok-Secret-3"}]
SECRETS = ("pw-Secret-1", "pw-Secret-2", "tok-Secret-3", "wrong-Guess-4")


class Auth(unittest.TestCase):
    """auth.enabled: every write needs a listed user or token."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = relaytest.make_tmpdir(cls.addClassCleanup)
        cls.r = relaytest.Relayd(cls.addClassCleanup)
        cls.r.write_config(cls.tmp, backends=[("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
                           extra_yaml={"auth": {"enabled": True, "users": USERS, "tokens": TOKENS}})
        cls.r.start()
        cls.r.wait_ready()

    def batches(self, db):
        return [d for d in self.r.dump("b") if d["db"] == db]

    def test_without_credentials_401(self):
        st, _, body = self.r.write("noauth", "m v=1\n")
        self.assertEqual(st, 401, body)
        self.assertIn("authentication required", json.loads(body)["error"])
        doc = v2_error(self, self.r.post(v2path("noauth"), "m v=1\n"), 401)
        self.assertEqual(doc["code"], "unauthorized")
        self.assertEqual(self.batches("noauth"), [])

    def test_wrong_credentials_403(self):
        cases = [
            ({"u": "writer", "p": "wrong-Guess-4"}, None),
            ({"u": "writer"}, None),
            ({"u": "nobody", "p": "pw-Secret-1"}, None),
            ({"u": "writer", "p": "pw-Secret-2"}, None),  # another user's password
            ({}, {"Authorization": basic("writer", "wrong-Guess-4")}),
            ({}, {"Authorization": "Token wrong-Guess-4"}),
            ({}, {"Authorization": "Token tok-Secret-"}),  # a prefix of the token
            ({}, {"Authorization": "Token writer:wrong-Guess-4"}),
            ({}, {"Authorization": "Bearer tok-Secret-33"}),
        ]
        for params, headers in cases:
            st, _, body = self.r.write("wrong", "m v=1\n", headers=headers, **params)
            self.assertEqual(st, 403, (params, headers, body))
            self.assertEqual(json.loads(body)["error"], "authorization failed")
        doc = v2_error(self, self.r.post(v2path("wrong"), "m v=1\n",
                                         {"Authorization": "Token wrong-Guess-4"}), 403)
        self.assertEqual(doc["code"], "forbidden")
        self.assertEqual(self.batches("wrong"), [])

    def test_right_credentials_204_in_every_form(self):
        forms = [
            ({"u": "writer", "p": "pw-Secret-1"}, None, "writer"),
            ({"u": "other", "p": "pw-Secret-2"}, None, "other"),
            ({}, {"Authorization": basic("writer", "pw-Secret-1")}, "writer"),
            ({}, {"Authorization": "Token tok-Secret-3"}, ""),
            ({}, {"Authorization": "Bearer tok-Secret-3"}, ""),
            ({}, {"Authorization": "Token writer:pw-Secret-1"}, ""),  # InfluxDB 1.8's form
        ]
        for i, (params, headers, user) in enumerate(forms):
            st, _, body = self.r.write("right", "m v=%d %d\n" % (i, i), headers=headers, **params)
            self.assertEqual(st, 204, (params, headers, body))
        st, _, body = self.r.post(v2path("right"), "m v=99 99\n", {"Authorization": "Token tok-Secret-3"})
        self.assertEqual(st, 204, body)
        got = self.batches("right")
        self.assertEqual([b["body"] for b in got],
                         ["m v=%d %d\n" % (i, i) for i in range(len(forms))] + ["m v=99 99\n"])
        # the writer's credentials travel with the batch (names only shown)
        self.assertEqual([b["user"] for b in got[:len(forms)]], [f[2] for f in forms])

    def test_refused_body_is_not_read_into_memory_and_100_continue_is_not_sent(self):
        c = self.r.raw()
        try:
            c.send(("POST /write?db=cont HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n"
                    "Expect: 100-continue\r\n\r\n").encode())
            resp = c.read_response()
            self.assertEqual(resp.status, 401, resp)
            c.send(b"m v=1\n")
        finally:
            c.close()
        self.assertEqual(self.batches("cont"), [])

    def test_ping_and_health_need_no_credentials(self):
        self.assertEqual(self.r.get("/ping")[0], 204)
        self.assertEqual(self.r.get("/health")[0], 200)

    def test_secrets_never_logged(self):
        # A relayd of its own: failures are logged once per 10 s, and the
        # first one here must be the wrong password.
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       extra_yaml={"auth": {"enabled": True, "users": USERS, "tokens": TOKENS}})
        r.start()
        r.wait_ready()
        self.assertEqual(r.write("log", "m v=1\n", u="writer", p="wrong-Guess-4")[0], 403)
        self.assertEqual(r.write("log", "m v=1\n", headers={"Authorization": "Token wrong-Guess-4"})[0], 403)
        self.assertEqual(r.write("log", "m v=1\n", u="writer", p="pw-Secret-1")[0], 204)
        self.assertEqual(r.write("log", "m v=1\n", u="evil\nfake line", p="x")[0], 400)
        r.wait_log(r"refused \(403\): user 'writer' unknown or wrong password")
        r.stop()
        log = r.log()
        for s in SECRETS:
            self.assertNotIn(s, log)
        self.assertNotIn("fake line", log.replace("evil?fake line", ""))
        with open(r.config) as f:
            self.assertIn("pw-Secret-1", f.read())  # the check above can fail


class AuthOff(unittest.TestCase):
    def test_off_by_default_and_credentials_travel(self):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        r.write_config(tmp, backends=[("b", "http://127.0.0.1:%d" % relaytest.closed_port())],
                       extra_yaml={"auth": {"users": USERS}})  # listed, not enabled
        r.start()
        r.wait_ready()
        self.assertEqual(r.write("off", "m v=1 1\n")[0], 204)
        self.assertEqual(r.write("off", "m v=2 2\n", u="anyone", p="x")[0], 204)
        got = r.dump("b")
        self.assertEqual([(b["user"], b["auth"]) for b in got], [("", "none"), ("anyone", "password")])

    def test_enabled_without_anyone_is_refused_at_start(self):
        tmp = relaytest.make_tmpdir(self.addCleanup)
        r = relaytest.Relayd(self.addCleanup)
        path = r.write_config(tmp, backends=[("b", "http://127.0.0.1:1")],
                              extra_yaml={"auth": {"enabled": True}})
        cp = relaytest.check_config(path)
        self.assertNotEqual(cp.returncode, 0)
        self.assertIn("'auth.enabled' is true but neither", cp.stdout + cp.stderr)


if __name__ == "__main__":
    relaytest.main()
