//! Each host interface, poked through the `capabilities` plugin's `x-cap-*` headers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weft::filter::{Filter, FilterError, Limit, RequestDecision};
use weft_conformance::{Upstream, full, plugins};

use super::support::*;

async fn caps(name: &str) -> Arc<dyn Filter> {
    load(name, plugins::CAPABILITIES, "{}")
        .await
        .expect("load capabilities")
}

#[tokio::test]
async fn metadata_describes_the_request() {
    let filter = caps("cap-meta").await;
    let (decision, req) = run(&*filter, "/", &[("x-cap-metadata", "1")]).await;
    assert!(is_continue(&decision));
    assert_eq!(header(&req, "x-meta-client"), Some("192.0.2.7:4242"));
    assert_eq!(header(&req, "x-meta-listener"), Some("public"));
    assert_eq!(header(&req, "x-meta-route"), Some("api"));
    assert_eq!(header(&req, "x-meta-scheme"), Some("http"));
    assert_eq!(header(&req, "x-meta-peer"), Some("none"));

    let mut req = request("/", &[("x-cap-metadata", "1")]);
    let mut context = ctx();
    context.peer_identity = Some("spiffe://example/client".into());
    filter.on_request(&mut req, &mut context).await.expect("phase");
    assert_eq!(header(&req, "x-meta-peer"), Some("spiffe://example/client"));
}

#[tokio::test]
async fn headers_path_and_direct_replies() {
    let filter = caps("cap-http").await;
    let (decision, req) = run(
        &*filter,
        "/old?q=1",
        &[
            ("x-cap-set-path", "/new?q=2"),
            ("x-cap-remove", "x-secret"),
            ("x-secret", "s"),
        ],
    )
    .await;
    assert!(is_continue(&decision));
    assert_eq!(req.head.uri, "/new?q=2");
    assert_eq!(header(&req, "x-set-path"), Some("ok"));
    assert_eq!(header(&req, "x-secret"), None);

    let (_, req) = run(&*filter, "/", &[("x-cap-set-path", "no-slash")]).await;
    assert!(header(&req, "x-set-path").is_some_and(|e| e.contains("must start with '/'")));

    let (status, body) = responded(run(&*filter, "/", &[("x-cap-respond", "418")]).await.0).await;
    assert_eq!((status, body.as_str()), (418, "responded"));
}

#[tokio::test]
async fn reroute_names_a_cluster_of_the_config() {
    let up = Upstream::echo("canary").await;
    let filter = load_with(
        "cap-reroute",
        plugins::CAPABILITIES,
        "{}",
        &default_limits(),
        clusters(&[("canary", up.addr)]),
    )
    .await
    .expect("load");
    match run(&*filter, "/", &[("x-cap-reroute", "canary")]).await.0 {
        Ok(RequestDecision::Reroute(cluster)) => assert_eq!(&*cluster.name, "canary"),
        other => panic!("expected a reroute, got {:?}", other.err()),
    }
    match run(&*filter, "/", &[("x-cap-reroute", "nowhere")]).await.0 {
        Err(FilterError::Invalid(message)) => assert!(message.contains("unknown cluster \"nowhere\""), "{message}"),
        other => panic!("expected an error, got {:?}", other.err()),
    }
}

