//! What a config version routes of intercepted connections before any HTTP: TLS that is
//! not terminated, by its ClientHello's SNI (`[[tls_routes]]`, the Gateway API's TLSRoute;
//! `listen::sni` reads the ClientHello), and the original destination ports the routes
//! name (the only ports that become metric labels). Built with the version, read by
//! `listen::transparent`.

use std::sync::Arc;

use crate::config::{Config, ConfigError, TlsRouteConfig};
use crate::upstream::{Cluster, Clusters};

/// What a config version tells its transparent listeners: the TLS routes, and the
/// original destination ports its routes name (which become destination labels).
#[derive(Default)]
pub struct Routing {
    pub tls: TlsRoutes,
    /// Sorted: every route's `destination_port`.
    ports: Box<[u16]>,
}

impl Routing {
    /// Whether a route names `port` as its `destination_port` (a bounded label, then).
    pub fn names_port(&self, port: u16) -> bool {
        self.ports.binary_search(&port).is_ok()
    }

    pub fn build(config: &Config, clusters: &Clusters) -> Result<Routing, ConfigError> {
        let mut ports: Vec<u16> = config
            .routes
            .iter()
            .filter_map(|r| r.get_ref().matches.destination_port)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        Ok(Routing {
            tls: TlsRoutes::build(&config.tls_routes, clusters, &config.source)?,
            ports: ports.into(),
        })
    }
}

/// One TLS route, built.
pub struct TlsRoute {
    pub name: Arc<str>,
    listeners: Box<[Box<str>]>,
    hostnames: Hostnames,
    pub cluster: Arc<Cluster>,
}

impl TlsRoute {
    fn takes(&self, listener: &str) -> bool {
        self.listeners.is_empty() || self.listeners.iter().any(|l| &**l == listener)
    }
}

/// A route's `hostnames`: exact names (lowercase), and `*.example.com` as `.example.com`.
struct Hostnames {
    exact: Box<[Box<str>]>,
    suffixes: Box<[Box<str>]>,
}

impl Hostnames {
    fn new(patterns: &[String]) -> Hostnames {
        let (suffixes, exact): (Vec<&String>, Vec<&String>) = patterns.iter().partition(|h| h.starts_with("*."));
        Hostnames {
            exact: exact.iter().map(|h| h.to_ascii_lowercase().into()).collect(),
            suffixes: suffixes.iter().map(|h| h[1..].to_ascii_lowercase().into()).collect(),
        }
    }

    fn names(&self, sni: &str) -> bool {
        self.exact.iter().any(|e| sni.eq_ignore_ascii_case(e))
            || self.suffixes.iter().any(|s| {
                sni.len() > s.len() && sni.as_bytes()[sni.len() - s.len()..].eq_ignore_ascii_case(s.as_bytes())
            })
    }
}

/// A config version's TLS routes, in config order: the first that names the SNI wins.
#[derive(Default)]
pub struct TlsRoutes {
    routes: Vec<TlsRoute>,
}

impl TlsRoutes {
    pub fn build(
        configs: &[toml::Spanned<TlsRouteConfig>],
        clusters: &Clusters,
        src: &crate::config::Source,
    ) -> Result<TlsRoutes, ConfigError> {
        let mut routes = Vec::with_capacity(configs.len());
        for spanned in configs {
            let r = spanned.get_ref();
            let cluster = clusters
                .get(r.cluster.as_str())
                .cloned()
                .ok_or_else(|| src.error_at(spanned.span(), format!("unknown cluster {:?}", r.cluster)))?;
            routes.push(TlsRoute {
                name: r.name.as_str().into(),
                listeners: r.listeners.iter().map(|l| l.as_str().into()).collect(),
                hostnames: Hostnames::new(&r.hostnames),
                cluster,
            });
        }
        Ok(TlsRoutes { routes })
    }

    /// Whether any route takes `listener`'s connections: only then is a ClientHello read.
    pub fn any_for(&self, listener: &str) -> bool {
        self.routes.iter().any(|r| r.takes(listener))
    }

    /// The route of `listener` that names `sni`.
    pub fn find(&self, listener: &str, sni: &str) -> Option<&TlsRoute> {
        self.routes.iter().find(|r| r.takes(listener) && r.hostnames.names(sni))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_match_exact_names_and_wildcard_subdomains() {
        let r = Hostnames::new(&["api.example.com".into(), "*.shop.test".into()]);
        assert!(r.names("api.example.com"));
        assert!(r.names("API.Example.com"), "names are case-insensitive");
        assert!(!r.names("www.api.example.com"));
        assert!(r.names("orders.shop.test"));
        assert!(r.names("a.b.shop.test"), "one label or more");
        assert!(!r.names("shop.test"), "the wildcard needs a label");
        assert!(!r.names("evilshop.test"));
    }
}
