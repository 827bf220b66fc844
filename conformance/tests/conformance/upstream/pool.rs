//! The upstream connection pool through the real binary: a keep-alive connection the
//! upstream closed is never a failed request, and a response abandoned half-read never
//! leaves its connection to the next request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use weft_conformance::*;

/// An HTTP/1.1 origin that answers one request per connection with a keep-alive response,
/// then closes the connection shortly after, as servers with short keep-alive timeouts do.
async fn short_keepalive_origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut head = Vec::new();
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Closed without `Connection: close`: the proxy learns it only from the socket.
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_not_a_failed_request() {
    let (origin, _task) = short_keepalive_origin().await;
    let config = Config::new().proxy_to(&[origin]);
    let weft = Weft::start(&config.to_string()).await;
    for gap in [0u64, 5, 10, 20, 30, 50] {
        for _ in 0..5 {
            let reply = get(&weft.url("/")).await;
            assert_eq!(
                reply.status,
                200,
                "after a {gap} ms gap: {}\n{}",
                reply.text(),
                weft.log()
            );
            tokio::time::sleep(Duration::from_millis(gap)).await;
        }
    }
}

#[tokio::test]
async fn a_response_abandoned_half_read_does_not_poison_the_pool() {
    let up = Upstream::start(|req| async move {
        if req.uri().path() == "/big" {
            // 8 MiB: far more than a client reads before giving up.
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let stream = futures_util::stream::iter((0..128).map(move |_| Ok(hyper::body::Frame::data(chunk.clone()))));
            return http::Response::new(http_body_util::BodyExt::boxed(http_body_util::StreamBody::new(stream)));
        }
        http::Response::new(full("small"))
    })
    .await;
    let config = Config::new().proxy_to(&[up.addr]);
    let weft = Weft::start(&config.to_string()).await;

    let client = http1_client();
    let resp = client
        .request(
            http::Request::get(weft.url("/big"))
                .body(http_body_util::Full::new(Bytes::new()))
                .expect("req"),
        )
        .await
        .expect("response head");
    assert_eq!(resp.status(), 200);
    drop(resp);
    for _ in 0..5 {
        let reply = get(&weft.url("/small")).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "small"));
    }
    assert!(up.connections() >= 2, "the abandoned connection was not reused");
}

/// One HTTP/1.1 request head read off a raw connection: its method, `Content-Length`, the
/// `x-weft-attempt` it carries, and the bytes read past the head.
struct Head {
    method: String,
    length: usize,
    attempt: String,
    rest: Vec<u8>,
}

/// Reads one request head; `None` when the peer closed first. `carry` holds bytes read
/// past the previous message.
async fn read_head(stream: &mut tokio::net::TcpStream, carry: Vec<u8>) -> Option<Head> {
    let mut data = carry;
    let mut buf = [0u8; 8192];
    let end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    };
    let text = String::from_utf8_lossy(&data[..end]).into_owned();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
            .unwrap_or_default()
    };
    Some(Head {
        method: text.split(' ').next().unwrap_or_default().to_owned(),
        length: field("content-length").parse().unwrap_or(0),
        attempt: field("x-weft-attempt"),
        rest: data[end..].to_vec(),
    })
}

/// Reads and drops `n` body bytes, `have` of which were read already; returns what was
/// read past them.
async fn drain(stream: &mut tokio::net::TcpStream, n: usize, have: Vec<u8>) -> Option<Vec<u8>> {
    let mut have = have;
    let mut buf = [0u8; 8192];
    while have.len() < n {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(k) => have.extend_from_slice(&buf[..k]),
        }
    }
    Some(have.split_off(n))
}

/// An origin that answers a POST at once with 401, before its body has arrived, then
/// reads the body to keep the connection (as nginx and Node do); a GET gets `200 ok`.
async fn early_answering_origin() -> (std::net::SocketAddr, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut carry = Vec::new();
                while let Some(head) = read_head(&mut stream, std::mem::take(&mut carry)).await {
                    if head.method == "POST" {
                        let answer = b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 6\r\n\r\ndenied";
                        if stream.write_all(answer).await.is_err() {
                            return;
                        }
                        match drain(&mut stream, head.length, head.rest).await {
                            Some(rest) => carry = rest,
                            None => return,
                        }
                    } else {
                        carry = head.rest;
                        if stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                }
            });
        }
    });
    (addr, connections, task)
}

/// Reads until a whole response head has arrived; returns it.
async fn response_head(stream: &mut tokio::net::TcpStream) -> String {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    while !data.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(20), stream.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => data.extend_from_slice(&buf[..n]),
            other => panic!("no response head: {other:?} after {:?}", String::from_utf8_lossy(&data)),
        }
    }
    String::from_utf8_lossy(&data).into_owned()
}

