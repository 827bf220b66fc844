//! Glue between the generated bindings and [`Filter`](crate::Filter), used by
//! [`export!`](crate::export). Not a public API.

use std::any::Any;
use std::cell::RefCell;

pub use wit_bindgen;

pub use crate::bindings::exports::weft::filter::hooks::Guest;
use crate::bindings::weft::filter::types as wit;
pub use wit::{Options as WitOptions, RequestDecision as WitRequestDecision, ResponseDecision as WitResponseDecision};

use crate::{Decision, Filter, Reply, Request, Response, ResponseDecision};

/// How an exported function receives the borrowed request handle.
pub type WitRequestRef<'a> = &'a wit::Request;
/// How an exported function receives the borrowed response handle.
pub type WitResponseRef<'a> = &'a wit::Response;

thread_local! {
    // One filter value per instance. Wasm instances are single-threaded, so a
    // thread-local is the instance's global; `Any` lets this non-generic slot hold the
    // plugin's type, which `export!` names at each call.
    static FILTER: RefCell<Option<Box<dyn Any>>> = const { RefCell::new(None) };
}

pub fn init<F: Filter>(config: &str) -> Result<WitOptions, String> {
    let config: F::Config = serde_json::from_str(config).map_err(|e| format!("invalid config: {e}"))?;
    let filter = F::init(config)?;
    let options = filter.options();
    FILTER.with(|slot| *slot.borrow_mut() = Some(Box::new(filter)));
    let mut phases = wit::Phases::empty();
    if options.phases.request {
        phases |= wit::Phases::REQUEST;
    }
    if options.phases.response {
        phases |= wit::Phases::RESPONSE;
    }
    Ok(WitOptions {
        phases,
        request_body: options.request_body,
        response_body: options.response_body,
    })
}

/// The host always calls `init` first; answer rather than trap if it did not.
fn before_init() -> wit::Reply {
    lower_reply(Reply::new(500).body("filter used before init"))
}

fn with_filter<F: Filter, D>(run: impl FnOnce(&F) -> D, missing: impl FnOnce() -> D) -> D {
    FILTER.with(
        |slot| match slot.borrow().as_ref().and_then(|f| f.downcast_ref::<F>()) {
            Some(filter) => run(filter),
            None => missing(),
        },
    )
}

pub fn on_request<F: Filter>(request: WitRequestRef<'_>) -> WitRequestDecision {
    with_filter::<F, _>(
        |f| match f.on_request(&mut Request::new(request)) {
            Decision::Continue => WitRequestDecision::Continue,
            Decision::Respond(reply) => WitRequestDecision::Respond(lower_reply(reply)),
            Decision::Reroute(cluster) => WitRequestDecision::Reroute(cluster),
        },
        || WitRequestDecision::Respond(before_init()),
    )
}

pub fn on_response<F: Filter>(response: WitResponseRef<'_>) -> WitResponseDecision {
    with_filter::<F, _>(
        |f| match f.on_response(&mut Response::new(response)) {
            ResponseDecision::Continue => WitResponseDecision::Continue,
            ResponseDecision::Respond(reply) => WitResponseDecision::Respond(lower_reply(reply)),
        },
        || WitResponseDecision::Respond(before_init()),
    )
}

fn lower_reply(reply: Reply) -> wit::Reply {
    wit::Reply {
        status: reply.status,
        headers: reply.headers,
        body: reply.body,
    }
}
