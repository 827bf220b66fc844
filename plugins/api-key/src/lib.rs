//! API-key authentication for Weft. Keys are looked for in the configured places
//! (`"header:x-api-key"`, `"query:api_key"`, `"bearer"`, `"cookie:NAME"`), hashed with
//! SHA-256 and compared in constant time with every digest in the config, so neither the
//! config nor a timing side channel gives a key away. The matching key's `id` goes
//! upstream in `identity_header`. `docs/plugins.md` documents the config.

use plugin_common::header;
use plugin_common::scope::Scope;
use plugin_common::token::{Source, Strip};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use weft_sdk::{Decision, Filter, Options, Phases, Reply, Request, log, metrics};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    keys: Vec<KeyEntry>,
    #[serde(default = "default_sources")]
    sources: Vec<String>,
    #[serde(default = "default_identity")]
    identity_header: String,
    /// Remove the key from the request before it goes upstream.
    #[serde(default = "yes")]
    remove_key: bool,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    anonymous_paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyEntry {
    id: String,
    /// Hex SHA-256 of the key, e.g. `printf %s "$KEY" | sha256sum`.
    sha256: String,
}

fn default_sources() -> Vec<String> {
    vec!["header:x-api-key".to_owned()]
}
fn default_identity() -> String {
    "x-api-key-id".to_owned()
}
fn default_realm() -> String {
    "weft".to_owned()
}
fn yes() -> bool {
    true
}

struct ApiKey {
    keys: Vec<(String, [u8; 32])>,
    sources: Vec<Source>,
    identity_header: String,
    remove_key: bool,
    challenge: String,
    scope: Scope,
}

fn parse_digest(id: &str, hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("keys: {id:?}: sha256 must be 64 hex digits");
    if hex.len() != 64 {
        return Err(bad());
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2).ok_or_else(bad)?, 16).map_err(|_| bad())?;
    }
    Ok(out)
}

impl ApiKey {
    /// The id of the key whose digest matches. Every digest is compared, whatever
    /// matched, so the time taken does not depend on which key (or how much of it) fits.
    fn identify(&self, presented: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for (id, expected) in &self.keys {
            if bool::from(digest.ct_eq(expected)) {
                found = Some(id.as_str());
            }
        }
        found
    }

    fn unauthorized(&self) -> Decision {
        metrics::counter_add("denied", 1);
        Reply::new(401)
            .header("www-authenticate", self.challenge.clone())
            .header("content-type", "text/plain")
            .body("unauthorized\n")
            .into()
    }
}

impl Filter for ApiKey {
    type Config = Config;

    fn options(&self) -> Options {
        // Nothing to do on the way back: the proxy skips this filter there.
        Options::for_phases(Phases::REQUEST)
    }

    fn init(config: Config) -> Result<Self, String> {
        if config.keys.is_empty() {
            return Err("keys must not be empty".to_owned());
        }
        let mut keys = Vec::with_capacity(config.keys.len());
        for entry in &config.keys {
            if entry.id.is_empty() || entry.id.bytes().any(|b| b.is_ascii_control()) {
                return Err(format!("keys: id {:?} must be non-empty printable text", entry.id));
            }
            if keys.iter().any(|(id, _)| id == &entry.id) {
                return Err(format!("keys: id {:?} appears twice", entry.id));
            }
            keys.push((
                entry.id.clone(),
                parse_digest(&entry.id, &entry.sha256.to_ascii_lowercase())?,
            ));
        }
        let sources = config
            .sources
            .iter()
            .map(|s| Source::parse("sources", s))
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            return Err("sources must not be empty".to_owned());
        }
        header::quotable("realm", &config.realm)?;
        Ok(ApiKey {
            keys,
            sources,
            identity_header: header::name("identity_header", &config.identity_header)?,
            remove_key: config.remove_key,
            challenge: format!("ApiKey realm=\"{}\"", config.realm),
            scope: Scope::new(config.anonymous_paths, config.methods)?,
        })
    }

    fn on_request(&self, request: &mut Request<'_>) -> Decision {
        // The identity comes from a checked key only, never from the client.
        request.remove_header(&self.identity_header);
        let path = request.path();
        if !self.scope.protects(&request.method(), &path) {
            return Decision::Continue;
        }
        let found = self.sources.iter().find_map(|source| {
            let header = source.header_name().and_then(|h| request.header(h));
            source.find(header.as_deref(), &path).map(|key| (source, key))
        });
        let Some((source, presented)) = found else {
            return self.unauthorized();
        };
        let Some(id) = self.identify(&presented) else {
            return self.unauthorized();
        };
        if self.remove_key {
            remove_key(request, source, &path);
        }
        if request.set_header(&self.identity_header, id).is_err() {
            return Reply::new(500).body("internal error\n").into();
        }
        metrics::counter_add("allowed", 1);
        Decision::Continue
    }
}

/// Takes the key out of the request before it goes upstream.
fn remove_key(request: &mut Request<'_>, source: &Source, path: &str) {
    let header = source.header_name().and_then(|h| request.header(h));
    let result = match source.strip(header.as_deref(), path) {
        Strip::RemoveHeader(name) => {
            request.remove_header(name);
            Ok(())
        }
        Strip::SetHeader(name, value) => request.set_header(name, &value).map_err(String::from),
        Strip::SetPath(path) => request.set_path(&path),
    };
    if let Err(e) = result {
        log::warn(&format!("cannot strip the key from the request: {e}"));
    }
}

weft_sdk::export!(ApiKey);

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn filter(keys: &[(&str, &str)]) -> Result<ApiKey, String> {
        let keys: Vec<serde_json::Value> = keys
            .iter()
            .map(|(id, key)| {
                let hex: String = Sha256::digest(key.as_bytes())
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect();
                serde_json::json!({ "id": id, "sha256": hex })
            })
            .collect();
        let config: Config = serde_json::from_value(serde_json::json!({ "keys": keys })).map_err(|e| e.to_string())?;
        ApiKey::init(config)
    }

    #[test]
    fn keys_identify_their_owner() {
        let f = filter(&[("a", "key-a"), ("b", "key-b")]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(f.identify("key-a"), Some("a"));
        assert_eq!(f.identify("key-b"), Some("b"));
        assert_eq!(f.identify("key-c"), None);
        assert_eq!(f.identify(""), None);
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(filter(&[]).err().unwrap_or_default().contains("keys must not be empty"));
        assert!(
            filter(&[("a", "x"), ("a", "y")])
                .err()
                .unwrap_or_default()
                .contains("twice")
        );
        let bad = serde_json::json!({ "keys": [{ "id": "a", "sha256": "abc" }] });
        let config: Config = serde_json::from_value(bad).unwrap_or_else(|e| panic!("{e}"));
        assert!(ApiKey::init(config).err().unwrap_or_default().contains("64 hex digits"));
        let typo = serde_json::json!({ "keys": [], "header": "x" });
        assert!(serde_json::from_value::<Config>(typo).is_err());
    }
}
