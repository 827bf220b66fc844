//! `native = "headers"`: sets and removes request and response headers.
//!
//! ```toml
//! [[filters]]
//! name = "tag"
//! native = "headers"
//! config = { request_set = { x-team = "payments" }, request_remove = ["x-debug"],
//!            response_set = { cache-control = "no-store" }, response_remove = ["server"] }
//! ```

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::Deserialize;

use super::{Decision, Filter, FilterRequest, FilterResponse, PhaseFuture, RequestCtx};

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Settings {
    #[serde(default)]
    request_set: BTreeMap<String, String>,
    #[serde(default)]
    request_remove: Vec<String>,
    #[serde(default)]
    response_set: BTreeMap<String, String>,
    #[serde(default)]
    response_remove: Vec<String>,
}

/// Compiled edits: names and values parsed once, at config load.
struct Edits {
    set: Vec<(HeaderName, HeaderValue)>,
    remove: Vec<HeaderName>,
}

impl Edits {
    fn build(set: BTreeMap<String, String>, remove: Vec<String>) -> Result<Edits, String> {
        let name = |n: &str| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid header name {n:?}"));
        Ok(Edits {
            set: set
                .iter()
                .map(|(n, v)| {
                    let value = HeaderValue::from_str(v).map_err(|_| format!("invalid value for header {n:?}"))?;
                    Ok((name(n)?, value))
                })
                .collect::<Result<_, String>>()?,
            remove: remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
        })
    }

    fn is_empty(&self) -> bool {
        self.set.is_empty() && self.remove.is_empty()
    }

    fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
    }
}

pub struct HeadersFilter {
    name: String,
    request: Edits,
    response: Edits,
}

impl HeadersFilter {
    pub fn new(name: &str, config: toml::Value) -> Result<HeadersFilter, String> {
        let settings: Settings = config.try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        Ok(HeadersFilter {
            name: name.to_owned(),
            request: Edits::build(settings.request_set, settings.request_remove)?,
            response: Edits::build(settings.response_set, settings.response_remove)?,
        })
    }
}

impl Filter for HeadersFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request<'a>(&'a self, req: &'a mut FilterRequest, _ctx: &'a mut RequestCtx) -> PhaseFuture<'a> {
        self.request.apply(&mut req.head.headers);
        Box::pin(std::future::ready(Ok(Decision::Continue)))
    }

    fn on_response<'a>(&'a self, resp: &'a mut FilterResponse, _ctx: &'a mut RequestCtx) -> PhaseFuture<'a> {
        self.response.apply(&mut resp.head.headers);
        Box::pin(std::future::ready(Ok(Decision::Continue)))
    }

    fn has_request_phase(&self) -> bool {
        !self.request.is_empty()
    }

    fn has_response_phase(&self) -> bool {
        !self.response.is_empty()
    }
}
