// A JavaScript test filter, driven by the request path: the host interfaces (`/kv`,
// `/callout`, `/log`, `/greet`), and each misbehaviour the sandbox must contain (`/loop`,
// `/alloc`, `/raise`). Anything else continues; every response gets `x-lang: js`.

import { CONTINUE, Filter, Reply, callout, exportFilter, kv, log, metrics } from "./weft.js";

class Probe extends Filter {
  static config = {
    greeting: { type: "string" },
    calloutCluster: { key: "callout_cluster", type: "string", default: "side" },
  };

  onRequest(request) {
    const path = request.path();
    if (path === "/greet") return new Reply(200, { "x-lang": "js" }, this.config.greeting);
    if (path === "/kv") {
      const hits = kv.incr("hits");
      kv.set("last", request.header("x-probe") ?? "");
      return new Reply(200, { "x-hits": String(hits) }, kv.get("last") ?? "");
    }
    if (path === "/callout") {
      const answer = callout.send(this.config.calloutCluster, { path: "/side", headers: { "x-probe": "js" } });
      return new Reply(200, { "x-callout-status": String(answer.status) }, answer.body);
    }
    if (path === "/log") {
      log.info("probe-js says " + (request.header("x-probe") ?? ""));
      metrics.counterAdd("logged", 1);
    }
    if (path === "/loop") {
      for (;;) {}
    }
    if (path === "/alloc") {
      const hoard = [];
      for (;;) hoard.push(new Uint8Array(1 << 20));
    }
    if (path === "/raise") throw new Error("probe-js was asked to raise");
    return CONTINUE;
  }

  onResponse(response) {
    response.setHeader("x-lang", "js");
  }
}

export const hooks = exportFilter(Probe);
