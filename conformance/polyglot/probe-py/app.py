"""A Python test filter, driven by the request path: the host interfaces (`/kv`,
`/callout`, `/log`, `/greet`), and each misbehaviour the sandbox must contain (`/loop`,
`/alloc`, `/raise`), and what the sandbox refuses (`/escape`). Anything else continues; every response gets `x-lang: python`."""

from dataclasses import dataclass

import weft


@dataclass
class Config:
    greeting: str
    callout_cluster: str = "side"


def escape(address: str):
    """Tries what the sandbox must refuse: each attempt is `name:LEAK` when it got
    something, else `name:` and the exception that stopped it."""
    import os

    host, _, port = address.rpartition(":")

    def connect():
        import socket
        return socket.create_connection((host, int(port)), timeout=1)

    def resolve():
        import socket
        return socket.getaddrinfo("localhost", 80)

    attempts = {
        "file": lambda: open("/etc/hostname").read(),
        "listdir": lambda: os.listdir("/"),
        "cwd-file": lambda: open("weft.toml").read(),
        "env": lambda: dict(os.environ) or None,
        "connect": connect,
        "resolve": resolve,
    }
    for name, attempt in attempts.items():
        try:
            yield f"{name}:{'nothing' if attempt() is None else 'LEAK'}"
        except Exception as e:
            yield f"{name}:{type(e).__name__}"


class Probe(weft.Filter):
    Config = Config

    def on_request(self, request: weft.Request):
        path = request.path()
        if path == "/greet":
            return weft.Reply(200, {"x-lang": "python"}, self.config.greeting)
        if path == "/kv":
            hits = weft.kv.incr("hits")
            weft.kv.set("last", request.header("x-probe") or "")
            return weft.Reply(200, {"x-hits": str(hits)}, weft.kv.get("last") or b"")
        if path == "/callout":
            answer = weft.callout.send(self.config.callout_cluster, "GET", "/side",
                                       headers={"x-probe": "python"})
            return weft.Reply(200, {"x-callout-status": str(answer.status)}, answer.body)
        if path == "/log":
            weft.log.info("probe-py says " + (request.header("x-probe") or ""))
            weft.metrics.counter_add("logged", 1)
        if path == "/loop":
            while True:
                pass
        if path == "/alloc":
            hoard = []
            while True:
                hoard.append(bytearray(1 << 20))
        if path == "/escape":
            return weft.Reply(200, {}, " ".join(escape(request.header("x-probe") or "")))
        if path == "/raise":
            raise RuntimeError("probe-py was asked to raise")
        return weft.CONTINUE

    def on_response(self, response: weft.Response):
        response.set_header("x-lang", "python")


Hooks = weft.export(Probe)
