//! Host side of `weft:filter/metrics`, backed by the process's `Metrics` families with
//! labels `filter` and `name`.
//!
//! A guest's name is checked at the boundary (the Prometheus metric-name grammar, a
//! bounded length) and counted against a bound of distinct names per filter and kind,
//! shared by all the filter's instances for the life of its config version: each name is
//! a time series in the exposition, so neither a guest building names from request data
//! nor a large instance pool may grow it without end. Refused names are counted in
//! `weft_filter_metric_rejected_total{filter,reason}` and logged at most now and then.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use super::bindings::metrics::Host;
use super::output::Bucket;
use super::state::HostState;
use crate::metrics::{GuestLabels, Metrics, RejectLabels};

/// Distinct names one filter may use per kind, across all its instances.
pub(crate) const MAX_NAMES: usize = 64;

/// Longest name accepted, in bytes: room for a descriptive name, not for a payload.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Why a name was refused; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Empty, or not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    Invalid,
    TooLong,
    /// The filter already uses [`MAX_NAMES`] other names of this kind.
    TooMany,
}

impl Rejection {
    const ALL: [Rejection; 3] = [Rejection::Invalid, Rejection::TooLong, Rejection::TooMany];

    fn label(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::TooLong => "too_long",
            Rejection::TooMany => "too_many",
        }
    }
}

/// Checks `name` against the Prometheus metric-name grammar `[a-zA-Z_:][a-zA-Z0-9_:]*`
/// and [`MAX_NAME_LEN`]. Such a name needs no escaping anywhere it ends up (label value,
/// log field), and reads the same in every dashboard.
pub(crate) fn check_name(name: &str) -> Result<(), Rejection> {
    let bytes = name.as_bytes();
    let first_ok = bytes
        .first()
        .is_some_and(|b| b.is_ascii_alphabetic() || matches!(b, b'_' | b':'));
    if !first_ok
        || !bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b':'))
    {
        return Err(Rejection::Invalid);
    }
    if bytes.len() > MAX_NAME_LEN {
        return Err(Rejection::TooLong);
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The names of one kind a filter uses. Filled under a lock until it holds
/// [`MAX_NAMES`]; then frozen, and read lock-free from then on. Instances only come here
/// on a miss in their own cache, so the lock is taken at most once per name and instance.
#[derive(Default)]
struct NameSet {
    open: Mutex<HashSet<Box<str>>>,
    full: OnceLock<HashSet<Box<str>>>,
}

impl NameSet {
    fn admit(&self, name: &str) -> bool {
        if let Some(full) = self.full.get() {
            return full.contains(name);
        }
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        // Frozen while this caller waited for the lock: `open` was emptied into `full`.
        if let Some(full) = self.full.get() {
            return full.contains(name);
        }
        if open.contains(name) {
            return true;
        }
        if open.len() >= MAX_NAMES {
            return false;
        }
        open.insert(name.into());
        if open.len() == MAX_NAMES {
            let _ = self.full.set(std::mem::take(&mut *open));
        }
        true
    }
}

/// How often a refused name may be logged per filter: a guest refused on every request
/// must not turn the proxy's log into its own.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// The metric names of one loaded filter, shared by all its instances.
pub(crate) struct MetricNames {
    kinds: [NameSet; 3],
    /// By [`Rejection`], resolved once so refusing costs an atomic add.
    rejected: [Counter; 3],
    warn: Bucket,
}

impl MetricNames {
    pub fn new(filter: &str, metrics: &Metrics) -> Self {
        let rejected = Rejection::ALL.map(|r| {
            metrics
                .filter_metric_rejected
                .get_or_create(&RejectLabels {
                    filter: filter.into(),
                    reason: r.label(),
                })
                .clone()
        });
        MetricNames {
            kinds: Default::default(),
            rejected,
            warn: Bucket::new(WARN_EVERY, 1),
        }
    }

    fn admit(&self, filter: &str, kind: Kind, name: &str) -> bool {
        let verdict = check_name(name).and_then(|()| {
            if self.kinds[kind as usize].admit(name) {
                Ok(())
            } else {
                Err(Rejection::TooMany)
            }
        });
        let Err(reason) = verdict else { return true };
        self.rejected[reason as usize].inc();
        if self.warn.take() {
            // Cut, and Debug-formatted (quoted, control characters escaped): the name is
            // the guest's and may hold anything, including what looks like log syntax.
            let shown: String = name.chars().take(MAX_NAME_LEN).collect();
            tracing::warn!(
                filter,
                metric = ?shown,
                reason = reason.label(),
                "filter metric name refused: names match [a-zA-Z_:][a-zA-Z0-9_:]*, are at most \
                 {MAX_NAME_LEN} bytes, and a filter uses at most {MAX_NAMES} per kind \
                 (counted in weft_filter_metric_rejected_total; logged at most every {WARN_EVERY:?})"
            );
        }
        false
    }
}

/// Handles resolved by name, per instance: after the first use a guest metric costs a
/// hash lookup and an atomic add, not a family lookup with owned label strings.
#[derive(Default)]
pub(crate) struct MetricCache {
    counters: HashMap<String, Counter>,
    gauges: HashMap<String, Gauge>,
    histograms: HashMap<String, Histogram>,
}

/// Looks `name` up in `cache`, creating it if the filter's shared names admit it.
fn resolve<'a, M>(
    cache: &'a mut HashMap<String, M>,
    name: String,
    kind: Kind,
    state: &super::state::FilterShared,
    make: impl FnOnce(&GuestLabels) -> M,
) -> Option<&'a M> {
    if !cache.contains_key(&name) {
        if !state.metric_names.admit(&state.name, kind, &name) {
            return None;
        }
        let labels = GuestLabels {
            filter: (*state.name).into(),
            name: name.as_str().into(),
        };
        let metric = make(&labels);
        cache.insert(name.clone(), metric);
    }
    cache.get(&name)
}

