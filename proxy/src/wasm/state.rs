//! The data of one instance's `Store`: what its host functions reach.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{request, response};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::host::callout::CalloutTransport;
use super::host::metrics::{MetricCache, MetricNames};
use super::host::stdio::GuestOutput;
use super::limits::{Budget, Limiter};
use super::output::LogBudget;
use crate::filter::metrics::FilterMetrics;
use crate::filter::{Context, RequestCtx};
use crate::kv::KvSpace;
use crate::upstream::Clusters;

/// What every instance of one loaded filter shares.
pub(crate) struct FilterShared {
    pub name: Arc<str>,
    pub metrics: Arc<FilterMetrics>,
    /// This filter's space in the KV store, resolved at load.
    pub kv: Arc<dyn KvSpace>,
    /// Clusters of the config version this filter was loaded with, for callouts.
    pub clusters: Arc<Clusters>,
    /// Where callouts go: `clusters`, or the test kit's canned answers.
    pub callouts: CalloutTransport,
    /// `limits.body`: the largest body the guest may see or set.
    pub body_limit: usize,
    /// The metric names the filter uses, bounded across its instances.
    pub metric_names: MetricNames,
    /// The filter's log lines per second, shared by its instances.
    pub log_budget: LogBudget,
}

/// The request or response of the phase in progress. Moved into the store for the
/// call (host state must be `'static`) and moved back afterwards: swapping two
/// `Parts` copies a few hundred bytes and allocates nothing.
pub(crate) struct Phase {
    pub req_head: request::Parts,
    pub req_body: Option<Bytes>,
    pub resp_head: response::Parts,
    pub resp_body: Option<Bytes>,
}

impl Phase {
    fn empty() -> Self {
        // `Request::new`/`Response::new` with a unit body allocate nothing.
        Phase {
            req_head: http::Request::new(()).into_parts().0,
            req_body: None,
            resp_head: http::Response::new(()).into_parts().0,
            resp_body: None,
        }
    }
}

/// The request facts the `metadata` interface answers with, copied from `RequestCtx`
/// (cheap: `Arc` clones and a `Copy` address).
#[derive(Default)]
pub(crate) struct Meta {
    pub client: Option<SocketAddr>,
    pub listener: Option<Arc<str>>,
    pub route: Option<Arc<str>>,
    pub scheme: &'static str,
    pub peer: Option<Arc<str>>,
    pub trace_id: Option<opentelemetry::trace::TraceId>,
}

impl Meta {
    /// A pooled instance mostly serves requests of the same listener and route: their
    /// names are the same `Arc`s as last time, so they are kept rather than cloned (no
    /// atomic add here and subtract for the one replaced, on every phase).
    pub fn set(&mut self, ctx: &RequestCtx) {
        self.client = Some(ctx.client_addr);
        same_or_clone(&mut self.listener, Some(&ctx.listener));
        same_or_clone(&mut self.route, Some(&ctx.route));
        self.scheme = ctx.scheme;
        same_or_clone(&mut self.peer, ctx.peer_identity.as_ref());
        self.trace_id = ctx.trace_id;
    }
}

/// Sets `slot` to `value`, cloning the `Arc` only when it is not the one held already.
fn same_or_clone(slot: &mut Option<Arc<str>>, value: Option<&Arc<str>>) {
    match (slot.as_ref(), value) {
        (Some(held), Some(value)) if Arc::ptr_eq(held, value) => {}
        (None, None) => {}
        _ => *slot = value.cloned(),
    }
}

/// One instance's store data.
pub(crate) struct HostState {
    pub shared: Arc<FilterShared>,
    pub phase: Phase,
    pub meta: Meta,
    /// The request's context values, moved in for the phase call (and back after).
    pub context: Context,
    /// Whether a phase is in progress (false during `init`): the context needs a request.
    pub in_phase: bool,
    /// `fields` handles the guest holds (see `http::MAX_LIVE_FIELDS`).
    pub live_fields: usize,
    pub limiter: Limiter,
    pub budget: Budget,
    pub metric_cache: MetricCache,
    pub stderr: GuestOutput,
    wasi: WasiCtx,
    /// Shared with WASI: `fields` handles live here too.
    pub table: ResourceTable,
}

impl HostState {
    pub fn new(shared: Arc<FilterShared>, memory_limit: usize) -> Self {
        let stdout = GuestOutput::new(shared.clone(), "stdout");
        let stderr = GuestOutput::new(shared.clone(), "stderr");
        // No preopened directories, no sockets allowed, no environment, no args: the
        // guest gets clocks, randomness and the two output streams (which go to our log).
        let wasi = WasiCtx::builder().stdout(stdout).stderr(stderr.clone()).build();
        HostState {
            shared,
            phase: Phase::empty(),
            meta: Meta::default(),
            context: Context::default(),
            in_phase: false,
            live_fields: 0,
            limiter: Limiter::new(memory_limit),
            budget: Budget::default(),
            metric_cache: MetricCache::default(),
            stderr,
            wasi,
            table: ResourceTable::new(),
        }
    }
}

impl HostState {
    /// Moves the request's facts and context values in for a phase call.
    pub fn enter_phase(&mut self, ctx: &mut RequestCtx) {
        self.meta.set(ctx);
        std::mem::swap(&mut self.context, &mut ctx.context);
        self.in_phase = true;
    }

    /// Moves the context values (as the guest left them) back to the request.
    pub fn leave_phase(&mut self, ctx: &mut RequestCtx) {
        std::mem::swap(&mut self.context, &mut ctx.context);
        self.in_phase = false;
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
