//! What the proxy records about each request: an access-log record and a trace.
//!
//! [`Observer`] is process-wide and holds what the current config asked for (the
//! access-log writer, the trace exporter), swapped on reload. Each request gets a
//! [`Recorder`]: with both off (the default) it is empty, and every call on it is one
//! branch — no clock read, no allocation. With either on it collects the request's
//! facts and, once the response body has been sent, hands them to the log writer and
//! ends the request's span.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{Response, request};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;

use crate::body::{Body, BodyError};
use crate::config::{AccessLogConfig, Config, ConfigError, TracingConfig};
use crate::conn::ConnInfo;
use crate::respond::{ProxyError, Side};
use crate::upstream::{UpstreamError, UpstreamSlot};
use metrics::ObserveMetrics;

pub mod access_log;
pub mod metrics;
mod query;
pub mod trace;

pub use opentelemetry::trace::TraceId;

/// The process's observers, reconfigured with each config version.
pub struct Observer {
    /// False when neither is configured: the request path reads this and nothing else.
    on: AtomicBool,
    active: ArcSwap<Active>,
    log_dropped: Counter,
    spans_dropped: Counter,
}

/// What one config asked for.
#[derive(Default)]
struct Active {
    log: Option<Log>,
    tracing: Option<(TracingConfig, Arc<trace::Tracing>)>,
}

struct Log {
    config: AccessLogConfig,
    sink: Arc<access_log::Sink>,
    /// Routes with `access_log = false`.
    quiet: HashSet<Box<str>>,
    sampled: Sampling,
}

impl Observer {
    /// Starts what `config` asks for; listens for SIGUSR1 to reopen the log file.
    pub fn start(config: &Config, metrics: &ObserveMetrics) -> Result<Arc<Observer>, ConfigError> {
        let observer = Arc::new(Observer {
            on: AtomicBool::new(false),
            active: ArcSwap::from_pointee(Active::default()),
            log_dropped: metrics.access_log_dropped.clone(),
            spans_dropped: metrics.trace_spans_dropped.clone(),
        });
        observer.reconfigure(config)?;
        let weak = Arc::downgrade(&observer);
        if let Ok(mut usr1) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            tokio::spawn(async move {
                while usr1.recv().await.is_some() {
                    let Some(observer) = weak.upgrade() else { return };
                    if let Some(log) = &observer.active.load().log {
                        log.sink.reopen();
                    }
                }
            });
        }
        Ok(observer)
    }

    /// Takes `config`'s `[access_log]` and `[tracing]`, keeping the running writer and
    /// exporter when their section is unchanged. Fails (changing nothing) when a new
    /// log file cannot be opened or an exporter cannot be built.
    pub fn reconfigure(&self, config: &Config) -> Result<(), ConfigError> {
        let src = &config.source;
        let running = self.active.load();
        let log = match &config.access_log {
            None => None,
            Some(spanned) => {
                let wanted = spanned.get_ref();
                let sink = match &running.log {
                    Some(log) if log.config == *wanted => log.sink.clone(),
                    _ => Arc::new(
                        access_log::Sink::start(wanted, self.log_dropped.clone())
                            .map_err(|e| src.error_at(spanned.span(), e))?,
                    ),
                };
                let quiet = config
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| !r.get_ref().access_log)
                    .map(|(i, r)| r.get_ref().name.clone().unwrap_or_else(|| format!("route-{i}")).into())
                    .collect();
                Some(Log {
                    config: wanted.clone(),
                    sink,
                    quiet,
                    sampled: Sampling::new(wanted.sample),
                })
            }
        };
        let tracing = match (&config.tracing, &running.tracing) {
            (None, _) => None,
            // Unchanged: keep the exporter, and the spans it has queued.
            (Some(spanned), Some((config, tracing))) if spanned.get_ref() == config => {
                Some((config.clone(), tracing.clone()))
            }
            (Some(spanned), _) => {
                let wanted = spanned.get_ref();
                let tracing = trace::Tracing::start(wanted, self.spans_dropped.clone())
                    .map_err(|e| src.error_at(spanned.span(), e))?;
                Some((wanted.clone(), Arc::new(tracing)))
            }
        };
        let on = log.is_some() || tracing.is_some();
        self.active.store(Arc::new(Active { log, tracing }));
        self.on.store(on, Ordering::Relaxed);
        Ok(())
    }

    /// At shutdown, after the drain: writes the records and exports the spans still
    /// queued, waiting at most `within` (a stuck log file or collector cannot hold the
    /// exit up).
    pub async fn close(&self, within: std::time::Duration) {
        self.on.store(false, Ordering::Relaxed);
        let active = self.active.swap(Arc::new(Active::default()));
        let flush = tokio::task::spawn_blocking(move || {
            if let Some(log) = &active.log {
                log.sink.flush(within);
            }
            if let Some((_, tracing)) = &active.tracing {
                tracing.flush(within);
            }
        });
        let _ = tokio::time::timeout(within * 2, flush).await;
    }

    /// Starts recording a request: empty when nothing is configured.
    pub fn begin(&self, conn: &ConnInfo, head: &request::Parts) -> Recorder {
        if !self.on.load(Ordering::Relaxed) {
            return Recorder(None);
        }
        let active = self.active.load_full();
        let logged = active.log.as_ref().is_some_and(|log| log.sampled.take());
        let trace = active.tracing.as_ref().map(|(_, t)| t.begin(conn, head));
        if !logged && trace.is_none() {
            return Recorder(None);
        }
        let trace_id = match &trace {
            Some(trace) => Some(trace.trace_id()),
            None if may_carry_trace_context(&head.headers) => trace::incoming_trace_id(&head.headers),
            None => None,
        };
        Recorder(Some(Box::new(Record {
            active,
            logged,
            trace,
            trace_id,
            start: Instant::now(),
            time: SystemTime::now(),
            client: conn.peer,
            listener: conn.listener.clone(),
            direction: conn.interception.as_ref().map(|i| i.direction),
            original_dst: conn.original_dst,
            method: head.method.clone(),
            authority: authority(head),
            // Shared, not copied: the request's bytes are reference-counted.
            path: head.uri.path_and_query().cloned(),
            protocol: head.version,
            route: None,
            flags: Vec::new(),
            answered_by: None,
            upstream: UpstreamSlot::default(),
            upstream_started: None,
            upstream_duration: None,
            filters: Vec::new(),
            received: None,
        })))
    }
}

