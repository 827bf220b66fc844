//! The shared key-value store behind `weft:filter/kv`: a small async trait, so a Redis
//! backend can replace the in-process one without touching the host functions, and
//! [`LocalKv`], a `DashMap` with expiry.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use dashmap::mapref::entry::Entry as MapEntry;

use super::bindings::kv::Host;
use super::state::HostState;

/// A boxed store operation (the trait is used as `dyn`).
pub type KvFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, String>> + Send + 'a>>;

/// A key-value store shared by every instance of every filter. Keys arrive already
/// namespaced by filter. Errors are messages the guest receives.
pub trait KvStore: Send + Sync + 'static {
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

struct Entry {
    value: Vec<u8>,
    expires: Option<Instant>,
}

impl Entry {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }
}

/// The in-process store: one per proxy process, shared across config reloads.
pub struct LocalKv {
    map: Arc<DashMap<String, Entry>>,
    max_entries: usize,
}

/// How often expired entries are swept (reads already ignore them; this frees memory).
const SWEEP_EVERY: Duration = Duration::from_secs(1);

impl LocalKv {
    /// A store holding at most `max_entries` keys; a sweeper thread drops expired entries
    /// and exits when the store is dropped.
    pub fn new(max_entries: usize) -> Arc<Self> {
        let map = Arc::new(DashMap::new());
        let weak: Weak<DashMap<String, Entry>> = Arc::downgrade(&map);
        let spawned = std::thread::Builder::new().name("weft-kv-sweep".into()).spawn(move || {
            loop {
                std::thread::sleep(SWEEP_EVERY);
                let Some(map) = weak.upgrade() else { break };
                let now = Instant::now();
                map.retain(|_, e| e.live(now));
            }
        });
        if let Err(e) = spawned {
            // Expired entries are still invisible; they are only not freed.
            tracing::warn!(error = %e, "cannot start the KV sweeper thread");
        }
        Arc::new(LocalKv { map, max_entries })
    }

    fn check_room(&self) -> Result<(), String> {
        if self.map.len() >= self.max_entries {
            return Err(format!("the KV store is full ({} keys)", self.max_entries));
        }
        Ok(())
    }

    fn get_now(&self, key: &str) -> Option<Vec<u8>> {
        let now = Instant::now();
        self.map.get(key).filter(|e| e.live(now)).map(|e| e.value.clone())
    }

    fn set_now(&self, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), String> {
        let expires = ttl.map(|t| Instant::now() + t);
        if let Some(mut e) = self.map.get_mut(key) {
            *e = Entry { value, expires };
            return Ok(());
        }
        self.check_room()?;
        self.map.insert(key.to_owned(), Entry { value, expires });
        Ok(())
    }

    fn delete_now(&self, key: &str) -> bool {
        let now = Instant::now();
        self.map.remove(key).is_some_and(|(_, e)| e.live(now))
    }

    fn incr_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, String> {
        let now = Instant::now();
        let fresh = |value: i64| Entry {
            value: value.to_string().into_bytes(),
            expires: ttl.map(|t| now + t),
        };
        if !self.map.contains_key(key) {
            self.check_room()?;
        }
        // The entry API holds the shard's lock: concurrent increments serialise.
        match self.map.entry(key.to_owned()) {
            MapEntry::Occupied(mut o) if o.get().live(now) => {
                let current: i64 = std::str::from_utf8(&o.get().value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| format!("the value at {key:?} is not an integer"))?;
                let next = current
                    .checked_add(delta)
                    .ok_or_else(|| format!("incrementing {key:?} overflows"))?;
                o.get_mut().value = next.to_string().into_bytes();
                Ok(next)
            }
            MapEntry::Occupied(mut o) => {
                o.insert(fresh(delta));
                Ok(delta)
            }
            MapEntry::Vacant(v) => {
                v.insert(fresh(delta));
                Ok(delta)
            }
        }
    }
}

impl KvStore for LocalKv {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(Ok(self.get_now(key))))
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'a, ()> {
        Box::pin(std::future::ready(self.set_now(key, value, ttl)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.delete_now(key))))
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> KvFuture<'a, i64> {
        Box::pin(std::future::ready(self.incr_now(key, delta, ttl)))
    }
}

