// Weft filters in JavaScript: a thin layer over the bindings componentize-js generates
// from `wit/filter.wit` (`weft:filter@0.2.3`).
//
// A filter is a subclass of `Filter` with a config schema, exported as `hooks`:
//
//     import { Filter, Reply, CONTINUE, exportFilter } from "./weft.js";
//
//     class Mine extends Filter {
//       static config = { denyPrefix: { key: "deny_prefix", type: "string", default: "/admin" } };
//       onRequest(request) {
//         if (request.path().startsWith(this.config.denyPrefix)) return new Reply(403, {}, "forbidden\n");
//         return CONTINUE;
//       }
//     }
//
//     export const hooks = exportFilter(Mine);
//
// The proxy calls only the phases the subclass overrides. The constructor receives the
// parsed config (unknown keys and wrong types refuse it); throwing `ConfigError` there
// refuses it with your message. Any other exception during a phase fails that request like
// a Rust panic (500, or skipped with `on_error = "open"`), and the instance is discarded.

import * as wlog from "weft:filter/log@0.2.3";
import * as wmetrics from "weft:filter/metrics@0.2.3";
import * as wmetadata from "weft:filter/metadata@0.2.3";
import * as wcontext from "weft:filter/context@0.2.3";
import * as wkv from "weft:filter/kv@0.2.3";
import * as wcallout from "weft:filter/callout@0.2.3";
import { Fields } from "weft:filter/types@0.2.3";

// ------------------------------------------------------------------------- decisions

/** Go on: to the next filter and upstream, or to the client. `undefined` means the same. */
export const CONTINUE = Object.freeze({ tag: "continue" });

const encoder = new TextEncoder();
const bytes = (b) => (typeof b === "string" ? encoder.encode(b) : b instanceof Uint8Array ? b : new Uint8Array(b));
const headerList = (h) => (h == null ? [] : Array.isArray(h) ? h : Object.entries(h));

/** An answer instead of going on: `new Reply(403, { "content-type": "text/plain" }, "no\n")`. */
export class Reply {
  constructor(status, headers = {}, body = "") {
    this.status = status;
    this.headers = headerList(headers);
    this.body = bytes(body);
  }
}

/** Send the request to another cluster of the config (request phase only). */
export class Reroute {
  constructor(cluster) {
    this.cluster = cluster;
  }
}

function requestDecision(d) {
  if (d === undefined || d === CONTINUE) return CONTINUE;
  if (d instanceof Reply) return { tag: "respond", val: d };
  if (d instanceof Reroute) return { tag: "reroute", val: d.cluster };
  throw new TypeError(`onRequest returned ${String(d)}: expected CONTINUE, undefined, a Reply or a Reroute`);
}

function responseDecision(d) {
  if (d === undefined || d === CONTINUE) return CONTINUE;
  if (d instanceof Reply) return { tag: "respond", val: d };
  throw new TypeError(`onResponse returned ${String(d)}: expected CONTINUE, undefined or a Reply`);
}

// --------------------------------------------------------------------------- errors

/** Thrown in the constructor: the proxy refuses the config with this message. */
export class ConfigError extends Error {}

/**
 * A host error: `kind` is the WIT case (`"timeout"`, `"unavailable"`, `"forbidden"`, ...),
 * `detail` its text when it has one. Subclasses: HeaderError, KvError, CalloutError,
 * ContextError.
 */
export class WeftError extends Error {
  constructor(payload) {
    const kind = typeof payload === "object" && payload !== null ? payload.tag : String(payload);
    const detail = typeof payload === "object" && payload !== null ? payload.val : undefined;
    super(detail === undefined ? kind : `${kind}: ${detail}`);
    this.kind = kind;
    this.detail = detail;
  }
}
export class HeaderError extends WeftError {}
export class KvError extends WeftError {}
export class CalloutError extends WeftError {}
export class ContextError extends WeftError {}

function rethrow(Kind, f) {
  try {
    return f();
  } catch (e) {
    // componentize-js throws a result's error as an Error carrying it in `payload`.
    if (e && typeof e === "object" && "payload" in e) throw new Kind(e.payload);
    throw e;
  }
}

// ------------------------------------------------------------ request and response

// A `fields` handle is host memory, and a filter holds at most 64: the shorthands drop
// theirs at once rather than waiting for the garbage collector.
function withHeaders(message, f) {
  const h = message.headers();
  try {
    return f(h);
  } finally {
    h[Symbol.dispose]();
  }
}

