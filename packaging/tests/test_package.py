"""The Debian packages, end to end, as an operator meets them.

Builds the .debs (or takes fresh ones from dist/, or from $BERTH_DEB_DIR), installs them with
dpkg -i, checks the installed config with berthd -t and the unit with systemd-analyze, starts
berthd the way berthd.service does (there is no systemd in CI: the unit's command lines are
run as root with its runtime directory, umask, capability bounding set and no_new_privs),
checks the workers run as `berth` and echo answers, builds the packaged out-of-tree example
against the installed header via pkg-config, adds it through conf.d and reloads with the
unit's ExecReload, then stops the daemon, purges the packages and checks nothing is left.

It changes the machine (a package, a user, /etc/berth, /usr/local/lib/berth), so it runs
only as root; everything it adds it removes. Before it installs anything it leaves a marker
(MARKER, with the daemon's pid once started): a run killed midway (a ctest timeout) leaves the
marker, and the next run first removes what that run left (daemon, packages, user, files).
A berth installed without the marker is an operator's: the test fails rather than touch it.
It does not skip: where it cannot run (not root, no dpkg, dpkg-buildpackage, setpriv or
systemd-analyze) it fails and says why. The default config's echo port (7007) is moved to a free port.
It is registered only in the release build (packaging/CMakeLists.txt): the packages are built
without sanitizers, so there is nothing for the ASan build to check here.
"""
import glob
import json
import os
import pwd
import grp
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import unittest

