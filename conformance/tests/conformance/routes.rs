//! What a route does with a request besides forwarding it, through the real binary:
//! redirects, direct responses, path rewrites (and attempts to escape them), header edits,
//! header- and cookie-pinned clusters, weighted splits, injected faults; bad configs
//! refused at load with the key and line.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_conformance::*;

/// A listener, the admin API, clusters `a` and `b`; no file watching.
fn base(a: &Upstream, b: &Upstream) -> Config {
    Config::new()
        .top("[runtime]\nwatch = false")
        .cluster("a", &[a.addr])
        .cluster("b", &[b.addr])
}

/// [`base`], then `routes`.
fn config(a: &Upstream, b: &Upstream, routes: &str) -> String {
    base(a, b).routes(routes).to_string()
}

/// The raw bytes of one HTTP/1.1 exchange (for targets a client library would clean up).
async fn raw(weft: &Weft, request: &str) -> String {
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn redirects_build_their_location_from_the_parts_they_change() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/old/" }
redirect = { prefix = "/new/", code = 308 }

[[routes]]
match = { path_prefix = "/secure" }
redirect = { scheme = "https", host = "secure.example", port = 8443, strip_query = true }

[[routes]]
match = { path_exact = "/home" }
redirect = { path = "/", code = 302 }
"#,
    ))
    .await;
    let client = http1_client();
    let reply = send(
        &client,
        request("GET", &weft.url("/old/a/b?x=1"), &[("host", "shop.example:8080")]),
    )
    .await;
    assert_eq!(reply.status, 308);
    assert_eq!(reply.header("location"), Some("http://shop.example:8080/new/a/b?x=1"));
    let reply = send(
        &client,
        request("GET", &weft.url("/secure/login?next=/x"), &[("host", "shop.example")]),
    )
    .await;
    assert_eq!(reply.status, 301);
    assert_eq!(
        reply.header("location"),
        Some("https://secure.example:8443/secure/login")
    );
    let reply = send(
        &client,
        request("GET", &weft.url("/home?q=1"), &[("host", "shop.example:8080")]),
    )
    .await;
    assert_eq!(reply.status, 302);
    assert_eq!(reply.header("location"), Some("http://shop.example:8080/?q=1"));
    assert_eq!(a.hits() + b.hits(), 0, "a redirect never reaches an upstream");
}

#[tokio::test]
async fn direct_responses_answer_with_their_status_body_and_headers() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_exact = "/healthz" }
direct_response = { status = 200, body = "ok\n", headers = { cache-control = "no-store" } }
response_headers = { set = { x-served-by = "weft" } }

[[routes]]
match = { path_prefix = "/gone" }
direct_response = { status = 410 }
"#,
    ))
    .await;
    let reply = get(&weft.url("/healthz")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "ok\n");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.header("content-type"), Some("text/plain; charset=utf-8"));
    assert_eq!(reply.header("x-served-by"), Some("weft"));
    let reply = get(&weft.url("/gone/x")).await;
    assert_eq!((reply.status, reply.text().as_str()), (410, ""));
    assert_eq!(reply.header("content-length"), Some("0"));
    assert_eq!(a.hits() + b.hits(), 0);
}

#[tokio::test]
async fn prefix_and_regex_rewrites_change_the_path_the_upstream_sees() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/api/" }
cluster = "a"
rewrite = { prefix = "/v2/" }

[[routes]]
match = { path_prefix = "/short" }
cluster = "a"
rewrite = { prefix = "/internal/" }

[[routes]]
match = { path_regex = "/users/[0-9]+/.*" }
cluster = "b"
rewrite = { regex = "^/users/([0-9]+)/(.*)$", substitution = "/u/$1/$2" }
"#,
    ))
    .await;
    let echo = get(&weft.url("/api/items?sort=asc")).await.json();
    assert_eq!(echo["uri"], "/v2/items?sort=asc");
    let echo = get(&weft.url("/users/42/posts/7")).await.json();
    assert_eq!(
        (echo["upstream"].as_str(), echo["uri"].as_str()),
        (Some("b"), Some("/u/42/posts/7"))
    );
    // Encoded characters: unreserved ones were decoded by the front door, others stay encoded.
    let echo = get(&weft.url("/api/%7Euser/a%20b")).await.json();
    assert_eq!(echo["uri"], "/v2/~user/a%20b");
    // The front door resolved the dot segments before routing: this is /api/x.
    let echo = get(&weft.url("/api/../api/x")).await.json();
    assert_eq!(echo["uri"], "/v2/x");
}