/// `:authority` or `Host`, as the client sent it: shared with the request, not copied.
enum Authority {
    Uri(http::uri::Authority),
    Host(http::HeaderValue),
    None,
}

fn authority(head: &request::Parts) -> Authority {
    match head.uri.authority() {
        Some(authority) => Authority::Uri(authority.clone()),
        None => match head.headers.get(http::header::HOST) {
            Some(host) => Authority::Host(host.clone()),
            None => Authority::None,
        },
    }
}

impl Authority {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        match self {
            Authority::Uri(authority) => authority.as_str().into(),
            // Checked whole first: faster than the lossy walk for the valid text nearly
            // every client sends.
            Authority::Host(host) => match std::str::from_utf8(host.as_bytes()) {
                Ok(text) => text.into(),
                Err(_) => String::from_utf8_lossy(host.as_bytes()),
            },
            Authority::None => "".into(),
        }
    }
}

/// Whether a request names a header an incoming trace context is read from
/// (`traceparent`, `b3`, `x-b3-traceid`): one pass over the names, cheaper than the
/// lookups `trace::incoming_trace_id` makes, which nearly every request would miss.
fn may_carry_trace_context(headers: &http::HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        match name.len() {
            2 => name == "b3",
            11 => name == "traceparent",
            12 => name == "x-b3-traceid",
            _ => false,
        }
    })
}

/// Which requests `sample` lets through: exactly that fraction, spread evenly, with no
/// random numbers on the request path (and nothing a client sends to steer it).
struct Sampling {
    every: f64,
    seen: AtomicU64,
}

impl Sampling {
    fn new(fraction: f64) -> Sampling {
        Sampling {
            every: fraction,
            seen: AtomicU64::new(0),
        }
    }

    fn take(&self) -> bool {
        if self.every >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.every).floor() > (n * self.every).floor()
    }
}

/// One request's recording; empty (one pointer, `None`) when nothing is configured.
pub struct Recorder(Option<Box<Record>>);

struct Record {
    /// Keeps this request's writer and exporter, even across a reload.
    active: Arc<Active>,
    logged: bool,
    trace: Option<trace::Trace>,
    trace_id: Option<TraceId>,
    start: Instant,
    time: SystemTime,
    client: SocketAddr,
    listener: Arc<str>,
    direction: Option<&'static str>,
    original_dst: Option<SocketAddr>,
    method: http::Method,
    authority: Authority,
    path: Option<http::uri::PathAndQuery>,
    protocol: http::Version,
    route: Option<Arc<str>>,
    flags: Vec<&'static str>,
    answered_by: Option<Arc<str>>,
    upstream: UpstreamSlot,
    upstream_started: Option<Instant>,
    upstream_duration: Option<std::time::Duration>,
    filters: Vec<(Arc<str>, &'static str, std::time::Duration)>,
    received: Option<Arc<AtomicU64>>,
}

/// The start of a filter phase, when recording.
pub struct PhaseStart(Option<Instant>);

impl Recorder {
    /// The request's trace id, for filters (`context::get-from("weft", "trace-id")`).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.0
            .as_ref()
            .and_then(|r| r.trace.as_ref().map(trace::Trace::trace_id))
    }