/// Longest key a guest may use.
const MAX_KEY: usize = 512;
/// Largest value a guest may store.
const MAX_VALUE: usize = 1 << 20;

impl HostState {
    /// The filter's private key for `key`. Length-prefixed so no filter name and key
    /// pair can spell another filter's key.
    fn kv_key(&self, key: &str) -> Result<String, String> {
        if key.len() > MAX_KEY {
            return Err(format!("key longer than {MAX_KEY} bytes"));
        }
        let name = &self.shared.name;
        Ok(format!("{}:{name}:{key}", name.len()))
    }

    /// The store and the namespaced key, taken out of `self` so the `await` that follows
    /// does not borrow the store data (which is `Send` but not `Sync`).
    fn kv_target(&self, key: &str) -> Result<(Arc<dyn KvStore>, String), String> {
        Ok((self.shared.kv.clone(), self.kv_key(key)?))
    }
}

fn ttl(ms: Option<u64>) -> Option<Duration> {
    ms.map(Duration::from_millis)
}

/// Runs one store operation: namespaces the key, and counts the time as waiting (not
/// the guest's CPU) since a remote backend spends it on the network.
macro_rules! kv_op {
    ($state:expr, $key:expr, |$kv:ident, $k:ident| $op:expr) => {{
        let ($kv, $k) = match $state.kv_target(&$key) {
            Ok(target) => target,
            Err(e) => return Ok(Err(e)),
        };
        let started = Instant::now();
        let result = $op.await;
        $state.budget.waited += started.elapsed();
        Ok(result)
    }};
}

impl Host for HostState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        kv_op!(self, key, |kv, k| kv.get(&k))
    }

    async fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> wasmtime::Result<Result<(), String>> {
        if value.len() > MAX_VALUE {
            return Ok(Err(format!("value larger than {MAX_VALUE} bytes")));
        }
        kv_op!(self, key, |kv, k| kv.set(&k, value, ttl(ttl_ms)))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<bool, String>> {
        kv_op!(self, key, |kv, k| kv.delete(&k))
    }

    async fn incr(&mut self, key: String, delta: i64, ttl_ms: Option<u64>) -> wasmtime::Result<Result<i64, String>> {
        kv_op!(self, key, |kv, k| kv.incr(&k, delta, ttl(ttl_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn incr_counts_and_expires() {
        let kv = LocalKv::new(10);
        assert_eq!(kv.incr_now("k", 2, Some(Duration::from_millis(30))), Ok(2));
        assert_eq!(kv.incr_now("k", 3, Some(Duration::from_secs(60))), Ok(5));
        assert_eq!(kv.get_now("k").as_deref(), Some(&b"5"[..]));
        std::thread::sleep(Duration::from_millis(40));
        // The window expired: the count restarts (with the new call's TTL).
        assert_eq!(kv.incr_now("k", 1, None), Ok(1));
    }

    #[test]
    fn incr_refuses_non_integers_and_overflow() {
        let kv = LocalKv::new(10);
        kv.set_now("s", b"abc".to_vec(), None).ok();
        assert!(kv.incr_now("s", 1, None).is_err());
        kv.set_now("m", i64::MAX.to_string().into_bytes(), None).ok();
        assert!(kv.incr_now("m", 1, None).is_err());
    }

    #[test]
    fn set_get_delete_and_capacity() {
        let kv = LocalKv::new(2);
        assert_eq!(kv.set_now("a", b"1".to_vec(), None), Ok(()));
        assert_eq!(kv.set_now("b", b"2".to_vec(), Some(Duration::ZERO)), Ok(()));
        assert_eq!(kv.get_now("b"), None, "a zero TTL is expired at once");
        assert!(kv.set_now("c", b"3".to_vec(), None).is_err(), "full");
        assert_eq!(
            kv.set_now("a", b"9".to_vec(), None),
            Ok(()),
            "overwriting needs no room"
        );
        assert!(kv.delete_now("a"));
        assert!(!kv.delete_now("a"));
    }
}
