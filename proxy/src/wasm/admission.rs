//! Admission to one filter's instances: at most `limits.max_concurrency` phases run at
//! once, at most `limits.max_queue` requests wait for a turn, each at most
//! `limits.queue_timeout`; the rest are refused with [`Overload`] (503 + `Retry-After`).
//!
//! Why: instances come from one engine-wide pool (`[wasm] max_instances`). Without a
//! per-filter cap, one filter stuck in slow calls (bcrypt, callouts to a slow service)
//! takes every instance and all other filters fail. With it, a slow filter queues its
//! own requests and leaves the rest of the pool to the others.
//!
//! The fast path takes no lock: a free turn is a CAS on an atomic count, and giving it
//! back is an atomic add and a load. Only a request that must wait touches the queue
//! counter, a timer and a `tokio::sync::Semaphore`, which is the queue: while requests
//! wait, a finishing phase hands its turn to the semaphore (not to the free count), so
//! waiters are served in arrival order and a newcomer cannot overtake them. (Taking and
//! giving back a semaphore permit for every phase, as before, locks the semaphore's
//! waiter list on every give-back, waiters or not.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::filter::metrics::FilterMetrics;
use crate::filter::{FilterError, Overload};
use crate::metrics::LatencyHistogram;

pub(crate) struct Admission {
    /// Free turns: `limits.max_concurrency` minus the turns held, minus those handed to
    /// `queue`.
    free: AtomicUsize,
    /// Where waiters wait: a turn given back while someone waits is added here (as one
    /// permit), and the fair semaphore hands it to the oldest waiter.
    queue: Semaphore,
    waiting: AtomicUsize,
    max_queue: usize,
    timeout: Duration,
    queue_full: Counter,
    queue_timeout: Counter,
    /// How long the requests that had to wait waited.
    queue_wait: LatencyHistogram,
}

/// A turn at the filter, given back when dropped.
pub(crate) struct Turn<'a>(&'a Admission);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.give_back();
    }
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
            free: AtomicUsize::new(limits.max_concurrency),
            queue: Semaphore::new(0),
            waiting: AtomicUsize::new(0),
            max_queue: limits.max_queue,
            timeout: limits.queue_timeout,
            queue_full: metrics.filter_rejected(filter, Overload::QueueFull.reason()),
            queue_timeout: metrics.filter_rejected(filter, Overload::QueueTimeout.reason()),
            queue_wait: metrics.filter_stats(filter).queue_wait,
        }
    }

    /// A free turn, if there is one: one CAS, no lock, no future. `None` means wait
    /// with [`enter`](Self::enter).
    pub fn try_enter(&self) -> Option<Turn<'_>> {
        let mut free = self.free.load(Ordering::Relaxed);
        while free > 0 {
            match self
                .free
                .compare_exchange_weak(free, free - 1, Ordering::SeqCst, Ordering::Relaxed)
            {
                Ok(_) => return Some(Turn(self)),
                Err(now) => free = now,
            }
        }
        None
    }

    /// Gives a turn back: to the queue when a request waits, else to the free count.
    fn give_back(&self) {
        self.free.fetch_add(1, Ordering::SeqCst);
        // A waiter counts itself in, then tries the free count once more before it
        // waits (see `enter`); this side adds to the free count, then looks for
        // waiters. With both orders sequentially consistent at least one side sees the
        // other's write, so a turn is never left free while someone waits for it.
        if self.waiting.load(Ordering::SeqCst) > 0
            && let Some(turn) = self.try_enter()
        {
            // Moved to the queue, where the oldest waiter takes it.
            std::mem::forget(turn);
            self.queue.add_permits(1);
        }
    }

    /// A turn at the filter, held for one phase. `admitted`: the request already had a
    /// turn in its request phase (this is its response phase) and the upstream has
    /// answered; it waits without the queue bound, so a burst of new requests cannot
    /// throw away exchanges the upstream has already carried out (a client would retry a
    /// request that had taken effect). It still waits at most `queue_timeout`.
    pub async fn enter(&self, admitted: bool) -> Result<Turn<'_>, FilterError> {
        if let Some(turn) = self.try_enter() {
            return Ok(turn);
        }
        // Counted in before the check, so two arrivals cannot both take the last place.
        let ahead = self.waiting.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.waiting);
        if ahead >= self.max_queue && !admitted {
            self.queue_full.inc();
            return Err(FilterError::Overloaded(Overload::QueueFull));
        }
        // A turn given back between the first try and the count above went to the free
        // count: take it rather than wait for a hand-off that will not come.
        if let Some(turn) = self.try_enter() {
            return Ok(turn);
        }
        let started = std::time::Instant::now();
        let turn = tokio::time::timeout(self.timeout, self.queue.acquire()).await;
        self.queue_wait.observe(started.elapsed());
        match turn {
            Ok(Ok(permit)) => {
                // The handed-off turn is this request's now; its `Turn` gives it back.
                permit.forget();
                Ok(Turn(self))
            }
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

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn turns_given_back_under_contention_reach_the_waiters_and_never_exceed_the_limit() {
        use std::sync::Arc;
        let (a, _) = admission(2, 1024, 10_000);
        let a = Arc::new(a);
        let held = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let (a, held) = (a.clone(), held.clone());
                tokio::spawn(async move {
                    for _ in 0..500 {
                        let turn = a.enter(false).await.expect("a turn within the timeout");
                        assert!(held.fetch_add(1, Ordering::SeqCst) < 2, "more turns than the limit");
                        tokio::task::yield_now().await;
                        held.fetch_sub(1, Ordering::SeqCst);
                        drop(turn);
                    }
                })
            })
            .collect();
        for task in tasks {
            task.await.expect("no task failed");
        }
        assert_eq!(a.waiting.load(Ordering::SeqCst), 0);
        // Every turn is back: free, or handed to the queue and not yet taken.
        assert_eq!(a.free.load(Ordering::SeqCst) + a.queue.available_permits(), 2);
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
