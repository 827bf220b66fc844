//! The JWKS cache: when to use the instance's copy, the copy other instances stored in the
//! host KV, or fetch the document again. The host calls go through [`Env`] so the policy
//! is tested natively with a fake clock and a scripted key server.
//!
//! - Keys are refreshed every `refresh`; a failed refresh keeps the old keys (a flaky
//!   identity provider must not log everybody out) and is retried after `min_refetch`.
//! - A token with an unknown `kid` (key rotation) triggers a refetch at most once per
//!   `min_refetch`, per instance and, through a KV counter, across instances: a flood of
//!   tokens with made-up `kid`s cannot turn the proxy against the identity provider.
//! - A fetched document is stored in the KV (prefixed with its fetch time) so the other
//!   instances pick it up without fetching it themselves.

use std::time::Duration;

use jsonwebtoken::Algorithm;

use crate::keys::{Key, from_jwks};

pub trait Env {
    /// Wall-clock milliseconds (shared with other instances through the KV).
    fn now_ms(&self) -> u64;
    fn fetch(&self) -> Result<Vec<u8>, String>;
    fn shared_get(&self) -> Option<Vec<u8>>;
    fn shared_put(&self, value: &[u8]);
    /// Whether this instance may refetch now (a KV counter living `window`).
    fn refetch_permit(&self, window: Duration) -> bool;
    fn log_error(&self, message: &str);
}

pub struct Policy {
    pub refresh: Duration,
    pub min_refetch: Duration,
    pub allowed: Vec<Algorithm>,
}

pub struct Cache {
    policy: Policy,
    keys: Vec<Key>,
    /// When the keys we hold were fetched (by any instance).
    fetched_at: Option<u64>,
    last_attempt: Option<u64>,
    pub fetches: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cache {
    pub fn new(policy: Policy) -> Cache {
        Cache {
            policy,
            keys: Vec::new(),
            fetched_at: None,
            last_attempt: None,
            fetches: 0,
        }
    }

    pub fn keys(&self) -> &[Key] {
        &self.keys
    }

    /// Makes the keys fresh enough, fetching when due. Fails only when there are no keys
    /// at all.
    pub fn ensure_fresh(&mut self, env: &dyn Env) -> Result<(), String> {
        let now = env.now_ms();
        if self.age_ok(now) {
            return Ok(());
        }
        if self.adopt_shared(env) && self.age_ok(now) {
            return Ok(());
        }
        if self.may_attempt(now) {
            self.fetch(env);
        }
        if self.keys.is_empty() {
            return Err("signing keys unavailable".to_owned());
        }
        Ok(())
    }

    /// After a token named a `kid` we do not have: picks up a newer shared copy, else
    /// refetches if the rate limit allows. Returns whether the keys changed.
    pub fn refetch_for_unknown_kid(&mut self, env: &dyn Env) -> bool {
        if self.adopt_shared(env) {
            return true;
        }
        let now = env.now_ms();
        if !self.may_attempt(now) || !env.refetch_permit(self.policy.min_refetch) {
            return false;
        }
        self.fetch(env)
    }

    fn age_ok(&self, now: u64) -> bool {
        self.fetched_at
            .is_some_and(|at| now.saturating_sub(at) < ms(self.policy.refresh))
    }

    fn may_attempt(&self, now: u64) -> bool {
        self.last_attempt
            .is_none_or(|at| now.saturating_sub(at) >= ms(self.policy.min_refetch))
    }

    /// Adopts the KV copy when it is newer than ours.
    fn adopt_shared(&mut self, env: &dyn Env) -> bool {
        let Some(value) = env.shared_get() else { return false };
        let Some((at, body)) = decode_shared(&value) else {
            return false;
        };
        if self.fetched_at.is_some_and(|mine| mine >= at) {
            return false;
        }
        match from_jwks(body, &self.policy.allowed) {
            Ok(keys) => {
                self.keys = keys;
                self.fetched_at = Some(at);
                true
            }
            Err(_) => false,
        }
    }

    fn fetch(&mut self, env: &dyn Env) -> bool {
        let now = env.now_ms();
        self.last_attempt = Some(now);
        self.fetches += 1;
        let parsed = env
            .fetch()
            .and_then(|body| from_jwks(&body, &self.policy.allowed).map(|keys| (body, keys)));
        match parsed {
            Ok((body, keys)) => {
                self.keys = keys;
                self.fetched_at = Some(now);
                env.shared_put(&encode_shared(now, &body));
                true
            }
            Err(e) => {
                env.log_error(&format!(
                    "JWKS fetch failed (keeping {} cached keys): {e}",
                    self.keys.len()
                ));
                false
            }
        }
    }
}

fn encode_shared(at: u64, body: &[u8]) -> Vec<u8> {
    let mut value = format!("{at}\n").into_bytes();
    value.extend_from_slice(body);
    value
}

fn decode_shared(value: &[u8]) -> Option<(u64, &[u8])> {
    let newline = value.iter().position(|b| *b == b'\n')?;
    let at = std::str::from_utf8(&value[..newline]).ok()?.parse().ok()?;
    Some((at, &value[newline + 1..]))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
#[path = "jwks_tests.rs"]
mod tests;
