//! Instances of one loaded filter: created from the `InstancePre`, initialised with the
//! filter's config, kept for reuse after a clean call, dropped after a failed one.

use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use prometheus_client::metrics::gauge::Gauge;
use wasmtime::Store;

use super::bindings::{Filter as FilterWorld, Options};
use super::engine::Compiled;
use super::limits;
use super::state::{FilterShared, HostState};
use crate::filter::FilterError;
use crate::filter::metrics::FilterStats;

/// Whether instances outlive a request. See `DESIGN.md` for the measurements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InstanceReuse {
    /// Keep an instance after a call that did not fail, for the next request. Guest
    /// globals persist between requests of the same filter (never across filters).
    #[default]
    Pooled,
    /// A new instance (and `init`) for every phase: no state survives a call.
    Fresh,
}

/// A live instance and its store.
pub(crate) struct Instance {
    pub store: Store<HostState>,
    pub world: FilterWorld,
    /// The store's slice clock (`budget.slices`), held here so a call borrows it beside
    /// the store instead of cloning the `Arc` for every call.
    pub clock: Arc<limits::SliceClock>,
    _live: Live,
}

/// Counts an instance in `weft_filter_instances{state="live"}` for as long as it exists.
struct Live(Gauge);

impl Drop for Live {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Why an instance could not be made ready.
pub(crate) enum CreateError {
    /// `init` returned an error: the guest refused its config.
    Refused(String),
    /// Instantiation or `init` trapped or hit a limit (the guest's fault), or the engine
    /// could not make an instance (the host's: the pool is exhausted).
    Failed(FilterError),
}

/// Idle instances kept per filter. More concurrent requests create more instances; the
/// surplus is dropped when they finish, so a burst does not pin memory forever.
const MAX_IDLE: usize = 32;

pub(crate) struct Pool {
    compiled: Arc<Compiled>,
    shared: Arc<FilterShared>,
    config_json: Box<str>,
    memory: usize,
    /// `init` may parse config and build tables: it gets a more generous budget than a
    /// phase, but still one, so a guest cannot hang a reload.
    init_budget: Duration,
    reuse: InstanceReuse,
    /// Lock-free: every phase call takes and returns an instance.
    idle: ArrayQueue<Instance>,
    /// The instance gauges (shared with the filter's other versions, by name).
    stats: FilterStats,
}

impl Drop for Pool {
    fn drop(&mut self) {
        // The idle instances go with the pool (a reload replaced it).
        self.stats.idle.dec_by(self.idle.len() as i64);
    }
}

impl Pool {
    pub fn new(
        compiled: Arc<Compiled>,
        shared: Arc<FilterShared>,
        config_json: &str,
        memory: usize,
        cpu: Duration,
        reuse: InstanceReuse,
        stats: FilterStats,
    ) -> Self {
        Pool {
            compiled,
            shared,
            config_json: config_json.into(),
            memory,
            init_budget: (cpu * 10).max(Duration::from_secs(1)),
            reuse,
            idle: ArrayQueue::new(MAX_IDLE),
            stats,
        }
    }

    /// A new instance with `init` run, and the options `init` returned.
    pub async fn create(&self) -> Result<(Instance, Options), CreateError> {
        let engine = self.compiled.pre.engine();
        let mut store = Store::new(engine, HostState::new(self.shared.clone(), self.memory));
        limits::install(&mut store);
        // Instantiation runs the guest's start-up code: it is budgeted like `init`.
        limits::start_call(&mut store, self.init_budget);
        let clock = store.data().budget.slices.clone();
        let world = match limits::sliced(&clock, self.compiled.pre.instantiate_async(&mut store)).await {
            Ok(world) => world,
            Err(e) => return Err(CreateError::Failed(limits::classify(&e, store.data_mut()))),
        };
        limits::start_call(&mut store, self.init_budget);
        match limits::sliced(
            &clock,
            world.weft_filter_hooks().call_init(&mut store, &self.config_json),
        )
        .await
        {
            Ok(Ok(options)) => {
                self.stats.live.inc();
                let live = Live(self.stats.live.clone());
                Ok((
                    Instance {
                        store,
                        world,
                        clock,
                        _live: live,
                    },
                    options,
                ))
            }
            Ok(Err(message)) => Err(CreateError::Refused(message)),
            Err(e) => Err(CreateError::Failed(limits::classify(&e, store.data_mut()))),
        }
    }

    /// An idle instance, if there is one: a lock-free pop, no future.
    pub fn try_acquire(&self) -> Option<Instance> {
        let instance = self.idle.pop()?;
        self.stats.idle.dec();
        Some(instance)
    }

    /// An idle instance, or a new one.
    pub async fn acquire(&self) -> Result<Instance, FilterError> {
        if let Some(instance) = self.try_acquire() {
            return Ok(instance);
        }
        // Boxed: instantiation's future is kilobytes, and every phase's future would
        // otherwise carry (and move) room for it although a pooled instance is the rule.
        match Box::pin(self.create()).await {
            Ok((instance, _)) => Ok(instance),
            // `init` accepted this config at load time; refusing it now is a guest bug.
            Err(CreateError::Refused(message)) => {
                Err(FilterError::Invalid(format!("init refused the config: {message}")))
            }
            Err(CreateError::Failed(e)) => Err(e),
        }
    }

    /// Returns an instance after a call that succeeded; one near its memory limit is
    /// dropped instead (see [`limits::Limiter::nearly_full`]).
    pub fn release(&self, instance: Instance) {
        if self.reuse == InstanceReuse::Fresh || instance.store.data().limiter.nearly_full() {
            return;
        }
        // Full: the surplus instance is dropped.
        if self.idle.push(instance).is_ok() {
            self.stats.idle.inc();
        }
    }
}
