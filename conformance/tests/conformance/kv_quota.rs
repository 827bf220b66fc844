//! Per-filter KV quotas through the real binary: a filter flooding its KV space far past
//! its quota (and past the 1M keys the store once held for all filters together) keeps
//! writing, by evicting its own keys, while a rate limit on another route keeps counting
//! exactly: its keys are in another space that the flood cannot touch.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use weft_conformance::*;

/// Requests per window the rate limit allows.
const LIMIT: usize = 5;
const WINDOW_MS: u64 = 4000;
/// Keys the flooding filter may hold.
const QUOTA: u64 = 2000;
/// Writes per flood request, and flood requests: over 1M writes in all.
const PER_REQUEST: u64 = 5000;
const FLOOD_REQUESTS: u64 = 220;

fn config(up: &Upstream) -> String {
    Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter(
            "noisy",
            plugins::CAPABILITIES,
            "",
            &format!("limits = {{ kv_keys = {QUOTA}, kv_bytes = 1048576, cpu = \"2s\" }}"),
        )
        .wasm_filter(
            "rl",
            plugins::RATE_LIMIT,
            &format!("limits = [{{ key = [\"client_ip\"], rate = {LIMIT}, per = \"{WINDOW_MS}ms\" }}]"),
            "",
        )
        .route("noisy", "path_prefix = \"/noisy\"", "web", &["noisy"], "")
        .route("limited", "path_prefix = \"/\"", "web", &["rl"], "")
        .to_string()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// Sleeps until 50 ms into the next window (epoch-aligned, as the plugin's).
async fn next_window() {
    let wait = WINDOW_MS - now_ms() % WINDOW_MS + 50;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// One flood request: `PER_REQUEST` fresh keys (the batch number keeps them distinct).
async fn flood(weft: &Weft, batch: u64) -> serde_json::Value {
    let req = Request::get(weft.url("/noisy"))
        .header("x-cap-kv-fill", format!("b{batch}-:{PER_REQUEST}"))
        .header("x-cap-kv-ttl-ms", "600000")
        .body(Full::new(Bytes::new()))
        .expect("request");
    let reply = send(&http1_client(), req).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

/// `LIMIT + 3` requests inside one window: exactly `LIMIT` pass.
async fn one_window(weft: &Weft, when: &str) {
    next_window().await;
    let client = http1_client();
    let mut statuses = Vec::new();
    for _ in 0..LIMIT + 3 {
        let reply = send(
            &client,
            Request::get(weft.url("/x"))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await;
        statuses.push(reply.status);
    }
    let expected: Vec<u16> = [200].repeat(LIMIT).into_iter().chain([429; 3]).collect();
    assert_eq!(statuses, expected, "the rate limit {when} the flood");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_flooding_its_kv_space_evicts_its_own_keys_and_never_loosens_another_filters_limit() {
    let up = Upstream::echo("web").await;
    let weft = Weft::start(&config(&up)).await;

    one_window(&weft, "before").await;

    // The flood runs while the limit is checked, window by window, and goes on until both
    // the checks are done and it has written over 1M keys.
    let checked = AtomicBool::new(false);
    let batches = AtomicU64::new(0);
    let flooding = async {
        let mut batch = 0;
        while batch < FLOOD_REQUESTS || !checked.load(Ordering::SeqCst) {
            let seen = flood(&weft, batch).await;
            assert_eq!(
                seen_header(&seen, "x-kv-filled"),
                Some(PER_REQUEST.to_string().as_str()),
                "every write of the flooding filter succeeds (error: {:?})",
                seen_header(&seen, "x-kv-fill-error")
            );
            batch += 1;
            batches.store(batch, Ordering::SeqCst);
        }
    };
    let checking = async {
        // Let the flood fill the space first.
        while weft.metric("weft_kv_evictions_total{filter=\"noisy\"}").await == 0.0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        one_window(&weft, "during").await;
        one_window(&weft, "during").await;
        checked.store(true, Ordering::SeqCst);
    };
    tokio::join!(flooding, checking);
    let batches = batches.load(Ordering::SeqCst);

    one_window(&weft, "after").await;

    let evicted = weft.metric("weft_kv_evictions_total{filter=\"noisy\"}").await as u64;
    assert!(
        evicted >= batches * PER_REQUEST - QUOTA,
        "the flood evicted its own keys: {evicted}"
    );
    assert_eq!(weft.metric("weft_kv_evictions_total{filter=\"rl\"}").await, 0.0);
    assert_eq!(
        weft.metric("weft_filter_events_total{filter=\"rl\",name=\"store_errors\"}")
            .await,
        0.0,
        "the rate limiter's store never failed (with on_store_error = allow it would fail open)"
    );
    // The most recent keys are the flood's survivors: the space holds its quota, no more.
    let reply = send(
        &http1_client(),
        Request::get(weft.url("/noisy"))
            .header("x-cap-kv-get", format!("b{}-{}", batches - 1, PER_REQUEST - 1))
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(seen_header(&reply.json(), "x-kv-value"), Some("v".repeat(32).as_str()));
    let reply = send(
        &http1_client(),
        Request::get(weft.url("/noisy"))
            .header("x-cap-kv-get", "b0-0")
            .body(Full::new(Bytes::new()))
            .expect("request"),
    )
    .await;
    assert_eq!(
        seen_header(&reply.json(), "x-kv-missing"),
        Some("1"),
        "the oldest flood key was evicted"
    );
}

/// The rate limiter's own space full (more live counters than `kv_keys`): evicting a
/// counter resets that descriptor's window — one more `rate`, then the limit holds again
/// — and the store never fails, so `on_store_error = "allow"` never turns the limit off.
/// Alice's limit has a 2 s window and the others' an hour, so her counter is the one
/// nearest to expiring: the eviction order makes it the one to go.
#[tokio::test]
async fn when_the_rate_limiters_own_space_is_full_an_eviction_resets_one_window_and_no_more() {
    let up = Upstream::echo("web").await;
    let limits = "{ name = \"alice\", key = [\"header:x-alice\"], rate = 3, per = \"2s\" }, \
                  { name = \"users\", key = [\"header:x-user\"], rate = 3, per = \"1h\" }";
    let config = Config::new()
        .cluster("web", &[up.addr])
        .wasm_filter(
            "rl",
            plugins::RATE_LIMIT,
            &format!("response_headers = false, limits = [{limits}]"),
            "limits = { kv_keys = 4 }",
        )
        .route("all", "path_prefix = \"/\"", "web", &["rl"], "");
    let weft = Weft::start(&config.to_string()).await;
    let client = http1_client();
    let hit = |header: &'static str, value: String| {
        let (client, url) = (&client, weft.url("/x"));
        async move {
            let req = Request::get(url)
                .header(header, value)
                .body(Full::new(Bytes::new()))
                .expect("request");
            send(client, req).await.status
        }
    };
    // Not in the last seconds of the hour, where the users' counters would expire first.
    let hour = 3_600_000;
    if hour - now_ms() % hour < 10_000 {
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    let wait = 2000 - now_ms() % 2000 + 30;
    tokio::time::sleep(Duration::from_millis(wait)).await;

    let mut alice = Vec::new();
    for _ in 0..4 {
        alice.push(hit("x-alice", "a".into()).await);
    }
    assert_eq!(alice, [200, 200, 200, 429]);
    // Four users fill the space of four keys: the fourth evicts alice's counter.
    for i in 0..4 {
        assert_eq!(hit("x-user", format!("user{i}")).await, 200);
    }
    assert_eq!(weft.metric("weft_kv_evictions_total{filter=\"rl\"}").await, 1.0);
    // Her window restarts: one more quota, and the limit holds again after it.
    let mut again = Vec::new();
    for _ in 0..5 {
        again.push(hit("x-alice", "a".into()).await);
    }
    assert_eq!(again, [200, 200, 200, 429, 429]);
    assert_eq!(
        weft.metric("weft_filter_events_total{filter=\"rl\",name=\"store_errors\"}")
            .await,
        0.0
    );
}
