//! Distributed tracing: the trace context a request arrives with (W3C `traceparent` and
//! `tracestate`; B3 single and multi header accepted), a server span per request with a
//! child span per filter phase and a client span for the exchange with the cluster (all
//! its tries), and the context sent upstream. Names and attributes follow OpenTelemetry's
//! stable HTTP semantic conventions (docs/tracing-and-logs.md lists them); the query is
//! shown only as `[tracing] query` says (`super::query`).
//! Spans are built with the OpenTelemetry SDK and exported over OTLP (HTTP/protobuf or
//! gRPC) by its batch processor, on a thread of its own.
//!
//! Incoming context is parsed here, strictly, rather than by the SDK's propagator: that
//! one accepts ids shorter than the spec's fixed widths and signs in numbers, and a
//! header from a client is hostile until proven otherwise. Anything malformed,
//! oversized or duplicated is ignored and a new trace starts.
//!
//! A client's own "sampled" decision (`traceparent …-01`, `x-b3-sampled: 1`,
//! `x-b3-flags: 1`, `b3: …-1`/`-d`) would otherwise let any client buy every request the
//! full price of tracing (spans built, queued, exported) whatever `sample` says. So it is
//! followed for at most `client_sampled` requests a second, process-wide ([`Budget`]);
//! past that, and on the listeners of `ignore_client_sampled` always, `sample` decides,
//! keeping the trace id. A client's "not sampled" costs nothing and is followed, except
//! on those listeners. Where Weft decides for a trace id the client chose, it decides by
//! count (exactly `sample` of those requests), not by the id: the SDK's ratio sampler
//! passes every id whose low 64 bits are small, which a client can choose.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Response, Version, request};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt, TraceFlags, TraceId, TraceState, Tracer as _,
    TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider, SpanData, SpanExporter,
    SpanProcessor,
};
use prometheus_client::metrics::counter::Counter;

use super::query::QueryPolicy;
use crate::config::{OtlpProtocol, TracingConfig};
use crate::conn::ConnInfo;

const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");
const B3: HeaderName = HeaderName::from_static("b3");
const B3_TRACE_ID: HeaderName = HeaderName::from_static("x-b3-traceid");
const B3_SPAN_ID: HeaderName = HeaderName::from_static("x-b3-spanid");
const B3_SAMPLED: HeaderName = HeaderName::from_static("x-b3-sampled");
const B3_FLAGS: HeaderName = HeaderName::from_static("x-b3-flags");
const B3_PARENT: HeaderName = HeaderName::from_static("x-b3-parentspanid");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
/// W3C Trace Context: a `tracestate` longer than this may be dropped whole.
const MAX_TRACESTATE: usize = 512;

/// One `[tracing]` config's exporter and tracer.
pub struct Tracing {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
    /// `sample` for the trace ids a client chose (B3 parents that leave the decision to
    /// us, and clients' decisions not followed): by count, not by id, since a client
    /// choosing an id whose low bits are zero would pass any ratio by id.
    chosen: super::Sampling,
    /// How many clients' "sampled" decisions are followed.
    client_sampled: Budget,
    /// Listeners whose clients' decisions are never followed.
    ignore_client_sampled: Box<[Box<str>]>,
    query: Arc<QueryPolicy>,
}

/// At most `rate` a second, in bursts of at most `rate`: the generic cell rate algorithm,
/// one atomic compare-and-swap per request that asks, no lock and no timer.
struct Budget {
    /// Nanoseconds one take is worth; `None` when the rate is zero (nothing is taken).
    interval: Option<u64>,
    start: Instant,
    /// The theoretical arrival time of the next take, in nanoseconds since `start`.
    next: AtomicU64,
}

/// The burst a [`Budget`] allows, as time: one second's worth of takes.
const BURST_NANOS: u64 = 1_000_000_000;

impl Budget {
    fn new(rate: u32) -> Budget {
        Budget {
            interval: (rate > 0).then(|| BURST_NANOS / u64::from(rate)),
            start: Instant::now(),
            next: AtomicU64::new(0),
        }
    }

