#!/usr/bin/env python3
"""The application beside a sidecar in the sidecar tests, run inside a network namespace.

serve NAME STATE_DIR: HTTP/1.1 on [::]:8080, 8081, 8082 (dual-stack) answering with a
JSON description of the request (GET /hold waits until STATE_DIR/release exists, after
touching STATE_DIR/held-PORT); a TCP echo on [::]:9000; a server-speaks-first echo on
[::]:2525 (a banner first); HTTPS on [::]:8443 with STATE_DIR/app.pem and app-key.pem,
and on [::]:9443 with STATE_DIR/payments.pem and payments-key.pem, when they exist.
Writes STATE_DIR/ready once everything is bound.

tcp HOST PORT TEXT [banner]: connects, (reads the banner,) sends TEXT (bytes in hex when
it starts with `hex:`), reads it back, prints what it read (banner and echo) and exits 0
when the echo is TEXT.

tlsfrag HOST PORT SNI CAFILE PATH: a TLS client whose ClientHello (asking for SNI) goes
out cut into 64-byte records, each in a write of its own; then GET PATH over the
connection; prints the response body.

flood HOST FIRST COUNT: connects to COUNT ports from FIRST on, sends a byte on each and
closes it; prints how many connected.
"""
import json
import os
import socket
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Dual(ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True


def serve(name, state):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            port = self.server.server_address[1]
            if self.path.startswith("/hold"):
                open(os.path.join(state, "held-%d" % port), "w").close()
                while not os.path.exists(os.path.join(state, "release")):
                    time.sleep(0.02)
            body = json.dumps({
                "app": name,
                "port": port,
                "path": self.path,
                "client": self.client_address[0],
                "headers": {k.lower(): v for k, v in self.headers.items()},
            }).encode()
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    servers = [Dual(("::", port), Handler) for port in (8080, 8081, 8082)]

    class Echo(socketserver.BaseRequestHandler):
        banner = b""

        def handle(self):
            if self.banner:
                self.request.sendall(self.banner)
            while True:
                data = self.request.recv(65536)
                if not data:
                    return
                self.request.sendall(data)

    class Banner(Echo):
        banner = b"220 app ready\r\n"

    class Tcp(socketserver.ThreadingTCPServer):
        address_family = socket.AF_INET6
        allow_reuse_address = True
        daemon_threads = True

    servers += [Tcp(("::", 9000), Echo), Tcp(("::", 2525), Banner)]
    for port, pem in ((8443, "app"), (9443, "payments")):
        cert = os.path.join(state, pem + ".pem")
        if os.path.exists(cert):
            import ssl
            tls = Dual(("::", port), Handler)
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(cert, os.path.join(state, pem + "-key.pem"))
            tls.socket = context.wrap_socket(tls.socket, server_side=True)
            servers.append(tls)
    for s in servers:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    open(os.path.join(state, "ready"), "w").close()
    threading.Event().wait()


def client(host, port, text, banner):
    data = bytes.fromhex(text[4:]) if text.startswith("hex:") else text.encode()
    s = socket.create_connection((host, int(port)), timeout=30)
    got = b""
    if banner:
        while not got.endswith(b"\r\n"):
            chunk = s.recv(1024)
            if not chunk:
                break
            got += chunk
    s.sendall(data)
    echo = b""
    while len(echo) < len(data):
        chunk = s.recv(65536)
        if not chunk:
            break
        echo += chunk
    print((got + echo).decode(errors="replace"), end="")
    sys.exit(0 if echo == data else 1)


def tls_fragmented(host, port, sni, cafile, path):
    import ssl
    context = ssl.create_default_context(cafile=cafile)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = context.wrap_bio(incoming, outgoing, server_hostname=sni)
    s = socket.create_connection((host, int(port)), timeout=30)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    assert len(hello) == 5 + int.from_bytes(hello[3:5], "big"), "one record"
    head, body = hello[:3], hello[5:]
    for i in range(0, len(body), 64):
        chunk = body[i:i + 64]
        s.sendall(head + len(chunk).to_bytes(2, "big") + chunk)
        time.sleep(0.005)

    def flush():
        data = outgoing.read()
        if data:
            s.sendall(data)

    while True:
        try:
            tls.do_handshake()
            flush()
            break
        except ssl.SSLWantReadError:
            flush()
            data = s.recv(65536)
            if not data:
                sys.exit("closed during the handshake")
            incoming.write(data)
    tls.write(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, sni)).encode())
    flush()
    response = b""
    while True:
        try:
            chunk = tls.read(65536)
            if not chunk:
                break
            response += chunk
        except ssl.SSLWantReadError:
            data = s.recv(65536)
            if not data:
                break
            incoming.write(data)
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
    print(response.split(b"\r\n\r\n", 1)[1].decode(), end="")


def flood(host, first, count):
    connected = 0
    for port in range(int(first), int(first) + int(count)):
        try:
            s = socket.create_connection((host, port), timeout=10)
            s.sendall(b"x")
            s.close()
            connected += 1
        except OSError:
            pass
    print(connected)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "tlsfrag":
        tls_fragmented(*sys.argv[2:7])
    elif sys.argv[1] == "flood":
        flood(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        client(sys.argv[2], sys.argv[3], sys.argv[4], len(sys.argv) > 5)
