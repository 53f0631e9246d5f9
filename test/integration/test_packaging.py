#!/usr/bin/env python3
"""
Packaging.

Without installing anything: `cmake --install` into a staging directory
puts every file where the init script, the unit and the man pages say
(binaries in the prefix's bin, /etc/relayd/relayd.yaml, /etc/init.d/relayd,
/etc/default/relayd, /etc/logrotate.d/relayd, the unit under
/lib/systemd/system, man pages gzip -9n (no name, no time: the same bytes
every build), the copyright file, changelog.gz, the influxdb-relay
converter under share/relayd),
the installed scripts name the installed binary, the unit waits for
network-online.target and passes `systemd-analyze verify`. `cpack -G DEB`
(output in a temp dir) gives relayd_V_ARCH.deb and relayd-dbgsym_V_ARCH.deb:
lintian reports no error, no warning and no informational tag, and nothing is overridden
(the package ships no overrides), the binaries are stripped and relayd-dbgsym holds the debug file
of each under /usr/lib/debug/.build-id/ named by its build-id; the
copyright file is DEP-5 with the LICENSE text, the changelog parses and
names the project's version, the conffiles, Depends, maintainer scripts.

On this machine, as root (SystemInstallTest; skipped when relayd is
installed or /usr/bin/relayd exists already, or in a sanitizer build): the
.deb is installed with dpkg, with the test's own /etc/relayd/relayd.yaml
(free loopback ports) written first and kept by --force-confold. Each dpkg
run is in a private mount namespace where /usr/sbin/policy-rc.d is a
script of the test's that allows or denies, whatever the machine has:
  - denied: installed, enabled (rc links, systemd wants-link), not
    started; the init script starts it, a write is queued (its backend
    down), the log reaches /var/log/relayd/relayd.log, reload works;
    `dpkg -r` stops relayd although invoke-rc.d is denied (also an old
    relayd that a denied upgrade left running on its replaced binary);
    `dpkg -P` with
    the write still queued warns and keeps the queue in
    /var/lib/relayd.purged-* (so does one without the prerm's note about
    what the queue held); the documented way back (reinstall, stop,
    move the copy back, start) delivers it to a real influxd, queried
    back; then `dpkg -P` with an empty queue leaves nothing: no files,
    links, systemd state or process.
  - allowed: an install starts relayd, a removal stops it, an install
    after a removal starts it again; a write queued for a backend that
    is down; installing the current version over a 0.1.x build restarts
    relayd (new pid; a relayd that was stopped stays stopped), the queue
    is kept and still pending, and it is
    delivered once the backend exists; `logrotate -f` with the installed
    /etc/logrotate.d/relayd rotates the log and relayd writes to the new
    file.
Everything is purged in cleanup handlers, also on failure; processes are
stopped by the pid they were seen with, never by name.

The build directory is the one relayd under test was built in
(RELAYD_BIN's parent's parent).
"""

import glob
import gzip
import json
import os
import re
import shutil
import stat
import subprocess
import time
import unittest

import relaytest
from relaytest import RELAYD_BIN, SOURCE_DIR, Influxd, wait_until

BUILD_DIR = os.path.dirname(os.path.dirname(os.path.abspath(RELAYD_BIN)))
PIDFILE = "/run/relayd/relayd.pid"
POLICY = "/usr/sbin/policy-rc.d"
# prerm's note for the purge: root's, outside the tree relayd owns.
NOTE = "/var/lib/relayd.removal"
CONFIG = "/etc/relayd/relayd.yaml"


def cache_value(name):
    try:
        with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
            for line in f:
                m = re.match(r"%s:[A-Z]+=(.*)$" % re.escape(name), line.strip())
                if m:
                    return m.group(1)
    except OSError:
        pass
    return None


def fortified_build():
    """Whether the build fortifies libc calls (CMakeLists.txt: with
    RELAY_HARDENING, in an optimised build without a sanitizer)."""
    return (cache_value("RELAY_HARDENING") not in ("OFF", "0", "FALSE", "NO")
            and not cache_value("RELAY_SANITIZE")
            and (cache_value("CMAKE_BUILD_TYPE") or "").lower() != "debug")


def run(cmd, **kw):
    kw.setdefault("timeout", 120)
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", **kw)


def project_version():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        return re.search(r"project\(relayd VERSION ([0-9.]+)", f.read()).group(1)


_debs = {}


def packaged_log_output():
    """The value of log_output in the packaged configuration, as written
    there (its comment left out)."""
    with open(os.path.join(SOURCE_DIR, "cmd", "init", "relayd.yaml")) as f:
        m = re.search(r"^log_output: *(.*?) *(#.*)?$", f.read(), re.M)
    return m.group(1)


def build_debs(tmp, version=None, control=None, umask=None):
    """cpack -G DEB into tmp/out-VERSION: {"relayd": path, "relayd-dbgsym": path}.
    version overrides CPACK_PACKAGE_VERSION (an older build of this tree),
    control the maintainer scripts and conffiles (a list of paths), umask
    the umask cpack runs under."""
    key = (tmp, (version or "current") + ("-umask%03o" % umask if umask is not None else ""))
    if key in _debs:
        return _debs[key]
    out = os.path.join(tmp, "out-" + key[1])
    os.mkdir(out)
    cmd = ["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"), "-B", out]
    if version:
        cmd += ["-D", "CPACK_PACKAGE_VERSION=" + version]
    if control:
        cmd += ["-D", "CPACK_DEBIAN_PACKAGE_CONTROL_EXTRA=" + ";".join(control)]
    cp = run(cmd, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)
    if cp.returncode != 0:
        raise AssertionError("cpack failed:\n" + cp.stdout + cp.stderr)
    debs = {}
    for f in os.listdir(out):
        m = re.match(r"^(relayd|relayd-dbgsym)_(\d+\.\d+\.\d+)_([a-z0-9]+)\.deb$", f)
        if m:
            debs[m.group(1)] = os.path.join(out, f)
    if sorted(debs) != ["relayd", "relayd-dbgsym"]:
        raise AssertionError("cpack made %s (wanted relayd and relayd-dbgsym .debs):\n%s"
                             % (os.listdir(out), cp.stdout + cp.stderr))
    _debs[key] = debs
    return debs


OLD_COMMIT = "f25746f"


def old_scripts(tmp):
    """The maintainer scripts and conffiles of 0.1.0 (commit f25746f),
    in tmp/old-control, or None without git or the commit."""
    if not shutil.which("git"):
        return None
    d = os.path.join(tmp, "old-control")
    if os.path.isdir(d):
        return sorted(os.path.join(d, f) for f in os.listdir(d))
    os.mkdir(d)
    paths = []
    for name in ("conffiles", "postinst", "prerm", "postrm"):
        cp = run(["git", "-C", SOURCE_DIR, "show", "%s:cmd/debian/%s" % (OLD_COMMIT, name)])
        if cp.returncode != 0:
            return None
        path = os.path.join(d, name)
        with open(path, "w") as f:
            f.write(cp.stdout)
        os.chmod(path, 0o755 if name != "conffiles" else 0o644)
        paths.append(path)
    return sorted(paths)


def build_id(path):
    cp = run(["readelf", "-n", path])
    m = re.search(r"Build ID: ([0-9a-f]+)", cp.stdout)
    return m.group(1) if m else None


def debug_sections(path):
    cp = run(["readelf", "-S", "-W", path])
    return re.findall(r"\.(?:z)?debug_\w+", cp.stdout)