#[tokio::test]
async fn a_rewrite_cannot_be_escaped_with_dot_segments_built_across_the_prefix() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/short" }
cluster = "a"
rewrite = { prefix = "/internal/" }
"#,
    ))
    .await;
    // "/short.." is a normal segment; with the prefix replaced it would read "/internal/../".
    for target in [
        "/short../secret",
        "/short%2E%2E/secret",
        "/short%2e./admin",
        "/short./../x",
    ] {
        let answer = raw(
            &weft,
            &format!("GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        )
        .await;
        let status = answer.split(' ').nth(1).unwrap_or("");
        assert!(
            status == "400" || status == "404",
            "{target} must be refused or unrouted, got: {answer}"
        );
    }
    assert_eq!(a.hits(), 0, "nothing escaped to the upstream");
    // A path that stays inside the prefix passes.
    let echo = get(&weft.url("/short/ok")).await.json();
    assert_eq!(echo["uri"], "/internal/ok");
}

#[tokio::test]
async fn header_edits_change_the_request_and_the_response() {
    let up = Upstream::start(|_req| async {
        http::Response::builder()
            .header("server", "origin/1.0")
            .header("x-keep", "1")
            .body(full("hi"))
            .expect("response")
    })
    .await;
    let echo = Upstream::echo("b").await;
    let weft = Weft::start(&config(
        &up,
        &echo,
        r#"
[[routes]]
match = { path_prefix = "/echo" }
cluster = "b"
request_headers = { set = { x-team = "payments" }, add = { x-tag = "canary" }, remove = ["x-debug"] }

[[routes]]
match = { path_prefix = "/" }
cluster = "a"
response_headers = { remove = ["server"], set = { cache-control = "no-store" }, add = { x-keep = "2" } }
"#,
    ))
    .await;
    let client = http1_client();
    let reply = send(
        &client,
        request(
            "GET",
            &weft.url("/echo"),
            &[("x-debug", "1"), ("x-team", "other"), ("x-tag", "client")],
        ),
    )
    .await;
    let seen = reply.json();
    assert_eq!(seen["headers"]["x-team"], serde_json::json!(["payments"]));
    assert_eq!(seen["headers"]["x-tag"], serde_json::json!(["client", "canary"]));
    assert!(seen["headers"].get("x-debug").is_none(), "{seen}");
    let reply = get(&weft.url("/")).await;
    assert_eq!(reply.header("server"), None);
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(reply.headers.get_all("x-keep").iter().count(), 2);
    assert_eq!(reply.text(), "hi");
}

#[test]
fn framing_and_hop_by_hop_headers_cannot_be_edited() {
    // Raw text: the error's line number (`:12:`, the key appended to the route) is checked.
    let base = FILE_CONFIG;
    for (edit, name) in [
        (
            "request_headers = { set = { transfer-encoding = \"chunked\" } }",
            "transfer-encoding",
        ),
        (
            "request_headers = { add = { content-length = \"0\" } }",
            "content-length",
        ),
        ("response_headers = { remove = [\"connection\"] }", "connection"),
        ("request_headers = { set = { upgrade = \"websocket\" } }", "upgrade"),
        ("request_headers = { set = { host = \"x\" } }", "host"),
        ("response_headers = { set = { te = \"trailers\" } }", "te"),
    ] {
        let (ok, text) = weft_check(&format!("{base}{edit}\n"), &[]);
        assert!(!ok, "{edit} was accepted");
        assert!(
            text.contains(&format!("{name:?}")) && text.contains(":12:"),
            "{edit}: {text}"
        );
    }
    let (ok, text) = weft_check(
        &format!("{base}request_headers = {{ set = {{ x-ok = \"1\" }} }}\n"),
        &[],
    );
    assert!(ok, "{text}");
}

#[test]
fn route_targets_and_rewrites_are_checked_at_load() {
    // Raw text: `weft check` reads the file a user wrote, and the broken route is its subject.
    let head = &FILE_CONFIG[..FILE_CONFIG.find("match =").expect("the route's keys")];
    for (route, wanted) in [
        (
            "match = { path_prefix = \"/\" }\n",
            "exactly one of cluster, split, redirect, direct_response",
        ),
        (
            "cluster = \"web\"\nredirect = { path = \"/\" }\n",
            "exactly one of cluster, split, redirect, direct_response",
        ),
        (
            "split = [{ cluster = \"nope\", weight = 1 }]\n",
            "unknown cluster \"nope\"",
        ),
        (
            "split = [{ cluster = \"web\", weight = 0 }]\n",
            "weights add up to zero",
        ),
        (
            "cluster = \"web\"\nrewrite = { prefix = \"/x/\" }\n",
            "match.path_prefix",
        ),
        ("redirect = { path = \"/\", code = 200 }\n", "redirect.code"),
        (
            "match = { path_prefix = \"api\" }\ncluster = \"web\"\n",
            "must start with '/'",
        ),
        (
            "cluster = \"web\"\nfault = { abort = { status = 503, percent = 150.0 } }\n",
            "not between 0 and 100",
        ),
        (
            "cluster = \"web\"\npin = [{ header = \"x-v\", cookie = \"v\", value = \"2\", cluster = \"web\" }]\n",
            "exactly one of header, cookie",
        ),
    ] {
        let (ok, text) = weft_check(&format!("{head}{route}"), &[]);
        assert!(!ok, "{route} was accepted");
        assert!(text.contains(wanted), "{route}: {text}");
    }
}

/// How many of `n` requests each upstream name answered.
async fn spread(weft: &Weft, n: usize, headers: &[(&str, &str)]) -> HashMap<String, usize> {
    let client = http1_client();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let reply = send(&client, request("GET", &weft.url("/"), headers)).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        *counts
            .entry(reply.json()["upstream"].as_str().unwrap_or("?").to_owned())
            .or_insert(0) += 1;
    }
    counts
}

