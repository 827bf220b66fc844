//! Logging into the proxy's log. Each line is tagged with the filter's name; the proxy's
//! log level decides what is kept.
//!
//! A filter's lines (these and its stdout/stderr, across all its instances) are limited
//! to `limits.log_rate` a second with bursts of `limits.log_burst` (100 and 200 by
//! default); the rest are dropped and counted in `weft_filter_log_dropped_total`. Control
//! characters (newlines, terminal escapes) are written escaped, so a message stays one line.
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
