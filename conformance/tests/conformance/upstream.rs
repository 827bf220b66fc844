//! The upstream side through the real binary: balancing (each algorithm's spread, hash
//! stickiness and what moves when an endpoint leaves), the circuit breaker at its limits,
//! retries and their budget as the upstream sees them, outlier detection and health
//! checks ejecting and readmitting a failing endpoint, names resolved to every address,
//! an endpoints file, and pooled connections kept across a reload.

mod pool;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use weft_conformance::*;

/// An upstream that answers its name with a status the test sets, and records the
/// `x-weft-attempt` and body of every request it sees. `/health` answers
/// `health_status`.
struct Named {
    up: Upstream,
    status: Arc<AtomicU16>,
    health_status: Arc<AtomicU16>,
    health_hits: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<(String, String)>>>,
    /// Requests wait this long (ms) before the answer, while nonzero.
    delay_ms: Arc<AtomicU16>,
}

impl Named {
    async fn start(name: &'static str) -> Named {
        let status = Arc::new(AtomicU16::new(200));
        let health_status = Arc::new(AtomicU16::new(200));
        let health_hits = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicU16::new(0));
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (s, hs, hh, d, log) = (
            status.clone(),
            health_status.clone(),
            health_hits.clone(),
            delay_ms.clone(),
            seen.clone(),
        );
        let up = Upstream::start(move |req| {
            let (s, hs, hh, d, log) = (s.clone(), hs.clone(), hh.clone(), d.clone(), log.clone());
            async move {
                if req.uri().path() == "/health" {
                    hh.fetch_add(1, Ordering::SeqCst);
                    return http::Response::builder()
                        .status(hs.load(Ordering::SeqCst))
                        .body(full("health"))
                        .expect("response");
                }
                let attempt = req
                    .headers()
                    .get("x-weft-attempt")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned();
                let body = req
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                log.lock()
                    .expect("log")
                    .push((attempt, String::from_utf8_lossy(&body).into_owned()));
                let delay = d.load(Ordering::SeqCst);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay.into())).await;
                }
                http::Response::builder()
                    .status(s.load(Ordering::SeqCst))
                    .body(full(name))
                    .expect("response")
            }
        })
        .await;
        Named {
            up,
            status,
            health_status,
            health_hits,
            seen,
            delay_ms,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.up.addr
    }

    fn set_status(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn attempts(&self) -> Vec<String> {
        self.seen.lock().expect("log").iter().map(|(a, _)| a.clone()).collect()
    }

    fn requests(&self) -> usize {
        self.seen.lock().expect("log").len()
    }
}

/// A request with headers through the proxy on one keep-alive client.
async fn request(
    client: &Client,
    weft: &Weft,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut req = Request::builder().method(method).uri(weft.url(path));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    send(
        client,
        req.body(Full::new(Bytes::from(body.to_owned()))).expect("request"),
    )
    .await
}

type Client = hyper_util::client::legacy::Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// Which upstream answered each of `n` GETs of `path`, counted by name.
async fn spread(
    client: &Client,
    weft: &Weft,
    path: &str,
    n: usize,
    header: impl Fn(usize) -> Option<String>,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let value = header(i);
        let headers: Vec<(&str, &str)> = value.iter().map(|v| ("x-user", v.as_str())).collect();
        let reply = request(client, weft, "GET", path, &headers, "").await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *counts.entry(reply.text()).or_default() += 1;
    }
    counts
}

fn share(counts: &HashMap<String, usize>, name: &str, total: usize) -> f64 {
    *counts.get(name).unwrap_or(&0) as f64 / total as f64
}

fn weighted(ups: &[&Named], weights: &[u32]) -> String {
    let list: Vec<String> = ups
        .iter()
        .zip(weights)
        .map(|(u, w)| format!("{{ address = \"{}\", weight = {w} }}", u.addr()))
        .collect();
    format!("[{}]", list.join(", "))
}

fn cluster_block(name: &str, endpoints: &str, extra: &str) -> String {
    format!("\n[[clusters]]\nname = \"{name}\"\nendpoints = {endpoints}\n{extra}\n")
}

fn route_block(prefix: &str, cluster: &str, extra: &str) -> String {
    format!("\n[[routes]]\nmatch = {{ path_prefix = \"{prefix}\" }}\ncluster = \"{cluster}\"\n{extra}\n")
}

fn config(clusters: &str, routes: &str) -> String {
    Config::new()
        .top("[runtime]\nwatch = false")
        .clusters(clusters)
        .routes(routes)
        .to_string()
}

#[tokio::test]
async fn each_balancer_spreads_requests_as_its_weights_say() {
    let (a, b, c) = (
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    );
    let ups = [&a, &b, &c];
    let mut clusters = cluster_block("rr", &weighted(&ups, &[1, 1, 1]), "");
    let mut routes = route_block("/rr", "rr", "");
    for lb in ["weighted_round_robin", "random", "least_request", "ring_hash", "maglev"] {
        let hash = if lb.ends_with("hash") || lb == "maglev" {
            "hash_on = { header = \"x-user\" }"
        } else {
            ""
        };
        clusters.push_str(&cluster_block(
            lb,
            &weighted(&ups, &[3, 1, 1]),
            &format!("lb = \"{lb}\"\n{hash}"),
        ));
        routes.push_str(&route_block(&format!("/{lb}"), lb, ""));
    }
    let weft = Weft::start(&config(&clusters, &routes)).await;
    let client = http1_client();

    // Round robin and its weighted form are exact over whole turns.
    let rr = spread(&client, &weft, "/rr", 300, |_| None).await;
    assert_eq!((rr["a"], rr["b"], rr["c"]), (100, 100, 100));
    let wrr = spread(&client, &weft, "/weighted_round_robin", 500, |_| None).await;
    assert_eq!((wrr["a"], wrr["b"], wrr["c"]), (300, 100, 100));

    // The random ones within ±8 points of 60/20/20 over 600 requests (well over 4σ).
    for lb in ["random", "least_request", "ring_hash", "maglev"] {
        let n = 600;
        let counts = spread(&client, &weft, &format!("/{lb}"), n, |i| Some(format!("user-{i}"))).await;
        for (name, want) in [("a", 0.6), ("b", 0.2), ("c", 0.2)] {
            let got = share(&counts, name, n);
            assert!(
                (got - want).abs() < 0.08,
                "{lb}: {name} took {got:.3}, wanted {want}: {counts:?}"
            );
        }
    }
    let metrics = weft.admin("GET", "/metrics").await.1;
    assert!(
        metrics.contains(&format!(
            "weft_upstream_requests_total{{cluster=\"rr\",endpoint=\"{}\"}} 100",
            a.addr()
        )),
        "{metrics}"
    );
}