    fn take(&self) -> bool {
        let now = u64::try_from(self.start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.take_at(now)
    }

    fn take_at(&self, now: u64) -> bool {
        let Some(interval) = self.interval else { return false };
        let mut next = self.next.load(Ordering::Relaxed);
        loop {
            let after = next.max(now).saturating_add(interval);
            if after - now > BURST_NANOS {
                return false;
            }
            match self
                .next
                .compare_exchange_weak(next, after, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return true,
                Err(current) => next = current,
            }
        }
    }
}

impl Tracing {
    /// Builds the exporter and the batch processor. Needs a Tokio runtime (gRPC's channel
    /// and the HTTP client's connections live on it).
    pub fn start(config: &TracingConfig, dropped: Counter) -> Result<Tracing, String> {
        let exporter = match config.protocol {
            OtlpProtocol::Http => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
                .with_http_client(HyperExport::new(config.timeout))
                .build(),
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(config.endpoint.clone())
                .with_timeout(config.timeout)
                .build(),
        }
        .map_err(|e| format!("[tracing]: cannot build the OTLP exporter: {e}"))?;
        let pending = Arc::new(AtomicUsize::new(0));
        let exporter = Settled {
            inner: exporter,
            pending: pending.clone(),
        };
        // The SDK's own queue is never the one that fills (it only logs its drops):
        // `Bounded` refuses spans past `queue` first, and counts them.
        let batch = BatchConfigBuilder::default()
            .with_max_queue_size(config.queue + 1)
            .with_max_export_batch_size(config.queue.min(512))
            .with_scheduled_delay(config.interval)
            .build();
        let processor = Bounded {
            inner: BatchSpanProcessor::builder(exporter).with_batch_config(batch).build(),
            pending,
            limit: config.queue,
            dropped,
        };
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample,
            ))))
            // No environment detectors: the config names the service, not the process's
            // environment.
            .with_resource(
                Resource::builder_empty()
                    .with_detector(Box::new(opentelemetry_sdk::resource::TelemetryResourceDetector))
                    .with_service_name(config.service_name.clone())
                    .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                    .build(),
            )
            .build();
        let tracer = provider.tracer("weft");
        Ok(Tracing {
            provider,
            tracer,
            chosen: super::Sampling::new(config.sample),
            client_sampled: Budget::new(config.client_sampled),
            ignore_client_sampled: config.ignore_client_sampled.iter().map(|l| l.as_str().into()).collect(),
            query: Arc::new(QueryPolicy::new(config)),
        })
    }

    /// Starts the request's server span, as a child of the context the request carries,
    /// with the attributes the request itself tells (when it is sampled). The client's
    /// sampling decision is followed as the module doc says.
    pub fn begin(&self, conn: &ConnInfo, head: &request::Parts) -> Trace {
        let listener = &*conn.listener;
        let parent = match incoming(&head.headers) {
            // The budget is asked last: an ignored listener's requests do not spend it.
            Some((context, Decided::Yes))
                if !self.ignore_client_sampled.iter().any(|l| **l == *listener)
                    && (!context.is_sampled() || self.client_sampled.take()) =>
            {
                Context::new().with_remote_span_context(context)
            }
            Some((context, _)) => {
                let context = SpanContext::new(
                    context.trace_id(),
                    context.span_id(),
                    TraceFlags::default().with_sampled(self.chosen.take()),
                    true,
                    context.trace_state().clone(),
                );
                Context::new().with_remote_span_context(context)
            }
            None => Context::new(),
        };
        let mut span = self
            .tracer
            .span_builder(span_method(&head.method))
            .with_kind(SpanKind::Server)
            .start_with_context(&self.tracer, &parent);
        if span.is_recording() {
            span.set_attributes(self.server_attributes(conn, head));
        }
        Trace {
            tracer: self.tracer.clone(),
            query: self.query.clone(),
            cx: parent.with_span(span),
            route: None,
            upstream: None,
        }
    }

    /// The server span's attributes known from the request head: the HTTP semantic
    /// conventions' (stable) required ones, and the recommended ones Weft knows.
    fn server_attributes(&self, conn: &ConnInfo, head: &request::Parts) -> Vec<KeyValue> {
        let mut attributes = Vec::with_capacity(16);
        method_attributes(&head.method, &mut attributes);
        // Behind a proxy the listener trusts, the original client's request is the one
        // the conventions describe (`client.address`, `url.scheme`); elsewhere what a
        // client claims about itself is not repeated as fact.
        let trusted = conn.trust_forwarded.then_some(&head.headers);
        let scheme = trusted.and_then(forwarded_proto).unwrap_or(conn.scheme);
        attributes.push(KeyValue::new("url.scheme", scheme));
        attributes.push(KeyValue::new("url.path", head.uri.path().to_owned()));
        if let Some(query) = head.uri.query().and_then(|q| self.query.show(q)) {
            attributes.push(KeyValue::new("url.query", query));
        }
        let authority = head
            .uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| head.headers.get(http::header::HOST).and_then(|h| h.to_str().ok()));
        if let Some((host, port)) = authority.and_then(host_and_port) {
            attributes.push(KeyValue::new("server.address", host.to_owned()));
            let port = port.unwrap_or(if scheme == "https" { 443 } else { 80 });
            attributes.push(KeyValue::new("server.port", i64::from(port)));
        }
        let peer = conn.peer;
        match trusted.and_then(forwarded_for) {
            // Its port is not known: `client.port` is that client's or absent.
            Some(client) => attributes.push(KeyValue::new("client.address", client.to_string())),
            None => {
                attributes.push(KeyValue::new("client.address", peer.ip().to_string()));
                attributes.push(KeyValue::new("client.port", i64::from(peer.port())));
            }
        }
        attributes.push(KeyValue::new("network.peer.address", peer.ip().to_string()));
        attributes.push(KeyValue::new("network.peer.port", i64::from(peer.port())));
        if let Some(version) = protocol_version(head.version) {
            attributes.push(KeyValue::new("network.protocol.version", version));
        }
        if let Some(agent) = head.headers.get(http::header::USER_AGENT) {
            attributes.push(KeyValue::new(
                "user_agent.original",
                String::from_utf8_lossy(agent.as_bytes()).into_owned(),
            ));
        }
        attributes.push(KeyValue::new("weft.listener", conn.listener.to_string()));
        attributes
    }
}

