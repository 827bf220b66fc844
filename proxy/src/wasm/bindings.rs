//! Host bindings generated from `wit/filter.wit`, quarantined here; the rest of `wasm`
//! uses the re-exports below.

// Generated code: its `unsafe` blocks are wasmtime's typed-function plumbing.
#![allow(unsafe_code, missing_docs)]

wasmtime::component::bindgen!({
    path: "../wit",
    world: "filter",
    imports: {
        // KV (a Redis backend later) and callouts do network I/O: they are `async` so a
        // waiting guest parks its task instead of a worker thread.
        "weft:filter/kv": async | trappable,
        "weft:filter/callout": async | trappable,
        // Trappable so a host function can fail the phase (a body over the limit).
        default: trappable,
    },
    exports: { default: async },
    with: {
        "weft:filter/types.request": super::host::http::RequestHandle,
        "weft:filter/types.response": super::host::http::ResponseHandle,
        "weft:filter/types.fields": super::host::http::Fields,
    },
});

// `self::`: the generated module is named `weft`, like this crate, which rustdoc's
// doctests would otherwise resolve to.
pub use self::exports::weft::filter::hooks::Options;
pub use self::weft::filter::callout::{CalloutError, CalloutRequest, CalloutResponse};
pub use self::weft::filter::context::ContextError;
pub use self::weft::filter::kv::KvError as WitKvError;
pub use self::weft::filter::log::Level;
pub use self::weft::filter::types::{
    HeaderError, Phases, Reply, RequestDecision as WitRequestDecision, ResponseDecision as WitResponseDecision,
};
pub use self::weft::filter::{callout, context, kv, log, metadata, metrics, types};
