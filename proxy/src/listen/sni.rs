//! SNI routing of intercepted TLS that is not terminated (`[[tls_routes]]`, the Gateway
//! API's TLSRoute, matched by `route::intercept`): the ClientHello is read without
//! consuming it (`peek`), parsed by rustls's `Acceptor`, and its server name picks a
//! route's cluster; the client's bytes then go there unchanged. Reading is bounded in size ([`MAX_HELLO`]) and in time (the
//! listener's detection deadline), so a client trickling a ClientHello holds nothing
//! past `detect_timeout`, and one sending a huge or malformed one is passed on opaque.

use tokio::net::TcpStream;
use tokio::time::Instant;

/// The most of a ClientHello read before giving up on it: one full TLS record and some.
/// Real ones are under 2 KiB (a post-quantum key share included); rustls caps a handshake
/// message at 64 KiB, which a proxy need not hold per connection to route it.
pub const MAX_HELLO: usize = 16 * 1024;

/// While the ClientHello is incomplete, how long before looking again (as `detect`).
const MORE_BYTES: std::time::Duration = std::time::Duration::from_millis(5);

/// What the start of a TLS connection said.
#[derive(Debug, PartialEq, Eq)]
pub enum Hello {
    /// A complete ClientHello, and its server name if it sent one.
    Sni(Option<String>),
    /// Not a ClientHello rustls accepts, or larger than [`MAX_HELLO`], or not complete by
    /// the deadline: passed on opaque.
    Invalid(&'static str),
    /// The client closed first.
    Closed,
}

/// What `bytes`, the start of a connection, make of a ClientHello so far: `None` while it
/// is incomplete.
pub fn parse(bytes: &[u8]) -> Option<Hello> {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut rest = bytes;
    while !rest.is_empty() {
        match acceptor.read_tls(&mut rest) {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return Some(Hello::Invalid("malformed")),
        }
    }
    match acceptor.accept() {
        Ok(None) if bytes.len() >= MAX_HELLO => Some(Hello::Invalid("oversized")),
        Ok(None) => None,
        Ok(Some(accepted)) => Some(Hello::Sni(accepted.client_hello().server_name().map(str::to_owned))),
        Err(_) => Some(Hello::Invalid("malformed")),
    }
}

/// Peeks at the client's ClientHello until it is complete, invalid, or `deadline`.
pub async fn read_hello(stream: &TcpStream, deadline: Instant) -> std::io::Result<Hello> {
    let mut buf = vec![0u8; MAX_HELLO];
    let mut seen = 0;
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Ok(Hello::Invalid("timeout")),
            Ok(n) => n?,
        };
        if n == 0 {
            return Ok(Hello::Closed);
        }
        if n > seen {
            seen = n;
            if let Some(hello) = parse(&buf[..n]) {
                return Ok(hello);
            }
        }
        // `peek` answers at once while the same bytes wait: look again a little later.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(MORE_BYTES))
            .await
            .is_err()
        {
            return Ok(Hello::Invalid("timeout"));
        }
    }
}

#[cfg(test)]
mod tests;
