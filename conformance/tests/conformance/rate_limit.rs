//! The `rate-limit` plugin through the real binary: exact counts at the boundary, the
//! headers, bucket refill, key isolation, several limits, and (in `global.rs`) limits
//! shared by two proxies through a real `redis-server`, and Redis failures.
//!
//! Windows are aligned to the Unix epoch (every proxy agrees without talking), so tests
//! counting in a window first wait for a fresh one: the counts are then exact.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use weft_conformance::*;

mod global;

const PLUGIN: &str = plugins::RATE_LIMIT;

/// A proxy config: one rate-limit filter named `rl` with `config` (a TOML inline table's
/// inside) on route `all`, in front of `up`; `extra` goes at the top (e.g. `[kv]`).
fn config(up: &Upstream, extra: &str, filter_config: &str) -> String {
    Config::new()
        .top(extra)
        .cluster("web", &[up.addr])
        .wasm_filter("rl", PLUGIN, filter_config, "")
        .route("all", "path_prefix = \"/\"", "web", &["rl"], "")
        .to_string()
}

/// A client whose connections come from `local` (127.0.0.x: distinct client addresses).
fn client_from(local: Ipv4Addr) -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_local_address(Some(IpAddr::V4(local)));
    Client::builder(TokioExecutor::new()).build(connector)
}

async fn hit(client: &Client<HttpConnector, Full<Bytes>>, addr: SocketAddr, headers: &[(&str, &str)]) -> Reply {
    let mut builder = Request::get(format!("http://{addr}/x"));
    for (n, v) in headers {
        builder = builder.header(*n, *v);
    }
    send(client, builder.body(Full::new(Bytes::new())).expect("request")).await
}

fn num(reply: &Reply, name: &str) -> Option<u64> {
    reply.header(name)?.parse().ok()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// Sleeps until 30 ms into the next window of `per_ms` (epoch-aligned, as the plugin's).
async fn next_window(per_ms: u64) {
    let wait = per_ms - now_ms() % per_ms + 30;
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

/// Asserts both header families agree and returns (limit, remaining, reset).
fn rate_headers(reply: &Reply) -> (u64, u64, u64) {
    let get = |n: &str| num(reply, n).unwrap_or_else(|| panic!("no {n} on {}: {:?}", reply.status, reply.headers));
    let ietf = (
        get("ratelimit-limit"),
        get("ratelimit-remaining"),
        get("ratelimit-reset"),
    );
    let x = (
        get("x-ratelimit-limit"),
        get("x-ratelimit-remaining"),
        get("x-ratelimit-reset"),
    );
    assert_eq!(ietf, x, "RateLimit-* and X-RateLimit-* disagree");
    ietf
}

#[tokio::test]
async fn fixed_window_allows_exactly_the_limit_then_429_until_the_window_ends() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(
        &up,
        "",
        r#"limits = [{ key = ["client_ip"], rate = 5, per = "2s" }]"#,
    ))
    .await;
    let client = http1_client();
    next_window(2000).await;
    for i in 1..=5u64 {
        let r = hit(&client, weft.addr, &[]).await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        let (limit, remaining, reset) = rate_headers(&r);
        assert_eq!((limit, remaining), (5, 5 - i), "request {i}");
        assert!((1..=2).contains(&reset), "reset {reset}");
    }
    let sixth = hit(&client, weft.addr, &[]).await;
    assert_eq!(sixth.status, 429, "{}", sixth.text());
    let retry: u64 = num(&sixth, "retry-after").expect("Retry-After");
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    assert_eq!(rate_headers(&sixth).0, 5);
    assert_eq!(rate_headers(&sixth).1, 0);
    assert_eq!(up.hits(), 5, "the 429 never reached the upstream");
    // Still denied within the window; allowed again in the next one.
    assert_eq!(hit(&client, weft.addr, &[]).await.status, 429);
    next_window(2000).await;
    let again = hit(&client, weft.addr, &[]).await;
    assert_eq!(again.status, 200);
    assert_eq!(rate_headers(&again).1, 4, "a fresh window (denials took nothing)");
    assert_eq!(
        weft.metric(r#"weft_filter_events_total{filter="rl",name="limited"}"#)
            .await,
        2.0
    );
}

#[tokio::test]
async fn token_bucket_allows_a_burst_then_refills_at_the_rate() {
    let up = Upstream::echo("up").await;
    // One token per 200 ms, at most 3 at once.
    let weft = Weft::start(&config(
        &up,
        "",
        r#"limits = [{ key = ["client_ip"], rate = 5, per = "1s", algorithm = "token_bucket", burst = 3 }]"#,
    ))
    .await;
    let client = http1_client();
    for left in [2, 1, 0] {
        let r = hit(&client, weft.addr, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(rate_headers(&r).1, left);
    }
    let denied = hit(&client, weft.addr, &[]).await;
    assert_eq!(denied.status, 429);
    assert_eq!(num(&denied, "retry-after"), Some(1), "a token is back within a second");
    // 450 ms later two tokens are back (one every 200 ms), not three.
    tokio::time::sleep(Duration::from_millis(450)).await;
    assert_eq!(hit(&client, weft.addr, &[]).await.status, 200);
    assert_eq!(hit(&client, weft.addr, &[]).await.status, 200);
    assert_eq!(hit(&client, weft.addr, &[]).await.status, 429);
    // Idle long enough, the bucket is full again, and no fuller than the burst.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    for _ in 0..3 {
        assert_eq!(hit(&client, weft.addr, &[]).await.status, 200);
    }
    assert_eq!(hit(&client, weft.addr, &[]).await.status, 429);
}

#[tokio::test]
async fn counters_are_per_client_address_and_per_header_value() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(
        &up,
        "",
        r#"limits = [{ name = "ip", key = ["client_ip"], rate = 3, per = "10s" },
                     { name = "user", key = ["header:x-user"], rate = 2, per = "10s" }]"#,
    ))
    .await;
    let (one, two) = (
        client_from(Ipv4Addr::new(127, 0, 0, 1)),
        client_from(Ipv4Addr::new(127, 0, 0, 2)),
    );
    next_window(10_000).await;
    // Per user: alice's 2 do not touch bob's (all from 127.0.0.2, within its limit of 3).
    assert_eq!(hit(&two, weft.addr, &[("x-user", "alice")]).await.status, 200);
    assert_eq!(hit(&two, weft.addr, &[("x-user", "alice")]).await.status, 200);
    let alice = hit(&two, weft.addr, &[("x-user", "alice")]).await;
    assert_eq!(alice.status, 429);
    assert_eq!(rate_headers(&alice).0, 2, "the user limit denied");
    let bob = hit(&two, weft.addr, &[("x-user", "bob")]).await;
    assert_eq!(bob.status, 200, "another user has their own counter");
    // 127.0.0.2 has used 3 (alice's denial was refunded); 127.0.0.1 none.
    let ip = hit(&two, weft.addr, &[]).await;
    assert_eq!(ip.status, 429, "no x-user: only the ip limit applies, and it is spent");
    assert_eq!(rate_headers(&ip).0, 3);
    for left in [2, 1, 0] {
        let r = hit(&one, weft.addr, &[]).await;
        assert_eq!(r.status, 200, "another client address has its own counter");
        assert_eq!(rate_headers(&r), (3, left, rate_headers(&r).2));
    }
    assert_eq!(hit(&one, weft.addr, &[]).await.status, 429);
}

