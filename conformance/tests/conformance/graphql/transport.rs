//! GraphQL over HTTP: methods, media types, CSRF, malformed requests, parse and
//! validation errors with locations.

use serde_json::json;

use super::env::*;

const RESPONSE_TYPE: &str = "application/graphql-response+json";

#[tokio::test]
async fn http_rules_and_malformed_requests() {
    let env = Env::start().await;
    let query = r#"{"query":"{ users { id } }"}"#;

    // Accept decides the media type.
    let modern = env.post_with("/graphql", query, &[("accept", RESPONSE_TYPE)]).await;
    assert_eq!(modern.status, 200);
    let legacy = env
        .post_with("/graphql", query, &[("accept", "application/json")])
        .await;
    assert_eq!(legacy.status, 200);
    let refused = env.post_with("/graphql", query, &[("accept", "text/html")]).await;
    assert_eq!(refused.status, 406, "{}", refused.text());

    // Methods: a mutation over GET is 405 with Allow: POST, and reaches no service.
    let mutation = env
        .get(
            "/graphql",
            &[("query", "mutation { createOrder(item: \"x\") { value } }")],
        )
        .await;
    assert_eq!(mutation.status, 405, "{}", mutation.text());
    assert_eq!(mutation.header("allow"), Some("POST"));
    let put = env
        .request("PUT", "/graphql", &[("content-type", "application/json")])
        .await;
    assert_eq!(put.status, 405);
    assert_eq!(put.header("allow"), Some("GET, POST"));

    // CSRF: GET without a preflight header, and simple content types, are refused.
    let bare_get = env.request("GET", "/graphql?query=%7B__typename%7D", &[]).await;
    assert_eq!(bare_get.status, 400);
    assert_eq!(codes(&bare_get), ["CSRF_ERROR"]);
    let form = env
        .post_with("/graphql", query, &[("content-type", "text/plain")])
        .await;
    assert_eq!(form.status, 400);
    assert_eq!(codes(&form), ["CSRF_ERROR"]);
    let preflighted = env
        .post_with(
            "/graphql",
            query,
            &[("content-type", "text/plain"), ("apollo-require-preflight", "1")],
        )
        .await;
    assert_eq!(preflighted.status, 415, "not JSON: unsupported media type");

    // Malformed bodies of every kind.
    for (body, why) in [
        ("{", "truncated JSON"),
        ("", "empty body"),
        ("[]", "an array (batching is off)"),
        ("\"query\"", "a string"),
        (r#"{"query": 1}"#, "a non-string query"),
        (
            r#"{"query": "{ users { id } }", "variables": "x"}"#,
            "variables not an object",
        ),
        (
            r#"{"query": "{ users { id } }", "extensions": []}"#,
            "extensions not an object",
        ),
        (
            r#"{"query": "{ users { id } }", "operationName": 7}"#,
            "operationName not a string",
        ),
        (r#"{}"#, "no query"),
        ("\u{0}\u{1}", "binary"),
    ] {
        let reply = env.post_with("/graphql", body, &[("accept", RESPONSE_TYPE)]).await;
        assert_eq!(reply.status, 400, "{why}: {}", reply.text());
        assert!(reply.json().get("data").is_none(), "{why}");
    }
    let charset = env
        .post_with(
            "/graphql",
            query,
            &[("content-type", "application/json; charset=latin1")],
        )
        .await;
    assert_eq!(charset.status, 415);
}

#[tokio::test]
async fn parse_and_validation_errors_have_locations_and_no_data() {
    let env = Env::start().await;
    // Validation: graphql-response+json answers 400 without data, application/json 200.
    let body = json!({"query": "{\n  users { id nope }\n}"});
    let modern = env.post("/graphql", &body).await;
    assert_eq!(modern.status, 400, "{}", modern.text());
    assert_eq!(
        modern.header("content-type"),
        Some("application/graphql-response+json; charset=utf-8")
    );
    let errors = modern.json();
    assert!(errors.get("data").is_none());
    assert_eq!(errors["errors"][0]["locations"], json!([{"line": 2, "column": 14}]));
    assert_eq!(codes(&modern), ["GRAPHQL_VALIDATION_FAILED"]);
    let legacy = env
        .post_with("/graphql", body.to_string(), &[("accept", "application/json")])
        .await;
    assert_eq!(legacy.status, 200);
    assert_eq!(legacy.header("content-type"), Some("application/json; charset=utf-8"));
    assert!(legacy.json().get("data").is_none());

    // Syntax.
    let syntax = env.post("/graphql", &json!({"query": "{ users { id }"})).await;
    assert_eq!(syntax.status, 400);
    assert_eq!(codes(&syntax), ["GRAPHQL_PARSE_FAILED"]);
    assert!(syntax.json()["errors"][0]["locations"].is_array());

    // Variables of the wrong type are caught by the service (it coerces them); an unknown
    // operation name by the gateway.
    let unknown = env
        .post(
            "/graphql",
            &json!({"query": "query A { users { id } }", "operationName": "B"}),
        )
        .await;
    assert_eq!(unknown.status, 400);
    assert_eq!(codes(&unknown), ["GRAPHQL_UNKNOWN_OPERATION_NAME"]);
    // Several operations need a name.
    let two = env
        .post(
            "/graphql",
            &json!({"query": "query A { users { id } } query B { users { id } }"}),
        )
        .await;
    assert_eq!(two.status, 400);
    let named = env
        .post(
            "/graphql",
            &json!({"query": "query A { users { id } } query B { users { name } }", "operationName": "B"}),
        )
        .await;
    assert_eq!(
        named.json(),
        json!({"data": {"users": [{"name": "Ada"}, {"name": "Grace"}]}})
    );

    // The same valid document twice: the second comes from the cache, same answer.
    let q = json!({"query": "{ user(id: 2) { name } order(id: \"o2\") { id } }"});
    let first = env.post("/graphql", &q).await;
    let second = env.post("/graphql", &q).await;
    assert_eq!(first.text(), second.text());
    assert_eq!(first.json()["data"]["user"]["name"], "Grace");

    // Introspection is off unless enabled.
    let intro = json!({"query": "{ __schema { queryType { name } } }"});
    let off = env.post("/graphql", &intro).await;
    assert_eq!(off.status, 400);
    assert_eq!(codes(&off), ["INTROSPECTION_DISABLED"]);
    let on = env.post("/open", &intro).await;
    assert_eq!(on.status, 200, "{}", on.text());
    assert_eq!(
        on.json(),
        json!({"data": {"__schema": {"queryType": {"name": "Query"}}}})
    );
    // Introspection beside a cluster's field: both answered.
    let mixed = env
        .post(
            "/open",
            &json!({"query": "{ __type(name: \"Order\") { name } users { id } }"}),
        )
        .await;
    assert_eq!(
        mixed.json(),
        json!({"data": {"__type": {"name": "Order"}, "users": [{"id": "1"}, {"id": "2"}]}})
    );
}

#[tokio::test]
async fn batches_when_enabled_up_to_their_size() {
    let env = Env::start().await;
    let batch = json!([
        {"query": "{ user(id: 1) { name } }"},
        {"query": "{ users { id } order(id: \"o2\") { item } }"},
        {"query": "{ nope }"},
    ]);
    let reply = env.post("/open", &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answers = reply.json();
    assert_eq!(answers[0], json!({"data": {"user": {"name": "Ada"}}}));
    assert_eq!(
        answers[1],
        json!({"data": {"users": [{"id": "1"}, {"id": "2"}], "order": {"item": "punch cards"}}})
    );
    assert!(answers[2].get("data").is_none());
    assert_eq!(
        answers[2]["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );

    // One over the size, and batching off on /graphql.
    let four = json!([{"query": "{ users { id } }"}, {"query": "{ users { id } }"}, {"query": "{ users { id } }"}, {"query": "{ users { id } }"}]);
    let over = env.post("/open", &four).await;
    assert_eq!(over.status, 400);
    assert_eq!(codes(&over), ["BATCH_LIMIT_EXCEEDED"]);
    let off = env.post("/graphql", &batch).await;
    assert_eq!(off.status, 400);
    assert_eq!(codes(&off), ["BATCHING_NOT_ENABLED"]);
}

#[tokio::test]
async fn many_distinct_documents_stay_within_the_instance_memory() {
    let env = Env::start().await;
    // ~5 KB each, 300 of them: the document cache evicts by size, so an instance (16 MiB)
    // never runs out of memory however many distinct documents it sees. (Bounded by count
    // alone, the instance ran out of memory at document 163: a 500.)
    for i in 0..300 {
        let fields: Vec<String> = (0..400).map(|j| format!("a{i}x{j}: id")).collect();
        let query = format!("query Q{i} {{ users {{ {} }} }}", fields.join(" "));
        let reply = env.post("/graphql", &json!({ "query": query })).await;
        assert_eq!(reply.status, 200, "document {i}: {}", reply.text());
    }
}

#[tokio::test]
async fn a_repeated_query_parameter_cannot_smuggle_introspection() {
    let env = Env::start().await;
    // The service (graphql-js behind graphql-http) runs the first `query`; the gateway
    // validated the last. Introspection is off on /graphql.
    for first in ["{ __schema { types { name } } }", "{ users { email } }"] {
        let reply = env
            .request(
                "GET",
                &format!("/graphql?query={}&query={}", encode(first), encode("{ users { id } }")),
                &[("apollo-require-preflight", "true"), ("accept", RESPONSE_TYPE)],
            )
            .await;
        assert_eq!(reply.status, 400, "{first}: {}", reply.text());
        assert!(
            !reply.text().contains("__Schema") && !reply.text().contains("ada@"),
            "{}",
            reply.text()
        );
    }
}
