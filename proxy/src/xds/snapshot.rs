//! The resources held, per type, and the whole config built from them. A snapshot is warm
//! when every route configuration its listeners name and every assignment its EDS clusters
//! name has arrived; until then the running config keeps serving. Each route configuration's
//! routes are restricted to the listeners (and filter chains) that name it, so two route
//! configurations never see each other's requests.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use toml::{Table, Value};

use super::Rejected;
use super::cluster::{Endpoints, MappedCluster};
use super::listener::{ChainAction, MappedListener, RouteRef, Shape};
use super::route::Routes;
use super::tls::Resolved;
use super::wasm::WasmFilter;

#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub listeners: BTreeMap<String, MappedListener>,
    pub routes: BTreeMap<String, Routes>,
    pub clusters: BTreeMap<String, MappedCluster>,
    pub assignments: BTreeMap<String, Vec<Value>>,
    /// SDS secrets held, and the names the server has answered for (a name answered but
    /// not held is a secret the server does not have).
    pub secrets: super::secret::Secrets,
    pub sds_answered: BTreeSet<String>,
}

impl Snapshot {
    /// The route configurations the listeners ask RDS for.
    pub fn rds_names(&self) -> BTreeSet<String> {
        self.listeners
            .values()
            .flat_map(|l| l.http())
            .filter_map(|(routes, _)| match routes {
                RouteRef::Rds(n) => Some(n.clone()),
                RouteRef::Inline(..) => None,
            })
            .collect()
    }

    /// The assignments the EDS clusters ask EDS for.
    pub fn eds_names(&self) -> BTreeSet<String> {
        self.clusters
            .values()
            .filter_map(|c| match &c.endpoints {
                Endpoints::Eds(n) => Some(n.clone()),
                Endpoints::Static(_) | Endpoints::Original => None,
            })
            .collect()
    }

    /// The Wasm filters of all listeners, each once: two listeners may run the same filter,
    /// but one name names one filter.
    pub fn wasm_filters(&self) -> Result<Vec<WasmFilter>, Rejected> {
        let mut out: Vec<WasmFilter> = Vec::new();
        for (name, l) in &self.listeners {
            for f in l.http().flat_map(|(_, wasm)| wasm) {
                match out.iter().find(|o| o.name == f.name) {
                    Some(o) if o != f => {
                        return Err(Rejected(format!(
                            "listener {name:?}: Wasm filter {:?} differs from another listener's filter of that name \
                             (a name names one filter)",
                            f.name
                        )));
                    }
                    Some(_) => {}
                    None => out.push(f.clone()),
                }
            }
        }
        Ok(out)
    }

