//! JWT authentication for Weft: validates a token (HS256/384/512, RS256/384/512,
//! PS256/384/512, ES256/384, EdDSA) against inline keys or a JWKS fetched from a cluster,
//! checks `exp`/`nbf` (with leeway), `iss`, `aud` and required claims, forwards chosen
//! claims upstream as headers, and answers 401 with `WWW-Authenticate: Bearer` otherwise.
//! `docs/plugins.md` documents the config.
//!
//! Signatures and registered claims are checked by `jsonwebtoken` (RustCrypto backend);
//! this crate only decides which key may check which token. Tokens that verified are
//! cached per instance (`token_cache`), so a reused token is not verified again.

mod config;
mod jwks;
mod keys;
mod lru;
mod token_cache;
mod verify;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests;

use std::cell::{RefCell, RefMut};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugin_common::token::{Source, Strip};
use serde_json::Value;
use weft_sdk::callout::Callout;
use weft_sdk::{Decision, Filter, Options, Phases, Reply, Request, kv, log, metrics};

use config::{Config, Jwks, Settings};
use keys::KeyId;
use token_cache::{Lookup, TokenCache};
use verify::{Claims, Failure, Verified};

struct JwtAuth {
    settings: Settings,
    /// The instance's JWKS copy; instances are single-threaded, one request at a time.
    jwks: Option<RefCell<jwks::Cache>>,
    /// Tokens this instance verified; `None` when `cache.max_entries` is 0. The host pools
    /// instances and keeps their memory between requests, so it outlives a request.
    tokens: Option<RefCell<TokenCache>>,
    /// What a request is asked for, worked out once (`Lookups::new`).
    lookups: Lookups,
}

/// The header names a request phase reads and removes, so it asks the proxy for all of
/// them in one call each (`get_many`, `delete_many`) instead of one call per header.
struct Lookups {
    /// `claims_to_headers`' header names: a client's own copies are removed.
    claim_headers: Vec<String>,
    /// The token sources' header names, without duplicates and without the claim
    /// headers (removed before the token is looked for, so never read).
    source_headers: Vec<String>,
    /// For each source, its header's index in `source_headers`.
    slots: Vec<Option<usize>>,
    /// Whether the scope or a source reads the path (else the proxy is not asked).
    reads_path: bool,
}

impl Lookups {
    fn new(settings: &Settings) -> Self {
        let claim_headers: Vec<String> = settings.claims_to_headers.iter().map(|(_, h)| h.clone()).collect();
        let mut source_headers: Vec<String> = Vec::new();
        let slots = settings
            .sources
            .iter()
            .map(|source| {
                let name = source.header_name()?;
                if claim_headers.iter().any(|h| h.eq_ignore_ascii_case(name)) {
                    return None;
                }
                Some(match source_headers.iter().position(|h| h.eq_ignore_ascii_case(name)) {
                    Some(i) => i,
                    None => {
                        source_headers.push(name.to_owned());
                        source_headers.len() - 1
                    }
                })
            })
            .collect();
        let reads_path = settings.scope.reads_path() || settings.sources.iter().any(|s| matches!(s, Source::Query(_)));
        Lookups {
            claim_headers,
            source_headers,
            slots,
            reads_path,
        }
    }
}

/// The host side of the JWKS cache: callouts, the shared KV and the wall clock.
struct Host<'a> {
    jwks: &'a Jwks,
    /// The request's time, read once per request: a cache hit asks the proxy for the
    /// clock once, not again to judge the key set's age.
    now_ms: u64,
}

