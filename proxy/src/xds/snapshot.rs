//! The resources held, per type, and the whole config built from them. A snapshot is warm
//! when every route configuration its listeners name and every assignment its EDS clusters
//! name has arrived; until then the running config keeps serving.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;

use toml::{Table, Value};

use super::Rejected;
use super::cluster::{Endpoints, MappedCluster};
use super::listener::{MappedListener, RouteRef};
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
            .filter_map(|l| match &l.routes {
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
                Endpoints::Static(_) => None,
            })
            .collect()
    }

    /// The Wasm filters of the listeners, which must agree (the routes they run on are shared).
    pub fn wasm_filters(&self) -> Result<Vec<WasmFilter>, Rejected> {
        let mut listeners = self.listeners.iter();
        let Some((first_name, first)) = listeners.next() else {
            return Ok(Vec::new());
        };
        if let Some((other, _)) = listeners.find(|(_, l)| l.wasm != first.wasm) {
            return Err(Rejected(format!(
                "listeners {first_name:?} and {other:?} have different Wasm filters: Weft's routes are \
                 shared by all its listeners, so all must have the same ones"
            )));
        }
        Ok(first.wasm.clone())
    }

    /// The config text (TOML) this snapshot serves, on top of `base` (the `[xds]` TOML file's
    /// other tables), with `wasm` (each filter and its component's file) run first on every
    /// route; `Ok(None)` while warming.
    pub fn assemble(
        &self,
        base: &Table,
        admin: Option<SocketAddr>,
        wasm: &[(WasmFilter, std::path::PathBuf)],
    ) -> Result<Option<String>, Rejected> {
        if self.listeners.is_empty() {
            return Ok(None);
        }
        let mut names = self
            .listeners
            .values()
            .map(|l| l.routes.name())
            .collect::<BTreeSet<_>>();
        if names.len() > 1 {
            let first = names.pop_first().unwrap_or_default();
            return Err(Rejected(format!(
                "listeners name different route configurations ({first:?}, {:?}…): Weft's routes are shared \
                 by all its listeners, so all must name the same one",
                names.pop_first().unwrap_or_default()
            )));
        }
        let Some(first) = self.listeners.values().next() else {
            return Ok(None);
        };
        let routes = match &first.routes {
            RouteRef::Inline(_, r) => r,
            RouteRef::Rds(name) => match self.routes.get(name) {
                Some(r) => r,
                None => return Ok(None),
            },
        };
        let Some(listeners) = self.tls_listeners()? else {
            return Ok(None);
        };
        let mut clusters = Vec::new();
        let mut usable = BTreeSet::new();
        for (name, c) in &self.clusters {
            let endpoints = match &c.endpoints {
                Endpoints::Static(e) => e,
                Endpoints::Eds(n) => match self.assignments.get(n) {
                    Some(e) => e,
                    None => return Ok(None),
                },
            };
            // No endpoint that may take traffic: the cluster is left out and its routes answer
            // 503, as Envoy answers for a cluster with no healthy host.
            if endpoints.is_empty() {
                continue;
            }
            let mut t = c.table.clone();
            match self.cluster_tls(name, c)? {
                Resolved::Ready(tls) if tls.is_empty() => {}
                Resolved::Ready(tls) => drop(t.insert("tls".into(), Value::Table(tls))),
                Resolved::Warming => return Ok(None),
                Resolved::Missing(_) => continue,
            }
            t.insert("endpoints".into(), Value::Array(endpoints.clone()));
            if let Some(retry) = routes.retries.get(name) {
                t.insert("retry".into(), Value::Table(retry.clone()));
            }
            // Only a hashing cluster takes `hash_on`; a route's hash policy on another is moot.
            if let (Some(hash), true) = (routes.hash_on.get(name), t.contains_key("hash_on")) {
                t.insert("hash_on".into(), Value::Table(hash.clone()));
            }
            usable.insert(name.clone());
            clusters.push(Value::Table(t));
        }
        let mut route_tables = Vec::new();
        for r in &routes.routes {
            let mut t = resolve_clusters(r, &usable, routes.validate_clusters, &self.clusters)?;
            if !wasm.is_empty() {
                let mut names: Vec<Value> = wasm.iter().map(|(f, _)| Value::String(f.name.clone())).collect();
                if let Some(Value::Array(own)) = t.remove("filters") {
                    names.extend(own);
                }
                t.insert("filters".into(), Value::Array(names));
            }
            route_tables.push(Value::Table(t));
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
}

impl Snapshot {
    /// The listeners' tables with their `tls`; a listener whose secret the server does not
    /// have is left out (not bound), as Envoy leaves it warming. None while a secret is
    /// awaited, or when no listener is left.
    fn tls_listeners(&self) -> Result<Option<Vec<Value>>, Rejected> {
        let mut out = Vec::new();
        for (name, l) in &self.listeners {
            let mut t = l.table.clone();
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
