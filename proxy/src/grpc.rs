//! What the proxy must know of gRPC (the HTTP/2 protocol, `PROTOCOL-HTTP2.md` in grpc/grpc):
//! which requests are gRPC calls, and the deadline a call carries in `grpc-timeout`.
//! Errors become gRPC statuses in `respond`.

use std::time::Duration;

use http::{HeaderName, Version, header, request};

static GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// gRPC status codes the proxy answers with (`doc/statuscodes.md` in grpc/grpc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    Unknown = 2,
    DeadlineExceeded = 4,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    Unauthenticated = 16,
}

/// A gRPC call: HTTP/2 or HTTP/3 with `content-type: application/grpc[+proto|;...]`.
/// HTTP/1.1 requests cost one comparison (gRPC needs HTTP/2 framing for its trailers).
pub fn is_call(head: &request::Parts) -> bool {
    matches!(head.version, Version::HTTP_2 | Version::HTTP_3)
        && head.headers.get(header::CONTENT_TYPE).is_some_and(|ct| {
            let ct = ct.as_bytes();
            ct.starts_with(b"application/grpc") && !ct.starts_with(b"application/grpc-web")
        })
}

/// The call's deadline from `grpc-timeout` (`1*8DIGIT unit`, unit one of H M S m u n);
/// `None` when absent or malformed (a malformed one is ignored, as gRPC servers do), and
/// on anything but a gRPC call: the header means nothing to plain HTTP, and a client must
/// not shorten an ordinary request's wait into a timeout that would count against the
/// endpoint.
pub fn deadline(head: &request::Parts) -> Option<Duration> {
    let value = head.headers.get(&GRPC_TIMEOUT)?;
    if !is_call(head) {
        return None;
    }
    parse_timeout(value.as_bytes())
}

fn parse_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_parse_in_every_unit_and_refuse_the_malformed() {
        assert_eq!(parse_timeout(b"250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_timeout(b"2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_timeout(b"1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_timeout(b"99999999n"), Some(Duration::from_nanos(99_999_999)));
        for bad in [&b""[..], b"m", b"123456789m", b"10x", b"-1S", b"1.5S", b" 1S"] {
            assert_eq!(parse_timeout(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn only_grpc_calls_have_a_deadline() {
        let head = |version, ct: Option<&str>| {
            let (mut parts, ()) = http::Request::post("/s/M").body(()).expect("request").into_parts();
            parts.version = version;
            parts.headers.insert(GRPC_TIMEOUT.clone(), "1n".parse().expect("value"));
            if let Some(ct) = ct {
                parts.headers.insert(header::CONTENT_TYPE, ct.parse().expect("value"));
            }
            parts
        };
        assert_eq!(
            deadline(&head(Version::HTTP_2, Some("application/grpc"))),
            Some(Duration::from_nanos(1))
        );
        assert_eq!(deadline(&head(Version::HTTP_2, None)), None);
        assert_eq!(deadline(&head(Version::HTTP_2, Some("application/json"))), None);
        assert_eq!(deadline(&head(Version::HTTP_2, Some("application/grpc-web"))), None);
        assert_eq!(deadline(&head(Version::HTTP_11, Some("application/grpc"))), None);
    }

    #[test]
    fn only_http2_grpc_content_types_are_calls() {
        let head = |version, ct: &str| {
            let (mut parts, ()) = http::Request::post("/s/M").body(()).expect("request").into_parts();
            parts.version = version;
            parts.headers.insert(header::CONTENT_TYPE, ct.parse().expect("value"));
            parts
        };
        assert!(is_call(&head(Version::HTTP_2, "application/grpc")));
        assert!(is_call(&head(Version::HTTP_2, "application/grpc+proto")));
        assert!(!is_call(&head(Version::HTTP_2, "application/grpc-web")));
        assert!(!is_call(&head(Version::HTTP_11, "application/grpc")));
        assert!(!is_call(&head(Version::HTTP_2, "application/json")));
    }
}
