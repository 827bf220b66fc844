//! `[[routes]]`: which requests a route takes and what it does with them.

use std::collections::BTreeMap;
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
    /// Where matching requests go; not needed with `split`, `redirect` or `direct_response`.
    pub cluster: Option<Spanned<String>>,
    /// Time allowed for the upstream's response head; 504 after it.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Send this Host upstream instead of the client's.
    pub host_rewrite: Option<String>,
    #[serde(default)]
    pub filters: Vec<Spanned<String>>,
    /// Write access-log records for this route (when `[access_log]` is set).
    #[serde(default = "super::defaults::yes")]
    pub access_log: bool,
    /// Clusters chosen at random in proportion to their weights (canary), instead of `cluster`.
    #[serde(default)]
    pub split: Vec<SplitConfig>,
    /// A header or cookie value that sends the request to a cluster of its own, before
    /// `split` or `cluster` are considered; the first that matches wins.
    #[serde(default)]
    pub pin: Vec<PinConfig>,
    /// The path sent upstream.
    pub rewrite: Option<Spanned<RewriteConfig>>,
    /// Answer with a redirect instead of forwarding.
    pub redirect: Option<Spanned<RedirectConfig>>,
    /// Answer with this response instead of forwarding.
    pub direct_response: Option<Spanned<DirectResponseConfig>>,
    /// Header edits on the request sent upstream.
    pub request_headers: Option<Spanned<HeaderEditsConfig>>,
    /// Header edits on the response sent to the client.
    pub response_headers: Option<Spanned<HeaderEditsConfig>>,
    /// Delays or aborts for resilience testing; off unless set.
    pub fault: Option<Spanned<FaultConfig>>,
    /// Copies of a share of the requests, sent to shadow clusters whose answers are dropped:
    /// one table, or an array of them.
    pub mirror: Option<Spanned<MirrorsConfig>>,
    /// Cross-origin resource sharing: preflights answered here, responses marked for the
    /// origins allowed.
    pub cors: Option<Spanned<CorsConfig>>,
    /// `Upgrade` protocols the route switches to (compared without case). A request
    /// offering any other is forwarded as a plain request, its `Upgrade` removed.
    #[serde(default = "default_upgrades")]
    pub upgrades: Vec<String>,
    /// An upgraded connection with no bytes either way for this long is closed.
    #[serde(default = "default_upgrade_idle", deserialize_with = "duration")]
    pub upgrade_idle_timeout: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    pub cluster: Spanned<String>,
    pub weight: u32,
    /// Header edits for requests this entry takes, after the route's own (the Gateway API's
    /// filters on one `backendRef`).
    pub request_headers: Option<Spanned<HeaderEditsConfig>>,
    /// Header edits on the responses of this entry's requests, after the route's own.
    pub response_headers: Option<Spanned<HeaderEditsConfig>>,
}

/// `header` or `cookie` (exactly one) equal to `value` sends the request to `cluster`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub value: String,
    pub cluster: Spanned<String>,
}

/// Exactly one of `prefix` (replaces the route's `path_prefix`) or `regex` with `substitution`
/// (every match in the path replaced; `$1` names a capture group).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewriteConfig {
    pub prefix: Option<String>,
    pub regex: Option<Spanned<String>>,
    pub substitution: Option<String>,
}

/// Each part left out is the request's own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    pub scheme: Option<String>,
    pub host: Option<String>,
    pub port: Option<u16>,
    /// The whole new path.
    pub path: Option<String>,
    /// Replaces the route's `path_prefix`, keeping the rest of the path.
    pub prefix: Option<String>,
    /// 301, 302, 303, 307 or 308.
    #[serde(default = "default_redirect_code")]
    pub code: u16,
    /// Drop the query string instead of keeping it.
    #[serde(default)]
    pub strip_query: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectResponseConfig {
    pub status: u16,
    #[serde(default)]
    pub body: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

/// Header edits, applied in the order remove, set (replacing), add (appending).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderEditsConfig {
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    #[serde(default)]
    pub add: BTreeMap<String, String>,
}

/// `mirror = { cluster = "a" }` or `mirror = [{ cluster = "a" }, { cluster = "b", percent = 10 }]`
/// (the Gateway API's several `RequestMirror` filters on one rule).
#[derive(Debug)]
pub struct MirrorsConfig(pub Vec<MirrorConfig>);

impl<'de> Deserialize<'de> for MirrorsConfig {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // By hand, not `untagged`: that buffers the value and loses the spans of the
        // cluster names, which errors point at.
        struct OneOrMany;
        impl<'de> serde::de::Visitor<'de> for OneOrMany {
            type Value = MirrorsConfig;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a mirror table or an array of them")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<MirrorsConfig, A::Error> {
                let one = MirrorConfig::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(MirrorsConfig(vec![one]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<MirrorsConfig, A::Error> {
                Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq)).map(MirrorsConfig)
            }
        }
        deserializer.deserialize_any(OneOrMany)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    pub cluster: Spanned<String>,
    /// Share of requests copied (default all).
    #[serde(default = "default_mirror_percent")]
    pub percent: f64,
    /// Requests with a larger body are not copied (default 64 KiB).
    #[serde(default = "default_mirror_body")]
    pub max_body_bytes: usize,
    /// Shadow requests in flight at once on this route; past it, copies are dropped.
    #[serde(default = "default_mirror_in_flight")]
    pub max_in_flight: usize,
}