impl Tracing {
    /// Exports what is queued now (blocking, at most `within`).
    pub fn flush(&self, within: Duration) {
        let _ = self.provider.shutdown_with_timeout(within);
    }
}

impl Drop for Tracing {
    /// Export what is queued, off the runtime's threads: the SDK's shutdown blocks.
    fn drop(&mut self) {
        let provider = self.provider.clone();
        let _ = std::thread::Builder::new()
            .name("weft-trace-shutdown".to_owned())
            .spawn(move || {
                let _ = provider.shutdown();
            });
    }
}

/// One request's spans.
pub struct Trace {
    tracer: SdkTracer,
    query: Arc<QueryPolicy>,
    /// Holds the request's server span.
    cx: Context,
    /// The route's name and path template, once matched.
    route: Option<(Arc<str>, Arc<str>)>,
    upstream: Option<Upstream>,
}

/// The upstream exchange's client span, and what its `url.full` needs once the endpoint
/// is known.
struct Upstream {
    span: opentelemetry_sdk::trace::Span,
    scheme: &'static str,
    /// The path and the shown query, as sent upstream.
    target: String,
}

/// The conventions' known methods (RFC 9110 and PATCH), compared with case: any other,
/// `get` included, is `_OTHER`, and named `HTTP` in span names.
const KNOWN_METHODS: [Method; 9] = [
    Method::CONNECT,
    Method::DELETE,
    Method::GET,
    Method::HEAD,
    Method::OPTIONS,
    Method::PATCH,
    Method::POST,
    Method::PUT,
    Method::TRACE,
];

fn known(method: &Method) -> bool {
    KNOWN_METHODS.contains(method)
}

/// `{method}` in a span name: static, so that starting a span that is not sampled
/// allocates nothing for its name.
fn span_method(method: &Method) -> &'static str {
    match *method {
        Method::CONNECT => "CONNECT",
        Method::DELETE => "DELETE",
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::TRACE => "TRACE",
        _ => "HTTP",
    }
}

fn method_attributes(method: &Method, into: &mut Vec<KeyValue>) {
    if known(method) {
        into.push(KeyValue::new("http.request.method", method.as_str().to_owned()));
    } else {
        into.push(KeyValue::new("http.request.method", "_OTHER"));
        into.push(KeyValue::new(
            "http.request.method_original",
            method.as_str().to_owned(),
        ));
    }
}

/// `network.protocol.version`: `1.0`, `1.1`, `2`, `3`.
fn protocol_version(version: Version) -> Option<&'static str> {
    match version {
        Version::HTTP_10 => Some("1.0"),
        Version::HTTP_11 => Some("1.1"),
        Version::HTTP_2 => Some("2"),
        Version::HTTP_3 => Some("3"),
        _ => None,
    }
}

/// The original client of `X-Forwarded-For`: the first address of its first line, when
/// it is one.
fn forwarded_for(headers: &HeaderMap) -> Option<std::net::IpAddr> {
    let first = headers.get(X_FORWARDED_FOR)?.to_str().ok()?.split(',').next()?.trim();
    let bare = first
        .strip_prefix('[')
        .and_then(|f| f.split_once(']'))
        .map_or(first, |(ip, _)| ip);
    bare.parse().ok()
}