#[tokio::test]
async fn hashing_is_sticky_and_an_endpoint_leaving_moves_only_its_own_keys() {
    let (a, b, c) = (
        Named::start("a").await,
        Named::start("b").await,
        Named::start("c").await,
    );
    let three = [&a, &b, &c];
    let two = [&a, &b];
    let clusters = |ups: &[&Named]| {
        let eps = weighted(ups, &vec![1; ups.len()]);
        cluster_block("ring", &eps, "lb = \"ring_hash\"\nhash_on = { header = \"x-user\" }")
            + &cluster_block("maglev", &eps, "lb = \"maglev\"\nhash_on = { cookie = \"session\" }")
            + &cluster_block(
                "client",
                &eps,
                "lb = \"ring_hash\"\nhash_on = { client_address = true }",
            )
    };
    let routes = route_block("/ring", "ring", "")
        + &route_block("/maglev", "maglev", "")
        + &route_block("/client", "client", "");
    let weft = Weft::start(&config(&clusters(&three), &routes)).await;
    let client = http1_client();

    async fn owners(client: &Client, weft: &Weft) -> (Vec<String>, Vec<String>) {
        let mut ring = Vec::new();
        let mut maglev = Vec::new();
        for i in 0..150 {
            let user = format!("user-{i}");
            ring.push(
                request(client, weft, "GET", "/ring", &[("x-user", &user)], "")
                    .await
                    .text(),
            );
            let cookie = format!("theme=dark; session={user}");
            maglev.push(
                request(client, weft, "GET", "/maglev", &[("cookie", &cookie)], "")
                    .await
                    .text(),
            );
        }
        (ring, maglev)
    }
    let before = owners(&client, &weft).await;
    assert_eq!(
        before,
        owners(&client, &weft).await,
        "the same key goes to the same endpoint"
    );
    for owners in [&before.0, &before.1] {
        assert!(
            ["a", "b", "c"].iter().all(|n| owners.iter().any(|o| o == n)),
            "{owners:?}"
        );
    }
    let by_client: Vec<String> = futures_util::future::join_all(
        (0..10).map(|_| async { request(&client, &weft, "GET", "/client", &[], "").await.text() }),
    )
    .await;
    assert!(
        by_client.iter().all(|o| *o == by_client[0]),
        "one client address, one endpoint: {by_client:?}"
    );

    // c leaves: only its keys move.
    weft.write_config(&config(&clusters(&two), &routes));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let after = owners(&client, &weft).await;
    for (label, b, a) in [("ring", &before.0, &after.0), ("maglev", &before.1, &after.1)] {
        let mut moved_elsewhere = 0;
        for (was, now) in b.iter().zip(a) {
            assert_ne!(now, "c");
            if was != "c" && was != now {
                moved_elsewhere += 1;
            }
        }
        // Ring hash moves none of the others; Maglev at most a few percent.
        let allowed = if label == "ring" { 0 } else { 150 * 3 / 100 };
        assert!(
            moved_elsewhere <= allowed,
            "{label}: {moved_elsewhere} keys of a and b moved"
        );
    }
}

#[tokio::test]
async fn the_breaker_answers_503_at_once_past_each_limit() {
    let slow = Named::start("slow").await;
    slow.delay_ms.store(600, Ordering::SeqCst);
    let eps = format!("[\"{}\"]", slow.addr());
    let clusters = cluster_block("requests", &eps, "[clusters.circuit_breaker]\nmax_requests = 2")
        + &cluster_block("connections", &eps, "[clusters.circuit_breaker]\nmax_connections = 1");
    let routes = route_block("/requests", "requests", "") + &route_block("/connections", "connections", "");
    let weft = Weft::start(&config(&clusters, &routes)).await;

    for (path, limit, allowed) in [
        ("/requests", "max_requests", 2usize),
        ("/connections", "max_connections", 1),
    ] {
        let before = slow.requests();
        // `allowed` requests fill the limit; each on a client of its own (own connection).
        let held: Vec<_> = (0..allowed)
            .map(|_| {
                let url = weft.url(path);
                tokio::spawn(async move { get(&url).await.status })
            })
            .collect();
        let deadline = Instant::now() + Duration::from_secs(5);
        while slow.requests() < before + allowed {
            assert!(Instant::now() < deadline, "the held requests never arrived");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let started = Instant::now();
        let over = get(&weft.url(path)).await;
        assert_eq!(over.status, 503, "{path}: {}", over.text());
        assert_eq!(over.header("x-weft-overloaded"), Some(limit));
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "answered at once, not after the slow ones"
        );
        for h in held {
            assert_eq!(h.await.expect("held"), 200, "{path}: requests within the limit pass");
        }
        // The last held response's connection goes back to the pool just after its end.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(get(&weft.url(path)).await.status, 200, "{path}: below the limit again");
        let series = format!(
            "weft_upstream_overloaded_total{{cluster=\"{}\",reason=\"{limit}\"}}",
            &path[1..]
        );
        assert_eq!(weft.metric(&series).await, 1.0, "{series}");
    }
}