class Message {
  constructor(handle) {
    this.m = handle;
  }
  /** The headers (`get`, `getAll`, `has`, `entries`, `set`, `append`, `delete`); call
   *  `[Symbol.dispose]()` on it when done (or use `using`). */
  headers() {
    return this.m.headers();
  }
  header(name) {
    return withHeaders(this.m, (h) => h.get(name));
  }
  setHeader(name, value) {
    withHeaders(this.m, (h) => rethrow(HeaderError, () => h.set(name, value)));
  }
  appendHeader(name, value) {
    withHeaders(this.m, (h) => rethrow(HeaderError, () => h.append(name, value)));
  }
  removeHeader(name) {
    withHeaders(this.m, (h) => h.delete(name));
  }
  /** The buffered body (a Uint8Array), `undefined` unless the filter asked for bodies. */
  body() {
    return this.m.body();
  }
  setBody(body) {
    rethrow(Error, () => this.m.setBody(bytes(body)));
  }
}

/** The request as it will go upstream, valid during `onRequest`. */
export class Request extends Message {
  method() {
    return this.m.method();
  }
  /** Path and query, e.g. `/a?b=c`. */
  path() {
    return this.m.path();
  }
  setPath(path) {
    rethrow(Error, () => this.m.setPath(path));
  }
}

/** The response on its way to the client, valid during `onResponse`. */
export class Response extends Message {
  status() {
    return this.m.status();
  }
  setStatus(status) {
    rethrow(Error, () => this.m.setStatus(status));
  }
}

// ---------------------------------------------------------------------- the filter

/**
 * Subclass it; override `onRequest` and/or `onResponse` (only those are called).
 * Static fields: `config` (the schema, see `parseConfig`), `requestBody` /
 * `responseBody` (buffer bodies, up to the filter's `limits.body`).
 */
export class Filter {
  static config = {};
  static requestBody = false;
  static responseBody = false;
  constructor(config) {
    this.config = config;
  }
  onRequest(_request) {
    return CONTINUE;
  }
  onResponse(_response) {
    return CONTINUE;
  }
}

/** The `hooks` export componentize-js looks for, running `FilterClass`. */
export function exportFilter(FilterClass) {
  const options = {
    phases: {
      request: FilterClass.prototype.onRequest !== Filter.prototype.onRequest,
      response: FilterClass.prototype.onResponse !== Filter.prototype.onResponse,
    },
    requestBody: Boolean(FilterClass.requestBody),
    responseBody: Boolean(FilterClass.responseBody),
  };
  let current;
  return {
    init(config) {
      try {
        current = new FilterClass(parseConfig(FilterClass.config, config));
      } catch (e) {
        // A thrown string is the `err` of `init`'s result: the config is refused with it.
        throw e instanceof Error ? e.message : String(e);
      }
      return options;
    },
    onRequest(request) {
      return requestDecision(current.onRequest(new Request(request)));
    },
    onResponse(response) {
      return responseDecision(current.onResponse(new Response(response)));
    },
  };
}

// ------------------------------------------------------------------------- config

/**
 * The `config` table (JSON) checked against `schema`: `{ field: { key, type, default,
 * optional } }`, `type` one of `string`, `number`, `integer`, `boolean`, `array`, `object`;
 * `key` is the TOML key (default: the field name). Unknown keys, missing required keys and
 * wrong types throw `ConfigError` naming the key.
 */
export function parseConfig(schema, text) {
  const raw = text.trim() === "" ? {} : JSON.parse(text);
  if (raw === null || typeof raw !== "object" || Array.isArray(raw)) {
    throw new ConfigError("config: expected a table");
  }
  const byKey = new Map(Object.entries(schema).map(([field, spec]) => [spec.key ?? field, [field, spec]]));
  for (const key of Object.keys(raw)) {
    if (!byKey.has(key)) {
      throw new ConfigError(`config: unknown key \`${key}\` (expected one of ${[...byKey.keys()].join(", ")})`);
    }
  }
  const out = {};
  for (const [key, [field, spec]] of byKey) {
    const value = raw[key];
    if (value === undefined || value === null) {
      if ("default" in spec) out[field] = spec.default;
      else if (spec.optional) out[field] = undefined;
      else throw new ConfigError(`config: missing key \`${key}\``);
      continue;
    }
    const ok = {
      string: typeof value === "string",
      number: typeof value === "number",
      integer: Number.isInteger(value),
      boolean: typeof value === "boolean",
      array: Array.isArray(value),
      object: typeof value === "object" && !Array.isArray(value),
    }[spec.type];
    if (ok === undefined) throw new ConfigError(`config schema: \`${field}\` has unknown type ${spec.type}`);
    if (!ok) throw new ConfigError(`config.${key}: expected ${spec.type}, got ${JSON.stringify(value)}`);
    out[field] = value;
  }
  return out;
}

