//! Host side of `weft:filter/metrics`, backed by the process's `Metrics` families with
//! labels `filter` and `name`, and for the `*-labelled` calls the guest's own labels.
//!
//! A guest's name is checked at the boundary (the Prometheus metric-name grammar, a
//! bounded length) and counted against a bound of distinct names per filter and kind,
//! shared by all the filter's instances for the life of its config version: each name is
//! a time series in the exposition, so neither a guest building names from request data
//! nor a large instance pool may grow it without end. Labelled series have a bound of
//! their own ([`MAX_SERIES`]); past it a new series is folded into the name's one overflow
//! series, `{filter, name, overflow="true"}`, so that a guest labelling by request data (a
//! GraphQL operation name) keeps its totals right while the exposition stays bounded. The
//! overflow series keeps none of the guest's label names: were it to, a guest varying
//! its label names would add a series per call past the bound. Labels are sorted by name,
//! so one label set given in two orders is one series, not a duplicate sample that
//! Prometheus would drop. Refused names and labels, and folded series, are counted in
//! `weft_filter_metric_rejected_total{filter, reason}` and logged at most now and then.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;

use crate::filter::metrics::{FilterMetrics, GuestLabels, RejectLabels};
use crate::wasm::bindings::metrics::{Host, MetricKind};
use crate::wasm::output::Bucket;
use crate::wasm::state::HostState;

/// Distinct names one filter may use per kind, across all its instances.
pub(crate) const MAX_NAMES: usize = 64;

/// Longest name accepted, in bytes: room for a descriptive name, not for a payload.
pub(crate) const MAX_NAME_LEN: usize = 128;

/// Distinct labelled series one filter may create per kind, across all its instances.
pub(crate) const MAX_SERIES: usize = 1024;

/// Labels one labelled call may carry, and the longest label value, in bytes.
pub(crate) const MAX_LABELS: usize = 4;
pub(crate) const MAX_LABEL_VALUE_LEN: usize = 128;

/// Handles one instance may hold (`metrics.series`): each is a few bytes and a
/// reference to a series that exists anyway, and past this the guest updates by name.
pub(crate) const MAX_HANDLES: usize = 4096;

/// The one label of a folded series (beside `filter` and `name`), with its value.
pub(crate) const OVERFLOW: (&str, &str) = ("overflow", "true");

/// Why a name was refused; the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// Empty, or not `[a-zA-Z_:][a-zA-Z0-9_:]*`.
    Invalid,
    TooLong,
    /// The filter already uses [`MAX_NAMES`] other names of this kind.
    TooMany,
    /// A labelled call's labels: more than [`MAX_LABELS`], a name outside
    /// `[a-z_][a-z0-9_]*`, reserved or repeated, or a value over [`MAX_LABEL_VALUE_LEN`].
    InvalidLabel,
    /// Not refused: the filter holds [`MAX_SERIES`] labelled series of this kind, so the
    /// value went to the name's [`OVERFLOW`] series.
    Overflow,
}

impl Rejection {
    const ALL: [Rejection; 5] = [
        Rejection::Invalid,
        Rejection::TooLong,
        Rejection::TooMany,
        Rejection::InvalidLabel,
        Rejection::Overflow,
    ];

