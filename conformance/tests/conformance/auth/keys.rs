//! `plugins/api-key` and `plugins/basic-auth`: digests and bcrypt hashes made by Python's
//! hashlib and bcrypt.

use std::time::Instant;

use base64::Engine;
use serde_json::json;
use weft_conformance::*;

use super::*;

#[tokio::test]
async fn api_keys_identify_callers_and_refuse_bad_or_missing_keys() {
    let minted = mint(json!({ "sha256": { "a": "key-of-team-a", "b": "key-of-team-b" } })).await;
    let web = Upstream::echo("web").await;
    let filter = json!({
        "keys": [{ "id": "team-a", "sha256": minted["sha256"]["a"] }, { "id": "team-b", "sha256": minted["sha256"]["b"] }],
        "sources": ["header:x-api-key", "query:api_key"],
        "identity_header": "x-caller",
        "realm": "api",
        "anonymous_paths": ["/health"],
    });
    let weft = Weft::start(&config(
        &web,
        &[],
        &[("keys", plugins::API_KEY, filter)],
        &[("/", &["keys"])],
    ))
    .await;

    let a = call(
        &weft,
        "GET",
        "/x",
        &[("x-api-key", "key-of-team-a"), ("x-caller", "root")],
    )
    .await;
    assert_eq!(a.status, 200);
    assert_eq!(seen_header(&a.json(), "x-caller"), Some("team-a"));
    assert_eq!(
        seen_header(&a.json(), "x-api-key"),
        None,
        "the key does not go upstream"
    );
    let b = call(&weft, "GET", "/x?api_key=key-of-team-b&y=2", &[]).await;
    assert_eq!(b.status, 200);
    assert_eq!(seen_header(&b.json(), "x-caller"), Some("team-b"));
    assert_eq!(b.json()["uri"], "/x?y=2");

    for headers in [
        vec![("x-api-key", "key-of-team-c")],
        vec![("x-api-key", "key-of-team-")],
        vec![],
    ] {
        let refused = call(&weft, "GET", "/x", &headers).await;
        assert_eq!(refused.status, 401, "{headers:?}");
        assert_eq!(refused.header("www-authenticate"), Some("ApiKey realm=\"api\""));
    }
    let health = call(&weft, "GET", "/health", &[("x-caller", "root")]).await;
    assert_eq!(health.status, 200);
    assert_eq!(
        seen_header(&health.json(), "x-caller"),
        None,
        "spoofed identity removed"
    );
    assert_eq!(web.hits(), 3);
}

fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

#[tokio::test]
async fn basic_auth_checks_bcrypt_hashes_and_caches_good_credentials() {
    // Cost 10 takes ~110ms in the guest (cost 8 ~30ms): more than the default 50ms CPU
    // budget, so this filter gets the budget docs/plugins.md recommends for bcrypt.
    let minted = mint(json!({ "bcrypt": { "alice": ["correct horse", 10], "bob": ["battery staple", 8] } })).await;
    let web = Upstream::echo("web").await;
    let filter = json!({
        "users": [{ "user": "alice", "bcrypt": minted["bcrypt"]["alice"] }, { "user": "bob", "bcrypt": minted["bcrypt"]["bob"] }],
        "realm": "admin area",
        "methods": ["POST"],
    });
    let text = config(
        &web,
        &[],
        &[("basic", plugins::BASIC_AUTH, filter)],
        &[("/", &["basic"])],
    );
    // bcrypt is slow on purpose, and the budget's epochs count wall time: 500 ms was
    // exceeded with eight tests at once on two cores.
    let weft = Weft::start(&with_cpu_limit(text, "basic", "5s")).await;

    let started = Instant::now();
    let ok = call(
        &weft,
        "POST",
        "/x",
        &[("authorization", &basic("alice", "correct horse"))],
    )
    .await;
    assert_eq!(ok.status, 200, "{}\n{}", ok.text(), weft.log());
    assert_eq!(seen_header(&ok.json(), "x-user"), Some("alice"));
    assert_eq!(seen_header(&ok.json(), "authorization"), None);
    let first = started.elapsed();
    let bob = call(
        &weft,
        "POST",
        "/x",
        &[("authorization", &basic("bob", "battery staple"))],
    )
    .await;
    assert_eq!(seen_header(&bob.json(), "x-user"), Some("bob"));

    for auth in [
        basic("alice", "wrong"),
        basic("carol", "correct horse"),
        basic("bob", "correct horse"),
        "Bearer x".to_owned(),
    ] {
        let refused = call(&weft, "POST", "/x", &[("authorization", &auth)]).await;
        assert_eq!(refused.status, 401, "{auth}");
        assert_eq!(
            refused.header("www-authenticate"),
            Some("Basic realm=\"admin area\", charset=\"UTF-8\"")
        );
    }
    assert_eq!(call(&weft, "POST", "/x", &[]).await.status, 401);
    assert_eq!(
        call(&weft, "GET", "/x", &[]).await.status,
        200,
        "only POST is protected"
    );
    // Repeated good credentials hit the instance's cache (no bcrypt): not slower.
    let started = Instant::now();
    for _ in 0..5 {
        let again = call(
            &weft,
            "POST",
            "/x",
            &[("authorization", &basic("alice", "correct horse"))],
        )
        .await;
        assert_eq!(again.status, 200);
    }
    let cached = started.elapsed();
    assert!(
        cached < first,
        "five cached checks took {cached:?}, one bcrypt check {first:?}"
    );
}
