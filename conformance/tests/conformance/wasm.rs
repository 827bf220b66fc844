//! The Wasm host driven as a library (`weft::wasm::WasmHost`) with the real test plugins
//! from `conformance/plugins/` (built by `build.rs`): loading errors, the sandbox's
//! limits, and each host capability. The same behaviours through the `weft` binary are
//! in the `filters` module.

mod capabilities;
mod loading;
mod sandbox;
mod support;
