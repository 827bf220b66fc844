//! Glue between the generated bindings and [`Filter`](crate::Filter), used by
//! [`export!`](crate::export). Not a public API.

use std::any::Any;
use std::cell::RefCell;

pub use wit_bindgen;

pub use crate::bindings::exports::weft::filter::hooks::Guest;
use crate::bindings::weft::filter::types as wit;
pub use wit::{Decision as WitDecision, Options as WitOptions};

use crate::{Decision, Filter, Request, Response};

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
    Ok(WitOptions {
        request_body: options.request_body,
        response_body: options.response_body,
    })
}

fn with_filter<F: Filter>(run: impl FnOnce(&F) -> Decision) -> WitDecision {
    FILTER.with(
        |slot| match slot.borrow().as_ref().and_then(|f| f.downcast_ref::<F>()) {
            Some(filter) => lower(run(filter)),
            // The host always calls `init` first; answer rather than trap if it did not.
            None => WitDecision::Respond(wit::Reply {
                status: 500,
                headers: Vec::new(),
                body: b"filter used before init".to_vec(),
            }),
        },
    )
}

pub fn on_request<F: Filter>(request: WitRequestRef<'_>) -> WitDecision {
    with_filter::<F>(|f| f.on_request(&mut Request::new(request)))
}

pub fn on_response<F: Filter>(response: WitResponseRef<'_>) -> WitDecision {
    with_filter::<F>(|f| f.on_response(&mut Response::new(response)))
}

fn lower(decision: Decision) -> WitDecision {
    match decision {
        Decision::Continue => WitDecision::Continue,
        Decision::Respond(reply) => WitDecision::Respond(wit::Reply {
            status: reply.status,
            headers: reply.headers,
            body: reply.body,
        }),
        Decision::Reroute(cluster) => WitDecision::Reroute(cluster),
    }
}
