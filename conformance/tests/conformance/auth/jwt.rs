//! `plugins/jwt-auth` with inline keys: every algorithm family, every refusal, token
//! sources, forwarded claims, anonymous paths and methods, config errors.

use serde_json::{Value, json};
use weft_conformance::*;

use super::*;

const SECRET: &str = "conformance-secret-conformance-secret";
const ISS: &str = "https://idp.test";

fn good_claims() -> Value {
    json!({ "sub": "alice", "iss": ISS, "aud": "weft", "exp": now() + 300, "roles": ["a", "b"] })
}

/// `good_claims` with some fields replaced (`null` removes one).
fn claims_with(patch: Value) -> Value {
    let mut claims = good_claims();
    for (k, v) in patch.as_object().expect("object") {
        match v {
            Value::Null => {
                claims.as_object_mut().expect("object").remove(k);
            }
            v => claims[k] = v.clone(),
        }
    }
    claims
}

fn job(alg: &str, key: Value, claims: Value) -> Value {
    json!({ "alg": alg, "key": key, "claims": claims })
}

fn secret(s: &str) -> Value {
    json!({ "secret": s })
}

#[tokio::test]
async fn jwt_accepts_every_algorithm_family_from_pem_jwk_and_secret() {
    let algs = [
        ("HS256", secret(SECRET)),
        ("HS384", secret(SECRET)),
        ("HS512", secret(SECRET)),
        ("RS256", json!("rsa")),
        ("RS384", json!("rsa")),
        ("RS512", json!("rsa")),
        ("PS256", json!("rsa")),
        ("ES256", json!("ec256")),
        ("ES384", json!("ec384")),
        ("EdDSA", json!("ed")),
    ];
    let mut tokens = serde_json::Map::new();
    for (alg, key) in &algs {
        tokens.insert(alg.to_string(), job(alg, key.clone(), good_claims()));
    }
    // Configured for RS256 only: an RS384 token must not pass on the same key.
    tokens.insert("PS384".into(), job("PS384", json!("rsa"), good_claims()));
    let minted = mint(json!({ "tokens": tokens })).await;
    let keys = &minted["keys"];
    let pem = |k: &str| keys[k]["public_pem"].clone();
    let config_keys = json!([
        { "alg": "HS256", "secret": SECRET },
        { "alg": "HS384", "secret": SECRET },
        { "alg": "HS512", "secret": SECRET },
        { "alg": "RS256", "pem": pem("rsa") },
        { "alg": "RS384", "pem": pem("rsa") },
        { "alg": "RS512", "jwk": keys["rsa"]["jwk"] },
        { "alg": "PS256", "pem": pem("rsa") },
        { "alg": "ES256", "pem": pem("ec256") },
        { "jwk": keys["ec384"]["jwk"] },
        { "alg": "EdDSA", "pem": pem("ed") },
    ]);
    let web = Upstream::echo("web").await;
    let filter = json!({ "keys": config_keys, "issuer": ISS, "audience": "weft" });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[("jwt", plugins::JWT_AUTH, filter)],
        &[("/", &["jwt"])],
    ))
    .await;

    for (alg, _) in &algs {
        let reply = bearer(&weft, "/x", minted["tokens"][alg].as_str().expect("token")).await;
        assert_eq!(reply.status, 200, "{alg}: {:?}", reply.header("www-authenticate"));
    }
    let ps384 = bearer(&weft, "/x", minted["tokens"]["PS384"].as_str().expect("token")).await;
    assert_eq!(refusal(&ps384), "algorithm 'PS384' is not accepted");
    assert_eq!(web.hits(), algs.len());
}

