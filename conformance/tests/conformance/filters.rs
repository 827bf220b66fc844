//! Wasm filters through the real `weft` binary: what a user configures, sends and sees.
//! The host-level details (each capability, each limit) are in the `wasm` module.

use std::time::{Duration, Instant};

use weft_conformance::*;

/// A config with one route through the filters `chain` to the echo upstream `up`, and a
/// second cluster `canary` for reroutes. `filters` is the `[[filters]]` tables.
fn config(up: &Upstream, canary: &Upstream, filters: &str, chain: &[&str]) -> String {
    Config::new()
        .cluster("web", &[up.addr])
        .cluster("canary", &[canary.addr])
        .filters(filters)
        .route("all", "path_prefix = \"/\"", "web", chain, "")
        .to_string()
}

fn filter(name: &str, wasm: &str, extra: &str) -> String {
    format!("[[filters]]\nname = \"{name}\"\nwasm = \"{wasm}\"\n{extra}\n")
}

async fn metric(weft: &Weft, series: &str) -> Option<f64> {
    let (_, text) = weft.admin("GET", "/metrics").await;
    text.lines().find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
}

#[tokio::test]
async fn the_example_filter_denies_stamps_and_counts() {
    let (up, canary) = (Upstream::echo("web").await, Upstream::echo("canary").await);
    let hello = filter(
        "hello",
        plugins::HELLO_FILTER,
        r#"config = { header_name = "x-hello", header_value = "world", deny_prefix = "/private" }"#,
    );
    let weft = Weft::start(&config(&up, &canary, &hello, &["hello"])).await;

    let denied = get(&weft.url("/private/x")).await;
    assert_eq!((denied.status, denied.text().as_str()), (403, "forbidden\n"));
    assert_eq!(up.hits(), 0, "a denied request never reaches the upstream");

    let ok = get(&weft.url("/public")).await;
    assert_eq!(ok.status, 200);
    assert_eq!(ok.header("x-hello"), Some("world"));
    assert_eq!(ok.json()["uri"], "/public");
    assert_eq!(
        metric(&weft, r#"weft_filter_events_total{filter="hello",name="requests"}"#).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn a_runaway_filter_fails_closed_within_its_budget_and_open_when_configured() {
    let (up, canary) = (Upstream::echo("web").await, Upstream::echo("canary").await);
    let filters = filter("spin", plugins::INFINITE_LOOP, r#"limits = { cpu = "50ms" }"#)
        + &filter(
            "spin-open",
            plugins::INFINITE_LOOP,
            "on_error = \"open\"\nlimits = { cpu = \"50ms\" }",
        );
    let weft = Weft::start(&config(&up, &canary, &filters, &["spin"])).await;
    let started = Instant::now();
    let reply = get(&weft.url("/loop")).await;
    assert_eq!(reply.status, 500);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(get(&weft.url("/fine")).await.status, 200, "the filter keeps serving");
    assert_eq!(
        metric(&weft, r#"weft_filter_errors_total{filter="spin",kind="cpu"}"#).await,
        Some(1.0)
    );
    assert!(weft.log().contains("cpu"), "the failure is logged:\n{}", weft.log());

    let open = Weft::start(&config(&up, &canary, &filters, &["spin-open"])).await;
    let reply = get(&open.url("/loop")).await;
    assert_eq!(reply.status, 200, "fail-open: the request goes on without the filter");
}

#[tokio::test]
async fn capabilities_work_through_the_proxy() {
    let (up, canary) = (Upstream::echo("web").await, Upstream::echo("canary").await);
    let caps = filter("caps", plugins::CAPABILITIES, "config = { request_body = true }");
    let weft = Weft::start(&config(&up, &canary, &caps, &["caps"])).await;

    let rerouted = weft.request("GET", "/", &[("x-cap-reroute", "canary")], "").await;
    assert_eq!(rerouted.json()["upstream"], "canary");

    let meta = weft.request("GET", "/", &[("x-cap-metadata", "1")], "").await.json();
    assert_eq!(seen_header(&meta, "x-meta-route"), Some("all"));
    assert_eq!(seen_header(&meta, "x-meta-listener"), Some("main"));
    assert!(seen_header(&meta, "x-meta-client").is_some_and(|c| c.starts_with("127.0.0.1:")));

    let body = weft
        .request(
            "POST",
            "/",
            &[("x-cap-body", "1"), ("x-cap-set-body", "rewritten")],
            "original",
        )
        .await;
    let seen = body.json();
    assert_eq!(seen_header(&seen, "x-body-len"), Some("8"));
    assert_eq!(seen["body"], "rewritten", "the upstream receives the filter's body");

    let callout = weft
        .request(
            "GET",
            "/",
            &[("x-cap-callout", "canary"), ("x-cap-callout-path", "/check")],
            "",
        )
        .await;
    assert_eq!(callout.status, 200);
    let answer: serde_json::Value = serde_json::from_slice(&callout.body).expect("echo JSON");
    assert_eq!(
        (answer["upstream"].as_str(), answer["uri"].as_str()),
        (Some("canary"), Some("/check"))
    );

    let counted = weft.request("GET", "/", &[("x-cap-kv-incr", "n")], "").await.json();
    assert_eq!(seen_header(&counted, "x-kv-count"), Some("1"));
    let counted = weft.request("GET", "/", &[("x-cap-kv-incr", "n")], "").await.json();
    assert_eq!(seen_header(&counted, "x-kv-count"), Some("2"));

    weft.request("GET", "/", &[("x-cap-log", "guest says hello")], "").await;
    let log = weft.log();
    let line = log
        .lines()
        .find(|l| l.contains("guest says hello"))
        .unwrap_or_else(|| panic!("not logged:\n{log}"));
    assert!(line.contains("caps"), "the line names the filter: {line}");

    let replied = weft.request("GET", "/", &[("x-cap-respond", "429")], "").await;
    assert_eq!(
        (replied.status, replied.header("x-responded-by")),
        (429, Some("capabilities"))
    );
    assert_eq!(
        replied.header("x-cap-response"),
        None,
        "a filter that answered does not see its answer"
    );
}

/// `weft check` on a config whose only filter is `plugin`: its combined output.
fn check_with(plugin: &str) -> (bool, String) {
    let config = Config::new()
        .cluster("web", &["127.0.0.1:9".parse().expect("addr")])
        .filters(&filter("other", plugin, ""))
        .route("all", "", "web", &["other"], "");
    weft_check(&config.to_string(), &[])
}

#[test]
fn a_plugin_for_a_newer_wit_version_is_refused_at_start() {
    let ours = weft::wasm::WIT_VERSION;
    let (major, rest) = ours.split_once('.').expect("x.y.z");
    let minor: u64 = rest.split('.').next().and_then(|m| m.parse().ok()).expect("minor");
    let next = format!("weft:filter@{major}.{}.0", minor + 1);
    let (ok, out) = check_with(plugins::WRONG_VERSION);
    assert!(!ok);
    assert!(
        out.contains(&next) && out.contains(&format!("weft:filter@{ours}")),
        "{out}"
    );
}

#[test]
fn a_plugin_built_for_0_1_is_refused_with_how_to_rebuild() {
    let (ok, out) = check_with(plugins::BUILT_FOR_0_1);
    assert!(!ok);
    assert!(
        out.contains("targets weft:filter@0.1.0")
            && out.contains(&format!("supports weft:filter@{}", weft::wasm::WIT_VERSION))
            && out.contains("cargo build --release --target wasm32-wasip2")
            && out.contains("docs/filters.md"),
        "{out}"
    );
}

#[tokio::test]
async fn a_plugin_built_for_an_earlier_0_2_release_still_runs() {
    let up = Upstream::echo("web").await;
    let config = Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter("released", plugins::BUILT_FOR_0_2_0, "", "")
        .route("all", r#"path_prefix = "/""#, "web", &["released"], "");
    let weft = Weft::start(&config.to_string()).await;
    let reply = weft.request("GET", "/", &[], "").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(seen_header(&reply.json(), "x-built-for"), Some("0.2.0"));
}

#[tokio::test]
async fn context_crosses_phases_and_filters_and_undeclared_phases_are_skipped() {
    let up = Upstream::echo("web").await;
    let config = Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter("auth", plugins::CAPABILITIES, "", "")
        .wasm_filter("reader", plugins::CAPABILITIES, r#"phases = "request""#, "")
        .route("ctx", r#"path_prefix = "/ctx""#, "web", &["auth", "reader"], "")
        .route("req-only", r#"path_prefix = "/""#, "web", &["reader"], "");
    let weft = Weft::start(&config.to_string()).await;

    let reply = weft
        .request(
            "GET",
            "/ctx",
            &[("x-cap-ctx-set", "user=alice"), ("x-cap-ctx-from", "auth/user")],
            "",
        )
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        seen_header(&reply.json(), "x-ctx-from"),
        Some("alice"),
        "the second filter read the first one's value"
    );
    assert_eq!(
        reply.header("x-ctx-own"),
        Some("alice"),
        "the first filter's response phase read what its request phase left"
    );

    let reply = weft
        .request("GET", "/plain", &[("x-cap-ctx-set", "user=bob")], "")
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        seen_header(&reply.json(), "x-ctx-set"),
        Some("ok"),
        "the request phase ran"
    );
    assert_eq!(
        reply.header("x-cap-response"),
        None,
        "a filter that declared only the request phase is never called for the response"
    );
}

/// One header policy: a route's edits, a `direct_response`, the native `headers` filter, a
/// plugin writing a request's headers and a plugin building a callout's header list refuse
/// the same names (framing, hop-by-hop, `host`, `via`), in any case; other names pass
/// everywhere.
#[tokio::test]
async fn every_header_writer_refuses_the_same_names() {
    let up = Upstream::echo("web").await;
    let caps = Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter("caps", plugins::CAPABILITIES, "", "")
        .route("all", r#"path_prefix = "/""#, "web", &["caps"], "");
    let weft = Weft::start(&caps.to_string()).await;
    let mut names: Vec<String> = weft::header_policy::REFUSED
        .iter()
        .map(|n| n.as_str().to_owned())
        .collect();
    names.extend([
        "Transfer-Encoding".to_owned(),
        "CONTENT-LENGTH".to_owned(),
        "Via".to_owned(),
    ]);
    names.push("x-allowed".to_owned());
    for name in &names {
        let refused = name != "x-allowed";
        let base = || Config::new().cluster("web", &[up.addr]);
        let writers = [
            (
                "route request_headers",
                base().route(
                    "r",
                    r#"path_prefix = "/""#,
                    "web",
                    &[],
                    &format!("request_headers = {{ set = {{ \"{name}\" = \"1\" }} }}"),
                ),
            ),
            (
                "route response_headers",
                base().route(
                    "r",
                    r#"path_prefix = "/""#,
                    "web",
                    &[],
                    &format!("response_headers = {{ remove = [\"{name}\"] }}"),
                ),
            ),
            (
                "direct_response",
                base().top(&format!(
                    "[[routes]]\nmatch = {{ path_prefix = \"/\" }}\n\
                     direct_response = {{ status = 200, headers = {{ \"{name}\" = \"1\" }} }}\n"
                )),
            ),
            (
                "native request_set",
                base()
                    .native_filter("h", "headers", &format!("request_set = {{ \"{name}\" = \"1\" }}"))
                    .route("r", r#"path_prefix = "/""#, "web", &["h"], ""),
            ),
            (
                "native response_remove",
                base()
                    .native_filter("h", "headers", &format!("response_remove = [\"{name}\"]"))
                    .route("r", r#"path_prefix = "/""#, "web", &["h"], ""),
            ),
        ];
        for (writer, config) in writers {
            let (ok, out) = weft_check(&config.to_string(), &[]);
            assert_eq!(ok, !refused, "{writer} with {name}: {out}");
            if refused {
                assert!(
                    out.to_ascii_lowercase().contains(&name.to_ascii_lowercase()),
                    "{writer}: {out}"
                );
            }
        }
        let seen = weft.request("GET", "/", &[("x-cap-fields-set", name)], "").await.json();
        let wanted = if refused {
            format!("HeaderError::Forbidden({:?})", name.to_ascii_lowercase())
        } else {
            "ok".to_owned()
        };
        assert_eq!(
            seen_header(&seen, "x-fields-set"),
            Some(wanted.as_str()),
            "a plugin on the request: {name}"
        );
        assert_eq!(
            seen_header(&seen, "x-fields-own-set"),
            Some(wanted.as_str()),
            "a plugin's callout list: {name}"
        );
    }
}
