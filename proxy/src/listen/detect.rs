//! What an intercepted client speaks, from its first bytes, read without consuming them
//! (`peek`): HTTP/1.1 (a method and a space), HTTP/2 with prior knowledge (the h2c
//! preface), TLS (a handshake record), or anything else (opaque). A client silent for
//! the detection timeout is opaque too: it may be waiting for the server to speak first
//! (SMTP, MySQL), which is why such ports are better listed as `opaque_ports`.

use std::time::Duration;

use tokio::net::TcpStream;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http,
    /// A TLS handshake record: terminated, routed by its SNI, or passed through.
    Tls,
    Opaque,
    /// The client closed before sending anything.
    Closed,
}

impl Detected {
    pub fn label(self) -> &'static str {
        match self {
            Detected::Http => "http",
            Detected::Tls => "tls",
            Detected::Opaque => "opaque",
            Detected::Closed => "closed",
        }
    }
}

const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const METHODS: [&[u8]; 9] = [
    b"GET", b"POST", b"PUT", b"DELETE", b"HEAD", b"OPTIONS", b"PATCH", b"CONNECT", b"TRACE",
];
/// While the bytes so far could still become either, how long before looking again.
const MORE_BYTES: Duration = Duration::from_millis(5);

/// What the first bytes say, or `None` while they could still be more than one thing.
pub fn classify(bytes: &[u8]) -> Option<Detected> {
    if bytes.is_empty() {
        return None;
    }
    if bytes.starts_with(H2_PREFACE) {
        return Some(Detected::Http);
    }
    if H2_PREFACE.starts_with(bytes) {
        return None;
    }
    if bytes[0] == 0x16 {
        // A handshake record; its version's major byte is 3 (SSL 3.0 to TLS 1.3).
        return match bytes.get(1) {
            None => None,
            Some(3) => Some(Detected::Tls),
            Some(_) => Some(Detected::Opaque),
        };
    }
    let token_end = bytes.iter().position(|&b| b == b' ');
    let token = &bytes[..token_end.unwrap_or(bytes.len())];
    match token_end {
        Some(_) if METHODS.contains(&token) => Some(Detected::Http),
        None if METHODS.iter().any(|m| m.starts_with(token)) => None,
        _ => Some(Detected::Opaque),
    }
}

/// Waits for enough of the client's first bytes to tell, at most until `deadline`.
pub async fn detect(stream: &TcpStream, deadline: tokio::time::Instant) -> std::io::Result<Detected> {
    let mut buf = [0u8; H2_PREFACE.len()];
    loop {
        let n = match tokio::time::timeout_at(deadline, stream.peek(&mut buf)).await {
            Err(_) => return Ok(Detected::Opaque),
            Ok(n) => n?,
        };
        if n == 0 {
            return Ok(Detected::Closed);
        }
        if let Some(detected) = classify(&buf[..n]) {
            return Ok(detected);
        }
        // `peek` answers at once while the same bytes wait: look again a little later.
        if tokio::time::timeout_at(deadline, tokio::time::sleep(MORE_BYTES))
            .await
            .is_err()
        {
            return Ok(Detected::Opaque);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_bytes_tell_the_protocol() {
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"OPTIONS * HTTP/1.1\r\n"), Some(Detected::Http));
        assert_eq!(classify(b"GE"), None, "could still be GET");
        assert_eq!(classify(b"GETX / HTTP/1.1"), Some(Detected::Opaque));
        assert_eq!(
            classify(b"get / HTTP/1.1"),
            Some(Detected::Opaque),
            "methods are case-sensitive"
        );
        assert_eq!(classify(H2_PREFACE), Some(Detected::Http));
        assert_eq!(classify(b"PRI * HTTP/2"), None, "could still be the preface");
        assert_eq!(classify(b"PRI * HTTP/1.1\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(&[0x16, 0x03, 0x01, 0x02, 0x00]), Some(Detected::Tls));
        assert_eq!(classify(&[0x16]), None);
        assert_eq!(classify(b"\x00\x00\x00\x01binary"), Some(Detected::Opaque));
        assert_eq!(classify(b"EHLO example.org\r\n"), Some(Detected::Opaque));
        assert_eq!(classify(b"hello\n"), Some(Detected::Opaque));
    }
}
