//! A filter as it was built for `weft:filter@0.1.0` (the WIT under `wit/` is the 0.1
//! release, kept as it was): the host refuses it, naming both versions and how to rebuild.

// The generated export glue is `unsafe` (export_name, raw ABI); the SDK hides it, this
// SDK-less plugin cannot.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "filter" });

use exports::weft::filter::hooks::{Guest, Options};
use weft::filter::types::{Decision, Request, Response};

struct Old;

impl Guest for Old {
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

export!(Old);