#[tokio::test]
async fn a_split_follows_its_weights_and_a_reload_changes_them() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let routes = r#"
[[routes]]
name = "canary"
match = { path_prefix = "/" }
split = [{ cluster = "a", weight = 80 }, { cluster = "b", weight = 20 }]
"#;
    let text = config(&a, &b, routes);
    let weft = Weft::start(&text).await;
    // 1000 draws at p = 0.2: the standard deviation is 12.6, so ±60 is beyond 4.7 of them.
    let counts = spread(&weft, 1000, &[]).await;
    let to_b = counts.get("b").copied().unwrap_or(0);
    assert!((140..=260).contains(&to_b), "{counts:?}");
    assert_eq!(counts.values().sum::<usize>(), 1000);
    let series = |c: &str| format!("weft_route_shifted_total{{route=\"canary\",cluster=\"{c}\"}}");
    assert_eq!(weft.metric(&series("b")).await as usize, to_b);
    assert_eq!(weft.metric(&series("a")).await as usize, 1000 - to_b);

    // A reload with a refused route keeps the running split.
    weft.write_config(&text.replace("weight = 80", "weight = 0").replace(
        "split = [",
        "request_headers = { set = { content-length = \"1\" } }\nsplit = [",
    ));
    let (status, body) = weft.admin("POST", "/reload").await;
    assert!(status >= 400 && body.contains("content-length"), "{status} {body}");
    assert!(spread(&weft, 100, &[]).await.get("a").copied().unwrap_or(0) > 50);

    weft.write_config(&text.replace("weight = 80", "weight = 0"));
    assert_eq!(weft.admin("POST", "/reload").await.0, 200);
    let counts = spread(&weft, 100, &[]).await;
    assert_eq!(counts.get("b"), Some(&100), "{counts:?}");
}

#[tokio::test]
async fn header_and_cookie_pins_choose_the_cluster_before_the_split() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
name = "pinned"
match = { path_prefix = "/" }
cluster = "a"
pin = [
  { header = "x-version", value = "v2", cluster = "b" },
  { cookie = "track", value = "beta", cluster = "b" },
]
"#,
    ))
    .await;
    assert_eq!(spread(&weft, 20, &[]).await.get("a"), Some(&20));
    assert_eq!(spread(&weft, 20, &[("x-version", "v2")]).await.get("b"), Some(&20));
    assert_eq!(spread(&weft, 20, &[("x-version", "v3")]).await.get("a"), Some(&20));
    let cookie = [("cookie", "session=1; track=beta; theme=dark")];
    assert_eq!(spread(&weft, 20, &cookie).await.get("b"), Some(&20));
    // A cookie whose name only ends in the pinned one, or a value with a suffix, does not pin.
    let near = [("cookie", "xtrack=beta; track=betamax")];
    assert_eq!(spread(&weft, 20, &near).await.get("a"), Some(&20));
    // Duplicated headers: any value may pin, as with a header match.
    assert_eq!(
        spread(&weft, 20, &[("x-version", "v1"), ("x-version", "v2")])
            .await
            .get("b"),
        Some(&20)
    );
    let pinned = weft
        .metric("weft_route_shifted_total{route=\"pinned\",cluster=\"b\"}")
        .await;
    assert_eq!(pinned, 60.0);
}

