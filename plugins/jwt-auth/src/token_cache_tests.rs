//! The token cache with real tokens and the real verifier; the clock and "is the key still
//! in the key set" are the test's.

use std::cell::Cell;
use std::time::Duration;

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use super::*;
use crate::config::Settings;
use crate::tests::{SECRET, hmac_settings, hs, now, settings, verify_full};

fn good(sub: &str, exp: i64) -> String {
    let claims = json!({ "sub": sub, "iss": "https://idp", "aud": "api", "exp": exp, "role": "r" });
    hs(Algorithm::HS256, SECRET.as_bytes(), claims)
}

fn cache_for(s: &Settings, max_entries: usize, ttl: Option<Duration>) -> TokenCache {
    TokenCache::new(max_entries, ttl, s.policy.leeway_secs, vec!["sub".to_owned()])
}

fn ms(secs: i64) -> u64 {
    u64::try_from(secs).unwrap() * 1000
}

/// Checks `token` at `at_ms` with every key current; returns the outcome and whether the
/// verifier ran.
fn run(c: &mut TokenCache, s: &Settings, token: &str, at_ms: u64) -> (Result<(Claims, Lookup), Failure>, bool) {
    let verified = Cell::new(false);
    let out = c.check(
        token,
        at_ms,
        |_| true,
        || {
            verified.set(true);
            verify_full(s, token)
        },
    );
    (out, verified.get())
}

#[test]
fn a_reused_token_costs_a_lookup_and_keeps_only_forwarded_claims() {
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, None);
    let token = good("alice", now() + 60);
    let (first, ran) = run(&mut c, &s, &token, ms(now()));
    let (claims, lookup) = first.unwrap();
    assert!(ran);
    assert_eq!(
        (lookup, &claims["sub"], &claims["role"]),
        (Lookup::Verified, &json!("alice"), &json!("r"))
    );
    let (second, ran) = run(&mut c, &s, &token, ms(now()));
    let (claims, lookup) = second.unwrap();
    assert!(!ran, "no signature check for a cached token");
    assert_eq!(lookup, Lookup::Hit);
    assert_eq!(claims, json!({ "sub": "alice" }).as_object().cloned().unwrap());
}

#[test]
fn a_cached_token_is_not_served_past_exp_and_leeway() {
    // leeway 5s, as the verifier applies it.
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, None);
    let exp = now() + 60;
    let token = good("alice", exp);
    assert!(run(&mut c, &s, &token, ms(now())).0.is_ok());
    let (at_edge, ran) = run(&mut c, &s, &token, ms(exp + 5) + 999);
    assert_eq!(
        (at_edge.unwrap().1, ran),
        (Lookup::Hit, false),
        "exp + leeway is still valid"
    );
    // One second later the verifier would say "token expired": the cache asks it.
    let expired = c.check(
        &token,
        ms(exp + 6),
        |_| true,
        || Err(Failure::Invalid("token expired".into())),
    );
    assert_eq!(expired, Err(Failure::Invalid("token expired".into())));
    assert_eq!(c.len(), 0, "the stale entry is gone");
}

#[test]
fn a_token_not_yet_valid_by_a_stepped_back_clock_is_not_served() {
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, None);
    let nbf = now() - 1;
    let claims = json!({ "sub": "a", "iss": "https://idp", "aud": "api", "exp": now() + 60, "nbf": nbf });
    let token = hs(Algorithm::HS256, SECRET.as_bytes(), claims);
    assert!(run(&mut c, &s, &token, ms(now())).0.is_ok());
    let (_, ran) = run(&mut c, &s, &token, ms(nbf - 5));
    assert!(!ran, "nbf within leeway");
    let (_, ran) = run(&mut c, &s, &token, ms(nbf - 6));
    assert!(ran);
}

