"""Issue 15: writing plugins. A plugin in C++ loaded and driven; declared options parsed by
the host (values handed over, errors at FILE:LINE); `berthd --plugin-help`; timer_restart;
the error messages that point at the cause (abi_version 0, no symbol, a crash in load() or
check_option under -t and at reload named by plugin and hook, a .so overwritten in place)."""
import os
import re
import shutil
import socket
import subprocess
import textwrap
import time

from harness import (BERTHD, BUILD, IO_TIMEOUT, PLUGIN_DIR, Berthd, DaemonTestCase, built_test_plugin,
                     check_config, line_request, recv_until, sanitizer_reports, stream_connect)

EXIT_CONFIG = 78
BERTHCTL = os.path.join(BUILD, "berthctl")


def berthd(*argv, env=None):
    """berthd's exit code and output; sanitizer reports fail, except the SEGV of a plugin
    crashing on purpose (ASan reports it before the process dies)."""
    r = subprocess.run([BERTHD, *argv], capture_output=True, text=True, timeout=120,
                       env=dict(os.environ, **(env or {})))
    out = r.stdout + r.stderr
    reports = [x for x in sanitizer_reports(out) if "SEGV" not in x.splitlines()[0]]
    if reports:
        raise AssertionError("sanitizer report from berthd:\n" + "\n\n".join(reports))
    return r.returncode, out


class SdkCase(DaemonTestCase):

    def conf(self, listeners, workers=1):
        path = os.path.join(self.tmp, "sdk.conf")
        with open(path, "w") as f:
            f.write(textwrap.dedent(f"""\
                [daemon]
                workers = {workers}
                plugin_dir = {PLUGIN_DIR}
                admin = {self.tmp}/admin.sock
                """) + textwrap.dedent(listeners))
        return path

    def line_of(self, path, needle):
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if needle in line:
                    return n
        self.fail("%r not in %s" % (needle, path))


class CxxPlugin(SdkCase):

    def test_cxx_plugin_serves_with_parsed_options(self):
        d = self.daemon(f"""
            [cxx]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("cxx")}
            greeting = hi
            shout = yes
            repeat = 2
            max_line = 4K
            peers = 10.0.0.0/8, [::1]:80
            log_path = /var/log/x
            style = upper

            [defaults]
            protocol = tcp
            address = 127.0.0.2:0
            handler = {built_test_plugin("cxx")}
            """, wait=True)
        c = stream_connect(socket.AF_INET, ("127.0.0.1", d.port("cxx")))
        try:
            c.sendall(b"abc\n")
            self.assertEqual(recv_until(c, b"\n"), b"HI ABC\n")
            self.assertEqual(recv_until(c, b"\n"), b"HI ABC\n")
            self.assertEqual(line_request(c, "opts"),
                             "greeting=hi shout=1 repeat=2 idle_close=0 max_line=4096 peers=2 "
                             "log_path=/var/log/x style=upper\n")
        finally:
            c.close()
        c = stream_connect(socket.AF_INET, ("127.0.0.2", d.port("defaults")))
        try:
            self.assertEqual(line_request(c, "opts"),
                             "greeting=hello shout=0 repeat=1 idle_close=0 max_line=1024 "
                             "peers=0 log_path=(none) style=plain\n")
        finally:
            c.close()
        # The plugin's version is in the log of the generation that loaded it.
        d.wait_log(r"generation 1 loaded \S*cxx\.so: plugin 'cxx' version 2\.5-cxx")

    def test_timer_restart_pushes_the_idle_timer_back(self):
        """idle_close = 2s, restarted by each read: sent at t0 and t0 + 1s, the timer fires no
        sooner than 2s after the second read (without the restart: 1s after it)."""
        d = self.daemon(f"""
            [cxx]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("cxx")}
            idle_close = 2s
            """, wait=True)
        c = stream_connect(socket.AF_INET, ("127.0.0.1", d.port("cxx")), timeout=30)
        try:
            self.assertEqual(line_request(c, "one"), "hello one\n")
            time.sleep(1.0)
            c.sendall(b"two\n")
            second = time.monotonic()
            self.assertEqual(recv_until(c, b"\n", timeout=30), b"hello two\n")
            self.assertEqual(recv_until(c, b"\n", timeout=30), b"bye after 2 restarts\n")
            self.assertGreaterEqual(time.monotonic() - second, 1.9)
        finally:
            c.close()


