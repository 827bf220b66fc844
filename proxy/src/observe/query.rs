//! The query string as a span shows it (`url.query`, and inside the client span's
//! `url.full`). A query carries what a path should not: tokens, signatures, e-mail
//! addresses; a span is copied into every trace backend and kept for weeks. So by default
//! only the keys are shown, each value replaced by `REDACTED` (the word the HTTP semantic
//! conventions use), and `[tracing] query` chooses otherwise.
//!
//! A key is compared as the upstream will read it: percent-decoded, `+` as a space,
//! without case, and parameters split on `;` as well as `&` (some servers take either),
//! so `%73ig=…` or `a=1;sig=…` cannot slip a signature past the check. The values of
//! credential-named keys (the conventions' `AWSAccessKeyId`, `Signature`, `sig`,
//! `X-Goog-Signature`, and any key naming a token, key, secret, password…) are redacted
//! in every mode, whatever `query_keep` says: fail closed.

use crate::config::{QueryShown, TracingConfig};

/// The value that replaces a redacted one.
const REDACTED: &str = "REDACTED";

/// The semantic conventions' list of query keys whose values are always redacted.
const SIGNATURES: [&str; 4] = ["awsaccesskeyid", "signature", "sig", "x-goog-signature"];

/// How one `[tracing]` config shows queries.
#[derive(Debug)]
pub struct QueryPolicy {
    shown: QueryShown,
    /// Keys whose values `keys` keeps, lowercase and decoded.
    keep: Box<[Box<str>]>,
}

impl QueryPolicy {
    pub fn new(config: &TracingConfig) -> QueryPolicy {
        QueryPolicy {
            shown: config.query,
            keep: config.query_keep.iter().map(|k| k.to_lowercase().into()).collect(),
        }
    }

    /// `url.query` for the query as received (without its `?`); `None` when queries are
    /// not shown.
    pub fn show(&self, query: &str) -> Option<String> {
        if self.shown == QueryShown::Off {
            return None;
        }
        let mut out = String::with_capacity(query.len());
        let mut rest = query;
        loop {
            let end = rest.find(['&', ';']).unwrap_or(rest.len());
            let (param, tail) = rest.split_at(end);
            match param.split_once('=') {
                Some((key, value)) => {
                    out.push_str(key);
                    out.push('=');
                    out.push_str(if self.keeps(key) { value } else { REDACTED });
                }
                None => out.push_str(param),
            }
            let Some(separator) = tail.chars().next() else { break };
            out.push(separator);
            rest = &tail[1..];
        }
        Some(out)
    }

    fn keeps(&self, raw_key: &str) -> bool {
        let key = decoded_lowercase(raw_key);
        if SIGNATURES.contains(&key.as_str()) || crate::config::secret_name(&key) {
            return false;
        }
        match self.shown {
            QueryShown::Full => true,
            QueryShown::Keys => self.keep.iter().any(|k| **k == *key),
            QueryShown::Off => false,
        }
    }
}

/// `text` percent-decoded (`+` as a space), lowercase; a malformed escape stays as it is.
fn decoded_lowercase(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(shown: QueryShown, keep: &[&str]) -> QueryPolicy {
        QueryPolicy {
            shown,
            keep: keep.iter().map(|k| (*k).into()).collect(),
        }
    }

    #[test]
    fn keys_mode_keeps_keys_and_redacts_values_but_those_kept() {
        let p = policy(QueryShown::Keys, &["page"]);
        assert_eq!(
            p.show("q=secret&page=2&flag&=x").as_deref(),
            Some("q=REDACTED&page=2&flag&=REDACTED")
        );
        assert_eq!(p.show("").as_deref(), Some(""));
        assert_eq!(p.show("a=1;b=2").as_deref(), Some("a=REDACTED;b=REDACTED"));
        assert_eq!(p.show("PAGE=3&pa%67e=4").as_deref(), Some("PAGE=3&pa%67e=4"));
    }

    #[test]
    fn credential_keys_are_redacted_in_every_mode_however_spelled() {
        let full = policy(QueryShown::Full, &[]);
        assert_eq!(full.show("q=hi&n=1").as_deref(), Some("q=hi&n=1"));
        for key in [
            "sig",
            "SIG",
            "%73ig",
            "%73%69%67",
            "Signature",
            "X-Goog-Signature",
            "AWSAccessKeyId",
            "access_token",
            "api%5Fkey",
            "api+key",
            "password",
            "client_secret",
        ] {
            assert_eq!(
                full.show(&format!("a=1&{key}=v;q=2")),
                Some(format!("a=1&{key}=REDACTED;q=2")),
                "{key}"
            );
        }
        let keys = policy(QueryShown::Keys, &["sig", "token"]);
        assert_eq!(
            keys.show("sig=v&token=t").as_deref(),
            Some("sig=REDACTED&token=REDACTED")
        );
        assert_eq!(policy(QueryShown::Off, &[]).show("a=1"), None);
    }

    #[test]
    fn malformed_escapes_stay_as_they_are() {
        assert_eq!(decoded_lowercase("a%"), "a%");
        assert_eq!(decoded_lowercase("a%4"), "a%4");
        assert_eq!(decoded_lowercase("a%zz"), "a%zz");
        assert_eq!(decoded_lowercase("%41+b"), "a b");
        assert_eq!(decoded_lowercase("%e9"), "\u{fffd}");
    }
}