/// The original request's scheme from `X-Forwarded-Proto` (its first value), when it is
/// `http` or `https`.
fn forwarded_proto(headers: &HeaderMap) -> Option<&'static str> {
    let first = headers.get(X_FORWARDED_PROTO)?.to_str().ok()?.split(',').next()?.trim();
    ["https", "http"].into_iter().find(|s| first.eq_ignore_ascii_case(s))
}

/// An authority's host (an IPv6 literal without its brackets) and port, if it has one;
/// `None` when empty or the port is not a number.
fn host_and_port(authority: &str) -> Option<(&str, Option<u16>)> {
    let authority = authority.rsplit_once('@').map_or(authority, |(_, a)| a);
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    (!host.is_empty()).then_some((host, port))
}

impl Trace {
    pub fn trace_id(&self) -> TraceId {
        self.cx.span().span_context().trace_id()
    }

    fn sampled(&self) -> bool {
        self.cx.span().span_context().is_sampled()
    }

    /// A filter phase that took `took` and ended now.
    pub fn phase(&self, filter: &str, phase: &'static str, took: Duration, outcome: &str) {
        if !self.sampled() {
            return;
        }
        let start = SystemTime::now() - took;
        let mut span = self
            .tracer
            .span_builder(format!("filter {filter} {phase}"))
            .with_start_time(start)
            .with_attributes([
                KeyValue::new("weft.filter", filter.to_owned()),
                KeyValue::new("weft.phase", phase),
                KeyValue::new("weft.outcome", outcome.to_owned()),
            ])
            .start_with_context(&self.tracer, &self.cx);
        if outcome == "error" {
            span.set_status(Status::error("filter failed"));
        }
        span.end();
    }

    /// The route that matched: its name and path template.
    pub fn route(&mut self, name: &Arc<str>, template: &Arc<str>) {
        if self.sampled() {
            self.route = Some((name.clone(), template.clone()));
        }
    }

    /// Starts the upstream exchange's client span and puts its context in the request
    /// going upstream, replacing what the client sent. `scheme` is the cluster's.
    pub fn upstream_request(&mut self, head: &mut request::Parts, scheme: &'static str) {
        let mut span = self
            .tracer
            .span_builder(span_method(&head.method))
            .with_kind(SpanKind::Client)
            .start_with_context(&self.tracer, &self.cx);
        let mut target = String::new();
        if span.is_recording() {
            let mut attributes = Vec::with_capacity(2);
            method_attributes(&head.method, &mut attributes);
            span.set_attributes(attributes);
            target.push_str(head.uri.path());
            if let Some(query) = head.uri.query().and_then(|q| self.query.show(q)) {
                target.push('?');
                target.push_str(&query);
            }
        }
        let headers = &mut head.headers;
        let context = span.span_context();
        let mut line = [0u8; 55];
        traceparent(context, &mut line);
        if let Ok(value) = HeaderValue::from_bytes(&line) {
            headers.insert(TRACEPARENT, value);
        }
        let state = context.trace_state().header();
        match HeaderValue::try_from(state) {
            Ok(value) if !value.is_empty() => {
                headers.insert(TRACESTATE, value);
            }
            _ => {
                headers.remove(TRACESTATE);
            }
        }
        for b3 in [B3, B3_TRACE_ID, B3_SPAN_ID, B3_SAMPLED, B3_FLAGS, B3_PARENT] {
            headers.remove(b3);
        }
        self.upstream = Some(Upstream { span, scheme, target });
    }

