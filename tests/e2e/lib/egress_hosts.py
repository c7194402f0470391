#!/usr/bin/env python3
"""Test hosts for the platform suite's egress tests (standard library only).

  egress_hosts.py web ADDR
      HTTP on ADDR:80 answering every request with "hello <Host>"; run it
      inside the test host's network namespace.
  egress_hosts.py dns LISTEN_ADDR:PORT NAME=IP[,NAME=IP...] FORWARD_IP
      A DNS server for the test zone (UDP and TCP): A records for the names
      given, with a short TTL; every other name is relayed over UDP to
      FORWARD_IP:53 (the host's own resolver, which resolves the package
      registries the rest of the suite needs).

Both run until killed.
"""

import http.server
import socket
import socketserver
import struct
import sys
import threading


def serve_web(addr):
    class Hello(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            body = f"hello {self.headers.get('Host', '')}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True
        allow_reuse_address = True

    Server((addr, 80), Hello).serve_forever()


def question(query):
    """(name, qtype, end offset of the question) of a DNS query."""
    labels, i = [], 12
    while True:
        n = query[i]
        if n == 0:
            i += 1
            break
        labels.append(query[i + 1 : i + 1 + n].decode("ascii", "replace"))
        i += 1 + n
    qtype = struct.unpack("!H", query[i : i + 2])[0]
    return ".".join(labels).lower(), qtype, i + 4


def answer(query, zone, forward):
    if len(query) < 12 or struct.unpack("!H", query[4:6])[0] != 1:
        return None
    name, qtype, end = question(query)
    if name not in zone:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(2)
            s.sendto(query, (forward, 53))
            try:
                return s.recv(65535)
            except OSError:
                return None
    ident, flags = query[:2], struct.unpack("!H", query[2:4])[0]
    records = b""
    count = 0
    if qtype == 1:  # A
        for ip in zone[name]:
            records += b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 5, 4) + socket.inet_aton(ip)
            count += 1
    reply_flags = 0x8400 | (flags & 0x0100) | 0x0080  # response, authoritative, RD copied, RA
    header = ident + struct.pack("!HHHHH", reply_flags, 1, count, 0, 0)
    return header + query[12:end] + records


def serve_dns(listen, zone_spec, forward):
    host, port = listen.rsplit(":", 1)
    zone = {}
    for item in zone_spec.split(","):
        name, ip = item.split("=")
        zone.setdefault(name.lower().rstrip("."), []).append(ip)

    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind((host, int(port)))
    tcp = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    tcp.bind((host, int(port)))
    tcp.listen(16)

    def udp_loop():
        while True:
            query, peer = udp.recvfrom(65535)
            threading.Thread(target=lambda q=query, p=peer: reply_udp(q, p), daemon=True).start()

    def reply_udp(query, peer):
        out = answer(query, zone, forward)
        if out:
            udp.sendto(out, peer)

    def tcp_session(conn):
        with conn:
            while True:
                head = conn.recv(2)
                if len(head) < 2:
                    return
                (n,) = struct.unpack("!H", head)
                query = b""
                while len(query) < n:
                    chunk = conn.recv(n - len(query))
                    if not chunk:
                        return
                    query += chunk
                out = answer(query, zone, forward)
                if not out:
                    return
                conn.sendall(struct.pack("!H", len(out)) + out)

    threading.Thread(target=udp_loop, daemon=True).start()
    while True:
        conn, _ = tcp.accept()
        threading.Thread(target=tcp_session, args=(conn,), daemon=True).start()


if __name__ == "__main__":
    if sys.argv[1] == "web":
        serve_web(sys.argv[2])
    elif sys.argv[1] == "dns":
        serve_dns(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)