    /// Counts the request body's bytes as they are read.
    pub fn request_body(&mut self, body: Body) -> Body {
        let Some(record) = &mut self.0 else { return body };
        let received = Arc::new(AtomicU64::new(0));
        record.received = Some(received.clone());
        Body::boxed(Counted {
            inner: body,
            count: CountTo::Shared(received),
        })
    }

    /// The route that matched, by name and path template; a route with
    /// `access_log = false` is not logged.
    pub fn route(&mut self, name: &Arc<str>, template: &Arc<str>) {
        let Some(record) = &mut self.0 else { return };
        if let Some(trace) = &mut record.trace {
            trace.route(name, template);
        }
        if let Some(log) = &record.active.log
            && log.quiet.contains(&**name)
        {
            record.logged = false;
        }
        record.route = Some(name.clone());
    }

    pub fn phase_start(&self) -> PhaseStart {
        PhaseStart(self.0.as_ref().map(|_| Instant::now()))
    }

    /// A filter phase ended with `outcome`.
    pub fn phase_end(&mut self, start: PhaseStart, filter: &str, phase: &'static str, outcome: PhaseOutcome) {
        let (Some(record), Some(start)) = (&mut self.0, start.0) else {
            return;
        };
        let took = start.elapsed();
        if outcome == PhaseOutcome::Respond {
            record.answered_by = Some(filter.into());
            record.flags.push("filter_answered");
        }
        let outcome = outcome.as_str();
        if let Some(trace) = &record.trace {
            trace.phase(filter, phase, took, outcome);
        }
        record.filters.push((filter.into(), phase, took));
    }

    /// The request is about to go upstream to a cluster reached with `scheme`: its trace
    /// context goes with it.
    pub fn upstream_start(&mut self, head: &mut request::Parts, scheme: &'static str) {
        let Some(record) = &mut self.0 else { return };
        if let Some(trace) = &mut record.trace {
            trace.upstream_request(head, scheme);
        }
        record.upstream_started = Some(Instant::now());
    }

    /// Where the cluster notes the endpoints it sends to, when this request is recorded.
    pub fn upstream_slot(&self) -> Option<&UpstreamSlot> {
        self.0.as_ref().map(|record| &record.upstream)
    }

    /// The upstream answered (its response head) or failed.
    pub fn upstream_end<B>(&mut self, result: &Result<Response<B>, UpstreamError>) {
        let Some(record) = &mut self.0 else { return };
        record.upstream_duration = record.upstream_started.map(|s| s.elapsed());
        let endpoint = record.upstream.get();
        let tries = record.upstream.tries();
        if let Some(trace) = &mut record.trace {
            let answer = match result {
                Ok(resp) => Ok((resp.status().as_u16(), resp.version())),
                Err(e) => Err(upstream_flag(e)),
            };
            trace.upstream_done(endpoint, tries, answer);
        }
    }

    /// The request failed with `err` (the answer is `err`'s).
    pub fn failed(&mut self, err: &ProxyError) {
        let Some(record) = &mut self.0 else { return };
        record.flags.extend(flags_for(err));
    }

    /// The answer is ready: the record is completed when its body has been sent (or the
    /// client went away).
    pub fn finish(self, resp: Response<Body>) -> Response<Body> {
        let Some(record) = self.0 else { return resp };
        let status = resp.status().as_u16();
        resp.map(|body| {
            Body::boxed(Counted {
                inner: body,
                count: CountTo::Finish(Finish {
                    record: Some(record),
                    status,
                    sent: 0,
                }),
            })
        })
    }
}

/// The flags an error sets in the access log: which limit or failure shaped the answer.
fn flags_for(err: &ProxyError) -> Vec<&'static str> {
    match err {
        ProxyError::Refused(refusal) => vec!["refused", refusal.reason()],
        ProxyError::ClientBody(_) | ProxyError::Upstream(UpstreamError::ClientBody(_)) => {
            vec!["client_body", err.client_fault().unwrap_or("bad_body")]
        }
        ProxyError::NoRoute { .. } => vec!["no_route"],
        ProxyError::Upstream(e) => vec![upstream_flag(e)],
        ProxyError::Filter { .. } => vec!["filter_failed"],
        ProxyError::FilterOverloaded { .. } => vec!["filter_overloaded"],
        ProxyError::RequestBodyTooLarge { .. } => vec!["request_body_too_large"],
        ProxyError::ResponseBodyTooLarge { .. } => vec!["response_body_too_large"],
        ProxyError::Body {
            side: Side::Request, ..
        } => vec!["request_body_failed"],
        ProxyError::Body { .. } => vec!["response_body_failed"],
        ProxyError::Rewrite(_) => vec!["rewrite_refused"],
        ProxyError::FaultAbort { .. } => vec!["fault_injected"],
        ProxyError::NoCluster => vec!["no_cluster"],
    }
}

