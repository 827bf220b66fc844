//! [`LocalKv`]: the in-process store, one space per filter, each with its own quota of
//! keys and bytes. A full space makes room by evicting its *own* entries, expired first,
//! then nearest expiry, entries without a TTL last (Redis `volatile-ttl`, then oldest
//! write): one filter filling its space never makes another filter's write fail.
//!
//! A space is sharded like a `DashMap` (a `RwLock` per shard, atomics for the totals, no
//! lock across shards), but each shard also keeps its entries ordered by expiry. That
//! makes eviction exact and cheap: the next victim is the smallest of the shards' first
//! entries, found with one read lock per shard (16 shards: well under a microsecond),
//! with no scan. Sampling (Redis's approach) would cost about the same per write under a
//! flood, but could evict a live entry while an expired one sits unsampled, which makes
//! a rate limiter's counters less predictable. The index costs one `BTreeMap` insert per
//! new key or TTL change; `incr` on a live key (the rate limiter's hot path) does not
//! touch it.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use super::{KvError, KvFuture, KvQuota, KvSpace, KvStore};

/// How often expired entries are swept (reads already ignore them; this frees memory).
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// Entries the sweeper removes per lock acquisition, so writers wait microseconds.
const SWEEP_BATCH: usize = 1024;
/// Shards per space: enough that 2–16 cores rarely meet on one lock.
const SHARDS: usize = 16;

/// The in-process store: one per proxy process, shared across config reloads. A filter's
/// space lives as long as a loaded version of the filter (so a reload keeps its keys).
pub struct LocalKv {
    spaces: Arc<Mutex<HashMap<Box<str>, Weak<Space>>>>,
}

impl LocalKv {
    /// An empty store; a sweeper thread drops expired entries and exits when the store
    /// is dropped.
    pub fn new() -> Arc<Self> {
        let spaces: Arc<Mutex<HashMap<Box<str>, Weak<Space>>>> = Arc::default();
        let weak = Arc::downgrade(&spaces);
        let spawned = std::thread::Builder::new().name("weft-kv-sweep".into()).spawn(move || {
            loop {
                std::thread::sleep(SWEEP_EVERY);
                let Some(spaces) = weak.upgrade() else { break };
                let live: Vec<Arc<Space>> = lock(&spaces).values().filter_map(Weak::upgrade).collect();
                drop(spaces);
                let now = Instant::now();
                for space in live {
                    space.sweep(now);
                }
            }
        });
        if let Err(e) = spawned {
            // Expired entries are still invisible and evicted first; they are only not
            // freed ahead of need.
            tracing::warn!(error = %e, "cannot start the KV sweeper thread");
        }
        Arc::new(LocalKv { spaces })
    }

    /// The space of `filter` (shared with its other loaded versions) under `quota`.
    pub fn local_space(&self, filter: &str, quota: KvQuota, evictions: Counter) -> LocalSpace {
        let mut spaces = lock(&self.spaces);
        spaces.retain(|_, space| space.strong_count() > 0);
        let space = match spaces.get(filter).and_then(Weak::upgrade) {
            Some(space) => space,
            None => {
                let space = Arc::new(Space::new(evictions));
                spaces.insert(filter.into(), Arc::downgrade(&space));
                space
            }
        };
        LocalSpace { space, quota }
    }
}

