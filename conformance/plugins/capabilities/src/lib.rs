//! Exercises every host interface, each driven by a request header so a test can poke
//! one capability at a time. Results come back as request headers (which an echo
//! upstream reflects) or as direct replies.
//!
//! Request phase, in this order:
//! - `x-cap-log: <text>`            log at info
//! - `x-cap-log-lines: <n>`         log n lines at info (`line 0 of n`…)
//! - `x-cap-print-lines: <n>`       write n lines to stdout
//! - `x-cap-metric: <name>`         counter +1, gauge = 7, histogram observe 0.5
//! - `x-cap-metric-labelled: <name>;<key>=<value>;...` the same three calls for that
//!   labelled series (`metrics::*_labelled`)
//! - `x-cap-metric-handles: <name>` the raw handle calls (0.2.3): counter `<name>` +2
//!   through its handle, then that handle used as a gauge's, a handle never given
//!   (4 000 000) and the handle of a refused name (`bad name`); sets `x-handle` (the
//!   handle, or `none`) and `x-handle-refused` (`none`, or the handle given)
//! - `x-cap-metric-handle-flood: <n>` asks for handles to n new labelled series of counter
//!   `flood` and adds 1 through each; sets `x-handles-given: <handles given>`
//! - `x-cap-metadata: 1`            sets `x-meta-{client,listener,route,scheme,peer}`
//! - `x-cap-kv-set: <key>=<value>`  `x-cap-kv-ttl-ms` optional; sets `x-kv-set: ok|<err>`
//! - `x-cap-kv-get: <key>`          sets `x-kv-value` (or `x-kv-missing: 1`)
//! - `x-cap-kv-delete: <key>`       sets `x-kv-deleted: true|false`
//! - `x-cap-kv-incr: <key>`         `x-cap-kv-ttl-ms` optional; sets `x-kv-count`
//! - `x-cap-kv-fill: <prefix>:<n>`  sets keys `<prefix>0`..`<prefix><n-1>` to 32 bytes each
//!   (`x-cap-kv-ttl-ms` optional); sets `x-kv-filled: <n>`, or `x-kv-fill-error` with the
//!   first error and `x-kv-filled` with the writes that succeeded before it
//! - `x-cap-callout: <cluster>`     `x-cap-callout-path`, `x-cap-callout-timeout-ms`
//!   optional; replies 200 with `x-callout-status`, `x-callout-type` (the answer's
//!   `content-type`) and the callout's body, or 502 with the typed error (`Timeout`...)
//! - `x-cap-callout-all: <cluster>,<cluster>,...` sends `POST <x-cap-callout-path>` to each
//!   at once (`callout::send_all`); replies 200 with one line per answer, in order:
//!   `<status> <body>` or the typed error
//! - `x-cap-fields: 1`              sets `x-fields-multi` (every `x-multi` value, joined
//!   by `,`), `x-fields-has-multi`, `x-fields-count` (entries) and `x-fields-framing` (the
//!   error setting `content-length`)
//! - `x-cap-fields-set: <name>`     sets `x-fields-set` (setting `<name>` on the request:
//!   `ok` or the error) and `x-fields-own-set` (the same on a new list, a callout's)
//! - `x-cap-fields-many: <n>`       the batch calls (0.2.2): `get_many` of `x-a`, `X-B` and
//!   `x-missing` sets `x-many-get` (`a|b|none`); `set_many` sets `x-s1: 1` and `x-s2: 2`;
//!   `delete_many` removes `x-d1` and `x-d2`; `set_many` of `x-atomic: 1` with
//!   `content-length: 9` sets `x-many-atomic` (the error: nothing of it applied); then
//!   `get_many` of `n` names (the host takes at most 64 in one call: more traps)
//! - `x-cap-fields-leak: <n>`       makes n header lists and never drops them (the host
//!   allows 64 at once: more traps)
//! - `x-cap-append-flood: <n>`     appends n headers `x-flood-<i>` to the request (the host's
//!   header map holds at most 32 768 entries: past that the phase fails, the host survives)
//! - `x-cap-ctx-set: <key>=<value>` stores a context value; sets `x-ctx-set: ok|<err>`
//! - `x-cap-ctx-from: <filter>/<key>` sets `x-ctx-from` to that filter's value (or `none`)
//! - `x-cap-ctx-flood: <n>`         stores n values of 1 KiB; sets `x-ctx-flood: <stored>`
//!   and `x-ctx-flood-error` with the first error
//! - `x-cap-body: 1`                sets `x-body-len` (or `x-body: none`)
//! - `x-cap-set-body: <text>`       replaces the body; sets `x-set-body: ok|<err>`
//! - `x-cap-set-path: <path>`       rewrites the path
//! - `x-cap-remove: <name>`         removes a header
//! - `x-cap-reroute: <cluster>`     reroutes
//! - `x-cap-respond: <status>`      replies with that status, `x-responded-by: capabilities`
//!
//! Response phase: adds `x-cap-response: seen`, `x-resp-body-len` when bodies are
//! buffered, and `x-ctx-own: <value>` when the request phase stored a context value (the
//! last `x-cap-ctx-set`); a response header `x-cap-replace: <status>` makes it reply
//! with that status.
//!
//! In `x-cap-log` and `x-cap-metric(-labelled)`, `\n`, `\r`, `\e` (ESC) and `\\` stand for
//! what a header value cannot carry, so tests can send newlines and terminal escapes.
//!
//! Config: `request_body`, `response_body` (buffer bodies), `phases` (`"request"`,
//! `"response"` or `"both"`, the default), `refuse` (init fails with this message),
//! `panic_in_init`.

