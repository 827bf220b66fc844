//! The front door: the one step every request passes first, whatever its protocol
//! (HTTP/1.1, HTTP/2, HTTP/3), before routing and filters. After it, the request has one
//! host, one normal path and no hop-by-hop headers, so what routes and filters decide is
//! what the upstream gets: nothing the client spells differently can walk around them.
//!
//! It refuses, with the status RFC 9110 names, what is too large (414, 431, 413) or
//! ambiguous (400: several or missing `Host`, `Host` disagreeing with `:authority`, a path
//! no normal form exists for).

pub mod path;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{StatusCode, Uri, Version, request};

use crate::config::{FrontDoor, PathPolicy};
use path::PathError;

/// Why the front door refused a request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("request target longer than {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("request headers larger than {limit} bytes")]
    HeadersTooLarge { limit: usize },
    #[error("more than {limit} request headers")]
    TooManyHeaders { limit: usize },
    #[error("{0}")]
    Path(#[from] PathError),
    #[error("{0}")]
    Host(&'static str),
    #[error("{0}")]
    Framing(&'static str),
    #[error("request body of {length} bytes is over the limit of {limit}")]
    BodyTooLarge { length: u64, limit: u64 },
    /// The host belongs to another TLS server block than the one the SNI chose.
    #[error("the request's host is served under another certificate than this connection's")]
    Misdirected,
}

impl Refusal {
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::UriTooLong { .. } => StatusCode::URI_TOO_LONG,
            Refusal::HeadersTooLarge { .. } | Refusal::TooManyHeaders { .. } => {
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE
            }
            Refusal::Path(_) | Refusal::Host(_) | Refusal::Framing(_) => StatusCode::BAD_REQUEST,
            Refusal::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::Misdirected => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// The metric label (`weft_downstream_refused_total{reason}`).
    pub fn reason(&self) -> &'static str {
        match self {
            Refusal::UriTooLong { .. } => "uri_too_long",
            Refusal::HeadersTooLarge { .. } => "headers_too_large",
            Refusal::TooManyHeaders { .. } => "too_many_headers",
            Refusal::Path(_) => "bad_path",
            Refusal::Host(_) => "bad_host",
            Refusal::Framing(_) => "bad_framing",
            Refusal::BodyTooLarge { .. } => "body_too_large",
            Refusal::Misdirected => "misdirected",
        }
    }

    /// What the client reads: the rule it broke, never an echo of its input.
    pub fn public_text(&self) -> &'static str {
        match self {
            Refusal::UriTooLong { .. } => "request target too long\n",
            Refusal::HeadersTooLarge { .. } | Refusal::TooManyHeaders { .. } => "request headers too large\n",
            Refusal::Path(PathError::EncodedSlash) => "encoded slash in path\n",
            Refusal::Path(_) => "malformed path\n",
            Refusal::Host(_) => "bad or ambiguous host\n",
            Refusal::Framing(_) => "bad message framing\n",
            Refusal::BodyTooLarge { .. } => "request body too large\n",
            Refusal::Misdirected => "misdirected request\n",
        }
    }
}

/// What the front door learned that later stages need.
pub struct Admitted {
    /// The request asks to switch protocols (its `Upgrade` was kept).
    pub upgrade: bool,
}

/// Checks and normalises a request head in place. Cheap on a well-formed request: one
/// pass over the header names, one over the path, no allocation unless something must
/// change.
pub fn admit(head: &mut request::Parts, door: &FrontDoor) -> Result<Admitted, Refusal> {
    let target = head.uri.path_and_query().map_or(0, |p| p.as_str().len());
    if target > door.max_uri_bytes {
        return Err(Refusal::UriTooLong {
            limit: door.max_uri_bytes,
        });
    }
    if head.headers.len() > door.max_headers {
        return Err(Refusal::TooManyHeaders {
            limit: door.max_headers,
        });
    }
    // Counted as on the wire in HTTP/1.1: "name: value\r\n".
    let size: usize = head.headers.iter().map(|(n, v)| n.as_str().len() + v.len() + 4).sum();
    if size > door.max_header_bytes {
        return Err(Refusal::HeadersTooLarge {
            limit: door.max_header_bytes,
        });
    }
    one_host(head)?;
    normal_path(head, door.path)?;
    if let Some(length) = content_length(head)?
        && length > door.max_body_bytes
    {
        return Err(Refusal::BodyTooLarge {
            length,
            limit: door.max_body_bytes,
        });
    }
    // Stripped now, before any filter: a header a filter sets is never removed because
    // the client named it in `Connection`.
    let upgrade = crate::hop::arriving_request(head);
    Ok(Admitted { upgrade })
}

