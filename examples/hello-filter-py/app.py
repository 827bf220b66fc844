"""The Python twin of examples/hello-filter. It
- answers 403 to requests whose path starts with `deny_prefix`,
- adds a header to every response,
- counts requests and denials in metrics (`weft_filter_events_total{filter, name}`).

Config (the `config` table of its `[[filters]]` entry):

    [[filters]]
    name = "hello"
    wasm = "examples/hello-filter-py/hello_filter_py.wasm"
    config = { header_name = "x-hello", header_value = "world", deny_prefix = "/private" }
"""

from dataclasses import dataclass
from typing import Optional

import weft


@dataclass
class Config:
    """Checked when the proxy loads the filter: an unknown key or a wrong type is a load
    error, not a silently ignored setting."""

    header_name: str = "x-hello"
    header_value: str = "world"
    # Requests under this path are answered 403; none when unset.
    deny_prefix: Optional[str] = None


class Hello(weft.Filter):
    Config = Config

    def __init__(self, config: Config):
        if not config.header_name:
            raise weft.ConfigError("header_name must not be empty")
        if config.deny_prefix is not None and not config.deny_prefix.startswith("/"):
            raise weft.ConfigError("deny_prefix must start with '/'")
        self.config = config

    def on_request(self, request: weft.Request):
        weft.metrics.counter_add("requests", 1)
        prefix = self.config.deny_prefix
        if prefix is not None and request.path().startswith(prefix):
            weft.metrics.counter_add("denied", 1)
            return weft.Reply(403, {"content-type": "text/plain"}, "forbidden\n")
        return weft.CONTINUE

    def on_response(self, response: weft.Response):
        try:
            response.set_header(self.config.header_name, self.config.header_value)
        except weft.HeaderError:
            # Validated in __init__, so only a value the proxy rejects gets here: the
            # response then goes out without the header rather than failing.
            pass
        return weft.CONTINUE


Hooks = weft.export(Hello)
