//! Built against the next minor version of `weft:filter` (build.rs bumps the version of
//! the real `wit/filter.wit`): the host must refuse it with an error naming both versions.

// The generated export glue is `unsafe` (export_name, raw ABI); the SDK hides it, this
// SDK-less plugin cannot.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: concat!(env!("OUT_DIR"), "/wit"), world: "filter" });

use exports::weft::filter::hooks::{Guest, Options};
use weft::filter::types::{Phases, Request, RequestDecision, Response, ResponseDecision};

struct Future;

impl Guest for Future {
    fn init(_config: String) -> Result<Options, String> {
        Ok(Options {
            phases: Phases::all(),
            request_body: false,
            response_body: false,
        })
    }

    fn on_request(_request: &Request) -> RequestDecision {
        RequestDecision::Continue
    }

    fn on_response(_response: &Response) -> ResponseDecision {
        ResponseDecision::Continue
    }
}

export!(Future);