#[tokio::test]
async fn jwt_refuses_bad_tokens_with_a_bearer_challenge() {
    // The proxy first: the tokens' times are relative to when they are minted, and a
    // loaded machine can take longer to start it than the 20 s the leeway case has.
    let web = Upstream::echo("web").await;
    let filter = json!({
        "keys": [{ "alg": "HS256", "secret": SECRET }],
        "issuer": [ISS, "https://other-idp.test"], "audience": "weft", "leeway": "30s", "realm": "test",
    });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[("jwt", plugins::JWT_AUTH, filter)],
        &[("/", &["jwt"])],
    ))
    .await;

    let cases: Vec<(&str, Value, &str)> = vec![
        ("expired", claims_with(json!({ "exp": now() - 120 })), "token expired"),
        (
            "not_yet",
            claims_with(json!({ "nbf": now() + 120 })),
            "token not yet valid",
        ),
        (
            "issuer",
            claims_with(json!({ "iss": "https://evil.test" })),
            "issuer not accepted",
        ),
        (
            "audience",
            claims_with(json!({ "aud": "other" })),
            "audience not accepted",
        ),
        (
            "no_exp",
            claims_with(json!({ "exp": null })),
            "missing required claim 'exp'",
        ),
    ];
    let mut tokens = serde_json::Map::new();
    for (name, claims, _) in &cases {
        tokens.insert(name.to_string(), job("HS256", secret(SECRET), claims.clone()));
    }
    tokens.insert("good".into(), job("HS256", secret(SECRET), good_claims()));
    // Within the 30s leeway: still good.
    tokens.insert(
        "leeway".into(),
        job("HS256", secret(SECRET), claims_with(json!({ "exp": now() - 10 }))),
    );
    tokens.insert(
        "wrong_key".into(),
        job("HS256", secret("another-secret-another-secret-xxxxx"), good_claims()),
    );
    tokens.insert("none".into(), json!({ "alg": "none", "claims": good_claims() }));
    tokens.insert(
        "admin".into(),
        job("HS256", secret(SECRET), claims_with(json!({ "sub": "admin" }))),
    );
    let minted = mint(json!({ "tokens": tokens })).await;
    let token = |n: &str| minted["tokens"][n].as_str().expect("token").to_owned();

    assert_eq!(bearer(&weft, "/x", &token("good")).await.status, 200);
    assert_eq!(bearer(&weft, "/x", &token("leeway")).await.status, 200);
    for (name, _, want) in &cases {
        assert_eq!(refusal(&bearer(&weft, "/x", &token(name)).await), *want, "{name}");
    }
    assert_eq!(
        refusal(&bearer(&weft, "/x", &token("wrong_key")).await),
        "signature invalid"
    );
    assert_eq!(
        refusal(&bearer(&weft, "/x", &token("none")).await),
        "algorithm 'none' is not accepted"
    );

    // Tampered: alice's signature on admin's claims, and a flipped signature byte.
    let (good, admin) = (token("good"), token("admin"));
    let parts: Vec<&str> = good.split('.').collect();
    let swapped = format!(
        "{}.{}.{}",
        parts[0],
        admin.split('.').nth(1).expect("payload"),
        parts[2]
    );
    assert_eq!(refusal(&bearer(&weft, "/x", &swapped).await), "signature invalid");
    let mut sig = parts[2].as_bytes().to_vec();
    sig[5] = if sig[5] == b'A' { b'B' } else { b'A' };
    let flipped = format!("{}.{}.{}", parts[0], parts[1], String::from_utf8(sig).expect("ascii"));
    assert_eq!(refusal(&bearer(&weft, "/x", &flipped).await), "signature invalid");
    assert_eq!(refusal(&bearer(&weft, "/x", "not.a-token").await), "malformed token");

    // No token at all: the bare challenge (RFC 6750 3.1).
    let missing = call(&weft, "GET", "/x", &[]).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("www-authenticate"), Some("Bearer realm=\"test\""));
    let basic = call(&weft, "GET", "/x", &[("authorization", "Basic YTpi")]).await;
    assert_eq!(basic.header("www-authenticate"), Some("Bearer realm=\"test\""));
    assert_eq!(web.hits(), 2, "only the good tokens reached the upstream");
}