#[tokio::test]
async fn a_flood_past_the_breaker_reaches_the_upstream_only_up_to_its_limit() {
    let slow = Named::start("slow").await;
    slow.delay_ms.store(300, Ordering::SeqCst);
    let clusters = cluster_block(
        "up",
        &format!("[\"{}\"]", slow.addr()),
        "[clusters.circuit_breaker]\nmax_requests = 5",
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let flood: Vec<_> = (0..60)
        .map(|_| {
            let url = weft.url("/");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    let mut statuses = HashMap::new();
    for f in flood {
        *statuses.entry(f.await.expect("request")).or_insert(0) += 1;
    }
    let ok = statuses.get(&200).copied().unwrap_or(0);
    assert!(ok >= 5, "{statuses:?}");
    assert_eq!(ok + statuses.get(&503).copied().unwrap_or(0), 60, "{statuses:?}");
    assert_eq!(slow.requests(), ok, "no refused request reached the upstream");
    assert_eq!(get(&weft.url("/")).await.status, 200, "serving after the flood");
}

#[tokio::test]
async fn retries_are_seen_by_the_upstream_numbered_and_bounded() {
    let flaky = Named::start("flaky").await;
    flaky.set_status(503);
    let eps = format!("[\"{}\"]", flaky.addr());
    let retry = "[clusters.retry]\nattempts = 3\nbackoff_base = \"5ms\"\nbackoff_max = \"20ms\"";
    let clusters = cluster_block("up", &eps, retry)
        + &cluster_block(
            "posts",
            &eps,
            "[clusters.retry]\nattempts = 2\nnon_idempotent = true\nbackoff_base = \"5ms\"",
        )
        + &cluster_block(
            "nobudget",
            &eps,
            "[clusters.retry]\nattempts = 3\nbudget_percent = 0.0\nmin_retries_per_second = 0",
        )
        + &cluster_block(
            "floor",
            &eps,
            "[clusters.retry]\nattempts = 2\nbackoff_base = \"1ms\"\nbudget_percent = 0.0\nmin_retries_per_second = 1",
        );
    let routes = route_block("/posts", "posts", "")
        + &route_block("/nobudget", "nobudget", "")
        + &route_block("/floor", "floor", "")
        + &route_block("/", "up", "");
    let weft = Weft::start(&config(&clusters, &routes)).await;
    let client = http1_client();

    // Every try fails: three tries, numbered, and the last answer is the client's.
    let reply = request(&client, &weft, "GET", "/x", &[], "").await;
    assert_eq!(reply.status, 503);
    assert_eq!(flaky.attempts(), ["1", "2", "3"]);
    let log = without_colours(&weft.log());
    assert!(
        log.lines()
            .any(|l| l.contains("retrying") && l.contains("attempt=3") && l.contains("reason=\"status\"")),
        "each retry is logged with its attempt:\n{log}"
    );

    // A POST is not retried on a cluster that has not said so.
    flaky.seen.lock().expect("log").clear();
    let reply = request(&client, &weft, "POST", "/x", &[], "order=1").await;
    assert_eq!(reply.status, 503);
    assert_eq!(flaky.attempts(), ["1"], "a POST is tried once");

    // With non_idempotent, it is, with its body each time.
    flaky.seen.lock().expect("log").clear();
    let reply = request(&client, &weft, "POST", "/posts", &[], "order=2").await;
    assert_eq!(reply.status, 503);
    let seen = flaky.seen.lock().expect("log").clone();
    assert_eq!(seen, [("1".into(), "order=2".into()), ("2".into(), "order=2".into())]);

    // No budget: never retried, and counted as skipped.
    flaky.seen.lock().expect("log").clear();
    for _ in 0..4 {
        assert_eq!(request(&client, &weft, "GET", "/nobudget", &[], "").await.status, 503);
    }
    assert_eq!(flaky.requests(), 4, "one try each");
    assert_eq!(
        weft.metric("weft_upstream_retries_skipped_total{cluster=\"nobudget\",reason=\"budget\"}")
            .await,
        4.0
    );

    // Only the per-second floor: one retry a second, however many requests fail.
    flaky.seen.lock().expect("log").clear();
    let started = Instant::now();
    for _ in 0..4 {
        assert_eq!(request(&client, &weft, "GET", "/floor", &[], "").await.status, 503);
    }
    if started.elapsed() < Duration::from_millis(900) {
        assert_eq!(flaky.requests(), 5, "four tries and one retry");
    }

    // Healthy again: one try.
    flaky.seen.lock().expect("log").clear();
    flaky.set_status(200);
    assert_eq!(request(&client, &weft, "GET", "/x", &[], "").await.status, 200);
    assert_eq!(flaky.attempts(), ["1"]);
    assert_eq!(
        weft.metric("weft_upstream_retries_total{cluster=\"up\",reason=\"status\"}")
            .await,
        2.0
    );
}

#[tokio::test]
async fn a_retry_goes_past_a_dead_endpoint_and_a_slow_try() {
    let live = Named::start("live").await;
    let dead = dead_addr();
    let slow = Named::start("slow").await;
    slow.delay_ms.store(3000, Ordering::SeqCst);
    let retry = "[clusters.retry]\nattempts = 2\nbackoff_base = \"1ms\"\nper_try_timeout = \"300ms\"";
    let clusters = cluster_block("deadlive", &format!("[\"{dead}\", \"{}\"]", live.addr()), retry)
        + &cluster_block(
            "slowlive",
            &format!("[\"{}\", \"{}\"]", slow.addr(), live.addr()),
            retry,
        );
    let routes = route_block("/dead", "deadlive", "") + &route_block("/slow", "slowlive", "timeout = \"2s\"");
    let weft = Weft::start(&config(&clusters, &routes)).await;
    let client = http1_client();
    for path in ["/dead", "/slow"] {
        for _ in 0..4 {
            let started = Instant::now();
            let reply = request(&client, &weft, "GET", path, &[], "").await;
            assert_eq!((reply.status, reply.text().as_str()), (200, "live"), "{path}");
            assert!(
                started.elapsed() < Duration::from_millis(1500),
                "{path}: the slow try was cut at 300ms"
            );
        }
    }
    assert!(
        weft.metric("weft_upstream_retries_total{cluster=\"deadlive\",reason=\"connect_failure\"}")
            .await
            >= 2.0
    );
    assert!(
        weft.metric("weft_upstream_retries_total{cluster=\"slowlive\",reason=\"per_try_timeout\"}")
            .await
            >= 2.0
    );
}

/// The admin API's endpoints of the first cluster, with their health, as served now.
async fn api_health(weft: &Weft) -> Vec<(String, String)> {
    let (status, text) = weft.admin("GET", "/api/clusters").await;
    assert_eq!(status, 200, "{text}");
    let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    body["clusters"][0]["endpoints"]
        .as_array()
        .expect("endpoints")
        .iter()
        .map(|e| {
            let field = |k: &str| e[k].as_str().unwrap_or("none").to_owned();
            (field("address"), field("health"))
        })
        .collect()
}

#[tokio::test]
async fn outlier_detection_ejects_a_failing_endpoint_and_readmits_it() {
    let (good, bad) = (Named::start("good").await, Named::start("bad").await);
    bad.set_status(500);
    let clusters = cluster_block(
        "up",
        &format!("[\"{}\", \"{}\"]", good.addr(), bad.addr()),
        "[clusters.outlier_detection]\nconsecutive_failures = 3\nbase_ejection = \"2s\"\nmax_ejection_percent = 50",
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let client = http1_client();
    let mut failures = 0;
    // The ejection happens between these two instants.
    let before = Instant::now();
    for _ in 0..40 {
        if request(&client, &weft, "GET", "/", &[], "").await.status != 200 {
            failures += 1;
        }
    }
    let after = Instant::now();
    assert_eq!(failures, 3, "three 500s, then the endpoint is ejected");
    let endpoint = format!("{{cluster=\"up\",endpoint=\"{}\"}}", bad.addr());
    assert_eq!(
        weft.metric(&format!("weft_upstream_ejections_total{endpoint}")).await,
        1.0
    );
    assert_eq!(
        weft.metric(&format!("weft_upstream_endpoint_healthy{endpoint}")).await,
        0.0
    );
    assert_eq!(
        api_health(&weft).await,
        [
            (good.addr().to_string(), "healthy".to_owned()),
            (bad.addr().to_string(), "ejected".to_owned())
        ]
    );

    // A reload keeps the endpoint, and its ejection.
    weft.write_config(&config(&clusters, &route_block("/", "up", "timeout = \"5s\"")));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let counts = spread(&client, &weft, "/", 10, |_| None).await;
    if before.elapsed() < Duration::from_millis(1800) {
        assert_eq!(
            counts.get("good"),
            Some(&10),
            "still ejected after the reload: {counts:?}"
        );
    }

    // Fixed and its ejection over: it takes traffic again.
    bad.set_status(200);
    tokio::time::sleep(Duration::from_millis(2100).saturating_sub(after.elapsed())).await;
    let counts = spread(&client, &weft, "/", 20, |_| None).await;
    assert_eq!(counts.get("bad"), Some(&10), "{counts:?}");
    assert_eq!(
        weft.metric(&format!("weft_upstream_endpoint_healthy{endpoint}")).await,
        1.0
    );
}

#[tokio::test]
async fn health_checks_take_an_endpoint_out_and_back_and_stop_with_their_version() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let eps = format!("[\"{}\", \"{}\"]", a.addr(), b.addr());
    let check = "[clusters.health_check]\npath = \"/health\"\ninterval = \"100ms\"\ntimeout = \"500ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 2";
    let weft = Weft::start(&config(&cluster_block("up", &eps, check), &route_block("/", "up", ""))).await;
    let client = http1_client();

    b.health_status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = spread(&client, &weft, "/", 20, |_| None).await;
    assert_eq!(counts.get("a"), Some(&20), "b failed its checks: {counts:?}");
    assert_eq!(
        api_health(&weft).await,
        [
            (a.addr().to_string(), "healthy".to_owned()),
            (b.addr().to_string(), "unhealthy".to_owned())
        ]
    );

    // Both failing: the panic threshold keeps both serving rather than none.
    a.health_status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = spread(&client, &weft, "/", 20, |_| None).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&10), Some(&10)), "{counts:?}");

    a.health_status.store(200, Ordering::SeqCst);
    b.health_status.store(200, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let counts = spread(&client, &weft, "/", 20, |_| None).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&10), Some(&10)), "{counts:?}");

    // b fails its check again; then a version without checks (outlier detection only):
    // the old verdict no longer counts, and the old version's probes stop.
    b.health_status.store(503, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let outlier_only = "[clusters.outlier_detection]\nconsecutive_failures = 5";
    weft.write_config(&config(
        &cluster_block("up", &eps, outlier_only),
        &route_block("/", "up", ""),
    ));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let counts = spread(&client, &weft, "/", 20, |_| None).await;
    assert_eq!((counts.get("a"), counts.get("b")), (Some(&10), Some(&10)), "{counts:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let probes = a.health_hits.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        a.health_hits.load(Ordering::SeqCst),
        probes,
        "the old version's checker stopped"
    );
}

