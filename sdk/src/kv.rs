//! A key-value store shared by all instances of this filter in the proxy (and across
//! proxies when the proxy is configured with a shared backend). Keys are private to the
//! filter: two filters using the same key do not see each other's values.
//!
//! ```no_run
//! use std::time::Duration;
//! // A fixed-window rate limit: at most 100 requests per client per minute.
//! let key = format!("rl:{}", weft_sdk::metadata::client_address());
//! let count = weft_sdk::kv::incr(&key, 1, Some(Duration::from_secs(60))).unwrap_or(0);
//! let limited = count > 100;
//! ```

use std::time::Duration;

use crate::bindings::weft::filter::kv as wit;

pub use wit::KvError;

impl From<KvError> for String {
    fn from(e: KvError) -> String {
        e.to_string()
    }
}

fn millis(ttl: Option<Duration>) -> Option<u64> {
    ttl.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1))
}

/// The value at `key`, if present and not expired.
///
/// ```no_run
/// let token: Option<Vec<u8>> = weft_sdk::kv::get("token")?;
/// # Ok::<(), weft_sdk::kv::KvError>(())
/// ```
pub fn get(key: &str) -> Result<Option<Vec<u8>>, KvError> {
    wit::get(key)
}

/// The value at `key` as UTF-8 text (lossily converted).
///
/// ```no_run
/// let mode = weft_sdk::kv::get_string("mode")?.unwrap_or_default();
/// # Ok::<(), weft_sdk::kv::KvError>(())
/// ```
pub fn get_string(key: &str) -> Result<Option<String>, KvError> {
    Ok(wit::get(key)?.map(|v| String::from_utf8_lossy(&v).into_owned()))
}

/// Stores `value` at `key`, expiring after `ttl` when given.
///
/// ```no_run
/// use std::time::Duration;
/// weft_sdk::kv::set("mode", b"maintenance", Some(Duration::from_secs(300)))?;
/// # Ok::<(), weft_sdk::kv::KvError>(())
/// ```
pub fn set(key: &str, value: &[u8], ttl: Option<Duration>) -> Result<(), KvError> {
    wit::set(key, value, millis(ttl))
}

/// Removes `key`; returns whether it was present.
///
/// ```no_run
/// let existed = weft_sdk::kv::delete("mode")?;
/// # Ok::<(), weft_sdk::kv::KvError>(())
/// ```
pub fn delete(key: &str) -> Result<bool, KvError> {
    wit::delete(key)
}

/// Atomically adds `delta` to the integer at `key` and returns the new value. A missing
/// key counts as 0; `ttl` applies when this call creates the key. Fails when the value is
/// not an integer ([`KvError::NotAnInteger`]) or the sum overflows.
///
/// ```no_run
/// use std::time::Duration;
/// let hits = weft_sdk::kv::incr("hits", 1, Some(Duration::from_secs(1)))?;
/// # Ok::<(), weft_sdk::kv::KvError>(())
/// ```
pub fn incr(key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
    wit::incr(key, delta, millis(ttl))
}