const SHARED_KEY: &str = "jwks";
const REFETCH_KEY: &str = "jwks-refetch";

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl jwks::Env for Host<'_> {
    fn now_ms(&self) -> u64 {
        self.now_ms
    }

    fn fetch(&self) -> Result<Vec<u8>, String> {
        metrics::counter_add("jwks_fetches", 1);
        let response = Callout::get(self.jwks.path.clone())
            .header("accept", "application/json")
            .timeout(self.jwks.timeout)
            .send(&self.jwks.cluster)?;
        if response.status != 200 {
            return Err(format!("{} answered {}", self.jwks.cluster, response.status));
        }
        Ok(response.body)
    }

    fn shared_get(&self) -> Option<Vec<u8>> {
        kv::get(SHARED_KEY).ok().flatten()
    }

    fn shared_put(&self, value: &[u8]) {
        // Kept twice the refresh interval: it carries its own fetch time, so readers
        // judge its age themselves; the TTL only bounds a dead entry's life.
        if let Err(e) = kv::set(SHARED_KEY, value, Some(self.jwks.refresh.saturating_mul(2))) {
            log::warn(&format!("cannot share the JWKS in the KV: {e}"));
        }
    }

    fn refetch_permit(&self, window: Duration) -> bool {
        // The first caller in each window creates the key and gets 1. If the KV fails,
        // the instance's own rate limit still holds.
        kv::incr(REFETCH_KEY, 1, Some(window.max(Duration::from_millis(1)))).map_or(true, |n| n == 1)
    }

    fn log_error(&self, message: &str) {
        metrics::counter_add("jwks_fetch_errors", 1);
        log::error(message);
    }
}

impl JwtAuth {
    fn unauthorized(&self, failure: Option<&str>) -> Decision {
        metrics::counter_add("denied", 1);
        let challenge = match failure {
            // RFC 6750 3.1: no error code when the request had no token at all.
            None => format!("Bearer realm=\"{}\"", self.settings.realm),
            Some(text) => format!(
                "Bearer realm=\"{}\", error=\"invalid_token\", error_description=\"{}\"",
                self.settings.realm,
                text.replace(['"', '\\'], "'")
            ),
        };
        Reply::new(401)
            .header("www-authenticate", challenge)
            .header("content-type", "text/plain")
            .body("unauthorized\n")
            .into()
    }

    /// The first source's token, by its index, given the sources' headers as read.
    fn find_token(&self, headers: &[Option<String>], path: &str) -> Option<(usize, String)> {
        self.settings
            .sources
            .iter()
            .enumerate()
            .find_map(|(i, source)| source.find(self.source_header(headers, i), path).map(|t| (i, t)))
    }

    /// Source `i`'s header value among `headers` (`Lookups::source_headers` as read).
    fn source_header<'h>(&self, headers: &'h [Option<String>], i: usize) -> Option<&'h str> {
        let slot = (*self.lookups.slots.get(i)?)?;
        headers.get(slot)?.as_deref()
    }

    fn check(&self, token: &str) -> Result<Claims, Failure> {
        let now = now_ms();
        let Some(cell) = &self.tokens else {
            return self.verify_now(token, now).map(|v| v.claims);
        };
        let (claims, lookup) = cell.borrow_mut().check(
            token,
            now,
            |key| self.key_is_current(key, now),
            || self.verify_now(token, now),
        )?;
        if lookup == Lookup::Hit {
            metrics::counter_add("token_cache_hits", 1);
        }
        Ok(claims)
    }

    /// The JWKS copy, refreshed first if due; `None` without a JWKS.
    fn fresh_jwks(&self, now_ms: u64) -> Option<(RefMut<'_, jwks::Cache>, Host<'_>)> {
        let host = Host {
            jwks: self.settings.jwks.as_ref()?,
            now_ms,
        };
        let mut cache = self.jwks.as_ref()?.borrow_mut();
        if let Err(e) = cache.ensure_fresh(&host) {
            // Inline keys may still verify the token.
            log::warn(&e);
        }
        Some((cache, host))
    }

    /// Whether the key that verified a cached token is still one we would verify with.
    fn key_is_current(&self, id: KeyId, now_ms: u64) -> bool {
        // Inline keys first: they need no refresh.
        if self.settings.keys.iter().any(|k| k.id == id) {
            return true;
        }
        self.fresh_jwks(now_ms)
            .is_some_and(|(cache, _)| cache.keys().iter().any(|k| k.id == id))
    }

    fn verify_now(&self, token: &str, now_ms: u64) -> Result<Verified, Failure> {
        let policy = &self.settings.policy;
        let (alg, kid) = verify::header(token, policy)?;
        let Some((mut cache, host)) = self.fresh_jwks(now_ms) else {
            return verify::verify(token, alg, kid.as_deref(), self.settings.keys.iter(), policy);
        };
        let first = verify::verify(
            token,
            alg,
            kid.as_deref(),
            self.settings.keys.iter().chain(cache.keys()),
            policy,
        );
        match first {
            Err(Failure::UnknownKid(_)) if cache.refetch_for_unknown_kid(&host) => verify::verify(
                token,
                alg,
                kid.as_deref(),
                self.settings.keys.iter().chain(cache.keys()),
                policy,
            ),
            other => other,
        }
    }
}