def hardening(path):
    """What Debian's hardening flags leave in a binary, as readelf shows
    it: {"pie", "relro", "bindnow", "fortify", "comment"} for each that
    holds ("comment": the compiler's .comment section, dh_strip removes)."""
    found = set()
    cp = run(["readelf", "-W", "-h", "-l", "-d", "-S", "--dyn-syms", path])
    if re.search(r"Type:\s+DYN ", cp.stdout) and re.search(r"FLAGS_1\).*\bPIE\b", cp.stdout):
        found.add("pie")
    if "GNU_RELRO" in cp.stdout:
        found.add("relro")
    if re.search(r"\(FLAGS\)\s+BIND_NOW|FLAGS_1\).*\bNOW\b", cp.stdout):
        found.add("bindnow")
    # A fortified call is an undefined __*_chk symbol (a sanitizer's
    # runtime defines its own: those do not count).
    if re.search(r"\bUND __\w+_chk\b", cp.stdout):
        found.add("fortify")
    if re.search(r"\] \.comment ", cp.stdout):
        found.add("comment")
    return found


class PackagingTest(unittest.TestCase):
    """The files and the .debs, nothing installed."""

    @classmethod
    def setUpClass(cls):
        cls.classtmp = relaytest.make_tmpdir(cls.addClassCleanup, prefix="relaytest-pkgbuild-")

    def setUp(self):
        if not os.path.exists(os.path.join(BUILD_DIR, "CMakeCache.txt")):
            self.skipTest("no CMake build directory at %s" % BUILD_DIR)
        self.tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-pkg-")
        self.prefix = cache_value("CMAKE_INSTALL_PREFIX").lstrip("/")
        doc = self.prefix + "/share/doc/relayd/"
        self.expected = {
            # path in the package/staging dir -> executable?
            self.prefix + "/bin/relayd": True,
            self.prefix + "/bin/relayctl": True,
            self.prefix + "/share/man/man8/relayd.8.gz": False,
            self.prefix + "/share/man/man8/relayctl.8.gz": False,
            self.prefix + "/share/man/man5/relayd.yaml.5.gz": False,
            doc + "examples/config.example.yaml": False,
            doc + "README.md.gz": False,
            doc + "operations.md.gz": False,
            doc + "tls.md.gz": False,
            doc + "copyright": False,
            doc + "changelog.gz": False,
            self.prefix + "/share/relayd/migrate-influxdb-relay": True,
            "etc/relayd/relayd.yaml": False,
            "etc/init.d/relayd": True,
            "etc/default/relayd": False,
            "etc/logrotate.d/relayd": False,
            "lib/systemd/system/relayd.service": False,
        }

    def test_cmake_install(self):
        stage = os.path.join(self.tmp, "stage")
        env = dict(os.environ, DESTDIR=stage)
        cp = run(["cmake", "--install", BUILD_DIR], env=env)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        for path, exe in self.expected.items():
            full = os.path.join(stage, path)
            self.assertTrue(os.path.isfile(full), "%s not installed" % path)
            if exe:
                self.assertTrue(os.stat(full).st_mode & stat.S_IXUSR, "%s not executable" % path)
        bindir = "/" + self.prefix + "/bin"
        with open(os.path.join(stage, "lib/systemd/system/relayd.service")) as f:
            unit = f.read()
        self.assertIn("ExecStart=%s/relayd -c /etc/relayd/relayd.yaml --pidfile /run/relayd/relayd.pid\n"
                      % bindir, unit)
        self.assertIn("Type=notify", unit)
        # relayd binds its listen address once: the unit waits until the
        # network is up, not merely configured.
        self.assertIn("\nWants=network-online.target\n", unit)
        self.assertIn("\nAfter=network-online.target\n", unit)
        self.assertNotRegex(unit, r"\n(After|Wants|Requires)=.*\bnetwork\.target")
        self.assertIn("\nRuntimeDirectory=relayd\n", unit)
        with open(os.path.join(stage, "etc/init.d/relayd")) as f:
            self.assertIn("DAEMON=%s/relayd\n" % bindir, f.read())
        # The packaged configuration is valid and says what the package sets up.
        conf = os.path.join(stage, "etc/relayd/relayd.yaml")
        cp = relaytest.check_config(conf)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(conf) as f:
            text = f.read()
        for line in ("data_dir: /var/lib/relayd", "user: relayd"):
            self.assertIn(line + "\n", text)
        # The journal under systemd, the file elsewhere (the init script:
        # SystemInstallTest checks that the log reaches the file).
        self.assertIn("\nlog_output: [journal, /var/log/relayd/relayd.log]\n", text)

        # gzip -9n: no file name, no time stamp, maximum compression
        # (the header's flags, mtime and extra flags), and the text inside
        # is the source's.
        # The documents in /usr/share/doc/relayd too (policy 12.3: over
        # 4 KiB, compressed); the example stays plain under examples/.
        for page, src in (("man/man8/relayd.8.gz", "docs/man/relayd.8"),
                          ("man/man8/relayctl.8.gz", "docs/man/relayctl.8"),
                          ("man/man5/relayd.yaml.5.gz", "docs/man/relayd.yaml.5"),
                          ("doc/relayd/README.md.gz", "README.md"),
                          ("doc/relayd/operations.md.gz", "docs/operations.md"),
                          ("doc/relayd/tls.md.gz", "docs/tls.md")):
            with open(os.path.join(stage, self.prefix, "share", page), "rb") as f:
                head = f.read(10)
            self.assertEqual(head[:3], b"\x1f\x8b\x08", page)
            self.assertEqual(head[3], 0, "%s: no name or other flags (gzip -n)" % page)
            self.assertEqual(head[4:8], b"\0\0\0\0", "%s: no time stamp (gzip -n)" % page)
            self.assertEqual(head[8], 2, "%s: gzip -9" % page)
            with gzip.open(os.path.join(stage, self.prefix, "share", page), "rb") as f, \
                    open(os.path.join(SOURCE_DIR, src), "rb") as g:
                self.assertEqual(f.read(), g.read(), page)
        docdir = os.path.join(stage, self.prefix, "share/doc/relayd")
        for name in os.listdir(docdir):
            path = os.path.join(docdir, name)
            if os.path.isfile(path) and not name.endswith(".gz") and name != "copyright":
                self.assertLessEqual(os.path.getsize(path), 4096, "%s: over 4 KiB, not compressed" % name)

        # The changelog: Debian's format, a native package of the
        # project's version, with the release before it.
        changelog = os.path.join(stage, self.prefix, "share/doc/relayd/changelog.gz")
        with gzip.open(changelog, "rb") as f, open(os.path.join(SOURCE_DIR, "cmd/debian/changelog"), "rb") as g:
            self.assertEqual(f.read(), g.read())
        with open(os.path.join(SOURCE_DIR, "cmd/debian/changelog")) as f:
            versions = re.findall(r"^relayd \(([^)]+)\) unstable; urgency=\w+$", f.read(), re.M)
        self.assertEqual(versions[0], project_version())
        self.assertIn("0.1.0", versions)
        if shutil.which("dpkg-parsechangelog"):
            cp = run(["dpkg-parsechangelog", "-l", os.path.join(SOURCE_DIR, "cmd/debian/changelog"),
                      "-S", "Version"])
            self.assertEqual((cp.returncode, cp.stdout.strip(), cp.stderr), (0, project_version(), ""))

        # The copyright file is machine-readable (DEP-5) and carries the
        # license of LICENSE.
        with open(os.path.join(stage, self.prefix, "share/doc/relayd/copyright")) as f:
            copyright = f.read()
        self.assertTrue(copyright.startswith(
            "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\n"))
        self.assertRegex(copyright, r"\nFiles: \*\nCopyright: 2026 the relayd authors\nLicense: Expat\n")
        with open(os.path.join(SOURCE_DIR, "LICENSE")) as f:
            license_text = f.read()
        self.assertIn("Copyright (c) 2026 the relayd authors", license_text)
        body = " ".join(license_text.split("\n\n", 2)[2].split())
        self.assertIn(body, " ".join(l[1:] for l in copyright.splitlines() if l.startswith(" ") and l != " ."))

        analyze = shutil.which("systemd-analyze")
        if analyze:
            # verify needs ExecStart to exist: point it at the binary under test.
            unit_copy = os.path.join(self.tmp, "relayd.service")
            with open(unit_copy, "w") as f:
                f.write(unit.replace("%s/relayd" % bindir, os.path.abspath(RELAYD_BIN)))
            cp = run([analyze, "verify", "--man=no", unit_copy])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_deb(self):
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps", "readelf"):
            if not shutil.which(tool):
                self.skipTest("%s missing" % tool)
        debs = build_debs(self.classtmp)
        deb = debs["relayd"]
        self.assertEqual(os.path.basename(deb).split("_")[1], project_version())

        cp = run(["dpkg-deb", "-c", deb])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        listing = {}
        for line in cp.stdout.splitlines():
            parts = line.split()
            path = parts[-1]
            if parts[0].startswith("l"):  # a symlink: "path -> target"
                path = parts[-3]
            listing[path.lstrip("./").rstrip("/")] = parts
        for path, exe in self.expected.items():
            self.assertIn(path, listing, "%s missing from the .deb:\n%s" % (path, cp.stdout))
            mode, owner = listing[path][0], listing[path][1]
            self.assertEqual(owner, "root/root", path)
            self.assertEqual(mode, "-rwxr-xr-x" if exe else "-rw-r--r--", path)
        self.assertFalse([p for p in listing if p.startswith(("var/", "run/"))],
                         "the postinst creates /var/lib/relayd, the package ships nothing there")
        self.assertFalse([p for p in listing if re.search(r"/man/man\d/[^/]+\.\d$", p)],
                         "uncompressed man pages")

        cp = run(["dpkg-deb", "-I", deb])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        info = cp.stdout
        fields = dict(re.findall(r"^ ([A-Z][A-Za-z-]+): (.*)$", info, re.M))
        self.assertEqual(fields.get("Package"), "relayd")
        self.assertNotRegex(fields.get("Maintainer", ""), r"@localhost\b")
        depends = [d.strip().split()[0] for d in fields.get("Depends", "").split(",")]
        for dep in ("adduser", "libc6", "libuv1", "liblmdb0", "libyaml-0-2", "libsystemd0", "zlib1g"):
            self.assertIn(dep, depends, "Depends: %s" % fields.get("Depends"))
        for script in ("postinst", "prerm", "postrm", "conffiles"):
            self.assertRegex(info, r"\n\s+\d+ bytes,\s+\d+ lines\s+\*?\s+%s\b" % script)

        ctl = os.path.join(self.tmp, "control")
        cp = run(["dpkg-deb", "-e", deb, ctl])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        with open(os.path.join(ctl, "conffiles")) as f:
            conffiles = sorted(f.read().split())
        self.assertEqual(conffiles, ["/etc/default/relayd", "/etc/init.d/relayd", "/etc/logrotate.d/relayd",
                                     "/etc/relayd/relayd.yaml"])
        for c in conffiles:
            self.assertIn(c.lstrip("/"), listing, "a conffile the package does not ship")
        scripts = {}
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(ctl, script)
            self.assertTrue(os.stat(path).st_mode & stat.S_IXUSR, script)
            cp = run(["sh", "-n", path])
            self.assertEqual(cp.returncode, 0, "%s: %s" % (script, cp.stderr))
            with open(path) as f:
                scripts[script] = "\n".join(l for l in f.read().splitlines() if not l.lstrip().startswith("#"))
        self.assertIn("adduser --quiet --system --group --home /var/lib/relayd --no-create-home",
                      scripts["postinst"])
        self.assertIn("install -d -o relayd -g relayd -m 0750 /var/lib/relayd", scripts["postinst"])
        # Debian's way: the helpers, which honour policy-rc.d and the
        # administrator's earlier choices; systemctl only for daemon-reload.
        self.assertIn("update-rc.d relayd defaults$rc_disabled", scripts["postinst"])
        self.assertIn("rc_disabled=-disabled", scripts["postinst"])
        self.assertIn("deb-systemd-helper enable", scripts["postinst"])
        self.assertIn("deb-systemd-invoke", scripts["postinst"])
        self.assertIn("invoke-rc.d relayd", scripts["postinst"])
        self.assertIn("invoke-rc.d relayd stop", scripts["prerm"])
        self.assertIn("update-rc.d relayd remove", scripts["postrm"])
        self.assertIn("deb-systemd-helper purge relayd.service", scripts["postrm"])
        for name, code in scripts.items():
            # What the scripts run, not what they tell the administrator.
            commands = re.sub(r"(?m)^\s*echo .*$", "", code)
            self.assertNotRegex(commands, r"systemctl (?!--system daemon-reload)", name)
        self.assertIn("dpkg-statoverride --update --add root relayd 0640", scripts["postinst"])
        self.assertIn("dpkg-statoverride --remove", scripts["postrm"])

        # Stripped binaries; their debug files in relayd-dbgsym, by build-id.
        x = os.path.join(self.tmp, "x")
        self.assertEqual(run(["dpkg-deb", "-x", deb, x]).returncode, 0)
        # operations.md, Upgrading: the new binary checks a configuration
        # before it is installed.
        cp = run([os.path.join(x, self.prefix, "bin/relayd"), "--check-config", "-c",
                  os.path.join(x, "etc/relayd/relayd.yaml")])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertRegex(cp.stdout, r"relayd\.yaml: ok \(1 backend\)\n")
        dbg = os.path.join(self.tmp, "dbg")
        self.assertEqual(run(["dpkg-deb", "-x", debs["relayd-dbgsym"], dbg]).returncode, 0)
        cp = run(["dpkg-deb", "-f", debs["relayd-dbgsym"], "Package", "Version", "Depends", "Section", "Build-Ids"])
        dfields = dict(re.findall(r"^([A-Za-z-]+): (.*)$", cp.stdout, re.M))
        self.assertEqual(dfields["Package"], "relayd-dbgsym")
        self.assertEqual(dfields["Depends"], "relayd (= %s)" % project_version())
        self.assertEqual(dfields["Section"], "debug")
        ids = []
        for prog in ("relayd", "relayctl"):
            binary = os.path.join(x, self.prefix, "bin", prog)
            self.assertEqual(debug_sections(binary), [], "%s is not stripped" % prog)
            # Built and stripped as dpkg-buildflags and dh_strip would
            # (CMakeLists.txt, RELAY_HARDENING; cmake/strip.sh.in).
            want = {"pie", "relro", "bindnow"} | ({"fortify"} if fortified_build() else set())
            self.assertEqual(hardening(binary), want, prog)
            bid = build_id(binary)
            self.assertTrue(bid, "%s has no build-id" % prog)
            ids.append(bid)
            debug = os.path.join(dbg, "usr/lib/debug/.build-id", bid[:2], bid[2:] + ".debug")
            self.assertTrue(os.path.isfile(debug), "no debug file for %s (%s)" % (prog, bid))
            self.assertEqual(build_id(debug), bid)
            self.assertIn(".debug_info", [s.replace(".zdebug", ".debug") for s in debug_sections(debug)])
            self.assertEqual(os.stat(debug).st_mode & 0o777, 0o644)
        self.assertEqual(sorted(dfields["Build-Ids"].split()), sorted(ids))
        self.assertEqual(os.readlink(os.path.join(dbg, "usr/share/doc/relayd-dbgsym")), "relayd")

        # lintian: no error, no warning, and nothing overridden: the
        # package ships no lintian overrides.
        lintian = shutil.which("lintian")
        if not lintian:
            self.skipTest("lintian missing")
        cp = run([lintian, "--fail-on", "error,warning", "--display-info", deb, debs["relayd-dbgsym"]],
                 timeout=170)
        # Not even an informational tag (hardening, stripping, descriptions),
        # but the fortified calls a Debug or sanitizer build leaves out.
        allowed = set() if fortified_build() else {"hardening-no-fortify-functions"}
        tags = [l for l in cp.stdout.splitlines()
                if re.match(r"^[EWI]: ", l) and l.split(" ")[2] not in allowed]
        self.assertEqual(tags, [], cp.stdout + cp.stderr)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertFalse(os.path.exists(os.path.join(x, self.prefix, "share/lintian")), "lintian overrides")
        self.assertNotRegex(cp.stdout, r"(?m)^O: ")

    def test_deb_under_umask_077(self):
        # The .debs do not depend on the umask of whoever builds them: under
        # umask 077 CPack's staging made every directory 0700 (dpkg would
        # install them for root alone) and dpkg-deb refused the dbgsym's
        # control directory.
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps", "readelf"):
            if not shutil.which(tool):
                self.skipTest("%s missing" % tool)
        debs = build_debs(self.classtmp, umask=0o077)
        for name, deb in debs.items():
            cp = run(["dpkg-deb", "-c", deb])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            bad = [l for l in cp.stdout.splitlines()
                   if (l.startswith("d") and not l.startswith("drwxr-xr-x"))
                   or (l.startswith("-") and l.split()[0] not in ("-rw-r--r--", "-rwxr-xr-x"))]
            self.assertEqual(bad, [], name)

    def test_dbgsym_needs_debug_information(self):
        # Binaries without .debug_info (a Release build): cpack fails and
        # says why, rather than make a relayd-dbgsym of nothing.
        if not shutil.which("cpack") or not shutil.which("objcopy"):
            self.skipTest("cpack or objcopy missing")
        stripped = os.path.join(self.tmp, "stripped")
        os.mkdir(stripped)
        pairs = []
        for prog in ("relayd", "relayctl"):
            dst = os.path.join(stripped, prog)
            cp = run(["objcopy", "--strip-debug", os.path.join(BUILD_DIR, "bin", prog), dst])
            self.assertEqual(cp.returncode, 0, cp.stderr)
            pairs.append("%s/bin/%s=%s" % (self.prefix, prog, dst))
        out = os.path.join(self.tmp, "out")
        os.mkdir(out)
        cp = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"), "-B", out,
                  "-D", "CPACK_RELAY_DEBUG_BINARIES=" + ";".join(pairs)])
        self.assertNotEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("has no debug information (.debug_info): build with -DCMAKE_BUILD_TYPE=RelWithDebInfo",
                      " ".join((cp.stdout + cp.stderr).split()))
        self.assertFalse(glob.glob(os.path.join(out, "relayd-dbgsym_*.deb")))

    def test_prerm_direct_stop_only_in_its_own_root(self):
        # prerm's stop_service, with the pid of the pidfile given: a
        # process whose root is another directory (as the host's relayd
        # looks from a chroot that shares /run) is left alone, with a
        # message; one of this root is stopped. Sleeps stand in for relayd
        # (running_pid, which checks the binary, is replaced).
        if os.geteuid() != 0:
            self.skipTest("needs root (chroot, mount)")
        for tool in ("unshare", "chroot", "start-stop-daemon"):
            if not shutil.which(tool):
                self.skipTest("%s missing" % tool)
        if os.path.exists("/etc/init.d/relayd") or os.path.isdir("/run/systemd/system"):
            self.skipTest("an init system would be asked to stop relayd first")
        with open(os.path.join(SOURCE_DIR, "cmd", "debian", "prerm")) as f:
            text = f.read()
        funcs = re.search(r"^stop_service\(\) \{\n.*?^\}\n", text, re.M | re.S).group(0)
        harness = os.path.join(self.tmp, "harness.sh")
        with open(harness, "w") as f:
            f.write('set -e\nPIDFILE=%s/pidfile\n%s\nrunning_pid() { echo "$TARGET"; }\nstop_service\n'
                    % (self.tmp, funcs))
        root = os.path.join(self.tmp, "root")
        os.mkdir(root)
        os.mkdir(os.path.join(root, "usr"))
        for name in ("bin", "lib", "lib64", "sbin"):
            src = os.path.join("/", name)
            if os.path.islink(src):
                os.symlink(os.readlink(src), os.path.join(root, name))
        procs = []

        def stop_procs():
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        self.addCleanup(stop_procs)
        chrooted = subprocess.Popen(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c",
             'mount --bind /usr "$1/usr" && exec chroot "$1" /usr/bin/sleep 60', "sh", root],
            stdin=subprocess.DEVNULL)
        procs.append(chrooted)
        wait_until(lambda: os.path.realpath("/proc/%d/exe" % chrooted.pid).endswith("/sleep"), 10,
                   what="the chrooted sleep")
        # Not a child of this test: a child stopped stays a zombie until
        # reaped, and start-stop-daemon would wait for it to go.
        cp = run(["sh", "-c", "sleep 60 </dev/null >/dev/null 2>&1 & echo $!"])
        here = int(cp.stdout)

        def stop_here():
            if pid_alive(here):
                os.kill(here, 9)
        self.addCleanup(stop_here)
        for pid, stops in ((chrooted.pid, False), (here, True)):
            cp = run(["sh", harness], env=dict(os.environ, TARGET=str(pid)))
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
            if stops:
                self.assertIn("stopping it directly", cp.stderr)
                wait_until(lambda: not pid_alive(here), 10, what="the sleep of this root stopped")
            else:
                self.assertIn("relayd: relayd (pid %d) runs outside this root" % pid, cp.stderr)
                self.assertIsNone(chrooted.poll(), "a process of another root was stopped")


