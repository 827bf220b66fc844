//! Config checks and token verification, natively (no host calls). Tokens here are made
//! with `jsonwebtoken` itself; the conformance tests use an independent library.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::config::{Config, Settings};
use crate::verify::{self, Failure};

pub(crate) const SECRET: &str = "0123456789abcdef0123456789abcdef";
const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAk7rUcQj8YIuMs94IL56m
WFrxpnVeRDr7Op3o55J3hrHa2Z3czjP5b6AGLn9jcQsxHe6x9xivGzeVeBo9t4cU
TqGCUfiCKrNVOzSYtI0fF+yX30pclRtxihjrJmd1DMbMTq/0P3UYa35k3F/05jcY
380ov+fAz0w34kRZEvA4rS8HxiLtma7NvhJyLkGTR36yiV2YqI16A3oJb/oBj/dl
hwthlQtkH7vDtHpc9zGjaYNS4chEOiU3hMvxEgaoXWTZDT8soAFW6XSL7env9zzX
WGer5ciba04g6pCYqRetnszHCClJ6tqGuh0rRf7m3eoob0QGhK7Ph/xn5JIefsHC
ZQIDAQAB
-----END PUBLIC KEY-----
";

pub(crate) fn settings(config: serde_json::Value) -> Result<Settings, String> {
    let config: Config = serde_json::from_value(config).map_err(|e| e.to_string())?;
    config.check()
}

pub(crate) fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or_default()
}

pub(crate) fn hs(alg: Algorithm, secret: &[u8], claims: serde_json::Value) -> String {
    encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap_or_default()
}

pub(crate) fn check(s: &Settings, token: &str) -> Result<verify::Claims, Failure> {
    verify_full(s, token).map(|v| v.claims)
}

pub(crate) fn verify_full(s: &Settings, token: &str) -> Result<verify::Verified, Failure> {
    let (alg, kid) = verify::header(token, &s.policy)?;
    verify::verify(token, alg, kid.as_deref(), s.keys.iter(), &s.policy)
}

pub(crate) fn hmac_settings() -> Settings {
    settings(json!({
        "keys": [{ "alg": "HS256", "secret": SECRET }],
        "issuer": "https://idp", "audience": ["api", "other"], "leeway": "5s",
        "required_claims": ["exp", "sub"],
    }))
    .unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn a_good_token_passes_and_each_claim_check_fails() {
    let s = hmac_settings();
    let ok = json!({ "sub": "alice", "iss": "https://idp", "aud": "api", "exp": now() + 60 });
    let claims = check(&s, &hs(Algorithm::HS256, SECRET.as_bytes(), ok.clone())).unwrap_or_default();
    assert_eq!(claims["sub"], "alice");

    let cases = [
        (json!({ "exp": now() - 10 }), "token expired"),
        (json!({ "nbf": now() + 60 }), "token not yet valid"),
        (json!({ "iss": "https://evil" }), "issuer not accepted"),
        (json!({ "aud": "nope" }), "audience not accepted"),
        (json!({ "sub": null }), "missing required claim \"sub\""),
    ];
    for (patch, want) in cases {
        let mut claims = ok.clone();
        for (k, v) in patch.as_object().into_iter().flatten() {
            if v.is_null() {
                claims.as_object_mut().map(|m| m.remove(k));
            } else {
                claims[k] = v.clone();
            }
        }
        let got = check(&s, &hs(Algorithm::HS256, SECRET.as_bytes(), claims));
        assert_eq!(got.map_err(|f| f.description()).err().as_deref(), Some(want));
    }
    // Within the leeway.
    let mut late = ok.clone();
    late["exp"] = json!(now() - 2);
    assert!(check(&s, &hs(Algorithm::HS256, SECRET.as_bytes(), late)).is_ok());
}

#[test]
fn wrong_key_wrong_alg_and_none_are_refused() {
    let s = hmac_settings();
    let claims = json!({ "sub": "a", "iss": "https://idp", "aud": "api", "exp": now() + 60 });
    let other = hs(Algorithm::HS256, b"another-secret-another-secret-xx", claims.clone());
    assert_eq!(check(&s, &other), Err(Failure::Invalid("signature invalid".into())));
    let hs512 = hs(Algorithm::HS512, SECRET.as_bytes(), claims);
    assert!(check(&s, &hs512).unwrap_err().description().contains("not accepted"));
    // alg none: eyJhbGciOiJub25lIn0 = {"alg":"none"}
    let none = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0.";
    assert_eq!(
        check(&s, none),
        Err(Failure::Invalid("algorithm \"none\" is not accepted".into()))
    );
    assert!(check(&s, "not-a-token").is_err());
}

#[test]
fn an_rsa_public_key_is_never_an_hmac_secret() {
    let rsa = settings(json!({ "keys": [{ "alg": "RS256", "pem": RSA_PUBLIC }] })).unwrap_or_else(|e| panic!("{e}"));
    let forged = hs(Algorithm::HS256, RSA_PUBLIC.as_bytes(), json!({ "exp": now() + 60 }));
    assert!(check(&rsa, &forged).is_err());
    // Even when HS256 is explicitly allowed, no key is an HMAC key.
    let both = settings(json!({
        "algorithms": ["RS256", "HS256"],
        "keys": [{ "alg": "RS256", "pem": RSA_PUBLIC }],
    }))
    .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        check(&both, &forged),
        Err(Failure::Invalid("no key for this token".into()))
    );
}

