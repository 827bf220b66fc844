//! What a guest writes to the operator — log lines (the `log` interface, stdout, stderr) —
//! bounded per filter and made unable to forge the proxy's own log.
//!
//! Every instance of a filter draws from one [`LogBudget`], so a filter's log rate does not
//! grow with the instance pool. Lines over the budget are dropped, counted in
//! `weft_filter_log_dropped_total{filter}`, and reported in a line now and then.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;

use crate::filter::metrics::{FilterMetrics, FilterOnlyLabels};

/// A token bucket in one atomic: the generic cell rate algorithm (GCRA) keeps the
/// "theoretical arrival time" of the next token instead of a count and a refill time, so
/// taking a token is one compare-and-swap and concurrent callers never lock.
pub(crate) struct Bucket {
    start: Instant,
    /// Time one token takes to come back.
    interval: u64,
    /// How far ahead of now the arrival time may run: `(burst - 1) × interval`.
    tolerance: u64,
    /// Nanoseconds since `start` when the bucket is full again.
    tat: AtomicU64,
}

impl Bucket {
    /// A full bucket of `burst` tokens (at least 1), one coming back every `interval`.
    pub fn new(interval: Duration, burst: u32) -> Self {
        let interval = u64::try_from(interval.as_nanos()).unwrap_or(u64::MAX).max(1);
        Bucket {
            start: Instant::now(),
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1) - 1)),
            tat: AtomicU64::new(0),
        }
    }

    /// `rate` tokens a second (at least 1), `burst` at once.
    pub fn per_second(rate: u32, burst: u32) -> Self {
        Bucket::new(Duration::from_secs(1) / rate.max(1), burst)
    }

    /// Takes a token if one is there.
    pub fn take(&self) -> bool {
        self.take_at(u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }

    fn take_at(&self, now: u64) -> bool {
        let mut tat = self.tat.load(Ordering::Relaxed);
        loop {
            let from = tat.max(now);
            if from - now > self.tolerance {
                return false;
            }
            let next = from.saturating_add(self.interval);
            match self
                .tat
                .compare_exchange_weak(tat, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(seen) => tat = seen,
            }
        }
    }
}

/// How often the "N log lines dropped" line may appear per filter.
const REPORT_EVERY: Duration = Duration::from_secs(5);

/// One filter's log allowance, shared by all its instances for the life of its config
/// version.
pub(crate) struct LogBudget {
    lines: Bucket,
    rate: u32,
    burst: u32,
    dropped: Counter,
    unreported: AtomicU64,
    report: Bucket,
}

impl LogBudget {
    pub fn new(filter: &str, rate: u32, burst: u32, metrics: &FilterMetrics) -> Self {
        let dropped = metrics
            .filter_log_dropped
            .get_or_create(&FilterOnlyLabels { filter: filter.into() })
            .clone();
        LogBudget {
            lines: Bucket::per_second(rate, burst),
            rate,
            burst,
            dropped,
            unreported: AtomicU64::new(0),
            report: Bucket::new(REPORT_EVERY, 1),
        }
    }

    /// Whether one more guest line may be logged now. A refused line is counted, and the
    /// refused lines are summarised at most once per [`REPORT_EVERY`] (the first at once,
    /// so an operator sees a filter start flooding).
    pub fn admit(&self, filter: &str) -> bool {
        let admitted = self.lines.take();
        if !admitted {
            self.dropped.inc();
            self.unreported.fetch_add(1, Ordering::Relaxed);
        }
        if self.unreported.load(Ordering::Relaxed) > 0 && self.report.take() {
            let n = self.unreported.swap(0, Ordering::Relaxed);
            // The name is the operator's, but a newline in it would still split this line.
            let name = escape_controls(filter);
            let lines = if n == 1 { "line" } else { "lines" };
            tracing::warn!(
                filter,
                dropped = n,
                "filter {name}: {n} log {lines} dropped (over its rate of {} lines/s, burst {})",
                self.rate,
                self.burst
            );
        }
        admitted
    }
}

/// Whether `c` may not reach a log line as is: control characters (a newline would start
/// a forged line in text mode; ESC starts terminal escape sequences, C1 controls too) and
/// the Unicode line and paragraph separators some viewers break lines on.
fn unsafe_char(c: char) -> bool {
    c.is_control() || c == '\u{2028}' || c == '\u{2029}'
}

/// `text` with control characters written as Rust escapes (`\n`, `\u{1b}`), so a guest's
/// line stays one line in the proxy's log. Borrows when there is nothing to escape, which
/// is the common case.
pub(crate) fn escape_controls(text: &str) -> Cow<'_, str> {
    if !text.chars().any(unsafe_char) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if unsafe_char(c) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;

    #[test]
    fn a_full_bucket_gives_its_burst_then_one_token_per_interval() {
        let b = Bucket::per_second(100, 200);
        let taken = (0..1000).filter(|_| b.take_at(0)).count();
        assert_eq!(taken, 200);
        assert!(!b.take_at(9 * MS), "no token comes back before 10ms");
        assert!(b.take_at(10 * MS));
        assert!(!b.take_at(10 * MS));
        // After a quiet second, 100 more — not the whole burst back.
        let later = (0..1000).filter(|_| b.take_at(1010 * MS)).count();
        assert_eq!(later, 100);
    }

    #[test]
    fn an_idle_bucket_refills_to_its_burst_and_no_further() {
        let b = Bucket::per_second(100, 5);
        assert_eq!((0..10).filter(|_| b.take_at(0)).count(), 5);
        assert_eq!((0..10).filter(|_| b.take_at(3600 * 1000 * MS)).count(), 5);
    }

    #[test]
    fn concurrent_takers_share_one_bucket_without_losing_or_inventing_tokens() {
        let b = std::sync::Arc::new(Bucket::per_second(1, 1000));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || (0..1000).filter(|_| b.take_at(0)).count())
            })
            .collect();
        let total: usize = threads.into_iter().map(|t| t.join().expect("taker thread")).sum();
        assert_eq!(total, 1000);
    }

    #[test]
    fn lines_over_the_budget_are_dropped_and_counted() {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        let budget = LogBudget::new("f", 1, 3, &metrics);
        let admitted = (0..10).filter(|_| budget.admit("f")).count();
        assert_eq!(admitted, 3);
        assert!(
            exposition
                .encode()
                .contains("weft_filter_log_dropped_total{filter=\"f\"} 7"),
            "{}",
            exposition.encode()
        );
    }

    #[test]
    fn control_characters_cannot_start_a_new_log_line() {
        assert!(matches!(escape_controls("plain text ü"), Cow::Borrowed(_)));
        let forged = "ok\n2026-01-01T00:00:00Z  INFO weft::state: config reloaded\r\u{1b}[2K\u{9b}";
        let escaped = escape_controls(forged);
        assert!(!escaped.chars().any(unsafe_char), "{escaped}");
        assert_eq!(
            escaped,
            "ok\\n2026-01-01T00:00:00Z  INFO weft::state: config reloaded\\r\\u{1b}[2K\\u{9b}"
        );
    }
}
