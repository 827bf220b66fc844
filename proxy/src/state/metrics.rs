//! Every family of the process, registered once: the core ones in `metrics` and each
//! stage's beside its code. The registry is sealed here, above the stages, so `metrics`
//! stays a leaf that names none of them.

use std::sync::Arc;

use crate::filter::metrics::FilterMetrics;
use crate::metrics::{Families, Metrics, Registrar};
use crate::observe::metrics::ObserveMetrics;
use crate::route::metrics::RouteMetrics;
use crate::upstream::metrics::UpstreamMetrics;

/// The stages' families, handed to each stage when a version is built.
pub struct StageMetrics {
    pub upstream: Arc<UpstreamMetrics>,
    pub filter: Arc<FilterMetrics>,
    pub route: RouteMetrics,
    pub observe: ObserveMetrics,
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
        };
        (Arc::new(Metrics::new(registrar)), stages)
    }
}

#[cfg(test)]
mod tests;