#[tokio::test]
async fn injected_aborts_hit_their_percentage_only_with_the_header() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
name = "chaos"
match = { path_prefix = "/" }
cluster = "a"
fault = { header = "x-chaos", abort = { status = 503, percent = 30.0 } }
"#,
    ))
    .await;
    let client = http1_client();
    let mut aborted = 0;
    for _ in 0..1000 {
        let reply = send(&client, request("GET", &weft.url("/"), &[("x-chaos", "1")])).await;
        match reply.status {
            503 => {
                assert_eq!(reply.text(), "fault injected\n");
                aborted += 1;
            }
            200 => {}
            other => panic!("unexpected {other}"),
        }
    }
    // p = 0.3 over 1000: the standard deviation is 14.5; ±70 is beyond 4.8 of them.
    assert!((230..=370).contains(&aborted), "{aborted} aborted");
    assert_eq!(
        a.hits(),
        1000 - aborted,
        "an aborted request never reaches the upstream"
    );
    assert_eq!(
        weft.metric("weft_route_faults_total{route=\"chaos\",kind=\"abort\"}")
            .await as usize,
        aborted
    );
    let untouched = spread(&weft, 200, &[]).await;
    assert_eq!(
        untouched.get("a"),
        Some(&200),
        "without the header no fault is injected"
    );
}

#[tokio::test]
async fn injected_delays_hold_the_request_and_resets_cut_it() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
name = "slow"
match = { path_prefix = "/slow" }
cluster = "a"
fault = { delay = { duration = "300ms", percent = 100.0 } }

[[routes]]
name = "half"
match = { path_prefix = "/half" }
cluster = "a"
fault = { delay = { duration = "1s", percent = 50.0 } }

[[routes]]
name = "cut"
match = { path_prefix = "/cut" }
cluster = "a"
fault = { abort = { reset = true, percent = 100.0 } }
"#,
    ))
    .await;
    for _ in 0..3 {
        let started = Instant::now();
        assert_eq!(get(&weft.url("/slow")).await.status, 200);
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
    // Which requests were held is a matter of counting, not timing: the metric says.
    let client = http1_client();
    let sends = (0..40).map(|_| send(&client, request("GET", &weft.url("/half"), &[])));
    for reply in futures_util::future::join_all(sends).await {
        assert_eq!(reply.status, 200);
    }
    let delayed = weft
        .metric("weft_route_faults_total{route=\"half\",kind=\"delay\"}")
        .await;
    assert!((5.0..=35.0).contains(&delayed), "{delayed} of 40 delayed at 50%");

    let answer = raw(&weft, "GET /cut HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(
        !answer.ends_with("\r\n0\r\n\r\n"),
        "a reset never completes the body: {answer:?}"
    );
    let failed = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .request(request("GET", &weft.url("/cut"), &[]))
        .await;
    match failed {
        Err(_) => {}
        Ok(resp) => {
            use http_body_util::BodyExt;
            assert!(resp.into_body().collect().await.is_err(), "the body must fail");
        }
    }
    assert_eq!(a.hits(), 3 + 40);
}

