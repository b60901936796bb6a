"""Issue 2: the command line. `berthd -t` on good and bad configs (exit 78, every error as
FILE:LINE: message, plugin option errors with their line, wrong-ABI and missing-symbol
plugins named), -V, --help, usage errors (64), and a start that fails on its config."""
import os
import pwd
import re
import shutil
import subprocess
import textwrap
import unittest

from harness import (BERTHD, IO_TIMEOUT, PLUGIN_DIR, DaemonTestCase, built_test_plugin,
                     check_config, sanitizer_reports)

EXIT_USAGE = 64
EXIT_CONFIG = 78
ERROR_LINE = re.compile(r"^(?P<file>/[^:]+):(?P<line>\d+): (?P<msg>.+)$")


def run(*argv):
    r = subprocess.run([BERTHD, *argv], capture_output=True, text=True, timeout=60)
    reports = sanitizer_reports(r.stdout + r.stderr)
    if reports:
        raise AssertionError("sanitizer report from berthd:\n" + "\n\n".join(reports))
    return r.returncode, r.stdout, r.stderr


class ConfigHelpers(DaemonTestCase):
    """Writing configs and reading `berthd -t`'s FILE:LINE: messages (no tests of its own)."""

    def write(self, name, text):
        path = os.path.join(self.tmp, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def line_of(self, path, needle):
        """The number of the first line of path that holds needle (or equals it, stripped,
        when exact)."""
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if needle in line:
                    return n
        self.fail("%r not in %s" % (needle, path))

    def errors(self, out):
        """{(file, line): message} of every FILE:LINE: line; fails on any other stderr line
        but the closing count."""
        found = {}
        for line in out.splitlines():
            m = ERROR_LINE.match(line)
            if m:
                found[(m["file"], int(m["line"]))] = m["msg"]
            elif not re.match(r"^/\S+: \d+ errors?$", line):
                self.fail("not FILE:LINE: message: %r\nin:\n%s" % (line, out))
        return found

    def daemon_section(self):
        return f"""\
            [daemon]
            workers = 1
            plugin_dir = {PLUGIN_DIR}
            admin = {os.path.join(self.tmp, "admin.sock")}
            """


class ConfigCheck(ConfigHelpers):

    def test_good_config(self):
        path = self.write("good.conf", self.daemon_section() + f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:0
            handler = echo

            [good]
            protocol = unix
            address = {self.tmp}/good.sock
            handler = {built_test_plugin("good")}
            greeting = hi there
            slow = no
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, 0, out)
        self.assertIn("configuration OK", out)
        # -t binds nothing and leaves nothing behind.
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "good.sock")))
        self.assertFalse(os.path.exists(os.path.join(self.tmp, "admin.sock")))

    def test_every_config_error_with_its_line(self):
        path = self.write("bad.conf", self.daemon_section() + """\
            colour = blue
            shutdown_timeout = 5 parsecs

            [a]
            protocol = tcp
            address = 127.0.0.1:7001
            handler = echo
            concurrency = lots

            [b]
            protocol = sctp
            address = 127.0.0.1:7002
            handler = echo

            [c]
            protocol = tcp
            address = 127.0.0.1:7001  ; the same as [a]
            handler = no-such-plugin

            [d]
            protocol = udp
            address = [::1:7004
            handler = echo
            idle_timeout = soon
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        errs = self.errors(out)
        expect = {
            self.line_of(path, "colour"): "colour",
            self.line_of(path, "parsecs"): "shutdown_timeout",
            self.line_of(path, "lots"): "concurrency",
            self.line_of(path, "sctp"): "protocol",
            self.line_of(path, "the same as [a]"): "already used",
            self.line_of(path, "no-such-plugin"): "no-such-plugin",
            self.line_of(path, "[::1:7004"): "address",
            self.line_of(path, "soon"): "idle_timeout",
        }
        for line, word in expect.items():
            self.assertIn((path, line), errs, "no error for line %d:\n%s" % (line, out))
            self.assertIn(word, errs[(path, line)])
        self.assertEqual(len(errs), len(expect), out)
        self.assertIn("%d errors" % len(expect), out)

    def test_plugin_errors_with_their_line_and_file(self):
        path = self.write("plugins.conf", self.daemon_section() + f"""
            [a]
            protocol = tcp
            address = 127.0.0.1:7001
            handler = {built_test_plugin("good")}
            greeting = reject-me

            [b]
            protocol = tcp
            address = 127.0.0.1:7002
            handler = {built_test_plugin("badabi")}

            [c]
            protocol = tcp
            address = 127.0.0.1:7003
            handler = {built_test_plugin("nosym")}

            [d]
            protocol = tcp
            address = 127.0.0.1:7004
            handler = echo
            colour = red

            [e]
            protocol = udp
            address = 127.0.0.1:7005
            handler = {built_test_plugin("good")}
            greeting =
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        errs = self.errors(out)
        at = {k: (path, self.line_of(path, k)) for k in
              ("reject-me", "badabi.so", "nosym.so", "colour", "greeting =\n")}
        self.assertIn("good plugin refuses greeting 'reject-me'", errs[at["reject-me"]])
        self.assertIn(built_test_plugin("badabi"), errs[at["badabi.so"]])
        self.assertIn("ABI", errs[at["badabi.so"]])
        self.assertIn(built_test_plugin("nosym"), errs[at["nosym.so"]])
        self.assertIn("berth_handler", errs[at["nosym.so"]])
        self.assertIn("colour", errs[at["colour"]])
        self.assertIn("greeting", errs[at["greeting =\n"]])
        self.assertEqual(len(errs), 5, out)

    def test_error_in_an_included_file_names_that_file(self):
        inc = self.write("conf.d/20-bad.conf", """\
            [inc]
            protocol = tcp
            address = 127.0.0.1:7010
            handler = echo
            backlog = -3
            """)
        self.write("conf.d/10-good.conf", """\
            [fine]
            protocol = tcp
            address = 127.0.0.1:7011
            handler = echo
            """)
        path = self.write("main.conf", self.daemon_section() +
                          "include = %s/conf.d/*.conf\n" % self.tmp)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        errs = self.errors(out)
        self.assertIn((inc, 5), errs, out)
        self.assertIn("backlog", errs[(inc, 5)])
        self.assertEqual(len(errs), 1, out)

    def test_missing_config_file(self):
        path = os.path.join(self.tmp, "nothing-here.conf")
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn(path, out)

    def test_start_with_bad_config_exits_78_with_file_and_line(self):
        path = self.write("bad.conf", self.daemon_section() + """
            [a]
            protocol = tcp
            address = 127.0.0.1:99999
            handler = echo
            """)
        r = subprocess.run([BERTHD, "-c", path], capture_output=True, text=True, timeout=60)
        self.assertEqual(r.returncode, EXIT_CONFIG, r.stderr)
        self.assertRegex(r.stderr, "%s:%d: .*port" % (re.escape(path),
                                                      self.line_of(path, "99999")))

    def test_start_with_bad_plugin_exits_78_naming_it(self):
        path = self.write("bad.conf", self.daemon_section() + f"""
            [a]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("badabi")}
            """)
        r = subprocess.run([BERTHD, "-c", path], capture_output=True, text=True,
                           timeout=IO_TIMEOUT * 3)
        self.assertEqual(r.returncode, EXIT_CONFIG, r.stderr)
        self.assertIn("%s:%d: " % (path, self.line_of(path, "badabi.so")), r.stderr)
        self.assertIn(built_test_plugin("badabi"), r.stderr)


class PluginTrust(ConfigHelpers):
    """Whoever can write a plugin runs code as berthd: a plugin, or its folder, writable by
    group or others, or owned by another user, is refused with a message naming the file."""

    def plugin_in(self, folder, mode=0o755, folder_mode=0o755):
        d = os.path.join(self.tmp, folder)
        os.makedirs(d, exist_ok=True)
        path = os.path.join(d, "echo.so")
        shutil.copyfile(os.path.join(PLUGIN_DIR, "echo.so"), path)
        os.chmod(path, mode)
        os.chmod(d, folder_mode)
        conf = self.write("trust.conf", self.daemon_section() + f"""
            [e]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {path}
            """)
        return path, conf

    def assert_refused(self, conf, path, why):
        rc, out, err = run("-t", "-c", conf)
        self.assertEqual(rc, EXIT_CONFIG, out + err)
        line = self.line_of(conf, "handler =")
        msg = self.errors(err)[(conf, line)]
        self.assertIn(path + ": refusing plugin: " + why, msg)

    def test_world_writable_plugin_is_refused(self):
        path, conf = self.plugin_in("ww", mode=0o666)
        self.assert_refused(conf, path, "the file is writable by everyone (mode 0666)")

    def test_group_writable_folder_is_refused(self):
        path, conf = self.plugin_in("gw", folder_mode=0o775)
        self.assert_refused(conf, path, "its folder is writable by its group (mode 0775)")

    def test_sticky_world_writable_folder_is_accepted(self):
        path, conf = self.plugin_in("sticky", folder_mode=0o1777)
        rc, out, err = run("-t", "-c", conf)
        self.assertEqual(rc, 0, out + err)

    @unittest.skipUnless(os.geteuid() == 0, "needs root to give the file to another user")
    def test_plugin_owned_by_another_user_is_refused(self):
        path, conf = self.plugin_in("other")
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
        self.assert_refused(conf, path, "the file is owned by uid %d" % nobody.pw_uid)


def reachable_by(path, uid, gid):
    """True if every folder from / down to path lets uid/gid (not root) search it."""
    parts = os.path.abspath(path).split(os.sep)
    for i in range(1, len(parts) + 1):
        st = os.stat(os.sep + os.path.join(*parts[1:i]) if i > 1 else os.sep)
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return False
    return True


@unittest.skipUnless(os.geteuid() == 0, "needs root to drop to another user")
class CheckAsUser(ConfigHelpers):
    """berthd -t as root with `user` set runs the plugins' checks as that user, as a worker
    would: an upload dir only root may enter fails here, not later in the workers.

    `nobody` must reach the plugins, and the build tree may be where it cannot (a clone
    under /root, mode 0700): the plugin is copied to this test's own folder."""

    def setUp(self):
        super().setUp()
        nobody = pwd.getpwnam("nobody")
        os.chmod(self.tmp, 0o755)
        if not reachable_by(self.tmp, nobody.pw_uid, nobody.pw_gid):
            self.skipTest("nobody cannot reach the temporary folder %s (TMPDIR)" % self.tmp)
        self.plugins = os.path.join(self.tmp, "plugins")
        os.mkdir(self.plugins, 0o755)
        shutil.copy(os.path.join(PLUGIN_DIR, "upload.so"), self.plugins)

    def daemon_section(self):
        return super().daemon_section().replace("plugin_dir = " + PLUGIN_DIR,
                                                "plugin_dir = " + self.plugins)

    def config(self, user):
        up = os.path.join(self.tmp, "rootonly", "up")
        os.makedirs(up)
        os.chmod(os.path.dirname(up), 0o700)
        os.chmod(self.tmp, 0o755)  # the plugin folder and config stay reachable
        return self.write("user-%s.conf" % user, self.daemon_section() + f"""
            user = {user}
            [up]
            protocol = tcp
            address = 127.0.0.1:0
            handler = upload
            dir = {up}
            """), up

    def test_as_nobody_a_root_only_dir_is_an_error_at_its_line(self):
        conf, up = self.config("nobody")
        rc, out, err = run("-t", "-c", conf)
        self.assertEqual(rc, EXIT_CONFIG, out + err)
        msg = self.errors(err)[(conf, self.line_of(conf, "dir = " + up))]
        self.assertIn(up, msg)
        self.assertIn("Permission denied", msg)

    def test_as_root_the_same_dir_is_fine(self):
        conf, _ = self.config("root")
        rc, out, err = run("-t", "-c", conf)
        self.assertEqual(rc, 0, out + err)


class CommandLine(unittest.TestCase):

    def test_version(self):
        rc, out, err = run("-V")
        self.assertEqual(rc, 0, err)
        self.assertRegex(out, r"^berthd \d+\.\d+\.\d+ \(plugin ABI 1\)$")
        rc2, out2, _ = run("--version")
        self.assertEqual((rc2, out2), (rc, out))

    def test_help(self):
        for flag in ("--help", "-h"):
            rc, out, err = run(flag)
            self.assertEqual(rc, 0, err)
            self.assertIn("usage: berthd", out)
            for opt in ("-c", "-t", "-V"):
                self.assertIn(opt, out)

    def test_usage_errors_exit_64(self):
        for argv in (["-x"], ["--no-such-option"], ["-c"], ["stray-argument"],
                     ["-t", "-c", "/dev/null", "extra"]):
            rc, out, err = run(*argv)
            self.assertEqual(rc, EXIT_USAGE, "%s: %s" % (argv, err))
            self.assertIn("usage:", err, argv)
            self.assertEqual(out, "", argv)


if __name__ == "__main__":
    unittest.main()
