//! The sandbox's limits: linear memory (a `ResourceLimiter`), CPU time per phase (epoch
//! interruption), and how a failed call becomes a [`FilterError`].

use std::time::{Duration, Instant};

use wasmtime::{ResourceLimiter, Store, StoreContextMut, Trap, UpdateDeadline};

use super::state::HostState;
use crate::filter::FilterError;

/// How often the engine's epoch advances. The CPU budget is enforced to within about
/// one tick; a tick costs the ticker thread one wake-up and the guest nothing (the check
/// is a load and a compare at loop headers and function entries).
pub(crate) const TICK: Duration = Duration::from_millis(1);

/// Which limit a guest ran into during the current call, if any.
pub(crate) type LimitHit = Option<&'static str>;

/// The memory limit of one instance. Unlike `StoreLimits` it records that the limit was
/// hit, so the trap that usually follows (Rust aborts on allocation failure) is reported
/// as `LimitExceeded("memory")` rather than as an unexplained `unreachable`.
pub(crate) struct Limiter {
    memory: usize,
    pub hit: LimitHit,
}

impl Limiter {
    pub fn new(memory: usize) -> Self {
        Limiter { memory, hit: None }
    }
}

/// Tables only hold function references; this bounds a guest growing one without end.
const MAX_TABLE_ELEMENTS: usize = 100_000;

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            // Refuse the growth (memory.grow returns -1, as on a real out-of-memory);
            // the guest may cope, and if it traps instead the trap is blamed on memory.
            self.hit = Some("memory");
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

/// CPU accounting of the phase in progress. Wall time since the call started, minus the
/// time spent waiting in async host calls (callouts, KV): a guest waiting on the network
/// is not burning CPU, and its callout has its own timeout.
#[derive(Default)]
pub(crate) struct Budget {
    started: Option<Instant>,
    allowed: Duration,
    pub waited: Duration,
}

impl Budget {
    fn used(&self) -> Duration {
        self.started
            .map_or(Duration::ZERO, |s| s.elapsed().saturating_sub(self.waited))
    }
}

fn ticks(d: Duration) -> u64 {
    // Round up, and at least one tick, so a deadline is never already in the past.
    (d.as_micros().div_ceil(TICK.as_micros()) as u64).max(1)
}

/// Arms the CPU budget for one call into the guest.
pub(crate) fn start_call(store: &mut Store<HostState>, allowed: Duration) {
    let data = store.data_mut();
    data.budget = Budget {
        started: Some(Instant::now()),
        allowed,
        waited: Duration::ZERO,
    };
    data.limiter.hit = None;
    store.set_epoch_deadline(ticks(allowed));
}

/// Installed once per store: runs when the epoch deadline passes, and either extends it
/// (time spent waiting did not count) or stops the guest.
pub(crate) fn install(store: &mut Store<HostState>) {
    store.limiter(|state| &mut state.limiter);
    store.epoch_deadline_callback(|mut ctx: StoreContextMut<'_, HostState>| {
        let data = ctx.data_mut();
        let used = data.budget.used();
        if used >= data.budget.allowed {
            data.limiter.hit = Some("cpu");
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(ticks(data.budget.allowed - used)))
    });
}

/// Turns a failed call into the error the chain sees. Limits recorded by the host win
/// over the trap they caused; otherwise a trap's message carries what the guest wrote to
/// stderr just before (a Rust panic message).
pub(crate) fn classify(err: &wasmtime::Error, state: &mut HostState) -> FilterError {
    if let Some(kind) = state.limiter.hit.take() {
        return FilterError::LimitExceeded(kind);
    }
    let stderr = state.stderr.take_tail();
    let what = match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => return FilterError::LimitExceeded("cpu"),
        Some(trap) => trap.to_string(),
        // Not the guest's doing (e.g. the instance pool is exhausted): say so, not "trap".
        None => return FilterError::Other(format!("{err:#}")),
    };
    if stderr.is_empty() {
        FilterError::Trap(what)
    } else {
        FilterError::Trap(format!("{what}; guest stderr: {stderr}"))
    }
}
