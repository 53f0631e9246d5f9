#!/usr/bin/env python3
"""
cmd/migrate/migrate-influxdb-relay: influxdb-relay's TOML configuration
into relayd's YAML.

The sample configuration of influxdb-relay's documentation and variants of
it (two and three [[http]] sections, skip-tls-verification, unknown keys
at every level, invalid TOML, locations with and without /write, an https
location, durations and sizes, a host name) are converted; each test checks
the exit status, the warnings on standard error, what the YAML says, that
no backend url ends in /write, and that relayd --check-config accepts every
file produced. -o refuses an existing file without --force.

End to end, with real processes on free loopback ports: the sample, its
ports rewritten to free ones, its combined PEM made by openssl, is
converted; relayd runs on the result (data_dir a temporary directory) in
front of two real influxd, and a write over HTTPS and a UDP datagram are
read back from both. A plain variant (location without /write) is written
through relayd's HTTP listener and read back from influxd.
"""

import http.client
import os
import re
import shutil
import socket
import ssl
import subprocess
import unittest

import relaytest

LOOPBACK = relaytest.LOOPBACK
SCRIPT = os.path.join(relaytest.SOURCE_DIR, "cmd", "migrate", "migrate-influxdb-relay")
OPENSSL = shutil.which("openssl")

# The sample of influxdb-relay's README, comments and all.
SAMPLE = """\
[[http]]
# Name of the HTTP server, used for display purposes only.
name = "example-http"
# TCP address to bind to, for HTTP server.
bind-addr = "127.0.0.1:9096"
# Enable HTTPS requests.
ssl-combined-pem = "/etc/ssl/influxdb-relay.pem"
# Array of InfluxDB instances to use as backends for Relay.
output = [
    # name: name of the backend, used for display purposes only.
    # location: full URL of the /write endpoint of the backend
    # timeout: Go-parseable time duration. Fail writes if incomplete in this time.
    # skip-tls-verification: skip verification for HTTPS location. WARNING: it's insecure. Don't use in production.
    { name="local1", location="http://127.0.0.1:8086/write", timeout="10s" },
    { name="local2", location="http://127.0.0.1:7086/write", timeout="10s" },
]

[[udp]]
# Name of the UDP server, used for display purposes only.
name = "example-udp"
# UDP address to bind to.
bind-addr = "127.0.0.1:9096"
# Socket buffer size for incoming connections.
read-buffer = 0 # default
# Precision to use for timestamps
precision = "n" # Can be n, u, ms, s, m, h
# Array of InfluxDB instances to use as backends for Relay.
output = [
    # name: name of the backend, used for display purposes only.
    # location: host and port of backend.
    # mtu: maximum output payload size
    { name="local1", location="127.0.0.1:8089", mtu=512 },
    { name="local2", location="127.0.0.1:7089", mtu=1024 },
]
"""

TWO_HTTP = """\
[[http]]
name = "first"
bind-addr = "127.0.0.1:9096"
ssl-combined-pem = ""
output = [ { name="a", location="http://127.0.0.1:8086/write" } ]

[[http]]
name = "second"
bind-addr = "127.0.0.1:9097"
output = [ { name="b", location="http://10.0.0.2:8086/write" } ]
"""

THREE_HTTP_TLS = """\
[[http]]
name = "plain"
bind-addr = ":9096"
output = [ { name="a", location="http://127.0.0.1:8086/write" } ]

[[http]]
name = "secure"
bind-addr = "0.0.0.0:9443"
ssl-combined-pem = "/etc/ssl/relay.pem"
output = [ { name="a", location="http://127.0.0.1:8086/write" } ]

[[http]]
name = "extra"
bind-addr = "127.0.0.1:9098"
output = [ { name="a", location="http://127.0.0.1:8086/write" } ]
"""

SKIP_TLS = """\
[[http]]
bind-addr = "127.0.0.1:9096"
output = [
  { name="remote", location="https://influx.example.com:8086/write", skip-tls-verification=true },
  { name="plainhttp", location="http://127.0.0.1:8086/write", skip-tls-verification=true },
  { name="verified", location="https://[::1]/write", skip-tls-verification=false },
]
"""

