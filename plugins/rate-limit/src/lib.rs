//! `rate-limit`: token bucket, fixed window and sliding window limits for Weft, kept in
//! the host's shared KV store: per proxy with the default in-process store, across
//! proxies with `[kv] backend = "redis"`. Each limit counts per descriptor (client
//! address, header, route, path...); a request must pass every limit of the filter.
//! Denials answer `429` with `Retry-After` and `RateLimit-*`/`X-RateLimit-*` headers;
//! allowed responses carry the headers too. See `docs/plugins.md`.
//!
//! Atomicity with the KV interface (get, set, delete, incr-with-TTL-on-create):
//! - windows are one `incr` per request (plus a `get` of the previous window for the
//!   sliding one); a denied request refunds what it took (`incr` by minus one), so denied
//!   traffic does not eat quota, and racing requests can only be denied too eagerly,
//!   never admitted over the limit;
//! - the token bucket (GCRA) reads its state, then `incr`s it when the bucket is in use
//!   (re-checking the result, so racing takes cannot overdraw) or `set`s it when the
//!   bucket was full. Two requests racing on a *full* bucket both `set` the same value,
//!   so one of them is not counted: a bounded over-admission that a compare-and-swap in
//!   the KV interface would remove.
//!
//! Eviction. The host's local store gives this filter its own space (`limits.kv_keys`,
//! `limits.kv_bytes`): no other filter's writes can evict these keys, so a flood
//! elsewhere never loosens a limit. This filter's own writes evict its own keys only
//! when it tracks more live keys than its quota (as many descriptors per window as
//! `kv_keys`), nearest expiry first. What an eviction can do, per algorithm:
//! - fixed window: the evicted counter restarts at zero, so that descriptor may get up
//!   to `rate` more requests in that window (a window reset); an evicted counter of a
//!   past window, kept only for clock slack, changes nothing;
//! - sliding window: losing the current counter is the same reset; losing the previous
//!   window's counter drops its weight, at most `rate` more in the current window;
//! - token bucket: losing the state refills that descriptor's bucket: at most `burst` more.
//!
//! So each eviction loosens one descriptor by at most one quota, and it takes a new key
//! (a new descriptor, with its own quota anyway) to cause one: a client cannot get more
//! by forcing evictions than by sending from the extra descriptors it would need to force
//! them. Evictions are counted in `weft_kv_evictions_total{filter}`; raise `kv_keys` when
//! they are not zero. A refund re-created after an eviction carries the counter's TTL
//! (worth at most one request, then expiring with its window).
//!
//! The numbers for an allowed response's headers go from the request phase to the
//! response phase in the request's own context (`weft_sdk::context`): no store round trip,
//! and exact per request, also for concurrent HTTP/2 streams of one connection. Without
//! `response_headers` the filter declares the request phase only, and the proxy never
//! calls it on the way back.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};
use weft_sdk::{
    Decision, Filter, Options, Phases, Reply, Request, Response, ResponseDecision, context, kv, log, metadata, metrics,
};

pub mod algo;
pub mod config;
mod num;

use algo::{Verdict, secs};
use config::{Config, Kind, Limit, OnStoreError, Part};
use num::{decimal, push_decimal};

struct RateLimit {
    limits: Vec<Limit>,
    on_store_error: OnStoreError,
    response_headers: bool,
}

/// A store write to undo when the request is denied after all.
struct Taken {
    key: String,
    amount: i64,
    /// The counter's TTL: if it was evicted before the refund, the refund re-creates it
    /// and must expire with it rather than live forever.
    ttl: Duration,
}

/// The context key of the numbers the response phase turns into headers.
const VERDICT_KEY: &str = "verdict";
/// Extra life of window counters past their window, for clock skew between proxies.
const SLACK_MS: u64 = 1000;
/// Keys longer than this are hashed (the host refuses keys over 512 bytes).
const MAX_KEY: usize = 256;

impl Filter for RateLimit {
    type Config = Config;

    fn init(config: Config) -> Result<Self, String> {
        Ok(RateLimit {
            limits: config.limits()?,
            on_store_error: config.on_store_error,
            response_headers: config.response_headers,
        })
    }

