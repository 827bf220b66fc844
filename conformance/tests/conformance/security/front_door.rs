//! The front door through the real binary, with raw bytes where a client library would
//! refuse to misbehave: what a route's filters decide cannot be walked around by spelling
//! the path or the host differently, by naming a filter's header in `Connection`, or by
//! oversized and malformed input (issue 8).

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use weft_conformance::raw::{exchange, status};
use weft_conformance::*;

/// sha256("k-admin"): the api-key filter stores only hashes.
const ADMIN_KEY_SHA256: &str = "7d0035df433cb7693b24a5aef4c454d04af01028e1a8b4bbf19b67233526bd17";

/// `/admin` behind the api-key filter on upstream `admin`; everything else on `public`.
async fn protected(listener: &str) -> (Weft, Upstream, Upstream) {
    let admin = Upstream::echo("admin").await;
    let public = Upstream::echo("public").await;
    let config = Config::new()
        .listener(listener)
        .cluster("admin", &[admin.addr])
        .cluster("public", &[public.addr])
        .wasm_filter(
            "keys",
            plugins::API_KEY,
            &format!("keys = [{{ id = \"ops\", sha256 = \"{ADMIN_KEY_SHA256}\" }}], sources = [\"header:x-api-key\"]"),
            "",
        )
        .native_filter("tag", "headers", "request_set = { x-user = \"checked-by-weft\" }")
        .route("admin", "path_prefix = \"/admin\"", "admin", &["keys"], "")
        .route("tagged", "path_prefix = \"/tagged\"", "public", &["tag"], "")
        .route("public", "path_prefix = \"/\"", "public", &[], "");
    (Weft::start(&config.to_string()).await, admin, public)
}

fn get_raw(path: &str, extra: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: shop.example\r\n{extra}Connection: close\r\n\r\n").into_bytes()
}

#[tokio::test]
async fn encoded_and_dot_segment_paths_cannot_skip_a_protected_prefix() {
    let (weft, admin, public) = protected("").await;
    for spelled in [
        "/admin",
        "/%61dmin",
        "//admin",
        "/x/../admin",
        "/%2e%2e/admin",
        "/./admin/../admin",
        "/%2561dmin/../admin",
    ] {
        let answer = exchange(weft.addr, &get_raw(spelled, "")).await;
        assert_eq!(
            status(&answer),
            Some(401),
            "{spelled} must meet the api-key filter:\n{answer}"
        );
    }
    assert_eq!(
        admin.hits() + public.hits(),
        0,
        "nothing reached an upstream unauthenticated"
    );

    let answer = exchange(weft.addr, &get_raw("/%61dmin//users/./x", "X-Api-Key: k-admin\r\n")).await;
    assert_eq!(status(&answer), Some(200), "{answer}");
    assert!(answer.contains("\"upstream\":\"admin\""), "{answer}");
    assert!(
        answer.contains("\"uri\":\"/admin/users/x\""),
        "the upstream sees the path the route matched:\n{answer}"
    );

    for refused in ["/admin%2Fx", "/a%5cb", "/a%00b", "/a%zz", "/a\\..\\admin"] {
        let answer = exchange(weft.addr, &get_raw(refused, "")).await;
        assert_eq!(status(&answer), Some(400), "{refused}:\n{answer}");
    }
    // hyper itself refuses a raw backslash; the rest are the front door's, and counted.
    let refused = weft
        .metric("weft_downstream_refused_total{listener=\"main\",reason=\"bad_path\"}")
        .await;
    assert!(refused >= 4.0, "{refused}");
}

#[tokio::test]
async fn merge_slashes_can_be_turned_off_per_listener() {
    let (weft, admin, _public) = protected("merge_slashes = false\nreject_encoded_slashes = false").await;
    // `//admin` is then a different path: it is not `/admin`, and goes to the catch-all
    // as `//admin` (an upstream that merges slashes would need them merged here).
    let answer = exchange(weft.addr, &get_raw("//admin", "")).await;
    assert!(answer.contains("\"uri\":\"//admin\""), "{answer}");
    let answer = exchange(weft.addr, &get_raw("/a%2fb", "")).await;
    assert!(answer.contains("\"uri\":\"/a%2Fb\""), "kept encoded: {answer}");
    assert_eq!(admin.hits(), 0);
}