    /// The config text (TOML) this snapshot serves, on top of `base` (the `[xds]` TOML file's
    /// other tables), with `wasm` (each filter and its component's file) run first on the
    /// routes of the listeners that name it; `Ok(None)` while warming.
    pub fn assemble(
        &self,
        base: &Table,
        admin: Option<SocketAddr>,
        wasm: &[(WasmFilter, std::path::PathBuf)],
    ) -> Result<Option<String>, Rejected> {
        if !self.listeners.values().any(|l| l.table.is_some()) {
            return Ok(None);
        }
        let Some(groups) = self.groups()? else {
            return Ok(None);
        };
        let mut retries: BTreeMap<&str, (&str, &Table)> = BTreeMap::new();
        let mut hashes: BTreeMap<&str, (&str, &Table)> = BTreeMap::new();
        for g in &groups {
            let Some(routes) = g.routes else { continue };
            for (per_cluster, what, into) in [
                (&routes.retries, "retry policies", &mut retries),
                (&routes.hash_on, "hash policies", &mut hashes),
            ] {
                for (cluster, t) in per_cluster {
                    match into.get(cluster.as_str()) {
                        Some((other, seen)) if *seen != t => {
                            return Err(Rejected(format!(
                                "route configurations {other:?} and {:?} set different {what} for cluster {cluster:?} \
                                 (Weft sets them per cluster)",
                                g.config
                            )));
                        }
                        _ => drop(into.insert(cluster, (&g.config, t))),
                    }
                }
            }
        }
        let Some(listeners) = self.tls_listeners()? else {
            return Ok(None);
        };
        let mut clusters = Vec::new();
        let mut usable = BTreeSet::new();
        for (name, c) in &self.clusters {
            let mut t = c.table.clone();
            let endpoints = match &c.endpoints {
                Endpoints::Original => None,
                Endpoints::Static(e) => Some(e),
                Endpoints::Eds(n) => match self.assignments.get(n) {
                    Some(e) => Some(e),
                    None => return Ok(None),
                },
            };
            match self.cluster_tls(name, c)? {
                Resolved::Ready(tls) if tls.is_empty() => {}
                Resolved::Ready(tls) => drop(t.insert("tls".into(), Value::Table(tls))),
                Resolved::Warming => return Ok(None),
                Resolved::Missing(_) => continue,
            }
            // An ORIGINAL_DST cluster has none: it sends each request once where its
            // connection was going, so a route's retry or hash policy does not apply.
            if let Some(endpoints) = endpoints {
                // No endpoint that may take traffic: the cluster is left out and its routes
                // answer 503, as Envoy answers for a cluster with no healthy host.
                if endpoints.is_empty() {
                    continue;
                }
                t.insert("endpoints".into(), Value::Array(endpoints.clone()));
                if let Some((_, retry)) = retries.get(name.as_str()) {
                    t.insert("retry".into(), Value::Table((*retry).clone()));
                }
                // Only a hashing cluster takes `hash_on`; a route's hash policy on another is moot.
                if let (Some((_, hash)), true) = (hashes.get(name.as_str()), t.contains_key("hash_on")) {
                    t.insert("hash_on".into(), Value::Table((*hash).clone()));
                }
            }
            usable.insert(name.clone());
            clusters.push(Value::Table(t));
        }
        let mut route_tables = Vec::new();
        for g in &groups {
            let Some(routes) = g.routes else {
                route_tables.push(Value::Table(g.passthrough(&usable)));
                continue;
            };
            for r in &routes.routes {
                let mut t = resolve_clusters(r, &usable, routes.validate_clusters, &self.clusters)?;
                g.restrict(&mut t);
                if !g.wasm.is_empty() {
                    let mut names: Vec<Value> = g.wasm.iter().map(|f| Value::String(f.name.clone())).collect();
                    if let Some(Value::Array(own)) = t.remove("filters") {
                        names.extend(own);
                    }
                    t.insert("filters".into(), Value::Array(names));
                }
                route_tables.push(Value::Table(t));
            }
            if let Some(handed) = &g.handed {
                // Envoy answers 404 for a request the chosen listener has no route for: it
                // does not fall through to a less specific listener's routes.
                let mut t = Table::new();
                t.insert("name".into(), Value::String(format!("{handed}/no-route")));
                let mut m = Table::new();
                m.insert("path_prefix".into(), Value::String("/".into()));
                t.insert("match".into(), Value::Table(m));
                g.restrict(&mut t);
                let mut dr = Table::new();
                dr.insert("status".into(), Value::Integer(404));
                t.insert("direct_response".into(), Value::Table(dr));
                route_tables.push(Value::Table(t));
            }
        }
        let filters = wasm.iter().map(|(f, path)| {
            let mut t = Table::new();
            t.insert("name".into(), Value::String(f.name.clone()));
            t.insert("wasm".into(), Value::String(path.display().to_string()));
            if let Some(c) = &f.config {
                t.insert("config".into(), c.clone());
            }
            Value::Table(t)
        });
        let mut config = base.clone();
        config.remove("xds");
        append(&mut config, "listeners", listeners);
        append(&mut config, "clusters", clusters);
        append(&mut config, "filters", filters);
        append(&mut config, "routes", route_tables);
        if let (Some(admin), false) = (admin, config.contains_key("admin")) {
            let mut a = Table::new();
            a.insert("address".into(), Value::String(admin.to_string()));
            config.insert("admin".into(), Value::Table(a));
        }
        toml::to_string(&config)
            .map(Some)
            .map_err(|e| Rejected(format!("the config does not serialise: {e}")))
    }

