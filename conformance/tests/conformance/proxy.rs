//! Proxy semantics through the real binary: routing, forwarding headers, bodies,
//! protocols, error answers.

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weft_conformance::*;

fn one_route(upstream: &Upstream, extra_route: &str) -> String {
    Config::new()
        .cluster("up", &[upstream.addr])
        .route("all", "path_prefix = \"/\"", "up", &[], extra_route)
        .to_string()
}

fn req(method: &str, url: &str) -> http::request::Builder {
    Request::builder().method(method).uri(url)
}

fn empty() -> Full<Bytes> {
    Full::new(Bytes::new())
}

#[tokio::test]
async fn get_is_proxied_and_host_preserved() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let reply = send(
        &http1_client(),
        req("GET", &weft.url("/hello?x=1"))
            .header("host", "shop.example")
            .body(empty())
            .expect("req"),
    )
    .await;
    assert_eq!(reply.status, 200);
    let echo = reply.json();
    assert_eq!(echo["uri"], "/hello?x=1");
    assert_eq!(seen_header(&echo, "host"), Some("shop.example"));
    assert_eq!(reply.header("via"), Some("1.1 weft"));
}

#[tokio::test]
async fn host_rewrite_per_route() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "host_rewrite = \"internal.svc\"")).await;
    let echo = get(&weft.url("/")).await.json();
    assert_eq!(seen_header(&echo, "host"), Some("internal.svc"));
}

#[tokio::test]
async fn hop_by_hop_headers_do_not_cross() {
    let up = Upstream::start(|_req| async {
        http::Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=5")
            .header("x-public", "ok")
            .body(full("done"))
            .expect("response")
    })
    .await;
    let echo_up = Upstream::echo("e").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let reply = get(&weft.url("/")).await;
    assert_eq!(reply.header("x-public"), Some("ok"));
    assert_eq!(reply.header("x-internal"), None);
    assert_eq!(reply.header("keep-alive"), None);

    let weft = Weft::start(&one_route(&echo_up, "")).await;
    let reply = send(
        &http1_client(),
        req("GET", &weft.url("/"))
            .header("connection", "x-drop")
            .header("x-drop", "1")
            .header("keep-alive", "timeout=1")
            .header("te", "gzip")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .header("x-keep", "1")
            .body(empty())
            .expect("req"),
    )
    .await;
    let echo = reply.json();
    for gone in ["x-drop", "keep-alive", "te", "proxy-authorization"] {
        assert_eq!(seen_header(&echo, gone), None, "{gone} reached the upstream");
    }
    assert_eq!(seen_header(&echo, "x-keep"), Some("1"));
}

#[tokio::test]
async fn forwarding_headers_replace_spoofed_ones_by_default() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let reply = send(
        &http1_client(),
        req("GET", &weft.url("/"))
            .header("x-forwarded-for", "6.6.6.6")
            .header("x-forwarded-proto", "https")
            .body(empty())
            .expect("req"),
    )
    .await;
    let echo = reply.json();
    assert_eq!(seen_header(&echo, "x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(seen_header(&echo, "x-forwarded-proto"), Some("http"));
    assert_eq!(seen_header(&echo, "forwarded"), Some("for=127.0.0.1;proto=http"));
    assert_eq!(seen_header(&echo, "via"), Some("1.1 weft"));
}

#[tokio::test]
async fn trusted_listener_appends_to_forwarding_headers() {
    let up = Upstream::echo("a").await;
    let config = one_route(&up, "").replace("name = \"main\"", "name = \"main\"\ntrust_forwarded = true");
    let weft = Weft::start(&config).await;
    let reply = send(
        &http1_client(),
        req("GET", &weft.url("/"))
            .header("x-forwarded-for", "203.0.113.7")
            .header("via", "1.1 lb")
            .body(empty())
            .expect("req"),
    )
    .await;
    let echo = reply.json();
    assert_eq!(seen_header(&echo, "x-forwarded-for"), Some("203.0.113.7, 127.0.0.1"));
    assert_eq!(seen_header(&echo, "via"), Some("1.1 lb, 1.1 weft"));
}

#[tokio::test]
async fn error_answers_are_readable() {
    let slow = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        http::Response::new(full("late"))
    })
    .await;
    let dead = dead_addr();
    let config = Config::new()
        .cluster("slow", &[slow.addr])
        .cluster("dead", &[dead])
        .route("slow", "path_prefix = \"/slow\"", "slow", &[], "timeout = \"300ms\"")
        .route("dead", "path_prefix = \"/dead\"", "dead", &[], "")
        .to_string();
    let weft = Weft::start(&config).await;
    let none = get(&weft.url("/nowhere")).await;
    assert_eq!(
        (none.status, none.text().as_str()),
        (404, "no route for this request\n")
    );
    let unreachable = get(&weft.url("/dead")).await;
    assert_eq!(
        (unreachable.status, unreachable.text().as_str()),
        (503, "upstream unreachable\n")
    );
    let started = std::time::Instant::now();
    let timeout = get(&weft.url("/slow")).await;
    assert_eq!((timeout.status, timeout.text().as_str()), (504, "upstream timed out\n"));
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the route timeout did not apply"
    );
    let log = weft.log();
    assert!(
        log.contains("cannot connect to"),
        "the 503 is logged with its cause:\n{log}"
    );
    assert!(
        log.contains("no response head"),
        "the 504 is logged with its cause:\n{log}"
    );
}

