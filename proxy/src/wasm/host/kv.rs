//! Host side of `weft:filter/kv`: the guest's calls, bounded (key and value sizes) and
//! timed as waiting, onto the filter's space of the shared [`crate::kv`] store.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::kv::{KvError, KvSpace, MAX_KEY, MAX_VALUE};
use crate::wasm::bindings::WitKvError;
use crate::wasm::bindings::kv::Host;
use crate::wasm::state::HostState;

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
        // The rate limiter's call, once a request: the local store answers on the spot,
        // without the space's `Arc` cloned or a boxed future. Timed as waiting all the
        // same (a shard's lock may be contended).
        if key.len() <= MAX_KEY {
            let started = Instant::now();
            if let Some(result) = self.shared.kv.incr_now(&key, delta, ttl(ttl_ms)) {
                self.budget.waited += started.elapsed();
                return Ok(result.map_err(WitKvError::from));
            }
        }
        kv_op!(self, key, |kv, k| kv.incr(&k, delta, ttl(ttl_ms)))
    }
}
