//! The key-value store behind `weft:filter/kv` (whose host functions are in
//! `wasm/host/kv.rs`): a small async trait, so the Redis backend (`redis`) can replace the
//! in-process one (`local`) without touching the host functions. A store hands each filter
//! its own [`KvSpace`], resolved once when the filter is loaded: the request path neither
//! builds namespaced keys (for the local store) nor looks the filter up. Ground floor: the
//! the config (its Redis URL check) and the plugin test kit use it as well as the Wasm
//! host, and it names none of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;

use metrics::KvMetrics;

mod local;
pub mod metrics;
mod redis;

pub use self::redis::RedisKv;
pub use local::{LocalKv, LocalSpace};

/// The process's store: Redis at `url` with each operation bounded by `timeout` (connected
/// lazily, so the proxy starts while Redis is down), or the in-process one.
pub fn store(redis: Option<(&str, Duration)>, metrics: &KvMetrics) -> anyhow::Result<Arc<dyn KvStore>> {
    Ok(match redis {
        Some((url, timeout)) => RedisKv::new(url, timeout, metrics)?,
        None => LocalKv::new(),
    })
}

/// A boxed store operation (the trait is used as `dyn`).
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, KvError>> + Send + 'a>>;

/// Why a store operation failed; the guest receives it as WIT's `kv-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error("the key is longer than {MAX_KEY} bytes")]
    KeyTooLong,
    #[error("the value is larger than {MAX_VALUE} bytes")]
    ValueTooLarge,
    #[error("a key and value of {size} bytes cannot fit the filter's limits.kv_bytes of {quota}")]
    OverQuota { size: usize, quota: usize },
    #[error("the value is not an integer")]
    NotAnInteger,
    #[error("the increment overflows")]
    Overflow,
    #[error("the store did not answer in time")]
    Timeout,
    #[error("{0}")]
    Unavailable(String),
}

impl KvError {
    /// Whether the store itself failed (counted and logged), rather than refused what
    /// the guest asked.
    pub fn is_store_failure(&self) -> bool {
        matches!(self, KvError::Timeout | KvError::Unavailable(_))
    }
}

/// How much one filter may keep in the local store (`limits.kv_keys`, `limits.kv_bytes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    pub keys: usize,
    /// Keys plus values, in bytes.
    pub bytes: usize,
}

/// A key-value store shared by every instance of every filter, one space per filter.
pub trait KvStore: Send + Sync + 'static {
    /// The space of the filter named `filter`: no filter sees another's keys, and the
    /// space survives reloads of the filter. The local store enforces `quota` by evicting
    /// within the space (counting live evictions in `evictions`); Redis ignores both and
    /// applies its own `maxmemory` policy.
    fn space(self: Arc<Self>, filter: &str, quota: KvQuota, evictions: Counter) -> Arc<dyn KvSpace>;
}

/// One filter's keys.
pub trait KvSpace: Send + Sync + 'static {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>>;
    /// Stores `value`, expiring after `ttl` when given.
    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'a, ()>;
    /// Removes `key`; whether it was present (and not expired).
    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool>;
    /// Adds `delta` to the decimal integer at `key` (missing = 0), atomically; `ttl`
    /// applies when the key is created. Returns the new value. Integers are stored as
    /// decimal text, as Redis `INCRBY` does, so `get` reads them.
    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> KvFuture<'a, i64>;
    /// [`incr`](Self::incr) done on the spot, for a store that never waits (the local
    /// one): no boxed future. `None` when the store must be awaited (Redis).
    fn incr_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Option<Result<i64, KvError>> {
        let _ = (key, delta, ttl);
        None
    }
}

/// Longest key a guest may use.
pub const MAX_KEY: usize = 512;
/// Largest value a guest may store.
pub const MAX_VALUE: usize = 1 << 20;

#[cfg(test)]
mod tests;
