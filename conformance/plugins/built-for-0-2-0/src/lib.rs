//! A filter as it was built for `weft:filter@0.2.0` (the WIT under `wit/` is the 0.2.0
//! release, kept as it was): a later 0.2.x host links it (the component model's semver
//! matching) and runs it. It stamps `x-built-for: 0.2.0` on the request and counts it.

// The generated export glue is `unsafe` (export_name, raw ABI); the SDK hides it, this
// SDK-less plugin cannot.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "filter" });

use exports::weft::filter::hooks::{Guest, Options};
use weft::filter::metrics;
use weft::filter::types::{Phases, Request, RequestDecision, Response, ResponseDecision};

struct Released;

impl Guest for Released {
    fn init(_config: String) -> Result<Options, String> {
        Ok(Options {
            phases: Phases::REQUEST,
            request_body: false,
            response_body: false,
        })
    }

    fn on_request(request: &Request) -> RequestDecision {
        let _ = request.headers().set("x-built-for", "0.2.0");
        metrics::counter_add("stamped", 1);
        RequestDecision::Continue
    }

    fn on_response(_response: &Response) -> ResponseDecision {
        ResponseDecision::Continue
    }
}

export!(Released);
