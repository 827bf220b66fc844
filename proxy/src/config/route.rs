//! `[[routes]]`: which requests a route takes and what it does with them.

use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source, duration, list};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub name: Option<String>,
    #[serde(rename = "match", default)]
    pub matches: MatchConfig,
    pub cluster: Spanned<String>,
    /// Time allowed for the upstream's response head; 504 after it.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Send this Host upstream instead of the client's.
    pub host_rewrite: Option<String>,
    #[serde(default)]
    pub filters: Vec<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatchConfig {
    /// `example.com`, or `*.example.com` for any subdomain.
    pub host: Option<String>,
    pub path_prefix: Option<String>,
    pub path_exact: Option<String>,
    pub path_regex: Option<Spanned<String>>,
    #[serde(default)]
    pub methods: Vec<String>,
    #[serde(default)]
    pub headers: Vec<ValueMatchConfig>,
    #[serde(default)]
    pub query: Vec<ValueMatchConfig>,
    /// The client's verified certificate identity (SPIFFE URI, else DNS name, else subject).
    pub identity: Option<PatternConfig>,
}

/// A condition on one value: exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatternConfig {
    pub exact: Option<String>,
    pub regex: Option<Spanned<String>>,
    pub present: Option<bool>,
}

/// A header or query parameter condition: exactly one of `exact`, `regex`, `present`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValueMatchConfig {
    pub name: String,
    pub exact: Option<String>,
    pub regex: Option<Spanned<String>>,
    pub present: Option<bool>,
}

fn default_timeout() -> Duration {
    Duration::from_secs(15)
}

/// Checks one route against the clusters and filters the config defines.
pub(super) fn check(
    route: &Spanned<RouteConfig>,
    src: &Source,
    clusters: &[&str],
    filters: &[&str],
) -> Result<(), ConfigError> {
    let r = route.get_ref();
    if !clusters.contains(&r.cluster.get_ref().as_str()) {
        return Err(src.error_at(
            r.cluster.span(),
            format!(
                "unknown cluster {:?} (defined: {})",
                r.cluster.get_ref(),
                list(clusters)
            ),
        ));
    }
    for name in &r.filters {
        if !filters.contains(&name.get_ref().as_str()) {
            return Err(src.error_at(
                name.span(),
                format!("unknown filter {:?} (defined: {})", name.get_ref(), list(filters)),
            ));
        }
    }
    let paths = [
        r.matches.path_prefix.is_some(),
        r.matches.path_exact.is_some(),
        r.matches.path_regex.is_some(),
    ];
    if paths.iter().filter(|p| **p).count() > 1 {
        return Err(src.error_at(
            route.span(),
            "a route matches at most one of path_prefix, path_exact, path_regex",
        ));
    }
    for m in r.matches.headers.iter().chain(&r.matches.query) {
        let kinds = [m.exact.is_some(), m.regex.is_some(), m.present.is_some()];
        if kinds.iter().filter(|k| **k).count() != 1 {
            return Err(src.error_at(
                route.span(),
                format!(
                    "the condition on {:?} needs exactly one of exact, regex, present",
                    m.name
                ),
            ));
        }
    }
    Ok(())
}
