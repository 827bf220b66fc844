//! Function routing: one cluster forwarded as is, several split and merged, mutations in
//! order, a failing cluster.

use std::time::Instant;

use serde_json::{Value, json};

use super::env::*;

#[tokio::test]
async fn routes_by_root_field_and_merges_like_one_service() {
    let env = Env::start().await;

    // One cluster: forwarded unchanged, answered by the users service.
    let one = env
        .post("/graphql", &json!({"query": "{ user(id: 1) { name } }"}))
        .await;
    assert_eq!(one.status, 200, "{}", one.text());
    assert_eq!(one.json(), json!({"data": {"user": {"name": "Ada"}}}));
    // The same over GET.
    let get = env.get("/graphql", &[("query", "{ users { id } }")]).await;
    assert_eq!(get.json(), json!({"data": {"users": [{"id": "1"}, {"id": "2"}]}}));
    // Only the orders cluster: rerouted there.
    let orders = env
        .post("/graphql", &json!({"query": "{ order(id: \"o2\") { item } }"}))
        .await;
    assert_eq!(orders.json(), json!({"data": {"order": {"item": "punch cards"}}}));

    // Two clusters, with fragments (spread and inline, at the root and below), variables,
    // aliases, directives and __typename: the merged answer is the reference service's,
    // byte for byte, keys in the client's order.
    let query = r#"
        query Mixed($id: ID!, $o: ID!, $uid: ID, $skip: Boolean!) {
          t: __typename
          ...Root
          first: order(id: $o) { ...O }
          me: user(id: $id) { ...U friends { ...U } }
          ... on Query @skip(if: $skip) { users { id } }
          byUser: orders(userId: $uid) { id __typename }
          __typename
        }
        fragment Root on Query { second: order(id: "o2") { item } }
        fragment U on User { id name email __typename }
        fragment O on Order { id item userId }"#;
    let body = json!({
        "query": query,
        "operationName": "Mixed",
        "variables": {"id": "1", "o": "o1", "uid": "2", "skip": false},
    });
    let merged = env.post("/graphql", &body).await;
    let reference = env.post("/reference", &body).await;
    assert_eq!(merged.status, 200, "{}", merged.text());
    assert!(reference.json()["data"]["me"]["friends"][0]["name"] == "Grace");
    assert_eq!(merged.text(), reference.text());
    let text = merged.text();
    let at = |key: &str| {
        text.rfind(&format!("\"{key}\":"))
            .unwrap_or_else(|| panic!("{key} in {text}"))
    };
    let order = ["t", "second", "first", "me", "users", "byUser", "__typename"].map(at);
    assert!(order.is_sorted(), "keys out of the client's order: {text}");
    // With the skip on, no `users`.
    let mut skipped = body.clone();
    skipped["variables"]["skip"] = json!(true);
    let merged = env.post("/graphql", &skipped).await;
    assert_eq!(merged.text(), env.post("/reference", &skipped).await.text());
    assert!(merged.json()["data"].get("users").is_none());

    // Query parts run at once: two 600 ms fields on two clusters take ~600 ms, not 1200.
    let started = Instant::now();
    let slow = env
        .post(
            "/graphql",
            &json!({"query": "{ slowUser(id: 1, ms: 600) { name } slowOrder(id: \"o1\", ms: 600) { item } }"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(
        slow.json(),
        json!({"data": {"slowUser": {"name": "Ada"}, "slowOrder": {"item": "loom"}}})
    );
    assert!(took.as_millis() < 1100, "parts ran one after the other: {took:?}");
}

#[tokio::test]
async fn mutation_root_fields_run_serially_in_order() {
    let env = Env::start().await;
    let reply = env
        .post(
            "/graphql",
            &json!({"query": r#"mutation { a: setName(id: 1, name: "x") { value started finished }
                                           b: createOrder(item: "y") { value started finished }
                                           c: setName(id: 2, name: "z") { value started finished } }"#}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let data = &reply.json()["data"];
    let text = reply.text();
    assert!(text.find("\"a\":") < text.find("\"b\":") && text.find("\"b\":") < text.find("\"c\":"));
    assert_eq!(data["a"]["value"], "1:x");
    assert_eq!(data["b"]["value"], "y");
    assert_eq!(data["c"]["value"], "2:z");
    // Each field starts after the previous one finished (each takes 50 ms).
    let f = |k: &str, w: &str| data[k][w].as_f64().expect("a timestamp");
    assert!(f("b", "started") >= f("a", "finished"), "{data}");
    assert!(f("c", "started") >= f("b", "finished"), "{data}");
}

#[tokio::test]
async fn a_failing_cluster_nulls_its_fields_with_an_error() {
    let env = Env::start().await;
    // `down` is nullable: the other fields survive.
    let reply = env
        .post(
            "/graphql",
            &json!({"query": "{ users { id } down order(id: \"o1\") { id } }"}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(
        body["data"],
        json!({"users": [{"id": "1"}, {"id": "2"}], "down": null, "order": {"id": "o1"}})
    );
    // Which cluster, and why, stay inside (`include_subgraph_errors` is off).
    assert_eq!(
        body["errors"],
        json!([{"message": "HTTP fetch failed", "path": ["down"], "extensions": {"code": "SUBREQUEST_HTTP_ERROR"}}])
    );
    // `downNonNull` is String!: its null propagates to all of data.
    let reply = env
        .post("/graphql", &json!({"query": "{ users { id } downNonNull }"}))
        .await;
    let body = reply.json();
    assert_eq!(body["data"], Value::Null, "{body}");
    assert_eq!(body["errors"][0]["path"], json!(["downNonNull"]));
    // With `include_subgraph_errors` (on /open): the cluster and the cause.
    let open = env
        .post("/open", &json!({"query": "{ users { id } down }"}))
        .await
        .json();
    assert_eq!(open["errors"][0]["extensions"]["service"], "down", "{open}");
    assert!(
        open["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("HTTP fetch failed from 'down': ")),
        "{open}"
    );
    // Counted: the two failed calls, and operations by type.
    let counter = |name: &str| format!("weft_filter_events_total{{filter=\"gql\",name=\"{name}\"}}");
    assert_eq!(env.weft.metric(&counter("subrequest_errors")).await, 2.0);
    assert_eq!(env.weft.metric(&counter("operations_query")).await, 2.0);
    // An upstream field error keeps its path, loses the upstream's locations.
    let reply = env
        .post(
            "/graphql",
            &json!({"query": "{ order(id: \"o1\") { id } user(id: 1) { name } down }"}),
        )
        .await;
    assert!(reply.json()["errors"][0].get("locations").is_none());
}

#[tokio::test]
async fn cache_control_from_the_schemas_hints() {
    let env = Env::start().await;
    let cache = |query: &'static str| {
        let env = &env;
        async move {
            let reply = env.post("/graphql", &json!({ "query": query })).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            reply.header("cache-control").map(str::to_owned)
        }
    };
    // users 60 (its own hint), orders 120: the smallest.
    assert_eq!(
        cache("{ users { id } orders { id } }").await.as_deref(),
        Some("max-age=60, public")
    );
    // friends: User's type hint, 30.
    assert_eq!(
        cache("{ users { id friends { id } } orders { id } }").await.as_deref(),
        Some("max-age=30, public")
    );
    // order: Order's type hint, 300 and PRIVATE.
    assert_eq!(
        cache("{ users { id } order(id: \"o1\") { id } }").await.as_deref(),
        Some("max-age=60, private")
    );
    // A root field without a hint (maxAge 0), and an answer with errors: no header.
    assert_eq!(cache("{ users { id } orders { id } __typename down }").await, None);
    // Mutations are never cached.
    assert_eq!(
        cache("mutation { a: setName(id: 1, name: \"x\") { value } b: createOrder(item: \"y\") { value } }").await,
        None
    );
    // One cluster: rerouted, the service's own headers are the answer's (graphql-http sets none).
    assert_eq!(cache("{ users { id } }").await, None);
}

#[tokio::test]
async fn operations_are_counted_timed_and_refused_by_name() {
    let env = Env::start().await;
    let post = |path: &'static str, body: Value| {
        let env = &env;
        async move { env.post(path, &body).await.status }
    };
    // Two named queries, one anonymous, one named mutation, one that never validates.
    assert_eq!(
        post("/limited", json!({"query": "query Users { users { id } }"})).await,
        200
    );
    assert_eq!(
        post("/limited", json!({"query": "query Users { users { id } }"})).await,
        200
    );
    assert_eq!(post("/limited", json!({"query": "{ users { id } }"})).await, 200);
    assert_eq!(
        post(
            "/limited",
            json!({"query": "mutation Rename { setName(id: \"1\", name: \"x\") { value } }"})
        )
        .await,
        200
    );
    assert_eq!(
        post(
            "/limited",
            json!({"query": "query Forged { nosuchfield }", "operationName": "Forged"})
        )
        .await,
        400
    );
    // A valid operation over a limit (4 root fields, at most 3): counted, with its code.
    let deep = "query TooWide { __typename t: __typename users { id } orders { id } }";
    assert_eq!(post("/limited", json!({ "query": deep })).await, 400);

    let text = env.weft.admin("GET", "/metrics").await.1;
    let series =
        |name: &str, labels: &str| format!("weft_filter_events_total{{filter=\"limited\",name=\"{name}\",{labels}}} ");
    let value = |series: String| {
        text.lines().find_map(|l| {
            l.strip_prefix(series.as_str())
                .map(|v| v.trim().parse::<f64>().expect("value"))
        })
    };
    let requests = |labels: &str| value(series("operation_requests", labels));
    assert_eq!(requests("operation=\"Users\",type=\"query\""), Some(2.0), "{text}");
    assert_eq!(requests("operation=\"\",type=\"query\""), Some(1.0));
    assert_eq!(requests("operation=\"Rename\",type=\"mutation\""), Some(1.0));
    assert_eq!(requests("operation=\"TooWide\",type=\"query\""), Some(1.0));
    // An operation is named only once its document validated: the client's name alone
    // makes no series.
    assert!(!text.contains("Forged"), "{text}");
    assert_eq!(
        value(series(
            "operation_errors",
            // Labels are sorted by name in the exposition, whatever order the filter gave.
            "code=\"MAX_ROOT_FIELDS_LIMIT\",operation=\"TooWide\",type=\"query\""
        )),
        Some(1.0)
    );
    let timed = "weft_filter_observations_count{filter=\"limited\",name=\"operation_seconds\",operation=\"Users\",type=\"query\"} ";
    assert_eq!(
        text.lines().find_map(|l| l.strip_prefix(timed)).map(str::trim),
        Some("2"),
        "{text}"
    );
}

#[tokio::test]
async fn root_fields_left_out_by_directives_are_not_sent() {
    let env = Env::start().await;
    // Only `users` is left: the users service is sent an operation with it alone (it
    // knows no `product`, which is REST-backed here).
    let query = "query Q($s: Boolean!, $i: Boolean!) {
        me: user(id: 1) @skip(if: $s) { id }
        product(id: 10) @include(if: $i) { id }
        users { id }
    }";
    let reply = env
        .post(
            "/graphql",
            &json!({"query": query, "variables": {"s": true, "i": false}}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json(), json!({"data": {"users": [{"id": "1"}, {"id": "2"}]}}));
    // The same left out by the variables' defaults, nothing sent.
    let query = "query Q($s: Boolean = true, $i: Boolean = false) {
        me: user(id: 1) @skip(if: $s) { id }
        order(id: \"o1\") @include(if: $i) { id }
        users { id }
    }";
    let reply = env.post("/graphql", &json!({ "query": query })).await;
    assert_eq!(reply.json(), json!({"data": {"users": [{"id": "1"}, {"id": "2"}]}}));
}

#[tokio::test]
async fn service_errors_reach_the_client_redacted() {
    let env = Env::start().await;
    // A split operation whose orders part fails with a stack trace in its extensions.
    let body = json!({"query": "{ users { id } order(id: \"boom\") { id } }"});
    let reply = env.post("/graphql", &body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let answer = reply.json();
    assert_eq!(answer["data"]["order"], Value::Null);
    assert_eq!(
        answer["errors"],
        json!([{"message": "order store unavailable", "path": ["order"], "extensions": {"code": "DOWNSTREAM_FAILED"}}])
    );
    assert!(
        !reply.text().contains("10.0.0.7") && !reply.text().contains("/srv/"),
        "{answer}"
    );
    // An operation rerouted whole to its one service: the service's own answer, redacted
    // on its way back (locations kept).
    let whole = env
        .post("/graphql", &json!({"query": "{ order(id: \"boom\") { id } }"}))
        .await;
    assert_eq!(whole.status, 200, "{}", whole.text());
    let answer = whole.json();
    assert_eq!(answer["errors"][0]["message"], "order store unavailable", "{answer}");
    assert!(answer["errors"][0]["locations"].is_array(), "{answer}");
    assert_eq!(
        answer["errors"][0]["extensions"],
        json!({"code": "DOWNSTREAM_FAILED"}),
        "{answer}"
    );
    assert_eq!(answer["errors"][0].as_object().map(|e| e.len()), Some(4), "{answer}");
    assert!(
        !whole.text().contains("10.0.0.7") && !whole.text().contains("/srv/"),
        "{answer}"
    );
    // A client that accepts gzip (every browser): the service, which compresses when
    // asked, is asked for the plain answer, so its errors are still seen and redacted.
    let gzip = env
        .post_with(
            "/graphql",
            json!({"query": "{ order(id: \"boom\") { id } }"}).to_string(),
            &[
                ("accept", "application/graphql-response+json"),
                ("accept-encoding", "gzip"),
            ],
        )
        .await;
    assert_eq!(gzip.status, 200, "{}", gzip.text());
    assert_eq!(
        gzip.json()["errors"][0]["extensions"],
        json!({"code": "DOWNSTREAM_FAILED"})
    );
    assert!(!gzip.text().contains("/srv/"), "{}", gzip.text());
    // Details on request (`include_subgraph_errors = true` on /open).
    let open = env.post("/open", &body).await.json();
    assert_eq!(open["errors"][0]["extensions"]["service"], "orders", "{open}");
    assert!(open["errors"][0]["extensions"]["stacktrace"].is_array(), "{open}");
    // A REST-backed field: the status, not the cluster or its path.
    let rest = env
        .post(
            "/graphql",
            &json!({"query": "{ product(id: \"nope\") { id } users { id } }"}),
        )
        .await
        .json();
    assert_eq!(rest["errors"][0]["message"], "resolver error: HTTP 404", "{rest}");
}
