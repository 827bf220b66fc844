//! Protection limits, each at its boundary, refused on `/limited` and let through on
//! `/warned` (the same limits with `warn_only`). Limits: depth 3, height 6, aliases 2,
//! root fields 3, 100 lexer tokens (whitespace runs and the end count: apollo-parser's
//! count), parser recursion 12.

use serde_json::{Value, json};

use super::env::*;

/// `{ users { id id … } }` with `n` lexer tokens (12 for no extra `id`; two per `id`;
/// a trailing space adds one).
fn tokens(n: usize) -> String {
    let ids = " id".repeat((n - 12) / 2);
    let pad = if n % 2 == 1 { " " } else { "" };
    format!("{{ users {{ id{ids} }} }}{pad}")
}

/// `levels` nested selection sets: `{ users { friends { … { id } } } }`.
fn nested(levels: usize) -> String {
    let mut q = String::from("{ users ");
    for _ in 0..levels.saturating_sub(2) {
        q.push_str("{ friends ");
    }
    q.push_str("{ id }");
    for _ in 0..levels.saturating_sub(1) {
        q.push_str(" }");
    }
    q
}

#[tokio::test]
async fn every_limit_at_its_boundary() {
    let env = Env::start().await;
    let cases: [(&str, &str, Option<&str>); 12] = [
        ("{ user(id: 1) { friends { id } } }", "depth 3", None),
        (
            "{ user(id: 1) { friends { friends { id } } } }",
            "depth 4",
            Some("MAX_DEPTH_LIMIT"),
        ),
        ("{ users { id name email friends { id } } }", "height 6", None),
        (
            "{ users { id name email friends { id name } } }",
            "height 7",
            Some("MAX_HEIGHT_LIMIT"),
        ),
        ("{ a: user(id: 1) { id } b: user(id: 2) { id } }", "2 aliases", None),
        (
            "{ a: user(id: 1) { id } b: user(id: 2) { id } c: users { id } }",
            "3 aliases",
            Some("MAX_ALIASES_LIMIT"),
        ),
        ("{ __typename users { id } orders { id } }", "3 root fields", None),
        (
            "{ __typename t: __typename users { id } orders { id } }",
            "4 root fields",
            Some("MAX_ROOT_FIELDS_LIMIT"),
        ),
        (&tokens(100), "100 tokens", None),
        (&tokens(101), "101 tokens", Some("PARSER_TOKEN_LIMIT")),
        // 12 nested selection sets parse (then the depth limit refuses them); 13 do not.
        (&nested(12), "recursion 12", Some("MAX_DEPTH_LIMIT")),
        (&nested(13), "recursion 13", Some("PARSER_RECURSION_LIMIT")),
    ];
    for (query, what, refused) in cases {
        let body = json!({ "query": query });
        let limited = env.post("/limited", &body).await;
        let warned = env.post("/warned", &body).await;
        match refused {
            None => {
                assert_eq!(limited.status, 200, "{what}: {}", limited.text());
                assert!(limited.json()["data"].is_object(), "{what}: {}", limited.text());
                assert_eq!(limited.text(), warned.text(), "{what}");
            }
            Some(code) => {
                assert_eq!(limited.status, 400, "{what}: {}", limited.text());
                // The first limit hit is the one measured; deeper nesting is also taller.
                assert_eq!(codes(&limited).first().map(String::as_str), Some(code), "{what}");
                assert!(limited.json().get("data").is_none(), "{what}");
                if code.starts_with("PARSER_") {
                    // The parser stops: no warn_only for these.
                    assert_eq!(warned.status, 400, "{what}");
                } else {
                    assert_eq!(warned.status, 200, "{what} with warn_only: {}", warned.text());
                    assert!(warned.json()["data"].is_object(), "{what}");
                }
            }
        }
    }
    // The message is Apollo Router's.
    let deep = env
        .post(
            "/limited",
            &json!({"query": "{ user(id: 1) { friends { friends { id } } } }"}),
        )
        .await;
    assert_eq!(
        deep.json()["errors"][0]["message"],
        "Maximum depth limit exceeded in this operation"
    );
    assert!(
        env.weft.log().contains("MAX_DEPTH_LIMIT"),
        "a log line per rejected operation"
    );
}