/// Waits until `check` holds, for at most 5 s.
async fn eventually(mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while !check().await {
        assert!(Instant::now() < deadline, "condition not reached in 5 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn post(url: &str, body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post(url)
        .header("host", "shop.example")
        .body(Full::new(body.into()))
        .expect("request")
}

#[tokio::test]
async fn the_mirror_receives_copies_of_requests_and_bodies() {
    let (a, shadow) = (Upstream::echo("a").await, Upstream::echo("shadow").await);
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let recorder = {
        let seen = seen.clone();
        Upstream::start(move |req| {
            let seen = seen.clone();
            async move {
                let host = req.headers().get("host").map(|h| h.to_str().unwrap_or("").to_owned());
                let uri = req.uri().to_string();
                let body = http_body_util::BodyExt::collect(req.into_body())
                    .await
                    .map(|b| b.to_bytes());
                seen.lock().expect("lock").push((host, uri, body.unwrap_or_default()));
                http::Response::new(full("shadow answer"))
            }
        })
        .await
    };
    drop(shadow);
    let text = config(
        &a,
        &recorder,
        r#"
[[routes]]
name = "mirrored"
match = { path_prefix = "/api/" }
cluster = "a"
rewrite = { prefix = "/v2/" }
mirror = { cluster = "b", max_body_bytes = 1024 }
"#,
    );
    let weft = Weft::start(&text).await;
    let client = http1_client();
    for i in 0..20 {
        let reply = send(
            &client,
            post(&weft.url(&format!("/api/item/{i}")), format!("payload-{i}")),
        )
        .await;
        assert_eq!(reply.status, 200);
        assert_eq!(
            reply.json()["upstream"],
            "a",
            "the client gets the real upstream's answer"
        );
    }
    eventually(async || seen.lock().expect("lock").len() == 20).await;
    let mut copies = seen.lock().expect("lock").clone();
    copies.sort_by_key(|(_, uri, _)| uri.len() * 100 + uri.chars().last().map_or(0, |c| c as usize));
    for (host, uri, body) in &copies {
        assert_eq!(host.as_deref(), Some("shop.example-shadow"));
        let n = uri.rsplit('/').next().unwrap_or("");
        assert_eq!(uri, &format!("/v2/item/{n}"), "the shadow sees the rewritten path");
        assert_eq!(body, &Bytes::from(format!("payload-{n}")));
    }
    let series = |o: &str| format!("weft_route_mirrored_total{{route=\"mirrored\",cluster=\"b\",kind=\"{o}\"}}");
    eventually(async || weft.metric(&series("sent")).await == 20.0).await;

    // A body larger than the copy may be goes to the real upstream whole, and is not copied.
    let big = vec![b'x'; 10_000];
    let reply = send(&client, post(&weft.url("/api/big"), big.clone())).await;
    assert_eq!(reply.json()["body_len"], 10_000);
    eventually(async || weft.metric(&series("dropped")).await == 1.0).await;
    assert_eq!(seen.lock().expect("lock").len(), 20);
}

#[tokio::test]
async fn a_mirror_that_never_answers_or_is_down_never_slows_or_fails_the_client() {
    let a = Upstream::echo("a").await;
    let stalled = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        http::Response::new(full(""))
    })
    .await;
    let text = base(&a, &stalled)
        .cluster("down", &[dead_addr()])
        .routes(
            r#"
[[routes]]
name = "stalled"
match = { path_prefix = "/stalled" }
cluster = "a"
mirror = { cluster = "b", max_in_flight = 5 }

[[routes]]
name = "down"
match = { path_prefix = "/down" }
cluster = "a"
mirror = { cluster = "down" }
"#,
        )
        .to_string();
    let weft = Weft::start(&text).await;
    let client = http1_client();
    // Each request completes while its copy still waits on the shadow (which never
    // answers): a mirror that held the client back would take the route timeout, 15 s.
    let all = async {
        for i in 0..30 {
            let reply = send(&client, post(&weft.url(&format!("/stalled/{i}")), "body")).await;
            assert_eq!(reply.status, 200);
        }
        for _ in 0..10 {
            assert_eq!(send(&client, post(&weft.url("/down"), "body")).await.status, 200);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), all)
        .await
        .expect("the client was not held back by its mirror");
    let series =
        |r: &str, c: &str, o: &str| format!("weft_route_mirrored_total{{route=\"{r}\",cluster=\"{c}\",kind=\"{o}\"}}");
    // Five copies wait on the stalled shadow; the other 25 were dropped, not queued.
    eventually(async || stalled.hits() == 5).await;
    assert_eq!(weft.metric(&series("stalled", "b", "dropped")).await, 25.0);
    eventually(async || weft.metric(&series("down", "down", "failed")).await == 10.0).await;
    assert_eq!(a.hits(), 40);
}

/// The peak resident memory of the weft process, in bytes (Linux `VmHWM`).
fn peak_rss(weft: &Weft) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", weft.pid())).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("VmHWM")
        * 1024
}

#[tokio::test]
async fn a_shadow_answer_is_drained_not_held_in_memory() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use futures_util::StreamExt;
    const CHUNK: usize = 64 << 10;
    const CHUNKS: usize = 3 * 1024; // 192 MiB
    let a = Upstream::echo("a").await;
    let produced = Arc::new(AtomicUsize::new(0));
    let shadow = {
        let produced = produced.clone();
        Upstream::start(move |_req| {
            let produced = produced.clone();
            async move {
                let chunk = Bytes::from(vec![b'x'; CHUNK]);
                let frames = futures_util::stream::iter(0..CHUNKS).map(move |_| {
                    produced.fetch_add(1, Ordering::Relaxed);
                    Ok::<_, std::convert::Infallible>(http_body::Frame::data(chunk.clone()))
                });
                http::Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(frames)))
            }
        })
        .await
    };
    let weft = Weft::start(&config(
        &a,
        &shadow,
        r#"
[[routes]]
name = "mirrored"
match = { path_prefix = "/" }
cluster = "a"
timeout = "60s"
mirror = { cluster = "b" }
"#,
    ))
    .await;
    let before = peak_rss(&weft);
    assert_eq!(get(&weft.url("/large")).await.status, 200);
    // Every frame the shadow makes has been taken by weft but what the sockets hold.
    let deadline = Instant::now() + Duration::from_secs(120);
    while produced.load(Ordering::Relaxed) < CHUNKS {
        assert!(Instant::now() < deadline, "the shadow's answer was not read");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let grown = peak_rss(&weft).saturating_sub(before);
    assert!(
        grown < 64 << 20,
        "reading a 192 MiB shadow answer grew weft's peak memory by {} MiB",
        grown >> 20
    );
}