#[tokio::test]
async fn a_name_stands_for_every_address_it_resolves_to() {
    // Whatever `localhost` resolves to here (127.0.0.1, and ::1 when the hosts file says
    // so), an upstream listens on each, on one port.
    let wanted: Vec<SocketAddr> = tokio::net::lookup_host(("localhost", 0))
        .await
        .expect("localhost resolves")
        .collect();
    let first = Named::start("v4").await;
    let port = first.addr().port();
    let mut servers = vec![];
    for addr in &wanted {
        if addr.ip() == first.addr().ip() {
            continue;
        }
        let socket = tokio::net::TcpListener::bind(SocketAddr::new(addr.ip(), port))
            .await
            .expect("bind");
        servers.push(tokio::spawn(async move {
            while let Ok((stream, _)) = socket.accept().await {
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(full("v6")))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }
    let clusters = cluster_block("up", &format!("[\"localhost:{port}\"]"), "dns_refresh = \"1s\"");
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let client = http1_client();
    let total = 10 * wanted.len();
    let counts = spread(&client, &weft, "/", total, |_| None).await;
    assert_eq!(counts.values().sum::<usize>(), total);
    for addr in &wanted {
        let series = format!(
            "weft_upstream_requests_total{{cluster=\"up\",endpoint=\"{}\"}}",
            SocketAddr::new(addr.ip(), port)
        );
        assert_eq!(
            weft.metric(&series).await,
            10.0,
            "{series}: every address takes its turn"
        );
    }
}

#[tokio::test]
async fn an_endpoints_file_change_applies_and_keeps_the_connections_of_those_that_stay() {
    let (a, b) = (Named::start("a").await, Named::start("b").await);
    let dir = tempfile::tempdir().expect("dir");
    let file = dir.path().join("endpoints.txt");
    std::fs::write(&file, format!("{}\n", a.addr())).expect("write");
    let clusters = format!(
        "\n[[clusters]]\nname = \"up\"\nendpoints_file = \"{}\"\n",
        file.display()
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let client = http1_client();
    assert_eq!(spread(&client, &weft, "/", 5, |_| None).await.get("a"), Some(&5));
    let connections = a.up.connections();

    std::fs::write(&file, format!("# b joins, heavier\n{}\n{} 3\n", a.addr(), b.addr())).expect("write");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = spread(&client, &weft, "/", 8, |_| None).await;
        if counts.contains_key("b") {
            break;
        }
        assert!(Instant::now() < deadline, "b never took traffic:\n{}", weft.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let counts = spread(&client, &weft, "/", 40, |_| None).await;
    assert_eq!(counts.values().sum::<usize>(), 40);
    assert_eq!(a.up.connections(), connections, "a's pooled connection stayed in use");

    // A broken file keeps the endpoints serving.
    std::fs::write(&file, "not an endpoint\n").expect("write");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        spread(&client, &weft, "/", 4, |_| None).await.values().sum::<usize>(),
        4
    );
    assert!(weft.log().contains("keeping the current ones"), "{}", weft.log());

    // A version without the file: the old version's watcher stops with it.
    let fixed = cluster_block("up", &format!("[\"{}\"]", a.addr()), "");
    weft.write_config(&config(&fixed, &route_block("/", "up", "")));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let changes = weft.log().matches("cluster endpoints changed").count();
    std::fs::write(&file, format!("{}\n", b.addr())).expect("write");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        weft.log().matches("cluster endpoints changed").count(),
        changes,
        "{}",
        weft.log()
    );
    assert_eq!(spread(&client, &weft, "/", 4, |_| None).await.get("a"), Some(&4));
}

#[tokio::test]
async fn a_reload_keeps_the_pooled_connections_of_endpoints_that_stay() {
    let a = Named::start("a").await;
    let clusters = cluster_block("up", &format!("[\"{}\"]", a.addr()), "");
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let client = http1_client();
    for _ in 0..3 {
        assert_eq!(request(&client, &weft, "GET", "/", &[], "").await.status, 200);
    }
    let connections = a.up.connections();
    weft.write_config(&config(&clusters, &route_block("/", "up", "timeout = \"3s\"")));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    for _ in 0..3 {
        assert_eq!(request(&client, &weft, "GET", "/", &[], "").await.status, 200);
    }
    assert_eq!(a.up.connections(), connections, "no new connection after the reload");
}

#[tokio::test]
async fn bad_upstream_config_is_refused_naming_the_key_and_line() {
    let a = Named::start("a").await;
    let cases = [
        (
            format!("endpoints = [{{ address = \"{}\", weight = 2 }}]", a.addr()),
            "weights need a balancer that honours them",
        ),
        (
            format!("endpoints = [\"{}\"]\nlb = \"maglev\"", a.addr()),
            "need hash_on",
        ),
        (
            format!("endpoints = [\"{}\"]\n[clusters.retry]\nattempts = 0", a.addr()),
            "retry.attempts is between 1 and 10",
        ),
        (
            format!(
                "endpoints = [\"{}\"]\n[clusters.circuit_breaker]\nmax_requests = 0",
                a.addr()
            ),
            "circuit_breaker.max_requests must be more than zero",
        ),
        ("endpoints = [\"127.0.0.1\"]".to_owned(), "is not host:port"),
    ];
    for (cluster, want) in cases {
        let text = config(
            &format!("\n[[clusters]]\nname = \"up\"\n{cluster}\n"),
            &route_block("/", "up", ""),
        );
        let (ok, err) = weft_check(&text, &[]);
        assert!(!ok, "{cluster}: accepted");
        assert!(err.contains(want), "{cluster}: {err}");
        assert!(err.contains("weft.toml:"), "{cluster}: located: {err}");
    }
}

/// An HTTP/1.1 upstream answering its name, that can be killed — its listener and every
/// connection closed at once, as a crashed process's are — and started again on its port,
/// which it holds while dead (refusing connections, taken by nobody else).
struct Killable {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    task: Option<tokio::task::JoinHandle<()>>,
    _port: ReservedPort,
}

impl Killable {
    async fn start(name: &'static str) -> Killable {
        let port = ReservedPort::new();
        let mut k = Killable {
            addr: SocketAddr::from(([127, 0, 0, 1], port.port)),
            hits: Arc::new(AtomicUsize::new(0)),
            task: None,
            _port: port,
        };
        k.revive(name).await;
        k
    }

    async fn revive(&mut self, name: &'static str) {
        let socket = tokio::net::TcpListener::bind(self.addr).await.expect("bind");
        self.addr = socket.local_addr().expect("addr");
        let hits = self.hits.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = socket.accept().await {
                let hits = hits.clone();
                connections.spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        hits.fetch_add(1, Ordering::SeqCst);
                        async move { Ok::<_, std::convert::Infallible>(http::Response::new(full(name))) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        }));
    }

    fn kill(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

#[tokio::test]
async fn an_endpoint_killed_under_load_is_ejected_without_failing_clients_and_readmitted() {
    let a = Named::start("a").await;
    let mut b = Killable::start("b").await;
    let eps = format!("[\"{}\", \"{}\"]", a.addr(), b.addr);
    let retry =
        "[clusters.retry]\nattempts = 3\nbackoff_base = \"1ms\"\nbackoff_max = \"5ms\"\nmin_retries_per_second = 1000";
    let clusters = cluster_block(
        "outlier",
        &eps,
        &format!(
            "{retry}\n[clusters.outlier_detection]\nconsecutive_failures = 2\nbase_ejection = \"1s\"\nmax_ejection_percent = 50"
        ),
    ) + &cluster_block(
        "checked",
        &eps,
        &format!(
            "{retry}\n[clusters.health_check]\npath = \"/\"\ninterval = \"100ms\"\ntimeout = \"200ms\"\nhealthy_threshold = 1\nunhealthy_threshold = 1"
        ),
    );
    let routes = route_block("/outlier", "outlier", "") + &route_block("/checked", "checked", "");
    let weft = Arc::new(Weft::start(&config(&clusters, &routes)).await);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..8)
        .map(|i| {
            let (weft, stop) = (weft.clone(), stop.clone());
            let path = if i % 2 == 0 { "/outlier" } else { "/checked" };
            tokio::spawn(async move {
                let client = http1_client();
                let mut answers: HashMap<(u16, String), usize> = HashMap::new();
                while !stop.load(Ordering::SeqCst) {
                    let reply = request(&client, &weft, "GET", path, &[], "").await;
                    *answers.entry((reply.status, reply.text())).or_default() += 1;
                }
                answers
            })
        })
        .collect();

    tokio::time::sleep(Duration::from_millis(300)).await;
    b.kill();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for cluster in ["outlier", "checked"] {
        let series = format!(
            "weft_upstream_endpoint_healthy{{cluster=\"{cluster}\",endpoint=\"{}\"}}",
            b.addr
        );
        assert_eq!(weft.metric(&series).await, 0.0, "{cluster}: b is out while dead");
    }
    let hits_dead = b.hits.load(Ordering::SeqCst);
    b.revive("b").await;
    // The ejection (1 s) runs out; the health check passes at its next probe.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut total: HashMap<(u16, String), usize> = HashMap::new();
    for l in load {
        for (k, v) in l.await.expect("load") {
            *total.entry(k).or_default() += v;
        }
    }
    assert!(
        total.keys().all(|(status, _)| *status == 200),
        "no client saw the endpoint die: {total:?}\n{}",
        weft.log()
    );
    assert!(
        b.hits.load(Ordering::SeqCst) > hits_dead,
        "b takes traffic again: {total:?}"
    );
    for cluster in ["outlier", "checked"] {
        let series = format!(
            "weft_upstream_endpoint_healthy{{cluster=\"{cluster}\",endpoint=\"{}\"}}",
            b.addr
        );
        // The outlier cluster readmits on the first pick after the ejection ran out.
        let _ = request(&http1_client(), &weft, "GET", &format!("/{cluster}"), &[], "").await;
        assert_eq!(weft.metric(&series).await, 1.0, "{cluster}: b is back");
    }
    assert!(
        weft.metric(&format!(
            "weft_upstream_ejections_total{{cluster=\"outlier\",endpoint=\"{}\"}}",
            b.addr
        ))
        .await
            >= 1.0
    );
}

#[tokio::test]
async fn the_retry_budget_keeps_an_outage_from_multiplying_the_load() {
    let down = Named::start("down").await;
    down.set_status(503);
    down.delay_ms.store(300, Ordering::SeqCst);
    // Five tries each would be 250 requests; the budget allows retries for at most 20% of
    // the requests in flight (10 of 50).
    let clusters = cluster_block(
        "up",
        &format!("[\"{}\"]", down.addr()),
        "[clusters.retry]\nattempts = 5\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"\nbudget_percent = 20.0\nmin_retries_per_second = 1",
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let storm: Vec<_> = (0..50)
        .map(|_| {
            let url = weft.url("/");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for s in storm {
        assert_eq!(s.await.expect("request"), 503);
    }
    let seen = down.requests();
    assert!((50..100).contains(&seen), "the upstream saw {seen} requests for 50");
    assert!(
        weft.metric("weft_upstream_retries_skipped_total{cluster=\"up\",reason=\"budget\"}")
            .await
            >= 30.0
    );
}

#[tokio::test]
async fn least_request_with_a_latency_average_avoids_a_slow_endpoint() {
    let (fast, slow) = (Named::start("fast").await, Named::start("slow").await);
    slow.delay_ms.store(60, Ordering::SeqCst);
    let eps = format!("[\"{}\", \"{}\"]", fast.addr(), slow.addr());
    let clusters = cluster_block("plain", &eps, "lb = \"least_request\"")
        + &cluster_block("ewma", &eps, "lb = \"least_request\"\nlatency_ewma = \"10s\"");
    let routes = route_block("/plain", "plain", "") + &route_block("/ewma", "ewma", "");
    let weft = Weft::start(&config(&clusters, &routes)).await;
    let client = http1_client();
    // One request at a time: nothing is ever in flight, so only latency tells them apart.
    let plain = spread(&client, &weft, "/plain", 40, |_| None).await;
    let ewma = spread(&client, &weft, "/ewma", 40, |_| None).await;
    assert!(
        plain.get("slow").copied().unwrap_or(0) >= 8,
        "without latency, about half: {plain:?}"
    );
    assert!(
        ewma.get("slow").copied().unwrap_or(0) <= 3,
        "with latency, tried once or so: {ewma:?}"
    );
}

#[tokio::test]
async fn max_pending_requests_bounds_the_connections_being_opened() {
    // An upstream that accepts TCP and never answers the TLS handshake: a connection to it
    // stays "being opened" until the cluster's connect_timeout.
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let _silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = socket.accept().await {
            held.push(stream);
        }
    });
    let dir = tempfile::tempdir().expect("dir");
    let made = std::process::Command::new(weft_bin())
        .args(["cert", "--out"])
        .arg(dir.path())
        .output()
        .expect("weft cert");
    assert!(made.status.success(), "{}", String::from_utf8_lossy(&made.stderr));
    let ca = dir.path().join("ca.pem");
    let clusters = cluster_block(
        "up",
        &format!("[\"{addr}\"]"),
        &format!(
            "connect_timeout = \"2s\"\ntls = {{ ca = \"{}\" }}\n[clusters.circuit_breaker]\nmax_pending_requests = 1",
            ca.display()
        ),
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    let url = weft.url("/");
    let first = tokio::spawn(async move { get(&url).await.status });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    let second = get(&weft.url("/")).await;
    assert_eq!(second.status, 503, "{}", second.text());
    assert_eq!(second.header("x-weft-overloaded"), Some("max_pending_requests"));
    assert!(started.elapsed() < Duration::from_millis(1000), "refused at once");
    assert_eq!(
        first.await.expect("first"),
        503,
        "the first gives up at its connect_timeout"
    );
    assert_eq!(
        weft.metric("weft_upstream_overloaded_total{cluster=\"up\",reason=\"max_pending_requests\"}")
            .await,
        1.0
    );
}

#[tokio::test]
async fn max_retries_bounds_the_retries_in_flight() {
    let down = Named::start("down").await;
    down.set_status(503);
    down.delay_ms.store(400, Ordering::SeqCst);
    let clusters = cluster_block(
        "up",
        &format!("[\"{}\"]", down.addr()),
        "[clusters.retry]\nattempts = 2\nbackoff_base = \"1ms\"\nbackoff_max = \"1ms\"\nmin_retries_per_second = 1000\n[clusters.circuit_breaker]\nmax_retries = 1",
    );
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", ""))).await;
    // Two requests fail together; one retry may be in flight, so the other is not retried.
    let both: Vec<_> = (0..2)
        .map(|_| {
            let url = weft.url("/");
            tokio::spawn(async move { get(&url).await.status })
        })
        .collect();
    for r in both {
        assert_eq!(r.await.expect("request"), 503);
    }
    assert_eq!(down.requests(), 3, "two first tries and one retry");
    assert_eq!(
        weft.metric("weft_upstream_retries_skipped_total{cluster=\"up\",reason=\"max_retries\"}")
            .await,
        1.0
    );
}

/// Sends `head`, then `pieces` of its body `gap` apart, and reads the answer to the end
/// (the request says `Connection: close`).
async fn paced_upload(weft: &Weft, head: &str, pieces: &[&str], gap: Duration) -> String {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(weft.addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    for piece in pieces {
        tokio::time::sleep(gap).await;
        if stream.write_all(piece.as_bytes()).await.is_err() {
            break;
        }
    }
    raw::read_to_close(&mut stream, Duration::from_secs(20)).await.0
}

#[tokio::test]
async fn the_route_timeout_starts_when_the_request_is_complete() {
    let up = Named::start("up").await;
    let clusters = cluster_block("up", &format!("[\"{}\"]", up.addr()), "");
    let weft = Weft::start(&config(&clusters, &route_block("/", "up", "timeout = \"1s\""))).await;
    // A legitimate upload that takes 2 s, twice the route's timeout: the timeout is the
    // upstream's time to answer, which starts when the request is complete.
    let head = "POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20\r\n\r\n";
    let pieces = ["aaaaa", "bbbbb", "ccccc", "ddddd"];
    let raw = paced_upload(&weft, head, &pieces, Duration::from_millis(500)).await;
    assert_eq!(raw::status(&raw), Some(200), "{raw}");
    assert_eq!(up.seen.lock().expect("log")[0].1, "aaaaabbbbbcccccddddd");
}

#[tokio::test]
async fn stalled_uploads_are_the_clients_fault_not_the_endpoints() {
    let up = Named::start("up").await;
    let outlier = "[clusters.outlier_detection]\nconsecutive_failures = 3";
    let eps = format!("[\"{}\"]", up.addr());
    let clusters =
        cluster_block("h1", &eps, outlier) + &cluster_block("h2", &eps, &format!("protocol = \"http2\"\n{outlier}"));
    let routes = route_block("/h2", "h2", "timeout = \"300ms\"") + &route_block("/", "h1", "timeout = \"300ms\"");
    let config = config(&clusters, &routes).replace(
        "address = \"{listen}\"\n",
        "address = \"{listen}\"\n[listeners.timeouts]\nbody_idle = \"1s\"\n",
    );
    let weft = Weft::start(&config).await;
    // Uploads that stop halfway, to an HTTP/1.1 and an HTTP/2 upstream: each is the
    // client's timeout (408), none the upstream's (504), and the endpoint stays in.
    for (cluster, path) in [("h1", "/upload"), ("h2", "/h2/upload")] {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 100\r\n\r\n");
        let stalled: Vec<_> = (0..8)
            .map(|_| {
                let (weft, head) = (&weft, &head);
                async move { paced_upload(weft, head, &["half"], Duration::ZERO).await }
            })
            .collect();
        for raw in futures_util::future::join_all(stalled).await {
            assert_eq!(raw::status(&raw), Some(408), "{cluster}: {raw}");
        }
        let endpoint = format!("{{cluster=\"{cluster}\",endpoint=\"{}\"}}", up.addr());
        assert_eq!(
            weft.metric(&format!("weft_upstream_failures_total{endpoint}")).await,
            0.0,
            "{cluster}"
        );
        assert_eq!(
            weft.metric(&format!("weft_upstream_ejections_total{endpoint}")).await,
            0.0,
            "{cluster}"
        );
    }
    assert_eq!(
        weft.metric("weft_downstream_refused_total{listener=\"main\",reason=\"body_timeout\"}")
            .await,
        16.0
    );
    assert_eq!(get(&weft.url("/")).await.status, 200);
    assert_eq!(get(&weft.url("/h2")).await.status, 200);
}

#[tokio::test]
async fn http2_upstreams_get_the_requests_host_as_authority() {
    let up = Upstream::echo("h2").await;
    let clusters = cluster_block("h2", &format!("[\"{}\"]", up.addr), "protocol = \"http2\"");
    let routes = route_block("/rewritten", "h2", "host_rewrite = \"internal.example\"") + &route_block("/", "h2", "");
    let weft = Weft::start(&config(&clusters, &routes)).await;
    for (path, expected) in [("/plain", "api.example.com"), ("/rewritten", "internal.example")] {
        for h2 in [false, true] {
            let reply = get_as_host(weft.addr, "api.example.com", path, h2).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            let echo = reply.json();
            let seen: http::Uri = echo["uri"].as_str().expect("uri").parse().expect("a URI");
            assert_eq!(seen.authority().map(|a| a.as_str()), Some(expected), "h2 {h2}: {echo}");
            assert_eq!(seen_header(&echo, "host"), None, "a Host beside :authority: {echo}");
        }
    }
}

/// `GET path` for `host`, sent to `addr`: over HTTP/1.1 with `Host: host`, or over h2c
/// with `:authority: host`.
async fn get_as_host(addr: SocketAddr, host: &str, path: &str, h2: bool) -> Reply {
    let io = hyper_util::rt::TokioIo::new(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    let resp = if h2 {
        let (mut sender, conn) = hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), io)
            .await
            .expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(format!("http://{host}{path}"))
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender.send_request(req).await.expect("response")
    } else {
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.expect("handshake");
        tokio::spawn(conn);
        let req = Request::get(path)
            .header("host", host)
            .body(Full::new(Bytes::new()))
            .expect("request");
        sender.send_request(req).await.expect("response")
    };
    let (head, body) = resp.into_parts();
    Reply {
        status: head.status.as_u16(),
        headers: head.headers,
        body: body.collect().await.expect("body").to_bytes(),
        version: head.version,
    }
}

#[tokio::test]
async fn an_upstream_that_stops_reading_an_upload_still_times_out() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    // Reads the request head, then nothing more, and never answers.
    let socket = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let origin = socket.local_addr().expect("addr");
    let _origin = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut stream, _)) = socket.accept().await {
            let mut buf = [0u8; 1024];
            let _ = stream.read(&mut buf).await;
            held.push(stream);
        }
    });
    let clusters = cluster_block("up", &format!("[\"{origin}\"]"), "");
    let config = config(&clusters, &route_block("/", "up", "timeout = \"1s\"")).replace(
        "address = \"{listen}\"\n",
        "address = \"{listen}\"\n[listeners.timeouts]\nbody_idle = \"2s\"\n",
    );
    let weft = Weft::start(&config).await;
    // 64 MiB, sent as fast as the proxy reads it: far more than the sockets between hold.
    let mut stream = tokio::net::TcpStream::connect(weft.addr).await.expect("connect");
    let size = 64 << 20;
    let head = format!("POST /upload HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {size}\r\n\r\n");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut reader, mut writer) = stream.into_split();
    let _upload = tokio::spawn(async move {
        let chunk = vec![b'x'; 64 << 10];
        for _ in 0..(size / chunk.len()) {
            if writer.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(30), reader.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => answer.extend_from_slice(&buf[..n]),
            other => panic!("no answer: {other:?}\n{}", weft.log()),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw::status(&answer), Some(504), "{answer}");
}
