// {{name}}: a Weft filter. It
// - answers 403 to requests whose path starts with `deny_prefix`,
// - adds a header to every response,
// - counts requests in a metric (`weft_filter_events_total{filter, name}`).
//
// `CASES.toml` says what it must do; `./build` builds it and checks those cases.

import { CONTINUE, ConfigError, Filter, HeaderError, Reply, exportFilter, metrics } from "./weft.js";

class MyFilter extends Filter {
  // The `config` table of the filter's `[[filters]]` entry, checked when the proxy loads
  // the filter: an unknown key or a wrong type is a load error.
  static config = {
    // Requests under this path are answered 403; none when unset.
    denyPrefix: { key: "deny_prefix", type: "string", optional: true },
    headerName: { key: "header_name", type: "string", default: "x-filtered-by" },
    headerValue: { key: "header_value", type: "string", default: "{{name}}" },
  };

  constructor(config) {
    super(config);
    if (config.denyPrefix !== undefined && !config.denyPrefix.startsWith("/")) {
      throw new ConfigError("deny_prefix must start with '/'");
    }
  }

  onRequest(request) {
    metrics.counterAdd("requests", 1);
    const prefix = this.config.denyPrefix;
    if (prefix !== undefined && request.path().startsWith(prefix)) {
      return new Reply(403, { "content-type": "text/plain" }, "forbidden\n");
    }
    return CONTINUE;
  }

  onResponse(response) {
    try {
      response.setHeader(this.config.headerName, this.config.headerValue);
    } catch (e) {
      if (!(e instanceof HeaderError)) throw e;
    }
    return CONTINUE;
  }
}

export const hooks = exportFilter(MyFilter);
