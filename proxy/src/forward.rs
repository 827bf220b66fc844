//! The head rewrites a proxy makes to the messages it passes on (RFC 9110 §7.6): say who
//! forwarded (`Via`, `X-Forwarded-*`, `Forwarded`), keep or rewrite `Host`, and frame a
//! response unambiguously. Stripping the client's hop is `hop`'s.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request, response};

use crate::conn::ConnInfo;
use crate::hop::{FORWARDED, Seen, X_FORWARDED_FOR, X_FORWARDED_PROTO, XFCC, strip_hop_by_hop, via};

/// Prepares a request head, as the filters left it, to be sent upstream: who forwarded
/// it, and its Host. Hop-by-hop headers were stripped on arrival ([`crate::hop::arriving_request`]),
/// so whatever a filter set goes through.
pub fn upstream_request(
    head: &mut request::Parts,
    conn: &ConnInfo,
    host_rewrite: Option<&HeaderValue>,
    upstream_version: Version,
) {
    let headers = &mut head.headers;
    let seen = Seen::scan(headers);
    if conn.trust_forwarded {
        append_list(headers, &X_FORWARDED_FOR, &conn.xff);
        append_list(headers, &FORWARDED, &conn.forwarded);
        if !headers.contains_key(&X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.scheme));
        }
    } else {
        headers.insert(X_FORWARDED_FOR.clone(), conn.xff.clone());
        headers.insert(FORWARDED.clone(), conn.forwarded.clone());
        headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static(conn.scheme));
    }
    if seen.via {
        append_list(headers, &header::VIA, &via(head.version));
    } else {
        headers.insert(header::VIA, via(head.version));
    }
    // Only this hop can vouch for a client certificate: a client's own claim is dropped
    // unless the listener trusts what is in front of it.
    if seen.xfcc && !conn.trust_forwarded {
        headers.remove(&XFCC);
    }
    if let Some(xfcc) = &conn.xfcc {
        append_list(headers, &XFCC, xfcc);
    }

    if upstream_version == Version::HTTP_2 {
        // RFC 9113 §8.3.1: the host travels as :authority, and a Host beside it that
        // says otherwise makes a strict server refuse the stream. One host, then: the
        // rewritten one, else the client's.
        let client_host = if seen.host { headers.remove(header::HOST) } else { None };
        if let Some(authority) = host_rewrite
            .cloned()
            .or(client_host)
            .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
            && head.uri.authority() != Some(&authority)
        {
            let mut parts = head.uri.clone().into_parts();
            parts.scheme.get_or_insert(http::uri::Scheme::HTTP);
            parts.authority = Some(authority);
            parts
                .path_and_query
                .get_or_insert(http::uri::PathAndQuery::from_static("/"));
            if let Ok(uri) = http::Uri::from_parts(parts) {
                head.uri = uri;
            }
        }
    } else if let Some(host) = host_rewrite {
        headers.insert(header::HOST, host.clone());
    } else if !seen.host {
        // HTTP/2 clients send :authority instead of Host; an HTTP/1.1 upstream needs Host.
        if let Some(authority) = head
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        {
            headers.insert(header::HOST, authority);
        }
    }
    head.version = upstream_version;
}

/// How an upstream response was framed, as far as its connection is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Clear,
    /// Both `Content-Length` and `Transfer-Encoding`: read by the transfer coding, and
    /// the length dropped (RFC 9112 §6.3). Such a message may be an attempt at response
    /// splitting, so its connection must not carry another exchange.
    Ambiguous,
}

/// Prepares an upstream response head to be sent downstream.
pub fn downstream_response(head: &mut response::Parts, upgraded: bool) -> Framing {
    let seen = Seen::scan(&head.headers);
    // The body was read by the transfer coding (hyper's client, RFC 9112 §6.3); a length
    // passed on beside it would frame it differently for the client.
    let framing = if seen.transfer_encoding && seen.content_length {
        head.headers.remove(header::CONTENT_LENGTH);
        Framing::Ambiguous
    } else {
        Framing::Clear
    };
    strip_hop_by_hop(&mut head.headers, &seen, upgraded);
    if seen.via {
        append_list(&mut head.headers, &header::VIA, &via(head.version));
    } else {
        head.headers.insert(header::VIA, via(head.version));
    }
    framing
}

/// Appends `value` to a comma-separated list header, keeping one header line.
fn append_list(headers: &mut HeaderMap, name: &HeaderName, value: &HeaderValue) {
    match headers.get(name).map(HeaderValue::as_bytes) {
        None => {
            headers.insert(name.clone(), value.clone());
        }
        Some(existing) => {
            let mut joined = Vec::with_capacity(existing.len() + 2 + value.len());
            joined.extend_from_slice(existing);
            joined.extend_from_slice(b", ");
            joined.extend_from_slice(value.as_bytes());
            if let Ok(v) = HeaderValue::from_bytes(&joined) {
                headers.insert(name.clone(), v);
            }
        }
    }
}

#[cfg(test)]
mod tests;
