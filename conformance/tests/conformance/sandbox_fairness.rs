//! Fairness of the Wasm sandbox through the real binary: a filter stuck in slow calls is
//! held to its own `max_concurrency` and queue (the excess gets 503 + `Retry-After`)
//! while other routes keep answering, and a host-side failure (no instance left in the
//! engine's pool) fails the request even when the filter says `on_error = "open"`: an
//! auth filter is never skipped for the host's trouble.

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use weft_conformance::*;

/// An upstream answering every request after `delay`, with `status`.
async fn slow(delay: Duration, status: u16) -> Upstream {
    Upstream::start(move |_req| async move {
        tokio::time::sleep(delay).await;
        http::Response::builder()
            .status(status)
            .body(full("slow answer\n"))
            .expect("response")
    })
    .await
}

const CALLOUT: [(&str, &str); 2] = [("x-cap-callout", "slowsvc"), ("x-cap-callout-timeout-ms", "10000")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_filter_queues_and_refuses_its_own_excess_while_other_routes_answer_promptly() {
    let web = Upstream::echo("web").await;
    let svc = slow(Duration::from_millis(1000), 200).await;
    let cap = plugins::CAPABILITIES;
    let config = Config::new()
        .cluster("web", &[web.addr])
        .cluster("slowsvc", &[svc.addr])
        // Fail-open on purpose: an overloaded filter is still never skipped.
        .wasm_filter(
            "slow",
            cap,
            "",
            "on_error = \"open\"\nlimits = { max_concurrency = 2, max_queue = 2, queue_timeout = \"5s\" }",
        )
        .wasm_filter(
            "impatient",
            cap,
            "",
            "on_error = \"open\"\nlimits = { max_concurrency = 1, max_queue = 8, queue_timeout = \"200ms\" }",
        )
        .wasm_filter("fast", cap, "", "")
        .route("slow", "path_prefix = \"/slow\"", "web", &["slow"], "")
        .route("impatient", "path_prefix = \"/impatient\"", "web", &["impatient"], "")
        .route("fast", "path_prefix = \"/\"", "web", &["fast"], "");
    let weft = Weft::start(&config.to_string()).await;

    // 10 at once: 2 run, 2 wait for them, 6 are refused at once.
    let started = Instant::now();
    let slow_burst = join_all((0..10).map(|_| weft.get_with("/slow", &CALLOUT)));
    let fast = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut worst = Duration::ZERO;
        for _ in 0..10 {
            let t = Instant::now();
            let reply = weft.get_with("/fast", &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            worst = worst.max(t.elapsed());
        }
        worst
    };
    let (replies, worst_fast) = tokio::join!(slow_burst, fast);
    let elapsed = started.elapsed();

    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 503).collect();
    assert_eq!(
        (ok, refused.len()),
        (4, 6),
        "statuses: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &replies[..] {
        if r.status == 200 {
            assert_eq!(
                r.header("x-callout-status"),
                Some("200"),
                "answered by the filter after its callout"
            );
        }
    }
    for r in refused {
        assert_eq!(r.header("retry-after"), Some("1"));
    }
    assert!(
        elapsed >= Duration::from_millis(1900),
        "the queued two waited a turn: {elapsed:?}"
    );
    assert!(
        worst_fast < Duration::from_millis(250),
        "another filter answered within {worst_fast:?}"
    );
    assert_eq!(
        web.hits(),
        10,
        "only /fast reached the upstream: no refused request skipped its filter"
    );
    assert_eq!(
        weft.metric(r#"weft_filter_rejected_total{filter="slow",reason="queue_full"}"#)
            .await,
        6.0
    );

    // A queue whose wait times out: 1 runs, 2 wait 200 ms and are refused.
    let replies = join_all((0..3).map(|_| weft.get_with("/impatient", &CALLOUT))).await;
    let mut statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    statuses.sort_unstable();
    assert_eq!(statuses, [200, 503, 503]);
    assert_eq!(
        weft.metric(r#"weft_filter_rejected_total{filter="impatient",reason="queue_timeout"}"#)
            .await,
        2.0
    );
    assert_eq!(web.hits(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_instance_pool_exhausted_a_fail_open_auth_filter_is_never_skipped() {
    let web = Upstream::echo("web").await;
    // The authorization service denies everyone, slowly: each check holds an instance.
    let authz = slow(Duration::from_millis(300), 403).await;
    let svc = slow(Duration::from_millis(1500), 200).await;
    let config = Config::new()
        .top("[wasm]\nmax_instances = 4")
        .cluster("web", &[web.addr])
        .cluster("authz", &[authz.addr])
        .cluster("slowsvc", &[svc.addr])
        .wasm_filter(
            "authz",
            plugins::EXT_AUTHZ,
            "cluster = \"authz\", timeout = \"5s\"",
            "on_error = \"open\"",
        )
        .wasm_filter("hog", plugins::CAPABILITIES, "", "")
        .route("hog", "path_prefix = \"/hog\"", "web", &["hog"], "")
        .route("api", "path_prefix = \"/api\"", "web", &["authz"], "");
    let weft = Weft::start(&config.to_string()).await;

    // The hog takes what is left of the engine's 4 instances (one is the auth filter's).
    let hogging = join_all((0..6).map(|_| weft.get_with("/hog", &CALLOUT)));
    let api = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        join_all((0..10).map(|_| weft.get_with("/api/data", &[]))).await
    };
    let (_, replies) = tokio::join!(hogging, api);

    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    for status in &statuses {
        assert!(
            *status == 403 || *status >= 500,
            "auth answered or the request failed: {statuses:?}"
        );
    }
    assert!(
        statuses.iter().any(|s| *s >= 500),
        "the pool ran dry for some: {statuses:?}"
    );
    assert_eq!(web.hits(), 0, "no request reached the upstream unauthenticated");
    assert!(
        weft.metric(r#"weft_filter_errors_total{filter="authz",kind="host"}"#)
            .await
            >= 1.0
    );

    // With the hog gone, the auth filter answers for itself again.
    let reply = weft.get_with("/api/data", &[]).await;
    assert_eq!(reply.status, 403);
    assert_eq!(web.hits(), 0);
}