impl KvStore for LocalKv {
    fn space(self: Arc<Self>, filter: &str, quota: KvQuota, evictions: Counter) -> Arc<dyn KvSpace> {
        Arc::new(self.local_space(filter, quota, evictions))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One filter's view of its space. Each loaded version carries its own quota, so a
/// reload that lowers it takes effect on the new version's first write, and a reload
/// that fails changes nothing.
pub struct LocalSpace {
    space: Arc<Space>,
    quota: KvQuota,
}

impl KvSpace for LocalSpace {
    fn get<'a>(&'a self, key: &'a str) -> KvFuture<'a, Option<Vec<u8>>> {
        Box::pin(std::future::ready(Ok(self.space.get(key, Instant::now()))))
    }

    fn set<'a>(&'a self, key: &'a str, value: Vec<u8>, ttl: Option<Duration>) -> KvFuture<'a, ()> {
        Box::pin(std::future::ready(self.space.set(self.quota, key, value, ttl)))
    }

    fn delete<'a>(&'a self, key: &'a str) -> KvFuture<'a, bool> {
        Box::pin(std::future::ready(Ok(self.space.delete(key))))
    }

    fn incr<'a>(&'a self, key: &'a str, delta: i64, ttl: Option<Duration>) -> KvFuture<'a, i64> {
        Box::pin(std::future::ready(self.space.incr(self.quota, key, delta, ttl)))
    }

    fn incr_now(&self, key: &str, delta: i64, ttl: Option<Duration>) -> Option<Result<i64, KvError>> {
        Some(self.space.incr(self.quota, key, delta, ttl))
    }
}

impl LocalSpace {
    /// Live and expired-but-unswept entries, and their bytes (keys plus values).
    pub fn usage(&self) -> (usize, usize) {
        (
            self.space.keys.load(Ordering::Relaxed),
            self.space.bytes.load(Ordering::Relaxed),
        )
    }

    #[cfg(test)]
    pub(super) fn inner(&self) -> &Space {
        &self.space
    }
}

/// Eviction order: entries with a TTL first, by expiry; then those without, by write.
type Rank = (bool, Option<Instant>, u64);

struct Slot {
    value: Vec<u8>,
    expires: Option<Instant>,
    /// When it was last written (a per-space sequence), to order entries without a TTL.
    seq: u64,
}

impl Slot {
    fn live(&self, now: Instant) -> bool {
        self.expires.is_none_or(|t| t > now)
    }

    fn rank(&self) -> Rank {
        (self.expires.is_none(), self.expires, self.seq)
    }
}

/// Change of a space's totals.
#[derive(Default)]
struct Delta {
    keys: isize,
    bytes: isize,
}

#[derive(Default)]
struct Shard {
    map: HashMap<Arc<str>, Slot>,
    order: BTreeMap<Rank, Arc<str>>,
}

impl Shard {
    /// Inserts or overwrites `key`.
    fn put(&mut self, key: &str, value: Vec<u8>, expires: Option<Instant>, seq: u64) -> Delta {
        let mut delta = Delta {
            keys: 1,
            bytes: (key.len() + value.len()) as isize,
        };
        let key = match self.map.remove_entry(key) {
            Some((key, old)) => {
                self.order.remove(&old.rank());
                delta.keys = 0;
                delta.bytes -= (key.len() + old.value.len()) as isize;
                key
            }
            None => Arc::from(key),
        };
        let slot = Slot { value, expires, seq };
        self.order.insert(slot.rank(), key.clone());
        self.map.insert(key, slot);
        delta
    }

    fn remove(&mut self, key: &str) -> Option<(Slot, Delta)> {
        let (key, slot) = self.map.remove_entry(key)?;
        self.order.remove(&slot.rank());
        let delta = Delta {
            keys: -1,
            bytes: -((key.len() + slot.value.len()) as isize),
        };
        Some((slot, delta))
    }

    /// The next entry to evict, other than `keep` (the key being written).
    fn victim(&self, keep: &str) -> Option<(Rank, &Arc<str>)> {
        self.order
            .iter()
            .find(|(_, key)| key.as_ref() != keep)
            .map(|(rank, key)| (*rank, key))
    }
}

/// Adds `delta` to the decimal integer in `slot`, in place (no allocation once the
/// buffer has grown to its widest). Returns the new value and the change in length.
fn add_in_place(slot: &mut Slot, delta: i64) -> Result<(i64, isize), KvError> {
    let current: i64 = std::str::from_utf8(&slot.value)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or(KvError::NotAnInteger)?;
    let next = current.checked_add(delta).ok_or(KvError::Overflow)?;
    let before = slot.value.len();
    slot.value.clear();
    // Without `core::fmt`: the rate limiter's hot path writes one number a request.
    slot.value
        .extend_from_slice(itoa::Buffer::new().format(next).as_bytes());
    Ok((next, slot.value.len() as isize - before as isize))
}

/// One filter's entries.
pub(super) struct Space {
    shards: Box<[RwLock<Shard>]>,
    hasher: RandomState,
    keys: AtomicUsize,
    bytes: AtomicUsize,
    seq: AtomicU64,
    evictions: Counter,
}

impl Space {
    fn new(evictions: Counter) -> Self {
        Space {
            shards: (0..SHARDS).map(|_| RwLock::default()).collect(),
            hasher: RandomState::new(),
            keys: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            seq: AtomicU64::new(0),
            evictions,
        }
    }

    fn shard_of(&self, key: &str) -> usize {
        self.hasher.hash_one(key) as usize % SHARDS
    }

    fn read(&self, i: usize) -> RwLockReadGuard<'_, Shard> {
        self.shards[i].read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self, i: usize) -> RwLockWriteGuard<'_, Shard> {
        self.shards[i].write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applied while the shard's write lock is held, so the totals never count an entry
    /// twice or miss one for longer than that lock is held.
    fn apply(&self, delta: &Delta) {
        let add = |total: &AtomicUsize, d: isize| {
            if d >= 0 {
                total.fetch_add(d as usize, Ordering::Relaxed);
            } else {
                total.fetch_sub(d.unsigned_abs(), Ordering::Relaxed);
            }
        };
        add(&self.keys, delta.keys);
        add(&self.bytes, delta.bytes);
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    pub(super) fn get(&self, key: &str, now: Instant) -> Option<Vec<u8>> {
        let shard = self.read(self.shard_of(key));
        shard.map.get(key).filter(|s| s.live(now)).map(|s| s.value.clone())
    }

    fn fits(&self, quota: KvQuota, size: usize) -> Result<(), KvError> {
        if size > quota.bytes {
            return Err(KvError::OverQuota {
                size,
                quota: quota.bytes,
            });
        }
        Ok(())
    }

    pub(super) fn set(&self, quota: KvQuota, key: &str, value: Vec<u8>, ttl: Option<Duration>) -> Result<(), KvError> {
        let size = key.len() + value.len();
        self.fits(quota, size)?;
        let i = self.shard_of(key);
        let old = self.read(i).map.get(key).map(|s| key.len() + s.value.len());
        let (keys, bytes) = match old {
            Some(old) => (0, size.saturating_sub(old)),
            None => (1, size),
        };
        self.make_room(quota, keys, bytes, key);
        let expires = ttl.map(|t| Instant::now() + t);
        {
            let mut shard = self.write(i);
            let delta = shard.put(key, value, expires, self.next_seq());
            self.apply(&delta);
        }
        // Writers racing for the last room may each have seen it free.
        self.make_room(quota, 0, 0, key);
        Ok(())
    }

    pub(super) fn delete(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut shard = self.write(self.shard_of(key));
        match shard.remove(key) {
            Some((slot, delta)) => {
                self.apply(&delta);
                slot.live(now)
            }
            None => false,
        }
    }

    pub(super) fn incr(&self, quota: KvQuota, key: &str, delta: i64, ttl: Option<Duration>) -> Result<i64, KvError> {
        let now = Instant::now();
        let i = self.shard_of(key);
        // A live counter is updated in place: no allocation, no change to the order.
        if let Some(result) = self.incr_live(i, quota, key, delta, now) {
            return result;
        }
        let text = delta.to_string().into_bytes();
        self.fits(quota, key.len() + text.len())?;
        self.make_room(quota, 1, key.len() + text.len(), key);
        let created = {
            let mut shard = self.write(i);
            match shard.map.get_mut(key).filter(|s| s.live(now)) {
                // Another request created it since the first look.
                Some(slot) => {
                    let (next, grew) = add_in_place(slot, delta)?;
                    self.apply(&Delta { keys: 0, bytes: grew });
                    next
                }
                None => {
                    let delta_totals = shard.put(key, text, ttl.map(|t| now + t), self.next_seq());
                    self.apply(&delta_totals);
                    delta
                }
            }
        };
        self.make_room(quota, 0, 0, key);
        Ok(created)
    }

    fn incr_live(&self, i: usize, quota: KvQuota, key: &str, delta: i64, now: Instant) -> Option<Result<i64, KvError>> {
        let grew = {
            let mut shard = self.write(i);
            let slot = shard.map.get_mut(key).filter(|s| s.live(now))?;
            match add_in_place(slot, delta) {
                Ok((next, grew)) => {
                    self.apply(&Delta { keys: 0, bytes: grew });
                    (next, grew)
                }
                Err(e) => return Some(Err(e)),
            }
        };
        if grew.1 > 0 {
            // One more digit may tip the space over its byte quota.
            self.make_room(quota, 0, 0, key);
        }
        Some(Ok(grew.0))
    }

    /// Evicts until `keys` more keys and `bytes` more bytes fit, or nothing but `keep`
    /// is left. Terminates: every round removes an entry.
    fn make_room(&self, quota: KvQuota, keys: usize, bytes: usize, keep: &str) {
        loop {
            let total_keys = self.keys.load(Ordering::Relaxed);
            let total_bytes = self.bytes.load(Ordering::Relaxed);
            if total_keys.saturating_add(keys) <= quota.keys && total_bytes.saturating_add(bytes) <= quota.bytes {
                return;
            }
            if !self.evict_one(keep) {
                return;
            }
        }
    }

    /// Removes the entry nearest to expiring (expired ones first, entries without a TTL
    /// last); `false` when there is none but `keep`.
    pub(super) fn evict_one(&self, keep: &str) -> bool {
        let mut best: Option<(Rank, usize)> = None;
        for i in 0..SHARDS {
            let shard = self.read(i);
            if let Some((rank, _)) = shard.victim(keep)
                && best.is_none_or(|(b, _)| rank < b)
            {
                best = Some((rank, i));
            }
        }
        let Some((_, i)) = best else { return false };
        let mut shard = self.write(i);
        // The shard may have changed since the look: its first entry is still the
        // best candidate it holds.
        let Some(key) = shard.victim(keep).map(|(_, key)| key.clone()) else {
            return true;
        };
        if let Some((slot, delta)) = shard.remove(&key) {
            self.apply(&delta);
            if slot.live(Instant::now()) {
                self.evictions.inc();
            }
        }
        true
    }

    /// Drops expired entries, a batch per lock acquisition.
    pub(super) fn sweep(&self, now: Instant) {
        for i in 0..SHARDS {
            loop {
                let mut shard = self.write(i);
                let mut removed = 0;
                while removed < SWEEP_BATCH {
                    let expired = match shard.order.first_key_value() {
                        Some(((_, Some(t), _), key)) if *t <= now => key.clone(),
                        _ => break,
                    };
                    if let Some((_, delta)) = shard.remove(&expired) {
                        self.apply(&delta);
                    }
                    removed += 1;
                }
                if removed < SWEEP_BATCH {
                    break;
                }
            }
        }
    }

    /// Whether `key` is stored, live or not.
    #[cfg(test)]
    pub(super) fn scan_has(&self, key: &str) -> bool {
        self.read(self.shard_of(key)).map.contains_key(key)
    }

    /// Entries and bytes counted by walking every shard (tests compare it with the totals).
    #[cfg(test)]
    pub(super) fn scan(&self) -> (usize, usize) {
        (0..SHARDS).fold((0, 0), |(k, b), i| {
            let shard = self.read(i);
            assert_eq!(shard.map.len(), shard.order.len(), "index out of step with the map");
            let bytes: usize = shard.map.iter().map(|(key, s)| key.len() + s.value.len()).sum();
            (k + shard.map.len(), b + bytes)
        })
    }
}
