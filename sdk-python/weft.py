"""Weft filters in Python: a thin layer over the bindings componentize-py generates from
`wit/filter.wit` (`weft:filter@0.2.3`).

A filter is a subclass of `Filter` with a `Config` dataclass, exported with `export`:

    from dataclasses import dataclass
    import weft

    @dataclass
    class Config:
        deny_prefix: str = "/admin"

    class Mine(weft.Filter):
        Config = Config

        def on_request(self, request):
            if request.path().startswith(self.config.deny_prefix):
                return weft.Reply(403, body="forbidden\\n")
            return weft.CONTINUE

    Hooks = weft.export(Mine)      # componentize-py looks for `Hooks` in the app module

The proxy calls only the phases the subclass overrides. `__init__` receives the parsed
config (unknown keys and wrong types refuse the config); raising `ConfigError` there
refuses it with your message. Any other exception during a phase fails that request like
a Rust panic (500, or skipped with `on_error = "open"`), and the instance is discarded.
"""

import dataclasses
import json
import types as _pytypes
import typing
from typing import Any, Dict, Iterable, List, Optional, Tuple, Union

from componentize_py_types import Err, Ok
from wit_world.exports import Hooks as _HooksProtocol
from wit_world.imports import callout as _callout
from wit_world.imports import context as _context
from wit_world.imports import kv as _kv
from wit_world.imports import log as _log
from wit_world.imports import metadata as _metadata
from wit_world.imports import metrics as _metrics
from wit_world.imports import types as _t

__all__ = [
    "CONTINUE", "ConfigError", "Filter", "HeaderError", "KvError", "CalloutError",
    "ContextError", "Reply", "Reroute", "Request", "Response", "export",
    "callout", "context", "kv", "log", "metadata", "metrics",
]


# ---------------------------------------------------------------------------- decisions

class _Continue:
    def __repr__(self) -> str:
        return "weft.CONTINUE"


CONTINUE = _Continue()
"""Go on: to the next filter and upstream (request), or to the client (response).
Returning `None` means the same."""

Headers = Union[Dict[str, str], Iterable[Tuple[str, str]]]


