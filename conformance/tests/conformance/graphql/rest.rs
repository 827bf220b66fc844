//! REST-backed fields: `Query.product` from `GET /products/{id}` (a `result_root`, a
//! setter, a header template), `Product.reviews` nested from `GET /reviews?product=`,
//! beside fields of a GraphQL cluster, executed by apollo-compiler's engine.

use serde_json::{Value, json};

use super::env::*;

#[tokio::test]
async fn rest_backed_fields_nested_and_beside_graphql_ones() {
    let env = Env::start().await;
    let query = r#"query P($id: ID!) {
        p: product(id: $id) { __typename title label price seenAuth top: reviews { stars } ...R }
        users { id }
      }
      fragment R on Product { reviews { id } }"#;
    let reply = env
        .post_with(
            "/graphql",
            json!({ "query": query, "variables": {"id": "p1"} }).to_string(),
            &[("authorization", "Bearer t0k")],
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"data": {
            "p": {
                "__typename": "Product", "title": "Loom", "label": "Loom #p1", "price": 1200,
                "seenAuth": "Bearer t0k",
                "top": [{"stars": 5}, {"stars": 3}],
                "reviews": [{"id": "r1"}, {"id": "r2"}],
            },
            "users": [{"id": "1"}, {"id": "2"}],
        }})
    );
    // Keys in the client's order, nested too.
    let text = reply.text();
    assert!(text.find("\"top\"") < text.find("\"reviews\"") && text.find("\"p\"") < text.find("\"users\""));

    // An unknown product: the service answers 404, the field is null with an error at its path.
    let missing = env
        .post(
            "/graphql",
            &json!({ "query": "{ product(id: \"nope\") { title } users { id } }" }),
        )
        .await;
    let body = missing.json();
    assert_eq!(body["data"]["product"], Value::Null, "{body}");
    assert_eq!(body["data"]["users"][0]["id"], "1");
    assert_eq!(body["errors"][0]["path"], json!(["product"]));
    assert!(
        body["errors"][0]["message"].as_str().is_some_and(|m| m.contains("404")),
        "{body}"
    );
}

/// Requests the REST service has served so far.
async fn calls(env: &Env) -> u64 {
    let reply = env.request("GET", "/calls", &[]).await;
    reply.json()["calls"].as_u64().expect("a count")
}

#[tokio::test]
async fn a_rest_argument_cannot_move_the_path() {
    let env = Env::start().await;
    // `/products/{$args.id}` with `..` would be `/products/..`, which the service's router
    // reads as `/`; with `../reviews`, `.`, `%2e%2e`, or nothing, as bad.
    for id in ["..", ".", "../reviews", "%2e%2e", "p1?x", "p1#x", ""] {
        let before = calls(&env).await;
        let reply = env
            .post(
                "/graphql",
                &json!({"query": "query($id: ID!) { product(id: $id) { id } }", "variables": {"id": id}}),
            )
            .await;
        let body = reply.json();
        assert_eq!(body["data"]["product"], Value::Null, "{id:?}: {body}");
        assert_eq!(body["errors"][0]["path"], json!(["product"]), "{id:?}: {body}");
        assert!(
            body["errors"][0]["message"]
                .as_str()
                .is_some_and(|m| m.contains("not allowed in a path segment")),
            "{id:?}: {body}"
        );
        assert_eq!(calls(&env).await, before, "{id:?}: no call is made");
    }
}

#[tokio::test]
async fn rest_calls_are_deduplicated_and_capped_per_operation() {
    let env = Env::start().await;
    // Three aliases of one product: one call.
    let before = calls(&env).await;
    let reply = env
        .post(
            "/graphql",
            &json!({"query": "{ a: product(id: \"p1\") { id } b: product(id: \"p1\") { title } c: product(id: \"p1\") { id } }"}),
        )
        .await;
    assert_eq!(
        reply.json(),
        json!({"data": {"a": {"id": "p1"}, "b": {"title": "Loom"}, "c": {"id": "p1"}}})
    );
    assert_eq!(calls(&env).await - before, 1);
    // Six different calls with `rest_max_calls = 4`: four are made, the rest are errors.
    let before = calls(&env).await;
    let query = (1..=6)
        .map(|i| format!("p{i}: product(id: \"p{i}\") {{ id }}"))
        .collect::<Vec<_>>()
        .join(" ");
    let reply = env
        .post("/graphql", &json!({ "query": format!("{{ {query} }}") }))
        .await;
    let body = reply.json();
    assert_eq!(calls(&env).await - before, 4, "{body}");
    assert_eq!(body["data"]["p1"], json!({"id": "p1"}));
    assert_eq!(body["data"]["p6"], Value::Null);
    let capped = body["errors"]
        .as_array()
        .expect("errors")
        .iter()
        .filter(|e| e["message"] == "resolver error: more than 4 REST calls in one operation")
        .count();
    assert_eq!(capped, 2, "{body}");
}