    /// The listeners' filter chains as groups of routes, each restricted to the connections
    /// its chain serves, most specific first; `Ok(None)` while a route configuration has not
    /// arrived.
    fn groups(&self) -> Result<Option<Vec<Group<'_>>>, Rejected> {
        // Where a `bind_to_port: false` listener's connections come from.
        let virtuals: Vec<String> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.shape == Shape::Transparent { hands_off: true })
            .map(|(n, _)| n.clone())
            .collect();
        let mut groups: Vec<Group<'_>> = Vec::new();
        for (name, l) in &self.listeners {
            let handed = matches!(l.shape, Shape::Handed(_));
            let takers = if handed { virtuals.clone() } else { vec![name.clone()] };
            if takers.is_empty() {
                // No virtual listener hands it anything.
                continue;
            }
            for c in &l.chains {
                match &c.action {
                    ChainAction::Http { routes, wasm } => {
                        let resolved = match routes {
                            RouteRef::Inline(_, r) => r,
                            RouteRef::Rds(n) => match self.routes.get(n) {
                                Some(r) => r,
                                None => return Ok(None),
                            },
                        };
                        let plain = !handed && c.destination.is_none() && c.destination_port.is_none();
                        // Listeners naming one route configuration share its routes.
                        if plain && let Some(g) = groups.iter_mut().find(|g| g.plain && g.config == routes.name()) {
                            if g.wasm != wasm.as_slice() {
                                return Err(Rejected(format!(
                                    "listeners {:?} and {name:?} name route configuration {:?} with different Wasm \
                                     filters",
                                    g.listeners[0],
                                    routes.name()
                                )));
                            }
                            g.listeners.push(name.clone());
                            continue;
                        }
                        groups.push(Group {
                            listeners: takers.clone(),
                            destination: c.destination.clone(),
                            destination_port: c.destination_port,
                            config: routes.name().to_owned(),
                            routes: Some(resolved),
                            wasm,
                            handed: handed.then(|| name.clone()),
                            plain,
                            everyone: false,
                        });
                    }
                    ChainAction::Tcp(cluster) => {
                        if let Some(mc) = self.clusters.get(cluster)
                            && !matches!(mc.endpoints, Endpoints::Original)
                        {
                            return Err(Rejected(format!(
                                "listener {name:?}: tcp_proxy to cluster {cluster:?}, which is not ORIGINAL_DST, is not \
                                 supported (Weft passes TCP through to the original destination only)"
                            )));
                        }
                        // HTTP on a chain that passes TCP through: forwarded to the original
                        // destination, unless an HTTP chain takes the same connections.
                        let http_too = l.chains.iter().any(|o| {
                            matches!(o.action, ChainAction::Http { .. })
                                && o.destination == c.destination
                                && o.destination_port == c.destination_port
                        });
                        if handed || http_too {
                            continue;
                        }
                        groups.push(Group {
                            listeners: takers.clone(),
                            destination: c.destination.clone(),
                            destination_port: c.destination_port,
                            config: cluster.clone(),
                            routes: None,
                            wasm: &[],
                            handed: None,
                            plain: false,
                            everyone: false,
                        });
                    }
                }
            }
        }
        if let [only] = groups.as_mut_slice() {
            only.everyone = only.plain;
        }
        // Stable: the most specific match first, passthrough after the routes it backs.
        groups.sort_by_key(|g| {
            (
                g.destination.is_none(),
                g.destination_port.is_none(),
                g.routes.is_none(),
            )
        });
        Ok(Some(groups))
    }
}

/// Routes serving one filter chain: its listeners (for a `bind_to_port: false` listener,
/// the virtual listeners that hand it connections) and the destination it matches.
struct Group<'a> {
    listeners: Vec<String>,
    destination: Option<String>,
    destination_port: Option<u16>,
    /// The route configuration's name (for a passthrough chain, its cluster's).
    config: String,
    /// None: a `tcp_proxy` chain, whose HTTP goes to the cluster `config` (passthrough).
    routes: Option<&'a Routes>,
    wasm: &'a [WasmFilter],
    /// The `bind_to_port: false` listener it serves.
    handed: Option<String>,
    /// Serves its listeners' every connection (no destination match).
    plain: bool,
    /// Serves every listener: its routes need not name them (one route configuration for
    /// all, as most gateways have, costs no listener check per route).
    everyone: bool,
}

impl Group<'_> {
    /// Limits a route to the connections this group serves.
    fn restrict(&self, t: &mut Table) {
        if let Some(handed) = &self.handed
            && let Some(Value::String(name)) = t.get_mut("name")
            && !name.starts_with(handed.as_str())
        {
            *name = format!("{handed}/{name}");
        }
        let m = t.entry("match").or_insert_with(|| Value::Table(Table::new()));
        if let Value::Table(m) = m {
            if !self.everyone {
                m.insert(
                    "listeners".into(),
                    Value::Array(self.listeners.iter().cloned().map(Value::String).collect()),
                );
            }
            if let Some(d) = &self.destination {
                m.insert("destination".into(), Value::String(d.clone()));
            }
            if let Some(p) = self.destination_port {
                m.insert("destination_port".into(), Value::Integer(i64::from(p)));
            }
        }
    }

    /// The route of a passthrough chain: HTTP to its ORIGINAL_DST cluster.
    fn passthrough(&self, usable: &BTreeSet<String>) -> Table {
        let mut t = Table::new();
        t.insert(
            "name".into(),
            Value::String(format!("{}/passthrough", self.listeners.join(","))),
        );
        let mut m = Table::new();
        m.insert("path_prefix".into(), Value::String("/".into()));
        t.insert("match".into(), Value::Table(m));
        self.restrict(&mut t);
        if usable.contains(&self.config) {
            t.insert("cluster".into(), Value::String(self.config.clone()));
        } else {
            let mut dr = Table::new();
            dr.insert("status".into(), Value::Integer(503));
            dr.insert("body".into(), Value::String("no healthy upstream\n".into()));
            t.insert("direct_response".into(), Value::Table(dr));
        }
        t
    }
}

