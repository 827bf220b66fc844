//! Persisted queries: Apollo's Automatic Persisted Queries protocol
//! (`extensions.persistedQuery.{version, sha256Hash}`), documents kept in the host's
//! shared KV store, and the safelist mode where only listed documents run.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Lowercase hex SHA-256, as Apollo clients send it.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The hash a request names, if it uses the protocol.
#[derive(Debug, PartialEq, Eq)]
pub enum Extension {
    None,
    Hash(String),
    /// Present but not version 1 with a 64-hex hash.
    Invalid(&'static str),
}

pub fn extension(extensions: &Map<String, Value>) -> Extension {
    let Some(pq) = extensions.get("persistedQuery") else {
        return Extension::None;
    };
    let Some(pq) = pq.as_object() else {
        return Extension::Invalid("persistedQuery must be an object");
    };
    if pq.get("version").and_then(Value::as_i64) != Some(1) {
        return Extension::Invalid("Unsupported persisted query version");
    }
    match pq.get("sha256Hash").and_then(Value::as_str) {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()) => Extension::Hash(h.to_ascii_lowercase()),
        _ => Extension::Invalid("persistedQuery.sha256Hash must be 64 hex digits"),
    }
}

/// The KV key of a registered document.
pub fn key(hash: &str) -> String {
    format!("apq:{hash}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn hashes_match_apollo_clients() {
        // printf '{ __typename }' | sha256sum
        assert_eq!(
            sha256_hex("{ __typename }"),
            "7f56e67dd21ab3f30d1ff8b7bed08893f0a0db86449836189b361dd1e56ddb4b"
        );
    }

    #[test]
    fn the_extension() {
        let ext = |v: Value| extension(v.as_object().unwrap());
        assert_eq!(ext(serde_json::json!({})), Extension::None);
        let h = "A".repeat(64);
        assert_eq!(
            ext(serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": h}})),
            Extension::Hash("a".repeat(64))
        );
        assert!(matches!(
            ext(serde_json::json!({"persistedQuery": {"version": 2, "sha256Hash": h}})),
            Extension::Invalid(_)
        ));
        assert!(matches!(
            ext(serde_json::json!({"persistedQuery": {"version": 1, "sha256Hash": "12"}})),
            Extension::Invalid(_)
        ));
    }
}
