//! The key-value store behind `weft:filter/kv`: a small async trait, so a Redis backend
//! can replace the in-process one without touching the host functions. A store hands
//! each filter its own [`KvSpace`], resolved once when the filter is loaded: the request
//! path neither builds namespaced keys (for the local store) nor looks the filter up.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::bindings::WitKvError;
use super::bindings::kv::Host;
use super::state::HostState;

mod local;

pub use local::{LocalKv, LocalSpace};

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

impl From<KvError> for WitKvError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::KeyTooLong => WitKvError::KeyTooLong,
            KvError::ValueTooLarge => WitKvError::ValueTooLarge,
            KvError::OverQuota { .. } => WitKvError::OverQuota,
            KvError::NotAnInteger => WitKvError::NotAnInteger,
            KvError::Overflow => WitKvError::Overflow,
            KvError::Timeout => WitKvError::Timeout,
            KvError::Unavailable(why) => WitKvError::Unavailable(why),
        }
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
}

/// Longest key a guest may use.
const MAX_KEY: usize = 512;
/// Largest value a guest may store.
const MAX_VALUE: usize = 1 << 20;

impl HostState {
    /// The filter's space, taken out of `self` so the `await` that follows does not
    /// borrow the store data (which is `Send` but not `Sync`).
    fn kv_space(&self, key: &str) -> Result<Arc<dyn KvSpace>, KvError> {
        if key.len() > MAX_KEY {
            return Err(KvError::KeyTooLong);
        }
        Ok(self.shared.kv.clone())
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// Runs one store operation in the filter's space, and counts the time as waiting (not
/// the guest's CPU) since a remote backend spends it on the network.
macro_rules! kv_op {
    ($state:expr, $key:expr, |$kv:ident, $k:ident| $op:expr) => {{
        let $kv = match $state.kv_space(&$key) {
            Ok(space) => space,
            Err(e) => return Ok(Err(e.into())),
        };
        let $k = $key;
        let started = Instant::now();
        let result = $op.await;
        $state.budget.waited += started.elapsed();
        Ok(result.map_err(WitKvError::from))
    }};
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, WitKvError>> {
        kv_op!(self, key, |kv, k| kv.get(&k))
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<(), WitKvError>> {
        if value.len() > MAX_VALUE {
            return Ok(Err(WitKvError::ValueTooLarge));
        }
        kv_op!(self, key, |kv, k| kv.set(&k, value, ttl(ttl_ms)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, WitKvError>> {
        kv_op!(self, key, |kv, k| kv.delete(&k))
    }

    async fn incr(
        &mut self,
        key: String,
        delta: i64,
        ttl_ms: Option<u64>,
    ) -> wasmtime::Result<Result<i64, WitKvError>> {
        kv_op!(self, key, |kv, k| kv.incr(&k, delta, ttl(ttl_ms)))
    }
}

#[cfg(test)]
mod tests;