impl Snapshot {
    /// The listeners' tables with their `tls`; a listener whose secret the server does not
    /// have is left out (not bound), as Envoy leaves it warming. None while a secret is
    /// awaited, or when no listener is left.
    fn tls_listeners(&self) -> Result<Option<Vec<Value>>, Rejected> {
        let mut out = Vec::new();
        for (name, l) in &self.listeners {
            // A `bind_to_port: false` listener has no table: it binds nothing.
            let Some(mut t) = l.table.clone() else { continue };
            if let Some(tls) = &l.tls {
                match super::tls::listener_tls(tls, self, &format!("listener {name:?}"))? {
                    Resolved::Ready(tls) => drop(t.insert("tls".into(), Value::Table(tls))),
                    Resolved::Warming => return Ok(None),
                    Resolved::Missing(secret) => {
                        tracing::warn!(listener = %name, secret = %secret, "xDS: the server does not have the listener's secret: not bound");
                        continue;
                    }
                }
            }
            out.push(Value::Table(t));
        }
        Ok(Some(out).filter(|o| !o.is_empty()))
    }

    /// A cluster's `tls` table (empty when plaintext); Missing leaves the cluster out, so its
    /// routes answer 503.
    fn cluster_tls(&self, name: &str, c: &MappedCluster) -> Result<Resolved, Rejected> {
        let Some(tls) = &c.tls else {
            return Ok(Resolved::Ready(Table::new()));
        };
        let resolved = super::tls::cluster_tls(tls, self, &format!("cluster {name:?}"))?;
        if let Resolved::Missing(secret) = &resolved {
            tracing::warn!(cluster = %name, secret = %secret, "xDS: the server does not have the cluster's secret: left out");
        }
        Ok(resolved)
    }
}

fn append(config: &mut Table, key: &str, items: impl IntoIterator<Item = Value>) {
    let entry = config.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if let Value::Array(list) = entry {
        list.extend(items);
    }
}

/// A route to a cluster CDS does not have (or that has no usable endpoint) answers 503 like
/// Envoy's `cluster_not_found_response_code`, unless `validate_clusters` makes it a NACK.
fn resolve_clusters(
    r: &Table,
    usable: &BTreeSet<String>,
    validate: bool,
    known: &BTreeMap<String, MappedCluster>,
) -> Result<Table, Rejected> {
    let mut t = r.clone();
    let route = r.get("name").and_then(Value::as_str).unwrap_or("?");
    let mut missing = Vec::new();
    if let Some(c) = r.get("cluster").and_then(Value::as_str)
        && !usable.contains(c)
    {
        missing.push(c.to_owned());
    }
    if let Some(Value::Array(split)) = t.get_mut("split") {
        split.retain(|s| {
            let c = s.get("cluster").and_then(Value::as_str).unwrap_or("");
            let ok = usable.contains(c);
            if !ok {
                missing.push(c.to_owned());
            }
            ok
        });
        if split.is_empty() {
            t.remove("split");
        }
    }
    if let Some(Value::Array(mirrors)) = t.get_mut("mirror") {
        mirrors.retain(|m| {
            m.get("cluster")
                .and_then(Value::as_str)
                .is_some_and(|c| usable.contains(c))
        });
        if mirrors.is_empty() {
            t.remove("mirror");
        }
    }
    if validate && let Some(c) = missing.iter().find(|c| !known.contains_key(*c)) {
        return Err(Rejected(format!(
            "route {route:?} names cluster {c:?}, which CDS did not send (validate_clusters is on)"
        )));
    }
    let was_forwarding = r.contains_key("cluster") || r.contains_key("split");
    let cluster_ok = t
        .get("cluster")
        .and_then(Value::as_str)
        .is_some_and(|c| usable.contains(c));
    if was_forwarding && !cluster_ok && !t.contains_key("split") {
        for key in ["cluster", "split", "rewrite", "host_rewrite", "timeout", "mirror"] {
            t.remove(key);
        }
        let mut dr = Table::new();
        dr.insert("status".into(), Value::Integer(503));
        dr.insert("body".into(), Value::String("no healthy upstream\n".into()));
        t.insert("direct_response".into(), Value::Table(dr));
    }
    Ok(t)
}
