//! The forward cache: what this instance decided for a POST it forwarded whole to one
//! cluster, by the exact request (content type and body), so that a repeat costs a hash of
//! the body and a lookup, not a JSON parse, a document lookup by SHA-256, variable
//! coercion, the limits walk and the routing plan (issue 22; about 3/4 of the filter's
//! instructions on a repeat operation before it).
//!
//! Only what the decision depends on is in the key: the body and the content type
//! (`parse_post` reads both; CSRF and `Accept` are checked on every request before the
//! lookup, and a forwarded request's answer does not depend on `Accept`). The rest of the
//! decision is a function of the instance's config, which a reload replaces along with
//! the instance. Requests whose outcome depends on the KV store (persisted-query hashes)
//! are never cached, nor any under `limits.warn_only` (an operation over a limit is logged
//! and counted on each request).
//!
//! The key is the std library's randomly keyed SipHash of the request; an entry also keeps
//! the request itself and a hit compares it byte for byte, so a collision (by chance or
//! crafted) is a miss, never another request's decision. Entries are bounded by count and
//! by bytes, oldest out first, like the document cache.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::rc::Rc;

use crate::operation::OperationLabels;

/// What a repeat of a forwarded request does again.
pub struct Forward {
    /// The cluster it goes to.
    pub cluster: String,
    /// The body to send instead of the client's, when the rebuilt body differs (a pruned
    /// operation, a dropped unknown key); `None` sends the client's body untouched, so it
    /// crosses the sandbox boundary once (in), not twice.
    pub rebuilt: Option<Vec<u8>>,
    /// The operation's name and type, for its metrics (shared: a hit builds no labels).
    pub operation: Rc<OperationLabels>,
}

struct Entry {
    content_type: String,
    body: Vec<u8>,
    forward: Forward,
}

impl Entry {
    fn bytes(&self) -> usize {
        self.content_type.len() + self.body.len() + self.forward.rebuilt.as_ref().map_or(0, Vec::len)
    }
}

/// The entries' map hashes its keys no further: they are already the keyed SipHash of
/// the request (hashing them again cost as much as the byte comparison, in the sandbox).
#[derive(Default)]
struct KeyIsHash(u64);

impl Hasher for KeyIsHash {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `u64` keys come here (`write_u64`); anything else still spreads.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// `a == b`, eight bytes at a time: the slice comparison compiles to a byte-by-byte
/// `memcmp` on `wasm32`, which took as long as hashing the body.
fn same(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let (a8, b8) = (a.chunks_exact(8), b.chunks_exact(8));
    let tails = a8.remainder() == b8.remainder();
    tails
        && a8.zip(b8).all(|(x, y)| {
            // Infallible: `chunks_exact(8)` yields 8-byte chunks.
            let word = |c: &[u8]| u64::from_ne_bytes(c.try_into().unwrap_or([0; 8]));
            word(x) == word(y)
        })
}

pub struct ForwardCache {
    hasher: RandomState,
    entries: HashMap<u64, Entry, BuildHasherDefault<KeyIsHash>>,
    /// Keys, oldest first.
    order: VecDeque<u64>,
    bytes: usize,
    max_entries: usize,
    max_bytes: usize,
}

impl ForwardCache {
    pub fn new(max_entries: usize, max_bytes: usize) -> Self {
        ForwardCache {
            hasher: RandomState::new(),
            entries: HashMap::default(),
            order: VecDeque::new(),
            bytes: 0,
            max_entries,
            max_bytes,
        }
    }

    fn key(&self, content_type: &str, body: &[u8]) -> u64 {
        self.hasher.hash_one((content_type, body))
    }

    /// The decision for exactly this request, if this instance made it before.
    pub fn get(&self, content_type: &str, body: &[u8]) -> Option<&Forward> {
        if self.entries.is_empty() {
            return None;
        }
        let entry = self.entries.get(&self.key(content_type, body))?;
        (same(entry.content_type.as_bytes(), content_type.as_bytes()) && same(&entry.body, body))
            .then_some(&entry.forward)
    }

