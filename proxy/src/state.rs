//! The running state: the config version serving now, and how a new version replaces it
//! atomically (or is rejected, leaving the old one). Building a version is `build`'s, the
//! native filters are `filters`', what the admin API shows of a version is `view`'s.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use serde_json::{Value, json};

use crate::audit::{Audit, now_rfc3339};
use crate::config::{AdminConfig, Config, ConfigError, KvConfig, Source};
use crate::filter::PluginInfo;
use crate::filter::metrics::FilterMetrics;
use crate::metrics::Metrics;
use crate::route::Router;
use crate::upstream::Clusters;
use crate::wasm::WasmHost;
pub use metrics::StageMetrics;

mod build;
mod filters;
pub mod metrics;
mod view;

use build::listener_specs;
pub use build::{build, check};
use view::{plugin_changes, plugin_labels};

/// One immutable config version, built once and shared by every request that starts
/// while it is current.
pub struct Version {
    pub version: u64,
    pub router: Router,
    pub clusters: Arc<Clusters>,
    pub metrics: Arc<Metrics>,
    /// Failures and skips of this version's filters (`filter/metrics.rs`).
    pub filter_metrics: Arc<FilterMetrics>,
    /// The listeners this version was built for; a reload may not change them.
    pub listeners: Vec<ListenerSpec>,
    /// TLS server configs by listener name (ALPN h2, http/1.1).
    pub tls: HashMap<String, Arc<rustls::ServerConfig>>,
    /// The server blocks (names of each certificate) of each TLS listener, for 421.
    pub server_blocks: HashMap<String, Arc<crate::conn::ServerBlocks>>,
    /// What transparent (sidecar) listeners route by: TLS routes, named ports.
    pub intercept: crate::route::intercept::Routing,
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

/// What identifies a listener's socket and behaviour: a listener whose spec changes on
/// reload is dropped and bound again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerSpec {
    name: String,
    address: std::net::SocketAddr,
    trust_forwarded: bool,
    tls: bool,
    http3: bool,
    forward_client_cert: bool,
    front: crate::config::FrontDoor,
    limits: crate::config::ListenerLimits,
    timeouts: crate::config::ListenerTimeouts,
    /// A sidecar listener's settings (`transparent`, `opaque_ports`, …).
    sidecar: Option<SidecarSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SidecarSpec {
    transparent: crate::config::Transparent,
    direction: Option<crate::config::Direction>,
    opaque_ports: Vec<u16>,
    detect_timeout: std::time::Duration,
    passthrough_mark: Option<u32>,
    peer_tls: crate::config::PeerTls,
    strict_ports: Vec<u16>,
}

/// Where the config comes from.
pub enum ConfigSource {
    File(PathBuf),
    /// Built in (`weft demo`): reloads re-read the same text.
    Embedded {
        origin: String,
        text: String,
    },
    /// Pushed by a source that runs beside the state (xDS): it hands the state a new config
    /// by calling `State::reload`, which reads it back through `load`.
    Provided(Arc<dyn ConfigProvider>),
}

/// A config source that pushes changes (xDS): `load` gives its current config, `serving`
/// hands it the state once that serves, so it can reload it when a change arrives.
pub trait ConfigProvider: Send + Sync {
    fn load(&self) -> Result<Config, ConfigError>;
    fn serving(&self, state: &Arc<State>);
    /// What the admin API shows of the source (`/api/xds`).
    fn status(&self) -> Option<Value> {
        None
    }
}

impl ConfigSource {
    pub fn load(&self) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => Config::load(path),
            ConfigSource::Embedded { origin, text } => Config::parse(origin, text),
            ConfigSource::Provided(provider) => provider.load(),
        }
    }
}

/// The process-wide state shared by listeners, the admin API and the watcher.
pub struct State {
    current: ArcSwap<Version>,
    pub metrics: Arc<Metrics>,
    /// The families of the stages, which each version's clusters and routes resolve.
    stage_metrics: StageMetrics,
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
    /// The listeners serving, which a reload adds to and drops from; set once they serve.
    live: std::sync::OnceLock<Arc<dyn Listeners>>,
}

/// The listeners serving (`listen::live`, which stands above the state and is handed to
/// it once they serve): a reload's added listeners are bound by [`Listeners::stage`]
/// before anything changes, so an address in use refuses the reload; the returned
/// [`Commit`] runs once the new version is current.
pub trait Listeners: Send + Sync {
    fn stage(
        self: Arc<Self>,
        added: Vec<&crate::config::ListenerConfig>,
        removed: Vec<String>,
        metrics: &Metrics,
    ) -> Result<Commit, String>;
}

