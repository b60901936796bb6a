"""A UDP client through a SOCKS5 proxy, written with Debian's python3-socks (PySocks), for
test_socks5_udp.py; Debian's python3-* modules import only under /usr/bin/python3, so the
test runs this file with it.

    pysocks_udp_client.py PROXY_HOST PROXY_PORT DEST_HOST:PORT[:rdns] ...

Sends one datagram to each destination over one association (rdns: the name goes to the
proxy unresolved) and prints, as one JSON list, what came back for each: the payload and
the source address the relay's header named.
"""
import json
import socket
import sys

import socks


def main():
    proxy_host, proxy_port = sys.argv[1], int(sys.argv[2])
    results = []
    for i, spec in enumerate(sys.argv[3:]):
        rdns = spec.endswith(":rdns")
        if rdns:
            spec = spec[:-len(":rdns")]
        host, port = spec.rsplit(":", 1)
        host = host.strip("[]")
        # One socket (so one association) per destination family of the client's own: the
        # client side is IPv4 whatever the destination.
        s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
        s.set_proxy(socks.SOCKS5, proxy_host, proxy_port, rdns=rdns)
        s.settimeout(60)
        payload = ("datagram %d to %s" % (i, spec)).encode()
        s.sendto(payload, (host, int(port)))
        data, src = s.recvfrom(65535)
        results.append({"sent": payload.decode(), "got": data.decode(errors="replace"),
                        "from": [src[0], src[1]]})
        s.close()
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
