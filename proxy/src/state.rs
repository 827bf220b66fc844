//! The running state: the config version serving now, how it is built from a `Config`,
//! and how a new version replaces it atomically (or is rejected, leaving the old one).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use http::HeaderValue;
use serde_json::{Value, json};

use crate::audit::{Audit, now_rfc3339};
use crate::config::{AdminConfig, Config, ConfigError, KvConfig, ListenerConfig, Source};
use crate::filter::headers::HeadersFilter;
use crate::filter::identity::IdentityFilter;
use crate::filter::{ChainEntry, Filter, PluginInfo};
use crate::metrics::{Metrics, RouteCounters};
use crate::route::{Matcher, Policy, Route, Router};
use crate::upstream::{Cluster, Clusters};
use crate::wasm::WasmHost;

/// One immutable config version, built once and shared by every request that starts
/// while it is current.
pub struct Runtime {
    pub version: u64,
    pub router: Router,
    pub clusters: Arc<Clusters>,
    pub metrics: Arc<Metrics>,
    /// The listeners this version was built for; a reload may not change them.
    pub listeners: Vec<ListenerSpec>,
    /// TLS server configs by listener name (ALPN h2, http/1.1).
    pub tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// The server blocks (names of each certificate) of each TLS listener, for 421.
    pub server_blocks: HashMap<String, Arc<crate::tls::ServerBlocks>>,
    /// QUIC server configs by listener name, for listeners with `http3`.
    pub quic: HashMap<String, quinn::ServerConfig>,
    /// Files this version was built from (plugins, certificates, keys), watched for reloads.
    pub files: Vec<PathBuf>,
    /// The config text this version was built from (the admin API shows it redacted).
    pub source: Source,
    /// Wasm plugins by filter name, in config order.
    pub plugins: Vec<(String, PluginInfo)>,
    /// Routes and clusters as the admin API describes them.
    pub view: Value,
    /// Seconds since the Unix epoch when this version was built.
    pub built_at: u64,
}

/// What identifies a listener's socket and behaviour; fixed for the life of the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    name: String,
    address: std::net::SocketAddr,
    trust_forwarded: bool,
    tls: bool,
    http3: bool,
    forward_client_cert: bool,
    front: crate::front::FrontDoor,
    limits: crate::config::ListenerLimits,
    timeouts: crate::config::ListenerTimeouts,
}

/// Where the config comes from.
pub enum ConfigSource {
    File(PathBuf),
    /// Built in (`weft demo`): reloads re-read the same text.
    Embedded {
        origin: String,
        text: String,
    },
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Embedded { origin, text } => Config::parse(origin, text),
        }
    }
}

/// The process-wide state shared by listeners, the admin API and the watcher.
pub struct State {
    current: ArcSwap<Runtime>,
    pub metrics: Arc<Metrics>,
    pub wasm: WasmHost,
    /// The `[kv]` the host's store was made from: changing it needs a restart.
    kv: Option<KvConfig>,
    pub source: ConfigSource,
    next_version: AtomicU64,
    /// Serialises reloads; never taken on the request path.
    reloading: tokio::sync::Mutex<()>,
    /// HTTP/3 endpoints by listener name, handed new TLS configs on reload.
    pub quic_endpoints: std::sync::Mutex<HashMap<String, quinn::Endpoint>>,
    /// The `[admin]` the admin listener was started with: changing it needs a restart,
    /// like listeners.
    admin: Option<AdminConfig>,
    /// Where config changes and admin calls are recorded (`[admin] audit_log`).
    pub audit: Audit,
    /// The last [`RECENT_RELOADS`] reloads, newest last, as the admin API shows them.
    reloads: std::sync::Mutex<VecDeque<Value>>,
    pub started: Instant,
    pub started_at: SystemTime,
    /// Set by the admin API's drain: `/ready` answers 503 so load balancers move away.
    pub draining: AtomicBool,
    /// The access log and tracing, reconfigured with each version.
    pub observe: Arc<crate::observe::Observer>,
}

/// Reload results kept for the admin API and the status page.
const RECENT_RELOADS: usize = 32;