#[tokio::test]
async fn a_regex_rewrite_that_does_not_match_passes_the_path_unchanged() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/users" }
cluster = "a"
rewrite = { regex = "^/users/([0-9]+)/(.*)$", substitution = "/u/$1/$2" }
"#,
    ))
    .await;
    let echo = get(&weft.url("/users/42/posts?x=1")).await.json();
    assert_eq!(echo["uri"], "/u/42/posts?x=1");
    // Paths the pattern does not match go on as they came, query and encoding included.
    for target in ["/users/me", "/users/me/posts?x=1", "/users", "/users/a%20b/"] {
        let reply = get(&weft.url(target)).await;
        assert_eq!(reply.status, 200, "{target}: {}", reply.text());
        assert_eq!(reply.json()["uri"], target);
    }
}

type Seen = std::sync::Arc<std::sync::Mutex<Vec<(String, Bytes)>>>;

/// An upstream that records the path and body of every request it gets.
async fn recorder() -> (Upstream, Seen) {
    let seen = Seen::default();
    let kept = seen.clone();
    let up = Upstream::start(move |req| {
        let kept = kept.clone();
        async move {
            let uri = req.uri().to_string();
            let body = http_body_util::BodyExt::collect(req.into_body())
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            kept.lock().expect("lock").push((uri, body));
            http::Response::new(full("shadow answer"))
        }
    })
    .await;
    (up, seen)
}

#[tokio::test]
async fn a_route_mirrors_to_several_clusters_each_with_its_own_share_and_limit() {
    let a = Upstream::echo("a").await;
    let ((b, to_b), (c, to_c), (d, to_d)) = (recorder().await, recorder().await, recorder().await);
    let text = base(&a, &b)
        .cluster("c", &[c.addr])
        .cluster("d", &[d.addr])
        .routes(
            r#"
[[routes]]
name = "mirrored"
match = { path_prefix = "/" }
cluster = "a"
mirror = [
  { cluster = "b", max_body_bytes = 1024 },
  { cluster = "c", max_body_bytes = 16 },
  { cluster = "d", percent = 0.0 },
]
"#,
        )
        .to_string();
    let weft = Weft::start(&text).await;
    let client = http1_client();
    for i in 0..10 {
        let reply = send(&client, post(&weft.url(&format!("/item/{i}")), format!("payload-{i}"))).await;
        assert_eq!(reply.json()["upstream"], "a");
    }
    // Larger than c's copy may be, within b's: b gets it, c does not.
    let medium = "m".repeat(100);
    assert_eq!(
        send(&client, post(&weft.url("/medium"), medium.clone())).await.status,
        200
    );
    eventually(async || to_b.lock().expect("lock").len() == 11 && to_c.lock().expect("lock").len() == 10).await;
    let series =
        |c: &str, o: &str| format!("weft_route_mirrored_total{{route=\"mirrored\",cluster=\"{c}\",kind=\"{o}\"}}");
    eventually(async || weft.metric(&series("c", "dropped")).await == 1.0).await;
    for (seen, n) in [(&to_b, 11), (&to_c, 10)] {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), n);
        for (uri, body) in seen.iter() {
            let want = match uri.strip_prefix("/item/") {
                Some(i) => format!("payload-{i}"),
                None => medium.clone(),
            };
            assert_eq!(body, &Bytes::from(want), "{uri}");
        }
    }
    assert_eq!(weft.metric(&series("b", "sent")).await, 11.0);
    assert_eq!(weft.metric(&series("c", "sent")).await, 10.0);
    assert!(to_d.lock().expect("lock").is_empty(), "a 0% mirror gets nothing");
    assert_eq!(a.hits(), 11);

    // One cluster mirrored twice, or an empty list, is refused at load.
    for (mirror, wanted) in [
        (
            "[{ cluster = \"b\" }, { cluster = \"b\", percent = 5.0 }]",
            "mirrored to twice",
        ),
        ("[]", "names no cluster"),
        (
            "[{ cluster = \"b\" }, { cluster = \"nope\" }]",
            "unknown cluster \"nope\"",
        ),
    ] {
        let bad = text.replace(
            &text[text.find("mirror = [").expect("mirror")..text.rfind(']').expect("end") + 1],
            &format!("mirror = {mirror}"),
        );
        let (ok, out) = weft_check(&bad, &[]);
        assert!(!ok, "{mirror} was accepted");
        assert!(out.contains(wanted), "{mirror}: {out}");
    }
}

