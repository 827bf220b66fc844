//! Logging into the proxy's log. Each line is tagged with the filter's name; the proxy's
//! log level decides what is kept.
//!
//! ```no_run
//! weft_sdk::log::info(&format!("user {} allowed", "alice"));
//! ```

use crate::bindings::weft::filter::log::{Level, log};

/// Logs at `trace` level.
///
/// ```no_run
/// weft_sdk::log::trace("entering on_request");
/// ```
pub fn trace(message: &str) {
    log(Level::Trace, message)
}

/// Logs at `debug` level.
///
/// ```no_run
/// weft_sdk::log::debug("cache miss");
/// ```
pub fn debug(message: &str) {
    log(Level::Debug, message)
}

/// Logs at `info` level.
///
/// ```no_run
/// weft_sdk::log::info("config loaded");
/// ```
pub fn info(message: &str) {
    log(Level::Info, message)
}

/// Logs at `warn` level.
///
/// ```no_run
/// weft_sdk::log::warn("token expires soon");
/// ```
pub fn warn(message: &str) {
    log(Level::Warn, message)
}

/// Logs at `error` level.
///
/// ```no_run
/// weft_sdk::log::error("auth service unreachable");
/// ```
pub fn error(message: &str) {
    log(Level::Error, message)
}