    fn label(self) -> &'static str {
        match self {
            Rejection::Invalid => "invalid",
            Rejection::TooLong => "too_long",
            Rejection::TooMany => "too_many",
            Rejection::InvalidLabel => "invalid_label",
            Rejection::Overflow => "overflow",
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

/// Checks a labelled call's labels: see [`Rejection::InvalidLabel`]. `filter` and `name`
/// are the series' own labels, `overflow` the folded series', `le` and `quantile` the
/// exposition's, `__*` Prometheus's. Names are lower case: promtool's lint refuses a
/// camelCase label name, and `Op` beside `op` would read as one label and be two.
pub(crate) fn check_labels(labels: &[(String, String)]) -> Result<(), Rejection> {
    if labels.len() > MAX_LABELS {
        return Err(Rejection::InvalidLabel);
    }
    for (i, (key, value)) in labels.iter().enumerate() {
        let bytes = key.as_bytes();
        let grammar = bytes.first().is_some_and(|b| b.is_ascii_lowercase() || *b == b'_')
            && bytes
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_');
        let reserved =
            key.starts_with("__") || matches!(key.as_str(), "filter" | "name" | "le" | "quantile") || key == OVERFLOW.0;
        let repeated = labels[..i].iter().any(|(k, _)| k == key);
        if !grammar || reserved || repeated || key.len() > MAX_NAME_LEN || value.len() > MAX_LABEL_VALUE_LEN {
            return Err(Rejection::InvalidLabel);
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The names (or labelled series) of one kind a filter uses. Filled under a lock until it
/// holds `max`; then frozen, and read lock-free from then on. Instances only come here on
/// a miss in their own cache, so the lock is taken at most once per name and instance.
struct NameSet {
    max: usize,
    open: Mutex<HashSet<Box<str>>>,
    full: OnceLock<HashSet<Box<str>>>,
}

impl NameSet {
    fn new(max: usize) -> Self {
        NameSet {
            max,
            open: Mutex::default(),
            full: OnceLock::new(),
        }
    }

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
        if open.len() >= self.max {
            return false;
        }
        open.insert(name.into());
        if open.len() == self.max {
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
    /// Labelled series by kind, each keyed by [`series_key`].
    series: [NameSet; 3],
    /// By [`Rejection`], resolved once so refusing costs an atomic add.
    rejected: [Counter; 5],
    warn: Bucket,
}

impl MetricNames {
    pub fn new(filter: &str, metrics: &FilterMetrics) -> Self {
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
            kinds: std::array::from_fn(|_| NameSet::new(MAX_NAMES)),
            series: std::array::from_fn(|_| NameSet::new(MAX_SERIES)),
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
        self.refuse(filter, name, reason);
        false
    }

    /// Whether a new labelled series of an admitted name gets its own series (or is
    /// folded into the overflow one).
    fn admit_series(&self, filter: &str, kind: Kind, name: &str, labels: &[(String, String)]) -> bool {
        if self.series[kind as usize].admit(&series_key(name, labels)) {
            return true;
        }
        self.refuse(filter, name, Rejection::Overflow);
        false
    }

    fn refuse(&self, filter: &str, name: &str, reason: Rejection) {
        self.rejected[reason as usize].inc();
        if self.warn.take() {
            // Cut, and Debug-formatted (quoted, control characters escaped): the name is
            // the guest's and may hold anything, including what looks like log syntax.
            let shown: String = name.chars().take(MAX_NAME_LEN).collect();
            tracing::warn!(
                filter,
                metric = ?shown,
                reason = reason.label(),
                "filter metric refused or folded: names match [a-zA-Z_:][a-zA-Z0-9_:]*, are at most \
                 {MAX_NAME_LEN} bytes, and a filter uses at most {MAX_NAMES} per kind; at most \
                 {MAX_LABELS} labels named [a-z_][a-z0-9_]* with values of at most \
                 {MAX_LABEL_VALUE_LEN} bytes; past {MAX_SERIES} labelled series per kind, new ones \
                 go to the name's overflow=\"true\" series (counted in \
                 weft_filter_metric_rejected_total; logged at most every {WARN_EVERY:?})"
            );
        }
    }
}

/// One string per labelled series, for the filter-wide set: each part length-prefixed, so
/// no choice of values makes two series collide.
fn series_key(name: &str, labels: &[(String, String)]) -> String {
    let mut key = String::with_capacity(name.len() + labels.iter().map(|(k, v)| k.len() + v.len() + 8).sum::<usize>());
    key.push_str(name);
    for (k, v) in labels {
        use std::fmt::Write;
        let _ = write!(key, "\0{}:{k}{}:{v}", k.len(), v.len());
    }
    key
}

/// The per-instance caches' hasher: keyed per map (foldhash's per-hasher seed on a random
/// process seed), so a guest cannot aim its names at one bucket, and several times
/// cheaper than the std library's SipHash on the short names and labels guests use (a
/// repeat call hashes its name once, issue 22).
type Fast = foldhash::fast::RandomState;

/// Handles resolved by name, per instance: after the first use a guest metric costs one
/// hash lookup and an atomic add, not a family lookup with owned label strings. Only
/// names the filter-wide [`MetricNames`] admitted are cached (at most [`MAX_NAMES`] per
/// kind), labelled series at most [`MAX_CACHED_SERIES`] per kind: a guest calling with
/// ever new names grows neither.
#[derive(Default)]
pub(crate) struct MetricCache {
    counters: HashMap<String, Counter, Fast>,
    gauges: HashMap<String, Gauge, Fast>,
    histograms: HashMap<String, Histogram, Fast>,
    labelled_counters: HashMap<SeriesKey, Counter, Fast>,
    labelled_gauges: HashMap<SeriesKey, Gauge, Fast>,
    labelled_histograms: HashMap<SeriesKey, Histogram, Fast>,
    /// The series behind this instance's handles, by handle.
    handles: Vec<Handle>,
}

/// The series a handle stands for.
enum Handle {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

/// A labelled series as the guest named it (the cache's key, also for folded ones).
type SeriesKey = (String, Vec<(String, String)>);

/// Entries one instance's labelled cache holds before it starts over: a guest labelling
/// by request data must not grow an instance's memory either.
const MAX_CACHED_SERIES: usize = 2 * MAX_SERIES;

/// Looks `name` up in `cache`, creating it if the filter's shared names admit it. One
/// hash of the name on a hit; the name the guest sent becomes the key on a miss (no copy).
fn resolve<'a, M>(
    cache: &'a mut HashMap<String, M, Fast>,
    name: String,
    kind: Kind,
    names: &MetricNames,
    filter: &str,
    make: impl FnOnce(&GuestLabels) -> M,
) -> Option<&'a M> {
    match cache.entry(name) {
        Entry::Occupied(hit) => Some(hit.into_mut()),
        Entry::Vacant(miss) => {
            if !names.admit(filter, kind, miss.key()) {
                return None;
            }
            let labels = GuestLabels {
                filter: filter.into(),
                name: miss.key().as_str().into(),
                labels: Box::new([]),
            };
            let metric = make(&labels);
            Some(miss.insert(metric))
        }
    }
}

/// [`resolve`] for a labelled series: the name is admitted as for an unlabelled call, the
/// labels are sorted by name and checked, and the series is the guest's own or the name's
/// overflow one.
fn resolve_labelled<'a, M>(
    cache: &'a mut HashMap<SeriesKey, M, Fast>,
    mut key: SeriesKey,
    kind: Kind,
    names: &MetricNames,
    filter: &str,
    make: impl FnOnce(&GuestLabels) -> M,
) -> Option<&'a M> {
    // Sorted in place (no allocation), and only a list short enough to be admitted: the
    // cache, the filter-wide bound and the exposition then see one order.
    if key.1.len() <= MAX_LABELS {
        key.1.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    }
    if cache.len() >= MAX_CACHED_SERIES && !cache.contains_key(&key) {
        cache.clear();
    }
    match cache.entry(key) {
        Entry::Occupied(hit) => Some(hit.into_mut()),
        Entry::Vacant(miss) => {
            let (name, labels) = miss.key();
            if let Err(reason) = check_labels(labels) {
                names.refuse(filter, name, reason);
                return None;
            }
            if !names.admit(filter, kind, name) {
                return None;
            }
            let own = names.admit_series(filter, kind, name, labels);
            let series = GuestLabels {
                filter: filter.into(),
                name: name.as_str().into(),
                labels: if own {
                    labels
                        .iter()
                        .map(|(k, v)| (k.as_str().into(), v.as_str().into()))
                        .collect()
                } else {
                    Box::new([(OVERFLOW.0.into(), OVERFLOW.1.into())])
                },
            };
            Some(miss.insert(make(&series)))
        }
    }
}

/// One kind of guest metric: how its series is made, and this instance's caches of it.
trait GuestMetric: Sized + Clone {
    const KIND: Kind;
    fn create(metrics: &FilterMetrics, labels: &GuestLabels) -> Self;
    fn handle(self) -> Handle;
    fn caches(cache: &mut MetricCache) -> (&mut HashMap<String, Self, Fast>, &mut HashMap<SeriesKey, Self, Fast>);
}

impl GuestMetric for Counter {
    const KIND: Kind = Kind::Counter;
    fn handle(self) -> Handle {
        Handle::Counter(self)
    }
    fn create(metrics: &FilterMetrics, labels: &GuestLabels) -> Self {
        metrics.guest_counters.get_or_create(labels).clone()
    }
    fn caches(cache: &mut MetricCache) -> (&mut HashMap<String, Self, Fast>, &mut HashMap<SeriesKey, Self, Fast>) {
        (&mut cache.counters, &mut cache.labelled_counters)
    }
}

impl GuestMetric for Gauge {
    const KIND: Kind = Kind::Gauge;
    fn handle(self) -> Handle {
        Handle::Gauge(self)
    }
    fn create(metrics: &FilterMetrics, labels: &GuestLabels) -> Self {
        metrics.guest_gauges.get_or_create(labels).clone()
    }
    fn caches(cache: &mut MetricCache) -> (&mut HashMap<String, Self, Fast>, &mut HashMap<SeriesKey, Self, Fast>) {
        (&mut cache.gauges, &mut cache.labelled_gauges)
    }
}

impl GuestMetric for Histogram {
    const KIND: Kind = Kind::Histogram;
    fn handle(self) -> Handle {
        Handle::Histogram(self)
    }
    fn create(metrics: &FilterMetrics, labels: &GuestLabels) -> Self {
        metrics.guest_histograms.get_or_create(labels).clone()
    }
    fn caches(cache: &mut MetricCache) -> (&mut HashMap<String, Self, Fast>, &mut HashMap<SeriesKey, Self, Fast>) {
        (&mut cache.histograms, &mut cache.labelled_histograms)
    }
}

impl HostState {
    /// The guest's metric `name`, unlabelled; `None` when refused.
    fn guest_metric<M: GuestMetric>(&mut self, name: String) -> Option<&M> {
        let shared = &self.shared;
        let make = |labels: &GuestLabels| M::create(&shared.metrics, labels);
        let (cache, _) = M::caches(&mut self.metric_cache);
        resolve(cache, name, M::KIND, &shared.metric_names, &shared.name, make)
    }

    /// The guest's series `name` with `labels`; `None` when refused.
    fn guest_series<M: GuestMetric>(&mut self, name: String, labels: Vec<(String, String)>) -> Option<&M> {
        let shared = &self.shared;
        let make = |labels: &GuestLabels| M::create(&shared.metrics, labels);
        let (_, cache) = M::caches(&mut self.metric_cache);
        resolve_labelled(cache, (name, labels), M::KIND, &shared.metric_names, &shared.name, make)
    }

    /// A handle to the series `name` with `labels` (none: the unlabelled one), admitted
    /// as an update by name would be; `None` when refused or the handles are all taken.
    fn guest_handle<M: GuestMetric>(&mut self, name: String, labels: Vec<(String, String)>) -> Option<u32> {
        if self.metric_cache.handles.len() >= MAX_HANDLES {
            return None;
        }
        let series = if labels.is_empty() {
            self.guest_metric::<M>(name)
        } else {
            self.guest_series::<M>(name, labels)
        }?
        .clone();
        let handles = &mut self.metric_cache.handles;
        handles.push(series.handle());
        u32::try_from(handles.len() - 1).ok()
    }

    fn by_handle(&self, handle: u32) -> Option<&Handle> {
        self.metric_cache.handles.get(handle as usize)
    }
}

impl Host for HostState {
    fn series(
        &mut self,
        kind: MetricKind,
        name: String,
        labels: Vec<(String, String)>,
    ) -> wasmtime::Result<Option<u32>> {
        Ok(match kind {
            MetricKind::Counter => self.guest_handle::<Counter>(name, labels),
            MetricKind::Gauge => self.guest_handle::<Gauge>(name, labels),
            MetricKind::Histogram => self.guest_handle::<Histogram>(name, labels),
        })
    }

    fn counter_add_by_handle(&mut self, series: u32, delta: u64) -> wasmtime::Result<()> {
        if let Some(Handle::Counter(c)) = self.by_handle(series) {
            c.inc_by(delta);
        }
        Ok(())
    }

    fn gauge_set_by_handle(&mut self, series: u32, value: i64) -> wasmtime::Result<()> {
        if let Some(Handle::Gauge(g)) = self.by_handle(series) {
            g.set(value);
        }
        Ok(())
    }

    fn histogram_observe_by_handle(&mut self, series: u32, value: f64) -> wasmtime::Result<()> {
        if let Some(Handle::Histogram(h)) = self.by_handle(series) {
            h.observe(value);
        }
        Ok(())
    }

    fn counter_add(&mut self, name: String, delta: u64) -> wasmtime::Result<()> {
        if let Some(c) = self.guest_metric::<Counter>(name) {
            c.inc_by(delta);
        }
        Ok(())
    }

    fn gauge_set(&mut self, name: String, value: i64) -> wasmtime::Result<()> {
        if let Some(g) = self.guest_metric::<Gauge>(name) {
            g.set(value);
        }
        Ok(())
    }

    fn histogram_observe(&mut self, name: String, value: f64) -> wasmtime::Result<()> {
        if let Some(h) = self.guest_metric::<Histogram>(name) {
            h.observe(value);
        }
        Ok(())
    }

    fn counter_add_labelled(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        delta: u64,
    ) -> wasmtime::Result<()> {
        if let Some(c) = self.guest_series::<Counter>(name, labels) {
            c.inc_by(delta);
        }
        Ok(())
    }

    fn gauge_set_labelled(&mut self, name: String, labels: Vec<(String, String)>, value: i64) -> wasmtime::Result<()> {
        if let Some(g) = self.guest_series::<Gauge>(name, labels) {
            g.set(value);
        }
        Ok(())
    }

    fn histogram_observe_labelled(
        &mut self,
        name: String,
        labels: Vec<(String, String)>,
        value: f64,
    ) -> wasmtime::Result<()> {
        if let Some(h) = self.guest_series::<Histogram>(name, labels) {
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
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
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
        let text = exposition.encode();
        for expected in [
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"too_many\"} 1",
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"invalid\"} 1",
            "weft_filter_metric_rejected_total{filter=\"f\",reason=\"too_long\"} 0",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn labels_are_checked_at_the_boundary() {
        assert_eq!(check_labels(&labels(&[])), Ok(()));
        assert_eq!(
            check_labels(&labels(&[("operation", "GetUser"), ("_t", "x\"y\n")])),
            Ok(())
        );
        let long = "v".repeat(MAX_LABEL_VALUE_LEN + 1);
        for bad in [
            labels(&[("a", "1"), ("b", "2"), ("c", "3"), ("d", "4"), ("e", "5")]),
            labels(&[("filter", "forged")]),
            labels(&[("name", "forged")]),
            labels(&[("le", "0.5")]),
            labels(&[("__name__", "x")]),
            labels(&[("op", "a"), ("op", "b")]),
            labels(&[("1st", "a")]),
            labels(&[("has:colon", "a")]),
            labels(&[("operationName", "a")]),
            labels(&[("Op", "a")]),
            labels(&[("overflow", "true")]),
            labels(&[("", "a")]),
            labels(&[("op", long.as_str())]),
        ] {
            assert_eq!(check_labels(&bad), Err(Rejection::InvalidLabel), "{bad:?}");
        }
    }

    #[test]
    fn series_keys_do_not_collide() {
        let a = series_key("n", &labels(&[("a", "1\u{0}1:b1:2")]));
        let b = series_key("n", &labels(&[("a", "1"), ("b", "2")]));
        assert_ne!(a, b);
    }

    #[test]
    fn past_the_series_bound_new_series_fold_into_the_overflow_one() {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        let names = MetricNames::new("f", &metrics);
        for i in 0..MAX_SERIES {
            assert!(names.admit_series("f", Kind::Counter, "ops", &labels(&[("op", &format!("o{i}"))])));
        }
        assert!(names.admit_series("f", Kind::Counter, "ops", &labels(&[("op", "o0")])));
        assert!(!names.admit_series("f", Kind::Counter, "ops", &labels(&[("op", "new")])));
        assert!(names.admit_series("f", Kind::Histogram, "ops", &labels(&[("op", "new")])));
        assert!(
            exposition
                .encode()
                .contains("weft_filter_metric_rejected_total{filter=\"f\",reason=\"overflow\"} 1")
        );
    }

    #[test]
    fn guest_labels_are_escaped_in_the_exposition() {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        metrics
            .guest_counters
            .get_or_create(&GuestLabels {
                filter: "f".into(),
                name: "ops".into(),
                labels: vec![("op".into(), "a\"} 1\nforged{x=\"".into())].into(),
            })
            .inc();
        let text = exposition.encode();
        assert!(
            text.contains(r#"weft_filter_events_total{filter="f",name="ops",op="a\"} 1\nforged{x=\""} 1"#),
            "{text}"
        );
    }

    /// Two instances' caches over one filter's names: a name both use is one series (one
    /// count in the exposition), and the caches do not let the filter past its bounds.
    #[test]
    fn instance_caches_share_one_series_and_the_filter_bounds() {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        let names = MetricNames::new("f", &metrics);
        let family = &metrics.guest_counters;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        let (mut a, mut b) = (MetricCache::default(), MetricCache::default());
        for cache in [&mut a, &mut b] {
            for _ in 0..2 {
                let c = resolve(&mut cache.counters, "shared".into(), Kind::Counter, &names, "f", make);
                c.expect("admitted").inc();
            }
        }
        let text = exposition.encode();
        assert!(
            text.contains("weft_filter_events_total{filter=\"f\",name=\"shared\"} 4"),
            "{text}"
        );
        // Instance a fills the bound; b, whose cache holds only "shared", gets no more.
        for i in 1..MAX_NAMES {
            assert!(resolve(&mut a.counters, format!("n{i}"), Kind::Counter, &names, "f", make).is_some());
        }
        assert!(resolve(&mut b.counters, "n1".into(), Kind::Counter, &names, "f", make).is_some());
        for i in 0..10_000 {
            assert!(resolve(&mut b.counters, format!("x{i}"), Kind::Counter, &names, "f", make).is_none());
            assert!(resolve(&mut a.counters, format!("x{i}"), Kind::Counter, &names, "f", make).is_none());
        }
        // Refused names are not cached: the caches hold admitted names only.
        assert_eq!(a.counters.len(), MAX_NAMES);
        assert_eq!(b.counters.len(), 2);
        assert!(
            exposition
                .encode()
                .contains("weft_filter_metric_rejected_total{filter=\"f\",reason=\"too_many\"} 20000")
        );
    }

    /// A guest labelling by ever new values: one instance's cache starts over past its
    /// bound, the filter-wide series stay at [`MAX_SERIES`] with the rest folded, and one
    /// label set in two orders is one cache entry and one series.
    #[test]
    fn labelled_caches_stay_bounded() {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        let names = MetricNames::new("f", &metrics);
        let family = &metrics.guest_counters;
        let make = |l: &GuestLabels| family.get_or_create(l).clone();
        let mut cache = MetricCache::default();
        let key = |pairs: &[(&str, &str)]| ("ops".to_owned(), labels(pairs));
        for pair in [[("a", "1"), ("b", "2")], [("b", "2"), ("a", "1")]] {
            let c = resolve_labelled(
                &mut cache.labelled_counters,
                key(&pair),
                Kind::Counter,
                &names,
                "f",
                make,
            );
            c.expect("admitted").inc();
        }
        assert_eq!(cache.labelled_counters.len(), 1);
        for i in 0..3 * MAX_SERIES {
            let value = format!("v{i}");
            let c = resolve_labelled(
                &mut cache.labelled_counters,
                key(&[("op", &value)]),
                Kind::Counter,
                &names,
                "f",
                make,
            );
            c.expect("admitted or folded").inc();
            assert!(cache.labelled_counters.len() <= MAX_CACHED_SERIES);
        }
        let text = exposition.encode();
        assert!(
            text.contains("weft_filter_events_total{filter=\"f\",name=\"ops\",a=\"1\",b=\"2\"} 2"),
            "{text}"
        );
        // The first series took one of the bound's places; the rest past it are folded.
        let folded = 3 * MAX_SERIES - (MAX_SERIES - 1);
        assert!(
            text.contains(&format!(
                "weft_filter_events_total{{filter=\"f\",name=\"ops\",overflow=\"true\"}} {folded}"
            )),
            "{text}"
        );
        let series = text
            .lines()
            .filter(|l| l.starts_with("weft_filter_events_total{"))
            .count();
        assert_eq!(series, MAX_SERIES + 1);
    }

    #[test]
    fn concurrent_instances_share_the_bound() {
        // Repeated: the race this guards against (freezing the set while another caller
        // waits for its lock) shows up in a fraction of runs only.
        for _ in 0..50 {
            let metrics = <FilterMetrics as crate::metrics::Families>::unregistered();
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
