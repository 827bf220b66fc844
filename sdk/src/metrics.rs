//! Metrics exported on the proxy's admin endpoint, labelled `filter="<name>"` and
//! `name="<your name>"`. Use a small, fixed set of names: each name is a time series.
//!
//! A name must match `[a-zA-Z_:][a-zA-Z0-9_:]*` and be at most 128 bytes, and a filter may
//! use at most 64 names of each kind (counters, gauges, histograms) across all its
//! instances. Other names are ignored, counted in
//! `weft_filter_metric_rejected_total{filter, reason}` and logged now and then. The
//! `*_labelled` calls add labels of your own to a series, within a bound (see
//! [`counter_add_labelled`]).
//!
//! ```no_run
//! weft_sdk::metrics::counter_add("requests", 1);
//! ```
//!
//! A labelled series updated on every request is cheaper through a [`Series`]: named
//! once, then updated without its labels crossing the boundary again.

use crate::bindings::weft::filter::metrics as wit;
use wit::MetricKind;

/// Adds `delta` to a counter (`weft_filter_events_total`).
///
/// ```no_run
/// weft_sdk::metrics::counter_add("denied", 1);
/// ```
pub fn counter_add(name: &str, delta: u64) {
    wit::counter_add(name, delta)
}

/// Sets a gauge (`weft_filter_value`).
///
/// ```no_run
/// weft_sdk::metrics::gauge_set("cache_entries", 42);
/// ```
pub fn gauge_set(name: &str, value: i64) {
    wit::gauge_set(name, value)
}

/// Records a value in a histogram (`weft_filter_observations`); buckets run from 0.001 up,
/// doubling, so seconds are a good unit.
///
/// ```no_run
/// weft_sdk::metrics::histogram_observe("callout_seconds", 0.012);
/// ```
pub fn histogram_observe(name: &str, value: f64) {
    wit::histogram_observe(name, value)
}

/// Adds `delta` to one labelled series of a counter, e.g.
/// `weft_filter_events_total{filter, name="operations", operation="GetUser", type="query"}`
/// (since `weft:filter` 0.2.1).
///
/// At most 4 labels, named `[a-z_][a-z0-9_]*` (not `filter`, `name`, `overflow`, `le`,
/// `quantile` or `__*`), values of at most 128 bytes; a call with other labels is ignored
/// and counted as `reason="invalid_label"`. Labels in any order are one series. A filter
/// holds at most 1024 labelled series per kind: past that, new series are recorded in the
/// name's one `{filter, name, overflow="true"}` series (`reason="overflow"`), so label by
/// values from requests (an operation name) only when a few hundred of them cover the
/// traffic.
///
/// ```no_run
/// weft_sdk::metrics::counter_add_labelled("operations", &[("operation", "GetUser"), ("type", "query")], 1);
/// ```
pub fn counter_add_labelled(name: &str, labels: &[(&str, &str)], delta: u64) {
    wit::counter_add_labelled(name, &owned(labels), delta)
}

/// Sets one labelled series of a gauge; labels as for [`counter_add_labelled`].
///
/// ```no_run
/// weft_sdk::metrics::gauge_set_labelled("queue_depth", &[("queue", "orders")], 3);
/// ```
pub fn gauge_set_labelled(name: &str, labels: &[(&str, &str)], value: i64) {
    wit::gauge_set_labelled(name, &owned(labels), value)
}

/// Records a value in one labelled series of a histogram; labels as for
/// [`counter_add_labelled`].
///
/// ```no_run
/// weft_sdk::metrics::histogram_observe_labelled("operation_seconds", &[("operation", "GetUser")], 0.004);
/// ```
pub fn histogram_observe_labelled(name: &str, labels: &[(&str, &str)], value: f64) {
    wit::histogram_observe_labelled(name, &owned(labels), value)
}

/// The bindings take owned pairs (wit-bindgen's default for a list of tuples).
fn owned(labels: &[(&str, &str)]) -> Vec<(String, String)> {
    labels.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// One series, named once per instance and then updated through a handle the host gave
/// for it (`weft:filter` 0.2.3): an update carries no string across the boundary. Worth it
/// for a labelled series updated on every request, whose labels cost the most to carry
/// (about 1.2k instructions a call, measured); a plain [`counter_add`] costs about what an
/// update through a handle does. The same names, labels and bounds as the calls by name.
///
/// A handle belongs to the instance that made it: keep a `Series` in the instance's own
/// state (the filter value, or a cache it owns), never in anything shared between
/// instances. Where the host gives no handle (a refused series, counted when made, or the
/// instance's 4096 handles all taken) updates go by name, as the calls above do.
///
/// ```no_run
/// use weft_sdk::metrics::Series;
/// let requests = Series::counter("operation_requests", &[("operation", "GetUser")]);
/// requests.add(1);
/// ```
pub struct Series {
    kind: MetricKind,
    handle: Option<u32>,
    name: String,
    labels: Vec<(String, String)>,
}

impl Series {
    /// A counter's series (`weft_filter_events_total`); `labels` may be empty.
    pub fn counter(name: &str, labels: &[(&str, &str)]) -> Series {
        Series::new(MetricKind::Counter, name, labels)
    }

    /// A gauge's series (`weft_filter_value`).
    pub fn gauge(name: &str, labels: &[(&str, &str)]) -> Series {
        Series::new(MetricKind::Gauge, name, labels)
    }

    /// A histogram's series (`weft_filter_observations`).
    pub fn histogram(name: &str, labels: &[(&str, &str)]) -> Series {
        Series::new(MetricKind::Histogram, name, labels)
    }

    fn new(kind: MetricKind, name: &str, labels: &[(&str, &str)]) -> Series {
        let labels = owned(labels);
        let handle = wit::series(kind, name, &labels);
        Series {
            kind,
            handle,
            name: name.to_owned(),
            labels,
        }
    }

    /// Adds `delta` to a counter's series (nothing for another kind's).
    pub fn add(&self, delta: u64) {
        match (self.kind, self.handle) {
            (MetricKind::Counter, Some(handle)) => wit::counter_add_by_handle(handle, delta),
            (MetricKind::Counter, None) if self.labels.is_empty() => wit::counter_add(&self.name, delta),
            (MetricKind::Counter, None) => wit::counter_add_labelled(&self.name, &self.labels, delta),
            _ => {}
        }
    }

    /// Sets a gauge's series (nothing for another kind's).
    pub fn set(&self, value: i64) {
        match (self.kind, self.handle) {
            (MetricKind::Gauge, Some(handle)) => wit::gauge_set_by_handle(handle, value),
            (MetricKind::Gauge, None) if self.labels.is_empty() => wit::gauge_set(&self.name, value),
            (MetricKind::Gauge, None) => wit::gauge_set_labelled(&self.name, &self.labels, value),
            _ => {}
        }
    }

    /// Records `value` in a histogram's series (nothing for another kind's).
    pub fn observe(&self, value: f64) {
        match (self.kind, self.handle) {
            (MetricKind::Histogram, Some(handle)) => wit::histogram_observe_by_handle(handle, value),
            (MetricKind::Histogram, None) if self.labels.is_empty() => wit::histogram_observe(&self.name, value),
            (MetricKind::Histogram, None) => wit::histogram_observe_labelled(&self.name, &self.labels, value),
            _ => {}
        }
    }
}
