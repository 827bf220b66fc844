//! Process-wide metrics, exported in the Prometheus text format by the admin listener.
//!
//! The request path never looks a metric up by label: routes and filters hold their
//! counters, created when the config is built, so counting is one atomic add.

use std::fmt::Write;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, EncodeLabelValue, LabelSetEncoder, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

mod exposition;
mod latency;

pub use exposition::{OPENMETRICS, PROMETHEUS_TEXT, to_prometheus_text, wants_openmetrics};
pub use latency::LatencyHistogram;

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

/// A guest metric's series: `filter`, `name`, then the labels the guest gave
/// (`metrics.*-labelled`), whose names the host checked and whose values it escapes.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct GuestLabels {
    pub filter: LabelText,
    /// Checked against the metric-name grammar before it gets here; escaped anyway.
    pub name: LabelText,
    pub labels: Box<[(Box<str>, LabelText)]>,
}

impl EncodeLabelSet for GuestLabels {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        ("filter", &self.filter).encode(encoder.encode_label())?;
        ("name", &self.name).encode(encoder.encode_label())?;
        for (key, value) in &self.labels {
            (&**key, value).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

impl EncodeLabelValue for &LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        escape_label_value(&self.0, encoder)
    }
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
pub struct RouteOnlyLabels {
    pub route: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterLabels {
    pub cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterClassLabels {
    pub cluster: LabelText,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClusterErrorLabels {
    pub cluster: LabelText,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterPhaseLabels {
    pub filter: LabelText,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub filter: LabelText,
    pub state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginInfoLabels {
    pub filter: LabelText,
    pub sha256: String,
    pub wit: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerOutcomeLabels {
    pub listener: String,
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
    /// Clusters and endpoints (see the "Upstream" section below).
    pub upstream: UpstreamMetrics,
    registry: Registry,
    /// Downstream responses by route and status class.
    pub responses: Family<RouteLabels, Counter>,
    /// Failures of filters by filter name and kind (trap, cpu, memory, error).
    pub filter_errors: Family<FilterLabels, Counter>,
    /// Config and plugin reloads by outcome.
    pub reloads: Family<ReloadLabels, Counter>,
    /// Metrics defined by Wasm filters through the host's metrics interface:
    /// `weft_filter_events_total`, `weft_filter_value`, `weft_filter_observations`.
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
    /// Failures `on_error = "open"` skipped, by filter (each is in `filter_errors` too).
    filter_skipped: Family<FilterOnlyLabels, Counter>,
    /// Time from a request's head to its response's head, by route.
    request_duration: Family<RouteOnlyLabels, LatencyHistogram>,
    /// Responses received from a cluster by status class, and exchanges that got none.
    upstream_responses: Family<ClusterClassLabels, Counter>,
    upstream_errors: Family<ClusterErrorLabels, Counter>,
    /// Time from sending a request upstream to its response head, by cluster.
    upstream_duration: Family<ClusterLabels, LatencyHistogram>,
    /// Requests being handled now (until their response head), by listener.
    requests_in_flight: Family<ListenerLabels, Gauge>,
    /// Bytes read from and written to downstream connections (after TLS), by listener.
    received_bytes: Family<ListenerLabels, Counter>,
    sent_bytes: Family<ListenerLabels, Counter>,
    /// TLS handshakes by listener and outcome.
    tls_handshakes: Family<ListenerOutcomeLabels, Counter>,
    /// Time of each filter phase call (its count is the number of calls), by filter and phase.
    filter_duration: Family<FilterPhaseLabels, LatencyHistogram>,
    /// Wasm instances of a filter: live (idle or in a call) and idle in its pool.
    filter_instances: Family<InstanceLabels, Gauge>,
    /// How long requests waited for a turn at a filter at its concurrency limit (only
    /// those that waited: the count is the number of waits).
    filter_queue_wait: Family<FilterOnlyLabels, LatencyHistogram>,
    /// The config version serving now.
    config_version: Gauge,
    /// One series per loaded Wasm plugin, value 1: its content hash and WIT version.
    plugin_info: Family<PluginInfoLabels, Gauge>,
    /// What routes decided: splits, faults, mirrors.
    pub decisions: RouteDecisions,
    /// Access-log records and trace spans dropped because their writer was behind.
    pub access_log_dropped: Counter,
    pub trace_spans_dropped: Counter,
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
        // No type in these names (`filter_counter`…): promtool's lint refuses them, and the
        // guest's own name is the `name` label, so one family per kind is enough.
        registry.register(
            "filter_events",
            "What Wasm filters count (metrics.counter-add), by filter and name",
            guest_counters.clone(),
        );
        registry.register(
            "filter_value",
            "What Wasm filters set (metrics.gauge-set), by filter and name",
            guest_gauges.clone(),
        );
        registry.register(
            "filter_observations",
            "What Wasm filters observe (metrics.histogram-observe), by filter and name",
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
        let filter_skipped = Family::<FilterOnlyLabels, Counter>::default();
        registry.register(
            "filter_skipped",
            "Filter failures skipped because the filter fails open (on_error = \"open\")",
            filter_skipped.clone(),
        );
        let request_duration = Family::<RouteOnlyLabels, LatencyHistogram>::default();
        registry.register(
            "request_duration_seconds",
            "Time from a request's head to its response's head, by route",
            request_duration.clone(),
        );
        let upstream_responses = Family::<ClusterClassLabels, Counter>::default();
        registry.register(
            "upstream_responses",
            "Responses received from a cluster, by status class",
            upstream_responses.clone(),
        );
        let upstream_errors = Family::<ClusterErrorLabels, Counter>::default();
        registry.register(
            "upstream_errors",
            "Upstream exchanges that got no response (connect, timeout, exchange), by cluster",
            upstream_errors.clone(),
        );
        let upstream_duration = Family::<ClusterLabels, LatencyHistogram>::default();
        registry.register(
            "upstream_duration_seconds",
            "Time from sending a request upstream to its response head, by cluster",
            upstream_duration.clone(),
        );
        let requests_in_flight = Family::<ListenerLabels, Gauge>::default();
        registry.register(
            "requests_in_flight",
            "Requests being handled (until their response head), by listener",
            requests_in_flight.clone(),
        );
        let received_bytes = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "received_bytes",
            "Bytes read from downstream connections (after TLS), by listener",
            received_bytes.clone(),
        );
        let sent_bytes = Family::<ListenerLabels, Counter>::default();
        registry.register(
            "sent_bytes",
            "Bytes written to downstream connections (before TLS), by listener",
            sent_bytes.clone(),
        );
        let tls_handshakes = Family::<ListenerOutcomeLabels, Counter>::default();
        registry.register(
            "tls_handshakes",
            "TLS handshakes by listener and outcome (ok, failed, timeout)",
            tls_handshakes.clone(),
        );
        let filter_duration = Family::<FilterPhaseLabels, LatencyHistogram>::default();
        registry.register(
            "filter_duration_seconds",
            "Time of each filter phase call, by filter and phase (the count is the calls)",
            filter_duration.clone(),
        );
        let filter_instances = Family::<InstanceLabels, Gauge>::default();
        registry.register(
            "filter_instances",
            "Wasm instances of a filter: live (all) and idle (pooled for reuse)",
            filter_instances.clone(),
        );
        let filter_queue_wait = Family::<FilterOnlyLabels, LatencyHistogram>::default();
        registry.register(
            "filter_queue_wait_seconds",
            "Time requests waited for a turn at a filter at its concurrency limit",
            filter_queue_wait.clone(),
        );
        let config_version = Gauge::default();
        registry.register(
            "config_version",
            "The config version serving now",
            config_version.clone(),
        );
        let plugin_info = Family::<PluginInfoLabels, Gauge>::default();
        registry.register(
            "plugin_info",
            "Loaded Wasm plugins of the serving config (value 1): content hash and WIT version",
            plugin_info.clone(),
        );
        let upstream = UpstreamMetrics::register(&mut registry);
        let decisions = RouteDecisions::register(&mut registry);
        let (access_log_dropped, trace_spans_dropped) = register_observe(&mut registry);
        Metrics {
            upstream,
            decisions,
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
            filter_skipped,
            request_duration,
            upstream_responses,
            upstream_errors,
            upstream_duration,
            requests_in_flight,
            received_bytes,
            sent_bytes,
            tls_handshakes,
            filter_duration,
            filter_instances,
            filter_queue_wait,
            config_version,
            plugin_info,
            access_log_dropped,
            trace_spans_dropped,
        }
    }
}

/// The access log's and the trace exporter's drop counters (`observe`).
fn register_observe(registry: &mut Registry) -> (Counter, Counter) {
    let log = Counter::default();
    registry.register(
        "access_log_dropped",
        "Access-log records dropped because the writer was behind",
        log.clone(),
    );
    let spans = Counter::default();
    registry.register(
        "trace_spans_dropped",
        "Trace spans dropped because the export queue was full",
        spans.clone(),
    );
    (log, spans)
}

impl Metrics {
    /// The OpenMetrics exposition of every metric ([`to_prometheus_text`] converts it).
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

    /// The in-flight gauge and byte counters of a listener (resolved once, at bind).
    pub fn listener(&self, listener: &str) -> ListenerCounters {
        let labels = ListenerLabels {
            listener: listener.to_owned(),
        };
        ListenerCounters {
            in_flight: self.requests_in_flight.get_or_create(&labels).clone(),
            received: self.received_bytes.get_or_create(&labels).clone(),
            sent: self.sent_bytes.get_or_create(&labels).clone(),
        }
    }

    /// A TLS handshake's outcome: `ok`, `failed`, `timeout`. Once per connection, off
    /// the request path.
    pub fn tls_handshake(&self, listener: &str, outcome: &'static str) {
        let labels = ListenerOutcomeLabels {
            listener: listener.to_owned(),
            outcome,
        };
        self.tls_handshakes.get_or_create(&labels).inc();
    }

    /// A filter's call-duration histograms and instance gauges, resolved once at load.
    pub fn filter_stats(&self, filter: &str) -> FilterStats {
        let phase = |phase| {
            self.filter_duration
                .get_or_create(&FilterPhaseLabels {
                    filter: filter.into(),
                    phase,
                })
                .clone()
        };
        let instances = |state| {
            self.filter_instances
                .get_or_create(&InstanceLabels {
                    filter: filter.into(),
                    state,
                })
                .clone()
        };
        FilterStats {
            request: phase("request"),
            response: phase("response"),
            live: instances("live"),
            idle: instances("idle"),
            queue_wait: self
                .filter_queue_wait
                .get_or_create(&FilterOnlyLabels { filter: filter.into() })
                .clone(),
        }
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
    /// A failure of `filter` skipped by fail-open. Failures are rare: the series is looked
    /// up here rather than held.
    pub fn filter_skipped(&self, filter: &str) {
        self.filter_skipped
            .get_or_create(&FilterOnlyLabels { filter: filter.into() })
            .inc();
    }

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

/// Per-route response counters and latency, resolved once when the route is built.
#[derive(Clone)]
pub struct RouteCounters {
    by_class: [Counter; 5],
    duration: LatencyHistogram,
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
            duration: metrics
                .request_duration
                .get_or_create(&RouteOnlyLabels { route: route.into() })
                .clone(),
        }
    }

    pub fn record(&self, status: http::StatusCode, elapsed: Duration) {
        self.by_class[class_index(status)].inc();
        self.duration.observe(elapsed);
    }
}

fn class_index(status: http::StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// Per-cluster upstream counters and latency, resolved once when the config is built.
#[derive(Clone)]
pub struct ClusterCounters {
    by_class: [Counter; 5],
    /// connect, timeout, exchange.
    errors: [Counter; 3],
    duration: LatencyHistogram,
}

/// Why an upstream exchange got no response, as [`ClusterCounters::failed`] counts it.
#[derive(Clone, Copy)]
pub enum UpstreamFailure {
    Connect = 0,
    Timeout = 1,
    Exchange = 2,
}

impl ClusterCounters {
    pub fn new(metrics: &Metrics, cluster: &str) -> Self {
        let class = |class| {
            metrics
                .upstream_responses
                .get_or_create(&ClusterClassLabels {
                    cluster: cluster.into(),
                    class,
                })
                .clone()
        };
        let error = |kind| {
            metrics
                .upstream_errors
                .get_or_create(&ClusterErrorLabels {
                    cluster: cluster.into(),
                    kind,
                })
                .clone()
        };
        ClusterCounters {
            by_class: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            errors: [error("connect"), error("timeout"), error("exchange")],
            duration: metrics
                .upstream_duration
                .get_or_create(&ClusterLabels {
                    cluster: cluster.into(),
                })
                .clone(),
        }
    }

    pub fn answered(&self, status: http::StatusCode, elapsed: Duration) {
        self.by_class[class_index(status)].inc();
        self.duration.observe(elapsed);
    }

    pub fn failed(&self, failure: UpstreamFailure) {
        self.errors[failure as usize].inc();
    }
}

/// A listener's request gauge and byte counters.
#[derive(Clone, Default)]
pub struct ListenerCounters {
    pub in_flight: Gauge,
    pub received: Counter,
    pub sent: Counter,
}

/// A filter's per-call figures.
#[derive(Clone, Default)]
pub struct FilterStats {
    pub request: LatencyHistogram,
    pub response: LatencyHistogram,
    pub live: Gauge,
    pub idle: Gauge,
    pub queue_wait: LatencyHistogram,
}

// Route traffic decisions (`route/shift.rs`, `route/fault.rs`, `route/mirror.rs`): resolved per route when
// the config is built, so the request path only increments.

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClusterLabels {
    pub route: LabelText,
    pub cluster: LabelText,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteKindLabels {
    pub route: LabelText,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteClusterKindLabels {
    pub route: LabelText,
    pub cluster: LabelText,
    pub kind: &'static str,
}

pub struct RouteDecisions {
    /// Requests a route's split or pin sent to each cluster.
    shifted: Family<RouteClusterLabels, Counter>,
    /// Faults injected by a route, by kind (`delay`, `abort`).
    faults: Family<RouteKindLabels, Counter>,
    /// Shadow copies of a route's requests, by mirror cluster and outcome (`sent`:
    /// answered; `failed`; `dropped`: not sent, the body too large or too many in flight).
    mirrored: Family<RouteClusterKindLabels, Counter>,
}

impl RouteDecisions {
    fn register(registry: &mut Registry) -> RouteDecisions {
        let shifted = Family::<RouteClusterLabels, Counter>::default();
        registry.register(
            "route_shifted",
            "Requests a route's split or pin sent to each cluster",
            shifted.clone(),
        );
        let faults = Family::<RouteKindLabels, Counter>::default();
        registry.register("route_faults", "Faults injected by a route, by kind", faults.clone());
        let mirrored = Family::<RouteClusterKindLabels, Counter>::default();
        registry.register(
            "route_mirrored",
            "Shadow copies of a route's requests, by mirror cluster and outcome",
            mirrored.clone(),
        );
        RouteDecisions {
            shifted,
            faults,
            mirrored,
        }
    }

    pub fn shifted(&self, route: &str, cluster: &str) -> Counter {
        self.shifted
            .get_or_create(&RouteClusterLabels {
                route: route.into(),
                cluster: cluster.into(),
            })
            .clone()
    }

    pub fn mirrored(&self, route: &str, cluster: &str, outcome: &'static str) -> Counter {
        self.mirrored
            .get_or_create(&RouteClusterKindLabels {
                route: route.into(),
                cluster: cluster.into(),
                kind: outcome,
            })
            .clone()
    }

    pub fn fault(&self, route: &str, kind: &'static str) -> Counter {
        self.faults
            .get_or_create(&RouteKindLabels {
                route: route.into(),
                kind,
            })
            .clone()
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod escaping {
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