UNKNOWN_KEYS = """\
health-timeout-ms = 1000

[admin]
enabled = true
bind-addr = "127.0.0.1:9099"

[[http]]
name = "h"
bind-addr = "127.0.0.1:9096"
default-retention-policy = "autogen"
rate-limit = 100
output = [
  { name="local", location="http://127.0.0.1:8086/write", buffer-size-mb=100, max-batch-kb=50, max-delay-interval="5s", admin="http://127.0.0.1:8088", weight=3 },
]

[[udp]]
bind-addr = "127.0.0.1:8089"
read-buffer = 1048576
precision = "s"
frobnicate = "yes"
output = [ { name="u", location="10.1.2.3:8089", mtu=1400, health="x" } ]
"""

WRITE_PATHS = """\
[[http]]
bind-addr = "localhost:9096"
output = [
  { name="with", location="http://127.0.0.1:8086/write" },
  { name="slash", location="http://127.0.0.2:8086/write/" },
  { name="without", location="http://127.0.0.3:8086" },
  { name="prefix", location="http://127.0.0.4:8086/influx/write", timeout="1m30s" },
  { name="tls", location="https://influx.example.com/write", timeout="500ms" },
  { name="v2", location="http://127.0.0.5:8086/api/v2/write" },
  { name="bad name!", location="http://127.0.0.6:8086/write?db=x" },
]
"""


def run(args, timeout=60):
    return subprocess.run([SCRIPT] + list(args), stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=timeout)


def warnings(stderr):
    return [l for l in stderr.splitlines() if ": warning: " in l]


def yaml_lines(text):
    """The lines of the YAML that are not comments."""
    return [l for l in text.splitlines() if l.strip() and not l.lstrip().startswith("#")]


def urls(text):
    return [m.group(1) for m in re.finditer(r'^\s*url: "([^"]*)"', text, re.M)]