impl State {
    pub async fn new(config: &Config, source: ConfigSource) -> anyhow::Result<Arc<State>> {
        let audit_path = config.admin.as_ref().and_then(|a| a.audit_log.as_deref());
        let audit = Audit::open(audit_path).map_err(anyhow::Error::msg)?;
        let metrics = Arc::new(Metrics::default());
        let kv = config.kv.as_ref().map(|k| k.get_ref().clone());
        let store = crate::wasm::kv_store(kv.as_ref(), &metrics)?;
        let wasm = WasmHost::with_kv(&config.wasm, metrics.clone(), store)?;
        let runtime = build(config, 1, &metrics, &wasm, None).await?;
        metrics.serving(1, &plugin_labels(&runtime));
        let mut started = json!({
            "event": "start",
            "trigger": "start",
            "outcome": "ok",
            "new_version": 1,
            "config": runtime.source.origin,
            "plugins": plugin_changes(None, &runtime),
        });
        audit.record(started.clone());
        started["time"] = json!(now_rfc3339());
        let observe = crate::observe::Observer::start(config, &metrics)?;
        Ok(Arc::new(State {
            current: ArcSwap::from_pointee(runtime),
            metrics,
            wasm,
            kv,
            source,
            next_version: AtomicU64::new(2),
            reloading: tokio::sync::Mutex::new(()),
            quic_endpoints: std::sync::Mutex::new(HashMap::new()),
            admin: config.admin.clone(),
            audit,
            reloads: std::sync::Mutex::new(VecDeque::from([started])),
            started: Instant::now(),
            started_at: SystemTime::now(),
            draining: AtomicBool::new(false),
            observe,
        }))
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<Runtime> {
        self.current.load_full()
    }

    /// Re-reads the config and every plugin, builds a new version off the request path and
    /// swaps it in. On any error the running version stays and the error says why.
    /// `cause` is the trigger: `watch`, `admin`, `signal`.
    pub async fn reload(&self, cause: &str) -> Result<u64, ConfigError> {
        let _one_at_a_time = self.reloading.lock().await;
        let old = self.current();
        let result = self.try_reload().await;
        let mut record = json!({
            "event": "reload",
            "trigger": cause,
            "old_version": old.version,
            "config": old.source.origin,
        });
        match &result {
            Ok(version) => {
                self.metrics.reload(cause, "ok");
                let new = self.current();
                self.metrics.serving(new.version, &plugin_labels(&new));
                record["outcome"] = json!("ok");
                record["new_version"] = json!(version);
                record["plugins"] = plugin_changes(Some(&old), &new);
                tracing::info!(version, cause, "config reloaded");
            }
            Err(e) => {
                self.metrics.reload(cause, "rejected");
                record["outcome"] = json!("rejected");
                // Config errors mask URL passwords and secret-named values (config::redact).
                record["reason"] = json!(e.to_string());
                tracing::error!(cause, error = %e, "reload rejected; the running config stays");
            }
        }
        self.audit.record(record.clone());
        let mut recent = self.reloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if recent.len() == RECENT_RELOADS {
            recent.pop_front();
        }
        record["time"] = json!(now_rfc3339());
        recent.push_back(record);
        result
    }

    /// The recent reloads (and the start), oldest first.
    pub fn recent_reloads(&self) -> Vec<Value> {
        let recent = self.reloads.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.iter().cloned().collect()
    }

    async fn try_reload(&self) -> Result<u64, ConfigError> {
        let config = self.source.load()?;
        let running = self.current();
        let wanted = listener_specs(&config);
        if wanted != running.listeners {
            return Err(config.source.error(
                "listeners differ from the running ones (name, address, trust_forwarded, tls on/off, \
                 http3, forward_client_cert, path handling, limits, timeouts): changing listeners needs a restart",
            ));
        }
        if config.kv.as_ref().map(|k| k.get_ref()) != self.kv.as_ref() {
            return Err(config
                .source
                .error("[kv] differs from the running one: changing the KV store needs a restart"));
        }
        if config.admin != self.admin {
            return Err(config.source.error(
                "[admin] differs from the running one: changing the admin listener or its token needs a restart",
            ));
        }
        let version = self.next_version.fetch_add(1, Ordering::Relaxed);
        let runtime = build(&config, version, &self.metrics, &self.wasm, Some(&running)).await?;
        self.observe.reconfigure(&config)?;
        for (name, endpoint) in self
            .quic_endpoints
            .lock()
            .map_err(|_| config.source.error("QUIC state poisoned"))?
            .iter()
        {
            if let Some(quic) = runtime.quic.get(name) {
                endpoint.set_server_config(Some(quic.clone()));
            }
        }
        self.current.store(Arc::new(runtime));
        Ok(version)
    }
}

fn listener_specs(config: &Config) -> Vec<ListenerSpec> {
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
        front: crate::front::FrontDoor::new(l),
        limits: l.limits.clone(),
        timeouts: l.timeouts.clone(),
    }
}

