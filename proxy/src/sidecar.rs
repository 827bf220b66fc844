//! `weft sidecar rules`: the nftables ruleset that sends an application's traffic through
//! its sidecar, in one table of its own (`table inet weft`) so that applying it again or
//! removing it touches nothing else. Outbound: locally made TCP connections are
//! redirected to the outbound port (`nat output`), except the proxy's own (its socket
//! mark, its uid), loopback and excluded ports. Inbound: TCP connections arriving from
//! outside are redirected (`nat prerouting`) or, with `tproxy`, handed to the inbound
//! port unchanged (`tproxy` in `filter prerouting`, plus the policy route that makes the
//! kernel deliver them locally). Istio's `istio-iptables` and linkerd's `proxy-init` do
//! the same with iptables.

use std::fmt::Write;
use std::process::{Command, Stdio};

use crate::config::Transparent;

/// The table every rule lives in.
pub const TABLE: &str = "weft";
/// The policy routing table and its rule priority for `tproxy` (delivers marked packets
/// locally).
const TPROXY_ROUTE_TABLE: u32 = 133;

/// What the rules redirect and what they leave alone.
#[derive(Debug, Clone)]
pub struct Rules {
    pub inbound_port: u16,
    pub outbound_port: u16,
    /// How inbound connections reach the inbound port.
    pub inbound_mode: Transparent,
    /// The uid the proxy runs as: its connections are never redirected.
    pub proxy_uid: Option<u32>,
    /// The `SO_MARK` the proxy puts on its upstream sockets: never redirected.
    pub mark: u32,
    /// The mark `tproxy` gives intercepted inbound packets (routed locally).
    pub tproxy_mark: u32,
    /// Destination ports never redirected, either way (the admin port, ssh...).
    pub exclude_ports: Vec<u16>,
    /// Inbound ports never redirected.
    pub exclude_inbound_ports: Vec<u16>,
    /// Outbound: only these destinations are redirected (all when empty).
    pub include_cidrs: Vec<String>,
}

impl Rules {
    /// Checks what cannot be told from the types.
    pub fn check(&self) -> Result<(), String> {
        if self.inbound_port == 0 || self.outbound_port == 0 {
            return Err("--inbound-port and --outbound-port must be ports (1-65535)".into());
        }
        if self.inbound_port == self.outbound_port {
            return Err("--inbound-port and --outbound-port must differ".into());
        }
        if self.mark == 0 || self.tproxy_mark == 0 || self.mark == self.tproxy_mark {
            return Err("--mark and --tproxy-mark must be distinct and not 0 (0 is every unmarked packet)".into());
        }
        for cidr in &self.include_cidrs {
            crate::config::Cidr::parse(cidr).map_err(|e| format!("--include-cidrs: {e}"))?;
        }
        Ok(())
    }

    /// The ruleset, for `nft -f`: the table is created empty first, then deleted and
    /// written whole, so applying it twice leaves one copy.
    pub fn nft(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# weft sidecar rules: outbound -> :{}, inbound ({}) -> :{}",
            self.outbound_port,
            self.inbound_mode.name(),
            self.inbound_port
        );
        let _ = writeln!(out, "table inet {TABLE}");
        let _ = writeln!(out, "delete table inet {TABLE}");
        let _ = writeln!(out, "table inet {TABLE} {{");

        // Outbound: what the application connects to.
        out.push_str("    chain outbound {\n        type nat hook output priority -100; policy accept;\n");
        let _ = writeln!(out, "        meta mark {:#x} return", self.mark);
        if let Some(uid) = self.proxy_uid {
            let _ = writeln!(out, "        meta skuid {uid} return");
        }
        out.push_str("        oifname \"lo\" ip daddr 127.0.0.0/8 return\n");
        out.push_str("        oifname \"lo\" ip6 daddr ::1 return\n");
        let mut ports = self.exclude_ports.clone();
        ports.extend([self.inbound_port, self.outbound_port]);
        let _ = writeln!(out, "        tcp dport {} return", set(&ports));
        let (v4, v6): (Vec<&String>, Vec<&String>) = self.include_cidrs.iter().partition(|c| !c.contains(':'));
        if self.include_cidrs.is_empty() {
            let _ = writeln!(out, "        meta l4proto tcp redirect to :{}", self.outbound_port);
        } else {
            if !v4.is_empty() {
                let _ = writeln!(
                    out,
                    "        ip daddr {} meta l4proto tcp redirect to :{}",
                    set(&v4),
                    self.outbound_port
                );
            }
            if !v6.is_empty() {
                let _ = writeln!(
                    out,
                    "        ip6 daddr {} meta l4proto tcp redirect to :{}",
                    set(&v6),
                    self.outbound_port
                );
            }
        }
        out.push_str("    }\n");