# ---- on this machine --------------------------------------------------------

def pid_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def read_pid():
    try:
        with open(PIDFILE) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return None


def package_status():
    cp = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}", "relayd"])
    return cp.stdout.strip() if cp.returncode == 0 else ""


def system_install_skip_reason():
    if os.geteuid() != 0:
        return "needs root (installs the .deb on this machine)"
    if not os.path.exists(os.path.join(BUILD_DIR, "CMakeCache.txt")):
        return "no CMake build directory at %s" % BUILD_DIR
    if cache_value("RELAY_SANITIZE"):
        return "a sanitizer build (RELAY_SANITIZE=%s): not installed system-wide" % cache_value("RELAY_SANITIZE")
    if cache_value("CMAKE_INSTALL_PREFIX") != "/usr":
        return "the build's prefix is not /usr"
    st = package_status()
    if st and not st.startswith("un"):
        return "the package relayd is already on this machine (dpkg -s relayd: %s): not touching it" % st
    for path in ("/usr/bin/relayd", "/usr/bin/relayctl", "/etc/relayd", "/var/lib/relayd",
                 "/etc/init.d/relayd"):
        if os.path.lexists(path):
            return "%s exists and belongs to no package of this test: not touching it" % path
    if os.path.isdir("/run/systemd/system"):
        return "systemd runs this machine: this test drives the init script"
    for tool in ("cpack", "dpkg", "unshare", "mount", "start-stop-daemon", "update-rc.d", "invoke-rc.d"):
        if not shutil.which(tool):
            return "%s missing" % tool
    cp = run(["unshare", "--mount", "--propagation", "private", "true"])
    if cp.returncode != 0:
        return "cannot make a private mount namespace (unshare --mount): %s" % cp.stderr.strip()
    return None


