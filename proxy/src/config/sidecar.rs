//! Sidecar settings: how a listener receives intercepted connections (`transparent`) and
//! what it does with those that are not HTTP, and the checks on them.

use std::net::IpAddr;

use serde::Deserialize;

use super::{ConfigError, ListenerConfig, Source};

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
