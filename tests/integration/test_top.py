"""berthctl top, driven in tmux (send-keys, capture-pane) in an 80x24 terminal: the screen
shows the listeners and their rates while traffic flows, and q (or Ctrl-C) quits with the
terminal restored. berthctl status --watch N prints the same figures as lines."""
import os
import re
import shutil
import socket
import subprocess
import unittest

import harness
from clients import EchoLoad
from harness import IO_TIMEOUT, DaemonTestCase, wait_until

BERTHCTL = os.path.join(harness.BUILD, "berthctl")
TMUX = shutil.which("tmux")

LISTENERS = """
    [echo]
    protocol = tcp
    address = 127.0.0.1:0
    handler = echo

    [echo-udp]
    protocol = udp
    address = 127.0.0.1:0
    handler = echo
    """


@unittest.skipUnless(TMUX, "tmux is not installed")
class Top(DaemonTestCase):
    def tmux(self, *args, check=True):
        return subprocess.run([TMUX, "-S", self.tsock, *args], capture_output=True, text=True,
                              check=check, timeout=IO_TIMEOUT)

    def screen(self):
        return self.tmux("capture-pane", "-p", "-t", "top").stdout

    def start_top(self, lang):
        self.tsock = os.path.join(self.tmp, "tmux.sock")
        self.done = os.path.join(self.tmp, "done")
        # After top: what the terminal was left like, then stay so the pane can be read. The
        # shell itself survives the Ctrl-C that goes to the whole foreground group.
        script = (f"trap : INT; echo before-top; LANG={lang} LC_ALL= {BERTHCTL} -s {self.d.admin} top; "
                  f"echo exit=$? > {self.done}.tmp; stty -a | grep -o -- '-*icanon' >> "
                  f"{self.done}.tmp; mv {self.done}.tmp {self.done}; echo after-top; sleep 600")
        self.tmux("-f", "/dev/null", "new-session", "-d", "-s", "top", "-x", "80", "-y", "24",
                  "sh", "-c", script)
        self.addCleanup(lambda: self.tmux("kill-server", check=False))

    def test_screen_shows_listeners_and_rates_and_q_quits(self):
        self.d = self.daemon(LISTENERS, workers=2, wait=True)
        traffic = EchoLoad(socket.AF_INET, ("127.0.0.1", self.d.port("echo")), b"x" * 1000,
                           pause=0.02)
        traffic.start()
        self.addCleanup(traffic.stop)
        self.start_top("C.UTF-8")
        rate = re.compile(r"^echo\s+tcp\s+(\d+\.\d)\s+\d+\s+(\S+)\s+(\S+)\s+0 .*[\u2581-\u2588]",
                          re.M)

        def busy():
            m = rate.search(self.screen())
            return m and float(m.group(1)) > 0 and m.group(2) != "0" and m.group(3) != "0"
        wait_until(busy, what="top to show echo's connection and byte rates")
        s = self.screen()
        self.assertRegex(s, r"(?m)^echo-udp\s+udp\s+0\.0\s+0\s", s)
        self.assertRegex(s, r"(?m)^WORKER\s+PID\s+GEN\s+STATE", s)
        self.assertEqual(len(re.findall(r"(?m)^[12]\s+\d+\s+1 serving", s)), 2, s)
        self.assertIn("generations 1: 2 workers (current)", s)
        for line in s.splitlines():
            self.assertLessEqual(len(line), 80, line)
        self.tmux("send-keys", "-t", "top", "q")
        wait_until(lambda: os.path.exists(self.done), what="top to quit on q")
        with open(self.done) as f:
            self.assertEqual(f.read().split(), ["exit=0", "icanon"])  # not -icanon: restored
        # The alternate screen is gone: the shell's lines are there, top's are not.
        wait_until(lambda: "after-top" in self.screen(), what="the shell's screen back")
        self.assertIn("before-top", self.screen())
        self.assertNotIn("LISTENER", self.screen())

    def test_ascii_sparkline_without_utf8_and_ctrl_c_quits(self):
        self.d = self.daemon(LISTENERS, wait=True)
        traffic = EchoLoad(socket.AF_INET, ("127.0.0.1", self.d.port("echo")), b"x" * 1000,
                           pause=0.02)
        traffic.start()
        self.addCleanup(traffic.stop)
        self.start_top("C")
        wait_until(lambda: re.search(r"(?m)^echo\s+tcp\s+\d+\.\d.*[.:=+*#-]\s*$",
                                     self.screen()), what="an ASCII sparkline")
        self.assertFalse(re.search(r"[\u2581-\u2588]", self.screen()), self.screen())
        self.tmux("send-keys", "-t", "top", "C-c")
        wait_until(lambda: os.path.exists(self.done), what="top to quit on Ctrl-C")
        with open(self.done) as f:
            self.assertEqual(f.read().split(), ["exit=0", "icanon"])

    def test_status_watch_prints_lines_with_rates(self):
        self.d = self.daemon(LISTENERS, wait=True)
        traffic = EchoLoad(socket.AF_INET, ("127.0.0.1", self.d.port("echo")), b"x" * 1000,
                           pause=0.02)
        traffic.start()
        self.addCleanup(traffic.stop)
        p = subprocess.Popen([BERTHCTL, "-s", self.d.admin, "status", "--watch", "1"],
                             stdout=subprocess.PIPE, text=True)
        self.addCleanup(p.wait)
        self.addCleanup(p.terminate)
        seen = []
        busy = False
        for line in p.stdout:
            seen.append(line)
            m = re.search(r" listener name=echo protocol=tcp conn_per_s=(\d+\.\d) active=\d+ "
                          r"in_per_s=(\d+) out_per_s=(\d+) errors=0 accepted=(\d+)$", line)
            busy = busy or bool(m and float(m.group(1)) > 0 and int(m.group(2)) > 0)
            # The worker lines come after the listeners' of the same sample.
            if busy and re.search(r" worker index=1 pid=\d+ generation=1 state=serving", line):
                break
        else:
            self.fail("no listener line with a rate, then a worker line: %s" % seen)
        p.terminate()
        self.assertEqual(p.wait(IO_TIMEOUT), 0)

    def test_usage_errors(self):
        for args in (["top", "--json"], ["status", "--watch", "0"], ["reload", "--watch", "1"]):
            p = subprocess.run([BERTHCTL, "-s", "/nonexistent", *args], capture_output=True)
            self.assertEqual(p.returncode, 64, args)
        p = subprocess.run([BERTHCTL, "-s", "/nonexistent", "status", "--watch", "1"],
                           capture_output=True, text=True)
        self.assertEqual(p.returncode, 69)


if __name__ == "__main__":
    unittest.main()