class SystemInstallTest(unittest.TestCase):
    """The .deb installed on this machine, started, upgraded, purged."""

    @classmethod
    def setUpClass(cls):
        reason = system_install_skip_reason()
        if reason:
            raise unittest.SkipTest(reason)
        cls.classtmp = relaytest.make_tmpdir(cls.addClassCleanup, prefix="relaytest-pkgsys-")
        os.chmod(cls.classtmp, 0o755)
        # The package creates the system user and group relayd and, as
        # Debian does, leaves them at the purge. What this test created,
        # it deletes at the end (what was there before, it leaves).
        cls.user_before = run(["getent", "passwd", "relayd"]).returncode == 0
        cls.group_before = run(["getent", "group", "relayd"]).returncode == 0
        cls.addClassCleanup(cls.delete_created_user)

    @classmethod
    def delete_created_user(cls):
        if not cls.user_before and run(["getent", "passwd", "relayd"]).returncode == 0:
            cp = run(["userdel", "relayd"])
            if cp.returncode != 0:
                relaytest._log("cleanup: userdel relayd failed: %s" % (cp.stdout + cp.stderr))
        if not cls.group_before and run(["getent", "group", "relayd"]).returncode == 0:
            cp = run(["groupdel", "relayd"])
            if cp.returncode != 0:
                relaytest._log("cleanup: groupdel relayd failed: %s" % (cp.stdout + cp.stderr))

    def setUp(self):
        self.tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-pkgsys-")
        os.chmod(self.tmp, 0o755)
        self.pids = set()
        self.copies_before = set(glob.glob("/var/lib/relayd.purged-*"))
        # Last in, first out: the purge runs before the temp dir goes.
        self.addCleanup(self.cleanup_system)
        self.listen = relaytest.free_port()
        self.backend_port = relaytest.closed_port()
        # Policy scripts of the test's own, bind-mounted over
        # /usr/sbin/policy-rc.d in the namespace of one dpkg run.
        for name, rc in (("allow", 0), ("deny", 101)):
            path = os.path.join(self.tmp, "policy-" + name)
            with open(path, "w") as f:
                f.write("#!/bin/sh\nexit %d\n" % rc)
            os.chmod(path, 0o755)

    # ---- helpers -----------------------------------------------------------

    def dpkg(self, policy, *args, conf="old", pre=None):
        """dpkg ARGS with policy-rc.d allowing or denying, in a mount
        namespace of its own (nothing else on the machine sees it).
        conf: "old" keeps a changed conffile, "miss" installs a deleted one.
        pre: shell commands run in the namespace first (a bind mount)."""
        src = os.path.join(self.tmp, "policy-" + policy)
        if os.path.exists(POLICY):
            setup = 'mount --bind "$1" %s' % POLICY
        else:
            # No policy-rc.d here: a copy of /usr/sbin with one, in the
            # namespace only.
            sbin = os.path.join(self.tmp, "sbin")
            if not os.path.isdir(sbin):
                shutil.copytree("/usr/sbin", sbin, symlinks=True)
            shutil.copy(src, os.path.join(sbin, "policy-rc.d"))
            setup = 'mount --bind %s /usr/sbin' % sbin
        if pre:
            setup += " && " + pre
        script = setup + ' && shift && exec dpkg --force-conf%s --force-confdef "$@"' % conf
        cp = run(["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", src] + list(args),
                 env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=150)
        pid = read_pid()
        if pid:
            self.pids.add(pid)
        return cp

    def install(self, deb, policy):
        cp = self.dpkg(policy, "-i", deb)
        self.assertEqual(cp.returncode, 0, "dpkg -i:\n" + cp.stdout + cp.stderr)
        return cp

    def init(self, action):
        cp = subprocess.run(["/etc/init.d/relayd", action], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, errors="replace", timeout=90)
        pid = read_pid()
        if pid:
            self.pids.add(pid)
        return cp.returncode, cp.stdout

    def write_config(self, backend_port=None, data_dir="/var/lib/relayd"):
        """The test's /etc/relayd/relayd.yaml: its own ports; the package's
        data_dir (unless given), user and log_output (whose log must reach
        /var/log/relayd/relayd.log under the init script)."""
        os.makedirs("/etc/relayd", exist_ok=True)
        with open("/etc/relayd/relayd.yaml", "w") as f:
            f.write("data_dir: %s\nlog_level: info\nlog_output: %s\n"
                    "user: relayd\nlisten:\n  http: 127.0.0.1:%d\nbackends:\n  - name: a\n"
                    "    url: http://127.0.0.1:%d\n"
                    % (data_dir, packaged_log_output(), self.listen, backend_port or self.backend_port))

    def assert_config_mode(self):
        """/etc/relayd/relayd.yaml: 0640 root:relayd (it may hold secrets)."""
        import grp
        st = os.stat(CONFIG)
        self.assertEqual((stat.S_IMODE(st.st_mode), st.st_uid, grp.getgrgid(st.st_gid).gr_name),
                         (0o640, 0, "relayd"), CONFIG)

    def start_with_pending_write(self, policy="deny"):
        """Installed, started by the init script, one write queued for the
        backend that is down; then dpkg -r. Returns dpkg -r's result."""
        rc, out = self.init("start")
        self.assertEqual(rc, 0, out)
        self.wait_running()
        self.write("pkg v=1i 1000000000")
        cp = self.dpkg(policy, "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIsNone(self.running_pid())
        return cp

    def new_copies(self):
        return sorted(set(glob.glob("/var/lib/relayd.purged-*")) - self.copies_before)

    def purge_keeping_a_copy(self):
        """dpkg --purge (policy denies), which must succeed and keep one
        copy of the queue: (the dpkg run, the copy's path)."""
        cp = self.dpkg("deny", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        copies = self.new_copies()
        self.assertEqual(len(copies), 1, cp.stderr)
        return cp, copies[0]

    def write(self, body):
        status, _, resp = relaytest.http_request(self.listen, "POST", "/write?db=pkgtest", body)
        self.assertEqual(status, 204, resp)

    def status(self):
        cp = run(["relayctl", "-c", "/etc/relayd/relayd.yaml", "--json", "status"])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        return {b["name"]: b for b in json.loads(cp.stdout)["backends"]}

    def running_pid(self):
        pid = read_pid()
        if pid and pid_alive(pid) and os.readlink("/proc/%d/exe" % pid) == "/usr/bin/relayd":
            return pid
        return None

    def wait_running(self):
        pid = wait_until(self.running_pid, 15, what="relayd running from /usr/bin/relayd")
        wait_until(lambda: relaytest.port_is_listening(self.listen), 10, what="relayd listening")
        return pid

    def log_text(self, path="/var/log/relayd/relayd.log"):
        try:
            with open(path) as f:
                return f.read()
        except OSError:
            return ""

    def assert_nothing_left(self):
        for path in ("/var/lib/relayd", NOTE, "/var/log/relayd", "/run/relayd", "/etc/relayd", "/etc/init.d/relayd",
                     "/etc/default/relayd", "/etc/logrotate.d/relayd", "/usr/bin/relayd",
                     "/lib/systemd/system/relayd.service", "/etc/systemd/system/relayd.service",
                     "/etc/systemd/system/multi-user.target.wants/relayd.service",
                     "/var/lib/systemd/deb-systemd-helper-enabled/relayd.service.dsh-also",
                     "/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/relayd.service",
                     "/var/lib/systemd/deb-systemd-helper-masked/relayd.service"):
            self.assertFalse(os.path.lexists(path), "%s left after the purge" % path)
        self.assertEqual(glob.glob("/etc/rc?.d/[SK][0-9][0-9]relayd"), [], "rc links left")
        self.assertIn(package_status(), ("", "un"), "dpkg still knows relayd")
        self.assertNotEqual(run(["dpkg-statoverride", "--list", CONFIG]).returncode, 0,
                            "the statoverride of %s left after the purge" % CONFIG)
        # Debian leaves system users: files elsewhere may carry the ids.
        import pwd
        self.assertEqual(pwd.getpwnam("relayd").pw_dir, "/var/lib/relayd", "the user relayd stays")
        for pid in self.pids:
            self.assertFalse(pid_alive(pid), "relayd pid %d still runs" % pid)

    def cleanup_system(self):
        st = package_status()
        if st and not st.startswith("un"):
            cp = self.dpkg("allow", "--purge", "relayd")
            if cp.returncode != 0:
                relaytest._log("cleanup: dpkg --purge relayd failed: %s" % (cp.stdout + cp.stderr))
        for pid in self.pids:
            if pid_alive(pid):
                try:
                    exe = os.readlink("/proc/%d/exe" % pid)
                except OSError:
                    exe = ""
                if exe.startswith("/usr/bin/relayd"):
                    relaytest._log("cleanup: stopping relayd pid %d" % pid)
                    os.kill(pid, 15)
                    wait_until(lambda: not pid_alive(pid), 30, what="pid %d gone" % pid)
        for copy in set(glob.glob("/var/lib/relayd.purged-*")) - self.copies_before:
            shutil.rmtree(copy, ignore_errors=True)
        # What an install that failed half-way may have left.
        if not package_status() or package_status().startswith("un"):
            for path in ("/etc/relayd", "/var/lib/relayd", "/var/log/relayd", "/run/relayd"):
                shutil.rmtree(path, ignore_errors=True)
            if os.path.lexists(NOTE):
                os.unlink(NOTE)
            if run(["dpkg-statoverride", "--list", CONFIG]).returncode == 0:
                run(["dpkg-statoverride", "--remove", CONFIG])

    # ---- the tests ---------------------------------------------------------

    def test_install_remove_purge(self):
        debs = build_debs(self.classtmp)
        self.write_config()
        # policy-rc.d denies (as in a container): installed and enabled,
        # not started.
        cp = self.install(debs["relayd"], "deny")
        self.assertEqual(package_status(), "ii")
        with open("/etc/relayd/relayd.yaml") as f:
            self.assertIn("127.0.0.1:%d" % self.listen, f.read(), "dpkg kept the test's configuration")
        self.assert_config_mode()
        self.assertTrue(os.path.islink("/etc/rc2.d/S01relayd") or glob.glob("/etc/rc2.d/S??relayd"),
                        "update-rc.d defaults")
        self.assertTrue(glob.glob("/etc/rc0.d/K??relayd"))
        self.assertEqual(os.readlink("/etc/systemd/system/multi-user.target.wants/relayd.service"),
                         "/lib/systemd/system/relayd.service")
        self.assertIsNone(self.running_pid(), "started although policy-rc.d denied:\n" + cp.stderr)
        for path, mode in (("/var/lib/relayd", 0o750), ("/var/log/relayd", 0o2750)):
            self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), mode, path)

        rc, out = self.init("start")
        self.assertEqual((rc, out), (0, "Starting InfluxDB relay: relayd.\n"))
        pid = self.wait_running()
        self.write("pkg v=1i 1000000000")
        wait_until(lambda: "listening on http://127.0.0.1:%d" % self.listen in self.log_text(), 10,
                   what="the log in /var/log/relayd/relayd.log", detail=self.log_text)
        rc, out = self.init("reload")
        self.assertEqual((rc, out), (0, "Reloading InfluxDB relay configuration: relayd.\n"))
        wait_until(lambda: "configuration reloaded" in self.log_text(), 10, what="the reload in the log",
                   detail=self.log_text)
        self.assertEqual(self.status()["a"]["pending_batches"], 1)

        # dpkg -r: invoke-rc.d is denied, prerm stops relayd itself.
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("stopping it directly", cp.stderr)
        wait_until(lambda: not pid_alive(pid), 5, what="relayd gone after dpkg -r")
        self.assertEqual(package_status(), "rc")
        self.assertTrue(os.path.isfile("/var/lib/relayd/data.mdb"), "remove keeps the queue")

        # dpkg -P with the write still queued: warned, and a copy is kept.
        cp, copy = self.purge_keeping_a_copy()
        self.assertRegex(copy, r"^/var/lib/relayd\.purged-\d{8}T\d{6}$")
        self.assertEqual(stat.S_IMODE(os.stat(copy).st_mode), 0o700)
        self.assertTrue(os.path.isfile(os.path.join(copy, "data.mdb")))
        import pwd
        self.assertEqual(pwd.getpwuid(os.stat(os.path.join(copy, "data.mdb")).st_uid).pw_name, "relayd",
                         "the copy keeps its owner: moved back, relayd reads it as it is")
        self.assertIn("relayd: the queue in /var/lib/relayd still held undelivered batches:", cp.stderr)
        self.assertRegex(cp.stderr, r"\nrelayd:   backend 'a': 1 undelivered batch, \d+ bytes "
                                    r"\(1 pending, 0 held, 0 dead letters\)\n")
        self.assertIn("it was NOT deleted: it was moved to %s (mode 0700)" % copy, cp.stderr)
        self.assertIn("rm -rf /var/lib/relayd && mv %s /var/lib/relayd" % copy, cp.stderr)
        self.assertFalse(os.path.exists("/var/lib/relayd"))
        self.assertEqual(package_status(), "")
        self.assertEqual(glob.glob("/etc/rc?.d/[SK][0-9][0-9]relayd"), [])

        # The way back, as the warning says: install again, stop, move the
        # copy back, start: the write reaches the backend, now up.
        influxd = Influxd(self.addCleanup)
        influxd.port = self.backend_port
        influxd.start(self.tmp)
        influxd.create_db("pkgtest")
        self.write_config()
        self.install(debs["relayd"], "allow")
        self.wait_running()
        rc, out = self.init("stop")
        self.assertEqual(rc, 0, out)
        self.assertIsNone(self.running_pid())
        shutil.rmtree("/var/lib/relayd")
        os.rename(copy, "/var/lib/relayd")
        os.chmod("/var/lib/relayd", 0o750)
        rc, out = self.init("start")
        self.assertEqual(rc, 0, out)
        self.wait_running()
        influxd.wait_count("pkgtest", "pkg", "v", 1)
        self.write("pkg v=2i 2000000000")
        influxd.wait_count("pkgtest", "pkg", "v", 2)
        wait_until(lambda: self.status()["a"]["pending_batches"] == 0, 10, what="nothing pending")

        # dpkg -P with an empty queue (policy allows the stop): nothing left.
        cp = self.dpkg("allow", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotIn("undelivered", cp.stderr)
        self.assertNotIn("stopping it directly", cp.stderr)
        self.assertEqual(sorted(set(glob.glob("/var/lib/relayd.purged-*")) - self.copies_before), [])
        self.assert_nothing_left()

    def test_remove_then_install_again(self):
        # policy-rc.d allows: remove stops relayd through invoke-rc.d (no
        # direct stop needed); installing again after a removal is a first
        # start, not a try-restart of a stopped relayd.
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "allow")
        pid1 = self.wait_running()
        cp = self.dpkg("allow", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotIn("stopping it directly", cp.stderr)
        self.assertFalse(pid_alive(pid1))
        with open(NOTE) as f:
            self.assertRegex(f.read(), r"^state empty\n(mdb \d+ [\d.]+ /var/lib/relayd/data\.mdb\n)?$")
        st = os.lstat(NOTE)
        self.assertTrue(stat.S_ISREG(st.st_mode) and st.st_uid == 0, "root's file")
        self.install(debs["relayd"], "allow")
        pid2 = self.wait_running()
        self.assertNotEqual(pid2, pid1)
        self.assertFalse(os.path.lexists(NOTE))
        cp = self.dpkg("allow", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assert_nothing_left()

    def test_denied_upgrade_then_remove(self):
        # policy-rc.d denies: an upgrade leaves the old relayd running on
        # its replaced binary (/proc/PID/exe "... (deleted)"); dpkg -r
        # stops it all the same.
        old = build_debs(self.classtmp, "0.1.9")
        new = build_debs(self.classtmp)
        self.write_config()
        self.install(old["relayd"], "deny")
        self.assertIsNone(self.running_pid())
        rc, out = self.init("start")
        self.assertEqual(rc, 0, out)
        pid = self.wait_running()
        self.install(new["relayd"], "deny")
        self.assertTrue(pid_alive(pid), "not restarted: policy-rc.d denied it")
        self.assertEqual(os.readlink("/proc/%d/exe" % pid), "/usr/bin/relayd (deleted)")
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("relayd: the init system did not stop relayd (pid %d; policy-rc.d denied it?);" % pid,
                      cp.stderr)
        wait_until(lambda: not pid_alive(pid), 5, what="the old relayd gone after dpkg -r")
        cp = self.dpkg("deny", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotIn("undelivered", cp.stderr)
        self.assert_nothing_left()

    def test_upgrade_keeps_a_stopped_relayd_stopped(self):
        # An administrator's stop stands across an upgrade (try-restart).
        old = build_debs(self.classtmp, "0.1.9")
        new = build_debs(self.classtmp)
        self.write_config()
        self.install(old["relayd"], "allow")
        pid = self.wait_running()
        rc, out = self.init("stop")
        self.assertEqual(rc, 0, out)
        self.assertFalse(pid_alive(pid))
        self.install(new["relayd"], "allow")
        time.sleep(0.5)
        self.assertIsNone(self.running_pid(), "the upgrade started a relayd that was stopped")
        self.assertFalse(relaytest.port_is_listening(self.listen))
        cp = self.dpkg("allow", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assert_nothing_left()

    def test_purge_when_unsure_keeps_the_queue(self):
        # No note from prerm remove (here: deleted) but a queue file: the
        # purge cannot tell whether it is empty, and keeps it.
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "deny")
        rc, out = self.init("start")
        self.assertEqual(rc, 0, out)
        self.wait_running()
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        os.unlink(NOTE)
        cp, copy = self.purge_keeping_a_copy()
        self.assertIn("relayd:   (how much could not be read; the queue file exists)", cp.stderr)
        self.assertTrue(os.path.isfile(os.path.join(copy, "data.mdb")))
        self.assertFalse(os.path.exists("/var/lib/relayd"))

    def test_upgrade_and_logrotate(self):
        if not shutil.which("logrotate"):
            self.skipTest("logrotate missing")
        old = build_debs(self.classtmp, "0.1.9")
        new = build_debs(self.classtmp)
        self.write_config()
        # policy-rc.d allows: the install starts relayd.
        self.install(old["relayd"], "allow")
        self.assertEqual(package_status(), "ii")
        pid1 = self.wait_running()
        self.write("pkg v=1i 1000000000")
        self.assertEqual(self.status()["a"]["pending_batches"], 1)

        cp = self.install(new["relayd"], "allow")
        self.assertIn("Unpacking relayd (%s) over (0.1.9)" % project_version(), cp.stdout)
        pid2 = self.wait_running()
        self.assertNotEqual(pid2, pid1, "relayd was restarted by the upgrade")
        self.assertFalse(pid_alive(pid1))
        cp = run(["relayd", "--version"])
        self.assertEqual(cp.stdout, "relayd %s\n" % project_version())
        a = self.status()["a"]
        self.assertEqual((a["pending_batches"], a["pending_points"]), (1, 1), "the queue is kept")

        # The backend comes: the write kept across the upgrade is delivered.
        influxd = Influxd(self.addCleanup)
        influxd.port = self.backend_port
        influxd.start(self.tmp)
        influxd.create_db("pkgtest")
        # Skip the backoff wait (relayctl retry, as an administrator would);
        # relayd may be trying already ("not waiting to retry"), which is
        # as good.
        run(["relayctl", "-c", "/etc/relayd/relayd.yaml", "retry", "a"])
        influxd.wait_count("pkgtest", "pkg", "v", 1, timeout=40)

        # logrotate with the installed file: rotated, and relayd writes to
        # the new file (it reopened it on SIGUSR1).
        log = "/var/log/relayd/relayd.log"
        wait_until(lambda: "listening on" in self.log_text(), 10, what="a log line", detail=self.log_text)
        state = os.path.join(self.tmp, "logrotate.state")
        # logrotate accepts the file (su relayd adm: it works in relayd's
        # directory as relayd) and has nothing to complain of.
        cp = run(["logrotate", "-d", "-s", state, "/etc/logrotate.d/relayd"])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotRegex(cp.stdout + cp.stderr, r"(?im)^error|insecure")
        cp = run(["logrotate", "-f", "-s", state, "/etc/logrotate.d/relayd"])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertTrue(os.path.isfile(log + ".1"), os.listdir("/var/log/relayd"))
        wait_until(lambda: "log file '%s' reopened" % log in self.log_text(), 10,
                   what="relayd writing to the new file", detail=lambda: os.listdir("/var/log/relayd"))
        st = os.stat(log)
        import pwd
        self.assertEqual(pwd.getpwuid(st.st_uid).pw_name, "relayd")
        rc, out = self.init("reload")
        self.assertEqual(rc, 0, out)
        wait_until(lambda: "configuration reloaded" in self.log_text(), 10, what="a line after the rotation")
        self.assertNotIn("configuration reloaded", self.log_text(log + ".1"))
        self.assertEqual(self.running_pid(), pid2)

        cp = self.dpkg("allow", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertNotIn("undelivered", cp.stderr)
        self.assert_nothing_left()


    def test_purge_judges_the_configured_data_dir(self):
        # data_dir is a subdirectory of /var/lib/relayd: the queue there is
        # judged (it was "empty" because /var/lib/relayd/data.mdb is not
        # there, and the purge deleted the pending write).
        debs = build_debs(self.classtmp)
        self.write_config(data_dir="/var/lib/relayd/queue")
        self.install(debs["relayd"], "deny")
        self.start_with_pending_write()
        self.assertTrue(os.path.isfile("/var/lib/relayd/queue/data.mdb"))
        with open(NOTE) as f:
            self.assertTrue(f.read().startswith("state pending\n"))
        cp, copy = self.purge_keeping_a_copy()
        self.assertTrue(os.path.isfile(os.path.join(copy, "queue", "data.mdb")))
        self.assertIn("relayd: the queue in /var/lib/relayd still held undelivered batches:", cp.stderr)
        self.assertRegex(cp.stderr, r"\nrelayd:   backend 'a': 1 undelivered batch, \d+ bytes")
        self.assertFalse(os.path.exists("/var/lib/relayd"))

        # A data_dir outside /var/lib/relayd: the purge leaves it and says so.
        outside = os.path.join(self.tmp, "elsewhere")
        os.mkdir(outside)
        import pwd
        pw = pwd.getpwnam("relayd")
        self.write_config(data_dir=outside + "/q")
        self.install(debs["relayd"], "deny")
        os.chown(outside, pw.pw_uid, pw.pw_gid)
        self.start_with_pending_write()
        cp = self.dpkg("deny", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("relayd: the configured data_dir, %s/q, is outside /var/lib/relayd:" % outside, cp.stderr)
        self.assertIn("the purge leaves it in place", cp.stderr)
        self.assertTrue(os.path.isfile(os.path.join(outside, "q", "data.mdb")))
        self.assertEqual(len(self.new_copies()), 1, "nothing of /var/lib/relayd to keep:\n" + cp.stderr)

    def test_removal_note(self):
        # prerm's note is root's, outside the tree relayd owns: a symlink
        # relayd could plant at the old name in /var/lib/relayd is not
        # written through. And it records data.mdb as prerm saw it: a
        # queue file that appears after the removal is kept by the purge.
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "deny")
        target = os.path.join(self.tmp, "target")
        with open(target, "w") as f:
            f.write("untouched\n")
        os.symlink(target, "/var/lib/relayd/.package-removal")
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(target) as f:
            self.assertEqual(f.read(), "untouched\n")
        st = os.lstat(NOTE)
        self.assertTrue(stat.S_ISREG(st.st_mode) and st.st_uid == 0, "root's file")
        with open(NOTE) as f:
            self.assertEqual(f.read(), "state empty\n", "never started: no queue file")
        with open("/var/lib/relayd/data.mdb", "wb") as f:
            f.write(b"\0" * 4096)
        cp, copy = self.purge_keeping_a_copy()
        self.assertIn("a file there changed after the package was removed", cp.stderr)
        self.assertTrue(os.path.isfile(os.path.join(copy, "data.mdb")))
        with open(target) as f:
            self.assertEqual(f.read(), "untouched\n")
        self.assertFalse(os.path.lexists(NOTE))

    def test_purge_keeps_a_file_set_aside(self):
        # relayctl's advice for a damaged queue is to move data.mdb aside
        # as data.mdb.damaged: the only copy of what salvage could not
        # read. prerm looks only at the configured queue (empty here), so
        # any other file makes the state unknown and the purge keeps it.
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "deny")
        with open("/var/lib/relayd/data.mdb.damaged", "wb") as f:
            f.write(b"\1" * 8192)
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(NOTE) as f:
            note = f.read()
        self.assertTrue(note.startswith("state unknown\n"), note)
        self.assertIn("/var/lib/relayd/data.mdb.damaged: not looked at", note)
        cp, copy = self.purge_keeping_a_copy()
        self.assertIn("relayd: it was NOT deleted", cp.stderr)
        self.assertTrue(os.path.isfile(os.path.join(copy, "data.mdb.damaged")))

    def test_purge_on_a_mount_point(self):
        # /var/lib/relayd is a mount point (here: bound onto itself in the
        # purge's namespace): it cannot be moved; the purge does not fail,
        # the queue stays where it is and the purge says so.
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "deny")
        self.start_with_pending_write()
        cp = self.dpkg("deny", "--purge", "relayd", pre="mount --bind /var/lib/relayd /var/lib/relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("relayd: it was NOT deleted: /var/lib/relayd could not be moved (a mount point?),",
                      cp.stderr)
        self.assertTrue(os.path.isfile("/var/lib/relayd/data.mdb"))
        self.assertEqual(self.new_copies(), [])
        self.assertEqual(package_status(), "")

    def test_admin_statoverride_and_empty_queue_on_a_mount_point(self):
        # A statoverride the administrator set before is theirs: the
        # package neither replaces nor removes it. An empty queue on a
        # mount point: its files go, the directory stays, the purge says so.
        self.write_config()
        cp = run(["dpkg-statoverride", "--update", "--add", "root", "root", "0444", CONFIG])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        debs = build_debs(self.classtmp)
        self.install(debs["relayd"], "deny")
        self.assertEqual(run(["dpkg-statoverride", "--list", CONFIG]).stdout, "root root 444 %s\n" % CONFIG)
        self.assertEqual(stat.S_IMODE(os.stat(CONFIG).st_mode), 0o444)
        rc, out = self.init("start")
        self.assertEqual(rc, 0, out)
        self.wait_running()
        cp = self.dpkg("deny", "-r", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertTrue(os.path.isfile("/var/lib/relayd/data.mdb"))
        cp = self.dpkg("deny", "--purge", "relayd", pre="mount --bind /var/lib/relayd /var/lib/relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assertIn("relayd: /var/lib/relayd is a mount point: its contents are removed, the directory stays.",
                      cp.stderr)
        self.assertEqual(os.listdir("/var/lib/relayd"), [])
        self.assertEqual(self.new_copies(), [])
        self.assertEqual(run(["dpkg-statoverride", "--list", CONFIG]).stdout, "root root 444 %s\n" % CONFIG,
                         "the administrator's statoverride stays")
        run(["dpkg-statoverride", "--remove", CONFIG])

    def test_config_mode_across_upgrade(self):
        # 0640 root:relayd on install, and still after an upgrade that
        # replaces the conffile (a statoverride, which dpkg applies to
        # every copy it installs); gone after the purge.
        old = build_debs(self.classtmp, "0.1.9")
        new = build_debs(self.classtmp)
        self.write_config()
        self.install(old["relayd"], "deny")
        self.assert_config_mode()
        cp = run(["dpkg-statoverride", "--list", CONFIG])
        self.assertEqual(cp.stdout, "root relayd 640 %s\n" % CONFIG)
        # The administrator deleted the file; dpkg --force-confmiss
        # installs the package's copy again.
        os.unlink(CONFIG)
        cp = self.dpkg("deny", "-i", new["relayd"], conf="miss")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(CONFIG) as f:
            self.assertNotIn("127.0.0.1:%d" % self.listen, f.read(), "dpkg installed the package's file")
        self.assert_config_mode()
        cp = self.dpkg("deny", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assert_nothing_left()

    def test_upgrade_from_0_1_0_does_not_enable(self):
        # 0.1.0 (its scripts from commit f25746f) never enabled relayd: an
        # upgrade from it leaves it disabled at boot (K links only, no
        # wants-link) and does not start it.
        control = old_scripts(self.classtmp)
        if not control:
            self.skipTest("git or commit %s unavailable" % OLD_COMMIT)
        old = build_debs(self.classtmp, "0.1.0", control=control)
        new = build_debs(self.classtmp)
        self.write_config()
        self.install(old["relayd"], "allow")
        self.assertIsNone(self.running_pid())
        self.assertEqual(glob.glob("/etc/rc?.d/[SK][0-9][0-9]relayd"), [], "0.1.0 registered nothing")
        # The administrator gave the configuration to another group (the
        # user of another service reads it): the upgrade leaves that be.
        adm_gid = int(run(["getent", "group", "adm"]).stdout.split(":")[2])
        os.chown(CONFIG, 0, adm_gid)
        cp = self.install(new["relayd"], "allow")
        self.assertIn("upgraded from 0.1.0, which did not enable relayd at boot", cp.stderr)
        self.assertIn("relayd: %s keeps the owner and mode you gave it" % CONFIG, cp.stderr)
        st = os.stat(CONFIG)
        self.assertEqual((st.st_uid, st.st_gid), (0, adm_gid))
        self.assertEqual(run(["dpkg-statoverride", "--list", CONFIG]).stdout, "")
        self.assertEqual(glob.glob("/etc/rc?.d/S[0-9][0-9]relayd"), [], "enabled at boot by the upgrade")
        self.assertTrue(glob.glob("/etc/rc2.d/K??relayd"), "registered, disabled")
        self.assertFalse(os.path.lexists("/etc/systemd/system/multi-user.target.wants/relayd.service"))
        time.sleep(0.5)
        self.assertIsNone(self.running_pid(), "started by the upgrade")
        cp = self.dpkg("allow", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        self.assert_nothing_left()

    def test_install_with_the_group_alone(self):
        # A group relayd without the user: adduser --group would refuse
        # it; the postinst uses it (--ingroup).
        if self.user_before or self.group_before:
            self.skipTest("the user or group relayd exists on this machine already (not this test's)")
        if run(["getent", "passwd", "relayd"]).returncode == 0:
            run(["userdel", "relayd"])
        if run(["getent", "group", "relayd"]).returncode != 0:
            cp = run(["groupadd", "--system", "relayd"])
            self.assertEqual(cp.returncode, 0, cp.stderr)
        debs = build_debs(self.classtmp)
        self.write_config()
        self.install(debs["relayd"], "deny")
        import grp
        import pwd
        self.assertEqual(pwd.getpwnam("relayd").pw_gid, grp.getgrnam("relayd").gr_gid)
        cp = self.dpkg("deny", "--purge", "relayd")
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)


if __name__ == "__main__":
    relaytest.main(require=("relayd",))