/// Builds a config version: clusters (keeping the pooled connections of `running`'s
/// endpoints that stay), then filters (compiling and initialising Wasm plugins), then
/// routes over them.
pub async fn build(
    config: &Config,
    version: u64,
    metrics: &Arc<Metrics>,
    wasm: &WasmHost,
    running: Option<&Runtime>,
) -> Result<Runtime, ConfigError> {
    let src = &config.source;
    let mut files = Vec::new();
    let mut clusters = Clusters::new();
    for c in &config.clusters {
        if let Some(t) = &c.get_ref().tls {
            files.extend(
                [Some(t.ca.clone()), t.cert.clone(), t.key.clone()]
                    .into_iter()
                    .flatten(),
            );
        }
        let previous = running.and_then(|r| r.clusters.get(c.get_ref().name.as_str()));
        let cluster = Cluster::build(c, src, metrics, previous.map(|p| &**p)).await?;
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
                .flat_map(|c| [c.cert.clone(), c.key.clone()]),
        );
        files.extend(settings.client_ca.iter().cloned());
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
            (None, Some("headers")) => Arc::new(HeadersFilter::new(&f.name, f.config.clone()).map_err(fail)?),
            (None, Some("identity")) => Arc::new(IdentityFilter::new(&f.name, f.config.clone()).map_err(fail)?),
            (None, Some(other)) => {
                return Err(fail(format!(
                    "unknown native filter {other:?} (known: headers, identity)"
                )));
            }
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
                stats: metrics.filter_stats(&f.name),
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
        let policy = Policy::build(spanned, &name, &clusters, metrics, src)?;
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
        let counters = RouteCounters::new(metrics, &name);
        routes.push(
            Route::new(name, matcher, cluster, r.timeout, host_rewrite, chain, counters, policy)
                .with_upgrades(&r.upgrades, r.upgrade_idle_timeout),
        );
    }

    Ok(Runtime {
        version,
        view: view(config, &routes),
        router: Router::new(routes),
        clusters,
        metrics: metrics.clone(),
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

/// Routes and clusters as the admin API shows them (no secrets: names, addresses,
/// timeouts; the match conditions as written).
fn view(config: &Config, routes: &[Route]) -> Value {
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
fn plugin_labels(runtime: &Runtime) -> Vec<(&str, &str, &str)> {
    runtime
        .plugins
        .iter()
        .map(|(name, p)| (name.as_str(), p.sha256.as_str(), p.wit.as_str()))
        .collect()
}

/// The plugins of `new`, each with the hash it had in `old` when that differs (or the
/// filter is new), so an audit record shows what a reload changed.
fn plugin_changes(old: Option<&Runtime>, new: &Runtime) -> Value {
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

/// Builds a config version without serving it (`weft check`): every plugin is compiled and
/// initialised, so what passes here loads at `run`.
pub async fn check(config: &Config) -> anyhow::Result<String> {
    if let Some(admin) = &config.admin {
        // What the admin listener reads at start (`token_file`) must be there.
        admin.token().map_err(anyhow::Error::msg)?;
    }
    let metrics = Arc::new(Metrics::default());
    let wasm = WasmHost::new(&config.wasm, metrics.clone())?;
    build(config, 0, &metrics, &wasm, None).await?;
    Ok(format!(
        "{} listeners, {} clusters, {} filters, {} routes",
        config.listeners.len(),
        config.clusters.len(),
        config.filters.len(),
        config.routes.len()
    ))
}
