//! Where a cluster's endpoints come from: addresses as written, names resolved on the
//! runtime's resolver (every address a name has, again every `dns_refresh`), and an
//! endpoints file re-read when it changes. A refresh that fails or finds nothing keeps
//! the endpoints serving.

use std::net::SocketAddr;
use std::ops::Range;
use std::path::PathBuf;
use std::sync::Weak;
use std::time::{Duration, Instant, SystemTime};

use super::cluster::Cluster;
use crate::config::{ClusterConfig, ConfigError, MAX_WEIGHT, Source, split_host_port};

/// How often an endpoints file is looked at for changes.
const FILE_POLL: Duration = Duration::from_secs(1);

/// One endpoint as written: an address, or a name to resolve.
#[derive(Clone, Debug)]
enum Target {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

/// A cluster's endpoint sources.
pub struct Targets {
    written: Vec<(Target, u32, Range<usize>)>,
    file: Option<(PathBuf, Range<usize>)>,
    dns_refresh: Duration,
}

type Resolved = Vec<(SocketAddr, u32)>;

impl Targets {
    pub fn from_config(config: &ClusterConfig, src: &Source) -> Result<Targets, ConfigError> {
        let mut written = Vec::with_capacity(config.endpoints.len());
        for e in &config.endpoints {
            let endpoint = e.get_ref();
            written.push((
                parse(endpoint.address()).ok_or_else(|| {
                    src.error_at(e.span(), format!("endpoint {:?} is not host:port", endpoint.address()))
                })?,
                endpoint.weight(),
                e.span(),
            ));
        }
        Ok(Targets {
            written,
            file: config.endpoints_file.as_ref().map(|f| (f.get_ref().clone(), f.span())),
            dns_refresh: config.dns_refresh,
        })
    }

    /// Whether the endpoints can change while the version serves.
    pub fn is_dynamic(&self) -> bool {
        self.file.is_some() || self.has_names()
    }

    fn has_names(&self) -> bool {
        self.written.iter().any(|(t, ..)| matches!(t, Target::Name { .. }))
    }

    /// Every endpoint address now, with its weight; on failure, the span at fault.
    pub async fn resolve(&self) -> Result<Resolved, (Option<Range<usize>>, String)> {
        let mut out = Vec::new();
        for (target, weight, span) in &self.written {
            for addr in resolve(target).await.map_err(|e| (Some(span.clone()), e))? {
                push(&mut out, addr, *weight);
            }
        }
        if let Some((path, span)) = &self.file {
            let listed = read_file(path).await.map_err(|e| (Some(span.clone()), e))?;
            for (target, weight) in listed {
                for addr in resolve(&target).await.map_err(|e| (Some(span.clone()), e))? {
                    push(&mut out, addr, weight);
                }
            }
        }
        if out.is_empty() {
            return Err((None, "no endpoints (the endpoints file lists none)".into()));
        }
        Ok(out)
    }
}

fn push(out: &mut Resolved, addr: SocketAddr, weight: u32) {
    if !out.iter().any(|(a, _)| *a == addr) {
        out.push((addr, weight));
    }
}

fn parse(text: &str) -> Option<Target> {
    if let Ok(addr) = text.parse() {
        return Some(Target::Addr(addr));
    }
    let (host, port) = split_host_port(text)?;
    Some(Target::Name {
        host: host.to_owned(),
        port,
    })
}

async fn resolve(target: &Target) -> Result<Vec<SocketAddr>, String> {
    match target {
        Target::Addr(addr) => Ok(vec![*addr]),
        Target::Name { host, port } => {
            let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), *port))
                .await
                .map_err(|e| format!("cannot resolve {host:?}: {e}"))?
                .collect();
            if addrs.is_empty() {
                return Err(format!("{host:?} resolves to no address"));
            }
            Ok(addrs)
        }
    }
}

/// An endpoints file: one `host:port` or `host:port weight` a line; `#` starts a comment.
async fn read_file(path: &PathBuf) -> Result<Vec<(Target, u32)>, String> {
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| format!("endpoints_file {}: {e}", path.display()))?;
    parse_file(&text).map_err(|(line, e)| format!("endpoints_file {}:{line}: {e}", path.display()))
}

fn parse_file(text: &str) -> Result<Vec<(Target, u32)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let mut words = line.split_whitespace();
        let address = words.next().unwrap_or("");
        let target = parse(address).ok_or_else(|| (i + 1, format!("{address:?} is not host:port")))?;
        let weight = match words.next() {
            None => 1,
            Some(w) => w
                .parse()
                .ok()
                .filter(|w| (1..=MAX_WEIGHT).contains(w))
                .ok_or_else(|| (i + 1, format!("weight {w:?} is not between 1 and {MAX_WEIGHT}")))?,
        };
        if words.next().is_some() {
            return Err((i + 1, "expected `host:port [weight]`".into()));
        }
        out.push((target, weight));
    }
    Ok(out)
}

/// When a file last changed, as far as polling can tell.
fn stamp(path: &PathBuf) -> Option<(SystemTime, u64)> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.modified().ok()?, meta.len()))
}

/// Re-resolves names every `dns_refresh` and re-reads the endpoints file when it
/// changes, swapping the cluster's endpoints when the set differs, until the cluster is
/// dropped. Endpoints that stay keep their connections and health.
pub async fn refresh(cluster: Weak<Cluster>, targets: Targets, mut current: Resolved) {
    let tick = if targets.file.is_some() {
        FILE_POLL.min(targets.dns_refresh)
    } else {
        targets.dns_refresh
    };
    let mut file_stamp = targets.file.as_ref().and_then(|(p, _)| stamp(p));
    let mut resolved_at = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let names_due = targets.has_names() && resolved_at.elapsed() >= targets.dns_refresh;
        let new_stamp = targets.file.as_ref().and_then(|(p, _)| stamp(p));
        if !names_due && new_stamp == file_stamp {
            if cluster.strong_count() == 0 {
                return;
            }
            continue;
        }
        let Some(name) = cluster.upgrade().map(|c| c.name.clone()) else {
            return;
        };
        resolved_at = Instant::now();
        file_stamp = new_stamp;
        let fresh = match targets.resolve().await {
            Ok(fresh) => fresh,
            Err((_, e)) => {
                tracing::warn!(cluster = %name, error = %e, "refreshing endpoints failed; keeping the current ones");
                continue;
            }
        };
        if fresh == current {
            continue;
        }
        let Some(live) = cluster.upgrade() else { return };
        let hosts = live.hosts_for(&fresh, &live.endpoints_now());
        live.set_hosts(hosts);
        tracing::info!(cluster = %name, endpoints = fresh.len(), "cluster endpoints changed");
        current = fresh;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_files_take_weights_and_comments_and_name_bad_lines() {
        let listed = parse_file("# canaries\n127.0.0.1:80\n\nlocalhost:81 5  # heavier\n").expect("valid");
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[1].1, 5);
        assert_eq!(parse_file("127.0.0.1:80\nnot an address\n").expect_err("invalid").0, 2);
        assert_eq!(parse_file("127.0.0.1:80 0\n").expect_err("invalid").0, 1);
    }
}
