//! HTTP Basic authentication for Weft against bcrypt hashes (`htpasswd -B`, or any bcrypt
//! library: `$2a$`, `$2b$`, `$2y$`). The user name goes upstream in `identity_header`.
//!
//! bcrypt is slow on purpose, and a filter runs within a CPU budget (`limits.cpu`,
//! default 50ms). Measured in the guest: cost 8 ~30ms, cost 10 ~110ms, cost 12 ~360ms.
//! Use cost 10 with `limits.cpu = "250ms"`, or cost 8 with the default budget only on an
//! idle machine (the budget counts wall time in the guest). Successful checks are
//! remembered for `cache_ttl` (by SHA-256 of user and password, in the instance), so a
//! client sending the same credentials pays bcrypt once per instance, not per request.

use std::cell::RefCell;
use std::collections::HashMap;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use plugin_common::scope::Scope;
use plugin_common::{duration, header};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use weft_sdk::{Decision, Filter, Options, Phases, Reply, Request, metrics};

/// Successful credentials remembered per instance at most; beyond, the oldest go.
const CACHE_CAP: usize = 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    users: Vec<User>,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default = "default_identity")]
    identity_header: String,
    /// Remove `Authorization` before the request goes upstream.
    #[serde(default = "yes")]
    remove_credentials: bool,
    #[serde(default = "default_cache_ttl")]
    cache_ttl: String,
    #[serde(default)]
    anonymous_paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct User {
    user: String,
    bcrypt: String,
}

fn default_realm() -> String {
    "weft".to_owned()
}
fn default_identity() -> String {
    "x-user".to_owned()
}
fn default_cache_ttl() -> String {
    "5m".to_owned()
}
fn yes() -> bool {
    true
}

struct BasicAuth {
    users: HashMap<String, String>,
    /// Checked against when the user is unknown, so a wrong name costs as much as a
    /// wrong password and names cannot be probed by timing.
    decoy: String,
    realm: String,
    identity_header: String,
    remove_credentials: bool,
    cache_ttl: Duration,
    scope: Scope,
    verified: RefCell<HashMap<[u8; 32], Instant>>,
}

/// `Authorization: Basic base64(user:password)` → (user, password).
fn credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_owned(), password.to_owned()))
}

fn cache_key(user: &str, password: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(user.as_bytes());
    h.update([0]);
    h.update(password.as_bytes());
    h.finalize().into()
}

impl BasicAuth {
    fn check(&self, user: &str, password: &str) -> bool {
        let key = cache_key(user, password);
        let now = Instant::now();
        if let Some(at) = self.verified.borrow().get(&key)
            && now.duration_since(*at) < self.cache_ttl
        {
            return true;
        }
        let (hash, known) = match self.users.get(user) {
            Some(hash) => (hash, true),
            None => (&self.decoy, false),
        };
        let ok = known && bcrypt::verify(password, hash).unwrap_or(false);
        if !known {
            let _ = bcrypt::verify(password, hash);
        }
        if ok && !self.cache_ttl.is_zero() {
            let mut cache = self.verified.borrow_mut();
            if cache.len() >= CACHE_CAP {
                cache.retain(|_, at| now.duration_since(*at) < self.cache_ttl);
                if cache.len() >= CACHE_CAP {
                    cache.clear();
                }
            }
            cache.insert(key, now);
        }
        ok
    }

    fn unauthorized(&self) -> Decision {
        metrics::counter_add("denied", 1);
        Reply::new(401)
            .header(
                "www-authenticate",
                format!("Basic realm=\"{}\", charset=\"UTF-8\"", self.realm),
            )
            .header("content-type", "text/plain")
            .body("unauthorized\n")
            .into()
    }
}

impl Filter for BasicAuth {
    type Config = Config;

    fn options(&self) -> Options {
        // Nothing to do on the way back: the proxy skips this filter there.
        Options::for_phases(Phases::REQUEST)
    }

    fn init(config: Config) -> Result<Self, String> {
        let mut users = HashMap::new();
        for u in &config.users {
            if u.user.is_empty() || u.user.contains(':') {
                return Err(format!("users: {:?} must be non-empty and without ':'", u.user));
            }
            // Parses the hash (and its cost) now, so a typo fails the load, not a login.
            bcrypt::verify("", &u.bcrypt).map_err(|e| format!("users: {:?}: not a bcrypt hash: {e}", u.user))?;
            if users.insert(u.user.clone(), u.bcrypt.clone()).is_some() {
                return Err(format!("users: {:?} appears twice", u.user));
            }
        }
        let decoy = config
            .users
            .first()
            .map(|u| u.bcrypt.clone())
            .ok_or_else(|| "users must not be empty".to_owned())?;
        header::quotable("realm", &config.realm)?;
        Ok(BasicAuth {
            users,
            decoy,
            identity_header: header::name("identity_header", &config.identity_header)?,
            realm: config.realm,
            remove_credentials: config.remove_credentials,
            cache_ttl: duration::parse("cache_ttl", &config.cache_ttl)?,
            scope: Scope::new(config.anonymous_paths, config.methods)?,
            verified: RefCell::new(HashMap::new()),
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        request.remove_header(&self.identity_header);
        if !self.scope.protects(&request.method(), &request.path()) {
            return Decision::Continue;
        }
        let Some((user, password)) = request.header("authorization").as_deref().and_then(credentials) else {
            return self.unauthorized();
        };
        if !self.check(&user, &password) {
            return self.unauthorized();
        }
        if self.remove_credentials {
            request.remove_header("authorization");
        }
        if request.set_header(&self.identity_header, &user).is_err() {
            return self.unauthorized();
        }
        metrics::counter_add("allowed", 1);
        Decision::Continue
    }
}

weft_sdk::export!(BasicAuth);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn basic_credentials_parse() {
        assert_eq!(
            credentials("Basic YWxpY2U6czNjcjN0"),
            Some(("alice".into(), "s3cr3t".into()))
        );
        assert_eq!(credentials("basic YTpiOmM="), Some(("a".into(), "b:c".into())));
        assert_eq!(credentials("Bearer YWxpY2U6czNjcjN0"), None);
        assert_eq!(credentials("Basic !!!"), None);
        assert_eq!(credentials("Basic YWxpY2U="), None, "no colon");
    }

    #[test]
    fn hashes_are_checked_at_load() {
        let config: Config = serde_json::from_value(serde_json::json!({
            "users": [{ "user": "a", "bcrypt": "$2b$04$notahash" }]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            BasicAuth::init(config)
                .err()
                .unwrap_or_default()
                .contains("not a bcrypt hash")
        );
    }

    #[test]
    fn passwords_verify_and_are_cached() {
        // "secret" at cost 4, made by Python's bcrypt.
        let hash = "$2b$04$YkgRPHdzlgkNQdvViHYO4ufLMfbiLOojABIqonWbT5YWrcRemPbI.";
        let config: Config = serde_json::from_value(serde_json::json!({
            "users": [{ "user": "alice", "bcrypt": hash }]
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let f = BasicAuth::init(config).unwrap_or_else(|e| panic!("{e}"));
        assert!(f.check("alice", "secret"));
        assert!(f.check("alice", "secret"));
        assert_eq!(f.verified.borrow().len(), 1);
        assert!(!f.check("alice", "wrong"));
        assert!(!f.check("bob", "secret"));
    }
}
