//! Building a config version from a `Config`: clusters, TLS and QUIC server configs,
//! filters, then the routes over them. Also `weft check`, which builds one and serves
//! nothing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use http::HeaderValue;

use super::{ListenerSpec, StageMetrics, Version, filters, view};
use crate::config::{Config, ConfigError, ListenerConfig};
use crate::filter::{ChainEntry, Filter};
use crate::metrics::Metrics;
use crate::route::metrics::RouteCounters;
use crate::route::{Matcher, Policy, Route, Router};
use crate::upstream::{Cluster, Clusters};
use crate::wasm::WasmHost;

pub(super) fn listener_specs(config: &Config) -> Vec<ListenerSpec> {
    config.listeners.iter().map(|l| spec(l.get_ref())).collect()
}

fn spec(l: &ListenerConfig) -> ListenerSpec {
    ListenerSpec {
        name: l.name.clone(),
        address: l.address,
        trust_forwarded: l.trust_forwarded,
        tls: l.tls.is_some(),
        http3: l.http3,
        forward_client_cert: l.forward_client_cert,
        front: crate::config::FrontDoor::new(l),
        limits: l.limits.clone(),
        timeouts: l.timeouts.clone(),
        sidecar: l.transparent.map(|transparent| super::SidecarSpec {
            transparent,
            direction: l.direction,
            opaque_ports: l.opaque_ports.clone(),
            detect_timeout: l.detect_timeout,
            passthrough_mark: l.passthrough_mark,
            peer_tls: l.peer_tls,
            strict_ports: l.strict_ports.clone(),
        }),
    }
}

