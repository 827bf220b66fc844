//! Process-wide metrics, exported in the Prometheus text format by the admin listener.
//!
//! The request path never looks a metric up by label: routes and filters hold their
//! counters, created when the config is built, so counting is one atomic add.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A label value from config or a plugin, escaped when encoded. prometheus-client 0.24
/// writes label values verbatim, so a `"`, `\` or newline in a filter or route name would
/// end the value early and let the rest forge series or break every scraper's parse.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct LabelText(pub Box<str>);

impl From<&str> for LabelText {
    fn from(text: &str) -> Self {
        LabelText(text.into())
    }
}

impl EncodeLabelValue for LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        escape_label_value(&self.0, encoder)
    }
}

/// Writes `text` as the exposition formats (Prometheus text 0.0.4 and OpenMetrics 1.0)
/// escape a label value: `\` as `\\`, `"` as `\"`, newline as `\n`.
pub fn escape_label_value(text: &str, out: &mut impl Write) -> std::fmt::Result {
    let mut rest = text;
    while let Some(i) = rest.find(['\\', '"', '\n']) {
        out.write_str(&rest[..i])?;
        out.write_str(match rest.as_bytes()[i] {
            b'\\' => "\\\\",
            b'"' => "\\\"",
            _ => "\\n",
        })?;
        rest = &rest[i + 1..];
    }
    out.write_str(rest)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: LabelText,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    pub filter: LabelText,
    pub kind: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuestLabels {
    pub filter: LabelText,
    /// Checked against the metric-name grammar before it gets here; escaped anyway.
    pub name: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterOnlyLabels {
    pub filter: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub filter: LabelText,
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    pub what: LabelText,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabels {
    pub listener: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerReasonLabels {
    pub listener: String,
    pub reason: &'static str,
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
    /// Clusters and endpoints (see the "Upstream" section below).
    pub upstream: UpstreamMetrics,
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
    /// Downstream connections open now, by listener.
    connections_open: Family<ListenerLabels, Gauge>,
    /// Connections closed at accept by a cap, by listener and cap.
    connections_rejected: Family<ListenerReasonLabels, Counter>,
    /// Connections closed by a timeout, by listener and timeout.
    connections_closed: Family<ListenerReasonLabels, Counter>,
    /// Requests the front door refused (limits, malformed), by listener and reason.
    downstream_refused: Family<ListenerReasonLabels, Counter>,
    /// Metric names a filter used that were refused (invalid, too long, too many).
    pub filter_metric_rejected: Family<RejectLabels, Counter>,
    /// Guest log lines dropped by a filter's log rate limit.
    pub filter_log_dropped: Family<FilterOnlyLabels, Counter>,
    /// Live keys a filter's local KV writes evicted from its own full space.
    pub kv_evictions: Family<FilterOnlyLabels, Counter>,
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
        let connections_open = Family::<ListenerLabels, Gauge>::default();
        let connections_rejected = Family::<ListenerReasonLabels, Counter>::default();
        let connections_closed = Family::<ListenerReasonLabels, Counter>::default();
        let downstream_refused = Family::<ListenerReasonLabels, Counter>::default();
        registry.register(
            "connections_open",
            "Downstream connections open",
            connections_open.clone(),
        );
        registry.register(
            "connections_rejected",
            "Downstream connections closed at accept by a connection cap",
            connections_rejected.clone(),
        );
        registry.register(
            "connections_closed",
            "Downstream connections closed by a timeout",
            connections_closed.clone(),
        );
        registry.register(
            "downstream_refused",
            "Requests refused by the front door (limits, malformed input)",
            downstream_refused.clone(),
        );
        let filter_metric_rejected = Family::<RejectLabels, Counter>::default();
        registry.register(
            "filter_metric_rejected",
            "Metric names used by Wasm filters and refused, by reason",
            filter_metric_rejected.clone(),
        );
        let filter_log_dropped = Family::<FilterOnlyLabels, Counter>::default();
        registry.register(
            "filter_log_dropped",
            "Wasm filter log lines dropped by the per-filter log rate limit",
            filter_log_dropped.clone(),
        );
        let kv_evictions = Family::<FilterOnlyLabels, Counter>::default();
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
        let upstream = UpstreamMetrics::register(&mut registry);
        Metrics {
            upstream,
            registry,
            responses,
            filter_errors,
            reloads,
            guest_counters,
            guest_gauges,
            guest_histograms,
            kv_errors,
            connections_open,
            connections_rejected,
            connections_closed,
            downstream_refused,
            filter_metric_rejected,
            filter_log_dropped,
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
                what: what.into(),
                outcome,
            })
            .inc();
    }

    /// The open-connections gauge of a listener (resolved once, at bind).
    pub fn connections_open(&self, listener: &str) -> Gauge {
        self.connections_open
            .get_or_create(&ListenerLabels {
                listener: listener.to_owned(),
            })
            .clone()
    }

    pub fn connection_rejected(&self, listener: &str, reason: &'static str) {
        let labels = ListenerReasonLabels {
            listener: listener.to_owned(),
            reason,
        };
        self.connections_rejected.get_or_create(&labels).inc();
    }

    pub fn connection_closed(&self, listener: &str, reason: &'static str) {
        let labels = ListenerReasonLabels {
            listener: listener.to_owned(),
            reason,
        };
        self.connections_closed.get_or_create(&labels).inc();
    }

    pub fn downstream_refused(&self, listener: &str, reason: &'static str) {
        let labels = ListenerReasonLabels {
            listener: listener.to_owned(),
            reason,
        };
        self.downstream_refused.get_or_create(&labels).inc();
    }

    pub fn filter_error(&self, filter: &str, kind: &str) {
        self.filter_errors
            .get_or_create(&FilterLabels {
                filter: filter.into(),
                kind: kind.into(),
            })
            .inc();
    }
}

impl Metrics {
    /// The eviction counter of one filter's KV space, resolved once at load.
    pub fn kv_evictions(&self, filter: &str) -> Counter {
        self.kv_evictions
            .get_or_create(&FilterOnlyLabels { filter: filter.into() })
            .clone()
    }

    /// The rejection counter of one filter for one reason, resolved once at load.
    pub fn filter_rejected(&self, filter: &str, reason: &'static str) -> Counter {
        self.filter_rejected
            .get_or_create(&RejectLabels {
                filter: filter.into(),
                reason,
            })
            .clone()
    }
}

// ---------------------------------------------------------------------------------------
// Upstream: clusters and their endpoints. Counters are resolved when a cluster is built;
// the request path only adds to them.
// ---------------------------------------------------------------------------------------

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub cluster: LabelText,
    pub endpoint: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterReasonLabels {
    pub cluster: LabelText,
    pub reason: &'static str,
}

/// The families of the upstream side.
pub struct UpstreamMetrics {
    requests: Family<EndpointLabels, Counter>,
    failures: Family<EndpointLabels, Counter>,
    ejections: Family<EndpointLabels, Counter>,
    healthy: Family<EndpointLabels, Gauge>,
    retries: Family<ClusterReasonLabels, Counter>,
    retries_skipped: Family<ClusterReasonLabels, Counter>,
    overloaded: Family<ClusterReasonLabels, Counter>,
}

impl UpstreamMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = UpstreamMetrics {
            requests: Family::default(),
            failures: Family::default(),
            ejections: Family::default(),
            healthy: Family::default(),
            retries: Family::default(),
            retries_skipped: Family::default(),
            overloaded: Family::default(),
        };
        registry.register(
            "upstream_requests",
            "Tries sent to an endpoint (a retry is another)",
            m.requests.clone(),
        );
        registry.register(
            "upstream_failures",
            "Tries that failed at an endpoint (connect, reset, timeout, or a 5xx answer)",
            m.failures.clone(),
        );
        registry.register(
            "upstream_ejections",
            "Times outlier detection ejected an endpoint",
            m.ejections.clone(),
        );
        registry.register(
            "upstream_endpoint_healthy",
            "1 while an endpoint takes traffic, 0 while ejected or failing its health check",
            m.healthy.clone(),
        );
        registry.register(
            "upstream_retries",
            "Retries sent, by what caused them",
            m.retries.clone(),
        );
        registry.register(
            "upstream_retries_skipped",
            "Retries not sent (budget, max_retries, method, body_not_replayable, deadline)",
            m.retries_skipped.clone(),
        );
        registry.register(
            "upstream_overloaded",
            "Requests answered 503 at once by a cluster's circuit breaker, by limit",
            m.overloaded.clone(),
        );
        m
    }

    /// An endpoint's series, resolved once when the endpoint is built.
    pub fn endpoint(&self, cluster: &str, endpoint: std::net::SocketAddr) -> EndpointCounters {
        let labels = EndpointLabels {
            cluster: cluster.into(),
            endpoint: endpoint.to_string(),
        };
        let healthy = self.healthy.get_or_create(&labels).clone();
        healthy.set(1);
        EndpointCounters {
            requests: self.requests.get_or_create(&labels).clone(),
            failures: self.failures.get_or_create(&labels).clone(),
            ejections: self.ejections.get_or_create(&labels).clone(),
            healthy,
        }
    }

    /// A cluster's counter for one reason of one family.
    fn by_reason(family: &Family<ClusterReasonLabels, Counter>, cluster: &str, reason: &'static str) -> Counter {
        family
            .get_or_create(&ClusterReasonLabels {
                cluster: cluster.into(),
                reason,
            })
            .clone()
    }

    pub fn retry(&self, cluster: &str, reason: &'static str) -> Counter {
        Self::by_reason(&self.retries, cluster, reason)
    }

    pub fn retry_skipped(&self, cluster: &str, reason: &'static str) -> Counter {
        Self::by_reason(&self.retries_skipped, cluster, reason)
    }

    pub fn overloaded(&self, cluster: &str, limit: &'static str) -> Counter {
        Self::by_reason(&self.overloaded, cluster, limit)
    }
}

/// The series of one endpoint.
#[derive(Clone)]
pub struct EndpointCounters {
    pub requests: Counter,
    pub failures: Counter,
    pub ejections: Counter,
    pub healthy: Gauge,
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
                    route: route.into(),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_config_are_escaped_in_the_exposition() {
        let metrics = Metrics::default();
        metrics.filter_error("evil\"} 1\nweft_fake 2\\", "trap");
        let text = metrics.encode();
        assert!(
            text.contains(r#"weft_filter_errors_total{filter="evil\"} 1\nweft_fake 2\\",kind="trap"} 1"#),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("weft_fake")), "{text}");
    }
}
