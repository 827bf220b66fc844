//! One request's path: route, request phase of the filter chain, upstream, response
//! phase in reverse order. Read this file top-down to learn what Weft does to a request.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use futures_util::future::Either;
use http::{Request, Response, Version};
use http_body_util::{BodyExt, Limited};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::body::Body;
use crate::body::ClientBodyFault;
use crate::config::{FailureMode, UpstreamProtocol};
use crate::conn::ConnInfo;
use crate::filter::{
    ChainEntry, FilterError, FilterRequest, FilterResponse, RequestCtx, RequestDecision, ResponseDecision,
};
use crate::forward;
use crate::front::{self, Refusal};
use crate::observe::{PhaseOutcome, Recorder};
use crate::respond::{Dialect, ProxyError, Side, error_response};
use crate::route::{Abort, Admission, Route, request_host};
use crate::state::State;
use crate::upstream::metrics::UpstreamFailure;
use crate::upstream::{Cluster, SetBy, UpstreamError, Wait};

/// Serves one downstream request. Never fails: every error becomes an answer here.
pub async fn handle(state: Arc<State>, conn: Arc<ConnInfo>, req: Request<Body>) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let _in_flight = InFlight::enter(&conn.counters.in_flight);
    // The request keeps this config version, and the filter versions in it, to the end.
    let runtime = state.current();
    let (mut head, mut body) = req.into_parts();
    // Followed before any layer wraps the body: the upstream's timer must know when the
    // proxy waits on the client rather than on the upstream.
    if let Some(upload) = body.watch_upload() {
        head.extensions.insert(upload);
    }
    let dialect = if crate::grpc::is_call(&head) {
        Dialect::Grpc
    } else {
        Dialect::Http
    };
    // Empty, and free, unless an access log or tracing is configured.
    let mut rec = state.observe.begin(&conn, &head);
    let body = rec.request_body(body);
    // Before routing: routes, filters and the upstream must all see the same request.
    // On TLS, a host another certificate's block names is refused with 421 (RFC 9110
    // §15.5.20): its routes are reached only on a connection that asked for its name.
    let admitted = front::admit(&mut head, &conn.door).and_then(|admitted| match &conn.server_block {
        Some((blocks, chosen)) if blocks.misdirected(*chosen, request_host(&head)) => Err(Refusal::Misdirected),
        _ => Ok(admitted),
    });
    let resp = 'answer: {
        let upgrade = match admitted {
            Ok(admitted) => admitted.upgrade,
            Err(refusal) => {
                runtime.metrics.downstream_refused(&conn.listener, refusal.reason());
                let err = ProxyError::Refused(refusal);
                rec.failed(&err);
                break 'answer error_response(&err, "-", dialect);
            }
        };
        let Some(route) = runtime.router.find(&head, &conn) else {
            let err = ProxyError::NoRoute {
                method: head.method.clone(),
                host: request_host(&head).to_owned(),
                path: head.uri.path().to_owned(),
            };
            rec.failed(&err);
            break 'answer error_response(&err, "-", dialect);
        };
        rec.route(&route.name, route.template());
        let mut resp = match proxy(&runtime, route, &conn, head, body, upgrade, &mut rec).await {
            Ok(resp) => {
                route.counters.record(resp.status(), started.elapsed());
                resp
            }
            Err(err) => {
                if let Some(reason) = err.client_fault() {
                    runtime.metrics.downstream_refused(&conn.listener, reason);
                }
                // Counted by what went wrong, also when a gRPC client is told with a 200.
                route.counters.record(err.status(), started.elapsed());
                rec.failed(&err);
                error_response(&err, &route.name, dialect)
            }
        };
        if let Some(alt_svc) = &conn.alt_svc {
            resp.headers_mut().insert(http::header::ALT_SVC, alt_svc.clone());
        }
        resp
    };
    conn.count_answer(resp.status());
    Ok(rec.finish(resp))
}