class Reply:
    """An answer instead of going on: `Reply(403, {"content-type": "text/plain"}, "no\\n")`."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: Optional[Headers] = None, body: Union[bytes, str] = b""):
        self.status = status
        self.headers = _header_list(headers)
        self.body = body.encode() if isinstance(body, str) else bytes(body)

    def _wit(self) -> _t.Reply:
        return _t.Reply(self.status, self.headers, self.body)


class Reroute:
    """Send the request to another cluster of the config (request phase only)."""

    __slots__ = ("cluster",)

    def __init__(self, cluster: str):
        self.cluster = cluster


_REQ_CONTINUE = _t.RequestDecision_Continue()
_RESP_CONTINUE = _t.ResponseDecision_Continue()


def _request_decision(d: Any) -> _t.RequestDecision:
    if d is None or d is CONTINUE:
        return _REQ_CONTINUE
    if isinstance(d, Reply):
        return _t.RequestDecision_Respond(d._wit())
    if isinstance(d, Reroute):
        return _t.RequestDecision_Reroute(d.cluster)
    raise TypeError(f"on_request returned {d!r}: expected weft.CONTINUE, None, a Reply or a Reroute")


def _response_decision(d: Any) -> _t.ResponseDecision:
    if d is None or d is CONTINUE:
        return _RESP_CONTINUE
    if isinstance(d, Reply):
        return _t.ResponseDecision_Respond(d._wit())
    raise TypeError(f"on_response returned {d!r}: expected weft.CONTINUE, None or a Reply")


def _header_list(headers: Optional[Headers]) -> List[Tuple[str, str]]:
    if headers is None:
        return []
    if isinstance(headers, dict):
        return list(headers.items())
    return list(headers)


# ---------------------------------------------------------------------- errors as Python

class ConfigError(Exception):
    """Raised in `__init__`: the proxy refuses the config with this message."""


class _TypedError(Exception):
    """A host error: `kind` names the WIT case (`"timeout"`, `"unavailable"`, ...),
    `detail` holds its text when the case has one."""

    def __init__(self, case: Any):
        name = type(case).__name__.split("_", 1)[-1]
        self.kind = "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")
        self.detail: Optional[str] = getattr(case, "value", None)
        super().__init__(self.kind if self.detail is None else f"{self.kind}: {self.detail}")


class HeaderError(_TypedError):
    """`invalid_name`, `invalid_value` or `forbidden` (the framing and hop-by-hop headers,
    host and via are the proxy's)."""


class KvError(_TypedError):
    """`key_too_long`, `value_too_large`, `over_quota`, `not_an_integer`, `overflow`,
    `timeout` or `unavailable`: fail open on the last two, closed on the others."""


class CalloutError(_TypedError):
    """`unknown_cluster`, `invalid_request`, `too_large`, `timeout`, `connect_failed` or
    `unavailable`."""


class ContextError(_TypedError):
    """`full` (64 values or 16 KiB per request) or `no_request` (called in `__init__`)."""


def _rethrow(cls):
    def wrap(f):
        def call(*args):
            try:
                return f(*args)
            except Err as e:
                raise cls(e.value) from None
        call.__name__ = f.__name__
        call.__doc__ = f.__doc__
        return call
    return wrap


# --------------------------------------------------------------- request and response

class _Message:
    __slots__ = ("_m",)

    def headers(self) -> _t.Fields:
        """The message's headers (`get`, `get_all`, `has`, `entries`, `set`, `append`,
        `delete`); writes change what is sent. Let it go out of scope when done: a filter
        holds at most 64 at once."""
        return self._m.headers()

    def header(self, name: str) -> Optional[str]:
        with self._m.headers() as h:
            return h.get(name)

    def set_header(self, name: str, value: str) -> None:
        """Raises `HeaderError`."""
        with self._m.headers() as h:
            try:
                h.set(name, value)
            except Err as e:
                raise HeaderError(e.value) from None

    def append_header(self, name: str, value: str) -> None:
        with self._m.headers() as h:
            try:
                h.append(name, value)
            except Err as e:
                raise HeaderError(e.value) from None

    def remove_header(self, name: str) -> None:
        with self._m.headers() as h:
            h.delete(name)

    def body(self) -> Optional[bytes]:
        """The buffered body: `None` unless the filter set `request_body`/`response_body`."""
        return self._m.body()

    def set_body(self, body: Union[bytes, str]) -> None:
        try:
            self._m.set_body(body.encode() if isinstance(body, str) else bytes(body))
        except Err as e:
            raise ValueError(e.value) from None


class Request(_Message):
    """The request as it will go upstream, valid during `on_request`."""

    __slots__ = ()

    def __init__(self, handle: _t.Request):
        self._m = handle

    def method(self) -> str:
        return self._m.method()

    def path(self) -> str:
        """Path and query, e.g. `/a?b=c`."""
        return self._m.path()

    def set_path(self, path: str) -> None:
        try:
            self._m.set_path(path)
        except Err as e:
            raise ValueError(e.value) from None


class Response(_Message):
    """The response on its way to the client, valid during `on_response`."""

    __slots__ = ()

    def __init__(self, handle: _t.Response):
        self._m = handle

    def status(self) -> int:
        return self._m.status()

    def set_status(self, status: int) -> None:
        try:
            self._m.set_status(status)
        except Err as e:
            raise ValueError(e.value) from None


# ------------------------------------------------------------------------- the filter

class Filter:
    """Subclass it; override `on_request` and/or `on_response` (only those are called).

    Class attributes: `Config` (a dataclass; `None` for a filter without config),
    `request_body` / `response_body` (buffer bodies, up to the filter's `limits.body`).
    """

    Config: Any = None
    request_body = False
    response_body = False

    def __init__(self, config: Any):
        self.config = config

    def on_request(self, request: Request) -> Any:
        return CONTINUE

    def on_response(self, response: Response) -> Any:
        return CONTINUE


def export(cls: type) -> type:
    """The `Hooks` class componentize-py exports, running `cls`."""
    phases = _t.Phases(0)
    if cls.on_request is not Filter.on_request:
        phases |= _t.Phases.REQUEST
    if cls.on_response is not Filter.on_response:
        phases |= _t.Phases.RESPONSE
    options = _t.Options(phases, bool(cls.request_body), bool(cls.response_body))
    current: List[Any] = [None]

    class Hooks(_HooksProtocol):
        def init(self, config: str) -> _t.Options:
            try:
                current[0] = cls(parse_config(cls.Config, config))
            except (ConfigError, ValueError, TypeError) as e:
                raise Err(str(e))
            return options

        def on_request(self, request: _t.Request) -> _t.RequestDecision:
            return _request_decision(current[0].on_request(Request(request)))

        def on_response(self, response: _t.Response) -> _t.ResponseDecision:
            return _response_decision(current[0].on_response(Response(response)))

    return Hooks


# ----------------------------------------------------------------------------- config

def parse_config(schema: Any, text: str) -> Any:
    """The `config` table (JSON) as an instance of the dataclass `schema`: unknown keys,
    missing required fields and wrong types raise `ConfigError` naming the key."""
    raw = json.loads(text) if text.strip() else {}
    if schema is None:
        if raw not in ({}, None):
            raise ConfigError("this filter takes no config")
        return None
    return _convert(schema, raw, "config")


def _convert(tp: Any, value: Any, where: str) -> Any:
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_kind(value)}")
        fields = {f.name: f for f in dataclasses.fields(tp)}
        unknown = sorted(set(value) - set(fields))
        if unknown:
            raise ConfigError(f"{where}: unknown key `{unknown[0]}` (expected one of {', '.join(fields)})")
        hints = typing.get_type_hints(tp)
        args = {}
        for name, f in fields.items():
            if name in value:
                args[name] = _convert(hints[name], value[name], f"{where}.{name}")
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{where}: missing key `{name}`")
        return tp(**args)
    origin = typing.get_origin(tp)
    targs = typing.get_args(tp)
    if origin in (Union, _pytypes.UnionType):
        if value is None and type(None) in targs:
            return None
        errors = []
        for t in targs:
            if t is type(None):
                continue
            try:
                return _convert(t, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: unexpected {_kind(value)}")
    if origin in (list, List):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {_kind(value)}")
        return [_convert(targs[0] if targs else Any, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin in (dict, Dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table, got {_kind(value)}")
        vt = targs[1] if targs else Any
        return {k: _convert(vt, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is int and isinstance(value, bool) or not isinstance(value, tp):
        raise ConfigError(f"{where}: expected {tp.__name__}, got {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean",
            int: "an integer", float: "a number", type(None): "null"}.get(type(value), type(value).__name__)


# -------------------------------------------------------------------- host interfaces

class log:
    """Lines in the proxy's log, tagged with the filter's name (rate-limited by the host)."""

    @staticmethod
    def trace(message: str) -> None:
        _log.log(_log.Level.TRACE, message)

    @staticmethod
    def debug(message: str) -> None:
        _log.log(_log.Level.DEBUG, message)

    @staticmethod
    def info(message: str) -> None:
        _log.log(_log.Level.INFO, message)

    @staticmethod
    def warn(message: str) -> None:
        _log.log(_log.Level.WARN, message)

    @staticmethod
    def error(message: str) -> None:
        _log.log(_log.Level.ERROR, message)


class metrics:
    """`weft_filter_events_total`, `weft_filter_value`, `weft_filter_observations`
    `{filter, name}` on the admin endpoint's `/metrics`."""

    counter_add = staticmethod(_metrics.counter_add)
    gauge_set = staticmethod(_metrics.gauge_set)
    histogram_observe = staticmethod(_metrics.histogram_observe)

    @staticmethod
    def counter_add_labelled(name: str, labels: Headers, delta: int) -> None:
        """One labelled series of `name` (at most 4 labels): `{"operation": "GetUser"}`."""
        _metrics.counter_add_labelled(name, _header_list(labels), delta)

    @staticmethod
    def gauge_set_labelled(name: str, labels: Headers, value: int) -> None:
        _metrics.gauge_set_labelled(name, _header_list(labels), value)

    @staticmethod
    def histogram_observe_labelled(name: str, labels: Headers, value: float) -> None:
        _metrics.histogram_observe_labelled(name, _header_list(labels), value)


class metadata:
    """Facts about the current request (empty during `__init__`)."""

    client_address = staticmethod(_metadata.client_address)
    listener = staticmethod(_metadata.listener)
    route = staticmethod(_metadata.route)
    scheme = staticmethod(_metadata.scheme)
    peer_identity = staticmethod(_metadata.peer_identity)


class context:
    """Values for the rest of this request: written under this filter's name, read back
    in `on_response` or by later filters with `get_from`."""

    get = staticmethod(_context.get)
    get_from = staticmethod(_context.get_from)
    set = staticmethod(_rethrow(ContextError)(_context.set))


class kv:
    """The store shared by every instance of this filter (namespaced by filter name).
    Every call raises `KvError`."""

    get = staticmethod(_rethrow(KvError)(_kv.get))
    delete = staticmethod(_rethrow(KvError)(_kv.delete))

    @staticmethod
    def set(key: str, value: Union[bytes, str], ttl_ms: Optional[int] = None) -> None:
        try:
            _kv.set(key, value.encode() if isinstance(value, str) else bytes(value), ttl_ms)
        except Err as e:
            raise KvError(e.value) from None

    @staticmethod
    def incr(key: str, delta: int = 1, ttl_ms: Optional[int] = None) -> int:
        try:
            return _kv.incr(key, delta, ttl_ms)
        except Err as e:
            raise KvError(e.value) from None


class CalloutResponse:
    __slots__ = ("status", "headers", "body")

    def __init__(self, r: _callout.CalloutResponse):
        self.status: int = r.status
        with r.headers as h:
            self.headers: List[Tuple[str, str]] = h.entries()
        self.body: bytes = r.body

    def header(self, name: str) -> Optional[str]:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


class callout:
    """HTTP requests to clusters of the config. Waiting is not charged to the CPU budget."""

    @staticmethod
    def _request(method: str, path: str, headers: Optional[Headers], body: Union[bytes, str]) -> _callout.CalloutRequest:
        fields = _t.Fields()
        for name, value in _header_list(headers):
            try:
                fields.append(name, value)
            except Err as e:
                raise CalloutError(_callout.CalloutError_InvalidRequest(str(HeaderError(e.value)))) from None
        return _callout.CalloutRequest(method, path, fields, body.encode() if isinstance(body, str) else bytes(body))

    @staticmethod
    def send(cluster: str, method: str, path: str, headers: Optional[Headers] = None,
             body: Union[bytes, str] = b"", timeout_ms: int = 1000) -> CalloutResponse:
        """Raises `CalloutError`."""
        try:
            return CalloutResponse(_callout.send(cluster, callout._request(method, path, headers, body), timeout_ms))
        except Err as e:
            raise CalloutError(e.value) from None

    @staticmethod
    def send_all(requests: Iterable[Tuple[str, str, str]], headers: Optional[Headers] = None,
                 timeout_ms: int = 1000) -> List[Union[CalloutResponse, CalloutError]]:
        """`(cluster, method, path)` each, at most 16, sent at once; each answer is a
        `CalloutResponse` or a `CalloutError`, in the order of `requests`."""
        pending = [_callout.Pending(c, callout._request(m, p, headers, b""), timeout_ms) for c, m, p in requests]
        return [CalloutResponse(r.value) if isinstance(r, Ok) else CalloutError(r.value)
                for r in _callout.send_all(pending)]
