//! Persisted queries: Apollo's APQ protocol (register, hit, miss, mismatch, GET form) in
//! the shared KV store, and the safelist mode.

use serde_json::{Value, json};

use super::env::*;

fn pq(hash: &str) -> Value {
    json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } })
}

#[tokio::test]
async fn automatic_persisted_queries() {
    let env = Env::start().await;
    let query = "{ user(id: 2) { name } orders { id } }";
    let hash = sha256_hex(query);

    // Miss: the client is told to send the text.
    let miss = env.post("/graphql", &json!({ "extensions": pq(&hash) })).await;
    assert_eq!(codes(&miss), ["PERSISTED_QUERY_NOT_FOUND"]);
    assert_eq!(miss.json()["errors"][0]["message"], "PersistedQueryNotFound");
    assert!(miss.json().get("data").is_none());

    // A wrong hash for the text: 400, not registered.
    let wrong = sha256_hex("{ users { id } }");
    let mismatch = env
        .post("/graphql", &json!({ "query": query, "extensions": pq(&wrong) }))
        .await;
    assert_eq!(mismatch.status, 400);
    assert_eq!(codes(&mismatch), ["PERSISTED_QUERY_HASH_MISMATCH"]);
    let still = env.post("/graphql", &json!({ "extensions": pq(&wrong) })).await;
    assert_eq!(codes(&still), ["PERSISTED_QUERY_NOT_FOUND"]);

    // Register (text and hash), then the hash alone runs it: by POST and by GET.
    let expected = json!({"data": {"user": {"name": "Grace"}, "orders": [{"id": "o1"}, {"id": "o2"}]}});
    let register = env
        .post("/graphql", &json!({ "query": query, "extensions": pq(&hash) }))
        .await;
    assert_eq!(register.json(), expected);
    let hit = env.post("/graphql", &json!({ "extensions": pq(&hash) })).await;
    assert_eq!(hit.json(), expected, "{}", hit.text());
    let get = env.get("/graphql", &[("extensions", &pq(&hash).to_string())]).await;
    assert_eq!(get.json(), expected, "{}", get.text());

    // One cluster by hash: the gateway sends the stored text (the service knows no hashes).
    let single = "{ users { name } }";
    let single_hash = sha256_hex(single);
    env.post("/graphql", &json!({ "query": single, "extensions": pq(&single_hash) }))
        .await;
    let hit = env.post("/graphql", &json!({ "extensions": pq(&single_hash) })).await;
    assert_eq!(
        hit.json(),
        json!({"data": {"users": [{"name": "Ada"}, {"name": "Grace"}]}})
    );

    // An invalid document is not registered.
    let bad = "{ nope }";
    let bad_hash = sha256_hex(bad);
    env.post("/graphql", &json!({ "query": bad, "extensions": pq(&bad_hash) }))
        .await;
    let after = env.post("/graphql", &json!({ "extensions": pq(&bad_hash) })).await;
    assert_eq!(codes(&after), ["PERSISTED_QUERY_NOT_FOUND"]);

    // APQ is off on the other routes.
    let off = env.post("/open", &json!({ "extensions": pq(&hash) })).await;
    assert_eq!(codes(&off), ["PERSISTED_QUERY_NOT_SUPPORTED"]);
}

#[tokio::test]
async fn safelist_runs_only_registered_documents() {
    let env = Env::start().await;
    let listed = env.post("/safe", &json!({ "query": SAFE_QUERY })).await;
    assert_eq!(listed.json(), json!({"data": {"users": [{"id": "1"}, {"id": "2"}]}}));
    let by_hash = env
        .post("/safe", &json!({ "extensions": pq(&sha256_hex(SAFE_QUERY)) }))
        .await;
    assert_eq!(by_hash.json(), listed.json(), "{}", by_hash.text());
    let other = env.post("/safe", &json!({ "query": "{ users { name } }" })).await;
    assert_eq!(other.status, 400);
    assert_eq!(codes(&other), ["QUERY_NOT_IN_SAFELIST"]);
    let unknown = env
        .post("/safe", &json!({ "extensions": pq(&sha256_hex("{ users { name } }")) }))
        .await;
    assert_eq!(codes(&unknown), ["PERSISTED_QUERY_NOT_IN_LIST"]);
    // No registration: sending text and hash does not add it.
    let text = "{ users { email } }";
    let attempt = env
        .post("/safe", &json!({ "query": text, "extensions": pq(&sha256_hex(text)) }))
        .await;
    assert_eq!(codes(&attempt), ["QUERY_NOT_IN_SAFELIST"]);
}
