//! `[[clusters]]`: a named group of upstream endpoints and how they are reached, and the
//! checks on it that need nothing but the file.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::{ConfigError, Source};

/// TLS to a cluster's endpoints.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA bundle the upstream's certificate must chain to.
    pub ca: PathBuf,
    /// Name sent as SNI and verified against the certificate (default: the endpoint host).
    pub server_name: Option<String>,
    /// The proxy's own certificate and key, for upstreams that require mutual TLS.
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
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
    /// `host:port` of each endpoint; names are resolved when the config is loaded.
    pub endpoints: Vec<Spanned<String>>,
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
}

impl ClusterConfig {
    /// Checks one cluster; errors point at its table.
    pub(super) fn check(&self, span: std::ops::Range<usize>, src: &Source) -> Result<(), ConfigError> {
        let fail = |problem: String| Err(src.error_at(span.clone(), format!("cluster {:?}: {problem}", self.name)));
        if let Some(tls) = &self.tls
            && tls.cert.is_some() != tls.key.is_some()
        {
            return fail("tls needs both cert and key, or neither".into());
        }
        if self.endpoints.is_empty() {
            return Err(src.error_at(span, format!("cluster {:?} has no endpoints", self.name)));
        }
        Ok(())
    }
}

mod defaults {
    use std::time::Duration;
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(2)
    }
    pub fn idle_timeout() -> Duration {
        Duration::from_secs(60)
    }
    pub fn max_idle() -> usize {
        256
    }
}
