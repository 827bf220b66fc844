//! A route's conditions on an intercepted connection's original destination: an address
//! or a CIDR block (`destination`), and a port (`destination_port`). A connection that was
//! not intercepted has no original destination and matches no such route.

use std::net::SocketAddr;

pub use crate::config::Cidr;

/// The conditions on the original destination of one route.
#[derive(Debug, Clone, Default)]
pub struct DestinationMatch {
    pub cidr: Option<Cidr>,
    pub port: Option<u16>,
}

impl DestinationMatch {
    pub fn is_empty(&self) -> bool {
        self.cidr.is_none() && self.port.is_none()
    }

    pub fn matches(&self, dst: Option<SocketAddr>) -> bool {
        if self.is_empty() {
            return true;
        }
        dst.is_some_and(|dst| {
            self.cidr.is_none_or(|c| c.contains(dst.ip())) && self.port.is_none_or(|p| p == dst.port())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_contain_their_addresses_only() {
        let block = Cidr::parse("10.1.0.0/16").expect("a block");
        assert!(block.contains("10.1.200.3".parse().expect("an address")));
        assert!(!block.contains("10.2.0.1".parse().expect("an address")));
        assert!(
            !block.contains("::ffff:10.1.0.1".parse().expect("an address")),
            "families do not mix"
        );
        let one = Cidr::parse("fd00::2").expect("an address");
        assert!(one.contains("fd00::2".parse().expect("an address")));
        assert!(!one.contains("fd00::3".parse().expect("an address")));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .expect("all")
                .contains("192.0.2.1".parse().expect("an address"))
        );
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("orders").is_err());
    }

    #[test]
    fn a_connection_not_intercepted_matches_no_destination_condition() {
        let m = DestinationMatch {
            cidr: None,
            port: Some(8080),
        };
        assert!(!m.matches(None));
        assert!(m.matches(Some("10.0.0.2:8080".parse().expect("an address"))));
        assert!(!m.matches(Some("10.0.0.2:8081".parse().expect("an address"))));
        assert!(DestinationMatch::default().matches(None));
    }
}
