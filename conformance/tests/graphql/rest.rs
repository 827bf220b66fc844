//! REST-backed fields: `Query.product` from `GET /products/{id}` (a `result_root`, a
//! setter, a header template), `Product.reviews` nested from `GET /reviews?product=`,
//! beside fields of a GraphQL cluster, executed by apollo-compiler's engine.

use serde_json::{Value, json};

use crate::env::*;

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
