//! Downstream listeners: where connections come in. One accept loop for every kind
//! (`accept`), TCP with optional TLS serving HTTP/1.1 and HTTP/2 (`tcp`), QUIC serving
//! HTTP/3 (`quic`), what an idle connection keeps (`rest`), and the time limits on a
//! connection (`watchdog`); sidecar listeners take intercepted connections (`transparent`,
//! telling HTTP from the rest with `detect`, routing TLS by its SNI with `sni`); `live` adds
//! and drops listeners on reload. Every request they read goes to `proxy::handle`, whose first
//! step is the front door (`front`).

pub mod accept;
pub mod detect;
pub mod live;
pub mod quic;
pub mod rest;
pub mod sni;
pub mod tcp;
pub mod transparent;
pub mod watchdog;

pub use accept::{Acceptor, Gate, Pass, accept_loop};
pub use tcp::Listener;
