//! Sidecar settings: how a listener receives intercepted connections (`transparent`),
//! which way they go (`direction`), what it does with those that are not HTTP, the TLS
//! routes that send passed-through TLS by its SNI (`[[tls_routes]]`), and the checks on
//! them.

use std::net::IpAddr;

use serde::Deserialize;
use toml::Spanned;

use super::{ClusterKind, Config, ConfigError, ListenerConfig, Source, list};

/// How the kernel hands an intercepted connection to a listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Transparent {
    /// nftables `redirect` (NAT): the original destination is read from conntrack with
    /// `SO_ORIGINAL_DST` / `IP6T_SO_ORIGINAL_DST`.
    Redirect,
    /// nftables `tproxy`: the listener is `IP_TRANSPARENT` and each accepted socket's local
    /// address is the original destination.
    Tproxy,
}

impl Transparent {
    pub fn name(self) -> &'static str {
        match self {
            Transparent::Redirect => "redirect",
            Transparent::Tproxy => "tproxy",
        }
    }
}

/// Which way a transparent listener's connections go: the `direction` label of its
/// metrics and access-log records (Envoy's `traffic_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// To the workload beside the sidecar, from its peers.
    Inbound,
    /// From the workload, to whatever it dials.
    Outbound,
}

impl Direction {
    /// The label of a listener's direction; `unspecified` when it has none (Envoy's
    /// default too).
    pub fn label(direction: Option<Direction>) -> &'static str {
        match direction {
            Some(Direction::Inbound) => "inbound",
            Some(Direction::Outbound) => "outbound",
            None => "unspecified",
        }
    }
}

/// `[[tls_routes]]`: TLS a transparent listener passes through (not terminated), sent by
/// the SNI of its ClientHello to a cluster, bytes unchanged (the Gateway API's TLSRoute).
/// A connection without SNI or whose SNI no route names goes to its original destination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsRouteConfig {
    pub name: String,
    /// The transparent listeners whose connections the route takes (all when empty).
    #[serde(default)]
    pub listeners: Vec<String>,
    /// `example.com`, or `*.example.com` for any subdomain (one label or more).
    pub hostnames: Vec<String>,
    pub cluster: String,
}

/// Whether a transparent listener with `tls` also takes plaintext (Istio's
/// PeerAuthentication modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PeerTls {
    /// TLS from peer sidecars is terminated, plaintext taken as well.
    #[default]
    Permissive,
    /// Only TLS: plaintext connections are closed.
    Strict,
}

/// What a listener's sidecar settings may not be.
pub(super) fn check(l: &ListenerConfig, span: std::ops::Range<usize>, src: &Source) -> Result<(), ConfigError> {
    let problem = match l.transparent {
        None if !l.opaque_ports.is_empty() => Some("opaque_ports needs transparent = \"redirect\" or \"tproxy\""),
        None if l.passthrough_mark.is_some() => Some("passthrough_mark needs transparent = \"redirect\" or \"tproxy\""),
        None if l.peer_tls == PeerTls::Strict || !l.strict_ports.is_empty() => {
            Some("peer_tls and strict_ports need transparent = \"redirect\" or \"tproxy\"")
        }
        None if l.direction.is_some() => Some("direction needs transparent = \"redirect\" or \"tproxy\""),
        Some(_) if l.tls.is_none() && (l.peer_tls == PeerTls::Strict || !l.strict_ports.is_empty()) => {
            Some("peer_tls = \"strict\" and strict_ports need tls (with client_ca): plaintext refused, TLS terminated")
        }
        Some(_) if l.http3 => Some("a transparent listener is TCP only: no http3"),
        Some(_) if l.detect_timeout.is_zero() => Some("detect_timeout must be more than zero"),
        Some(_) if l.opaque_ports.contains(&0) => Some("opaque_ports: 0 is no port"),
        _ => None,
    };
    match problem {
        Some(problem) => Err(src.error_at(span, format!("listener {:?}: {problem}", l.name))),
        None => Ok(()),
    }
}

