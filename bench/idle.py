#!/usr/bin/env python3
"""Idle keep-alive connections and the proxy's resident memory, for bench/run --workloads idle.

idle.py URL N SETTLE PID [PID...]

Reads the resident memory (VmRSS) of the PIDs and their child processes (nginx's workers)
at rest, opens N connections to URL (host:port of an http:// or https:// URL): the first
half each send one GET and read its whole answer, then stay open (keep-alive); the second
half only connect (and finish the TLS handshake for https) and never send a request.
After SETTLE seconds it reads the memory again, checks how many connections the proxy
still holds open, closes them all and prints one line:

    rest_kib half_kib loaded_kib opened first_half still_open processes elapsed_s

half_kib: the memory once the first half (those that sent a request) is open, read
SETTLE seconds after them, so that the two halves can be told apart.

opened < N when connecting failed (a limit: file descriptors, the proxy's own cap); the
reason goes to stderr.
"""
import os
import resource
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit


def tree(pid):
    pids, todo = [], [pid]
    while todo:
        p = todo.pop()
        pids.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def rss_kib(roots):
    total, n = 0, 0
    for root in roots:
        for p in tree(root):
            try:
                with open(f"/proc/{p}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            total += int(line.split()[1])
                            n += 1
            except OSError:
                pass
    return total, n


def read_response(s):
    """Reads one HTTP/1.1 response with a Content-Length (what the origin sends)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the response head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed inside the response body")
        body += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        raise ConnectionError(f"answer {head.split(b' ')[1:2]}")


def main():
    url, n, settle = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    roots = [int(p) for p in sys.argv[4:]]
    u = urlsplit(url)
    addr = (u.hostname, u.port or (443 if u.scheme == "https" else 80))
    ctx = None
    if u.scheme == "https":
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.set_alpn_protocols(["http/1.1"])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    time.sleep(0.5)
    rest, nproc = rss_kib(roots)
    start = time.monotonic()
    socks, err = [], None
    request = f"GET / HTTP/1.1\r\nHost: {addr[0]}:{addr[1]}\r\n\r\n".encode()
    half = None
    for i in range(n):
        if i == n // 2:
            time.sleep(settle)
            half, _ = rss_kib(roots)
        try:
            s = socket.create_connection(addr, timeout=10)
            if ctx is not None:
                s = ctx.wrap_socket(s)
            if i < n // 2:
                s.sendall(request)
                read_response(s)
            socks.append(s)
        except OSError as e:
            err = f"connection {i + 1} of {n}: {e}"
            break
        except ConnectionError as e:
            err = f"connection {i + 1} of {n}: {e}"
            break
    elapsed = time.monotonic() - start
    time.sleep(settle)
    loaded, nproc = rss_kib(roots)
    still = 0
    for s in socks:
        try:
            s.setblocking(False)
            still += s.recv(1) == b"" and 0 or 1  # data would be odd, but it is open
        except (BlockingIOError, ssl.SSLWantReadError):
            still += 1
        except OSError:
            pass
    for s in socks:
        try:
            s.close()
        except OSError:
            pass
    if err:
        print(f"idle: {err}", file=sys.stderr)
    if half is None:  # stopped within the first half
        half = loaded
    print(rest, half, loaded, len(socks), n // 2, still, nproc, f"{elapsed:.1f}")


if __name__ == "__main__":
    main()
