//! Paths of the Wasm plugins built by `build.rs` (`cargo plugins`), for tests to load.
//! Each is a real crate: `conformance/plugins/<name>/` or `examples/hello-filter/`.

/// Continues in every phase: the boundary's baseline cost.
pub const NOOP: &str = env!("WEFT_PLUGIN_NOOP");
/// Spins forever on `/loop`: the CPU budget must stop it.
pub const INFINITE_LOOP: &str = env!("WEFT_PLUGIN_INFINITE_LOOP");
/// Allocates without bound on `/alloc`: the memory limit must stop it.
pub const ALLOC_FOREVER: &str = env!("WEFT_PLUGIN_ALLOC_FOREVER");
/// Executes `unreachable` on `/trap`.
pub const TRAP: &str = env!("WEFT_PLUGIN_TRAP");
/// Panics on `/panic`.
pub const PANIC: &str = env!("WEFT_PLUGIN_PANIC");
/// Targets the next minor version of `weft:filter`: must be refused with both versions named.
pub const WRONG_VERSION: &str = env!("WEFT_PLUGIN_WRONG_VERSION");
/// A filter built for `weft:filter@0.1.0`: refused, with how to rebuild.
pub const BUILT_FOR_0_1: &str = env!("WEFT_PLUGIN_BUILT_FOR_0_1");
/// A filter built for `weft:filter@0.2.0` (the WIT as released): still linked and run.
pub const BUILT_FOR_0_2_0: &str = env!("WEFT_PLUGIN_BUILT_FOR_0_2_0");
/// Exercises every host interface, driven by `x-cap-*` request headers (see its docs).
pub const CAPABILITIES: &str = env!("WEFT_PLUGIN_CAPABILITIES");
/// The example filter a newcomer copies.
pub const HELLO_FILTER: &str = env!("WEFT_PLUGIN_HELLO_FILTER");
/// First-party JWT authentication (`plugins/jwt-auth`).
pub const JWT_AUTH: &str = env!("WEFT_PLUGIN_JWT_AUTH");
/// First-party API-key authentication (`plugins/api-key`).
pub const API_KEY: &str = env!("WEFT_PLUGIN_API_KEY");
/// First-party HTTP Basic authentication (`plugins/basic-auth`).
pub const BASIC_AUTH: &str = env!("WEFT_PLUGIN_BASIC_AUTH");
/// First-party external authorization (`plugins/ext-authz`).
pub const EXT_AUTHZ: &str = env!("WEFT_PLUGIN_EXT_AUTHZ");
/// First-party rate limiting (`plugins/rate-limit`).
pub const RATE_LIMIT: &str = env!("WEFT_PLUGIN_RATE_LIMIT");
/// First-party GraphQL endpoint and function routing (`plugins/graphql`).
pub const GRAPHQL: &str = env!("WEFT_PLUGIN_GRAPHQL");
