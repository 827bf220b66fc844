//! What the admin API and the audit log show of a version: its routes and clusters (no
//! secrets), and its plugins' content hashes.

use serde_json::{Value, json};

use super::Version;
use crate::config::Config;
use crate::route::Route;

/// Routes and clusters as the admin API shows them (no secrets: names, addresses,
/// timeouts; the match conditions as written).
pub(super) fn view(config: &Config, routes: &[Route]) -> Value {
    let routes: Vec<Value> = routes
        .iter()
        .zip(&config.routes)
        .map(|(route, spanned)| {
            let r = spanned.get_ref();
            json!({
                "name": &*route.name,
                "cluster": route.cluster.as_ref().map(|c| &*c.name),
                "filters": r.filters.iter().map(|f| f.get_ref()).collect::<Vec<_>>(),
                "timeout_ms": route.timeout.as_millis() as u64,
                "match": match_view(&r.matches),
            })
        })
        .collect();
    let clusters: Vec<Value> = config
        .clusters
        .iter()
        .map(|spanned| {
            let c = spanned.get_ref();
            json!({
                "name": c.name,
                "protocol": format!("{:?}", c.protocol).to_ascii_lowercase(),
                "tls": c.tls.is_some(),
                "connect_timeout_ms": c.connect_timeout.as_millis() as u64,
                "lb": c.lb().name(),
                // Endpoints as written; their health is weft_upstream_endpoint_healthy.
                "endpoints": c
                    .endpoints
                    .iter()
                    .map(|e| json!({"address": e.get_ref().address(), "weight": e.get_ref().weight()}))
                    .collect::<Vec<_>>(),
                "endpoints_file": c.endpoints_file.as_ref().map(|f| f.get_ref().display().to_string()),
            })
        })
        .collect();
    json!({ "routes": routes, "clusters": clusters })
}

/// A route's conditions; header, query and identity conditions by name only, since
/// their values may be credentials a route matches on.
fn match_view(m: &crate::config::MatchConfig) -> Value {
    json!({
        "host": m.host,
        "path_prefix": m.path_prefix,
        "path_exact": m.path_exact,
        "path_regex": m.path_regex.as_ref().map(|r| r.get_ref()),
        "methods": m.methods,
        "headers": m.headers.iter().map(|h| &h.name).collect::<Vec<_>>(),
        "query": m.query.iter().map(|q| &q.name).collect::<Vec<_>>(),
        "identity": m.identity.is_some(),
    })
}

/// (filter, sha256, WIT version) of every plugin of a version, for the info metric.
pub(super) fn plugin_labels(runtime: &Version) -> Vec<(&str, &str, &str)> {
    runtime
        .plugins
        .iter()
        .map(|(name, p)| (name.as_str(), p.sha256.as_str(), p.wit.as_str()))
        .collect()
}

/// The plugins of `new`, each with the hash it had in `old` when that differs (or the
/// filter is new), so an audit record shows what a reload changed.
pub(super) fn plugin_changes(old: Option<&Version>, new: &Version) -> Value {
    let before = |name: &str| {
        old.and_then(|o| o.plugins.iter().find(|(n, _)| n == name))
            .map(|(_, p)| p.sha256.clone())
    };
    new.plugins
        .iter()
        .map(|(name, p)| {
            let previous = before(name);
            json!({
                "filter": name,
                "path": p.path.display().to_string(),
                "sha256": p.sha256,
                "wit": p.wit,
                "changed": previous.as_deref() != Some(p.sha256.as_str()),
                "previous_sha256": previous,
            })
        })
        .collect()
}
