//! `[[clusters]]`: a named group of upstream endpoints and how they are reached, and the
//! checks on it that need nothing but the file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Pem, Source};

/// The first of `patterns` that is not a name or a prefix ending in `*`.
pub(super) fn bad_san_pattern(patterns: &[String]) -> Option<&String> {
    patterns
        .iter()
        .find(|p| p.is_empty() || p.trim_end_matches('*').contains('*'))
}

/// TLS to a cluster's endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA bundle the upstream's certificate must chain to.
    pub ca: Pem,
    /// Name sent as SNI and verified against the certificate (default: the endpoint host).
    pub server_name: Option<String>,
    /// The proxy's own certificate and key, for upstreams that require mutual TLS.
    pub cert: Option<Pem>,
    pub key: Option<Pem>,
    /// When set, the certificate is verified by these instead of by `server_name`: one of
    /// its URI or DNS names must be one of them (exact, or a prefix ending in `*`), as a
    /// mesh verifies a peer's SPIFFE ID.
    #[serde(default)]
    pub subject_alt_names: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 with prior knowledge (h2c).
    Http2,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    pub name: String,
    /// `"host:port"`, or `{ address = "host:port", weight = 3 }`. A name stands for every
    /// address it resolves to, re-resolved every `dns_refresh`.
    #[serde(default)]
    pub endpoints: Vec<Spanned<EndpointConfig>>,
    /// A file listing more endpoints, one `host:port [weight]` a line, re-read when it changes.
    pub endpoints_file: Option<Spanned<PathBuf>>,
    /// How often names among the endpoints are resolved again.
    #[serde(default = "defaults::dns_refresh", deserialize_with = "super::duration")]
    pub dns_refresh: Duration,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    #[serde(default = "defaults::connect_timeout", deserialize_with = "super::duration")]
    pub connect_timeout: Duration,
    /// How long an idle pooled connection is kept.
    #[serde(default = "defaults::idle_timeout", deserialize_with = "super::duration")]
    pub idle_timeout: Duration,
    #[serde(default = "defaults::max_idle")]
    pub max_idle_per_endpoint: usize,
    /// Reach the endpoints over TLS (HTTP/2 negotiated by ALPN when `protocol = "http2"`).
    pub tls: Option<UpstreamTlsConfig>,
    /// How an endpoint is chosen for a request (`round_robin` when absent).
    pub lb: Option<Spanned<LbPolicy>>,
    /// For `least_request`: weigh each endpoint's requests in flight by its response time,
    /// a moving average that decays over this period (linkerd2-proxy's peak EWMA).
    #[serde(default, deserialize_with = "super::optional_duration")]
    pub latency_ewma: Option<Duration>,
    /// What `ring_hash` and `maglev` hash: `{ header = "x-user" }`, `{ cookie = "session" }`
    /// or `{ client_address = true }`.
    pub hash_on: Option<Spanned<HashOnConfig>>,
    /// Below this percentage of endpoints available, health and ejections are ignored and
    /// every endpoint takes traffic (a cluster is never emptied by them).
    #[serde(default = "defaults::panic_threshold")]
    pub panic_threshold: u8,
    pub circuit_breaker: Option<Spanned<BreakerConfig>>,
    pub retry: Option<Spanned<RetryConfig>>,
    pub outlier_detection: Option<Spanned<OutlierConfig>>,
    pub health_check: Option<Spanned<HealthCheckConfig>>,
    /// `endpoints` (the default): the endpoints listed; `original_destination`: the
    /// address the client dialled before a sidecar intercepted it (docs/sidecar.md).
    #[serde(default)]
    pub kind: ClusterKind,
    /// For `original_destination`: distinct destinations with a pool at once; a request
    /// to one more gets 503 (a client dialling many addresses cannot grow the proxy).
    #[serde(default = "defaults::max_destinations")]
    pub max_destinations: usize,
    /// `SO_MARK` on this cluster's upstream sockets, so that a sidecar's interception
    /// rules let them out instead of redirecting them back to the proxy.
    pub mark: Option<u32>,
}

/// Where a cluster's endpoints come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClusterKind {
    #[default]
    Endpoints,
    OriginalDestination,
}

/// One endpoint as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum EndpointConfig {
    Address(String),
    Weighted {
        address: String,
        #[serde(default = "defaults::weight")]
        weight: u32,
    },
}

impl EndpointConfig {
    pub fn address(&self) -> &str {
        match self {
            EndpointConfig::Address(a) | EndpointConfig::Weighted { address: a, .. } => a,
        }
    }

