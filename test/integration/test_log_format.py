#!/usr/bin/env python3
"""
log_format (issue 14): with `log_format: json` every line relayd writes to
its log file, or to stderr, is one JSON object with time, level, pid and
msg; a message holding a client's quote and backslash stays one valid
object. A reload (SIGHUP) that sets log_format back to text takes effect
from the next line on, and one that sets json again too.
"""

import json
import os
import re
import signal
import unittest

import relaytest

TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z (debug|info|notice|warn|error) ")
LEVELS = ("debug", "info", "notice", "warn", "error")
EVIL_USER = 'q"u\\o{te}'


def read_lines(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    text = data.decode("utf-8")  # the JSON lines are ASCII, the text ones UTF-8
    if text and not text.endswith("\n"):
        text = text[:text.rfind("\n") + 1]  # a line being written
    return text.splitlines()


class LogFormatTest(unittest.TestCase):
    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup)

    def relayd(self, log_format, log_output=None):
        r = relaytest.Relayd(self.addCleanup)
        self.backends = [{"name": "down", "url": "http://127.0.0.1:%d" % relaytest.closed_port(),
                          "retry_min": "100ms", "retry_max": "1s"}]
        self.extra = {"auth": {"enabled": True, "users": [{"name": "w", "password": "pw"}]}}
        if log_output:
            self.extra["log_output"] = log_output
        self.configure(r, log_format)
        r.start()
        r.wait_ready()
        return r

    def configure(self, r, log_format):
        extra = dict(self.extra, log_format=log_format)
        r.write_config(self.tmp, backends=self.backends, extra_yaml=extra, log_level="debug")

    def check_json_line(self, line, pid):
        try:
            o = json.loads(line)
        except ValueError as e:
            raise AssertionError("log line is not JSON (%s): %r" % (e, line))
        self.assertIsInstance(o, dict, line)
        self.assertEqual(list(o), ["time", "level", "pid", "msg"], line)
        self.assertRegex(o["time"], TIME)
        self.assertIn(o["level"], LEVELS)
        self.assertEqual(o["pid"], pid)
        self.assertIsInstance(o["msg"], str)
        self.assertTrue(line.isascii(), line)
        return o

    def wait_lines(self, path, pred, what):
        return relaytest.wait_until(lambda: [l for l in read_lines(path) if pred(l)], 15, 0.1, what=what,
                                    detail=lambda: "log:\n" + "\n".join(read_lines(path)[-30:]))

    def refuse_a_write(self, r):
        """A write with a user name holding a quote and a backslash: relayd
        logs the refusal with the name."""
        status, _, _ = r.write("db", "m v=1\n", u=EVIL_USER, p="x")
        self.assertEqual(status, 403)

    def test_json_in_a_file_then_text_then_json_after_reloads(self):
        path = os.path.join(self.tmp, "relayd-out.log")
        r = self.relayd("json", log_output=path)
        pid = r.proc.pid
        self.refuse_a_write(r)
        status, _, _ = r.write("db", "m v=1\n", u="w", p="pw")  # queued: the backend is found down
        self.assertEqual(status, 204)
        self.wait_lines(path, lambda l: "unknown or wrong password" in l, "the refused write in the log")
        self.wait_lines(path, lambda l: "is down" in l, "the backend down in the log")
        lines = read_lines(path)
        self.assertGreaterEqual(len(lines), 4)
        msgs = [self.check_json_line(l, pid) for l in lines]
        refused = [m for m in msgs if "unknown or wrong password" in m["msg"]]
        self.assertEqual(len(refused), 1, msgs)
        self.assertIn("user '%s' unknown" % EVIL_USER, refused[0]["msg"])
        self.assertEqual(refused[0]["level"], "warn")
        self.assertIn("warn", [m["level"] for m in msgs if "is down" in m["msg"]])

        # back to text: from the reload's own line on
        self.configure(r, "text")
        r.proc.send_signal(signal.SIGHUP)
        self.wait_lines(path, lambda l: TEXT.match(l) and "configuration reloaded" in l,
                        "the reload, logged as text")
        self.refuse_a_write(r)  # rate-limited to one line per 10 s: counted
        n_before = len(lines)
        lines = read_lines(path)
        kinds = "".join("j" if l.startswith("{") else "t" for l in lines)
        self.assertRegex(kinds, r"^j+t+$", lines)
        for l in lines:
            if l.startswith("{"):
                self.check_json_line(l, pid)
            else:
                self.assertRegex(l, TEXT)
        self.assertGreaterEqual(kinds.index("t"), n_before)

        # and json again
        self.configure(r, "json")
        r.proc.send_signal(signal.SIGHUP)
        self.wait_lines(path, lambda l: l.startswith("{") and "configuration reloaded" in json.loads(l)["msg"],
                        "the second reload, logged as JSON")
        lines = read_lines(path)
        kinds = "".join("j" if l.startswith("{") else "t" for l in lines)
        self.assertRegex(kinds, r"^j+t+j+$", lines)
        for l in lines:
            if l.startswith("{"):
                self.check_json_line(l, pid)
        r.stop()
        self.assertEqual(r.log_since_start(), "", "relayd wrote to stderr, not to its log file")
        last = self.check_json_line(read_lines(path)[-1], pid)
        self.assertIn("stopped", last["msg"])

    def test_json_on_stderr(self):
        r = self.relayd("json")
        self.refuse_a_write(r)
        r.wait_log(r"unknown or wrong password")
        r.stop()
        lines = [l for l in r.log_since_start().splitlines() if l]
        self.assertGreaterEqual(len(lines), 3)
        msgs = [self.check_json_line(l, r.proc.pid) for l in lines]
        self.assertTrue(any("user '%s' unknown" % EVIL_USER in m["msg"] for m in msgs), msgs)
        self.assertTrue(any("listening on" in m["msg"] for m in msgs), msgs)


if __name__ == "__main__":
    relaytest.main()