#[tokio::test]
async fn a_connection_still_sending_a_body_is_not_lent_to_the_next_request() {
    let (origin, connections, _task) = early_answering_origin().await;
    // One worker: the connections counted below are one worker's pool.
    let config = Config::new()
        .top("[runtime]\nworkers = 1\n")
        .cluster("up", &[origin])
        .route("all", "path_prefix = \"/\"", "up", &[], "timeout = \"3s\"");
    let weft = Weft::start(&config.to_string()).await;

    // An upload that trickles: the origin answers 401 at once and keeps reading it.
    let mut upload = tokio::net::TcpStream::connect(weft.addr).await.expect("connect");
    upload
        .write_all(b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n0123456789")
        .await
        .expect("write");
    let head = response_head(&mut upload).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");

    // Meanwhile, other clients' requests are answered at once, not after the upload.
    for _ in 0..3 {
        let reply = get(&weft.url("/")).await;
        assert_eq!((reply.status, reply.text().as_str()), (200, "ok"), "{}", weft.log());
    }

    // The upload ends; its connection serves on, and no connection churns.
    upload.write_all(&[b'x'; 990]).await.expect("write the rest");
    for _ in 0..3 {
        let reply = get(&weft.url("/")).await;
        assert_eq!(reply.status, 200);
    }
    assert!(
        connections.load(Ordering::SeqCst) <= 2,
        "{}",
        connections.load(Ordering::SeqCst)
    );
}

/// An origin that answers the first request it ever gets, then reads every later one and
/// closes its connection without an answer. Records the `x-weft-attempt` of each request.
async fn resetting_origin() -> (
    std::net::SocketAddr,
    Arc<Mutex<Vec<String>>>,
    tokio::task::JoinHandle<()>,
) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let log = log.clone();
            tokio::spawn(async move {
                let mut carry = Vec::new();
                while let Some(head) = read_head(&mut stream, std::mem::take(&mut carry)).await {
                    let first = {
                        let mut log = log.lock().expect("log");
                        log.push(head.attempt.clone());
                        log.len() == 1
                    };
                    if !first {
                        return;
                    }
                    carry = head.rest;
                    if stream
                        .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    (addr, seen, task)
}

#[tokio::test]
async fn the_pools_replay_is_one_of_the_tries_and_failed_tries_answer_503() {
    let (origin, seen, _task) = resetting_origin().await;
    let retry = "[clusters.retry]\nattempts = 4\nbackoff_base = \"1ms\"\nbackoff_max = \"2ms\"";
    let config = Config::new()
        .cluster_with("up", &[origin], retry)
        .route("all", "path_prefix = \"/\"", "up", &[], "");
    let weft = Weft::start(&config.to_string()).await;
    // The first request leaves a pooled connection, which the origin closes on the next.
    assert_eq!(get(&weft.url("/")).await.status, 200);
    let reply = get(&weft.url("/")).await;
    let attempts = seen.lock().expect("log").clone();
    assert_eq!(
        attempts[1..],
        ["1", "2", "3", "4"],
        "four tries in all, each numbered: {attempts:?}"
    );
    // Every try was reset: the upstream is unavailable (503), not malformed (502).
    assert_eq!(
        (reply.status, reply.text().as_str()),
        (503, "upstream connection failed\n")
    );
}

/// An origin whose responses carry both `Content-Length` and `Transfer-Encoding`, in
/// either order and with a coding before `chunked`; the chunked body is `hello`.
async fn double_framed_origin() -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    let served = Arc::new(AtomicUsize::new(0));
    let task = tokio::spawn(async move {
        while let Ok((mut stream, _)) = socket.accept().await {
            let served = served.clone();
            tokio::spawn(async move {
                let mut carry = Vec::new();
                while let Some(head) = read_head(&mut stream, std::mem::take(&mut carry)).await {
                    carry = head.rest;
                    let framing = [
                        "Content-Length: 100\r\nTransfer-Encoding: chunked",
                        "Transfer-Encoding: chunked\r\nContent-Length: 3",
                        "Content-Length: 5\r\nTransfer-Encoding: identity, chunked",
                    ][served.fetch_add(1, Ordering::SeqCst) % 3];
                    let answer = format!("HTTP/1.1 200 OK\r\n{framing}\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
                    if stream.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, task)
}

#[tokio::test]
async fn a_response_with_both_length_and_chunked_loses_its_length() {
    let (origin, _task) = double_framed_origin().await;
    let config = Config::new().proxy_to(&[origin]);
    let weft = Weft::start(&config.to_string()).await;
    for _ in 0..6 {
        let raw =
            weft_conformance::raw::exchange(weft.addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        let (head, body) = raw.split_once("\r\n\r\n").expect("a response");
        assert!(head.starts_with("HTTP/1.1 200"), "{raw}");
        let lengths: Vec<&str> = head
            .lines()
            .filter(|l| l.to_ascii_lowercase().starts_with("content-length:"))
            .collect();
        assert!(
            lengths.is_empty() || lengths == ["content-length: 5"],
            "the upstream's Content-Length was passed on: {raw}"
        );
        assert!(body.contains("hello"), "{raw}");
    }
}