/// What `[[tls_routes]]` may not be: each needs a unique name, hostnames that are DNS
/// names or `*.` wildcards, a cluster with endpoints reached without TLS of its own (the
/// client's bytes go as they are), and transparent listeners that do not terminate TLS.
pub(super) fn check_tls_routes(config: &Config) -> Result<(), ConfigError> {
    let src = &config.source;
    super::unique_names(src, &config.tls_routes, "tls_route", |r| &r.name)?;
    for route in &config.tls_routes {
        let problem = tls_route_problem(config, route.get_ref());
        if let Some(problem) = problem {
            let name = &route.get_ref().name;
            return Err(src.error_at(route.span(), format!("tls_route {name:?}: {problem}")));
        }
    }
    Ok(())
}

fn tls_route_problem(config: &Config, r: &TlsRouteConfig) -> Option<String> {
    if r.hostnames.is_empty() {
        return Some("hostnames needs at least one name".into());
    }
    if let Some(bad) = r.hostnames.iter().find(|h| !hostname_pattern_ok(h)) {
        return Some(format!(
            "hostnames: {bad:?} is not a DNS name or a wildcard like \"*.example.com\""
        ));
    }
    let Some(cluster) = config
        .clusters
        .iter()
        .map(Spanned::get_ref)
        .find(|c| c.name == r.cluster)
    else {
        let names: Vec<&str> = config.clusters.iter().map(|c| c.get_ref().name.as_str()).collect();
        return Some(format!(
            "cluster {:?} is no cluster (clusters: {})",
            r.cluster,
            list(&names)
        ));
    };
    if cluster.kind == ClusterKind::OriginalDestination {
        return Some(format!(
            "cluster {:?} is an original_destination cluster, where TLS no route names goes anyway",
            r.cluster
        ));
    }
    if cluster.tls.is_some() {
        return Some(format!(
            "cluster {:?} has tls: a TLS route passes the client's own TLS through unchanged",
            r.cluster
        ));
    }
    let transparent: Vec<&ListenerConfig> = config
        .listeners
        .iter()
        .map(Spanned::get_ref)
        .filter(|l| l.transparent.is_some())
        .collect();
    if transparent.is_empty() {
        return Some("there is no transparent listener for it to take connections from".into());
    }
    for name in &r.listeners {
        match config.listeners.iter().map(Spanned::get_ref).find(|l| &l.name == name) {
            None => {
                let names: Vec<&str> = transparent.iter().map(|l| l.name.as_str()).collect();
                return Some(format!(
                    "listeners names {name:?}, which is no listener (transparent listeners: {})",
                    list(&names)
                ));
            }
            Some(l) if l.transparent.is_none() => {
                return Some(format!(
                    "listener {name:?} is not transparent: it sees no original destination"
                ));
            }
            Some(l) if l.tls.is_some() => {
                return Some(format!(
                    "listener {name:?} terminates TLS (tls): its TLS is not passed through"
                ));
            }
            Some(_) => {}
        }
    }
    None
}

/// A DNS name (letters, digits, `-`, dot-separated labels) or `*.` and one.
fn hostname_pattern_ok(pattern: &str) -> bool {
    let name = pattern.strip_prefix("*.").unwrap_or(pattern);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// An address block: `10.1.0.0/16`, `fd00::/64`, or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match text.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (text, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix length is 0 to {max}"))?,
        };
        Ok(Cidr { net, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(net).into(), 32, self.prefix) == masked(u32::from(ip).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(net), 128, self.prefix) == masked(u128::from(ip), 128, self.prefix)
            }
            _ => false,
        }
    }
}

fn masked(bits: u128, width: u8, prefix: u8) -> u128 {
    if prefix == 0 { 0 } else { bits >> (width - prefix) }
}
