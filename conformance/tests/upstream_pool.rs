//! The upstream connection pool through the real binary: a keep-alive connection the
//! upstream closed is never a failed request, and a response abandoned half-read never
//! leaves its connection to the next request.

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
    let config = Config::new()
        .cluster("up", &[origin])
        .route("all", "path_prefix = \"/\"", "up", &[], "");
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
    let config = Config::new()
        .cluster("up", &[up.addr])
        .route("all", "path_prefix = \"/\"", "up", &[], "");
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
