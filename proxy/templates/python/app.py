"""{{name}}: a Weft filter. It
- answers 403 to requests whose path starts with `deny_prefix`,
- adds a header to every response,
- counts requests in a metric (`weft_filter_events_total{filter, name}`).

`CASES.toml` says what it must do; `./build` builds it and checks those cases.
"""

from dataclasses import dataclass
from typing import Optional

import weft


@dataclass
class Config:
    """The `config` table of the filter's `[[filters]]` entry, checked when the proxy
    loads the filter: an unknown key or a wrong type is a load error."""

    # Requests under this path are answered 403; none when unset.
    deny_prefix: Optional[str] = None
    header_name: str = "x-filtered-by"
    header_value: str = "{{name}}"


class MyFilter(weft.Filter):
    Config = Config

    def __init__(self, config: Config):
        if config.deny_prefix is not None and not config.deny_prefix.startswith("/"):
            raise weft.ConfigError("deny_prefix must start with '/'")
        self.config = config

    def on_request(self, request: weft.Request):
        weft.metrics.counter_add("requests", 1)
        prefix = self.config.deny_prefix
        if prefix is not None and request.path().startswith(prefix):
            return weft.Reply(403, {"content-type": "text/plain"}, "forbidden\n")
        return weft.CONTINUE

    def on_response(self, response: weft.Response):
        try:
            response.set_header(self.config.header_name, self.config.header_value)
        except weft.HeaderError:
            pass
        return weft.CONTINUE


Hooks = weft.export(MyFilter)
