//! The one header policy: which names no config, filter, plugin or callout may set, and
//! the one engine that applies header edits parsed at config load.
//!
//! Every place that lets someone other than the proxy write a header goes through
//! [`refuses`]: a route's `request_headers` / `response_headers` and its split entries',
//! `direct_response` headers, the native `headers` filter, the Wasm host's `fields`
//! (a phase's request and response and a callout's own list), a guest's reply, and the
//! request a callout sends. A ground-floor module: it names nothing of the proxy's.

use std::collections::BTreeMap;

use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Headers only the proxy sets. They frame the message (`content-length`,
/// `transfer-encoding`, `trailer`) or belong to one hop (RFC 9110 §7.6.1: `connection`
/// and what it may name, `keep-alive`, `proxy-connection`, `te`, `upgrade`), and the proxy
/// writes them from what it actually sends; `host` is the authority (a route's
/// `host_rewrite` changes it), `via` the proxy's own mark. Letting anyone else write them
/// would let a config or a plugin desynchronise the two sides of a connection (request
/// smuggling), break upgrades, or send a request to a virtual host its route never chose.
/// Pseudo-headers (`:authority`...) are not field names at all and fail as invalid.
pub static REFUSED: [HeaderName; 10] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
    header::CONTENT_LENGTH,
    header::HOST,
    header::VIA,
];

/// Whether only the proxy may set `name`. Ten comparisons of (mostly standard, so
/// integer-tagged) names: cheaper than a hashed set for a list this short.
pub fn refuses(name: &HeaderName) -> bool {
    REFUSED.contains(name)
}

/// Why a header name given by a config, a filter or a plugin was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameError {
    /// Not an HTTP field name (RFC 9110 token); pseudo-headers land here.
    Invalid,
    /// A name in [`REFUSED`].
    Refused,
}

/// Parses a name someone other than the proxy wants to write.
pub fn writable(name: &str) -> Result<HeaderName, NameError> {
    let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| NameError::Invalid)?;
    if refuses(&name) {
        return Err(NameError::Refused);
    }
    Ok(name)
}

/// Removes every refused header from `headers`: a list built from another message (a
/// guest passing a request's headers on to a callout) described that message's hop.
pub fn strip_refused(headers: &mut HeaderMap) {
    for name in &REFUSED {
        headers.remove(name);
    }
}

/// Header edits parsed once at config load, applied in the order remove, set (replacing),
/// add (appending): a route's edits and the native `headers` filter's.
#[derive(Debug)]
pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// `what` names the config key in errors (`request_headers`, `request_set`...).
    pub fn build(
        what: &str,
        remove: &[String],
        set: &BTreeMap<String, String>,
        add: &BTreeMap<String, String>,
    ) -> Result<HeaderEdits, String> {
        let name = |n: &str| {
            writable(n).map_err(|e| match e {
                NameError::Invalid => format!("{what}: invalid header name {n:?}"),
                NameError::Refused => format!(
                    "{what}: {n:?} frames the message or belongs to one hop and cannot be edited{}",
                    if n.eq_ignore_ascii_case("host") {
                        " (use a route's host_rewrite)"
                    } else {
                        ""
                    }
                ),
            })
        };
        let pair = |(n, v): (&String, &String)| {
            let value = HeaderValue::from_str(v).map_err(|_| format!("{what}: invalid value for header {n:?}"))?;
            Ok::<_, String>((name(n)?, value))
        };
        Ok(HeaderEdits {
            remove: remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: set.iter().map(pair).collect::<Result<_, _>>()?,
            add: add.iter().map(pair).collect::<Result<_, _>>()?,
        })
    }

    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    pub fn apply(&self, headers: &mut HeaderMap) {
        for name in &self.remove {
            headers.remove(name);
        }
        for (name, value) in &self.set {
            headers.insert(name.clone(), value.clone());
        }
        for (name, value) in &self.add {
            headers.append(name.clone(), value.clone());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_every_listed_name_in_any_case_and_nothing_else() {
        for name in &REFUSED {
            assert_eq!(writable(name.as_str()), Err(NameError::Refused));
            assert_eq!(writable(&name.as_str().to_ascii_uppercase()), Err(NameError::Refused));
        }
        for name in [":authority", ":path", "bad name", "", "x\r\ny"] {
            assert_eq!(writable(name), Err(NameError::Invalid), "{name:?}");
        }
        for name in ["x-tag", "server", "cache-control", "authorization", "te-x", "via2"] {
            assert!(writable(name).is_ok(), "{name}");
        }
    }

    #[test]
    fn edits_remove_then_set_then_add() {
        let set = BTreeMap::from([("x-a".to_owned(), "set".to_owned())]);
        let add = BTreeMap::from([("x-a".to_owned(), "added".to_owned())]);
        let edits = HeaderEdits::build("t", &["x-b".to_owned()], &set, &add).expect("valid");
        let mut headers = HeaderMap::new();
        headers.insert("x-a", HeaderValue::from_static("old"));
        headers.insert("x-b", HeaderValue::from_static("gone"));
        edits.apply(&mut headers);
        let a: Vec<_> = headers.get_all("x-a").iter().collect();
        assert_eq!(a, ["set", "added"]);
        assert!(!headers.contains_key("x-b"));
    }

    #[test]
    fn strip_refused_leaves_other_headers() {
        let mut headers = HeaderMap::new();
        for name in &REFUSED {
            headers.insert(name.clone(), HeaderValue::from_static("1"));
        }
        headers.insert("x-keep", HeaderValue::from_static("1"));
        strip_refused(&mut headers);
        assert_eq!(headers.len(), 1);
    }
}
