//! The one body type that flows through the proxy.
//!
//! An enum rather than a `BoxBody`: the common cases (streaming a peer's body through,
//! answering with a small buffer, answering with nothing) cost no allocation per request.
//! The client's bounded body is `client`'s, the pooled upstream body `pooled`'s.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};

mod client;
mod pooled;

pub use client::{ClientBody, ClientBodyError, ClientBodyFault, Upload};
pub use pooled::{Checkin, PooledBody};

/// One of a connection's open exchanges (a request body still arriving, a response still
/// being sent), counted in `open` until dropped: the listener does not put a connection
/// at rest while any is open. A bare counter, so that `body` names nothing of the
/// listener and `Body` stays as small as it was (a thin pointer).
pub struct Hold(Arc<AtomicUsize>);

impl Hold {
    pub fn new(open: &Arc<AtomicUsize>) -> Hold {
        open.fetch_add(1, Ordering::Relaxed);
        Hold(open.clone())
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Errors a body can produce while streaming.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// A request or response body: streamed from a peer, or buffered in memory.
    #[project = BodyProj]
    pub enum Body {
        /// Streamed as it arrives from the upstream server.
        Upstream { #[pin] inner: PooledBody },
        /// Streamed as it arrives from the downstream client, under the listener's limits.
        Client {
            #[pin] inner: ClientBody<hyper::body::Incoming>,
            // Keeps the connection from being put at rest while the body still arrives.
            receiving: Option<Hold>,
        },
        /// Fully buffered (a direct answer, or a body a filter asked to see).
        Full { data: Option<Bytes> },
        /// Any other streaming body (kept boxed; used off the hot path only).
        Boxed { #[pin] inner: Pin<Box<dyn HttpBody<Data = Bytes, Error = BodyError> + Send>> },
    }
}

impl Body {
    /// A body with no bytes.
    pub const fn empty() -> Self {
        Body::Full { data: None }
    }

    /// A buffered body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Body::Full {
            data: (!data.is_empty()).then_some(data),
        }
    }

    /// Wraps any other streaming body.
    pub fn boxed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BodyError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed {
            inner: Box::pin(body.map_err(Into::into)),
        }
    }
}

impl Body {
    /// A downstream request's body, bounded by the listener's limits (see
    /// [`ClientBody::new`]); `receiving` is given back when the body ends.
    pub fn from_client(inner: ClientBody<hyper::body::Incoming>, receiving: Option<Hold>) -> Self {
        Body::Client { inner, receiving }
    }

    /// Starts following a client's body still to come ([`Upload`]). `None` for any other
    /// body, or one already complete: nothing to wait for.
    pub fn watch_upload(&mut self) -> Option<Arc<Upload>> {
        match self {
            Body::Client { inner, .. } => inner.watch(),
            _ => None,
        }
    }
}

impl From<PooledBody> for Body {
    fn from(inner: PooledBody) -> Self {
        Body::Upstream { inner }
    }
}

/// A plain-text answer.
pub fn text(status: http::StatusCode, body: &'static str) -> http::Response<Body> {
    let mut resp = http::Response::new(Body::full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(http::header::CONTENT_LENGTH, http::HeaderValue::from(body.len()));
    resp
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.project() {
            BodyProj::Upstream { inner } => inner.poll_frame(cx).map_err(Into::into),
            BodyProj::Client { inner, receiving } => {
                let frame = inner.poll_frame(cx);
                if matches!(frame, Poll::Ready(None | Some(Err(_)))) {
                    receiving.take();
                }
                frame.map_err(Into::into)
            }
            BodyProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            BodyProj::Boxed { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Upstream { inner } => inner.is_end_stream(),
            Body::Client { inner, .. } => inner.is_end_stream(),
            Body::Full { data } => data.is_none(),
            Body::Boxed { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Upstream { inner } => inner.size_hint(),
            Body::Client { inner, .. } => inner.size_hint(),
            Body::Full { data } => SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Boxed { inner } => inner.size_hint(),
        }
    }
}
