//! `plugins/jwt-auth` with a JWKS served by a real upstream: fetched once and cached,
//! key rotation picked up through a refetch on an unknown `kid`, refetches rate-limited,
//! cached tokens of a rotated-out key refused.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use weft_conformance::*;

use super::*;

fn with_kid(jwk: &Value, kid: &str) -> Value {
    let mut jwk = jwk.clone();
    jwk["kid"] = json!(kid);
    jwk
}

#[tokio::test]
async fn jwt_fetches_caches_and_rotates_a_jwks() {
    let claims = json!({ "sub": "bob", "iss": "https://idp.test", "exp": now() + 300 });
    let job = |alg: &str, key: &str, kid: &str| json!({ "alg": alg, "key": key, "claims": claims, "headers": { "kid": kid } });
    let minted = mint(json!({ "tokens": {
        "k1": job("RS256", "rsa", "k1"),
        "e1": job("ES256", "ec256", "e1"),
        "k2": job("RS256", "rsa2", "k2"),
        "k2_wrong_key": job("RS256", "rsa", "k2"),
        "bogus": job("RS256", "rsa", "bogus"),
    } }))
    .await;
    let keys = &minted["keys"];
    let token = |n: &str| minted["tokens"][n].as_str().expect("token").to_owned();

    // The identity provider: serves whatever document the test puts in `jwks`.
    let first = json!({ "keys": [
        with_kid(&keys["rsa"]["jwk"], "k1"),
        with_kid(&keys["ec256"]["jwk"], "e1"),
        // Ignored: an encryption key and a symmetric one have no place here.
        { "kty": "oct", "kid": "sym", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXNlY3JldA" },
    ] });
    let jwks = Arc::new(Mutex::new(first.to_string()));
    let served = jwks.clone();
    let idp = Upstream::start(move |req| {
        let body = served.lock().expect("lock").clone();
        async move {
            assert_eq!(req.uri().path(), "/.well-known/jwks.json");
            http::Response::builder()
                .header("content-type", "application/json")
                .body(full(body))
                .expect("response")
        }
    })
    .await;

    let web = Upstream::echo("web").await;
    let filter = json!({
        "jwks": { "cluster": "idp", "path": "/.well-known/jwks.json", "refresh": "10m", "min_refetch": "1s" },
        "issuer": "https://idp.test",
        "claims_to_headers": { "sub": "x-user" },
    });
    let weft = Weft::start(&config(
        &web,
        &[("idp", idp.addr)],
        &[("jwt", plugins::JWT_AUTH, filter)],
        &[("/", &["jwt"])],
    ))
    .await;

    for _ in 0..3 {
        let reply = bearer(&weft, "/a", &token("k1")).await;
        assert_eq!(
            reply.status,
            200,
            "{:?}\n{}",
            reply.header("www-authenticate"),
            weft.log()
        );
        assert_eq!(seen_header(&reply.json(), "x-user"), Some("bob"));
    }
    assert_eq!(
        bearer(&weft, "/a", &token("e1")).await.status,
        200,
        "ES256 key from the JWKS"
    );
    assert_eq!(idp.hits(), 1, "the JWKS is fetched once and cached");
    let cache_hits = r#"weft_filter_events_total{filter="jwt",name="token_cache_hits"}"#;
    assert!(
        weft.metric(cache_hits).await >= 2.0,
        "k1 is served from the token cache"
    );

    // Rotation: the provider now publishes k2 only.
    *jwks.lock().expect("lock") = json!({ "keys": [with_kid(&keys["rsa2"]["jwk"], "k2")] }).to_string();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let rotated = bearer(&weft, "/a", &token("k2")).await;
    assert_eq!(rotated.status, 200, "{:?}", rotated.header("www-authenticate"));
    assert_eq!(idp.hits(), 2, "one refetch for the new kid");
    assert_eq!(bearer(&weft, "/a", &token("k2")).await.status, 200);
    assert_eq!(
        refusal(&bearer(&weft, "/a", &token("k2_wrong_key")).await),
        "signature invalid"
    );

    // A flood of unknown kids costs at most one refetch per min_refetch.
    for _ in 0..5 {
        assert_eq!(
            refusal(&bearer(&weft, "/a", &token("bogus")).await),
            "unknown key id 'bogus'"
        );
    }
    assert!(idp.hits() <= 3, "refetches are rate-limited: {} fetches", idp.hits());
    // The rotated-out key is gone, and with it the cached k1 token.
    let hits = weft.metric(cache_hits).await;
    assert_eq!(refusal(&bearer(&weft, "/a", &token("k1")).await), "unknown key id 'k1'");
    assert_eq!(
        weft.metric(cache_hits).await,
        hits,
        "no cache hit for the rotated-out key"
    );
}

#[tokio::test]
async fn jwt_without_reachable_keys_refuses() {
    // A cluster where nothing listens: no keys at all, so nothing is accepted.
    let dead = dead_addr();
    let minted = mint(json!({ "tokens": { "t": {
        "alg": "RS256", "key": "rsa", "claims": { "exp": now() + 300 }, "headers": { "kid": "k1" } } } }))
    .await;
    let web = Upstream::echo("web").await;
    let filter = json!({ "jwks": { "cluster": "idp", "path": "/jwks", "timeout": "300ms" } });
    let weft = Weft::start(&config(
        &web,
        &[("idp", dead)],
        &[("jwt", plugins::JWT_AUTH, filter)],
        &[("/", &["jwt"])],
    ))
    .await;
    let reply = bearer(&weft, "/a", minted["tokens"]["t"].as_str().expect("token")).await;
    assert_eq!(reply.status, 401);
    assert_eq!(web.hits(), 0);
    assert!(weft.log().contains("JWKS fetch failed"), "{}", weft.log());
}