#[tokio::test]
async fn jwt_refuses_an_hs256_token_signed_with_the_rsa_public_key() {
    let claims = good_claims();
    let minted = mint(json!({ "tokens": {
        "forged": { "alg": "HS256-with-public-pem", "key": "rsa", "claims": claims },
        "real": job("RS256", json!("rsa"), claims),
    } }))
    .await;
    let pem = minted["keys"]["rsa"]["public_pem"].clone();
    let web = Upstream::echo("web").await;
    let rsa_only = json!({ "keys": [{ "alg": "RS256", "pem": pem }] });
    // Even with HS256 explicitly allowed, an RSA key never acts as an HMAC secret.
    let hs_allowed = json!({ "keys": [{ "alg": "RS256", "pem": pem }], "algorithms": ["RS256", "HS256"] });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[
            ("rsa", plugins::JWT_AUTH, rsa_only),
            ("hs", plugins::JWT_AUTH, hs_allowed),
        ],
        &[("/rsa", &["rsa"]), ("/hs", &["hs"])],
    ))
    .await;
    let (forged, real) = (
        minted["tokens"]["forged"].as_str().expect("t"),
        minted["tokens"]["real"].as_str().expect("t"),
    );
    assert_eq!(bearer(&weft, "/rsa", real).await.status, 200);
    assert_eq!(bearer(&weft, "/hs", real).await.status, 200);
    assert_eq!(
        refusal(&bearer(&weft, "/rsa", forged).await),
        "algorithm 'HS256' is not accepted"
    );
    assert_eq!(refusal(&bearer(&weft, "/hs", forged).await), "no key for this token");
    assert_eq!(web.hits(), 2);
}

#[tokio::test]
async fn jwt_finds_tokens_forwards_claims_and_honours_anonymous_paths_and_methods() {
    let minted = mint(json!({ "tokens": { "t": job("HS256", secret(SECRET), good_claims()) } })).await;
    let token = minted["tokens"]["t"].as_str().expect("token");
    let web = Upstream::echo("web").await;
    let filter = json!({
        "keys": [{ "alg": "HS256", "secret": SECRET }],
        "token_sources": ["bearer", "header:x-token", "cookie:jwt", "query:access_token"],
        "claims_to_headers": { "sub": "x-user", "roles": "x-roles", "missing": "x-missing" },
        "remove_token": true,
        "anonymous_paths": ["/app/public"],
    });
    let writes = json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "methods": ["POST", "DELETE"] });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[
            ("jwt", plugins::JWT_AUTH, filter),
            ("writes", plugins::JWT_AUTH, writes),
        ],
        &[("/app", &["jwt"]), ("/writes", &["writes"])],
    ))
    .await;

    let via_bearer = bearer(&weft, "/app/a", token).await;
    assert_eq!(via_bearer.status, 200);
    let seen = via_bearer.json();
    assert_eq!(seen_header(&seen, "x-user"), Some("alice"));
    assert_eq!(seen_header(&seen, "x-roles"), Some(r#"["a","b"]"#));
    assert_eq!(seen_header(&seen, "authorization"), None, "remove_token strips it");

    let via_header = call(&weft, "GET", "/app/b", &[("x-token", token)]).await;
    assert_eq!(via_header.status, 200);
    assert_eq!(seen_header(&via_header.json(), "x-token"), None);

    let cookie = format!("theme=dark; jwt={token}");
    let via_cookie = call(&weft, "GET", "/app/c", &[("cookie", &cookie)]).await;
    assert_eq!(via_cookie.status, 200);
    assert_eq!(seen_header(&via_cookie.json(), "cookie"), Some("theme=dark"));

    let via_query = call(&weft, "GET", &format!("/app/d?x=1&access_token={token}"), &[]).await;
    assert_eq!(via_query.status, 200);
    assert_eq!(via_query.json()["uri"], "/app/d?x=1");
    assert_eq!(seen_header(&via_query.json(), "x-user"), Some("alice"));

    // A client cannot claim an identity: its own claim headers never reach upstream.
    let spoof = call(
        &weft,
        "GET",
        "/app/public/page",
        &[("x-user", "root"), ("x-missing", "1")],
    )
    .await;
    assert_eq!(spoof.status, 200, "anonymous path");
    assert_eq!(seen_header(&spoof.json(), "x-user"), None);
    assert_eq!(seen_header(&spoof.json(), "x-missing"), None);
    let spoof = call(
        &weft,
        "GET",
        "/app/e",
        &[("x-user", "root"), ("authorization", &format!("Bearer {token}"))],
    )
    .await;
    assert_eq!(seen_header(&spoof.json(), "x-user"), Some("alice"));

    assert_eq!(call(&weft, "GET", "/app/publicity", &[]).await.status, 401);
    assert_eq!(call(&weft, "GET", "/app/public/%2e%2e/secret", &[]).await.status, 401);
    assert_eq!(call(&weft, "GET", "/app", &[]).await.status, 401);

    assert_eq!(
        call(&weft, "GET", "/writes/x", &[]).await.status,
        200,
        "GET is not protected"
    );
    assert_eq!(call(&weft, "POST", "/writes/x", &[]).await.status, 401);
    let auth = format!("Bearer {token}");
    assert_eq!(
        call(&weft, "DELETE", "/writes/x", &[("authorization", &auth)])
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn jwt_bad_configs_are_refused_at_load_with_the_reason() {
    let web = Upstream::echo("web").await;
    let cases = [
        (
            json!({ "keys": [{ "alg": "RS256", "pem": "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----\n" }] }),
            "not a Rsa public key in PEM",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": "short" }] }),
            "at least 32 bytes",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "leeway": 30 }),
            "invalid config",
        ),
        (
            json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "isuser": "x" }),
            "unknown field `isuser`",
        ),
    ];
    for (filter, want) in cases {
        let text = config(
            &web,
            &[],
            &[("jwt", plugins::JWT_AUTH, filter.clone())],
            &[("/", &["jwt"])],
        );
        let (ok, out) = weft_check(&text, &[]);
        assert!(!ok && out.contains(want), "{filter}: {out}");
    }
}

