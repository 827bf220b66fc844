// The JavaScript twin of examples/hello-filter. It
// - answers 403 to requests whose path starts with `deny_prefix`,
// - adds a header to every response,
// - counts requests and denials in metrics (`weft_filter_events_total{filter, name}`).
//
// Config (the `config` table of its `[[filters]]` entry):
//
//     [[filters]]
//     name = "hello"
//     wasm = "examples/hello-filter-js/hello_filter_js.wasm"
//     config = { header_name = "x-hello", header_value = "world", deny_prefix = "/private" }

import { CONTINUE, ConfigError, Filter, HeaderError, Reply, exportFilter, metrics } from "./weft.js";

class Hello extends Filter {
  // Checked when the proxy loads the filter: an unknown key or a wrong type is a load
  // error, not a silently ignored setting.
  static config = {
    headerName: { key: "header_name", type: "string", default: "x-hello" },
    headerValue: { key: "header_value", type: "string", default: "world" },
    // Requests under this path are answered 403; none when unset.
    denyPrefix: { key: "deny_prefix", type: "string", optional: true },
  };

  constructor(config) {
    super(config);
    if (config.headerName === "") throw new ConfigError("header_name must not be empty");
    if (config.denyPrefix !== undefined && !config.denyPrefix.startsWith("/")) {
      throw new ConfigError("deny_prefix must start with '/'");
    }
  }

  onRequest(request) {
    metrics.counterAdd("requests", 1);
    const prefix = this.config.denyPrefix;
    if (prefix !== undefined && request.path().startsWith(prefix)) {
      metrics.counterAdd("denied", 1);
      return new Reply(403, { "content-type": "text/plain" }, "forbidden\n");
    }
    return CONTINUE;
  }

  onResponse(response) {
    try {
      response.setHeader(this.config.headerName, this.config.headerValue);
    } catch (e) {
      // Validated in the constructor, so only a value the proxy rejects gets here: the
      // response then goes out without the header rather than failing.
      if (!(e instanceof HeaderError)) throw e;
    }
    return CONTINUE;
  }
}

export const hooks = exportFilter(Hello);
