//! Raw bytes over TCP, for what a well-behaved client library would never send: encoded
//! paths, duplicate headers, malformed framing, slow or silent connections.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends `request` on a new connection and reads until the proxy closes it (or 10 s).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect to weft");
    stream.write_all(request).await.expect("write request");
    read_to_close(&mut stream, Duration::from_secs(10)).await.0
}

/// Reads until EOF or `within`; returns what was read and whether the peer closed.
pub async fn read_to_close(stream: &mut TcpStream, within: Duration) -> (String, bool) {
    let mut out = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}

/// The status code of the first response in `raw`, if any.
pub fn status(raw: &str) -> Option<u16> {
    raw.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// How long the proxy takes to close a connection that does `behave` (and then waits);
/// `None` if it is still open after `within`.
pub async fn closed_after<F, Fut>(addr: SocketAddr, within: Duration, behave: F) -> Option<Duration>
where
    F: FnOnce(TcpStream) -> Fut,
    Fut: std::future::Future<Output = TcpStream>,
{
    let started = Instant::now();
    let stream = TcpStream::connect(addr).await.expect("connect to weft");
    let mut stream = behave(stream).await;
    let (_, closed) = read_to_close(&mut stream, within.saturating_sub(started.elapsed())).await;
    closed.then(|| started.elapsed())
}