#[tokio::test]
async fn each_split_entry_carries_its_own_header_edits() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let text = config(
        &a,
        &b,
        r#"
[[routes]]
name = "canary"
match = { path_prefix = "/" }
request_headers = { set = { x-backend = "route", x-route = "1" } }
response_headers = { set = { x-served-by = "route" } }
split = [
  { cluster = "a", weight = 1, request_headers = { set = { x-backend = "a" } }, response_headers = { set = { x-served-by = "a" } } },
  { cluster = "b", weight = 1, request_headers = { set = { x-backend = "b" }, remove = ["x-drop"] } },
]
"#,
    );
    let weft = Weft::start(&text).await;
    let client = http1_client();
    let mut seen = HashMap::new();
    for _ in 0..60 {
        let reply = send(&client, request("GET", &weft.url("/"), &[("x-drop", "1")])).await;
        let echo = reply.json();
        let upstream = echo["upstream"].as_str().unwrap_or("?").to_owned();
        // The entry's edits follow the route's: the more specific win.
        assert_eq!(echo["headers"]["x-backend"], serde_json::json!([upstream]), "{echo}");
        assert_eq!(echo["headers"]["x-route"], serde_json::json!(["1"]));
        let dropped = echo["headers"].get("x-drop").is_none();
        assert_eq!(dropped, upstream == "b", "only b's entry removes x-drop: {echo}");
        let served = if upstream == "a" { "a" } else { "route" };
        assert_eq!(reply.header("x-served-by"), Some(served));
        *seen.entry(upstream).or_insert(0) += 1;
    }
    assert!(seen.contains_key("a") && seen.contains_key("b"), "{seen:?}");

    // An entry's edits are checked like the route's: framing headers are refused, with the line.
    let bad = text.replace("x-backend = \"b\"", "x-backend = \"b\", content-length = \"1\"");
    let (ok, out) = weft_check(&bad, &[]);
    assert!(
        !ok && out.contains("split.request_headers") && out.contains("content-length"),
        "{out}"
    );
}

#[tokio::test]
async fn path_prefix_matches_whole_segments() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let weft = Weft::start(&config(
        &a,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/v2" }
cluster = "a"

[[routes]]
match = { path_prefix = "/v3/" }
cluster = "a"
rewrite = { prefix = "/internal" }

[[routes]]
match = { path_prefix = "/old" }
redirect = { prefix = "/new/", code = 308 }

[[routes]]
match = { path_prefix = "/" }
cluster = "b"
"#,
    ))
    .await;
    let upstream = |echo: serde_json::Value| echo["upstream"].as_str().unwrap_or("?").to_owned();
    for path in ["/v2", "/v2/", "/v2/x", "/v2/x/y?q=1", "/v2?q=1"] {
        assert_eq!(upstream(get(&weft.url(path)).await.json()), "a", "{path}");
    }
    for path in [
        "/v2example",
        "/v2.json",
        "/v2-beta/x",
        "/V2",
        "/v2%20",
        "/v3example",
        "/oldest",
    ] {
        assert_eq!(upstream(get(&weft.url(path)).await.json()), "b", "{path}");
    }
    // A trailing `/` in the prefix does not count: `/v3/` takes `/v3` too, and the rewrite
    // replaces whole segments.
    for (path, want) in [
        ("/v3", "/internal"),
        ("/v3/", "/internal/"),
        ("/v3/x?q=1", "/internal/x?q=1"),
    ] {
        let echo = get(&weft.url(path)).await.json();
        assert_eq!(
            (upstream(echo.clone()).as_str(), &echo["uri"]),
            ("a", &serde_json::json!(want)),
            "{path}"
        );
    }
    let client = http1_client();
    for (path, want) in [("/old", "/new"), ("/old/a?x=1", "/new/a?x=1")] {
        let reply = send(&client, request("GET", &weft.url(path), &[("host", "shop.example")])).await;
        assert_eq!(reply.status, 308, "{path}");
        assert_eq!(
            reply.header("location"),
            Some(format!("http://shop.example{want}").as_str())
        );
    }
}

fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut req = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.body(Full::new(Bytes::new())).expect("request")
}

