//! Metrics exported on the proxy's admin endpoint, labelled `filter="<name>"` and
//! `name="<your name>"`. Use a small, fixed set of names: each name is a time series.
//!
//! A name must match `[a-zA-Z_:][a-zA-Z0-9_:]*` and be at most 128 bytes, and a filter may
//! use at most 64 names of each kind (counters, gauges, histograms) across all its
//! instances. Other names are ignored, counted in
//! `weft_filter_metric_rejected_total{filter, reason}` and logged now and then.
//!
//! ```no_run
//! weft_sdk::metrics::counter_add("requests", 1);
//! ```

use crate::bindings::weft::filter::metrics as wit;

/// Adds `delta` to a counter (`weft_filter_counter_total`).
///
/// ```no_run
/// weft_sdk::metrics::counter_add("denied", 1);
/// ```
pub fn counter_add(name: &str, delta: u64) {
    wit::counter_add(name, delta)
}

/// Sets a gauge (`weft_filter_gauge`).
///
/// ```no_run
/// weft_sdk::metrics::gauge_set("cache_entries", 42);
/// ```
pub fn gauge_set(name: &str, value: i64) {
    wit::gauge_set(name, value)
}

/// Records a value in a histogram (`weft_filter_histogram`); buckets run from 0.001 up,
/// doubling, so seconds are a good unit.
///
/// ```no_run
/// weft_sdk::metrics::histogram_observe("callout_seconds", 0.012);
/// ```
pub fn histogram_observe(name: &str, value: f64) {
    wit::histogram_observe(name, value)
}