#[tokio::test]
async fn jwt_caches_a_reused_token_until_it_expires_and_per_filter_policy() {
    let web = Upstream::echo("web").await;
    let cached = json!({
        "keys": [{ "alg": "HS256", "secret": SECRET }], "audience": "weft", "leeway": "0s",
        "claims_to_headers": { "sub": "x-user" },
    });
    // Another filter, another policy: the first filter's cache must not vouch for it.
    let other_audience = json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "audience": "billing" });
    let uncached = json!({ "keys": [{ "alg": "HS256", "secret": SECRET }], "cache": { "max_entries": 0 } });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[
            ("jwt", plugins::JWT_AUTH, cached),
            ("billing", plugins::JWT_AUTH, other_audience),
            ("nocache", plugins::JWT_AUTH, uncached),
        ],
        &[("/a", &["jwt"]), ("/billing", &["billing"]), ("/nocache", &["nocache"])],
    ))
    .await;
    // Leeway 0 so the short-lived token really expires within the test (8 s: minting
    // and twelve requests must fit before it, on a loaded machine too).
    let exp = now() + 8;
    let claims = json!({ "sub": "alice", "iss": ISS, "aud": "weft", "exp": exp });
    let minted = mint(json!({ "tokens": { "short": job("HS256", secret(SECRET), claims) } })).await;
    let token = minted["tokens"]["short"].as_str().expect("token");

    for _ in 0..4 {
        let reply = bearer(&weft, "/a", token).await;
        assert_eq!(reply.status, 200, "{:?}", reply.header("www-authenticate"));
        assert_eq!(
            seen_header(&reply.json(), "x-user"),
            Some("alice"),
            "claims of a cached token"
        );
        assert_eq!(
            refusal(&bearer(&weft, "/billing", token).await),
            "audience not accepted"
        );
        assert_eq!(bearer(&weft, "/nocache", token).await.status, 200);
    }
    let hits = |f: &'static str| {
        let weft = &weft;
        async move {
            weft.metric(&format!(
                r#"weft_filter_events_total{{filter="{f}",name="token_cache_hits"}}"#
            ))
            .await
        }
    };
    assert!(hits("jwt").await >= 3.0, "served from the cache: {}", hits("jwt").await);
    assert_eq!(hits("billing").await, 0.0, "refused tokens are not cached");
    assert_eq!(hits("nocache").await, 0.0);

    // Past exp: refused although the entry is in the cache.
    let wait = (exp + 1 - now()).max(0) as u64 * 1000 + 100;
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    for _ in 0..2 {
        assert_eq!(refusal(&bearer(&weft, "/a", token).await), "token expired");
    }
    assert_eq!(web.hits(), 8);
}