/// Builds a config version: clusters (keeping the pooled connections of `running`'s
/// endpoints that stay), then filters (compiling and initialising Wasm plugins), then
/// routes over them.
pub async fn build(
    config: &Config,
    version: u64,
    metrics: &Arc<Metrics>,
    stages: &StageMetrics,
    wasm: &WasmHost,
    running: Option<&Version>,
) -> Result<Version, ConfigError> {
    let src = &config.source;
    let mut files = Vec::new();
    let mut clusters = Clusters::new();
    for c in &config.clusters {
        if let Some(t) = &c.get_ref().tls {
            files.extend(
                [Some(&t.ca), t.cert.as_ref(), t.key.as_ref()]
                    .into_iter()
                    .flatten()
                    .filter_map(|p| p.file().cloned()),
            );
        }
        let previous = running.and_then(|r| r.clusters.get(c.get_ref().name.as_str()));
        let cluster = Cluster::build(c, src, &stages.upstream, previous.map(|p| &**p)).await?;
        clusters.insert(cluster.name.clone(), cluster);
    }
    let clusters = Arc::new(clusters);

    let mut tls = HashMap::new();
    let mut server_blocks = HashMap::new();
    let mut quic = HashMap::new();
    for spanned in &config.listeners {
        let l = spanned.get_ref();
        let Some(settings) = &l.tls else { continue };
        let fail = |e: String| src.error_at(spanned.span(), format!("listener {:?}: {e}", l.name));
        files.extend(
            settings
                .certificates
                .iter()
                .flat_map(|c| [&c.cert, &c.key])
                .chain(settings.client_ca.as_ref())
                .filter_map(|p| p.file().cloned()),
        );
        let (server, blocks) = crate::tls::server_config(settings, &[b"h2", b"http/1.1"], false).map_err(fail)?;
        tls.insert(l.name.clone(), Arc::new(server));
        server_blocks.insert(l.name.clone(), blocks);
        if l.http3 {
            quic.insert(
                l.name.clone(),
                crate::tls::quic::server_config(l, settings).map_err(fail)?,
            );
        }
    }

    let mut filters: Vec<(&str, ChainEntry)> = Vec::new();
    let mut plugins = Vec::new();
    for spanned in &config.filters {
        let f = spanned.get_ref();
        let fail = |e: String| src.error_at(spanned.span(), format!("filter {:?}: {e}", f.name));
        let filter: Arc<dyn Filter> = match (&f.wasm, f.native.as_deref()) {
            (Some(path), _) => {
                let json = serde_json::to_string(&f.config).map_err(|e| fail(e.to_string()))?;
                files.push(path.clone());
                wasm.load_filter(&f.name, path, &json, &f.limits, clusters.clone())
                    .await
                    .map_err(|e| fail(format!("{e:#}")))?
            }
            (None, Some(kind)) => filters::native(&f.name, kind, f.config.clone()).map_err(fail)?,
            (None, None) => return Err(fail("needs `wasm` or `native`".to_owned())),
        };
        if let Some(plugin) = filter.plugin() {
            plugins.push((f.name.clone(), plugin.clone()));
        }
        filters.push((
            &f.name,
            ChainEntry {
                filter,
                on_error: f.on_error,
                stats: stages.filter.filter_stats(&f.name),
            },
        ));
    }

    let mut routes = Vec::with_capacity(config.routes.len());
    for (i, spanned) in config.routes.iter().enumerate() {
        let r = spanned.get_ref();
        let name: Arc<str> = r.name.clone().unwrap_or_else(|| format!("route-{i}")).into();
        let matcher = Matcher::build(&r.matches, src, spanned.span())?;
        let cluster = r
            .cluster
            .as_ref()
            .map(|c| {
                clusters
                    .get(c.get_ref().as_str())
                    .cloned()
                    .ok_or_else(|| src.error_at(c.span(), format!("unknown cluster {:?}", c.get_ref())))
            })
            .transpose()?;
        let policy = Policy::build(spanned, &name, &clusters, &stages.route, src)?;
        let host_rewrite = r
            .host_rewrite
            .as_deref()
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| src.error_at(spanned.span(), "host_rewrite is not a valid header value"))?;
        let mut chain = Vec::with_capacity(r.filters.len());
        for wanted in &r.filters {
            let (_, entry) = filters
                .iter()
                .find(|(n, _)| *n == wanted.get_ref())
                .ok_or_else(|| src.error_at(wanted.span(), format!("unknown filter {:?}", wanted.get_ref())))?;
            chain.push(entry.clone());
        }
        let counters = RouteCounters::new(&stages.route, &name);
        routes.push(
            Route::new(name, matcher, cluster, r.timeout, host_rewrite, chain, counters, policy)
                .with_upgrades(&r.upgrades, r.upgrade_idle_timeout),
        );
    }

    let intercept = crate::route::intercept::Routing::build(config, &clusters)?;
    Ok(Version {
        version,
        intercept,
        view: view::view(config, &routes),
        router: Router::new(routes),
        clusters,
        metrics: metrics.clone(),
        filter_metrics: stages.filter.clone(),
        listeners: listener_specs(config),
        tls,
        server_blocks,
        quic,
        files,
        source: config.source.clone(),
        plugins,
        built_at: SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    })
}

/// Builds a config version without serving it (`weft check`): every plugin is compiled and
/// initialised, so what passes here loads at `run`.
pub async fn check(config: &Config) -> anyhow::Result<String> {
    if let Some(admin) = &config.admin {
        // What the admin listener reads at start (`token_file`) must be there.
        admin.token().map_err(anyhow::Error::msg)?;
    }
    let (metrics, stages) = StageMetrics::register();
    let wasm = WasmHost::new(&config.wasm, stages.filter.clone())?;
    build(config, 0, &metrics, &stages, &wasm, None).await?;
    Ok([
        counted(config.listeners.len(), "listener"),
        counted(config.clusters.len(), "cluster"),
        counted(config.filters.len(), "filter"),
        counted(config.routes.len(), "route"),
    ]
    .join(", "))
}

/// `1 route`, `2 routes`, `0 routes`.
fn counted(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