    pub fn weight(&self) -> u32 {
        match self {
            EndpointConfig::Address(_) => 1,
            EndpointConfig::Weighted { weight, .. } => *weight,
        }
    }
}

/// The largest endpoint weight: schedules and hash rings grow with the weights.
pub const MAX_WEIGHT: u32 = 100;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LbPolicy {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    /// The less loaded of two endpoints picked at random (power of two choices).
    LeastRequest,
    Random,
    RingHash,
    Maglev,
}

impl LbPolicy {
    /// The name as written in the config.
    pub fn name(self) -> &'static str {
        match self {
            LbPolicy::RoundRobin => "round_robin",
            LbPolicy::WeightedRoundRobin => "weighted_round_robin",
            LbPolicy::LeastRequest => "least_request",
            LbPolicy::Random => "random",
            LbPolicy::RingHash => "ring_hash",
            LbPolicy::Maglev => "maglev",
        }
    }

    fn hashes(self) -> bool {
        matches!(self, LbPolicy::RingHash | LbPolicy::Maglev)
    }
}

/// The request property a hashing balancer keys on: exactly one of the three.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HashOnConfig {
    pub header: Option<String>,
    pub cookie: Option<String>,
    pub client_address: Option<bool>,
}

/// `[clusters.circuit_breaker]`: over any limit, a request is answered 503 at once.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    /// Connections open to all endpoints together.
    pub max_connections: Option<u32>,
    /// Requests waiting for a new connection to open.
    pub max_pending_requests: Option<u32>,
    /// Requests in flight to the cluster.
    pub max_requests: Option<u32>,
    /// Retries in flight to the cluster.
    pub max_retries: Option<u32>,
}

/// `[clusters.retry]`: trying a failed request again on another endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryConfig {
    /// Tries in all, the first included.
    #[serde(default = "defaults::attempts")]
    pub attempts: u32,
    /// Time for one try's response head; the route's `timeout` bounds all tries together.
    #[serde(default, deserialize_with = "super::optional_duration")]
    pub per_try_timeout: Option<Duration>,
    /// Upstream statuses that are retried (connect failures, resets and per-try timeouts
    /// always are).
    #[serde(default = "defaults::retry_statuses")]
    pub statuses: Vec<u16>,
    /// Retry POST, PATCH and other non-idempotent methods too.
    #[serde(default)]
    pub non_idempotent: bool,
    /// First backoff; each retry doubles it up to `backoff_max`, with full jitter.
    #[serde(default = "defaults::backoff_base", deserialize_with = "super::duration")]
    pub backoff_base: Duration,
    #[serde(default = "defaults::backoff_max", deserialize_with = "super::duration")]
    pub backoff_max: Duration,
    /// Retries in flight may be this percentage of the requests in flight…
    #[serde(default = "defaults::budget_percent")]
    pub budget_percent: f64,
    /// Beyond that share, this many retries a second are still allowed (linkerd2-proxy's
    /// floor), so a quiet cluster can retry at all.
    #[serde(default = "defaults::min_retries_per_second")]
    pub min_retries_per_second: u32,
    /// A request body is kept for a retry up to this size; a larger one is sent once.
    #[serde(default = "defaults::replay_bytes")]
    pub max_replay_bytes: usize,
}

/// `[clusters.outlier_detection]`: passive health from real traffic.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutlierConfig {
    /// 5xx answers or failed exchanges in a row that eject an endpoint.
    #[serde(default = "defaults::consecutive_failures")]
    pub consecutive_failures: u32,
    /// The first ejection's length; the n-th lasts n times as long, up to `max_ejection`.
    #[serde(default = "defaults::base_ejection", deserialize_with = "super::duration")]
    pub base_ejection: Duration,
    #[serde(default = "defaults::max_ejection", deserialize_with = "super::duration")]
    pub max_ejection: Duration,
    /// At most this percentage of the endpoints is ejected at once (at least one).
    #[serde(default = "defaults::max_ejection_percent")]
    pub max_ejection_percent: u8,
}

/// `[clusters.health_check]`: active HTTP probes of every endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    pub path: String,
    #[serde(default = "defaults::health_interval", deserialize_with = "super::duration")]
    pub interval: Duration,
    #[serde(default = "defaults::health_timeout", deserialize_with = "super::duration")]
    pub timeout: Duration,
    /// Passed probes in a row that make an unhealthy endpoint healthy.
    #[serde(default = "defaults::healthy_threshold")]
    pub healthy_threshold: u32,
    /// Failed probes in a row that make a healthy endpoint unhealthy.
    #[serde(default = "defaults::unhealthy_threshold")]
    pub unhealthy_threshold: u32,
    /// Statuses that pass; any 2xx when empty.
    #[serde(default)]
    pub statuses: Vec<u16>,
}

