//! The host side of each interface the `weft:filter` world imports (`wit/filter.wit`),
//! one file per interface, each an `impl` of its generated `Host` trait on
//! [`HostState`](super::state::HostState): `http` (the `types` resources: request,
//! response, fields), `log`, `metrics`, `metadata`, `context`, `kv`, `callout`, and
//! `stdio`, the guest's output streams.

pub(super) mod callout;
pub(super) mod context;
pub(super) mod http;
pub(super) mod kv;
pub(super) mod log;
pub(super) mod metadata;
pub(super) mod metrics;
pub(super) mod stdio;
