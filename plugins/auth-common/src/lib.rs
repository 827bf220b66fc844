//! What Weft's auth plugins (`jwt-auth`, `api-key`, `basic-auth`, `ext-authz`) share: which
//! requests they protect ([`scope`]), where a token is found and how it is removed
//! ([`token`]), the checks on header names and realms in their configs ([`header`]), and
//! durations in the proxy's syntax ([`duration`]).
//!
//! Plain Rust on strings, with no `weft-sdk`: each plugin does the host calls, this crate
//! the decisions, so it is tested natively once and links into every component.

pub mod duration;
pub mod header;
pub mod scope;
pub mod token;
