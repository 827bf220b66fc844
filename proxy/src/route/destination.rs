//! A route's conditions on an intercepted connection's original destination: an address
//! or a CIDR block (`destination`), and a port (`destination_port`). A connection that was
//! not intercepted has no original destination and matches no such route.

use std::net::{IpAddr, SocketAddr};

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
