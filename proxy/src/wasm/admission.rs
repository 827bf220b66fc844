//! Admission to one filter's instances: at most `limits.max_concurrency` phases run at
//! once, at most `limits.max_queue` requests wait for a turn, each at most
//! `limits.queue_timeout`; the rest are refused with [`Overload`] (503 + `Retry-After`).
//!
//! Why: instances come from one engine-wide pool (`[wasm] max_instances`). Without a
//! per-filter cap, one filter stuck in slow calls (bcrypt, callouts to a slow service)
//! takes every instance and all other filters fail. With it, a slow filter queues its
//! own requests and leaves the rest of the pool to the others.
//!
//! The fast path is one `try_acquire` on a `tokio::sync::Semaphore` (a CAS); only a
//! request that must wait touches the queue counter and a timer. The semaphore is fair,
//! so waiters are served in arrival order and a newcomer cannot overtake them.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::LimitsConfig;
use crate::filter::metrics::FilterMetrics;
use crate::filter::{FilterError, Overload};
use crate::metrics::LatencyHistogram;

pub(crate) struct Admission {
    permits: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
    timeout: Duration,
    queue_full: Counter,
    queue_timeout: Counter,
    /// How long the requests that had to wait waited.
    queue_wait: LatencyHistogram,
}

/// Leaves the queue when the wait ends, however it ends (the client may hang up).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(filter: &str, limits: &LimitsConfig, metrics: &FilterMetrics) -> Self {
        Admission {
            permits: Semaphore::new(limits.max_concurrency),
            waiting: AtomicUsize::new(0),
            max_queue: limits.max_queue,
            timeout: limits.queue_timeout,
            queue_full: metrics.filter_rejected(filter, Overload::QueueFull.reason()),
            queue_timeout: metrics.filter_rejected(filter, Overload::QueueTimeout.reason()),
            queue_wait: metrics.filter_stats(filter).queue_wait,
        }
    }

    /// A turn at the filter, held for one phase. `admitted`: the request already had a
    /// turn in its request phase (this is its response phase) and the upstream has
    /// answered; it waits without the queue bound, so a burst of new requests cannot
    /// throw away exchanges the upstream has already carried out (a client would retry a
    /// request that had taken effect). It still waits at most `queue_timeout`.
    pub async fn enter(&self, admitted: bool) -> Result<SemaphorePermit<'_>, FilterError> {
        if let Ok(permit) = self.permits.try_acquire() {
            return Ok(permit);
        }
        // Counted in before the check, so two arrivals cannot both take the last place.
        let ahead = self.waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.max_queue && !admitted {
            self.queue_full.inc();
            return Err(FilterError::Overloaded(Overload::QueueFull));
        }
        let started = std::time::Instant::now();
        let turn = tokio::time::timeout(self.timeout, self.permits.acquire()).await;
        self.queue_wait.observe(started.elapsed());
        match turn {
            Ok(Ok(permit)) => Ok(permit),
            // The semaphore is never closed; if it were, no turn could ever be had.
            Ok(Err(_closed)) => Err(FilterError::Host("the filter's admission is closed".to_owned())),
            Err(_elapsed) => {
                self.queue_timeout.inc();
                Err(FilterError::Overloaded(Overload::QueueTimeout))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admission(concurrency: usize, queue: usize, timeout_ms: u64) -> (Admission, crate::metrics::Metrics) {
        let (metrics, exposition) = <FilterMetrics as crate::metrics::Families>::registered();
        let limits = LimitsConfig {
            max_concurrency: concurrency,
            max_queue: queue,
            queue_timeout: Duration::from_millis(timeout_ms),
            ..LimitsConfig::default()
        };
        (Admission::new("f", &limits, &metrics), exposition)
    }

    #[tokio::test]
    async fn past_the_limit_requests_wait_then_time_out_or_are_refused() {
        let (a, metrics) = admission(1, 1, 50);
        let held = a.enter(false).await.expect("first turn");
        // One waits (and times out, the turn is never freed)...
        let waiter = a.enter(false);
        // ...while a third finds the queue full at once.
        let (waited, refused) = tokio::join!(waiter, async {
            tokio::task::yield_now().await;
            a.enter(false).await
        });
        assert!(matches!(waited, Err(FilterError::Overloaded(Overload::QueueTimeout))));
        assert!(matches!(refused, Err(FilterError::Overloaded(Overload::QueueFull))));
        assert_eq!(a.waiting.load(Ordering::Relaxed), 0, "the queue is left on every path");
        drop(held);
        assert!(a.enter(false).await.is_ok(), "a freed turn is taken");
        let text = metrics.encode();
        assert!(
            text.contains(r#"weft_filter_rejected_total{filter="f",reason="queue_full"} 1"#),
            "{text}"
        );
        assert!(
            text.contains(r#"weft_filter_rejected_total{filter="f",reason="queue_timeout"} 1"#),
            "{text}"
        );
    }

    #[tokio::test]
    async fn a_waiter_gets_the_turn_a_finishing_phase_frees() {
        let (a, _) = admission(1, 4, 5_000);
        let held = a.enter(false).await.expect("first turn");
        let (turn, ()) = tokio::join!(a.enter(false), async {
            tokio::time::sleep(Duration::from_millis(20)).await;
            drop(held);
        });
        assert!(turn.is_ok());
    }

    #[tokio::test]
    async fn no_queue_refuses_at_once() {
        let (a, _) = admission(1, 0, 5_000);
        let _held = a.enter(false).await.expect("first turn");
        assert!(matches!(
            a.enter(false).await,
            Err(FilterError::Overloaded(Overload::QueueFull))
        ));
    }
}