impl ClusterConfig {
    pub fn lb(&self) -> LbPolicy {
        self.lb.as_ref().map_or_else(LbPolicy::default, |l| *l.get_ref())
    }

    /// Checks one cluster; errors point at its table, or the key at fault.
    pub(super) fn check(&self, span: std::ops::Range<usize>, src: &Source) -> Result<(), ConfigError> {
        let at = |span: std::ops::Range<usize>, problem: String| {
            Err(src.error_at(span, format!("cluster {:?}: {problem}", self.name)))
        };
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return at(span, "tls needs both cert and key, or neither".into());
        }
        if let Some(tls) = &self.tls
            && let Some(bad) = bad_san_pattern(&tls.subject_alt_names)
        {
            return at(
                span,
                format!("tls.subject_alt_names: {bad:?}: a name, or a prefix ending in * (no other *)"),
            );
        }
        if self.kind == ClusterKind::OriginalDestination {
            let problem = if !self.endpoints.is_empty() || self.endpoints_file.is_some() {
                Some(
                    "kind = \"original_destination\" takes no endpoints: it forwards to the address the client dialled",
                )
            } else if self.health_check.is_some() || self.outlier_detection.is_some() {
                Some("kind = \"original_destination\" has no fixed endpoints to health-check or eject")
            } else if self.lb.is_some() || self.hash_on.is_some() {
                Some("kind = \"original_destination\" has one endpoint per request: no lb or hash_on")
            } else if self.retry.is_some() {
                Some("kind = \"original_destination\" sends each request once: no retry")
            } else if self.max_destinations == 0 {
                Some("max_destinations must be more than zero")
            } else {
                None
            };
            return match problem {
                Some(problem) => at(span, problem.into()),
                None => Ok(()),
            };
        }
        if self.endpoints.is_empty() && self.endpoints_file.is_none() {
            return Err(src.error_at(span, format!("cluster {:?} has no endpoints", self.name)));
        }
        let lb = self.lb();
        let lb_span = self.lb.as_ref().map_or(span.clone(), Spanned::span);
        for endpoint in &self.endpoints {
            let weight = endpoint.get_ref().weight();
            if !(1..=MAX_WEIGHT).contains(&weight) {
                return at(
                    endpoint.span(),
                    format!("weight {weight} is not between 1 and {MAX_WEIGHT}"),
                );
            }
            if weight != 1 && lb == LbPolicy::RoundRobin {
                return at(
                    endpoint.span(),
                    "weights need a balancer that honours them (lb = \"weighted_round_robin\", \"random\", \
                     \"least_request\", \"ring_hash\" or \"maglev\")"
                        .into(),
                );
            }
            if split_host_port(endpoint.get_ref().address()).is_none() {
                return at(
                    endpoint.span(),
                    format!("endpoint {:?} is not host:port", endpoint.get_ref().address()),
                );
            }
        }
        match (&self.hash_on, lb.hashes()) {
            (None, true) => {
                return at(
                    lb_span,
                    "ring_hash and maglev need hash_on = { header = \"…\" } (or cookie, or client_address = true)"
                        .into(),
                );
            }
            (Some(h), false) => return at(h.span(), "hash_on is only for lb = \"ring_hash\" or \"maglev\"".into()),
            (Some(h), true) => {
                let on = h.get_ref();
                let set = [
                    on.header.is_some(),
                    on.cookie.is_some(),
                    on.client_address == Some(true),
                ];
                if set.iter().filter(|s| **s).count() != 1 {
                    return at(
                        h.span(),
                        "hash_on needs exactly one of header, cookie, client_address = true".into(),
                    );
                }
                if let Some(name) = &on.header
                    && http::HeaderName::from_bytes(name.as_bytes()).is_err()
                {
                    return at(h.span(), format!("hash_on header {name:?} is not a header name"));
                }
            }
            (None, false) => {}
        }
        if let Some(decay) = self.latency_ewma {
            if lb != LbPolicy::LeastRequest {
                return at(span, "latency_ewma is only for lb = \"least_request\"".into());
            }
            if decay.is_zero() {
                return at(span, "latency_ewma must be more than zero".into());
            }
        }
        if self.panic_threshold > 100 {
            return at(span, "panic_threshold is a percentage (0 to 100)".into());
        }
        if self.dns_refresh < Duration::from_millis(100) {
            return at(span, "dns_refresh must be at least 100ms".into());
        }
        if let Some(b) = &self.circuit_breaker {
            let l = b.get_ref();
            let limits = [
                ("max_connections", l.max_connections),
                ("max_pending_requests", l.max_pending_requests),
                ("max_requests", l.max_requests),
                ("max_retries", l.max_retries),
            ];
            if let Some((key, _)) = limits.iter().find(|(_, v)| *v == Some(0)) {
                return at(b.span(), format!("circuit_breaker.{key} must be more than zero"));
            }
        }
        if let Some(r) = &self.retry {
            let c = r.get_ref();
            let problem = if !(1..=10).contains(&c.attempts) {
                Some("retry.attempts is between 1 and 10 (tries in all, the first included)".to_owned())
            } else if c.per_try_timeout.is_some_and(|t| t.is_zero()) {
                Some("retry.per_try_timeout must be more than zero".to_owned())
            } else if let Some(s) = c.statuses.iter().find(|s| !(500..=599).contains(*s)) {
                Some(format!("retry.statuses: {s} is not a 5xx status"))
            } else if c.backoff_base.is_zero() || c.backoff_max < c.backoff_base {
                Some("retry.backoff_base must be more than zero and at most backoff_max".to_owned())
            } else if !(0.0..=100.0).contains(&c.budget_percent) {
                Some("retry.budget_percent is a percentage (0 to 100)".to_owned())
            } else {
                None
            };
            if let Some(problem) = problem {
                return at(r.span(), problem);
            }
        }
        if let Some(o) = &self.outlier_detection {
            let c = o.get_ref();
            let problem = if c.consecutive_failures == 0 {
                Some("outlier_detection.consecutive_failures must be more than zero")
            } else if c.base_ejection.is_zero() || c.max_ejection < c.base_ejection {
                Some("outlier_detection.base_ejection must be more than zero and at most max_ejection")
            } else if c.max_ejection_percent > 100 {
                Some("outlier_detection.max_ejection_percent is a percentage (0 to 100)")
            } else {
                None
            };
            if let Some(problem) = problem {
                return at(o.span(), problem.into());
            }
        }
        if let Some(h) = &self.health_check {
            let c = h.get_ref();
            let problem = if !c.path.starts_with('/') || http::uri::PathAndQuery::try_from(c.path.as_str()).is_err() {
                Some(format!("health_check.path {:?} is not an absolute path", c.path))
            } else if c.interval.is_zero() || c.timeout.is_zero() {
                Some("health_check.interval and timeout must be more than zero".to_owned())
            } else if c.healthy_threshold == 0 || c.unhealthy_threshold == 0 {
                Some("health_check thresholds must be more than zero".to_owned())
            } else {
                c.statuses
                    .iter()
                    .find(|s| !(100..=599).contains(*s))
                    .map(|s| format!("health_check.statuses: {s} is not an HTTP status"))
            };
            if let Some(problem) = problem {
                return at(h.span(), problem);
            }
        }
        Ok(())
    }
}