use std::time::Duration;

use weft_sdk::callout::{Callout, send_all};
use weft_sdk::{
    Decision, Filter, Options, Phases, Reply, Request, Response, ResponseDecision, context, kv, log, metadata, metrics,
};

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    request_body: bool,
    #[serde(default)]
    response_body: bool,
    #[serde(default)]
    phases: Option<String>,
    refuse: Option<String>,
    #[serde(default)]
    panic_in_init: bool,
}

/// The context key under which the request phase notes which key it stored.
const LAST_KEY: &str = "last-key";

struct Capabilities {
    options: Options,
}

fn ttl(request: &Request<'_>) -> Option<Duration> {
    request
        .header("x-cap-kv-ttl-ms")?
        .parse()
        .ok()
        .map(Duration::from_millis)
}

/// Many writes in one request, so a test can flood the store quickly.
fn fill(req: &mut Request<'_>, spec: &str) {
    let (prefix, n) = spec.rsplit_once(':').unwrap_or((spec, "1"));
    let n: u64 = n.parse().unwrap_or(1);
    let ttl = ttl(req);
    let value = [b'v'; 32];
    let mut key = String::with_capacity(prefix.len() + 20);
    for i in 0..n {
        key.clear();
        key.push_str(prefix);
        key.push_str(&i.to_string());
        if let Err(e) = kv::set(&key, &value, ttl) {
            let _ = req.set_header("x-kv-fill-error", &e.to_string());
            let _ = req.set_header("x-kv-filled", &i.to_string());
            return;
        }
    }
    let _ = req.set_header("x-kv-filled", &n.to_string());
}

