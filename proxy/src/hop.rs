//! The client's hop, stripped from a message before anyone else sees it (RFC 9110 §7.6.1):
//! the hop-by-hop headers (those `Connection` names and the fixed list), `TE` but for
//! `trailers`, `Expect`; and the names of the headers that say who forwarded, found in
//! one pass over a head.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Version, request};

pub(crate) static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
pub(crate) static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
pub(crate) static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub(crate) static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub(crate) static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
pub(crate) static XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// Whether the request asks to switch protocols (WebSocket and the like). Only HTTP/1.1
/// carries `Upgrade`; HTTP/2's extended CONNECT is not supported.
pub fn is_upgrade(head: &request::Parts) -> bool {
    head.version == Version::HTTP_11
        && head.headers.contains_key(header::UPGRADE)
        && connection_has(&head.headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Which of the headers this module acts on a message carries, found in one pass over the
/// names: most messages carry none of them, and a hashed lookup per name costs more than
/// the scan (measured: the removes were 7% of the proxy's user-space instructions).
#[derive(Default)]
pub(crate) struct Seen {
    /// The fixed hop-by-hop names present (bits of [`HOP_BY_HOP`]): only those are removed.
    hop_by_hop: u8,
    pub(crate) transfer_encoding: bool,
    pub(crate) content_length: bool,
    pub(crate) te: bool,
    pub(crate) expect: bool,
    pub(crate) via: bool,
    pub(crate) xfcc: bool,
    pub(crate) host: bool,
}

/// The hop-by-hop headers every message loses (RFC 9110 §7.6.1), besides those its
/// `Connection` names. `Upgrade` is last: it stays for a protocol switch.
static HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &header::TRANSFER_ENCODING,
    &PROXY_CONNECTION,
    &header::PROXY_AUTHENTICATE,
    &header::PROXY_AUTHORIZATION,
    &header::UPGRADE,
];
const CONNECTION_BIT: u8 = 1;
const UPGRADE_BIT: u8 = 1 << 6;

impl Seen {
    pub(crate) fn scan(headers: &HeaderMap) -> Seen {
        let mut seen = Seen::default();
        for name in headers.keys() {
            if let Some(i) = HOP_BY_HOP.iter().position(|h| *h == name) {
                seen.hop_by_hop |= 1 << i;
                seen.transfer_encoding |= *name == header::TRANSFER_ENCODING;
            } else if *name == header::CONTENT_LENGTH {
                seen.content_length = true;
            } else if *name == header::TE {
                seen.te = true;
            } else if *name == header::EXPECT {
                seen.expect = true;
            } else if *name == header::VIA {
                seen.via = true;
            } else if *name == XFCC {
                seen.xfcc = true;
            } else if *name == header::HOST {
                seen.host = true;
            }
        }
        seen
    }
}

/// Removes the hop-by-hop headers: those named by `Connection`, and the fixed list.
/// `keep_upgrade` keeps `Upgrade` and a `Connection: upgrade` for a protocol switch.
/// Only names the scan saw are looked up: each removal hashes its name.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap, seen: &Seen, keep_upgrade: bool) {
    if seen.hop_by_hop & CONNECTION_BIT != 0 {
        // The names `Connection` lists beyond the fixed ones (`close` among them, in case
        // a header bears that name); collected only when there is one, which is rare.
        let listed = || {
            headers
                .get_all(header::CONNECTION)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(','))
                .map(str::trim)
                .filter(|t| !t.is_empty() && !HOP_BY_HOP.iter().any(|h| t.eq_ignore_ascii_case(h.as_str())))
        };
        let named: Vec<HeaderName> = match listed().next() {
            None => Vec::new(),
            Some(_) => listed()
                .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
                .collect(),
        };
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if seen.hop_by_hop & (1 << i) != 0 && !(keep_upgrade && 1 << i == UPGRADE_BIT) {
            headers.remove(*name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

pub(crate) fn via(version: Version) -> HeaderValue {
    HeaderValue::from_static(match version {
        Version::HTTP_10 => "1.0 weft",
        Version::HTTP_2 => "2.0 weft",
        Version::HTTP_3 => "3.0 weft",
        _ => "1.1 weft",
    })
}

/// Strips what belongs to the client's hop from a request that just arrived, before any
/// filter sees it: hop-by-hop headers (those `Connection` names and the fixed list), `TE`
/// but for `trailers`, and `Expect` (this hop answered `100 Continue` itself). Returns
/// whether the request asks to switch protocols; its `Upgrade` is then kept.
pub fn arriving_request(head: &mut request::Parts) -> bool {
    let upgrade = is_upgrade(head);
    let headers = &mut head.headers;
    let seen = Seen::scan(headers);
    if seen.te {
        // TE is hop-by-hop, but "trailers" states that the end client accepts trailers,
        // which gRPC and trailer-forwarding need end to end.
        let te_trailers = headers
            .get_all(header::TE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case("trailers"));
        headers.remove(header::TE);
        if te_trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
    }
    strip_hop_by_hop(headers, &seen, upgrade);
    if seen.expect {
        headers.remove(header::EXPECT);
    }
    upgrade
}
