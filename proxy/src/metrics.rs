//! Process-wide metrics, exported in the Prometheus text format by the admin listener.
//!
//! The request path never looks a metric up by label: routes and filters hold their
//! counters, created when the config is built, so counting is one atomic add.

use std::fmt::Write;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};

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

impl EncodeLabelValue for &LabelText {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        escape_label_value(&self.0, encoder)
    }
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
pub struct ListenerOutcomeLabels {
    pub listener: String,
    pub outcome: &'static str,
}

/// Where an intercepted connection was going, as a label: its original destination's port
/// when the config names that port (a route's `destination_port`, the listener's
/// `opaque_ports` or `strict_ports`), else `other`. Never the address, nor any port a
/// client picks: a client dialling every port makes one series more, not 65 535.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Destination {
    Port(u16),
    Other,
}

impl EncodeLabelValue for Destination {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        match self {
            Destination::Port(port) => write!(encoder, "{port}"),
            Destination::Other => encoder.write_str("other"),
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterceptedLabels {
    pub listener: String,
    pub direction: &'static str,
    pub destination: Destination,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InterceptedClassLabels {
    pub listener: String,
    pub direction: &'static str,
    pub destination: Destination,
    pub class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PassthroughBytesLabels {
    pub listener: String,
    pub direction: &'static str,
    pub destination: Destination,
    /// `client` (read from the intercepted client) or `server` (from where it went).
    pub from: &'static str,
}

/// What an intercepted connection is labelled with: its listener, direction and bounded
/// destination.
#[derive(Clone, Copy, Debug)]
pub struct Interception<'a> {
    pub listener: &'a str,
    pub direction: &'static str,
    pub destination: Destination,
}

/// The families the stages register, in the order the exposition has always listed
/// them: scrapers, dashboards and the golden test (`metrics/tests.rs`) see the same text
/// whichever stage registers first. A family not named here comes after these, in the
/// order it was registered; a new family goes at the end of this list.
const EXPOSITION_ORDER: &[&str] = &[
    "responses",
    "filter_errors",
    "reloads",
    "filter_events",
    "filter_value",
    "filter_observations",
    "kv_errors",
    "connections_open",
    "connections_rejected",
    "connections_closed",
    "downstream_refused",
    "filter_metric_rejected",
    "filter_log_dropped",
    "kv_evictions",
    "filter_rejected",
    "filter_skipped",
    "request_duration_seconds",
    "upstream_responses",
    "upstream_errors",
    "upstream_duration_seconds",
    "requests_in_flight",
    "received_bytes",
    "sent_bytes",
    "tls_handshakes",
    "filter_duration_seconds",
    "filter_instances",
    "filter_queue_wait_seconds",
    "config_version",
    "plugin_info",
    "upstream_requests",
    "upstream_failures",
    "upstream_ejections",
    "upstream_endpoint_healthy",
    "upstream_retries",
    "upstream_retries_skipped",
    "upstream_overloaded",
    "route_shifted",
    "route_faults",
    "route_mirrored",
    "access_log_dropped",
    "trace_spans_dropped",
    "xds_updates",
    "xds_apply_seconds",
    "xds_reconnects",
    "intercepted_connections",
    "intercepted_responses",
    "passthrough_bytes",
];

/// A family created and waiting for the registry to be sealed.
type Pending = Box<dyn FnOnce(&mut Registry)>;

/// The one way a family gets into the exposition. Each stage declares its families in
/// its own `metrics.rs` and creates them here, once per process, before [`Metrics::new`]
/// seals the registry; the request path then holds the series it resolved at build.
#[derive(Default)]
pub struct Registrar {
    pending: Vec<(&'static str, Pending)>,
}

impl Registrar {
    /// A new family (or single metric) registered as `weft_<name>` with `help`.
    pub fn family<M: Metric + Clone + Default>(&mut self, name: &'static str, help: &'static str) -> M {
        self.add(name, help, M::default())
    }

    /// Registers `metric`, built by the caller (a family with a bucket constructor).
    pub fn add<M: Metric + Clone>(&mut self, name: &'static str, help: &'static str, metric: M) -> M {
        let registered = metric.clone();
        self.pending.push((
            name,
            Box::new(move |registry| registry.register(name, help, registered)),
        ));
        metric
    }

    fn seal(mut self) -> Registry {
        let position = |name| {
            EXPOSITION_ORDER
                .iter()
                .position(|n| *n == name)
                .unwrap_or(EXPOSITION_ORDER.len())
        };
        // Stable: families outside the list keep their registration order.
        self.pending.sort_by_key(|(name, _)| position(*name));
        let mut registry = Registry::with_prefix("weft");
        for (_, register) in self.pending {
            register(&mut registry);
        }
        registry
    }
}

/// A stage's metric families: registered once per process through the [`Registrar`].
pub trait Families: Sized {
    fn register(registrar: &mut Registrar) -> Self;

    /// The families in no registry: for tests and `weft check`, which expose nothing.
    fn unregistered() -> Self {
        Self::register(&mut Registrar::default())
    }

    /// The families alone in a sealed registry: for tests that read the exposition.
    fn registered() -> (Self, Metrics) {
        let mut registrar = Registrar::default();
        let families = Self::register(&mut registrar);
        (families, Metrics::new(registrar))
    }
}

/// The index of a status's class (1xx..5xx) in a per-class array of counters.
pub fn class_index(status: http::StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// The process-wide registry, and the downstream connection's families. One per process;
/// survives config reloads. The connection's families stay on the ground because the
/// door counts them (`conn.rs` holds a listener's [`ListenerCounters`], `proxy.rs` counts
/// front-door refusals) and `listen/` sits above both. Every other family lives with its
/// owner (`upstream/`, `route/`, `filter/`, `observe/`, `kv/` and `state/metrics.rs`).
pub struct Metrics {
    registry: Registry,
    /// Downstream connections open now, by listener.
    connections_open: Family<ListenerLabels, Gauge>,
    /// Connections closed at accept by a cap, by listener and cap.
    connections_rejected: Family<ListenerReasonLabels, Counter>,
    /// Connections closed by a timeout, by listener and timeout.
    connections_closed: Family<ListenerReasonLabels, Counter>,
    /// Requests the front door refused (limits, malformed), by listener and reason.
    downstream_refused: Family<ListenerReasonLabels, Counter>,
    /// Requests being handled now (until their response head), by listener.
    requests_in_flight: Family<ListenerLabels, Gauge>,
    /// Bytes read from and written to downstream connections (after TLS), by listener.
    received_bytes: Family<ListenerLabels, Counter>,
    sent_bytes: Family<ListenerLabels, Counter>,
    /// TLS handshakes by listener and outcome.
    tls_handshakes: Family<ListenerOutcomeLabels, Counter>,
    /// Connections a transparent (sidecar) listener took, by listener, direction,
    /// destination and what became of them.
    intercepted_connections: Family<InterceptedLabels, Counter>,
    /// Intercepted HTTP requests' answers, by the same and status class.
    intercepted_responses: Family<InterceptedClassLabels, Counter>,
    /// Bytes passed through (not HTTP, TLS not terminated), by the same and side.
    passthrough_bytes: Family<PassthroughBytesLabels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new(Registrar::default())
    }
}

impl Metrics {
    /// Registers these families beside what the stages registered in `registrar`, and
    /// seals the registry.
    pub fn new(mut registrar: Registrar) -> Self {
        let r = &mut registrar;
        let mut metrics = Metrics {
            connections_open: r.family("connections_open", "Downstream connections open"),
            connections_rejected: r.family(
                "connections_rejected",
                "Downstream connections closed at accept by a connection cap",
            ),
            connections_closed: r.family("connections_closed", "Downstream connections closed by a timeout"),
            downstream_refused: r.family(
                "downstream_refused",
                "Requests refused by the front door (limits, malformed input)",
            ),
            requests_in_flight: r.family(
                "requests_in_flight",
                "Requests being handled (until their response head), by listener",
            ),
            received_bytes: r.family(
                "received_bytes",
                "Bytes read from downstream connections (after TLS), by listener",
            ),
            sent_bytes: r.family(
                "sent_bytes",
                "Bytes written to downstream connections (before TLS), by listener",
            ),
            tls_handshakes: r.family(
                "tls_handshakes",
                "TLS handshakes by listener and outcome (ok, failed, timeout)",
            ),
            intercepted_connections: r.family(
                "intercepted_connections",
                "Connections a transparent listener took, by listener, direction, destination port (named by the config, else other) and outcome (http, tls, tls_routed, tls_invalid, opaque, closed, loop, no_original_dst, plaintext_refused, connect_failed)",
            ),
            intercepted_responses: r.family(
                "intercepted_responses",
                "Answers to HTTP requests on intercepted connections, by listener, direction, destination port and status class",
            ),
            passthrough_bytes: r.family(
                "passthrough_bytes",
                "Bytes of intercepted connections passed through unopened, by listener, direction, destination port and the side that sent them (client, server)",
            ),
            registry: Registry::default(),
        };
        metrics.registry = registrar.seal();
        metrics
    }
}

impl Metrics {
    /// The OpenMetrics exposition of every metric ([`to_prometheus_text`] converts it).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
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

    /// What became of a connection a transparent listener took: the protocol it was served
    /// or passed through as, or why it was refused. Once per connection.
    pub fn connection_intercepted(&self, at: Interception<'_>, outcome: &'static str) {
        let labels = InterceptedLabels {
            listener: at.listener.to_owned(),
            direction: at.direction,
            destination: at.destination,
            outcome,
        };
        self.intercepted_connections.get_or_create(&labels).inc();
    }

    /// The answer counters of an intercepted HTTP connection, by status class (resolved
    /// once per connection; a request adds to one).
    pub fn intercepted_responses(&self, at: Interception<'_>) -> [Counter; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|class| {
            let labels = InterceptedClassLabels {
                listener: at.listener.to_owned(),
                direction: at.direction,
                destination: at.destination,
                class,
            };
            self.intercepted_responses.get_or_create(&labels).clone()
        })
    }

    /// The byte counters of a passed-through connection: from the client, from the server.
    pub fn passthrough_bytes(&self, at: Interception<'_>) -> (Counter, Counter) {
        let side = |from| {
            let labels = PassthroughBytesLabels {
                listener: at.listener.to_owned(),
                direction: at.direction,
                destination: at.destination,
                from,
            };
            self.passthrough_bytes.get_or_create(&labels).clone()
        };
        (side("client"), side("server"))
    }
}

/// A listener's request gauge and byte counters.
#[derive(Clone, Default)]
pub struct ListenerCounters {
    pub in_flight: Gauge,
    pub received: Counter,
    pub sent: Counter,
}