/// Takes the token out of the request before it goes upstream; `header` is the source's
/// header as read.
fn remove_token(request: &mut Request<'_>, source: &Source, header: Option<&str>, path: &str) {
    let result = match source.strip(header, path) {
        Strip::RemoveHeader(name) => {
            request.remove_header(name);
            Ok(())
        }
        Strip::SetHeader(name, value) => request.set_header(name, &value).map_err(String::from),
        Strip::SetPath(path) => request.set_path(&path),
    };
    if let Err(e) = result {
        log::warn(&format!("cannot strip the token from the request: {e}"));
    }
}

fn claim_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl Filter for JwtAuth {
    type Config = Config;

    fn options(&self) -> Options {
        // Nothing to do on the way back: the proxy skips this filter there.
        Options::for_phases(Phases::REQUEST)
    }

    fn init(config: Config) -> Result<Self, String> {
        let settings = config.check()?;
        let jwks = settings.jwks.as_ref().map(|j| {
            RefCell::new(jwks::Cache::new(jwks::Policy {
                refresh: j.refresh,
                min_refetch: j.min_refetch,
                allowed: settings.allowed.clone(),
            }))
        });
        let tokens = (settings.cache.max_entries > 0).then(|| {
            RefCell::new(TokenCache::new(
                settings.cache.max_entries,
                settings.cache.ttl,
                settings.policy.leeway_secs,
                settings
                    .claims_to_headers
                    .iter()
                    .map(|(claim, _)| claim.clone())
                    .collect(),
            ))
        });
        let lookups = Lookups::new(&settings);
        Ok(JwtAuth {
            settings,
            jwks,
            tokens,
            lookups,
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        let lookups = &self.lookups;
        // Claim headers come from a verified token only: a client's own copies go, on
        // every request, anonymous ones included.
        if !lookups.claim_headers.is_empty() {
            request.headers().delete_many(&lookups.claim_headers);
        }
        let path = if lookups.reads_path {
            request.path()
        } else {
            String::new()
        };
        let scope = &self.settings.scope;
        let method = if scope.reads_method() {
            request.method()
        } else {
            String::new()
        };
        if !scope.protects(&method, &path) {
            return Decision::Continue;
        }
        let headers = if lookups.source_headers.is_empty() {
            Vec::new()
        } else {
            request.headers().get_many(&lookups.source_headers)
        };
        let Some((source, token)) = self.find_token(&headers, &path) else {
            return self.unauthorized(None);
        };
        let claims = match self.check(&token) {
            Ok(claims) => claims,
            Err(failure) => return self.unauthorized(Some(&failure.description())),
        };
        let claim_values: Vec<(&str, String)> = self
            .settings
            .claims_to_headers
            .iter()
            .filter_map(|(claim, header)| Some((header.as_str(), claim_text(claims.get(claim)?))))
            .collect();
        if !claim_values.is_empty() && request.headers().set_many(&claim_values).is_err() {
            // One value is not header text: set the others, and say which one.
            for (claim, header) in &self.settings.claims_to_headers {
                if let Some(value) = claims.get(claim)
                    && let Err(e) = request.set_header(header, &claim_text(value))
                {
                    log::warn(&format!("claim {claim:?} cannot go in header {header}: {e}"));
                }
            }
        }
        if self.settings.remove_token
            && let Some(found) = self.settings.sources.get(source)
        {
            remove_token(request, found, self.source_header(&headers, source), &path);
        }
        metrics::counter_add("allowed", 1);
        Decision::Continue
    }
}

weft_sdk::export!(JwtAuth);
