//! A client's request body, bounded: at most the listener's size, and never a longer
//! silence than its idle timeout between two pieces. Its failures are typed, so whoever
//! reads it (the upstream exchange, a filter's buffering) can blame the client (400, 408,
//! 413) instead of the upstream (502).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::BodyError;

/// What went wrong with the client's body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ClientBodyFault {
    #[error("request body over the limit of {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("no request body data for {after:?}")]
    Idle { after: Duration },
    #[error("malformed request body")]
    Malformed,
}

impl ClientBodyFault {
    /// Finds the client's fault in an error's chain (a failed upstream exchange carries
    /// the body error that caused it).
    pub fn find(mut err: Option<&(dyn std::error::Error + 'static)>) -> Option<ClientBodyFault> {
        while let Some(e) = err {
            if let Some(fault) = e.downcast_ref::<ClientBodyError>() {
                return Some(fault.fault);
            }
            err = e.source();
        }
        None
    }

    pub fn status(self) -> http::StatusCode {
        match self {
            ClientBodyFault::TooLarge { .. } => http::StatusCode::PAYLOAD_TOO_LARGE,
            ClientBodyFault::Idle { .. } => http::StatusCode::REQUEST_TIMEOUT,
            ClientBodyFault::Malformed => http::StatusCode::BAD_REQUEST,
        }
    }
}

/// The error a [`ClientBody`] yields: the fault, and the transport's error behind it.
#[derive(Debug)]
pub struct ClientBodyError {
    pub fault: ClientBodyFault,
    source: Option<BodyError>,
}

impl std::fmt::Display for ClientBodyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.source {
            Some(source) => write!(f, "{}: {source}", self.fault),
            None => write!(f, "{}", self.fault),
        }
    }
}

impl std::error::Error for ClientBodyError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// What a client's body is doing, as the upstream exchange it feeds sees it. The route
/// timeout is the upstream's time, so its timer must know when the proxy waits on the
/// client instead (Envoy starts it at the end of the request); and an exchange that broke
/// because this body failed is the client's doing, however the upstream connection
/// reports it (an HTTP/2 upstream sees only a reset stream).
#[derive(Debug, Default)]
pub struct Upload {
    /// Pieces read from the client so far.
    pieces: AtomicU64,
    /// The last read found nothing: the body waits on the client.
    waiting: AtomicBool,
    /// When the body ended (read whole, or failed).
    ended: OnceLock<tokio::time::Instant>,
    /// Why it failed, if it did.
    fault: OnceLock<ClientBodyFault>,
}

impl Upload {
    pub fn pieces(&self) -> u64 {
        self.pieces.load(Ordering::Relaxed)
    }

    pub fn waiting_on_client(&self) -> bool {
        self.waiting.load(Ordering::Relaxed)
    }

    pub fn ended(&self) -> Option<tokio::time::Instant> {
        self.ended.get().copied()
    }

    pub fn fault(&self) -> Option<ClientBodyFault> {
        self.fault.get().copied()
    }

    fn end(&self, fault: Option<ClientBodyFault>) {
        if let Some(fault) = fault {
            let _ = self.fault.set(fault);
        }
        self.waiting.store(false, Ordering::Relaxed);
        let _ = self.ended.set(tokio::time::Instant::now());
    }
}

pin_project_lite::pin_project! {
    /// A downstream request body with the front door's limits applied.
    pub struct ClientBody<B> {
        #[pin]
        inner: B,
        limit: u64,
        read: u64,
        idle: Duration,
        // Made on the first wait only: a body that arrives with its head never needs it.
        timer: Option<Pin<Box<Sleep>>>,
        // The timer runs for the current wait; a frame ends the wait.
        waiting: bool,
        failed: bool,
        // Told what the body does, once someone asked (`watch`).
        upload: Option<Arc<Upload>>,
    }
}

impl<B> ClientBody<B> {
    pub fn new(inner: B, limit: u64, idle: Duration) -> Self {
        ClientBody {
            inner,
            limit,
            read: 0,
            idle,
            timer: None,
            waiting: false,
            failed: false,
            upload: None,
        }
    }
}

impl<B: HttpBody> ClientBody<B> {
    /// Starts telling what this body does; `None` when it is already complete.
    pub fn watch(&mut self) -> Option<Arc<Upload>> {
        if self.is_end_stream_now() {
            return None;
        }
        Some(self.upload.get_or_insert_with(Arc::default).clone())
    }

    fn is_end_stream_now(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }
}

impl<B> HttpBody for ClientBody<B>
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = ClientBodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut this = self.project();
        if *this.failed {
            return Poll::Ready(None);
        }
        let upload = this.upload.as_deref();
        let fail = |failed: &mut bool, fault, source| {
            *failed = true;
            if let Some(upload) = upload {
                upload.end(Some(fault));
            }
            Poll::Ready(Some(Err(ClientBodyError { fault, source })))
        };
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                *this.waiting = false;
                if let Some(data) = frame.data_ref() {
                    *this.read += data.len() as u64;
                    if *this.read > *this.limit {
                        return fail(this.failed, ClientBodyFault::TooLarge { limit: *this.limit }, None);
                    }
                }
                if let Some(upload) = upload {
                    // A body of known length is done with its last piece: nobody polls
                    // it again.
                    if this.inner.is_end_stream() {
                        upload.end(None);
                    } else {
                        upload.waiting.store(false, Ordering::Relaxed);
                        upload.pieces.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => fail(this.failed, ClientBodyFault::Malformed, Some(e.into())),
            Poll::Ready(None) => {
                if let Some(upload) = upload {
                    upload.end(None);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                if let Some(upload) = upload {
                    upload.waiting.store(true, Ordering::Relaxed);
                }
                let deadline = Instant::now() + *this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                // Each wait gets the full idle time: a gap timeout, not a total.
                if !*this.waiting {
                    *this.waiting = true;
                    timer.as_mut().reset(deadline);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    return fail(this.failed, ClientBodyFault::Idle { after: *this.idle }, None);
                }
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