    /// Ends the upstream exchange's span: `endpoint` is the last try's, `tries` how many
    /// were made, `answer` the response's status and version or the failure's flag.
    pub fn upstream_done(
        &mut self,
        endpoint: Option<std::net::SocketAddr>,
        tries: u32,
        answer: Result<(u16, Version), &'static str>,
    ) {
        let Some(Upstream {
            mut span,
            scheme,
            target,
        }) = self.upstream.take()
        else {
            return;
        };
        if span.is_recording() {
            let mut attributes = Vec::with_capacity(10);
            // Without an endpoint (none could be picked) there is no server to name: the
            // conventions' required `server.*` and `url.full` say so with empty values.
            let (address, port) = endpoint.map_or((String::new(), 0), |e| (e.ip().to_string(), e.port()));
            let authority = match endpoint {
                Some(std::net::SocketAddr::V6(e)) => format!("[{}]:{}", e.ip(), e.port()),
                Some(e) => e.to_string(),
                None => String::new(),
            };
            attributes.push(KeyValue::new("url.full", format!("{scheme}://{authority}{target}")));
            attributes.push(KeyValue::new("server.address", address.clone()));
            attributes.push(KeyValue::new("server.port", i64::from(port)));
            if endpoint.is_some() {
                attributes.push(KeyValue::new("network.peer.address", address));
                attributes.push(KeyValue::new("network.peer.port", i64::from(port)));
            }
            if tries > 1 {
                attributes.push(KeyValue::new("http.request.resend_count", i64::from(tries - 1)));
            }
            match answer {
                Ok((code, version)) => {
                    attributes.push(KeyValue::new("http.response.status_code", i64::from(code)));
                    if let Some(version) = protocol_version(version) {
                        attributes.push(KeyValue::new("network.protocol.version", version));
                    }
                    // A client span's 4xx is an error too (the conventions' status table).
                    if code >= 400 {
                        attributes.push(KeyValue::new("error.type", code.to_string()));
                        span.set_status(Status::error(""));
                    }
                }
                Err(kind) => {
                    attributes.push(KeyValue::new("error.type", kind));
                    span.set_status(Status::error(kind));
                }
            }
            span.set_attributes(attributes);
        }
        span.end();
    }

    /// Ends the request's span with what the access log also records.
    pub fn finish(&mut self, entry: &super::access_log::Entry<'_>) {
        if let Some(upstream) = self.upstream.take() {
            drop(upstream.span);
        }
        let span = self.cx.span();
        if span.is_recording() {
            let mut attributes = Vec::with_capacity(6);
            attributes.push(KeyValue::new("http.response.status_code", i64::from(entry.status)));
            if let Some((name, template)) = &self.route {
                span.update_name(format!("{} {template}", span_method(entry.method)));
                attributes.push(KeyValue::new("http.route", template.to_string()));
                attributes.push(KeyValue::new("weft.route", name.to_string()));
            }
            if !entry.flags.is_empty() {
                attributes.push(KeyValue::new("weft.flags", entry.flags.join(",")));
            }
            // A server span's 4xx is the client's doing, not an error (the conventions'
            // status table); a 5xx is, and so is an answer cut short.
            let error = if entry.status >= 500 {
                Some(
                    entry
                        .flags
                        .iter()
                        .find(|f| **f != "incomplete")
                        .map_or_else(|| entry.status.to_string(), |f| (*f).to_owned()),
                )
            } else if entry.flags.contains(&"incomplete") {
                Some("incomplete".to_owned())
            } else {
                None
            };
            if let Some(error) = error {
                attributes.push(KeyValue::new("error.type", error));
                span.set_status(Status::error(""));
            }
            span.set_attributes(attributes);
        }
        span.end();
    }
}

/// `00-<trace id>-<span id>-<flags>`, 55 bytes.
fn traceparent(context: &SpanContext, out: &mut [u8; 55]) {
    use std::io::Write;
    let mut cursor = &mut out[..];
    let _ = write!(
        cursor,
        "00-{}-{}-{:02x}",
        context.trace_id(),
        context.span_id(),
        context.trace_flags().to_u8()
    );
}

/// Whether the incoming context decided sampling (W3C always does; B3 may leave it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decided {
    Yes,
    Deferred,
}

/// The context the request carries: `traceparent` (with `tracestate`) first, then B3.
/// `None` when there is none, or it is malformed or duplicated.
fn incoming(headers: &HeaderMap) -> Option<(SpanContext, Decided)> {
    if let Some(value) = single(headers, &TRACEPARENT) {
        let (trace_id, span_id, flags) = parse_traceparent(value.as_bytes())?;
        let state = single(headers, &TRACESTATE)
            .and_then(|v| v.to_str().ok())
            .filter(|s| s.len() <= MAX_TRACESTATE && valid_tracestate(s))
            .and_then(|s| s.parse::<TraceState>().ok())
            .unwrap_or_default();
        let context = SpanContext::new(trace_id, span_id, flags, true, state);
        return Some((context, Decided::Yes));
    }
    if headers.contains_key(TRACEPARENT) {
        return None;
    }
    let (trace_id, span_id, sampled) = match single(headers, &B3) {
        Some(value) => parse_b3_single(value.as_bytes())?,
        None => {
            let trace_id = b3_trace_id(single(headers, &B3_TRACE_ID)?.as_bytes())?;
            let span_id = hex_id::<8>(single(headers, &B3_SPAN_ID)?.as_bytes())?;
            let debug = single(headers, &B3_FLAGS).is_some_and(|v| v == "1");
            let sampled = match single(headers, &B3_SAMPLED).map(HeaderValue::as_bytes) {
                _ if debug => Some(true),
                Some(b"1" | b"true") => Some(true),
                Some(b"0" | b"false") => Some(false),
                None => None,
                Some(_) => return None,
            };
            (TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id), sampled)
        }
    };
    let (flags, decided) = match sampled {
        Some(sampled) => (TraceFlags::default().with_sampled(sampled), Decided::Yes),
        None => (TraceFlags::default(), Decided::Deferred),
    };
    let context = SpanContext::new(trace_id, span_id, flags, true, TraceState::default());
    context.is_valid().then_some((context, decided))
}