#[tokio::test]
async fn routes_match_on_host_path_method_headers_and_query() {
    let names = ["host", "exact", "regex", "method", "header", "query", "fallback"];
    let mut ups = Vec::new();
    for n in names {
        ups.push(Upstream::echo(n).await);
    }
    let mut config = Config::new();
    for (n, up) in names.iter().zip(&ups) {
        config = config.cluster(n, &[up.addr]);
    }
    let config = config
        .route("host", "host = \"*.api.example\"", "host", &[], "")
        .route("exact", "path_exact = \"/exact\"", "exact", &[], "")
        .route("regex", "path_regex = \"/items/[0-9]+\"", "regex", &[], "")
        .route("method", "methods = [\"DELETE\"]", "method", &[], "")
        .route(
            "header",
            "headers = [{ name = \"x-canary\", exact = \"yes\" }]",
            "header",
            &[],
            "",
        )
        .route(
            "query",
            "query = [{ name = \"beta\", present = true }]",
            "query",
            &[],
            "",
        )
        .route("fallback", "path_prefix = \"/\"", "fallback", &[], "")
        .to_string();
    let weft = Weft::start(&config).await;
    let c = http1_client();
    let who = |r: Reply| r.json()["upstream"].as_str().map(str::to_owned);
    let url = |p: &str| weft.url(p);
    assert_eq!(
        who(send(
            &c,
            req("GET", &url("/x"))
                .header("host", "v1.api.example")
                .body(empty())
                .expect("r")
        )
        .await)
        .as_deref(),
        Some("host")
    );
    assert_eq!(who(get(&url("/exact")).await).as_deref(), Some("exact"));
    assert_eq!(who(get(&url("/exact/more")).await).as_deref(), Some("fallback"));
    assert_eq!(who(get(&url("/items/42")).await).as_deref(), Some("regex"));
    assert_eq!(who(get(&url("/items/abc")).await).as_deref(), Some("fallback"));
    assert_eq!(
        who(send(&c, req("DELETE", &url("/x")).body(empty()).expect("r")).await).as_deref(),
        Some("method")
    );
    assert_eq!(
        who(send(
            &c,
            req("GET", &url("/x"))
                .header("x-canary", "yes")
                .body(empty())
                .expect("r")
        )
        .await)
        .as_deref(),
        Some("header")
    );
    assert_eq!(who(get(&url("/x?beta")).await).as_deref(), Some("query"));
    assert_eq!(who(get(&url("/x?alpha=1")).await).as_deref(), Some("fallback"));
}

#[tokio::test]
async fn round_robin_spreads_requests_over_endpoints() {
    let (a, b) = (Upstream::echo("a").await, Upstream::echo("b").await);
    let config = Config::new().proxy_to(&[a.addr, b.addr]).to_string();
    let weft = Weft::start(&config).await;
    for _ in 0..10 {
        get(&weft.url("/")).await;
    }
    assert_eq!((a.hits(), b.hits()), (5, 5));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let up = Upstream::echo("a").await;
    // Each worker keeps its own idle connections (workers::per_core_workers_…): one
    // worker, so that every request may reuse the same one.
    let weft = Weft::start(&format!("[runtime]\nworkers = 1\n{}", one_route(&up, ""))).await;
    for _ in 0..20 {
        assert_eq!(get(&weft.url("/")).await.status, 200);
    }
    assert_eq!(up.hits(), 20);
    assert_eq!(
        up.connections(),
        1,
        "sequential requests should reuse one pooled upstream connection"
    );
}

