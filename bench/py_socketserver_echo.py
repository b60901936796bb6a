#!/usr/bin/env python3
"""The seeds' design as a benchmark peer: socketserver.ThreadingTCPServer, one thread per
connection, a BaseRequestHandler whose handle() echoes until EOF.

usage: py_socketserver_echo.py [HOST:]PORT | unix:PATH      (HOST defaults to 127.0.0.1)
"""
import resource
import signal
import socket
import socketserver
import sys


class EchoHandler(socketserver.BaseRequestHandler):
    def handle(self):
        while True:
            try:
                data = self.request.recv(65536)
            except ConnectionError:
                return
            if not data:
                return
            try:
                self.request.sendall(data)
            except ConnectionError:
                return


class TCPServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True
    request_queue_size = 1024


class UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 1024


def main():
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 100
    arg = sys.argv[1]
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    if arg.startswith("unix:"):
        server = UnixServer(arg[5:], EchoHandler)
    else:
        host, _, port = arg.rpartition(":")
        host = host.strip("[]") or "127.0.0.1"
        if ":" in host:
            TCPServer.address_family = socket.AF_INET6
        server = TCPServer((host, int(port)), EchoHandler)
    with server:
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
