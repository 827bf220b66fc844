//! Admission to one filter's instances: at most `limits.max_concurrency` phases run at
//! once, at most `limits.max_queue` requests wait for a turn, each at most
//! `limits.queue_timeout`; the rest are refused with [`Overload`] (503 + `Retry-After`).
//!
//! Why: instances come from one engine-wide pool (`[wasm] max_instances`). Without a
//! per-filter cap, one filter stuck in slow calls (bcrypt, callouts to a slow service)
//! takes every instance and all other filters fail. With it, a slow filter queues its
//! own requests and leaves the rest of the pool to the others.
//!
//! The fast path takes no lock: a free turn is a CAS on one atomic word, and giving it
//! back is another. That word holds both the free turns and the waiting requests, so a
//! give-back decides in one step, against the waiters as they are: with someone waiting,
//! the turn goes to a `tokio::sync::Semaphore`, which is the queue and serves waiters in
//! arrival order; with no one, it goes back to the free count. A request counts itself
//! in as a waiter only when no turn is free, in the same way. So there are never free
//! turns and waiters at once, and a newcomer can never take a turn ahead of a request
//! that waits. (Taking and giving back a semaphore permit for every phase, as before,
//! locks the semaphore's waiter list on every give-back, waiters or not; two separate
//! counts, as next, left a window in which a newcomer took a turn meant for a waiter.)

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio::sync::Semaphore;

use crate::config::LimitsConfig;
use crate::filter::metrics::FilterMetrics;
use crate::filter::{FilterError, Overload};
use crate::metrics::LatencyHistogram;

pub(crate) struct Admission {
    /// The free turns (low 32 bits: `limits.max_concurrency` minus the turns held, minus
    /// those handed to `queue`) and the requests waiting (high 32 bits). One of the two
    /// is always zero.
    turns: AtomicU64,
    /// Where waiters wait: a turn given back while someone waits is added here (as one
    /// permit), and the fair semaphore hands it to the oldest waiter.
    queue: Semaphore,
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

/// One free turn, in [`Admission::turns`].
const FREE: u64 = 1;
/// One waiting request, in [`Admission::turns`].
const WAITER: u64 = 1 << 32;

fn free(turns: u64) -> u64 {
    turns & (WAITER - 1)
}

fn waiting(turns: u64) -> u64 {
    turns >> 32
}

/// Leaves the queue when the wait ends, however it ends (the client may hang up).
struct Waiting<'a>(&'a AtomicU64);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(WAITER, Ordering::AcqRel);
    }
}

impl Admission {
    pub fn new(filter: &str, limits: &LimitsConfig, metrics: &FilterMetrics) -> Self {
        Admission {
            // Config validation keeps `max_concurrency` far below 2^32.
            turns: AtomicU64::new(limits.max_concurrency as u64),
            queue: Semaphore::new(0),
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
        let mut turns = self.turns.load(Ordering::Relaxed);
        while free(turns) > 0 {
            match self
                .turns
                .compare_exchange_weak(turns, turns - FREE, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return Some(Turn(self)),
                Err(now) => turns = now,
            }
        }
        None
    }

    /// Gives a turn back: to the queue when a request waits, else to the free count,
    /// decided in the CAS that sees the waiters.
    fn give_back(&self) {
        let mut turns = self.turns.load(Ordering::Relaxed);
        loop {
            if waiting(turns) > 0 {
                // The oldest waiter takes it. Should that waiter leave first (its timeout,
                // a client hanging up), the permit stays for the next one to wait.
                self.queue.add_permits(1);
                return;
            }
            match self
                .turns
                .compare_exchange_weak(turns, turns + FREE, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(now) => turns = now,
            }
        }
    }

    /// A turn at the filter, held for one phase. `admitted`: the request already had a
    /// turn in its request phase (this is its response phase) and the upstream has
    /// answered; it waits without the queue bound, so a burst of new requests cannot
    /// throw away exchanges the upstream has already carried out (a client would retry a
    /// request that had taken effect). It still waits at most `queue_timeout`.
    pub async fn enter(&self, admitted: bool) -> Result<Turn<'_>, FilterError> {
        // A free turn is taken, or the request counts itself in as a waiter, in one
        // step: a turn given back after it sees the waiter and goes to the queue.
        let mut turns = self.turns.load(Ordering::Relaxed);
        loop {
            let (next, outcome) = if free(turns) > 0 {
                (turns - FREE, true)
            } else if waiting(turns) >= self.max_queue as u64 && !admitted {
                self.queue_full.inc();
                return Err(FilterError::Overloaded(Overload::QueueFull));
            } else {
                (turns + WAITER, false)
            };
            match self
                .turns
                .compare_exchange_weak(turns, next, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) if outcome => return Ok(Turn(self)),
                Ok(_) => break,
                Err(now) => turns = now,
            }
        }
        let _waiting = Waiting(&self.turns);
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
    use std::future::Future;
    use std::sync::atomic::AtomicUsize;

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
        assert_eq!(
            waiting(a.turns.load(Ordering::Relaxed)),
            0,
            "the queue is left on every path"
        );
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
        // Free turns while requests wait would let a newcomer overtake them: a watcher
        // reads the word throughout and must never see both.
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let watcher = {
            let (a, done) = (a.clone(), done.clone());
            std::thread::spawn(move || {
                let mut seen = 0u64;
                while !done.load(Ordering::Relaxed) {
                    let turns = a.turns.load(Ordering::Acquire);
                    assert!(
                        free(turns) == 0 || waiting(turns) == 0,
                        "{} free turns while {} wait",
                        free(turns),
                        waiting(turns)
                    );
                    seen += 1;
                }
                seen
            })
        };
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
        done.store(true, Ordering::Relaxed);
        assert!(watcher.join().expect("the watcher saw no overtaking") > 0);
        let turns = a.turns.load(Ordering::SeqCst);
        assert_eq!(waiting(turns), 0);
        // Every turn is back: free, or handed to the queue and not yet taken.
        assert_eq!(free(turns) as usize + a.queue.available_permits(), 2);
    }

    #[tokio::test]
    async fn a_turn_given_back_while_a_request_waits_is_the_waiters() {
        let (a, _) = admission(1, 4, 5_000);
        let held = a.enter(false).await.expect("first turn");
        let mut waiter = std::pin::pin!(a.enter(false));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        assert!(waiter.as_mut().poll(&mut cx).is_pending(), "no turn is free: it waits");
        drop(held);
        assert!(a.try_enter().is_none(), "a newcomer does not take the waiter's turn");
        assert!(waiter.await.is_ok());
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
