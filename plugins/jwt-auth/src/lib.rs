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
    /// What a request needs asked of the proxy, decided once from the config.
    plan: Plan,
    /// The instance's JWKS copy; instances are single-threaded, one request at a time.
    jwks: Option<RefCell<jwks::Cache>>,
    /// Tokens this instance verified; `None` when `cache.max_entries` is 0. The host pools
    /// instances and keeps their memory between requests, so it outlives a request.
    tokens: Option<RefCell<TokenCache>>,
}

/// Which host calls a request can do without, given the config.
struct Plan {
    /// The scope protects every request (no `methods`, no `anonymous_paths`): no need to
    /// ask for the method or path to decide it.
    protects_all: bool,
    /// A token source or its removal reads the path (a `query:` source).
    needs_path: bool,
    /// The claim headers are distinct and none is a header a token source reads, so a
    /// verified request can set (or remove) each once, instead of removing them all
    /// first and setting them after: the same headers go upstream, with one call a claim
    /// header fewer. Otherwise the client's copies are removed first, as they always were.
    claims_in_place: bool,
}

impl Plan {
    fn new(settings: &Settings) -> Plan {
        let mut claim_headers: Vec<&str> = settings.claims_to_headers.iter().map(|(_, h)| h.as_str()).collect();
        claim_headers.sort_unstable();
        let distinct = claim_headers.windows(2).all(|w| w[0] != w[1]);
        let apart = settings
            .sources
            .iter()
            .filter_map(Source::header_name)
            .all(|read| !claim_headers.iter().any(|h| h.eq_ignore_ascii_case(read)));
        Plan {
            protects_all: settings.scope.protects_all(),
            needs_path: settings.sources.iter().any(|s| matches!(s, Source::Query(_))),
            claims_in_place: distinct && apart,
        }
    }
}

/// The host side of the JWKS cache: callouts, the shared KV and the wall clock.
struct Host<'a> {
    jwks: &'a Jwks,
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
        now_ms()
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

    fn find_token(&self, request: &Request<'_>, path: &str) -> Option<(usize, String)> {
        self.settings.sources.iter().enumerate().find_map(|(i, source)| {
            let header = source.header_name().and_then(|h| request.header(h));
            source.find(header.as_deref(), path).map(|t| (i, t))
        })
    }

    /// Checks the token and hands its claims to `read` (in place, on a cache hit).
    fn check<R>(&self, token: &str, read: impl FnOnce(&Claims) -> R) -> Result<R, Failure> {
        let Some(cell) = &self.tokens else {
            return self.verify_now(token).map(|v| read(&v.claims));
        };
        let (out, lookup) = cell.borrow_mut().check_with(
            token,
            now_ms(),
            |key| self.key_is_current(key),
            || self.verify_now(token),
            read,
        )?;
        if lookup == Lookup::Hit {
            metrics::counter_add("token_cache_hits", 1);
        }
        Ok(out)
    }

    /// Takes the client's own copies of the claim headers out of the request.
    fn remove_claim_headers(&self, request: &mut Request<'_>) {
        for (_, header) in &self.settings.claims_to_headers {
            request.remove_header(header);
        }
    }

    /// Sets each claim header from the verified claims. With `in_place`, a header whose
    /// claim is missing (or cannot be a header value) is removed here, where otherwise
    /// every claim header was removed before.
    fn set_claim_headers(&self, request: &mut Request<'_>, claims: &Claims, in_place: bool) {
        for (claim, header) in &self.settings.claims_to_headers {
            let Some(value) = claims.get(claim) else {
                if in_place {
                    request.remove_header(header);
                }
                continue;
            };
            let result = match value {
                Value::String(s) => request.set_header(header, s),
                other => request.set_header(header, &other.to_string()),
            };
            if let Err(e) = result {
                log::warn(&format!("claim {claim:?} cannot go in header {header}: {e}"));
                if in_place {
                    // A refused value leaves the client's copy in place: take it out,
                    // as it was taken out before the check otherwise.
                    request.remove_header(header);
                }
            }
        }
    }

    /// The JWKS copy, refreshed first if due; `None` without a JWKS.
    fn fresh_jwks(&self) -> Option<(RefMut<'_, jwks::Cache>, Host<'_>)> {
        let host = Host {
            jwks: self.settings.jwks.as_ref()?,
        };
        let mut cache = self.jwks.as_ref()?.borrow_mut();
        if let Err(e) = cache.ensure_fresh(&host) {
            // Inline keys may still verify the token.
            log::warn(&e);
        }
        Some((cache, host))
    }

    /// Whether the key that verified a cached token is still one we would verify with.
    fn key_is_current(&self, id: KeyId) -> bool {
        let jwks = self.fresh_jwks();
        self.settings
            .keys
            .iter()
            .chain(jwks.iter().flat_map(|(cache, _)| cache.keys()))
            .any(|k| k.id == id)
    }

    fn verify_now(&self, token: &str) -> Result<Verified, Failure> {
        let policy = &self.settings.policy;
        let (alg, kid) = verify::header(token, policy)?;
        let Some((mut cache, host)) = self.fresh_jwks() else {
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

/// Takes the token out of the request before it goes upstream.
fn remove_token(request: &mut Request<'_>, source: &Source, path: &str) {
    let header = source.header_name().and_then(|h| request.header(h));
    let result = match source.strip(header.as_deref(), path) {
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
        let plan = Plan::new(&settings);
        Ok(JwtAuth {
            settings,
            plan,
            jwks,
            tokens,
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        // Claim headers come from a verified token only: a client's own copies go, on
        // every request, anonymous ones included (with `claims_in_place`, on the way out
        // of this phase, each exactly once).
        let in_place = self.plan.claims_in_place;
        if !in_place {
            self.remove_claim_headers(request);
        }
        let path = if self.plan.needs_path || !self.plan.protects_all {
            request.path()
        } else {
            String::new()
        };
        if !self.plan.protects_all && !self.settings.scope.protects(&request.method(), &path) {
            if in_place {
                self.remove_claim_headers(request);
            }
            return Decision::Continue;
        }
        let Some((source, token)) = self.find_token(request, &path) else {
            if in_place {
                self.remove_claim_headers(request);
            }
            return self.unauthorized(None);
        };
        let checked = self.check(&token, |claims| {
            self.set_claim_headers(request, claims, in_place);
        });
        if let Err(failure) = checked {
            if in_place {
                self.remove_claim_headers(request);
            }
            return self.unauthorized(Some(&failure.description()));
        }
        if self.settings.remove_token
            && let Some(source) = self.settings.sources.get(source)
        {
            remove_token(request, source, &path);
        }
        metrics::counter_add("allowed", 1);
        Decision::Continue
    }
}

weft_sdk::export!(JwtAuth);