    /// Remembers a decision. A request over a quarter of the byte budget is not worth
    /// evicting others for; a key already present (a colliding request) keeps its entry.
    pub fn insert(&mut self, content_type: &str, body: &[u8], forward: Forward) {
        let entry = Entry {
            content_type: content_type.to_owned(),
            body: body.to_vec(),
            forward,
        };
        let size = entry.bytes();
        if self.max_entries == 0 || size > self.max_bytes / 4 {
            return;
        }
        let key = self.key(content_type, body);
        if self.entries.contains_key(&key) {
            return;
        }
        while self.order.len() >= self.max_entries || self.bytes + size > self.max_bytes {
            let Some(old) = self.order.pop_front() else { break };
            if let Some(gone) = self.entries.remove(&old) {
                self.bytes -= gone.bytes();
            }
        }
        self.bytes += size;
        self.order.push_back(key);
        self.entries.insert(key, entry);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn forward(cluster: &str) -> Forward {
        Forward {
            cluster: cluster.to_owned(),
            rebuilt: None,
            operation: Rc::new(OperationLabels::new("Me".to_owned(), "query")),
        }
    }

    #[test]
    fn same_compares_every_byte() {
        let a: Vec<u8> = (0..=40).collect();
        for len in 0..a.len() {
            assert!(same(&a[..len], &a[..len]));
            assert!(!same(&a[..len], &a[..len + 1]));
            for i in 0..len {
                let mut b = a[..len].to_vec();
                b[i] ^= 0x80;
                assert!(!same(&a[..len], &b), "{len} {i}");
            }
        }
    }

    #[test]
    fn a_hit_needs_the_same_body_and_content_type() {
        let mut cache = ForwardCache::new(8, 1 << 16);
        cache.insert("application/json", b"{\"query\":\"{a}\"}", forward("a"));
        assert_eq!(
            cache.get("application/json", b"{\"query\":\"{a}\"}").unwrap().cluster,
            "a"
        );
        assert!(cache.get("application/json", b"{\"query\":\"{b}\"}").is_none());
        assert!(
            cache
                .get("application/json; charset=latin1", b"{\"query\":\"{a}\"}")
                .is_none()
        );
        assert!(cache.get("application/json", b"{\"query\":\"{a}\"} ").is_none());
    }

    #[test]
    fn a_colliding_key_is_a_miss_not_the_other_requests_decision() {
        let mut cache = ForwardCache::new(8, 1 << 16);
        cache.insert("application/json", b"one", forward("a"));
        // Forge a collision: move the entry under the key of another request.
        let key = cache.key("application/json", b"two");
        let entry = cache.entries.drain().next().unwrap().1;
        cache.entries.insert(key, entry);
        assert!(cache.get("application/json", b"two").is_none());
    }

    #[test]
    fn bounded_by_count_and_bytes_oldest_out() {
        let mut cache = ForwardCache::new(2, 1 << 16);
        for body in [&b"1"[..], b"2", b"3"] {
            cache.insert("t", body, forward("a"));
        }
        assert_eq!(cache.len(), 2);
        assert!(cache.get("t", b"1").is_none());
        assert!(cache.get("t", b"3").is_some());

        let mut small = ForwardCache::new(100, 400);
        for i in 0..50u8 {
            small.insert("t", &[i; 90], forward("a"));
        }
        assert!(
            small.bytes <= 400 && small.len() == 4,
            "{} bytes, {} entries",
            small.bytes,
            small.len()
        );
        small.insert("t", &[0; 200], forward("a"));
        assert!(small.get("t", &[0; 200]).is_none(), "over a quarter of the budget");

        let mut off = ForwardCache::new(0, 1 << 16);
        off.insert("t", b"x", forward("a"));
        assert!(off.get("t", b"x").is_none());
    }
}
