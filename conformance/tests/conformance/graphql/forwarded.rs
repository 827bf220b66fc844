//! What a request rerouted to one cluster carries: only what the gateway validated. Echo
//! upstreams answer with the request they received, so the tests read exactly what a
//! service would have run.

use std::path::Path;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::{Value, json};
use weft_conformance::*;

/// `a` and `c` on `one`, `b` on `two`.
const FILTER: &str = r#"schema = "type Query { a: Int  b(id: ID): Int  c: Int }",
  routes = { "Query.*" = "one", "Query.b" = "two" }"#;

struct Echoes {
    weft: Weft,
    one: Upstream,
    two: Upstream,
}

impl Echoes {
    async fn start() -> Echoes {
        let (one, two) = (Upstream::echo("one").await, Upstream::echo("two").await);
        let cache = Path::new(env!("CARGO_TARGET_TMPDIR")).join("graphql-wasm-cache");
        let config = Config::new()
            .top(&format!("[wasm]\ncache_dir = \"{}\"", cache.display()))
            .cluster("one", &[one.addr])
            .cluster("two", &[two.addr])
            .wasm_filter("gql", plugins::GRAPHQL, FILTER, "")
            .route("gql", "path_prefix = \"/\"", "one", &["gql"], "")
            .to_string();
        Echoes {
            weft: Weft::start(&config).await,
            one,
            two,
        }
    }

    /// A GET (with the CSRF preflight header) of `path_and_query` as written, and a body.
    async fn get(&self, path_and_query: &str, body: &'static str) -> Reply {
        let req = Request::get(self.weft.url(path_and_query))
            .header("apollo-require-preflight", "true")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .expect("request");
        send(&http1_client(), req).await
    }

    async fn post(&self, path_and_query: &str, body: &str) -> Reply {
        let req = Request::post(self.weft.url(path_and_query))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_owned())))
            .expect("request");
        send(&http1_client(), req).await
    }
}

/// Form decoding (`+` a space, `%XX` a byte), as a service reads a query string.
fn decode(text: &str) -> String {
    let bytes = text.replace('+', " ").into_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).expect("hex");
            out.push(u8::from_str_radix(hex, 16).expect("hex"));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("UTF-8")
}

/// The echo's view of the request; panics when the answer is not an echo.
fn seen(reply: &Reply) -> Value {
    assert_eq!(reply.status, 200, "{}", reply.text());
    let echo = reply.json();
    assert!(echo["upstream"].is_string(), "not rerouted: {echo}");
    echo
}

#[tokio::test]
async fn a_repeated_get_parameter_is_refused() {
    let echoes = Echoes::start().await;
    for twice in [
        // graphql-http, Apollo Server, Yoga and gqlgen run the first; the gateway read the last.
        "/graphql?query=%7Bb%7D&query=%7Ba%7D",
        "/graphql?query=%7Bb%7D&%71uery=%7Ba%7D",
        "/graphql?query=%7Ba%7D&operationName=A&operationName=",
        "/graphql?query=%7Ba%7D&variables=%7B%7D&variables=%7B%7D",
        "/graphql?query=%7Ba%7D&extensions=%7B%7D&extensions=%7B%7D",
    ] {
        let reply = echoes.get(twice, "").await;
        assert_eq!(reply.status, 400, "{twice}: {}", reply.text());
        assert!(reply.text().contains("more than once"), "{twice}: {}", reply.text());
    }
    assert_eq!(echoes.one.hits() + echoes.two.hits(), 0, "nothing reached a service");
}