#[tokio::test]
async fn response_phase_sees_and_changes_the_response() {
    let filter = load("cap-resp", plugins::CAPABILITIES, r#"{"response_body": true}"#)
        .await
        .expect("load");
    assert_eq!(filter.response_body_limit(), Some(default_limits().body));
    let mut resp = response(200, &[]);
    resp.body = Some("twelve bytes".into());
    assert!(is_continue(&filter.on_response(&mut resp, &mut ctx()).await));
    assert_eq!(
        resp.head.headers.get("x-cap-response").map(|v| v.as_bytes()),
        Some(&b"seen"[..])
    );
    assert_eq!(
        resp.head.headers.get("x-resp-body-len").map(|v| v.as_bytes()),
        Some(&b"12"[..])
    );
    assert_eq!(
        resp.body.as_deref(),
        Some(&b"twelve bytes"[..]),
        "the body is handed back"
    );

    let mut resp = response(200, &[("x-cap-replace", "503")]);
    let decision = filter.on_response(&mut resp, &mut ctx()).await;
    assert_eq!(responded(decision).await, (503, "replaced".to_owned()));
}

#[tokio::test]
async fn request_bodies_are_visible_and_replaceable_only_when_asked_for() {
    let filter = load("cap-body", plugins::CAPABILITIES, r#"{"request_body": true}"#)
        .await
        .expect("load");
    let mut req = request(
        "/",
        &[
            ("x-cap-body", "1"),
            ("x-cap-set-body", "replaced!"),
            ("content-length", "8"),
        ],
    );
    req.body = Some("original".into());
    assert!(is_continue(&on_request(&*filter, &mut req).await));
    assert_eq!(header(&req, "x-body-len"), Some("8"));
    assert_eq!(
        header(&req, "content-length"),
        Some("9"),
        "the length follows the new body"
    );
    assert_eq!(header(&req, "x-set-body"), Some("ok"));
    assert_eq!(req.body.as_deref(), Some(&b"replaced!"[..]));

    let streaming = caps("cap-nobody").await;
    assert_eq!(streaming.request_body_limit(), None);
    let (_, req) = run(&*streaming, "/", &[("x-cap-body", "1"), ("x-cap-set-body", "x")]).await;
    assert_eq!(header(&req, "x-body"), Some("none"));
    assert!(header(&req, "x-set-body").is_some_and(|e| e.contains("not buffered")));
}

#[tokio::test]
async fn kv_counts_atomically_expires_and_is_private_to_each_filter() {
    let a = caps("cap-kv-a").await;
    let b = caps("cap-kv-b").await;
    let incr = [("x-cap-kv-incr", "hits"), ("x-cap-kv-ttl-ms", "150")];
    assert_eq!(header(&run(&*a, "/", &incr).await.1, "x-kv-count"), Some("1"));
    assert_eq!(header(&run(&*a, "/", &incr).await.1, "x-kv-count"), Some("2"));
    assert_eq!(
        header(&run(&*b, "/", &incr).await.1, "x-kv-count"),
        Some("1"),
        "filter b has its own keys"
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        header(&run(&*a, "/", &incr).await.1, "x-kv-count"),
        Some("1"),
        "the window expired"
    );

    assert_eq!(
        header(&run(&*a, "/", &[("x-cap-kv-set", "mode=dark")]).await.1, "x-kv-set"),
        Some("ok")
    );
    assert_eq!(
        header(&run(&*a, "/", &[("x-cap-kv-get", "mode")]).await.1, "x-kv-value"),
        Some("dark")
    );
    assert_eq!(
        header(&run(&*b, "/", &[("x-cap-kv-get", "mode")]).await.1, "x-kv-missing"),
        Some("1")
    );
    assert_eq!(
        header(&run(&*a, "/", &[("x-cap-kv-delete", "mode")]).await.1, "x-kv-deleted"),
        Some("true")
    );
    assert_eq!(
        header(&run(&*a, "/", &[("x-cap-kv-delete", "mode")]).await.1, "x-kv-deleted"),
        Some("false")
    );
    let (_, req) = run(&*a, "/", &[("x-cap-kv-set", "word=abc"), ("x-cap-kv-incr", "word")]).await;
    assert_eq!(
        header(&req, "x-kv-count"),
        Some("KvError::NotAnInteger"),
        "a typed error"
    );
}

#[tokio::test]
async fn metrics_and_logs_reach_the_host() {
    let filter = caps("cap-metrics").await;
    for _ in 0..3 {
        let (decision, _) = run(
            &*filter,
            "/",
            &[("x-cap-metric", "seen"), ("x-cap-log", "hello from the guest")],
        )
        .await;
        assert!(is_continue(&decision));
    }
    assert_eq!(
        sample(r#"weft_filter_events_total{filter="cap-metrics",name="seen"}"#),
        Some(3.0)
    );
    assert_eq!(
        sample(r#"weft_filter_value{filter="cap-metrics",name="seen"}"#),
        Some(7.0)
    );
    assert_eq!(
        sample(r#"weft_filter_observations_count{filter="cap-metrics",name="seen"}"#),
        Some(3.0)
    );
}

#[tokio::test]
async fn callouts_reach_a_cluster_and_waiting_is_not_cpu_time() {
    let up = Upstream::start(|req: http::Request<hyper::body::Incoming>| async move {
        let slow = req.uri().path() == "/slow";
        if slow {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        let from = req
            .headers()
            .get("x-from")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("?")
            .to_owned();
        http::Response::builder()
            .status(201)
            .body(full(format!("hello {from}")))
            .expect("response")
    })
    .await;
    // A 50 ms CPU budget, and a callout that waits 300 ms: waiting must not count.
    let limits = limits(16 << 20, Duration::from_millis(50), 1 << 20);
    let filter = load_with(
        "cap-callout",
        plugins::CAPABILITIES,
        "{}",
        &limits,
        clusters(&[("auth", up.addr)]),
    )
    .await
    .expect("load");

    let (decision, _) = run(
        &*filter,
        "/",
        &[("x-cap-callout", "auth"), ("x-cap-callout-path", "/slow")],
    )
    .await;
    let (status, body) = responded(decision).await;
    assert_eq!(
        (status, body.as_str()),
        (200, "hello capabilities"),
        "the guest replies with the callout's body"
    );

    let (decision, _) = run(&*filter, "/", &[("x-cap-callout", "nowhere")]).await;
    let (status, body) = responded(decision).await;
    assert_eq!(status, 502);
    assert!(
        body.starts_with("CalloutError::UnknownCluster(") && body.contains("nowhere") && body.contains("auth"),
        "{body}"
    );

    let started = Instant::now();
    let slow = [
        ("x-cap-callout", "auth"),
        ("x-cap-callout-path", "/slow"),
        ("x-cap-callout-timeout-ms", "80"),
    ];
    let (status, body) = responded(run(&*filter, "/", &slow).await.0).await;
    assert_eq!(status, 502);
    assert_eq!(body, "CalloutError::Timeout", "a typed error");
    assert!(
        started.elapsed() < Duration::from_millis(280),
        "gave up after {:?}",
        started.elapsed()
    );

    // One guest call, several callouts at once: the slowest one's time, not the sum;
    // answers in order, a failure in its place.
    let started = Instant::now();
    let all = [
        ("x-cap-callout-all", "auth,auth,nowhere,auth"),
        ("x-cap-callout-path", "/slow"),
    ];
    let (status, body) = responded(run(&*filter, "/", &all).await.0).await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 4, "{body}");
    assert_eq!([lines[0], lines[1], lines[3]], ["201 hello capabilities"; 3]);
    assert!(lines[2].starts_with("CalloutError::UnknownCluster("), "{body}");
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "three 300 ms callouts ran in parallel: {:?}",
        started.elapsed()
    );
    let many = vec!["auth"; 17].join(",");
    let (status, body) = responded(run(&*filter, "/", &[("x-cap-callout-all", many.as_str())]).await.0).await;
    assert_eq!(status, 200);
    assert_eq!(body.lines().filter(|l| l.starts_with("201")).count(), 16);
    assert!(body.lines().last().is_some_and(|l| l.contains("at most 16")), "{body}");

    // Concurrent phases suspended in callouts each hold their own instance.
    let calls = (0..8).map(|_| {
        let filter = filter.clone();
        async move {
            run(
                &*filter,
                "/",
                &[("x-cap-callout", "auth"), ("x-cap-callout-path", "/slow")],
            )
            .await
            .0
        }
    });
    let started = Instant::now();
    for decision in futures_util::future::join_all(calls).await {
        assert_eq!(responded(decision).await.0, 200);
    }
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "callouts ran concurrently: {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn fields_read_every_value_and_keep_framing_to_the_proxy() {
    let filter = caps("cap-fields").await;
    let mut req = request("/", &[("x-cap-fields", "1"), ("x-multi", "a"), ("content-length", "0")]);
    req.head.headers.append("x-multi", "b".parse().expect("value"));
    assert!(is_continue(&on_request(&*filter, &mut req).await));
    assert_eq!(header(&req, "x-fields-multi"), Some("a,b"));
    assert_eq!(header(&req, "x-fields-has-multi"), Some("true"));
    assert_eq!(header(&req, "x-fields-count"), Some("4"));
    assert_eq!(
        header(&req, "x-fields-framing"),
        Some("HeaderError::Forbidden(\"content-length\")")
    );
    assert_eq!(
        header(&req, "content-length"),
        Some("0"),
        "the framing header is untouched"
    );
}

#[tokio::test]
async fn batch_header_calls_read_set_and_delete_many_and_set_all_or_nothing() {
    let filter = caps("cap-many").await;
    let (decision, req) = run(
        &*filter,
        "/",
        &[
            ("x-cap-fields-many", "0"),
            ("x-a", "a"),
            ("x-b", "b"),
            ("x-d1", "gone"),
            ("x-d2", "gone"),
            ("content-length", "0"),
        ],
    )
    .await;
    assert!(is_continue(&decision), "{:?}", decision.err());
    assert_eq!(
        header(&req, "x-many-get"),
        Some("a|b|none"),
        "in order, names case-insensitive"
    );
    assert_eq!(header(&req, "x-many-set"), Some("ok"));
    assert_eq!((header(&req, "x-s1"), header(&req, "x-s2")), (Some("1"), Some("2")));
    assert_eq!((header(&req, "x-d1"), header(&req, "x-d2")), (None, None));
    assert_eq!(
        header(&req, "x-many-atomic"),
        Some("HeaderError::Forbidden(\"content-length\")")
    );
    assert_eq!(header(&req, "x-atomic"), None, "a refused batch changes nothing");
    assert_eq!(
        header(&req, "content-length"),
        Some("0"),
        "the framing header is the proxy's"
    );
}

#[tokio::test]
async fn a_guest_asking_for_too_many_headers_in_one_call_fails_the_phase() {
    let filter = caps("cap-many-flood").await;
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-many", "64")]).await;
    assert!(is_continue(&decision), "64 names is the bound: {:?}", decision.err());
    // A guest could otherwise make the host copy one large header a million times.
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-many", "100000")]).await;
    assert!(decision.is_err(), "over the bound the phase fails (closed)");
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-many", "1")]).await;
    assert!(is_continue(&decision), "the next request runs on a clean instance");
}

#[tokio::test]
async fn a_guest_filling_the_header_map_fails_its_phase_and_the_host_survives() {
    // CPU enough for 40 000 host calls in a debug build: the map's bound, not the budget,
    // must be what stops the guest.
    let filter = load_with(
        "cap-append-flood",
        plugins::CAPABILITIES,
        "{}",
        &limits(64 << 20, Duration::from_secs(30), 1 << 20),
        clusters(&[]),
    )
    .await
    .expect("load capabilities");
    let (decision, _) = run(&*filter, "/", &[("x-cap-append-flood", "100")]).await;
    assert!(is_continue(&decision), "{:?}", decision.err());
    // `http::HeaderMap` panics past 32 768 entries on a plain append: the host must refuse
    // the append instead, and fail only this phase.
    let (decision, _) = run(&*filter, "/", &[("x-cap-append-flood", "40000")]).await;
    let err = format!("{:?}", decision.err());
    assert!(err.contains("header list is full"), "{err}");
    let (decision, _) = run(&*filter, "/", &[("x-cap-append-flood", "1")]).await;
    assert!(is_continue(&decision), "the next request runs on a clean instance");
}

#[tokio::test]
async fn a_guest_leaking_header_lists_hits_a_limit_not_the_hosts_memory() {
    let filter = caps("cap-leak").await;
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-leak", "60")]).await;
    assert!(is_continue(&decision), "under the limit");
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-leak", "100000")]).await;
    assert!(
        matches!(decision, Err(FilterError::LimitExceeded(Limit::Fields))),
        "{:?}",
        decision.err()
    );
    // The instance that leaked is dropped; the next request runs on a clean one.
    let (decision, _) = run(&*filter, "/", &[("x-cap-fields-leak", "60")]).await;
    assert!(is_continue(&decision));
}

#[tokio::test]
async fn context_values_reach_the_response_phase_and_later_filters_by_name() {
    let first = caps("first").await;
    let second = caps("second").await;
    let mut context = ctx();
    let mut req = request("/", &[("x-cap-ctx-set", "user=alice")]);
    assert!(is_continue(&first.on_request(&mut req, &mut context).await));
    assert_eq!(header(&req, "x-ctx-set"), Some("ok"));

    // A later filter reads it by the writer's name, and cannot overwrite it: its own
    // write is filed under its own name.
    let mut req = request(
        "/",
        &[("x-cap-ctx-from", "first/user"), ("x-cap-ctx-set", "user=mallory")],
    );
    assert!(is_continue(&second.on_request(&mut req, &mut context).await));
    assert_eq!(header(&req, "x-ctx-from"), Some("alice"));
    let mut req = request("/", &[("x-cap-ctx-from", "first/user")]);
    assert!(is_continue(&second.on_request(&mut req, &mut context).await));
    assert_eq!(
        header(&req, "x-ctx-from"),
        Some("alice"),
        "not forged by another filter"
    );

    // Each filter's response phase sees its own value.
    let mut resp = response(200, &[]);
    assert!(is_continue(&second.on_response(&mut resp, &mut context).await));
    assert_eq!(resp.head.headers["x-ctx-own"], "mallory");
    let mut resp = response(200, &[]);
    assert!(is_continue(&first.on_response(&mut resp, &mut context).await));
    assert_eq!(resp.head.headers["x-ctx-own"], "alice");

    // Another request starts empty, on the same (pooled) instances.
    let mut resp = response(200, &[]);
    assert!(is_continue(&first.on_response(&mut resp, &mut ctx()).await));
    assert!(resp.head.headers.get("x-ctx-own").is_none());
}

#[tokio::test]
async fn a_request_context_is_bounded() {
    let filter = caps("cap-flood").await;
    let (decision, req) = run(&*filter, "/", &[("x-cap-ctx-flood", "100")]).await;
    assert!(is_continue(&decision));
    // 16 KiB of keys and values, 1 KiB values: 15 fit.
    assert_eq!(header(&req, "x-ctx-flood"), Some("15"));
    assert_eq!(header(&req, "x-ctx-flood-error"), Some("ContextError::Full"));
}

#[tokio::test]
async fn a_filter_declares_its_phases() {
    let both = caps("cap-both").await;
    assert!(both.has_request_phase() && both.has_response_phase());
    let request_only = load("cap-req", plugins::CAPABILITIES, r#"{"phases": "request"}"#)
        .await
        .expect("load");
    assert!(request_only.has_request_phase() && !request_only.has_response_phase());
    let response_only = load("cap-resp-only", plugins::CAPABILITIES, r#"{"phases": "response"}"#)
        .await
        .expect("load");
    assert!(!response_only.has_request_phase() && response_only.has_response_phase());
}