/// The header's only value; `None` when absent or repeated (which W3C says to ignore).
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut values = headers.get_all(name).iter();
    let first = values.next()?;
    values.next().is_none().then_some(first)
}

/// W3C Trace Context level 1: version 00 exactly 55 bytes; a later version at least that,
/// with `-` after the flags when longer. Lowercase hex, no all-zero ids, version ff invalid.
fn parse_traceparent(value: &[u8]) -> Option<(TraceId, SpanId, TraceFlags)> {
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = hex_id::<1>(&value[..2])?[0];
    if version == 0xff || (version == 0 && value.len() != 55) || (value.len() > 55 && value[55] != b'-') {
        return None;
    }
    let trace_id = TraceId::from_bytes(hex_id::<16>(&value[3..35])?);
    let span_id = SpanId::from_bytes(hex_id::<8>(&value[36..52])?);
    let flags = hex_id::<1>(&value[53..55])?[0];
    if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
        return None;
    }
    // Only the sampled bit is defined; the others are not passed on.
    Some((trace_id, span_id, TraceFlags::new(flags) & TraceFlags::SAMPLED))
}

/// The W3C `tracestate` grammar, which the SDK's parser only partly checks (it takes an
/// empty key, and any byte in a value): `key=value` members split by `,` with optional
/// spaces or tabs around them; keys `[a-z0-9][a-z0-9_*/@-]*`, values printable ASCII
/// without `,` and `=` and not ending in a space.
fn valid_tracestate(text: &str) -> bool {
    text.split(',')
        .map(|member| member.trim_matches([' ', '\t']))
        .filter(|member| !member.is_empty())
        .all(|member| {
            let Some((key, value)) = member.split_once('=') else {
                return false;
            };
            let key_ok = key.len() <= 256
                && key
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-*/@".contains(&b));
            let value_ok = !value.is_empty()
                && value.len() <= 256
                && !value.ends_with(' ')
                && value
                    .bytes()
                    .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=');
            key_ok && value_ok
        })
}

/// `b3: {trace id}-{span id}[-{sampled}[-{parent span id}]]`; a lone `0`/`1`/`d` carries no ids.
fn parse_b3_single(value: &[u8]) -> Option<(TraceId, SpanId, Option<bool>)> {
    let mut parts = value.split(|b| *b == b'-');
    let trace_id = b3_trace_id(parts.next()?)?;
    let span_id = hex_id::<8>(parts.next()?)?;
    let sampled = match parts.next() {
        None => None,
        Some(b"1" | b"d") => Some(true),
        Some(b"0") => Some(false),
        Some(_) => return None,
    };
    if let Some(parent) = parts.next() {
        hex_id::<8>(parent)?;
    }
    if parts.next().is_some() {
        return None;
    }
    Some((TraceId::from_bytes(trace_id), SpanId::from_bytes(span_id), sampled))
}

/// A B3 trace id: 32 hex digits, or 16 (a 64-bit id, zero-extended).
fn b3_trace_id(text: &[u8]) -> Option<[u8; 16]> {
    match text.len() {
        32 => hex_id::<16>(text),
        16 => {
            let low = hex_id::<8>(text)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            Some(id)
        }
        _ => None,
    }
}

/// Exactly `2 * N` lowercase hex digits.
fn hex_id<const N: usize>(text: &[u8]) -> Option<[u8; N]> {
    if text.len() != 2 * N {
        return None;
    }
    let digit = |c: u8| match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = digit(pair[0])? << 4 | digit(pair[1])?;
    }
    Some(out)
}

/// The trace id of a well-formed incoming context, for the access log when tracing is off.
pub fn incoming_trace_id(headers: &HeaderMap) -> Option<TraceId> {
    incoming(headers).map(|(context, _)| context.trace_id())
}

