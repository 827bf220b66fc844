//! The filter API inside the proxy: one trait, one method per phase, shared by native
//! filters and Wasm filters (see `wasm`). Its phases mirror the WIT world `weft:filter/filter`.
//!
//! A route's chain runs the request phase in config order and the response phase in
//! reverse order. The request phase returns a [`RequestDecision`], the response phase a
//! [`ResponseDecision`] (the WIT's `request-decision` and `response-decision`: a reroute
//! exists only where it can work); an `Err` fails the request unless the chain entry is
//! configured to fail open.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::Bytes;
use http::{Response, request, response};

use crate::body::Body;
use crate::config::FailureMode;
use crate::upstream::Cluster;

pub mod context;
pub mod headers;
pub mod identity;
pub mod metrics;

pub use context::Context;

/// What a filter decided in the request phase.
// A decision lives for one phase and its `Response` moves on as the answer: boxing it
// would cost every direct answer an allocation to save a few hundred bytes of stack.
#[allow(clippy::large_enum_variant)]
#[non_exhaustive]
pub enum RequestDecision {
    /// Go on to the next filter, then upstream.
    Continue,
    /// Stop the chain and answer the client with this response.
    Respond(Response<Body>),
    /// Send the request to this cluster instead of the route's. The filter resolves the
    /// name against its config version's clusters, once: an unknown name is the filter's
    /// fault ([`FilterError::Invalid`]), so the chain never looks it up again.
    Reroute(Arc<Cluster>),
}

/// What a filter decided in the response phase.
#[allow(clippy::large_enum_variant)] // as RequestDecision
#[non_exhaustive]
pub enum ResponseDecision {
    /// Go on to the next filter, then back to the client.
    Continue,
    /// Answer the client with this response instead.
    Respond(Response<Body>),
}

/// The request as filters see it: the head, and the body when a filter of the chain
/// asked for it to be buffered.
pub struct FilterRequest {
    pub head: request::Parts,
    /// `Some` only when some filter's [`Filter::request_body_limit`] made the chain buffer it.
    pub body: Option<Bytes>,
}

/// The upstream's response as filters see it.
pub struct FilterResponse {
    pub head: response::Parts,
    /// `Some` only when some filter's [`Filter::response_body_limit`] made the chain buffer it.
    pub body: Option<Bytes>,
}

/// Facts about the request that no filter can change, and per-request scratch state.
pub struct RequestCtx {
    pub client_addr: SocketAddr,
    pub listener: Arc<str>,
    pub route: Arc<str>,
    /// `"http"` or `"https"`.
    pub scheme: &'static str,
    /// Identity of a verified TLS client certificate, when there is one.
    pub peer_identity: Option<Arc<str>>,
    /// Values a filter keeps between its request and response phases (or hands to a later
    /// filter). Empty, it allocates nothing.
    pub context: Context,
    /// The request's trace id, when tracing is on.
    pub trace_id: Option<opentelemetry::trace::TraceId>,
}

impl RequestCtx {
    pub fn new(client_addr: SocketAddr, listener: Arc<str>, route: Arc<str>, scheme: &'static str) -> Self {
        RequestCtx {
            client_addr,
            listener,
            route,
            scheme,
            peer_identity: None,
            context: Context::default(),
            trace_id: None,
        }
    }
}

/// Why a filter failed. Two kinds, because fail-open must only ever skip a filter for
/// its own fault: a host-side failure (no instance to run it on, overload) is no
/// evidence about the request, and skipping an auth filter for it would let an attacker
/// who can exhaust the host walk past authentication.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// The guest trapped (or panicked). Its own fault.
    #[error("filter trapped: {0}")]
    Trap(String),
    /// The guest hit a sandbox limit. Its own fault.
    #[error("filter exceeded its {0} limit")]
    LimitExceeded(Limit),
    /// The guest decided something the proxy cannot carry out (an invalid status or
    /// header, an unknown cluster). Its own fault.
    #[error("{0}")]
    Invalid(String),
    /// The proxy could not run the filter: the instance pool is exhausted, or
    /// instantiating failed for a reason that is not the guest's. Always fails the
    /// request, whatever `on_error` says.
    #[error("the proxy could not run the filter: {0}")]
    Host(String),
    /// The filter is at `limits.max_concurrency` and its wait queue is full or the wait
    /// timed out: answered 503 with `Retry-After`, whatever `on_error` says.
    #[error("filter overloaded: {0}")]
    Overloaded(Overload),
}

