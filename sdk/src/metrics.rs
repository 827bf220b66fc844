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

use crate::bindings::weft::filter::metrics as wit;

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