        // Inbound: what comes to the application from outside.
        let mut skip = self.exclude_ports.clone();
        skip.extend(&self.exclude_inbound_ports);
        skip.extend([self.inbound_port, self.outbound_port]);
        match self.inbound_mode {
            Transparent::Redirect => {
                out.push_str("    chain inbound {\n        type nat hook prerouting priority dstnat; policy accept;\n");
                out.push_str("        iifname \"lo\" return\n");
                let _ = writeln!(out, "        tcp dport {} return", set(&skip));
                let _ = writeln!(out, "        meta l4proto tcp redirect to :{}", self.inbound_port);
                out.push_str("    }\n");
            }
            Transparent::Tproxy => {
                out.push_str(
                    "    chain inbound {\n        type filter hook prerouting priority mangle; policy accept;\n",
                );
                out.push_str("        iifname \"lo\" return\n");
                let _ = writeln!(out, "        tcp dport {} return", set(&skip));
                // Answers to connections made from here are not new connections to take.
                out.push_str("        ct direction reply return\n");
                // Packets of connections the proxy already holds go to its socket as they are.
                let _ = writeln!(
                    out,
                    "        meta l4proto tcp socket transparent 1 meta mark set {:#x} accept",
                    self.tproxy_mark
                );
                let _ = writeln!(
                    out,
                    "        meta l4proto tcp meta nfproto ipv4 tproxy ip to :{} meta mark set {:#x} accept",
                    self.inbound_port, self.tproxy_mark
                );
                let _ = writeln!(
                    out,
                    "        meta l4proto tcp meta nfproto ipv6 tproxy ip6 to :{} meta mark set {:#x} accept",
                    self.inbound_port, self.tproxy_mark
                );
                out.push_str("    }\n");
            }
        }
        out.push_str("}\n");
        out
    }

    /// The `ip` commands `tproxy` needs besides nftables: packets with the tproxy mark are
    /// routed to the local host (IPv4 and IPv6). Empty under `redirect`.
    pub fn routes(&self) -> Vec<Vec<String>> {
        if self.inbound_mode != Transparent::Tproxy {
            return Vec::new();
        }
        let table = TPROXY_ROUTE_TABLE.to_string();
        let mark = format!("{:#x}", self.tproxy_mark);
        let mut out = Vec::new();
        for (family, all) in [("-4", "0.0.0.0/0"), ("-6", "::/0")] {
            out.push(args(&[family, "rule", "add", "fwmark", &mark, "lookup", &table]));
            out.push(args(&[
                family, "route", "replace", "local", all, "dev", "lo", "table", &table,
            ]));
        }
        out
    }
}

fn args(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// An nftables set of values: `{ 1, 2 }`.
fn set<T: std::fmt::Display>(items: &[T]) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    format!("{{ {} }}", items.join(", "))
}

/// Applies `rules` in the current network namespace: `nft -f -` with the ruleset, then
/// the policy routes `tproxy` needs.
pub fn apply(rules: &Rules) -> anyhow::Result<()> {
    run_nft(&rules.nft())?;
    for route in rules.routes() {
        // A rule already there (applied before) is no error: `ip rule add` has no replace.
        let status = Command::new("ip").args(&route).stderr(Stdio::null()).status();
        match status {
            Ok(s) if s.success() => {}
            Ok(_) if route.get(1).is_some_and(|r| r == "rule") => {}
            Ok(s) => anyhow::bail!("ip {}: {s}", route.join(" ")),
            Err(e) => anyhow::bail!("cannot run ip (iproute2): {e}"),
        }
    }
    Ok(())
}

/// Removes the table and the policy routes, whichever mode applied them.
pub fn remove() -> anyhow::Result<()> {
    run_nft(&format!("table inet {TABLE}\ndelete table inet {TABLE}\n"))?;
    let table = TPROXY_ROUTE_TABLE.to_string();
    for family in ["-4", "-6"] {
        // Each `ip rule del` removes one rule; none left is the goal.
        while Command::new("ip")
            .args([family, "rule", "del", "lookup", &table])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
        {}
        let _ = Command::new("ip")
            .args([family, "route", "flush", "table", &table])
            .stderr(Stdio::null())
            .status();
    }
    Ok(())
}

fn run_nft(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run nft (install nftables): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(text.as_bytes())?;
    }
    let status = child.wait()?;
    anyhow::ensure!(status.success(), "nft -f refused the ruleset ({status})");
    Ok(())
}

#[cfg(test)]
mod tests;