/// Undoes the escapes a test uses for characters a header value cannot carry.
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('e') => out.push('\u{1b}'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// `ok`, or the error: typed errors show their variant (`NotAnInteger`).
fn outcome<E: std::fmt::Display>(result: Result<(), E>) -> String {
    result.map_or_else(|e| e.to_string(), |()| "ok".to_owned())
}

fn fields(req: &mut Request<'_>) {
    let headers = req.headers();
    let multi = headers.get_all("x-multi").join(",");
    let has = headers.has("x-multi");
    let count = headers.entries().len();
    let framing = outcome(headers.set("content-length", "1"));
    let _ = req.set_header("x-fields-multi", &multi);
    let _ = req.set_header("x-fields-has-multi", &has.to_string());
    let _ = req.set_header("x-fields-count", &count.to_string());
    let _ = req.set_header("x-fields-framing", &framing);
}

fn fields_many(req: &mut Request<'_>, n: usize) {
    let headers = req.headers();
    let got: Vec<String> = headers
        .get_many(&["x-a", "X-B", "x-missing"])
        .into_iter()
        .map(|v| v.unwrap_or_else(|| "none".to_owned()))
        .collect();
    let set = outcome(headers.set_many(&[("x-s1", "1"), ("x-s2", "2")]));
    headers.delete_many(&["x-d1", "x-d2"]);
    let atomic = outcome(headers.set_many(&[("x-atomic", "1"), ("content-length", "9")]));
    if n > 0 {
        let names: Vec<String> = (0..n).map(|i| format!("x-n{i}")).collect();
        let _ = headers.get_many(&names);
    }
    let _ = headers.set_many(&[
        ("x-many-get", got.join("|").as_str()),
        ("x-many-set", set.as_str()),
        ("x-many-atomic", atomic.as_str()),
    ]);
}

fn context_flood(req: &mut Request<'_>, n: usize) {
    let value = "v".repeat(1024);
    for i in 0..n {
        if let Err(e) = context::set(&format!("flood{i}"), &value) {
            let _ = req.set_header("x-ctx-flood-error", &e.to_string());
            let _ = req.set_header("x-ctx-flood", &i.to_string());
            return;
        }
    }
    let _ = req.set_header("x-ctx-flood", &n.to_string());
}

impl Filter for Capabilities {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        if let Some(reason) = config.refuse {
            return Err(reason);
        }
        if config.panic_in_init {
            panic!("capabilities was told to panic in init");
        }
        log::debug("capabilities filter initialised");
        let phases = match config.phases.as_deref() {
            None | Some("both") => Phases::BOTH,
            Some("request") => Phases::REQUEST,
            Some("response") => Phases::RESPONSE,
            Some(other) => return Err(format!("phases: {other:?} is not request, response or both")),
        };
        Ok(Capabilities {
            options: Options {
                phases,
                request_body: config.request_body,
                response_body: config.response_body,
            },
        })
    }

    fn options(&self) -> Options {
        self.options
    }

    fn on_request(&self, req: &mut Request<'_>) -> Decision {
        if let Some(text) = req.header("x-cap-log") {
            log::info(&unescape(&text));
        }
        let count = |name: &str| req.header(name).and_then(|n| n.parse::<usize>().ok());
        if let Some(n) = count("x-cap-log-lines") {
            for i in 0..n {
                log::info(&format!("line {i} of {n}"));
            }
        }
        if let Some(n) = count("x-cap-print-lines") {
            for i in 0..n {
                println!("printed {i} of {n}");
            }
        }
        if let Some(name) = req.header("x-cap-metric").map(|n| unescape(&n)) {
            metrics::counter_add(&name, 1);
            metrics::gauge_set(&name, 7);
            metrics::histogram_observe(&name, 0.5);
        }
        if let Some(spec) = req.header("x-cap-metric-labelled").map(|n| unescape(&n)) {
            let mut parts = spec.split(';');
            let name = parts.next().unwrap_or_default();
            let labels: Vec<(&str, &str)> = parts.map(|p| p.split_once('=').unwrap_or((p, ""))).collect();
            metrics::counter_add_labelled(name, &labels, 1);
            metrics::gauge_set_labelled(name, &labels, 7);
            metrics::histogram_observe_labelled(name, &labels, 0.5);
        }
        if let Some(name) = req.header("x-cap-metric-handles") {
            use weft_sdk::bindings::weft::filter::metrics as raw;
            let handle = raw::series(raw::MetricKind::Counter, &name, &[]);
            if let Some(h) = handle {
                raw::counter_add_by_handle(h, 2);
                raw::gauge_set_by_handle(h, 7);
            }
            raw::counter_add_by_handle(4_000_000, 5);
            let refused = raw::series(raw::MetricKind::Counter, "bad name", &[]);
            let shown = |h: Option<u32>| h.map_or("none".to_owned(), |h| h.to_string());
            let _ = req.set_header("x-handle", &shown(handle));
            let _ = req.set_header("x-handle-refused", &shown(refused));
        }
        if let Some(n) = req
            .header("x-cap-metric-handle-flood")
            .and_then(|n| n.parse::<usize>().ok())
        {
            use weft_sdk::bindings::weft::filter::metrics as raw;
            let mut given = 0;
            for i in 0..n {
                let labels = [("n".to_owned(), i.to_string())];
                if let Some(h) = raw::series(raw::MetricKind::Counter, "flood", &labels) {
                    raw::counter_add_by_handle(h, 1);
                    given += 1;
                }
            }
            let _ = req.set_header("x-handles-given", &given.to_string());
        }
        if req.header("x-cap-metadata").is_some() {
            let _ = req.set_header("x-meta-client", &metadata::client_address());
            let _ = req.set_header("x-meta-listener", &metadata::listener());
            let _ = req.set_header("x-meta-route", &metadata::route());
            let _ = req.set_header("x-meta-scheme", &metadata::scheme());
            let _ = req.set_header(
                "x-meta-peer",
                &metadata::peer_identity().unwrap_or_else(|| "none".into()),
            );
        }
        if let Some(pair) = req.header("x-cap-kv-set") {
            let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
            let result = kv::set(key, value.as_bytes(), ttl(req));
            let _ = req.set_header("x-kv-set", &outcome(result));
        }
        if let Some(key) = req.header("x-cap-kv-get") {
            match kv::get_string(&key) {
                Ok(Some(value)) => drop(req.set_header("x-kv-value", &value)),
                Ok(None) => drop(req.set_header("x-kv-missing", "1")),
                Err(e) => drop(req.set_header("x-kv-error", &e.to_string())),
            }
        }
        if let Some(key) = req.header("x-cap-kv-delete") {
            let text = kv::delete(&key).map_or_else(|e| e.to_string(), |existed| existed.to_string());
            let _ = req.set_header("x-kv-deleted", &text);
        }
        if let Some(key) = req.header("x-cap-kv-incr") {
            let text = kv::incr(&key, 1, ttl(req)).map_or_else(|e| e.to_string(), |n| n.to_string());
            let _ = req.set_header("x-kv-count", &text);
        }
        if let Some(spec) = req.header("x-cap-kv-fill") {
            fill(req, &spec);
        }
        if req.header("x-cap-fields").is_some() {
            fields(req);
        }
        if let Some(name) = req.header("x-cap-fields-set") {
            let on_request = outcome(req.headers().set(&name, "1"));
            let own = outcome(weft_sdk::Fields::new().set(&name, "1"));
            let _ = req.set_header("x-fields-set", &on_request);
            let _ = req.set_header("x-fields-own-set", &own);
        }
        if let Some(n) = req.header("x-cap-fields-many").and_then(|n| n.parse::<usize>().ok()) {
            fields_many(req, n);
        }
        if let Some(n) = req.header("x-cap-fields-leak").and_then(|n| n.parse::<usize>().ok()) {
            for _ in 0..n {
                std::mem::forget(weft_sdk::Fields::new());
            }
        }
        if let Some(n) = req.header("x-cap-append-flood").and_then(|n| n.parse::<usize>().ok()) {
            let headers = req.headers();
            for i in 0..n {
                let _ = headers.append(&format!("x-flood-{i}"), "1");
            }
        }
        if let Some(pair) = req.header("x-cap-ctx-set") {
            let (key, value) = pair.split_once('=').unwrap_or((&pair, ""));
            let result = context::set(key, value).and_then(|()| context::set(LAST_KEY, key));
            let _ = req.set_header("x-ctx-set", &outcome(result));
        }
        if let Some(spec) = req.header("x-cap-ctx-from") {
            let (filter, key) = spec.split_once('/').unwrap_or((&spec, ""));
            let value = context::get_from(filter, key).unwrap_or_else(|| "none".into());
            let _ = req.set_header("x-ctx-from", &value);
        }
        if let Some(n) = req.header("x-cap-ctx-flood").and_then(|n| n.parse().ok()) {
            context_flood(req, n);
        }
        if let Some(list) = req.header("x-cap-callout-all") {
            let path = req.header("x-cap-callout-path").unwrap_or_else(|| "/callout".into());
            let calls = list.split(',').map(|cluster| {
                (
                    cluster,
                    Callout::new("POST", path.clone()).header("x-from", "capabilities"),
                )
            });
            let lines: Vec<String> = send_all(calls.collect::<Vec<_>>())
                .into_iter()
                .map(|answer| match answer {
                    Ok(r) => format!("{} {}", r.status, r.text()),
                    Err(e) => e.to_string(),
                })
                .collect();
            return Reply::new(200).body(lines.join("\n")).into();
        }
        if let Some(cluster) = req.header("x-cap-callout") {
            let path = req.header("x-cap-callout-path").unwrap_or_else(|| "/callout".into());
            let timeout = req
                .header("x-cap-callout-timeout-ms")
                .and_then(|t| t.parse().ok())
                .unwrap_or(1000);
            let answer = Callout::new("POST", path)
                .header("x-from", "capabilities")
                .body("ping")
                .timeout(Duration::from_millis(timeout))
                .send(&cluster);
            return match answer {
                Ok(r) => Reply::new(200)
                    .header("x-callout-status", r.status.to_string())
                    .header("x-callout-type", r.header("content-type").unwrap_or_default())
                    .body(r.body)
                    .into(),
                Err(e) => Reply::new(502)
                    .header("x-callout-error", "1")
                    .body(e.to_string())
                    .into(),
            };
        }
        if req.header("x-cap-body").is_some() {
            match req.body() {
                Some(body) => drop(req.set_header("x-body-len", &body.len().to_string())),
                None => drop(req.set_header("x-body", "none")),
            }
        }
        if let Some(text) = req.header("x-cap-set-body") {
            let result = req.set_body(text.as_bytes());
            let _ = req.set_header("x-set-body", &outcome(result));
        }
        if let Some(path) = req.header("x-cap-set-path") {
            let result = req.set_path(&path);
            let _ = req.set_header("x-set-path", &outcome(result));
        }
        if let Some(name) = req.header("x-cap-remove") {
            req.remove_header(&name);
        }
        if let Some(cluster) = req.header("x-cap-reroute") {
            return Decision::Reroute(cluster);
        }
        if let Some(status) = req.header("x-cap-respond").and_then(|s| s.parse().ok()) {
            return Reply::new(status)
                .header("x-responded-by", "capabilities")
                .body("responded")
                .into();
        }
        Decision::Continue
    }

    fn on_response(&self, resp: &mut Response<'_>) -> ResponseDecision {
        let _ = resp.set_header("x-cap-response", "seen");
        if let Some(value) = context::get(LAST_KEY).and_then(|key| context::get(&key)) {
            let _ = resp.set_header("x-ctx-own", &value);
        }
        if let Some(body) = resp.body() {
            let _ = resp.set_header("x-resp-body-len", &body.len().to_string());
        }
        if let Some(status) = resp.header("x-cap-replace").and_then(|s| s.parse().ok()) {
            return Reply::new(status).body("replaced").into();
        }
        ResponseDecision::Continue
    }
}

weft_sdk::export!(Capabilities);