#[tokio::test]
async fn downstream_keep_alive_serves_many_requests_on_one_connection() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    for _ in 0..3 {
        stream
            .write_all(b"GET /k HTTP/1.1\r\nHost: k\r\n\r\n")
            .await
            .expect("write");
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let len: usize = header_value(&head, "content-length")
            .and_then(|v| v.parse().ok())
            .expect("content-length");
        let mut body = vec![0; len];
        stream.read_exact(&mut body).await.expect("body");
    }
}

#[tokio::test]
async fn http2_downstream_to_http1_upstream_and_back() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let reply = send(&h2c_client(), req("GET", &weft.url("/h2")).body(empty()).expect("req")).await;
    assert_eq!(reply.version, http::Version::HTTP_2);
    let echo = reply.json();
    assert_eq!(echo["version"], "HTTP/1.1");
    assert_eq!(
        seen_header(&echo, "host"),
        Some(weft.addr.to_string().as_str()),
        "the :authority becomes Host"
    );
    assert_eq!(seen_header(&echo, "via"), Some("2.0 weft"));
}

#[tokio::test]
async fn http2_upstream_when_the_cluster_says_so() {
    let up = Upstream::echo("a").await;
    let config = one_route(&up, "").replace("endpoints = [", "protocol = \"http2\"\nendpoints = [");
    // One worker: each has its own HTTP/2 connection to an endpoint.
    let weft = Weft::start(&format!("[runtime]\nworkers = 1\n{config}")).await;
    for _ in 0..3 {
        let echo = get(&weft.url("/")).await.json();
        assert_eq!(echo["version"], "HTTP/2.0");
    }
    assert_eq!(up.connections(), 1, "HTTP/2 requests share one upstream connection");
}

#[tokio::test]
async fn request_bodies_chunked_and_sized_arrive_intact() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let body: String = (0..50_000).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let sized = send(
        &http1_client(),
        req("POST", &weft.url("/"))
            .body(Full::new(Bytes::from(body.clone())))
            .expect("req"),
    )
    .await;
    let echo = sized.json();
    assert_eq!(echo["body"], body.as_str());
    assert_eq!(seen_header(&echo, "content-length"), Some("50000"));

    // A streamed body of unknown length goes out chunked and arrives whole.
    let chunks: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = (0..10)
        .map(|i| Ok(http_body::Frame::data(Bytes::from(format!("part{i};")))))
        .collect();
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http();
    let streamed = req("PUT", &weft.url("/"))
        .body(StreamBody::new(futures_stream(chunks)))
        .expect("req");
    let resp = client.request(streamed).await.expect("send");
    let echo: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.expect("body").to_bytes()).expect("json");
    assert_eq!(
        echo["body"],
        "part0;part1;part2;part3;part4;part5;part6;part7;part8;part9;"
    );
    assert_eq!(seen_header(&echo, "transfer-encoding"), Some("chunked"));
}

fn futures_stream<T: Send + 'static>(items: Vec<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::iter(items)
}

#[tokio::test]
async fn response_bodies_stream_without_buffering() {
    // The upstream sends a first chunk, then waits; the client must see it before the end.
    let up = Upstream::start(|_req| async {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<http_body::Frame<Bytes>, std::convert::Infallible>>(4);
        tokio::spawn(async move {
            let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"first ")))).await;
            tokio::time::sleep(Duration::from_millis(1500)).await;
            let _ = tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"last")))).await;
        });
        http::Response::new(StreamBody::new(tokio_stream_like(rx)).boxed())
    })
    .await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let started = std::time::Instant::now();
    let resp = http1_client()
        .request(req("GET", &weft.url("/")).body(empty()).expect("req"))
        .await
        .expect("resp");
    let mut body = resp.into_body();
    let first = body
        .frame()
        .await
        .expect("frame")
        .expect("ok")
        .into_data()
        .expect("data");
    assert_eq!(&first[..], b"first ");
    assert!(
        started.elapsed() < Duration::from_millis(1200),
        "first chunk was held back: {:?}",
        started.elapsed()
    );
    let rest = body.collect().await.expect("rest").to_bytes();
    assert_eq!(&rest[..], b"last");
}

