//! Weft: a WebAssembly-extensible programmable proxy.
//!
//! A request's path is `listen` → `proxy` (front door, route, filter chain, cluster) →
//! upstream and back; `proxy.rs` reads top-down. Everything configurable is built into an
//! immutable `state::Version` per config version and swapped atomically on reload.
//! Modules import only the stages below them: `docs/architecture.md` draws the floors.

pub mod admin;
pub mod audit;
pub mod body;
pub mod config;
pub mod conn;
pub mod demo;
pub mod filter;
pub mod forward;
pub mod front;
pub mod grpc;
pub mod header_policy;
pub mod hop;
pub mod kv;
pub mod listen;
pub mod log;
pub mod metrics;
pub mod observe;
pub mod plugin;
pub mod proxy;
pub mod ready;
pub mod respond;
pub mod route;
pub mod server;
pub mod sidecar;
pub mod state;
pub mod tls;
pub mod upstream;
pub mod wasm;
pub mod watch;
pub mod worker;
pub mod xds;