#[test]
fn a_token_whose_key_left_the_key_set_is_verified_again() {
    let s = settings(json!({ "keys": [
        { "kid": "one", "alg": "HS256", "secret": SECRET },
        { "kid": "two", "alg": "HS256", "secret": "ffffffffffffffffffffffffffffffff" },
    ] }))
    .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("two".into());
    let key = EncodingKey::from_secret(b"ffffffffffffffffffffffffffffffff");
    let token = encode(&header, &json!({ "sub": "a", "exp": now() + 60 }), &key).unwrap();
    let mut c = cache_for(&s, 8, None);
    assert!(run(&mut c, &s, &token, ms(now())).0.is_ok());

    let asked = Cell::new(None);
    let gone = c.check(
        &token,
        ms(now()),
        |id| {
            asked.set(Some(id));
            false
        },
        || Err(Failure::UnknownKid("two".into())),
    );
    assert_eq!(asked.get(), Some(KeyId::Inline(1)), "the key that verified it");
    assert_eq!(gone, Err(Failure::UnknownKid("two".into())));
    assert_eq!(c.len(), 0);
}

#[test]
fn a_changed_signature_byte_is_another_entry_and_is_verified() {
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, None);
    let token = good("alice", now() + 60);
    assert!(run(&mut c, &s, &token, ms(now())).0.is_ok());
    let mut bytes = token.clone().into_bytes();
    let last = bytes.len() - 3;
    bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(bytes).unwrap();
    let (out, ran) = run(&mut c, &s, &tampered, ms(now()));
    assert!(ran);
    assert_eq!(out.map(|_| ()), Err(Failure::Invalid("signature invalid".into())));
    assert_eq!(c.len(), 1, "refusals are not cached");
    assert!(!run(&mut c, &s, &token, ms(now())).1, "the real token still hits");
}

#[test]
fn a_token_the_policy_refuses_is_refused_every_time() {
    // A good signature with the wrong audience: the cache must not remember the
    // signature check and skip the policy.
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, None);
    let claims = json!({ "sub": "a", "iss": "https://idp", "aud": "elsewhere", "exp": now() + 60 });
    let token = hs(Algorithm::HS256, SECRET.as_bytes(), claims);
    for _ in 0..3 {
        let (out, ran) = run(&mut c, &s, &token, ms(now()));
        assert!(ran);
        assert_eq!(out.map(|_| ()), Err(Failure::Invalid("audience not accepted".into())));
    }
    assert_eq!(c.len(), 0);
}

#[test]
fn the_cache_never_grows_past_max_entries() {
    let s = hmac_settings();
    let mut c = cache_for(&s, 16, None);
    let tokens: Vec<String> = (0..500).map(|i| good(&format!("user{i}"), now() + 60)).collect();
    for token in &tokens {
        assert!(run(&mut c, &s, token, ms(now())).0.is_ok());
        assert!(c.len() <= 16);
    }
    assert_eq!(c.len(), 16);
    assert!(run(&mut c, &s, &tokens[0], ms(now())).1, "the oldest was evicted");
    assert!(!run(&mut c, &s, &tokens[499], ms(now())).1, "the newest is kept");
}

#[test]
fn ttl_caps_an_entry_below_exp() {
    let s = hmac_settings();
    let mut c = cache_for(&s, 8, Some(Duration::from_secs(1)));
    let token = good("alice", now() + 3600);
    let start = ms(now());
    assert!(run(&mut c, &s, &token, start).0.is_ok());
    assert!(!run(&mut c, &s, &token, start + 999).1);
    assert!(run(&mut c, &s, &token, start + 1000).1, "verified again after ttl");
}

#[test]
fn cache_config_defaults_and_errors() {
    let base = json!({ "keys": [{ "alg": "HS256", "secret": SECRET }] });
    let s = settings(base.clone()).unwrap();
    assert_eq!((s.cache.max_entries, s.cache.ttl), (1024, None));
    let mut off = base.clone();
    off["cache"] = json!({ "max_entries": 0, "ttl": "30s" });
    let s = settings(off).unwrap();
    assert_eq!((s.cache.max_entries, s.cache.ttl), (0, Some(Duration::from_secs(30))));
    for (cache, want) in [
        (json!({ "ttl": "0s" }), "cache.ttl must be more than 0"),
        (json!({ "ttl": "5" }), "cache.ttl"),
        (json!({ "max_entries": 1_000_000 }), "cache.max_entries"),
        (json!({ "size": 10 }), "unknown field"),
    ] {
        let mut config = base.clone();
        config["cache"] = cache.clone();
        let err = settings(config).err().unwrap_or_default();
        assert!(err.contains(want), "{cache}: {err:?}");
    }
}