fn upstream_flag(e: &UpstreamError) -> &'static str {
    match e {
        UpstreamError::Timeout { .. } => "upstream_timeout",
        UpstreamError::Deadline { .. } => "client_deadline",
        UpstreamError::Connect { .. } => "upstream_connect_failure",
        UpstreamError::Exchange { .. } => "upstream_reset",
        UpstreamError::BadRequest(_) => "upstream_bad_request",
        UpstreamError::ClientBody(_) => "client_body",
        UpstreamError::Overloaded { .. } => "upstream_overloaded",
    }
}

/// The end of a recorded request: written and ended once, when the body is done.
struct Finish {
    record: Option<Box<Record>>,
    status: u16,
    sent: u64,
}

impl Finish {
    fn complete(&mut self, complete: bool) {
        let Some(mut record) = self.record.take() else { return };
        if !complete && self.status != 101 {
            record.flags.push("incomplete");
        }
        // The trace ends first: it needs itself mutably, the entry borrows the rest.
        let mut trace = record.trace.take();
        let authority = record.authority.text();
        let entry = access_log::Entry {
            time: record.time,
            client: record.client,
            listener: &record.listener,
            method: &record.method,
            authority: &authority,
            path: record.path.as_ref().map_or("", http::uri::PathAndQuery::as_str),
            protocol: record.protocol,
            status: self.status,
            flags: &record.flags,
            answered_by: record.answered_by.as_deref(),
            upstream: record.upstream.get(),
            duration: record.start.elapsed(),
            upstream_duration: record.upstream_duration,
            filters: &record.filters,
            bytes_received: record.received.as_ref().map_or(0, |r| r.load(Ordering::Relaxed)),
            bytes_sent: self.sent,
            route: record.route.as_deref(),
            trace_id: record.trace_id,
            direction: record.direction,
            original_dst: record.original_dst,
        };
        if let Some(trace) = &mut trace {
            trace.finish(&entry);
        }
        if record.logged
            && let Some(log) = &record.active.log
        {
            log.sink.send(&entry);
        }
    }
}

enum CountTo {
    /// The request body: read by the proxy, counted for the record.
    Shared(Arc<AtomicU64>),
    /// The response body: the record is completed when it ends.
    Finish(Finish),
}

pin_project_lite::pin_project! {
    /// A body whose bytes are counted as they pass.
    struct Counted {
        #[pin]
        inner: Body,
        count: CountTo,
    }

    impl PinnedDrop for Counted {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // An empty answer is never polled: ending it is not cutting it short.
            let ended = this.inner.is_end_stream();
            if let CountTo::Finish(finish) = this.count {
                finish.complete(ended);
            }
        }
    }
}

impl HttpBody for Counted {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.project();
        let frame = this.inner.poll_frame(cx);
        match &frame {
            Poll::Ready(Some(Ok(frame))) => {
                let n = frame.data_ref().map_or(0, |d| d.len() as u64);
                match this.count {
                    CountTo::Shared(count) => {
                        count.fetch_add(n, Ordering::Relaxed);
                    }
                    CountTo::Finish(finish) => finish.sent += n,
                }
            }
            Poll::Ready(None) => {
                if let CountTo::Finish(finish) = this.count {
                    finish.complete(true);
                }
            }
            Poll::Ready(Some(Err(_))) | Poll::Pending => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// How a filter phase ended, as logs and traces name it: the stages tell the recorder
/// this, so it need not know their decision types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PhaseOutcome {
    Continue,
    Respond,
    Reroute,
    Error,
}

impl PhaseOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            PhaseOutcome::Continue => "continue",
            PhaseOutcome::Respond => "respond",
            PhaseOutcome::Reroute => "reroute",
            PhaseOutcome::Error => "error",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampling_lets_through_exactly_the_fraction() {
        for (fraction, expected) in [(0.0, 0), (0.25, 250), (0.5, 500), (1.0, 1000)] {
            let sampling = Sampling::new(fraction);
            let taken = (0..1000).filter(|_| sampling.take()).count();
            assert_eq!(taken, expected, "{fraction}");
        }
    }
}
