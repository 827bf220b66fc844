//! Process-wide metrics, exported in the Prometheus text format by the admin listener.
//!
//! The request path never looks a metric up by label: routes and filters hold their
//! counters, created when the config is built, so counting is one atomic add.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    pub filter: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterNameLabels {
    pub filter: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub filter: String,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestLabels {
    pub filter: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KvLabels {
    pub backend: &'static str,
}

fn guest_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// All of the proxy's metrics. One per process; survives config reloads.
pub struct Metrics {
    registry: Registry,
    /// Downstream responses by route and status class.
    pub responses: Family<RouteLabels, Counter>,
    /// Failures of filters by filter name and kind (trap, cpu, memory, error).
    pub filter_errors: Family<FilterLabels, Counter>,
    /// Config and plugin reloads by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Metrics defined by Wasm filters through the host's metrics interface.
    pub guest_counters: Family<GuestLabels, Counter>,
    pub guest_gauges: Family<GuestLabels, Gauge>,
    pub guest_histograms: Family<GuestLabels, Histogram, fn() -> Histogram>,
    /// Failed operations of the filters' shared KV store, by backend.
    pub kv_errors: Family<KvLabels, Counter>,
    /// Live keys a filter's local KV writes evicted from its own full space.
    pub kv_evictions: Family<FilterNameLabels, Counter>,
    /// Requests answered 503 because a filter was at its concurrency limit, by reason
    /// (`queue_full`, `queue_timeout`).
    pub filter_rejected: Family<RejectLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("weft");
        let responses = Family::<RouteLabels, Counter>::default();
        let filter_errors = Family::<FilterLabels, Counter>::default();
        let reloads = Family::<ReloadLabels, Counter>::default();
        let guest_counters = Family::<GuestLabels, Counter>::default();
        let guest_gauges = Family::<GuestLabels, Gauge>::default();
        let guest_histograms =
            Family::<GuestLabels, Histogram, fn() -> Histogram>::new_with_constructor(guest_histogram);
        registry.register("responses", "Responses sent downstream", responses.clone());
        registry.register(
            "filter_errors",
            "Filter failures (trap, limit, error)",
            filter_errors.clone(),
        );
        registry.register("reloads", "Config and plugin reloads", reloads.clone());
        registry.register(
            "filter_counter",
            "Counters defined by Wasm filters",
            guest_counters.clone(),
        );
        registry.register("filter_gauge", "Gauges defined by Wasm filters", guest_gauges.clone());
        registry.register(
            "filter_histogram",
            "Histograms defined by Wasm filters",
            guest_histograms.clone(),
        );
        let kv_errors = Family::<KvLabels, Counter>::default();
        registry.register("kv_errors", "Failed KV store operations by backend", kv_errors.clone());
        let kv_evictions = Family::<FilterNameLabels, Counter>::default();
        registry.register(
            "kv_evictions",
            "Live KV keys evicted from a filter's full space by its own writes",
            kv_evictions.clone(),
        );
        let filter_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "filter_rejected",
            "Requests refused with 503 because a filter was at its concurrency limit",
            filter_rejected.clone(),
        );
        Metrics {
            registry,
            responses,
            filter_errors,
            reloads,
            guest_counters,
            guest_gauges,
            guest_histograms,
            kv_errors,
            kv_evictions,
            filter_rejected,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn reload(&self, what: &str, outcome: &'static str) {
        self.reloads
            .get_or_create(&ReloadLabels {
                what: what.to_owned(),
                outcome,
            })
            .inc();
    }

    pub fn filter_error(&self, filter: &str, kind: &str) {
        self.filter_errors
            .get_or_create(&FilterLabels {
                filter: filter.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }
}

impl Metrics {
    /// The eviction counter of one filter's KV space, resolved once at load.
    pub fn kv_evictions(&self, filter: &str) -> Counter {
        self.kv_evictions
            .get_or_create(&FilterNameLabels {
                filter: filter.to_owned(),
            })
            .clone()
    }

    /// The rejection counter of one filter for one reason, resolved once at load.
    pub fn filter_rejected(&self, filter: &str, reason: &'static str) -> Counter {
        self.filter_rejected
            .get_or_create(&RejectLabels {
                filter: filter.to_owned(),
                reason,
            })
            .clone()
    }
}

/// Per-route response counters, resolved once when the route is built.
#[derive(Clone)]
pub struct RouteCounters {
    by_class: [Counter; 5],
}

impl RouteCounters {
    pub fn new(metrics: &Metrics, route: &str) -> Self {
        let make = |class| {
            metrics
                .responses
                .get_or_create(&RouteLabels {
                    route: route.to_owned(),
                    class,
                })
                .clone()
        };
        RouteCounters {
            by_class: [make("1xx"), make("2xx"), make("3xx"), make("4xx"), make("5xx")],
        }
    }

    pub fn record(&self, status: http::StatusCode) {
        let idx = (status.as_u16() / 100).clamp(1, 5) as usize - 1;
        self.by_class[idx].inc();
    }
}