async fn proxy(
    runtime: &crate::state::Version,
    route: &Route,
    conn: &ConnInfo,
    mut head: http::request::Parts,
    body: Body,
    upgrade: bool,
    rec: &mut Recorder,
) -> Result<Response<Body>, ProxyError> {
    let on_upgrade = match upgrade {
        false => None,
        true if route.allows_upgrade(&head.headers) => head.extensions.remove::<OnUpgrade>(),
        true => {
            // A protocol the route does not switch to: the request goes on as a plain one
            // (RFC 9110 §7.8 lets a server ignore Upgrade).
            head.headers.remove(http::header::UPGRADE);
            None
        }
    };

    let Some(cors) = route.policy.as_deref().and_then(|p| p.cors.as_ref()) else {
        return chain(runtime, route, conn, head, body, on_upgrade, rec).await;
    };
    // Before the filters: a browser's preflight carries no credentials for them to check.
    let seen = match cors.admit(&head) {
        Admission::Answer(resp) => return Ok(resp),
        Admission::Forward(seen) => seen,
    };
    let mut resp = Box::pin(chain(runtime, route, conn, head, body, on_upgrade, rec)).await?;
    cors.mark(seen, resp.headers_mut());
    Ok(resp)
}

/// The route's filter chain around the upstream, or the upstream alone.
fn chain<'a>(
    runtime: &'a crate::state::Version,
    route: &'a Route,
    conn: &'a ConnInfo,
    head: http::request::Parts,
    body: Body,
    on_upgrade: Option<OnUpgrade>,
    rec: &'a mut Recorder,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + 'a {
    if route.filters.is_empty() {
        return Either::Left(dispatch(route, None, conn, head, body, on_upgrade, rec));
    }
    // Boxed: the filter chain's state is large, and unboxed every request's future (which
    // hyper moves per request and keeps a box of per connection) would carry it.
    Either::Right(Box::pin(filtered(runtime, route, conn, head, body, on_upgrade, rec)))
}

/// The request and response phases of the route's filter chain around the upstream.
async fn filtered(
    runtime: &crate::state::Version,
    route: &Route,
    conn: &ConnInfo,
    head: http::request::Parts,
    body: Body,
    on_upgrade: Option<OnUpgrade>,
    rec: &mut Recorder,
) -> Result<Response<Body>, ProxyError> {
    let mut ctx = RequestCtx::new(conn.peer, conn.listener.clone(), route.name.clone(), conn.scheme);
    ctx.peer_identity = conn.identity.clone();
    ctx.trace_id = rec.trace_id();
    let (buffered, streamed) = match route.request_body_limit {
        Some(limit) => (Some(read_body(body, limit, Side::Request).await?), None),
        None => (None, Some(body)),
    };
    let mut req = FilterRequest { head, body: buffered };
    let mut rerouted = None;

    // Request phase, in config order.
    let mut ran = 0;
    let mut answer = None;
    for entry in &route.filters {
        ran += 1;
        if !entry.filter.has_request_phase() {
            continue;
        }
        let call = Instant::now();
        let traced = rec.phase_start();
        let outcome = entry.filter.on_request(&mut req, &mut ctx).await;
        entry.stats.request.observe(call.elapsed());
        let told = match &outcome {
            Ok(RequestDecision::Continue) => PhaseOutcome::Continue,
            Ok(RequestDecision::Respond(_)) => PhaseOutcome::Respond,
            Ok(RequestDecision::Reroute(_)) => PhaseOutcome::Reroute,
            Err(_) => PhaseOutcome::Error,
        };
        rec.phase_end(traced, entry.filter.name(), "request", told);
        match outcome {
            Ok(RequestDecision::Continue) => {}
            Ok(RequestDecision::Respond(resp)) => {
                // The filter that answered has had its say; the ones before it see the answer.
                ran -= 1;
                answer = Some(resp);
                break;
            }
            // Resolved by the filter against this version's clusters: no second lookup.
            Ok(RequestDecision::Reroute(cluster)) => rerouted = Some(cluster),
            Err(error) => filter_failed(runtime, entry, error)?,
        }
    }

    let resp = match answer {
        Some(resp) => resp,
        None => {
            let body = match (req.body, streamed) {
                (Some(bytes), _) => Body::full(bytes),
                (None, Some(stream)) => stream,
                (None, None) => Body::empty(),
            };
            dispatch(route, rerouted.as_deref(), conn, req.head, body, on_upgrade, rec).await?
        }
    };

    // Response phase, in reverse order, over the filters that ran.
    let (head, body) = resp.into_parts();
    let (buffered, streamed) = match route.response_body_limit {
        Some(limit) => (Some(read_body(body, limit, Side::Response).await?), None),
        None => (None, Some(body)),
    };
    let mut resp = FilterResponse { head, body: buffered };
    for entry in route.filters[..ran].iter().rev() {
        if !entry.filter.has_response_phase() {
            continue;
        }
        let call = Instant::now();
        let traced = rec.phase_start();
        let outcome = entry.filter.on_response(&mut resp, &mut ctx).await;
        entry.stats.response.observe(call.elapsed());
        let told = match &outcome {
            Ok(ResponseDecision::Continue) => PhaseOutcome::Continue,
            Ok(ResponseDecision::Respond(_)) => PhaseOutcome::Respond,
            Err(_) => PhaseOutcome::Error,
        };
        rec.phase_end(traced, entry.filter.name(), "response", told);
        match outcome {
            Ok(ResponseDecision::Continue) => {}
            Ok(ResponseDecision::Respond(replacement)) => {
                let (head, body) = replacement.into_parts();
                return Ok(Response::from_parts(head, body));
            }
            Err(error) => filter_failed(runtime, entry, error)?,
        }
    }
    let body = match (resp.body, streamed) {
        (Some(bytes), _) => {
            // A filter may have changed the body: the length is the buffer's now.
            resp.head
                .headers
                .insert(http::header::CONTENT_LENGTH, bytes.len().into());
            resp.head.headers.remove(http::header::TRANSFER_ENCODING);
            Body::full(bytes)
        }
        (None, Some(stream)) => stream,
        (None, None) => Body::empty(),
    };
    Ok(Response::from_parts(resp.head, body))
}