// ---------------------------------------------------------------- host interfaces

/** Lines in the proxy's log, tagged with the filter's name (rate-limited by the host). */
export const log = {
  trace: (m) => wlog.log("trace", m),
  debug: (m) => wlog.log("debug", m),
  info: (m) => wlog.log("info", m),
  warn: (m) => wlog.log("warn", m),
  error: (m) => wlog.log("error", m),
};

/** `weft_filter_*{filter, name}` on the admin endpoint's `/metrics`. */
export const metrics = {
  counterAdd: (name, delta = 1) => wmetrics.counterAdd(name, BigInt(delta)),
  gaugeSet: (name, value) => wmetrics.gaugeSet(name, BigInt(value)),
  histogramObserve: (name, value) => wmetrics.histogramObserve(name, value),
  /** One labelled series of `name` (at most 4 labels): `{ operation: "GetUser" }`. */
  counterAddLabelled: (name, labels, delta = 1) => wmetrics.counterAddLabelled(name, headerList(labels), BigInt(delta)),
  gaugeSetLabelled: (name, labels, value) => wmetrics.gaugeSetLabelled(name, headerList(labels), BigInt(value)),
  histogramObserveLabelled: (name, labels, value) => wmetrics.histogramObserveLabelled(name, headerList(labels), value),
};

/** Facts about the current request (empty during the constructor). */
export const metadata = {
  clientAddress: wmetadata.clientAddress,
  listener: wmetadata.listener,
  route: wmetadata.route,
  scheme: wmetadata.scheme,
  peerIdentity: wmetadata.peerIdentity,
};

/** Values for the rest of this request, under this filter's name. */
export const context = {
  get: (key) => wcontext.get(key),
  getFrom: (filter, key) => wcontext.getFrom(filter, key),
  set: (key, value) => rethrow(ContextError, () => wcontext.set(key, value)),
};

const decoder = new TextDecoder();

/** The store shared by every instance of this filter. Every call throws `KvError`. */
export const kv = {
  /** The value as a Uint8Array, or undefined. */
  get: (key) => rethrow(KvError, () => wkv.get(key)),
  getString: (key) => {
    const v = kv.get(key);
    return v === undefined ? undefined : decoder.decode(v);
  },
  set: (key, value, ttlMs) =>
    rethrow(KvError, () => wkv.set(key, bytes(value), ttlMs === undefined ? undefined : BigInt(ttlMs))),
  delete: (key) => rethrow(KvError, () => wkv.delete(key)),
  /** The new value, as a Number. */
  incr: (key, delta = 1, ttlMs) =>
    Number(rethrow(KvError, () => wkv.incr(key, BigInt(delta), ttlMs === undefined ? undefined : BigInt(ttlMs)))),
};

function calloutRequest(method, path, headers, body) {
  const fields = new Fields();
  for (const [name, value] of headerList(headers)) {
    try {
      fields.append(name, value);
    } catch (e) {
      fields[Symbol.dispose]();
      throw new CalloutError({ tag: "invalid-request", val: new HeaderError(e.payload).message });
    }
  }
  return { method, path, headers: fields, body: bytes(body) };
}

function calloutResponse(r) {
  const headers = r.headers.entries();
  r.headers[Symbol.dispose]();
  return {
    status: r.status,
    headers,
    body: r.body,
    text: () => decoder.decode(r.body),
    header: (name) => headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1],
  };
}

/** HTTP requests to clusters of the config. Waiting is not charged to the CPU budget. */
export const callout = {
  /** `{ status, headers, body, text(), header(name) }`; throws `CalloutError`. */
  send(cluster, { method = "GET", path = "/", headers = {}, body = "", timeoutMs = 1000 } = {}) {
    const req = calloutRequest(method, path, headers, body);
    return calloutResponse(rethrow(CalloutError, () => wcallout.send(cluster, req, timeoutMs)));
  },
  /** `[{ cluster, method, path, headers, body, timeoutMs }]`, at most 16, sent at once:
   *  each answer is a response or a `CalloutError`, in order. */
  sendAll(requests) {
    const pending = requests.map(({ cluster, method = "GET", path = "/", headers = {}, body = "", timeoutMs = 1000 }) => ({
      cluster,
      request: calloutRequest(method, path, headers, body),
      timeoutMs,
    }));
    return wcallout
      .sendAll(pending)
      .map((r) => (r.tag === "ok" ? calloutResponse(r.val) : new CalloutError(r.val)));
  },
};