    fn options(&self) -> Options {
        Options::for_phases(if self.response_headers {
            Phases::BOTH
        } else {
            Phases::REQUEST
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        match self.check(request) {
            Ok(Some(v)) if !v.allowed => {
                // No hand-off: this filter answered, so its response phase does not run.
                metrics::counter_add("limited", 1);
                let mut reply = Reply::new(429)
                    .header("retry-after", secs(v.retry_after_ms).max(1).to_string())
                    .header("content-type", "text/plain")
                    .body("rate limit exceeded\n");
                for (name, value) in headers(&v) {
                    reply = reply.header(name, value);
                }
                reply.into()
            }
            Ok(v) => {
                metrics::counter_add("allowed", 1);
                self.handoff(v.as_ref());
                Decision::Continue
            }
            Err(e) => {
                metrics::counter_add("store_errors", 1);
                log_limited(&format!("rate-limit store failed ({:?}): {e}", self.on_store_error));
                match self.on_store_error {
                    OnStoreError::Allow => Decision::Continue,
                    OnStoreError::Deny => Reply::new(503)
                        .header("retry-after", "1")
                        .header("content-type", "text/plain")
                        .body("rate limit unavailable\n")
                        .into(),
                }
            }
        }
    }

    fn on_response(&self, response: &mut Response<'_>) -> ResponseDecision {
        let Some(saved) = context::get(VERDICT_KEY) else {
            return ResponseDecision::Continue;
        };
        let mut numbers = saved.split(' ').map(str::parse::<u64>);
        if let (Some(Ok(limit)), Some(Ok(remaining)), Some(Ok(reset_ms))) =
            (numbers.next(), numbers.next(), numbers.next())
        {
            let (limit, remaining, reset) = (decimal(limit), decimal(remaining), decimal(secs(reset_ms)));
            // Six `set` calls, not one `set-many`: the host lifts a list of string pairs
            // element by element (measured: 2.9 k instructions a request more than six
            // calls). Names and digits are always valid header text.
            let headers = response.headers();
            for (name, value) in [
                ("ratelimit-limit", limit.as_str()),
                ("ratelimit-remaining", remaining.as_str()),
                ("ratelimit-reset", reset.as_str()),
                ("x-ratelimit-limit", limit.as_str()),
                ("x-ratelimit-remaining", remaining.as_str()),
                ("x-ratelimit-reset", reset.as_str()),
            ] {
                let _ = headers.set(name, value);
            }
        }
        ResponseDecision::Continue
    }
}

impl RateLimit {
    /// Applies every limit; `Ok(None)` when none applies to this request. On a denial,
    /// refunds what the request took from the limits.
    fn check(&self, request: &Request<'_>) -> Result<Option<Verdict>, String> {
        let mut verdicts = algo::Strictest::default();
        let mut taken = Vec::new();
        let mut failed = None;
        for limit in &self.limits {
            let Some(key) = descriptor(limit, request) else {
                continue;
            };
            match apply(limit, key, &mut taken) {
                Ok(v) => verdicts.add(v),
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let denied = failed.is_some() || verdicts.denied();
        if denied {
            for t in &taken {
                // Best effort: a failed refund only makes the limit stricter for a while.
                let _ = kv::incr(&t.key, -t.amount, Some(t.ttl));
            }
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(verdicts.verdict()),
        }
    }

    /// Leaves the numbers for this request's response phase.
    fn handoff(&self, verdict: Option<&Verdict>) {
        if let (true, Some(v)) = (self.response_headers, verdict) {
            // A full context only costs the headers of this response.
            let (limit, remaining, reset_ms) = (decimal(v.limit), decimal(v.remaining), decimal(v.reset_ms));
            let mut line = num::Line::new();
            for part in [limit.as_str(), " ", remaining.as_str(), " ", reset_ms.as_str()] {
                line.push(part);
            }
            let _ = context::set(VERDICT_KEY, line.as_str());
        }
    }
}

/// The store key of `limit` for this request; `None` when a part is missing (the limit
/// does not apply, as in Envoy: no `x-user` header, no per-user limit).
fn descriptor(limit: &Limit, request: &Request<'_>) -> Option<String> {
    let mut key = String::with_capacity(64);
    key.push_str("rl:");
    key.push_str(&limit.id);
    for part in &limit.parts {
        let owned: String;
        let value: &str = match part {
            Part::ClientIp => {
                owned = metadata::client_address();
                // `ip:port` or `[v6]:port`: the port changes per connection.
                let ip = owned.rsplit_once(':').map_or(owned.as_str(), |(ip, _)| ip);
                ip.trim_start_matches('[').trim_end_matches(']')
            }
            Part::Route => {
                owned = metadata::route();
                &owned
            }
            Part::Path => {
                owned = request.path();
                owned.split('?').next().unwrap_or_default()
            }
            Part::Method => {
                owned = request.method();
                &owned
            }
            Part::Identity => {
                owned = metadata::peer_identity()?;
                &owned
            }
            Part::Header(name) => {
                owned = request.header(name)?;
                &owned
            }
        };
        // Length-prefixed, so no value can spell two parts: `:{len}:{value}`.
        key.push(':');
        push_decimal(&mut key, value.len() as u64);
        key.push(':');
        key.push_str(value);
    }
    if key.len() > MAX_KEY {
        let digest = Sha256::digest(key.as_bytes());
        let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        key = format!("rl:{}:sha256:{hex}", limit.id);
    }
    Some(key)
}

fn now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default()
}

fn parse(value: Option<Vec<u8>>) -> Option<i64> {
    std::str::from_utf8(&value?).ok()?.parse().ok()
}

/// One limit against the store.
fn apply(limit: &Limit, mut key: String, taken: &mut Vec<Taken>) -> Result<Verdict, String> {
    let now = now();
    match limit.kind {
        Kind::FixedWindow { limit, per_ms } => {
            let now_ms = now.as_millis() as u64;
            let (w, elapsed) = algo::window(now_ms, per_ms);
            // The window's counter: `{key}:{w}`.
            key.push(':');
            push_decimal(&mut key, w);
            let ttl = Duration::from_millis(per_ms - elapsed + SLACK_MS);
            let count = kv::incr(&key, 1, Some(ttl))?;
            taken.push(Taken { key, amount: 1, ttl });
            Ok(algo::fixed_window(count, limit, per_ms, now_ms))
        }
        Kind::SlidingWindow { limit, per_ms } => {
            let now_ms = now.as_millis() as u64;
            let (w, elapsed) = algo::window(now_ms, per_ms);
            let base = key.len();
            key.push(':');
            push_decimal(&mut key, w);
            let cur_key = key;
            // Alive through the next window, where it is the previous one.
            let ttl = Duration::from_millis(2 * per_ms - elapsed + SLACK_MS);
            let cur = kv::incr(&cur_key, 1, Some(ttl))?;
            let mut prev_key = String::with_capacity(cur_key.len());
            prev_key.push_str(&cur_key[..base]);
            prev_key.push(':');
            push_decimal(&mut prev_key, w.wrapping_sub(1));
            taken.push(Taken {
                key: cur_key,
                amount: 1,
                ttl,
            });
            let prev = parse(kv::get(&prev_key)?).unwrap_or(0);
            Ok(algo::sliding_window(prev, cur, limit, per_ms, now_ms))
        }
        Kind::TokenBucket(bucket) => {
            let now_us = now.as_micros() as u64;
            // Long enough that a bucket in steady use keeps its state; renewed by every
            // `set` (each time the bucket was full).
            let ttl = Duration::from_micros(bucket.interval_us.saturating_mul(bucket.burst))
                .saturating_mul(10)
                .max(Duration::from_secs(1));
            let stored = parse(kv::get(&key)?).and_then(|t| u64::try_from(t).ok());
            let (verdict, next) = bucket.take(stored, now_us);
            if !verdict.allowed {
                return Ok(verdict);
            }
            let step = i64::try_from(bucket.interval_us).map_err(|e| e.to_string())?;
            let in_use = stored.is_some_and(|t| t > now_us);
            let after = if in_use {
                // Others may have taken tokens since the read: the increment is the
                // truth, re-judged below.
                u64::try_from(kv::incr(&key, step, Some(ttl))?).unwrap_or(0)
            } else {
                let value = i64::try_from(next).map_err(|e| e.to_string())?;
                kv::set(&key, value.to_string().as_bytes(), Some(ttl))?;
                next
            };
            if after <= now_us {
                // The key expired between the read and the increment: start it afresh.
                let value = i64::try_from(next).map_err(|e| e.to_string())?;
                kv::set(&key, value.to_string().as_bytes(), Some(ttl))?;
            }
            taken.push(Taken { key, amount: step, ttl });
            let (verdict, _) = bucket.judge(after.max(next), now_us);
            Ok(verdict)
        }
    }
}

/// The IETF draft's `RateLimit-*` headers and the older `X-RateLimit-*` ones.
fn headers(v: &Verdict) -> [(&'static str, String); 6] {
    let (limit, remaining, reset) = (
        v.limit.to_string(),
        v.remaining.to_string(),
        secs(v.reset_ms).to_string(),
    );
    [
        ("ratelimit-limit", limit.clone()),
        ("ratelimit-remaining", remaining.clone()),
        ("ratelimit-reset", reset.clone()),
        ("x-ratelimit-limit", limit),
        ("x-ratelimit-remaining", remaining),
        ("x-ratelimit-reset", reset),
    ]
}

/// Logs at most once a second per instance: a store outage under load would otherwise
/// log every request (the host also logs, rate-limited, with its own view of the error).
fn log_limited(message: &str) {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = now().as_secs();
    if LAST.swap(now, Ordering::Relaxed) != now {
        log::warn(message);
    }
}

weft_sdk::export!(RateLimit);
