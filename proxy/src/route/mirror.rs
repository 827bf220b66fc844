//! Request mirroring: a sampled share of a route's requests is copied to each of its shadow
//! clusters, fire and forget. The copy never holds the client's request back: the client's body
//! streams upstream as it arrives while a bounded copy is kept beside it, and the shadow
//! request leaves only when that copy is complete. Its answer is read and dropped.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderValue, Request, Version, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use crate::body::{Body, BodyError};
use crate::config::UpstreamProtocol;
use crate::conn::ConnInfo;
use crate::forward;
use crate::upstream::Cluster;

use super::fault::Chance;

/// The mirrors of one route, each sampled on its own; a request copied to several is
/// copied once, and each shadow gets the same bytes.
pub struct Mirrors(pub Box<[Mirror]>);

pub struct Mirror {
    pub cluster: Arc<Cluster>,
    pub chance: Chance,
    pub max_body: usize,
    /// Shadow requests in flight to this mirror, and the most it may have.
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: usize,
    pub sent: Counter,
    pub failed: Counter,
    pub dropped: Counter,
}

impl Mirrors {
    /// Starts a shadow copy of the request for each mirror that samples it, and returns
    /// the body to send to the real upstream (the client's, wrapped to keep a copy when
    /// some shadow waits for one).
    pub fn copy(
        &self,
        head: &http::request::Parts,
        body: Body,
        conn: &ConnInfo,
        host_rewrite: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Body {
        let ended = body.is_end_stream();
        let mut waiting = Vec::new();
        for mirror in &self.0 {
            if !mirror.chance.hit() {
                continue;
            }
            if mirror.in_flight.load(Ordering::Relaxed) >= mirror.max_in_flight
                || body.size_hint().lower() > mirror.max_body as u64
            {
                // A slow shadow must not gather unbounded tasks and copies.
                mirror.dropped.inc();
                continue;
            }
            let (done, copied) = oneshot::channel();
            if ended {
                let _ = done.send(Bytes::new());
            } else {
                waiting.push((mirror.max_body, done));
            }
            mirror.in_flight.fetch_add(1, Ordering::Relaxed);
            let task = Shadow {
                cluster: mirror.cluster.clone(),
                in_flight: mirror.in_flight.clone(),
                sent: mirror.sent.clone(),
                failed: mirror.failed.clone(),
                dropped: mirror.dropped.clone(),
            };
            tokio::spawn(task.run(mirror.shadow_head(head, conn, host_rewrite), copied, timeout));
        }
        if waiting.is_empty() {
            return body;
        }
        Body::boxed(Tee {
            inner: body,
            copy: Some(BytesMut::new()),
            waiting,
        })
    }
}

impl Mirror {
    /// The request head the shadow is sent: the client's, marked as a copy.
    fn shadow_head(
        &self,
        head: &http::request::Parts,
        conn: &ConnInfo,
        host_rewrite: Option<&HeaderValue>,
    ) -> http::request::Parts {
        let mut shadow = Request::new(()).into_parts().0;
        shadow.method = head.method.clone();
        shadow.uri = head.uri.clone();
        shadow.version = head.version;
        shadow.headers = head.headers.clone();
        // As Envoy does: the shadow's Host says it is a copy, so its logs can tell.
        if let Some(host) = head.headers.get(header::HOST).or(host_rewrite)
            && let Ok(shadowed) = HeaderValue::from_bytes(&[host.as_bytes(), b"-shadow"].concat())
        {
            shadow.headers.insert(header::HOST, shadowed);
        }
        let version = match self.cluster.protocol {
            UpstreamProtocol::Http1 => Version::HTTP_11,
            UpstreamProtocol::Http2 => Version::HTTP_2,
        };
        forward::upstream_request(&mut shadow, conn, None, version);
        shadow
    }
}

/// What the detached shadow request needs.
struct Shadow {
    cluster: Arc<Cluster>,
    in_flight: Arc<AtomicUsize>,
    sent: Counter,
    failed: Counter,
    dropped: Counter,
}

impl Shadow {
    async fn run(self, head: http::request::Parts, copied: oneshot::Receiver<Bytes>, timeout: Duration) {
        match copied.await {
            // The client's body was larger than the copy may be, or it failed.
            Err(_) => {
                self.dropped.inc();
            }
            Ok(bytes) => {
                let request = Request::from_parts(head, Body::full(bytes));
                match self.cluster.send(request, timeout, None, None).await {
                    Ok(resp) => {
                        self.sent.inc();
                        // Read to the end so the connection can go back to the pool, each
                        // frame dropped as it comes: a shadow answering a large file must not
                        // be held whole. The route's timeout bounds an answer that never ends.
                        let _ = tokio::time::timeout(timeout, drain(resp.into_body())).await;
                    }
                    Err(e) => {
                        self.failed.inc();
                        tracing::debug!(cluster = %self.cluster.name, error = %e, "mirror request failed");
                    }
                }
            }
        }
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Reads a body to its end, keeping nothing.
async fn drain<B: HttpBody>(body: B) {
    let mut body = std::pin::pin!(body);
    while let Some(Ok(_)) = http_body_util::BodyExt::frame(&mut body).await {}
}

pin_project_lite::pin_project! {
    /// The client's body, passed on unchanged, with one copy kept for the shadows waiting
    /// on it; each gets the copy when the body ends, and is let go once the body passes its
    /// `max_body`. The copy is given up when no shadow waits any more.
    struct Tee {
        #[pin]
        inner: Body,
        copy: Option<BytesMut>,
        // (the shadow's `max_body`, where its copy goes).
        waiting: Vec<(usize, oneshot::Sender<Bytes>)>,
    }
}

impl HttpBody for Tee {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(copy)) = (frame.data_ref(), this.copy.as_mut()) {
                    let len = copy.len() + data.len();
                    // Dropping a sender tells its shadow to give up.
                    this.waiting.retain(|(max, _)| len <= *max);
                    if this.waiting.is_empty() {
                        *this.copy = None;
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.as_ref().get_ref().is_end_stream() {
                    deliver(this.copy, this.waiting);
                }
            }
            Poll::Ready(None) => deliver(this.copy, this.waiting),
            Poll::Ready(Some(Err(_))) => {
                *this.copy = None;
                this.waiting.clear();
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The whole body to every shadow still waiting: one buffer, shared.
fn deliver(copy: &mut Option<BytesMut>, waiting: &mut Vec<(usize, oneshot::Sender<Bytes>)>) {
    if let Some(copy) = copy.take() {
        let copy = copy.freeze();
        for (_, done) in waiting.drain(..) {
            let _ = done.send(copy.clone());
        }
    }
}
