#!/usr/bin/env python3
"""
Packaging: `cmake --install` into a staging directory puts every file
where the init script, the unit and the man pages say (binaries in the
prefix's bin, /etc/relayd/relayd.yaml, /etc/init.d/relayd,
/etc/default/relayd, the unit under /lib/systemd/system, man5 and man8,
the example config under share/doc/relayd, the influxdb-relay
converter under share/relayd), and the installed scripts
name the installed binary. `cpack -G DEB` on the same build directory
(output in a temp dir, a second or two) builds a .deb whose contents
(`dpkg-deb -c`) are those files, whose control (`dpkg-deb -I`) lists the
conffiles under /etc, Depends from dpkg-shlibdeps plus adduser, and
maintainer scripts that parse; the postinst creates the relayd user and
/var/lib/relayd, the postrm purge removes the queue and logs. The unit
passes `systemd-analyze verify`.

The build directory is the one relayd under test was built in
(RELAYD_BIN's parent's parent).
"""

import os
import re
import shutil
import stat
import subprocess
import unittest

import relaytest
from relaytest import RELAYD_BIN

BUILD_DIR = os.path.dirname(os.path.dirname(os.path.abspath(RELAYD_BIN)))


def cache_value(name):
    with open(os.path.join(BUILD_DIR, "CMakeCache.txt")) as f:
        for line in f:
            m = re.match(r"%s:[A-Z]+=(.*)$" % re.escape(name), line.strip())
            if m:
                return m.group(1)
    return None


def run(cmd, **kw):
    return subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          errors="replace", timeout=120, **kw)


class PackagingTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(os.path.join(BUILD_DIR, "CMakeCache.txt")):
            self.skipTest("no CMake build directory at %s" % BUILD_DIR)
        self.tmp = relaytest.make_tmpdir(self.addCleanup, prefix="relaytest-pkg-")
        self.prefix = cache_value("CMAKE_INSTALL_PREFIX").lstrip("/")
        self.expected = {
            # path in the package/staging dir -> executable?
            self.prefix + "/bin/relayd": True,
            self.prefix + "/bin/relayctl": True,
            self.prefix + "/share/man/man8/relayd.8": False,
            self.prefix + "/share/man/man8/relayctl.8": False,
            self.prefix + "/share/man/man5/relayd.yaml.5": False,
            self.prefix + "/share/doc/relayd/config.example.yaml": False,
            self.prefix + "/share/relayd/migrate-influxdb-relay": True,
            "etc/relayd/relayd.yaml": False,
            "etc/init.d/relayd": True,
            "etc/default/relayd": False,
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
        self.assertIn("ExecStart=%s/relayd -c /etc/relayd/relayd.yaml" % bindir, unit)
        self.assertIn("Type=notify", unit)
        with open(os.path.join(stage, "etc/init.d/relayd")) as f:
            self.assertIn("DAEMON=%s/relayd\n" % bindir, f.read())
        # The packaged configuration is valid and says what the package sets up.
        conf = os.path.join(stage, "etc/relayd/relayd.yaml")
        cp = relaytest.check_config(conf)
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        with open(conf) as f:
            text = f.read()
        for line in ("data_dir: /var/lib/relayd", "log_output: syslog", "user: relayd"):
            self.assertIn(line + "\n", text)

        analyze = shutil.which("systemd-analyze")
        if analyze:
            # verify needs ExecStart to exist: point it at the binary under test.
            unit_copy = os.path.join(self.tmp, "relayd.service")
            with open(unit_copy, "w") as f:
                f.write(unit.replace("%s/relayd" % bindir, os.path.abspath(RELAYD_BIN)))
            cp = run([analyze, "verify", "--man=no", unit_copy])
            self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)

    def test_deb(self):
        for tool in ("cpack", "dpkg-deb", "dpkg-shlibdeps"):
            if not shutil.which(tool):
                self.skipTest("%s missing" % tool)
        out = os.path.join(self.tmp, "out")
        os.mkdir(out)
        cp = run(["cpack", "-G", "DEB", "--config", os.path.join(BUILD_DIR, "CPackConfig.cmake"), "-B", out])
        self.assertEqual(cp.returncode, 0, cp.stdout + cp.stderr)
        debs = [f for f in os.listdir(out) if f.endswith(".deb")]
        self.assertEqual(len(debs), 1, os.listdir(out))
        deb = os.path.join(out, debs[0])
        self.assertRegex(debs[0], r"^relayd_\d+\.\d+\.\d+_[a-z0-9]+\.deb$")

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

        cp = run(["dpkg-deb", "-I", deb])
        self.assertEqual(cp.returncode, 0, cp.stderr)
        info = cp.stdout
        fields = dict(re.findall(r"^ ([A-Z][A-Za-z-]+): (.*)$", info, re.M))
        self.assertEqual(fields.get("Package"), "relayd")
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
        self.assertEqual(conffiles, ["/etc/default/relayd", "/etc/init.d/relayd", "/etc/relayd/relayd.yaml"])
        for c in conffiles:
            self.assertIn(c.lstrip("/"), listing, "a conffile the package does not ship")
        for script in ("postinst", "prerm", "postrm"):
            path = os.path.join(ctl, script)
            self.assertTrue(os.stat(path).st_mode & stat.S_IXUSR, script)
            cp = run(["sh", "-n", path])
            self.assertEqual(cp.returncode, 0, "%s: %s" % (script, cp.stderr))
        with open(os.path.join(ctl, "postinst")) as f:
            postinst = f.read()
        self.assertIn("adduser --quiet --system --group --home /var/lib/relayd --no-create-home", postinst)
        self.assertIn("install -d -o relayd -g relayd -m 0750 /var/lib/relayd", postinst)
        code = "\n".join(l for l in postinst.splitlines() if not l.lstrip().startswith("#"))
        self.assertNotRegex(code, r"systemctl (enable|start)|update-rc\.d|invoke-rc\.d",
                            "the package enables and starts nothing")
        with open(os.path.join(ctl, "postrm")) as f:
            self.assertRegex(f.read(), r"purge\)\n\s+rm -rf /var/lib/relayd /var/log/relayd")


if __name__ == "__main__":
    relaytest.main(require=("relayd",))