/// A filter failed: counted, then fatal for the request (fail-closed) or logged and
/// skipped (fail-open), in either phase. Only the filter's own fault may be skipped: a
/// host-side failure always fails the request.
fn filter_failed(runtime: &crate::state::Version, entry: &ChainEntry, error: FilterError) -> Result<(), ProxyError> {
    runtime.filter_metrics.filter_error(entry.filter.name(), error.kind());
    if entry.on_error == FailureMode::Closed || !error.is_guest_fault() {
        return Err(ProxyError::filter(entry.filter.name(), error));
    }
    runtime.filter_metrics.filter_skipped(entry.filter.name());
    tracing::warn!(filter = entry.filter.name(), %error, "filter failed; continuing (fail-open)");
    Ok(())
}

/// Sends the request on: to the cluster a filter rerouted it to, else the route's. A route
/// with a policy (answers, pins, splits, faults, rewrites, header edits, mirror) takes the
/// longer, boxed way; a plain route's future is `send`'s own, with no layer added.
fn dispatch<'a>(
    route: &'a Route,
    rerouted: Option<&'a Cluster>,
    conn: &'a ConnInfo,
    head: http::request::Parts,
    body: Body,
    on_upgrade: Option<OnUpgrade>,
    rec: &'a mut Recorder,
) -> impl Future<Output = Result<Response<Body>, ProxyError>> + 'a {
    match (&route.policy, rerouted.or(route.cluster.as_deref())) {
        (None, Some(cluster)) => Either::Left(send(route, cluster, conn, head, body, on_upgrade, rec)),
        _ => Either::Right(Box::pin(with_policy(
            route, rerouted, conn, head, body, on_upgrade, rec,
        ))),
    }
}