/// RFC 9112 §3.2 and RFC 9113 §8.3.1: exactly one host. The authority of an absolute-form
/// target (HTTP/1.1) or `:authority` (HTTP/2, HTTP/3) is the host; a `Host` line that says
/// otherwise is refused, never silently preferred by one stage and ignored by another.
fn one_host(head: &mut request::Parts) -> Result<(), Refusal> {
    let mut hosts = head.headers.get_all(header::HOST).iter();
    let host = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::Host("several Host headers"));
    }
    if let Some(value) = host {
        let valid = std::str::from_utf8(value.as_bytes())
            .ok()
            .and_then(|s| s.parse::<Authority>().ok())
            .is_some_and(|a| !a.as_str().contains('@') && !a.host().is_empty());
        if !valid {
            return Err(Refusal::Host("invalid Host header"));
        }
    }
    let h1 = head.version <= Version::HTTP_11;
    match (head.uri.authority(), host) {
        (Some(authority), Some(host)) if h1 => {
            // Absolute form: the target's authority replaces Host (RFC 9112 §3.2.2).
            if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
                let replaced = HeaderValue::from_str(authority.as_str())
                    .map_err(|_| Refusal::Host("invalid authority in the request target"))?;
                head.headers.insert(header::HOST, replaced);
            }
        }
        (Some(authority), Some(host)) => {
            if !authority.as_str().as_bytes().eq_ignore_ascii_case(host.as_bytes()) {
                return Err(Refusal::Host(":authority and Host disagree"));
            }
        }
        (Some(authority), None) => {
            if authority.as_str().contains('@') {
                return Err(Refusal::Host("userinfo in the authority"));
            }
            if head.version == Version::HTTP_11 {
                return Err(Refusal::Host("HTTP/1.1 request without Host"));
            }
        }
        (None, None) if head.version == Version::HTTP_11 => {
            return Err(Refusal::Host("HTTP/1.1 request without Host"));
        }
        (None, _) => {}
    }
    drop_root_dot(head)
}

/// `admin.example.com.` names the same host as `admin.example.com` (the DNS root label),
/// and an upstream's virtual hosts treat them alike: so must the route table, or a
/// trailing dot walks around a host-matched route.
fn drop_root_dot(head: &mut request::Parts) -> Result<(), Refusal> {
    let fix = |authority: &Authority| -> Result<Option<String>, Refusal> {
        let host = authority.host();
        if !host.ends_with('.') {
            return Ok(None);
        }
        let bare = host.trim_end_matches('.');
        if bare.is_empty() {
            return Err(Refusal::Host("empty host"));
        }
        Ok(Some(match authority.port_u16() {
            Some(port) => format!("{bare}:{port}"),
            None => bare.to_owned(),
        }))
    };
    if let Some(fixed) = head.uri.authority().map(fix).transpose()?.flatten() {
        let mut parts = std::mem::take(&mut head.uri).into_parts();
        parts.authority = Some(fixed.parse().map_err(|_| Refusal::Host("invalid authority"))?);
        head.uri = Uri::from_parts(parts).map_err(|_| Refusal::Host("invalid authority"))?;
    }
    // Parsed again only when it may end in a dot: a parse copies the value.
    let header = head
        .headers
        .get(header::HOST)
        .filter(|v| may_end_in_dot(v.as_bytes()))
        .and_then(|v| v.to_str().ok()?.parse::<Authority>().ok());
    if let Some(fixed) = header.as_ref().map(fix).transpose()?.flatten() {
        let value = HeaderValue::from_str(&fixed).map_err(|_| Refusal::Host("invalid Host header"))?;
        head.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// Whether a `Host` value's host part may end in a dot: a dot last, or before the port.
fn may_end_in_dot(host: &[u8]) -> bool {
    host.ends_with(b".") || host.windows(2).any(|w| w == b".:")
}

fn normal_path(head: &mut request::Parts, policy: PathPolicy) -> Result<(), Refusal> {
    let Some(pq) = head.uri.path_and_query() else {
        // Authority form (CONNECT): no path to normalise.
        return Ok(());
    };
    if pq.path() == "*" {
        return if head.method == http::Method::OPTIONS {
            Ok(())
        } else {
            Err(Refusal::Path(PathError::NotAbsolute))
        };
    }
    let path = match path::normalize(pq.path(), policy)? {
        std::borrow::Cow::Borrowed(_) => return Ok(()),
        std::borrow::Cow::Owned(path) => path,
    };
    let rebuilt = match pq.query() {
        Some(query) => format!("{path}?{query}"),
        None => path,
    };
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.path_and_query = Some(PathAndQuery::try_from(rebuilt).map_err(|_| Refusal::Path(PathError::BadEncoding))?);
    head.uri = Uri::from_parts(parts).map_err(|_| Refusal::Path(PathError::BadEncoding))?;
    Ok(())
}

/// The declared body length. hyper already refuses conflicting values on HTTP/1.1; this
/// catches the rest (HTTP/2 and HTTP/3 carry the header as data).
fn content_length(head: &request::Parts) -> Result<Option<u64>, Refusal> {
    let mut values = head.headers.get_all(header::CONTENT_LENGTH).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let parse = |v: &HeaderValue| -> Option<u64> {
        let s = v.to_str().ok()?;
        s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse().ok())?
    };
    let length = parse(first).ok_or(Refusal::Framing("invalid Content-Length"))?;
    if values.any(|v| parse(v) != Some(length)) {
        return Err(Refusal::Framing("conflicting Content-Length"));
    }
    Ok(Some(length))
}

#[cfg(test)]
mod tests;
