//! An upstream response body that gives its HTTP/1.1 connection back to the pool it came
//! from once read to the end.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;

use super::Body;

/// Where an idle HTTP/1.1 connection goes back: the upstream's pool of an endpoint. A
/// trait so that `body` names nothing above it; the call is one indirect jump a reuse.
pub trait Checkin: Send + Sync {
    fn checkin(&self, sender: http1::SendRequest<Body>);
}

/// Where an HTTP/1.1 connection goes back when its response is done.
struct Slot {
    pool: Arc<dyn Checkin>,
    sender: http1::SendRequest<Body>,
}

pin_project_lite::pin_project! {
    /// An upstream response body that gives its connection back to the pool once read to
    /// the end (HTTP/1.1).
    pub struct PooledBody {
        #[pin]
        body: Incoming,
        slot: Option<Slot>,
    }

    impl PinnedDrop for PooledBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            // A body with nothing left (HEAD, 204, or read to the end but never polled
            // past it) leaves the connection reusable.
            if this.body.is_end_stream()
                && let Some(slot) = this.slot.take()
            {
                slot.pool.checkin(slot.sender);
            }
        }
    }
}

impl HttpBody for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.project();
        let frame = this.body.poll_frame(cx);
        match &frame {
            Poll::Ready(None) => {
                if let Some(slot) = this.slot.take() {
                    slot.pool.checkin(slot.sender);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                // The connection is broken: never reuse it.
                this.slot.take();
            }
            _ => {}
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl PooledBody {
    /// A body whose connection is not reused (HTTP/2 streams share theirs).
    pub fn unpooled(body: Incoming) -> Self {
        PooledBody { body, slot: None }
    }

    /// A body whose connection goes back to `pool` once the body is read to the end.
    pub fn returning(body: Incoming, pool: Arc<dyn Checkin>, sender: http1::SendRequest<Body>) -> Self {
        PooledBody {
            body,
            slot: Some(Slot { pool, sender }),
        }
    }

    /// The connection will not be reused (after a protocol switch, the connection
    /// belongs to the upgraded stream).
    pub fn detach(&mut self) {
        self.slot = None;
    }
}