/// A route's policy around the upstream: a fault first, then its own answer or the
/// upstream's (to a pinned, split or rerouted cluster, with the path and headers edited),
/// then the response's header edits.
async fn with_policy(
    route: &Route,
    rerouted: Option<&Cluster>,
    conn: &ConnInfo,
    mut head: http::request::Parts,
    body: Body,
    on_upgrade: Option<OnUpgrade>,
    rec: &mut Recorder,
) -> Result<Response<Body>, ProxyError> {
    // Without a policy a route has a cluster (config validation): this is unreachable.
    let Some(policy) = &route.policy else {
        return Err(ProxyError::NoCluster);
    };
    if let Some(fault) = &policy.fault {
        let (delay, abort) = fault.draw(&head.headers);
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        match abort {
            Some(Abort::Status(status)) => return Err(ProxyError::FaultAbort { status }),
            Some(Abort::Reset) => return Ok(reset()),
            None => {}
        }
    }
    // The split entry drawn: its header edits follow the route's, so the more specific win.
    let mut backend = None;
    let mut resp = match &policy.answer {
        Some(answer) => answer.respond(&head, conn),
        None => {
            let cluster = match rerouted {
                Some(cluster) => cluster,
                None => {
                    let (cluster, drawn) = policy
                        .cluster(&head.headers, route.cluster.as_deref())
                        .ok_or(ProxyError::NoCluster)?;
                    backend = drawn;
                    cluster
                }
            };
            if let Some(rewrite) = &policy.rewrite {
                rewrite.apply(&mut head)?;
            }
            if let Some(edits) = &policy.request_headers {
                edits.apply(&mut head.headers);
            }
            if let Some(edits) = backend.and_then(|b| b.request_headers.as_ref()) {
                edits.apply(&mut head.headers);
            }
            let body = match &policy.mirror {
                Some(mirror) => mirror.copy(&head, body, conn, route.host_rewrite.as_ref(), route.timeout),
                None => body,
            };
            send(route, cluster, conn, head, body, on_upgrade, rec).await?
        }
    };
    if let Some(edits) = &policy.response_headers {
        edits.apply(resp.headers_mut());
    }
    if let Some(edits) = backend.and_then(|b| b.response_headers.as_ref()) {
        edits.apply(resp.headers_mut());
    }
    Ok(resp)
}

/// An injected reset: the head goes out, then the body fails, which cuts the HTTP/2 stream
/// (RST_STREAM) or the HTTP/1.1 connection before the response is complete.
fn reset() -> Response<Body> {
    let cut = futures_util::stream::once(async {
        Err::<http_body::Frame<Bytes>, _>(std::io::Error::other("fault injection: reset"))
    });
    Response::new(Body::boxed(http_body_util::StreamBody::new(cut)))
}

/// Sends the request to the cluster and prepares the response for downstream.
async fn send(
    route: &Route,
    cluster: &Cluster,
    conn: &ConnInfo,
    mut head: http::request::Parts,
    body: Body,
    on_upgrade: Option<OnUpgrade>,
    rec: &mut Recorder,
) -> Result<Response<Body>, ProxyError> {
    let version = match cluster.protocol {
        UpstreamProtocol::Http1 => Version::HTTP_11,
        UpstreamProtocol::Http2 => Version::HTTP_2,
    };
    // A gRPC call's own deadline, when shorter, bounds the wait instead of the route's;
    // its expiry is then the client's doing, not the endpoint's failure.
    let wait = match crate::grpc::deadline(&head) {
        Some(deadline) if deadline < route.timeout => Wait {
            limit: deadline,
            set_by: SetBy::Client,
        },
        _ => Wait::from(route.timeout),
    };
    forward::upstream_request(&mut head, conn, route.host_rewrite.as_ref(), version);
    rec.upstream_start(&mut head, cluster.scheme());
    let sent = Instant::now();
    let req = Request::from_parts(head, body);
    let result = if cluster.is_original_destination() {
        // Boxed: the sidecar's path only; the request future of every other path stays
        // as large as its own send.
        Box::pin(cluster.send_to(conn.original_dst, req, wait, rec.upstream_slot())).await
    } else {
        cluster.send(req, wait, Some(conn.peer.ip()), rec.upstream_slot()).await
    };
    rec.upstream_end(&result);
    let mut resp = match result {
        Ok(resp) => resp,
        Err(e) => {
            if let Some(failure) = upstream_failure(&e) {
                cluster.counters.failed(failure);
            }
            return Err(e.into());
        }
    };
    cluster.counters.answered(resp.status(), sent.elapsed());

    let switched = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
    if switched {
        // The connection now belongs to the upgraded stream, not to the pool.
        resp.body_mut().detach();
    }
    if let (true, Some(downstream)) = (switched, on_upgrade) {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(splice(downstream, upstream, route.upgrade_idle));
    }
    let (mut head, mut body) = resp.into_parts();
    if forward::downstream_response(&mut head, switched) == forward::Framing::Ambiguous {
        body.detach();
    }
    Ok(Response::from_parts(head, Body::from(body)))
}