class DeclaredOptions(SdkCase):

    def test_every_bad_value_at_its_line(self):
        path = self.conf(f"""
            [cxx]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("cxx")}
            shout = loudly
            repeat = 6
            idle_close = soon
            max_line = 2M
            peers = 10.0.0.1/8
            log_path = relative/path
            style = sideways
            colour = blue
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        expect = {
            "loudly": "shout: want yes or no, not 'loudly'",
            "repeat = 6": "repeat: want an integer 1..5, not '6'",
            "soon": "idle_close: want a duration",
            "2M": "max_line: want a size 16..1048576",
            "10.0.0.1/8": "peers: '10.0.0.1/8' is not an address or CIDR with an optional :port",
            "relative/path": "log_path: want an absolute path",
            "sideways": "style: want one of plain|upper, not 'sideways'",
            "colour": "unknown key 'colour' (plugin 'cxx' takes: greeting, shout, repeat,",
        }
        for needle, msg in expect.items():
            want = "%s:%d: %s" % (path, self.line_of(path, needle), msg)
            self.assertIn(want, out)
        # The key once: the host adds FILE:LINE only.
        self.assertNotRegex(out, r"(\w+): \1:")

    def test_check_option_message_has_the_key_once(self):
        path = self.conf(f"""
            [good]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("good")}
            greeting = reject-me
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("%s:%d: good plugin refuses greeting 'reject-me'"
                      % (path, self.line_of(path, "reject-me")), out)

    def test_required_option_at_the_section(self):
        path = self.conf("""
            [up]
            protocol = tcp
            address = 127.0.0.1:0
            handler = upload
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("%s:%d: [up]: dir is required by plugin 'upload'"
                      % (path, self.line_of(path, "[up]")), out)

    def test_plugin_help_lists_every_socks5_option(self):
        rc, out = berthd("--plugin-help", "socks5", "-c", self.conf(""))
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"^socks5 \S+ \(plugin ABI 1, descriptor \d+ bytes\)")
        for key in ("auth", "users", "allow_dest", "deny_dest", "handshake_timeout",
                    "connect_timeout", "relay_idle_timeout", "auth_fail_limit",
                    "auth_fail_window", "auth_fail_block"):
            self.assertRegex(out, r"(?m)^  %s +\S" % key)
        self.assertIn("enum none|password|certificate, default none", out)
        self.assertRegex(out, r"(?m)^  auth_fail_limit +integer 0\.\.100000, default 5$")

    def test_plugin_help_by_path_upload_and_echo(self):
        rc, out = berthd("--plugin-help", built_test_plugin("cxx"))
        self.assertEqual(rc, 0, out)
        self.assertIn("cxx 2.5-cxx (plugin ABI 1", out)
        self.assertRegex(out, r"(?m)^  repeat +integer 1\.\.5, default 1$")
        self.assertIn("the longest line echoed", out)
        rc, out = berthd("--plugin-help", "upload", "-c", self.conf(""))
        self.assertEqual(rc, 0, out)
        self.assertRegex(out, r"(?m)^  dir +path, required$")
        self.assertRegex(out, r"(?m)^  fsync +bool, default yes$")
        rc, out = berthd("--plugin-help", "echo", "-c", self.conf(""))
        self.assertEqual(rc, 0, out)
        self.assertIn("(no declared options)", out)
        rc, out = berthd("--plugin-help", "no-such-plugin", "-c", self.conf(""))
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("no-such-plugin.so", out)


class ErrorMessages(SdkCase):

    def test_abi_version_0_says_not_initialised(self):
        path = self.conf(f"""
            [x]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("noinit")}
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("noinit.so: plugin descriptor is not initialised (abi_version 0): start "
                      "it with BERTH_HANDLER = { BERTH_HANDLER_INIT(\"name\"), ... }", out)

    def test_no_symbol_names_the_usual_causes(self):
        path = self.conf(f"""
            [x]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("nosym")}
            """)
        rc, out = check_config(path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("no symbol 'berth_handler' exported", out)
        self.assertIn("hidden visibility", out)
        self.assertIn('C++ without extern "C"', out)

    def crashy_conf(self, extra=""):
        return self.conf(f"""
            [crash]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            {extra}
            """)

    def test_crash_in_load_under_t_names_plugin_and_hook(self):
        flag = os.path.join(self.tmp, "crash-load")
        open(flag, "w").close()
        path = self.crashy_conf()
        rc, out = berthd("-t", "-c", path, env={"CRASHY_LOAD_IF": flag})
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertRegex(out, r"%s:%d: handler '\S+crashy\.so': the plugin crashed \((signal 11"
                         r"|exit status \d+)[^)]*\) in crashy\.so load\(\), checking \[crash\]"
                         % (re.escape(path), self.line_of(path, "handler =")))
        # Without the flag the same config is fine.
        os.unlink(flag)
        rc, out = berthd("-t", "-c", path, env={"CRASHY_LOAD_IF": flag})
        self.assertEqual(rc, 0, out)

    def test_crash_in_check_option_under_t_names_plugin_and_hook(self):
        path = self.crashy_conf("crash_in = check_option")
        rc, out = berthd("-t", "-c", path)
        self.assertEqual(rc, EXIT_CONFIG, out)
        self.assertIn("in crashy.so check_option(), checking [crash]", out)

    def test_crash_in_load_at_reload_names_plugin_and_hook(self):
        self.expect_crash_report(r"SEGV")
        flag = os.path.join(self.tmp, "crash-load")
        d = Berthd(self.tmp, f"""
            [crash]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {built_test_plugin("crashy")}
            """, workers=2, env={"CRASHY_LOAD_IF": flag})
        self._daemons.append(d)
        d.start(wait=True)
        open(flag, "w").close()
        self.assertFalse(d.reload())
        d.wait_log(r"worker \d of generation 2 (killed by signal 11|exited with status \d+)"
                   r"[^\n]* in crashy\.so load\(\) serving \[crash\] before it was ready")
        # Both workers of generation 2 died in load(): neither was "draining".
        d.wait_log(r"worker \d of generation 2 crashed \((signal 11|exit status \d+)\) in "
                   r"crashy\.so load\(\) serving \[crash\] before it was ready")
        self.assertNotIn("while draining", d.log())
        os.unlink(flag)
        self.assertTrue(d.reload(), d.log())

    def test_plugin_overwritten_in_place_warns_at_reload(self):
        plugdir = os.path.join(self.tmp, "plugins")
        os.mkdir(plugdir, 0o755)
        so = os.path.join(plugdir, "p.so")
        shutil.copy(built_test_plugin("good"), so)
        os.chmod(so, 0o755)
        d = self.daemon(f"""
            [p]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {so}
            """, wait=True)
        # Same bytes, written into the same inode (as cp does): a mapped copy would see new
        # content; the mtime tells the master.
        with open(so, "r+b") as f:
            data = f.read()
            f.seek(0)
            f.write(data)
        st = os.stat(so)
        os.utime(so, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
        self.assertTrue(d.reload(), d.log())
        d.wait_log(r"%s was overwritten in place \(same inode, new content\)" % re.escape(so))
        # A new file renamed over it (a new inode) is the right way: no warning.
        tmp = so + ".new"
        shutil.copy(built_test_plugin("good"), tmp)
        os.chmod(tmp, 0o755)
        os.rename(tmp, so)
        self.assertTrue(d.reload(), d.log())
        self.assertEqual(len(re.findall("overwritten in place", d.log())), 1)


class PluginVersions(SdkCase):

    def test_status_names_the_build_that_serves_across_a_hot_swap(self):
        plugdir = os.path.join(self.tmp, "plugins")
        os.mkdir(plugdir, 0o755)
        so = os.path.join(plugdir, "g.so")
        shutil.copy(built_test_plugin("good"), so)
        d = self.daemon(f"""
            [g]
            protocol = tcp
            address = 127.0.0.1:0
            handler = {so}
            """, workers=2, wait=True)
        d.wait_status(lambda st: d.listener("g", st)["plugin_version"] == "1", "version 1")
        self.assertEqual(d.listener("g")["plugin"], "good")
        r = subprocess.run([BERTHCTL, "-s", d.admin, "status"], capture_output=True, text=True,
                           timeout=60)
        self.assertIn("[g] plugin good version 1\n", r.stdout)
        # A new build renamed into place and a reload: status says which one serves.
        tmp = so + ".new"
        shutil.copy(built_test_plugin("good2"), tmp)
        os.rename(tmp, so)
        self.assertTrue(d.reload(), d.log())
        d.wait_status(lambda st: d.listener("g", st)["plugin_version"] == "2", "version 2")
        r = subprocess.run([BERTHCTL, "-s", d.admin, "status"], capture_output=True, text=True,
                           timeout=60)
        self.assertIn("[g] plugin good version 2\n", r.stdout)
        d.wait_log(r"generation 2 loaded %s: plugin 'good' version 2" % re.escape(so))

    def test_berthctl_plugins_describes_each_plugin_of_the_config(self):
        path = self.conf(f"""
            [socks]
            protocol = tcp
            address = 127.0.0.1:0
            handler = socks5

            [e1]
            protocol = tcp
            address = 127.0.0.2:0
            handler = echo

            [e2]
            protocol = udp
            address = 127.0.0.1:0
            handler = echo

            [cxx]
            protocol = tcp
            address = 127.0.0.3:0
            handler = {built_test_plugin("cxx")}
            """)
        r = subprocess.run([BERTHCTL, "-c", path, "plugins"], capture_output=True, text=True,
                           timeout=60, env=dict(os.environ, BERTHD=BERTHD))
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        out = r.stdout
        self.assertIn("[socks]\nsocks5 ", out)
        self.assertRegex(out, r"(?m)^  auth_fail_block +duration")
        self.assertIn("[e1], [e2]\necho 1.0 (plugin ABI 1", out)
        self.assertIn("[cxx]\ncxx 2.5-cxx (plugin ABI 1", out)
        self.assertRegex(out, r"(?m)^  style +enum plain\|upper, default plain$")
