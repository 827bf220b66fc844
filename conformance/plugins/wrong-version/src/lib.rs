//! Built against `weft:filter@0.2.0` (a copy of the WIT under `wit/` with the version
//! changed): the host must refuse it with an error naming both versions.

// The generated export glue is `unsafe` (export_name, raw ABI); the SDK hides it, this
// SDK-less plugin cannot.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "filter" });

use exports::weft::filter::hooks::{Guest, Options};
use weft::filter::types::{Decision, Request, Response};

struct Future;

impl Guest for Future {
    fn init(_config: String) -> Result<Options, String> {
        Ok(Options {
            request_body: false,
            response_body: false,
        })
    }

    fn on_request(_request: &Request) -> Decision {
        Decision::Continue
    }

    fn on_response(_response: &Response) -> Decision {
        Decision::Continue
    }
}

export!(Future);