#[tokio::test]
async fn one_host_per_request() {
    let (weft, _admin, _public) = protected("").await;
    // Absolute form: the target's authority is the host, for routing and upstream alike.
    let answer = exchange(
        weft.addr,
        b"GET http://public.example.com/x HTTP/1.1\r\nHost: admin.example.com\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status(&answer), Some(200), "{answer}");
    assert!(answer.contains("\"host\":[\"public.example.com\"]"), "{answer}");

    for bad in [
        &b"GET / HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\nConnection: close\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: user@a.example\r\nConnection: close\r\n\r\n",
    ] {
        let answer = exchange(weft.addr, bad).await;
        assert_eq!(status(&answer), Some(400), "{}\n{answer}", String::from_utf8_lossy(bad));
    }
}

#[tokio::test]
async fn a_client_cannot_remove_a_header_a_filter_set() {
    let (weft, _admin, _public) = protected("").await;
    let answer = exchange(
        weft.addr,
        &get_raw("/tagged", "Connection: x-user, keep-alive\r\nX-User: root\r\n"),
    )
    .await;
    assert_eq!(status(&answer), Some(200), "{answer}");
    assert!(
        answer.contains("\"x-user\":[\"checked-by-weft\"]"),
        "the filter's header reaches the upstream, the client's does not:\n{answer}"
    );
}

#[tokio::test]
async fn oversized_input_gets_its_status() {
    let up = Upstream::echo("up").await;
    let config = Config::new()
        .listener("limits = { max_uri_bytes = 2048, max_headers = 20, max_request_body_bytes = 1000 }")
        .proxy_to(&[up.addr]);
    let weft = Weft::start(&config.to_string()).await;

    let big_header = format!("X-Big: {}\r\n", "a".repeat(200 * 1024));
    let answer = exchange(weft.addr, &get_raw("/", &big_header)).await;
    assert_eq!(
        status(&answer),
        Some(431),
        "a 200 KB header: {}",
        &answer[..answer.len().min(200)]
    );

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    assert_eq!(status(&exchange(weft.addr, &get_raw("/", &many)).await), Some(431));

    let long = format!("/{}", "a".repeat(3000));
    assert_eq!(status(&exchange(weft.addr, &get_raw(&long, "")).await), Some(414));

    let declared = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5000\r\nConnection: close\r\n\r\n";
    assert_eq!(status(&exchange(weft.addr, declared).await), Some(413));

    let mut chunked = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
    for _ in 0..3 {
        chunked.extend_from_slice(format!("1f4\r\n{}\r\n", "b".repeat(500)).as_bytes());
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    assert_eq!(
        status(&exchange(weft.addr, &chunked).await),
        Some(413),
        "chunked past the limit"
    );

    let overflow = b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\nfffffffffffffffff1\r\nx\r\n0\r\n\r\n";
    assert_eq!(
        status(&exchange(weft.addr, overflow).await),
        Some(400),
        "a chunk size that overflows is the client's fault"
    );

    let fine = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc";
    let answer = exchange(weft.addr, fine).await;
    assert_eq!(status(&answer), Some(200), "{answer}");
    let metrics = weft.admin("GET", "/metrics").await.1;
    // hyper refuses an HTTP/1.1 head with too many lines as too large (431) before we see it.
    for reason in ["headers_too_large", "uri_too_long", "body_too_large", "bad_body"] {
        assert!(
            metrics.contains(&format!(
                "weft_downstream_refused_total{{listener=\"main\",reason=\"{reason}\"}}"
            )),
            "{reason} is counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_slow_body_gets_408_within_its_timeout() {
    let up = Upstream::echo("up").await;
    let config = Config::new()
        .listener("timeouts = { body_idle = \"500ms\" }")
        .proxy_to(&[up.addr]);
    let weft = Weft::start(&config.to_string()).await;
    let started = std::time::Instant::now();
    let mut stream = tokio::net::TcpStream::connect(weft.addr).await.expect("connect");
    stream
        .write_all(b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nab")
        .await
        .expect("write");
    let (answer, _) = raw::read_to_close(&mut stream, Duration::from_secs(5)).await;
    assert_eq!(status(&answer), Some(408), "{answer}");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
}

#[tokio::test]
async fn http2_takes_the_same_front_door() {
    let (weft, admin, _public) = protected("").await;
    let h2 = h2c_client();
    let request = |path: &str, host: Option<&str>| {
        let mut b = http::Request::get(weft.url(path));
        if let Some(host) = host {
            b = b.header("host", host);
        }
        b.body(http_body_util::Full::new(bytes::Bytes::new())).expect("request")
    };
    let reply = send(&h2, request("/x/../%61dmin", None)).await;
    assert_eq!(reply.status, 401, "the api-key filter runs over HTTP/2 as well");
    // :authority says one host, a host header another: refused, never guessed.
    let reply = send(&h2, request("/", Some("admin.example"))).await;
    assert_eq!(reply.status, 400, "{}", reply.text());
    assert_eq!(admin.hits(), 0);
}

#[tokio::test]
async fn ambiguous_framing_never_reaches_the_upstream_ambiguous() {
    let up = Upstream::echo("up").await;
    let config = Config::new().proxy_to(&[up.addr]);
    let weft = Weft::start(&config.to_string()).await;
    // Content-Length and chunked together (RFC 9112 §6.3): chunked wins, the length is
    // dropped, and the upstream gets one unambiguous message.
    for both in [
        &b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 50\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"[..],
        b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    ] {
        let answer = exchange(weft.addr, both).await;
        assert_eq!(status(&answer), Some(200), "{answer}");
        assert!(answer.contains("\"body\":\"abc\""), "{answer}");
        assert!(!answer.contains("\"content-length\":[\"50\"]"), "{answer}");
    }
    for refused in [
        // A transfer coding that does not end in chunked has no length at all.
        &b"POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\nabc"[..],
        // Conflicting lengths.
        b"POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
        // Whitespace before the colon (RFC 9112 §5.1).
        b"GET / HTTP/1.1\r\nHost : a\r\n\r\n",
        // Transfer-Encoding on HTTP/1.0.
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ] {
        let answer = exchange(weft.addr, refused).await;
        assert_eq!(
            status(&answer),
            Some(400),
            "{}\n{answer}",
            String::from_utf8_lossy(refused)
        );
    }
    assert_eq!(up.hits(), 2, "only the two well-resolved requests reached the upstream");
}

#[tokio::test]
async fn a_trailing_dot_cannot_skip_a_host_route() {
    let admin = Upstream::echo("admin").await;
    let public = Upstream::echo("public").await;
    let config = Config::new()
        .cluster("admin", &[admin.addr])
        .cluster("public", &[public.addr])
        .wasm_filter(
            "keys",
            plugins::API_KEY,
            &format!("keys = [{{ id = \"ops\", sha256 = \"{ADMIN_KEY_SHA256}\" }}]"),
            "",
        )
        .route("admin", "host = \"admin.example\"", "admin", &["keys"], "")
        .route("public", "path_prefix = \"/\"", "public", &[], "");
    let weft = Weft::start(&config.to_string()).await;
    for host in ["admin.example", "ADMIN.example.", "admin.example.:80"] {
        let answer = exchange(
            weft.addr,
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await;
        assert_eq!(status(&answer), Some(401), "Host: {host}\n{answer}");
    }
    assert_eq!(admin.hits() + public.hits(), 0);
}
