//! Protocol upgrades through the real binary: a WebSocket session with a real client and
//! server (tokio-tungstenite), an `Upgrade` the route does not list forwarded as a plain
//! request, and an idle upgraded connection closed.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use weft_conformance::*;

/// A WebSocket server that echoes every message.
async fn echo_server() -> std::net::SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = socket.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = socket.accept().await {
            tokio::spawn(async move {
                let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

fn config(upstream: std::net::SocketAddr, route_extra: &str) -> String {
    Config::new()
        .cluster("ws", &[upstream])
        .route("all", "path_prefix = \"/\"", "ws", &[], route_extra)
        .to_string()
}

async fn connect(weft: &Weft) -> tokio_tungstenite::WebSocketStream<TcpStream> {
    let stream = TcpStream::connect(weft.addr).await.expect("connect");
    let (ws, resp) = tokio_tungstenite::client_async(format!("ws://{}/chat", weft.addr), stream)
        .await
        .expect("websocket handshake through weft");
    assert_eq!(resp.status(), 101);
    ws
}

#[tokio::test]
async fn a_websocket_session_passes_both_ways() {
    let weft = Weft::start(&config(echo_server().await, "")).await;
    let mut ws = connect(&weft).await;
    for i in 0..20 {
        ws.send(Message::text(format!("hello {i}"))).await.expect("send");
        let echo = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("echo in time")
            .expect("open")
            .expect("frame");
        assert_eq!(echo, Message::text(format!("hello {i}")));
    }
    let big = vec![7u8; 200_000];
    ws.send(Message::binary(big.clone())).await.expect("send");
    let echo = ws.next().await.expect("open").expect("frame");
    assert_eq!(echo.into_data().as_ref(), &big[..]);
    ws.close(None).await.expect("close");
}

#[tokio::test]
async fn an_upgrade_the_route_does_not_list_is_forwarded_as_a_plain_request() {
    let up = Upstream::start(|req| async move {
        let upgrade = req.headers().get("upgrade").map_or("none".to_owned(), |v| {
            String::from_utf8_lossy(v.as_bytes()).into_owned()
        });
        // A server that would switch to anything it is offered.
        if upgrade != "none" {
            return http::Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", upgrade)
                .body(full(""))
                .expect("101");
        }
        http::Response::new(full("plain"))
    })
    .await;
    let weft = Weft::start(&config(up.addr, "")).await;
    for offer in ["echo", "websocket, echo", "h2c"] {
        let mut stream = TcpStream::connect(weft.addr).await.expect("connect");
        let request = format!(
            "GET /x HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: {offer}\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer))
            .await
            .expect("answer in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 200"), "{offer}: {answer}");
        assert!(answer.ends_with("plain"), "{offer}: {answer}");
    }
}

#[tokio::test]
async fn an_idle_upgraded_connection_is_closed() {
    let weft = Weft::start(&config(echo_server().await, "upgrade_idle_timeout = \"300ms\"")).await;
    let mut ws = connect(&weft).await;
    // Traffic spread over more than the idle timeout keeps the connection open.
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_millis(150)).await;
        ws.send(Message::text("still here")).await.expect("send");
        assert_eq!(
            ws.next().await.expect("open").expect("frame"),
            Message::text("still here")
        );
    }
    // Then silence: the proxy closes both sides.
    let end = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed by the proxy, not left open");
    assert!(
        !matches!(end, Some(Ok(Message::Text(_) | Message::Binary(_)))),
        "{end:?}"
    );
}
