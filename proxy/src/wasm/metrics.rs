//! Host side of `weft:filter/metrics`, backed by the process's `Metrics` families with
//! labels `filter` and `name`.

use std::collections::HashMap;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::bindings::metrics::Host;
use super::state::HostState;
use crate::metrics::GuestLabels;

/// Distinct names one instance may use per kind. Each name is a time series in the
/// exposition, so a guest building names from request data must not grow it unbounded.
const MAX_NAMES: usize = 64;

/// Handles resolved by name, per instance: after the first use a guest metric costs a
/// hash lookup and an atomic add, not a family lookup with owned label strings.
#[derive(Default)]
pub(crate) struct MetricCache {
    counters: HashMap<String, Counter>,
    gauges: HashMap<String, Gauge>,
    histograms: HashMap<String, Histogram>,
}

/// Looks `name` up in `cache`, creating it with `make` while under the cap.
fn resolve<'a, M>(
    cache: &'a mut HashMap<String, M>,
    name: String,
    filter: &str,
    make: impl FnOnce(&GuestLabels) -> M,
) -> Option<&'a M> {
    if !cache.contains_key(&name) {
        if cache.len() >= MAX_NAMES {
            tracing::warn!(filter, metric = %name, "filter uses more than {MAX_NAMES} metric names; ignoring this one");
            return None;
        }
        let labels = GuestLabels {
            filter: filter.to_owned(),
            name: name.clone(),
        };
        let metric = make(&labels);
        cache.insert(name.clone(), metric);
    }
    cache.get(&name)
}

impl Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_counters;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(c) = resolve(&mut self.metric_cache.counters, name, &self.shared.name, make) {
            c.inc_by(delta);
        }
        Ok(())
    }

    fn gauge_set(&mut self, name: String, value: i64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_gauges;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(g) = resolve(&mut self.metric_cache.gauges, name, &self.shared.name, make) {
            g.set(value);
        }
        Ok(())
    }

    fn histogram_observe(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_histograms;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(h) = resolve(&mut self.metric_cache.histograms, name, &self.shared.name, make) {
            h.observe(value);
        }
        Ok(())
    }
}