#[tokio::test]
async fn a_rerouted_request_carries_only_what_was_validated() {
    let echoes = Echoes::start().await;

    // GET: the query string is rebuilt from the parameters parsed, on the cluster's path;
    // other parameters and a body do not go on.
    let echo = seen(
        &echoes
            .get("/api?query=%7Ba%7D&x=1&operationName=&variables=%7B%7D", "")
            .await,
    );
    assert_eq!(echo["upstream"], "one");
    assert_eq!(echo["uri"], "/graphql?query=%7Ba%7D");
    let echo = seen(&echoes.get("/graphql?query=%7Ba%7D", "{\"query\":\"{b}\"}").await);
    assert_eq!(
        (echo["uri"].as_str(), echo["body_len"].as_u64()),
        (Some("/graphql?query=%7Ba%7D"), Some(0))
    );
    let echo = seen(
        &echoes
            .get(
                "/graphql?operationName=Q&query=query+Q(%24id%3A+ID)+%7B+b(id%3A+%24id)+%7D&variables=%7B%22id%22%3A%227%22%7D",
                "",
            )
            .await,
    );
    assert_eq!(echo["upstream"], "two");
    assert_eq!(
        echo["uri"],
        "/graphql?query=query%20Q%28%24id%3A%20ID%29%20%7B%20b%28id%3A%20%24id%29%20%7D&operationName=Q&variables=%7B%22id%22%3A%227%22%7D"
    );

    // POST: the body is rebuilt, and the URL's query string dropped.
    let echo = seen(&echoes.post("/graphql?query=%7Bb%7D", r#"{"query":"{a}"}"#).await);
    assert_eq!(
        (echo["upstream"].as_str(), echo["uri"].as_str()),
        (Some("one"), Some("/graphql"))
    );
    assert_eq!(echo["body"], r#"{"query":"{a}"}"#);
    // A key given twice: the gateway validated the last; only that goes on.
    let echo = seen(
        &echoes
            .post(
                "/graphql",
                r#"{"query":"{ b }","query":"{ a }","junk":1,"variables":{"x":1,"x":2}}"#,
            )
            .await,
    );
    assert_eq!(echo["upstream"], "one");
    let body: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body, json!({"query": "{ a }", "variables": {"x": 2}}));
    assert_eq!(echo["body"].as_str().map(|b| b.matches("query").count()), Some(1));
    // Everything a client may send, as parsed.
    let sent = json!({
        "query": "query Q($id: ID) { b(id: $id) }",
        "operationName": "Q",
        "variables": {"id": "7"},
        "extensions": {"trace": true},
    });
    let echo = seen(&echoes.post("/graphql", &sent.to_string()).await);
    assert_eq!(echo["upstream"], "two");
    let body: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(body, sent);
    assert_eq!(
        seen_header(&echo, "content-length"),
        Some(echo["body_len"].to_string().as_str())
    );
}

#[tokio::test]
async fn skipped_root_fields_are_not_sent() {
    let echoes = Echoes::start().await;
    // `a` (one) skipped, `b` (two) not included: only `c` is left, on `one`, which is sent
    // the operation with `c` alone (a service need not know the others' fields).
    let query = "query Q($s: Boolean!, $i: Boolean!) { a @skip(if: $s) b(id: 1) @include(if: $i) c }";
    let body = json!({"query": query, "variables": {"s": true, "i": false}});
    let echo = seen(&echoes.post("/graphql", &body.to_string()).await);
    assert_eq!(echo["upstream"], "one");
    let sent: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("JSON");
    let text = sent["query"].as_str().expect("query");
    assert_eq!(text.split_whitespace().collect::<Vec<_>>().join(" "), "query Q { c }");
    assert_eq!(sent["operationName"], "Q");
    assert!(sent.get("variables").is_none(), "{sent}");
    // The same by a default, over GET.
    let echo = seen(
        &echoes
            .get(
                "/graphql?query=query(%24i%3A+Boolean+%3D+false)+%7B+c+b+%40include(if%3A+%24i)+%7D",
                "",
            )
            .await,
    );
    let uri = echo["uri"].as_str().expect("uri");
    let (path, query) = uri.split_once("?query=").expect("a query parameter");
    assert_eq!(path, "/graphql");
    assert!(!query.contains('&'), "{uri}");
    let text = decode(query);
    assert!(!text.contains('b') && text.contains('c'), "{text}");
    // Nothing left out: the text goes as the client wrote it.
    let body = json!({"query": "query Q($s: Boolean!) { a @skip(if: $s) c }", "variables": {"s": false}});
    let echo = seen(&echoes.post("/graphql", &body.to_string()).await);
    let sent: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("JSON");
    assert_eq!(sent, body);
}

/// The forward cache (`plugins/graphql/src/forward_cache.rs`): a repeat of a forwarded POST
/// is decided from the exact request it saw before. A repeat goes where the first went,
/// carrying what the first carried and counted as the first was; anything that differs (a
/// byte of the body, the content type) is decided afresh.
#[tokio::test]
async fn a_repeated_operation_is_forwarded_as_the_first_and_any_change_is_decided_afresh() {
    let echoes = Echoes::start().await;
    let rebuilt_differs = r#"{"query":"{ b }","query":"{ a }","junk":1,"variables":{"x":1,"x":2}}"#;
    let sent_as_is = r#"{"query":"{a}"}"#;
    for round in 0..3 {
        let echo = seen(&echoes.post("/graphql", rebuilt_differs).await);
        assert_eq!(echo["upstream"], "one", "round {round}");
        let body: Value = serde_json::from_str(echo["body"].as_str().expect("body")).expect("JSON");
        assert_eq!(body, json!({"query": "{ a }", "variables": {"x": 2}}), "round {round}");
        let echo = seen(&echoes.post("/api", sent_as_is).await);
        assert_eq!(
            (echo["upstream"].as_str(), echo["uri"].as_str(), echo["body"].as_str()),
            (Some("one"), Some("/graphql"), Some(sent_as_is)),
            "round {round}: on the gateway's path, the body untouched"
        );
    }
    let forwarded = r#"weft_filter_events_total{filter="gql",name="forwarded"}"#;
    assert_eq!(echoes.weft.metric(forwarded).await, 6.0, "every repeat is counted");
    let queries = r#"weft_filter_events_total{filter="gql",name="operations_query"}"#;
    assert_eq!(echoes.weft.metric(queries).await, 6.0);

    // The same body under another content type is refused, cached or not.
    let hits = echoes.one.hits() + echoes.two.hits();
    let req = Request::post(echoes.weft.url("/graphql"))
        .header("content-type", "application/xml")
        .body(Full::new(Bytes::from_static(sent_as_is.as_bytes())))
        .expect("request");
    let reply = send(&http1_client(), req).await;
    assert_eq!(reply.status, 415, "{}", reply.text());
    // One byte more asks for `b`, on the other cluster.
    let echo = seen(&echoes.post("/graphql", r#"{"query":"{b}"}"#).await);
    assert_eq!(echo["upstream"], "two");
    // Trailing whitespace is another request (the same operation): decided afresh, and
    // sent on rebuilt.
    let echo = seen(&echoes.post("/graphql", &format!("{sent_as_is} ")).await);
    assert_eq!(
        (echo["upstream"].as_str(), echo["body"].as_str()),
        (Some("one"), Some(sent_as_is))
    );
    assert_eq!(
        echoes.one.hits() + echoes.two.hits(),
        hits + 2,
        "the refused one reached no one"
    );
}