#[tokio::test]
async fn static_cost_at_its_boundary() {
    let env = Env::start().await;
    // users: a list of 10 (the default) × 1; orders: @listSize(assumedSize: 5) × 1; a user
    // 1, its email @cost(weight: 3); an order 1. Maximum 21.
    let at =
        r#"{ users { id } orders { id } a: user(id: 1) { email } b: user(id: 2) { id } c: order(id: "o1") { id } }"#;
    let over = r#"{ users { id } orders { id } a: user(id: 1) { email } b: user(id: 2) { id } c: order(id: "o1") { id } d: order(id: "o2") { id } }"#;
    let ok = env.post("/costly", &json!({ "query": at })).await;
    assert_eq!(ok.status, 200, "{}", ok.text());
    assert_eq!(ok.json()["data"]["a"]["email"], "ada@example.com");
    let refused = env.post("/costly", &json!({ "query": over })).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(codes(&refused), ["COST_ESTIMATED_TOO_EXPENSIVE"]);
    assert_eq!(
        refused.json()["errors"][0]["message"],
        "query estimated cost 22 exceeded configured maximum 21"
    );
}

#[tokio::test]
async fn static_cost_reads_the_values_the_service_uses() {
    let env = Env::start().await;
    // friends(first:) sizes the list: with no variables sent, $n is its default, 100000;
    // priced at default_list_size (10) before, 1 + 10 = 11 <= 21 went through.
    let query = "query($n: Int = 100000) { user(id: 1) { friends(first: $n) { id } } }";
    let refused = env.post("/costly", &json!({ "query": query })).await;
    assert_eq!(refused.status, 400, "{}", refused.text());
    assert_eq!(codes(&refused), ["COST_ESTIMATED_TOO_EXPENSIVE"]);
    assert_eq!(
        refused.json()["errors"][0]["message"],
        "query estimated cost 100001 exceeded configured maximum 21"
    );
    // A value sent wins over the default; an explicit null is no size (the default 10).
    for (n, friends) in [(json!(1), json!([{"id": "2"}])), (Value::Null, json!([{"id": "2"}]))] {
        let ok = env
            .post("/costly", &json!({ "query": query, "variables": {"n": n} }))
            .await;
        assert_eq!(ok.status, 200, "{}", ok.text());
        assert_eq!(ok.json()["data"]["user"]["friends"], friends);
    }
    // A value of the wrong type is a request error at the gateway, as at the service.
    let wrong = env
        .post("/costly", &json!({ "query": query, "variables": {"n": "many"}}))
        .await;
    assert_eq!(wrong.status, 400, "{}", wrong.text());
    assert_eq!(codes(&wrong), ["VALIDATION_INVALID_TYPE_VARIABLE"]);
}

/// `{ users { id } ...F0 }` with `F0` spreading `F1`… `F{n}` holding `last`.
fn fragment_chain(n: usize, last: &str) -> String {
    let mut q = String::from("{ users { id } ...F0 }");
    for i in 0..n {
        q.push_str(&format!("\nfragment F{i} on Query {{ ...F{} }}", i + 1));
    }
    q.push_str(&format!("\nfragment F{n} on Query {{ {last} }}"));
    q
}

#[tokio::test]
async fn introspection_deep_in_fragments_is_refused() {
    let env = Env::start().await;
    // Past 64 nested fragments the root-field walk stopped: `__schema` was neither refused
    // nor answered by the gateway, and the users service answered it.
    let deep = fragment_chain(70, "__schema { queryType { name } }");
    let reply = env.post("/graphql", &json!({ "query": deep })).await;
    assert_eq!(codes(&reply), ["INTROSPECTION_DISABLED"], "{}", reply.text());
    // The same one fragment short of validation's own bound (apollo-compiler refuses a
    // chain of 100).
    let deepest = fragment_chain(98, "__type(name: \"User\") { name }");
    let reply = env.post("/graphql", &json!({ "query": deepest })).await;
    assert_eq!(codes(&reply), ["INTROSPECTION_DISABLED"], "{}", reply.text());
}
