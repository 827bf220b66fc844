//! The conformance suite: the real `weft` binary (`target/debug/weft`, built first with
//! `cargo build -p weft`), real upstreams and real clients on 127.0.0.1. One test binary,
//! one module per area, named like the `docs/` page that documents it, so that changing
//! the shared `weft_conformance` library or the `weft` crate relinks one binary, not one
//! per area. Run one area with `cargo test -p weft-conformance -- <module>::`.

// docs/configuration.md
mod cli;
mod docs;
mod examples;
mod workers;
// docs/routes.md
mod grpc;
mod proxy;
mod routes;
mod websocket;
// docs/upstream.md
mod upstream;
// docs/tls.md
mod tls;
// docs/filters.md
mod filters;
mod kv_quota;
mod plugin_output;
mod sandbox_fairness;
mod wasm;
// docs/plugins.md
mod auth;
mod rate_limit;
// docs/graphql.md
mod graphql;
// docs/plugin-kit.md
mod plugin_kit;
// docs/languages.md
mod languages;
// docs/observability.md
mod admin;
mod observability;
// docs/tracing-and-logs.md
mod tracing_and_logs;
// Config and plugin reloads (docs/configuration.md, docs/filters.md)
mod reloads;
// docs/security.md
mod security;
// Long-running traffic
mod soak;
// docs/xds.md: driven by an ADS server
mod xds;
mod xds_istio;
mod xds_sds;
// docs/sidecar.md
mod sidecar;
// docs/sidecar.md "Over xDS": Istio's sidecar shape from an ADS server
mod xds_sidecar;