/// A staged listener change: the added listeners start serving and the removed ones stop
/// accepting and drain; done once the removed ones' sockets are closed.
pub type Commit = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Reload results kept for the admin API and the status page.
const RECENT_RELOADS: usize = 32;

impl State {
    pub async fn new(config: &Config, source: ConfigSource) -> anyhow::Result<Arc<State>> {
        let audit_path = config.admin.as_ref().and_then(|a| a.audit_log.as_deref());
        let audit = Audit::open(audit_path).map_err(anyhow::Error::msg)?;
        let (metrics, stage_metrics) = StageMetrics::register();
        let kv = config.kv.as_ref().map(|k| k.get_ref().clone());
        let store = crate::wasm::kv_store(kv.as_ref(), &stage_metrics.kv)?;
        let wasm = WasmHost::with_kv(&config.wasm, stage_metrics.filter.clone(), store)?;
        let runtime = build(config, 1, &metrics, &stage_metrics, &wasm, None).await?;
        stage_metrics.reloads.serving(1, &plugin_labels(&runtime));
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
        let observe = crate::observe::Observer::start(config, &stage_metrics.observe)?;
        Ok(Arc::new(State {
            current: ArcSwap::from_pointee(runtime),
            metrics,
            stage_metrics,
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
            live: std::sync::OnceLock::new(),
        }))
    }

    /// Hands the state the listeners serving, so reloads may add and drop listeners.
    pub fn set_live(&self, live: Arc<dyn Listeners>) {
        let _ = self.live.set(live);
    }

    /// The version serving now.
    pub fn current(&self) -> Arc<Version> {
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
                self.stage_metrics.reloads.reload(cause, "ok");
                let new = self.current();
                self.stage_metrics.reloads.serving(new.version, &plugin_labels(&new));
                record["outcome"] = json!("ok");
                record["new_version"] = json!(version);
                record["plugins"] = plugin_changes(Some(&old), &new);
                tracing::info!(version, cause, "config reloaded");
            }
            Err(e) => {
                self.stage_metrics.reloads.reload(cause, "rejected");
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

    /// The composition root's own families (reloads, xDS updates), for a config source.
    pub fn reload_metrics(&self) -> &metrics::ReloadMetrics {
        &self.stage_metrics.reloads
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
        let changes = if wanted == running.listeners {
            None
        } else {
            let live = self.live.get().ok_or_else(|| {
                config
                    .source
                    .error("listeners differ from the running ones and Weft is not serving yet")
            })?;
            Some((
                live,
                listener_changes(&running.listeners, &wanted).map_err(|e| config.source.error(e))?,
            ))
        };
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
        let runtime = build(
            &config,
            version,
            &self.metrics,
            &self.stage_metrics,
            &self.wasm,
            Some(&running),
        )
        .await?;
        // Bound now, before anything changes: an address in use rejects the whole reload.
        let staged = match changes {
            Some((live, (added, removed))) => {
                let added = config
                    .listeners
                    .iter()
                    .map(|l| l.get_ref())
                    .filter(|l| added.contains(&l.name));
                Some(
                    live.clone()
                        .stage(added.collect(), removed, &self.metrics)
                        .map_err(|e| config.source.error(e))?,
                )
            }
            None => None,
        };
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
        if let Some(commit) = staged {
            commit.await;
        }
        Ok(version)
    }
}

/// The listeners a reload adds and drops (by name): a listener whose settings changed is
/// dropped and added again (`listen::live` checks their addresses). HTTP/3 listeners are
/// bound at start only.
fn listener_changes(running: &[ListenerSpec], wanted: &[ListenerSpec]) -> Result<(Vec<String>, Vec<String>), String> {
    let removed: Vec<&ListenerSpec> = running.iter().filter(|r| !wanted.contains(r)).collect();
    let added: Vec<&ListenerSpec> = wanted.iter().filter(|w| !running.contains(w)).collect();
    if let Some(h) = added.iter().chain(&removed).find(|l| l.http3) {
        return Err(format!(
            "listener {:?} has http3: HTTP/3 listeners are bound at start, adding or removing one needs a restart",
            h.name
        ));
    }
    Ok((
        added.iter().map(|l| l.name.clone()).collect(),
        removed.iter().map(|l| l.name.clone()).collect(),
    ))
}
