//! `native = "headers"`: sets and removes request and response headers.
//!
//! ```toml
//! [[filters]]
//! name = "tag"
//! native = "headers"
//! config = { request_set = { x-team = "payments" }, request_remove = ["x-debug"],
//!            response_set = { cache-control = "no-store" }, response_remove = ["server"] }
//! ```
//!
//! The names only the proxy sets (framing, hop-by-hop, `host`, `via`: the one list in
//! [`crate::header_policy`]) are refused at load, as in a route's header edits.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::{
    Filter, FilterRequest, FilterResponse, RequestCtx, RequestDecision, RequestFuture, ResponseDecision, ResponseFuture,
};
use crate::header_policy::HeaderEdits;

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

pub struct HeadersFilter {
    name: String,
    request: HeaderEdits,
    response: HeaderEdits,
}

impl HeadersFilter {
    pub fn new(name: &str, config: toml::Value) -> Result<HeadersFilter, String> {
        let settings: Settings = config.try_into().map_err(|e: toml::de::Error| e.message().to_owned())?;
        Ok(HeadersFilter {
            name: name.to_owned(),
            request: HeaderEdits::build(
                "request headers",
                &settings.request_remove,
                &settings.request_set,
                &BTreeMap::new(),
            )?,
            response: HeaderEdits::build(
                "response headers",
                &settings.response_remove,
                &settings.response_set,
                &BTreeMap::new(),
            )?,
        })
    }
}

impl Filter for HeadersFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request<'a>(&'a self, req: &'a mut FilterRequest, _ctx: &'a mut RequestCtx) -> RequestFuture<'a> {
        self.request.apply(&mut req.head.headers);
        Box::pin(std::future::ready(Ok(RequestDecision::Continue)))
    }

    fn on_response<'a>(&'a self, resp: &'a mut FilterResponse, _ctx: &'a mut RequestCtx) -> ResponseFuture<'a> {
        self.response.apply(&mut resp.head.headers);
        Box::pin(std::future::ready(Ok(ResponseDecision::Continue)))
    }

    fn has_request_phase(&self) -> bool {
        !self.request.is_empty()
    }

    fn has_response_phase(&self) -> bool {
        !self.response.is_empty()
    }
}
