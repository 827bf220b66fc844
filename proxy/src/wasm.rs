//! Wasm filters: components implementing the `weft:filter` world (see `wit/`), compiled
//! once per content hash, run in pooled, sandboxed instances behind the native
//! [`Filter`] trait. `wasm/DESIGN.md` explains the choices and their measured costs.
//!
//! One concern per file: `engine` (engine, epoch ticker, compile cache), `version` (WIT
//! version check), `bindings` (generated), `state` (store data), `limits` (memory, CPU,
//! error classification), `pool` (instance reuse), `admission` (per-filter concurrency),
//! `filter` (the `Filter` impl), `output` (the per-filter log budget), and `host/`, one
//! file per interface the world imports: `http`, `log`, `metrics`, `metadata`, `context`,
//! `kv`, `callout`, plus `stdio` for the guest's output streams. The KV store itself is
//! [`crate::kv`]: config and the plugin test kit use it too.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};

use crate::config::{KvBackend, KvConfig, LimitsConfig, WasmConfig};
use crate::filter::Filter;
use crate::filter::metrics::FilterMetrics;
use crate::kv::metrics::KvMetrics;
use crate::kv::{KvQuota, KvSpace, KvStore, LocalKv};
use crate::upstream::Clusters;

mod admission;
mod bindings;
mod engine;
mod filter;
mod host;
mod limits;
mod output;
mod pool;
mod state;
mod version;

pub use host::callout::{CalloutFailure, CalloutTransport, CannedAnswer, CannedCallouts, SentCallout};
pub use pool::InstanceReuse;
pub use version::WIT_VERSION;

use admission::Admission;
use pool::{CreateError, Pool};
use state::FilterShared;

/// The store a `[kv]` table asks for: in-process by default, or Redis.
pub fn kv_store(config: Option<&KvConfig>, metrics: &KvMetrics) -> anyhow::Result<Arc<dyn KvStore>> {
    match config {
        Some(KvConfig {
            backend: KvBackend::Redis,
            url: Some(url),
            timeout,
        }) => crate::kv::store(Some((url, *timeout)), metrics),
        Some(KvConfig {
            backend: KvBackend::Redis,
            url: None,
            ..
        }) => bail!("[kv] backend = \"redis\" needs a url"),
        _ => crate::kv::store(None, metrics),
    }
}

/// The Wasm runtime of the process: one engine, the compiled-component cache and the
/// shared KV store (bounded per filter by `limits.kv_keys`/`kv_bytes`: the local store's
/// memory is at most the sum of the loaded filters' quotas). Create one at start-up; it survives config reloads.
pub struct WasmHost {
    engine: engine::Engine,
    metrics: Arc<FilterMetrics>,
    kv: Arc<dyn KvStore>,
}

impl WasmHost {
    /// A host with the in-process KV store.
    pub fn new(config: &WasmConfig, metrics: Arc<FilterMetrics>) -> anyhow::Result<Self> {
        Self::with_kv(config, metrics, LocalKv::new())
    }

    /// A host whose filters share `kv` (e.g. a store shared by several proxies).
    pub fn with_kv(config: &WasmConfig, metrics: Arc<FilterMetrics>, kv: Arc<dyn KvStore>) -> anyhow::Result<Self> {
        Ok(WasmHost {
            engine: engine::Engine::new(config)?,
            metrics,
            kv,
        })
    }

    /// Compiles (or reuses the compilation of identical bytes), checks the WIT version,
    /// instantiates and runs `init(config_json)`. The instance is kept for the filter's
    /// first request. Call it off the request path: compiling takes tens of milliseconds.
    pub async fn load_filter(
        &self,
        name: &str,
        path: &Path,
        config_json: &str,
        limits: &LimitsConfig,
        clusters: Arc<Clusters>,
    ) -> anyhow::Result<Arc<dyn Filter>> {
        self.load_filter_with(name, path, config_json, limits, clusters, InstanceReuse::Pooled)
            .await
    }

    /// [`load_filter`](Self::load_filter) with an explicit instance policy.
    pub async fn load_filter_with(
        &self,
        name: &str,
        path: &Path,
        config_json: &str,
        limits: &LimitsConfig,
        clusters: Arc<Clusters>,
        reuse: InstanceReuse,
    ) -> anyhow::Result<Arc<dyn Filter>> {
        self.load(
            name,
            path,
            config_json,
            limits,
            clusters,
            reuse,
            CalloutTransport::Clusters,
        )
        .await
    }

    /// The filter named `name`'s space in this host's KV store (the one a filter of that
    /// name loaded now shares), for the test kit to fill and read.
    pub(crate) fn kv_space(&self, name: &str, limits: &LimitsConfig) -> Arc<dyn KvSpace> {
        let quota = KvQuota {
            keys: limits.kv_keys,
            bytes: limits.kv_bytes,
        };
        self.kv.clone().space(name, quota, self.metrics.kv_evictions(name))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn load(
        &self,
        name: &str,
        path: &Path,
        config_json: &str,
        limits: &LimitsConfig,
        clusters: Arc<Clusters>,
        reuse: InstanceReuse,
        callouts: CalloutTransport,
    ) -> anyhow::Result<Arc<dyn Filter>> {
        if let Some(memory) = limits.memory
            && memory > engine::MAX_MEMORY
        {
            bail!(
                "limits.memory of {memory} bytes is over the host's maximum of {} bytes",
                engine::MAX_MEMORY
            );
        }
        limits.check().map_err(anyhow::Error::msg)?;
        if limits.log_rate == 0 || limits.log_burst == 0 {
            bail!("limits.log_rate and limits.log_burst must be at least 1");
        }
        let started = Instant::now();
        let compiled = self.engine.compile(name, path).await?;
        let memory = limits.memory.unwrap_or_else(|| compiled.default_memory());
        let kv = self.kv_space(name, limits);
        let shared = Arc::new(FilterShared {
            name: name.into(),
            metrics: self.metrics.clone(),
            kv,
            clusters: clusters.clone(),
            callouts,
            body_limit: limits.body,
            metric_names: host::metrics::MetricNames::new(name, &self.metrics),
            log_budget: output::LogBudget::new(name, limits.log_rate, limits.log_burst, &self.metrics),
        });
        let pool = Pool::new(
            compiled.clone(),
            shared.clone(),
            config_json,
            memory,
            limits.cpu,
            reuse,
            self.metrics.filter_stats(name),
        );
        let (first, options) = match pool.create().await {
            Ok(ready) => ready,
            Err(CreateError::Refused(message)) => bail!("init refused the config: {message}"),
            Err(CreateError::Failed(e)) => {
                return Err(anyhow::Error::new(e))
                    .with_context(|| format!("plugin {} failed to start", path.display()));
            }
        };
        pool.release(first);
        tracing::info!(
            filter = name,
            plugin = %path.display(),
            wit = %compiled.version,
            memory,
            ms = started.elapsed().as_millis() as u64,
            request_body = options.request_body,
            response_body = options.response_body,
            "loaded wasm filter"
        );
        Ok(Arc::new(filter::WasmFilter {
            name: shared.name.clone(),
            admission: Admission::new(name, limits, &self.metrics),
            pool,
            options,
            body_limit: limits.body,
            cpu: limits.cpu,
            clusters,
            plugin: crate::filter::PluginInfo {
                path: path.to_path_buf(),
                sha256: compiled.sha256.clone(),
                wit: compiled.version.clone(),
                loaded_at: std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            },
        }))
    }
}