/// Counts a request in `weft_requests_in_flight` until its response head is ready (or
/// the client gives up and the request's future is dropped).
struct InFlight<'a>(&'a prometheus_client::metrics::gauge::Gauge);

impl<'a> InFlight<'a> {
    fn enter(gauge: &'a prometheus_client::metrics::gauge::Gauge) -> Self {
        gauge.inc();
        InFlight(gauge)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// How an upstream error is counted; a failure of the client's own body is the client's
/// (counted as refused downstream), not the cluster's.
fn upstream_failure(e: &UpstreamError) -> Option<UpstreamFailure> {
    match e {
        UpstreamError::Connect { .. } => Some(UpstreamFailure::Connect),
        UpstreamError::Timeout { .. } => Some(UpstreamFailure::Timeout),
        UpstreamError::Exchange { .. } => Some(UpstreamFailure::Exchange),
        // Refused by the cluster's own breaker: counted as weft_upstream_overloaded_total.
        // The client's deadline passing is the client's doing.
        UpstreamError::BadRequest(_)
        | UpstreamError::ClientBody(_)
        | UpstreamError::Deadline { .. }
        | UpstreamError::Overloaded { .. } => None,
    }
}

/// After a `101 Switching Protocols`, the two connections carry bytes both ways until
/// both have closed, or until neither has sent anything for `idle`.
async fn splice(downstream: OnUpgrade, upstream: OnUpgrade, idle: std::time::Duration) {
    let (down, up) = match tokio::try_join!(downstream, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "protocol upgrade did not complete");
            return;
        }
    };
    let moved = AtomicU64::new(0);
    let mut down = Activity::new(TokioIo::new(down), &moved);
    let mut up = Activity::new(TokioIo::new(up), &moved);
    let copy = tokio::io::copy_bidirectional(&mut down, &mut up);
    tokio::pin!(copy);
    // Checked four times per `idle`: the connection closes within 1.25 × idle of its
    // last byte, at the cost of one timer per upgraded connection.
    let tick = idle / 4;
    let (mut last_count, mut last_active) = (0, tokio::time::Instant::now());
    loop {
        tokio::select! {
            result = &mut copy => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "upgraded connection ended with an error");
                }
                return;
            }
            () = tokio::time::sleep(tick) => {
                let count = moved.load(Ordering::Relaxed);
                if count != last_count {
                    (last_count, last_active) = (count, tokio::time::Instant::now());
                } else if last_active.elapsed() >= idle {
                    tracing::debug!(?idle, "upgraded connection idle; closed");
                    return;
                }
            }
        }
    }
}

/// An upgraded connection's side that counts the bytes read from it, so the splice can
/// tell an idle connection from a busy one.
struct Activity<'a, T> {
    io: T,
    moved: &'a AtomicU64,
}

impl<'a, T> Activity<'a, T> {
    fn new(io: T, moved: &'a AtomicU64) -> Self {
        Activity { io, moved }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Activity<'_, T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.io).poll_read(cx, buf);
        let read = buf.filled().len() - before;
        if read > 0 {
            self.moved.fetch_add(read as u64, Ordering::Relaxed);
        }
        result
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Activity<'_, T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// Buffers a body for the filters that asked to see it, refusing more than `limit` bytes.
async fn read_body<B>(body: B, limit: usize, side: Side) -> Result<Bytes, ProxyError>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(match side {
            Side::Request => ProxyError::RequestBodyTooLarge { limit },
            Side::Response => ProxyError::ResponseBodyTooLarge { limit },
        }),
        Err(e) => match ClientBodyFault::find(Some(&*e)) {
            Some(fault) => Err(ProxyError::ClientBody(fault)),
            None => Err(ProxyError::Body {
                side,
                reason: e.to_string(),
            }),
        },
    }
}