SRC = os.environ.get(
    "BERTH_SOURCE_DIR",
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
UNIT_IN_TREE = os.path.join(SRC, "packaging", "berthd.service")
UNIT = "/lib/systemd/system/berthd.service"
SOCKET_UNIT_IN_TREE = os.path.join(SRC, "packaging", "berthd.socket")
SOCKET_UNIT = "/lib/systemd/system/berthd.socket"
CONF = "/etc/berth/berth.conf"
LOCAL_PLUGINS = "/usr/local/lib/berth/plugins"
EXAMPLE = "/usr/share/doc/berth-dev/examples/hello"
PACKAGES = ("berth", "berth-dev")
IO_TIMEOUT = 10.0
MARKER = "/var/tmp/berth-package-test.marker"
REQUIRED_TOOLS = ("dpkg", "dpkg-buildpackage", "dh", "setpriv", "systemd-analyze", "deluser")


def run(cmd, check=True, **kw):
    """Run a command, text output captured; on failure the assertion shows all of it."""
    kw.setdefault("timeout", 600)
    p = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and p.returncode != 0:
        raise AssertionError(f"{shlex.join(cmd)} exited {p.returncode}\n"
                             f"stdout:\n{p.stdout}\nstderr:\n{p.stderr}")
    return p


def installed(pkg):
    p = run(["dpkg-query", "-W", "-f=${db:Status-Status}", pkg], check=False)
    return p.returncode == 0 and p.stdout not in ("", "not-installed")


def port_busy(port):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return True
    return False


def free_port():
    """A port free for both tcp and udp on 127.0.0.1 (the echo listeners use both)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if not port_busy(port):
            return port


def berthd_pids():
    """Processes running the packaged /usr/sbin/berthd (master and workers)."""
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                if os.readlink(f"/proc/{d}/exe").startswith("/usr/sbin/berthd"):
                    pids.append(int(d))
            except OSError:
                pass
    return pids


def clean_leftovers():
    """Undo what an earlier run that was killed midway left (it left MARKER)."""
    for pid in berthd_pids():
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    wait_until(lambda: not berthd_pids(), 30, "a leftover berthd to exit")
    if any(installed(p) for p in PACKAGES):
        run(["dpkg", "--purge", *reversed(PACKAGES)])
    for path in ("/etc/berth/conf.d/hello.conf", "/etc/berth/conf.d/zz-bad.conf",
                 "/etc/berth/conf.d/examples.conf", "/etc/berth/socks5.users",
                 os.path.join(LOCAL_PLUGINS, "hello.so")):
        if os.path.exists(path):
            os.unlink(path)
    for path in (LOCAL_PLUGINS, os.path.dirname(LOCAL_PLUGINS)):  # only if now empty
        try:
            os.rmdir(path)
        except OSError:
            pass
    for path in ("/run/berth", "/etc/berth", "/var/lib/berth"):  # the package's own
        shutil.rmtree(path, ignore_errors=True)
    for tool, name in (("deluser", "berth"), ("delgroup", "berth")):
        lookup = pwd.getpwnam if tool == "deluser" else grp.getgrnam
        try:
            lookup(name)
        except KeyError:
            continue
        run([tool, "--quiet", name], check=False)
    os.unlink(MARKER)


def wait_until(pred, timeout, what):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for " + what)
        time.sleep(0.05)


def recv_n(sock, n):
    """n bytes from sock (fewer only if it closes first): one recv may return part."""
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def tcp_exchange(port, send, expect_len):
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        if send:
            s.sendall(send)
        data = b""
        while len(data) < expect_len:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        return data


def read_unit(path):
    """The [Service] settings of a unit file: key -> list of values, in order."""
    settings, section = {}, None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line[0] in "#;":
                continue
            if line.startswith("["):
                section = line.strip("[]")
                continue
            if section == "Service" and "=" in line:
                key, value = line.split("=", 1)
                settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def command(settings, key):
    """ExecX= as argv, without the special prefixes (-, @, :, +, !)."""
    (value,) = settings[key]
    return shlex.split(value.lstrip("-@:+!"))


def sources_mtime():
    """The newest mtime of the files a package build copies."""
    p = run(["git", "-C", SRC, "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            check=False)
    if p.returncode != 0:
        return None
    newest = 0.0
    for rel in p.stdout.split("\0"):
        if rel:
            try:
                newest = max(newest, os.stat(os.path.join(SRC, rel)).st_mtime)
            except FileNotFoundError:
                pass
    return newest


def fresh_debs(folder):
    """berth and berth-dev .debs in folder, if both are newer than every source file."""
    debs = {}
    for pkg in PACKAGES:
        found = sorted(glob.glob(os.path.join(folder, f"{pkg}_*.deb")))
        if len(found) != 1:
            return None
        debs[pkg] = found[0]
    newest = sources_mtime()
    if newest is None or any(os.stat(d).st_mtime <= newest for d in debs.values()):
        return None
    return [debs[p] for p in PACKAGES]


class PackageTest(unittest.TestCase):
    debs = None
    tmp = None

    @classmethod
    def setUpClass(cls):
        if os.geteuid() != 0:
            raise AssertionError("the package test needs root: it installs and purges the "
                                 "package (run make test as root)")
        missing = [t for t in REQUIRED_TOOLS if shutil.which(t) is None]
        if missing:
            raise AssertionError("missing " + ", ".join(missing) + ": run make deps")
        if os.path.exists(MARKER):
            clean_leftovers()
        if any(installed(p) for p in PACKAGES):
            raise AssertionError("berth is installed on this machine, not by this test: "
                                 "not touching it (dpkg --purge berth-dev berth to run it)")
        for name, lookup in (("user", pwd.getpwnam), ("group", grp.getgrnam)):
            try:
                lookup("berth")
            except KeyError:
                continue
            raise AssertionError(f"a {name} 'berth' exists but the package is not installed "
                                 "(and no earlier run of this test left it): remove it")

        cls.tmp = tempfile.mkdtemp(prefix="berth-pkgtest.")
        given = os.environ.get("BERTH_DEB_DIR")
        if given:
            cls.debs = [sorted(glob.glob(os.path.join(given, f"{p}_*.deb")))[-1]
                        for p in PACKAGES]
        else:
            cls.debs = fresh_debs(os.path.join(SRC, "dist"))
        if cls.debs is None:
            out = os.path.join(cls.tmp, "debs")
            # Lintian errors fail the build, and so this test.
            run([os.path.join(SRC, "packaging", "build-deb"), "-o", out], timeout=1500,
                env=dict(os.environ, TMPDIR=cls.tmp))
            cls.debs = [glob.glob(os.path.join(out, f"{p}_*.deb"))[0] for p in PACKAGES]

    @classmethod
    def tearDownClass(cls):
        if cls.tmp:
            shutil.rmtree(cls.tmp, ignore_errors=True)

    # ---- helpers that undo themselves ----

    def install(self):
        with open(MARKER, "w") as f:
            f.write("installed by packaging/tests/test_package.py\n")
        self.addCleanup(self.purge_if_installed)
        run(["dpkg", "-i", *self.debs], env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        # The default config's echo listeners on a free port, not 7007 that anything may hold.
        self.echo_port = free_port()
        with open(CONF) as f:
            text = f.read()
        self.assertIn("address = 127.0.0.1:7007\n", text)
        with open(CONF, "w") as f:
            f.write(text.replace("address = 127.0.0.1:7007\n",
                                 f"address = 127.0.0.1:{self.echo_port}\n"))

    def purge_if_installed(self):
        if any(installed(p) for p in PACKAGES):
            run(["dpkg", "--purge", *reversed(PACKAGES)], check=False)
        if os.path.exists(MARKER) and not any(installed(p) for p in PACKAGES):
            os.unlink(MARKER)

    def sandboxed(self, argv, unit):
        """argv as the unit runs it: umask, bounding set and no_new_privs (setpriv)."""
        caps = ",".join("+" + c.lower().removeprefix("cap_")
                        for v in unit.get("CapabilityBoundingSet", []) for c in v.split())
        pre = ["setpriv", "--inh-caps=-all", "--bounding-set=-all" + ("," + caps if caps else "")]
        if unit.get("NoNewPrivileges", ["no"])[-1] == "yes":
            pre.append("--no-new-privs")
        return pre + argv

    def umask(self, unit):
        mask = int(unit.get("UMask", ["0022"])[-1], 8)
        return lambda: os.umask(mask)

    def start_as_unit(self, unit):
        """ExecStartPre then ExecStart, in the foreground process the unit would supervise."""
        runtime = [os.path.join("/run", d) for v in unit.get("RuntimeDirectory", [])
                   for d in v.split()]
        mode = int(unit.get("RuntimeDirectoryMode", ["0755"])[-1], 8)
        for d in runtime:
            os.makedirs(d, exist_ok=True)
            os.chmod(d, mode)
            self.addCleanup(shutil.rmtree, d, True)  # systemd removes it at stop
        for key in ("ExecStartPre",):
            if key in unit:
                run(self.sandboxed(command(unit, key), unit), preexec_fn=self.umask(unit))
        log = open(os.path.join(self.tmp, "berthd.log"), "w+")
        self.addCleanup(log.close)
        self.log = log
        proc = subprocess.Popen(self.sandboxed(command(unit, "ExecStart"), unit), stdout=log,
                                stderr=subprocess.STDOUT, preexec_fn=self.umask(unit))
        with open(MARKER, "a") as f:
            f.write(f"daemon {proc.pid}\n")
        self.addCleanup(self.kill_if_running, proc)
        return proc

    def kill_if_running(self, proc):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def daemon_log(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def status(self):
        p = run(["berthctl", "-c", CONF, "status", "--json"], check=False)
        return json.loads(p.stdout) if p.returncode == 0 else None

    def serving(self, generation=None):
        st = self.status()
        if not st or not st["workers"]:
            return None
        ok = [w for w in st["workers"] if w["state"] == "serving"]
        if generation is not None:
            ok = [w for w in ok if w["generation"] == generation]
        return st if ok else None

    # ---- the test ----

    def test_install_serve_reload_purge(self):
        self.install()

        # What the package put in place.
        self.assertEqual(pwd.getpwnam("berth").pw_shell, "/usr/sbin/nologin")
        grp.getgrnam("berth")
        uploads = os.stat("/var/lib/berth/uploads")
        self.assertEqual((pwd.getpwuid(uploads.st_uid).pw_name, oct(uploads.st_mode & 0o7777)),
                         ("berth", "0o750"))
        self.assertEqual(os.listdir("/etc/berth/conf.d"), [])
        conffiles = run(["dpkg-query", "-W", "-f=${Conffiles}", "berth"]).stdout
        self.assertIn(CONF, conffiles)
        for page in ("man8/berthd.8", "man8/berthctl.8", "man5/berth.conf.5",
                     "man1/berth-upload.1", "man7/berth-plugin.7"):
            self.assertTrue(os.path.exists(f"/usr/share/man/{page}.gz"), page)
        # The plugin author's page and test host come with the header, in berth-dev.
        owner = run(["dpkg", "-S", "/usr/share/man/man7/berth-plugin.7.gz"]).stdout
        self.assertTrue(owner.startswith("berth-dev:"), owner)
        run(["pkg-config", "--exists", "berth-testhost"])
        plugin_dir = run(["pkg-config", "--variable=plugindir", "berth"]).stdout.strip()
        self.assertEqual(sorted(os.listdir(plugin_dir)), ["echo.so", "socks5.so", "upload.so"])
        with open(CONF) as f:
            self.assertIn(f"plugin_dir = {plugin_dir}\n", f.read())

        # The installed config and unit check out.
        p = run(["/usr/sbin/berthd", "-t", "-c", CONF])
        self.assertIn("configuration OK", p.stdout)
        self.assertIn("sandbox on", p.stdout)  # the workers' own sandbox, by default
        with open(UNIT) as a, open(UNIT_IN_TREE) as b:
            self.assertEqual(a.read(), b.read(), "the packaged unit is packaging/berthd.service")
        verify = ["systemd-analyze", "verify"]
        if shutil.which("man") is None:
            verify.append("--man=no")
        p = run(verify + [UNIT], check=False)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))
        # socket activation: the socket unit ships, checks out, and is not enabled.
        with open(SOCKET_UNIT) as a, open(SOCKET_UNIT_IN_TREE) as b:
            self.assertEqual(a.read(), b.read(), "the packaged unit is packaging/berthd.socket")
        p = run(verify + [SOCKET_UNIT], check=False)
        self.assertEqual((p.returncode, p.stdout + p.stderr), (0, ""))
        self.assertFalse(os.path.lexists("/etc/systemd/system/sockets.target.wants/berthd.socket"))
        # --threshold is in tenths: 40 is an exposure of 4.0.
        p = run(["systemd-analyze", "security", "--offline=yes", "--threshold=40", UNIT],
                check=False)
        self.assertEqual(p.returncode, 0, p.stdout[-300:] + p.stderr)

        # Started as the unit starts it.
        unit = read_unit(UNIT)
        proc = self.start_as_unit(unit)
        st = wait_until(self.serving, 20, "berthd to serve")
        self.assertEqual(st["pid"], proc.pid)
        pids = [str(w["pid"]) for w in st["workers"]]
        users = run(["ps", "-o", "user=", "-p", ",".join(pids)]).stdout.split()
        self.assertEqual(users, ["berth"] * len(pids), self.daemon_log())
        # Each worker confined itself (the unit's SystemCallFilter lets its calls through).
        for w in st["workers"]:
            self.assertTrue(w["sandbox"]["seccomp"], self.daemon_log())
        allowed = " ".join(unit.get("SystemCallFilter", [])).split()
        for call in ("landlock_create_ruleset", "landlock_add_rule", "landlock_restrict_self",
                     "seccomp"):
            self.assertIn(call, allowed)
        master_user = run(["ps", "-o", "user=", "-p", str(proc.pid)]).stdout.strip()
        self.assertEqual(master_user, "root")
        self.assertEqual(oct(os.stat("/run/berth/admin.sock").st_mode & 0o777), "0o600")

        self.assertEqual(tcp_exchange(self.echo_port, b"ping\n", 5), b"ping\n")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.settimeout(IO_TIMEOUT)
            u.sendto(b"datagram", ("127.0.0.1", self.echo_port))
            self.assertEqual(u.recvfrom(100)[0], b"datagram")

        # The packaged example, built against the installed header, added through conf.d.
        work = os.path.join(self.tmp, "hello")
        shutil.copytree(EXAMPLE, work)
        run(["make", "-C", work])
        created = not os.path.exists("/usr/local/lib/berth")
        self.addCleanup(self.remove_hello, created)
        run(["make", "-C", work, "install"])
        self.assertTrue(os.path.isfile(os.path.join(LOCAL_PLUGINS, "hello.so")))
        port = free_port()
        with open(os.path.join(work, "hello.conf")) as f:
            text = f.read().replace("127.0.0.1:7070", f"127.0.0.1:{port}")
        self.assertIn(f"handler = {LOCAL_PLUGINS}/hello.so", text)
        with open("/etc/berth/conf.d/hello.conf", "w") as f:
            f.write(text)
        run(["/usr/sbin/berthd", "-t", "-c", CONF])
        p = run(self.sandboxed(command(unit, "ExecReload"), unit), preexec_fn=self.umask(unit))
        self.assertEqual(tcp_exchange(port, b"hi\n", 20), b"hello from berth\nhi\n")
        gen = self.status()["generation"]

        # A refused reload reports why and changes nothing.
        with open("/etc/berth/conf.d/zz-bad.conf", "w") as f:
            f.write(f"[bad]\nprotocol = tcp\naddress = 127.0.0.1:{free_port()}\n"
                    f"handler = {LOCAL_PLUGINS}/hello.so\ngreting = typo\n")
        p = run(self.sandboxed(command(unit, "ExecReload"), unit), check=False)
        os.unlink("/etc/berth/conf.d/zz-bad.conf")
        self.assertEqual(p.returncode, 1, p.stdout + p.stderr)
        self.assertIn("/etc/berth/conf.d/zz-bad.conf:5: greting", p.stderr)
        self.assertEqual(self.status()["generation"], gen)
        self.assertEqual(tcp_exchange(port, b"", 17), b"hello from berth\n")

        # Stopped as systemd stops it (KillMode=mixed: SIGTERM to the master only).
        workers = [int(w["pid"]) for w in self.status()["workers"]]
        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(60), 0, self.daemon_log())
        for pid in workers:
            self.assertFalse(os.path.exists(f"/proc/{pid}"), f"worker {pid} outlived the master")

        # Purged: nothing left of what the package or its scripts made.
        os.unlink("/etc/berth/conf.d/hello.conf")  # the operator's own file goes first
        shutil.rmtree("/run/berth", ignore_errors=True)  # systemd's RuntimeDirectory cleanup
        run(["dpkg", "--purge", "berth-dev", "berth"])
        for pkg in PACKAGES:
            self.assertFalse(installed(pkg), pkg)
        for path in ("/etc/berth", "/var/lib/berth", "/run/berth", UNIT, SOCKET_UNIT,
                     "/usr/sbin/berthd",
                     "/usr/bin/berthctl", "/usr/include/berth", os.path.dirname(plugin_dir),
                     "/etc/systemd/system/multi-user.target.wants/berthd.service"):
            self.assertFalse(os.path.lexists(path), path + " is left after purge")
        with self.assertRaises(KeyError):
            pwd.getpwnam("berth")
        with self.assertRaises(KeyError):
            grp.getgrnam("berth")

    def test_package_upgrade_under_load(self):
        """dpkg -i of a version-bumped rebuild over the running daemon: the postinst runs
        berthctl upgrade, the binary is re-executed in place (same pid) and a client load
        loses no connection (issue 17)."""
        out = os.path.join(self.tmp, "next-debs")
        run([os.path.join(SRC, "packaging", "build-deb"), "-o", out], timeout=1500,
            env=dict(os.environ, TMPDIR=self.tmp, BERTH_DEB_SUFFIX="+upgradetest1",
                     LINTIAN="no"))
        next_debs = [glob.glob(os.path.join(out, f"{p}_*+upgradetest1_*.deb"))[0]
                     for p in PACKAGES]

        self.install()
        unit = read_unit(UNIT)
        proc = self.start_as_unit(unit)
        st = wait_until(self.serving, 20, "berthd to serve")
        old_version = st["version"]
        self.assertFalse(old_version.endswith("+upgradetest1"), old_version)

        held = socket.create_connection(("127.0.0.1", self.echo_port), timeout=IO_TIMEOUT)
        self.addCleanup(held.close)
        held.sendall(b"before\n")
        self.assertEqual(recv_n(held, 7), b"before\n")

        done, failures, count = threading.Event(), [], [0]

        def load():
            while not done.is_set():
                try:
                    got = tcp_exchange(self.echo_port, b"load\n", 5)
                    if got != b"load\n":
                        failures.append(repr(got))
                    count[0] += 1
                except OSError as e:
                    failures.append(repr(e))
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        self.addCleanup(loader.join, 60)
        self.addCleanup(done.set)
        wait_until(lambda: count[0] > 50, 60, "the load to run")

        p = run(["dpkg", "-i", *next_debs],
                env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"))
        st = wait_until(lambda: (lambda s: s if s and s["version"].endswith("+upgradetest1")
                                 else None)(self.status()), 60, "the new version to serve")
        self.assertEqual(st["pid"], proc.pid, "the master's pid is kept")
        before = count[0]
        wait_until(lambda: count[0] > before + 50, 60, "the load to go on")
        done.set()
        loader.join(60)
        self.assertEqual(failures, [], p.stdout + p.stderr + self.daemon_log())
        held.sendall(b"after\n")
        self.assertEqual(recv_n(held, 6), b"after\n")
        self.assertIn("upgraded", p.stdout + p.stderr)

        proc.send_signal(signal.SIGTERM)
        self.assertEqual(proc.wait(60), 0, self.daemon_log())

    # A users-file line for the socks5 example: sha512crypt of "not-a-real-password".
    USERS_LINE = ("alice:$6$berthtestsalt$N7NQfoKQXYfQfeP7lLFWdDlHJMx8FdUaMuPgKvVlyaP7Tdpj8q6G"
                  "tCMkGqNARiRS.iJy6Ml3Xh7UnTayF3gWr/\n")

    def test_commented_examples_pass_the_units_check(self):
        """The config's examples (socks5, upload, multicast...), uncommented, pass ExecStartPre."""
        self.install()
        users = "/etc/berth/socks5.users"
        examples = "/etc/berth/conf.d/examples.conf"
        for path in (users, examples):
            self.addCleanup(lambda p=path: os.path.exists(p) and os.unlink(p))
        with open(users, "w") as f:
            f.write(self.USERS_LINE)
        os.chown(users, 0, grp.getgrnam("berth").gr_gid)
        os.chmod(users, 0o640)
        # "; [name]" starts an example; its lines lose their "; " up to the first line
        # without one.
        out, on = [], False
        with open(CONF) as f:
            for line in f.read().split("\n"):
                if line.startswith("; ["):
                    on = True
                elif not line.startswith("; "):
                    on = False
                if on:
                    out.append(line[2:])
        text = "\n".join(out) + "\n"
        self.assertIn("[socks5]", text)
        self.assertIn("[upload]", text)
        with open(examples, "w") as f:
            f.write(text)
        p = run(["/usr/sbin/berthd", "-t", "-c", CONF])
        self.assertIn("(7 listeners)", p.stdout)  # ... and the multicast one
        unit = read_unit(UNIT)
        p = run(self.sandboxed(command(unit, "ExecStartPre"), unit), check=False,
                preexec_fn=self.umask(unit))
        # berthd -t checks the plugins as `user` (berth), who can open the upload dir even
        # under the unit's bounding set (root there has no CAP_DAC_*).
        self.assertEqual(p.returncode, 0, p.stdout + p.stderr)

    def remove_hello(self, created):
        for path in ("/etc/berth/conf.d/hello.conf", "/etc/berth/conf.d/zz-bad.conf",
                     os.path.join(LOCAL_PLUGINS, "hello.so")):
            if os.path.exists(path):
                os.unlink(path)
        if created:
            shutil.rmtree("/usr/local/lib/berth", ignore_errors=True)


if __name__ == "__main__":
    unittest.main()
