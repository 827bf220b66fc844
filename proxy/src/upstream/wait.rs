//! How long a request waits on its upstream, and whose limit that is.
//!
//! The route's `timeout` is the upstream's time to answer. While a client is still
//! sending its body the proxy waits on the client, not the upstream, so that time is not
//! counted (Envoy starts its route timeout at the end of the request too): a slow upload
//! is bounded by the listener's `body_idle` and is the client's fault (408), never an
//! upstream timeout that would count against the endpoint. A gRPC call's own deadline
//! (`grpc-timeout`) is the client's choice: it runs from the start, and its expiry is not
//! the endpoint's failure either.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::body::Upload;

/// The limit on one request's wait for its response head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wait {
    pub limit: Duration,
    pub set_by: SetBy,
}

/// Who set a [`Wait`]'s limit, and so whose fault its expiry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetBy {
    /// The route's (or a callout's) timeout: expiry is the upstream's timeout.
    Route,
    /// The client's own deadline (a gRPC call's `grpc-timeout`, shorter than the route's).
    Client,
}

impl From<Duration> for Wait {
    fn from(limit: Duration) -> Wait {
        Wait {
            limit,
            set_by: SetBy::Route,
        }
    }
}

impl Wait {
    /// The same wait with `limit` instead (what is left of it, a try's share).
    pub fn with_limit(self, limit: Duration) -> Wait {
        Wait { limit, ..self }
    }
}

/// Runs `exchange` until it is done or its upstream has used up `limit`; `None` then.
///
/// With an `upload` still arriving, time spent waiting on the client does not count: the
/// limit runs from the end of the upload, and before it only while the upload stands
/// still without waiting on the client (an upstream that stopped reading it).
pub async fn within<F: Future>(limit: Duration, upload: Option<&Upload>, exchange: F) -> Option<F::Output> {
    let Some(upload) = upload.filter(|u| u.ended().is_none()) else {
        return crate::worker::deadlines::within(limit, exchange).await;
    };
    let mut exchange = std::pin::pin!(exchange);
    let sleep = tokio::time::sleep(limit);
    let mut sleep = std::pin::pin!(sleep);
    let mut pieces = upload.pieces();
    loop {
        tokio::select! {
            biased;
            out = &mut exchange => return Some(out),
            () = &mut sleep => {
                let now = Instant::now();
                match next_check(upload, limit, now, &mut pieces) {
                    Some(at) => sleep.as_mut().reset(at),
                    None => return None,
                }
            }
        }
    }
}

/// When to look again, or `None` when the upstream's time is up.
fn next_check(upload: &Upload, limit: Duration, now: Instant, pieces: &mut u64) -> Option<Instant> {
    if let Some(ended) = upload.ended() {
        let at = ended + limit;
        return (at > now).then_some(at);
    }
    let seen = upload.pieces();
    if upload.waiting_on_client() || seen != *pieces {
        *pieces = seen;
        return Some(now + limit);
    }
    None
}
