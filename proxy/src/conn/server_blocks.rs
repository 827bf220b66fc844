//! A TLS listener's server blocks: which certificate's names a connection's SNI chose,
//! and which hosts belong to another certificate. Plain data, built by `tls` with the
//! listener's server config.

/// The DNS names of each certificate of a TLS listener, in config order: a server block
/// each. SNI chooses the block a connection serves; a request on it whose host another
/// block claims is misdirected (RFC 9110 §15.5.20), so HTTP/2 connection reuse or a forged
/// `Host` cannot reach one server's routes through another's certificate.
#[derive(Debug)]
pub struct ServerBlocks {
    /// Lowercase; `*.example.com` for a wildcard.
    names: Vec<Vec<String>>,
}

impl ServerBlocks {
    /// `names[i]`: the DNS names of the listener's `i`th certificate, lowercase.
    pub fn new(names: Vec<Vec<String>>) -> ServerBlocks {
        ServerBlocks { names }
    }

    /// The block whose names cover the client's SNI; the first (the default certificate)
    /// otherwise.
    pub fn chosen(&self, sni: Option<&str>) -> usize {
        sni.and_then(|name| self.names.iter().position(|names| covers(names, name)))
            .unwrap_or(0)
    }

    /// Whether a request for `host` (no port) on a connection of block `chosen` belongs to
    /// another block: `chosen` does not cover it and another does. A host no block names
    /// (an address, say) is the default's business, as before.
    pub fn misdirected(&self, chosen: usize, host: &str) -> bool {
        // A fully qualified `b.example.` is `b.example`.
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() || self.names.get(chosen).is_some_and(|names| covers(names, host)) {
            return false;
        }
        self.names
            .iter()
            .enumerate()
            .any(|(i, names)| i != chosen && covers(names, host))
    }
}

fn covers(names: &[String], host: &str) -> bool {
    names.iter().any(|n| dns_name_matches(n, host))
}

/// RFC 6125 §6.4.3: a wildcard stands for exactly one leftmost label. Names compare
/// without case (`pattern` is lowercase).
fn dns_name_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(suffix) => name
            .split_once('.')
            .is_some_and(|(label, rest)| !label.is_empty() && rest.eq_ignore_ascii_case(suffix)),
        None => pattern.eq_ignore_ascii_case(name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_cover_one_label() {
        assert!(dns_name_matches("*.example.com", "a.example.com"));
        assert!(!dns_name_matches("*.example.com", "a.b.example.com"));
        assert!(!dns_name_matches("*.example.com", "example.com"));
        assert!(dns_name_matches("example.com", "example.com"));
    }

    #[test]
    fn a_host_another_block_names_is_misdirected() {
        let blocks = ServerBlocks {
            names: vec![
                vec!["a.test".to_owned()],
                vec!["b.test".to_owned(), "*.b.test".to_owned()],
            ],
        };
        assert_eq!(blocks.chosen(Some("B.TEST")), 1);
        assert_eq!(blocks.chosen(Some("x.b.test")), 1);
        assert_eq!(blocks.chosen(Some("c.test")), 0);
        assert_eq!(blocks.chosen(None), 0);
        for host in ["b.test", "B.Test", "b.test.", "x.b.test"] {
            assert!(blocks.misdirected(0, host), "{host}");
        }
        for host in ["a.test", "A.TEST.", "c.test", "127.0.0.1", "[::1]", "", "x.y.b.test"] {
            assert!(!blocks.misdirected(0, host), "{host}");
        }
        assert!(blocks.misdirected(1, "a.test"));
        assert!(!blocks.misdirected(1, "y.b.test"));
    }
}