fn tokio_stream_like<T: Send + 'static>(mut rx: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

#[tokio::test]
async fn head_keeps_content_length_and_sends_no_body() {
    let up = Upstream::start(|_req| async {
        http::Response::builder()
            .header("content-length", "1234")
            .body(full(""))
            .expect("response")
    })
    .await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    stream
        .write_all(b"HEAD / HTTP/1.1\r\nHost: h\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(header_value(&head, "content-length"), Some("1234"));
    // The next bytes are the second response, not a body of the first.
    let next = read_head(&mut stream).await;
    assert!(next.starts_with("HTTP/1.1 200"), "a HEAD answer carried a body: {next}");
}

#[tokio::test]
async fn expect_100_continue_is_answered_before_the_body_is_sent() {
    let up = Upstream::echo("a").await;
    let weft = Weft::start(&one_route(&up, "")).await;
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    stream
        .write_all(b"POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .expect("write head");
    let interim = tokio::time::timeout(Duration::from_secs(3), read_head(&mut stream))
        .await
        .expect("100 Continue in time");
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    stream.write_all(b"hello").await.expect("write body");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let len: usize = header_value(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .expect("len");
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await.expect("body");
    let echo: serde_json::Value = serde_json::from_slice(&body).expect("json");
    assert_eq!(echo["body"], "hello");
    assert_eq!(seen_header(&echo, "expect"), None, "this hop answered the expectation");
}

#[tokio::test]
async fn trailers_pass_through_http2_end_to_end() {
    let up = Upstream::start(|_req| async {
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"payload"))),
            Ok(http_body::Frame::trailers(trailers)),
        ];
        http::Response::new(StreamBody::new(futures_stream(frames)).boxed())
    })
    .await;
    let config = one_route(&up, "").replace("endpoints = [", "protocol = \"http2\"\nendpoints = [");
    // One worker: each has its own HTTP/2 connection to an endpoint.
    let weft = Weft::start(&format!("[runtime]\nworkers = 1\n{config}")).await;
    let resp = h2c_client()
        .request(
            req("POST", &weft.url("/svc.Echo/Say"))
                .header("te", "trailers")
                .body(empty())
                .expect("req"),
        )
        .await
        .expect("resp");
    let collected = resp.into_body().collect().await.expect("body");
    let trailers = collected.trailers().cloned().expect("trailers reached the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(&collected.to_bytes()[..], b"payload");
}

#[tokio::test]
async fn protocol_upgrade_splices_both_directions() {
    // An upstream that switches to a line echo after 101.
    let up = Upstream::start(|mut req| async move {
        let upgraded = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            if let Ok(io) = upgraded.await {
                let mut io = hyper_util::rt::TokioIo::new(io);
                let mut buf = [0u8; 64];
                while let Ok(n) = io.read(&mut buf).await {
                    if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            }
        });
        http::Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "echo")
            .body(full(""))
            .expect("101")
    })
    .await;
    // Only protocols a route lists are switched to (the default list is ["websocket"]).
    let weft = Weft::start(&one_route(&up, "upgrades = [\"echo\"]")).await;
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    stream
        .write_all(b"GET /ws HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert_eq!(header_value(&head, "upgrade"), Some("echo"));
    stream.write_all(b"ping").await.expect("write");
    let mut buf = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(3), stream.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .expect("read");
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let up = Upstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(800)).await;
        http::Response::new(full("finished"))
    })
    .await;
    let mut weft = Weft::start(&one_route(&up, "")).await;
    let url = weft.url("/slow");
    let in_flight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    weft.terminate();
    let reply = in_flight.await.expect("task");
    assert_eq!((reply.status, reply.text().as_str()), (200, "finished"));
    assert!(
        weft.wait_exit(Duration::from_secs(5)).await,
        "weft should exit 0 after draining"
    );
    assert!(
        TcpStream::connect(weft.addr).await.is_err(),
        "no new connections after shutdown"
    );
}

async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.expect("read");
        assert!(n > 0, "connection closed mid-head: {}", String::from_utf8_lossy(&head));
        head.push(byte[0]);
    }
    String::from_utf8_lossy(&head).into_owned()
}

fn header_value<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}