impl Host for HostState {
    fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_counters;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(c) = resolve(&mut self.metric_cache.counters, name, Kind::Counter, &self.shared, make) {
            c.inc_by(delta);
        }
        Ok(())
    }

    fn gauge_set(&mut self, name: String, value: i64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_gauges;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(g) = resolve(&mut self.metric_cache.gauges, name, Kind::Gauge, &self.shared, make) {
            g.set(value);
        }
        Ok(())
    }

    fn histogram_observe(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        let family = &self.shared.metrics.guest_histograms;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        if let Some(h) = resolve(
            &mut self.metric_cache.histograms,
            name,
            Kind::Histogram,
            &self.shared,
            make,
        ) {
            h.observe(value);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prometheus_grammar() {
        for good in ["requests", "_private", "ns:requests_total", "a1", "A_B:c9"] {
            assert_eq!(check_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "1st",
            "with space",
            "quote\"",
            "back\\slash",
            "new\nline",
            "dash-ed",
            "dot.ted",
            "ünï",
            "x}",
            "x{a=\"b\"}",
        ] {
            assert_eq!(check_name(bad), Err(Rejection::Invalid), "{bad:?}");
        }
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN)), Ok(()));
        assert_eq!(check_name(&"a".repeat(MAX_NAME_LEN + 1)), Err(Rejection::TooLong));
    }

    #[test]
    fn a_filter_gets_max_names_per_kind_whatever_its_instances() {
        let metrics = Metrics::default();
        let names = MetricNames::new("f", &metrics);
        for i in 0..MAX_NAMES {
            assert!(names.admit("f", Kind::Counter, &format!("n{i}")));
        }
        // The set is frozen now: names it holds still pass, new ones do not.
        assert!(names.admit("f", Kind::Counter, "n0"));
        assert!(!names.admit("f", Kind::Counter, "one_more"));
        // Each kind has its own bound.
        assert!(names.admit("f", Kind::Gauge, "one_more"));
        assert!(!names.admit("f", Kind::Histogram, "bad name"));
        let text = metrics.encode();
        for expected in [
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"too_many\"} 1",
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"invalid\"} 1",
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"too_long\"} 0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    #[test]
    fn concurrent_instances_share_the_bound() {
        // Repeated: the race this guards against (freezing the set while another caller
        // waits for its lock) shows up in a fraction of runs only.
        for _ in 0..50 {
            let metrics = Metrics::default();
            let names = std::sync::Arc::new(MetricNames::new("f", &metrics));
            let threads: Vec<_> = (0..4)
                .map(|t| {
                    let names = names.clone();
                    std::thread::spawn(move || {
                        (0..MAX_NAMES)
                            .filter(|i| names.admit("f", Kind::Counter, &format!("t{t}_{i}")))
                            .count()
                    })
                })
                .collect();
            let admitted: usize = threads.into_iter().map(|t| t.join().expect("thread")).sum();
            assert_eq!(admitted, MAX_NAMES);
        }
    }
}
