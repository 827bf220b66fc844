//! The filter's config (the `config = { .. }` table of its `[[filters]]` entry) and its
//! validation into [`Limit`]s. Errors name the limit and the field.

use std::collections::HashSet;
use std::time::Duration;

use serde::Deserialize;

use crate::algo::Bucket;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub limits: Vec<LimitConfig>,
    /// What to do when the KV store fails (e.g. Redis down).
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Put `RateLimit-*` headers on allowed responses too (costs the response phase: a
    /// context write and read to carry the numbers there, and six header writes).
    #[serde(default = "yes")]
    pub response_headers: bool,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitConfig {
    /// Names the limit in store keys and logs; default: its position.
    pub name: Option<String>,
    /// The descriptor: which facts of the request the counter is kept per.
    #[serde(default)]
    pub key: Vec<String>,
    /// Requests allowed per `per`.
    pub rate: u64,
    pub per: String,
    #[serde(default)]
    pub algorithm: Algorithm,
    /// Token bucket capacity (default: `rate`).
    pub burst: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    FixedWindow,
    SlidingWindow,
    TokenBucket,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStoreError {
    /// Fail open: let the request through.
    #[default]
    Allow,
    /// Fail closed: answer 503.
    Deny,
}

/// One part of a descriptor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    ClientIp,
    Route,
    Path,
    Method,
    /// The verified TLS client identity.
    Identity,
    /// A request header (lowercase name); e.g. `x-user` set by an auth filter before this one.
    Header(String),
}

/// A validated limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limit {
    pub id: String,
    pub parts: Vec<Part>,
    pub kind: Kind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    FixedWindow { limit: u64, per_ms: u64 },
    SlidingWindow { limit: u64, per_ms: u64 },
    TokenBucket(Bucket),
}

const PARTS: &str = "client_ip, route, path, method, identity, header:<name>";

fn part(text: &str) -> Result<Part, String> {
    Ok(match text {
        "client_ip" => Part::ClientIp,
        "route" => Part::Route,
        "path" => Part::Path,
        "method" => Part::Method,
        "identity" => Part::Identity,
        _ => match text.strip_prefix("header:") {
            Some(name) if !name.is_empty() && name.bytes().all(is_token_byte) => {
                Part::Header(name.to_ascii_lowercase())
            }
            Some(name) => return Err(format!("{name:?} is not a valid header name")),
            None => return Err(format!("unknown descriptor {text:?} (use {PARTS})")),
        },
    })
}

fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

impl Config {
    /// Validates every limit; the message names the first problem.
    pub fn limits(&self) -> Result<Vec<Limit>, String> {
        if self.limits.is_empty() {
            return Err("limits is empty: give at least one { key = [..], rate = N, per = \"1s\" }".into());
        }
        let mut ids = HashSet::new();
        let mut out = Vec::new();
        for (i, l) in self.limits.iter().enumerate() {
            let id = l.name.clone().unwrap_or_else(|| i.to_string());
            let at = |msg: String| format!("limits[{i}] ({id}): {msg}");
            if id.is_empty() || id.contains(':') {
                return Err(at("name must be non-empty and without ':'".into()));
            }
            if !ids.insert(id.clone()) {
                return Err(at("the name is used twice".into()));
            }
            let parts = l
                .key
                .iter()
                .map(|p| part(p))
                .collect::<Result<Vec<_>, _>>()
                .map_err(at)?;
            let per = plugin_common::duration::parse("per", &l.per).map_err(at)?;
            if per < Duration::from_millis(1) || per > Duration::from_secs(86_400 * 366) {
                return Err(at(format!("per = {:?} must be between 1ms and a year", l.per)));
            }
            if l.rate == 0 {
                return Err(at("rate must be at least 1".into()));
            }
            if l.burst.is_some() && l.algorithm != Algorithm::TokenBucket {
                return Err(at("burst is only for algorithm = \"token_bucket\"".into()));
            }
            let per_ms = per.as_millis() as u64;
            let kind = match l.algorithm {
                Algorithm::FixedWindow => Kind::FixedWindow { limit: l.rate, per_ms },
                Algorithm::SlidingWindow => Kind::SlidingWindow { limit: l.rate, per_ms },
                Algorithm::TokenBucket => {
                    let interval_us = (per.as_micros() / u128::from(l.rate)) as u64;
                    if interval_us == 0 {
                        return Err(at("rate is over one per microsecond".into()));
                    }
                    let burst = l.burst.unwrap_or(l.rate);
                    if burst == 0 || burst.checked_mul(interval_us).is_none() {
                        return Err(at("burst must be at least 1 (and not absurdly large)".into()));
                    }
                    Kind::TokenBucket(Bucket { interval_us, burst })
                }
            };
            out.push(Limit { id, parts, kind });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Vec<Limit>, String> {
        let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
        config.limits()
    }

    #[test]
    fn accepts_the_documented_shape() {
        let limits = parse(
            r#"{"limits": [
                {"key": ["client_ip"], "rate": 100, "per": "1s", "algorithm": "token_bucket", "burst": 20},
                {"name": "user", "key": ["header:X-User", "route"], "rate": 5, "per": "2s", "algorithm": "sliding_window"}
            ], "on_store_error": "deny"}"#,
        )
        .expect("valid");
        assert_eq!(
            limits[0].kind,
            Kind::TokenBucket(Bucket {
                interval_us: 10_000,
                burst: 20
            })
        );
        assert_eq!(limits[1].id, "user");
        assert_eq!(limits[1].parts, vec![Part::Header("x-user".into()), Part::Route]);
    }

    #[test]
    fn explains_mistakes() {
        let err = |json| parse(json).expect_err("invalid");
        assert!(err(r#"{"limits": []}"#).contains("limits is empty"));
        assert!(err(r#"{"limits": [{"key": ["clientip"], "rate": 1, "per": "1s"}]}"#).contains("unknown descriptor"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "soon"}]}"#).contains("limits[0] (0): per"));
        assert!(err(r#"{"limits": [{"rate": 0, "per": "1s"}]}"#).contains("rate must be"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "1s", "burst": 3}]}"#).contains("only for"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "1s", "algorithm": "leaky"}]}"#).contains("unknown variant"));
        assert!(err(r#"{"limits": [{"rate": 1, "per": "1s", "typo": 1}]}"#).contains("unknown field"));
    }
}