/// The Gateway API's `HTTPCORSFilter`, with Envoy's regex origins.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// `https://app.example`, `https://*.example.com` (any subdomain, at any depth), or `*`
    /// alone (any origin).
    #[serde(default)]
    pub allow_origins: Vec<String>,
    /// Regexes over the whole `Origin` as sent.
    #[serde(default)]
    pub allow_origin_regex: Vec<Spanned<String>>,
    /// Methods a preflight allows, or `*` alone.
    #[serde(default)]
    pub allow_methods: Vec<String>,
    /// Request headers a preflight allows, or `*` alone.
    #[serde(default)]
    pub allow_headers: Vec<String>,
    /// Response headers scripts may read, or `*` alone (not with credentials).
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default)]
    pub allow_credentials: bool,
    /// How long a browser may cache a preflight's answer.
    #[serde(default = "default_cors_max_age", deserialize_with = "duration")]
    pub max_age: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultConfig {
    /// Only requests carrying this header are considered.
    pub header: Option<String>,
    pub delay: Option<FaultDelayConfig>,
    pub abort: Option<FaultAbortConfig>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultDelayConfig {
    #[serde(deserialize_with = "duration")]
    pub duration: Duration,
    pub percent: f64,
}

/// Exactly one of `status` (answered by the proxy) or `reset = true` (the stream, or the
/// HTTP/1.1 connection, is cut without an answer).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultAbortConfig {
    pub status: Option<u16>,
    #[serde(default)]
    pub reset: bool,
    pub percent: f64,
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
    /// The original destination of an intercepted connection (a sidecar listener's): an
    /// address or a CIDR block, `"10.1.0.0/16"`.
    pub destination: Option<String>,
    /// The original destination's port.
    pub destination_port: Option<u16>,
    /// The listeners whose connections the route takes (all when empty): a sidecar's
    /// inbound and outbound listeners each get routes of their own.
    #[serde(default)]
    pub listeners: Vec<String>,
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

fn default_cors_max_age() -> Duration {
    // The Gateway API's default.
    Duration::from_secs(5)
}

fn default_mirror_percent() -> f64 {
    100.0
}

fn default_mirror_body() -> usize {
    64 << 10
}

fn default_mirror_in_flight() -> usize {
    64
}

fn default_upgrades() -> Vec<String> {
    vec!["websocket".to_owned()]
}

fn default_upgrade_idle() -> Duration {
    Duration::from_secs(300)
}

fn default_redirect_code() -> u16 {
    301
}

/// Checks one route against the clusters and filters the config defines.
pub(super) fn check(
    route: &Spanned<RouteConfig>,
    src: &Source,
    clusters: &[&str],
    filters: &[&str],
) -> Result<(), ConfigError> {
    let r = route.get_ref();
    let named = r
        .cluster
        .iter()
        .chain(r.split.iter().map(|s| &s.cluster))
        .chain(r.pin.iter().map(|p| &p.cluster))
        .chain(r.mirror.iter().flat_map(|m| m.get_ref().0.iter().map(|m| &m.cluster)));
    for cluster in named {
        if !clusters.contains(&cluster.get_ref().as_str()) {
            return Err(src.error_at(
                cluster.span(),
                format!("unknown cluster {:?} (defined: {})", cluster.get_ref(), list(clusters)),
            ));
        }
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
    if let Some(p) = r.matches.path_prefix.as_deref().filter(|p| !p.starts_with('/')) {
        // Every normal path starts with `/`: such a route would never match.
        return Err(src.error_at(route.span(), format!("match.path_prefix {p:?} must start with '/'")));
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
    check_actions(route, src)
}

/// What a route does: exactly one target, and edits that cannot break the message's framing.
fn check_actions(route: &Spanned<RouteConfig>, src: &Source) -> Result<(), ConfigError> {
    let r = route.get_ref();
    let fail = |span: std::ops::Range<usize>, problem: String| src.error_at(span, problem);
    let targets = [
        r.cluster.is_some(),
        !r.split.is_empty(),
        r.redirect.is_some(),
        r.direct_response.is_some(),
    ];
    if targets.iter().filter(|t| **t).count() != 1 {
        return Err(fail(
            route.span(),
            "a route needs exactly one of cluster, split, redirect, direct_response".to_owned(),
        ));
    }
    if !r.split.is_empty() && r.split.iter().map(|s| u64::from(s.weight)).sum::<u64>() == 0 {
        return Err(fail(route.span(), "split: the weights add up to zero".to_owned()));
    }
    if (r.redirect.is_some() || r.direct_response.is_some()) && !r.pin.is_empty() {
        return Err(fail(
            route.span(),
            "pin needs a route that forwards (cluster or split)".to_owned(),
        ));
    }
    for pin in &r.pin {
        if pin.header.is_some() == pin.cookie.is_some() {
            return Err(fail(
                pin.cluster.span(),
                "a pin needs exactly one of header, cookie".to_owned(),
            ));
        }
    }
    if let Some(rw) = &r.rewrite {
        let w = rw.get_ref();
        let problem = match (&w.prefix, &w.regex, &w.substitution) {
            (Some(_), None, None) if r.matches.path_prefix.is_none() => {
                Some("rewrite.prefix replaces the route's match.path_prefix, which this route does not have")
            }
            (Some(p), None, None) if !p.starts_with('/') => Some("rewrite.prefix must start with '/'"),
            (Some(_), None, None) => None,
            (None, Some(_), Some(sub)) if !sub.starts_with('/') => Some("rewrite.substitution must start with '/'"),
            (None, Some(_), Some(_)) => None,
            _ => Some("rewrite needs either prefix, or regex with substitution"),
        };
        if let Some(problem) = problem {
            return Err(fail(rw.span(), problem.to_owned()));
        }
    }
    if let Some(rd) = &r.redirect {
        let d = rd.get_ref();
        let problem = if !matches!(d.code, 301 | 302 | 303 | 307 | 308) {
            Some("redirect.code is one of 301, 302, 303, 307, 308")
        } else if d.path.is_some() && d.prefix.is_some() {
            Some("redirect takes path or prefix, not both")
        } else if d.prefix.is_some() && r.matches.path_prefix.is_none() {
            Some("redirect.prefix replaces the route's match.path_prefix, which this route does not have")
        } else if d.path.iter().chain(&d.prefix).any(|p| !p.starts_with('/')) {
            Some("redirect.path and redirect.prefix must start with '/'")
        } else if d.scheme.as_deref().is_some_and(|s| !matches!(s, "http" | "https")) {
            Some("redirect.scheme is \"http\" or \"https\"")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(fail(rd.span(), problem.to_owned()));
        }
    }
    if let Some(m) = &r.mirror {
        let mirrors = &m.get_ref().0;
        let problem = if r.redirect.is_some() || r.direct_response.is_some() {
            Some("mirror needs a route that forwards (cluster or split)".to_owned())
        } else if mirrors.is_empty() {
            Some("mirror = [] names no cluster; leave mirror out instead".to_owned())
        } else if let Some(bad) = mirrors.iter().find(|m| !(0.0..=100.0).contains(&m.percent)) {
            Some(format!("mirror.percent {} is not between 0 and 100", bad.percent))
        } else if mirrors.iter().any(|m| m.max_in_flight == 0) {
            Some("mirror.max_in_flight must be more than zero".to_owned())
        } else {
            // Two copies of each request to one cluster would only double its load.
            mirrors
                .iter()
                .enumerate()
                .find(|(i, m)| mirrors[..*i].iter().any(|o| o.cluster.get_ref() == m.cluster.get_ref()))
                .map(|(_, twice)| format!("mirror: cluster {:?} is mirrored to twice", twice.cluster.get_ref()))
        };
        if let Some(problem) = problem {
            return Err(fail(m.span(), problem));
        }
    }
    if r.upgrade_idle_timeout.is_zero() {
        return Err(fail(
            route.span(),
            "upgrade_idle_timeout must be more than zero".to_owned(),
        ));
    }
    if let Some(bad) = r
        .upgrades
        .iter()
        .find(|u| u.is_empty() || !u.bytes().all(|b| b.is_ascii_graphic() && b != b','))
    {
        return Err(fail(route.span(), format!("upgrades: {bad:?} is not a protocol name")));
    }
    if let Some(dr) = &r.direct_response
        && !(200..=599).contains(&dr.get_ref().status)
    {
        return Err(fail(dr.span(), "direct_response.status must be 200 to 599".to_owned()));
    }
    if let Some(f) = &r.fault {
        let fault = f.get_ref();
        let percents = fault
            .delay
            .iter()
            .map(|d| d.percent)
            .chain(fault.abort.iter().map(|a| a.percent));
        let problem = if fault.delay.is_none() && fault.abort.is_none() {
            Some("fault needs delay, abort or both".to_owned())
        } else if let Some(p) = percents.into_iter().find(|p| !(0.0..=100.0).contains(p)) {
            Some(format!("fault percent {p} is not between 0 and 100"))
        } else if let Some(a) = &fault.abort
            && a.status.is_some() == a.reset
        {
            Some("fault.abort needs exactly one of status or reset = true".to_owned())
        } else if let Some(status) = fault.abort.as_ref().and_then(|a| a.status)
            && !(200..=599).contains(&status)
        {
            Some("fault.abort.status must be 200 to 599".to_owned())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(fail(f.span(), problem));
        }
    }
    Ok(())
}
