//! Request and response header edits of a route, parsed once at config load.

use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::HeaderEditsConfig;

/// Headers a route may not edit: they frame the message or belong to one hop (RFC 9110
/// §7.6.1), and the proxy sets them itself. Editing them would let a config desynchronise
/// the two sides of a connection (request smuggling) or break upgrades.
const REFUSED: [&str; 10] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "content-length",
    "host",
    "via",
];

pub struct HeaderEdits {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, HeaderValue)>,
    add: Vec<(HeaderName, HeaderValue)>,
}

impl HeaderEdits {
    /// `what` names the config key in errors (`request_headers`, ...).
    pub fn build(config: &HeaderEditsConfig, what: &str) -> Result<HeaderEdits, String> {
        let name = |n: &str| {
            let name =
                HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("{what}: invalid header name {n:?}"))?;
            if REFUSED.contains(&name.as_str()) {
                return Err(format!(
                    "{what}: {n:?} frames the message or belongs to one hop and cannot be edited{}",
                    if name == header::HOST {
                        " (use host_rewrite)"
                    } else {
                        ""
                    }
                ));
            }
            Ok(name)
        };
        let pair = |(n, v): (&String, &String)| {
            let value = HeaderValue::from_str(v).map_err(|_| format!("{what}: invalid value for header {n:?}"))?;
            Ok::<_, String>((name(n)?, value))
        };
        Ok(HeaderEdits {
            remove: config.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: config.set.iter().map(pair).collect::<Result<_, _>>()?,
            add: config.add.iter().map(pair).collect::<Result<_, _>>()?,
        })
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
