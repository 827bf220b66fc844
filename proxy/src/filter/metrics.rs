//! The filter chain's families: failures and fail-open skips of any filter, and what the
//! Wasm host counts per filter (call times, instances, admission, guest metrics, the
//! names and log lines it refused). Resolved when a filter is loaded, so the request path
//! only adds to series it holds; a failure is rare and looks its series up.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::metrics::{Families, LabelText, LatencyHistogram, Registrar};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FilterLabels {
    pub filter: LabelText,
    pub kind: LabelText,
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
pub struct FilterPhaseLabels {
    pub filter: LabelText,
    pub phase: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InstanceLabels {
    pub filter: LabelText,
    pub state: &'static str,
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

fn guest_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// The families of the filter chain and the Wasm host, one per process.
pub struct FilterMetrics {
    /// Failures of filters by filter name and kind (trap, cpu, memory, error).
    pub filter_errors: Family<FilterLabels, Counter>,
    /// Metrics defined by Wasm filters through the host's metrics interface:
    /// `weft_filter_events_total`, `weft_filter_value`, `weft_filter_observations`.
    pub guest_counters: Family<GuestLabels, Counter>,
    pub guest_gauges: Family<GuestLabels, Gauge>,
    pub guest_histograms: Family<GuestLabels, Histogram, fn() -> Histogram>,
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
    /// Time of each filter phase call (its count is the number of calls), by filter and phase.
    filter_duration: Family<FilterPhaseLabels, LatencyHistogram>,
    /// Wasm instances of a filter: live (idle or in a call) and idle in its pool.
    filter_instances: Family<InstanceLabels, Gauge>,
    /// How long requests waited for a turn at a filter at its concurrency limit (only
    /// those that waited: the count is the number of waits).
    filter_queue_wait: Family<FilterOnlyLabels, LatencyHistogram>,
}

impl Families for FilterMetrics {
    fn register(r: &mut Registrar) -> Self {
        let guest_histograms =
            Family::<GuestLabels, Histogram, fn() -> Histogram>::new_with_constructor(guest_histogram);
        FilterMetrics {
            filter_errors: r.family("filter_errors", "Filter failures (trap, limit, error)"),
            // No type in these names (`filter_counter`…): promtool's lint refuses them, and the
            // guest's own name is the `name` label, so one family per kind is enough.
            guest_counters: r.family(
                "filter_events",
                "What Wasm filters count (metrics.counter-add), by filter and name",
            ),
            guest_gauges: r.family(
                "filter_value",
                "What Wasm filters set (metrics.gauge-set), by filter and name",
            ),
            guest_histograms: r.add(
                "filter_observations",
                "What Wasm filters observe (metrics.histogram-observe), by filter and name",
                guest_histograms,
            ),
            filter_metric_rejected: r.family(
                "filter_metric_rejected",
                "Metric names used by Wasm filters and refused, by reason",
            ),
            filter_log_dropped: r.family(
                "filter_log_dropped",
                "Wasm filter log lines dropped by the per-filter log rate limit",
            ),
            kv_evictions: r.family(
                "kv_evictions",
                "Live KV keys evicted from a filter's full space by its own writes",
            ),
            filter_rejected: r.family(
                "filter_rejected",
                "Requests refused with 503 because a filter was at its concurrency limit",
            ),
            filter_skipped: r.family(
                "filter_skipped",
                "Filter failures skipped because the filter fails open (on_error = \"open\")",
            ),
            filter_duration: r.family(
                "filter_duration_seconds",
                "Time of each filter phase call, by filter and phase (the count is the calls)",
            ),
            filter_instances: r.family(
                "filter_instances",
                "Wasm instances of a filter: live (all) and idle (pooled for reuse)",
            ),
            filter_queue_wait: r.family(
                "filter_queue_wait_seconds",
                "Time requests waited for a turn at a filter at its concurrency limit",
            ),
        }
    }
}

impl FilterMetrics {
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

    pub fn filter_error(&self, filter: &str, kind: &str) {
        self.filter_errors
            .get_or_create(&FilterLabels {
                filter: filter.into(),
                kind: kind.into(),
            })
            .inc();
    }

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

/// A filter's per-call figures.
#[derive(Clone, Default)]
pub struct FilterStats {
    pub request: LatencyHistogram,
    pub response: LatencyHistogram,
    pub live: Gauge,
    pub idle: Gauge,
    pub queue_wait: LatencyHistogram,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_from_config_are_escaped_in_the_exposition() {
        let (metrics, exposition) = FilterMetrics::registered();
        metrics.filter_error("evil\"} 1\nweft_fake 2\\", "trap");
        let text = exposition.encode();
        assert!(
            text.contains(r#"weft_filter_errors_total{filter="evil\"} 1\nweft_fake 2\\",kind="trap"} 1"#),
            "{text}"
        );
        assert!(!text.lines().any(|l| l.starts_with("weft_fake")), "{text}");
    }
}