#[tokio::test]
async fn the_strictest_of_several_limits_wins_and_denials_take_nothing() {
    let up = Upstream::echo("up").await;
    let weft = Weft::start(&config(
        &up,
        "",
        r#"limits = [{ name = "wide", key = ["client_ip"], rate = 8, per = "4s" },
                     { name = "route", key = ["route", "path"], rate = 3, per = "4s", algorithm = "sliding_window" }]"#,
    ))
    .await;
    let client = http1_client();
    // Sliding windows weigh the previous window: start two windows after any earlier use.
    next_window(4000).await;
    for left in [2, 1, 0] {
        let r = hit(&client, weft.addr, &[]).await;
        assert_eq!(r.status, 200);
        assert_eq!(rate_headers(&r).0, 3, "the headers describe the strictest limit");
        assert_eq!(rate_headers(&r).1, left);
    }
    for _ in 0..4 {
        let r = hit(&client, weft.addr, &[]).await;
        assert_eq!(r.status, 429);
        assert_eq!(rate_headers(&r).0, 3);
        // Next window the 3 weigh 3 * (1 - t/4s): one more fits after t = 4/3 s, so
        // about 4 s (this window) + 1.33 s.
        let retry = num(&r, "retry-after").expect("Retry-After");
        assert!((5..=6).contains(&retry), "Retry-After {retry}");
    }
    // The 4 denials did not consume the wide limit (8 - 3 - 1 = 4 left there after the
    // next request; had they, it would be at 0 and its limit of 8 would show).
    let other_path = {
        let req = Request::get(format!("http://{}/other", weft.addr))
            .body(Full::new(Bytes::new()))
            .expect("request");
        send(&client, req).await
    };
    assert_eq!(other_path.status, 200, "another path has its own route limit");
    assert_eq!(rate_headers(&other_path).0, 3);
    assert_eq!(rate_headers(&other_path).1, 2);
    assert_eq!(up.hits(), 4);
}

#[tokio::test]
async fn bad_configs_are_refused_with_the_reason() {
    let up = Upstream::echo("up").await;
    let check = |text: String| {
        let (ok, out) = weft_check(&text, &[]);
        assert!(!ok);
        out
    };
    let err = check(config(
        &up,
        "",
        r#"limits = [{ key = ["clientip"], rate = 5, per = "1s" }]"#,
    ));
    assert!(
        err.contains("unknown descriptor \\\"clientip\\\"") || err.contains("unknown descriptor \"clientip\""),
        "{err}"
    );
    let err = check(config(&up, "", r#"limits = [{ rate = 5, per = "1s", burst = 2 }]"#));
    assert!(err.contains("burst is only for"), "{err}");
    let err = check(config(&up, "[kv]\nbackend = \"redis\"\n", r#"limits = []"#));
    assert!(err.contains(":1:1: [kv]: backend = \"redis\" needs url"), "{err}");
    let err = check(config(
        &up,
        "[kv]\nbackend = \"redis\"\nurl = \"http://x\"\n",
        r#"limits = []"#,
    ));
    assert!(err.contains("must start with redis://"), "{err}");
}