/// Refuses spans past `limit` waiting for export, counting them; the SDK's batch
/// processor behind it does the batching.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    pending: Arc<AtomicUsize>,
    limit: usize,
    dropped: Counter,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        if self.pending.fetch_add(1, Ordering::AcqRel) >= self.limit {
            self.pending.fetch_sub(1, Ordering::AcqRel);
            self.dropped.inc();
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, telling [`Bounded`] when spans have left (exported or failed).
#[derive(Debug)]
struct Settled {
    inner: opentelemetry_otlp::SpanExporter,
    pending: Arc<AtomicUsize>,
}

impl SpanExporter for Settled {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.pending.fetch_sub(n, Ordering::AcqRel);
        if let Err(e) = &result {
            tracing::warn!(error = %e, spans = n, "trace export failed");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

/// OTLP/HTTP over the hyper client the proxy already has. The SDK's batch thread is not
/// a Tokio thread, so each export runs as a task on the runtime that built this.
#[derive(Debug)]
struct HyperExport {
    client: hyper_util::client::legacy::Client<
        hyper_util::client::legacy::connect::HttpConnector,
        http_body_util::Full<Bytes>,
    >,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl HyperExport {
    fn new(timeout: Duration) -> HyperExport {
        let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(hyper_util::client::legacy::connect::HttpConnector::new());
        HyperExport {
            client,
            runtime: tokio::runtime::Handle::current(),
            timeout,
        }
    }
}

/// What `opentelemetry_http::HttpClient` returns.
type Sent<'a> = Pin<Box<dyn Future<Output = Result<Response<Bytes>, opentelemetry_http::HttpError>> + Send + 'a>>;

impl opentelemetry_http::HttpClient for HyperExport {
    fn send_bytes<'a, 'b>(&'a self, request: Request<Bytes>) -> Sent<'b>
    where
        'a: 'b,
        Self: 'b,
    {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            use http_body_util::BodyExt;
            let exchange = async {
                let resp = client.request(request.map(http_body_util::Full::new)).await?;
                let (head, body) = resp.into_parts();
                // An OTLP answer is a small status message; a huge one is not waited for.
                let body = http_body_util::Limited::new(body, 1 << 20).collect().await?.to_bytes();
                Ok::<_, opentelemetry_http::HttpError>(Response::from_parts(head, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(result) => result,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        Box::pin(async move {
            task.await
                .map_err(|e| opentelemetry_http::HttpError::from(e.to_string()))?
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).expect("name"),
                HeaderValue::from_str(value).expect("value"),
            );
        }
        map
    }

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_well_formed_traceparent_is_the_parent() {
        let (context, decided) =
            incoming(&headers(&[("traceparent", GOOD), ("tracestate", "vendor=value")])).expect("parsed");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled() && context.is_remote());
        assert_eq!(context.trace_state().header(), "vendor=value");
        assert_eq!(decided, Decided::Yes);
        let mut line = [0u8; 55];
        traceparent(&context, &mut line);
        assert_eq!(&line[..], GOOD.as_bytes());
    }

    #[test]
    fn malformed_oversized_or_duplicated_context_is_ignored() {
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-abc-def-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
        ] {
            assert!(incoming(&headers(&[("traceparent", bad)])).is_none(), "{bad}");
        }
        let huge = format!("{GOOD}{}", "-x".repeat(5000));
        assert!(incoming(&headers(&[("traceparent", &huge)])).is_none());
        assert!(incoming(&headers(&[("traceparent", GOOD), ("traceparent", GOOD)])).is_none());
        // A broken traceparent is not rescued by a B3 header beside it.
        assert!(
            incoming(&headers(&[
                ("traceparent", "junk"),
                ("b3", "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1")
            ]))
            .is_none()
        );
        // A later version may append fields after a dash.
        assert!(incoming(&headers(&[("traceparent", &GOOD.replacen("00", "01", 1))])).is_some());
        // A malformed tracestate is dropped, the traceparent kept.
        for bad in ["=,==bad", "k=a\tb", "K=v", "k=v=w", "k=", "k"] {
            let (context, _) = incoming(&headers(&[("traceparent", GOOD), ("tracestate", bad)])).expect("parent");
            assert_eq!(context.trace_state().header(), "", "{bad:?}");
        }
        let (context, _) =
            incoming(&headers(&[("traceparent", GOOD), ("tracestate", "a=1 , t@v-1=x y")])).expect("parent");
        assert_eq!(context.trace_state().header(), "a=1,t@v-1=x y");
    }

    #[test]
    fn server_address_and_port_come_from_the_authority() {
        assert_eq!(host_and_port("example.com:8443"), Some(("example.com", Some(8443))));
        assert_eq!(host_and_port("example.com"), Some(("example.com", None)));
        assert_eq!(host_and_port("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(host_and_port("[::1]"), Some(("::1", None)));
        assert_eq!(host_and_port("user@example.com:80"), Some(("example.com", Some(80))));
        for bad in ["", ":80", "example.com:http", "example.com:99999", "[::1", "[]:80"] {
            assert_eq!(host_and_port(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_trusted_proxy_names_the_original_client_and_scheme() {
        let h = headers(&[
            ("x-forwarded-for", "203.0.113.7, 10.0.0.1"),
            ("x-forwarded-for", "10.0.0.2"),
            ("x-forwarded-proto", "HTTPS, http"),
        ]);
        assert_eq!(forwarded_for(&h), Some("203.0.113.7".parse().expect("ip")));
        assert_eq!(forwarded_proto(&h), Some("https"));
        let h = headers(&[
            ("x-forwarded-for", "[2001:db8::1]:4711"),
            ("x-forwarded-proto", "gopher"),
        ]);
        assert_eq!(forwarded_for(&h), Some("2001:db8::1".parse().expect("ip")));
        assert_eq!(forwarded_proto(&h), None);
        for bad in ["unknown", "", "evil.example", "203.0.113.7:80"] {
            assert_eq!(forwarded_for(&headers(&[("x-forwarded-for", bad)])), None, "{bad:?}");
        }
    }

    #[test]
    fn methods_the_conventions_do_not_know_are_other() {
        let mut attributes = Vec::new();
        method_attributes(&Method::from_bytes(b"get").expect("method"), &mut attributes);
        assert_eq!(attributes[0].value.as_str(), "_OTHER", "methods compare with case");
        assert_eq!(attributes[1].value.as_str(), "get");
        assert_eq!(span_method(&Method::from_bytes(b"PROPFIND").expect("method")), "HTTP");
        assert_eq!(span_method(&Method::PATCH), "PATCH");
    }

    #[test]
    fn the_client_sampled_budget_allows_its_rate_in_bursts_of_one_second() {
        let budget = Budget::new(4);
        let second = BURST_NANOS;
        assert_eq!((0..10).filter(|_| budget.take_at(0)).count(), 4, "a burst of the rate");
        assert!(!budget.take_at(second / 8), "nothing back an eighth of a second later");
        assert!(budget.take_at(second / 4), "one back a quarter of a second later");
        assert!(!budget.take_at(second / 4));
        // After a quiet while, a full burst again, and no more.
        assert_eq!((0..10).filter(|_| budget.take_at(10 * second)).count(), 4);
        // Over any stretch of time, at most the burst plus the rate times its length.
        let budget = Budget::new(100);
        let taken = (0..100_000u64).filter(|i| budget.take_at(i * 50_000)).count();
        assert!((100..=100 + 500 + 1).contains(&taken), "{taken} in 5 s");
        assert!(!Budget::new(0).take_at(0), "a rate of zero follows no client");
    }

    #[test]
    fn b3_single_and_multi_headers_are_accepted() {
        let (context, decided) = incoming(&headers(&[(
            "b3",
            "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1-05e3ac9a4f6e3b90",
        )]))
        .expect("single");
        assert_eq!(context.trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(context.is_sampled());
        assert_eq!(decided, Decided::Yes);

        let (context, decided) = incoming(&headers(&[("b3", "a3ce929d0e0e4736-00f067aa0ba902b7")])).expect("64-bit");
        assert_eq!(context.trace_id().to_string(), "0000000000000000a3ce929d0e0e4736");
        assert_eq!(decided, Decided::Deferred);

        let (context, _) = incoming(&headers(&[
            ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
            ("x-b3-spanid", "00f067aa0ba902b7"),
            ("x-b3-sampled", "0"),
        ]))
        .expect("multi");
        assert!(!context.is_sampled());
        assert!(
            incoming(&headers(&[("b3", "0")])).is_none(),
            "a decision alone has no ids"
        );
        assert!(
            incoming(&headers(&[(
                "b3",
                "4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-x"
            )]))
            .is_none()
        );
        assert!(
            incoming(&headers(&[
                ("x-b3-traceid", "4bf92f3577b34da6a3ce929d0e0e4736"),
                ("x-b3-spanid", "00f067aa0ba902b7"),
                ("x-b3-sampled", "maybe"),
            ]))
            .is_none()
        );
    }
}
