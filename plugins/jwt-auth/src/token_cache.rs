//! Verified tokens, remembered so a client reusing its token costs a hash and a lookup
//! instead of a signature check (Envoy's `jwt_cache_config`). Each instance keeps its own
//! cache in guest memory, which the host's instance pool keeps between requests.
//!
//! What makes a hit as good as a verification:
//! - The key is a 128-bit SipHash-2-4 of the whole compact token under a secret key
//!   drawn per instance, so any changed byte (header, claims or signature) is another
//!   entry and is verified. SipHash is a keyed PRF: without the key no one can make two
//!   tokens share an entry, and it costs a fraction of a SHA-256 in Wasm (no SHA
//!   instructions there): for a 700-byte RS256 token the digest was most of a cache hit.
//!   The token itself is never stored.
//! - Everything verification decides besides time and keys (algorithm, `iss`, `aud`,
//!   required claims) is a function of the token and the filter's config, and a config
//!   never changes under an instance (a reload builds new instances, with empty caches).
//! - Time is checked on every hit exactly as the verifier does it: `exp` with `leeway`,
//!   `nbf` with `leeway` (a clock stepping back), and the optional `ttl` cap.
//! - The key that verified the token must still be in the current key set (inline keys,
//!   plus the JWKS as refreshed before the lookup): a key rotated out of the JWKS takes its
//!   tokens' entries with it.
//!
//! A stale entry is dropped and the token verified again, so the client gets the
//! verifier's own answer (`token expired`, `unknown key id`...).
//! What varies per request (anonymous paths, methods, where the token came from, claim
//! headers) is decided by the caller around [`TokenCache::check`], hit or miss.

use std::time::Duration;

use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};

use serde_json::Value;
use siphasher::sip128::{Hasher128, SipHasher24};

use crate::keys::KeyId;
use crate::lru::Lru;
use crate::verify::{Claims, Failure, Verified};

/// The token's keyed 128-bit SipHash. Being a keyed PRF's output, it is spread evenly
/// and unpredictably already, so the map uses its first 64 bits as the hash ([`Spread`])
/// instead of hashing it again.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Digest([u8; 16]);

impl Hash for Digest {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let mut word = [0u8; 8];
        word.copy_from_slice(&self.0[..8]);
        state.write_u64(u64::from_le_bytes(word));
    }
}

/// The hasher of [`Digest`] keys: the word they hash to, as it is.
#[derive(Default)]
struct Spread(u64);

impl Hasher for Spread {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `Digest`; anything else still hashes, byte by byte.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = word;
    }
}

/// The per-instance SipHash key, from the platform's randomness (WASI `random` in a
/// guest) through std's randomly keyed `RandomState`.
fn secret_key() -> (u64, u64) {
    let random = RandomState::new();
    (random.hash_one(0u8), random.hash_one(1u8))
}

struct Entry {
    /// Only the claims the filter forwards (`claims_to_headers`).
    claims: Claims,
    key: KeyId,
    exp: Option<u64>,
    nbf: Option<u64>,
    /// Wall-clock milliseconds from which `ttl` makes the entry stale.
    stale_at_ms: Option<u64>,
}

/// Whether [`TokenCache::check`] answered from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    Hit,
    /// Verified now (and cached if it passed).
    Verified,
}

pub struct TokenCache {
    key: (u64, u64),
    entries: Lru<Digest, Entry, BuildHasherDefault<Spread>>,
    ttl_ms: Option<u64>,
    leeway_secs: u64,
    /// The claims kept per entry.
    forwarded: Vec<String>,
}

/// `exp`/`nbf` as `jsonwebtoken` reads them: an integer, or a float rounded.
fn numeric_date(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < u64::MAX as f64)
            .map(|f| f.round() as u64)
    })
}

impl TokenCache {
    pub fn new(max_entries: usize, ttl: Option<Duration>, leeway_secs: u64, forwarded: Vec<String>) -> TokenCache {
        TokenCache {
            key: secret_key(),
            entries: Lru::with_hasher(max_entries, BuildHasherDefault::default()),
            ttl_ms: ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
            leeway_secs,
            forwarded,
        }
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The token's claims: from the cache when a fresh entry exists and `key_is_current`
    /// says the key that verified it is still there (asked only after the time checks
    /// pass), else from `verify`, whose success is cached.
    #[cfg(test)]
    pub fn check(
        &mut self,
        token: &str,
        now_ms: u64,
        key_is_current: impl FnOnce(KeyId) -> bool,
        verify: impl FnOnce() -> Result<Verified, Failure>,
    ) -> Result<(Claims, Lookup), Failure> {
        self.check_with(token, now_ms, key_is_current, verify, Claims::clone)
    }

    /// [`check`](Self::check), handing the claims to `read` in place: a hit copies none
    /// of them (it reads the cached ones; a miss, the verified token's).
    pub fn check_with<R>(
        &mut self,
        token: &str,
        now_ms: u64,
        key_is_current: impl FnOnce(KeyId) -> bool,
        verify: impl FnOnce() -> Result<Verified, Failure>,
        read: impl FnOnce(&Claims) -> R,
    ) -> Result<(R, Lookup), Failure> {
        let digest = self.digest(token);
        if let Some(entry) = self.hit(&digest, now_ms, key_is_current) {
            return Ok((read(&entry.claims), Lookup::Hit));
        }
        let verified = verify()?;
        self.insert(digest, &verified, now_ms);
        Ok((read(&verified.claims), Lookup::Verified))
    }

    fn digest(&self, token: &str) -> Digest {
        let mut hasher = SipHasher24::new_with_keys(self.key.0, self.key.1);
        hasher.write(token.as_bytes());
        Digest(hasher.finish128().as_bytes())
    }

    fn hit(&mut self, digest: &Digest, now_ms: u64, key_is_current: impl FnOnce(KeyId) -> bool) -> Option<&Entry> {
        let leeway = self.leeway_secs;
        let at = self.entries.touch(digest)?;
        let entry = self.entries.at(at)?;
        let now = now_ms / 1000;
        // The verifier's own comparisons (jsonwebtoken's `validate`).
        let fresh = entry.exp.is_none_or(|exp| exp >= now.saturating_sub(leeway))
            && entry.nbf.is_none_or(|nbf| nbf <= now.saturating_add(leeway))
            && entry.stale_at_ms.is_none_or(|at| now_ms < at)
            && key_is_current(entry.key);
        if !fresh {
            self.entries.remove(digest);
            return None;
        }
        self.entries.at(at)
    }

    fn insert(&mut self, digest: Digest, verified: &Verified, now_ms: u64) {
        let date = |name: &str| verified.claims.get(name).map(numeric_date);
        let (exp, nbf) = match (date("exp"), date("nbf")) {
            // Present but unreadable: the verifier refuses that, but never cache what we
            // could not bound.
            (Some(None), _) | (_, Some(None)) => return,
            (exp, nbf) => (exp.flatten(), nbf.flatten()),
        };
        let claims = self
            .forwarded
            .iter()
            .filter_map(|name| Some((name.clone(), verified.claims.get(name)?.clone())))
            .collect();
        self.entries.insert(
            digest,
            Entry {
                claims,
                key: verified.key,
                exp,
                nbf,
                stale_at_ms: self.ttl_ms.map(|ttl| now_ms.saturating_add(ttl)),
            },
        );
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#[path = "token_cache_tests.rs"]
mod tests;
