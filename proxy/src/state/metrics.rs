//! Every family of the process, registered once: the core ones in `metrics` and each
//! stage's beside its code. The registry is sealed here, above the stages, so `metrics`
//! stays a leaf that names none of them.

use std::sync::Arc;

use crate::filter::metrics::FilterMetrics;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::kv::metrics::KvMetrics;
use crate::metrics::{Families, LabelText, Metrics, Registrar};
use crate::observe::metrics::ObserveMetrics;
use crate::route::metrics::RouteMetrics;
use crate::upstream::metrics::UpstreamMetrics;

/// The stages' families, handed to each stage when a version is built, and the
/// composition root's own.
pub struct StageMetrics {
    pub upstream: Arc<UpstreamMetrics>,
    pub filter: Arc<FilterMetrics>,
    pub route: RouteMetrics,
    pub observe: ObserveMetrics,
    pub kv: KvMetrics,
    pub reloads: ReloadMetrics,
}

impl StageMetrics {
    /// Registers every family and seals the registry `/metrics` encodes.
    pub fn register() -> (Arc<Metrics>, StageMetrics) {
        let mut registrar = Registrar::default();
        let stages = StageMetrics {
            upstream: Arc::new(UpstreamMetrics::register(&mut registrar)),
            route: RouteMetrics::register(&mut registrar),
            filter: Arc::new(FilterMetrics::register(&mut registrar)),
            observe: ObserveMetrics::register(&mut registrar),
            kv: KvMetrics::register(&mut registrar),
            reloads: ReloadMetrics::register(&mut registrar),
        };
        (Arc::new(Metrics::new(registrar)), stages)
    }
}

/// What the composition root counts: reloads, and the version and plugins serving now.
pub struct ReloadMetrics {
    /// Config and plugin reloads by outcome.
    reloads: Family<ReloadLabels, Counter>,
    /// The config version serving now.
    config_version: Gauge,
    /// One series per loaded Wasm plugin, value 1: its content hash and WIT version.
    plugin_info: Family<PluginInfoLabels, Gauge>,
    /// xDS responses by type (lds, rds, cds, eds) and outcome (accepted, rejected).
    xds_updates: Family<XdsLabels, Counter>,
    /// Time from an xDS response to its ACK or NACK (validating, building, swapping).
    xds_apply: crate::metrics::LatencyHistogram,
    /// ADS streams opened again after one broke.
    xds_reconnects: Counter,
}

impl Families for ReloadMetrics {
    fn register(r: &mut Registrar) -> Self {
        ReloadMetrics {
            reloads: r.family("reloads", "Config and plugin reloads"),
            config_version: r.family("config_version", "The config version serving now"),
            plugin_info: r.family(
                "plugin_info",
                "Loaded Wasm plugins of the serving config (value 1): content hash and WIT version",
            ),
            xds_updates: r.family("xds_updates", "xDS responses by type and outcome (accepted or NACKed)"),
            xds_apply: r.family(
                "xds_apply_seconds",
                "Time from an xDS response to its ACK or NACK: validation, build and swap",
            ),
            xds_reconnects: r.family("xds_reconnects", "ADS streams opened again after one broke"),
        }
    }
}

impl ReloadMetrics {
    pub fn reload(&self, what: &str, outcome: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what: what.into(),
                outcome,
            })
            .inc();
    }

    /// One xDS response answered: `outcome` is `accepted` or `rejected`.
    pub fn xds_update(&self, r#type: &'static str, outcome: &'static str, took: std::time::Duration) {
        self.xds_updates.get_or_create(&XdsLabels { r#type, outcome }).inc();
        self.xds_apply.observe(took);
    }

    pub fn xds_reconnect(&self) {
        self.xds_reconnects.inc();
    }

    /// Records the version now serving and its plugins, replacing the previous ones.
    /// `plugins`: (filter, sha256 hex, WIT version).
    pub fn serving(&self, version: u64, plugins: &[(&str, &str, &str)]) {
        self.config_version.set(version as i64);
        self.plugin_info.clear();
        for (filter, sha256, wit) in plugins {
            let labels = PluginInfoLabels {
                filter: (*filter).into(),
                sha256: (*sha256).to_owned(),
                wit: (*wit).to_owned(),
            };
            self.plugin_info.get_or_create(&labels).set(1);
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: LabelText,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct XdsLabels {
    pub r#type: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginInfoLabels {
    pub filter: LabelText,
    pub sha256: String,
    pub wit: String,
}

#[cfg(test)]
mod tests;
