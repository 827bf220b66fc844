//! Values that live as long as one request: left in the request phase for this filter's
//! response phase, or for the filters after it in the chain (which read them by this
//! filter's name). A filter writes only under its own name, so a value read with
//! [`get_from`] is what that filter wrote. At most 64 values and 16 KiB per request.
//!
//! ```no_run
//! // In an auth filter named "auth" (its `[[filters]]` name):
//! weft_sdk::context::set("user", "alice").ok();
//! // In a later filter of the chain:
//! let user = weft_sdk::context::get_from("auth", "user");
//! ```

use crate::bindings::weft::filter::context as wit;

pub use wit::ContextError;

/// This filter's value at `key`, from an earlier phase of the same request.
///
/// ```no_run
/// let started = weft_sdk::context::get("started");
/// ```
pub fn get(key: &str) -> Option<String> {
    wit::get(key)
}

/// The value `filter` (its name in the config) left at `key` for this request.
///
/// The proxy files its own values under `"weft"`: `get_from("weft", "trace-id")` is the
/// request's trace id (32 hex digits) when tracing is on, `None` otherwise.
///
/// ```no_run
/// let user = weft_sdk::context::get_from("auth", "user");
/// ```
pub fn get_from(filter: &str, key: &str) -> Option<String> {
    wit::get_from(filter, key)
}

/// Stores `value` at `key` for the rest of this request, replacing this filter's earlier
/// value.
///
/// ```no_run
/// weft_sdk::context::set("remaining", "41")?;
/// # Ok::<(), weft_sdk::context::ContextError>(())
/// ```
pub fn set(key: &str, value: &str) -> Result<(), ContextError> {
    wit::set(key, value)
}
