//! The filter's config (the `config` table of its `[[filters]]` entry) and its checks.
//! Everything that can be wrong is refused here, at load time, with the field named.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use jsonwebtoken::Algorithm;
use plugin_common::scope::Scope;
use plugin_common::token::Source;
use plugin_common::{duration, header};
use serde::Deserialize;

use crate::keys::{self, Key, KeyConfig, parse_alg};
use crate::verify::Policy;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    keys: Vec<KeyConfig>,
    jwks: Option<JwksConfig>,
    /// Algorithms tokens may use; empty: every algorithm some key allows.
    #[serde(default)]
    algorithms: Vec<String>,
    issuer: Option<OneOrMany>,
    audience: Option<OneOrMany>,
    #[serde(default = "default_required")]
    required_claims: Vec<String>,
    #[serde(default = "default_leeway")]
    leeway: String,
    #[serde(default = "default_sources")]
    token_sources: Vec<String>,
    /// Claim name → request header sent upstream.
    #[serde(default)]
    claims_to_headers: BTreeMap<String, String>,
    /// Remove the token (header, cookie or query parameter) before going upstream.
    #[serde(default)]
    remove_token: bool,
    #[serde(default = "default_realm")]
    realm: String,
    #[serde(default)]
    anonymous_paths: Vec<String>,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default)]
    cache: CacheConfig,
}

/// The cache of verified tokens (see `token_cache`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheConfig {
    /// Per instance; 0 disables the cache.
    #[serde(default = "default_cache_entries")]
    max_entries: usize,
    /// A cap on how long an entry is trusted, below the token's own `exp`.
    ttl: Option<String>,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            max_entries: default_cache_entries(),
            ttl: None,
        }
    }
}

/// Each instance holds its own cache in its linear memory (16 MiB by default); an entry is
/// a few hundred bytes plus the forwarded claims.
const MAX_CACHE_ENTRIES: usize = 65_536;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwksConfig {
    pub cluster: String,
    pub path: String,
    #[serde(default = "default_refresh")]
    refresh: String,
    #[serde(default = "default_min_refetch")]
    min_refetch: String,
    #[serde(default = "default_timeout")]
    timeout: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn set(self) -> HashSet<String> {
        match self {
            OneOrMany::One(s) => HashSet::from([s]),
            OneOrMany::Many(v) => v.into_iter().collect(),
        }
    }
}

fn default_required() -> Vec<String> {
    vec!["exp".to_owned()]
}
fn default_leeway() -> String {
    "30s".to_owned()
}
fn default_sources() -> Vec<String> {
    vec!["bearer".to_owned()]
}
fn default_realm() -> String {
    "weft".to_owned()
}
fn default_refresh() -> String {
    "5m".to_owned()
}
fn default_min_refetch() -> String {
    "30s".to_owned()
}
fn default_cache_entries() -> usize {
    1024
}
fn default_timeout() -> String {
    "1s".to_owned()
}

pub struct Jwks {
    pub cluster: String,
    pub path: String,
    pub timeout: Duration,
    pub refresh: Duration,
    pub min_refetch: Duration,
}

/// The checked config.
pub struct Settings {
    pub scope: Scope,
    pub sources: Vec<Source>,
    pub keys: Vec<Key>,
    pub jwks: Option<Jwks>,
    pub allowed: Vec<Algorithm>,
    pub policy: Policy,
    pub claims_to_headers: Vec<(String, String)>,
    pub remove_token: bool,
    pub realm: String,
    pub cache: CacheSettings,
}

pub struct CacheSettings {
    /// 0: no cache.
    pub max_entries: usize,
    pub ttl: Option<Duration>,
}

impl Config {
    pub fn check(self) -> Result<Settings, String> {
        let allowed = self
            .algorithms
            .iter()
            .map(|a| parse_alg(a).map_err(|e| format!("algorithms: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let keys = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| keys::from_config(i, k, &allowed))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() && self.jwks.is_none() {
            return Err("no keys: give `keys` or `jwks`".to_owned());
        }
        // With no explicit list, a token may use any algorithm one of the keys allows;
        // JWKS keys can be of any asymmetric type, HMAC is never fetched.
        let token_algs = if !allowed.is_empty() {
            allowed.clone()
        } else {
            let mut algs: Vec<Algorithm> = keys.iter().flat_map(|k| k.algorithms.iter().copied()).collect();
            if self.jwks.is_some() {
                algs.extend(jsonwebtoken::AlgorithmFamily::Rsa.algorithms());
                algs.extend([Algorithm::ES256, Algorithm::ES384, Algorithm::EdDSA]);
            }
            algs
        };
        let jwks = self
            .jwks
            .map(|j| {
                if j.cluster.is_empty() {
                    return Err("jwks.cluster must not be empty".to_owned());
                }
                if !j.path.starts_with('/') {
                    return Err(format!("jwks.path {:?} must start with '/'", j.path));
                }
                Ok(Jwks {
                    timeout: duration::parse("jwks.timeout", &j.timeout)?,
                    refresh: duration::parse("jwks.refresh", &j.refresh)?,
                    min_refetch: duration::parse("jwks.min_refetch", &j.min_refetch)?,
                    cluster: j.cluster,
                    path: j.path,
                })
            })
            .transpose()?;
        let sources = self
            .token_sources
            .iter()
            .map(|s| Source::parse("token_sources", s))
            .collect::<Result<Vec<_>, _>>()?;
        if sources.is_empty() {
            return Err("token_sources must not be empty".to_owned());
        }
        let claims_to_headers = self
            .claims_to_headers
            .into_iter()
            .map(|(claim, name)| Ok((claim, header::name("claims_to_headers", &name)?)))
            .collect::<Result<Vec<_>, String>>()?;
        header::quotable("realm", &self.realm)?;
        let leeway = duration::parse("leeway", &self.leeway)?;
        if self.cache.max_entries > MAX_CACHE_ENTRIES {
            return Err(format!(
                "cache.max_entries: {} is more than {MAX_CACHE_ENTRIES} (the cache is per instance, in its memory)",
                self.cache.max_entries
            ));
        }
        let ttl = self.cache.ttl.map(|t| duration::parse("cache.ttl", &t)).transpose()?;
        if ttl == Some(Duration::ZERO) {
            return Err("cache.ttl must be more than 0 (cache.max_entries = 0 turns the cache off)".to_owned());
        }
        Ok(Settings {
            scope: Scope::new(self.anonymous_paths, self.methods)?,
            sources,
            keys,
            jwks,
            allowed,
            policy: Policy {
                algorithms: token_algs,
                issuers: self.issuer.map(OneOrMany::set),
                audiences: self.audience.map(OneOrMany::set),
                required: self.required_claims,
                leeway_secs: leeway.as_secs(),
            },
            claims_to_headers,
            remove_token: self.remove_token,
            realm: self.realm,
            cache: CacheSettings {
                max_entries: self.cache.max_entries,
                ttl,
            },
        })
    }
}