class Conversions(unittest.TestCase):

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup, "relaytest-migrate-")

    def convert(self, toml, *args, expect=0, name="in.toml"):
        """Convert toml to tmp/out-N.yaml; check the status; for a file
        produced, that relayd --check-config accepts it and that no url
        ends in /write. Returns (CompletedProcess, yaml text)."""
        src = os.path.join(self.tmp, name)
        with open(src, "w") as f:
            f.write(toml)
        cp = run([src] + list(args))
        self.assertEqual(cp.returncode, expect, "status; stderr:\n%s" % cp.stderr)
        if expect != 0:
            self.assertEqual(cp.stdout, "", "nothing on stdout after an error")
            return cp, None
        text = cp.stdout
        out = os.path.join(self.tmp, "out-%d.yaml" % len(os.listdir(self.tmp)))
        with open(out, "w") as f:
            f.write(text)
        chk = relaytest.check_config(out)
        self.assertEqual(chk.returncode, 0, "relayd --check-config refused:\n%s\n%s"
                         % (chk.stderr, text))
        for u in urls(text):
            self.assertFalse(u.rstrip("/").endswith("/write"), "url ends in /write: %s" % u)
        self.assertIn('data_dir: "/var/lib/relayd"', text)
        self.assertIn("log_output: syslog", text)
        return cp, text

    def test_script_is_executable_python3(self):
        self.assertTrue(os.access(SCRIPT, os.X_OK), "%s is not executable" % SCRIPT)
        with open(SCRIPT) as f:
            self.assertEqual(f.readline(), "#!/usr/bin/python3\n")
        cp = run(["--help"])
        self.assertEqual(cp.returncode, 0)
        self.assertIn("-o OUT.yaml", cp.stdout)

    def test_sample(self):
        cp, text = self.convert(SAMPLE)
        body = yaml_lines(text)
        # The one [[http]] has a combined PEM: HTTPS only, on its address.
        self.assertIn('  https: "127.0.0.1:9096"', body)
        self.assertIn("  http: off", body)
        self.assertIn('  cert_file: "/etc/ssl/influxdb-relay.pem"', body)
        self.assertIn('  key_file: "/etc/ssl/influxdb-relay.pem"', body)
        self.assertIn("openssl pkey", text)  # how to split it
        # Two backends, /write stripped; the UDP outputs are the same hosts.
        self.assertEqual(urls(text), ["http://127.0.0.1:8086", "http://127.0.0.1:7086"])
        self.assertEqual(body.count("    timeout: 10s"), 2)
        self.assertIn('  - name: "local1"', body)
        self.assertIn('  - name: "local2"', body)
        # The UDP listener, its precision, the database to check.
        self.assertIn('    - address: "127.0.0.1:9096"', body)
        self.assertIn('      db: "udp"', body)
        self.assertIn("      precision: ns", body)
        self.assertIn("mtu = 512", text)
        self.assertIn("mtu = 1024", text)
        w = warnings(cp.stderr)
        self.assertTrue(any("db \"udp\"" in l and "--udp-db" in l for l in w), cp.stderr)
        # Each UDP output went to the backend with the nearest HTTP port.
        self.assertTrue(any('"127.0.0.1:8089"' in l and "local1" in l for l in w), cp.stderr)
        self.assertTrue(any('"127.0.0.1:7089"' in l and "local2" in l for l in w), cp.stderr)
        self.assertNotIn("different outputs", cp.stderr)

    def test_udp_db_option(self):
        cp, text = self.convert(SAMPLE, "--udp-db", "telegraf")
        self.assertIn('      db: "telegraf"', yaml_lines(text))
        self.assertNotIn("--udp-db", cp.stderr)

    def test_two_http_sections(self):
        cp, text = self.convert(TWO_HTTP)
        body = yaml_lines(text)
        self.assertIn('  http: "127.0.0.1:9096"', body)
        self.assertNotIn("9097", "\n".join(body))
        self.assertIn("DROPPED: [[http]] #2", text)
        self.assertIn("10.0.0.2", text)  # its output, in a comment
        self.assertEqual(urls(text), ["http://127.0.0.1:8086"])
        w = warnings(cp.stderr)
        self.assertTrue(any("[[http]] #2" in l and "dropped" in l for l in w), cp.stderr)

    def test_plain_and_tls_sections(self):
        cp, text = self.convert(THREE_HTTP_TLS)
        body = yaml_lines(text)
        # ":9096" (every interface in Go) is 0.0.0.0, explained.
        self.assertIn('  http: "0.0.0.0:9096"', body)
        self.assertIn("every interface", text)
        self.assertIn('  https: "0.0.0.0:9443"', body)
        self.assertIn('  cert_file: "/etc/ssl/relay.pem"', body)
        self.assertIn("DROPPED: [[http]] #3", text)
        self.assertNotIn("9098", "\n".join(body))
        self.assertEqual(urls(text), ["http://127.0.0.1:8086"])
        self.assertEqual(len([l for l in warnings(cp.stderr) if "dropped" in l]), 1, cp.stderr)

    def test_skip_tls_verification(self):
        cp, text = self.convert(SKIP_TLS)
        self.assertEqual(urls(text), ["https://influx.example.com:8086",
                                      "http://127.0.0.1:8086", "https://[::1]"])
        body = yaml_lines(text)
        self.assertEqual(body.count("    insecure_skip_verify: true"), 1, text)
        self.assertIn("WARNING", text)
        w = warnings(cp.stderr)
        self.assertEqual(len([l for l in w if "insecure_skip_verify" in l]), 1, cp.stderr)
        self.assertTrue(any('"remote"' in l or "output #1" in l for l in w), cp.stderr)

    def test_unknown_keys(self):
        cp, text = self.convert(UNKNOWN_KEYS)
        w = warnings(cp.stderr)
        for key in ("health-timeout-ms", "admin", "rate-limit", "weight", "frobnicate",
                    "health"):
            self.assertTrue(any("'%s'" % key in l for l in w),
                            "no warning for %s:\n%s" % (key, cp.stderr))
            self.assertRegex(text, r"(?m)^\s*#.*\b%s\b" % re.escape(key))
        self.assertTrue(any("default-retention-policy" in l for l in w), cp.stderr)
        self.assertIn('default-retention-policy = "autogen"', text)
        # Values of the unknown keys are in the file, never on stderr.
        self.assertNotIn("http://127.0.0.1:8088", cp.stderr)
        self.assertIn("http://127.0.0.1:8088", text)
        body = yaml_lines(text)
        # The known per-output keys.
        self.assertIn("    batch_max_size: 50KiB", body)
        self.assertIn("    retry_max: 5s", body)
        self.assertIn("    #max_size: 100MiB", text.splitlines())
        self.assertNotIn("max_size: 100MiB", "\n".join(body))  # the default is kept
        self.assertIn("buffer-size-mb = 100", text)
        # The UDP listener and the guessed backend of its UDP output.
        self.assertIn("      precision: s", body)
        self.assertIn("      read_buffer: 1MiB", body)
        self.assertIn("http://10.1.2.3:8086", urls(text))
        self.assertIn("GUESSED", text)
        self.assertTrue(any("10.1.2.3" in l and "guess" in l for l in w), cp.stderr)
        self.assertIn("different outputs", cp.stderr)

    def test_write_paths(self):
        cp, text = self.convert(WRITE_PATHS)
        self.assertEqual(urls(text), [
            "http://127.0.0.1:8086", "http://127.0.0.2:8086", "http://127.0.0.3:8086",
            "http://127.0.0.4:8086/influx", "https://influx.example.com",
            "http://127.0.0.5:8086", "http://127.0.0.6:8086"])
        body = yaml_lines(text)
        self.assertIn('  http: "localhost:9096"', body)
        self.assertIn("    timeout: 90s", body)
        self.assertIn("    timeout: 500ms", body)
        self.assertIn("    type: v2", body)
        self.assertIn('  - name: "bad-name-"', body)
        w = warnings(cp.stderr)
        self.assertTrue(any("does not end in /write" in l for l in w), cp.stderr)
        self.assertTrue(any("query string" in l for l in w), cp.stderr)

    def test_udp_only(self):
        cp, text = self.convert('[[udp]]\nbind-addr = "127.0.0.1:8089"\nprecision = "ms"\n'
                                'output = [ { name="u", location="127.0.0.1:8089" } ]\n',
                                "--udp-db", "metrics")
        body = yaml_lines(text)
        self.assertIn('  http: "127.0.0.1:9096"', body)  # relayd's default, loopback
        self.assertIn("      precision: ms", body)
        self.assertEqual(urls(text), ["http://127.0.0.1:8086"])
        self.assertIn("GUESSED", text)
        self.assertEqual(len(warnings(cp.stderr)), 1, cp.stderr)

    def test_host_name_bind(self):
        cp, text = self.convert('[[http]]\nbind-addr = "relay.example.com:9096"\n'
                                'output = [ { name="a", location="http://127.0.0.1:8086/write" } ]\n')
        self.assertIn('  http: "127.0.0.1:9096"', yaml_lines(text))
        self.assertTrue(any("host names" in l for l in warnings(cp.stderr)), cp.stderr)

    def test_bad_input(self):
        for toml, what in (
                ("[[http]\nbind-addr = 1\n", "is not TOML"),
                ("this is not toml at all\n", "is not TOML"),
                ("bind-addr = \"127.0.0.1:9096\"\n", "no [[http]] or [[udp]]"),
                ("", "no [[http]] or [[udp]]"),
                ('[[http]]\nbind-addr = "127.0.0.1:9096"\n'
                 'output = [ { name="a", location="http://127.0.0.1:8086/write", '
                 'timeout="ten seconds" } ]\n', "not a Go duration"),
                ('[[http]]\noutput = [ { name="a", location="http://127.0.0.1:8086/write" } ]\n',
                 "bind-addr is missing"),
                ('[[http]]\nbind-addr = "127.0.0.1:9096"\n'
                 'output = [ { name="a", location="ftp://x/write" } ]\n', "not an http"),
                ('[[http]]\nbind-addr = "127.0.0.1:9096"\n', "no output")):
            with self.subTest(toml=toml):
                cp, _ = self.convert(toml, expect=2)
                self.assertIn(what, cp.stderr)
                self.assertEqual(len(cp.stderr.splitlines()), 1, cp.stderr)
        cp = run([os.path.join(self.tmp, "missing.toml")])
        self.assertEqual(cp.returncode, 2)
        self.assertIn("cannot read", cp.stderr)
        with open(os.path.join(self.tmp, "bin.toml"), "wb") as f:
            f.write(b"\xff\xfe[[http]]\n")
        cp = run([os.path.join(self.tmp, "bin.toml")])
        self.assertEqual(cp.returncode, 2)
        self.assertIn("is not TOML", cp.stderr)

    def test_output_file_and_force(self):
        src = os.path.join(self.tmp, "in.toml")
        with open(src, "w") as f:
            f.write(TWO_HTTP)
        out = os.path.join(self.tmp, "relayd.yaml")
        cp = run([src, "-o", out])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(cp.stdout, "")
        self.assertIn("wrote", cp.stderr)
        self.assertEqual(relaytest.check_config(out).returncode, 0)
        with open(out, "w") as f:
            f.write("keep me\n")
        cp = run([src, "-o", out])
        self.assertEqual(cp.returncode, 2)
        self.assertIn("--force", cp.stderr)
        with open(out) as f:
            self.assertEqual(f.read(), "keep me\n")
        cp = run([src, "-o", out, "--force"])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        self.assertEqual(relaytest.check_config(out).returncode, 0)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["in.toml", "relayd.yaml"],
                         "no temporary file left")


