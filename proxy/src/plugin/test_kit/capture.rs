//! What a case's filter emitted beside its decisions: its log lines, captured by a
//! `tracing` layer scoped to the case, and its metric series, read from the kit's own
//! registry. Both come from the host code the proxy runs (the log budget, the escaping,
//! the name and label checks), so a case sees what an operator would.

use std::sync::{Arc, Mutex, PoisonError};

use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, Layer};

use crate::filter::metrics::{FilterMetrics, GuestLabels};
use crate::plugin::cases::{ExpectMetric, MetricKind};

/// The host logs a guest's line under this target (`wasm/log.rs`).
const GUEST_TARGET: &str = "weft::filter";

/// One line a filter logged.
#[derive(Debug, Clone)]
pub(crate) struct Line {
    pub level: &'static str,
    pub message: String,
}

/// Collects the guest's lines of one case; anything else the host logs is left out.
#[derive(Clone, Default)]
pub(crate) struct Lines(Arc<Mutex<Vec<Line>>>);

impl Lines {
    pub fn take(&self) -> Vec<Line> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl<S: tracing::Subscriber> Layer<S> for Lines {
    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        if meta.target() != GUEST_TARGET {
            return;
        }
        let mut visitor = Message(String::new());
        event.record(&mut visitor);
        let level = match *meta.level() {
            tracing::Level::TRACE => "trace",
            tracing::Level::DEBUG => "debug",
            tracing::Level::INFO => "info",
            tracing::Level::WARN => "warn",
            tracing::Level::ERROR => "error",
        };
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(Line {
            level,
            message: visitor.0,
        });
    }
}

struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}

/// A subscriber that sees every level, so a case checks a `debug` line whatever
/// `RUST_LOG` says.
pub(crate) fn subscriber(lines: Lines) -> impl tracing::Subscriber + Send + Sync {
    use tracing_subscriber::layer::SubscriberExt as _;
    tracing_subscriber::registry().with(lines)
}

/// Empties the guest families, so each case starts from no series: a counter's value is
/// then what this case added.
pub(crate) fn reset(metrics: &FilterMetrics) {
    metrics.guest_counters.clear();
    metrics.guest_gauges.clear();
    metrics.guest_histograms.clear();
}

/// What the series `expect` names holds: `None` when the filter never emitted it.
pub(crate) enum Reading {
    Counter(u64),
    Gauge(i64),
    Histogram { count: u64, sum: f64 },
}

pub(crate) fn read(metrics: &FilterMetrics, filter: &str, expect: &ExpectMetric) -> Option<Reading> {
    let labels = GuestLabels {
        filter: filter.into(),
        name: expect.name.as_str().into(),
        labels: expect
            .labels
            .iter()
            .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
            .collect(),
    };
    match expect.kind {
        MetricKind::Counter => metrics.guest_counters.get(&labels).map(|c| Reading::Counter(c.get())),
        MetricKind::Gauge => metrics.guest_gauges.get(&labels).map(|g| Reading::Gauge(g.get())),
        MetricKind::Histogram => metrics.guest_histograms.get(&labels).map(|h| Reading::Histogram {
            count: h.count(),
            sum: h.sum(),
        }),
    }
}
