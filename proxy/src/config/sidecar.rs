//! Sidecar settings: how a listener receives intercepted connections (`transparent`) and
//! what it does with those that are not HTTP, and the checks on them.

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

/// What a listener's sidecar settings may not be.
pub(super) fn check(l: &ListenerConfig, span: std::ops::Range<usize>, src: &Source) -> Result<(), ConfigError> {
    let problem = match l.transparent {
        None if !l.opaque_ports.is_empty() => Some("opaque_ports needs transparent = \"redirect\" or \"tproxy\""),
        None if l.passthrough_mark.is_some() => Some("passthrough_mark needs transparent = \"redirect\" or \"tproxy\""),
        Some(_) if l.tls.is_some() => Some("a transparent listener takes the client's bytes as they come: no tls"),
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