def for_test_run(yaml_text, data_dir):
    """The converted file as the test runs it: data_dir in the test's
    directory, log to stderr (the harness's log file), no user: switch."""
    text = re.sub(r'(?m)^data_dir: .*$', 'data_dir: "%s"' % data_dir, yaml_text)
    text = re.sub(r'(?m)^log_output: .*$', "log_output: stderr", text)
    text = re.sub(r'(?m)^user: .*$', "", text)
    return text


class EndToEnd(unittest.TestCase):

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup, "relaytest-migrate-e2e-")

    def start_converted(self, toml, *args):
        src = os.path.join(self.tmp, "influxdb-relay.toml")
        with open(src, "w") as f:
            f.write(toml)
        conv = os.path.join(self.tmp, "converted.yaml")
        cp = run([src, "-o", conv] + list(args))
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with open(conv) as f:
            text = f.read()
        for u in urls(text):
            self.assertFalse(u.endswith("/write"), u)
        relayd = relaytest.Relayd(self.addCleanup)
        relayd.tmpdir = self.tmp
        relayd.data_dir = os.path.join(self.tmp, "data")
        relayd.config = os.path.join(self.tmp, "relayd.yaml")
        relayd.log_path = os.path.join(self.tmp, "relayd.log")
        with open(relayd.config, "w") as f:
            f.write(for_test_run(text, relayd.data_dir))
        chk = relaytest.check_config(relayd.config)
        self.assertEqual(chk.returncode, 0, chk.stderr)
        return relayd

    def influxd(self, sub):
        i = relaytest.Influxd(self.addCleanup)
        i.write_config(self.tmp, subdir=sub)
        i.start()
        i.create_db("mig")
        return i

    def test_sample_https_and_udp(self):
        if OPENSSL is None:
            self.skipTest("no openssl CLI")
        a, b = self.influxd("influxd-a"), self.influxd("influxd-b")
        https_port, udp_port = relaytest.free_port(), relaytest.free_udp_port()
        # The combined PEM influxdb-relay takes: certificate, then key.
        cp = subprocess.run([OPENSSL, "req", "-x509", "-newkey", "ec", "-pkeyopt",
                             "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", "key.pem",
                             "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
                             "-addext", "subjectAltName=IP:127.0.0.1"],
                            cwd=self.tmp, capture_output=True, text=True, timeout=30)
        self.assertEqual(cp.returncode, 0, cp.stderr)
        combined = os.path.join(self.tmp, "combined.pem")
        with open(combined, "w") as f:
            for part in ("cert.pem", "key.pem"):
                with open(os.path.join(self.tmp, part)) as p:
                    f.write(p.read())
        toml = (SAMPLE.replace('"127.0.0.1:9096"\n# Enable', '"127.0.0.1:%d"\n# Enable' % https_port)
                .replace('"127.0.0.1:9096"\n# Socket', '"127.0.0.1:%d"\n# Socket' % udp_port)
                .replace("/etc/ssl/influxdb-relay.pem", combined)
                .replace("127.0.0.1:8086", "127.0.0.1:%d" % a.port)
                .replace("127.0.0.1:7086", "127.0.0.1:%d" % b.port)
                .replace("127.0.0.1:8089", "127.0.0.1:%d" % (a.port + 3))
                .replace("127.0.0.1:7089", "127.0.0.1:%d" % (b.port + 3)))
        self.assertNotIn("9096", toml)
        relayd = self.start_converted(toml, "--udp-db", "mig")
        with open(relayd.config) as f:
            text = f.read()
        self.assertEqual(urls(text), [a.url, b.url])
        relayd.start()
        ctx = ssl.create_default_context(cafile=os.path.join(self.tmp, "cert.pem"))

        def https(method, path, body=None):
            c = http.client.HTTPSConnection(LOOPBACK, https_port, context=ctx, timeout=10)
            try:
                c.request(method, path, body=body)
                r = c.getresponse()
                return r.status, r.read()
            finally:
                c.close()

        def ready():
            if not relayd.alive():
                raise AssertionError("relayd exited:\n%s" % relayd.log())
            try:
                return https("GET", "/ping")[0] == 204
            except (OSError, http.client.HTTPException):
                return False
        relaytest.wait_until(ready, 15, what="relayd's HTTPS /ping",
                             detail=lambda: relayd.log())
        status, body = https("POST", "/write?db=mig",
                             b"migrated,via=https value=1i 1700000000000000000\n"
                             b"migrated,via=https value=2i 1700000001000000000\n")
        self.assertEqual(status, 204, body)
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            s.sendto(b"migrated,via=udp value=3i 1700000002000000000\n", (LOOPBACK, udp_port))
        finally:
            s.close()
        for i in (a, b):
            i.wait_count("mig", "migrated", "value", 3)
            rows = i.rows("mig", 'SELECT value, via FROM migrated')
            self.assertEqual([(r["via"], r["value"]) for r in rows],
                             [("https", 1), ("https", 2), ("udp", 3)])

    def test_plain_without_write_path(self):
        i = self.influxd("influxd")
        port = relaytest.free_port()
        toml = ('[[http]]\nname = "plain"\nbind-addr = "127.0.0.1:%d"\n'
                'default-retention-policy = "autogen"\n'
                'output = [ { name="only one", location="http://127.0.0.1:%d", timeout="5s",'
                ' buffer-size-mb=10, max-batch-kb=512, max-delay-interval="2s" } ]\n'
                % (port, i.port))
        relayd = self.start_converted(toml)
        relayd.port = port
        relayd.start()
        relayd.wait_ready()
        status, _, body = relayd.write("mig", "plain value=42i 1700000000000000000\n")
        self.assertEqual(status, 204, body)
        i.wait_count("mig", "plain", "value", 1)
        self.assertEqual(i.rows("mig", "SELECT value FROM plain")[0]["value"], 42)


def probe():
    """The script runs on /usr/bin/python3 and needs its tomllib (3.11)."""
    try:
        cp = subprocess.run(["/usr/bin/python3", "-c", "import tomllib"],
                            capture_output=True, timeout=30)
    except OSError:
        return "no /usr/bin/python3"
    if cp.returncode != 0:
        return "/usr/bin/python3 has no tomllib (Python 3.11 or later needed)"
    return None


if __name__ == "__main__":
    relaytest.main(require=("relayd",), probe=probe)