#[tokio::test]
async fn cors_preflights_are_answered_at_the_proxy_and_answers_marked_for_allowed_origins() {
    // An upstream that would allow any origin itself: the route's policy must be the one.
    let up = Upstream::start(|_req| async {
        http::Response::builder()
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .header("x-request-id", "r-1")
            .body(full("data"))
            .expect("response")
    })
    .await;
    let b = Upstream::echo("b").await;
    let weft = Weft::start(&config(
        &up,
        &b,
        r#"
[[routes]]
match = { path_prefix = "/api" }
cluster = "a"
cors = { allow_origins = ["https://app.example", "https://*.shop.example"], allow_methods = ["GET", "PUT"], allow_headers = ["x-token"], expose_headers = ["x-request-id"], allow_credentials = true, max_age = "10m" }

[[routes]]
match = { path_prefix = "/open" }
cluster = "b"
cors = { allow_origins = ["*"], allow_methods = ["*"], allow_headers = ["*"] }

[[routes]]
match = { path_prefix = "/cred" }
cluster = "b"
cors = { allow_origins = ["*"], allow_methods = ["*"], allow_headers = ["*"], allow_credentials = true }
"#,
    ))
    .await;
    let client = http1_client();
    let preflight = |path: &str, origin: &str| {
        request(
            "OPTIONS",
            &weft.url(path),
            &[
                ("origin", origin),
                ("access-control-request-method", "PUT"),
                ("access-control-request-headers", "x-token, content-type"),
            ],
        )
    };
    let vary_origin = |reply: &Reply| {
        reply
            .headers
            .get_all("vary")
            .iter()
            .any(|v| v.to_str().unwrap_or("").contains("Origin"))
    };

    // An allowed preflight: answered here, with the route's lists.
    let reply = send(&client, preflight("/api/items", "https://app.example")).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://app.example"));
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-allow-methods"), Some("GET, PUT"));
    assert_eq!(reply.header("access-control-allow-headers"), Some("x-token"));
    assert_eq!(reply.header("access-control-max-age"), Some("600"));
    assert!(vary_origin(&reply));
    // A refused one: 403 without any CORS header; also near misses of the allowed origins.
    for origin in [
        "https://evil.example",
        "https://app.example.evil.example",
        "http://app.example",
        "https://app.example:8443",
        "https://shop.example",
        "https://evilshop.example",
        "null",
    ] {
        let reply = send(&client, preflight("/api/items", origin)).await;
        assert_eq!(reply.status, 403, "{origin}");
        assert_eq!(reply.header("access-control-allow-origin"), None, "{origin}");
        assert_eq!(reply.header("access-control-allow-methods"), None, "{origin}");
    }
    assert_eq!(up.hits(), 0, "no preflight reached the upstream");

    // The actual request from an allowed origin: the upstream's answer, marked for it.
    let reply = send(
        &client,
        request(
            "GET",
            &weft.url("/api/items"),
            &[("origin", "https://a.b.shop.example")],
        ),
    )
    .await;
    assert_eq!((reply.status, reply.text().as_str()), (200, "data"));
    assert_eq!(
        reply.header("access-control-allow-origin"),
        Some("https://a.b.shop.example")
    );
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(reply.header("access-control-expose-headers"), Some("x-request-id"));
    assert!(vary_origin(&reply));
    // From a refused origin (or two origins at once) it still goes upstream, as a browser's
    // simple request would, but the upstream's own permissive headers are removed.
    for origins in [
        &["https://evil.example"][..],
        &["https://app.example", "https://evil.example"],
    ] {
        let headers: Vec<_> = origins.iter().map(|o| ("origin", *o)).collect();
        let reply = send(&client, request("GET", &weft.url("/api/items"), &headers)).await;
        assert_eq!(reply.status, 200);
        assert_eq!(reply.header("access-control-allow-origin"), None, "{origins:?}");
        assert_eq!(reply.header("access-control-allow-credentials"), None, "{origins:?}");
    }
    // Not CORS at all: no Origin, or an OPTIONS that asks for no method, goes on as it came.
    let reply = send(&client, request("GET", &weft.url("/api/items"), &[])).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("*"));
    let reply = send(
        &client,
        request("OPTIONS", &weft.url("/api/items"), &[("origin", "https://app.example")]),
    )
    .await;
    assert_eq!(reply.text(), "data");
    assert_eq!(up.hits(), 5);

    // `*` without credentials answers `*`; with credentials, the request's own values.
    let reply = send(&client, preflight("/open", "https://any.example")).await;
    assert_eq!(reply.status, 200);
    for name in ["origin", "methods", "headers"] {
        assert_eq!(
            reply.header(&format!("access-control-allow-{name}")),
            Some("*"),
            "{name}"
        );
    }
    let reply = send(&client, preflight("/cred", "https://any.example")).await;
    assert_eq!(reply.header("access-control-allow-origin"), Some("https://any.example"));
    assert_eq!(reply.header("access-control-allow-methods"), Some("PUT"));
    assert_eq!(
        reply.header("access-control-allow-headers"),
        Some("x-token, content-type")
    );
    assert_eq!(reply.header("access-control-allow-credentials"), Some("true"));
    assert_eq!(b.hits(), 0);
}