#[test]
fn kid_selects_the_key() {
    let s = settings(json!({ "keys": [
        { "kid": "one", "alg": "HS256", "secret": SECRET },
        { "kid": "two", "alg": "HS256", "secret": "ffffffffffffffffffffffffffffffff" },
    ] }))
    .unwrap_or_else(|e| panic!("{e}"));
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("two".into());
    let claims = json!({ "exp": now() + 60 });
    let token = encode(
        &header,
        &claims,
        &EncodingKey::from_secret(b"ffffffffffffffffffffffffffffffff"),
    )
    .unwrap_or_default();
    assert!(check(&s, &token).is_ok());
    header.kid = Some("three".into());
    let token = encode(&header, &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap_or_default();
    assert_eq!(check(&s, &token), Err(Failure::UnknownKid("three".into())));
}

#[test]
fn bad_configs_are_refused_with_the_reason() {
    let cases = [
        (json!({}), "no keys"),
        (
            json!({ "keys": [{ "alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----" }] }),
            "not a Rsa public key",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "pem": RSA_PUBLIC }] }),
            "takes a `secret`",
        ),
        (
            json!({ "keys": [{ "alg": "RS256", "secret": SECRET }] }),
            "needs a public key",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": "short" }] }),
            "at least 32 bytes",
        ),
        (json!({ "keys": [{ "pem": RSA_PUBLIC }] }), "`alg` is required"),
        (
            json!({ "keys": [{ "alg": "none", "secret": SECRET }] }),
            "unsupported algorithm",
        ),
        (
            json!({ "keys": [{ "alg": "ES256", "pem": RSA_PUBLIC }] }),
            "not a Ec public key",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "leeway": "10" }),
            "leeway",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "token_sources": ["form:x"] }),
            "token_sources",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "anonymous_paths": ["x"] }),
            "anonymous_paths",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "claims_to_headers": { "sub": "x user" } }),
            "claims_to_headers",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "algorithms": ["RS256"] }),
            "none of its algorithms",
        ),
        (
            json!({ "jwks": { "cluster": "idp", "path": "jwks.json" } }),
            "jwks.path",
        ),
        (json!({ "keys": [], "typo": 1 }), "unknown field"),
        (
            json!({ "keys": [{ "jwk": { "kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ" }, "alg": "RS256" }] }),
            "does not fit",
        ),
    ];
    for (config, want) in cases {
        match settings(config.clone()) {
            Ok(_) => panic!("accepted {config}"),
            Err(e) => assert!(e.contains(want), "{config}: {e:?} lacks {want:?}"),
        }
    }
}
