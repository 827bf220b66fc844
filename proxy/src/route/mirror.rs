//! Request mirroring: a sampled share of a route's requests is copied to a shadow cluster,
//! fire and forget. The copy never holds the client's request back: the client's body
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
use crate::forward::{self, ConnInfo};
use crate::upstream::Cluster;

use super::fault::Chance;

pub struct Mirror {
    pub cluster: Arc<Cluster>,
    pub chance: Chance,
    pub max_body: usize,
    /// Shadow requests in flight on this route, and the most it may have.
    pub in_flight: Arc<AtomicUsize>,
    pub max_in_flight: usize,
    pub sent: Counter,
    pub failed: Counter,
    pub dropped: Counter,
}

impl Mirror {
    /// Starts a shadow copy of the request when it is sampled, and returns the body to send
    /// to the real upstream (the client's, wrapped to keep a copy when there is one).
    pub fn copy(
        &self,
        head: &http::request::Parts,
        body: Body,
        conn: &ConnInfo,
        host_rewrite: Option<&HeaderValue>,
        timeout: Duration,
    ) -> Body {
        if !self.chance.hit() {
            return body;
        }
        if self.in_flight.load(Ordering::Relaxed) >= self.max_in_flight {
            // A slow shadow must not gather unbounded tasks and copies.
            self.dropped.inc();
            return body;
        }
        if body.size_hint().lower() > self.max_body as u64 {
            self.dropped.inc();
            return body;
        }
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

        let (done, copied) = oneshot::channel();
        let body = if body.is_end_stream() {
            let _ = done.send(Bytes::new());
            body
        } else {
            Body::boxed(Tee {
                inner: body,
                copy: Some(BytesMut::new()),
                max: self.max_body,
                done: Some(done),
            })
        };
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        let task = Shadow {
            cluster: self.cluster.clone(),
            in_flight: self.in_flight.clone(),
            sent: self.sent.clone(),
            failed: self.failed.clone(),
            dropped: self.dropped.clone(),
        };
        tokio::spawn(task.run(shadow, copied, timeout));
        body
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
                match self.cluster.send(request, timeout, None).await {
                    Ok(resp) => {
                        self.sent.inc();
                        // Read to the end so the connection can go back to the pool.
                        let _ = tokio::time::timeout(timeout, http_body_util::BodyExt::collect(resp.into_body())).await;
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

pin_project_lite::pin_project! {
    /// The client's body, passed on unchanged, with a copy of at most `max` bytes kept;
    /// the copy goes to the shadow when the body ends, and is given up past `max`.
    struct Tee {
        #[pin]
        inner: Body,
        copy: Option<BytesMut>,
        max: usize,
        done: Option<oneshot::Sender<Bytes>>,
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
                    if copy.len() + data.len() > *this.max {
                        // Dropping the sender tells the shadow to give up.
                        *this.copy = None;
                        *this.done = None;
                    } else {
                        copy.extend_from_slice(data);
                    }
                }
                // hyper stops polling a body that says it has ended.
                if this.inner.as_ref().get_ref().is_end_stream()
                    && let (Some(copy), Some(done)) = (this.copy.take(), this.done.take())
                {
                    let _ = done.send(copy.freeze());
                }
            }
            Poll::Ready(None) => {
                if let (Some(copy), Some(done)) = (this.copy.take(), this.done.take()) {
                    let _ = done.send(copy.freeze());
                }
            }
            Poll::Ready(Some(Err(_))) => {
                *this.copy = None;
                *this.done = None;
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
