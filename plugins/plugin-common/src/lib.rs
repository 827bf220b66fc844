//! What Weft's first-party plugins share. The auth plugins (`jwt-auth`, `api-key`,
//! `basic-auth`, `ext-authz`): which requests they protect ([`scope`]), where a token is
//! found and how it is removed ([`token`]), the checks on header names and realms in their
//! configs ([`header`]). All of them: durations in the proxy's syntax ([`duration`]) and
//! `application/x-www-form-urlencoded` decoding ([`form`]; query strings, form bodies).
//!
//! Plain Rust on strings, with no `weft-sdk`: each plugin does the host calls, this crate
//! the decisions, so it is tested natively once and links into every component.

pub mod duration;
pub mod form;
pub mod header;
pub mod scope;
pub mod token;