/// `host` and `port` of `host:port` (`[v6]:port` too), when it is that shape.
pub fn split_host_port(text: &str) -> Option<(&str, u16)> {
    let (host, port) = text.rsplit_once(':')?;
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    (!host.is_empty()).then_some(())?;
    Some((host, port.parse().ok()?))
}

mod defaults {
    use std::time::Duration;
    pub fn max_destinations() -> usize {
        1024
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_idle() -> usize {
        256
    }
    pub fn dns_refresh() -> Duration {
        Duration::from_secs(30)
    }
    pub fn weight() -> u32 {
        1
    }
    pub fn panic_threshold() -> u8 {
        50
    }
    pub fn attempts() -> u32 {
        2
    }
    pub fn retry_statuses() -> Vec<u16> {
        vec![502, 503, 504]
    }
    pub fn backoff_base() -> Duration {
        Duration::from_millis(25)
    }
    pub fn backoff_max() -> Duration {
        Duration::from_millis(250)
    }
    pub fn budget_percent() -> f64 {
        20.0
    }
    pub fn min_retries_per_second() -> u32 {
        10
    }
    pub fn replay_bytes() -> usize {
        64 * 1024
    }
    pub fn consecutive_failures() -> u32 {
        5
    }
    pub fn base_ejection() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_ejection() -> Duration {
        Duration::from_secs(300)
    }
    pub fn max_ejection_percent() -> u8 {
        10
    }
    pub fn health_interval() -> Duration {
        Duration::from_secs(5)
    }
    pub fn health_timeout() -> Duration {
        Duration::from_secs(1)
    }
    pub fn healthy_threshold() -> u32 {
        2
    }
    pub fn unhealthy_threshold() -> u32 {
        3
    }
}
