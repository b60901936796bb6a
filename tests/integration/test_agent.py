"""Issue 12: `[daemon] agent = ADDRESS` answers HAProxy's agent-check with raw sockets:
"up ready N%" while a generation serves (N: the free share of the listeners' concurrency),
"drain" from SIGTERM for drain_delay while the listeners still accept, "down" once no
generation serves (the daemon still draining its open connections)."""
import os
import signal
import socket
import unittest

from harness import (IO_TIMEOUT, DaemonTestCase, check_config, free_ports, recv_until,
                     stream_connect, stream_echo, wait_until)


def ask(port):
    """One agent-check: connect, read the line, EOF."""
    with socket.create_connection(("127.0.0.1", port), timeout=IO_TIMEOUT) as s:
        line = recv_until(s)
        rest = s.recv(64)
        assert rest == b"", rest
        return line.decode()


class Agent(DaemonTestCase):

    def start(self, drain_delay):
        self.port, self.agent_port = free_ports(2)
        self.d = self.daemon(f"""
            [echo]
            protocol = tcp
            address = 127.0.0.1:{self.port}
            handler = echo
            concurrency = 4
            """, daemon=f"""
            agent = 127.0.0.1:{self.agent_port}
            drain_delay = {drain_delay}
            """, workers=2)
        self.d.wait_serving()

    def hold(self):
        s = stream_connect(socket.AF_INET, ("127.0.0.1", self.port))
        self.addCleanup(s.close)
        s.sendall(b"x")
        self.assertEqual(s.recv(1), b"x")
        return s

    def test_weight_drain_down(self):
        self.start("60s")
        self.assertEqual(ask(self.agent_port), "up ready 100%\n")
        held = self.hold()
        self.d.wait_status(lambda st: self.d.listener("echo", st)["active"] == 1, "one active")
        self.assertEqual(ask(self.agent_port), "up ready 75%\n")
        # SIGTERM: "drain" at once, and the listener still serves during drain_delay.
        self.d.signal(signal.SIGTERM)
        wait_until(lambda: ask(self.agent_port) == "drain\n", what="the agent to say drain")
        self.assertEqual(stream_echo(socket.AF_INET, ("127.0.0.1", self.port), b"still"),
                         b"still")
        self.d.wait_log(r"draining: the agent says drain; stopping in 60000 ms")
        # A second SIGTERM ends the wait: no generation serves, the agent says down while
        # the open connection drains.
        self.d.signal(signal.SIGTERM)
        wait_until(lambda: ask(self.agent_port) == "down\n", what="the agent to say down")
        held.close()
        self.assertEqual(self.d.proc.wait(IO_TIMEOUT), 0)
        self.d.proc.status_seen = True

    def test_drain_delay_then_stop(self):
        self.start("300ms")
        self.assertEqual(ask(self.agent_port), "up ready 100%\n")
        self.d.signal(signal.SIGTERM)
        # After drain_delay the daemon stops by itself (nothing open): exit 0.
        self.assertEqual(self.d.proc.wait(IO_TIMEOUT), 0)
        self.d.proc.status_seen = True
        log = self.d.log()
        self.assertIn("the agent says drain; stopping in 300 ms", log)
        self.assertLess(log.index("the agent says drain"), log.index("stopping: draining"))

    def test_no_delay_is_the_old_sigterm(self):
        self.start("0")
        self.d.signal(signal.SIGTERM)
        self.assertEqual(self.d.proc.wait(IO_TIMEOUT), 0)
        self.d.proc.status_seen = True
        self.assertNotIn("the agent says drain", self.d.log())


class AgentConfig(DaemonTestCase):

    def test_keys(self):
        path = os.path.join(self.tmp, "c.conf")
        with open(path, "w") as f:
            f.write("[daemon]\nagent = nowhere\ndrain_delay = soon\n")
        rc, out = check_config(path)
        self.assertNotEqual(rc, 0)
        self.assertIn("agent 'nowhere'", out)
        self.assertIn("drain_delay 'soon'", out)
        with open(path, "w") as f:
            f.write("[daemon]\nagent = 127.0.0.1:8081\ndrain_delay = 10s\n")
        rc, out = check_config(path)
        self.assertEqual(rc, 0, out)


if __name__ == "__main__":
    unittest.main()
