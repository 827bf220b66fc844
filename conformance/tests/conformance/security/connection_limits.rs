//! What one client can make the proxy hold, through the real binary: silent, slow and idle
//! connections are closed within their timeouts, a client that stops reading is cut off,
//! connection caps hold per listener and per client address, and HTTP/2 rapid-reset and
//! CONTINUATION floods leave the proxy answering everyone else (issue 8).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use weft_conformance::h2raw::{self, CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, HEADERS, RST_STREAM};
use weft_conformance::raw::{closed_after, read_to_close, status};
use weft_conformance::*;

async fn start(up: &Upstream, listener: &str) -> Weft {
    let config = Config::new().listener(listener).proxy_to(&[up.addr]);
    Weft::start(&config.to_string()).await
}

fn series(listener_reason: &str, name: &str) -> String {
    format!("weft_{name}_total{{listener=\"main\",reason=\"{listener_reason}\"}}")
}

#[tokio::test]
async fn silent_slow_and_idle_connections_are_closed_within_their_timeouts() {
    let up = Upstream::echo("up").await;
    let weft = start(&up, "timeouts = { header_read = \"1s\", idle = \"1500ms\" }").await;
    let limit = Duration::from_secs(4);

    // Connects and says nothing.
    let silent = closed_after(weft.addr, limit, |s| async { s }).await;
    assert!(
        silent.is_some_and(|t| t >= Duration::from_millis(900)),
        "silent: {silent:?}"
    );

    // Sends a request head one line at a time, never finishing it.
    let slow = closed_after(weft.addr, limit, |mut s| async move {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.expect("write");
        for i in 0..20 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(format!("X-{i}: v\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        s
    })
    .await;
    assert!(slow.is_some(), "a head trickling in is cut at header_read");

    // One request, then nothing: closed after the idle timeout, not before.
    let idle = closed_after(weft.addr, limit, |mut s| async move {
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await.expect("write");
        s
    })
    .await;
    assert!(idle.is_some_and(|t| t >= Duration::from_millis(1400)), "idle: {idle:?}");

    // A connection in use is not idle: requests every 500 ms keep it open past both timeouts.
    let mut busy = TcpStream::connect(weft.addr).await.expect("connect");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        busy.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .expect("still open");
        let (answer, closed) = read_to_close(&mut busy, Duration::from_millis(500)).await;
        assert!(!closed && status(&answer) == Some(200), "{answer}");
    }

    assert!(weft.metric(&series("header_read_timeout", "connections_closed")).await >= 2.0);
    assert!(weft.metric(&series("idle_timeout", "connections_closed")).await >= 1.0);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off() {
    // 64 MiB, far more than socket buffers hold.
    let up = Upstream::start(|_req| async {
        let chunk = Bytes::from(vec![b'x'; 1 << 20]);
        let stream = futures_util::stream::iter((0..64).map(move |_| Ok(hyper::body::Frame::data(chunk.clone()))));
        http::Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream)))
    })
    .await;
    let weft = start(&up, "timeouts = { send_idle = \"1s\" }").await;
    let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .expect("write");
    // Never read. The proxy's writes block; within a few seconds it gives up.
    let deadline = Instant::now() + Duration::from_secs(8);
    while weft.metric(&series("send_timeout", "connections_closed")).await < 1.0 {
        assert!(Instant::now() < deadline, "the blocked connection was never closed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn connect_from(ip: &str, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(format!("{ip}:0").parse().expect("addr"))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Whether the proxy answers a request on this connection (a refused one is closed at once).
async fn answers(mut stream: TcpStream) -> bool {
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        .await
        .is_err()
    {
        return false;
    }
    status(&read_to_close(&mut stream, Duration::from_secs(3)).await.0) == Some(200)
}

#[tokio::test]
async fn one_client_cannot_hold_the_proxys_sockets() {
    let up = Upstream::echo("up").await;
    // The held connections say nothing: a header-read timeout longer than any wait here
    // keeps them open however slowly a loaded machine runs the steps (the default 10 s
    // once closed all five mid-test).
    let weft = start(
        &up,
        "limits = { max_connections = 5, max_connections_per_client = 3 }\ntimeouts = { header_read = \"120s\" }",
    )
    .await;

    // 127.0.0.2 holds its three; a fourth from it is closed at accept.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(connect_from("127.0.0.2", weft.addr).await);
    }
    // A connection counts once the proxy accepted it, which a loaded machine can delay.
    open_connections_reach(&weft, 3).await;
    assert!(
        !answers(connect_from("127.0.0.2", weft.addr).await).await,
        "over the per-client cap"
    );
    // Another client still gets in, up to the listener's cap.
    held.push(connect_from("127.0.0.3", weft.addr).await);
    assert!(
        answers(connect_from("127.0.0.3", weft.addr).await).await,
        "another client is served"
    );
    held.push(connect_from("127.0.0.4", weft.addr).await);
    open_connections_reach(&weft, 5).await;
    assert!(
        !answers(connect_from("127.0.0.5", weft.addr).await).await,
        "over the listener's cap"
    );

    // Closing frees the places.
    drop(held);
    open_connections_reach(&weft, 0).await;
    assert!(
        answers(connect_from("127.0.0.2", weft.addr).await).await,
        "places are given back"
    );
    let per_client = "weft_connections_rejected_total{listener=\"main\",reason=\"max_connections_per_client\"}";
    assert!(weft.metric(per_client).await >= 1.0);
    let total = "weft_connections_rejected_total{listener=\"main\",reason=\"max_connections\"}";
    assert!(weft.metric(total).await >= 1.0);
}

/// Waits until the listener holds exactly `n` connections (a condition, not a sleep).
async fn open_connections_reach(weft: &Weft, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let open = weft.metric("weft_connections_open{listener=\"main\"}").await;
        if open == n as f64 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the listener holds {open} connections, not {n}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A plain h2c request on a new connection: the proxy still serves others.
async fn h2c_get_works(weft: &Weft) {
    let started = Instant::now();
    let reply = tokio::time::timeout(
        Duration::from_secs(3),
        send(
            &h2c_client(),
            http::Request::get(weft.url("/after"))
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("request"),
        ),
    )
    .await
    .expect("the proxy answers within 3 s");
    assert_eq!(reply.status, 200);
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
}

#[tokio::test]
async fn http2_rapid_reset_is_bounded() {
    let up = Upstream::echo("up").await;
    let weft = start(&up, "").await;
    let mut flood = h2raw::connect(weft.addr).await;
    let block = h2raw::get_block("a");
    let mut burst = Vec::new();
    for i in 0..5000u32 {
        let stream = 2 * i + 1;
        burst.extend(h2raw::frame(HEADERS, END_STREAM | END_HEADERS, stream, &block));
        burst.extend(h2raw::frame(RST_STREAM, 0, stream, &8u32.to_be_bytes()));
    }
    // The proxy may close the connection before it has read it all.
    let _ = flood.write_all(&burst).await;
    let (frames, closed) = h2raw::frames_until_close(&mut flood, Duration::from_secs(5)).await;
    assert!(
        closed && frames.contains(&GOAWAY),
        "the flooding connection gets GOAWAY and is closed (frames {:?}…)",
        &frames[..frames.len().min(20)]
    );
    assert!(
        up.hits() < 5000,
        "cancelled streams did not all cost an upstream request ({})",
        up.hits()
    );
    h2c_get_works(&weft).await;
}

#[tokio::test]
async fn http2_continuation_flood_is_bounded() {
    let up = Upstream::echo("up").await;
    let weft = start(&up, "").await;
    let mut flood = h2raw::connect(weft.addr).await;
    let mut start = h2raw::get_block("a");
    h2raw::literal(&mut start, b"x-first", b"1");
    let _ = flood.write_all(&h2raw::frame(HEADERS, END_STREAM, 1, &start)).await;
    // Endless CONTINUATION frames, never END_HEADERS: 64 MiB if nobody stops us.
    let mut piece = Vec::new();
    h2raw::literal(&mut piece, b"x-junk", &vec![b'j'; 8000]);
    let frame = h2raw::frame(CONTINUATION, 0, 1, &piece);
    let started = Instant::now();
    let mut sent = 0usize;
    while sent < 64 << 20 && started.elapsed() < Duration::from_secs(10) {
        if flood.write_all(&frame).await.is_err() {
            break;
        }
        sent += frame.len();
    }
    assert!(sent < 8 << 20, "the proxy kept reading a header block of {sent} bytes");
    h2c_get_works(&weft).await;
    assert_eq!(up.hits(), 1, "only the check request reached the upstream");
}

#[tokio::test]
async fn an_idle_http2_connection_gets_goaway() {
    let up = Upstream::echo("up").await;
    let weft = start(&up, "timeouts = { idle = \"1s\" }").await;
    let mut conn = h2raw::connect(weft.addr).await;
    let block = h2raw::get_block("a");
    conn.write_all(&h2raw::frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .expect("request");
    let started = Instant::now();
    let (frames, closed) = h2raw::frames_until_close(&mut conn, Duration::from_secs(5)).await;
    assert!(closed, "closed after the idle timeout");
    assert!(frames.contains(&GOAWAY), "with GOAWAY first: {frames:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// Sends `request` and reads until `count` whole responses (with Content-Length) came.
async fn answers_to(stream: &mut TcpStream, request: &[u8], count: usize) -> String {
    use tokio::io::AsyncReadExt;
    stream.write_all(request).await.expect("write");
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        if complete_responses(&out) >= count {
            return String::from_utf8_lossy(&out).into_owned();
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => out.extend_from_slice(&buf[..n]),
            other => panic!("no whole answer ({other:?}): {}", String::from_utf8_lossy(&out)),
        }
    }
}

fn complete_responses(mut raw: &[u8]) -> usize {
    let mut n = 0;
    while let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().expect("content-length"));
        if raw.len() < end + 4 + length {
            break;
        }
        raw = &raw[end + 4 + length..];
        n += 1;
    }
    n
}

async fn one_answer(stream: &mut TcpStream, request: &[u8]) -> String {
    answers_to(stream, request, 1).await
}

#[tokio::test]
async fn idle_keep_alive_connections_give_their_buffers_back_and_still_serve() {
    let up = Upstream::echo("up").await;
    // One worker: what one thread frees, the same thread's allocator reuses.
    let config = Config::new()
        .top("[runtime]\nworkers = 1\n")
        .listener("")
        .proxy_to(&[up.addr]);
    let weft = Weft::start(&config.to_string()).await;
    let get = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    let mut warm = TcpStream::connect(weft.addr).await.expect("connect");
    assert_eq!(status(&one_answer(&mut warm, get).await), Some(200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = rss_kib(weft.pid());

    // Each sends a request, then rests: hyper's read and write buffers (8 KiB each) and
    // the request's state are freed within a second or so. The allocator keeps what was
    // freed rather than giving it back to the system, so the measure is reuse: a second
    // batch opened after the first came to rest grows the process by little. Holding
    // them, as before, cost ~40 KiB a connection here (debug build).
    let n = 200;
    let mut conns = Vec::with_capacity(2 * n);
    for batch in 0..2 {
        if batch == 1 {
            tokio::time::sleep(Duration::from_millis(2500)).await;
        }
        for _ in 0..n {
            let mut s = TcpStream::connect(weft.addr).await.expect("connect");
            assert_eq!(status(&one_answer(&mut s, get).await), Some(200));
            conns.push(s);
        }
    }
    let per_conn = rss_kib(weft.pid()).saturating_sub(before) as f64 / (2 * n) as f64;
    assert!(per_conn < 30.0, "{per_conn:.1} KiB per idle connection");

    // At rest, each still serves: two pipelined requests, a head sent in pieces, a body.
    let s = &mut conns[0];
    let two = answers_to(s, &[&get[..], &get[..]].concat(), 2).await;
    assert_eq!(two.matches("HTTP/1.1 200").count(), 2, "{two}");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    s.write_all(b"GET / HT").await.expect("write");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(status(&one_answer(s, b"TP/1.1\r\nHost: a\r\n\r\n").await), Some(200));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let post = one_answer(s, b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello").await;
    assert_eq!(status(&post), Some(200), "{post}");
    for s in &mut conns[1..] {
        assert_eq!(status(&one_answer(s, get).await), Some(200));
    }
}

#[tokio::test]
async fn a_slow_head_after_a_rest_is_still_cut() {
    let up = Upstream::echo("up").await;
    let weft = start(&up, "timeouts = { header_read = \"1s\" }").await;
    let limit = Duration::from_secs(6);
    // One request, a rest long enough for the connection to be taken apart, then a head
    // trickling in: cut at header_read as on a fresh connection.
    let slow = closed_after(weft.addr, limit, |mut s| async move {
        one_answer(&mut s, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n").await;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        s.write_all(b"GET / HTTP/1.1\r\nHost: a\r\n").await.expect("write");
        for i in 0..40 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if s.write_all(format!("X-{i}: v\r\n").as_bytes()).await.is_err() {
                break;
            }
        }
        s
    })
    .await;
    assert!(slow.is_some(), "a head trickling in after a rest is cut at header_read");
}
