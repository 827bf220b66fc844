//! The sandbox's limits: linear memory (a `ResourceLimiter`), CPU time per phase (epoch
//! interruption), and how a failed call becomes a [`FilterError`].

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap, UpdateDeadline};

use super::state::HostState;
use crate::filter::{FilterError, Limit};

/// How often the engine's epoch advances. The CPU budget is enforced to within about
/// one tick; a tick costs the ticker thread one wake-up and the guest nothing (the check
/// is a load and a compare at loop headers and function entries).
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Which limit a guest ran into during the current call, if any.
pub(crate) type LimitHit = Option<Limit>;

/// The memory limit of one instance. Unlike `StoreLimits` it records that the limit was
/// hit, so the trap that usually follows (Rust aborts on allocation failure) is reported
/// as `LimitExceeded(Limit::Memory)` rather than as an unexplained `unreachable`.
pub(crate) struct Limiter {
    memory: usize,
    pub hit: LimitHit,
    /// The largest linear memory granted so far: Wasm memories never shrink, so this is
    /// what the instance holds now.
    pub grown: usize,
}

impl Limiter {
    pub fn new(memory: usize) -> Self {
        Limiter {
            memory,
            hit: None,
            grown: 0,
        }
    }

    /// Whether the instance has used most of its memory limit: it is retired after its
    /// call rather than reused, so that the request that would have run out of memory
    /// gets a fresh instance instead of a 500. A heap that only grows (SpiderMonkey in
    /// componentize-js keeps about 1 KiB per call that its GC never returns) then costs an
    /// instantiation every few thousand requests, not a failed request.
    pub fn nearly_full(&self) -> bool {
        self.grown > self.memory / 4 * 3
    }
}

/// Tables only hold function references; this bounds a guest growing one without end.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // Refuse the growth (memory.grow returns -1, as on a real out-of-memory);
            // the guest may cope, and if it traps instead the trap is blamed on memory.
            self.hit = Some(Limit::Memory);
            return Ok(false);
        }
        self.grown = self.grown.max(desired);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// CPU accounting of the phase in progress. Wall time since the call started, minus the
/// time spent waiting in async host calls (callouts, KV) — a guest waiting on the network
/// is not burning CPU, and its callout has its own timeout — and minus the time it spent
/// yielded to other tasks between slices (see [`sliced`]).
#[derive(Default)]
pub(crate) struct Budget {
    started: Option<Instant>,
    allowed: Duration,
    pub waited: Duration,
    pub slices: Arc<SliceClock>,
}

impl Budget {
    fn used(&self) -> Duration {
        self.started.map_or(Duration::ZERO, |s| {
            s.elapsed()
                .saturating_sub(self.waited)
                .saturating_sub(self.slices.yielded())
        })
    }
}

/// When the guest yielded at the end of a slice, and how long it has spent yielded in the
/// current call. Written by the epoch callback (on yield) and by [`sliced`] (on resume),
/// which run on the same task one after the other; atomics only make it `Sync`.
pub(crate) struct SliceClock {
    base: Instant,
    /// Nanoseconds after `base` at which the guest yielded, plus one; 0 while it runs.
    yielded_at: AtomicU64,
    yielded_total: AtomicU64,
}

impl Default for SliceClock {
    fn default() -> Self {
        SliceClock {
            base: Instant::now(),
            yielded_at: AtomicU64::new(0),
            yielded_total: AtomicU64::new(0),
        }
    }
}

impl SliceClock {
    fn now(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64 + 1
    }

    fn reset(&self) {
        self.yielded_at.store(0, Ordering::Relaxed);
        self.yielded_total.store(0, Ordering::Relaxed);
    }

    fn yielding(&self) {
        self.yielded_at.store(self.now(), Ordering::Relaxed);
    }

    fn resumed(&self) {
        let at = self.yielded_at.swap(0, Ordering::Relaxed);
        if at != 0 {
            self.yielded_total
                .fetch_add(self.now().saturating_sub(at), Ordering::Relaxed);
        }
    }

    fn yielded(&self) -> Duration {
        Duration::from_nanos(self.yielded_total.load(Ordering::Relaxed))
    }
}

/// Runs a call into the guest so that the time between its slices — when it has yielded
/// and other requests run on the worker thread — is not charged to its CPU budget.
pub(crate) async fn sliced<F: Future>(clock: &SliceClock, call: F) -> F::Output {
    let mut call = std::pin::pin!(call);
    std::future::poll_fn(|cx| {
        clock.resumed();
        call.as_mut().poll(cx)
    })
    .await
}

/// Arms the CPU budget for one call into the guest.
pub(crate) fn start_call(store: &mut Store<HostState>, allowed: Duration) {
    let data = store.data_mut();
    data.budget.slices.reset();
    data.budget.started = Some(Instant::now());
    data.budget.allowed = allowed;
    data.budget.waited = Duration::ZERO;
    data.limiter.hit = None;
    // One tick per slice: the guest yields its worker thread every tick until the budget is
    // spent, so a filter spinning for its whole budget delays no other request by more
    // than a tick (Envoy's Wasm filters hold the worker instead).
    store.set_epoch_deadline(1);
}

/// Installed once per store: runs at the end of every slice, and either yields to the
/// executor for another slice or, with the budget spent, stops the guest.
pub(crate) fn install(store: &mut Store<HostState>) {
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|mut ctx: StoreContextMut<'_, HostState>| {
        let data = ctx.data_mut();
        let used = data.budget.used();
        if used >= data.budget.allowed {
            data.limiter.hit = Some(Limit::Cpu);
            return Ok(UpdateDeadline::Interrupt);
        }
        data.budget.slices.yielding();
        Ok(UpdateDeadline::Yield(1))
    });
}

/// Turns a failed call (or instantiation) into the error the chain sees. Limits recorded
/// by the host win over the trap they caused; a trap is the guest's fault, and its
/// message carries what the guest wrote to stderr just before (a Rust panic message);
/// anything else is the host's (see [`FilterError::Host`]).
pub(crate) fn classify(err: &wasmtime::Error, state: &mut HostState) -> FilterError {
    if let Some(kind) = state.limiter.hit.take() {
        return FilterError::LimitExceeded(kind);
    }
    let stderr = state.stderr.take_tail();
    let what = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return FilterError::LimitExceeded(Limit::Cpu),
        Some(trap) => trap.to_string(),
        // Not a trap, so not the guest's doing as far as the host can tell: the instance
        // pool is exhausted, or a host function failed. Classed as the host's, which
        // fails the request even when the filter fails open: when in doubt, closed.
        None => return FilterError::Host(format!("{err:#}")),
    };
    if stderr.is_empty() {
        FilterError::Trap(what)
    } else {
        FilterError::Trap(format!("{what}; guest stderr: {stderr}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_is_nearly_full_past_three_quarters_of_its_memory_limit() {
        let mut limiter = Limiter::new(16 << 20);
        assert!(limiter.memory_growing(0, 1 << 20, None).expect("grow"));
        assert!(!limiter.nearly_full(), "a Rust filter's start");
        assert!(limiter.memory_growing(1 << 20, 12 << 20, None).expect("grow"));
        assert!(!limiter.nearly_full(), "exactly three quarters");
        assert!(
            limiter
                .memory_growing(12 << 20, (12 << 20) + 65536, None)
                .expect("grow")
        );
        assert!(limiter.nearly_full());
        // A refused growth is not held.
        let mut limiter = Limiter::new(16 << 20);
        assert!(!limiter.memory_growing(0, 32 << 20, None).expect("refuse"));
        assert_eq!((limiter.grown, limiter.hit), (0, Some(Limit::Memory)));
    }
}