/// The sandbox limit a guest ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `limits.cpu`: the phase's CPU budget (epoch interruption).
    Cpu,
    /// `limits.memory`: linear memory (or a table) would grow past it.
    Memory,
    /// `limits.body`: a body set or replied over it.
    Body,
    /// The 64 header lists (`fields`) a guest may hold at once.
    Fields,
}

impl Limit {
    /// The `kind` label of `weft_filter_errors_total`, and the limit's name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Cpu => "cpu",
            Limit::Memory => "memory",
            Limit::Body => "body",
            Limit::Fields => "fields",
        }
    }
}

impl std::fmt::Display for Limit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a request could not get a turn at a filter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    /// `limits.max_queue` requests were already waiting.
    QueueFull,
    /// It waited `limits.queue_timeout` without getting an instance.
    QueueTimeout,
}

impl Overload {
    /// The label of `weft_filter_rejected_total{reason}`.
    pub fn reason(self) -> &'static str {
        match self {
            Overload::QueueFull => "queue_full",
            Overload::QueueTimeout => "queue_timeout",
        }
    }
}

impl std::fmt::Display for Overload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Overload::QueueFull => "its wait queue is full",
            Overload::QueueTimeout => "no instance became free within its queue timeout",
        })
    }
}

impl FilterError {
    /// A short label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            FilterError::Trap(_) => "trap",
            FilterError::LimitExceeded(limit) => limit.as_str(),
            FilterError::Invalid(_) => "invalid",
            FilterError::Host(_) => "host",
            FilterError::Overloaded(_) => "overloaded",
        }
    }

    /// Whether the filter itself is to blame: only then may `on_error = "open"` skip it.
    pub fn is_guest_fault(&self) -> bool {
        matches!(
            self,
            FilterError::Trap(_) | FilterError::LimitExceeded(_) | FilterError::Invalid(_)
        )
    }
}

/// A boxed request-phase future: filters that do I/O (Wasm callouts) need `async`, and
/// the chain holds filters of different types behind `dyn`.
pub type RequestFuture<'a> = Pin<Box<dyn Future<Output = Result<RequestDecision, FilterError>> + Send + 'a>>;
/// A boxed response-phase future, as [`RequestFuture`].
pub type ResponseFuture<'a> = Pin<Box<dyn Future<Output = Result<ResponseDecision, FilterError>> + Send + 'a>>;

/// One filter. Implement only the phases you need; the defaults continue.
pub trait Filter: Send + Sync + 'static {
    /// The name used in logs and metrics (the config's filter name).
    fn name(&self) -> &str;

    /// Runs after routing, before the upstream request is sent. May change the request
    /// head (and the body when buffered), answer directly, or reroute to another cluster.
    fn on_request<'a>(&'a self, req: &'a mut FilterRequest, ctx: &'a mut RequestCtx) -> RequestFuture<'a> {
        let _ = (req, ctx);
        Box::pin(std::future::ready(Ok(RequestDecision::Continue)))
    }

    /// Runs when the upstream's response head has arrived (or a filter answered directly).
    /// May change the response head (and the body when buffered) or replace the response.
    fn on_response<'a>(&'a self, resp: &'a mut FilterResponse, ctx: &'a mut RequestCtx) -> ResponseFuture<'a> {
        let _ = (resp, ctx);
        Box::pin(std::future::ready(Ok(ResponseDecision::Continue)))
    }

    /// Whether [`Filter::on_request`] does anything: the chain skips it otherwise.
    fn has_request_phase(&self) -> bool {
        true
    }

    /// Whether [`Filter::on_response`] does anything: the chain skips it otherwise.
    fn has_response_phase(&self) -> bool {
        true
    }

    /// The largest request body this filter wants to see buffered; `None` streams it.
    fn request_body_limit(&self) -> Option<usize> {
        None
    }

    /// The largest response body this filter wants to see buffered; `None` streams it.
    fn response_body_limit(&self) -> Option<usize> {
        None
    }

    /// What the admin API shows of a filter loaded from a plugin file.
    fn plugin(&self) -> Option<&PluginInfo> {
        None
    }
}

/// A Wasm plugin as loaded: from where, its content hash and WIT version, and when.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginInfo {
    pub path: std::path::PathBuf,
    pub sha256: String,
    pub wit: String,
    /// Seconds since the Unix epoch.
    pub loaded_at: u64,
}

/// A filter as placed in a route's chain.
#[derive(Clone)]
pub struct ChainEntry {
    pub filter: Arc<dyn Filter>,
    pub on_error: FailureMode,
    /// The filter's call timings, shared by every chain it is in.
    pub stats: metrics::FilterStats,
}
